"""Who holds each collection: ``locking.collection_holders`` (PostgreSQL: pg_locks ⋈ _collection_runners, a row
believed only while its session holds the lock), the lock keys, and the ``runner`` column of ``stats`` (table and
JSON, through ``render_command`` and through a DuckDB runner's query socket). The real server is exercised by
integration_tests/test_runner_postgres_shared.py."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
from typing import Any, List

import pytest

from collection_runner.locking import StoreLock, collection_holders, collections_for, describe_holder, stream_holders
from collection_runner.query_service import QueryService, ask
from destination_collection import inspect as inspect_cmd
from destination_collection.config import parse_config
from destination_collection.naming import table_name
from destination_collection.stores import open_store, postgres_locks

SINCE = dt.datetime(2026, 12, 2, 10, 0, 0, 123456, tzinfo=dt.timezone.utc)


class FakeServer:
    """Answers the two reads collection_holders makes: advisory locks held, and the runners' table."""

    def __init__(self, locks: List[tuple], rows: List[tuple], table_exists: bool = True, readable: bool = True,
                 columns: int = 7) -> None:
        self.locks, self.rows, self.table_exists, self.readable, self.columns = locks, rows, table_exists, readable, columns
        self.statements: List[str] = []

    def fetchall(self, sql: str, params: Any) -> List[tuple]:
        self.statements.append(sql)
        if "pg_locks" in sql:
            return self.locks
        if "to_regclass" in sql:
            assert "has_table_privilege" in sql
            assert "pg_attribute" in sql
            return [(self.table_exists, self.table_exists and self.readable, self.columns if self.table_exists else 0)]
        assert self.table_exists and self.readable and self.columns == 7, "read the runners' table without checking it can"
        wanted = set(params[0])
        column = 1 if sql.lstrip().startswith("SELECT stream") else 0
        return [row[column:column + 1] + row[2:] for row in self.rows if row[column] in wanted]


def _held(table: str, backend_pid: int, key: Any = postgres_locks.collection_key) -> tuple:
    classid, objid = postgres_locks.lock_columns(key("db", "s", table))
    return (backend_pid, classid, objid)


def test_a_holder_is_believed_only_while_its_session_holds_the_lock():
    server = FakeServer(
        locks=[_held("orders", 501), _held("clicks", 777), _held("fresh", 900)],
        rows=[
            ("orders", "orders", "ingest-1", 4242, "follow", SINCE, 501),  # announced by the session that holds it
            ("clicks", "clicks", "ingest-2", 31, "sync", SINCE, 600),  # a killed runner's row: another session holds it now
            ("idle", "idle", "ingest-3", 77, "follow", SINCE, 650),  # a killed runner's row: nobody holds it
        ],
    )
    holders = collection_holders(server.fetchall, "db", "s", ["orders", "clicks", "idle", "fresh", "never"])
    assert holders == {
        "orders": {"host": "ingest-1", "pid": 4242, "mode": "follow", "since": SINCE},
        "clicks": {"host": None, "pid": None, "mode": None, "since": None},
        "fresh": {"host": None, "pid": None, "mode": None, "since": None},
    }
    assert describe_holder(holders["orders"]) == "pid 4242 on ingest-1, follow since 2026-12-02T10:00:00+00:00"
    assert "starting up" in describe_holder(holders["clicks"])
    assert all(sql.lstrip().upper().startswith("SELECT") for sql in server.statements)  # reads only


def test_without_the_runners_table_a_held_lock_is_a_runner_starting_up():
    server = FakeServer(locks=[_held("orders", 501)], rows=[], table_exists=False)
    assert collection_holders(server.fetchall, "db", "s", ["orders", "other"]) == {
        "orders": {"host": None, "pid": None, "mode": None, "since": None}
    }
    assert collection_holders(server.fetchall, "db", "s", []) == {}


def test_a_role_that_may_not_read_the_runners_table_gets_an_unknown_holder_not_an_error():
    server = FakeServer(locks=[_held("orders", 501)], rows=[("orders", "orders", "h", 1, "follow", SINCE, 501)], readable=False)
    holders = collection_holders(server.fetchall, "db", "s", ["orders"])
    assert holders["orders"]["pid"] is None and "may not read" in holders["orders"]["unknown"]
    assert "_collection_runners" in describe_holder(holders["orders"])
    assert "may not read" in inspect_cmd._holder_text(holders["orders"])


def test_a_runners_table_of_another_shape_gives_an_unknown_holder_not_an_error():
    server = FakeServer(locks=[_held("orders", 501)], rows=[], columns=1)
    holders = collection_holders(server.fetchall, "db", "s", ["orders"])
    assert holders["orders"]["pid"] is None and "not kinesis-collection's" in holders["orders"]["unknown"], holders


def test_a_stream_is_held_by_the_runner_whose_session_holds_its_stream_lock():
    """Two collections (two collection_prefix) of one stream: the row of the session holding the stream lock names it."""
    server = FakeServer(
        locks=[_held("orders", 501, postgres_locks.stream_key)],
        rows=[
            ("a_orders", "orders", "ingest-old", 9, "follow", SINCE, 450),  # a dead runner's row for the same stream
            ("b_orders", "orders", "ingest-1", 4242, "follow", SINCE, 501),
        ],
    )
    assert stream_holders(server.fetchall, "db", "s", ["orders", "clicks"]) == {
        "orders": {"host": "ingest-1", "pid": 4242, "mode": "follow", "since": SINCE}
    }


def test_lock_keys_are_distinct_stable_and_map_to_pg_locks_columns():
    keys = {
        postgres_locks.store_key("db", "s"),
        postgres_locks.metadata_ddl_key("db", "s"),
        postgres_locks.collection_key("db", "s", "orders"),
        postgres_locks.collection_key("db", "s", "clicks"),
        postgres_locks.collection_key("db", "t", "orders"),
        postgres_locks.collection_key("other", "s", "orders"),
        postgres_locks.stream_key("db", "s", "orders"),
        # names that would make the same text if the parts were joined with ':' (JSON lists keep them apart)
        postgres_locks.collection_key("db", "s:collection:t", "x"),
        postgres_locks.collection_key("db", "s", "t:collection:x"),
        postgres_locks.store_key("db", "s:collection:t"),
        postgres_locks.collection_key("db", "s", "t"),
    }
    assert len(keys) == 11
    # 0.1.x runners' whole-schema key: unchanged, so old and new runners exclude each other
    assert postgres_locks.store_key("db", "s") == int.from_bytes(
        __import__("hashlib").sha256(b"kinesis-collection:db:s").digest()[:8], "big", signed=True)
    assert postgres_locks.lock_columns(-1) == (0xFFFFFFFF, 0xFFFFFFFF)
    assert postgres_locks.lock_columns(0x0000000100000002) == (1, 2)
    for key in keys:
        classid, objid = postgres_locks.lock_columns(key)
        assert 0 <= classid < 2**32 and 0 <= objid < 2**32
        assert ((classid << 32) | objid) == key & (2**64 - 1)


def test_collections_follow_the_destination_naming_rule():
    config = parse_config({"store": {"store_type": "duckdb", "path": "/tmp/x.duckdb"}, "collection_prefix": "kin_"})
    assert collections_for(config, ["orders", "Click-Stream"]) == {
        table_name("kin_", "orders"): "orders", table_name("kin_", "Click-Stream"): "Click-Stream",
    }
    # a namespace given by the catalog: the destination's table and its state key (namespace.name)
    assert collections_for(config, [("orders", "eu")]) == {table_name("kin_", "orders", "eu"): "eu.orders"}


@pytest.fixture
def duckdb_store(tmp_path):
    config = parse_config({"store": {"store_type": "duckdb", "path": str(tmp_path / "c.duckdb")}})
    store = open_store(config)
    store.catalog.ensure_metadata()
    for name in ("orders", "clicks"):
        store.catalog.ensure_collection(name, name, None, [])
    store.states.save("orders", "STREAM", None, "orders", json.dumps({"type": "STREAM", "stream": {"stream_descriptor": {"name": "orders"}}}))
    store.settle()
    yield config, store
    store.close()


def test_stats_shows_the_runner_of_each_collection_in_both_formats(duckdb_store):
    _config, store = duckdb_store
    view = store.read_only_view()
    holder = {"host": "ingest-1", "pid": 4242, "mode": "follow", "since": SINCE}
    try:
        holders = lambda tables: {t: holder for t in tables if t == "orders"}  # noqa: E731
        table = inspect_cmd.render_command(view, "stats", holders=holders)
        lines = table.splitlines()
        assert [c.strip() for c in lines[0].split("|")][:4] == ["collection", "stream", "runner", "documents"]
        orders = next(line for line in lines if line.startswith("orders"))
        clicks = next(line for line in lines if line.startswith("clicks"))
        assert "pid 4242 on ingest-1 (follow since 2026-12-02T10:00:00+00:00)" in orders
        assert [c.strip() for c in clicks.split("|")][2] == "NULL"
        rows = {c["collection"]: c for c in json.loads(inspect_cmd.render_command(view, "stats", fmt="json", holders=holders))["collections"]}
        assert rows["orders"]["runner"] == {"host": "ingest-1", "pid": 4242, "mode": "follow", "since": SINCE.isoformat()}
        assert rows["clicks"]["runner"] is None
        # the destination's own stats (no holders): no runner column
        plain = inspect_cmd.render_command(view, "stats")
        assert "runner" not in plain.splitlines()[0]
        assert "runner" not in json.loads(inspect_cmd.render_command(view, "stats", fmt="json"))["collections"][0]
    finally:
        view.close()


def test_a_duckdb_runner_answers_stats_naming_itself(duckdb_store):
    config, store = duckdb_store
    lock = StoreLock(config, {"mode": "follow"})  # not acquired: only its description is used
    service = QueryService(store, logging.getLogger("test"), timeout_secs=5, holder=lock.holder()).start()
    try:
        answer = ask(service.socket_path, {"command": "stats", "format": "json"})
    finally:
        service.stop()
    assert answer["ok"], answer
    runners = [c["runner"] for c in json.loads(answer["output"])["collections"]]
    assert len(runners) == 2
    assert all(r["pid"] == os.getpid() and r["host"] == socket.gethostname() and r["mode"] == "follow" for r in runners), runners
