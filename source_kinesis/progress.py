"""Progress a user can see: per-shard log lines at a bounded rate, and a summary per stream at the end.

Only the emitting thread logs (readers just count), so log lines never interleave with records on stdout.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

from source_kinesis.shard_reader import ShardStats

MAX_LINES_PER_REPORT = 50


@dataclass
class ShardProgress:
    stream: str
    shard_id: str
    stats: ShardStats
    emitted: int = 0
    reported_emitted: int = 0
    done: str = ""  # why the shard stopped in this sync, once it has


@dataclass
class ProgressReporter:
    logger: logging.Logger
    interval: float = 30.0
    clock: Callable[[], float] = time.monotonic
    shards: Dict[tuple, ShardProgress] = field(default_factory=dict)
    _last: float = field(default=0.0)

    def __post_init__(self) -> None:
        self._last = self.clock()

    def track(self, stream: str, shard_id: str, stats: ShardStats) -> ShardProgress:
        progress = self.shards.get((stream, shard_id))
        if progress is None:
            progress = self.shards[(stream, shard_id)] = ShardProgress(stream, shard_id, stats)
        else:
            progress.stats = stats  # a shard restarted in follow mode keeps its counts of emitted records
        return progress

    @staticmethod
    def line(p: ShardProgress) -> str:
        s = p.stats
        lag = "unknown" if s.millis_behind is None else f"{s.millis_behind} ms"
        return (
            f"stream '{p.stream}' shard {p.shard_id}: {p.emitted} records emitted (+{p.emitted - p.reported_emitted}), "
            f"{s.bytes / 1e6:.2f} MB read in {s.calls} {s.unit}{s.extra()}, lag {lag}, "
            f"{s.retry.throttles} throttles, {s.retry.retries} retries, {s.iterator_refreshes} iterator refreshes"
            + (f", done: {p.done}" if p.done else "")
        )

    def maybe_log(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        changed = [p for p in self.shards.values() if p.emitted != p.reported_emitted or p.stats.calls]
        for p in changed[:MAX_LINES_PER_REPORT]:
            self.logger.info(self.line(p))
            p.reported_emitted = p.emitted
        if len(changed) > MAX_LINES_PER_REPORT:
            self.logger.info(f"... and {len(changed) - MAX_LINES_PER_REPORT} more shards")

    def summary(self, stream: str, decode_counts: Optional[Dict[str, Counter]] = None, seconds: Optional[float] = None) -> str:
        mine = [p for p in self.shards.values() if p.stream == stream]
        total = Counter()
        for p in mine:
            total["records"] += p.emitted
            total["bytes"] += p.stats.bytes
            total["calls"] += p.stats.calls
            total["throttles"] += p.stats.retry.throttles
            total["retries"] += p.stats.retry.retries
            total["iterator_refreshes"] += p.stats.iterator_refreshes
        decoded = Counter()
        for counts in (decode_counts or {}).values():
            decoded.update(counts)
        text = (
            f"Summary for stream '{stream}': {total['records']} records from {len(mine)} shards, "
            f"{total['bytes'] / 1e6:.2f} MB in {total['calls']} {mine[0].stats.unit if mine else 'GetRecords calls'}, {total['throttles']} throttles, "
            f"{total['retries']} retries, {total['iterator_refreshes']} iterator refreshes"
        )
        if seconds is not None:
            text += f", {seconds:.1f} s"
        if decoded:
            text += ", " + ", ".join(f"{k}: {v}" for k, v in sorted(decoded.items()))
        per_shard = "; ".join(
            f"{p.shard_id}: {p.emitted} records"
            + (f" ({', '.join(f'{k} {v}' for k, v in sorted(decode_counts[p.shard_id].items()))})" if decode_counts and decode_counts.get(p.shard_id) else "")
            for p in sorted(mine, key=lambda p: p.shard_id)
        )
        return text + (f". Per shard: {per_shard}" if per_shard else "")
