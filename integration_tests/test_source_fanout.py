"""Enhanced fan-out end to end against the project's replay server (``replay.py``: SubscribeToShard in AWS's
event-stream framing, consumers, resharding) through the fault proxy — and, for the transport, over HTTP/2 with TLS
(``h2_front.py``).

The same assertions the polling tests make, for both read modes where they apply (``MODES``): every record exactly
once and in per-key order across splits, merges and KPL aggregates; resume from every emitted state exact (down to
the KPL sub-record), in the same mode and across modes. Then what only fan-out has: subscriptions that expire and are
renewed, connections dropped mid-subscription, ResourceInUseException and LimitExceededException on resubscribing,
a split and a merge while subscribed, a consumer still CREATING, a consumer registered by the sync, check's report.
"""
from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Dict, List

import pytest
from airbyte_cdk.models import Status, Type

from integration_tests.fault_proxy import FaultProxy
from integration_tests.h2_front import H2Front
from integration_tests.kinesis_mock import ACCESS_KEY, REGION, SECRET_KEY
from integration_tests.reliability.helpers import EventWriter, TruthStream, read_truth
from integration_tests.replay import ReplayData, ReplayStream
from integration_tests.source_helpers import (
    adjacent_pair,
    merge,
    open_shards,
    read_in_process,
    record_key,
    run_check,
    run_read,
    split,
    state_list,
)
from integration_tests.test_replay_kinesis import client_for
from source_kinesis.follow import follow

pytestmark = pytest.mark.timeout(180)
MODES = ["polling", "enhanced_fan_out"]
CONSUMER = "airbyte-test"


def config_for(server: FaultProxy, streams: List[str], mode: str, **overrides: Any) -> Dict[str, Any]:
    config: Dict[str, Any] = {
        "credentials": {"auth_type": "access_keys", "aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY},
        "region": REGION,
        "endpoint_url": server.endpoint_url,
        "streams": list(streams),
        "get_records_per_second": 5,
        "checkpoint_interval_records": 97,
        "retry_budget_seconds": 30,
    }
    config["read_mode"] = {"mode": "enhanced_fan_out", "consumer_name": CONSUMER} if mode == "enhanced_fan_out" else {"mode": "polling"}
    config.update(overrides)
    return config


def fast_data(streams: List[ReplayStream]) -> ReplayData:
    data = ReplayData(streams)
    data.resubscribe_cooldown_seconds = 0.05
    data.consumer_activation_seconds = 0.2
    return data


def build_truth(client: Any, name: str) -> TruthStream:
    """3 shards; plain records and KPL aggregates; a split; more; a merge; more (reliability/helpers.py's stream)."""
    client.create_stream(StreamName=name, ShardCount=3)
    writer = EventWriter(client, name, seed=11)
    writer.put(150, 10, "first")
    split(client, name, open_shards(client, name)[0])
    writer.put(120, 8, "after-split")
    first, second = adjacent_pair(open_shards(client, name))
    merge(client, name, first, second)
    writer.put(100, 6, "after-merge")
    truth = read_truth(client, name)
    assert len(truth.events) == writer.sent
    return truth


def records_and_states(messages: List[Any]):
    return [m for m in messages if m.type in (Type.RECORD, Type.STATE)]


def assert_exactly_once_in_key_order(datas: List[Dict[str, Any]], truth: TruthStream) -> None:
    keys = [record_key(d) for d in datas]
    assert len(keys) == len(set(keys)), "a record was emitted twice"
    assert set(keys) == set(truth.events), f"{len(set(truth.events) - set(keys))} lost, {len(set(keys) - set(truth.events))} unexpected"
    seen: Dict[str, int] = {}
    for d in datas:
        assert d["n"] == seen.get(d["pk"], 0) + 1, f"key {d['pk']}: n {d['n']} after {seen.get(d['pk'])}"
        seen[d["pk"]] = d["n"]
    for d in datas:
        assert {k: d[k] for k in truth.events[record_key(d)]} == truth.events[record_key(d)]


@pytest.mark.parametrize("mode", MODES)
def test_resharded_stream_with_kpl_exactly_once_in_key_order_and_every_state_resumes_exactly(mode):
    data = fast_data([])
    with FaultProxy.replay(data, max_lifetime_seconds=170) as server:
        name = f"efo-{uuid.uuid4().hex[:6]}"
        truth = build_truth(client_for(server.endpoint_url), name)
        config = config_for(server, [name], mode)
        polled_before = sum(server.backend.records_served.values())  # read_truth's own GetRecords
        messages = records_and_states(read_in_process(config, [name]))
        datas = [m.record.data for m in messages if m.type == Type.RECORD]
        assert_exactly_once_in_key_order(datas, truth)
        if mode == "enhanced_fan_out":
            assert sum(server.backend.subscription_records_served.values()) > 0
            assert sum(server.backend.records_served.values()) == polled_before, "fan-out read with GetRecords"
        # Resume from every state (some inside KPL aggregates), in this mode and in the other one.
        other = MODES[1 - MODES.index(mode)]
        emitted: List[Any] = []
        checked = inside_aggregate = 0
        states = []
        for message in messages:
            if message.type == Type.RECORD:
                emitted.append(record_key(message.record.data))
            else:
                states.append((list(emitted), message))
        for i, (before, state_message) in enumerate(states):
            if i % 2 and i != len(states) - 1:
                continue  # every other state and the last one: the whole suite stays within its time
            shards = state_message.state.stream.stream_state.__dict__["shards"]
            inside_aggregate += any(0 < s.get("sub_sequence_number", 0) for s in shards.values())
            resume_mode = mode if i % 2 == 0 else other
            resumed = run_read(config_for(server, [name], resume_mode), [name], state=state_list(state_message))
            assert not resumed.errors, [e.trace.error.message for e in resumed.errors]
            got = [record_key(m.record.data) for m in resumed.records]
            assert len(got) == len(set(got)), f"state {i} ({resume_mode}): a record repeated"
            assert set(got) == set(truth.events) - set(before), f"state {i} resumed in {resume_mode}: not exactly the remainder"
            checked += 1
        assert checked >= 4 and inside_aggregate >= 1


def test_subscriptions_that_expire_are_renewed_without_a_gap_or_a_repeat():
    data = fast_data([ReplayStream("expiring", shards=2, records_per_shard=3000)])
    data.register_consumer("expiring", CONSUMER)
    data.event_max_records = 20
    data.subscription_max_events = 5  # 100 records per subscription: 30 renewals per shard
    with FaultProxy.replay(data, max_lifetime_seconds=120) as server:
        config = config_for(server, ["expiring"], "enhanced_fan_out")
        output = run_read(config, ["expiring"])
        assert not output.errors
        keys = [record_key(m.record.data) for m in output.records]
        assert len(keys) == len(set(keys)) == 6000
        started = server.backend.subscriptions_started
        assert sum(started.values()) >= 2 * 30, f"subscriptions were not renewed: {dict(started)}"
        logs = "\n".join(m.log.message for m in output.logs)
        assert "SubscribeToShard events" in logs and "renewed" in logs


def test_connections_dropped_mid_subscription_and_exception_events_resubscribe_exactly_once():
    data = fast_data([ReplayStream("dropping", shards=3, records_per_shard=2000)])
    data.register_consumer("dropping", CONSUMER)
    data.event_max_records = 100
    faults = ["reset", "disconnect", ("exception", "InternalFailureException")]

    def fault(n: int, events_sent: int) -> Any:
        if n <= 6 and events_sent == 3:  # the first six subscriptions of each shard drop after their third event
            return faults[n % 3]
        return None

    data.subscription_faults = fault
    with FaultProxy.replay(data, max_lifetime_seconds=120) as server:
        output = run_read(config_for(server, ["dropping"], "enhanced_fan_out"), ["dropping"])
        assert not output.errors, [e.trace.error.message for e in output.errors]
        keys = [record_key(m.record.data) for m in output.records]
        assert len(keys) == len(set(keys)) == 6000
        injected = server.backend.subscription_faults_injected
        assert sum(injected.values()) >= 9, dict(injected)
        assert "dropped" in "\n".join(m.log.message for m in output.logs)


def test_resource_in_use_and_limit_exceeded_on_resubscribing_are_retried_and_counted():
    data = fast_data([ReplayStream("busy", shards=2, records_per_shard=1500)])
    data.register_consumer("busy", CONSUMER)
    data.event_max_records = 20
    data.subscription_max_events = 5
    data.resubscribe_cooldown_seconds = 0.5  # every renewal (at once, after 5 events) meets ResourceInUseException first
    def decide(operation: str, number: int) -> Any:  # every third SubscribeToShard is throttled
        return "limit_exceeded" if operation == "SubscribeToShard" and number % 3 == 2 else None

    with FaultProxy.replay(data, decide=decide, max_lifetime_seconds=150) as server:
        output = run_read(config_for(server, ["busy"], "enhanced_fan_out"), ["busy"])
        assert not output.errors, [e.trace.error.message for e in output.errors]
        keys = [record_key(m.record.data) for m in output.records]
        assert len(keys) == len(set(keys)) == 3000
        refused = sum(server.backend.subscriptions_refused.values())
        assert refused >= 1 and server.throttles("SubscribeToShard") >= 1
        summary = [m.log.message for m in output.logs if m.log.message.startswith("Summary for stream 'busy'")]
        assert summary and f"{server.throttles('SubscribeToShard')} throttles" in summary[-1]


def test_split_and_merge_while_subscribed_in_follow_mode_deliver_every_record_once_in_key_order():
    data = fast_data([])
    with FaultProxy.replay(data, max_lifetime_seconds=150) as server:
        client = client_for(server.endpoint_url)
        name = f"live-{uuid.uuid4().hex[:6]}"
        client.create_stream(StreamName=name, ShardCount=2)
        writer = EventWriter(client, name, seed=3)
        writer.put(60, 4, "before")
        stop = threading.Event()
        out: List[Any] = []
        config = config_for(server, [name], "enhanced_fan_out")

        def run() -> None:
            for message in follow(config, None, stop_event=stop):
                out.append(message)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()

        def emitted() -> int:
            return sum(1 for m in list(out) if m.type == Type.RECORD)

        def wait_for(count: int, timeout: float = 30) -> None:
            deadline = time.monotonic() + timeout
            while emitted() < count and time.monotonic() < deadline:
                time.sleep(0.05)
            assert emitted() >= count, f"{emitted()} of {count} records after {timeout} s"

        wait_for(writer.sent)
        split(client, name, open_shards(client, name)[0])  # while both shards are subscribed
        writer.put(50, 4, "after-split")
        wait_for(writer.sent)
        first, second = adjacent_pair(open_shards(client, name))
        merge(client, name, first, second)
        writer.put(50, 4, "after-merge")
        wait_for(writer.sent)
        stop.set()
        thread.join(timeout=20)
        assert not thread.is_alive()
        truth = read_truth(client, name)
        datas = [m.record.data for m in out if m.type == Type.RECORD]
        assert_exactly_once_in_key_order(datas, truth)
        assert len(truth.per_shard) == 2 + 2 + 1


def test_a_consumer_still_creating_is_waited_on_and_a_missing_one_is_registered_once():
    data = fast_data([ReplayStream("fresh", shards=2, records_per_shard=300)])
    data.consumer_activation_seconds = 1.5
    with FaultProxy.replay(data, max_lifetime_seconds=120) as server:
        config = config_for(server, ["fresh"], "enhanced_fan_out")
        output = run_read(config, ["fresh"])
        assert not output.errors
        assert len(output.records) == 600
        logs = "\n".join(m.log.message for m in output.logs)
        assert f"registering the enhanced fan-out consumer '{CONSUMER}'" in logs and "to become ACTIVE (now CREATING)" in logs
        again = run_read(config, ["fresh"], state=[output.state_messages[-1].state])
        assert not again.errors and not again.records
        assert "registering" not in "\n".join(m.log.message for m in again.logs)
        assert server.requests["RegisterStreamConsumer"] == 1


def test_check_reports_what_the_sync_will_register_and_proves_subscribe_with_an_existing_consumer():
    data = fast_data([ReplayStream("checked", shards=2, records_per_shard=10)])
    with FaultProxy.replay(data, max_lifetime_seconds=60) as server:
        status, logs = run_check(config_for(server, ["checked"], "enhanced_fan_out"))
        assert status.status == Status.SUCCEEDED
        assert "the first sync registers it" in logs and "kinesis:RegisterStreamConsumer" in logs
        assert server.requests["RegisterStreamConsumer"] == 0 and server.requests["SubscribeToShard"] == 0
        assert server.requests["GetRecords"] == 0 and server.requests["GetShardIterator"] == 0
        arn = data.register_consumer("checked", "existing")
        status, logs = run_check(config_for(server, ["checked"], "enhanced_fan_out", read_mode={"mode": "enhanced_fan_out", "consumer_arn": arn}))
        assert status.status == Status.SUCCEEDED and f"through consumer {arn}" in logs
        assert server.requests["SubscribeToShard"] == 1
        missing = arn.replace("existing", "missing")
        status, logs = run_check(config_for(server, ["checked"], "enhanced_fan_out", read_mode={"mode": "enhanced_fan_out", "consumer_arn": missing}))
        assert status.status == Status.FAILED and missing in status.message and "does not exist" in status.message


def test_subscriptions_go_over_http2_with_tls_and_every_other_call_over_botocores_transport(monkeypatch):
    data = fast_data([ReplayStream("tls", shards=3, records_per_shard=1000)])
    data.register_consumer("tls", CONSUMER)
    with FaultProxy.replay(data, max_lifetime_seconds=90) as server, H2Front(server.endpoint_url, http1=True, max_lifetime_seconds=90) as front:
        monkeypatch.setenv("AWS_CA_BUNDLE", front.ca_file)  # botocore and the HTTP/2 transport trust the same CA
        output = run_read(config_for(server, ["tls"], "enhanced_fan_out", endpoint_url=front.endpoint_url), ["tls"])
        assert not output.errors, [e.trace.error.message for e in output.errors]
        keys = [record_key(m.record.data) for m in output.records]
        assert len(keys) == len(set(keys)) == 3000
        subscriptions = server.requests["SubscribeToShard"]
        assert subscriptions >= 3 and front.requests_by_protocol["HTTP/2"] == subscriptions
        assert front.requests_by_protocol["HTTP/1.1"] >= 2  # DescribeStream, ListShards, DescribeStreamConsumer: botocore's
        # The sync ended its subscriptions (each on its own HTTP/2 connection, shut down): none is left open at Kinesis.
        deadline = time.monotonic() + 5
        while server.backend.open_subscriptions() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.backend.open_subscriptions() == 0
