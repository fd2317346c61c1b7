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

What it serves (enough for source-kinesis, a bare boto3 loop and a boto3 producer; all shards open, no resharding):
``CreateStream`` (``ShardCount`` shards, empty and ACTIVE at once; an existing name → ``ResourceInUseException``),
``DescribeStream`` (``Limit``/``ExclusiveStartShardId`` paging), ``DescribeStreamSummary``, ``ListStreams``,
``ListShards`` (``MaxResults``/``NextToken`` paging; a ``NextToken`` together with a stream name is rejected as
Kinesis does), ``PutRecord`` and ``PutRecords`` (below), ``GetShardIterator`` (``TRIM_HORIZON``, ``LATEST``,
``AT_SEQUENCE_NUMBER``, ``AFTER_SEQUENCE_NUMBER``, ``AT_TIMESTAMP``) and ``GetRecords`` (``Limit`` ≤ 10,000;
``NextShardIterator`` always). Iterators are opaque tokens encoding (stream, shard, offset), so an iterator taken
on a growing shard sees every record appended after its position. Unknown streams, shards or iterators get the same
error types Kinesis returns.

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

Concurrency: the ``FaultProxy`` serves each client connection on its own thread, so requests run concurrently.
Puts are serialized by one lock (sequence numbers and arrival times are assigned under it, and a record's arrival
time is appended before the record itself); readers take no lock: they read a shard's length once and only look at
records (and arrival times) below it, which Python's list append makes safe. ``CreateStream`` and ``ListStreams``
share the data's stream lock.

Run as a separate process (so a benchmark's client load does not share its GIL)::

    python -m integration_tests.replay --stream NAME:SHARDS[:RECORDS_PER_SHARD] ... [--max-lifetime-seconds N]

prints one JSON line ``{"endpoint_url": ...}`` when it listens (127.0.0.1 only, a free port), serves until its
stdin closes (or its lifetime ends), then prints one JSON line of counters (puts, records served, requests) and exits.
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
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from integration_tests.fault_proxy import Backend, FaultProxy, Request, Response

MAX_HASH = 2**128 - 1
MAX_PUT_RECORDS = 500  # records per PutRecords call
MAX_DATA_BYTES = 1 << 20  # a record's data, decoded (Kinesis' default limit: 1 MiB)
RecordFactory = Callable[[int, int], Tuple[str, bytes]]  # (shard index, offset in shard) -> (partition key, data)


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

    def sequence(self, offset: int) -> str:
        return f"{self.sequence_prefix}{offset:040d}"  # 56 digits, increasing within the shard

    def describe(self) -> Dict[str, Any]:
        return {
            "ShardId": self.shard_id,
            "HashKeyRange": {"StartingHashKey": str(self.hash_range[0]), "EndingHashKey": str(self.hash_range[1])},
            "SequenceNumberRange": {"StartingSequenceNumber": self.sequence(0)},
        }


@dataclass
class _Stream:
    spec: ReplayStream
    shards: List[_Shard]
    by_id: Dict[str, _Shard] = field(default_factory=dict)
    starts: List[int] = field(default_factory=list)  # each shard's StartingHashKey, ascending (routing by bisect)

    def shard_for(self, key: int) -> _Shard:
        return self.shards[bisect.bisect_right(self.starts, key) - 1]


def _encode(sequence: str, arrival: float, data: bytes, key: str) -> bytes:
    # Formatted by hand (3x faster than json.dumps of a dict); the key is JSON-escaped.
    return b'{"SequenceNumber":"%s","ApproximateArrivalTimestamp":%s,"Data":"%s","PartitionKey":%s,"EncryptionType":"NONE"}' % (
        sequence.encode(), repr(arrival).encode(), base64.b64encode(data), json.dumps(key).encode())


class ReplayData:
    """Streams of pre-encoded records, built once (~5-15 µs per record with the default factory), that puts extend."""

    def __init__(self, streams: List[ReplayStream]) -> None:
        self.streams: Dict[str, _Stream] = {}
        self.by_arn: Dict[str, _Stream] = {}
        self.lock = threading.Lock()  # stream creation and listing
        self.put_lock = threading.Lock()  # appends (sequence numbers and arrival times are assigned under it)
        self.records_put = 0
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
        stream = _Stream(spec, shards, {s.shard_id: s for s in shards}, [s.hash_range[0] for s in shards])
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
        routed = [(stream.shard_for(hash_key(key) if explicit is None else explicit), key, data) for key, data, explicit in entries]
        out = []
        with self.put_lock:
            now = round(time.time(), 3)
            for shard, key, data in routed:
                offset = len(shard.records)
                arrival = max(now, shard.arrivals[-1]) if shard.arrivals else now
                shard.arrivals.append(arrival)  # before the record: a reader never sees a record without its arrival
                shard.records.append(_encode(shard.sequence(offset), arrival, data, key))
                out.append((shard, offset))
            self.records_put += len(routed)
        return out

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


class ReplayBackend(Backend):
    def __init__(self, data: ReplayData) -> None:
        self.data = data
        self._lock = threading.Lock()
        self.records_served: Counter = Counter()  # (stream, shard id) -> records sent in GetRecords responses
        # wall-clock time of the first GetRecords since it was last set to None (the benchmark's start-up figure)
        self.first_get_records_at: Optional[float] = None

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
    def _offset_of(shard: _Shard, sequence: Any) -> int:
        text = str(sequence)
        if len(text) != 56 or not text.isdigit() or not text.startswith(shard.sequence_prefix):
            raise _Fail("InvalidArgumentException", f"StartingSequenceNumber {text} used in GetShardIterator on shard {shard.shard_id} is invalid.")
        return int(text[len(shard.sequence_prefix):])

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
                    "OpenShardCount": len(stream.shards),
                    "ConsumerCount": 0,
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
        kind = params.get("ShardIteratorType")
        length = len(shard.records)  # once: the shard may grow meanwhile
        if kind == "TRIM_HORIZON":
            offset = 0
        elif kind == "LATEST":
            offset = length
        elif kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            offset = self._offset_of(shard, params.get("StartingSequenceNumber"))
            if offset >= length:
                raise _Fail("InvalidArgumentException", f"StartingSequenceNumber is beyond the end of shard {shard.shard_id}.")
            offset += kind == "AFTER_SEQUENCE_NUMBER"
        elif kind == "AT_TIMESTAMP":
            offset = bisect.bisect_left(shard.arrivals, float(params.get("Timestamp") or 0), 0, length)
        else:
            raise _Fail("InvalidArgumentException", f"ShardIteratorType {kind!r} is not valid.")
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
        length = len(shard.records)  # once: records (and their arrivals) below it are complete
        end = min(offset + limit, length)
        if end < offset:  # an iterator past the tip (cannot be made here, but never answer a negative page)
            end = offset
        behind = 0 if end >= length else max(1, int((time.time() - shard.arrivals[end]) * 1000))
        with self._lock:
            self.records_served[(name, shard_id)] += end - offset
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


# ------------------------------------------------------------------------------------------ a separate process
def _stream_arg(text: str) -> ReplayStream:
    parts = text.split(":")
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts[1:]):
        raise argparse.ArgumentTypeError(f"expected NAME:SHARDS[:RECORDS_PER_SHARD], got {text!r}")
    return ReplayStream(parts[0], shards=int(parts[1]), records_per_shard=int(parts[2]) if len(parts) == 3 else 0)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m integration_tests.replay", description="In-memory Kinesis on 127.0.0.1 until stdin closes.")
    parser.add_argument("--stream", action="append", type=_stream_arg, default=[], help="NAME:SHARDS[:RECORDS_PER_SHARD] (repeatable)")
    parser.add_argument("--latency-seconds", type=float, default=0.0)
    parser.add_argument("--max-lifetime-seconds", type=float, default=3600.0)
    parser.add_argument("--max-requests", type=int, default=50_000_000)
    args = parser.parse_args(argv)
    data = ReplayData(args.stream)
    server = FaultProxy(ReplayBackend(data), latency_seconds=args.latency_seconds,
                        max_lifetime_seconds=args.max_lifetime_seconds, max_requests=args.max_requests)
    with server:
        print(json.dumps({"endpoint_url": server.endpoint_url}), flush=True)
        closed = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.read(), closed.set()), daemon=True).start()
        while not closed.wait(0.5) and server.stop_reason is None:
            pass
        snapshot = server.snapshot()
        backend = server.backend
        assert isinstance(backend, ReplayBackend)
        with backend._lock:
            served = sum(backend.records_served.values())
    print(json.dumps({"records_put": data.records_put, "records_served": served, "requests": snapshot["requests"],
                      "stop_reason": snapshot["stop_reason"], "backend_errors": server.backend_errors[:5]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
