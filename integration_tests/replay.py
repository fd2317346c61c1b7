"""The GetRecords replay backend: real Kinesis JSON 1.1 responses served from memory, no upstream.

Used through ``FaultProxy.replay(data, latency_seconds=...)`` (``fault_proxy.py``), so the benchmark gets the same
server, latency and fault injection as the reliability suite::

    data = ReplayData([ReplayStream("bench", shards=8, records_per_shard=50_000)])
    with FaultProxy.replay(data, latency_seconds=0.030) as server:
        config = {..., "endpoint_url": server.endpoint_url, "streams": ["bench"]}
        ...  # read; then data.expected_keys("bench") / server.backend.records_served

What it serves (enough for source-kinesis and a bare boto3 loop; all shards open):
``DescribeStream`` (``Limit``/``ExclusiveStartShardId`` paging), ``DescribeStreamSummary``, ``ListStreams``,
``ListShards`` (``MaxResults``/``NextToken`` paging; a ``NextToken`` together with a stream name is rejected as
Kinesis does), ``GetShardIterator`` (``TRIM_HORIZON``, ``LATEST``, ``AT_SEQUENCE_NUMBER``,
``AFTER_SEQUENCE_NUMBER``, ``AT_TIMESTAMP``) and ``GetRecords`` (``Limit`` ≤ 10,000; ``NextShardIterator`` always;
``MillisBehindLatest`` from the arrival times, 0 once the page reaches the end of the shard). Iterators are opaque
tokens encoding (stream, shard, offset). Records are encoded once at build time; a page is one ``bytes.join`` of
pre-encoded records, so the server costs next to nothing per record. Unknown streams, shards or iterators get the
same error types Kinesis returns.
"""
from __future__ import annotations

import base64
import bisect
import datetime as dt
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from integration_tests.fault_proxy import Backend, Request, Response

MAX_HASH = 2**128 - 1
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


@dataclass
class ReplayStream:
    name: str
    shards: int = 1
    records_per_shard: int = 100
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
    arrivals: List[float]
    sequence_prefix: str

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


class ReplayData:
    """Streams of pre-encoded records, built once (~5-15 µs per record with the default factory)."""

    def __init__(self, streams: List[ReplayStream]) -> None:
        self.streams: Dict[str, _Stream] = {}
        self.by_arn: Dict[str, _Stream] = {}
        for spec in streams:
            start = spec.arrival_start if spec.arrival_start is not None else dt.datetime.now(dt.timezone.utc).timestamp() - 3600
            width = (MAX_HASH + 1) // spec.shards
            shards = []
            for i in range(spec.shards):
                hash_range = (i * width, MAX_HASH if i == spec.shards - 1 else (i + 1) * width - 1)
                shard = _Shard(f"shardId-{i:012d}", i, hash_range, [], [], f"4959{i:012d}")
                for offset in range(spec.records_per_shard):
                    key, data = spec.make_record(i, offset)
                    arrival = round(start + offset * spec.arrival_step, 3)
                    shard.arrivals.append(arrival)
                    # Formatted by hand (3x faster than json.dumps of a dict); the key is JSON-escaped.
                    shard.records.append(
                        b'{"SequenceNumber":"%s","ApproximateArrivalTimestamp":%s,"Data":"%s","PartitionKey":%s,"EncryptionType":"NONE"}'
                        % (shard.sequence(offset).encode(), repr(arrival).encode(), base64.b64encode(data), json.dumps(key).encode())
                    )
                shards.append(shard)
            stream = _Stream(spec, shards, {s.shard_id: s for s in shards})
            self.streams[spec.name] = stream
            self.by_arn[spec.arn] = stream

    def total_records(self, name: Optional[str] = None) -> int:
        return sum(len(s.records) for st in self.streams.values() if name in (None, st.spec.name) for s in st.shards)

    def expected_keys(self, name: str) -> set:
        """Every (shard id, sequence number) of a stream: what a full read must deliver, once each."""
        return {(s.shard_id, s.sequence(o)) for s in self.streams[name].shards for o in range(len(s.records))}

    def payloads(self, name: str) -> List[Tuple[str, bytes]]:
        spec = self.streams[name].spec
        return [spec.make_record(s.index, o) for s in self.streams[name].shards for o in range(len(s.records))]


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
        streams = sorted(self.data.streams.values(), key=lambda s: s.spec.name)
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

    # -- data plane
    def _op_GetShardIterator(self, params: Dict[str, Any]) -> Response:
        stream = self._stream(params)
        shard = self._shard(stream, params.get("ShardId"))
        kind = params.get("ShardIteratorType")
        if kind == "TRIM_HORIZON":
            offset = 0
        elif kind == "LATEST":
            offset = len(shard.records)
        elif kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            offset = self._offset_of(shard, params.get("StartingSequenceNumber"))
            if offset >= len(shard.records):
                raise _Fail("InvalidArgumentException", f"StartingSequenceNumber is beyond the end of shard {shard.shard_id}.")
            offset += kind == "AFTER_SEQUENCE_NUMBER"
        elif kind == "AT_TIMESTAMP":
            offset = bisect.bisect_left(shard.arrivals, float(params.get("Timestamp") or 0))
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
        end = min(offset + limit, len(shard.records))
        behind = 0 if end >= len(shard.records) else max(1, int((shard.arrivals[-1] - shard.arrivals[end - 1]) * 1000))
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
