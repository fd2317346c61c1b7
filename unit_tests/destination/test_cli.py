"""The console script as Airbyte runs it (a few subprocess runs: each start costs ~2 s)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from unit_tests.destination.harness import kinesis, record, state, stream, KINESIS_PK


def _command() -> list[str]:
    script = shutil.which("destination-collection", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "destination_collection.run"]


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO] + [p for p in [os.environ.get("PYTHONPATH")] if p])}


def _run(args: list[str], stdin: str | None = None, cwd: str | None = None) -> tuple[int, list[dict], str]:
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as handle:
        proc = subprocess.run(_command() + args, stdin=handle, capture_output=True, timeout=120, cwd=cwd, env=ENV)
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines() if line.strip()]
    return proc.returncode, lines, proc.stderr.decode()


def test_spec_and_check(tmp_path):
    code, messages, _ = _run(["spec"])
    (spec,) = [m for m in messages if m["type"] == "SPEC"]
    assert spec["spec"]["supportsRefreshes"] is True and "store" in spec["spec"]["connectionSpecification"]["properties"]
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store": {"store_type": "duckdb", "path": "rel/c.duckdb"}}))
    code, messages, _ = _run(["check", "--config", str(config)], cwd=str(tmp_path))
    assert [m["connectionStatus"]["status"] for m in messages if m["type"] == "CONNECTION_STATUS"] == ["SUCCEEDED"]
    assert (tmp_path / "rel" / "c.duckdb").exists()  # relative to the working directory
    assert all(m["type"] in ("LOG", "CONNECTION_STATUS", "TRACE") for m in messages)  # only protocol messages


def test_write_from_stdin_then_inspect(tmp_path):
    db = tmp_path / "c.duckdb"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store": {"store_type": "duckdb", "path": str(db)}}))
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"streams": [stream("events", pk=KINESIS_PK)]}))
    messages = [kinesis("events", i, {"user": f"u{i % 2}", "n": i}) for i in range(5)]
    messages += [state("events", {"shards": {"a": 1}}, state_id=77, unknownField="kept"), record("events", {"bad": 1})]
    stdin = tmp_path / "in.jsonl"
    stdin.write_text("\n".join(json.dumps(m) for m in messages) + "\nnot json\n")
    code, out, _ = _run(["write", "--config", str(config), "--catalog", str(catalog)], stdin=str(stdin))
    states = [m for m in out if m["type"] == "STATE"]
    assert states == [
        {"type": "STATE", "state": {"type": "STREAM", "stream": {"stream_descriptor": {"name": "events"}, "stream_state": {"shards": {"a": 1}}},
                                    "id": 77, "unknownField": "kept", "destinationStats": {"recordCount": 5.0}}}
    ]
    traces = [m["trace"] for m in out if m["type"] == "TRACE" and m["trace"]["type"] == "ERROR"]
    assert code == 1 and "1 malformed input line(s)" in traces[0]["error"]["message"]
    assert traces[0]["error"]["failure_type"] == "system_error"
    proc = subprocess.run(_command() + ["query", "--config", str(config), "--format", "json",
                                        'SELECT "user", count(*) AS n FROM events GROUP BY 1 ORDER BY 1'],
                          capture_output=True, timeout=120, env=ENV)
    assert proc.returncode == 0
    assert [json.loads(line) for line in proc.stdout.decode().splitlines()] == [
        {"user": "u0", "n": 3}, {"user": "u1", "n": 2}, {"user": None, "n": 1}]
