"""Hostile payloads against the source's decoder, in-process, under every ``on_bad_record`` policy.

Each payload is either *valid* (decoded the same under keep/skip/fail) or *bad*: ``keep`` emits exactly one record
holding the payload in base64 and a reason naming the cause; ``skip`` emits nothing and counts it; ``fail`` raises a
``config_error`` naming the stream, shard, sequence number and cause. KPL aggregates may mix both per user record.
Never a traceback (any other exception), never more than a few seconds.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import json
import logging
import time
import zlib
from typing import Any, Callable, List, Optional, Tuple

import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_kinesis import kpl
from source_kinesis.config import StreamFormat
from source_kinesis.decoding import BAD_SKIPPED, ERROR_FIELD, RAW_DATA_FIELD, PayloadDecoder

MiB = 1024 * 1024
SEQ = "49590338271490256608559692538361571095921575989136588898"
SHARD = "shardId-000000000007"
pytestmark = pytest.mark.timeout(60)


def aggregate(*payloads: bytes, pk: str = "pk") -> bytes:
    return kpl.encode_aggregate([(f"{pk}{i}", None, p) for i, p in enumerate(payloads)])


def with_md5(body: bytes) -> bytes:
    return kpl.KPL_MAGIC + body + hashlib.md5(body).digest()


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    return b"[" * depth + leaf + b"]" * depth


def cw(events: Any, message_type: str = "DATA_MESSAGE") -> bytes:
    return gzip.compress(json.dumps({"messageType": message_type, "owner": "1", "logGroup": "g", "logStream": "s",
                                     "subscriptionFilters": ["f"], "logEvents": events}).encode())


def dms(operation: Any = "insert", record_type: Any = "data", data: Any = None, **metadata: Any) -> bytes:
    meta = {"record-type": record_type, "operation": operation, "schema-name": "public", "table-name": "t", **metadata}
    return json.dumps({"data": {"id": 1, "x": "y"} if data is None else data, "metadata": meta}).encode()


def ddb(event: Any = "INSERT", keys: Any = None, image: Any = None, table: Any = "T") -> bytes:
    change: dict = {"Keys": {"id": {"S": "a"}} if keys is None else keys}
    if image is not None:
        change["NewImage"] = image
    return json.dumps({"eventName": event, "tableName": table, "dynamodb": change}).encode()


def ddb_raw(attribute: bytes) -> bytes:
    """A DynamoDB INSERT whose NewImage attribute ``x`` is given as raw JSON (too deep to build with json.dumps)."""
    return b'{"eventName": "INSERT", "tableName": "T", "dynamodb": {"Keys": {"id": {"S": "a"}}, "NewImage": {"x": ' + attribute + b"}}}"


_GOOD = b'{"a": 1}'
_BOMB = gzip.compress(b" " * (65 * MiB))  # inflates past the 64 MiB cap
_TRUNCATED_AGG = aggregate(_GOOD, _GOOD)
_TRUNCATED_AGG = with_md5(_TRUNCATED_AGG[4:-16][:-3])

# (id, format, payload, expectation); expectation: ("ok", n records, check or None) | ("bad", reason substring)
#   | ("mixed", good user records, bad user records, reason substring) | ("none",) nothing emitted (control/empty)
Check = Optional[Callable[[List[dict]], bool]]
CORPUS: List[Tuple[str, str, bytes, tuple]] = [
    # ---- JSON, plain
    ("json-object", "json", _GOOD, ("ok", 1, lambda r: r[0] == {"a": 1})),
    ("json-array", "json", b"[1,2]", ("ok", 1, lambda r: r[0] == {"data": [1, 2]})),
    ("json-string", "json", b'"x"', ("ok", 1, lambda r: r[0] == {"data": "x"})),
    ("json-null", "json", b"null", ("ok", 1, lambda r: r[0] == {"data": None})),
    ("json-empty", "json", b"", ("bad", "invalid JSON")),
    ("json-whitespace", "json", b"  \n\t ", ("bad", "invalid JSON")),
    ("json-invalid-utf8", "json", b'{"a": "\xff\xfe"}', ("bad", "invalid JSON")),
    ("json-overlong-utf8", "json", b'{"a": "\xc0\xaf"}', ("bad", "invalid JSON")),
    ("json-truncated", "json", b'{"a": [1, 2', ("bad", "invalid JSON")),
    ("json-trailing-garbage", "json", b'{"a": 1} trailing', ("bad", "invalid JSON")),
    ("json-two-documents", "json", b"{}{}", ("bad", "invalid JSON")),
    ("json-nan", "json", b'{"a": NaN}', ("bad", "NaN and Infinity are not JSON")),
    ("json-infinity", "json", b'{"a": Infinity}', ("bad", "NaN and Infinity are not JSON")),
    ("json-minus-infinity", "json", b'[-Infinity]', ("bad", "invalid JSON")),
    ("json-escaped-nul", "json", b'{"a": "x\\u0000y"}', ("ok", 1, lambda r: r[0] == {"a": "x\x00y"})),
    ("json-raw-nul", "json", b'{"a": "x\x00y"}', ("bad", "invalid JSON")),
    ("json-raw-control-char", "json", b'{"a": "x\x01"}', ("bad", "invalid JSON")),
    ("json-lone-surrogate", "json", b'{"a": "\\ud800"}', ("bad", "invalid JSON")),
    ("json-bom", "json", b'\xef\xbb\xbf{"a": 1}', ("bad", "invalid JSON")),
    ("json-depth-1024", "json", nested(1024), ("ok", 1, None)),
    ("json-depth-1025", "json", nested(1025), ("bad", "nested deeper than 1024")),
    ("json-depth-100k", "json", nested(100_000), ("bad", "nested deeper than 1024")),
    ("json-depth-1000-bigint", "json", nested(1000, b"123456789012345678901234567890"), ("ok", 1, None)),
    ("json-int-2^64", "json", b'{"a": 18446744073709551616}', ("ok", 1, lambda r: r[0]["a"] == 2**64)),
    ("json-int-minus-2^70", "json", b'{"a": -1180591620717411303424}', ("ok", 1, lambda r: r[0]["a"] == -(2**70))),
    ("json-int-400-digits", "json", b'{"a": 1' + b"0" * 400 + b"}", ("ok", 1, lambda r: r[0]["a"] == 10**400)),
    ("json-int-in-string", "json", b'{"a": "18446744073709551616"}', ("ok", 1, lambda r: r[0]["a"] == "18446744073709551616")),
    ("json-int-400-digits-then-nan", "json", b'[1' + b"0" * 400 + b', NaN]', ("bad", "NaN and Infinity are not JSON")),
    ("json-int-400-digits-then-surrogate", "json", b'[1' + b"0" * 400 + b', "\\udc00"]', ("bad", "invalid JSON")),
    ("json-int-400-digits-then-garbage", "json", b'[1' + b"0" * 400 + b'] x', ("bad", "invalid JSON")),
    ("json-int-400-digits-deep", "json", nested(1000, b"1" + b"0" * 400), ("ok", 1, None)),
    ("json-float-1e400", "json", b'{"a": 1e400}', ("bad", "number out of range")),
    ("json-float-400-digits-fraction", "json", b'{"a": 1' + b"0" * 400 + b'.5}', ("bad", "number out of range")),
    ("json-float-tiny", "json", b'{"a": 1e-400}', ("ok", 1, lambda r: r[0]["a"] == 0.0)),
    ("json-duplicate-keys", "json", b'{"a": 1, "a": 2}', ("ok", 1, lambda r: r[0] == {"a": 2})),
    ("json-contract-field-names", "json", b'{"_kinesis_shard_id": "x", "_id": 1}', ("ok", 1, lambda r: r[0]["_kinesis_shard_id"] == "x")),
    ("json-1MiB-string", "json", b'{"a": "' + b"x" * MiB + b'"}', ("ok", 1, lambda r: len(r[0]["a"]) == MiB)),
    ("json-1MiB-array", "json", b"[" + b"1," * (MiB // 2) + b"1]", ("ok", 1, lambda r: len(r[0]["data"]) == MiB // 2 + 1)),
    ("json-1MiB-open-brackets", "json", b"[" * MiB, ("bad", "nested deeper than 1024")),
    ("json-1MiB-garbage", "json", bytes(range(256)) * (MiB // 256), ("bad", "invalid JSON")),
    ("json-unicode", "json", '{"a": "日本語 🎉"}'.encode(), ("ok", 1, lambda r: r[0]["a"] == "日本語 🎉")),
    # ---- compression
    ("gzip-json", "json", gzip.compress(_GOOD), ("ok", 1, lambda r: r[0] == {"a": 1})),
    ("gzip-two-members", "json", gzip.compress(b'{"a":') + gzip.compress(b" 1}"), ("ok", 1, lambda r: r[0] == {"a": 1})),
    ("gzip-truncated", "json", gzip.compress(_GOOD)[:-6], ("bad", "invalid JSON")),
    ("gzip-header-only", "json", gzip.compress(_GOOD)[:10], ("bad", "invalid JSON")),
    ("gzip-bad-crc", "json", gzip.compress(_GOOD)[:-8] + b"\0\0\0\0" + gzip.compress(_GOOD)[-4:], ("bad", "invalid JSON")),
    ("gzip-trailing-garbage", "json", gzip.compress(_GOOD) + b"junk", ("bad", "invalid JSON")),
    ("gzip-bomb-65MiB", "json", _BOMB, ("bad", "inflates to more than 64 MiB")),
    ("gzip-invalid-utf8", "json", gzip.compress(b'{"a": "\xff"}'), ("bad", "invalid JSON")),
    ("gzip-of-gzip", "json", gzip.compress(gzip.compress(_GOOD)), ("bad", "invalid JSON")),
    ("zlib-json", "json", zlib.compress(_GOOD), ("ok", 1, lambda r: r[0] == {"a": 1})),
    ("zlib-corrupt", "json", zlib.compress(_GOOD)[:-5] + b"\x00\x01\x02\x03\x04", ("bad", "invalid JSON")),
    ("lone-gzip-magic-byte", "json", b"\x1f", ("bad", "invalid JSON")),
    # ---- KPL aggregates
    ("kpl-valid", "json", aggregate(_GOOD, b"[1]", b'"s"'), ("ok", 3, lambda r: r[0] == {"a": 1} and r[2] == {"data": "s"})),
    ("kpl-corrupt-md5", "json", aggregate(_GOOD)[:-1] + b"\x00", ("bad", "corrupt KPL aggregate")),
    ("kpl-magic-only", "json", kpl.KPL_MAGIC, ("bad", "corrupt KPL aggregate")),
    ("kpl-magic-and-md5-of-nothing", "json", with_md5(b""), ("none",)),
    ("kpl-truncated-protobuf", "json", _TRUNCATED_AGG, ("bad", "corrupt KPL aggregate")),
    ("kpl-huge-length-field", "json", with_md5(b"\x1a\xff\xff\xff\xff\xff\xff\xff\xff\x7f"), ("bad", "corrupt KPL aggregate")),
    ("kpl-truncated-varint", "json", with_md5(b"\x1a\xff\xff"), ("bad", "corrupt KPL aggregate")),
    ("kpl-random-body", "json", with_md5(bytes(range(200, 256)) * 4), ("bad", "corrupt KPL aggregate")),
    ("kpl-pk-index-out-of-range", "json", with_md5(b"\x0a\x01k" + b"\x1a\x07\x08\x05\x1a\x03[1]"), ("bad", "corrupt KPL aggregate")),
    ("kpl-one-bad-user-record", "json", aggregate(_GOOD, b"{not json", b"[2]"), ("mixed", 2, 1, "KPL user record 1: invalid JSON")),
    ("kpl-nested-aggregate", "json", aggregate(_GOOD, aggregate(_GOOD)), ("mixed", 1, 1, "KPL user record 1")),
    ("kpl-gzip-user-record", "json", aggregate(gzip.compress(_GOOD)), ("ok", 1, lambda r: r[0] == {"a": 1})),
    ("kpl-bomb-user-record", "json", aggregate(_GOOD, _BOMB), ("mixed", 1, 1, "inflates to more than 64 MiB")),
    ("kpl-1000-user-records", "json", aggregate(*[b"{}"] * 1000), ("ok", 1000, None)),
    ("kpl-nan-user-record", "json", aggregate(b"[NaN]"), ("mixed", 0, 1, "NaN and Infinity are not JSON")),
    ("kpl-deep-user-record", "json", aggregate(nested(5000)), ("mixed", 0, 1, "nested deeper than 1024")),
    # ---- text and bytes
    ("text-valid", "text", "héllo".encode(), ("ok", 1, lambda r: r[0] == {"data": "héllo"})),
    ("text-nul", "text", b"a\x00b", ("ok", 1, lambda r: r[0] == {"data": "a\x00b"})),
    ("text-invalid-utf8", "text", b"ab\xffcd", ("bad", "invalid UTF-8 at byte 2")),
    ("text-truncated-utf8", "text", "日".encode()[:2], ("bad", "invalid UTF-8")),
    ("text-gzip-bomb", "text", _BOMB, ("bad", "inflates to more than 64 MiB")),
    ("bytes-garbage", "bytes", b"\xff\x00\x1f\x8b", ("ok", 1, lambda r: r[0] == {"data": base64.b64encode(b"\xff\x00\x1f\x8b").decode()})),
    ("bytes-kpl-magic-not-decoded", "bytes", aggregate(_GOOD), ("ok", 1, None)),
    # ---- CloudWatch Logs
    ("cw-valid", "cloudwatch_logs", cw([{"id": "1", "timestamp": 1, "message": "m"}, {"id": "2", "timestamp": 2, "message": "{\"x\": 1}"}]), ("ok", 2, lambda r: r[1]["message_json"] == {"x": 1})),
    ("cw-control", "cloudwatch_logs", cw([], "CONTROL_MESSAGE"), ("none",)),
    ("cw-not-object", "cloudwatch_logs", gzip.compress(b"[1]"), ("bad", "not a CloudWatch Logs message")),
    ("cw-wrong-type", "cloudwatch_logs", cw([], "OTHER"), ("bad", "messageType")),
    ("cw-events-not-list", "cloudwatch_logs", cw({"a": 1}), ("bad", "logEvents")),
    ("cw-event-not-object", "cloudwatch_logs", cw([1]), ("bad", "event 0 is not an object")),
    ("cw-event-no-message", "cloudwatch_logs", cw([{"id": "1", "timestamp": 1}]), ("bad", "no message string")),
    ("cw-event-bad-timestamp", "cloudwatch_logs", cw([{"id": "1", "timestamp": "soon", "message": "m"}]), ("bad", "CloudWatch Logs event 0")),
    ("cw-event-huge-timestamp", "cloudwatch_logs", cw([{"id": "1", "timestamp": 10**30, "message": "m"}]), ("bad", "CloudWatch Logs event 0")),
    ("cw-event-nan-in-message", "cloudwatch_logs", cw([{"id": "1", "timestamp": 1, "message": "{\"x\": NaN}"}]), ("ok", 1, lambda r: "message_json" not in r[0])),
    ("cw-not-gzip", "cloudwatch_logs", b'{"messageType": "DATA_MESSAGE", "logEvents": []}', ("none",)),
    # ---- DMS
    ("dms-valid", "dms", dms(), ("ok", 1, lambda r: r[0]["_op"] == "REPSERT" and r[0]["_id"] == '["public","t",1]')),
    ("dms-control", "dms", dms(record_type="control"), ("none",)),
    ("dms-not-object", "dms", b"[1]", ("bad", "not a DMS record")),
    ("dms-no-metadata", "dms", b'{"data": {}}', ("bad", "no 'metadata' object")),
    ("dms-unknown-operation", "dms", dms(operation="explode"), ("bad", "unknown metadata.operation")),
    ("dms-operation-not-string", "dms", dms(operation=["insert"]), ("bad", "unknown metadata.operation")),
    ("dms-no-pk", "dms", dms(data={"x": 1}), ("bad", "primary-key column 'id' missing")),
    ("dms-data-not-object", "dms", dms(data=[1]), ("bad", "without a 'data' object")),
    ("dms-no-table", "dms", dms(**{"table-name": ""}), ("bad", "table-name")),
    ("dms-bad-timestamp-kept", "dms", dms(timestamp="not a time"), ("ok", 1, None)),
    ("dms-record-type-huge-string", "dms", dms(record_type="x" * 100_000), ("bad", "record-type")),
    # ---- DynamoDB
    ("ddb-valid", "dynamodb", ddb(image={"id": {"S": "a"}, "n": {"N": "12345678901234567890123"}}), ("ok", 1, lambda r: r[0]["n"] == 12345678901234567890123)),
    ("ddb-bad-event", "dynamodb", ddb(event="DROP"), ("bad", "eventName")),
    ("ddb-no-keys", "dynamodb", ddb(keys={}), ("bad", "dynamodb.Keys")),
    ("ddb-bad-attribute", "dynamodb", ddb(image={"x": {"Q": "1"}}), ("bad", "unknown type")),
    ("ddb-two-type-keys", "dynamodb", ddb(image={"x": {"S": "1", "N": "1"}}), ("bad", "one type key")),
    ("ddb-number-not-finite", "dynamodb", ddb(image={"x": {"N": "Infinity"}}), ("bad", "not finite")),
    ("ddb-number-nan", "dynamodb", ddb(image={"x": {"N": "NaN"}}), ("bad", "not finite")),
    ("ddb-number-huge-exponent", "dynamodb", ddb(image={"x": {"N": "1E+999999999999"}}), ("bad", "out of range")),
    ("ddb-number-10k-digits", "dynamodb", ddb(image={"x": {"N": "9" * 10_000}}), ("bad", "out of range")),
    ("ddb-number-garbage", "dynamodb", ddb(image={"x": {"N": "12abc"}}), ("bad", "invalid DynamoDB number")),
    ("ddb-image-not-object", "dynamodb", ddb(image=[1]), ("bad", "NewImage is not an object")),
    ("ddb-deep-map", "dynamodb", ddb_raw(b'{"M": {"y": ' * 300 + b'{"S": "z"}' + b"}}" * 300), ("ok", 1, None)),
    ("ddb-deep-list-beyond-limits", "dynamodb", ddb_raw(b'{"L": [' * 500 + b'{"S": "z"}' + b"]}" * 500), ("bad", "")),
]

POLICIES = ("keep", "skip", "fail")


def decoder(fmt: str, policy: str) -> PayloadDecoder:
    return PayloadDecoder("hostile", StreamFormat(stream="hostile", format=fmt), policy, logging.getLogger("hostile-decoding"))


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("case_id,fmt,payload,expect", CORPUS, ids=[c[0] for c in CORPUS])
def test_hostile_payload(case_id, fmt, payload, expect, policy, reliability):
    dec = decoder(fmt, policy)
    started = time.monotonic()
    kind = expect[0]
    try:
        users = dec.decode(payload, "the-pk", SHARD, SEQ, hash_range=(0, 2**128 - 1))
        raised = None
    except AirbyteTracedException as exc:
        users, raised = None, exc
    # anything but AirbyteTracedException propagates and fails the test: that would be a traceback for the user
    assert time.monotonic() - started < 10, "decoding took too long"
    reliability(cases=1)
    if kind == "ok":
        assert raised is None, raised.message
        assert len(users) == expect[1]
        assert all(ERROR_FIELD not in u.fields for u in users)
        assert expect[2] is None or expect[2]([u.fields for u in users])
        assert [u.sub_sequence_number for u in users] == list(range(len(users)))
        return
    if kind == "none":
        assert raised is None and users == []
        return
    reason = expect[-1]
    good = expect[1] if kind == "mixed" else 0
    bad = expect[2] if kind == "mixed" else 1
    if policy == "fail":
        assert raised is not None, "the fail policy must stop on a bad record"
        assert raised.failure_type == FailureType.config_error
        assert reason in raised.message and SEQ in raised.message and SHARD in raised.message and "'hostile'" in raised.message
        return
    assert raised is None, raised.message
    kept = [u for u in users if ERROR_FIELD in u.fields]
    assert len(users) - len(kept) == good
    if policy == "skip":
        assert kept == [] and dec.counters.total(BAD_SKIPPED) == bad
        return
    assert len(kept) == bad
    for user in kept:
        assert reason in user.fields[ERROR_FIELD]
        assert set(user.fields) == {RAW_DATA_FIELD, ERROR_FIELD}
        assert len(user.fields[ERROR_FIELD]) < 300, "the reason must be short and hold no payload content"
    if kind == "bad":
        assert base64.b64decode(kept[0].fields[RAW_DATA_FIELD]) == payload, "the kept record must hold the payload as received"
    subs = [u.sub_sequence_number for u in users]
    assert subs == sorted(set(subs)), "sub-sequence numbers must be unique and increasing"
