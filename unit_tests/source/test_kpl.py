"""KPL aggregates: aggregates from independent producers (npm aws-kinesis-agg fixtures, PyPI aws-kinesis-agg),
MD5 and structure checks, sub-sequence numbers, hash-key range accounting."""
from __future__ import annotations

import base64
import hashlib
import logging

import pytest
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_kinesis import kpl
from source_kinesis.decoding import (
    BAD_KEPT,
    BAD_SKIPPED,
    CONTROL_SKIPPED,
    EMPTY_SKIPPED,
    ERROR_FIELD,
    HASH_KEY_OUT_OF_RANGE,
    KPL_AGGREGATES,
    KPL_USER_RECORDS,
    RAW_DATA_FIELD,
    SUB_SEQUENCE_STRIDE,
    VALUE_FIELD,
)
from unit_tests.source.decoding_fixtures import SEQ, SHARD, decoder, kpl_cases, make_logger, raw_of

CASES = kpl_cases()
FULL_RANGE = (0, 2**128 - 1)


def aggregate_of(name: str) -> bytes:
    return base64.b64decode(CASES[name]["aggregate"])


def expected_user_records(name: str):
    return [(u["partition_key"], u["explicit_hash_key"], base64.b64decode(u["data"])) for u in CASES[name]["user_records"]]


def corrupt(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 0x01]) + blob[index + 1 :]


# ------------------------------------------------------------------------------------ the protobuf decoder alone
@pytest.mark.parametrize("name", sorted(CASES))
def test_decodes_aggregates_from_the_npm_producer(name):
    blob = aggregate_of(name)
    assert kpl.is_aggregate(blob)
    assert [(u.partition_key, u.explicit_hash_key, u.data) for u in kpl.decode_aggregate(blob)] == expected_user_records(name)


def test_decodes_aggregates_from_the_pypi_producer():
    aggregator = pytest.importorskip("aws_kinesis_agg.aggregator")
    agg = aggregator.RecordAggregator()
    inputs = [("pk-%d" % (i % 3), str(i * 1000) if i % 4 == 0 else None, ('{"i": %d}' % i).encode()) for i in range(50)]
    for pk, ehk, data in inputs:
        agg.add_user_record(pk, data, ehk)
    _, _, blob = agg.clear_and_get().get_contents()
    assert [(u.partition_key, u.explicit_hash_key, u.data) for u in kpl.decode_aggregate(blob)] == inputs


def test_our_test_encoder_is_read_by_the_pypi_deaggregator():
    deaggregator = pytest.importorskip("aws_kinesis_agg.deaggregator")
    inputs = [("a", None, b"x"), ("b", "123", b""), ("a", "123", bytes(range(256)))]
    blob = kpl.encode_aggregate(inputs)
    kinesis_record = {"kinesis": {"partitionKey": "a", "data": base64.b64encode(blob).decode(), "sequenceNumber": SEQ, "kinesisSchemaVersion": "1.0", "approximateArrivalTimestamp": 0}}
    users = deaggregator.deaggregate_records([kinesis_record])
    # (its explicitHashKey is not compared: aws-kinesis-agg 1.2.3 gives records without one the table's first key)
    assert [(u["kinesis"]["partitionKey"], base64.b64decode(u["kinesis"]["data"])) for u in users] == [(pk, data) for pk, _, data in inputs]
    assert [(u.partition_key, u.explicit_hash_key, u.data) for u in kpl.decode_aggregate(blob)] == inputs


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda b: b[:-1], "MD5 mismatch"),  # truncated: digest cut
        (lambda b: b[: len(b) // 2], "MD5 mismatch"),  # truncated in the middle
        (lambda b: corrupt(b, len(b) - 1), "MD5 mismatch"),  # wrong digest
        (lambda b: corrupt(b, 10), "MD5 mismatch"),  # corrupt protobuf body
        (lambda b: b[:4] + b"\x00" * 3, "truncated: shorter than magic bytes plus MD5"),
        (lambda b: b[:4], "truncated: shorter than magic bytes plus MD5"),
    ],
)
def test_corrupt_and_truncated_aggregates_raise(mangle, message):
    with pytest.raises(kpl.KplError, match=message):
        kpl.decode_aggregate(mangle(aggregate_of("json_mixed")))


def with_valid_md5(body: bytes) -> bytes:
    return kpl.KPL_MAGIC + body + hashlib.md5(body).digest()


@pytest.mark.parametrize(
    "body, message",
    [
        (b"\x1a\x05\x08\x00\x1a\x01", "runs past"),  # a record whose data runs past its record
        (b"\x0a\x01a\x1a\x02\x1a\x00", "no partition key index"),
        (b"\x0a\x01a\x1a\x02\x08\x00", "no data"),
        (b"\x0a\x01a\x1a\x04\x08\x01\x1a\x00", "partition key index 1 outside"),
        (b"\x0a\x01a\x1a\x06\x08\x00\x10\x00\x1a\x00", "explicit hash key index 0 outside"),
        (b"\x0a\x02\xff\xfe\x1a\x04\x08\x00\x1a\x00", "not UTF-8"),
        (b"\x08\x01", "wire type 0, expected 2"),
        (b"\x0a\xff\xff\xff\xff\x0f", "runs past the end"),
        (b"\x0a", "varint runs past"),
        (b"\x2b\x00", "unsupported protobuf wire type 3"),
        (b"\x0a\x01a\x1a\x0b\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", "varint exceeds 64 bits"),
    ],
)
def test_malformed_protobuf_with_a_valid_md5_raises(body, message):
    with pytest.raises(kpl.KplError, match=message):
        kpl.decode_aggregate(with_valid_md5(body))


def test_unknown_fields_and_tags_are_skipped_and_an_empty_aggregate_is_empty():
    tag = b"\x22\x05\x0a\x01k\x12\x00"  # Record.tags: {key "k", value ""}
    record = b"\x08\x00" + tag + b"\x1a\x02hi" + b"\x28\x07" + b"\x35\x00\x00\x00\x00"  # + unknown varint and fixed32
    body = b"\x0a\x01p" + b"\x1a" + bytes([len(record)]) + record + b"\x21" + b"\x00" * 8  # + unknown fixed64
    assert [(u.partition_key, u.data) for u in kpl.decode_aggregate(with_valid_md5(body))] == [("p", b"hi")]
    assert kpl.decode_aggregate(with_valid_md5(b"")) == []


def test_an_empty_aggregate_emits_nothing_and_is_counted():
    d = decoder()
    assert d.decode(kpl.encode_aggregate([]), "pk", SHARD, SEQ) == []
    assert d.counters.by_shard[SHARD][EMPTY_SKIPPED] == 1


def test_effective_hash_key():
    assert kpl.effective_hash_key("order-1", None) == int.from_bytes(hashlib.md5(b"order-1").digest(), "big")
    assert kpl.effective_hash_key("x", "42") == 42
    assert kpl.effective_hash_key("x", str(2**128)) is None
    assert kpl.effective_hash_key("x", "-1") is None
    assert kpl.effective_hash_key("x", "１２") is None  # non-ASCII digits


# --------------------------------------------------------------------------------------------- through the decoder
def test_aggregate_expands_into_user_records_with_sub_sequence_numbers():
    d = decoder()
    records = d.decode(aggregate_of("json_mixed"), "outer-key", SHARD, SEQ)
    assert [r.sub_sequence_number for r in records] == [0, 1, 2, 3, 4]
    assert [r.partition_key for r in records] == ["order-1", "order-2", "order-1", "ключ-3", "order-4"]
    assert [r.explicit_hash_key for r in records] == [None, None, None, "170141183460469231731687303715884105728", None]
    assert [r.fields for r in records] == [
        {"id": 1, "total": 19.99},
        {"id": 2, "big": 123456789012345678901234567890},
        {VALUE_FIELD: [1, 2, 3]},
        {"id": 3, "name": "ünïcødé"},
        {VALUE_FIELD: "just a string"},
    ]
    assert d.counters.by_shard[SHARD][KPL_AGGREGATES] == 1 and d.counters.by_shard[SHARD][KPL_USER_RECORDS] == 5


def test_many_user_records_keep_their_order_and_keys():
    records = decoder().decode(aggregate_of("many_partition_keys"), "pk", SHARD, SEQ)
    assert [r.sub_sequence_number for r in records] == list(range(300))
    assert [r.fields["i"] for r in records] == list(range(300))
    assert [r.partition_key for r in records] == [f"pk-{i % 150}" for i in range(300)]


def test_gzip_and_zlib_user_records_are_decompressed():
    records = decoder().decode(aggregate_of("gzip_user_records"), "pk", SHARD, SEQ)
    assert [r.fields for r in records] == [{"compressed": 1}, {"compressed": False}, {"compressed": "zlib"}]


def test_a_bad_user_record_is_kept_alone_with_its_own_bytes():
    d = decoder()
    records = d.decode(aggregate_of("with_bad_user_record"), "pk", SHARD, SEQ)
    assert [r.sub_sequence_number for r in records] == [0, 1, 2]
    assert records[0].fields == {"ok": True} and records[2].fields == {"ok": False}
    assert raw_of(records[1].fields) == b"not json at all"
    assert records[1].fields[ERROR_FIELD].startswith("KPL user record 1: invalid JSON")
    assert records[1].partition_key == "b"
    assert d.counters.by_shard[SHARD][BAD_KEPT] == 1


def test_skipping_a_bad_user_record_keeps_the_others_sub_sequence_numbers():
    d = decoder(on_bad_record="skip")
    records = d.decode(aggregate_of("with_bad_user_record"), "pk", SHARD, SEQ)
    assert [r.sub_sequence_number for r in records] == [0, 2]
    assert d.counters.by_shard[SHARD][BAD_SKIPPED] == 1


@pytest.mark.parametrize(
    "mangle",
    [lambda b: b[:-1], lambda b: corrupt(b, len(b) - 1), lambda b: corrupt(b, 12), lambda b: b[:30]],
    ids=["truncated", "bad-md5", "corrupt-body", "cut"],
)
def test_a_corrupt_aggregate_is_one_bad_record_never_garbage(mangle):
    blob = mangle(aggregate_of("json_mixed"))
    d = decoder()
    [record] = d.decode(blob, "outer-key", SHARD, SEQ)
    assert record.sub_sequence_number == 0 and record.partition_key == "outer-key"
    assert set(record.fields) == {RAW_DATA_FIELD, ERROR_FIELD}
    assert raw_of(record.fields) == blob
    assert record.fields[ERROR_FIELD].startswith("corrupt KPL aggregate: ")
    assert d.counters.by_shard[SHARD][BAD_KEPT] == 1 and d.counters.by_shard[SHARD][KPL_AGGREGATES] == 0


def test_a_corrupt_aggregate_under_fail_names_the_record():
    with pytest.raises(AirbyteTracedException) as info:
        decoder(on_bad_record="fail").decode(aggregate_of("json_mixed")[:-1], "pk", SHARD, SEQ)
    assert SHARD in info.value.message and SEQ in info.value.message and "MD5 mismatch" in info.value.message


def test_a_bad_user_record_under_fail_names_its_sub_sequence_number():
    with pytest.raises(AirbyteTracedException) as info:
        decoder(on_bad_record="fail").decode(aggregate_of("with_bad_user_record"), "pk", SHARD, SEQ)
    assert "sub-sequence number 1" in info.value.message and "KPL user record 1" in info.value.message


def test_hash_keys_outside_the_shard_range_are_counted_logged_and_kept():
    logger, handler = make_logger("airbyte.test_kpl_range")
    d = decoder(logger=logger)
    blob = aggregate_of("json_mixed")
    # the lower half of the hash space: the explicit key 2**127 is outside, md5-routed keys depend on the hash
    low_half = (0, 2**127 - 1)
    records = d.decode(blob, "pk", SHARD, SEQ, hash_range=low_half)
    assert len(records) == 5
    outside = sum(
        1
        for pk, ehk, _ in expected_user_records("json_mixed")
        if not 0 <= kpl.effective_hash_key(pk, ehk) <= 2**127 - 1
    )
    assert outside >= 1
    assert d.counters.by_shard[SHARD][HASH_KEY_OUT_OF_RANGE] == outside
    assert len(handler.messages(logging.WARNING)) == outside
    # string bounds as boto3 returns them, and a full range: nothing counted
    d2 = decoder()
    d2.decode(blob, "pk", SHARD, SEQ, hash_range=(str(FULL_RANGE[0]), str(FULL_RANGE[1])))
    assert d2.counters.by_shard[SHARD][HASH_KEY_OUT_OF_RANGE] == 0


def test_out_of_range_logging_is_bounded():
    logger, handler = make_logger("airbyte.test_kpl_range_bounded")
    d = decoder(logger=logger)
    blob = kpl.encode_aggregate([("k", "5", b"{}")] * 1000)
    d.decode(blob, "pk", SHARD, SEQ, hash_range=(10, 20))
    assert d.counters.by_shard[SHARD][HASH_KEY_OUT_OF_RANGE] == 1000
    assert len(handler.records) == 10 + 2


def test_bytes_format_never_expands_aggregates():
    blob = aggregate_of("json_mixed")
    [record] = decoder("bytes").decode(blob, "pk", SHARD, SEQ)
    assert base64.b64decode(record.fields[VALUE_FIELD]) == blob


def test_text_format_expands_aggregates():
    records = decoder("text").decode(aggregate_of("with_bad_user_record"), "pk", SHARD, SEQ)
    assert [r.fields for r in records] == [{VALUE_FIELD: '{"ok":true}'}, {VALUE_FIELD: "not json at all"}, {VALUE_FIELD: '{"ok":false}'}]


def test_cloudwatch_logs_inside_an_aggregate_flatten_with_a_stride():
    d = decoder("cloudwatch_logs")
    records = d.decode(aggregate_of("cloudwatch_logs"), "pk", SHARD, SEQ)
    # user record 0: two events; user record 1: a control message (skipped); user record 2: one event
    assert [r.sub_sequence_number for r in records] == [0, 1, 2 * SUB_SEQUENCE_STRIDE]
    assert [r.fields["message"] for r in records] == ["first", '{"level":"INFO"}', "third"]
    assert records[1].fields["message_json"] == {"level": "INFO"}
    assert d.counters.by_shard[SHARD][CONTROL_SKIPPED] == 1


def test_resume_inside_an_aggregate_is_exact():
    """The read path drops user records up to the checkpoint's sub-sequence number: what is left is exactly the
    rest, in order, whatever the policy was before."""
    blob = aggregate_of("with_bad_user_record")
    for policy in ("keep", "skip"):
        records = decoder(on_bad_record=policy).decode(blob, "pk", SHARD, SEQ)
        after_first = [r.fields for r in records if r.sub_sequence_number > 0]
        assert after_first[-1] == {"ok": False}
        assert len(after_first) == (2 if policy == "keep" else 1)
