"""Source: CPU per record against a bare boto3 loop, and backlog drain across shards.

Both read from the GetRecords replay server (``integration_tests/replay.py`` behind ``integration_tests/
fault_proxy.py``, on 127.0.0.1): pre-encoded ``ListShards``/``GetShardIterator``/``GetRecords`` responses of
realistic ~150-byte JSON events, served as fast as the socket allows, with optional latency per request.

* **CPU per record**: ``source-kinesis read`` (the console script, stdout to /dev/null) vs ``bench._bare_loop``
  (boto3 with botocore's defaults) over the same responses, each a child process; CPU = user + system time of the
  child (``wait4``). The per-record figure is *marginal*: (CPU at N records − CPU at a 1-record stream) / N, so the
  CDK's ~2 s start-up does not blur the per-record cost; whole-process figures are shown too.
* **Backlog drain**: 8 shards, 30 ms added to every request (an AWS round trip), the source's budget at Kinesis'
  limit (5 calls/s per shard): wall time of reading all 8 shards vs reading one of those shards alone (the
  slowest single shard); also a sequential reader (one shard after the other at the same budget).
* **Enhanced fan-out** on the same data (the server's ``SubscribeToShard``: the same pre-encoded records pushed in
  events of up to 10,000 records / 2 MiB, one subscription per shard over HTTP/1.1 on this plain-http endpoint):
  its CPU per record against the polling source's, and its backlog drain (the 30 ms apply to each subscribe only:
  events are pushed).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import List, Tuple

from .common import Context, Section, Table, Target, interleaved, median

TITLE = "Source: CPU per record and backlog drain"
ORDER = 10
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


FAN_OUT = {"read_mode": {"mode": "enhanced_fan_out", "consumer_name": "bench"}}


def _replay(ctx: Context, name: str, shards: int, per_shard: int, latency: float = 0.0):
    """The replay server with one stream, and an ACTIVE consumer ``bench`` on it (enhanced fan-out reads)."""
    sys.path.insert(0, REPO)
    from integration_tests.fault_proxy import FaultProxy
    from integration_tests.replay import ReplayData, ReplayStream

    data = ReplayData([ReplayStream(name, shards=shards, records_per_shard=per_shard)])
    data.register_consumer(name, "bench")
    data.resubscribe_cooldown_seconds = 0.0  # runs follow each other at once; Kinesis' 5 s would be waited out
    proxy = FaultProxy.replay(data, latency_seconds=latency, max_requests=10_000_000, max_lifetime_seconds=3600)
    return ctx.service(f"replay-{name}", lambda: proxy.start() or proxy, lambda p: p.stop())


def _child_cpu(argv: List[str], env=None) -> Tuple[float, float, bytes]:
    """(wall seconds, CPU seconds, stdout) of a child process."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE if argv[-1] != "--devnull" else subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv[:3]} exited with {os.waitstatus_to_exitcode(status)}")
    return wall, usage.ru_utime + usage.ru_stime, out


EFO_READER = "source-kinesis read, enhanced fan-out"


def _source_files(ctx: Context, name: str, endpoint: str, tag: str = "", **overrides) -> Tuple[str, str]:
    config = {
        "credentials": {"auth_type": "access_keys", "aws_access_key_id": "bench", "aws_secret_access_key": "bench-secret"},
        "region": "us-east-1",
        "endpoint_url": endpoint,
        "streams": [name],
        "get_records_per_second": 5,
        "megabytes_per_second": 2,
    }
    config.update(overrides)
    config_path = ctx.path(f"source-{name}{'-' + tag if tag else ''}.json")
    with open(config_path, "w") as handle:
        json.dump(config, handle)
    catalog_path = ctx.path(f"catalog-{name}.json")
    with open(catalog_path, "w") as handle:
        json.dump({"streams": [{"stream": {"name": name, "json_schema": {}, "supported_sync_modes": ["incremental"]},
                                "sync_mode": "incremental", "destination_sync_mode": "append"}]}, handle)
    return config_path, catalog_path


def _source_read(config: str, catalog: str) -> Tuple[float, float]:
    with open(os.devnull, "wb") as sink:
        started = time.perf_counter()
        proc = subprocess.Popen([os.path.join(BIN, "source-kinesis"), "read", "--config", config, "--catalog", catalog], stdout=sink, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("source-kinesis read failed")
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def _bare(endpoint: str, name: str, *extra: str) -> Tuple[float, float, int]:
    wall, cpu, out = _child_cpu([sys.executable, "-m", "bench._bare_loop", endpoint, name, *extra])
    return wall, cpu, int(out.strip() or 0)


def cpu_per_record(ctx: Context, section: Section) -> None:
    shards = 4
    per_shard = ctx.size(60_000, 200)
    total = shards * per_shard
    big = _replay(ctx, "cpu", shards, per_shard)
    tiny = _replay(ctx, "cpu-tiny", 1, 1)
    big_cfg = _source_files(ctx, "cpu", big.endpoint_url)
    tiny_cfg = _source_files(ctx, "cpu-tiny", tiny.endpoint_url)
    big_efo = _source_files(ctx, "cpu", big.endpoint_url, tag="efo", **FAN_OUT)
    tiny_efo = _source_files(ctx, "cpu-tiny", tiny.endpoint_url, tag="efo", **FAN_OUT)
    ctx.log(f"CPU per record: {total:,} records, {shards} shards")
    results = {}

    def measure(kind: str):
        def run() -> float:
            if kind == "source":
                wall, cpu = _source_read(*big_cfg)
                _, base = _source_read(*tiny_cfg)
            elif kind == "fan-out":
                wall, cpu = _source_read(*big_efo)
                _, base = _source_read(*tiny_efo)
            else:
                wall, cpu, count = _bare(big.endpoint_url, "cpu")
                assert count == total, f"bare loop read {count} of {total}"
                _, base, _ = _bare(tiny.endpoint_url, "cpu-tiny")
            results.setdefault(kind, []).append((wall, cpu, base))
            return (cpu - base) / total * 1e6
        return run

    marginal = interleaved(ctx, [("bare boto3 loop", measure("bare")), ("source-kinesis read", measure("source")),
                                 (EFO_READER, measure("fan-out"))])
    table = Table(["reader", "records", "marginal CPU µs/record (median)", "whole-process CPU s", "start-up CPU s", "wall s", "records/s (wall)"],
                  caption="Child-process CPU (user+system). Marginal = (CPU at N − CPU on a 1-record stream) / N.")
    for label, kind in (("bare boto3 loop", "bare"), ("source-kinesis read", "source"), (EFO_READER, "fan-out")):
        runs = results[kind]
        wall = median(r[0] for r in runs)
        table.add(label, total, median(marginal[label]), median(r[1] for r in runs), median(r[2] for r in runs), wall, total / wall)
    section.tables.append(table)
    ratio = median(marginal["source-kinesis read"]) / median(marginal["bare boto3 loop"])
    whole = median(r[1] for r in results["source"]) / median(r[1] for r in results["bare"])
    section.targets.append(Target("source CPU per record vs bare boto3 loop", f"{ratio:.2f}× (whole process: {whole:.2f}×)", "≤ 1.3×", None if ctx.smoke else ratio <= 1.3))
    efo = median(marginal[EFO_READER]) / median(marginal["source-kinesis read"])
    section.targets.append(Target("enhanced fan-out CPU per record vs the polling source's (same records)",
                                  f"{efo:.2f}× ({median(marginal[EFO_READER]):.1f} vs {median(marginal['source-kinesis read']):.1f} µs/record)",
                                  "≤ 1.3×", None if ctx.smoke else efo <= 1.3))


def backlog_drain(ctx: Context, section: Section) -> None:
    shards = 8
    per_shard = ctx.size(10_000, 100)
    latency = 0.03
    limit = 500 if not ctx.smoke else 20
    eight = _replay(ctx, "drain8", shards, per_shard, latency)
    one = _replay(ctx, "drain1", 1, per_shard, latency)
    eight_cfg = _source_files(ctx, "drain8", eight.endpoint_url, records_per_call=limit)
    one_cfg = _source_files(ctx, "drain1", one.endpoint_url, records_per_call=limit)
    eight_efo = _source_files(ctx, "drain8", eight.endpoint_url, tag="efo", **FAN_OUT)
    one_efo = _source_files(ctx, "drain1", one.endpoint_url, tag="efo", **FAN_OUT)
    ctx.log(f"Backlog drain: {shards} shards x {per_shard:,} records, {latency * 1000:.0f} ms per request, {limit} records per call")
    walls = interleaved(ctx, [
        ("one shard alone", lambda: _source_read(*one_cfg)[0]),
        ("8 shards, source-kinesis", lambda: _source_read(*eight_cfg)[0]),
        ("one shard alone, enhanced fan-out", lambda: _source_read(*one_efo)[0]),
        ("8 shards, enhanced fan-out", lambda: _source_read(*eight_efo)[0]),
    ])
    sequential, _, count = _bare(eight.endpoint_url, "drain8", "--limit", str(limit), "--calls-per-second", "5")
    assert count == shards * per_shard
    table = Table(["reader", "shards", "records", "wall s (median)", "records/s"],
                  caption=f"30 ms added to every request; budget 5 GetRecords/s per shard; {limit} records per call.")
    single = median(walls["one shard alone"])
    multi = median(walls["8 shards, source-kinesis"])
    table.add("source-kinesis, one shard alone", 1, per_shard, single, per_shard / single)
    table.add("source-kinesis, 8 shards", shards, shards * per_shard, multi, shards * per_shard / multi)
    table.add("sequential reader (bare loop, shard after shard, same budget; 1 run)", shards, shards * per_shard, sequential, shards * per_shard / sequential)
    efo_single = median(walls["one shard alone, enhanced fan-out"])
    efo_multi = median(walls["8 shards, enhanced fan-out"])
    table.add("source-kinesis enhanced fan-out, one shard alone", 1, per_shard, efo_single, per_shard / efo_single)
    table.add("source-kinesis enhanced fan-out, 8 shards", shards, shards * per_shard, efo_multi, shards * per_shard / efo_multi)
    section.tables.append(table)
    ratio = multi / single
    section.targets.append(Target("backlog drain, 8 shards vs the slowest single shard", f"{ratio:.2f}×", "≤ 1.3×", None if ctx.smoke else ratio <= 1.3))
    section.targets.append(Target("enhanced fan-out backlog drain, 8 shards: vs its single shard / vs polling's 8 shards (wall)",
                                  f"{efo_multi / efo_single:.2f}× / {efo_multi / multi:.2f}×", "reported", None))


def run(ctx: Context) -> Section:
    section = Section(TITLE, intro=__doc__.split("\n\n", 1)[1].strip())
    cpu_per_record(ctx, section)
    backlog_drain(ctx, section)
    return section
