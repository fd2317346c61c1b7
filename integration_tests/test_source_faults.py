"""source-kinesis under injected faults: full syncs through the fault proxy deliver every record exactly once.

The proxy (``fault_proxy.py``) sits between the source's boto3 client and kinesis-mock and injects throttling
(ProvisionedThroughputExceeded, LimitExceeded, KMS throttling), HTTP 500/503, connection resets and disconnects,
truncated responses and latency on ``GetRecords``/``GetShardIterator`` at seeded rates, counting what it injected.
Each sync must deliver exactly the records produced — same ``(pk, n)`` events, same (shard, sequence,
sub-sequence) keys, per-key order kept — and the throttles and retries the source logs in its summary lines must
equal what the proxy injected. A spent retry budget must fail with a ``transient_error`` naming the shard, with no
state ever ahead of the records. Replay mode must serve a full read exactly once (the benchmark's server).

Control-plane calls (ListShards, DescribeStream) go through the same retry policy and response check: a truncated
ListShards on resume must keep the state, and one 503 there must be retried.

Budget: one module stream (3 shards, 240 records, a split, 120 more: 5 shards, 360 records), ~2–4 s per sync.
"""
from __future__ import annotations

import re
import time
from collections import defaultdict
from typing import Any, Dict, List, Optional, Set, Tuple

import boto3
import pytest
from botocore.config import Config

from integration_tests.fault_proxy import FAULTS, THROTTLES, FaultProxy
from integration_tests.kinesis_mock import ACCESS_KEY, REGION, SECRET_KEY
from integration_tests.replay import ReplayData, ReplayStream
from integration_tests.source_helpers import Producer, latest_states, open_shards, record_key, run_read, split

pytestmark = pytest.mark.timeout(90)

FAST = dict(get_records_per_second=5, records_per_call=25, checkpoint_interval_records=50, retry_budget_seconds=30)
SUMMARY = re.compile(r"Summary for stream '(?P<stream>.+?)': .*? (?P<throttles>\d+) throttles, (?P<retries>\d+) retries, (?P<refreshes>\d+) iterator refreshes")
DATA_PLANE = ("GetRecords", "GetShardIterator")


# ------------------------------------------------------------------------------------------------- fixtures
def ground_truth(client: Any, stream: str) -> Set[Tuple[str, str, int]]:
    """Every (shard, sequence number, 0) in the stream, read with plain boto3 (no proxy, no source)."""
    keys = set()
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        iterator = client.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        for _ in range(200):
            response = client.get_records(ShardIterator=iterator, Limit=10000)
            keys.update((shard["ShardId"], r["SequenceNumber"], 0) for r in response["Records"])
            iterator = response.get("NextShardIterator")
            if not iterator or (not response["Records"] and response.get("MillisBehindLatest") == 0):
                break
    return keys


@pytest.fixture(scope="module")
def faulty_stream(kinesis_mock):
    """3 shards, 240 records, a split of one shard, 120 more: 5 shards (one closed parent), 360 records."""
    client = kinesis_mock.client()
    name = f"faults-{int(time.time() * 1000) % 10**8}"
    client.create_stream(StreamName=name, ShardCount=3)
    from integration_tests.kinesis_mock import wait_active

    wait_active(client, name)
    producer = Producer(client, name)
    producer.put(240, batch="before-split")
    split(client, name, open_shards(client, name)[0])
    producer.put(120, batch="after-split")
    truth = ground_truth(client, name)
    assert len(truth) == 360
    return name, producer, truth


# -------------------------------------------------------------------------------------------------- helpers
def sync_through(kinesis_mock, name: str, *, faults=None, seed: int = 0, decide=None, latency_seconds=0.0, state=None, **overrides):
    """One full read of ``name`` through a fresh proxy. Returns (output, proxy, seconds)."""
    settings = dict(FAST, **overrides)
    with FaultProxy.to_upstream(
        kinesis_mock.endpoint_url,
        faults=faults,
        seed=seed,
        decide=decide,
        latency_seconds=latency_seconds,
        fault_latency_seconds=0.2,
        max_lifetime_seconds=80,
        max_requests=3000,
    ) as proxy:
        config = kinesis_mock.source_config([name], endpoint_url=proxy.endpoint_url, **settings)
        started = time.monotonic()
        output = run_read(config, [name], state=state)
        seconds = time.monotonic() - started
    assert proxy.stop_reason is None, f"the proxy hit its bound: {proxy.stop_reason}"
    assert not proxy.backend_errors, proxy.backend_errors
    return output, proxy, seconds


def logged_counts(output) -> Dict[str, int]:
    """Throttles/retries/refreshes summed over every 'Summary for stream' line the source logged."""
    totals = defaultdict(int)
    lines = [m.log.message for m in output.logs if m.log.message.startswith("Summary for stream")]
    for line in lines:
        match = SUMMARY.search(line)
        assert match, f"unparseable summary line: {line}"
        for key in ("throttles", "retries", "refreshes"):
            totals[key] += int(match[key])
    totals["lines"] = len(lines)
    return dict(totals)


def assert_exactly_once(output, producer: Producer, truth: Set[Tuple[str, str, int]]) -> None:
    assert not output.errors, [e.trace.error.message for e in output.errors]
    datas = [m.record.data for m in output.records]
    keys = [record_key(d) for d in datas]
    assert len(keys) == len(set(keys)), "a record was delivered twice"
    assert set(keys) == truth, f"lost {len(truth - set(keys))}, unexpected {len(set(keys) - truth)}"
    assert sorted((d["pk"], d["n"]) for d in datas) == sorted((e["pk"], e["n"]) for e in producer.sent)
    seen: Dict[str, int] = defaultdict(int)
    for d in datas:  # per partition key, in production order, across the split
        assert d["n"] == seen[d["pk"]] + 1, f"key {d['pk']}: {d['n']} after {seen[d['pk']]}"
        seen[d["pk"]] = d["n"]
    statuses = [m.trace.stream_status.status.name for m in output.trace_messages if m.trace.stream_status]
    assert statuses[-1] == "COMPLETE"


def assert_counts_match(output, proxy: FaultProxy) -> Dict[str, int]:
    """The source's logged throttles equal the throttles injected; each injected failure cost exactly one retry."""
    logged = logged_counts(output)
    assert logged["lines"] == 1
    assert logged["throttles"] == proxy.throttles(), (logged, proxy.snapshot())
    assert logged["retries"] == proxy.failures(), (logged, proxy.snapshot())
    return logged


# ---------------------------------------------------------------------------------------------------- tests
def test_baseline_through_the_proxy_without_faults(kinesis_mock, faulty_stream):
    name, producer, truth = faulty_stream
    output, proxy, seconds = sync_through(kinesis_mock, name)
    assert_exactly_once(output, producer, truth)
    assert proxy.count() == 0 and proxy.requests["GetRecords"] >= 15
    assert logged_counts(output) == {"throttles": 0, "retries": 0, "refreshes": 0, "lines": 1}
    assert seconds < 20


def test_thirty_percent_throttling_on_get_records(kinesis_mock, faulty_stream):
    name, producer, truth = faulty_stream
    output, proxy, _ = sync_through(kinesis_mock, name, faults={"GetRecords": {"throughput_exceeded": 0.3}}, seed=30)
    assert_exactly_once(output, producer, truth)
    assert proxy.count("throughput_exceeded", "GetRecords") >= 4
    assert assert_counts_match(output, proxy)["throttles"] == proxy.count("throughput_exceeded")


FAULT_CASES = {
    "limit_exceeded": {"GetRecords": {"limit_exceeded": 0.3}, "GetShardIterator": {"limit_exceeded": 0.3}},
    "kms_throttling": {"GetRecords": {"kms_throttling": 0.3}},
    "http_500": {"GetRecords": {"http_500": 0.3}, "GetShardIterator": {"http_500": 0.3}},
    "http_503": {"GetRecords": {"http_503": 0.3}, "GetShardIterator": {"http_503": 0.3}},
    "reset": {"GetRecords": {"reset": 0.3}, "GetShardIterator": {"reset": 0.3}},
    "disconnect": {"GetRecords": {"disconnect": 0.3}, "GetShardIterator": {"disconnect": 0.3}},
    "truncate": {"GetRecords": {"truncate": 0.3}, "GetShardIterator": {"truncate": 0.3}},
    "latency": {"*": {"latency": 0.3}},
}


@pytest.mark.parametrize("kind", sorted(FAULT_CASES))
def test_each_fault_kind_still_delivers_exactly_once(kinesis_mock, faulty_stream, kind):
    name, producer, truth = faulty_stream
    output, proxy, seconds = sync_through(kinesis_mock, name, faults=FAULT_CASES[kind], seed=sorted(FAULT_CASES).index(kind) + 1)
    assert_exactly_once(output, producer, truth)
    assert proxy.count(kind) >= 3, proxy.snapshot()
    if "GetRecords" in FAULT_CASES[kind]:  # e.g. a truncated GetRecords once read as "shard closed" (records lost)
        assert proxy.count(kind, "GetRecords") >= 1, proxy.snapshot()
    assert proxy.count() == proxy.count(kind)
    assert_counts_match(output, proxy)
    assert seconds < 30


@pytest.mark.slow
def test_every_fault_at_once_with_base_latency(kinesis_mock, faulty_stream):
    """A storm: 45 % of data-plane calls fail in some way, plus 20 ms on every request."""
    name, producer, truth = faulty_stream
    mix = {"throughput_exceeded": 0.1, "limit_exceeded": 0.05, "kms_throttling": 0.05, "http_500": 0.05, "http_503": 0.05,
           "reset": 0.05, "disconnect": 0.03, "truncate": 0.05, "latency": 0.02}
    output, proxy, _ = sync_through(kinesis_mock, name, faults={op: mix for op in DATA_PLANE}, seed=2024, latency_seconds=0.02)
    assert_exactly_once(output, producer, truth)
    assert len({kind for (kind, _op) in proxy.injected}) >= 5, proxy.snapshot()
    assert_counts_match(output, proxy)


@pytest.mark.slow
def test_spent_retry_budget_fails_naming_the_shard_and_states_never_run_ahead(kinesis_mock, faulty_stream):
    """After 6 good GetRecords every GetRecords is throttled: the 2 s budget runs out with a transient error
    naming the shard; every state emitted covers only records emitted before it; a resume completes exactly."""
    name, producer, truth = faulty_stream

    def decide(operation: str, number: int) -> Optional[str]:
        return "throughput_exceeded" if operation == "GetRecords" and number > 6 else None

    output, proxy, seconds = sync_through(kinesis_mock, name, decide=decide, retry_budget_seconds=2)
    assert seconds < 20
    errors = [m.trace.error for m in output.errors]
    assert errors and all(e.failure_type.name == "transient_error" for e in errors)
    assert re.search(r"shard shardId-\d{12}", errors[0].message) and "ProvisionedThroughputExceededException" in errors[0].message
    assert "retry budget" in errors[0].message
    assert logged_counts(output)["throttles"] <= proxy.throttles()
    # States never cover records not yet emitted: every checkpointed position is a record emitted before it.
    emitted: Dict[str, List[int]] = defaultdict(list)
    delivered = []
    for message in output.records_and_state_messages:
        if message.type.name == "RECORD":
            shard, sequence, _ = key = record_key(message.record.data)
            emitted[shard].append(int(sequence))
            delivered.append(key)
            continue
        for shard_id, shard in message.state.stream.stream_state.__dict__["shards"].items():
            if shard.get("sequence_number") is not None:
                assert int(shard["sequence_number"]) in emitted[shard_id], f"state ahead of records on {shard_id}"
            if shard.get("finished"):
                assert emitted[shard_id], f"{shard_id} finished without a record emitted"
    assert 0 < len(delivered) < len(truth) and len(set(delivered)) == len(delivered)
    # Resume straight against the emulator: exactly the remainder.
    config = kinesis_mock.source_config([name], **FAST)
    resumed = run_read(config, [name], state=latest_states(output))
    assert not resumed.errors
    rest = [record_key(m.record.data) for m in resumed.records]
    assert len(rest) == len(set(rest)) and not set(rest) & set(delivered)
    assert set(rest) | set(delivered) == truth


# ------------------------------------------------------------------------------- control plane (known gaps)
@pytest.fixture(scope="module")
def caught_up_state(kinesis_mock, faulty_stream):
    """The final state of a clean full sync straight against the emulator: a resumed sync has nothing to read."""
    name, _producer, truth = faulty_stream
    output = run_read(kinesis_mock.source_config([name], **FAST), [name])
    assert not output.errors and len(output.records) == len(truth)
    return latest_states(output)


def first_call_fails(kind: str, *operations: str):
    def decide(operation: str, number: int) -> Optional[str]:
        return kind if operation in operations and number == 1 else None

    return decide


def test_truncated_list_shards_on_resume_keeps_the_state(kinesis_mock, faulty_stream, caught_up_state):
    name, _producer, _truth = faulty_stream
    output, proxy, _ = sync_through(kinesis_mock, name, decide=first_call_fails("truncate", "ListShards"), state=caught_up_state)
    assert proxy.count("truncate", "ListShards") == 1
    before = caught_up_state[0].stream.stream_state.__dict__["shards"]
    after = output.state_messages[-1].state.stream.stream_state.__dict__["shards"]
    assert set(after) == set(before), "shards left the state because one ListShards response was cut short"


def test_one_control_plane_error_is_retried(kinesis_mock, faulty_stream):
    name, producer, truth = faulty_stream
    output, proxy, _ = sync_through(kinesis_mock, name, decide=first_call_fails("http_503", "ListShards", "DescribeStream"))
    assert_exactly_once(output, producer, truth)
    assert proxy.count("http_503") == 2


# ------------------------------------------------------------------------------------------------ replay mode
def replay_client(url: str):
    return boto3.client(
        "kinesis", endpoint_url=url, region_name=REGION, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"total_max_attempts": 1}),
    )


def test_replay_server_serves_a_full_read_exactly_once(kinesis_mock):
    """The benchmark's server speaks real Kinesis: the source reads N×M records once each, with decoding intact."""
    data = ReplayData([ReplayStream("replayed", shards=4, records_per_shard=300)])
    with FaultProxy.replay(data, latency_seconds=0.002, max_lifetime_seconds=60, max_requests=2000) as server:
        config = kinesis_mock.source_config(["replayed"], endpoint_url=server.endpoint_url, **dict(FAST, records_per_call=100))
        output = run_read(config, ["replayed"])
        served = sum(server.backend.records_served.values())
    assert not output.errors and server.stop_reason is None and not server.backend_errors
    datas = [m.record.data for m in output.records]
    keys = [(d["_kinesis_shard_id"], d["_kinesis_sequence_number"]) for d in datas]
    assert len(keys) == len(set(keys)) == 1200 and set(keys) == data.expected_keys("replayed")
    assert served == 1200
    assert sorted(d["event_id"] for d in datas) == sorted(f"{s:03d}-{o:09d}" for s in range(4) for o in range(300))
    assert all(d["_kinesis_partition_key"] == f"pk-{d['shard']}-{d['n'] % 64}" for d in datas)
    # Per shard, in sequence order.
    by_shard = defaultdict(list)
    for d in datas:
        by_shard[d["_kinesis_shard_id"]].append(d["n"])
    assert all(ns == sorted(ns) for ns in by_shard.values())
    # Resuming from the final state reads nothing more.
    with FaultProxy.replay(data, max_lifetime_seconds=30, max_requests=200) as server:
        again = run_read(dict(config, endpoint_url=server.endpoint_url), ["replayed"], state=latest_states(output))
    assert not again.errors and again.records == []


def test_replay_with_throttling_counts_match(kinesis_mock):
    data = ReplayData([ReplayStream("replay-throttled", shards=3, records_per_shard=100)])
    with FaultProxy.replay(data, faults={"GetRecords": {"throughput_exceeded": 0.3}}, seed=5, max_lifetime_seconds=60, max_requests=2000) as server:
        config = kinesis_mock.source_config(["replay-throttled"], endpoint_url=server.endpoint_url, **FAST)
        output = run_read(config, ["replay-throttled"])
    keys = [record_key(m.record.data) for m in output.records]
    assert not output.errors and len(keys) == len(set(keys)) == 300
    assert server.throttles() >= 3
    assert_counts_match(output, server)


def test_replay_api_with_plain_boto3():
    """Paging, every iterator type, and the errors Kinesis gives for bad input."""
    data = ReplayData([ReplayStream("api", shards=3, records_per_shard=50, arrival_start=1_700_000_000.0)])
    with FaultProxy.replay(data, max_lifetime_seconds=30, max_requests=200) as server:
        client = replay_client(server.endpoint_url)
        first = client.list_shards(StreamName="api", MaxResults=2)
        rest = client.list_shards(NextToken=first["NextToken"], MaxResults=2)
        shards = first["Shards"] + rest["Shards"]
        assert [s["ShardId"] for s in shards] == [f"shardId-{i:012d}" for i in range(3)] and "NextToken" not in rest
        assert int(shards[-1]["HashKeyRange"]["EndingHashKey"]) == 2**128 - 1
        with pytest.raises(client.exceptions.InvalidArgumentException):
            client.list_shards(StreamName="api", NextToken=first["NextToken"])
        description = client.describe_stream(StreamName="api")["StreamDescription"]
        assert description["StreamStatus"] == "ACTIVE" and len(description["Shards"]) == 3
        arn = description["StreamARN"]

        def records(kind: str, **extra):
            iterator = client.get_shard_iterator(StreamARN=arn, ShardId="shardId-000000000001", ShardIteratorType=kind, **extra)["ShardIterator"]
            return client.get_records(ShardIterator=iterator, Limit=10)

        page = records("TRIM_HORIZON")
        assert len(page["Records"]) == 10 and page["MillisBehindLatest"] > 0 and page["NextShardIterator"]
        seq = page["Records"][3]["SequenceNumber"]
        assert len(seq) == 56 and records("AT_SEQUENCE_NUMBER", StartingSequenceNumber=seq)["Records"][0]["SequenceNumber"] == seq
        assert int(records("AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=seq)["Records"][0]["SequenceNumber"]) > int(seq)
        at = records("AT_TIMESTAMP", Timestamp=1_700_000_000.020)["Records"][0]
        assert at["ApproximateArrivalTimestamp"].timestamp() == pytest.approx(1_700_000_000.020)
        latest = records("LATEST")
        assert latest["Records"] == [] and latest["MillisBehindLatest"] == 0
        tail = client.get_records(ShardIterator=page["NextShardIterator"], Limit=10000)
        assert len(tail["Records"]) == 40 and tail["MillisBehindLatest"] == 0
        assert page["Records"][0]["Data"] == data.payloads("api")[50][1]
        with pytest.raises(client.exceptions.InvalidArgumentException):
            client.get_records(ShardIterator="garbage", Limit=10)
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.describe_stream(StreamName="nope")


# ------------------------------------------------------------------------------------------- proxy bounds
def test_proxy_is_bounded_and_loopback_only(kinesis_mock):
    with pytest.raises(ValueError):
        FaultProxy.to_upstream("http://10.0.0.1:4567")
    with pytest.raises(ValueError):
        FaultProxy.to_upstream(kinesis_mock.endpoint_url, faults={"GetRecords": {"nonsense": 0.5}})
    with pytest.raises(ValueError):
        FaultProxy.to_upstream(kinesis_mock.endpoint_url, faults={"GetRecords": {"reset": 0.7, "http_500": 0.7}})
    with FaultProxy.to_upstream(kinesis_mock.endpoint_url, max_requests=3, max_lifetime_seconds=30) as proxy:
        assert proxy.endpoint_url.startswith("http://127.0.0.1:")
        client = replay_client(proxy.endpoint_url)
        for _ in range(3):
            client.list_streams(Limit=1)
        with pytest.raises(Exception):
            client.list_streams(Limit=1)
        deadline = time.monotonic() + 5
        while proxy._server is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proxy.stop_reason == "max requests (3) reached" and proxy._server is None
    with FaultProxy.to_upstream(kinesis_mock.endpoint_url, max_lifetime_seconds=0.3) as proxy:
        time.sleep(0.8)
        assert proxy.stop_reason == "max lifetime reached"
    assert set(THROTTLES) < set(FAULTS)


def test_transport_failures_are_retryable_then_transient():
    """What resets and truncation look like to the source (botocore 1.44), and how it classifies them."""
    from botocore.exceptions import ConnectionClosedError, IncompleteReadError, ResponseStreamingError

    from source_kinesis.errors import IncompleteResponse, is_retryable, is_throttling, translate

    failures = [
        ConnectionClosedError(endpoint_url="http://127.0.0.1:1/"),  # reset / closed before the response
        ResponseStreamingError(error="IncompleteRead(10 bytes read, 90 more expected)"),
        IncompleteReadError(actual_bytes=10, expected_bytes=100),
        IncompleteResponse("GetRecords", "Records"),  # a 200 body cut short: botocore parses it as {}
    ]
    for exc in failures:
        assert is_retryable(exc) and not is_throttling(exc), exc
        error = translate(exc, "GetRecords", "orders", "shardId-000000000007")
        assert error.failure_type.name == "transient_error" and "shardId-000000000007" in error.message
