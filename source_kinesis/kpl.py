"""KPL aggregated records: recognise, verify and expand them into user records.

Layout (the Kinesis Producer Library's aggregation format)::

    F3 89 9A C2 | protobuf AggregatedRecord | MD5(protobuf bytes), 16 bytes

    message AggregatedRecord {
      repeated string partition_key_table     = 1;
      repeated string explicit_hash_key_table = 2;
      repeated Record records                 = 3;
    }
    message Record {
      required uint64 partition_key_index     = 1;
      optional uint64 explicit_hash_key_index = 2;
      required bytes  data                    = 3;
      repeated Tag    tags                    = 4;   // ignored, as the KCL does
    }

This is a small decoder of our own rather than PyPI ``aws-kinesis-agg`` or ``aiokpl`` (see docs/formats.md): it
is strict where the KCL and ``aws-kinesis-agg`` are lenient. A wrong MD5, a truncated or malformed protobuf, an
index outside its table, a missing required field or a partition key that is not UTF-8 raise ``KplError``; the
caller turns that into a bad record. Nothing is ever passed through as if it were a user record. Unknown fields
are skipped by wire type (forward compatible, as protobuf requires).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

KPL_MAGIC = b"\xf3\x89\x9a\xc2"
DIGEST_SIZE = 16
HASH_KEY_MAX = 2**128 - 1

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class KplError(ValueError):
    """A corrupt or truncated aggregate; the message says what is wrong, never the content."""


@dataclass(slots=True, frozen=True)
class KplUserRecord:
    partition_key: str
    explicit_hash_key: Optional[str]
    data: bytes


def is_aggregate(data: bytes) -> bool:
    return data.startswith(KPL_MAGIC)


def decode_aggregate(data: bytes) -> List[KplUserRecord]:
    """Expand one aggregate (magic included) into its user records, in order. Raises ``KplError``."""
    if not data.startswith(KPL_MAGIC):
        raise KplError("missing KPL magic bytes")
    if len(data) < len(KPL_MAGIC) + DIGEST_SIZE:
        raise KplError("truncated: shorter than magic bytes plus MD5")
    view = memoryview(data)
    body = view[len(KPL_MAGIC) : len(data) - DIGEST_SIZE]
    if hashlib.md5(body).digest() != view[len(data) - DIGEST_SIZE :]:
        raise KplError("MD5 mismatch (corrupt or truncated aggregate)")

    partition_keys: List[str] = []
    hash_keys: List[str] = []
    raw_records: List[Tuple[int, Optional[int], bytes]] = []
    pos, end = 0, len(body)
    while pos < end:
        key, pos = _varint(body, pos, end)
        number, wire = key >> 3, key & 7
        if number in (1, 2, 3):
            if wire != _LEN:
                raise KplError(f"AggregatedRecord field {number} has wire type {wire}, expected 2")
            length, pos = _varint(body, pos, end)
            stop = pos + length
            if stop > end:
                raise KplError("truncated: a field runs past the end of the aggregate")
            if number == 3:
                raw_records.append(_record(body, pos, stop))
            else:
                try:
                    text = str(body[pos:stop], "utf-8")
                except UnicodeDecodeError:
                    raise KplError("a partition or explicit hash key is not UTF-8") from None
                (partition_keys if number == 1 else hash_keys).append(text)
            pos = stop
        else:
            pos = _skip(body, pos, end, wire)

    out: List[KplUserRecord] = []
    for index, (pk_index, ehk_index, payload) in enumerate(raw_records):
        if pk_index >= len(partition_keys):
            raise KplError(f"user record {index}: partition key index {pk_index} outside the table of {len(partition_keys)}")
        hash_key = None
        if ehk_index is not None:
            if ehk_index >= len(hash_keys):
                raise KplError(f"user record {index}: explicit hash key index {ehk_index} outside the table of {len(hash_keys)}")
            hash_key = hash_keys[ehk_index]
        out.append(KplUserRecord(partition_keys[pk_index], hash_key, payload))
    return out


def _record(buf: memoryview, pos: int, end: int) -> Tuple[int, Optional[int], bytes]:
    pk_index: Optional[int] = None
    ehk_index: Optional[int] = None
    payload: Optional[bytes] = None
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number in (1, 2):
            if wire != _VARINT:
                raise KplError(f"Record field {number} has wire type {wire}, expected 0")
            value, pos = _varint(buf, pos, end)
            if number == 1:
                pk_index = value
            else:
                ehk_index = value
        elif number == 3:
            if wire != _LEN:
                raise KplError(f"Record field 3 has wire type {wire}, expected 2")
            length, pos = _varint(buf, pos, end)
            stop = pos + length
            if stop > end:
                raise KplError("truncated: a user record's data runs past its record")
            payload = bytes(buf[pos:stop])
            pos = stop
        else:  # tags (4) and unknown fields
            pos = _skip(buf, pos, end, wire)
    if pk_index is None:
        raise KplError("a user record has no partition key index")
    if payload is None:
        raise KplError("a user record has no data")
    return pk_index, ehk_index, payload


def _varint(buf: memoryview, pos: int, end: int) -> Tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise KplError("truncated: varint runs past the end")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result >> 64:
                raise KplError("varint exceeds 64 bits")
            return result, pos
        shift += 7
        if shift >= 70:
            raise KplError("varint longer than 10 bytes")


def _skip(buf: memoryview, pos: int, end: int, wire: int) -> int:
    if wire == _VARINT:
        return _varint(buf, pos, end)[1]
    if wire == _I64:
        pos += 8
    elif wire == _I32:
        pos += 4
    elif wire == _LEN:
        length, pos = _varint(buf, pos, end)
        pos += length
    else:
        raise KplError(f"unsupported protobuf wire type {wire}")
    if pos > end:
        raise KplError("truncated: a field runs past the end")
    return pos


def effective_hash_key(partition_key: str, explicit_hash_key: Optional[str]) -> Optional[int]:
    """The 128-bit hash key Kinesis would route this user record by; None if the explicit key is not valid."""
    if explicit_hash_key is not None:
        if not explicit_hash_key.isdecimal() or not explicit_hash_key.isascii():
            return None
        value = int(explicit_hash_key)
        return value if value <= HASH_KEY_MAX else None
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


def encode_aggregate(records: Sequence[Tuple[str, Optional[str], bytes]]) -> bytes:
    """Build an aggregate from ``(partition_key, explicit_hash_key or None, data)`` tuples.

    For tests and tools only (the connector never writes). Tables are de-duplicated in first-seen order, like the KPL.
    """
    pk_table: dict = {}
    ehk_table: dict = {}
    body = bytearray()
    encoded_records = []
    for partition_key, hash_key, payload in records:
        rec = bytearray()
        rec += _key(1, _VARINT) + _encode_varint(pk_table.setdefault(partition_key, len(pk_table)))
        if hash_key is not None:
            rec += _key(2, _VARINT) + _encode_varint(ehk_table.setdefault(hash_key, len(ehk_table)))
        rec += _key(3, _LEN) + _encode_varint(len(payload)) + payload
        encoded_records.append(bytes(rec))
    for text in pk_table:
        raw = text.encode("utf-8")
        body += _key(1, _LEN) + _encode_varint(len(raw)) + raw
    for text in ehk_table:
        raw = text.encode("utf-8")
        body += _key(2, _LEN) + _encode_varint(len(raw)) + raw
    for rec in encoded_records:
        body += _key(3, _LEN) + _encode_varint(len(rec)) + rec
    return KPL_MAGIC + bytes(body) + hashlib.md5(body).digest()


def _key(number: int, wire: int) -> bytes:
    return _encode_varint(number << 3 | wire)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
