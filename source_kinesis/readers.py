"""What the orchestrator and the pool need of a shard reader, and which reader a sync uses.

A reader reads one shard and is polled by the pool (``shard_pool.py``), never twice at once; each poll returns one of
the result kinds of ``shard_reader.py`` (``Page``, ``StopRuleMet``, ``ShardEnded``, ``ShardGone``, ``ReadFailed``).
It never raises, never logs and never touches the state: the orchestrator does all of that on its own thread.
``open_reader`` is the one place that decides how a shard is read: today polling with GetRecords
(``ShardReader``); a second kind (enhanced fan-out, ``SubscribeToShard``) would be another class with this interface,
chosen here, with no change to the orchestrator or the pool.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Callable, Mapping, Protocol

from source_kinesis.config import SourceConfig
from source_kinesis.shard_reader import Page, ShardReader, ShardStats, StartPosition
from source_kinesis.throttling import ShardBudget


class Reader(Protocol):
    stream: str
    shard_id: str
    stats: ShardStats
    cancelled: bool  # set by the orchestrator when the stream fails: its pages are dropped, it is polled no more

    def next_due(self) -> float:
        """When the pool may poll it next (its budget's next call time)."""

    def poll(self) -> Page:
        """One step of reading; never raises."""


def open_reader(
    config: SourceConfig,
    client: Any,
    stream: str,
    stream_ref: Mapping[str, str],
    shard_id: str,
    start: StartPosition,
    *,
    follow: bool,
    sync_started_at: dt.datetime,
    clock: Callable[[], float],
) -> Reader:
    """The reader of one shard, from ``start``, under the config's per-shard budget and retry budget."""
    return ShardReader(
        client,
        stream,
        stream_ref,
        shard_id,
        start,
        budget=ShardBudget(config.get_records_per_second, config.megabytes_per_second, clock=clock),
        records_per_call=config.records_per_call,
        retry_budget_seconds=config.retry_budget_seconds,
        follow=follow,
        sync_started_at=sync_started_at,
        stale_policy=config.stale_checkpoint,
        clock=clock,
    )
