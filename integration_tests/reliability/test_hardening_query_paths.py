"""Issue 15 items 5 and 6 against real servers: PostgreSQL (``destination-collection query``) and the runner's
socket while ``kinesis-collection follow`` runs against kinesis-mock (DuckDB). After every attack the documents are
all there, the writer's settings are unchanged and the runner keeps running; a long query is stopped by its time
limit, by its client leaving and by SIGTERM to the runner (which exits 0 within 5 s of the signal)."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from collection_runner.locking import read_holder
from integration_tests.postgres_server import PostgresServer
from integration_tests.reliability.helpers import script
from integration_tests.source_helpers import Producer
from integration_tests.test_runner import table_name, write_configs
from unit_tests.destination.harness import Harness, record, state, stream
from unit_tests.hostile.test_hardening_query_paths import ATTACKS as DUCKDB_ATTACKS

PG_ATTACKS = [
    "BEGIN READ WRITE; DELETE FROM {t}; COMMIT; SELECT 1",
    "COMMIT; DELETE FROM {t}",
    "ROLLBACK; DELETE FROM {t}; SELECT 1",
    "DELETE FROM {t}",
    "WITH d AS (DELETE FROM {t} RETURNING *) SELECT count(*) FROM d",
    "EXPLAIN ANALYZE DELETE FROM {t}",
    "SELECT * FROM {t} FOR UPDATE",
    "SET TRANSACTION READ WRITE",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; DELETE FROM {t}",
    "SELECT set_config('default_transaction_read_only', 'off', false); DELETE FROM {t}",
    "RESET ALL; DELETE FROM {t}",
    "DISCARD ALL",
    "VACUUM {t}",
    "TRUNCATE {t}",
    "DROP TABLE {t}",
    "CREATE TABLE evil AS SELECT 1",
    "PREPARE p AS DELETE FROM {t}",
    "SELECT nextval('x')",
    "NOTIFY chan",
    "LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE",
    "COPY {t} TO STDOUT",
    "/* */ DELETE FROM {t} -- SELECT 1",
    "SELECT 1; SELECT 2",
]


@pytest.fixture(scope="module")
def postgres():
    with PostgresServer() as server:
        yield server


def _pg_count(config: dict, table: str) -> int:
    with psycopg.connect(host=config["host"], port=config["port"], dbname=config["database"], user=config["username"],
                         password=config["password"], autocommit=True) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_postgres_query_is_one_read_only_statement_with_a_time_limit(postgres, tmp_path, reliability):
    store_config = postgres.store_config(schema="hardening_q")
    harness = Harness(store_config)
    harness.write([stream("orders")], [record("orders", {"k": i, "user": f"u{i}"}) for i in range(20)] + [state("orders", {"c": 1})])
    config = tmp_path / "config.json"
    config.write_text(json.dumps(harness.config()))
    table = '"hardening_q".orders'
    for attack in PG_ATTACKS:
        sql = attack.format(t=table)
        result = subprocess.run([script("destination-collection"), "query", "--config", str(config), sql],
                                capture_output=True, text=True, timeout=60)
        # harmless text (PREPARE, NOTIFY, LOCK TABLE: released at once by the rollback) may run; anything that writes,
        # locks or holds several statements must be refused
        if not sql.startswith("PREPARE") and any(w in sql for w in ("DELETE", "DROP", "TRUNCATE", "CREATE", "FOR UPDATE", "; ", "VACUUM", "nextval")):
            assert result.returncode == 2 and "error:" in result.stderr, (sql, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, (sql, result.stderr)
        assert _pg_count(store_config, table) == 20, f"documents changed by {sql!r}"
    ok = subprocess.run([script("destination-collection"), "query", "--config", str(config), "--format", "json",
                         f"SELECT count(*) AS n, INTERVAL '1 day 2 hours' AS iv, 'NaN'::numeric AS nn, 'infinity'::date AS d, "
                         f"gen_random_uuid() AS u, '\\xff'::bytea AS b FROM {table}"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    row = json.loads(ok.stdout)
    assert row["n"] == 20 and row["iv"] == "P1DT2H" and row["nn"] == "NaN" and row["d"] == "infinity"
    started = time.monotonic()
    slow = subprocess.run([script("destination-collection"), "query", "--config", str(config), "--timeout", "1.5",
                           "SELECT pg_sleep(30)"], capture_output=True, text=True, timeout=60)
    assert slow.returncode == 2 and "stopped after 1.5 s" in slow.stderr, slow.stderr
    assert time.monotonic() - started < 15
    reliability(cases=len(PG_ATTACKS) + 2)


def test_runner_socket_attacks_timeout_disconnect_and_sigterm(tmp_path, kinesis_mock, kinesis, new_stream, reliability):
    name = new_stream(shards=1, prefix="qpaths")
    Producer(kinesis, name).put(40)
    source, destination = write_configs(tmp_path, kinesis_mock, name, get_records_per_second=4)
    proc = subprocess.Popen([script("kinesis-collection"), "follow", "--source", source, "--destination", destination,
                             "--query-timeout", "20"], stderr=subprocess.PIPE, text=True)
    table = table_name(name)
    db = str(tmp_path / "collection.duckdb")

    def query(sql: str, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([script("kinesis-collection"), "query", "--destination", destination, "--format", "json", *extra, sql],
                              capture_output=True, text=True, timeout=timeout)

    def count() -> int:
        result = query(f'SELECT count(*) AS n FROM "{table}"')
        return json.loads(result.stdout)["n"] if result.returncode == 0 else -1

    try:
        deadline = time.monotonic() + 60
        while count() != 40 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert count() == 40
        for sql in [a.replace("orders", f'"{table}"') for a in DUCKDB_ATTACKS]:
            result = query(sql)
            assert result.returncode == 2 and "Traceback" not in result.stderr, (sql, result.stderr)
            assert proc.poll() is None, f"the runner died after {sql!r}"
        assert count() == 40
        memory = query("SELECT current_setting('memory_limit') AS m")
        assert json.loads(memory.stdout)["m"] != "3.8 MiB"
        # time limit: the client's --timeout
        started = time.monotonic()
        slow = query("SELECT count(*) FROM range(1000000000000)", "--timeout", "2")
        assert slow.returncode == 2 and "stopped after 2 s" in slow.stderr and time.monotonic() - started < 12
        # client disconnect: the abandoned query stops, the next one is answered at once
        gone = subprocess.Popen([script("kinesis-collection"), "query", "--destination", destination,
                                 "SELECT count(*) FROM range(1000000000000)"], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        time.sleep(1.5)
        gone.kill()
        gone.wait()
        started = time.monotonic()
        assert count() == 40 and time.monotonic() - started < 5
        # SIGTERM while a long query runs: exit 0 within 5 s of the signal
        holder = read_holder(db)
        assert holder and holder.get("socket")
        # (--timeout 10: a CLI so slow to start — seconds of imports on a loaded machine — that it arrives after the
        # runner has gone opens the file itself and runs the query there, until its time limit)
        long = subprocess.Popen([script("kinesis-collection"), "query", "--destination", destination, "--timeout", "10",
                                 "SELECT count(*) FROM range(1000000000000)"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        time.sleep(3.0)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        took = time.monotonic() - signalled
        _, long_err = long.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert proc.returncode == 0, err
    assert took < 5, f"the runner took {took:.1f} s to exit after SIGTERM:\n{err[-4000:]}"
    # the answer the interrupted query gets; a client whose request reached the runner only as it stopped gets the
    # clear "may be stopping; try again" (a transient error) instead, and one that started so slowly (the CLI's
    # imports take seconds on a loaded machine) that the runner had already removed its socket is told "starting up or
    # stopping … try again" — never a traceback
    assert any(text in long_err for text in ("shutting down", "closed the connection", "may be stopping", "starting up or stopping", "stopped after 10 s")), long_err
    assert "Traceback" not in long_err
    assert "Traceback" not in err
    reliability(cases=len(DUCKDB_ATTACKS) + 3)


# -- round 2: statements a READ ONLY transaction still runs but that act outside it --------------------------------
PG_OUTSIDE = [
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = current_user AND pid <> pg_backend_pid()",
    'SELECT "pg_terminate_backend"(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()',
    "SELECT pg_catalog.pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
    'SELECT U&"pg\\005fterminate_backend"(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()',
    "SELECT query_to_xml('select pg_termin' || 'ate_backend(' || pid || ')', true, true, '') FROM pg_stat_activity",
    # ts_rewrite(tsquery, text) runs its second argument as SQL: a name built at run time must not get through
    "SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, ''b''::tsquery FROM (SELECT pg_termin' || 'ate_backend(' || pid || ')) x') FROM pg_stat_activity WHERE usename = current_user AND pid <> pg_backend_pid()",
    "SELECT query_to_xmlschema('select 1', true, true, '')",
    "WITH p AS (SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()) SELECT pg_terminate_backend(pid) FROM p",
    "SELECT pg_advisory_lock(42)",
    "SELECT lo_import('/etc/hostname')",
    "SELECT lo_export(0, '/tmp/kc_lo_export')",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT pg_read_file('/etc/hostname')",
    "COPY (SELECT 1) TO '/tmp/kc_copy_out'",
    "COPY (SELECT 1) TO STDOUT",
    "DO $$ BEGIN PERFORM pg_terminate_backend(1); END $$",
    "CALL p()",
]


def test_postgres_query_cannot_reach_other_sessions_or_outside_the_transaction(postgres, tmp_path, reliability):
    """The writer and ``destination-collection query`` usually share a role, so before this a query could terminate
    (or cancel) the writer's session: ``SELECT pg_terminate_backend(pid) FROM pg_stat_activity``. Such functions,
    and statements a READ ONLY transaction still allows (COPY TO, DO, CALL, session settings, advisory locks, large
    objects, server files), are refused; a huge result is refused in bounded memory; plain SELECTs still work."""
    store_config = postgres.store_config(schema="hardening_q2")
    harness = Harness(store_config)
    harness.write([stream("orders")], [record("orders", {"k": i}) for i in range(10)] + [state("orders", {"c": 1})])
    config = tmp_path / "config.json"
    config.write_text(json.dumps(harness.config()))
    table = '"hardening_q2".orders'
    writer = psycopg.connect(host=store_config["host"], port=store_config["port"], dbname=store_config["database"],
                             user=store_config["username"], password=store_config["password"], autocommit=True)
    try:
        for sql in PG_OUTSIDE:
            result = subprocess.run([script("destination-collection"), "query", "--config", str(config), sql],
                                    capture_output=True, text=True, timeout=60)
            assert result.returncode == 2 and "Query refused" in result.stderr, (sql, result.stdout, result.stderr)
            assert "Traceback" not in result.stderr
            assert writer.execute("SELECT 1").fetchone() == (1,), f"the writer's session was ended by {sql!r}"
        assert not Path("/tmp/kc_lo_export").exists() and not Path("/tmp/kc_copy_out").exists()
        assert writer.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone() == (0,)
        huge = subprocess.run([script("destination-collection"), "query", "--config", str(config),
                               "SELECT repeat('x', 100) AS v FROM generate_series(1, 5000000)"], capture_output=True, text=True, timeout=120)
        assert huge.returncode == 2 and "result too large" in huge.stderr, huge.stderr[-500:]
        for sql in ("(SELECT count(*) AS n FROM {t})", "SELECT k AS lo_count, 'hello_world' AS w FROM {t} LIMIT 1",
                    "-- a comment\nSELECT count(*) AS n FROM {t}", "TABLE {t} LIMIT 1", "VALUES (1)"):
            ok = subprocess.run([script("destination-collection"), "query", "--config", str(config), "--format", "json",
                                 sql.format(t=table)], capture_output=True, text=True, timeout=60)
            assert ok.returncode == 0, (sql, ok.stderr)
        assert writer.execute(f"SELECT count(*) FROM {table}").fetchone() == (10,)
    finally:
        writer.close()
    reliability(cases=len(PG_OUTSIDE) + 6)
