"""Reading one shard: iterator acquisition and refresh, GetRecords under the budget, retries, stop rules.

A ``ShardReader`` is polled by the pool (``shard_pool.py``) one ``GetRecords`` at a time, never concurrently, and
returns a ``Page``. It never touches the state and never logs: it only reads and counts. The emitting thread
decodes the page, emits the records, advances the checkpoint and decides what happens next (lineage).

Stop rules (bounded syncs, fixed at sync start): the shard ended (no ``NextShardIterator``), or it is caught up
(an empty page with ``MillisBehindLatest == 0``), or a page holds only records that arrived after the sync started.
In follow mode only the end of the shard stops it.

A bounded sync also ends once a shard stops making progress: empty pages for longer than ``retry_budget_seconds``
without ``MillisBehindLatest`` reaching a new low (an endpoint that answers "no records, still behind" forever, or
without ``MillisBehindLatest``) fail the shard with a transient_error instead of polling until the sync is killed.

Every GetRecords response is checked before anything of it is used (``_checked_records``): ``Records`` is a list of
records with decimal sequence numbers, bytes ``Data``, a string ``PartitionKey`` and a finite arrival time, and the
sequence numbers increase strictly — across pages, and from the position the iterator was asked for — so a record
an endpoint repeats or sends out of order is never emitted twice: the shard fails, naming it, before any record of
that page is emitted. ``NextShardIterator`` is null or a string, ``MillisBehindLatest`` null or a non-negative
integer, ``ChildShards`` checked by ``lineage.child_shards``.
"""
from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional

from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_kinesis import kinesis_api
from source_kinesis.deadlines import Stopped
from source_kinesis.errors import MalformedResponse, error_code, translate
from source_kinesis.lineage import ShardInfo, child_shards
from source_kinesis.records import epoch_seconds
from source_kinesis.stale_checkpoints import StaleCheckpointRule
from source_kinesis.state import is_sequence_number
from source_kinesis.throttling import RetryCounters, ShardBudget


@dataclass(frozen=True)
class StartPosition:
    """Where a shard's first iterator points."""

    iterator_type: str  # TRIM_HORIZON | LATEST | AT_TIMESTAMP | AT_SEQUENCE_NUMBER
    sequence_number: Optional[str] = None
    timestamp: Optional[dt.datetime] = None

    def describe(self) -> str:
        if self.sequence_number:
            return f"{self.iterator_type} {self.sequence_number}"
        if self.timestamp:
            return f"{self.iterator_type} {self.timestamp.isoformat()}"
        return self.iterator_type

    def bound(self) -> Optional[int]:
        """Every record read from here has a sequence number above this (None: any)."""
        if self.iterator_type == "AT_SEQUENCE_NUMBER":
            return int(self.sequence_number or 0) - 1
        if self.iterator_type == "AFTER_SEQUENCE_NUMBER":
            return int(self.sequence_number or 0)
        return None


def stale_position(stream: str, shard_id: str, sequence_number: Optional[str]) -> "tuple[str, str]":
    """The stale-checkpoint rule's words for a position Kinesis no longer retains: (what happened, what a restart at
    TRIM_HORIZON means), the same for both ways of reading."""
    message = f"Stale checkpoint in stream '{stream}', shard {shard_id}: sequence number {sequence_number} is no longer retained"
    continuing = f"restarted at TRIM_HORIZON: records after {sequence_number} up to the trim horizon were lost."
    return message, continuing


@dataclass
class ShardStats:
    unit: ClassVar[str] = "GetRecords calls"  # what ``calls`` counts, in progress lines
    records: int = 0  # Kinesis records fetched
    bytes: int = 0
    calls: int = 0
    empty_calls: int = 0
    iterator_refreshes: int = 0
    millis_behind: Optional[int] = None
    retry: RetryCounters = field(default_factory=RetryCounters)

    def extra(self) -> str:
        """What a progress line adds for this way of reading (nothing for polling)."""
        return ""


@dataclass
class Page:
    """What one poll of a reader returns, as one of five kinds: ``Page`` itself (records, and the shard goes on),
    ``StopRuleMet``, ``ShardEnded``, ``ShardGone`` or ``ReadFailed``. Every kind but ``Page`` is ``final``: the pool
    polls that reader no more in this sync."""

    reader: "ShardReader"
    records: List[Mapping[str, Any]] = field(default_factory=list)
    millis_behind: Optional[int] = None
    stale_restart: Optional[str] = None  # checkpoint was stale; reader restarted at TRIM_HORIZON (message)
    error: ClassVar[Optional[AirbyteTracedException]] = None  # a ReadFailed's error; None for every other kind
    final: ClassVar[bool] = False


@dataclass
class StopRuleMet(Page):
    """The bounded stop rule holds (caught up, or records from after the sync started): the records are still
    delivered; the next sync goes on from them."""

    reason: str = ""
    final: ClassVar[bool] = True


@dataclass
class ShardEnded(Page):
    """No NextShardIterator: the shard is closed and drained; its children come from the last response."""

    child_shards: List[Mapping[str, Any]] = field(default_factory=list)  # as the response gave them (checked)
    children: List[ShardInfo] = field(default_factory=list)  # the same, parsed
    reason: str = "shard closed and drained"
    final: ClassVar[bool] = True


@dataclass
class ShardGone(Page):
    """The shard vanished (trimmed or deleted) before it was read to its end."""

    final: ClassVar[bool] = True


@dataclass
class ReadFailed(Page):
    """The shard cannot be read on: its stream fails with this error (the reader never raises)."""

    error: Optional[AirbyteTracedException] = None  # type: ignore[misc]  # always set: the failure
    final: ClassVar[bool] = True


class ShardReader:
    action = "GetRecords"

    def __init__(
        self,
        client: Any,
        stream: str,
        stream_ref: Mapping[str, str],
        shard_id: str,
        start: StartPosition,
        *,
        budget: ShardBudget,
        records_per_call: int,
        retry_budget_seconds: float,
        follow: bool,
        sync_started_at: dt.datetime,
        stale_policy: str,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.stream = stream
        self.stream_ref = dict(stream_ref)
        self.shard_id = shard_id
        self.start = start
        self.budget = budget
        self.records_per_call = records_per_call
        self.retry_budget_seconds = retry_budget_seconds
        self.follow = follow
        self.sync_started_at = sync_started_at
        self.stale_rule = StaleCheckpointRule(stale_policy)
        self.sleep = sleep
        self.clock = clock
        self.stop_rules = StopRules(sync_started_at, retry_budget_seconds, clock, "GetRecords", "pages")
        self.stats = ShardStats()
        self.cancelled = False
        self._iterator: Optional[str] = None
        self._last_fetched: Optional[str] = None  # sequence number of the last Kinesis record fetched
        self._action = "GetRecords"  # the Kinesis call in progress, named in errors
        self._latest_at: Optional[dt.datetime] = None  # when a LATEST iterator was first requested
        # Every record fetched next must have a sequence number above this (None: any). Set from the position each
        # iterator was requested at, then from the last record fetched.
        self._above: Optional[int] = None

    # -- scheduling -------------------------------------------------------------------------------------------
    def next_due(self) -> float:
        return self.budget.next_call_at()

    def close(self) -> None:
        """Nothing to release: an iterator needs no closing."""

    def attach(self, wake: Callable[[], None]) -> None:
        """Polled on its budget's schedule: nothing wakes it."""

    # -- iterators --------------------------------------------------------------------------------------------
    def _get_iterator(self, position: StartPosition) -> str:
        self._action = "GetShardIterator"
        iterator = kinesis_api.get_shard_iterator(
            self.client, self.stream_ref, self.shard_id, position.iterator_type,
            sequence_number=position.sequence_number, timestamp=position.timestamp, **self._retry,
        )
        self._above = position.bound()
        return iterator

    def _acquire(self) -> Optional[Page]:
        """Get the first iterator (or a fresh one after expiry). Returns a Page only when the shard can't be read."""
        if self._last_fetched is not None:
            position = StartPosition("AFTER_SEQUENCE_NUMBER", sequence_number=self._last_fetched)
        elif self.start.iterator_type == "LATEST" and self._latest_at is not None:
            # Refreshing a LATEST iterator that fetched nothing yet: LATEST again would skip whatever arrived since
            # the first one; AT_TIMESTAMP of the first request keeps the same starting point.
            position = StartPosition("AT_TIMESTAMP", timestamp=self._latest_at)
        else:
            position = self.start
        if position.iterator_type == "LATEST":
            self._latest_at = dt.datetime.now(dt.timezone.utc)
        try:
            self._iterator = self._get_iterator(position)
            return None
        except AirbyteTracedException:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below
            code = error_code(exc)
            if position.iterator_type in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER") and code == "InvalidArgumentException":
                # The checkpoint's sequence number is no longer in the shard (trimmed by retention).
                message, continuing = stale_position(self.stream, self.shard_id, position.sequence_number)
                refusal = self.stale_rule.refusal(message)
                if refusal is not None:
                    return ReadFailed(self, error=refusal)
                self._iterator = self._get_iterator(StartPosition("TRIM_HORIZON"))
                self._last_fetched = None
                return Page(self, stale_restart=self.stale_rule.warning(message, continuing))
            if code == "ResourceNotFoundException":
                return ShardGone(self)
            raise

    # -- one poll ---------------------------------------------------------------------------------------------
    def poll(self) -> Page:
        """One GetRecords (plus an iterator request when needed). Never raises: errors come back in the Page."""
        try:
            return self._poll()
        except Stopped:
            # The sync is stopping: nothing was fetched by this poll; the emitter checkpoints what it emitted.
            return Page(self)
        except AirbyteTracedException as exc:
            return ReadFailed(self, error=exc)
        except Exception as exc:  # noqa: BLE001 - every failure is reported to the emitting thread
            return ReadFailed(self, error=translate(exc, self._action, self.stream, self.shard_id))

    def _poll(self) -> Page:
        notice: Optional[Page] = None
        if self._iterator is None:
            notice = self._acquire()
            if notice is not None and notice.final:  # failed, or gone
                return notice
        started = self.clock()
        try:
            response = self._get_records()
        except Exception as exc:  # noqa: BLE001
            if error_code(exc) != "ExpiredIteratorException":
                raise
            # Iterators live 300 s; re-acquire from the last record fetched (all fetched records reach the emitter).
            self.stats.iterator_refreshes += 1
            self._iterator = None
            refreshed = self._acquire()
            if refreshed is not None:
                if refreshed.final:  # failed, or gone
                    return refreshed
                notice = refreshed  # the position was stale: the page carries the restart notice
            started = self.clock()
            response = self._get_records()
        records = self._checked_records(response)
        size = 0
        for record in records:
            size += len(record["Data"]) + len(record["PartitionKey"])
        self.stats.calls += 1
        self.stats.records += len(records)
        self.stats.bytes += size
        behind = response.get("MillisBehindLatest")
        if behind is not None and (type(behind) is not int or behind < 0):
            raise MalformedResponse(f"GetRecords returned a MillisBehindLatest that is not a non-negative integer: {str(behind)[:80]!r}")
        self.budget.record_call(started, size, idle=not records and behind == 0)
        self.stats.millis_behind = behind
        if not records:
            self.stats.empty_calls += 1
        next_iterator = response.get("NextShardIterator")
        if next_iterator is not None and (not isinstance(next_iterator, str) or not next_iterator):
            raise MalformedResponse(f"GetRecords returned a NextShardIterator that is not a string: {str(next_iterator)[:80]!r}")
        stale_restart = notice.stale_restart if notice is not None else None
        if next_iterator is None:
            children = child_shards(response.get("ChildShards"), self.shard_id)
            return ShardEnded(self, records, behind, stale_restart, child_shards=response.get("ChildShards") or [], children=children)
        self._iterator = next_iterator
        if not self.follow:
            reason = self.stop_rules.check(records, behind)
            if reason is not None:
                return StopRuleMet(self, records, behind, stale_restart, reason=reason)
        return Page(self, records, behind, stale_restart)

    def _checked_records(self, response: Mapping[str, Any]) -> List[Mapping[str, Any]]:
        """The page's records, each checked (``checked_records``); advances ``_above`` and ``_last_fetched``."""
        records = response.get("Records")
        self._above = checked_records(records, self._above, "GetRecords")
        if records:
            self._last_fetched = records[-1]["SequenceNumber"]
        return records

    def _get_records(self) -> Any:
        self._action = "GetRecords"  # the call in progress, named in errors (e.g. kinesis:GetShardIterator)
        assert self._iterator is not None
        return kinesis_api.get_records(self.client, self.stream_ref, self._iterator, self.records_per_call, **self._retry)

    @property
    def _retry(self) -> Dict[str, Any]:
        """Every call of this reader: the retry budget, its counters (progress lines) and its sleep (tests)."""
        return {"budget_seconds": self.retry_budget_seconds, "counters": self.stats.retry, "sleep": self.sleep}


def checked_records(records: Any, above: Optional[int], action: str) -> Optional[int]:
    """Check a page's (or an event's) records before any is used: a list of records with decimal sequence numbers,
    bytes ``Data``, a string ``PartitionKey`` and a finite arrival time, whose sequence numbers increase strictly and
    lie above ``above`` (None: any). Returns the new bound (the last sequence number); raises ``MalformedResponse``
    naming the first bad record, so nothing of a bad page reaches the emitter."""
    if not isinstance(records, list):
        raise MalformedResponse(f"{action} returned Records that are not a list: {str(records)[:80]!r}")
    for record in records:
        if not isinstance(record, Mapping):
            raise MalformedResponse(f"{action} returned a record that is not an object: {str(record)[:80]!r}")
        sequence_number = record.get("SequenceNumber")
        if not is_sequence_number(sequence_number):
            raise MalformedResponse(f"{action} returned a record whose SequenceNumber is not decimal digits: {str(sequence_number)[:80]!r}")
        arrival = record.get("ApproximateArrivalTimestamp")
        if not isinstance(record.get("Data"), (bytes, bytearray)) or not isinstance(record.get("PartitionKey"), str) or not _is_time(arrival):
            raise MalformedResponse(
                f"{action} returned record {sequence_number} without bytes Data, a string PartitionKey and an ApproximateArrivalTimestamp"
            )
        key = int(sequence_number)
        if above is not None and key <= above:
            raise MalformedResponse(
                f"{action} returned sequence number {sequence_number} after {above}: a shard's sequence numbers only increase, so "
                "the endpoint repeats or reorders records (none of this page was emitted)"
            )
        above = key
    return above


class StopRules:
    """The bounded stop rules of one shard, whichever way it is read (see the module docstring): caught up, records
    from after the sync started, or no progress for a whole retry budget (records, or a new lowest
    MillisBehindLatest), which fails the shard instead of reading until the sync is killed."""

    def __init__(
        self, sync_started_at: dt.datetime, retry_budget_seconds: float, clock: Callable[[], float], action: str, unit: str,
        *, tip_with_records: bool = False,
    ) -> None:
        self._started_epoch = sync_started_at.timestamp()
        # "caught up" also on a page *with* records at MillisBehindLatest 0 (fan-out: Kinesis pushes the next event
        # only when records arrive, so waiting for an empty one at the tip would wait for an idle event)
        self.tip_with_records = tip_with_records
        self.retry_budget_seconds = retry_budget_seconds
        self.clock = clock
        self.action = action  # "GetRecords" | "SubscribeToShard", named in the error
        self.unit = unit  # "pages" | "events"
        self._progress_at: Optional[float] = None
        self._lowest_behind: Optional[int] = None

    def check(self, records: List[Mapping[str, Any]], behind: Optional[int]) -> Optional[str]:
        """Why the shard stops now (None: it goes on); raises ``MalformedResponse`` once it made no progress."""
        if behind == 0 and (not records or self.tip_with_records):
            return "caught up"
        if records and all(epoch_seconds(r["ApproximateArrivalTimestamp"]) >= self._started_epoch for r in records):
            return "reached records that arrived after the sync started"
        now = self.clock()
        if records or self._progress_at is None or (behind is not None and (self._lowest_behind is None or behind < self._lowest_behind)):
            self._progress_at, self._lowest_behind = now, behind
            return None
        if now - self._progress_at > self.retry_budget_seconds:
            raise MalformedResponse(
                f"{self.action} returned only empty {self.unit} for {now - self._progress_at:.0f} s (retry_budget_seconds) without "
                f"getting closer to the shard's tip (MillisBehindLatest {behind}, lowest {self._lowest_behind}): the "
                "endpoint is not making progress"
            )
        return None


# Arrival times a record may carry: epoch seconds from 1970 up to year 9999 (what the ISO-8601 field can show).
MAX_EPOCH_SECONDS = 253_402_300_799


def _is_time(value: Any) -> bool:
    if isinstance(value, dt.datetime):
        return True
    return type(value) in (int, float) and math.isfinite(value) and 0 <= value <= MAX_EPOCH_SECONDS
