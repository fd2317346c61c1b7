"""Several kinesis-collection runners on one PostgreSQL schema, each following its own streams (issue: several
runners per PostgreSQL database). Real processes against kinesis-mock and a real PostgreSQL server: the lock is per
collection, a runner for a held collection is refused with exit 3 naming the holder, ``stats`` shows who holds each
collection, ``reset`` works per collection while other runners go on, the shared metadata tables' creation does not
race, and a runner SIGKILLed and restarted loses and duplicates nothing while the other one keeps going."""
from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List

import psycopg
import pytest

from integration_tests.kinesis_mock import create_stream
from integration_tests.reliability.helpers import script
from destination_collection.naming import table_name


@pytest.fixture(scope="module")
def postgres():
    from integration_tests.postgres_server import PostgresServer

    with PostgresServer() as server:
        yield server


def _configs(tmp_path: Path, kinesis_mock, postgres, label: str, streams: List[str], schema: str) -> tuple:
    source = tmp_path / f"source-{label}.json"
    source.write_text(json.dumps(kinesis_mock.source_config(streams, checkpoint_interval_seconds=0.5)))
    destination = tmp_path / f"destination-{label}.json"
    destination.write_text(json.dumps({"store": postgres.store_config(schema=schema), "flush_interval_secs": 0.5}))
    return str(source), str(destination)


def _start(command: str, source: str, destination: str) -> subprocess.Popen:
    return subprocess.Popen(
        [script("kinesis-collection"), command, "--source", source, "--destination", destination],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([script("kinesis-collection"), *args], capture_output=True, text=True, timeout=120)


def _put(kinesis_mock, stream: str, start: int, count: int) -> None:
    entries = [{"Data": json.dumps({"uid": f"{stream}-{i:05d}"}).encode(), "PartitionKey": f"k{i}"} for i in range(start, start + count)]
    for first in range(0, len(entries), 100):
        assert kinesis_mock.client().put_records(StreamName=stream, Records=entries[first:first + 100])["FailedRecordCount"] == 0


def _uids(postgres, schema: str, stream: str) -> List[str]:
    with postgres.admin_connect() as conn:
        try:
            return [row[0] for row in conn.execute(f'SELECT _doc->>\'uid\' FROM "{schema}"."{table_name("", stream)}"').fetchall()]
        except psycopg.errors.UndefinedTable:
            return []


def _wait_uids(postgres, schema: str, stream: str, count: int, procs: List[subprocess.Popen], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while len(_uids(postgres, schema, stream)) < count:
        for proc in procs:
            assert proc.poll() is None, f"a runner ended early ({proc.returncode}): {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"{count} documents of {stream} not committed within {timeout} s"
        time.sleep(0.3)


def _stats(destination: str) -> Dict[str, Dict[str, Any]]:
    result = _cli("stats", "--destination", destination, "--format", "json")
    assert result.returncode == 0, result.stderr[-3000:]
    return {c["stream"]: c for c in json.loads(result.stdout)["collections"]}


def _stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    return err


def _expected(stream: str, count: int) -> List[str]:
    return [f"{stream}-{i:05d}" for i in range(count)]


def test_two_runners_share_a_schema_one_is_sigkilled_and_restarted(tmp_path, kinesis_mock, postgres):
    kinesis = kinesis_mock.client()
    run = uuid.uuid4().hex[:6]
    first, second = f"shared-a-{run}", f"shared-b-{run}"
    create_stream(kinesis, first, 2)
    create_stream(kinesis, second, 1)
    schema = f"shared_{run}"
    a_source, a_destination = _configs(tmp_path, kinesis_mock, postgres, "a", [first], schema)
    b_source, b_destination = _configs(tmp_path, kinesis_mock, postgres, "b", [second], schema)
    _put(kinesis_mock, first, 0, 60)
    _put(kinesis_mock, second, 0, 40)
    # both start at the same moment on a schema that does not exist yet: its creation and the metadata tables' must
    # not race (CREATE … IF NOT EXISTS from two sessions at once fails on pg_namespace / pg_type without the DDL lock)
    runner_a, runner_b = _start("follow", a_source, a_destination), _start("follow", b_source, b_destination)
    procs = [runner_a, runner_b]
    try:
        _wait_uids(postgres, schema, first, 60, procs)
        _wait_uids(postgres, schema, second, 40, procs)

        # stats names the runner holding each collection: host, pid, mode, since
        stats = _stats(a_destination)
        host = socket.gethostname()
        assert stats[first]["runner"]["pid"] == runner_a.pid and stats[first]["runner"]["host"] == host, stats[first]
        assert stats[second]["runner"]["pid"] == runner_b.pid and stats[second]["runner"]["mode"] == "follow", stats[second]
        assert stats[first]["runner"]["since"], stats[first]
        table = _cli("stats", "--destination", a_destination)
        assert f"pid {runner_a.pid} on {host} (follow since" in table.stdout, table.stdout

        # a third runner for a held collection: exit 3, naming the collection and the holder, writing nothing
        c_source, c_destination = _configs(tmp_path, kinesis_mock, postgres, "c", [second, first], schema)
        refused = _cli("sync", "--source", c_source, "--destination", c_destination)
        assert refused.returncode == 3, refused.stderr[-3000:]
        last = [line for line in refused.stderr.splitlines() if "ERROR" in line][-1]
        # sorted order: the first collection it asks for is the first one's
        assert table_name("", first) in last and f"pid {runner_a.pid} on {host}" in last and "transient_error" in last, last
        assert postgres.password not in refused.stderr
        # reset of a held collection: refused the same way
        held_reset = _cli("reset", "--destination", b_destination, "--stream", second)
        assert held_reset.returncode == 3 and f"pid {runner_b.pid}" in held_reset.stderr, held_reset.stderr[-3000:]

        # SIGKILL the first runner mid-stream; the second keeps going meanwhile
        _put(kinesis_mock, first, 60, 40)
        time.sleep(1.0)
        runner_a.kill()
        runner_a.wait(timeout=30)
        _put(kinesis_mock, first, 100, 50)
        _put(kinesis_mock, second, 40, 60)
        _wait_uids(postgres, schema, second, 100, [runner_b])
        # nobody holds the killed runner's collection once its session is gone (the server notices the closed socket)
        deadline = time.monotonic() + 30
        while _stats(a_destination)[first].get("runner") is not None:
            assert time.monotonic() < deadline, "the killed runner's lock was not released"
            time.sleep(0.5)

        restarted = _start("follow", a_source, a_destination)
        procs = [restarted, runner_b]
        _wait_uids(postgres, schema, first, 150, procs)
        assert _stats(a_destination)[first]["runner"]["pid"] == restarted.pid
        _stop(restarted)
        # per-collection reset while the other runner still follows its own collection
        reset = _cli("reset", "--destination", a_destination, "--stream", first)
        assert reset.returncode == 0, reset.stderr[-3000:]
        assert runner_b.poll() is None
        _put(kinesis_mock, second, 100, 20)
        _wait_uids(postgres, schema, second, 120, [runner_b])
        _stop(runner_b)
    finally:
        for proc in procs + [runner_a]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    # every record exactly once in each collection
    assert sorted(_uids(postgres, schema, first)) == _expected(first, 150)
    assert sorted(_uids(postgres, schema, second)) == _expected(second, 120)
    with postgres.admin_connect() as conn:
        states = dict(conn.execute(f'SELECT stream_key, state_json FROM "{schema}"._collection_state').fetchall())
        # the reset forgot the first stream's state only
        assert first not in states and second in states, sorted(states)
        assert conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
                            "(SELECT oid FROM pg_database WHERE datname = current_database())").fetchone()[0] == 0


def test_concurrent_writers_create_one_schema_and_its_metadata_tables_without_a_race(postgres):
    """Eight writers open a store on a schema that does not exist and create the metadata tables at one moment, four
    times over: none fails (without the metadata-DDL lock, CREATE SCHEMA/TABLE IF NOT EXISTS from two sessions at once
    fails with a unique violation on pg_namespace or pg_type)."""
    from destination_collection.config import parse_config
    from destination_collection.stores import open_store

    for _round in range(4):
        schema = f"race_{uuid.uuid4().hex[:6]}"
        config = parse_config({"store": postgres.store_config(schema=schema)})
        stores = [open_store(config) for _ in range(8)]
        barrier = threading.Barrier(len(stores))
        errors: List[BaseException] = []

        def create(store) -> None:
            barrier.wait()
            try:
                store.catalog.ensure_metadata()
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=create, args=(store,)) for store in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        for store in stores:
            store.close()
        assert errors == [], errors
        with postgres.admin_connect() as conn:
            tables = {row[0] for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [schema]).fetchall()}
        assert tables == {"_collection_catalog", "_collection_columns", "_collection_state"}, tables


def test_a_runner_of_the_older_version_excludes_a_newer_one(tmp_path, postgres):
    """kinesis-collection 0.1.x took one exclusive lock per schema: a newer runner (which holds that key shared) is
    refused while it runs, and says why; and while a newer one runs, the older one's lock cannot be taken."""
    from collection_runner.locking import RunnerBusy, StoreLock, collections_for
    from destination_collection.config import parse_config
    from destination_collection.stores import postgres_locks

    schema = f"old_{uuid.uuid4().hex[:6]}"
    config = parse_config({"store": postgres.store_config(schema=schema)})
    old_key = postgres_locks.store_key(postgres.database, schema)
    with postgres.admin_connect() as old:
        assert old.execute("SELECT pg_try_advisory_lock(%s)", [old_key]).fetchone()[0]
        with pytest.raises(RunnerBusy) as refused:
            StoreLock(config, {"mode": "sync"}, collections=collections_for(config, ["orders"])).acquire()
        assert "older than 0.1.3" in refused.value.message and schema in refused.value.message
        old.execute("SELECT pg_advisory_unlock(%s)", [old_key])
        with StoreLock(config, {"mode": "sync"}, collections=collections_for(config, ["orders"])):
            assert not old.execute("SELECT pg_try_advisory_lock(%s)", [old_key]).fetchone()[0]


def test_locks_are_taken_in_sorted_order_and_a_refusal_releases_them(postgres):
    """A runner refused one collection holds none of the others it took before (everything goes with its session)."""
    from collection_runner.locking import RunnerBusy, StoreLock, collections_for
    from destination_collection.config import parse_config

    schema = f"order_{uuid.uuid4().hex[:6]}"
    config = parse_config({"store": postgres.store_config(schema=schema)})
    with StoreLock(config, {"mode": "follow"}, collections=collections_for(config, ["m_middle"])):
        with pytest.raises(RunnerBusy) as refused:
            StoreLock(config, {"mode": "sync"}, collections=collections_for(config, ["z_last", "a_first", "m_middle"])).acquire()
        assert "m_middle" in refused.value.message and "starting up" in refused.value.message  # never announced
        # a_first was taken before m_middle was refused, and was released with the session
        with StoreLock(config, {"mode": "sync"}, collections=collections_for(config, ["a_first", "z_last"])):
            pass


def _destination_file(tmp_path: Path, postgres, schema: str, prefix: str, label: str, **store: Any) -> str:
    path = tmp_path / f"destination-{label}.json"
    path.write_text(json.dumps({"store": {**postgres.store_config(schema=schema), **store}, "collection_prefix": prefix}))
    return str(path)


def test_one_stream_under_two_prefixes_is_refused_and_reset_empties_only_what_it_locked(tmp_path, postgres):
    """What runners share beyond a collection: a stream's committed state (one row per stream, whatever the prefix).
    A second runner writing the same stream into another collection is refused naming the holder; ``reset`` locks
    exactly the collection it empties: a table name or another prefix's collection given as --stream empties nothing
    that a runner holds."""
    import os

    from collection_runner.locking import RunnerBusy, StoreLock, collections_for
    from destination_collection.config import parse_config
    from destination_collection.stores import open_store

    schema = f"prefix_{uuid.uuid4().hex[:6]}"
    config_a = parse_config({"store": postgres.store_config(schema=schema), "collection_prefix": "a_"})
    config_b = parse_config({"store": postgres.store_config(schema=schema), "collection_prefix": "b_"})
    with StoreLock(config_a, {"mode": "follow"}, collections=collections_for(config_a, ["orders"])) as held:
        store = open_store(config_a)
        try:
            held.announce(store)
            store.catalog.ensure_collection("a_orders", "orders", None, [])
            store.execute(f'INSERT INTO "{schema}"."a_orders" (_id, _doc) VALUES (%s, %s)', ["1", json.dumps({"uid": "kept"})])
            store.settle()
        finally:
            store.close()
        # the same stream into b_orders: its collection is free, the stream is not
        with pytest.raises(RunnerBusy) as refused:
            StoreLock(config_b, {"mode": "sync"}, collections=collections_for(config_b, ["orders"])).acquire()
        message = refused.value.message
        assert "Stream 'orders'" in message and f"pid {os.getpid()} on {socket.gethostname()}" in message, message
        # reset under prefix b_: refused the same way (it would forget the state the holder commits)
        other_prefix = _cli("reset", "--destination", _destination_file(tmp_path, postgres, schema, "b_", "b"), "--stream", "orders", "--empty-collection")
        assert other_prefix.returncode == 3 and "Stream 'orders'" in other_prefix.stderr, other_prefix.stderr[-3000:]
        # reset given the held table's name as the stream: it locks and would empty a_a_orders, which does not exist
        by_table = _cli("reset", "--destination", _destination_file(tmp_path, postgres, schema, "a_", "a"), "--stream", "a_orders", "--empty-collection")
        assert by_table.returncode == 2, by_table.stderr[-3000:]
        assert "no collection a_a_orders" in by_table.stderr and "a_orders" in by_table.stderr, by_table.stderr[-3000:]
        with postgres.admin_connect() as conn:
            assert conn.execute(f'SELECT count(*) FROM "{schema}"."a_orders"').fetchone()[0] == 1


def test_stats_under_a_role_that_may_not_read_the_runners_table(tmp_path, postgres):
    """A read-only role (SELECT on the collections, not on _collection_runners): stats still answers, and says who
    holds a collection cannot be named rather than failing or advising a CREATE."""
    from psycopg import sql

    from collection_runner.locking import StoreLock, collections_for
    from destination_collection.config import parse_config
    from destination_collection.stores import open_store

    schema = f"ro_{uuid.uuid4().hex[:6]}"
    role, password = f"reader_{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    config = parse_config({"store": postgres.store_config(schema=schema)})
    with StoreLock(config, {"mode": "follow"}, collections=collections_for(config, ["orders"])) as held:
        store = open_store(config)
        try:
            held.announce(store)
            store.catalog.ensure_collection("orders", "orders", None, [])
            store.settle()
        finally:
            store.close()
        with postgres.admin_connect() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), sql.Identifier(role)))
            for table in ("_collection_catalog", "_collection_columns", "_collection_state", "orders"):
                conn.execute(sql.SQL("GRANT SELECT ON {}.{} TO {}").format(sql.Identifier(schema), sql.Identifier(table), sql.Identifier(role)))
        destination = _destination_file(tmp_path, postgres, schema, "", "reader", username=role, password=password)
        result = _cli("stats", "--destination", destination, "--format", "json")
        assert result.returncode == 0, result.stderr[-3000:]
        runner = {c["stream"]: c for c in json.loads(result.stdout)["collections"]}["orders"]["runner"]
        assert runner["pid"] is None and "may not read" in runner["unknown"] and "_collection_runners" in runner["unknown"], runner
        assert password not in result.stderr + result.stdout


def test_a_writer_waiting_on_a_users_lock_does_not_hold_up_other_writers_starting(tmp_path, postgres):
    """The schema-wide metadata-DDL lock is held only while the metadata tables are made: a destination whose
    collection DDL waits on a user's lock (here an ALTER for a new declared column behind a long transaction's lock on
    its table) does not stop another writer of another collection from starting and committing."""
    from destination_collection.config import parse_config
    from destination_collection.protocol_loop import write_messages

    schema = f"ddl_{uuid.uuid4().hex[:6]}"
    config = parse_config({"store": postgres.store_config(schema=schema)})

    def catalog(stream: str, fields: Dict[str, Any]) -> Dict[str, Any]:
        return {"streams": [{
            "stream": {"name": stream, "json_schema": {"type": "object", "properties": fields}, "supported_sync_modes": ["incremental"]},
            "sync_mode": "incremental", "destination_sync_mode": "append",
        }]}

    def messages(stream: str) -> List[Dict[str, Any]]:
        return [
            {"type": "RECORD", "record": {"stream": stream, "data": {"uid": "u1"}, "emitted_at": 1_700_000_000_000}},
            {"type": "STATE", "state": {"type": "STREAM", "stream": {"stream_descriptor": {"name": stream}, "stream_state": {"n": 1}}}},
        ]

    list(write_messages(config, catalog("held", {"uid": {"type": "string"}}), messages("held")))
    blocked_result: Dict[str, Any] = {}
    with postgres.admin_connect() as user:
        user.autocommit = False
        user.execute(f'LOCK TABLE "{schema}"."held" IN ACCESS EXCLUSIVE MODE')  # a user's long transaction

        def blocked() -> None:  # a new declared column: its ALTER waits for the user's transaction
            try:
                blocked_result["echoes"] = list(write_messages(config, catalog("held", {"uid": {"type": "string"}, "extra": {"type": "integer"}}), messages("held")))
            except BaseException as exc:  # noqa: BLE001
                blocked_result["error"] = exc

        waiter = threading.Thread(target=blocked, daemon=True)
        waiter.start()
        time.sleep(2.0)
        assert waiter.is_alive(), f"the writer did not wait on the user's lock: {blocked_result}"
        other: Dict[str, Any] = {}

        def start_other() -> None:
            try:
                other["echoes"] = list(write_messages(config, catalog("other", {"uid": {"type": "string"}}), messages("other")))
            except BaseException as exc:  # noqa: BLE001
                other["error"] = exc

        starter = threading.Thread(target=start_other, daemon=True)
        starter.start()
        starter.join(timeout=30)
        finished = not starter.is_alive()
        user.rollback()  # the held writer goes on (and, without the fix, the other one too)
        assert finished, "another collection's writer waited for a writer stuck on a user's lock (the metadata-DDL lock)"
        assert other.get("echoes"), other
    waiter.join(timeout=60)
    assert "error" not in blocked_result, blocked_result


def test_more_collections_than_the_servers_lock_table_holds_is_a_clear_config_error(postgres):
    """One runner for thousands of streams: two advisory locks each overflow PostgreSQL's shared lock table
    (max_locks_per_transaction × connections); the runner says so, takes nothing, and the server is usable after."""
    from airbyte_cdk.utils.traced_exception import AirbyteTracedException

    from collection_runner.locking import StoreLock, collections_for
    from destination_collection.config import parse_config

    schema = f"many_{uuid.uuid4().hex[:6]}"
    config = parse_config({"store": postgres.store_config(schema=schema)})
    with postgres.admin_connect() as conn:
        capacity = int(conn.execute("SHOW max_locks_per_transaction").fetchone()[0]) * (
            int(conn.execute("SHOW max_connections").fetchone()[0]) + int(conn.execute("SHOW max_prepared_transactions").fetchone()[0]))
    streams = [f"s{i:05d}" for i in range(2 * capacity)]  # 4x the nominal size: the table has slack (2.5x here)
    with pytest.raises(AirbyteTracedException) as refused:
        StoreLock(config, {"mode": "sync"}, collections=collections_for(config, streams)).acquire()
    message = refused.value.message
    assert "max_locks_per_transaction" in message and "--catalog" in message and refused.value.failure_type.value == "config_error", message
    with postgres.admin_connect() as conn:
        assert conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0] == 0
    with StoreLock(config, {"mode": "sync"}, collections=collections_for(config, streams[:10])):
        pass


def test_announce_does_not_wait_long_on_a_users_lock_of_the_runners_table(postgres):
    """A user's transaction locking _collection_runners' rows: a runner starting says it could not record itself
    (after announce's lock_timeout) and goes on, and meanwhile other writers of the schema start (the DDL lock is not
    held while announce waits)."""
    import logging

    from collection_runner.locking import ANNOUNCE_LOCK_TIMEOUT_MS, StoreLock, collections_for
    from destination_collection.config import parse_config
    from destination_collection.stores import open_store

    schema = f"announce_{uuid.uuid4().hex[:6]}"
    config = parse_config({"store": postgres.store_config(schema=schema)})
    with StoreLock(config, {"mode": "follow"}, collections=collections_for(config, ["orders"])) as first:
        store = open_store(config)
        try:
            first.announce(store)
        finally:
            store.close()
    warnings: List[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append(record.getMessage())

    logger = logging.getLogger(f"announce-{schema}")
    logger.addHandler(Collect())
    with postgres.admin_connect() as user:
        user.autocommit = False
        user.execute(f'SELECT * FROM "{schema}"._collection_runners FOR UPDATE')  # a user's long transaction
        try:
            with StoreLock(config, {"mode": "follow"}, logger=logger, collections=collections_for(config, ["orders"])) as again:
                store = open_store(config)
                try:
                    started = time.monotonic()
                    again.announce(store)
                    waited = time.monotonic() - started
                finally:
                    store.close()
            assert waited < ANNOUNCE_LOCK_TIMEOUT_MS / 1000 + 5, waited
            assert any("Could not record this runner" in w and "lock" in w for w in warnings), warnings
            # the metadata DDL lock is free meanwhile: another writer's metadata set-up does not wait
            other = open_store(config)
            try:
                started = time.monotonic()
                other.catalog.ensure_metadata()
                assert time.monotonic() - started < 5
            finally:
                other.close()
        finally:
            user.rollback()
