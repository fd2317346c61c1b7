"""Security against real servers: no secret in any output, SQL-injection names stored safely, PostgreSQL SSL mode.

* Secrets: the connectors and the runner are run as users run them (CLI subprocesses) with the fixture secrets —
  kinesis-mock's secret key, a session token, the PostgreSQL password, also a wrong password — on success and error
  paths; stdout, stderr, the runner's lock file and the PostgreSQL-backed runner's output are scanned for them.
  (The crash trials and the chaos test scan the output of every process they start as well.)
* Names: a stream ``x"; DROP TABLE y; --`` (and other hostile names) goes through the destination on DuckDB and
  PostgreSQL: its collection holds the records under a quoted name, a canary table ``y`` survives, and the name
  round-trips in the committed state.
* SSL: a role the test server accepts over TLS only connects with ``require`` (the string form of 0.1.1 and the
  object form) and ``verify-full`` with the test CA; ``disable`` and a verify mode without a CA fail with a
  config_error saying what to change, and no password.
"""
from __future__ import annotations

import json
import subprocess
import uuid

import duckdb
import pytest
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_collection.config import parse_config
from destination_collection.protocol_loop import write_messages
from destination_collection.stores import open_store
from integration_tests.kinesis_mock import create_stream
from integration_tests.postgres_server import PostgresServer
from integration_tests.reliability.helpers import SECRETS, SESSION_TOKEN, EventWriter, assert_no_secrets, script
from unit_tests.destination.harness import KINESIS_PK, kinesis as kinesis_record, state, stream

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def postgres():
    with PostgresServer() as server:
        SECRETS.append(server.password)
        try:
            yield server
        finally:
            SECRETS.remove(server.password)


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, input=stdin)


def scan(result: subprocess.CompletedProcess, where: str) -> None:
    assert_no_secrets(result.stdout + result.stderr, where)
    assert "Traceback" not in result.stderr, f"{where}: a traceback\n{result.stderr[-2000:]}"


def test_no_secret_in_any_output(kinesis_mock, postgres, tmp_path, reliability):
    client = kinesis_mock.client()
    name = f"secrets-{uuid.uuid4().hex[:8]}"
    create_stream(client, name, 1)
    EventWriter(client, name).put(20, 1, "secrets")
    source = kinesis_mock.source_config([name])
    source["credentials"]["aws_session_token"] = SESSION_TOKEN
    good = tmp_path / "source.json"
    good.write_text(json.dumps(source))
    unreachable = tmp_path / "source-unreachable.json"
    unreachable.write_text(json.dumps({**source, "endpoint_url": "http://127.0.0.1:9", "retry_budget_seconds": 1}))
    missing = tmp_path / "source-missing-stream.json"
    missing.write_text(json.dumps({**source, "streams": ["no-such-stream"]}))
    catalog = tmp_path / "catalog.json"
    discovered = cli(script("source-kinesis"), "discover", "--config", str(good))
    scan(discovered, "source discover")
    (line,) = [l for l in discovered.stdout.splitlines() if '"CATALOG"' in l]
    streams = json.loads(line)["catalog"]["streams"]
    catalog.write_text(json.dumps({"streams": [{"stream": s, "sync_mode": "incremental", "destination_sync_mode": "append_dedup",
                                                 "cursor_field": s.get("default_cursor_field", []), "primary_key": s["source_defined_primary_key"]} for s in streams]}))
    runs = 1
    for args, where in [
        (("check", "--config", str(good)), "source check"),
        (("check", "--config", str(unreachable)), "source check (unreachable endpoint)"),
        (("read", "--config", str(missing), "--catalog", str(catalog)), "source read (missing stream)"),
    ]:
        scan(cli(script("source-kinesis"), *args), where)
        runs += 1
    pg = postgres.store_config(schema="secrets")
    destination = tmp_path / "destination.json"
    destination.write_text(json.dumps({"store": pg}))
    wrong = tmp_path / "destination-wrong.json"
    wrong.write_text(json.dumps({"store": {**pg, "password": SECRETS[-1] + "-wrong"}}))
    check = cli(script("destination-collection"), "check", "--config", str(destination))
    scan(check, "destination check")
    assert '"SUCCEEDED"' in check.stdout, check.stdout
    failed = cli(script("destination-collection"), "check", "--config", str(wrong))
    scan(failed, "destination check (wrong password)")
    assert '"FAILED"' in failed.stdout
    sync = cli(script("kinesis-collection"), "sync", "--source", str(good), "--destination", str(destination))
    scan(sync, "kinesis-collection sync into PostgreSQL")
    assert sync.returncode == 0, sync.stderr[-2000:]
    duck = tmp_path / "duck.json"
    duck.write_text(json.dumps({"store": {"store_type": "duckdb", "path": str(tmp_path / "c.duckdb")}}))
    sync_duck = cli(script("kinesis-collection"), "sync", "--source", str(good), "--destination", str(duck))
    scan(sync_duck, "kinesis-collection sync into DuckDB")
    lock = tmp_path / "c.duckdb.runner.lock"
    if lock.exists():
        assert_no_secrets(lock.read_text(errors="replace"), "the runner's lock file")
    runs += 4
    reliability(cli_runs_scanned=runs, secrets_checked=len(SECRETS))


HOSTILE_NAMES = ['x"; DROP TABLE y; --', "x'; DROP TABLE y; --", "Robert'); DROP TABLE y;--", "a\"b\"\"c", "y", "_collection_state", "ünï code 🎉", "a" * 200]


def _write_and_read(store_config: dict, name: str) -> tuple:
    config = {"store": store_config}
    catalog = {"streams": [stream(name, pk=KINESIS_PK)]}
    messages = [kinesis_record(name, i, {"v": i}) for i in range(3)] + [state(name, {"cursor": name})]
    echoed = list(write_messages(config, catalog, messages))
    store = open_store(parse_config(config))
    try:
        states = store.states.messages()
        tables = [t for t in store.fetchall("SELECT table_name FROM information_schema.tables WHERE table_schema = "
                                                + (f"'{store_config['schema']}'" if store_config["store_type"] == "postgres" else "'main'"))]
        canary = store.fetchall(f"SELECT count(*) FROM {store.q('y_canary')}")[0][0]
    finally:
        store.close()
    return echoed, states, {t[0] for t in tables}, canary


@pytest.mark.parametrize("store_type", ["duckdb", "postgres"])
def test_sql_injection_names_are_stored_safely(store_type, request, tmp_path, reliability):
    if store_type == "postgres":
        server = request.getfixturevalue("postgres")
        store_config = server.store_config(schema=f"inj_{uuid.uuid4().hex[:6]}")
    else:
        store_config = {"store_type": "duckdb", "path": str(tmp_path / "inj.duckdb")}
    store = open_store(parse_config({"store": store_config}))
    try:
        with store.transaction():
            store.catalog.ensure_metadata()
            store.execute(f"CREATE TABLE {store.q('y_canary')} (v INTEGER)")
            store.execute(f"INSERT INTO {store.q('y_canary')} VALUES (42)")
    finally:
        store.close()
    for name in HOSTILE_NAMES:
        echoed, states, tables, canary = _write_and_read(store_config, name)
        assert canary == 1, f"stream {name!r} damaged another table"
        assert echoed and echoed[-1]["state"]["stream"]["stream_state"] == {"cursor": name}
        assert any(s["stream"]["stream_descriptor"]["name"] == name for s in states), f"state of {name!r} not committed"
        assert "_collection_state" in tables and "y_canary" in tables
    reliability(cases=len(HOSTILE_NAMES))


def test_postgres_ssl_mode_is_honoured(postgres, reliability):
    role, password = postgres.ssl_role()  # a role the server accepts over TLS only
    SECRETS.append(password)
    try:
        base = {**postgres.store_config(schema="ssl_test"), "username": role, "password": password}
        for mode in ("require", {"mode": "require"}, {"mode": "verify-full", "ca_certificate": postgres.tls.ca_pem}):
            host = "localhost" if isinstance(mode, dict) and mode["mode"] == "verify-full" else base["host"]
            open_store(parse_config({"store": {**base, "host": host, "ssl_mode": mode}})).close()
        # a mode the server refuses for this role, and a verify mode without the CA (the string form of 0.1.1)
        for mode, advice in (("disable", "only over SSL"), ({"mode": "verify-full"}, "store.ssl_mode.ca_certificate")):
            with pytest.raises(AirbyteTracedException) as caught:
                open_store(parse_config({"store": {**base, "ssl_mode": mode}})).close()
            text = f"{caught.value.message} {caught.value.internal_message}"
            assert advice in caught.value.message and caught.value.failure_type.value == "config_error", text
            assert password not in text and postgres.password not in text
    finally:
        SECRETS.remove(password)
    reliability(cases=5)
