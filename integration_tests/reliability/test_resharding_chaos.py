"""Resharding chaos: splits and merges while ``kinesis-collection follow`` runs and a writer keeps writing.

Six reshard operations (split/merge, seeded) over ~30 s while a writer puts plain records and KPL aggregates with a
per-key counter ``n``. An in-process ``follow`` consumer reads the same stream at the same time and records the
order it emits records in. At the end (SIGTERM, exit 0):

* nothing lost or duplicated: the collection equals the stream read back raw, document for document;
* per-partition-key order: the in-process consumer emitted each key's ``n`` as 1, 2, 3, …; in the collection each
  key's documents ordered by ``n`` have non-decreasing ``_meta.kinesis.arrival_time``;
* the committed state covers every record and a read from it returns nothing new; a finished shard that is no longer
  listed (trimmed by retention: seeded into the committed state, as kinesis-mock cannot trim quickly) left the state.
"""
from __future__ import annotations

import json
import logging
import random
import signal
import subprocess
import threading
import time
import uuid
from collections import defaultdict

import duckdb
import pytest
from airbyte_cdk.models import ConfiguredAirbyteCatalog, Type

from collection_runner.configs import configured_stream
from destination_collection.protocol_loop import write_messages
from integration_tests.kinesis_mock import create_stream
from integration_tests.reliability.helpers import (
    EventWriter,
    assert_equals_truth,
    assert_no_secrets,
    assert_state_covered,
    read_collection,
    read_truth,
    script,
    stream_states,
)
from integration_tests.reliability.test_crash_resume import reads_nothing_new
from integration_tests.source_helpers import adjacent_pair, merge, open_shards, split
from source_kinesis.follow import follow
from source_kinesis.source import SourceKinesis

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
RESHARDS = 6
TRIMMED = "shardId-000000009999"


def test_split_and_merge_while_following(kinesis_mock, tmp_path, reliability):
    client = kinesis_mock.client()
    name = f"chaos-{uuid.uuid4().hex[:8]}"
    create_stream(client, name, 2)
    source_config = kinesis_mock.source_config([name], get_records_per_second=5)
    source_file, destination_file = tmp_path / "source.json", tmp_path / "destination.json"
    source_file.write_text(json.dumps(source_config))
    db = str(tmp_path / "chaos.duckdb")
    destination_config = {"store": {"store_type": "duckdb", "path": db}}
    destination_file.write_text(json.dumps(destination_config))

    # A first (empty) sync commits a state; add a finished shard that ListShards no longer lists (trimmed).
    logger = logging.getLogger("chaos")
    catalog = ConfiguredAirbyteCatalog(streams=[configured_stream(s) for s in SourceKinesis().discover(logger, source_config).streams])
    list(write_messages(destination_config, catalog, SourceKinesis().read(logger, source_config, catalog, [])))
    con = duckdb.connect(db)
    (raw,) = con.execute("SELECT state_json FROM _collection_state WHERE stream = ?", [name]).fetchone()
    state = json.loads(raw)
    state["stream"]["stream_state"]["shards"][TRIMMED] = {"sequence_number": "1", "sub_sequence_number": 0, "finished": True, "parents": [], "started_at": None}
    con.execute("UPDATE _collection_state SET state_json = ? WHERE stream = ?", [json.dumps(state), name])
    con.close()

    runner = subprocess.Popen([script("kinesis-collection"), "follow", "--source", str(source_file), "--destination", str(destination_file)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop_consumer = threading.Event()
    emitted = []

    def consume() -> None:  # a second consumer, in-process: the order records are emitted in
        for message in follow(source_config, state=None, streams=[name], stop_event=stop_consumer, logger=logger):
            if message.type == Type.RECORD:
                emitted.append((message.record.data["pk"], message.record.data["n"]))

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    writer = EventWriter(client, name, seed=11)
    stop_writer = threading.Event()

    def write() -> None:
        while not stop_writer.is_set():
            writer.put(12, 1, "chaos")
            time.sleep(0.3)

    writing = threading.Thread(target=write, daemon=True)
    writing.start()
    rng = random.Random(2024)
    operations = []
    try:
        for _ in range(RESHARDS):
            time.sleep(rng.uniform(2.5, 4.5))
            shards = open_shards(client, name)
            if len(shards) <= 2 or (len(shards) < 5 and rng.random() < 0.5):
                split(client, name, rng.choice(shards))
                operations.append("split")
            else:
                merge(client, name, *adjacent_pair(shards))
                operations.append("merge")
        time.sleep(2.0)
    finally:
        stop_writer.set()
        writing.join(timeout=30)
    total = writer.sent

    def committed() -> int:
        result = subprocess.run([script("kinesis-collection"), "query", "--destination", str(destination_file), "--format", "json",
                                 f"SELECT count(*) AS n FROM \"{table}\""], capture_output=True, text=True, timeout=60)
        return json.loads(result.stdout.splitlines()[0])["n"] if result.returncode == 0 and result.stdout.strip() else -1

    from destination_collection.naming import table_name

    table = table_name("", name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and committed() < total:
        time.sleep(1.0)
    runner.send_signal(signal.SIGTERM)
    out, err = runner.communicate(timeout=60)
    stop_consumer.set()
    consumer.join(timeout=30)
    assert_no_secrets(out + err, "kinesis-collection follow output")
    assert runner.returncode == 0, err[-3000:]

    truth = read_truth(client, name)
    assert len(truth.events) == total
    collection = read_collection(db, name)
    assert_equals_truth(collection, truth, "chaos")
    # per-key order: the in-process consumer emitted each key's events in production order, across every reshard
    by_key = defaultdict(list)
    for pk, n in emitted:
        by_key[pk].append(n)
    assert sum(len(v) for v in by_key.values()) == total, "the in-process follow consumer missed records"
    for pk, ns in by_key.items():
        assert ns == list(range(1, len(ns) + 1)), f"key {pk}: emitted out of order or with gaps/repeats: {ns[:50]}"
    # ... and in the collection, a key's documents ordered by n arrived in that order
    arrivals = defaultdict(list)
    for key, doc in collection.by_key.items():
        arrivals[doc["pk"]].append((doc["n"], collection.meta[key]["arrival_time"]))
    for pk, items in arrivals.items():
        times = [t for _, t in sorted(items)]
        assert times == sorted(times), f"key {pk}: documents' arrival order in _meta.kinesis disagrees with n"
    # the state: covers everything, nothing new to read, the trimmed finished shard left it, every shard is known
    final = stream_states(collection.states, name)[-1]
    assert_state_covered(final, truth, set(collection.keys), "chaos final state")
    assert TRIMMED not in final["shards"], "a finished shard no longer listed must leave the state"
    assert set(final["shards"]) == set(truth.per_shard), "every listed shard is in the state"
    closed = [s["ShardId"] for s in client.list_shards(StreamName=name)["Shards"] if "EndingSequenceNumber" in s["SequenceNumberRange"]]
    assert all(final["shards"][sid]["finished"] for sid in closed), "every closed, drained shard is finished"
    assert reads_nothing_new(kinesis_mock, truth, final) == 0
    reliability(reshards=len(operations), splits=operations.count("split"), merges=operations.count("merge"),
                follow_consumers=2, trimmed_shards_pruned=1)
