"""Follow reads (the runner's Python API) against kinesis-mock: new records and new shards after start."""
from __future__ import annotations

import threading
import time
from collections import defaultdict

from source_kinesis.follow import follow

from integration_tests.source_helpers import Producer, open_shards, record_key, split


def test_follow_picks_up_records_and_new_shards_then_stops_cleanly(kinesis_mock, kinesis, new_stream):
    name = new_stream(shards=2, prefix="follow")
    producer = Producer(kinesis, name)
    producer.put(40, batch="before-start")
    config = kinesis_mock.source_config([name], checkpoint_interval_seconds=0.5, get_records_per_second=5)
    stop = threading.Event()
    messages = []

    def consume():
        for message in follow(config, stop_event=stop):
            messages.append(message)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()

    def records():
        return [m.record.data for m in list(messages) if m.type.name == "RECORD"]

    def wait_for(count, timeout=40.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(records()) < count:
            time.sleep(0.1)
        return len(records())

    assert wait_for(40) == 40
    producer.put(30, batch="after-start")
    assert wait_for(70) == 70
    split(kinesis, name, open_shards(kinesis, name)[0])
    producer.put(60, batch="after-split")
    assert wait_for(130) == 130
    # Idle for a while: states keep coming (time-based checkpoints) and nothing else.
    idle_from = len(messages)
    time.sleep(1.5)
    idle_states = [m for m in messages[idle_from:] if m.type.name == "STATE"]
    assert idle_states, "no checkpoint while idle"
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive(), "follow did not stop after the stop event"

    datas = records()
    keys = [record_key(d) for d in datas]
    assert len(keys) == len(set(keys)) == 130
    child_shards = {d["_kinesis_shard_id"] for d in datas if d["batch"] == "after-split"}
    parents = {s["ShardId"] for s in kinesis.list_shards(StreamName=name)["Shards"] if "ParentShardId" not in s}
    assert child_shards - parents, "records written after the split were not read from the new shards"
    seen = defaultdict(int)
    for d in datas:
        assert d["n"] == seen[d["pk"]] + 1
        seen[d["pk"]] = d["n"]
    last = [m for m in messages if m.type.name == "STATE"][-1].state.stream.stream_state.__dict__
    emitted = {}
    for d in datas:
        emitted[d["_kinesis_shard_id"]] = max(emitted.get(d["_kinesis_shard_id"], 0), int(d["_kinesis_sequence_number"]))
    for shard_id, seq in emitted.items():
        assert int(last["shards"][shard_id]["sequence_number"]) == seq
    statuses = [m.trace.stream_status.status.name for m in messages if m.type.name == "TRACE" and m.trace.stream_status]
    assert statuses[-1] == "COMPLETE"
