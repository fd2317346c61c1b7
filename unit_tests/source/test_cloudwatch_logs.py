"""cloudwatch_logs format: one record per log event, control messages skipped and counted."""
from __future__ import annotations

import gzip
import logging

import orjson
import pytest

from source_kinesis.decoding import BAD_KEPT, CONTROL_SKIPPED, EMPTY_SKIPPED, ERROR_FIELD
from unit_tests.source.decoding_fixtures import CLOUDWATCH_CONTROL, CLOUDWATCH_DATA, SEQ, SHARD, decoder, make_logger, raw_of


def message(events, **envelope):
    body = {
        "messageType": "DATA_MESSAGE",
        "owner": "123456789012",
        "logGroup": "/aws/lambda/orders",
        "logStream": "s",
        "subscriptionFilters": ["f"],
        "logEvents": events,
        **envelope,
    }
    return gzip.compress(orjson.dumps(body))


def test_gzip_data_message_explodes_into_log_events():
    d = decoder("cloudwatch_logs")
    records = d.decode(gzip.compress(CLOUDWATCH_DATA), "any-key", SHARD, SEQ)
    assert [r.sub_sequence_number for r in records] == [0, 1]
    assert all(r.partition_key == "any-key" for r in records)
    common = {
        "owner": "123456789012",
        "log_group": "/aws/lambda/orders",
        "log_stream": "2026/11/25/[$LATEST]0123456789abcdef0123456789abcdef",
        "subscription_filters": ["orders-to-kinesis"],
    }
    assert records[0].fields == {
        **common,
        "event_id": "38601243765231451206436357342537654474561386484217790464",
        "timestamp": 1795639000000,
        "message": "START RequestId: 6b1c2d3e-0000-4000-8000-000000000001 Version: $LATEST\n",
        "_event_time": "2026-11-25T20:36:40.000Z",
    }
    assert records[1].fields == {
        **common,
        "event_id": "38601243765231451206436357342537654474561386484217790465",
        "timestamp": 1795639000001,
        "message": '{"level":"INFO","msg":"order placed","order_id":42}',
        "message_json": {"level": "INFO", "msg": "order placed", "order_id": 42},
        "_event_time": "2026-11-25T20:36:40.001Z",
    }
    assert d.counters.by_shard == {}


def test_uncompressed_messages_decode_too():
    assert len(decoder("cloudwatch_logs").decode(CLOUDWATCH_DATA, "pk", SHARD, SEQ)) == 2


def test_control_message_is_skipped_and_counted():
    logger, handler = make_logger("airbyte.test_cw_control")
    d = decoder("cloudwatch_logs", logger=logger)
    assert d.decode(gzip.compress(CLOUDWATCH_CONTROL), "pk", SHARD, SEQ) == []
    assert d.counters.by_shard[SHARD][CONTROL_SKIPPED] == 1
    assert SHARD in handler.messages(logging.INFO)[0]


def test_control_message_is_skipped_even_under_fail():
    assert decoder("cloudwatch_logs", on_bad_record="fail").decode(gzip.compress(CLOUDWATCH_CONTROL), "pk", SHARD, SEQ) == []


def test_extra_keys_are_carried_over():
    payload = message(
        [{"id": "1", "timestamp": 0, "message": "a b", "extractedFields": {"x": "a"}, "newKey": 1}],
        policyLevel="ACCOUNT_LEVEL_POLICY",
    )
    [record] = decoder("cloudwatch_logs").decode(payload, "pk", SHARD, SEQ)
    assert record.fields["policyLevel"] == "ACCOUNT_LEVEL_POLICY"
    assert record.fields["extracted_fields"] == {"x": "a"} and record.fields["newKey"] == 1
    assert record.fields["_event_time"] == "1970-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    "text, parsed",
    [
        ('{"a": 1}', {"a": 1}),
        ('  {"a": 18446744073709551616}\n', {"a": 2**64}),
        ("[1, 2]", None),  # only objects are parsed
        ("{not json", None),
        ("", None),
        ("plain text {\"a\": 1}", None),
        ('"quoted"', None),
    ],
)
def test_message_is_parsed_only_when_it_is_a_json_object(text, parsed):
    [record] = decoder("cloudwatch_logs").decode(message([{"id": "1", "timestamp": 1, "message": text}]), "pk", SHARD, SEQ)
    assert record.fields["message"] == text
    assert record.fields.get("message_json") == parsed


def test_many_events_get_consecutive_sub_sequence_numbers():
    events = [{"id": str(i), "timestamp": 1795639000000 + i, "message": f"line {i}"} for i in range(10_000)]
    records = decoder("cloudwatch_logs").decode(message(events), "pk", SHARD, SEQ)
    assert [r.sub_sequence_number for r in records] == list(range(10_000))
    assert records[-1].fields["message"] == "line 9999"


def test_an_empty_data_message_emits_nothing_and_is_counted():
    d = decoder("cloudwatch_logs")
    assert d.decode(message([]), "pk", SHARD, SEQ) == []
    assert d.counters.by_shard[SHARD][EMPTY_SKIPPED] == 1


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b'{"hello": 1}', "not a CloudWatch Logs message"),
        (b"[1]", "not a CloudWatch Logs message: payload is not a JSON object"),
        (gzip.compress(b"not json"), "invalid JSON"),
        (message("nope"), "without a logEvents array"),
        (message([1]), "event 0 is not an object"),
        (message([{"id": "1", "timestamp": 1}]), "event 0 has no message string"),
        (message([{"id": "1", "timestamp": "soon", "message": "m"}]), "event 0: timestamp is not a number"),
        (message([{"id": "1", "timestamp": 10**18, "message": "m"}]), "event 0: timestamp out of range"),
    ],
)
def test_malformed_messages_are_bad_records_kept_whole(payload, reason):
    d = decoder("cloudwatch_logs")
    [record] = d.decode(payload, "pk", SHARD, SEQ)
    assert reason in record.fields[ERROR_FIELD]
    assert raw_of(record.fields) == payload  # the compressed bytes as received
    assert d.counters.by_shard[SHARD][BAD_KEPT] == 1
