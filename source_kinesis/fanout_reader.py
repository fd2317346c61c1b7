"""Reading one shard with enhanced fan-out: SubscribeToShard subscriptions, renewed without a gap or a repeat.

A ``FanOutReader`` has the interface of ``readers.Reader``: the pool polls it, a poll returns one of
``shard_reader``'s page kinds, and it never raises, never logs and never touches the state. Behind it one thread per
shard (``subscription-<shard>``) holds the shard's subscription: it subscribes, reads the events Kinesis pushes and
hands each whole event over through a small bounded queue (``EVENTS_AHEAD``: a slow emitter stops the reading, and
flow control then holds the server back), waking the pool; a poll takes the next event and never waits (an idle
reader is polled only at ``IDLE_RECHECK_SECONDS``, for its silence checks, so idle shards never hold the pool's
workers from busy ones).

**Positions.** The first subscription starts where a polling reader's first iterator would (the orchestrator's
``StartPosition``: AT_SEQUENCE_NUMBER of the checkpoint, TRIM_HORIZON, LATEST, AT_TIMESTAMP), so the orchestrator's
exact resume (down to the KPL sub-record) and gap check apply unchanged, and a state written in either mode resumes
in the other. Every event handed over moves the resume position to AFTER_SEQUENCE_NUMBER of its
``ContinuationSequenceNumber`` (what KCL reconnects with). An event is handed over only once botocore read it whole
(event-stream CRCs) and everything handed over reaches the emitter, so a subscription that ends — after its 5 minutes,
a dropped connection, an exception event — is renewed right after the last event handed over: nothing is skipped and
nothing repeats (a repeat would also be caught: sequence numbers must increase across events as across pages).
Until a first record was handed over a renewal repeats the first position (a LATEST one as AT_TIMESTAMP of the first
request, as polling refreshes iterators), so no continuation number of an empty event decides where reading begins.

**Retries.** Every subscribe goes through ``throttling.call_kinesis`` (the retry budget and its counters, the stop and
outage guards), which for SubscribeToShard also retries ResourceInUseException (this consumer's previous subscription
to the shard is still active, e.g. within 5 s of it) besides LimitExceededException (throttling). A subscription
that drops is renewed after a backoff (counted as a retry); renewals that keep ending without an event for a whole
retry budget fail the shard (transient_error). A stale checkpoint, a shard that is gone and a consumer deleted
mid-sync are told apart as polling tells them apart (InvalidArgumentException: the stale-checkpoint rule;
ResourceNotFoundException: the consumer is asked for, else the shard is gone).

**Budgets and stop rules.** GetRecords' calls/s and MB/s budgets do not apply (the consumer's own 2 MB/s per shard is
pushed by Kinesis); ``max_parallel_shards`` bounds the events handed over at once, not the subscriptions: every shard
being read keeps its subscription (its own connection, see ``fanout_transport.py``). A subscription silent for
``SILENT_SUBSCRIPTION_SECONDS`` (Kinesis sends empty events while a shard is idle) is ended and renewed; nothing
heard for the retry budget plus that fails the shard. The bounded stop rules are polling's
(``shard_reader.StopRules``), but an event at the tip (MillisBehindLatest 0: "no new records to process at this moment",
as AWS documents it) is "caught up" with or without records (Kinesis pushes the next event only when records
arrive, or at its idle interval: waiting for an empty one would add that interval to every bounded sync); events holding only
records from after the sync started end the shard for this sync, and no progress for a retry budget fails it. At a
shard's end the final event carries ``ChildShards`` (and no continuation): a ``ShardEnded`` with the children.
"""
from __future__ import annotations

import datetime as dt
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, List, Mapping, Optional

from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_kinesis import kinesis_api
from source_kinesis.deadlines import Stopped
from source_kinesis.errors import MalformedResponse, config_error, error_code, is_retryable, transient_error, translate
from source_kinesis.lineage import child_shards
from source_kinesis.shard_reader import (
    Page,
    ReadFailed,
    ShardEnded,
    ShardGone,
    ShardStats,
    StartPosition,
    StopRuleMet,
    StopRules,
    checked_records,
    stale_position,
)
from source_kinesis.stale_checkpoints import StaleCheckpointRule
from source_kinesis.state import is_sequence_number

EVENTS_AHEAD = 4  # events read ahead of the emitter per shard (each at most what Kinesis pushes in one event)
IDLE_RECHECK_SECONDS = 1.0  # a reader with nothing to hand over is polled this often (its silence checks), else woken
# A subscription that has sent nothing (not even an empty event: Kinesis sends them while a shard is idle) for this
# long is ended and renewed: over HTTP/2 a read timeout is per connection, so a silent stream among live ones never
# times out by itself.
SILENT_SUBSCRIPTION_SECONDS = 60.0
MAX_RESUBSCRIBE_BACKOFF_SECONDS = 5.0


@dataclass
class _Event:
    records: List[Mapping[str, Any]]
    behind: Optional[int]
    child_shards: Optional[List[Mapping[str, Any]]] = None  # set on the shard's last event
    stale_restart: Optional[str] = None


@dataclass
class _End:
    """The subscription thread's last word: a failure, or the shard is gone."""

    error: Optional[AirbyteTracedException] = None
    gone: bool = False
    stale_restart: Optional[str] = None


@dataclass
class FanOutStats(ShardStats):
    unit: ClassVar[str] = "SubscribeToShard events"
    subscriptions: int = 0  # SubscribeToShard calls that opened a subscription
    renewals: int = 0  # subscriptions renewed after they ended on their own (5 minutes)
    drops: int = 0  # subscriptions that ended with a connection error or an exception event

    def extra(self) -> str:
        return f", {self.subscriptions} subscriptions ({self.renewals} renewed, {self.drops} dropped)"


class FanOutReader:
    action = "SubscribeToShard"

    def __init__(
        self,
        client: Any,
        stream: str,
        consumer_arn: str,
        shard_id: str,
        start: StartPosition,
        *,
        retry_budget_seconds: float,
        follow: bool,
        sync_started_at: dt.datetime,
        stale_policy: str,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.stream = stream
        self.consumer_arn = consumer_arn
        self.shard_id = shard_id
        self.start = start
        self.retry_budget_seconds = retry_budget_seconds
        self.follow = follow
        self.stale_rule = StaleCheckpointRule(stale_policy)
        self.sleep = sleep
        self.clock = clock
        self.stop_rules = StopRules(sync_started_at, retry_budget_seconds, clock, "SubscribeToShard", "events", tip_with_records=True)
        self.stats = FanOutStats()
        self.cancelled = False
        self._events: "queue.Queue[Any]" = queue.Queue(maxsize=EVENTS_AHEAD)
        self._closed = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._open: Any = None  # the event stream being read (closed by close() from another thread)
        self._wake: Callable[[], None] = lambda: None  # the pool's: this reader has an event to hand over
        self._heard_at = clock()  # the last event handed over or subscription opened (the silence checks)
        self._aborted_at = float("-inf")  # when a silent subscription was last ended from poll()

    # -- the Reader interface (the pool's threads) ------------------------------------------------------------
    def next_due(self) -> float:
        """Due now with an event to hand over; else at the idle re-check (an arriving event wakes it sooner)."""
        return 0.0 if not self._events.empty() or self._thread is None else self.clock() + IDLE_RECHECK_SECONDS

    def attach(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    def poll(self) -> Page:
        """The next event handed over, as a page (never waits: an idle poll returns an empty page)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._subscribe_loop, name=f"subscription-{self.shard_id}", daemon=True)
            self._thread.start()
        try:
            item = self._events.get_nowait()
        except queue.Empty:
            item = None
        try:
            page = self._page(item)
        except AirbyteTracedException as exc:
            page = ReadFailed(self, error=exc)
        except Exception as exc:  # noqa: BLE001 - every failure is reported to the emitting thread
            page = ReadFailed(self, error=translate(exc, self.action, self.stream, self.shard_id))
        if page.final:
            self.close()
        return page

    def close(self) -> None:
        """Nothing more is read: the subscription is ended now (its connection closed, so Kinesis frees the
        consumer's slot on the shard at once instead of refusing the next sync's subscription until it expires), and
        the thread, woken by that, exits."""
        self._closed.set()
        self._end_open_stream()

    def _page(self, item: Any) -> Page:
        if isinstance(item, _End):
            if item.gone:
                return ShardGone(self, stale_restart=item.stale_restart)
            return ReadFailed(self, error=item.error)
        if item is None:
            self._check_silence()
            return Page(self)
        records, behind = item.records, item.behind
        self.stats.millis_behind = behind
        if item.child_shards is not None:
            children = child_shards(item.child_shards, self.shard_id)
            return ShardEnded(self, records, behind, item.stale_restart, child_shards=item.child_shards, children=children)
        if not self.follow:
            reason = self.stop_rules.check(records, behind)
            if reason is not None:
                return StopRuleMet(self, records, behind, item.stale_restart, reason=reason)
        return Page(self, records, behind, item.stale_restart)

    def _check_silence(self) -> None:
        """Nothing handed over lately. The thread bounds what it knows (subscribe retries within the retry budget,
        subscriptions ending without an event for a retry budget); a subscription that simply stays silent is bounded
        here: ended (and so renewed) after SILENT_SUBSCRIPTION_SECONDS, and the shard fails once nothing was heard for
        the retry budget plus that."""
        silent = self.clock() - self._heard_at
        if silent > self.retry_budget_seconds + SILENT_SUBSCRIPTION_SECONDS:
            raise transient_error(
                f"kinesis:SubscribeToShard on stream '{self.stream}', shard {self.shard_id}: nothing arrived for {silent:.0f} s "
                "(no event, no new subscription). Check the network route to Kinesis, then try again."
            )
        if silent > SILENT_SUBSCRIPTION_SECONDS and self.clock() - self._aborted_at > SILENT_SUBSCRIPTION_SECONDS:
            self._aborted_at = self.clock()
            self._end_open_stream()

    def _end_open_stream(self) -> None:
        events = self._open
        if events is not None:
            try:
                events.close()
            except Exception:  # noqa: BLE001 - closing a stream another thread reads may race; it ends either way
                pass

    # -- the subscription thread --------------------------------------------------------------------------------
    def _hand_over(self, item: Any) -> bool:
        """Queue ``item`` for the emitter (blocking while the queue is full) and wake the pool; False once the
        reader is closed."""
        while not self._closed.is_set():
            try:
                self._events.put(item, timeout=0.2)
            except queue.Full:
                continue
            self._wake()
            return True
        return False

    def _subscribe_loop(self) -> None:
        try:
            self._read_subscriptions()
        except Stopped:
            pass
        except AirbyteTracedException as exc:
            self._hand_over(_End(error=exc))
        except Exception as exc:  # noqa: BLE001
            self._hand_over(_End(error=translate(exc, self.action, self.stream, self.shard_id)))

    def _read_subscriptions(self) -> None:
        position = self.start
        first_position = self.start
        latest_at: Optional[dt.datetime] = None
        above: Optional[int] = position.bound()
        handed_records = False
        notice: Optional[str] = None  # a stale-checkpoint restart, carried by the next event handed over
        drops = 0
        last_event_at = self.clock()
        while not self._closed.is_set():
            if position.iterator_type == "LATEST":
                latest_at = latest_at or dt.datetime.now(dt.timezone.utc)
            try:
                events = kinesis_api.subscribe_to_shard(
                    self.client, self.consumer_arn, self.shard_id, position.iterator_type,
                    sequence_number=position.sequence_number, timestamp=position.timestamp,
                    budget_seconds=self.retry_budget_seconds, counters=self.stats.retry, sleep=self.sleep,
                )
            except Stopped:
                return
            except AirbyteTracedException:
                raise
            except Exception as exc:  # noqa: BLE001 - classified here, the rest translated
                code = error_code(exc)
                if code == "InvalidArgumentException" and handed_records and position.sequence_number != str(above):
                    # A renewal refused at a continuation number: renew right after the last record handed over
                    # instead (a position Kinesis gave us); only a refusal of that one is news about retention.
                    position = StartPosition("AFTER_SEQUENCE_NUMBER", sequence_number=str(above))
                    continue
                if code == "InvalidArgumentException" and position.iterator_type in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
                    message, continuing = stale_position(self.stream, self.shard_id, position.sequence_number)
                    refusal = self.stale_rule.refusal(message)
                    if refusal is not None:
                        raise refusal from None
                    notice = self.stale_rule.warning(message, continuing)
                    position = first_position = StartPosition("TRIM_HORIZON")
                    above, handed_records = None, False
                    continue
                if code == "ResourceNotFoundException":
                    self._consumer_gone_check()
                    self._hand_over(_End(gone=True, stale_restart=notice))
                    return
                if code in kinesis_api.SUBSCRIBE_RETRY_CODES:
                    raise transient_error(
                        f"kinesis:SubscribeToShard on stream '{self.stream}', shard {self.shard_id}: another subscription of "
                        f"consumer {self.consumer_arn} to this shard stayed active for the whole retry budget "
                        f"({self.retry_budget_seconds:.0f} s). Is another connector or runner reading through the same "
                        "consumer? Give each reader its own consumer (read_mode.consumer_name), then try again."
                    ) from None
                raise translate(exc, self.action, self.stream, self.shard_id) from None
            self.stats.subscriptions += 1
            self._heard_at = self.clock()
            events_in_subscription = 0
            self._open = events
            if self._closed.is_set():  # closed while subscribing
                events.close()
                return
            ended_cleanly = False
            try:
                for event in events:
                    if self._closed.is_set():
                        return
                    payload = event.get("SubscribeToShardEvent")
                    if payload is None:
                        continue  # an event type this reader does not know: nothing to hand over
                    item, continuation = self._checked_event(payload, above)
                    if item.records:
                        above = int(item.records[-1]["SequenceNumber"])
                    item.stale_restart, notice = notice, None
                    self.stats.calls += 1
                    self.stats.records += len(item.records)
                    self.stats.bytes += sum(len(r["Data"]) + len(r["PartitionKey"]) for r in item.records)
                    if not item.records:
                        self.stats.empty_calls += 1
                    if not self._hand_over(item):
                        return
                    last_event_at = self._heard_at = self.clock()
                    events_in_subscription += 1
                    drops = 0
                    if item.child_shards is not None:
                        return  # the shard's end: nothing more to read
                    if item.records:
                        handed_records = True
                    if handed_records:
                        resume = continuation if continuation is not None and int(continuation) >= above else str(above)
                        position = StartPosition("AFTER_SEQUENCE_NUMBER", sequence_number=resume)
                ended_cleanly = True
            except Stopped:
                return
            except MalformedResponse:
                raise
            except Exception as exc:  # noqa: BLE001 - a dropped connection or an exception event
                if self._closed.is_set():
                    return  # close() ended the stream under the reading
                if error_code(exc) == "ResourceNotFoundException":  # the shard (or the consumer) went away meanwhile
                    self._consumer_gone_check()
                    self._hand_over(_End(gone=True, stale_restart=notice))
                    return
                if not (is_retryable(exc) or error_code(exc) in kinesis_api.SUBSCRIBE_RETRY_CODES):
                    raise translate(exc, self.action, self.stream, self.shard_id) from None
                self.stats.drops += 1
                self.stats.retry.retries += 1
            finally:
                self._open = None
                events.close()
            if self._closed.is_set():
                return
            if not handed_records:
                position = first_position
                if position.iterator_type == "LATEST" and latest_at is not None:
                    position = StartPosition("AT_TIMESTAMP", timestamp=latest_at)
            if self.clock() - last_event_at > self.retry_budget_seconds:
                raise transient_error(
                    f"kinesis:SubscribeToShard on stream '{self.stream}', shard {self.shard_id}: subscriptions kept dropping "
                    f"or ending without an event for {self.clock() - last_event_at:.0f} s (retry_budget_seconds). Check the "
                    "network route to Kinesis, then try again."
                )
            if ended_cleanly and events_in_subscription:
                self.stats.renewals += 1
                continue
            # dropped, or ended at once without an event (a broken endpoint or proxy): renewed after a backoff
            drops += 1
            wait = random.uniform(0, min(MAX_RESUBSCRIBE_BACKOFF_SECONDS, 0.1 * 2 ** min(drops, 10)))
            guard = getattr(self.client, "guard", None)
            if guard is not None and self.sleep is time.sleep:
                guard.sleep(wait, self.action)
            else:
                self.sleep(wait)

    def _checked_event(self, payload: Mapping[str, Any], above: Optional[int]) -> "tuple[_Event, Optional[str]]":
        """The event as an ``_Event`` after polling's record checks, and its continuation sequence number."""
        records = payload.get("Records")
        checked_records(records, above, self.action)
        behind = payload.get("MillisBehindLatest")
        if behind is not None and (type(behind) is not int or behind < 0):
            raise MalformedResponse(f"SubscribeToShard sent a MillisBehindLatest that is not a non-negative integer: {str(behind)[:80]!r}")
        continuation = payload.get("ContinuationSequenceNumber")
        if continuation is not None and not is_sequence_number(continuation):
            raise MalformedResponse(f"SubscribeToShard sent a ContinuationSequenceNumber that is not decimal digits: {str(continuation)[:80]!r}")
        children = payload.get("ChildShards")
        ended = continuation is None and bool(children)
        if continuation is None and not ended:
            raise MalformedResponse("SubscribeToShard sent an event with neither a ContinuationSequenceNumber nor ChildShards")
        return _Event(records, behind, child_shards=list(children) if ended else None), continuation

    def _consumer_gone_check(self) -> None:
        """ResourceNotFoundException: the shard is gone, unless the consumer itself is (deregistered mid-sync). Only
        a consumer that is there makes it the shard's news: a shard taken for gone is never read again."""
        try:
            description = kinesis_api.describe_consumer(self.client, self.retry_budget_seconds, ConsumerARN=self.consumer_arn)
        except AirbyteTracedException:
            raise
        except Exception as exc:  # noqa: BLE001 - cannot tell whether the shard is gone: the shard fails, naming why
            raise translate(exc, "DescribeStreamConsumer", self.stream, self.shard_id) from None
        if description is None:
            raise config_error(
                f"The enhanced fan-out consumer {self.consumer_arn} of stream '{self.stream}' no longer exists (deregistered "
                "during the sync). Register it again (or give read_mode.consumer_name to have the sync register one), then sync again."
            )

