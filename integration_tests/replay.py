"""An in-memory Kinesis for tests and the benchmark: real Kinesis JSON 1.1 responses served from memory, no upstream.

Used through ``FaultProxy.replay(data, latency_seconds=...)`` (``fault_proxy.py``), so the benchmark gets the same
server, latency and fault injection as the reliability suite::

    data = ReplayData([ReplayStream("bench", shards=8, records_per_shard=50_000)])
    with FaultProxy.replay(data, latency_seconds=0.030) as server:
        config = {..., "endpoint_url": server.endpoint_url, "streams": ["bench"]}
        ...  # read; then data.expected_keys("bench") / server.backend.records_served

Two ways to fill a stream, freely mixed:

* **a pre-built backlog** (``records_per_shard`` records per shard from ``make_record``, arrival times spaced
  ``arrival_step`` apart from ``arrival_start``): encoded once at build time, so a ``GetRecords`` page is one
  ``bytes.join`` of pre-encoded records and the server costs next to nothing per record (the source benchmark);
* **live puts**: ``PutRecord`` / ``PutRecords`` append to the stream's shards while it is being read, so shards grow.
  ``ReplayStream(name, shards=4, records_per_shard=0)`` (or ``CreateStream``) is an empty stream fed only by puts.

What it serves (enough for source-kinesis, a bare boto3 loop, enhanced fan-out and a boto3 producer):
``CreateStream`` (``ShardCount`` shards, empty and ACTIVE at once; an existing name → ``ResourceInUseException``),
``DescribeStream`` (``Limit``/``ExclusiveStartShardId`` paging), ``DescribeStreamSummary``, ``ListStreams``,
``ListShards`` (``MaxResults``/``NextToken`` paging; a ``NextToken`` together with a stream name is rejected as
Kinesis does; no ``ShardFilter``: every shard, closed and open), ``PutRecord`` and ``PutRecords`` (below),
``GetShardIterator`` (``TRIM_HORIZON``, ``LATEST``, ``AT_SEQUENCE_NUMBER``, ``AFTER_SEQUENCE_NUMBER``,
``AT_TIMESTAMP``) and ``GetRecords`` (``Limit`` ≤ 10,000), ``SplitShard`` / ``MergeShards`` (below), the consumer
operations and ``SubscribeToShard`` (below). Iterators are opaque tokens encoding (stream, shard, offset), so an
iterator taken on a growing shard sees every record appended after its position; ``NextShardIterator`` is always
given, except at the end of a closed shard. Unknown streams, shards, consumers or iterators get the same error types
Kinesis returns.

Sequence numbers: 56 digits, ``4959`` + the shard number (12 digits) + a 40-digit position; the record at offset
``o`` of a shard has position ``o + 1`` and the shard's ``StartingSequenceNumber`` is position 0 (no record's), so
``AFTER_SEQUENCE_NUMBER`` of the starting number (an empty event's ``ContinuationSequenceNumber``) reads from the
first record and ``AT_SEQUENCE_NUMBER`` of it reads from the first record too.

Puts, as Kinesis does them: ``Data`` is base64 (at most 1 MiB decoded), ``PartitionKey`` 1-256 characters, and a
record goes to the shard whose hash-key range holds ``ExplicitHashKey`` if given, else MD5 of the partition key
(UTF-8) read as a 128-bit big-endian integer. ``PutRecords`` takes 1-500 records; its response lists each record's
``SequenceNumber`` and ``ShardId`` in request order with ``FailedRecordCount`` 0 (nothing is ever refused for
throughput: use the fault injection for that). A record's ``ApproximateArrivalTimestamp`` is the wall clock at the
put (ms precision, never decreasing within a shard); records of one call that land on one shard keep their request
order. ``LATEST`` is the position after the shard's last record at the time of the ``GetShardIterator`` call;
``AT_TIMESTAMP`` is the first record that arrived at or after the timestamp.

``MillisBehindLatest`` is wall-clock based, as on Kinesis: now − arrival time of the first record after the page
(the next unread one), and 0 once the page reaches the shard's tip (at least 1 while records remain unread).

Resharding, as Kinesis does it but at once (the stream never goes ``UPDATING``): ``SplitShard`` (``ShardToSplit``,
``NewStartingHashKey``: the second child's first hash key, in (StartingHashKey, EndingHashKey]) and ``MergeShards``
(``ShardToMerge`` + ``AdjacentShardToMerge``, which must be hash-adjacent and both open), by ``StreamName`` or
``StreamARN``; from Python ``data.split(stream, shard_id[, new_starting_hash_key])`` (the middle by default) and
``data.merge(stream, a, b)``. The parents close: their ``SequenceNumberRange`` gets ``EndingSequenceNumber`` (the
last record's sequence number; the starting one for an empty shard) and nothing is put on them again; children get
the next shard numbers (``shardId-000000000004``, ...), ``ParentShardId`` (and ``AdjacentParentShardId`` for a
merge) and the parents' hash-key ranges; puts route by hash key to open shards only. ``ListShards`` and
``DescribeStream`` list closed and open shards in creation order. ``GetShardIterator`` still works on a closed shard,
and a ``GetRecords`` page that reaches a closed shard's end has no ``NextShardIterator`` and gives ``ChildShards``
(``[{ShardId, ParentShards, HashKeyRange}]``), as Kinesis does. Resharding takes the put lock: a reader that sees a
shard closed knows its length is final.

Consumers (enhanced fan-out): ``RegisterStreamConsumer`` (``StreamARN``, ``ConsumerName``; ARN
``<stream ARN>/consumer/<name>:<creation epoch seconds>``; ``CREATING``, then ``ACTIVE``
``data.consumer_activation_seconds`` later; an existing name → ``ResourceInUseException``),
``DescribeStreamConsumer`` (by ``ConsumerARN``, or ``StreamARN`` + ``ConsumerName``), ``ListStreamConsumers`` (all
at once, no paging) and ``DeregisterStreamConsumer`` (gone at once; its open subscriptions end at their next poll).
From Python: ``data.register_consumer(stream, name)`` (ACTIVE at once; returns the ARN) and
``data.consumer_creating(arn, seconds)``.

``SubscribeToShard`` (``ConsumerARN``, ``ShardId``, ``StartingPosition`` ``{Type, SequenceNumber?, Timestamp?}``
with ``GetShardIterator``'s semantics): refusals are ordinary JSON 1.1 errors (HTTP 400) before the stream starts:
an unknown consumer or shard → ``ResourceNotFoundException``; a consumer not ``ACTIVE``, or a subscription of the
same (consumer, shard) opened less than ``data.resubscribe_cooldown_seconds`` ago (Kinesis: "within 5 seconds of a
successful call") → ``ResourceInUseException`` ("Another active subscription exists for this consumer: ..."); past
that, a new subscription takes the shard over and the older one, if still open, ends (``subscriptions_taken_over``). Otherwise HTTP 200,
``application/vnd.amazon.eventstream`` (``event_stream.py``), streamed: an ``initial-response`` event (``{}``), then
``SubscribeToShardEvent`` events, payload
``{"Records": [records as GetRecords encodes them], "ContinuationSequenceNumber": "<sequence number of the last
record sent, or of the position before the next record>", "MillisBehindLatest": <as GetRecords>}``: the first one at
once (even empty), then one as soon as records are there (the shard is polled every
``data.subscription_poll_seconds``, 0.02), at most ``data.event_max_records`` (10,000) records and about
``data.event_max_bytes`` (2 MiB, at least one record) per event, and an empty one every ``data.heartbeat_seconds``
(5) while idle. The body ends cleanly after ``data.subscription_seconds`` (300, as Kinesis) or, a test knob, after
``data.subscription_max_events`` events (None), or at a closed shard's
end after a last event (which may still carry the shard's last records) with ``"ContinuationSequenceNumber": null``,
``"MillisBehindLatest": 0`` and ``"ChildShards": [...]``. Within one
subscription records come in shard order, never repeated or skipped. ``data.subscription_faults``, a callable
``(n, events_sent) -> None | "reset" | "disconnect" | ("exception", type[, message])`` (``n``: the subscription's
number for its (consumer, shard), from 1; ``events_sent``: ``SubscribeToShardEvent`` events it has sent), is asked
before each event and on every idle poll: it drops the connection mid-body (an RST or a FIN, no final chunk), or
sends an event-stream exception message (botocore's model knows ``InternalFailureException``,
``ResourceInUseException``, ``ResourceNotFoundException``, the KMS ones) and ends the body. Every knob is a plain
attribute of ``ReplayData``, read while running. Counters on the backend: ``subscriptions_started`` and
``subscriptions_refused`` (``ResourceInUseException``) per (consumer ARN, shard id), ``subscription_events`` per
(consumer ARN, shard id), ``subscription_records_served`` per (stream, shard id) (beside ``records_served``, which
counts ``GetRecords``), ``subscription_faults_injected`` per kind; ``open_subscriptions()``.

Concurrency: the ``FaultProxy`` serves each client connection on its own thread, so requests run concurrently.
Puts are serialized by one lock (sequence numbers and arrival times are assigned under it, and a record's arrival
time is appended before the record itself); readers take no lock: they read a shard's length once and only look at
records (and arrival times) below it, which Python's list append makes safe. ``CreateStream``, ``ListStreams`` and
the consumers share the data's stream lock; resharding takes the put lock. A subscription's events are produced on
its connection's thread.

Run as a separate process (so a benchmark's client load does not share its GIL)::

    python -m integration_tests.replay --stream NAME:SHARDS[:RECORDS_PER_SHARD] ... [--consumer STREAM:NAME ...]
        [--resubscribe-cooldown-seconds S] [--subscription-seconds S] [--max-lifetime-seconds N]

prints one JSON line ``{"endpoint_url": ...}`` when it listens (127.0.0.1 only, a free port), serves until its
stdin closes (or its lifetime ends), then prints one JSON line of counters (puts, records served, requests) and exits.
A ``--consumer`` is registered ACTIVE at once; its ARN is in the first line's ``consumers`` (``{stream/name: ARN}``).
"""
from __future__ import annotations

import argparse
import base64
import binascii
import bisect
import datetime as dt
import hashlib
import json
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from integration_tests import event_stream
from integration_tests.fault_proxy import Backend, DropConnection, FaultProxy, Request, Response

MAX_HASH = 2**128 - 1
MAX_PUT_RECORDS = 500  # records per PutRecords call
MAX_DATA_BYTES = 1 << 20  # a record's data, decoded (Kinesis' default limit: 1 MiB)
RecordFactory = Callable[[int, int], Tuple[str, bytes]]  # (shard index, offset in shard) -> (partition key, data)
# (subscription number for its (consumer, shard), events sent) -> None | "reset" | "disconnect" | ("exception", type[, message])
SubscriptionFault = Union[None, str, Tuple[str, ...]]
SubscriptionFaults = Callable[[int, int], SubscriptionFault]
POSITION_TYPES = ("TRIM_HORIZON", "LATEST", "AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER", "AT_TIMESTAMP")


def default_record(shard: int, offset: int) -> Tuple[str, bytes]:
    """A realistic ~150-byte JSON event; the partition key and ``n`` let tests check exactly-once delivery.

    Formatted by hand (every value is a plain number or an ASCII word, nothing to escape): 3x cheaper than
    ``json.dumps`` of a dict, which matters when the benchmark builds a million of them."""
    user = (shard * 7919 + offset) % 1000
    kind = ("page_view", "click", "purchase", "signup")[offset % 4]
    tags = '["web","eu"]' if offset % 2 else '["app"]'
    text = (
        f'{{"event_id":"{shard:03d}-{offset:09d}","shard":{shard},"n":{offset},"user_id":"user-{user:04d}",'
        f'"type":"{kind}","amount":{(offset % 1000) * 37 / 100},'
        f'"ts":"2024-05-01T12:{(offset // 60) % 60:02d}:{offset % 60:02d}.{offset % 1000:03d}Z","tags":{tags}}}'
    )
    return f"pk-{shard}-{offset % 64}", text.encode()


def hash_key(partition_key: str) -> int:
    """Kinesis' routing key: MD5 of the partition key's UTF-8 bytes as a 128-bit big-endian unsigned integer."""
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


@dataclass
class ReplayStream:
    name: str
    shards: int = 1
    records_per_shard: int = 100  # the pre-built backlog; 0: an empty stream, fed by puts
    make_record: RecordFactory = default_record
    region: str = "us-east-1"
    account: str = "000000000000"
    created_at: float = 1_700_000_000.0  # epoch seconds
    arrival_start: Optional[float] = None  # epoch seconds of offset 0; default: an hour before build time
    arrival_step: float = 0.001  # seconds between consecutive records of a shard

    @property
    def arn(self) -> str:
        return f"arn:aws:kinesis:{self.region}:{self.account}:stream/{self.name}"


@dataclass
class _Shard:
    shard_id: str
    index: int
    hash_range: Tuple[int, int]
    records: List[bytes]  # pre-encoded JSON objects, one per record
    arrivals: List[float]  # appended before the record itself: len(arrivals) >= len(records) at any moment
    sequence_prefix: str
    built: int = 0  # records of the pre-built backlog (the first ones); those after it came from puts
    parents: Tuple[str, ...] = ()  # (ParentShardId[, AdjacentParentShardId]) of a shard made by resharding
    children: List["_Shard"] = field(default_factory=list)  # set before ``closed``
    closed: bool = False  # set under the put lock after the last record: once seen True, len(records) is final

    def sequence(self, offset: int) -> str:
        """The sequence number of the record at ``offset`` (position ``offset + 1``; 56 digits, increasing)."""
        return f"{self.sequence_prefix}{offset + 1:040d}"

    @property
    def starting_sequence(self) -> str:
        """Position 0: before the first record, no record's number."""
        return f"{self.sequence_prefix}{0:040d}"

    def hash_key_range(self) -> Dict[str, str]:
        return {"StartingHashKey": str(self.hash_range[0]), "EndingHashKey": str(self.hash_range[1])}

    def describe(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"ShardId": self.shard_id}
        if self.parents:
            out["ParentShardId"] = self.parents[0]
        if len(self.parents) > 1:
            out["AdjacentParentShardId"] = self.parents[1]
        out["HashKeyRange"] = self.hash_key_range()
        out["SequenceNumberRange"] = {"StartingSequenceNumber": self.starting_sequence}
        if self.closed:
            out["SequenceNumberRange"]["EndingSequenceNumber"] = self.sequence(len(self.records) - 1)
        return out

    def child_shards(self) -> List[Dict[str, Any]]:
        """``ChildShards`` as GetRecords and SubscribeToShard give them at a closed shard's end."""
        return [{"ShardId": c.shard_id, "ParentShards": list(c.parents), "HashKeyRange": c.hash_key_range()} for c in self.children]


@dataclass
class _Stream:
    spec: ReplayStream
    shards: List[_Shard]  # every shard, closed and open, in creation order (``index`` is the position)
    by_id: Dict[str, _Shard] = field(default_factory=dict)
    open_shards: List[_Shard] = field(default_factory=list)  # by StartingHashKey; replaced under the put lock
    starts: List[int] = field(default_factory=list)  # each open shard's StartingHashKey, ascending (routing by bisect)

    def shard_for(self, key: int) -> _Shard:
        """The open shard whose hash-key range holds ``key`` (under the put lock: routing changes on a reshard)."""
        return self.open_shards[bisect.bisect_right(self.starts, key) - 1]


@dataclass
class _Consumer:
    name: str
    arn: str
    stream_arn: str
    created: float  # epoch seconds
    active_at: float  # epoch seconds from which it is ACTIVE

    def status(self) -> str:
        return "ACTIVE" if time.time() >= self.active_at else "CREATING"

    def summary(self) -> Dict[str, Any]:
        return {"ConsumerName": self.name, "ConsumerARN": self.arn, "ConsumerStatus": self.status(),
                "ConsumerCreationTimestamp": self.created}


def _encode(sequence: str, arrival: float, data: bytes, key: str) -> bytes:
    # Formatted by hand (3x faster than json.dumps of a dict); the key is JSON-escaped.
    return b'{"SequenceNumber":"%s","ApproximateArrivalTimestamp":%s,"Data":"%s","PartitionKey":%s,"EncryptionType":"NONE"}' % (
        sequence.encode(), repr(arrival).encode(), base64.b64encode(data), json.dumps(key).encode())


class ReplayData:
    """Streams of pre-encoded records, built once (~5-15 µs per record with the default factory), that puts extend;
    their consumers; and the enhanced fan-out knobs (plain attributes, read while running; see the module docstring)."""

    def __init__(
        self,
        streams: List[ReplayStream],
        *,
        consumer_activation_seconds: float = 0.3,
        resubscribe_cooldown_seconds: float = 5.0,
        subscription_seconds: float = 300.0,
        heartbeat_seconds: float = 5.0,
        event_max_records: int = 10_000,
        event_max_bytes: int = 2 << 20,
        subscription_poll_seconds: float = 0.02,
        subscription_faults: Optional[SubscriptionFaults] = None,
    ) -> None:
        self.streams: Dict[str, _Stream] = {}
        self.by_arn: Dict[str, _Stream] = {}
        self.consumers: Dict[str, _Consumer] = {}  # by ARN
        self.lock = threading.Lock()  # stream creation and listing, consumers
        self.put_lock = threading.Lock()  # appends (sequence numbers and arrival times are assigned under it), resharding
        self.records_put = 0
        self.consumer_activation_seconds = consumer_activation_seconds
        self.resubscribe_cooldown_seconds = resubscribe_cooldown_seconds
        # a test knob: a subscription ends cleanly after this many SubscribeToShard events (None: only by time), so a
        # test renews subscriptions deterministically instead of racing subscription_seconds
        self.subscription_max_events: Optional[int] = None
        self.subscription_seconds = subscription_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.event_max_records = event_max_records
        self.event_max_bytes = event_max_bytes
        self.subscription_poll_seconds = subscription_poll_seconds
        self.subscription_faults = subscription_faults
        for spec in streams:
            self.add_stream(spec)

    def add_stream(self, spec: ReplayStream) -> None:
        if spec.shards < 1:
            raise ValueError("a stream has at least one shard")
        start = spec.arrival_start if spec.arrival_start is not None else dt.datetime.now(dt.timezone.utc).timestamp() - 3600
        width = (MAX_HASH + 1) // spec.shards
        shards = []
        for i in range(spec.shards):
            hash_range = (i * width, MAX_HASH if i == spec.shards - 1 else (i + 1) * width - 1)
            shard = _Shard(f"shardId-{i:012d}", i, hash_range, [], [], f"4959{i:012d}", spec.records_per_shard)
            for offset in range(spec.records_per_shard):
                key, data = spec.make_record(i, offset)
                arrival = round(start + offset * spec.arrival_step, 3)
                shard.arrivals.append(arrival)
                shard.records.append(_encode(shard.sequence(offset), arrival, data, key))
            shards.append(shard)
        stream = _Stream(spec, shards, {s.shard_id: s for s in shards}, list(shards), [s.hash_range[0] for s in shards])
        with self.lock:
            if spec.name in self.streams:
                raise _Fail("ResourceInUseException", f"Stream {spec.name} under account {spec.account} already exists.")
            self.streams[spec.name] = stream
            self.by_arn[spec.arn] = stream

    def stream_list(self) -> List[_Stream]:
        with self.lock:
            return sorted(self.streams.values(), key=lambda s: s.spec.name)

    def put(self, stream: _Stream, entries: List[Tuple[str, bytes, Optional[int]]]) -> List[Tuple[_Shard, int]]:
        """Append (partition key, data, explicit hash key or None) entries in order; (shard, offset) of each.
        Every record of one call gets the same arrival time (the wall clock now, never below a shard's last one)."""
        keyed = [(hash_key(key) if explicit is None else explicit, key, data) for key, data, explicit in entries]
        out = []
        with self.put_lock:
            routed = [(stream.shard_for(h), key, data) for h, key, data in keyed]  # under the lock: a reshard moves routes
            now = round(time.time(), 3)
            for shard, key, data in routed:
                offset = len(shard.records)
                arrival = max(now, shard.arrivals[-1]) if shard.arrivals else now
                shard.arrivals.append(arrival)  # before the record: a reader never sees a record without its arrival
                shard.records.append(_encode(shard.sequence(offset), arrival, data, key))
                out.append((shard, offset))
            self.records_put += len(routed)
        return out

    # -- resharding (as Kinesis, but at once)
    def _stream_named(self, name: str) -> _Stream:
        stream = self.streams.get(name)
        if stream is None:
            raise _Fail("ResourceNotFoundException", f"Stream {name} under account 000000000000 not found.")
        return stream

    def _open_shard(self, stream: _Stream, shard_id: Any) -> _Shard:
        shard = stream.by_id.get(str(shard_id))
        if shard is None:
            raise _Fail("ResourceNotFoundException", f"Shard {shard_id} in stream {stream.spec.name} under account {stream.spec.account} does not exist")
        if shard.closed:
            raise _Fail("ResourceInUseException", f"Shard {shard.shard_id} in stream {stream.spec.name} under account {stream.spec.account} "
                                                   "has already been merged or split, and thus is not eligible for merging or splitting.")
        return shard

    def _reshard(self, stream: _Stream, parents: List[_Shard], ranges: List[Tuple[int, int]]) -> List[_Shard]:
        """Under the put lock: close ``parents``, open one child per hash-key range, re-route."""
        children = []
        for lo, hi in ranges:
            index = len(stream.shards) + len(children)
            children.append(_Shard(f"shardId-{index:012d}", index, (lo, hi), [], [], f"4959{index:012d}",
                                   parents=tuple(p.shard_id for p in parents)))
        for child in children:
            stream.by_id[child.shard_id] = child
            stream.shards.append(child)
        for parent in parents:
            parent.children = children
            parent.closed = True  # after its last record and its children: readers rely on it
        open_shards = sorted([s for s in stream.open_shards if s not in parents] + children, key=lambda s: s.hash_range[0])
        stream.open_shards, stream.starts = open_shards, [s.hash_range[0] for s in open_shards]
        return children

    def split(self, stream_name: str, shard_id: str, new_starting_hash_key: Optional[int] = None) -> List[str]:
        """Split an open shard at ``new_starting_hash_key`` (the second child's first key; default the middle of
        the range); the two children's shard ids."""
        stream = self._stream_named(stream_name)
        with self.put_lock:
            parent = self._open_shard(stream, shard_id)
            lo, hi = parent.hash_range
            key = (lo + hi + 1) // 2 if new_starting_hash_key is None else int(new_starting_hash_key)
            if not lo < key <= hi:
                raise _Fail("InvalidArgumentException", f"NewStartingHashKey {key} used in SplitShard() on shard {parent.shard_id} in stream "
                                                        f"{stream.spec.name} under account {stream.spec.account} is not both greater than the "
                                                        f"shard's StartingHashKey {lo} and at most its EndingHashKey {hi}.")
            return [c.shard_id for c in self._reshard(stream, [parent], [(lo, key - 1), (key, hi)])]

    def merge(self, stream_name: str, shard_to_merge: str, adjacent_shard_to_merge: str) -> str:
        """Merge two open, hash-adjacent shards; the child's shard id."""
        stream = self._stream_named(stream_name)
        with self.put_lock:
            a = self._open_shard(stream, shard_to_merge)
            b = self._open_shard(stream, adjacent_shard_to_merge)
            if a is b or not (a.hash_range[1] + 1 == b.hash_range[0] or b.hash_range[1] + 1 == a.hash_range[0]):
                raise _Fail("InvalidArgumentException", f"Shards {a.shard_id} and {b.shard_id} in stream {stream.spec.name} under account "
                                                        f"{stream.spec.account} are not an adjacent pair of shards eligible for merging")
            lo, hi = min(a.hash_range[0], b.hash_range[0]), max(a.hash_range[1], b.hash_range[1])
            return self._reshard(stream, [a, b], [(lo, hi)])[0].shard_id

    # -- consumers
    def register_consumer(self, stream_name: str, consumer_name: str, activation_seconds: float = 0.0) -> str:
        """Register a consumer of a stream, ACTIVE ``activation_seconds`` from now (at once by default); its ARN."""
        stream = self._stream_named(stream_name)
        if not isinstance(consumer_name, str) or not 1 <= len(consumer_name) <= 128:
            raise _Fail("ValidationException", "1 validation error detected: Value at 'consumerName' failed to satisfy constraint: "
                                               "Member must have length between 1 and 128")
        now = round(time.time(), 3)
        with self.lock:
            if any(c.stream_arn == stream.spec.arn and c.name == consumer_name for c in self.consumers.values()):
                raise _Fail("ResourceInUseException", f"Consumer {consumer_name} under stream {stream.spec.arn} already exists "
                                                      f"for account {stream.spec.account}.")
            consumer = _Consumer(consumer_name, f"{stream.spec.arn}/consumer/{consumer_name}:{int(now)}", stream.spec.arn, now,
                                 now + activation_seconds)
            self.consumers[consumer.arn] = consumer
        return consumer.arn

    def consumer_creating(self, consumer_arn: str, seconds: float) -> None:
        """Make a consumer ``CREATING`` for ``seconds`` from now (then ACTIVE again)."""
        with self.lock:
            self.consumers[consumer_arn].active_at = time.time() + seconds

    def deregister_consumer(self, consumer_arn: str) -> None:
        with self.lock:
            self.consumers.pop(consumer_arn, None)

    def consumers_of(self, stream: _Stream) -> List[_Consumer]:
        with self.lock:
            return sorted((c for c in self.consumers.values() if c.stream_arn == stream.spec.arn), key=lambda c: (c.created, c.name))

    def total_records(self, name: Optional[str] = None) -> int:
        return sum(len(s.records) for st in self.stream_list() if name in (None, st.spec.name) for s in st.shards)

    def expected_keys(self, name: str) -> set:
        """Every (shard id, sequence number) of a stream: what a full read must deliver, once each."""
        return {(s.shard_id, s.sequence(o)) for s in self.streams[name].shards for o in range(len(s.records))}

    def payloads(self, name: str) -> List[Tuple[str, bytes]]:
        """(partition key, data) of every record, shard by shard in order (pre-built ones, then the ones put)."""
        stream = self.streams[name]
        out = []
        for s in stream.shards:
            for o in range(len(s.records)):
                if o < s.built:
                    out.append(stream.spec.make_record(s.index, o))
                else:
                    record = json.loads(s.records[o])
                    out.append((record["PartitionKey"], base64.b64decode(record["Data"])))
        return out


class _Fail(Exception):
    def __init__(self, error_type: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.response = Response.error(status, error_type, message)


def _token(*parts: Any) -> str:
    return base64.urlsafe_b64encode("\x1f".join(str(p) for p in parts).encode()).decode()


def _untoken(token: Any, parts: int) -> List[str]:
    try:
        values = base64.urlsafe_b64decode(str(token).encode()).decode().split("\x1f")
    except Exception:  # noqa: BLE001 - any garbage is an invalid token
        values = []
    if len(values) != parts:
        raise _Fail("InvalidArgumentException", "Invalid token.")
    return values


def _put_entry(record: Any, where: str) -> Tuple[str, bytes, Optional[int]]:
    """(partition key, data, explicit hash key) of one put request entry, checked as Kinesis checks it."""
    if not isinstance(record, dict):
        raise _Fail("ValidationException", f"1 validation error detected: Value at '{where}' must be an object.")
    key, blob, explicit = record.get("PartitionKey"), record.get("Data"), record.get("ExplicitHashKey")
    if not isinstance(key, str) or not 1 <= len(key) <= 256:
        raise _Fail("ValidationException", f"1 validation error detected: Value at '{where}.partitionKey' failed to satisfy constraint: "
                                           "Member must have length between 1 and 256")
    if not isinstance(blob, str):
        raise _Fail("ValidationException", f"1 validation error detected: Value at '{where}.data' failed to satisfy constraint: Member must not be null")
    try:
        data = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise _Fail("SerializationException", f"Value at '{where}.data' is not valid base64.") from None
    if len(data) > MAX_DATA_BYTES:
        raise _Fail("ValidationException", f"1 validation error detected: Value at '{where}.data' failed to satisfy constraint: "
                                           f"Member must have length less than or equal to {MAX_DATA_BYTES}")
    hash_value: Optional[int] = None
    if explicit is not None:
        text = str(explicit)
        if not text.isdigit() or int(text) > MAX_HASH:
            raise _Fail("InvalidArgumentException", f"ExplicitHashKey {text[:60]} is not a decimal number in [0, 2^128 - 1].")
        hash_value = int(text)
    return key, data, hash_value


@dataclass
class _SubscriptionState:
    """Of one (consumer, shard): is a subscription open, when did the last one open and end (monotonic)."""

    open: bool = False
    opened_at: float = float("-inf")
    ended_at: float = float("-inf")
    generation: int = 0  # of the newest subscription; an older one still sending ends (taken over)


class _SubscriptionBody:
    """The streamed body of one subscription: iterates the event generator; ``close()`` (always called by the
    server when the response ends, even if it never started) closes the generator and frees the (consumer, shard)."""

    def __init__(self, events: Iterator[bytes], release: Callable[[], None]) -> None:
        self._events = events
        self._release: Optional[Callable[[], None]] = release

    def __iter__(self) -> "_SubscriptionBody":
        return self

    def __next__(self) -> bytes:
        return next(self._events)

    def close(self) -> None:
        release, self._release = self._release, None
        if release is None:
            return
        try:
            close = getattr(self._events, "close", None)
            if close is not None:
                close()
        finally:
            release()


class ReplayBackend(Backend):
    def __init__(self, data: ReplayData) -> None:
        self.data = data
        self._lock = threading.Lock()
        self.records_served: Counter = Counter()  # (stream, shard id) -> records sent in GetRecords responses
        # wall-clock time of the first GetRecords since it was last set to None (the benchmark's start-up figure)
        self.first_get_records_at: Optional[float] = None
        # enhanced fan-out
        self.subscriptions_started: Counter = Counter()  # (consumer ARN, shard id) -> SubscribeToShard streams started
        self.subscriptions_refused: Counter = Counter()  # (consumer ARN, shard id) -> ResourceInUseException answers
        self.subscriptions_taken_over: Counter = Counter()  # (consumer ARN, shard id) -> open subscriptions a newer one ended
        self.subscription_events: Counter = Counter()  # (consumer ARN, shard id) -> SubscribeToShardEvent events sent
        self.subscription_records_served: Counter = Counter()  # (stream, shard id) -> records sent in those events
        self.subscription_faults_injected: Counter = Counter()  # "reset" / "disconnect" / "exception:<type>" -> times
        self._subscriptions: Dict[Tuple[str, str], _SubscriptionState] = {}

    def open_subscriptions(self, consumer_arn: Optional[str] = None, shard_id: Optional[str] = None) -> int:
        """Subscriptions whose body is being sent now (of one consumer and/or shard, or all)."""
        with self._lock:
            return sum(1 for (arn, sid), state in self._subscriptions.items()
                       if state.open and consumer_arn in (None, arn) and shard_id in (None, sid))

    def respond(self, request: Request, session: Dict[str, Any]) -> Response:
        if "json" not in request.content_type:
            return Response.error(400, "SerializationException", f"the replay server speaks AWS JSON 1.1 only, not {request.content_type!r}")
        handler = getattr(self, f"_op_{request.operation}", None)
        if handler is None:
            return Response.error(400, "UnknownOperationException", f"replay server does not serve {request.operation!r}")
        try:
            return handler(request.json())
        except _Fail as fail:
            return fail.response

    # -- helpers
    def _stream(self, params: Dict[str, Any]) -> _Stream:
        name, arn = params.get("StreamName"), params.get("StreamARN")
        stream = self.data.by_arn.get(arn) if arn else self.data.streams.get(name or "")
        if stream is None:
            raise _Fail("ResourceNotFoundException", f"Stream {arn or name} under account 000000000000 not found.")
        return stream

    @staticmethod
    def _shard(stream: _Stream, shard_id: Any) -> _Shard:
        shard = stream.by_id.get(str(shard_id))
        if shard is None:
            raise _Fail("ResourceNotFoundException", f"Shard {shard_id} in stream {stream.spec.name} under account 000000000000 does not exist")
        return shard

    @staticmethod
    def _offset_of(shard: _Shard, sequence: Any, operation: str) -> int:
        """The offset of the record with that sequence number; -1 for the shard's starting sequence number."""
        text = str(sequence)
        if len(text) != 56 or not text.isdigit() or not text.startswith(shard.sequence_prefix):
            raise _Fail("InvalidArgumentException", f"StartingSequenceNumber {text} used in {operation} on shard {shard.shard_id} is invalid.")
        return int(text[len(shard.sequence_prefix):]) - 1

    def _start_offset(self, shard: _Shard, kind: Any, sequence: Any, timestamp: Any, operation: str) -> int:
        """The offset a GetShardIterator / SubscribeToShard starting position reads from first."""
        length = len(shard.records)  # once: the shard may grow meanwhile
        if kind == "TRIM_HORIZON":
            return 0
        if kind == "LATEST":
            return length
        if kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            offset = self._offset_of(shard, sequence, operation)
            if offset >= length:
                raise _Fail("InvalidArgumentException", f"StartingSequenceNumber {sequence} used in {operation} is beyond the end of shard {shard.shard_id}.")
            return max(offset, 0) if kind == "AT_SEQUENCE_NUMBER" else offset + 1
        if kind == "AT_TIMESTAMP":
            try:
                moment = float(timestamp or 0)
            except (TypeError, ValueError):
                raise _Fail("InvalidArgumentException", f"Timestamp {timestamp!r} used in {operation} is not epoch seconds.") from None
            return bisect.bisect_left(shard.arrivals, moment, 0, length)
        raise _Fail("InvalidArgumentException", f"{'ShardIteratorType' if operation == 'GetShardIterator' else 'StartingPosition.Type'} "
                                                f"{kind!r} is not valid; one of {', '.join(POSITION_TYPES)}.")

    def _consumer(self, params: Dict[str, Any]) -> _Consumer:
        """By ``ConsumerARN``, or ``StreamARN`` + ``ConsumerName``."""
        arn = params.get("ConsumerARN")
        if arn:
            consumer = self.data.consumers.get(str(arn))
        else:
            stream = self._stream({"StreamARN": params.get("StreamARN")})
            name = params.get("ConsumerName")
            consumer = next((c for c in self.data.consumers_of(stream) if c.name == name), None)
        if consumer is None:
            what = arn or f"{params.get('ConsumerName')} under stream {params.get('StreamARN')}"
            raise _Fail("ResourceNotFoundException", f"Consumer {what} under account 000000000000 not found.")
        return consumer

    # -- control plane
    def _op_CreateStream(self, params: Dict[str, Any]) -> Response:
        name, count = params.get("StreamName"), params.get("ShardCount", 1)
        if not isinstance(name, str) or not name:
            raise _Fail("ValidationException", "1 validation error detected: Value at 'streamName' failed to satisfy constraint: Member must not be null")
        if not isinstance(count, int) or not 1 <= count <= 10_000:
            raise _Fail("InvalidArgumentException", f"ShardCount {count!r} must be a positive integer.")
        self.data.add_stream(ReplayStream(name, shards=count, records_per_shard=0, created_at=round(time.time(), 3)))
        return Response.raw_json(b"{}")

    def _op_DescribeStream(self, params: Dict[str, Any]) -> Response:
        stream = self._stream(params)
        limit = int(params.get("Limit") or 100)
        start = 0
        if params.get("ExclusiveStartShardId"):
            start = self._shard(stream, params["ExclusiveStartShardId"]).index + 1
        shards = stream.shards[start : start + limit]
        return Response.json(
            {
                "StreamDescription": {
                    "StreamName": stream.spec.name,
                    "StreamARN": stream.spec.arn,
                    "StreamStatus": "ACTIVE",
                    "StreamModeDetails": {"StreamMode": "PROVISIONED"},
                    "Shards": [s.describe() for s in shards],
                    "HasMoreShards": start + limit < len(stream.shards),
                    "RetentionPeriodHours": 24,
                    "StreamCreationTimestamp": stream.spec.created_at,
                    "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
                    "EncryptionType": "NONE",
                }
            }
        )

    def _op_DescribeStreamSummary(self, params: Dict[str, Any]) -> Response:
        stream = self._stream(params)
        return Response.json(
            {
                "StreamDescriptionSummary": {
                    "StreamName": stream.spec.name,
                    "StreamARN": stream.spec.arn,
                    "StreamStatus": "ACTIVE",
                    "StreamModeDetails": {"StreamMode": "PROVISIONED"},
                    "RetentionPeriodHours": 24,
                    "StreamCreationTimestamp": stream.spec.created_at,
                    "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
                    "EncryptionType": "NONE",
                    "OpenShardCount": len(stream.open_shards),
                    "ConsumerCount": len(self.data.consumers_of(stream)),
                }
            }
        )

    def _op_ListStreams(self, params: Dict[str, Any]) -> Response:
        streams = self.data.stream_list()
        return Response.json(
            {
                "StreamNames": [s.spec.name for s in streams],
                "HasMoreStreams": False,
                "StreamSummaries": [
                    {
                        "StreamName": s.spec.name,
                        "StreamARN": s.spec.arn,
                        "StreamStatus": "ACTIVE",
                        "StreamModeDetails": {"StreamMode": "PROVISIONED"},
                        "StreamCreationTimestamp": s.spec.created_at,
                    }
                    for s in streams
                ],
            }
        )

    def _op_ListShards(self, params: Dict[str, Any]) -> Response:
        limit = int(params.get("MaxResults") or 1000)
        if params.get("NextToken"):
            if params.get("StreamName") or params.get("StreamARN"):
                raise _Fail("InvalidArgumentException", "NextToken and StreamName cannot be provided together.")
            name, start_text = _untoken(params["NextToken"], 2)
            stream, start = self._stream({"StreamName": name}), int(start_text)
        else:
            stream, start = self._stream(params), 0
        shards = stream.shards[start : start + limit]
        body: Dict[str, Any] = {"Shards": [s.describe() for s in shards]}
        if start + limit < len(stream.shards):
            body["NextToken"] = _token(stream.spec.name, start + limit)
        return Response.json(body)

    def _op_SplitShard(self, params: Dict[str, Any]) -> Response:
        stream = self._stream(params)
        key = params.get("NewStartingHashKey")
        if not isinstance(key, str) or not key.isdigit() or int(key) > MAX_HASH:
            raise _Fail("ValidationException", f"1 validation error detected: Value '{key}' at 'newStartingHashKey' failed to satisfy "
                                               "constraint: Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})")
        self.data.split(stream.spec.name, params.get("ShardToSplit"), int(key))
        return Response.raw_json(b"{}")

    def _op_MergeShards(self, params: Dict[str, Any]) -> Response:
        stream = self._stream(params)
        self.data.merge(stream.spec.name, params.get("ShardToMerge"), params.get("AdjacentShardToMerge"))
        return Response.raw_json(b"{}")

    # -- consumers
    def _op_RegisterStreamConsumer(self, params: Dict[str, Any]) -> Response:
        stream = self._stream({"StreamARN": params.get("StreamARN")})
        arn = self.data.register_consumer(stream.spec.name, params.get("ConsumerName"), self.data.consumer_activation_seconds)
        consumer = self.data.consumers[arn]
        return Response.json({"Consumer": {"ConsumerName": consumer.name, "ConsumerARN": consumer.arn, "ConsumerStatus": "CREATING",
                                           "ConsumerCreationTimestamp": consumer.created}})

    def _op_DescribeStreamConsumer(self, params: Dict[str, Any]) -> Response:
        consumer = self._consumer(params)
        return Response.json({"ConsumerDescription": {**consumer.summary(), "StreamARN": consumer.stream_arn}})

    def _op_ListStreamConsumers(self, params: Dict[str, Any]) -> Response:
        stream = self._stream({"StreamARN": params.get("StreamARN")})
        return Response.json({"Consumers": [c.summary() for c in self.data.consumers_of(stream)]})

    def _op_DeregisterStreamConsumer(self, params: Dict[str, Any]) -> Response:
        self.data.deregister_consumer(self._consumer(params).arn)
        return Response.raw_json(b"{}")

    # -- data plane: writes
    def _op_PutRecord(self, params: Dict[str, Any]) -> Response:
        stream = self._stream(params)
        ((shard, offset),) = self.data.put(stream, [_put_entry(params, "record")])
        return Response.json({"ShardId": shard.shard_id, "SequenceNumber": shard.sequence(offset), "EncryptionType": "NONE"})

    def _op_PutRecords(self, params: Dict[str, Any]) -> Response:
        stream = self._stream(params)
        records = params.get("Records")
        if not isinstance(records, list) or not 1 <= len(records) <= MAX_PUT_RECORDS:
            count = len(records) if isinstance(records, list) else 0
            raise _Fail("ValidationException", f"1 validation error detected: Value '{count} records' at 'records' failed to satisfy "
                                               f"constraint: Member must have length between 1 and {MAX_PUT_RECORDS}")
        placed = self.data.put(stream, [_put_entry(record, f"records.{i + 1}.member") for i, record in enumerate(records)])
        body = b'{"FailedRecordCount":0,"Records":[%s],"EncryptionType":"NONE"}' % b",".join(
            b'{"SequenceNumber":"%s","ShardId":"%s"}' % (shard.sequence(offset).encode(), shard.shard_id.encode()) for shard, offset in placed)
        return Response.raw_json(body)

    # -- data plane: reads
    def _op_GetShardIterator(self, params: Dict[str, Any]) -> Response:
        stream = self._stream(params)
        shard = self._shard(stream, params.get("ShardId"))
        offset = self._start_offset(shard, params.get("ShardIteratorType"), params.get("StartingSequenceNumber"),
                                    params.get("Timestamp"), "GetShardIterator")
        return Response.json({"ShardIterator": _token(stream.spec.name, shard.shard_id, offset)})

    def _op_GetRecords(self, params: Dict[str, Any]) -> Response:
        if self.first_get_records_at is None:
            self.first_get_records_at = time.time()
        limit = int(params.get("Limit") or 10000)
        if not 1 <= limit <= 10000:
            raise _Fail("InvalidArgumentException", f"Limit {limit} must be between 1 and 10000.")
        name, shard_id, offset_text = _untoken(params.get("ShardIterator"), 3)
        stream = self._stream({"StreamName": name})
        shard = self._shard(stream, shard_id)
        offset = int(offset_text)
        closed = shard.closed  # before the length: a closed shard's length is final
        length = len(shard.records)  # once: records (and their arrivals) below it are complete
        end = min(offset + limit, length)
        if end < offset:  # an iterator past the tip (cannot be made here, but never answer a negative page)
            end = offset
        behind = 0 if end >= length else max(1, int((time.time() - shard.arrivals[end]) * 1000))
        with self._lock:
            self.records_served[(name, shard_id)] += end - offset
        if closed and end >= length:  # the end of a closed shard: no NextShardIterator, its children instead
            return Response.raw_json(b"".join((
                b'{"Records":[',
                b",".join(shard.records[offset:end]),
                b'],"MillisBehindLatest":0,"ChildShards":',
                json.dumps(shard.child_shards(), separators=(",", ":")).encode(),
                b"}",
            )))
        body = b"".join(
            (
                b'{"Records":[',
                b",".join(shard.records[offset:end]),
                b'],"NextShardIterator":"',
                _token(name, shard_id, end).encode(),
                b'","MillisBehindLatest":',
                str(behind).encode(),
                b"}",
            )
        )
        return Response.raw_json(body)

    # -- enhanced fan-out
    def _op_SubscribeToShard(self, params: Dict[str, Any]) -> Response:
        arn = params.get("ConsumerARN")
        consumer = self.data.consumers.get(str(arn))
        if consumer is None:
            raise _Fail("ResourceNotFoundException", f"Consumer {arn} under account 000000000000 not found.")
        stream = self._stream({"StreamARN": consumer.stream_arn})
        shard = self._shard(stream, params.get("ShardId"))
        key = (consumer.arn, shard.shard_id)
        if consumer.status() != "ACTIVE":
            with self._lock:
                self.subscriptions_refused[key] += 1
            raise _Fail("ResourceInUseException", f"Consumer {consumer.arn} is not in ACTIVE state.")
        position = params.get("StartingPosition")
        if not isinstance(position, dict):
            raise _Fail("ValidationException", "1 validation error detected: Value at 'startingPosition' failed to satisfy constraint: Member must not be null")
        offset = self._start_offset(shard, position.get("Type"), position.get("SequenceNumber"), position.get("Timestamp"), "SubscribeToShard")
        with self._lock:
            state = self._subscriptions.setdefault(key, _SubscriptionState())
            now = time.monotonic()
            cooldown = self.data.resubscribe_cooldown_seconds
            if now - state.opened_at < cooldown:
                self.subscriptions_refused[key] += 1
                raise _Fail("ResourceInUseException", f"Another active subscription exists for this consumer: "
                                                      f"{stream.spec.account}:{stream.spec.name}:{shard.shard_id}:{consumer.name}")
            if state.open:
                self.subscriptions_taken_over[key] += 1
            state.generation += 1
            generation = state.generation
            state.open, state.opened_at = True, now
            self.subscriptions_started[key] += 1
            number = self.subscriptions_started[key]

        def release() -> None:
            with self._lock:
                if state.generation == generation:
                    state.open, state.ended_at = False, time.monotonic()

        def current() -> bool:
            return state.generation == generation

        events = self._subscription_events(consumer, stream, shard, offset, number, current)
        return Response(200, _SubscriptionBody(events, release),
                        [("Content-Type", event_stream.CONTENT_TYPE), ("x-amzn-RequestId", str(uuid.uuid4()))])

    def _subscription_events(
        self, consumer: _Consumer, stream: _Stream, shard: _Shard, offset: int, number: int, current: Callable[[], bool] = lambda: True,
    ) -> Iterator[bytes]:
        """The event-stream messages of one subscription (see the module docstring); ``b""`` is an idle tick."""
        data = self.data
        key = (consumer.arn, shard.shard_id)
        started = time.monotonic()
        last_event: Optional[float] = None
        sent = 0
        yield event_stream.event("initial-response", b"{}")
        while True:
            faults = data.subscription_faults
            if faults is not None:
                fault = faults(number, sent)
                if fault is not None:
                    yield from self._subscription_fault(fault)
                    return
            now = time.monotonic()
            if now - started >= data.subscription_seconds or data.consumers.get(consumer.arn) is not consumer or not current():
                return  # its time is up, its consumer is gone, or a newer subscription took the shard over: it ends cleanly
            closed = shard.closed  # before the length: a closed shard's length is final
            length = len(shard.records)
            if offset < length or closed or last_event is None or now - last_event >= data.heartbeat_seconds:
                end = min(length, offset + max(1, data.event_max_records))
                budget, size, stop = data.event_max_bytes, 0, offset
                while stop < end:
                    size += len(shard.records[stop]) + 1
                    if size > budget and stop > offset:
                        break
                    stop += 1
                end = stop
                finished = closed and end >= length
                behind = 0 if end >= length else max(1, int((time.time() - shard.arrivals[end]) * 1000))
                if finished:
                    tail = b'null,"MillisBehindLatest":0,"ChildShards":' + json.dumps(shard.child_shards(), separators=(",", ":")).encode()
                else:
                    continuation = shard.sequence(end - 1) if end > 0 else shard.starting_sequence
                    tail = b'"%s","MillisBehindLatest":%d' % (continuation.encode(), behind)
                payload = b'{"Records":[%s],"ContinuationSequenceNumber":%s}' % (b",".join(shard.records[offset:end]), tail)
                yield event_stream.event("SubscribeToShardEvent", payload)
                with self._lock:  # counted once written
                    self.subscription_events[key] += 1
                    self.subscription_records_served[(stream.spec.name, shard.shard_id)] += end - offset
                offset, sent, last_event = end, sent + 1, time.monotonic()
                if finished or (data.subscription_max_events is not None and sent >= data.subscription_max_events):
                    return  # the shard's end, or (a test knob) the subscription's last event: the body ends cleanly
            else:
                yield b""  # idle: lets the server notice a client gone or a stop
                time.sleep(data.subscription_poll_seconds)

    def _subscription_fault(self, fault: SubscriptionFault) -> Iterator[bytes]:
        if fault in ("reset", "disconnect"):
            with self._lock:
                self.subscription_faults_injected[str(fault)] += 1
            raise DropConnection(rst=fault == "reset")
        if isinstance(fault, tuple) and len(fault) in (2, 3) and fault[0] == "exception":
            text = fault[2] if len(fault) == 3 else "Internal service failure."
            with self._lock:
                self.subscription_faults_injected[f"exception:{fault[1]}"] += 1
            yield event_stream.exception(str(fault[1]), str(text))
            return
        raise ValueError(f"subscription_faults returned {fault!r}; expected None, 'reset', 'disconnect' or ('exception', type[, message])")


# ------------------------------------------------------------------------------------------ a separate process
def _stream_arg(text: str) -> ReplayStream:
    parts = text.split(":")
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts[1:]):
        raise argparse.ArgumentTypeError(f"expected NAME:SHARDS[:RECORDS_PER_SHARD], got {text!r}")
    return ReplayStream(parts[0], shards=int(parts[1]), records_per_shard=int(parts[2]) if len(parts) == 3 else 0)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m integration_tests.replay", description="In-memory Kinesis on 127.0.0.1 until stdin closes.")
    parser.add_argument("--stream", action="append", type=_stream_arg, default=[], help="NAME:SHARDS[:RECORDS_PER_SHARD] (repeatable)")
    parser.add_argument("--consumer", action="append", default=[], help="STREAM:CONSUMER_NAME, registered ACTIVE (repeatable)")
    parser.add_argument("--resubscribe-cooldown-seconds", type=float, default=5.0)
    parser.add_argument("--subscription-seconds", type=float, default=300.0)
    parser.add_argument("--latency-seconds", type=float, default=0.0)
    parser.add_argument("--max-lifetime-seconds", type=float, default=3600.0)
    parser.add_argument("--max-requests", type=int, default=50_000_000)
    args = parser.parse_args(argv)
    data = ReplayData(args.stream, resubscribe_cooldown_seconds=args.resubscribe_cooldown_seconds,
                      subscription_seconds=args.subscription_seconds)
    consumers = {}
    for text in args.consumer:
        stream_name, _, consumer_name = text.partition(":")
        if not consumer_name:
            parser.error(f"--consumer expects STREAM:CONSUMER_NAME, got {text!r}")
        consumers[f"{stream_name}/{consumer_name}"] = data.register_consumer(stream_name, consumer_name)
    server = FaultProxy(ReplayBackend(data), latency_seconds=args.latency_seconds,
                        max_lifetime_seconds=args.max_lifetime_seconds, max_requests=args.max_requests)
    with server:
        print(json.dumps({"endpoint_url": server.endpoint_url, "consumers": consumers}), flush=True)
        closed = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.read(), closed.set()), daemon=True).start()
        while not closed.wait(0.5) and server.stop_reason is None:
            pass
        snapshot = server.snapshot()
        backend = server.backend
        assert isinstance(backend, ReplayBackend)
        with backend._lock:
            served = sum(backend.records_served.values())
            pushed = sum(backend.subscription_records_served.values())
    print(json.dumps({"records_put": data.records_put, "records_served": served, "subscription_records_served": pushed,
                      "requests": snapshot["requests"],
                      "stop_reason": snapshot["stop_reason"], "backend_errors": server.backend_errors[:5]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
