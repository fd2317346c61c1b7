"""A stub Airbyte source that replays a benchmark message file (RECORD and STATE lines) as they are: the source side
of the PyAirbyte comparison in ``bench/destination.py``. Config: ``{"path": FILE}``. Standard library only, so it
runs in PyAirbyte's own virtual environment.

    python bench/_replay_source.py spec | check --config C | discover --config C | read --config C --catalog K
"""
from __future__ import annotations

import json
import shutil
import sys

STREAM = "events"
_S, _I, _N, _B = "string", "integer", "number", "boolean"
FIELDS = {
    "user_id": _I, "order_id": _S, "amount": _N, "quantity": _I, "currency": _S, "is_gift": _B, "status": _S,
    "created_at": _S, "tags": "array", "address": "object", "discount": _N, "note": _S, "score": _I, "version": _I,
    "_kinesis_stream": _S, "_kinesis_shard_id": _S, "_kinesis_sequence_number": _S,
    "_kinesis_sub_sequence_number": _I, "_kinesis_partition_key": _S, "_kinesis_arrival_time": _S,
}


def _schema() -> dict:
    props = {}
    for name, kind in FIELDS.items():
        prop = {"type": ["null", kind]}
        if kind == "array":
            prop["items"] = {"type": "string"}
        props[name] = prop
    return {"type": "object", "properties": props}


def _emit(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _arg(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "spec"
    if command == "spec":
        _emit({"type": "SPEC", "spec": {"connectionSpecification": {
            "type": "object", "required": ["path"], "properties": {"path": {"type": "string"}}}}})
    elif command == "check":
        _emit({"type": "CONNECTION_STATUS", "connectionStatus": {"status": "SUCCEEDED"}})
    elif command == "discover":
        _emit({"type": "CATALOG", "catalog": {"streams": [{
            "name": STREAM, "json_schema": _schema(), "supported_sync_modes": ["full_refresh", "incremental"]}]}})
    elif command == "read":
        with open(_arg(argv, "--config"), encoding="utf-8") as handle:
            path = json.load(handle)["path"]
        with open(path, "rb") as handle:
            shutil.copyfileobj(handle, sys.stdout.buffer, 1 << 20)
        sys.stdout.buffer.flush()
    else:
        print(f"unknown command {command}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
