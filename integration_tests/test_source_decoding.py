"""Decoding on a real stream (kinesis-mock): plain, gzip and KPL-aggregated JSON mixed; resume inside aggregates;
a CloudWatch Logs subscription stream exploding into log events; schema sampling at discover."""
from __future__ import annotations

import gzip
import json
import time

from aws_kinesis_agg.aggregator import RecordAggregator  # an independent KPL producer (PyPI aws-kinesis-agg)

from integration_tests.source_helpers import read_in_process, record_key, run_read, state_list


def put(client, stream, data: bytes, partition_key: str, explicit_hash_key=None):
    kwargs = {"StreamName": stream, "Data": data, "PartitionKey": partition_key}
    if explicit_hash_key:
        kwargs["ExplicitHashKey"] = explicit_hash_key
    client.put_record(**kwargs)


def aggregate(events):
    aggregator = RecordAggregator()
    for event in events:
        aggregator.add_user_record(event["pk"], json.dumps(event).encode())
    partition_key, explicit_hash_key, data = aggregator.clear_and_get().get_contents()
    return partition_key, explicit_hash_key, data


def test_mixed_plain_gzip_and_kpl_records_decode_and_resume_exactly(kinesis_mock, kinesis, new_stream):
    name = new_stream(shards=2, prefix="mixed")
    expected = []
    n = 0
    for round_ in range(4):
        plain = {"pk": f"p{round_}", "n": n, "kind": "plain"}
        put(kinesis, name, json.dumps(plain).encode(), plain["pk"])
        expected.append(plain)
        n += 1
        zipped = {"pk": f"z{round_}", "n": n, "kind": "gzip", "big": 123456789012345678901234567890}
        put(kinesis, name, gzip.compress(json.dumps(zipped).encode()), zipped["pk"])
        expected.append(zipped)
        n += 1
        events = [{"pk": f"k{round_}-{i}", "n": n + i, "kind": "kpl"} for i in range(5)]
        n += 5
        pk, ehk, data = aggregate(events)
        put(kinesis, name, data, pk, ehk)
        expected.extend(events)
    config = kinesis_mock.source_config([name], checkpoint_interval_records=3)
    output = run_read(config, [name])
    assert not output.errors
    datas = [m.record.data for m in read_in_process(config, [name]) if m.type.name == "RECORD"]
    assert sorted(d["n"] for d in datas) == sorted(e["n"] for e in expected)
    by_n = {d["n"]: d for d in datas}
    for event in expected:
        got = by_n[event["n"]]
        assert {k: got[k] for k in event} == event  # exact values, including the integer beyond 64 bits
        assert got["_kinesis_partition_key"] == event["pk"]
        assert "_kinesis_error" not in got
    kpl = sorted((d["_kinesis_sequence_number"], d["_kinesis_sub_sequence_number"]) for d in datas if d["kind"] == "kpl")
    assert sorted(sub for _, sub in kpl) == sorted(list(range(5)) * 4)

    # Resume from every state: exactly the remainder, including states that stop inside an aggregate.
    everything, before_each = [], []
    for message in output.records_and_state_messages:
        if message.type.name == "RECORD":
            everything.append(record_key(message.record.data))
        else:
            before_each.append((list(everything), message))
    inside_aggregate = 0
    for before, state_message in before_each:
        shards = state_message.state.stream.stream_state.__dict__["shards"]
        inside_aggregate += any(0 < s["sub_sequence_number"] < 4 for s in shards.values())
        resumed = run_read(config, [name], state=state_list(state_message))
        got = [record_key(m.record.data) for m in resumed.records]
        assert len(got) == len(set(got))
        assert set(got) == set(everything) - set(before)
    assert inside_aggregate >= 1, "no checkpoint landed inside an aggregate"


def test_cloudwatch_logs_stream_explodes_into_log_events(kinesis_mock, kinesis, new_stream):
    name = new_stream(shards=1, prefix="cwl")
    data_message = {
        "messageType": "DATA_MESSAGE",
        "owner": "123456789012",
        "logGroup": "/aws/lambda/orders",
        "logStream": "2026/11/25/[$LATEST]0123456789abcdef0123456789abcdef",
        "subscriptionFilters": ["orders-to-kinesis"],
        "logEvents": [
            {"id": "38601243765231451206436357342537654474561386484217790464", "timestamp": 1795639000000, "message": "START RequestId: 1\n"},
            {"id": "38601243765231451206436357342537654474561386484217790465", "timestamp": 1795639000001, "message": '{"level":"INFO","order_id":42}'},
            {"id": "38601243765231451206436357342537654474561386484217790466", "timestamp": 1795639000002, "message": "END RequestId: 1\n"},
        ],
    }
    control = {"messageType": "CONTROL_MESSAGE", "owner": "CloudwatchLogs", "logGroup": "", "logStream": "", "subscriptionFilters": [],
               "logEvents": [{"id": "", "timestamp": 1795639000000, "message": "CWL CONTROL MESSAGE: Checking health of destination Kinesis stream."}]}
    put(kinesis, name, gzip.compress(json.dumps(control).encode()), "control")
    put(kinesis, name, gzip.compress(json.dumps(data_message).encode()), "logs")
    config = kinesis_mock.source_config([name], format="cloudwatch_logs")
    output = run_read(config, [name])
    assert not output.errors
    datas = [m.record.data for m in output.records]
    assert len(datas) == 3
    assert len({record_key(d) for d in datas}) == 3
    messages = [json.dumps(d, sort_keys=True) for d in datas]
    assert any("order_id" in m for m in messages)
    assert all("/aws/lambda/orders" in m for m in messages)
    summary = [m.log.message for m in output.logs if m.log.message.startswith("Summary for stream")]
    assert summary and "control" in summary[-1]


def test_discover_samples_records_to_infer_the_payload_schema(kinesis_mock, kinesis, new_stream):
    from airbyte_cdk.test.entrypoint_wrapper import discover

    from source_kinesis.source import SourceKinesis

    name = new_stream(shards=2, prefix="sample")
    for i in range(20):
        put(kinesis, name, json.dumps({"order_id": i, "user": f"u{i}", "total": i * 1.5, "tags": ["a"]}).encode(), f"k{i}")
    started = time.monotonic()
    output = discover(SourceKinesis(), kinesis_mock.source_config([name]))  # sampling is the default
    sampled_seconds = time.monotonic() - started
    schema = output.catalog.catalog.streams[0].json_schema
    props = schema["properties"]
    assert props["order_id"]["type"] == ["integer", "null"] and props["user"]["type"] == ["string", "null"]
    assert props["order_id"]["x-inferred"] is True and props["tags"]["type"] == ["array", "null"]
    assert props["_kinesis_sequence_number"]["type"] == "string"
    assert schema["additionalProperties"] is True
    started = time.monotonic()
    plain = discover(SourceKinesis(), kinesis_mock.source_config([name], schema_sample_size=0))
    plain_seconds = time.monotonic() - started
    assert "order_id" not in plain.catalog.catalog.streams[0].json_schema["properties"]
    # the documented bound: sampling adds at most SCHEMA_SAMPLE_SECONDS per stream (+ slack for a loaded machine)
    from source_kinesis.source import SCHEMA_SAMPLE_SECONDS

    assert sampled_seconds - plain_seconds < SCHEMA_SAMPLE_SECONDS + 2, (sampled_seconds, plain_seconds)
