"""Test helpers shared by the DuckDB unit tests and the PostgreSQL integration tests."""
from __future__ import annotations

import datetime as dt
import json
from typing import Any, Iterable

from destination_collection import jsonio
from destination_collection.config import parse_config
from destination_collection.protocol_loop import write_messages
from destination_collection.stores import open_store

KINESIS_PK = [["_kinesis_shard_id"], ["_kinesis_sequence_number"], ["_kinesis_sub_sequence_number"]]
EMITTED_AT = 1_700_000_000_000


def stream(
    name: str,
    mode: str = "append_dedup",
    pk: list[list[str]] | None = None,
    schema: dict | None = None,
    generation_id: int | None = None,
    minimum_generation_id: int | None = None,
    namespace: str | None = None,
    sync_id: int | None = None,
) -> dict[str, Any]:
    configured: dict[str, Any] = {
        "stream": {
            "name": name,
            "json_schema": schema or {"type": "object", "additionalProperties": True, "properties": {}},
            "supported_sync_modes": ["full_refresh", "incremental"],
        },
        "sync_mode": "incremental",
        "destination_sync_mode": mode,
        "primary_key": pk if pk is not None else [["k"]],
        "generation_id": generation_id,
        "minimum_generation_id": minimum_generation_id,
        "sync_id": sync_id,
    }
    if namespace:
        configured["stream"]["namespace"] = namespace
    return configured


def record(name: str, data: Any, emitted_at: int = EMITTED_AT, namespace: str | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {"stream": name, "data": data, "emitted_at": emitted_at}
    if namespace:
        rec["namespace"] = namespace
    return {"type": "RECORD", "record": rec}


def kinesis(name: str, seq: int, payload: dict[str, Any], shard: str = "shardId-000000000000", sub: int = 0,
            arrival: str = "2026-11-25T21:30:39.248Z") -> dict[str, Any]:
    data = dict(payload)
    data.update(
        {
            "_kinesis_stream": name,
            "_kinesis_shard_id": shard,
            "_kinesis_sequence_number": str(49_590_338_271_490_256_608_559_692_538_361_571_095_921_575_989_136_588_898 + seq),
            "_kinesis_sub_sequence_number": sub,
            "_kinesis_partition_key": f"pk-{seq % 3}",
            "_kinesis_arrival_time": arrival,
        }
    )
    return record(name, data)


def state(name: str, value: Any, state_id: Any = None, namespace: str | None = None, **extra: Any) -> dict[str, Any]:
    descriptor: dict[str, Any] = {"name": name}
    if namespace:
        descriptor["namespace"] = namespace
    body: dict[str, Any] = {"type": "STREAM", "stream": {"stream_descriptor": descriptor, "stream_state": value}}
    if state_id is not None:
        body["id"] = state_id
    body.update(extra)
    return {"type": "STATE", "state": body}


def complete(name: str, namespace: str | None = None) -> dict[str, Any]:
    descriptor: dict[str, Any] = {"name": name}
    if namespace:
        descriptor["namespace"] = namespace
    return {
        "type": "TRACE",
        "trace": {"type": "STREAM_STATUS", "emitted_at": 1.0, "stream_status": {"stream_descriptor": descriptor, "status": "COMPLETE"}},
    }


def _json(value: Any) -> Any:
    if isinstance(value, str):
        return jsonio.loads(value)
    return value


class Harness:
    """Runs the write loop against one store and reads collections back."""

    def __init__(self, store_config: dict[str, Any]):
        self.store_config = store_config
        self.options: dict[str, Any] = {}

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {"store": self.store_config, **self.options, **overrides}

    def iter_write(self, streams: list[dict], messages: Iterable[Any], as_lines: bool = True, **overrides: Any):
        items = (json.dumps(m) if as_lines and isinstance(m, dict) else m for m in messages)
        return write_messages(self.config(**overrides), {"streams": streams}, items)

    def write(self, streams: list[dict], messages: Iterable[Any], as_lines: bool = True, **overrides: Any) -> list[dict]:
        return list(self.iter_write(streams, messages, as_lines, **overrides))

    def json_value(self, value: Any) -> Any:
        """A JSON column's value as Python (DuckDB returns JSON text, psycopg parses jsonb itself)."""
        return _json(value) if self.store_config["store_type"] == "duckdb" else value

    def store(self):
        return open_store(parse_config(self.config()))

    def execute(self, *statements: str) -> None:
        """Run SQL statements on the store in one transaction: changes made outside the writer, as a user or an older
        version would make them (name tables with ``table()``)."""
        store = self.store()
        try:
            with store.transaction():
                for sql in statements:
                    store.execute(sql)
        finally:
            store.close()

    def query(self, sql: str) -> list[dict[str, Any]]:
        store = self.store()
        try:
            columns, rows = store.fetch_with_columns(sql)
        finally:
            store.close()
        return [dict(zip(columns, row)) for row in rows]

    def table(self, table: str) -> str:
        store = self.store()
        try:
            return store.q(table)
        finally:
            store.close()

    def rows(self, table: str) -> dict[str, dict[str, Any]]:
        out = {}
        for row in self.query(f"SELECT * FROM {self.table(table)}"):
            for key in ("_doc", "_meta", "_airbyte_meta"):
                row[key] = _json(row[key])
            # a collection never holds two rows of one _id (a dict would hide the second)
            assert row["_id"] not in out, f"collection {table}: _id {row['_id']!r} stored in more than one row"
            out[row["_id"]] = row
        return out

    def docs(self, table: str) -> dict[str, dict[str, Any]]:
        return {key: row["_doc"] for key, row in self.rows(table).items()}

    def states(self) -> dict[str, dict[str, Any]]:
        store = self.store()
        try:
            return {k: jsonio.loads(v) for k, v in store.states.committed().items()}
        finally:
            store.close()


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.timezone.utc)
