"""End to end: the runner draining a backlog, and its freshness in follow mode.

* **Backlog**: ``kinesis-collection sync`` (the source in its own process) from the replay server (4 shards) into a
  fresh DuckDB collection (``append_dedup`` on the Kinesis primary key), records/s of the whole run; beside it the
  same runner with ``--source-in-process`` (source and destination in one process: the previous design), the same
  data through a piped sync (``source-kinesis read | destination-collection write``) and through the source
  alone (``source-kinesis read > /dev/null``: the floor, the runner's target is ≥ 0.8× of it).
* **Freshness**: ``kinesis-collection follow`` (4 shards) while a load generator puts batches of 100 records with
  ``put_records`` at 1,000 and at 10,000 records/s for 10 s, on the **in-memory Kinesis** (``integration_tests/
  replay.py``: live, growing shards, wall-clock ``MillisBehindLatest``), at the source's default budget of 2
  GetRecords calls/s per shard (what it leaves to other consumers: 3 of Kinesis' 5) and at 5 calls/s (the sole
  consumer); then on **kinesis-mock** (1,000 records/s asked for 8 s, default budget; its ``put_records`` slows as
  its shards fill, the achieved rate is reported). Every 20 ms the benchmark asks the runner through its query socket
  (as ``kinesis-collection query`` does) which batches are complete. Latency of a batch = the first answer in which
  all its records are queryable − the start of its ``put_records`` call (the target's measure), and − its return;
  split into put → the source emitted its last record (the runner's ``_airbyte_extracted_at``) and emitted →
  queryable (the write side: group commit, commit, the poller). Three processes besides the runner: the in-memory
  Kinesis server (its own process, so the load's and the poller's Python work do not share its GIL and delay its
  answers), the load generator (boto3, its own process for the same reason) and this poller; their CPU is reported
  beside the runner's (user + system over the load window; 2 cores shared by all four, and by whatever else runs).
* **Start-up**: exec to the first GetRecords the replay server receives, for ``source-kinesis read``,
  ``kinesis-collection sync`` and a bare boto3 loop (warm bytecode, ``--catalog`` given, access keys, no latency).
* **Idle**: the kinesis-mock follow runner afterwards, while nothing arrives for 60 s: its CPU (user + system of the runner and its source process, /proc) as a share of
  one core, and its commits (changes of the committed state, polled every second through the query socket).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from typing import Any, Callable, Dict, Optional

from .common import Context, Section, Table, Target, interleaved, median
from .source import BIN, REPO, _replay, _source_files

TITLE = "End to end: runner backlog and follow-mode freshness"
ORDER = 40
PK = [["_kinesis_shard_id"], ["_kinesis_sequence_number"], ["_kinesis_sub_sequence_number"]]
RUNNER = "kinesis-collection sync (the source in its own process)"


def _catalog(ctx: Context, name: str) -> str:
    path = ctx.path(f"catalog-e2e-{name}.json")
    stream = {"name": name, "json_schema": {"type": "object"}, "supported_sync_modes": ["incremental"],
              "source_defined_cursor": True, "source_defined_primary_key": PK}
    with open(path, "w") as handle:
        json.dump({"streams": [{"stream": stream, "sync_mode": "incremental", "destination_sync_mode": "append_dedup", "primary_key": PK}]}, handle)
    return path


def _destination(ctx: Context, label: str) -> str:
    db = ctx.path(f"e2e-{label}.duckdb")
    for suffix in ("", ".wal", ".runner.lock"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    path = ctx.path(f"destination-e2e-{label}.json")
    with open(path, "w") as handle:
        json.dump({"store": {"store_type": "duckdb", "path": db}, "batch_size": 50_000}, handle)
    return path


def backlog(ctx: Context, section: Section) -> None:
    shards, per_shard = 4, ctx.size(50_000, 100)
    total = shards * per_shard
    replay = _replay(ctx, "e2e", shards, per_shard)
    source_cfg, _ = _source_files(ctx, "e2e", replay.endpoint_url)
    catalog = _catalog(ctx, "e2e")
    ctx.log(f"Runner backlog: {total:,} records from {shards} shards into DuckDB")

    def runner(*extra: str) -> Callable[[], float]:
        def run() -> float:
            destination = _destination(ctx, "runner")
            started = time.perf_counter()
            subprocess.run([os.path.join(BIN, "kinesis-collection"), "sync", "--source", source_cfg, "--destination", destination,
                            "--catalog", catalog, *extra], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return total / (time.perf_counter() - started)
        return run

    def piped() -> float:
        destination = _destination(ctx, "piped")
        started = time.perf_counter()
        read = subprocess.Popen([os.path.join(BIN, "source-kinesis"), "read", "--config", source_cfg, "--catalog", catalog],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        write = subprocess.run([os.path.join(BIN, "destination-collection"), "write", "--config", destination, "--catalog", catalog],
                               stdin=read.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        read.stdout.close()
        read.wait()
        if read.returncode or write.returncode:
            raise RuntimeError(f"piped sync failed: read {read.returncode}, write {write.returncode}")
        return total / (time.perf_counter() - started)

    def source_alone() -> float:
        started = time.perf_counter()
        subprocess.run([os.path.join(BIN, "source-kinesis"), "read", "--config", source_cfg, "--catalog", catalog],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return total / (time.perf_counter() - started)

    alone = "source-kinesis read > /dev/null (the source alone)"
    rates = interleaved(ctx, [
        (RUNNER, runner()),
        ("kinesis-collection sync --source-in-process (one process)", runner("--source-in-process")),
        ("source-kinesis read | destination-collection write", piped),
        (alone, source_alone),
    ])
    table = Table(["pipeline", "records", "records/s (median, whole run incl. start-up)", "× the source alone"],
                  caption="Replay server on 127.0.0.1, 4 shards of ~150-byte JSON events, DuckDB append_dedup.")
    floor = median(rates[alone])
    for label, values in rates.items():
        table.add(label, total, median(values), f"{median(values) / floor:.2f}×")
    section.tables.append(table)
    runner_ratio = median(rates[RUNNER]) / floor
    section.targets.append(Target(
        "runner backlog records/s vs the source alone (4 shards, whole run)",
        f"{runner_ratio:.2f}× ({median(rates[RUNNER]):,.0f} vs {floor:,.0f} records/s)",
        "≥ 0.8×", None if ctx.smoke else runner_ratio >= 0.8))


def startup(ctx: Context, section: Section) -> None:
    """Exec to the first GetRecords the replay server receives, for the source alone, the runner and a bare boto3 loop
    (warm bytecode: one unmeasured run of each first; --catalog given, access keys, no latency; 1 shard)."""
    replay = _replay(ctx, "startup", 1, 100)
    backend = replay.backend
    source_cfg, _ = _source_files(ctx, "startup", replay.endpoint_url)
    catalog = _catalog(ctx, "startup")

    def timed(argv: Callable[[], list]) -> Callable[[], float]:
        def run() -> float:
            command = argv()
            backend.first_get_records_at = None
            started = time.time()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if backend.first_get_records_at is None:
                raise RuntimeError(f"{command[0]} made no GetRecords call")
            return backend.first_get_records_at - started
        return run

    subjects = [
        ("bare boto3 GetRecords loop (bench._bare_loop)",
         timed(lambda: [sys.executable, "-m", "bench._bare_loop", replay.endpoint_url, "startup"])),
        ("source-kinesis read", timed(lambda: [os.path.join(BIN, "source-kinesis"), "read", "--config", source_cfg,
                                               "--catalog", catalog])),
        ("kinesis-collection sync", timed(lambda: [os.path.join(BIN, "kinesis-collection"), "sync", "--source",
                                                   source_cfg, "--destination", _destination(ctx, "startup"),
                                                   "--catalog", catalog])),
    ]
    for _, run in subjects:  # warm bytecode and the OS's file cache
        run()
    seconds = interleaved(ctx, subjects)
    bare = median(seconds[subjects[0][0]])
    t = Table(["command", "runs", "exec → first GetRecords (s, median)", "× bare loop"],
              caption="Start-up: from exec to the first GetRecords the replay server receives (127.0.0.1, no latency, "
                      "1 shard; access keys, `--catalog` given; each command run once unmeasured first).")
    for label, values in seconds.items():
        t.add(label, len(values), median(values), f"{median(values) / bare:.2f}×")
    section.tables.append(t)


FRESH_SHARDS = 4
POLL_SECONDS = 0.02  # the harness asks the runner which batches are complete this often (at most)
IN_MEMORY_RATES = (1_000, 10_000)  # records/s put on the in-memory Kinesis
IN_MEMORY_SECONDS = 10
MOCK_RATE, MOCK_WRITERS, MOCK_BATCH = 1_000, 2, 100  # kinesis-mock answers a put in 0.1–0.5 s under load
FRESH_TARGETS = {1_000: 0.5, 10_000: 1.0}  # p95 seconds, put called → queryable
FAN_OUT_RATE, FAN_OUT_TARGET = 1_000, 0.3  # enhanced fan-out: records/s, p95 seconds put called → queryable
FAN_OUT = "enhanced fan-out"  # the budget column of fan-out rows (no GetRecords budget applies)
STEADY_AFTER_SECONDS = 1.0  # batches put this long after the load started measure the steady state


def _pct(values: list, q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def _cpu_seconds_of(pid: Optional[int]) -> float:
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    return _cpu_seconds(pid)


def _source_budget_default() -> float:
    from source_kinesis.config import SourceConfig

    return float(SourceConfig.model_fields["get_records_per_second"].default)


class _FollowRun:
    """One measured follow: a fresh DuckDB collection, ``kinesis-collection follow`` on ``stream``, a load
    generator process, and the poller (this process) asking the runner's query socket every POLL_SECONDS which
    batches are complete."""

    def __init__(self, ctx: Context, label: str, source_config: dict, stream: str) -> None:
        self.ctx, self.label, self.stream = ctx, label, stream
        self.source = ctx.path(f"source-fresh-{label}.json")
        with open(self.source, "w") as handle:
            json.dump(source_config, handle)
        self.destination = _destination(ctx, f"fresh-{label}")
        self.db = json.load(open(self.destination))["store"]["path"]
        self.runner: Optional[subprocess.Popen] = None
        self.socket_path = ""
        from destination_collection.naming import table_name as collection_table

        self.table = collection_table("", stream)

    def __enter__(self) -> "_FollowRun":
        from collection_runner.locking import read_holder

        self.log = open(self.ctx.path(f"follow-runner-{self.label}.log"), "w")
        self.runner = subprocess.Popen([os.path.join(BIN, "kinesis-collection"), "follow", "--source", self.source,
                                        "--destination", self.destination], stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 60
        holder = None
        while time.monotonic() < deadline and not (holder and holder.get("socket")):
            if self.runner.poll() is not None:
                break
            time.sleep(0.1)
            holder = read_holder(self.db)
        if not holder or not holder.get("socket"):
            raise RuntimeError(f"the runner did not start (see {self.log.name})")
        self.socket_path = holder["socket"]
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self.runner is not None
        self.runner.terminate()
        try:
            self.runner.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.runner.kill()
            self.runner.wait()
        self.log.close()

    def complete(self, low: int, batch: int) -> Optional[list]:
        """[(batch, records)] of batches >= low, or None when the collection is not queryable yet."""
        from collection_runner.query_service import ask

        response = ask(self.socket_path, {"command": "query", "format": "json",
                                          "sql": f'SELECT "batch", count(*) AS n FROM "{self.table}" WHERE "batch" >= {low} GROUP BY 1'})
        if not response.get("ok"):
            return None
        return [(row["batch"], row["n"]) for row in map(json.loads, response["output"].splitlines())]

    def warm_up(self, client: Any, batch: int) -> None:
        """Put one batch (number -1) and wait until it is queryable: the collection exists and every shard is read."""
        client.put_records(StreamName=self.stream, Records=[{"Data": json.dumps({"batch": -1, "i": i}).encode(), "PartitionKey": f"w-{i}"}
                                                            for i in range(batch)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = self.complete(-1, batch)
            if rows and dict(rows).get(-1, 0) >= batch:
                return
            time.sleep(0.05)
        raise RuntimeError(f"the warm-up batch never became queryable (see {self.log.name})")

    def measure(self, endpoint: str, rate: float, seconds: float, batch: int, writers: int, server_pid: Optional[int]) -> dict:
        """Run the load generator and poll until every batch is queryable (or 10 s after the load ended)."""
        out = self.ctx.path(f"fresh-load-{self.label}.json")
        assert self.runner is not None
        pids = {"runner": self.runner.pid, "server": server_pid, "poller": None}
        before = {name: _cpu_seconds_of(pid) for name, pid in pids.items() if name != "server" or pid}
        load = subprocess.Popen([sys.executable, "-m", "bench._freshness_load", endpoint, self.stream, str(rate), str(seconds),
                                 str(batch), str(writers), out], cwd=REPO)
        started = time.monotonic()
        seen: Dict[int, float] = {}
        low, intervals, last_ask = 0, [], None
        load_ended = None
        total: Optional[int] = None
        while True:
            asked = time.monotonic()
            if last_ask is not None:
                intervals.append(asked - last_ask)
            last_ask = asked
            rows = self.complete(low, batch) or []
            now = time.time()
            for number, count in rows:
                if count >= batch and number not in seen:
                    seen[number] = now
            while low in seen:
                low += 1
            if load_ended is None and load.poll() is not None:
                load_ended = time.monotonic()
                after = {name: _cpu_seconds_of(pid) for name, pid in pids.items() if name in before}
                if load.returncode:
                    raise RuntimeError(f"the load generator failed ({load.returncode})")
                with open(out) as handle:
                    produced = json.load(handle)
                total = len(produced["batches"])
            if total is not None and (len(seen) >= total or time.monotonic() > load_ended + 10):
                break
            time.sleep(max(0.0, POLL_SECONDS - (time.monotonic() - asked)))
        # where the time went, per batch: put called → its last record emitted by the source (the runner stamps
        # _airbyte_extracted_at when the source emits it, ms) → queryable (committed, then seen by the poller)
        from collection_runner.query_service import ask

        stamps = ask(self.socket_path, {"command": "query", "format": "json",
                                        "sql": f'SELECT "batch", epoch_ms(max(_airbyte_extracted_at)) AS emitted FROM "{self.table}" '
                                               f'WHERE "batch" >= 0 GROUP BY 1'})
        emitted = {row["batch"]: row["emitted"] / 1000 for row in map(json.loads, stamps.get("output", "").splitlines())} if stamps.get("ok") else {}
        window = load_ended - started
        cpu = {name: (after[name] - before[name]) / window for name in before}
        cpu["load generator"] = produced["cpu_seconds"] / window
        batches = produced["batches"]
        # the first second of load meets shards that were idle (polled at most once a second: the source's idle
        # backoff), so its batches measure the transition from idle; the rest measure the steady state
        load_start = min(called for _, called, _ in batches)
        steady = [(b, called) for b, called, _ in batches if called >= load_start + STEADY_AFTER_SECONDS]
        steady_ids = {b for b, _ in steady}
        latencies = sorted(seen[b] - called for b, called in steady if b in seen)
        everything = sorted(seen[b] - called for b, called, _ in batches if b in seen)
        after_ack = sorted(seen[b] - returned for b, _, returned in batches if b in seen and b in steady_ids)
        put_secs = sorted(returned - called for _, called, returned in batches)
        if not everything:
            raise RuntimeError("no batch became queryable")
        to_emit = sorted(emitted[b] - called for b, called, _ in batches if b in emitted and b in seen and b in steady_ids)
        to_query = sorted(seen[b] - emitted[b] for b, _, _ in batches if b in emitted and b in seen and b in steady_ids)
        intervals.sort()
        return {
            "rate": len(batches) * batch / produced["seconds"], "batches": len(batches), "missing": len(batches) - len(everything),
            "failed_records": produced["failed_records"],
            "p50": _pct(latencies, 0.5), "p95": _pct(latencies, 0.95), "max": latencies[-1] if latencies else float("nan"),
            "all_p95": _pct(everything, 0.95), "all_max": everything[-1], "steady_batches": len(steady),
            "ack_p50": _pct(after_ack, 0.5), "ack_p95": _pct(after_ack, 0.95),
            "put_p50": _pct(put_secs, 0.5), "put_p95": _pct(put_secs, 0.95),
            "emit_p50": _pct(to_emit, 0.5), "emit_p95": _pct(to_emit, 0.95),
            "commit_p50": _pct(to_query, 0.5), "commit_p95": _pct(to_query, 0.95),
            "poll_p50_ms": _pct(intervals, 0.5) * 1000, "poll_p95_ms": _pct(intervals, 0.95) * 1000, "cpu": cpu,
        }


def freshness(ctx: Context, section: Section) -> None:
    sys.path.insert(0, REPO)
    import boto3
    from botocore.config import Config

    from integration_tests.kinesis_mock import KinesisMock, create_stream

    default_budget = _source_budget_default()
    budgets = [default_budget] if ctx.smoke else sorted({default_budget, 5.0})
    rates = IN_MEMORY_RATES[:1] if ctx.smoke else IN_MEMORY_RATES
    seconds = 2 if ctx.smoke else IN_MEMORY_SECONDS
    credentials = {"auth_type": "access_keys", "aws_access_key_id": "bench", "aws_secret_access_key": "bench-secret"}
    results: Dict[tuple, dict] = {}

    # -- the in-memory Kinesis, in a process of its own: the server, the load generator and this poller each get a GIL
    fan_out_stream = f"fresh-{FAN_OUT_RATE}-efo"
    server = subprocess.Popen([sys.executable, "-m", "integration_tests.replay", "--max-lifetime-seconds", "1800"]
                              + [arg for budget in budgets for rate in rates for arg in ("--stream", f"fresh-{rate}-{budget:g}:{FRESH_SHARDS}")]
                              + ["--stream", f"{fan_out_stream}:{FRESH_SHARDS}", "--consumer", f"{fan_out_stream}:bench"],
                              cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        endpoint = json.loads(server.stdout.readline())["endpoint_url"]
        client = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                              aws_secret_access_key="bench-secret", config=Config(retries={"total_max_attempts": 1}))
        for budget in budgets:
            for rate in rates:
                stream = f"fresh-{rate}-{budget:g}"
                config = {"credentials": credentials, "region": "us-east-1", "endpoint_url": endpoint, "streams": [stream],
                          "get_records_per_second": budget}
                batch = 100
                writers = max(2, rate // 2_500)
                ctx.log(f"Freshness on the in-memory Kinesis: {rate:,} records/s for {seconds} s, budget {budget:g} GetRecords/s per shard")
                with _FollowRun(ctx, f"mem-{rate}-{budget:g}", config, stream) as run:
                    run.warm_up(client, batch)
                    result = run.measure(endpoint, rate, seconds, batch, writers, server.pid)
                results[("in-memory Kinesis", rate, budget)] = result
                ctx.log(f"  p50 {result['p50']:.3f} s, p95 {result['p95']:.3f} s, max {result['max']:.3f} s at {result['rate']:,.0f} records/s; "
                        f"CPU {', '.join(f'{k} {v * 100:.0f} %' for k, v in result['cpu'].items())}")
        # the same runner reading with enhanced fan-out (SubscribeToShard through a consumer the server registered)
        config = {"credentials": credentials, "region": "us-east-1", "endpoint_url": endpoint, "streams": [fan_out_stream],
                  "read_mode": {"mode": "enhanced_fan_out", "consumer_name": "bench"}}
        ctx.log(f"Freshness on the in-memory Kinesis: {FAN_OUT_RATE:,} records/s for {seconds} s, enhanced fan-out")
        with _FollowRun(ctx, f"mem-{FAN_OUT_RATE}-efo", config, fan_out_stream) as run:
            run.warm_up(client, 100)
            result = run.measure(endpoint, FAN_OUT_RATE, seconds, 100, 2, server.pid)
        results[("in-memory Kinesis", FAN_OUT_RATE, FAN_OUT)] = result
        ctx.log(f"  p50 {result['p50']:.3f} s, p95 {result['p95']:.3f} s, max {result['max']:.3f} s at {result['rate']:,.0f} records/s")
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    # -- kinesis-mock: a second, slower measurement (its put_records slows as its shards fill, so the window is short),
    # and the idle measurement afterwards
    mock_seconds = 3 if ctx.smoke else 8
    emulator = ctx.service("kinesis-mock", lambda: KinesisMock().start(), lambda m: m.stop())
    mock_client = emulator.client()
    name = f"fresh-{int(time.time())}"
    create_stream(mock_client, name, FRESH_SHARDS)
    ctx.log(f"Freshness on kinesis-mock: {MOCK_RATE:,} records/s asked for {mock_seconds} s, budget {default_budget:g} GetRecords/s per shard")
    with _FollowRun(ctx, "kinesis-mock", emulator.source_config([name]), name) as run:
        run.warm_up(mock_client, MOCK_BATCH)
        result = run.measure(emulator.endpoint_url, MOCK_RATE, mock_seconds, MOCK_BATCH, MOCK_WRITERS, None)
        results[("kinesis-mock", MOCK_RATE, default_budget)] = result
        idle = _idle(ctx, run.runner.pid, run.socket_path, 3 if ctx.smoke else IDLE_SECONDS)

    t = Table(["endpoint", "GetRecords/s per shard", "asked records/s", "achieved records/s", "batches", "not seen", "p50 s", "p95 s", "max s",
               "all batches p95 / max s", "p95 s from put returned", "put → emitted p50 / p95 s", "emitted → queryable p50 / p95 s", "put call p50 / p95 s",
               "poll interval p50 / p95 ms",
               "CPU (% of a core): load generator / server / poller / runner"],
              caption=f"Follow freshness: {FRESH_SHARDS} shards, batches of 100 records (~120 bytes each) spread over every shard by "
                      "partition key; latency of a batch = the first answer of the runner's query socket in which all its records "
                      "are queryable − the start of its `put_records` call (and − its return). p50 / p95 / max and the split "
                      f"columns are over the batches put from {STEADY_AFTER_SECONDS:g} s after the load started (the steady state); "
                      "the first second meets shards the source polls at most once a second because they were idle (its idle "
                      "backoff), so the first records can wait up to 1 s more: *all batches* includes them. The harness asks every "
                      f"{POLL_SECONDS * 1000:.0f} ms (the next ask starts 20 ms after the previous one started, or at once if it "
                      "took longer). The per-shard budget is the source's `get_records_per_second` "
                      f"(default {default_budget:g}; Kinesis allows 5 per shard, shared by every consumer). Real Kinesis takes at most "
                      "1,000 records/s per shard: 10,000 records/s needs 10 shards there; here 4 shards take it, so each page carries "
                      "more. CPU is user + system over the load window, as a share of one core (the machine has 2); on kinesis-mock "
                      "the server (a node process) is not counted.")
    for (where, rate, budget), r in results.items():
        cpu = r["cpu"]
        server_cpu = f"{cpu['server'] * 100:.0f}" if "server" in cpu else "–"
        t.add(where, budget if budget == FAN_OUT else f"{budget:g}", rate, r["rate"], r["batches"], r["missing"], r["p50"], r["p95"], r["max"],
              f"{r['all_p95']:.2f} / {r['all_max']:.2f}", r["ack_p95"],
              f"{r['emit_p50']:.2f} / {r['emit_p95']:.2f}", f"{r['commit_p50']:.2f} / {r['commit_p95']:.2f}",
              f"{r['put_p50']:.3f} / {r['put_p95']:.3f}", f"{r['poll_p50_ms']:.0f} / {r['poll_p95_ms']:.0f}",
              f"{cpu['load generator'] * 100:.0f} / {server_cpu} / {cpu['poller'] * 100:.0f} / {cpu['runner'] * 100:.0f}")
    section.tables.append(t)
    cpu_share, commits, idle_seconds = idle
    t = Table(["shards", "idle seconds", "runner CPU s", "share of one core", "commits"],
              caption=f"The kinesis-mock follow runner once the writers stopped and everything was queryable: nothing arrives for "
                      f"{idle_seconds:.0f} s (idle shards are polled at most once a second; the source checkpoints every 0.5 s: the "
                      f"runner's follow tuning of `checkpoint_interval_seconds`). CPU = user + system of the runner process and its source process (/proc); "
                      f"commits = changes of the collection's committed state, polled every second through the query socket.")
    t.add(FRESH_SHARDS, idle_seconds, cpu_share * idle_seconds, f"{cpu_share * 100:.2f} %", commits)
    section.tables.append(t)
    section.targets.append(Target("idle follow, 4 shards: CPU share of one core and commits", f"{cpu_share * 100:.2f} %, {commits} commits over {idle_seconds:.0f} s",
                                  "≤ 2 %, 0 commits", None if ctx.smoke else (cpu_share <= 0.02 and commits == 0)))
    for (where, rate, budget), r in results.items():
        if budget == FAN_OUT:
            met = r["p95"] <= FAN_OUT_TARGET and r["missing"] == 0 and r["rate"] >= 0.95 * rate
            section.targets.append(Target("follow freshness p95 (put → queryable, steady state), in-memory Kinesis, enhanced fan-out",
                                          f"{r['p95']:.2f} s (p50 {r['p50']:.2f} s; all batches p95 {r['all_p95']:.2f} s) at {r['rate']:,.0f} records/s",
                                          f"≤ {FAN_OUT_TARGET:g} s at {rate:,} records/s", None if ctx.smoke else met))
            continue
        if where != "in-memory Kinesis" or rate not in FRESH_TARGETS:
            continue
        goal = FRESH_TARGETS[rate]
        met = r["p95"] <= goal and r["missing"] == 0 and r["rate"] >= 0.95 * rate
        section.targets.append(Target(f"follow freshness p95 (put → queryable, steady state), in-memory Kinesis, {budget:g} GetRecords/s per shard",
                                      f"{r['p95']:.2f} s (p50 {r['p50']:.2f} s; all batches p95 {r['all_p95']:.2f} s) at {r['rate']:,.0f} records/s",
                                      f"≤ {goal:g} s at {rate:,} records/s", None if ctx.smoke else met))


IDLE_SECONDS = 60


def _cpu_seconds(pid: int) -> float:
    """CPU (user + system) of a process and its live children: the runner's is the runner's and its source process's."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime (fields 14 and 15)
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                children = [int(child) for child in handle.read().split()]
        except OSError:
            continue
        for child in children:
            try:
                total += _cpu_seconds(child)
            except OSError:  # ended meanwhile
                pass
    return total


def _idle(ctx: Context, pid: int, socket_path: str, seconds: float) -> tuple:
    """(share of one core, commits) of the follow runner over ``seconds`` in which nothing arrives."""
    from collection_runner.query_service import ask

    def committed() -> Optional[str]:
        response = ask(socket_path, {"command": "query", "format": "json",
                                     "sql": "SELECT max(committed_at)::VARCHAR AS at FROM _collection_state"})
        return json.loads(response["output"].splitlines()[0])["at"] if response.get("ok") else None

    time.sleep(2 * 1.0)  # the checkpoint of the last records (the source's drained checkpoint) goes in first
    seen = {committed()}
    start_cpu, started = _cpu_seconds(pid), time.monotonic()
    while time.monotonic() - started < seconds:
        time.sleep(1.0)
        seen.add(committed())
    cpu = _cpu_seconds(pid) - start_cpu
    elapsed = time.monotonic() - started
    ctx.log(f"  idle follow: {cpu:.2f} s CPU over {elapsed:.0f} s, {len(seen) - 1} commits")
    return cpu / elapsed, len(seen) - 1, elapsed


def run(ctx: Context) -> Section:
    section = Section(TITLE, intro=__doc__.split("\n\n", 1)[1].strip())
    backlog(ctx, section)
    startup(ctx, section)
    freshness(ctx, section)
    return section
