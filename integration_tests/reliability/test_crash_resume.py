"""Crash and resume: seeded trials that SIGKILL a sync at random points, then resume until done.

One stream serves every trial (3 shards, plain records and KPL aggregates interleaved, a split and a merge between
writes: 6 shards, ~330 user records); each trial has its own DuckDB file. Three ways to crash, 7 trials each:

* ``runner``: ``kinesis-collection sync`` killed (the store holds the state);
* ``piped-source`` / ``piped-destination``: ``source-kinesis read … | destination-collection write …`` with the
  runner-less loop of the piped-sync contract (the last state the destination echoed on stdout is saved to a file and
  passed as ``--state`` next time); the source or the destination is killed.

Each trial kills 1–2 times (seeded: when, after how many commits), each time checking that the committed state
(in the store, and the saved state file) covers no record missing from the collection; then resumes to the end
(in-process, the same code as the CLI: the runner's pipeline, or the source's read fed to the write loop from the
saved state). After: every (shard, sequence, sub-sequence) present exactly once, each document equal (as JSON) to the
event produced, the committed state consistent, and a read from it returns nothing new. stdout/stderr of every
process are scanned for the secret key. Trials of one mode run three at a time.
"""
from __future__ import annotations

import io
import json
import logging
import os
import random
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest
from airbyte_cdk.models import ConfiguredAirbyteCatalog, ConfiguredAirbyteCatalogSerializer, Type

from collection_runner.configs import configured_stream
from collection_runner.pipeline import run_pipeline
from collection_runner.progress import RunnerProgress
from destination_collection.protocol_loop import write_messages
from integration_tests.process_helpers import children_of, gone
from integration_tests.reliability.helpers import (
    TruthStream,
    assert_equals_truth,
    assert_no_secrets,
    assert_state_covered,
    build_stream,
    read_collection,
    script,
    stream_states,
)
from source_kinesis.source import SourceKinesis

TRIALS_PER_MODE = 7
CONCURRENCY = 3
# Runs that get killed read slowly (so kills land mid-sync); the resumes that finish read fast.
SLOW_READ = dict(records_per_call=10, get_records_per_second=3, checkpoint_interval_records=15, checkpoint_interval_seconds=1)
FAST_READ = dict(records_per_call=100, get_records_per_second=5, checkpoint_interval_records=40, checkpoint_interval_seconds=1)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


@pytest.fixture(scope="module")
def crash_stream(kinesis_mock) -> TruthStream:
    return build_stream(kinesis_mock.client(), "crash")


class Trial:
    def __init__(self, mode: str, seed: int, folder: Path, kinesis_mock, truth: TruthStream, child_always_reading: bool = True) -> None:
        self.mode, self.seed, self.folder, self.truth = mode, seed, folder, truth
        # polling reads slowly enough that a killed runner's source process is always still reading; a fan-out read
        # may have ended (its process gone) while the runner still writes
        self.child_always_reading = child_always_reading
        self.children_killed = 0  # kills that found the runner's source process (and checked it died with it)
        self.rng = random.Random(f"{mode}-{seed}")
        folder.mkdir(parents=True, exist_ok=True)
        self.db = str(folder / "collection.duckdb")
        self.slow_source = folder / "source-slow.json"
        self.slow_source.write_text(json.dumps(kinesis_mock.source_config([truth.name], **SLOW_READ)))
        self.fast_source = folder / "source-fast.json"
        self.fast_source.write_text(json.dumps(kinesis_mock.source_config([truth.name], **FAST_READ)))
        self.destination = folder / "destination.json"
        self.destination.write_text(json.dumps({"store": {"store_type": "duckdb", "path": self.db}, "batch_size": 25, "flush_interval_secs": 0.5}))
        self.catalog = folder / "catalog.json"
        self.state_file = folder / "state.json"
        self.kills = 0
        self.landed = 0  # kills that hit a process still running (not after it had finished on its own)
        self.runs = 0
        self.scanned = 0

    # -- one run ------------------------------------------------------------------------------------------------
    def run_runner(self, kill_after: Optional[float]) -> bool:
        """``kinesis-collection sync``; killed ``kill_after`` s after it starts reading (None: let it finish)."""
        source = self.slow_source if kill_after is not None else self.fast_source
        proc = subprocess.Popen([script("kinesis-collection"), "sync", "--source", str(source), "--destination", str(self.destination)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        reading = threading.Event()
        err: List[str] = []

        def pump() -> None:
            for line in proc.stderr:
                err.append(line)
                if "reading shard" in line:
                    reading.set()
            reading.set()

        pumper = threading.Thread(target=pump, daemon=True)
        pumper.start()
        children: List[int] = []  # the runner's source process (source_process.py), taken just before the kill
        killed = self._maybe_kill([proc], proc, reading, kill_after, before_kill=lambda: children.extend(children_of(proc.pid)))
        if killed and children:
            self.children_killed += 1
        if killed and (children or self.child_always_reading):
            assert children, f"trial {self.mode}-{self.seed}: killed while reading, yet no source process was found"
            deadline = time.monotonic() + 5
            while not all(gone(pid) for pid in children) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert all(gone(pid) for pid in children), f"trial {self.mode}-{self.seed}: the runner's source process outlived it"
        out = proc.stdout.read()
        proc.wait(timeout=90)
        pumper.join(timeout=10)
        self.scanned += assert_no_secrets(out + "".join(err), f"trial {self.mode}-{self.seed} runner output")
        if not killed:
            assert proc.returncode == 0, "".join(err)[-3000:]
        return not killed

    def run_piped(self, kill_after: Optional[float], victim: str) -> bool:
        source = self.slow_source if kill_after is not None else self.fast_source
        args = [script("source-kinesis"), "read", "--config", str(source), "--catalog", str(self.catalog)]
        if self.state_file.exists():
            args += ["--state", str(self.state_file)]
        src = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        dst = subprocess.Popen([script("destination-collection"), "write", "--config", str(self.destination), "--catalog", str(self.catalog)],
                               stdin=src.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        src.stdout.close()  # the destination holds the pipe; the source gets SIGPIPE/EPIPE if the destination dies
        commits = threading.Event()
        want = self.rng.randint(0, 3)
        echoed: List[str] = []
        src_err: List[bytes] = []

        def pump() -> None:
            count = 0
            for line in dst.stdout:
                echoed.append(line.decode("utf-8", "replace"))
                message = json.loads(line)
                if message.get("type") == "STATE":
                    # the runner-less loop: save the last echoed state (atomically) for the next --state
                    tmp = self.state_file.with_suffix(".tmp")
                    tmp.write_text(json.dumps([message["state"]]))
                    os.replace(tmp, self.state_file)
                    count += 1
                    if count >= want:
                        commits.set()
            commits.set()

        def pump_err() -> None:
            src_err.append(src.stderr.read())

        pumpers = [threading.Thread(target=pump, daemon=True), threading.Thread(target=pump_err, daemon=True)]
        for t in pumpers:
            t.start()
        killed = self._maybe_kill([src, dst], src if victim == "source" else dst, commits, kill_after)
        if killed and victim == "destination":
            # A platform notices the dead destination and stops the source (it may block writing to the pipe).
            time.sleep(0.2)
            if src.poll() is None:
                src.kill()
        src.wait(timeout=90)
        dst_err = dst.stderr.read().decode("utf-8", "replace")
        dst.wait(timeout=90)
        for t in pumpers:
            t.join(timeout=10)
        text = "".join(echoed) + dst_err + b"".join(src_err).decode("utf-8", "replace")
        self.scanned += assert_no_secrets(text, f"trial {self.mode}-{self.seed} piped output")
        if not killed:
            assert src.returncode == 0 and dst.returncode == 0, (src.returncode, dst.returncode, dst_err[-2000:], "".join(echoed)[-2000:])
        return not killed

    def resume_in_process(self) -> None:
        """The final resume, in this process (the CLI's start-up costs ~2 s of CPU per process; the code is the same):
        the runner's pipeline, or the runner-less loop (source read from the saved state → write loop → save the
        last echoed state)."""
        source = json.loads(self.fast_source.read_text())
        destination = json.loads(self.destination.read_text())
        logger = logging.getLogger(f"crash-{self.mode}-{self.seed}")
        if self.mode == "runner":
            catalog = ConfiguredAirbyteCatalog(streams=[configured_stream(s) for s in SourceKinesis().discover(logger, source).streams])
            summary = run_pipeline(source, destination, catalog, follow_mode=False, stop_event=threading.Event(), logger=logger,
                                   progress=RunnerProgress(logger, out=io.StringIO(), interactive=False))
            assert summary.errors == 0, summary.text
            return
        catalog = ConfiguredAirbyteCatalogSerializer.load(json.loads(self.catalog.read_text()))
        state = json.loads(self.state_file.read_text()) if self.state_file.exists() else []
        for echo in write_messages(destination, catalog, SourceKinesis().read(logger, source, catalog, state)):
            self.state_file.write_text(json.dumps([echo["state"]]))

    def _maybe_kill(self, procs: List[subprocess.Popen], victim: subprocess.Popen, trigger: threading.Event, kill_after: Optional[float],
                    before_kill: Callable[[], None] = lambda: None) -> bool:
        if kill_after is None:
            return False
        trigger.wait(timeout=45)
        time.sleep(kill_after)
        self.kills += 1
        if victim.poll() is None:
            before_kill()
            victim.send_signal(signal.SIGKILL)
            self.landed += 1
            return True
        return False

    # -- checks -------------------------------------------------------------------------------------------------
    def check_consistent(self, where: str) -> None:
        collection = read_collection(self.db, self.truth.name)
        present = set(collection.keys)
        assert len(collection.keys) == len(present), f"{where}: a record is stored twice"
        for state in stream_states(collection.states, self.truth.name):
            assert_state_covered(state, self.truth, present, f"{where} (state committed in the store)")
        if self.state_file.exists():
            for state in stream_states(json.loads(self.state_file.read_text()), self.truth.name):
                assert_state_covered(state, self.truth, present, f"{where} (state saved from the destination's echo)")

    def execute(self) -> Dict[str, Any]:
        if self.mode != "runner":
            catalog = SourceKinesis().discover(logging.getLogger("crash"), json.loads(self.fast_source.read_text()))
            configured = ConfiguredAirbyteCatalog(streams=[configured_stream(s) for s in catalog.streams])
            self.catalog.write_text(json.dumps(ConfiguredAirbyteCatalogSerializer.dump(configured)))
        kills = self.rng.choice([1, 1, 2])  # seeded: most trials kill once, some twice
        for attempt in range(kills):
            delay = self.rng.uniform(0.0, 2.5)
            self.runs += 1
            if self.mode == "runner":
                finished = self.run_runner(delay)
            else:
                finished = self.run_piped(delay, self.mode.split("-", 1)[1])
            self.check_consistent(f"trial {self.mode}-{self.seed} after kill {attempt + 1}")
            if finished:
                break
        self.runs += 1
        self.resume_in_process()
        collection = read_collection(self.db, self.truth.name)
        assert_equals_truth(collection, self.truth, f"trial {self.mode}-{self.seed}")
        self.check_consistent(f"trial {self.mode}-{self.seed} at the end")
        committed = stream_states(collection.states, self.truth.name)
        assert committed, "no state committed"
        return {"committed": committed[-1], "kills": self.kills, "landed": self.landed, "runs": self.runs, "scanned": self.scanned}


def reads_nothing_new(kinesis_mock, truth: TruthStream, state_blob: Dict[str, Any]) -> int:
    """A read from the committed state (in-process): the number of records it returns (must be 0)."""
    from airbyte_cdk.test.catalog_builder import CatalogBuilder
    from airbyte_cdk.models import SyncMode

    state = [{"type": "STREAM", "stream": {"stream_descriptor": {"name": truth.name}, "stream_state": state_blob}}]
    catalog = CatalogBuilder().with_stream(truth.name, SyncMode.incremental).build()
    messages = SourceKinesis().read(logging.getLogger("crash"), kinesis_mock.source_config([truth.name]), catalog, state)
    return sum(1 for m in messages if m.type == Type.RECORD)


@pytest.mark.parametrize("mode", ["runner", "piped-source", "piped-destination"])
def test_sigkill_at_random_points_then_resume(mode, crash_stream, kinesis_mock, tmp_path, reliability):
    trials = [Trial(mode, seed, tmp_path / f"trial-{seed}", kinesis_mock, crash_stream) for seed in range(TRIALS_PER_MODE)]
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(lambda t: t.execute(), trials))
    # The committed states are equal across trials (same stream, all read to the end); one read checks them all.
    blobs = {json.dumps(r["committed"], sort_keys=True) for r in results}
    for blob in blobs:
        assert reads_nothing_new(kinesis_mock, crash_stream, json.loads(blob)) == 0, "a read from the committed state returned records again"
    reliability(
        trials=len(trials),
        sigkills=sum(r["kills"] for r in results),
        sigkills_mid_sync=sum(r["landed"] for r in results),
        records_checked=len(trials) * len(crash_stream.events),
        kpl_aggregates_read=len(trials) * crash_stream.aggregates,
        reshards_crossed=len(trials) * crash_stream.reshards,
        outputs_scanned_for_secrets=len(trials),
    )


class FanOutKinesis:
    """The replay server as the trials' Kinesis, read with enhanced fan-out (kinesis-mock's SubscribeToShard sends no
    initial-response and never ends a split parent's subscription, see README): ``client()`` and ``source_config()``
    as ``KinesisMock`` has them. Each event is held back 40 ms so that kills land mid-sync."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def client(self) -> Any:
        from integration_tests.test_replay_kinesis import client_for

        return client_for(self.server.endpoint_url)

    def source_config(self, streams: List[str], **overrides: Any) -> Dict[str, Any]:
        from integration_tests.kinesis_mock import ACCESS_KEY, REGION, SECRET_KEY

        config = {
            "credentials": {"auth_type": "access_keys", "aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY},
            "region": REGION,
            "endpoint_url": self.server.endpoint_url,
            "streams": list(streams),
            "read_mode": {"mode": "enhanced_fan_out", "consumer_name": "crash-trials"},
        }
        config.update(overrides)
        return config


@pytest.fixture(scope="module")
def fan_out_world():
    from integration_tests.fault_proxy import FaultProxy
    from integration_tests.replay import ReplayData

    data = ReplayData([])
    data.resubscribe_cooldown_seconds = 0.05
    data.event_max_records = 3
    data.subscription_faults = lambda n, sent: time.sleep(0.04)  # None: no fault, only a slower stream
    with FaultProxy.replay(data, max_lifetime_seconds=390, max_requests=1_000_000) as server:
        endpoint = FanOutKinesis(server)
        yield endpoint, build_stream(endpoint.client(), "crash-efo")


@pytest.mark.parametrize("mode", ["runner", "piped-source"])
def test_sigkill_with_enhanced_fan_out_at_random_points_then_resume(mode, fan_out_world, tmp_path, reliability):
    """The same trials and checks, reading with enhanced fan-out (SubscribeToShard) from the replay server."""
    endpoint, truth = fan_out_world
    trials = [Trial(mode, seed, tmp_path / f"trial-{seed}", endpoint, truth, child_always_reading=False) for seed in range(TRIALS_PER_MODE)]
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(lambda t: t.execute(), trials))
    blobs = {json.dumps(r["committed"], sort_keys=True) for r in results}
    for blob in blobs:
        assert reads_nothing_new(endpoint, truth, json.loads(blob)) == 0, "a read from the committed state returned records again"
    assert sum(r["landed"] for r in results) >= TRIALS_PER_MODE // 2, "too few kills landed mid-sync to prove anything"
    if mode == "runner":
        assert sum(t.children_killed for t in trials) >= 1, "no kill found the runner's source process still reading"
    reliability(
        trials=len(trials),
        sigkills=sum(r["kills"] for r in results),
        sigkills_mid_sync=sum(r["landed"] for r in results),
        records_checked=len(trials) * len(truth.events),
        kpl_aggregates_read=len(trials) * truth.aggregates,
        reshards_crossed=len(trials) * truth.reshards,
        outputs_scanned_for_secrets=len(trials),
    )
