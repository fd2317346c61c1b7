"""Payload decoding: Kinesis record bytes -> user records (fields of the emitted Airbyte record).

The orchestrator calls ``PayloadDecoder.decode`` once per Kinesis record, on the emitting thread. A record may
expand into several user records (KPL aggregates, CloudWatch Logs batches, a DMS update that changed the primary
key); each carries the sub-sequence number that, together with the Kinesis sequence number, identifies it for
checkpoints and resume. Sub-sequence numbers increase in emission order and depend only on the record's bytes
and the stream's format, never on the bad-record policy, so a resume is exact even if the policy changed:

- a plain record: 0; a record that expands (CloudWatch Logs events, DMS primary-key change): 0..n-1;
- KPL user record ``i`` of an aggregate: ``i`` (as the KCL numbers them);
- KPL user record ``i`` in a format that can expand (``cloudwatch_logs``, ``dms``): ``i * 2**32 + j`` for its
  ``j``-th record (``j < 2**32`` always: the decompression cap bounds the number of events).

Order of detection (all formats but ``bytes``): KPL aggregate (magic ``F3 89 9A C2``) on the Kinesis payload, then
in each user payload gzip/zlib (by header, and only if the whole payload decompresses cleanly), then the format.
Anything that cannot be decoded is a *bad record* handled by ``on_bad_record`` (keep / skip / fail).
"""
from __future__ import annotations

import base64
import logging
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_kinesis import change_events, cloudwatch_logs, kpl
from source_kinesis.config import StreamFormat
from source_kinesis.json_exact import loads_exact

# Field that holds a payload that is not a JSON object (an array, a string, a number...), text, or bytes (base64).
VALUE_FIELD = "data"
RAW_DATA_FIELD = "_kinesis_raw_data"
ERROR_FIELD = "_kinesis_error"

# A compressed payload may inflate to at most this many bytes; more is a bad record (decompression bomb).
MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024
# Stride of the sub-sequence number of a KPL user record in formats that expand one payload into several records.
SUB_SEQUENCE_STRIDE = 2**32
EXPANDING_FORMATS = frozenset({"cloudwatch_logs", "dms"})

# Counter kinds in DecodeCounters (per shard).
BAD_KEPT = "bad_kept"
BAD_SKIPPED = "bad_skipped"
CONTROL_SKIPPED = "control_skipped"
HASH_KEY_OUT_OF_RANGE = "hash_key_out_of_range"
KPL_AGGREGATES = "kpl_aggregates"
KPL_USER_RECORDS = "kpl_user_records"
EMPTY_SKIPPED = "empty_skipped"  # a record that holds no data: a CloudWatch message without events, an empty aggregate

# Bounded logging: the first few occurrences per shard and kind, then only at powers of ten.
LOG_FIRST = 10

_GZIP_MAGIC = b"\x1f\x8b\x08"
# First bytes that may start a compressed payload: gzip (1f) and zlib CMF bytes (deflate, window <= 32 KiB).
# '{', '[', '"' and letters are never in it, so a JSON object costs one table look-up here.
_MAYBE_COMPRESSED = bytes(1 if (b == 0x1F or (b & 0x0F == 8 and b >> 4 <= 7)) else 0 for b in range(256))


class PayloadError(ValueError):
    """A payload that cannot be decoded; the message is the bad record's reason (no content, no secrets)."""


@dataclass(slots=True)
class UserRecord:
    sub_sequence_number: int
    partition_key: str
    fields: Dict[str, Any]
    explicit_hash_key: Optional[str] = None


@dataclass
class DecodeCounters:
    """Per-shard counts for the sync summary (bad records kept/skipped, control messages, ...)."""

    by_shard: Dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))

    def add(self, shard_id: str, kind: str, n: int = 1) -> None:
        self.by_shard[shard_id][kind] += n

    def total(self, kind: str) -> int:
        return sum(counts[kind] for counts in self.by_shard.values())


def decompress(data: bytes, limit: int = MAX_DECOMPRESSED_BYTES) -> Optional[bytes]:
    """The inflated payload if ``data`` is gzip (one or more members) or zlib and decompresses cleanly as a whole;
    ``None`` if it is not compressed (wrong header, corrupt, truncated, bad checksum, trailing bytes).
    Raises ``PayloadError`` when the output would exceed ``limit`` bytes."""
    if not data or not _MAYBE_COMPRESSED[data[0]]:
        return None
    if data.startswith(_GZIP_MAGIC):
        return _inflate(data, 31, limit, members=True)
    if len(data) >= 2 and ((data[0] << 8) | data[1]) % 31 == 0 and not data[1] & 0x20:  # zlib, no preset dict
        return _inflate(data, 15, limit, members=False)
    return None


def _inflate(data: bytes, wbits: int, limit: int, members: bool) -> Optional[bytes]:
    chunks: List[bytes] = []
    size = 0
    rest = data
    try:
        while True:
            inflater = zlib.decompressobj(wbits)
            chunk = inflater.decompress(rest, limit + 1 - size)
            size += len(chunk)
            chunks.append(chunk)
            if size > limit:
                raise PayloadError(f"compressed payload inflates to more than {limit // (1024 * 1024)} MiB")
            if not inflater.eof:
                return None  # truncated
            rest = inflater.unused_data
            if not rest:
                break
            if not (members and rest.startswith(_GZIP_MAGIC)):
                return None  # trailing garbage: not a clean compressed payload
    except zlib.error:
        return None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _LogLimiter:
    """Per (shard, kind) occurrence counter: log the first LOG_FIRST, then the 100th, 1000th, ..."""

    def __init__(self) -> None:
        self._seen: Counter = Counter()

    def should_log(self, shard_id: str, kind: str) -> Tuple[bool, int]:
        key = (shard_id, kind)
        self._seen[key] += 1
        n = self._seen[key]
        if n <= LOG_FIRST:
            return True, n
        while n % 10 == 0:
            n //= 10
        return n == 1, self._seen[key]


# A format: payload bytes -> the fields of one record (a dict: the common case, no list allocated), of several
# records (a list), or None for a control record. Raises ValueError (a reason) for a bad payload.
FieldsFn = Callable[[bytes], Union[Dict[str, Any], List[Dict[str, Any]], None]]


class PayloadDecoder:
    def __init__(self, stream: str, settings: StreamFormat, on_bad_record: str, logger: logging.Logger) -> None:
        self.stream = stream
        self.settings = settings
        self.on_bad_record = on_bad_record
        self.logger = logger
        self.counters = DecodeCounters()
        self.format = settings.format
        self._primary_key = list(settings.dms_primary_key or ["id"])
        # a bytes stream never parses its data (decode() base64-encodes it first): it needs no fields function
        self._fields_of: FieldsFn = {
            "json": self._json,
            "text": self._text,
            "bytes": self._json,
            "cloudwatch_logs": self._cloudwatch_logs,
            "dms": self._dms,
            "dynamodb": self._dynamodb,
        }[self.format]
        self._stride = SUB_SEQUENCE_STRIDE if self.format in EXPANDING_FORMATS else 1
        self._limiter = _LogLimiter()

    # ------------------------------------------------------------------------------------------------ entry point
    def decode(
        self,
        data: bytes,
        partition_key: str,
        shard_id: str,
        sequence_number: str,
        hash_range: Optional[Tuple[Union[int, str], Union[int, str]]] = None,
    ) -> List[UserRecord]:
        """Decode one Kinesis record. ``hash_range`` is the shard's (StartingHashKey, EndingHashKey), inclusive;
        when given, KPL user records whose effective hash key falls outside it are counted and logged (and kept).

        Only raises under ``on_bad_record == "fail"``, and then only ``AirbyteTracedException`` (config_error)."""
        if type(data) is not bytes:
            data = bytes(data)
        if self.format == "bytes":
            return [UserRecord(0, partition_key, {VALUE_FIELD: base64.b64encode(data).decode("ascii")})]
        if data.startswith(kpl.KPL_MAGIC):
            return self._aggregate(data, partition_key, shard_id, sequence_number, hash_range)
        try:
            records = self._fields_of(data)
        except ValueError as exc:
            return self._bad(data, str(exc), partition_key, shard_id, sequence_number, 0)
        except Exception as exc:  # a decoder bug must not stop the sync or lose the record
            return self._bad(data, _internal(exc), partition_key, shard_id, sequence_number, 0)
        if type(records) is dict:
            return [UserRecord(0, partition_key, records)]
        if records is None:
            return self._control(shard_id, sequence_number)
        if not records:
            self.counters.add(shard_id, EMPTY_SKIPPED)
            return []
        return [UserRecord(index, partition_key, fields) for index, fields in enumerate(records)]

    # ---------------------------------------------------------------------------------------------------- formats
    def _json(self, data: bytes) -> Dict[str, Any]:
        if data and _MAYBE_COMPRESSED[data[0]]:
            data = self._inflated(data)
        value = loads_exact(data)
        return value if type(value) is dict else {VALUE_FIELD: value}

    def _text(self, data: bytes) -> Dict[str, Any]:
        payload = self._inflated(data)
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError(f"invalid UTF-8 at byte {exc.start}") from None
        return {VALUE_FIELD: text}

    def _cloudwatch_logs(self, data: bytes) -> Optional[List[Dict[str, Any]]]:
        return cloudwatch_logs.log_events(loads_exact(self._inflated(data)))

    def _dms(self, data: bytes) -> Optional[List[Dict[str, Any]]]:
        return change_events.dms_records(loads_exact(self._inflated(data)), self._primary_key)

    def _dynamodb(self, data: bytes) -> List[Dict[str, Any]]:
        return change_events.dynamodb_records(loads_exact(self._inflated(data)))

    @staticmethod
    def _inflated(data: bytes) -> bytes:
        if data and _MAYBE_COMPRESSED[data[0]]:
            inflated = decompress(data)
            if inflated is not None:
                return inflated
        return data

    # -------------------------------------------------------------------------------------------------------- KPL
    def _aggregate(
        self,
        data: bytes,
        partition_key: str,
        shard_id: str,
        sequence_number: str,
        hash_range: Optional[Tuple[Union[int, str], Union[int, str]]],
    ) -> List[UserRecord]:
        try:
            user_records = kpl.decode_aggregate(data)
        except kpl.KplError as exc:
            return self._bad(data, f"corrupt KPL aggregate: {exc}", partition_key, shard_id, sequence_number, 0)
        self.counters.add(shard_id, KPL_AGGREGATES)
        if not user_records:
            self.counters.add(shard_id, EMPTY_SKIPPED)
            return []
        self.counters.add(shard_id, KPL_USER_RECORDS, len(user_records))
        low = high = None
        if hash_range is not None:
            low, high = int(hash_range[0]), int(hash_range[1])
        stride = self._stride
        out: List[UserRecord] = []
        for index, user in enumerate(user_records):
            base = index * stride
            if low is not None:
                hash_key = kpl.effective_hash_key(user.partition_key, user.explicit_hash_key)
                if hash_key is None or not low <= hash_key <= high:
                    self._out_of_range(shard_id, sequence_number, index)
            try:
                records = self._fields_of(user.data)
            except ValueError as exc:
                out.extend(self._bad(user.data, f"KPL user record {index}: {exc}", user.partition_key, shard_id, sequence_number, base, user.explicit_hash_key))
                continue
            except Exception as exc:
                out.extend(self._bad(user.data, f"KPL user record {index}: {_internal(exc)}", user.partition_key, shard_id, sequence_number, base, user.explicit_hash_key))
                continue
            if type(records) is dict:
                out.append(UserRecord(base, user.partition_key, records, user.explicit_hash_key))
                continue
            if records is None:
                self._control(shard_id, sequence_number)
                continue
            for offset, fields in enumerate(records):
                out.append(UserRecord(base + offset, user.partition_key, fields, user.explicit_hash_key))
        return out

    def _out_of_range(self, shard_id: str, sequence_number: str, index: int) -> None:
        self.counters.add(shard_id, HASH_KEY_OUT_OF_RANGE)
        log, n = self._limiter.should_log(shard_id, HASH_KEY_OUT_OF_RANGE)
        if log:
            self.logger.warning(
                f"KPL user record {index} of stream '{self.stream}', shard {shard_id}, sequence number {sequence_number} "
                f"has a hash key outside the shard's range (the producer aggregated across shards); kept. "
                f"{n} such user records on this shard so far."
            )

    # ---------------------------------------------------------------------------------------- policies and counts
    def _control(self, shard_id: str, sequence_number: str) -> List[UserRecord]:
        self.counters.add(shard_id, CONTROL_SKIPPED)
        log, n = self._limiter.should_log(shard_id, CONTROL_SKIPPED)
        if log:
            self.logger.info(f"Skipped a {self.format} control record in stream '{self.stream}', shard {shard_id}, sequence number {sequence_number} ({n} so far on this shard)")
        return []

    def _bad(
        self,
        data: bytes,
        reason: str,
        partition_key: str,
        shard_id: str,
        sequence_number: str,
        sub_sequence_number: int = 0,
        explicit_hash_key: Optional[str] = None,
    ) -> List[UserRecord]:
        where = f"stream '{self.stream}', shard {shard_id}, sequence number {sequence_number}"
        if sub_sequence_number:
            where += f", sub-sequence number {sub_sequence_number}"
        if self.on_bad_record == "fail":
            message = f"Undecodable record in {where}: {reason}. Set 'Undecodable records' to keep or skip to continue past it."
            raise AirbyteTracedException(message=message, internal_message=message, failure_type=FailureType.config_error)
        if self.on_bad_record == "skip":
            self.counters.add(shard_id, BAD_SKIPPED)
            log, n = self._limiter.should_log(shard_id, BAD_SKIPPED)
            if log:
                self.logger.warning(f"Skipped undecodable record in {where}: {reason} ({n} skipped on this shard so far)")
            return []
        self.counters.add(shard_id, BAD_KEPT)
        fields = {RAW_DATA_FIELD: base64.b64encode(data).decode("ascii"), ERROR_FIELD: reason}
        return [UserRecord(sub_sequence_number, partition_key, fields, explicit_hash_key)]


def _internal(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "payload nested too deeply to decode"
    return f"decoder error ({type(exc).__name__})"
