"""Issue 15 items 5, 6 and 10 (INTERVAL): the inspect paths are read-only for any statement text, bounded in time,
never block the runner, and render every value. DuckDB: the runner's socket service (in process) and the
``destination-collection`` path (a read-only file)."""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time

import pytest

from collection_runner.query_service import QueryService, ask
from destination_collection import inspect as inspect_cmd
from destination_collection.stores.duckdb_store import DuckDBStore

DOCS = 50
# the attacks, then variants: several statements, comments, side-effecting table/scalar functions,
# replacement scans of files, settings, transactions, DDL/DML behind EXPLAIN, CTEs, PRAGMA/CALL/COPY/ATTACH/…
ATTACKS = [
    "ROLLBACK; DELETE FROM orders; CREATE TABLE x AS SELECT 1; BEGIN TRANSACTION; SELECT 1",
    "SET GLOBAL memory_limit='4MB'",
    "SET memory_limit='4MB'",
    "RESET memory_limit",
    "SELECT 1; DELETE FROM orders",
    "SELECT 1 /* ; */ ; DELETE FROM orders",
    "-- a comment\nDELETE FROM orders",
    "DELETE FROM orders /* SELECT 1 */",
    "COMMIT; DELETE FROM orders",
    "BEGIN TRANSACTION",
    "EXPLAIN ANALYZE DELETE FROM orders",
    "EXPLAIN DELETE FROM orders",
    "WITH d AS (SELECT 1) DELETE FROM orders",
    "CREATE TABLE x AS SELECT 1",
    "DROP TABLE orders",
    "UPDATE orders SET i = 0",
    "TRUNCATE orders",
    "INSERT INTO orders SELECT 1",
    "ALTER TABLE orders ADD COLUMN y INT",
    "PRAGMA threads=1",
    "CALL pragma_version()",
    "CHECKPOINT",
    "FORCE CHECKPOINT",
    "ATTACH ':memory:' AS m",
    "DETACH DATABASE m",
    "COPY orders TO '/tmp/kc_hardening_leak.csv'",
    "COPY (SELECT * FROM orders) TO '/tmp/kc_hardening_leak.csv'",
    "EXPORT DATABASE '/tmp/kc_hardening_export'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "USE memory",
    "VACUUM",
    "PREPARE p AS DELETE FROM orders",
    "SELECT * FROM orders FOR UPDATE",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM read_json('/etc/passwd')",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM read_csv_auto('/etc/passwd') UNION ALL SELECT 1",
    "SELECT (SELECT count(*) FROM read_blob('/etc/hostname'))",
    "SELECT * FROM query('SELECT 1')",
    "SELECT * FROM query_table('orders')",
    "SELECT * FROM duckdb_secrets()",
    "SELECT * FROM which_secret('s3://x', 's3')",
    "SELECT * FROM checkpoint()",
    "SELECT * FROM force_checkpoint()",
    "SELECT * FROM enable_logging()",
    "SELECT * FROM json_execute_serialized_sql('{}')",
    "SELECT getenv('HOME')",
    "SELECT GETENV('AWS_SECRET_ACCESS_KEY')",
    "SELECT nextval('s')",
    "SELECT setseed(0.5)",
    "SELECT write_log('x')",
    "WITH t AS (SELECT getenv('PATH') AS p) SELECT * FROM t",
    "SELECT * FROM orders WHERE i IN (SELECT * FROM read_csv('/etc/passwd'))",
    "",
    "   ;  ",
]


@pytest.fixture
def store(tmp_path):
    store = DuckDBStore(str(tmp_path / "c.duckdb"))
    with store.transaction():
        store.execute(f"CREATE TABLE orders AS SELECT range AS i FROM range({DOCS})")
    store.settle()
    yield store
    store.close()


def _count(store: DuckDBStore) -> int:
    return store.fetchall("SELECT count(*) FROM orders")[0][0]


def _settings(store: DuckDBStore) -> tuple:
    return tuple(
        store.fetchall(
            "SELECT current_setting('memory_limit'), current_setting('threads'), current_setting('enable_external_access'), "
            "current_setting('lock_configuration')"
        )[0]
    )


@pytest.fixture
def service(store):
    service = QueryService(store, logging.getLogger("test"), timeout_secs=5).start()
    yield service
    service.stop()


def test_runner_socket_refuses_every_statement_that_is_not_one_read_only_select(store, service, reliability):
    before_settings = _settings(store)
    for sql in ATTACKS:
        answer = ask(service.socket_path, {"command": "query", "sql": sql, "format": "json"})
        assert answer["ok"] is False, f"{sql!r} was run: {answer}"
        assert answer["failure_type"] == "config_error", (sql, answer)
        assert "Query refused" in answer["error"] or "no table or view named" in answer["error"], (sql, answer)
        assert _count(store) == DOCS, f"documents changed by {sql!r}"
        # the writer keeps writing, with its settings unchanged
        with store.transaction():
            store.execute("INSERT INTO orders VALUES (-1)")
            store.execute("DELETE FROM orders WHERE i = -1")
        store.settle()
    assert not os.path.exists("/tmp/kc_hardening_leak.csv")
    assert _settings(store)[:2] == before_settings[:2]
    assert _settings(store)[3] == before_settings[3]  # configuration not locked or unlocked by a query
    # the legitimate read queries still work
    ok = ask(service.socket_path, {"command": "query", "sql": "SELECT count(*) AS n FROM orders", "format": "json"})
    assert json.loads(ok["output"]) == {"n": DOCS}
    for sql in ("SHOW TABLES", "DESCRIBE orders", "SUMMARIZE orders", "WITH d AS (SELECT 1 a) SELECT * FROM d",
                "SELECT count(*) FROM information_schema.tables", "SELECT * FROM range(3)", "SELECT 1 /* ; DELETE FROM orders */"):
        assert ask(service.socket_path, {"command": "query", "sql": sql})["ok"], sql
    reliability(cases=len(ATTACKS))


def test_the_query_connection_cannot_read_files_even_past_the_parser(store, service):
    """External access is off for the database while the service runs: a file read is refused by DuckDB itself."""
    with pytest.raises(Exception, match="disabled by configuration|Permission"):
        store.fetchall("SELECT * FROM read_csv('/etc/passwd')")


def test_destination_cli_path_read_only_file(store, tmp_path, reliability):
    store.close()
    ro = DuckDBStore(str(tmp_path / "c.duckdb"), read_only=True)
    view = ro.read_only_view()
    try:
        for sql in ATTACKS:
            with pytest.raises(Exception, match="Query refused|no table or view named") as info:
                inspect_cmd.render_command(view, "query", sql=sql, fmt="json", timeout_secs=5)
            assert getattr(info.value, "failure_type", None) is not None
        assert json.loads(inspect_cmd.render_command(view, "query", sql="SELECT count(*) n FROM orders", fmt="json")) == {"n": DOCS}
        # the read-only database's configuration is locked: not even the view's own connection can change it
        with pytest.raises(Exception, match="locked"):
            view.con.execute("SET memory_limit='4MB'")
    finally:
        view.close()
        ro.close()
    reliability(cases=len(ATTACKS))


def test_a_long_query_stops_at_its_timeout_and_the_next_query_is_answered(service):
    started = time.monotonic()
    answer = ask(service.socket_path, {"command": "query", "sql": "SELECT count(*) FROM range(1000000000000)", "timeout": 1.5})
    took = time.monotonic() - started
    assert answer["ok"] is False and "stopped after 1.5 s" in answer["error"] and answer["failure_type"] == "config_error"
    assert took < 6, took
    assert ask(service.socket_path, {"command": "query", "sql": "SELECT 42 AS n", "format": "json"})["output"] == '{"n":42}'


def test_the_runner_caps_a_client_timeout(store):
    service = QueryService(store, logging.getLogger("test"), timeout_secs=1).start()
    try:
        started = time.monotonic()
        answer = ask(service.socket_path, {"command": "query", "sql": "SELECT count(*) FROM range(1000000000000)", "timeout": 3600})
        assert "stopped after 1 s" in answer["error"] and time.monotonic() - started < 5
    finally:
        service.stop()


def test_a_query_whose_client_disconnects_is_interrupted(service):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(service.socket_path)
    sock.sendall(json.dumps({"command": "query", "sql": "SELECT count(*) FROM range(1000000000000)"}).encode() + b"\n")
    time.sleep(0.5)
    sock.close()
    started = time.monotonic()
    answer = ask(service.socket_path, {"command": "query", "sql": "SELECT 7 AS n", "format": "json"})
    assert answer["output"] == '{"n":7}'
    assert time.monotonic() - started < 2.5, "the abandoned query kept the service busy"


def test_stop_interrupts_a_running_query_and_returns_quickly(store):
    service = QueryService(store, logging.getLogger("test"), timeout_secs=120).start()
    answers = []
    thread = threading.Thread(
        target=lambda: answers.append(ask(service.socket_path, {"command": "query", "sql": "SELECT count(*) FROM range(1000000000000)"}))
    )
    thread.start()
    time.sleep(0.7)
    started = time.monotonic()
    service.stop()
    assert time.monotonic() - started < 3
    thread.join(5)
    assert answers and answers[0]["ok"] is False and "shutting down" in answers[0]["error"]
    assert answers[0]["failure_type"] == "transient_error"
    assert _count(store) == DOCS


VALUES = (
    "SELECT INTERVAL 3 DAY + INTERVAL 2 HOUR AS iv, INTERVAL '1 month 1 microsecond' AS iv2, -INTERVAL 90 MINUTE AS neg, "
    "TIME '12:00:01' AS t, '12:00:00+02'::TIMETZ AS tz, '6ba7b810-9dad-11d1-80b4-00c04fd430c8'::UUID AS u, "
    "'\\xff\\x00ab'::BLOB AS b, 170141183460469231731687303715884105727::HUGEINT AS h, 2::UHUGEINT AS uh, "
    "1.2345::DECIMAL(38,10) AS d, 12345678901234567890.123456789::DECIMAL(38,9) AS dbig, MAP {1: 'a', 2: 'b'} AS m, "
    "MAP {[1]: 2} AS mlist, {'a': 1, 'b': [1, 2]} AS s, [1, 2] AS l, [1, 2]::INTEGER[2] AS arr, 'nan'::DOUBLE AS nan, "
    "'inf'::DOUBLE AS inf, '-inf'::DOUBLE AS ninf, 'infinity'::DATE AS dinf, '10000-01-01'::DATE AS dbig2, "
    "'-5000-01-01'::DATE AS bc, '294246-01-01'::TIMESTAMP AS tsbig, TIMESTAMP_NS '2020-01-01 00:00:00.123456789' AS ns, "
    "'2020-01-01'::TIMESTAMPTZ AS tstz, 'a'::ENUM('a', 'b') AS e, bitstring('101', 5) AS bits, union_value(k := 'x') AS un, "
    "NULL AS nothing, true AS yes"
)


def test_every_value_renders_in_both_formats(store, service):
    for fmt in ("json", "table"):
        answer = ask(service.socket_path, {"command": "query", "sql": VALUES, "format": fmt})
        assert answer["ok"], answer
    row = json.loads(ask(service.socket_path, {"command": "query", "sql": VALUES, "format": "json"})["output"])
    assert row["iv"] == "P3DT2H" and row["neg"] == "-PT1H30M" and row["t"] == "12:00:01"
    assert row["u"] == "6ba7b810-9dad-11d1-80b4-00c04fd430c8" and row["b"].startswith("\\x")
    assert row["h"] == 170141183460469231731687303715884105727 and row["d"] == 1.2345
    assert row["dbig"] == "12345678901234567890.123456789"  # a double would lose digits: text
    assert row["m"] == {"1": "a", "2": "b"} and row["s"] == {"a": 1, "b": [1, 2]} and row["arr"] == [1, 2]
    assert (row["nan"], row["inf"], row["ninf"]) == ("NaN", "Infinity", "-Infinity")
    assert row["dbig2"] == "10000-01-01" and row["nothing"] is None and row["yes"] is True
    table = ask(service.socket_path, {"command": "query", "sql": VALUES, "format": "table"})["output"]
    assert "P3DT2H" in table and "NaN" in table and "(1 row)" in table
    # the destination CLI path renders the same way
    view = store.read_only_view()
    try:
        assert json.loads(inspect_cmd.render_command(view, "query", sql=VALUES, fmt="json"))["iv"] == "P3DT2H"
    finally:
        view.close()


# -- round 2: variants the first round's tests did not try ------------------------------------------------------
ROUND2_ATTACKS = [
    "FROM '/etc/hostname'",
    "SELECT * FROM (FROM '/etc/hostname')",
    "WITH c AS (SELECT * FROM read_text('/etc/hostname')) SELECT * FROM c",
    "SELECT * FROM orders, LATERAL (SELECT * FROM read_text('/etc/hostname'))",
    "PIVOT (SELECT * FROM read_text('/etc/hostname')) ON content USING count(*)",
    "SUMMARIZE SELECT * FROM read_csv('/etc/passwd')",
    "DESCRIBE SELECT * FROM read_text('/etc/hostname')",
    "FROM sniff_csv('/etc/passwd')",
    "FROM parquet_metadata('/tmp/x.parquet')",
    "FROM sqlite_scan('/tmp/x.db', 't')",
    "SELECT (SELECT count(*) FROM glob('/*'))",
    "SELECT * FROM query('ATTACH ''/tmp/kc_evil.db'' AS e')",
    "SELECT json_execute_serialized_sql(json_serialize_sql('SELECT 1'))",
    "SELECT list_transform(['HOME'], x -> getenv(x))",
    "SELECT COLUMNS(c -> getenv('HOME') IS NOT NULL) FROM orders",
    "SELECT system.main.getenv('HOME')",
    "FROM orders QUALIFY row_number() OVER () < (SELECT count(*) FROM read_blob('/etc/hostname'))",
    "SELECT * FROM orders, unnest((SELECT list(content) FROM read_text('/etc/hostname')))",
    "FROM orders SELECT i UNION BY NAME FROM read_text('/etc/hostname')",
    # NUL (DuckDB stops reading at it) and text that is not UTF-8 (an undecodable argument)
    "SELECT 1\x00; DELETE FROM orders",
    "DELETE FROM orders\x00SELECT 1",
    "SELECT '\ud800'",
    "SELECT " + "(" * 10_000 + "1" + ")" * 10_000,
]


def test_round2_attacks_are_refused_and_change_nothing(store, service, reliability):
    for sql in ROUND2_ATTACKS:
        answer = ask(service.socket_path, {"command": "query", "sql": sql, "format": "json"})
        assert answer["ok"] is False and answer["failure_type"] == "config_error", (sql, answer)
        assert "Query refused" in answer["error"] or "no table or view named" in answer["error"], (sql, answer)
        assert "pybind11" not in answer["error"] and "Traceback" not in answer["error"], (sql, answer)
        assert _count(store) == DOCS
    nul = ask(service.socket_path, {"command": "query", "sql": "SELECT 1\x00; DELETE FROM orders"})
    assert "NUL" in nul["error"], nul
    surrogate = ask(service.socket_path, {"command": "query", "sql": "SELECT '\ud800'"})
    assert "UTF-8" in surrogate["error"], surrogate
    reliability(cases=len(ROUND2_ATTACKS))


def test_a_huge_result_is_refused_in_bounded_memory_and_the_runner_goes_on(store, service, reliability):
    """A result is fetched in chunks and refused past MAX_RESULT_BYTES (64 MiB). Before: the whole result was
    collected and rendered in the runner's process (300 MB of output: 1 GB RSS; 10 GB: the runner killed by the OOM
    killer, its writes with it)."""
    started = time.monotonic()
    answer = ask(service.socket_path, {"command": "query", "sql": "SELECT repeat('x', 100) AS v, range AS i FROM range(100000000)", "format": "json"})
    assert answer["ok"] is False and answer["failure_type"] == "config_error", answer
    assert "result too large" in answer["error"] and "LIMIT" in answer["error"], answer
    assert time.monotonic() - started < 20
    # the runner answers the next query and its writer writes
    assert json.loads(ask(service.socket_path, {"command": "query", "sql": "SELECT count(*) AS n FROM orders", "format": "json"})["output"]) == {"n": DOCS}
    with store.transaction():
        store.execute("INSERT INTO orders VALUES (-1)")
        store.execute("DELETE FROM orders WHERE i = -1")
    store.settle()
    # a result just under the bound is answered whole
    ok = ask(service.socket_path, {"command": "query", "sql": "SELECT repeat('x', 1000) AS v FROM range(20000)", "format": "json"})
    assert ok["ok"] and ok["output"].count("\n") == 19_999
    reliability(cases=2)


def test_a_request_past_the_size_limit_gets_a_clear_answer(service, reliability):
    """Before: the client died with BrokenPipeError (the service stops reading at 1 MiB and closes)."""
    answer = ask(service.socket_path, {"command": "query", "sql": "SELECT 1 AS " + "x" * 3_000_000})
    assert answer["ok"] is False and answer["failure_type"] == "config_error" and "larger than 1 MiB" in answer["error"], answer
    assert ask(service.socket_path, {"command": "query", "sql": "SELECT 3 AS n", "format": "json"})["output"] == '{"n":3}'
    reliability(cases=1)


def test_a_client_that_sends_nothing_does_not_pin_the_service(store, monkeypatch, reliability):
    """A connection that never sends its request is dropped after the request I/O timeout, and the service keeps
    answering others meanwhile (it used to wait in readline forever, a thread and a descriptor per such client)."""
    import collection_runner.query_service as query_service

    monkeypatch.setattr(query_service._Handler, "timeout", 0.5)
    service = QueryService(store, logging.getLogger("test"), timeout_secs=5).start()
    try:
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        silent.connect(service.socket_path)
        assert ask(service.socket_path, {"command": "query", "sql": "SELECT 3 AS n", "format": "json"})["output"] == '{"n":3}'
        silent.settimeout(5)
        assert silent.recv(10) == b"", "the service should close a silent client's connection"
        silent.close()
    finally:
        assert service.stop() is True  # nothing held the view: closed, so the store may be closed too
    reliability(cases=1)


def test_query_failures_are_classified_by_whose_fault_they_are(reliability):
    """A lost connection or server (an outage) is transient, never a config error (exit 2); a statement the database
    refuses is the statement's (config_error); an internal error of the database is ours (system_error)."""
    import duckdb
    import psycopg
    from airbyte_cdk.models import FailureType

    from destination_collection.read_only_query import query_failure_type

    cases = [
        (psycopg.OperationalError("server closed the connection unexpectedly"), FailureType.transient_error),
        (psycopg.errors.AdminShutdown("terminating connection due to administrator command"), FailureType.transient_error),
        (duckdb.IOException("could not read block"), FailureType.transient_error),
        (duckdb.ConnectionException("connection closed"), FailureType.transient_error),
        (duckdb.InternalException("INTERNAL Error: assertion"), FailureType.system_error),
        (duckdb.CatalogException("Table with name x does not exist"), FailureType.config_error),
        (duckdb.ConversionException("Could not convert"), FailureType.config_error),
        (psycopg.errors.UndefinedTable('relation "x" does not exist'), FailureType.config_error),
    ]
    for exc, expected in cases:
        assert query_failure_type(exc) == expected, (type(exc).__name__, query_failure_type(exc))
    reliability(cases=len(cases))


def test_query_text_is_parsed_like_a_transformation(store, service, reliability):
    """Inspect queries and ingest transformations share DuckDB's parser path (duckdb_sql): a literal beyond DOUBLE's
    range, which DuckDB serializes as non-JSON ``Infinity``, is refused with the same clear reason, not a JSON error."""
    answer = ask(service.socket_path, {"command": "query", "sql": "SELECT 1e309 AS x"})
    assert answer["ok"] is False and answer["failure_type"] == "config_error"
    assert "beyond the range of DOUBLE" in answer["error"], answer["error"]
    assert _count(store) == DOCS
    reliability(cases=1)
