"""Shared by the reliability tests: a stream with plain records, KPL aggregates and reshards plus its ground truth,
reading a DuckDB collection back, checking committed states against the data, and scanning output for secrets."""
from __future__ import annotations

import json
import random
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import duckdb

from integration_tests.kinesis_mock import SECRET_KEY, create_stream
from integration_tests.source_helpers import adjacent_pair, merge, open_shards, split
from source_kinesis import kpl

Key = Tuple[str, str, int]  # (shard, sequence number, sub-sequence number)
BIN = Path(sys.executable).parent


def script(name: str) -> str:
    return shutil.which(name) or str(BIN / name)


# Secret values the fixtures hand to the connectors; none may appear in any output (see assert_no_secrets).
SESSION_TOKEN = "FQoGZXIvYXdzEJr-reliability-session-token-0000"
SECRETS: List[str] = [SECRET_KEY, SESSION_TOKEN]


def assert_no_secrets(text: str, where: str) -> int:
    """Fail if a registered secret value appears in ``text``; returns the number of characters scanned."""
    for secret in SECRETS:
        assert secret not in text, f"a secret value leaked into {where}"
    return len(text)


@dataclass
class TruthStream:
    name: str
    events: Dict[Key, Dict[str, Any]] = field(default_factory=dict)  # every user record, by its key
    per_shard: Dict[str, List[Tuple[int, int]]] = field(default_factory=dict)  # sorted positions per shard
    aggregates: int = 0
    reshards: int = 0

    def keys_upto(self, shard: str, sequence_number: Optional[str], sub: int) -> List[Key]:
        if sequence_number is None:
            return []
        limit = (int(sequence_number), sub)
        return [(shard, str(seq), s) for seq, s in self.per_shard.get(shard, []) if (seq, s) <= limit]


class EventWriter:
    """Writes JSON events (a unique ``uid``, ``pk``, per-key counter ``n`` and awkward values) as plain records and
    as KPL aggregates of up to 8 user records sharing one partition key."""

    def __init__(self, client: Any, stream: str, seed: int = 7, keys: int = 9) -> None:
        self.client, self.stream = client, stream
        self.rng = random.Random(seed)
        self.keys = [f"key-{i}" for i in range(keys)]
        self.counters: Dict[str, int] = {k: 0 for k in self.keys}
        self.sent = 0
        self.aggregates = 0

    def event(self, pk: str, batch: str) -> Dict[str, Any]:
        self.counters[pk] += 1
        self.sent += 1
        i = self.sent
        return {
            "uid": f"u{i:05d}", "pk": pk, "n": self.counters[pk], "batch": batch,
            "big": 2**70 + i, "neg": -(2**65) - i, "f": i / 7, "s": f"ünï-{i}-🎉", "nested": {"a": [i, None, True], "b": {"c": "x" * (i % 5)}},
        }

    def put(self, plain: int, aggregates: int, batch: str) -> None:
        """Plain records and aggregates interleaved at random, created in order (so ``n`` follows request order)."""
        kinds = ["plain"] * plain + ["aggregate"] * aggregates
        self.rng.shuffle(kinds)
        entries = []
        for kind in kinds:
            pk = self.keys[self.rng.randrange(len(self.keys))]
            if kind == "plain":
                entries.append({"Data": json.dumps(self.event(pk, batch)).encode(), "PartitionKey": pk})
            else:
                users = [(pk, None, json.dumps(self.event(pk, batch)).encode()) for _ in range(self.rng.randint(2, 8))]
                entries.append({"Data": kpl.encode_aggregate(users), "PartitionKey": pk})
                self.aggregates += 1
        for start in range(0, len(entries), 100):
            response = self.client.put_records(StreamName=self.stream, Records=entries[start:start + 100])
            assert response["FailedRecordCount"] == 0


def build_stream(client: Any, prefix: str, seed: int = 7) -> TruthStream:
    """3 shards; writes; split one; writes; merge two adjacent; writes. Returns the ground truth read back raw."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    create_stream(client, name, 3)
    writer = EventWriter(client, name, seed)
    writer.put(90, 6, "first")
    split(client, name, open_shards(client, name)[0])
    writer.put(70, 5, "after-split")
    first, second = adjacent_pair(open_shards(client, name))
    merge(client, name, first, second)
    writer.put(60, 4, "after-merge")
    truth = read_truth(client, name)
    truth.aggregates, truth.reshards = writer.aggregates, 2
    assert len(truth.events) == writer.sent
    return truth


def read_truth(client: Any, name: str) -> TruthStream:
    truth = TruthStream(name)
    for shard in client.list_shards(StreamName=name)["Shards"]:
        sid = shard["ShardId"]
        iterator = client.get_shard_iterator(StreamName=name, ShardId=sid, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        positions = []
        for _ in range(100):
            response = client.get_records(ShardIterator=iterator, Limit=10000)
            for record in response["Records"]:
                seq, data = record["SequenceNumber"], record["Data"]
                users = [u.data for u in kpl.decode_aggregate(data)] if data.startswith(kpl.KPL_MAGIC) else [data]
                for sub, payload in enumerate(users):
                    truth.events[(sid, seq, sub)] = json.loads(payload)
                    positions.append((int(seq), sub))
            iterator = response.get("NextShardIterator")
            if not iterator or (not response["Records"] and response.get("MillisBehindLatest") == 0):
                break
        truth.per_shard[sid] = sorted(positions)
    return truth


@dataclass
class Collection:
    docs: Dict[str, Dict[str, Any]]  # _id -> document
    keys: List[Key]  # (shard, sequence, sub) of every document, from _meta.kinesis
    by_key: Dict[Key, Dict[str, Any]]
    meta: Dict[Key, Dict[str, Any]]
    states: List[Dict[str, Any]]  # committed state messages


def read_collection(path: str, stream: str) -> Collection:
    """The collection of ``stream`` in a DuckDB file (read-only) and the states committed with it."""
    from destination_collection import jsonio
    from destination_collection.naming import table_name

    table = table_name("", stream)

    con = duckdb.connect(path, read_only=True)
    try:
        tables = {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        rows = con.execute(f'SELECT _id, _doc, _meta FROM "{table}"').fetchall() if table in tables else []
        states = [jsonio.loads(r[0]) for r in con.execute("SELECT state_json FROM _collection_state").fetchall()] if "_collection_state" in tables else []
    finally:
        con.close()
    docs, keys, by_key, metas = {}, [], {}, {}
    for _id, doc, meta in rows:
        doc, meta = jsonio.loads(doc), jsonio.loads(meta)
        k = meta["kinesis"]
        key = (k["shard_id"], k["sequence_number"], k["sub_sequence_number"])
        docs[_id] = doc
        keys.append(key)
        by_key[key] = doc
        metas[key] = k
    return Collection(docs, keys, by_key, metas, states)


def stream_states(states: Iterable[Mapping[str, Any]], stream: str) -> List[Dict[str, Any]]:
    """The ``stream_state`` blobs of ``stream`` among state messages (echoed or committed)."""
    out = []
    for message in states:
        message = message.get("state", message)
        descriptor = ((message.get("stream") or {}).get("stream_descriptor") or {})
        if descriptor.get("name") == stream:
            out.append(message["stream"]["stream_state"])
    return out


def assert_state_covered(state: Mapping[str, Any], truth: TruthStream, present: set, where: str) -> None:
    """Invariant: a committed state never covers a record that is not in the collection."""
    for sid, shard in (state.get("shards") or {}).items():
        if shard.get("finished"):
            expected = [(sid, str(seq), sub) for seq, sub in truth.per_shard.get(sid, [])]
        else:
            expected = truth.keys_upto(sid, shard.get("sequence_number"), shard.get("sub_sequence_number", 0))
        missing = [k for k in expected if k not in present]
        assert not missing, f"{where}: the state covers {len(missing)} record(s) of {sid} missing from the collection"


def assert_equals_truth(collection: Collection, truth: TruthStream, where: str) -> None:
    assert len(collection.keys) == len(set(collection.keys)), f"{where}: a (shard, sequence, sub-sequence) is stored twice"
    lost = set(truth.events) - set(collection.keys)
    extra = set(collection.keys) - set(truth.events)
    assert not lost and not extra, f"{where}: {len(lost)} lost, {len(extra)} unexpected"
    wrong = [k for k, doc in collection.by_key.items() if doc != truth.events[k]]
    assert not wrong, f"{where}: {len(wrong)} documents differ from what was produced, e.g. {wrong[:1]}"
