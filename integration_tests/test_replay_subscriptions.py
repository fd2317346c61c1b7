"""Enhanced fan-out on the in-memory Kinesis (``replay.py`` behind ``FaultProxy.replay``): the event-stream encoder
against botocore's decoder, streamed (chunked) responses, consumers, ``SubscribeToShard`` (backlog, live puts,
heartbeats, expiry, the resubscribe cooldown, faults before and during the stream), and resharding (``SplitShard`` /
``MergeShards``, ``ChildShards`` at a closed shard's end in ``GetRecords`` and in subscriptions).

Subscriptions are read with plain httpx (the wire: chunked HTTP/1.1, event-stream messages decoded by botocore's
``EventStreamBuffer``) and, where the parsed shape matters, with boto3's ``subscribe_to_shard``."""
from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import boto3
import botocore.session
import httpx
import pytest
from botocore.config import Config
from botocore.eventstream import ChecksumMismatch, EventStream, EventStreamBuffer
from botocore.exceptions import EventStreamError
from botocore.parsers import EventStreamJSONParser

from integration_tests import event_stream
from integration_tests.fault_proxy import FaultProxy
from integration_tests.replay import ReplayData, ReplayStream

REGION, ACCESS_KEY, SECRET_KEY = "us-east-1", "test", "test-secret"
SHARD0 = "shardId-000000000000"


def client_for(url: str):
    return boto3.client("kinesis", endpoint_url=url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY, config=Config(retries={"total_max_attempts": 1}, read_timeout=10))


def serve(data: ReplayData, **kwargs: Any) -> FaultProxy:
    kwargs.setdefault("max_lifetime_seconds", 60)
    return FaultProxy.replay(data, **kwargs)


def headers_for(operation: str) -> Dict[str, str]:
    return {"X-Amz-Target": f"Kinesis_20131202.{operation}", "Content-Type": "application/x-amz-json-1.1"}


def subscribe_body(arn: str, shard_id: str, position: Optional[Dict[str, Any]] = None) -> bytes:
    return json.dumps({"ConsumerARN": arn, "ShardId": shard_id, "StartingPosition": position or {"Type": "TRIM_HORIZON"}}).encode()


class Subscription:
    """One raw SubscribeToShard over httpx: ``status``, ``error`` (the JSON body of a refusal), and ``messages()``:
    (kind, JSON payload, monotonic receipt time) per event-stream message, kind being the event type or
    ``exception:<type>``."""

    def __init__(self, http: httpx.Client, response: httpx.Response) -> None:
        self.http, self.response = http, response
        self.status = response.status_code
        self.error: Optional[Dict[str, Any]] = None
        if self.status != 200:
            self.error = json.loads(response.read())
        else:
            assert response.headers["content-type"] == event_stream.CONTENT_TYPE
            assert response.headers.get("transfer-encoding") == "chunked"

    def messages(self) -> Iterator[Tuple[str, Dict[str, Any], float]]:
        buffer = EventStreamBuffer()
        for chunk in self.response.iter_raw():
            buffer.add_data(chunk)
            for message in buffer:
                kind = message.headers[":message-type"]
                name = message.headers[":event-type"] if kind == "event" else f"exception:{message.headers[':exception-type']}"
                yield name, json.loads(message.payload), time.monotonic()

    def events(self) -> Iterator[Dict[str, Any]]:
        """The SubscribeToShardEvent payloads, after checking the initial response."""
        messages = self.messages()
        kind, payload, _ = next(messages)
        assert (kind, payload) == ("initial-response", {})
        for kind, payload, _ in messages:
            assert kind == "SubscribeToShardEvent", (kind, payload)
            yield payload


@contextlib.contextmanager
def subscription(url: str, arn: str, shard_id: str, position: Optional[Dict[str, Any]] = None, timeout: float = 10.0) -> Iterator[Subscription]:
    with httpx.Client(timeout=timeout, trust_env=False) as http:
        with http.stream("POST", url, headers=headers_for("SubscribeToShard"), content=subscribe_body(arn, shard_id, position)) as response:
            yield Subscription(http, response)


def call(url: str, operation: str, body: Dict[str, Any]) -> httpx.Response:
    return httpx.post(url, headers=headers_for(operation), content=json.dumps(body).encode(), timeout=10, trust_env=False)


def wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


# ------------------------------------------------------------------------------------------------ the encoder
def test_event_stream_framing_round_trips_through_botocore():
    records = [{"SequenceNumber": "4959" + "0" * 51 + "1", "ApproximateArrivalTimestamp": 1_700_000_000.5,
                "Data": base64.b64encode(b'{"n": 1}').decode(), "PartitionKey": "pk-ü", "EncryptionType": "NONE"}]
    payload = json.dumps({"Records": records, "ContinuationSequenceNumber": records[0]["SequenceNumber"], "MillisBehindLatest": 7}).encode()
    wire = (event_stream.event("initial-response", b"{}") + event_stream.event("SubscribeToShardEvent", payload)
            + event_stream.event("SubscribeToShardEvent", b'{"Records":[],"ContinuationSequenceNumber":null,"MillisBehindLatest":0,'
                                                          b'"ChildShards":[{"ShardId":"shardId-000000000001","ParentShards":["shardId-000000000000"],'
                                                          b'"HashKeyRange":{"StartingHashKey":"0","EndingHashKey":"9"}}]}')
            + event_stream.exception("InternalFailureException", "boom"))

    for step in (len(wire), 1, 7):  # all at once, byte by byte, in odd pieces
        buffer = EventStreamBuffer()
        messages = []
        for i in range(0, len(wire), step):
            buffer.add_data(wire[i:i + step])
            messages += list(buffer)
        assert [m.headers for m in messages] == [
            {":message-type": "event", ":event-type": "initial-response", ":content-type": "application/json"},
            {":message-type": "event", ":event-type": "SubscribeToShardEvent", ":content-type": "application/json"},
            {":message-type": "event", ":event-type": "SubscribeToShardEvent", ":content-type": "application/json"},
            {":message-type": "exception", ":exception-type": "InternalFailureException", ":content-type": "application/json"},
        ]
        assert messages[1].payload == payload and json.loads(messages[3].payload) == {"message": "boom"}

    # botocore's own event-stream parser with the kinesis model's SubscribeToShard output shape
    model = botocore.session.get_session().get_service_model("kinesis").operation_model("SubscribeToShard")
    shape = model.output_shape.members["EventStream"]

    class Raw:
        def stream(self):
            yield from (wire[i:i + 100] for i in range(0, len(wire), 100))

        def close(self):
            pass

    stream = EventStream(Raw(), shape, EventStreamJSONParser(), "SubscribeToShard")
    assert stream.get_initial_response().headers[":event-type"] == "initial-response"
    parsed = []
    with pytest.raises(EventStreamError) as raised:
        for item in stream:
            parsed.append(item["SubscribeToShardEvent"])
    assert raised.value.response["Error"] == {"Code": "InternalFailureException", "Message": "boom"}
    assert parsed[0]["Records"][0]["Data"] == b'{"n": 1}' and parsed[0]["Records"][0]["PartitionKey"] == "pk-ü"
    assert parsed[0]["Records"][0]["ApproximateArrivalTimestamp"].timestamp() == 1_700_000_000.5
    assert parsed[0]["ContinuationSequenceNumber"] == records[0]["SequenceNumber"] and parsed[0]["MillisBehindLatest"] == 7
    assert "ContinuationSequenceNumber" not in parsed[1] and parsed[1]["ChildShards"][0]["ParentShards"] == ["shardId-000000000000"]

    corrupted = bytearray(event_stream.event("SubscribeToShardEvent", payload))
    corrupted[-10] ^= 1
    with pytest.raises(ChecksumMismatch):
        buffer = EventStreamBuffer()
        buffer.add_data(bytes(corrupted))
        list(buffer)


# ------------------------------------------------------------------------------------------------- consumers
def test_consumer_is_creating_then_active_and_the_consumer_operations():
    data = ReplayData([ReplayStream("cons", shards=1, records_per_shard=3)], consumer_activation_seconds=0.4)
    with serve(data) as server:
        client = client_for(server.endpoint_url)
        stream_arn = client.describe_stream_summary(StreamName="cons")["StreamDescriptionSummary"]["StreamARN"]
        registered = client.register_stream_consumer(StreamARN=stream_arn, ConsumerName="efo")["Consumer"]
        arn = registered["ConsumerARN"]
        assert registered["ConsumerStatus"] == "CREATING"
        assert arn == f"{stream_arn}/consumer/efo:{int(registered['ConsumerCreationTimestamp'].timestamp())}"
        with pytest.raises(client.exceptions.ResourceInUseException):
            client.register_stream_consumer(StreamARN=stream_arn, ConsumerName="efo")
        assert client.describe_stream_consumer(ConsumerARN=arn)["ConsumerDescription"]["ConsumerStatus"] == "CREATING"
        with pytest.raises(client.exceptions.ResourceInUseException):  # not ACTIVE yet
            client.subscribe_to_shard(ConsumerARN=arn, ShardId=SHARD0, StartingPosition={"Type": "TRIM_HORIZON"})
        assert wait_for(lambda: client.describe_stream_consumer(ConsumerARN=arn)["ConsumerDescription"]["ConsumerStatus"] == "ACTIVE", 3)
        description = client.describe_stream_consumer(StreamARN=stream_arn, ConsumerName="efo")["ConsumerDescription"]
        assert (description["ConsumerARN"], description["StreamARN"], description["ConsumerStatus"]) == (arn, stream_arn, "ACTIVE")
        assert [c["ConsumerName"] for c in client.list_stream_consumers(StreamARN=stream_arn)["Consumers"]] == ["efo"]
        assert client.describe_stream_summary(StreamName="cons")["StreamDescriptionSummary"]["ConsumerCount"] == 1

        response = client.subscribe_to_shard(ConsumerARN=arn, ShardId=SHARD0, StartingPosition={"Type": "TRIM_HORIZON"})
        first = next(iter(response["EventStream"]))["SubscribeToShardEvent"]
        assert [r["Data"] for r in first["Records"]] == [data.streams["cons"].spec.make_record(0, o)[1] for o in range(3)]
        assert first["MillisBehindLatest"] == 0
        response["EventStream"].close()

        # the test helpers: a consumer registered ACTIVE at once, and one made CREATING for a while
        helper_arn = data.register_consumer("cons", "helper")
        assert client.describe_stream_consumer(ConsumerARN=helper_arn)["ConsumerDescription"]["ConsumerStatus"] == "ACTIVE"
        data.consumer_creating(helper_arn, 0.3)
        assert client.describe_stream_consumer(ConsumerARN=helper_arn)["ConsumerDescription"]["ConsumerStatus"] == "CREATING"
        assert wait_for(lambda: client.describe_stream_consumer(ConsumerARN=helper_arn)["ConsumerDescription"]["ConsumerStatus"] == "ACTIVE", 3)

        client.deregister_stream_consumer(ConsumerARN=helper_arn)
        for call_ in (lambda: client.describe_stream_consumer(ConsumerARN=helper_arn),
                      lambda: client.describe_stream_consumer(StreamARN=stream_arn, ConsumerName="nobody"),
                      lambda: client.subscribe_to_shard(ConsumerARN=helper_arn, ShardId=SHARD0, StartingPosition={"Type": "LATEST"}),
                      lambda: client.subscribe_to_shard(ConsumerARN=arn, ShardId="shardId-000000000099", StartingPosition={"Type": "LATEST"}),
                      lambda: client.list_stream_consumers(StreamARN=stream_arn + "-missing")):
            with pytest.raises(client.exceptions.ResourceNotFoundException):
                call_()
        assert server.backend.subscriptions_refused[(arn, SHARD0)] == 1 and server.backend_errors == []


# --------------------------------------------------------------------------------------------- subscriptions
def test_a_backlog_arrives_in_order_exactly_once_in_several_events():
    data = ReplayData([ReplayStream("backlog", shards=2, records_per_shard=50_000)])
    arn = data.register_consumer("backlog", "efo")
    with serve(data) as server:
        with subscription(server.endpoint_url, arn, SHARD0) as sub:
            assert sub.status == 200
            got: List[Dict[str, Any]] = []
            events = []
            for payload in sub.events():
                events.append(payload)
                got += payload["Records"]
                if payload["Records"]:
                    assert payload["ContinuationSequenceNumber"] == payload["Records"][-1]["SequenceNumber"]
                if len(got) >= 50_000:
                    break
        expected = sorted(seq for shard, seq in data.expected_keys("backlog") if shard == SHARD0)
        assert [r["SequenceNumber"] for r in got] == expected  # in order, none twice, none skipped
        assert len(events) >= 4 and all(len(e["Records"]) <= data.event_max_records for e in events)
        assert all(e["MillisBehindLatest"] > 0 for e in events[:-1]) and events[-1]["MillisBehindLatest"] == 0
        assert [base64.b64decode(r["Data"]) for r in got[:3]] == [data.streams["backlog"].spec.make_record(0, o)[1] for o in range(3)]
        assert set(got[0]) == {"SequenceNumber", "ApproximateArrivalTimestamp", "Data", "PartitionKey", "EncryptionType"}
        assert wait_for(lambda: server.backend.open_subscriptions() == 0, 2)  # the client hung up: noticed at once
        assert server.backend.subscription_records_served == {("backlog", SHARD0): 50_000}
        assert server.backend.records_served == {} and server.backend.subscriptions_started == {(arn, SHARD0): 1}
        assert server.backend_errors == []


def test_live_puts_reach_an_open_subscription_at_once():
    data = ReplayData([ReplayStream("live", shards=1, records_per_shard=5)])
    arn = data.register_consumer("live", "efo")
    with serve(data) as server:
        client = client_for(server.endpoint_url)
        with subscription(server.endpoint_url, arn, SHARD0, {"Type": "LATEST"}) as sub:
            events = sub.events()
            first = next(events)  # at once, and empty: LATEST
            assert first["Records"] == [] and first["MillisBehindLatest"] == 0
            assert first["ContinuationSequenceNumber"] == data.streams["live"].shards[0].sequence(4)
            delays = []
            for i in range(5):
                sent = client.put_record(StreamName="live", Data=f"live-{i}".encode(), PartitionKey=f"k{i}")
                put_at = time.monotonic()
                payload = next(events)
                delays.append(time.monotonic() - put_at)
                assert [(base64.b64decode(r["Data"]), r["SequenceNumber"]) for r in payload["Records"]] == [(f"live-{i}".encode(), sent["SequenceNumber"])]
                assert payload["ContinuationSequenceNumber"] == sent["SequenceNumber"] and payload["MillisBehindLatest"] == 0
        assert max(delays) < 0.25 and sorted(delays)[2] < 0.1, delays
        assert server.backend_errors == []


def test_heartbeats_while_idle_and_the_subscription_expires_cleanly():
    data = ReplayData([ReplayStream("idle", shards=1, records_per_shard=0)], heartbeat_seconds=0.15, subscription_seconds=0.8)
    arn = data.register_consumer("idle", "efo")
    with serve(data) as server:
        start = time.monotonic()
        with subscription(server.endpoint_url, arn, SHARD0) as sub:
            messages = list(sub.messages())  # the body ends by itself; httpx raises on a body cut short
        took = time.monotonic() - start
        assert [m[0] for m in messages][:2] == ["initial-response", "SubscribeToShardEvent"]
        events = [m[1] for m in messages[1:]]
        assert all(e == {"Records": [], "ContinuationSequenceNumber": data.streams["idle"].shards[0].starting_sequence,
                         "MillisBehindLatest": 0} for e in events)
        assert 4 <= len(events) <= 7, len(events)  # one at once, then one every 0.15 s for 0.8 s
        gaps = [b[2] - a[2] for a, b in zip(messages[1:], messages[2:])]
        assert all(0.1 <= g <= 0.4 for g in gaps), gaps
        assert 0.75 <= took <= 3, took
        # the connection is usable again after the final chunk (keep-alive)
        with httpx.Client(timeout=5, trust_env=False) as http:
            for _ in range(2):
                with http.stream("POST", server.endpoint_url, headers=headers_for("SubscribeToShard"), content=subscribe_body(arn, SHARD0)) as r:
                    assert r.status_code == 400 and json.loads(r.read())["__type"] == "ResourceInUseException"  # cooldown
        assert server.backend_errors == []


def test_resubscribing_too_early_is_refused_then_accepted_after_the_cooldown():
    data = ReplayData([ReplayStream("cool", shards=2, records_per_shard=10)], resubscribe_cooldown_seconds=0.6)
    arn = data.register_consumer("cool", "efo")
    with serve(data) as server:
        backend = server.backend
        with subscription(server.endpoint_url, arn, SHARD0) as first:
            assert first.status == 200
            assert len(next(first.events())["Records"]) == 10
            with subscription(server.endpoint_url, arn, SHARD0) as second:  # the same (consumer, shard) while open
                assert second.status == 400
                assert second.error["__type"] == "ResourceInUseException"
                assert second.error["message"] == f"Another active subscription exists for this consumer: 000000000000:cool:{SHARD0}:efo"
            with subscription(server.endpoint_url, arn, "shardId-000000000001") as other_shard:  # another shard is fine
                assert other_shard.status == 200
        assert wait_for(lambda: backend.open_subscriptions(arn, SHARD0) == 0, 2)
        with subscription(server.endpoint_url, arn, SHARD0) as early:  # ended less than the cooldown ago
            assert early.status == 400 and early.error["__type"] == "ResourceInUseException"
        time.sleep(0.7)
        with subscription(server.endpoint_url, arn, SHARD0, {"Type": "AT_SEQUENCE_NUMBER", "SequenceNumber": data.streams["cool"].shards[0].sequence(7)}) as later:
            assert later.status == 200 and len(next(later.events())["Records"]) == 3
        assert backend.subscriptions_started == {(arn, SHARD0): 2, (arn, "shardId-000000000001"): 1}
        assert backend.subscriptions_refused == {(arn, SHARD0): 2}
        assert server.requests["SubscribeToShard"] == 5 and server.backend_errors == []


def test_positions_behave_as_get_shard_iterator():
    data = ReplayData([ReplayStream("pos", shards=1, records_per_shard=20)], resubscribe_cooldown_seconds=0)
    arn = data.register_consumer("pos", "efo")
    shard = data.streams["pos"].shards[0]
    with serve(data) as server:
        def first_event(position):
            assert wait_for(lambda: server.backend.open_subscriptions() == 0, 2)  # the last one's hang-up was noticed
            with subscription(server.endpoint_url, arn, SHARD0, position) as sub:
                assert sub.status == 200, sub.error
                return next(sub.events())

        def offsets(event):
            return [int(r["SequenceNumber"][16:]) - 1 for r in event["Records"]]

        assert offsets(first_event({"Type": "TRIM_HORIZON"})) == list(range(20))
        assert offsets(first_event({"Type": "LATEST"})) == []
        assert offsets(first_event({"Type": "AT_SEQUENCE_NUMBER", "SequenceNumber": shard.sequence(5)})) == list(range(5, 20))
        assert offsets(first_event({"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": shard.sequence(5)})) == list(range(6, 20))
        # an empty event's continuation (the starting sequence number) resumes from the first record
        assert offsets(first_event({"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": shard.starting_sequence})) == list(range(20))
        assert offsets(first_event({"Type": "AT_TIMESTAMP", "Timestamp": shard.arrivals[12]})) == list(range(12, 20))
        with subscription(server.endpoint_url, arn, SHARD0, {"Type": "AT_SEQUENCE_NUMBER", "SequenceNumber": shard.sequence(20)}) as sub:
            assert sub.status == 400 and sub.error["__type"] == "InvalidArgumentException"
        with subscription(server.endpoint_url, arn, SHARD0, {"Type": "SOMEWHERE"}) as sub:
            assert sub.status == 400 and sub.error["__type"] == "InvalidArgumentException"
        assert server.backend_errors == []


def test_boto3_subscribe_to_shard_parses_the_events():
    data = ReplayData([ReplayStream("boto", shards=1, records_per_shard=0)], subscription_seconds=1.0, heartbeat_seconds=0.2)
    arn = data.register_consumer("boto", "efo")
    with serve(data) as server:
        client = client_for(server.endpoint_url)
        client.put_records(StreamName="boto", Records=[{"Data": f"d{i}".encode(), "PartitionKey": f"p{i}"} for i in range(3)])
        response = client.subscribe_to_shard(ConsumerARN=arn, ShardId=SHARD0, StartingPosition={"Type": "TRIM_HORIZON"})
        events = [e["SubscribeToShardEvent"] for e in response["EventStream"]]  # ends after subscription_seconds
        assert [r["Data"] for r in events[0]["Records"]] == [b"d0", b"d1", b"d2"]
        assert [r["PartitionKey"] for r in events[0]["Records"]] == ["p0", "p1", "p2"]
        assert events[0]["ContinuationSequenceNumber"] == events[0]["Records"][-1]["SequenceNumber"]
        assert len(events) >= 3 and all(e["Records"] == [] for e in events[1:])
        assert server.backend_errors == []


# ---------------------------------------------------------------------------------------------------- faults
def test_injected_faults_on_subscribe_to_shard_come_before_the_stream():
    data = ReplayData([ReplayStream("faulty", shards=1, records_per_shard=4)], resubscribe_cooldown_seconds=0)
    arn = data.register_consumer("faulty", "efo")
    with serve(data, faults={"SubscribeToShard": {"limit_exceeded": 1.0}}) as server:
        client = client_for(server.endpoint_url)
        with subscription(server.endpoint_url, arn, SHARD0) as sub:
            assert sub.status == 400 and sub.error["__type"] == "LimitExceededException"
        with pytest.raises(client.exceptions.LimitExceededException):
            client.subscribe_to_shard(ConsumerARN=arn, ShardId=SHARD0, StartingPosition={"Type": "TRIM_HORIZON"})

        for kind in ("reset", "disconnect"):
            server.set_faults({"SubscribeToShard": {kind: 1.0}})
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)):
                with subscription(server.endpoint_url, arn, SHARD0):
                    pass

        server.set_faults({"SubscribeToShard": {"truncate": 1.0}})  # the head and the first chunk, then a FIN
        received = []
        with pytest.raises(httpx.RemoteProtocolError):
            with subscription(server.endpoint_url, arn, SHARD0) as sub:
                for message in sub.messages():
                    received.append(message[0])
        assert received == ["initial-response"]

        server.set_faults({})
        with subscription(server.endpoint_url, arn, SHARD0) as sub:
            assert len(next(sub.events())["Records"]) == 4
        assert server.count(operation="SubscribeToShard") == 5
        assert (server.count("limit_exceeded"), server.count("reset"), server.count("disconnect"), server.count("truncate")) == (2, 1, 1, 1)
        assert server.backend.subscriptions_started == {(arn, SHARD0): 2}  # the truncated one reached the backend
        assert wait_for(lambda: server.backend.open_subscriptions() == 0, 2) and server.backend_errors == []

    # a deterministic schedule (decide=) applies to SubscribeToShard like any operation
    schedule = {1: "limit_exceeded", 2: "reset"}
    with serve(data, decide=lambda operation, n: schedule.get(n) if operation == "SubscribeToShard" else None) as server:
        with subscription(server.endpoint_url, arn, SHARD0) as sub:
            assert sub.status == 400 and sub.error["__type"] == "LimitExceededException"
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            with subscription(server.endpoint_url, arn, SHARD0):
                pass
        with subscription(server.endpoint_url, arn, SHARD0) as sub:
            assert len(next(sub.events())["Records"]) == 4
        assert server.injected == {("limit_exceeded", "SubscribeToShard"): 1, ("reset", "SubscribeToShard"): 1}


def test_subscription_faults_drop_or_fail_a_subscription_mid_stream():
    data = ReplayData([ReplayStream("drops", shards=1, records_per_shard=1000)], resubscribe_cooldown_seconds=0.1, event_max_records=100)
    arn = data.register_consumer("drops", "efo")
    plan = {1: "reset", 2: "disconnect", 3: ("exception", "InternalFailureException", "injected")}
    data.subscription_faults = lambda n, sent: plan.get(n) if sent >= 2 else None
    with serve(data) as server:
        got: List[Dict[str, Any]] = []
        position = {"Type": "TRIM_HORIZON"}
        outcomes = []
        for n in (1, 2, 3):
            with subscription(server.endpoint_url, arn, SHARD0, position) as sub:
                assert sub.status == 200
                messages = []
                try:
                    for message in sub.messages():
                        messages.append(message)
                    outcomes.append("clean end")
                except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                    outcomes.append(type(exc).__name__)
            events = [m[1] for m in messages if m[0] == "SubscribeToShardEvent"]
            assert len(events) == 2  # dropped (or failed) after two events
            got += [r for e in events for r in e["Records"]]
            position = {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": events[-1]["ContinuationSequenceNumber"]}
            if n == 3:
                assert messages[-1][:2] == ("exception:InternalFailureException", {"message": "injected"})
            assert wait_for(lambda: server.backend.open_subscriptions() == 0, 2)
            time.sleep(0.15)
        assert outcomes[2] == "clean end" and all(o != "clean end" for o in outcomes[:2]), outcomes
        # boto3 raises the exception message as an EventStreamError with its code
        client = client_for(server.endpoint_url)
        data.subscription_faults = lambda n, sent: ("exception", "InternalFailureException") if sent >= 1 else None
        response = client.subscribe_to_shard(ConsumerARN=arn, ShardId=SHARD0, StartingPosition=position)
        with pytest.raises(EventStreamError) as raised:
            for event in response["EventStream"]:
                got += [{"SequenceNumber": r["SequenceNumber"]} for r in event["SubscribeToShardEvent"]["Records"]]
        assert raised.value.response["Error"]["Code"] == "InternalFailureException"
        data.subscription_faults = None
        time.sleep(0.15)
        with subscription(server.endpoint_url, arn, SHARD0, {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": got[-1]["SequenceNumber"]}) as sub:
            for payload in sub.events():
                got += payload["Records"]
                if payload["MillisBehindLatest"] == 0:
                    break
        shard = data.streams["drops"].shards[0]
        assert [r["SequenceNumber"] for r in got] == [shard.sequence(o) for o in range(1000)]  # resumed: nothing lost, nothing twice
        assert server.backend.subscription_faults_injected == {"reset": 1, "disconnect": 1, "exception:InternalFailureException": 2}
        assert server.backend_errors == []


def test_stopping_the_server_does_not_wait_for_open_subscriptions():
    data = ReplayData([ReplayStream("stop", shards=2, records_per_shard=0)])
    arn = data.register_consumer("stop", "efo")
    server = serve(data).start()
    ended = []

    def reader(shard_id: str) -> None:
        try:
            with subscription(server.endpoint_url, arn, shard_id, timeout=20) as sub:
                for _ in sub.messages():
                    pass
            ended.append("clean")
        except httpx.HTTPError as exc:
            ended.append(type(exc).__name__)

    threads = [threading.Thread(target=reader, args=(f"shardId-00000000000{i}",), daemon=True) for i in range(2)]
    for thread in threads:
        thread.start()
    try:
        assert wait_for(lambda: server.streams_open == 2, 5)
    finally:
        start = time.monotonic()
        server.stop()
        took = time.monotonic() - start
    for thread in threads:
        thread.join(timeout=5)
    assert took < 1.5, took
    assert server.streams_open == 0 and server.backend.open_subscriptions() == 0
    assert len(ended) == 2 and "clean" not in ended  # cut short: no final chunk


# ------------------------------------------------------------------------------------------------ resharding
def test_get_records_at_a_closed_shards_end_gives_child_shards():
    data = ReplayData([ReplayStream("closed", shards=2, records_per_shard=3)])
    with serve(data) as server:
        client = client_for(server.endpoint_url)
        a, b = client.list_shards(StreamName="closed")["Shards"]
        client.split_shard(StreamName="closed", ShardToSplit=a["ShardId"],
                           NewStartingHashKey=str(int(a["HashKeyRange"]["EndingHashKey"]) // 4))
        shards = {s["ShardId"]: s for s in client.list_shards(StreamName="closed")["Shards"]}
        assert list(shards) == ["shardId-000000000000", "shardId-000000000001", "shardId-000000000002", "shardId-000000000003"]
        parent = shards["shardId-000000000000"]
        assert parent["SequenceNumberRange"]["EndingSequenceNumber"] == data.streams["closed"].shards[0].sequence(2)
        assert "EndingSequenceNumber" not in shards["shardId-000000000001"]["SequenceNumberRange"]
        children = [shards["shardId-000000000002"], shards["shardId-000000000003"]]
        assert [c["ParentShardId"] for c in children] == [parent["ShardId"]] * 2 and all("AdjacentParentShardId" not in c for c in children)
        assert children[0]["HashKeyRange"]["StartingHashKey"] == parent["HashKeyRange"]["StartingHashKey"]
        assert int(children[1]["HashKeyRange"]["StartingHashKey"]) == int(children[0]["HashKeyRange"]["EndingHashKey"]) + 1
        assert children[1]["HashKeyRange"]["EndingHashKey"] == parent["HashKeyRange"]["EndingHashKey"]
        described = client.describe_stream(StreamName="closed")["StreamDescription"]["Shards"]
        assert [s["ShardId"] for s in described] == list(shards)
        assert client.describe_stream_summary(StreamName="closed")["StreamDescriptionSummary"]["OpenShardCount"] == 3

        iterator = client.get_shard_iterator(StreamName="closed", ShardId=parent["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        page = client.get_records(ShardIterator=iterator, Limit=2)
        assert len(page["Records"]) == 2 and page["NextShardIterator"] and "ChildShards" not in page
        last = client.get_records(ShardIterator=page["NextShardIterator"])
        assert len(last["Records"]) == 1 and "NextShardIterator" not in last and last["MillisBehindLatest"] == 0
        assert last["ChildShards"] == [{"ShardId": c["ShardId"], "ParentShards": [parent["ShardId"]], "HashKeyRange": c["HashKeyRange"]} for c in children]
        for kind, extra in (("LATEST", {}), ("AFTER_SEQUENCE_NUMBER", {"StartingSequenceNumber": last["Records"][0]["SequenceNumber"]})):
            iterator = client.get_shard_iterator(StreamName="closed", ShardId=parent["ShardId"], ShardIteratorType=kind, **extra)["ShardIterator"]
            end = client.get_records(ShardIterator=iterator)
            assert end["Records"] == [] and "NextShardIterator" not in end and len(end["ChildShards"]) == 2

        # puts go to open shards only, by hash range; the parent stays as it was
        placed = client.put_records(StreamName="closed", Records=[{"Data": b"x", "PartitionKey": f"k{i}"} for i in range(200)])["Records"]
        assert {r["ShardId"] for r in placed} == {"shardId-000000000001", "shardId-000000000002", "shardId-000000000003"}
        for shard_id in (children[0]["ShardId"], children[1]["ShardId"]):
            placed_one = client.put_record(StreamName="closed", Data=b"e", PartitionKey="k",
                                           ExplicitHashKey=shards[shard_id]["HashKeyRange"]["StartingHashKey"])
            assert placed_one["ShardId"] == shard_id
        assert len(data.streams["closed"].shards[0].records) == 3

        # merging: adjacent open shards only; the merged child names both parents
        with pytest.raises(client.exceptions.ResourceInUseException):
            client.split_shard(StreamName="closed", ShardToSplit=parent["ShardId"], NewStartingHashKey="5")
        with pytest.raises(client.exceptions.InvalidArgumentException):
            client.merge_shards(StreamName="closed", ShardToMerge=children[0]["ShardId"], AdjacentShardToMerge="shardId-000000000001")
        with pytest.raises(client.exceptions.InvalidArgumentException):
            client.split_shard(StreamName="closed", ShardToSplit=children[0]["ShardId"], NewStartingHashKey=children[0]["HashKeyRange"]["StartingHashKey"])
        client.merge_shards(StreamName="closed", ShardToMerge=children[1]["ShardId"], AdjacentShardToMerge="shardId-000000000001")
        merged = client.list_shards(StreamName="closed")["Shards"][-1]
        assert (merged["ShardId"], merged["ParentShardId"], merged["AdjacentParentShardId"]) == ("shardId-000000000004", children[1]["ShardId"], "shardId-000000000001")
        assert merged["HashKeyRange"] == {"StartingHashKey": children[1]["HashKeyRange"]["StartingHashKey"], "EndingHashKey": str(2**128 - 1)}
        iterator = client.get_shard_iterator(StreamName="closed", ShardId="shardId-000000000001", ShardIteratorType="LATEST")["ShardIterator"]
        assert client.get_records(ShardIterator=iterator)["ChildShards"] == [
            {"ShardId": "shardId-000000000004", "ParentShards": [children[1]["ShardId"], "shardId-000000000001"], "HashKeyRange": merged["HashKeyRange"]}]
        assert server.backend_errors == []


def test_split_and_merge_while_subscribed_end_the_parents_subscriptions_with_child_shards():
    data = ReplayData([ReplayStream("reshard", shards=1, records_per_shard=0)], resubscribe_cooldown_seconds=0)
    arn = data.register_consumer("reshard", "efo")
    with serve(data) as server:
        client = client_for(server.endpoint_url)
        sent: Dict[str, str] = {}  # sequence number -> data

        def put(tag: str, n: int) -> None:
            response = client.put_records(StreamName="reshard", Records=[{"Data": f"{tag}-{i}".encode(), "PartitionKey": f"{tag}-{i}"} for i in range(n)])
            sent.update({r["SequenceNumber"]: f"{tag}-{i}" for i, r in enumerate(response["Records"])})

        received: Dict[str, List[Tuple[str, str]]] = {}  # shard -> (sequence number, data) in the order received
        last_events: Dict[str, Dict[str, Any]] = {}

        endings: Dict[str, str] = {}

        def follow(shard_id: str) -> None:
            try:
                with subscription(server.endpoint_url, arn, shard_id, timeout=15) as sub:
                    assert sub.status == 200, sub.error
                    for payload in sub.events():
                        received.setdefault(shard_id, []).extend((r["SequenceNumber"], base64.b64decode(r["Data"]).decode()) for r in payload["Records"])
                        last_events[shard_id] = payload
                endings[shard_id] = "clean"
            except httpx.HTTPError as exc:
                endings[shard_id] = type(exc).__name__

        def following(*shard_ids: str) -> List[threading.Thread]:
            threads = [threading.Thread(target=follow, args=(s,), daemon=True) for s in shard_ids]
            for thread in threads:
                thread.start()
            assert wait_for(lambda: all(server.backend.open_subscriptions(arn, s) == 1 for s in shard_ids), 5)
            return threads

        parent = following(SHARD0)
        put("before-split", 30)
        assert wait_for(lambda: len(received.get(SHARD0, [])) == 30, 5)
        client.split_shard(StreamName="reshard", ShardToSplit=SHARD0, NewStartingHashKey=str(2**127))
        first, second = "shardId-000000000001", "shardId-000000000002"
        for thread in parent:
            thread.join(timeout=5)
            assert not thread.is_alive()  # the parent's body ended by itself
        end = last_events[SHARD0]
        assert end["ContinuationSequenceNumber"] is None and end["Records"] == []
        assert [c["ShardId"] for c in end["ChildShards"]] == [first, second] and all(c["ParentShards"] == [SHARD0] for c in end["ChildShards"])

        children = following(first, second)
        put("after-split", 60)
        assert wait_for(lambda: sum(len(received.get(s, [])) for s in (first, second)) == 60, 5)
        merged = data.merge("reshard", first, second)
        assert merged == "shardId-000000000003"
        for thread in children:
            thread.join(timeout=5)
            assert not thread.is_alive()
        for shard_id in (first, second):
            assert last_events[shard_id]["ChildShards"] == [{"ShardId": merged, "ParentShards": [first, second],
                                                              "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": str(2**128 - 1)}}]

        tail = following(merged)
        put("after-merge", 20)
        assert wait_for(lambda: len(received.get(merged, [])) == 20, 5)
        # every record put arrived once, from the shard it was put on, in that shard's order
        everything = [item for items in received.values() for item in items]
        assert len(everything) == len(sent) == 110 and dict(everything) == sent
        for shard_id, items in received.items():
            assert [seq for seq, _ in items] == [data.streams["reshard"].by_id[shard_id].sequence(o) for o in range(len(items))]
        assert {tag.rsplit("-", 1)[0] for _, tag in received[merged]} == {"after-merge"}
        assert server.backend.subscription_records_served == {("reshard", SHARD0): 30, ("reshard", first): len(received[first]),
                                                              ("reshard", second): len(received[second]), ("reshard", merged): 20}
    for thread in tail:
        thread.join(timeout=5)
        assert not thread.is_alive()  # stopped with the server
    assert endings == {SHARD0: "clean", first: "clean", second: "clean", merged: "RemoteProtocolError"}
    assert server.backend_errors == []


def test_the_raw_wire_is_chunked_http_1_1():
    """The bytes on the socket: a chunked 200 whose chunks are whole event-stream messages, then the 0-chunk."""
    data = ReplayData([ReplayStream("wire", shards=1, records_per_shard=2)], subscription_seconds=0.3, heartbeat_seconds=10)
    arn = data.register_consumer("wire", "efo")
    with serve(data) as server:
        body = subscribe_body(arn, SHARD0)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
            head = "".join(f"{k}: {v}\r\n" for k, v in {**headers_for("SubscribeToShard"), "Host": "127.0.0.1", "Content-Length": len(body)}.items())
            conn.sendall(f"POST / HTTP/1.1\r\n{head}\r\n".encode() + body)
            wire = b""
            while not wire.endswith(b"\r\n0\r\n\r\n"):
                chunk = conn.recv(65536)
                assert chunk, wire[-200:]
                wire += chunk
        head, _, rest = wire.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"Transfer-Encoding: chunked" in head and b"Content-Length" not in head
        buffer, kinds = EventStreamBuffer(), []
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            buffer.add_data(rest[:size])
            kinds += [m.headers[":event-type"] for m in buffer]  # each chunk is whole messages
            rest = rest[size + 2:]
        assert kinds == ["initial-response", "SubscribeToShardEvent"]
