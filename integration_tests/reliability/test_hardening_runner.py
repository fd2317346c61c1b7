"""Issue 15 (items 6, 8): the runner under an endpoint that stops answering.

``kinesis-collection sync`` and ``follow`` run as real processes against kinesis-mock behind the fault proxy. Once
they have committed some records, the endpoint goes dark in one of several ways (every request reset, every
request hanging for a minute — a long GetRecords —, every request throttled, the port closed: connection
refused). Then:

* SIGTERM: the runner exits 0 within 5 s of the signal (plus slack for a loaded machine; before the fix it waited
  out the retry budget and exited 2), the documents and states it committed are consistent (no committed state
  covers a record missing from the collection, no record stored twice), and a resume reads the rest exactly once.
* no signal, a small retry budget: the runner exits 3 (never 2: an outage is transient), naming the stream and the
  shard, with the same consistency.
"""
from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List

import pytest
from airbyte_cdk.models import ConfiguredAirbyteCatalog

from collection_runner.configs import configured_stream
from collection_runner.locking import read_holder
from collection_runner.pipeline import run_pipeline
from collection_runner.progress import RunnerProgress
from collection_runner.query_service import ask
from integration_tests.fault_proxy import FaultProxy
from integration_tests.kinesis_mock import create_stream
from integration_tests.reliability.helpers import assert_no_secrets, read_collection, script, stream_states
from source_kinesis.source import SourceKinesis

pytestmark = [pytest.mark.timeout(240)]

RECORDS = 400
SHARDS = 2
STOP_BOUND_SECONDS = 5.0  # the promise
SLACK_SECONDS = 1.5  # a loaded 2-core machine
# Reads slowly, so the outage starts mid-run; a retry budget long enough that waiting it out fails the test.
SLOW_READ = dict(records_per_call=10, get_records_per_second=2, checkpoint_interval_records=10, checkpoint_interval_seconds=0.5, retry_budget_seconds=90)
OUTAGES = ["reset", "hang", "throttle", "refused"]


@pytest.fixture(scope="module")
def outage_stream(kinesis_mock) -> Dict[str, Any]:
    client = kinesis_mock.client()
    name = f"outage-{uuid.uuid4().hex[:8]}"
    create_stream(client, name, SHARDS)
    for start in range(0, RECORDS, 100):
        entries = [{"Data": json.dumps({"uid": f"u{i:05d}", "n": i}).encode(), "PartitionKey": f"key-{i % 7}"} for i in range(start, start + 100)]
        assert client.put_records(StreamName=name, Records=entries)["FailedRecordCount"] == 0
    return {"name": name}


class Run:
    """One runner process against the fault proxy, its files, and the checks."""

    def __init__(self, tmp_path: Path, kinesis_mock, stream: str, command: str, **source_overrides: Any) -> None:
        self.kinesis_mock, self.stream, self.command = kinesis_mock, stream, command
        self.proxy = FaultProxy.to_upstream(kinesis_mock.endpoint_url, max_lifetime_seconds=180).start()
        self.db = str(tmp_path / "collection.duckdb")
        self.source = tmp_path / "source.json"
        config = kinesis_mock.source_config([stream], **dict(SLOW_READ, **source_overrides))
        config["endpoint_url"] = self.proxy.endpoint_url
        self.source.write_text(json.dumps(config))
        self.destination = tmp_path / "destination.json"
        self.destination.write_text(json.dumps({"store": {"store_type": "duckdb", "path": self.db}, "batch_size": 50, "flush_interval_secs": 0.5}))
        self.proc = subprocess.Popen(
            [script("kinesis-collection"), command, "--source", str(self.source), "--destination", str(self.destination)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.err: List[str] = []
        self._pumper = threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True)
        self._pumper.start()

    def committed_records(self) -> int:
        """Documents committed so far, asked through the runner's query socket (it holds the DuckDB file)."""
        holder = read_holder(self.db)
        if not holder or not holder.get("socket"):
            return 0
        from destination_collection.naming import table_name

        response = ask(holder["socket"], {"command": "query", "sql": f'SELECT count(*) AS n FROM "{table_name("", self.stream)}"', "format": "json"}, timeout=10)
        if not response.get("ok"):
            return 0
        return int(json.loads(response["output"].splitlines()[0])["n"])

    def wait_for_commits(self, at_least: int = 20, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the runner ended early ({self.proc.returncode}): {''.join(self.err)[-3000:]}"
            try:
                n = self.committed_records()
            except OSError:
                n = 0
            if n >= at_least:
                return n
            time.sleep(0.3)
        raise AssertionError(f"no {at_least} records committed within {timeout} s: {''.join(self.err)[-3000:]}")

    def go_dark(self, outage: str) -> None:
        if outage == "reset":
            self.proxy.set_faults({"*": {"reset": 1.0}})
        elif outage == "hang":
            self.proxy.set_latency(60.0)  # every call (GetRecords included) hangs for a minute
        elif outage == "throttle":
            self.proxy.set_faults({"*": {"throughput_exceeded": 1.0}})
        elif outage == "refused":
            self.proxy.stop()  # the port closes: connection refused
        else:  # pragma: no cover
            raise ValueError(outage)

    def finish(self, timeout: float) -> float:
        started = time.monotonic()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise AssertionError(f"the runner did not exit within {timeout} s: {''.join(self.err)[-3000:]}") from None
        elapsed = time.monotonic() - started
        self._pumper.join(timeout=10)
        out = self.proc.stdout.read()
        assert out == "", f"the runner wrote to stdout: {out[:500]}"
        assert_no_secrets(out + self.stderr, "runner output")
        return elapsed

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proxy.stop()

    # -- checks -------------------------------------------------------------------------------------------------
    def check_consistent(self, where: str) -> int:
        """No record stored twice; every committed state covers only records in the collection. Returns the count."""
        collection = read_collection(self.db, self.stream)
        present = {(shard, seq) for shard, seq, _ in collection.keys}
        assert len(collection.keys) == len(set(collection.keys)), f"{where}: a record is stored twice"
        truth = shard_positions(self.kinesis_mock.client(), self.stream)
        states = stream_states(collection.states, self.stream)
        assert states, f"{where}: no state committed"
        for state in states:
            for sid, shard in (state.get("shards") or {}).items():
                upto = shard.get("sequence_number")
                covered = truth[sid] if shard.get("finished") else [s for s in truth.get(sid, []) if upto is not None and int(s) <= int(upto)]
                missing = [s for s in covered if (sid, s) not in present]
                assert not missing, f"{where}: the committed state covers {len(missing)} record(s) of {sid} missing from the collection"
        return len(collection.keys)

    def resume_to_end(self) -> None:
        """A bounded sync straight against kinesis-mock from the committed state; then every record exactly once."""
        config = json.loads(self.source.read_text())
        config.update(endpoint_url=self.kinesis_mock.endpoint_url, records_per_call=500, get_records_per_second=5, retry_budget_seconds=30)
        destination = json.loads(self.destination.read_text())
        logger = logging.getLogger("hardening-runner-resume")
        catalog = ConfiguredAirbyteCatalog(streams=[configured_stream(s) for s in SourceKinesis().discover(logger, config).streams if s.name == self.stream])
        summary = run_pipeline(config, destination, catalog, follow_mode=False, stop_event=threading.Event(), logger=logger,
                               progress=RunnerProgress(logger, out=io.StringIO(), interactive=False))
        assert summary.errors == 0, summary.text
        collection = read_collection(self.db, self.stream)
        assert len(collection.keys) == len(set(collection.keys)), "after resume: a record is stored twice"
        uids = sorted(doc["uid"] for doc in collection.docs.values())
        assert uids == [f"u{i:05d}" for i in range(RECORDS)], f"after resume: {len(uids)} documents, {len(set(uids))} distinct, expected {RECORDS}"


def shard_positions(client: Any, stream: str) -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        sid = shard["ShardId"]
        iterator = client.get_shard_iterator(StreamName=stream, ShardId=sid, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        seqs: List[str] = []
        while iterator:
            response = client.get_records(ShardIterator=iterator, Limit=10000)
            seqs += [r["SequenceNumber"] for r in response["Records"]]
            if not response["Records"]:
                break
            iterator = response.get("NextShardIterator")
        out[sid] = seqs
    return out


@pytest.mark.parametrize("command", ["follow", "sync"])
@pytest.mark.parametrize("outage", OUTAGES)
def test_sigterm_during_outage_commits_and_exits_0_fast(tmp_path, kinesis_mock, outage_stream, command, outage, reliability):
    run = Run(tmp_path, kinesis_mock, outage_stream["name"], command)
    try:
        before = run.wait_for_commits()
        run.go_dark(outage)
        time.sleep(2.0)  # the source is now inside its retries (or a call that does not return)
        assert run.proc.poll() is None, f"the runner ended during the outage: {run.stderr[-3000:]}"
        run.proc.send_signal(signal.SIGTERM)
        elapsed = run.finish(timeout=60)
        assert run.proc.returncode == 0, f"exit {run.proc.returncode} after SIGTERM during a '{outage}' outage: {run.stderr[-3000:]}"
        assert elapsed <= STOP_BOUND_SECONDS + SLACK_SECONDS, f"exited {elapsed:.1f} s after SIGTERM (promise: 5 s)"
        assert "SIGTERM" in run.stderr
        committed = run.check_consistent(f"after SIGTERM ({command}, {outage})")
        assert committed >= before, "records committed before the signal were lost"
        run.resume_to_end()
    finally:
        run.close()
    reliability(cases=1, signals=1)


@pytest.mark.parametrize("outage", ["reset", "refused", "throttle"])
def test_outage_past_the_retry_budget_exits_3_naming_the_shard(tmp_path, kinesis_mock, outage_stream, outage, reliability):
    """No signal: the outage outlasts a 3 s retry budget. Exit 3 (transient), never 2, naming stream and shard."""
    run = Run(tmp_path, kinesis_mock, outage_stream["name"], "follow", retry_budget_seconds=3)
    try:
        run.wait_for_commits()
        run.go_dark(outage)
        run.finish(timeout=60)
        assert run.proc.returncode == 3, f"exit {run.proc.returncode} for a '{outage}' outage past the retry budget: {run.stderr[-3000:]}"
        last = [line for line in run.stderr.splitlines() if "transient_error" in line]
        assert last, run.stderr[-3000:]
        assert outage_stream["name"] in last[-1] and "shardId-" in last[-1], f"the message names no stream/shard: {last[-1]}"
        run.check_consistent(f"after a '{outage}' outage")
        run.resume_to_end()
    finally:
        run.close()
    reliability(cases=1)


# ---------------------------------------------------------------------------------------------------------------
# The runner's own bound, whatever the source does: a source stuck in a call that ignores the stop request (the
# worst case of any endpoint) runs the real pipeline and a real DuckDB store in this process.
# ---------------------------------------------------------------------------------------------------------------
FAKE_STREAM = "fake"


def _record(i: int):
    from airbyte_cdk.models import AirbyteMessage, AirbyteRecordMessage, Type

    return AirbyteMessage(type=Type.RECORD, record=AirbyteRecordMessage(stream=FAKE_STREAM, data={"uid": f"u{i:05d}", "n": i}, emitted_at=0))


def _state(upto: int):
    from airbyte_cdk.models import AirbyteMessage, AirbyteStateBlob, AirbyteStateMessage, AirbyteStateType, AirbyteStreamState, StreamDescriptor, Type

    return AirbyteMessage(type=Type.STATE, state=AirbyteStateMessage(
        type=AirbyteStateType.STREAM,
        stream=AirbyteStreamState(stream_descriptor=StreamDescriptor(name=FAKE_STREAM), stream_state=AirbyteStateBlob(upto=upto))))


class StuckSource:
    """Emits records 0..49, a state covering them, records 50..59 (covered by no state), then hangs in a "call"
    that ignores the stop request until ``release`` is set; then ``after`` happens (raise, or more records)."""

    release = threading.Event()
    emitted_all = threading.Event()
    after = "records"
    fail_first = False

    def __init__(self, stop_event=None) -> None:
        self.stop_event = stop_event

    def read(self, logger, config, catalog, states):
        resumed = [s for s in states or []]
        start = (resumed[0]["stream"]["stream_state"]["upto"] + 1) if resumed else 0
        if start:  # a resume that works: the rest, and a final state
            for i in range(start, 100):
                yield _record(i)
            yield _state(99)
            return
        for i in range(50):
            yield _record(i)
        yield _state(49)
        for i in range(50, 60):
            yield _record(i)
        if self.fail_first:
            from source_kinesis.errors import transient_error

            raise transient_error(f"kinesis:GetRecords on stream '{FAKE_STREAM}', shard shardId-000000000000 kept failing with ReadTimeoutError past the retry budget.")
        StuckSource.emitted_all.set()
        StuckSource.release.wait(60)  # the stuck call: the stop request is not looked at
        if self.after == "raise":
            raise AirbyteTracedExceptionForTest("kinesis:GetRecords failed: Could not connect to the endpoint URL")
        for i in range(60, 70):
            yield _record(i)
        yield _state(69)


class AirbyteTracedExceptionForTest(Exception):
    pass


def _fake_catalog() -> ConfiguredAirbyteCatalog:
    from airbyte_cdk.models import AirbyteStream, SyncMode

    stream = AirbyteStream(name=FAKE_STREAM, json_schema={"type": "object"}, supported_sync_modes=[SyncMode.incremental],
                           source_defined_cursor=True, source_defined_primary_key=[["uid"]])
    return ConfiguredAirbyteCatalog(streams=[configured_stream(stream)])


def _run_in_thread(db: str, stop_event: threading.Event, follow_mode: bool) -> Dict[str, Any]:
    outcome: Dict[str, Any] = {}
    logger = logging.getLogger("hardening-runner-stuck")

    def target() -> None:
        try:
            outcome["summary"] = run_pipeline(
                {}, {"store": {"store_type": "duckdb", "path": db}, "batch_size": 1000, "flush_interval_secs": 0.3}, _fake_catalog(),
                follow_mode=follow_mode, stop_event=stop_event, logger=logger,
                progress=RunnerProgress(logger, out=io.StringIO(), interactive=False),
                source_in_process=True)  # (the source these tests put in its place lives in this process)
        except BaseException as exc:  # noqa: BLE001
            outcome["error"] = exc
        outcome["ended_at"] = time.monotonic()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    outcome["thread"] = thread
    return outcome


@pytest.fixture
def stuck_source(monkeypatch):
    StuckSource.release = threading.Event()
    StuckSource.emitted_all = threading.Event()
    StuckSource.after, StuckSource.fail_first = "records", False
    monkeypatch.setattr("collection_runner.pipeline.SourceKinesis", StuckSource)
    monkeypatch.setattr("collection_runner.pipeline.follow", lambda config, states, streams=None, stop_event=None, logger=None:
                        StuckSource(stop_event).read(logger, config, None, states))
    yield StuckSource
    StuckSource.release.set()


def _committed(db: str):
    import duckdb

    from destination_collection import jsonio

    con = duckdb.connect(db, read_only=True)
    try:
        docs = [jsonio.loads(r[0]) for r in con.execute(f'SELECT _doc FROM "{FAKE_STREAM}"').fetchall()]
        states = [jsonio.loads(r[0]) for r in con.execute("SELECT state_json FROM _collection_state").fetchall()]
    finally:
        con.close()
    uids = [doc["uid"] for doc in docs]
    assert len(uids) == len(set(uids)), "a record is stored twice"
    return sorted(uids), [s["upto"] for s in stream_states(states, FAKE_STREAM)]


@pytest.mark.parametrize("follow_mode", [False, True], ids=["sync", "follow"])
@pytest.mark.parametrize("after", ["records", "raise"])
def test_stop_while_the_source_hangs_commits_what_it_emitted_and_returns_fast(tmp_path, stuck_source, follow_mode, after, reliability):
    stuck_source.after = after
    db = str(tmp_path / "c.duckdb")
    stop_event = threading.Event()
    outcome = _run_in_thread(db, stop_event, follow_mode)
    assert stuck_source.emitted_all.wait(30), outcome.get("error")
    # while the source hangs (no stop yet), the write loop still commits on its flush interval
    deadline = time.monotonic() + 10
    count = 0
    while time.monotonic() < deadline and count < 60:
        holder = read_holder(db)
        response = ask(holder["socket"], {"command": "query", "sql": f'SELECT count(*) AS n FROM "{FAKE_STREAM}"', "format": "json"}, timeout=10)
        count = int(json.loads(response["output"].splitlines()[0])["n"]) if response.get("ok") else 0
        time.sleep(0.2)
    assert count == 60, f"{count} records committed while the source was quiet (expected all 60 it emitted)"
    asked = time.monotonic()
    stop_event.set()
    outcome["thread"].join(timeout=30)
    assert not outcome["thread"].is_alive(), "the pipeline is still waiting for the hung source 30 s after the stop"
    elapsed = outcome["ended_at"] - asked
    assert elapsed <= 3.5, f"the pipeline returned {elapsed:.1f} s after the stop (bound: 5 s for the whole process)"
    assert "error" not in outcome, outcome.get("error")
    summary = outcome["summary"]
    assert summary.stopped and summary.source_abandoned and summary.records == 60
    uids, states = _committed(db)
    assert uids == [f"u{i:05d}" for i in range(60)] and states == [49], (uids[-3:], states)
    stuck_source.release.set()  # the hung call returns; what it yields now is not committed by this run
    time.sleep(0.3)
    assert _committed(db) == (uids, states)
    # resume from the committed state: the rest exactly once (50..59 read again, absorbed by their _id)
    resumed = _run_in_thread(db, threading.Event(), follow_mode=False)
    resumed["thread"].join(timeout=30)
    assert "error" not in resumed, resumed.get("error")
    uids, states = _committed(db)
    assert uids == [f"u{i:05d}" for i in range(100)] and states == [99]
    reliability(cases=1)


def test_source_error_before_any_stop_is_raised_after_committing_what_it_emitted(tmp_path, stuck_source, reliability):
    stuck_source.fail_first = True
    db = str(tmp_path / "c.duckdb")
    outcome = _run_in_thread(db, threading.Event(), follow_mode=False)
    outcome["thread"].join(timeout=30)
    error = outcome.get("error")
    assert error is not None and "shardId-000000000000" in getattr(error, "message", ""), error
    from collection_runner.cli import EXIT_TRANSIENT, exit_code

    assert exit_code(error) == EXIT_TRANSIENT
    uids, states = _committed(db)
    assert states == [49] and uids == [f"u{i:05d}" for i in range(60)]
    reliability(cases=1)


def _chained(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException:
            raise outer from None  # like translate(...) from None: the cause is hidden, the context kept
    except BaseException as exc:  # noqa: BLE001
        return exc


def test_exit_codes_are_mapped_in_one_place_and_an_outage_is_never_2(reliability):
    from airbyte_cdk.models import FailureType
    from airbyte_cdk.utils.traced_exception import AirbyteTracedException
    from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

    from collection_runner.cli import EXIT_CONFIG, EXIT_SYSTEM, EXIT_TRANSIENT, exit_code

    def traced(kind):
        return AirbyteTracedException(message="m", failure_type=kind)

    throttled = ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "GetRecords")
    denied = ClientError({"Error": {"Code": "AccessDeniedException"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "GetRecords")
    cases = [
        (traced(FailureType.config_error), EXIT_CONFIG),
        (traced(FailureType.transient_error), EXIT_TRANSIENT),
        (traced(FailureType.system_error), EXIT_SYSTEM),
        (traced(None), EXIT_SYSTEM),
        (_chained(traced(FailureType.config_error), denied), EXIT_CONFIG),
        # mislabelled outages: whatever the label, 3
        (_chained(traced(FailureType.config_error), EndpointConnectionError(endpoint_url="http://127.0.0.1:1")), EXIT_TRANSIENT),
        (_chained(traced(FailureType.config_error), ReadTimeoutError(endpoint_url="http://127.0.0.1:1")), EXIT_TRANSIENT),
        (_chained(traced(FailureType.system_error), ConnectTimeoutError(endpoint_url="http://127.0.0.1:1")), EXIT_TRANSIENT),
        (_chained(traced(FailureType.system_error), throttled), EXIT_TRANSIENT),
        (ConnectionResetError(104, "reset"), EXIT_TRANSIENT),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), EXIT_TRANSIENT),
        (ValueError("bug"), EXIT_SYSTEM),
    ]
    for exc, expected in cases:
        assert exit_code(exc) == expected, (exc, exc.__context__)
    reliability(cases=len(cases))


def test_sigterm_while_a_long_query_runs_on_the_socket_exits_0_fast(tmp_path, kinesis_mock, outage_stream, reliability):
    """Issue item 6: a query still running on the runner's socket does not hold the SIGTERM (needs the query
    service's interruptible queries and fast stop)."""
    run = Run(tmp_path, kinesis_mock, outage_stream["name"], "follow")
    try:
        run.wait_for_commits()
        holder = read_holder(run.db)
        answer: Dict[str, Any] = {}

        def long_query() -> None:
            try:
                answer["response"] = ask(holder["socket"], {"command": "query", "sql": "SELECT count(*) FROM range(100000000000) a", "format": "json"}, timeout=60)
            except Exception as exc:  # noqa: BLE001 - the runner may close the connection while stopping
                answer["error"] = exc

        asker = threading.Thread(target=long_query, daemon=True)
        asker.start()
        time.sleep(1.5)
        assert asker.is_alive(), f"the query finished too early to test anything: {answer}"
        run.proc.send_signal(signal.SIGTERM)
        elapsed = run.finish(timeout=60)
        assert run.proc.returncode == 0, run.stderr[-3000:]
        assert elapsed <= STOP_BOUND_SECONDS + SLACK_SECONDS, f"exited {elapsed:.1f} s after SIGTERM with a query running: {answer}\n{run.stderr[-4000:]}"
        run.check_consistent("after SIGTERM with a query running")
        asker.join(timeout=10)
        assert not asker.is_alive(), "the query client hangs after the runner exited"
    finally:
        run.close()
    reliability(cases=1, signals=1)


# ---------------------------------------------------------------------------------------------------------------
# Round 2: the runner against PostgreSQL that stops answering, restarts, or loses the lock's session.
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def postgres():
    from integration_tests.postgres_server import PostgresServer

    with PostgresServer() as server:
        yield server


def _pg_run(tmp_path: Path, kinesis_mock, stream: str, store: Dict[str, Any], command: str = "follow") -> subprocess.Popen:
    source = tmp_path / "source.json"
    source.write_text(json.dumps(kinesis_mock.source_config([stream], checkpoint_interval_seconds=0.5)))
    destination = tmp_path / "destination.json"
    destination.write_text(json.dumps({"store": store, "flush_interval_secs": 0.5}))
    return subprocess.Popen(
        [script("kinesis-collection"), command, "--source", str(source), "--destination", str(destination)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _put(kinesis_mock, stream: str, start: int, count: int) -> None:
    entries = [{"Data": json.dumps({"uid": f"p{i:05d}"}).encode(), "PartitionKey": f"k{i}"} for i in range(start, start + count)]
    assert kinesis_mock.client().put_records(StreamName=stream, Records=entries)["FailedRecordCount"] == 0


def _pg_count(postgres, schema: str, stream: str) -> int:
    from destination_collection.naming import table_name

    with postgres.admin_connect() as conn:
        try:
            return conn.execute(f'SELECT count(*) FROM "{schema}"."{table_name("", stream)}"').fetchone()[0]
        except Exception:  # noqa: BLE001 - not created yet
            return 0


def _wait_count(postgres, schema: str, stream: str, at_least: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _pg_count(postgres, schema, stream) < at_least:
        assert proc.poll() is None, f"the runner ended early ({proc.returncode}): {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"{at_least} documents not committed within {timeout} s"
        time.sleep(0.3)


def test_sigterm_while_postgresql_accepts_but_never_answers_exits_0_fast(tmp_path, kinesis_mock, outage_stream, reliability):
    """The store's server accepts the TCP connection and says nothing (a hung server, a black-holing proxy): the
    lock's connect waits up to its 10-15 s timeout. SIGTERM then exits 0 within the 5 s bound, nothing read and
    nothing to commit (before: it waited out the connect timeout and exited 3)."""
    import socket as socket_module

    hole = socket_module.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    try:
        store = {"store_type": "postgres", "host": "127.0.0.1", "port": hole.getsockname()[1], "database": "d", "schema": "s",
                 "username": "u", "password": "pw-not-to-be-printed", "ssl_mode": "disable"}
        proc = _pg_run(tmp_path, kinesis_mock, outage_stream["name"], store, command="sync")
        time.sleep(4.0)  # past the imports and discovery: inside the connect
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - signalled
    finally:
        hole.close()
    assert proc.returncode == 0, (proc.returncode, err[-3000:])
    assert elapsed <= STOP_BOUND_SECONDS, f"exited {elapsed:.1f} s after SIGTERM"
    assert out == "" and "nothing to commit" in err and "Traceback" not in err and "pw-not-to-be-printed" not in err
    reliability(cases=1, signals=1)


def _pg_follow(tmp_path: Path, kinesis_mock, postgres, prefix: str, records: int) -> tuple:
    """A new 1-shard stream holding ``records`` records and a follow runner into a new PostgreSQL schema:
    (stream, schema, store config, process)."""
    stream = f"{prefix}-{uuid.uuid4().hex[:6]}"
    create_stream(kinesis_mock.client(), stream, 1)
    _put(kinesis_mock, stream, 0, records)
    schema = f"s_{uuid.uuid4().hex[:6]}"
    store = dict(postgres.store_config(schema=schema))
    return stream, schema, store, _pg_run(tmp_path, kinesis_mock, stream, store)


def _end_lock_session(conn, postgres) -> None:
    """End only the session holding the runner's advisory locks (an idle-session killer would), as the admin."""
    ended = conn.execute(
        "SELECT pg_terminate_backend(pid) FROM (SELECT DISTINCT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = %s)) AS holders", [postgres.database]).fetchall()
    assert ended == [(True,)], ended


@pytest.mark.parametrize("sessions", ["all", "lock-only"])
def test_postgresql_sessions_ended_mid_follow_exit_3_and_lose_nothing(tmp_path, kinesis_mock, postgres, sessions, reliability):
    """A server restart ends every session ("all": AdminShutdown on the next write; before: exit 1, a system_error).
    Only the lock's session ended ("lock-only": an idle-session killer; the advisory lock goes with it, silently;
    before: the runner went on writing without the lock, and a second runner could start). Both: exit 3 naming the
    cause, every committed document kept, and a resume reads the rest exactly once."""
    stream, schema, store, proc = _pg_follow(tmp_path, kinesis_mock, postgres, "pgrestart", 30)
    try:
        _wait_count(postgres, schema, stream, 30, proc)
        with postgres.admin_connect() as conn:
            if sessions == "all":
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [postgres.user])
            else:
                _end_lock_session(conn, postgres)
        _put(kinesis_mock, stream, 30, 10)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 3, (proc.returncode, err[-3000:])
    last = [line for line in err.splitlines() if "ERROR" in line][-1]
    assert "transient_error" in last and (sessions == "all" or "runner lock" in last), last
    assert out == "" and "Traceback" not in err and postgres.password not in err
    committed = _pg_count(postgres, schema, stream)
    assert committed >= 30
    # a resume (a bounded sync) ends with every record exactly once
    resumed = _pg_run(tmp_path, kinesis_mock, stream, store, command="sync")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err[-3000:]
    from destination_collection.naming import table_name

    with postgres.admin_connect() as conn:
        uids = [row[0] for row in conn.execute(f'SELECT _doc->>\'uid\' FROM "{schema}"."{table_name("", stream)}"').fetchall()]
    assert sorted(uids) == [f"p{i:05d}" for i in range(40)], (len(uids), len(set(uids)))
    reliability(cases=1, faults=1)


def test_an_idle_follow_that_loses_its_postgresql_lock_exits_3_without_a_commit(tmp_path, kinesis_mock, postgres,
                                                                               reliability):
    """An idle runner commits nothing (repeated_states), so the lock check that followed each commit runs at each
    state it drops instead: with only the lock's session ended and nothing arriving, the runner still stops with exit 3
    naming the lock, within seconds, and commits nothing after losing it."""
    stream, schema, store, proc = _pg_follow(tmp_path, kinesis_mock, postgres, "pgidle", 5)
    try:
        _wait_count(postgres, schema, stream, 5, proc)
        time.sleep(2.0)  # idle: the source's checkpoints are dropped, nothing is committed
        with postgres.admin_connect() as conn:
            committed_before = conn.execute(f'SELECT committed_at FROM "{schema}"._collection_state').fetchall()
            _end_lock_session(conn, postgres)
        started = time.monotonic()
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 3, (proc.returncode, err[-3000:])
    assert took < 10, took
    last = [line for line in err.splitlines() if "ERROR" in line][-1]
    assert "transient_error" in last and "runner lock" in last, last
    with postgres.admin_connect() as conn:
        assert conn.execute(f'SELECT committed_at FROM "{schema}"._collection_state').fetchall() == committed_before
    assert _pg_count(postgres, schema, stream) == 5
    reliability(cases=1, faults=1)


class FloodSource:
    """Ignores the stop request and keeps emitting (a backlog of pages in flight after a stop, or a source that does
    not look at the event): records in order, a state every 100 records covering them."""

    emitted = 0

    def __init__(self, stop_event=None) -> None:
        self.stop_event = stop_event

    def read(self, logger, config, catalog, states):
        i = 0
        while True:
            yield _record(i)
            FloodSource.emitted = i + 1
            if i % 100 == 99:
                yield _state(i)
            i += 1
            if i % 500 == 0:
                time.sleep(0.001)


@pytest.mark.parametrize("follow_mode", [False, True], ids=["sync", "follow"])
def test_stop_while_the_source_keeps_emitting_returns_within_the_bound(tmp_path, monkeypatch, follow_mode, reliability):
    """The stop grace counts from the signal even while the source is still emitting (before: it was only checked
    when the pump's buffer ran empty, so a source that kept emitting kept the runner busy for ever). What was
    committed is consistent: every committed state covers only records in the collection, none stored twice."""
    monkeypatch.setattr("collection_runner.pipeline.SourceKinesis", FloodSource)
    monkeypatch.setattr("collection_runner.pipeline.follow", lambda config, states, streams=None, stop_event=None, logger=None:
                        FloodSource(stop_event).read(logger, config, None, states))
    db = str(tmp_path / "c.duckdb")
    stop_event = threading.Event()
    outcome = _run_in_thread(db, stop_event, follow_mode)
    deadline = time.monotonic() + 30
    while FloodSource.emitted < 5000 and time.monotonic() < deadline:
        time.sleep(0.05)
    asked = time.monotonic()
    stop_event.set()
    outcome["thread"].join(timeout=30)
    assert not outcome["thread"].is_alive(), "the pipeline still runs 30 s after the stop: the source keeps it busy"
    elapsed = outcome["ended_at"] - asked
    assert elapsed <= 3.5, f"the pipeline returned {elapsed:.1f} s after the stop (bound: 5 s for the whole process)"
    assert "error" not in outcome, outcome.get("error")
    assert outcome["summary"].stopped and outcome["summary"].source_abandoned
    uids, states = _committed(db)
    assert states and uids[: states[-1] + 1] == [f"u{i:05d}" for i in range(states[-1] + 1)], "a committed state covers a missing record"
    reliability(cases=1, signals=1)
