"""End to end: the runner draining a backlog, and its freshness in follow mode.

* **Backlog**: ``kinesis-collection sync`` (source and destination in one process) from the replay server (4 shards)
  into a fresh DuckDB collection (``append_dedup`` on the Kinesis primary key), records/s of the whole run; beside it
  the same data through a piped sync (``source-kinesis read | destination-collection write``).
* **Freshness**: ``kinesis-collection follow`` on kinesis-mock (4 shards, the source's default budget of 2
  GetRecords/s per shard) while two writers each put a batch of 100 records every 200 ms for 8 s (1,000 records/s
  when the emulator keeps up; the achieved rate is reported); every 100 ms the benchmark asks the runner (through its query socket, as
  ``kinesis-collection query`` does) which batches are complete. Latency of a batch = first time all its records are
  queryable − time its ``put_records`` was called (the target's measure), and − time it returned (the records are in
  the stream: what the connector controls). p50 and p95 over all batches.
* **Start-up**: exec to the first GetRecords the replay server receives, for ``source-kinesis read``,
  ``kinesis-collection sync`` and a bare boto3 loop (warm bytecode, ``--catalog`` given, access keys, no latency).
* **Idle**: the same runner afterwards, while nothing arrives for 60 s: its CPU (user + system, /proc) as a share of
  one core, and its commits (changes of the committed state, polled every second through the query socket).
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, Optional

from .common import Context, Section, Table, Target, interleaved, median
from .source import BIN, REPO, _replay, _source_files

TITLE = "End to end: runner backlog and follow-mode freshness"
ORDER = 40
WRITERS = 2  # concurrent put_records callers: kinesis-mock answers a put in 0.2–0.5 s under load
BATCH = 100  # records per put_records call (and per latency sample)
PK = [["_kinesis_shard_id"], ["_kinesis_sequence_number"], ["_kinesis_sub_sequence_number"]]


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

    def runner() -> float:
        destination = _destination(ctx, "runner")
        started = time.perf_counter()
        subprocess.run([os.path.join(BIN, "kinesis-collection"), "sync", "--source", source_cfg, "--destination", destination,
                        "--catalog", catalog], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return total / (time.perf_counter() - started)

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

    rates = interleaved(ctx, [("kinesis-collection sync (one process)", runner), ("source-kinesis read | destination-collection write", piped)])
    table = Table(["pipeline", "records", "records/s (median, whole run incl. start-up)"],
                  caption="Replay server on 127.0.0.1, 4 shards of ~150-byte JSON events, DuckDB append_dedup.")
    for label, values in rates.items():
        table.add(label, total, median(values))
    section.tables.append(table)


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


def freshness(ctx: Context, section: Section) -> None:
    sys.path.insert(0, REPO)
    from collection_runner.locking import read_holder
    from collection_runner.query_service import ask
    from integration_tests.kinesis_mock import KinesisMock, create_stream

    # kinesis-mock's put_records slows as its shards fill (below 1,000 records/s past ~2k records per shard here), so
    # the window is short enough for the emulator to keep up with the target rate
    seconds = 3 if ctx.smoke else 8
    emulator = ctx.service("kinesis-mock", lambda: KinesisMock().start(), lambda m: m.stop())
    client = emulator.client()
    name = f"fresh-{int(time.time())}"
    create_stream(client, name, 4)
    source = ctx.path("source-fresh.json")
    with open(source, "w") as handle:
        json.dump(emulator.source_config([name]), handle)
    destination = _destination(ctx, "fresh")
    db = json.load(open(destination))["store"]["path"]
    log = open(ctx.path("follow-runner.log"), "w")
    runner = subprocess.Popen([os.path.join(BIN, "kinesis-collection"), "follow", "--source", source, "--destination", destination],
                              stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 60
        holder = None
        while time.monotonic() < deadline and not (holder and holder.get("socket")):
            time.sleep(0.2)
            holder = read_holder(db)
        if not holder or not holder.get("socket"):
            raise RuntimeError("the runner did not start")
        socket_path = holder["socket"]
        sent: Dict[int, float] = {}  # when put_records was called
        acked: Dict[int, float] = {}  # when it returned (the records are in the stream)
        seen: Dict[int, float] = {}

        counter = itertools.count()
        lock = threading.Lock()

        def writer() -> None:
            # WRITERS writers, each putting BATCH records every WRITERS × BATCH ms: 1,000 records/s when the emulator keeps
            # up (kinesis-mock's put_records slows as shards fill; the achieved rate is reported).
            next_at = time.monotonic()
            end = next_at + seconds
            while time.monotonic() < end:
                with lock:
                    batch = next(counter)
                started = time.time()
                records = [{"Data": json.dumps({"batch": batch, "i": i}).encode(), "PartitionKey": f"b{batch}-{i}"} for i in range(BATCH)]
                client.put_records(StreamName=name, Records=records)
                acked[batch] = time.time()
                sent[batch] = started
                next_at += WRITERS * BATCH / 1000
                time.sleep(max(0.0, next_at - time.monotonic()))

        threads = [threading.Thread(target=writer, daemon=True) for _ in range(WRITERS)]
        write_started = time.monotonic()
        for thread in threads:
            thread.start()

        def all_written() -> bool:
            return not any(t.is_alive() for t in threads)

        from destination_collection.naming import table_name as collection_table

        table = collection_table("", name)
        poll_until = None
        write_seconds = 0.0
        while True:
            now = time.time()
            response = ask(socket_path, {"command": "query", "format": "json", "sql": f'SELECT "batch", count(*) AS n FROM "{table}" GROUP BY 1'})
            if response.get("ok"):
                for line in response["output"].splitlines():
                    row = json.loads(line)
                    if row["n"] >= BATCH and row["batch"] not in seen:
                        seen[row["batch"]] = now
            if all_written():
                poll_until = poll_until or time.monotonic() + 10
                write_seconds = write_seconds or time.monotonic() - write_started
                if len(seen) >= len(sent) or time.monotonic() > poll_until:
                    break
            time.sleep(0.1)
        idle = _idle(ctx, runner.pid, socket_path, 3 if ctx.smoke else IDLE_SECONDS)
    finally:
        runner.terminate()
        try:
            runner.wait(timeout=60)
        except subprocess.TimeoutExpired:
            runner.kill()
            runner.wait()
        log.close()
    latencies = sorted(seen[b] - sent[b] for b in seen if b in sent)
    missing = len(sent) - len(latencies)
    if not latencies:
        raise RuntimeError("no batch became queryable")
    after_ack = sorted(seen[b] - acked[b] for b in seen if b in acked)
    put_secs = sorted(acked[b] - sent[b] for b in acked)

    def pct(values: list, q: float) -> float:
        return values[min(len(values) - 1, int(len(values) * q))]

    p50, p95 = pct(latencies, 0.5), pct(latencies, 0.95)
    rate = len(sent) * BATCH / write_seconds
    t = Table(["measured from", "writer rate (records/s)", "batches", "not seen in time", "p50 latency s", "p95 latency s", "max s"],
              caption="→ queryable through the runner; polled every 100 ms (adds up to 0.1 s). The put_records call itself "
                      f"took p50 {pct(put_secs, 0.5):.2f} s / p95 {pct(put_secs, 0.95):.2f} s on kinesis-mock (AWS: tens of ms).")
    t.add("put_records called", rate, len(sent), missing, p50, p95, latencies[-1])
    t.add("put_records returned", rate, len(sent), missing, pct(after_ack, 0.5), pct(after_ack, 0.95), after_ack[-1])
    section.tables.append(t)
    cpu_share, commits, idle_seconds = idle
    t = Table(["shards", "idle seconds", "runner CPU s", "share of one core", "commits"],
              caption=f"The same follow runner once the writers stopped and everything was queryable: nothing arrives for "
                      f"{idle_seconds:.0f} s (the source polls each shard and checkpoints every 0.5 s: the runner's follow tuning "
                      f"of `checkpoint_interval_seconds`). CPU = user + system of the runner process (/proc); commits = changes of the "
                      f"collection's committed state, polled every second through the query socket.")
    t.add(4, idle_seconds, cpu_share * idle_seconds, f"{cpu_share * 100:.2f} %", commits)
    section.tables.append(t)
    section.targets.append(Target("idle follow, 4 shards: CPU share of one core and commits", f"{cpu_share * 100:.2f} %, {commits} commits over {idle_seconds:.0f} s",
                                  "≤ 2 %, 0 commits", None if ctx.smoke else (cpu_share <= 0.02 and commits == 0)))
    section.targets.append(Target("follow freshness p95 (put → queryable)", f"{p95:.2f} s (p50 {p50:.2f} s) at {rate:,.0f} records/s", "≤ 2 s at 1,000 records/s",
                                  None if ctx.smoke else (p95 <= 2.0 and missing == 0 and rate >= 950)))


IDLE_SECONDS = 60


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime (fields 14 and 15)


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
