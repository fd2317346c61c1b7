"""Runs a sync over every configured stream at once: the emitting thread of the architecture.

Readers (``shard_reader.py``) poll shards on the pool's threads (``shard_pool.py``) and hand pages over one bounded
queue. This module, on the caller's thread only, decodes each page, emits the records, advances that shard's
position, decides lineage (a child starts once all its parents are finished), and checkpoints every N records and
every T seconds (also while idle). All state lives here, so a checkpoint never covers a record not yet emitted.

Bounded mode (Airbyte ``read``) ends when every shard met its stop rule, or at the optional max duration. Follow
mode (the runner) keeps reading until ``stop_event`` is set, refreshing the shard list to pick up resharding.
"""
from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Set

from airbyte_cdk.models import (
    AirbyteMessage,
    AirbyteRecordMessage,
    AirbyteStateBlob,
    AirbyteStateMessage,
    AirbyteStateType,
    AirbyteStreamState,
    AirbyteStreamStatus,
    FailureType,
    StreamDescriptor,
    Type,
)
from airbyte_cdk.utils.stream_status_utils import as_airbyte_message as stream_status_message
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_kinesis.config import SourceConfig
from source_kinesis.deadlines import Stopped, guarded
from source_kinesis.decoding import PayloadDecoder
from source_kinesis.discovery import KinesisStream
from source_kinesis.errors import MalformedResponse, translate
from source_kinesis.kinesis_api import list_shards
from source_kinesis.lineage import ShardGraph
from source_kinesis.progress import ProgressReporter
from source_kinesis.readers import StreamReaders
from source_kinesis.records import arrival_iso, build_record
from source_kinesis.shard_lifecycle import Shard, ShardStatus
from source_kinesis.shard_pool import ShardPool
from source_kinesis.shard_reader import Page, ReadFailed, ShardEnded, ShardGone, StartPosition, StopRuleMet
from source_kinesis.stale_checkpoints import StaleCheckpointRule
from source_kinesis.state import ShardState, StreamState, iso_ms, parse_iso

FOLLOW_SHARD_REFRESH_SECONDS = 30.0
# Follow mode: once the emitter has caught up (no page waiting), records emitted since the last checkpoint are
# checkpointed at once, so the runner commits them without waiting for checkpoint_interval_seconds. At once means:
# as soon as no GetRecords is in flight either (shards polled in step return their pages within milliseconds of each
# other: checkpointing after the first one held the others' records back a whole spacing), at most every
# FOLLOW_SETTLED_CHECKPOINT_SECONDS; and, while calls are in flight, at most FOLLOW_DRAINED_CHECKPOINT_SECONDS after
# the last checkpoint that covered records (a periodic checkpoint of an idle stream does not count), so a trickle of
# small pages doesn't become a commit per page. The emitter wakes for these times instead of waiting for the next
# page: with the shards polled in step (every 0.5 s at 2 calls/s) the next page is a whole poll interval away, and
# a periodic checkpoint sent just before a page held its records back ~0.5 s (the freshness benchmark, 1,000
# records/s on 4 shards at 2 calls/s: put → state p50 0.78 s before, 0.35 s after; the state now follows the
# round's last record by ~0.03 s instead of ~0.48 s).
FOLLOW_SETTLED_CHECKPOINT_SECONDS = 0.05
FOLLOW_DRAINED_CHECKPOINT_SECONDS = 0.2


@dataclass
class StreamRun:
    """Everything the emitting thread knows about one stream during a sync."""

    info: KinesisStream
    state: StreamState
    decoder: PayloadDecoder
    readers: StreamReaders  # opens its shards' readers in the configured read mode
    initial: bool = False  # first sync of this stream: listed shards get the configured start position
    graph: ShardGraph = field(default_factory=ShardGraph)
    # every shard this sync knows, with its status (shard_lifecycle.py); kept when the state drops a finished one
    shards: Dict[str, Shard] = field(default_factory=dict)
    records_since_checkpoint: int = 0
    last_checkpoint: float = 0.0
    last_records_checkpoint: float = 0.0  # the last checkpoint that covered new records (the drained checkpoints' pace)
    running_sent: bool = False
    done: bool = False
    started_monotonic: float = 0.0

    @property
    def name(self) -> str:
        return self.info.name

    def know(self, shard_id: str) -> Shard:
        """The shard, registered with its state's position (a new shard gets a fresh position in the state)."""
        shard = self.shards.get(shard_id)
        if shard is None:
            position = self.state.shards.get(shard_id)
            if position is None:
                info = self.graph.shards.get(shard_id)
                position = self.state.shards[shard_id] = ShardState(parents=list(info.parents) if info else [])
            shard = self.shards[shard_id] = Shard(shard_id, position)
        return shard

    def ended(self) -> Set[str]:
        """Ids of shards nothing more will be read of (finished or gone): a child waits for its parents to be here."""
        return {shard_id for shard_id, shard in self.shards.items() if shard.ended}

    def reading(self) -> List[Shard]:
        return [shard for shard in self.shards.values() if shard.status is ShardStatus.READING]


class Orchestrator:
    def __init__(
        self,
        config: SourceConfig,
        client: Any,
        logger: logging.Logger,
        *,
        follow: bool = False,
        stop_event: Optional[threading.Event] = None,
        progress_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
    ) -> None:
        self.config = config
        self.stale_rule = StaleCheckpointRule(config.stale_checkpoint)
        self.logger = logger
        self.follow = follow
        self.stop_event = stop_event or threading.Event()
        # Set when this run shuts down (stop request, max duration, the end, the consumer closing us): every call
        # in flight or in backoff is abandoned at once instead of at its deadline.
        self._halt = threading.Event()
        self.client = guarded(client, self.stop_event, self._halt)
        self.clock = clock
        self.now = now
        self.progress = ProgressReporter(logger, interval=progress_interval, clock=clock)
        self.failures: List[AirbyteTracedException] = []
        self.runs: Dict[str, StreamRun] = {}
        self.sync_started_at = now()
        workers = config.max_parallel_shards
        self.queue: "queue.Queue[Page]" = queue.Queue(maxsize=max(4, 2 * workers))
        self.pool: Optional[ShardPool] = None
        self._workers = workers
        self._stopping = False

    # ------------------------------------------------------------------------------------------------ driver
    def run(
        self,
        names: List[str],
        resolve: Callable[[str], KinesisStream],
        states: Mapping[str, Optional[Mapping[str, Any]]],
    ) -> Iterator[AirbyteMessage]:
        """Read every stream; yields records, states and stream-status/error traces.

        ``resolve`` turns a stream name into its description (DescribeStream); a failure there fails that stream
        only, as any other error does: the other streams go on and the sync ends with an error naming it.
        """
        self.sync_started_at = self.now()
        started = self.clock()
        deadline = started + self.config.max_sync_duration_seconds if (self.config.max_sync_duration_seconds and not self.follow) else None
        self.pool = ShardPool(self._workers, self.queue, clock=self.clock)
        try:
            for name in names:
                if self.stop_event.is_set():
                    break
                yield stream_status_message(StreamDescriptor(name=name), AirbyteStreamStatus.STARTED)
                try:
                    run = self._prepare(resolve(name), states.get(name))
                except Stopped:
                    break
                except AirbyteTracedException as exc:
                    yield from self._fail_before_start(name, exc)
                    continue
                self.runs[name] = run
                yield self._state_message(run)
                yield from self._activate_ready(run)
            next_refresh = self.clock() + FOLLOW_SHARD_REFRESH_SECONDS
            while any(not run.done for run in self.runs.values()):
                if self.stop_event.is_set():
                    self.logger.info("Stop requested: finishing the pages already read, then checkpointing.")
                    break
                if deadline is not None and self.clock() >= deadline:
                    self.logger.info(
                        f"Reached the maximum sync duration ({self.config.max_sync_duration_seconds} s): checkpointing; "
                        "the next sync continues from here."
                    )
                    break
                try:
                    page = self.queue.get(timeout=self._wait_time())
                except queue.Empty:
                    page = None
                if page is not None:
                    yield from self._handle(page)
                if self.follow and self.queue.empty():
                    yield from self._caught_up()
                yield from self._periodic()
                if self.follow and self.clock() >= next_refresh:
                    next_refresh = self.clock() + FOLLOW_SHARD_REFRESH_SECONDS
                    yield from self._refresh_shards()
            yield from self._shutdown()
        finally:
            self._halt.set()
            for run in self.runs.values():  # a fan-out reader still reading ends its subscription
                for shard in run.reading():
                    if shard.reader is not None:
                        shard.reader.close()
            if self.pool is not None:
                self.pool.stop()
                self.pool.join(timeout=5)
        if self.failures:
            first = self.failures[0]
            names = ", ".join(sorted({f.stream_descriptor.name for f in self.failures if f.stream_descriptor}))
            raise AirbyteTracedException(
                message=f"Syncing failed for stream(s) {names}: {first.message}",
                internal_message=first.internal_message,
                failure_type=first.failure_type or FailureType.system_error,
            )

    def _wait_time(self) -> float:
        due = min((run.last_checkpoint + self.config.checkpoint_interval_seconds for run in self.runs.values() if not run.done), default=1.0)
        if self.follow:  # records waiting for the drained checkpoint (see FOLLOW_DRAINED_CHECKPOINT_SECONDS)
            spacing = self._drained_spacing()
            due = min([due] + [run.last_records_checkpoint + spacing for run in self.runs.values()
                               if not run.done and run.records_since_checkpoint])
        return min(0.5, max(0.01, due - self.clock()))

    # -------------------------------------------------------------------------------------------- preparation
    def _prepare(self, info: KinesisStream, raw_state: Optional[Mapping[str, Any]]) -> StreamRun:
        stale = self.stale_rule
        state = StreamState.from_dict(raw_state, info.name)
        initial = state is None
        if state is not None and (state.stream_arn, state.stream_created_at) != (info.arn, info.created_at):
            message = (
                f"Stream '{info.name}' was deleted and re-created (saved: {state.stream_arn} created {state.stream_created_at}; "
                f"now: {info.arn} created {info.created_at}); the saved checkpoints belong to the old stream"
            )
            refusal = stale.refusal(message, reset="Reset the stream's state to read the new stream")
            if refusal is not None:
                raise refusal
            self.logger.warning(stale.warning(message, "reading the new stream from TRIM_HORIZON."))
            state = None
        if state is None:
            state = StreamState(stream_arn=info.arn, stream_created_at=info.created_at)
        decoder = PayloadDecoder(info.name, self.config.format_for(info.name), self.config.on_bad_record, self.logger)
        readers = StreamReaders.prepare(self.config, self.client, info, self.logger, clock=self.clock)
        run = StreamRun(info=info, state=state, decoder=decoder, readers=readers, initial=initial, started_monotonic=self.clock())
        run.last_checkpoint = self.clock()
        listed = list_shards(self.client, info.api_ref, info.name, self.config.retry_budget_seconds)
        run.graph.add_listed(listed)
        for shard_id, shard in list(state.shards.items()):
            if shard_id in run.graph.listed or shard.finished:
                continue
            lost = (
                f"records after sequence number {shard.sequence_number} were lost"
                if shard.sequence_number
                else "none of its records had been read"
            )
            message = f"Shard {shard_id} of stream '{info.name}' was trimmed by retention before it was read to its end; {lost}"
            refusal = stale.refusal(message)
            if refusal is not None:
                raise refusal
            self.logger.warning(stale.warning(message, "continuing with its children."))
            del state.shards[shard_id]
        dropped = state.prune(run.graph.listed)
        if dropped:
            self.logger.info(f"Stream '{info.name}': {len(dropped)} finished shards left the state after retention trimmed them: {', '.join(dropped)}")
        start_at = None
        if initial and self.config.start_position == "LATEST":
            start_at = iso_ms(self.sync_started_at)
        elif initial and self.config.start_position == "AT_TIMESTAMP":
            start_at = iso_ms(self.config.start_timestamp)
        for shard_id in state.shards:
            run.know(shard_id)
        for info in listed:
            if info.shard_id not in state.shards:
                state.shards[info.shard_id] = ShardState(parents=list(info.parents), started_at=start_at)
                run.know(info.shard_id).start_latest = initial and self.config.start_position == "LATEST"
        return run

    @staticmethod
    def _start_position(shard: Shard) -> StartPosition:
        position = shard.position
        if position.sequence_number is not None:
            return StartPosition("AT_SEQUENCE_NUMBER", sequence_number=position.sequence_number)
        if shard.start_latest:
            return StartPosition("LATEST")
        if position.started_at:
            return StartPosition("AT_TIMESTAMP", timestamp=parse_iso(position.started_at))
        return StartPosition("TRIM_HORIZON")

    def _activate_ready(self, run: StreamRun) -> Iterator[AirbyteMessage]:
        if run.done or self._stopping:
            return
        ended = run.ended()
        for shard_id in run.graph.order():
            shard = run.know(shard_id)
            if shard.status is not ShardStatus.WAITING or not run.graph.is_ready(shard_id, ended):
                continue
            position = self._start_position(shard)
            reader = run.readers.open(shard_id, position, follow=self.follow, sync_started_at=self.sync_started_at)
            shard.start(reader, self.progress.track(run.name, shard_id, reader.stats))
            self.logger.info(f"Stream '{run.name}': reading shard {shard_id} from {position.describe()}")
            assert self.pool is not None
            self.pool.submit(reader)
        if not run.reading() and not self.follow:
            yield from self._complete(run)

    # ------------------------------------------------------------------------------------------- page handling
    def _handle(self, page: Page) -> Iterator[AirbyteMessage]:
        reader = page.reader
        run = self.runs.get(reader.stream)
        if run is None or run.done or reader.cancelled:
            return
        shard_id = reader.shard_id
        shard = run.shards[shard_id]
        if isinstance(page, ReadFailed):
            yield from self._fail(run, page.error)
            return
        if page.stale_restart:
            self.logger.warning(page.stale_restart)
            shard.restarted_at_trim_horizon()
        if isinstance(page, ShardGone):
            message = f"Shard {shard_id} of stream '{run.name}' no longer exists (trimmed by retention) before it was read to its end"
            refusal = self.stale_rule.refusal(message)
            if refusal is not None:
                yield from self._fail(run, refusal)
                return
            self.logger.warning(self.stale_rule.warning(message, "continuing with its children."))
        if page.records:
            yield from self._emit_records(run, shard, page.records)
            if run.done:
                return
        if isinstance(page, (ShardEnded, ShardGone)):
            if isinstance(page, ShardEnded):
                shard.finish(page.reason)
                children = page.children
            else:
                shard.vanish()
                children = []
            try:
                new = [info for info in children if run.graph.add(info)]
            except MalformedResponse as exc:  # ChildShards that would make a lineage cycle
                yield from self._fail(run, translate(exc, reader.action, run.name, shard_id))
                return
            for info in new:
                run.know(info.shard_id)
            yield self._state_message(run)
            yield from self._activate_ready(run)
        elif isinstance(page, StopRuleMet):
            shard.stop(page.reason)
            if not run.reading():
                yield from self._complete(run)

    def _emit_records(self, run: StreamRun, shard: Shard, records: List[Mapping[str, Any]]) -> Iterator[AirbyteMessage]:
        """Decode a page and emit its user records in order, advancing the shard's position with each one (the hot
        path: per-record work is kept to decoding, the contract fields and the message)."""
        shard_id = shard.shard_id
        position = shard.position
        decoder = run.decoder
        stream = run.name
        every = self.config.checkpoint_interval_records
        skip_to = shard.skip_to
        hash_range = run.graph.shards[shard_id].hash_range
        emitted_at = int(time.time() * 1000)
        if not run.running_sent:
            run.running_sent = True
            yield stream_status_message(StreamDescriptor(name=stream), AirbyteStreamStatus.RUNNING)
        expected, shard.gap_check = shard.gap_check, None
        if expected is not None and int(records[0]["SequenceNumber"]) > int(expected):
            first = records[0]["SequenceNumber"]
            message = (
                f"Stale checkpoint in stream '{stream}', shard {shard_id}: the checkpoint's record {expected} is no longer "
                f"retained; the shard now starts at {first}, so records after {expected} and before {first} were lost"
            )
            refusal = self.stale_rule.refusal(message)
            if refusal is not None:
                yield from self._fail(run, refusal)
                return
            self.logger.warning(self.stale_rule.warning(message, "continuing from the trim horizon."))
        emitted = 0
        try:
            for record in records:
                sequence_number = record["SequenceNumber"]
                arrival = arrival_iso(record["ApproximateArrivalTimestamp"])
                try:
                    users = decoder.decode(record["Data"], record["PartitionKey"], shard_id, sequence_number, hash_range)
                except AirbyteTracedException as exc:
                    yield from self._fail(run, exc)
                    return
                for user in users:
                    if skip_to is not None:  # only a resumed shard's first records: then it is dropped
                        if not skip_to.is_after(sequence_number, user.sub_sequence_number):
                            continue
                        skip_to = shard.skip_to = None
                    data = build_record(user.fields, stream, shard_id, sequence_number, user.sub_sequence_number, user.partition_key, arrival)
                    # The position moves before the record leaves: a state built after this yield covers it, and
                    # no state is built before it (states are built only on this thread).
                    position.sequence_number = sequence_number
                    position.sub_sequence_number = user.sub_sequence_number
                    emitted += 1
                    yield AirbyteMessage(type=Type.RECORD, record=AirbyteRecordMessage(stream=stream, data=data, emitted_at=emitted_at))
                    run.records_since_checkpoint += 1
                    if run.records_since_checkpoint >= every:
                        yield self._state_message(run)
        finally:
            if shard.progress is not None:
                shard.progress.emitted += emitted

    # ---------------------------------------------------------------------------------------------- lifecycle
    def _periodic(self) -> Iterator[AirbyteMessage]:
        yield from self._checkpoint_due(self.config.checkpoint_interval_seconds, with_records_only=False)
        self.progress.maybe_log()

    def _drained_spacing(self) -> float:
        # Enhanced fan-out has no rounds of calls to wait for (events are pushed whenever records arrive; a poll in
        # flight is one waiting for the next event): a checkpoint goes out once no event waits to be emitted.
        settled = self.pool is None or not self.pool.in_flight() or self.config.fan_out is not None
        return FOLLOW_SETTLED_CHECKPOINT_SECONDS if settled else FOLLOW_DRAINED_CHECKPOINT_SECONDS

    def _caught_up(self) -> Iterator[AirbyteMessage]:
        yield from self._checkpoint_due(self._drained_spacing(), with_records_only=True)

    def _checkpoint_due(self, every: float, with_records_only: bool) -> Iterator[AirbyteMessage]:
        """A state for each running stream last checkpointed at least ``every`` seconds ago (and, if asked, that
        emitted records since)."""
        now = self.clock()
        for run in self.runs.values():
            if run.done or (with_records_only and not run.records_since_checkpoint):
                continue
            if now - (run.last_records_checkpoint if with_records_only else run.last_checkpoint) >= every:
                yield self._state_message(run)

    def _refresh_shards(self) -> Iterator[AirbyteMessage]:
        for run in self.runs.values():
            if run.done:
                continue
            try:
                listed = list_shards(self.client, run.info.api_ref, run.name, self.config.retry_budget_seconds)
            except Stopped:
                return
            except AirbyteTracedException as exc:
                self.logger.warning(f"Stream '{run.name}': could not refresh the shard list ({exc.message}); will try again.")
                continue
            run.graph.listed = {s.shard_id for s in listed}
            for info in listed:
                try:
                    run.graph.add(info)
                except MalformedResponse as exc:  # a new shard whose parents lead back to it
                    yield from self._fail(run, translate(exc, "ListShards", run.name, info.shard_id))
                    break
                run.know(info.shard_id)
            if run.done:
                continue
            run.state.prune(run.graph.listed)
            yield from self._activate_ready(run)

    def _complete(self, run: StreamRun) -> Iterator[AirbyteMessage]:
        if run.done:
            return
        yield self._state_message(run)
        run.done = True
        self.logger.info(
            self.progress.summary(run.name, run.decoder.counters.by_shard, seconds=self.clock() - run.started_monotonic)
        )
        yield stream_status_message(StreamDescriptor(name=run.name), AirbyteStreamStatus.COMPLETE)

    def _fail(self, run: StreamRun, exc: AirbyteTracedException) -> Iterator[AirbyteMessage]:
        for shard in run.reading():
            shard.fail()
        yield self._state_message(run)  # everything emitted so far is safe to resume after
        run.done = True
        self.logger.error(f"Stream '{run.name}' failed: {exc.message}")
        self.logger.info(self.progress.summary(run.name, run.decoder.counters.by_shard))
        yield stream_status_message(StreamDescriptor(name=run.name), AirbyteStreamStatus.INCOMPLETE)
        descriptor = StreamDescriptor(name=run.name)
        exc.stream_descriptor = descriptor
        self.failures.append(exc)
        yield exc.as_sanitized_airbyte_message(stream_descriptor=descriptor)

    def _fail_before_start(self, name: str, exc: AirbyteTracedException) -> Iterator[AirbyteMessage]:
        self.logger.error(f"Stream '{name}' failed: {exc.message}")
        descriptor = StreamDescriptor(name=name)
        exc.stream_descriptor = descriptor
        self.failures.append(exc)
        yield stream_status_message(descriptor, AirbyteStreamStatus.INCOMPLETE)
        yield exc.as_sanitized_airbyte_message(stream_descriptor=descriptor)

    def _shutdown(self) -> Iterator[AirbyteMessage]:
        """Stop the readers, emit what they already fetched (in order), then checkpoint every stream."""
        self._stopping = True
        self._halt.set()
        assert self.pool is not None
        self.pool.stop()
        while self.pool.alive() or not self.queue.empty():
            try:
                page = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            yield from self._handle(page)
        for run in self.runs.values():
            if not run.done:
                yield from self._complete(run)
        self.progress.maybe_log(force=True)

    # --------------------------------------------------------------------------------------------------- state
    def _state_message(self, run: StreamRun) -> AirbyteMessage:
        run.last_checkpoint = self.clock()
        if run.records_since_checkpoint:
            run.last_records_checkpoint = run.last_checkpoint
        run.records_since_checkpoint = 0
        return AirbyteMessage(
            type=Type.STATE,
            state=AirbyteStateMessage(
                type=AirbyteStateType.STREAM,
                stream=AirbyteStreamState(
                    stream_descriptor=StreamDescriptor(name=run.name),
                    stream_state=AirbyteStateBlob(run.state.to_dict()),
                ),
            ),
        )
