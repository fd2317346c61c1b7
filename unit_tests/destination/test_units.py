"""DuckDB-only unit tests: naming, config and paths, spec rules, sandbox, event-time parsing, inspect, interval flush."""
from __future__ import annotations

import datetime as dt
import json
import os
import time

import pytest
from airbyte_cdk.models import (
    AirbyteMessage,
    AirbyteRecordMessage,
    AirbyteStateMessage,
    AirbyteStateType,
    AirbyteStreamState,
    FailureType,
    Status,
    StreamDescriptor,
    Type,
)
from airbyte_cdk.models.airbyte_protocol import AirbyteStateBlob
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_collection import inspect as inspect_cmd
from destination_collection.config import IN_DOCKER_ENV, LOCAL_ROOT_ENV, parse_config, resolve_duckdb_path
from destination_collection.destination import DestinationCollection, raw_spec
from destination_collection.documents import encode_primary_key, parse_event_time
from destination_collection.naming import column_name, quote_ident, table_name
from destination_collection.protocol_loop import WriteLoop
from destination_collection.transformation import Transformation
from unit_tests.destination.harness import record, state, stream, utc

LOGGER = __import__("logging").getLogger("airbyte")


# -- naming ----------------------------------------------------------------------------------------------------
def test_table_names_are_clean_when_possible_and_injective():
    assert table_name("", "orders") == "orders"
    assert table_name("kc_", "orders") == "kc_orders"
    names = {
        table_name("", "orders"),
        table_name("", "Orders"),
        table_name("", "my-stream"),
        table_name("", "my_stream"),
        table_name("", "my.stream"),
        table_name("", "b", namespace="a_"),
        table_name("", "_b", namespace="a"),
        table_name("", "a__b"),
        table_name("", "_collection_state"),
        table_name("", "x" * 200),
        table_name("", "x" * 200 + "y"),
    }
    assert len(names) == 11
    assert all(len(n.encode()) <= 63 for n in names)
    hashed = table_name("", "my-stream")
    assert hashed.startswith("my_stream__") and len(hashed) == len("my_stream__") + 8
    assert table_name("", hashed) != hashed  # a name that looks hashed is hashed again, so no clean name collides
    assert table_name("", "ünïcode-名前").isascii()


def test_column_names_keep_field_names_and_hash_only_when_needed():
    taken = {"user"}
    assert column_name('he said "hi"', taken) == 'he said "hi"'
    assert column_name("select", taken) == "select"
    clash = column_name("User", taken)
    assert clash != "User" and clash.lower() not in taken
    assert column_name("_id", set()) != "_id"
    long = column_name("é" * 100, set())
    assert len(long.encode()) <= 63
    assert quote_ident('a"b') == '"a""b"'
    with pytest.raises(ValueError):
        quote_ident("a\x00b")


def test_primary_key_encoding_is_canonical_and_collision_free():
    pk = [["a"], ["b"]]
    assert encode_primary_key({"a": "x", "b": 1}, pk) == '["x",1]'
    assert encode_primary_key({"a": "x", "b": "1"}, pk) == '["x","1"]'
    assert encode_primary_key({"a": "x,1", "b": None}, pk) != encode_primary_key({"a": "x", "b": "1,null"}, pk)
    assert encode_primary_key({"a": {"z": 1, "y": 2}, "b": 0}, pk) == encode_primary_key({"b": 0, "a": {"y": 2, "z": 1}}, pk)
    assert encode_primary_key({"a": "日本", "b": 2**80}, pk) == f'["日本",{2**80}]'


# -- config and paths --------------------------------------------------------------------------------------------
def test_relative_duckdb_path_resolves_against_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(IN_DOCKER_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_duckdb_path("sub/x.duckdb") == str(tmp_path / "sub" / "x.duckdb")


def test_docker_paths_stay_under_local(tmp_path, monkeypatch):
    root = tmp_path / "local"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", root / "link")
    monkeypatch.setenv(IN_DOCKER_ENV, "1")
    monkeypatch.setenv(LOCAL_ROOT_ENV, str(root))
    assert resolve_duckdb_path("x.duckdb") == str(root / "x.duckdb")
    assert resolve_duckdb_path("/local/sub/x.duckdb") == str(root / "sub" / "x.duckdb")
    assert resolve_duckdb_path("/data/x.duckdb") == str(root / "data" / "x.duckdb")
    for escaping in ("../x.duckdb", "/local/../../x.duckdb", "link/x.duckdb", "/local"):
        with pytest.raises(AirbyteTracedException) as info:
            resolve_duckdb_path(escaping)
        assert info.value.failure_type == FailureType.config_error and "/local" in info.value.message


def test_config_errors_name_the_field_and_never_the_password():
    secret = "s3cr3t-value"
    with pytest.raises(AirbyteTracedException) as info:
        parse_config({"store": {"store_type": "postgres", "host": "h", "port": "not-a-port", "database": "d",
                                "username": "u", "password": secret}, "batch_size": 0})
    message = info.value.message
    assert "store.postgres.port" in message and "batch_size" in message
    assert secret not in message and secret not in (info.value.internal_message or "")
    assert info.value.failure_type == FailureType.config_error


def test_spec_follows_airbyte_lint_rules():
    spec = raw_spec()
    assert spec["supported_destination_sync_modes"] == ["append", "overwrite", "append_dedup"]
    assert spec["supportsIncremental"] is True and spec["supportsRefreshes"] is True
    connection = spec["connectionSpecification"]
    assert connection["type"] == "object" and connection["additionalProperties"] is True

    def walk(node, path="$"):
        if isinstance(node, dict):
            assert "anyOf" not in node and "allOf" not in node and "not" not in node and "patternProperties" not in node, path
            if "additionalProperties" in node:
                assert node["additionalProperties"] is True, path
            if "oneOf" in node:
                assert node.get("type") == "object", path
                consts = []
                for option in node["oneOf"]:
                    assert option["type"] == "object"
                    discriminators = [k for k, v in option["properties"].items() if "const" in v]
                    assert len(discriminators) == 1
                    prop = option["properties"][discriminators[0]]
                    assert "default" not in prop and "enum" not in prop
                    consts.append((discriminators[0], prop["const"]))
                assert len({c[0] for c in consts}) == 1 and len(consts) == len(set(consts))
            for key, value in node.items():
                if isinstance(value, dict) and (key.endswith("password") or key.endswith("_secret") or key.endswith("_token")):
                    assert value.get("airbyte_secret") is True, path + "." + key
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")

    walk(connection)
    DestinationCollection().spec(LOGGER)  # loads into the CDK model


# -- transformation sandbox --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sql, fragment",
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "FROM _input and nothing else"),
        ("SELECT * FROM _input JOIN _input AS b ON true", "FROM _input and nothing else"),
        ("SELECT a, count(*) FROM _input GROUP BY a", "GROUP BY"),
        ("SELECT count(*) AS n FROM _input", "aggregates"),
        ("SELECT * FROM _input UNION ALL SELECT * FROM _input", "set operations"),
        ("WITH x AS (SELECT 1) SELECT * FROM _input", "WITH"),
        ("SELECT * FROM _input WHERE a IN (SELECT 1)", "subqueries"),
        ("SELECT * FROM _input LIMIT 1", "LIMIT"),
        ("COPY _input TO '/tmp/x.csv'", "single SELECT"),
        ("ATTACH '/tmp/x.db'", "single SELECT"),
        ("SELECT * FROM _input; SELECT 1", "exactly one"),
        ("SELEC * FROM _input", "syntax error"),
        ("SELECT no_such_function(a) FROM _input", "no_such_function"),
    ],
)
def test_transformation_refusals_are_config_errors(sql, fragment):
    with pytest.raises(AirbyteTracedException) as info:
        Transformation(sql, "orders")
    assert info.value.failure_type == FailureType.config_error
    assert fragment in info.value.message and "orders" in info.value.message and sql.strip() in info.value.message


def test_transformation_timeout_interrupts_a_runaway_query():
    slow = Transformation("SELECT *, list_sum(range(k * 5000)) AS s FROM _input", "orders", timeout_secs=0.3)
    started = time.monotonic()
    with pytest.raises(AirbyteTracedException) as info:
        slow.apply([{"k": 1}] * 40_000)  # many chunks: the deadline is checked between them
    assert time.monotonic() - started < 60
    assert "longer than 0.3s" in info.value.message


def test_check_reports_invalid_transformation_and_succeeds_otherwise(tmp_path):
    base = {"store": {"store_type": "duckdb", "path": str(tmp_path / "c.duckdb")}}
    ok = DestinationCollection().check(LOGGER, {**base, "collections": [{"stream": "s", "transformation_sql": "SELECT * FROM _input"}]})
    assert ok.status == Status.SUCCEEDED
    bad = DestinationCollection().check(LOGGER, {**base, "collections": [{"stream": "s", "transformation_sql": "SELECT * FROM other"}]})
    assert bad.status == Status.FAILED and "stream 's'" in bad.message and "_input" in bad.message


# -- event time --------------------------------------------------------------------------------------------------
def test_event_time_parsing_units():
    assert parse_event_time(1_700_000_000) == utc(2023, 11, 14, 22, 13, 20)
    assert parse_event_time(1_700_000_000_500) == utc(2023, 11, 14, 22, 13, 20, 500000)
    assert parse_event_time(1_700_000_000_000_001) == utc(2023, 11, 14, 22, 13, 20, 1)
    assert parse_event_time(1_700_000_000, "ms") == utc(1970, 1, 20, 16, 13, 20)
    assert parse_event_time(1.5, "s") == utc(1970, 1, 1, 0, 0, 1, 500000)
    assert parse_event_time("1700000000") == utc(2023, 11, 14, 22, 13, 20)
    assert parse_event_time("2026-11-25T21:30:39.248Z") == dt.datetime(2026, 11, 25, 21, 30, 39, 248000, tzinfo=dt.timezone.utc)
    assert parse_event_time("2024-01-01T00:00:00") == utc(2024, 1, 1)
    for bad in ("soon", True, None, {"a": 1}, float("nan"), 10**30):
        assert parse_event_time(bad) is None


# -- write loop details ------------------------------------------------------------------------------------------
def test_flush_after_max_interval_without_state(harness):
    now = [0.0]
    loop = WriteLoop(harness.config(flush_interval_secs=5), {"streams": [stream("s")]}, clock=lambda: now[0])
    seen = []

    def feed():
        yield json.dumps(record("s", {"k": 1}))
        now[0] = 2.0
        yield json.dumps(record("s", {"k": 2}))
        loop.store.settle()  # the DuckDB store commits in the background: wait for any COMMIT before looking
        seen.append(len(harness.docs("s")))  # not yet due
        now[0] = 5.5
        yield json.dumps(record("s", {"k": 3}))  # the first record is now 5.5 s old: flush
        loop.store.settle()
        seen.append(len(harness.docs("s")))
        yield json.dumps(record("s", {"k": 4}))

    list(loop.run(feed()))
    assert seen == [0, 3]
    assert len(harness.docs("s")) == 4


def _costly_store(monkeypatch, seconds: float) -> None:
    """Every apply reports a lookup of ``seconds`` (what a big collection's lookups cost)."""
    from destination_collection.collection_writer import CollectionWriter

    original = CollectionWriter.apply

    def apply(self, changes):
        original(self, changes)
        self.lookup_seconds = seconds if changes else 0.0

    monkeypatch.setattr(CollectionWriter, "apply", apply)


def test_group_commit_holds_states_while_the_last_commit_was_costly(harness, monkeypatch):
    from destination_collection.protocol_loop import HOLD_FACTOR

    _costly_store(monkeypatch, 0.5)  # each commit looks up for 0.5 s, so states wait HOLD_FACTOR * 0.5 s
    now = [0.0]
    loop = WriteLoop(harness.config(flush_interval_secs=100), {"streams": [stream("s")]}, clock=lambda: now[0])
    seen = []

    def look(label):
        loop.store.settle()
        seen.append((label, len(harness.docs("s")), sorted(s_["stream"]["stream_state"]["n"] for s_ in harness.states().values())))

    def feed():
        yield json.dumps(record("s", {"k": 1}))
        yield json.dumps(state("s", {"n": 1}, state_id=1))  # the first commit: nothing to amortise yet
        look("first state")
        now[0] = 1.0
        yield json.dumps(record("s", {"k": 2}))
        yield json.dumps(state("s", {"n": 2}, state_id=2))  # 1 s after a 0.5 s commit: held
        now[0] = 2.0
        yield json.dumps(record("s", {"k": 3}))
        yield json.dumps(state("s", {"n": 3}, state_id=3))  # still held
        look("held")
        now[0] = HOLD_FACTOR * 0.5 + 0.1
        yield json.dumps(record("s", {"k": 4}))  # due: both held states and records 2-4 in one commit
        look("due")
        yield json.dumps(state("s", {"n": 5}, state_id=5))  # held again, until the end of input

    echoes = [e["state"]["id"] for e in loop.run(feed())]
    assert seen == [("first state", 1, [1]), ("held", 1, [1]), ("due", 4, [3])]
    assert echoes == [1, 2, 3, 5]  # every state echoed once, in order, after its commit
    assert [s_["stream"]["stream_state"] for s_ in harness.states().values()] == [{"n": 5}]
    assert len(harness.docs("s")) == 4


def test_group_commit_never_holds_a_state_past_flush_interval(harness, monkeypatch):
    _costly_store(monkeypatch, 1000.0)  # a commit so costly that only flush_interval_secs bounds the hold
    now = [0.0]
    loop = WriteLoop(harness.config(flush_interval_secs=3), {"streams": [stream("s")]}, clock=lambda: now[0])
    committed = []  # (time, the last committed state's n) after each tick

    def feed():
        for n in range(1, 6):
            yield json.dumps(record("s", {"k": n}))
            yield json.dumps(state("s", {"n": n}, state_id=n))
            now[0] += 1.0
            yield {"type": "LOG", "log": {"level": "DEBUG", "message": "tick"}}  # as the runner's heartbeats
            loop.store.settle()
            committed.append((now[0], harness.states()["s"]["stream"]["stream_state"]["n"]))

    echoes = [e["state"]["id"] for e in loop.run(feed())]
    # state 1: the first commit; states 2-4 (held from t=1) commit at t=4, flush_interval_secs after state 2
    assert committed == [(1.0, 1), (2.0, 1), (3.0, 1), (4.0, 4), (5.0, 4)]
    assert echoes == [1, 2, 3, 4, 5]
    assert len(harness.docs("s")) == 5


def test_held_state_of_one_stream_commits_with_another_streams_full_buffer(harness, monkeypatch):
    _costly_store(monkeypatch, 1000.0)
    loop = WriteLoop(harness.config(batch_size=2, flush_interval_secs=1e9), {"streams": [stream("a"), stream("b")]})
    seen = []

    def look():
        loop.store.settle()
        seen.append((len(harness.docs("a")), len(harness.docs("b")), sorted(harness.states())))

    def feed():
        yield json.dumps(record("a", {"k": 1}))
        yield json.dumps(state("a", {"n": 1}, state_id=1))  # the first commit
        look()
        yield json.dumps(record("b", {"k": 1}))
        yield json.dumps(state("b", {"n": 1}, state_id=2))  # held: it covers b's buffered record
        look()
        yield json.dumps(record("a", {"k": 2}))
        yield json.dumps(record("a", {"k": 3}))  # a's buffer is full: committed before the next message
        yield {"type": "LOG", "log": {"level": "DEBUG", "message": "next"}}
        look()

    echoes = [e["state"]["id"] for e in loop.run(feed())]
    # a's full buffer takes the held state of b, and b's record with it
    assert seen == [(1, 0, ["a"]), (1, 0, ["a"]), (3, 1, ["a", "b"])]
    assert echoes == [1, 2]


def test_group_commit_writes_the_same_documents_as_a_commit_per_state(tmp_path, monkeypatch):
    from unittest import mock

    from destination_collection import protocol_loop
    from unit_tests.destination.harness import Harness

    messages = []
    for n in range(40):
        messages.append(record("s", {"k": n % 7, "v": n, "_op": ["upsert", "update", "delete", "insert", "repsert"][n % 5]}))
        if n % 3 == 2:
            messages.append(state("s", {"n": n}, state_id=n))
    documents = {}
    _costly_store(monkeypatch, 1.0)
    for factor in (0, 10**9):  # never hold / hold every state until the end of input
        harness = Harness({"store_type": "duckdb", "path": str(tmp_path / f"f{factor}.duckdb")})
        with mock.patch.object(protocol_loop, "HOLD_FACTOR", factor):
            echoes = harness.write([stream("s", pk=[["k"]])], messages)
        assert [e["state"]["id"] for e in echoes] == [n for n in range(40) if n % 3 == 2]
        documents[factor] = {key: (doc["_doc"], doc["_meta"].get("error")) for key, doc in harness.rows("s").items()}
    assert documents[0] == documents[10**9] and documents[0]


def test_in_process_airbyte_message_objects(harness):
    messages = [
        AirbyteMessage(type=Type.RECORD, record=AirbyteRecordMessage(stream="s", data={"k": 1}, emitted_at=1)),
        AirbyteMessage(
            type=Type.STATE,
            state=AirbyteStateMessage(
                type=AirbyteStateType.STREAM,
                stream=AirbyteStreamState(stream_descriptor=StreamDescriptor(name="s"), stream_state=AirbyteStateBlob(c=1)),
            ),
        ),
        {"type": "RECORD", "record": {"stream": "s", "data": {"k": 2}, "emitted_at": 2}},
    ]
    echoes = harness.write([stream("s")], messages, as_lines=False)
    assert echoes[0]["state"]["destinationStats"] == {"recordCount": 1.0}
    assert set(harness.docs("s")) == {"[1]", "[2]"}


def test_namespaced_streams_get_distinct_collections(harness):
    streams = [stream("s", namespace="a"), stream("s", namespace="b")]
    echoes = harness.write(streams, [record("s", {"k": 1}, namespace="a"), record("s", {"k": 2}, namespace="b"), state("s", {}, namespace="b")])
    store = harness.store()
    try:
        tables = {c["namespace"]: c["table"] for c in store.catalog.collections()}
        states = store.states.committed()
    finally:
        store.close()
    assert len(set(tables.values())) == 2
    assert set(harness.docs(tables["a"])) == {"[1]"} and set(harness.docs(tables["b"])) == {"[2]"}
    assert list(states) == ["b.s"] and echoes[0]["state"]["destinationStats"]["recordCount"] == 1.0


# -- inspect -----------------------------------------------------------------------------------------------------
def test_inspect_query_describe_and_stats(harness):
    harness.write(
        [stream("orders")],
        [
            record("orders", {"k": 1, "user": "ann", "items": [{"sku": "a"}, {"sku": "b"}]}),
            record("orders", {"k": 2, "user": "bob", "items": []}),
            record("orders", {"k": 3, "user": "ann", "note": None}),
            state("orders", {"cursor": 3}, state_id=5),
        ],
    )
    store = harness.store()
    try:
        columns, rows = inspect_cmd.run_query(store, 'SELECT "user", count(*) AS n FROM orders GROUP BY 1 ORDER BY 1')
        assert columns == ["user", "n"] and rows == [("ann", 2), ("bob", 1)]
        total, described = inspect_cmd.describe(store, "orders")
        index = {(tuple(r["field"]), r["type"]): r["occurrences"] for r in described}
        assert total == 3
        assert index[(("user",), "string")] == 3
        assert index[(("items",), "array")] == 2
        assert index[(("items", "*"), "object")] == 1
        assert index[(("items", "*", "sku"), "string")] == 1
        assert index[(("note",), "null")] == 1
        assert index[(("_id",), "string")] == 3
        result = inspect_cmd.stats(store)
        (collection,) = result["collections"]
        assert collection["collection"] == "orders" and collection["documents"] == 3 and collection["bytes"] > 0
        assert collection["state"]["id"] == 5 and collection["last_write_at"] is not None
        table = inspect_cmd.render_table(columns, rows)
        assert "ann" in table and "(2 rows)" in table
        with pytest.raises(AirbyteTracedException, match="No collection named 'nope'"):
            inspect_cmd.describe(store, "nope")
        with pytest.raises(AirbyteTracedException, match="Query failed"):
            inspect_cmd.run_query(store, "SELECT * FROM missing_table")
    finally:
        store.close()


# -- which stored documents a batch reads (operations.DocumentReads) ----------------------------------------------
def _change(key, op, fields, meta=None):
    from destination_collection.documents import Change

    return Change(key, op, fields, utc(2026, 1, 1), meta if meta is not None else {"kinesis": {"shard_id": "s"}}, "r", utc(2026, 1, 1))


def test_document_reads_skip_rows_whose_shape_a_merge_covers():
    from destination_collection.operations import DocumentReads, Stored, document_shape

    full = {"k": 1, "a": 2}
    shape = document_shape(full, {"kinesis": {}})
    assert len(shape) == 32 and shape != document_shape({"a": 2, "k": 1}, {"kinesis": {}})  # order counts
    assert shape != document_shape(full, {"kinesis": {}, "supplied": {}})
    assert document_shape(full, {"kinesis": {}, "bad": {}}) == shape  # bad describes one change only
    assert document_shape(full, {"error": {"error_only": True}}) is None  # may be a placeholder
    assert document_shape({"a\x00": 1}, {}) == document_shape({"a\x00": 1}, {})
    reads = DocumentReads([
        _change("full", "UPSERT", {"k": 1, "a": 3}),
        _change("fewer", "UPSERT", {"k": 1}),
        _change("two", "UPSERT", {"k": 1, "a": 3}), _change("two", "UPDATE", {"a": 4, "k": 1}),
        _change("error", "UPSERT", {"k": 1, "a": 3}), _change("error", "ERROR", {}),
        _change("insert", "INSERT", {"k": 1}),
        _change("repsert", "REPSERT", {"k": 1}), _change("delete", "DELETE", {}),
    ])
    assert not reads.needs("full", shape)
    assert reads.needs("full", None) and reads.needs("full", document_shape({"k": 1, "a": 2, "b": 3}, {"kinesis": {}}))
    assert reads.needs("fewer", shape)  # the stored "a" stays: its value is needed
    assert reads.needs("two", shape)  # two shapes (another order): the first applied one decides
    assert reads.needs("error", shape)  # an error keeps the stored fields beside it
    assert not reads.needs("insert", shape) and reads.needs("insert", None)  # NULL: maybe a placeholder
    assert not reads.needs("repsert", None) and not reads.needs("delete", None)
    stored = {"full": Stored(None, None, utc(2026, 1, 1), None, None, shape)}
    reads.complete(stored)
    assert stored["full"].fields == {"k": 1, "a": 3} and stored["full"].meta == {"kinesis": {"shard_id": "s"}}
    guarded = DocumentReads([_change("x", "REPSERT", {"k": 1}), _change("y", "UPSERT", {"k": 1, "a": 3})], guard=True)
    assert guarded.needs("x", None) and not guarded.needs("x", shape) and not guarded.needs("y", shape)


def test_only_overwrite_asks_for_the_stored_max_generation():
    """The stored max generation costs a scan of the whole collection on PostgreSQL (~1.5 s at 10 M rows): only the
    mode that needs it (overwrite: the next generation must be above it) asks."""
    from destination_collection.generations import plan_generation

    asked = []

    def max_stored():
        asked.append(1)
        return 7

    assert plan_generation("append_dedup", None, None, max_stored).write_generation is None
    assert plan_generation("append", 3, 2, max_stored).min_alive_generation == 2
    assert asked == []
    assert plan_generation("overwrite", None, None, max_stored).write_generation == 8 and asked == [1]
    assert plan_generation("overwrite", 9, None, max_stored).write_generation == 9
