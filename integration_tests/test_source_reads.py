"""source-kinesis against kinesis-mock: lineage through a split and a merge, exact resume, idle syncs."""
from __future__ import annotations

import time
from collections import defaultdict

import pytest

from integration_tests.source_helpers import (
    Producer,
    adjacent_pair,
    latest_states,
    merge,
    open_shards,
    record_key,
    run_read,
    split,
    state_list,
)


@pytest.fixture
def resharded_stream(kinesis, new_stream):
    """2 shards; writes; split; writes; merge (a split child with its neighbour); writes."""
    name = new_stream(shards=2, prefix="lineage")
    producer = Producer(kinesis, name)
    producer.put(120, batch="before-split")
    split(kinesis, name, open_shards(kinesis, name)[0])
    producer.put(120, batch="after-split")
    first, second = adjacent_pair(open_shards(kinesis, name))
    merge(kinesis, name, first, second)
    producer.put(120, batch="after-merge")
    return name, producer


def test_full_read_through_split_and_merge_is_exact_and_ordered(kinesis_mock, kinesis, resharded_stream):
    name, producer = resharded_stream
    config = kinesis_mock.source_config([name], checkpoint_interval_records=50)
    output = run_read(config, [name])
    assert not output.errors
    datas = [m.record.data for m in output.records]
    keys = [record_key(d) for d in datas]
    assert len(keys) == len(set(keys)) == len(producer.sent) == 360
    assert sorted((d["pk"], d["n"]) for d in datas) == sorted((e["pk"], e["n"]) for e in producer.sent)
    # Per partition key, records leave in the order they were written, across parents and children.
    seen = defaultdict(int)
    for d in datas:
        assert d["n"] == seen[d["pk"]] + 1, f"key {d['pk']}: {d['n']} after {seen[d['pk']]}"
        seen[d["pk"]] = d["n"]
    # Contract fields on every record.
    shards = {s["ShardId"] for s in kinesis.list_shards(StreamName=name)["Shards"]}
    for d in datas:
        assert d["_kinesis_stream"] == name and d["_kinesis_shard_id"] in shards
        assert d["_kinesis_sub_sequence_number"] == 0 and d["_kinesis_partition_key"] == d["pk"]
        assert d["_kinesis_arrival_time"].endswith("Z") and len(d["_kinesis_arrival_time"]) == 24
    final = output.state_messages[-1].state.stream.stream_state.__dict__
    assert final["version"] == 1 and final["stream_arn"].endswith(f":stream/{name}")
    closed = {s["ShardId"] for s in kinesis.list_shards(StreamName=name)["Shards"] if "EndingSequenceNumber" in s["SequenceNumberRange"]}
    assert closed and all(final["shards"][sid]["finished"] for sid in closed)
    merged_child = [sid for sid, s in final["shards"].items() if len(s["parents"]) == 2]
    assert len(merged_child) == 1


def test_resume_from_every_emitted_state_returns_exactly_the_remainder(kinesis_mock, resharded_stream):
    name, producer = resharded_stream
    config = kinesis_mock.source_config([name], checkpoint_interval_records=40)
    output = run_read(config, [name])
    everything = []
    emitted_before = []  # for each state message: the record keys emitted before it
    for message in output.records_and_state_messages:
        if message.type.name == "RECORD":
            everything.append(record_key(message.record.data))
        else:
            emitted_before.append((list(everything), message))
    assert len(everything) == 360 and len(emitted_before) >= 8
    for before, state_message in emitted_before:
        resumed = run_read(config, [name], state=state_list(state_message))
        assert not resumed.errors
        got = [record_key(m.record.data) for m in resumed.records]
        assert len(got) == len(set(got)), "a resumed sync repeated a record"
        assert set(got) == set(everything) - set(before), "a resumed sync lost or repeated records"


def test_sync_without_new_data_returns_nothing_and_ends_quickly(kinesis_mock, kinesis, new_stream):
    name = new_stream(shards=3, prefix="idle")
    Producer(kinesis, name).put(30)
    config = kinesis_mock.source_config([name])
    first = run_read(config, [name])
    assert len(first.records) == 30
    started = time.monotonic()
    second = run_read(config, [name], state=latest_states(first))
    elapsed = time.monotonic() - started
    assert second.records == [] and not second.errors
    assert elapsed < 15, f"an idle sync took {elapsed:.1f}s"
    assert second.state_messages[-1].state.stream.stream_state.__dict__["shards"] == first.state_messages[-1].state.stream.stream_state.__dict__["shards"]
    statuses = [m.trace.stream_status.status.name for m in second.trace_messages if m.trace.stream_status]
    assert statuses[0] == "STARTED" and statuses[-1] == "COMPLETE"


def test_records_written_during_a_sync_after_it_started_do_not_keep_it_running(kinesis_mock, kinesis, new_stream):
    """The stop rule is fixed at sync start: a sync with a steady writer still ends."""
    import threading

    name = new_stream(shards=1, prefix="busy")
    producer = Producer(kinesis, name)
    producer.put(50)
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            producer.put(10, batch="during")
            time.sleep(0.05)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        output = run_read(kinesis_mock.source_config([name], get_records_per_second=5), [name])
    finally:
        stop.set()
        thread.join()
    assert not output.errors
    assert len(output.records) >= 50
    statuses = [m.trace.stream_status.status.name for m in output.trace_messages if m.trace.stream_status]
    assert statuses[-1] == "COMPLETE"


def test_unknown_stream_is_a_config_error_naming_it(kinesis_mock, kinesis, new_stream):
    name = new_stream(shards=1, prefix="known")
    config = kinesis_mock.source_config([name, "does-not-exist"])
    output = run_read(config, [name, "does-not-exist"])
    errors = [m.trace.error for m in output.errors]
    assert any("does-not-exist" in e.message and e.failure_type.name == "config_error" for e in errors)
