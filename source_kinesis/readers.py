"""What the orchestrator and the pool need of a shard reader, and which reader a sync uses.

A reader reads one shard and is polled by the pool (``shard_pool.py``), never twice at once; each poll returns one of
the result kinds of ``shard_reader.py`` (``Page``, ``StopRuleMet``, ``ShardEnded``, ``ShardGone``, ``ReadFailed``).
It never raises, never logs and never touches the state: the orchestrator does all of that on its own thread.

``StreamReaders`` is the one place that decides how a stream's shards are read (``read_mode``): polling with
GetRecords (``shard_reader.ShardReader``) or enhanced fan-out with SubscribeToShard (``fanout_reader.FanOutReader``,
through the consumer ``consumers.py`` finds or registers once per stream at the start of a sync). The orchestrator and
the pool are the same for both.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Callable, Optional, Protocol

from source_kinesis.config import SourceConfig
from source_kinesis.consumers import resolve_consumer
from source_kinesis.fanout_reader import FanOutReader
from source_kinesis.kinesis_api import KinesisStream
from source_kinesis.shard_reader import Page, ShardReader, ShardStats, StartPosition
from source_kinesis.throttling import ShardBudget


class Reader(Protocol):
    stream: str
    shard_id: str
    stats: ShardStats
    cancelled: bool  # set by the orchestrator when the stream fails: its pages are dropped, it is polled no more
    action: str  # the Kinesis call that reads ("GetRecords", "SubscribeToShard"), named in errors

    def next_due(self) -> float:
        """When the pool may poll it next (its budget's next call time)."""

    def attach(self, wake: Callable[[], None]) -> None:
        """The pool's ``wake``: a reader whose data is pushed calls it when data arrives (polling readers ignore it)."""

    def poll(self) -> Page:
        """One step of reading; never raises."""

    def close(self) -> None:
        """Nothing more will be read (the shard left READING): release what the reader holds (a subscription)."""


class StreamReaders:
    """Opens the readers of one stream's shards for one sync, in the configured read mode."""

    def __init__(self, config: SourceConfig, client: Any, stream: KinesisStream, *, consumer_arn: Optional[str], clock: Callable[[], float]) -> None:
        self.config = config
        self.client = client
        self.stream = stream
        self.consumer_arn = consumer_arn  # set in enhanced fan-out mode
        self.clock = clock

    @classmethod
    def prepare(cls, config: SourceConfig, client: Any, stream: KinesisStream, logger: logging.Logger, *, clock: Callable[[], float]) -> "StreamReaders":
        """The stream's readers; in enhanced fan-out mode its consumer is found (or registered) and ACTIVE first."""
        consumer_arn = None
        if config.fan_out is not None:
            consumer_arn = resolve_consumer(client, config.fan_out, stream, logger, retry_budget_seconds=config.retry_budget_seconds, clock=clock)
            logger.info(f"Stream '{stream.name}': reading with enhanced fan-out through consumer {consumer_arn}")
        return cls(config, client, stream, consumer_arn=consumer_arn, clock=clock)

    def open(self, shard_id: str, start: StartPosition, *, follow: bool, sync_started_at: dt.datetime) -> Reader:
        """The reader of one shard, from ``start``."""
        config = self.config
        if self.consumer_arn is not None:
            return FanOutReader(
                self.client,
                self.stream.name,
                self.consumer_arn,
                shard_id,
                start,
                retry_budget_seconds=config.retry_budget_seconds,
                follow=follow,
                sync_started_at=sync_started_at,
                stale_policy=config.stale_checkpoint,
                clock=self.clock,
            )
        return ShardReader(
            self.client,
            self.stream.name,
            self.stream.api_ref,
            shard_id,
            start,
            budget=ShardBudget(config.get_records_per_second, config.megabytes_per_second, clock=self.clock),
            records_per_call=config.records_per_call,
            retry_budget_seconds=config.retry_budget_seconds,
            follow=follow,
            sync_started_at=sync_started_at,
            stale_policy=config.stale_checkpoint,
            clock=self.clock,
        )
