"""Helpers for source-kinesis integration tests: writing records, resharding, and running reads in-process."""
from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any, Dict, List, Optional, Tuple

from airbyte_cdk.models import SyncMode
from airbyte_cdk.test.catalog_builder import CatalogBuilder
from airbyte_cdk.test.entrypoint_wrapper import EntrypointOutput, read

from integration_tests.kinesis_mock import wait_active
from source_kinesis.source import SourceKinesis

Key = Tuple[str, str, int]  # shard, sequence number, sub-sequence number


class Producer:
    """Writes JSON events {"pk", "n", "batch"} where n counts per partition key, so order can be checked."""

    def __init__(self, client: Any, stream: str, keys: int = 12) -> None:
        self.client = client
        self.stream = stream
        self.keys = [f"key-{i:02d}" for i in range(keys)]
        self.counters: Dict[str, int] = defaultdict(int)
        self.sent: List[Dict[str, Any]] = []

    def put(self, count: int, batch: str = "") -> None:
        for start in range(0, count, 100):
            entries = []
            for i in range(start, min(count, start + 100)):
                pk = self.keys[i % len(self.keys)]
                self.counters[pk] += 1
                event = {"pk": pk, "n": self.counters[pk], "batch": batch}
                self.sent.append(event)
                entries.append({"Data": json.dumps(event).encode(), "PartitionKey": pk})
            response = self.client.put_records(StreamName=self.stream, Records=entries)
            assert response["FailedRecordCount"] == 0


def open_shards(client: Any, stream: str) -> List[Dict[str, Any]]:
    shards = client.list_shards(StreamName=stream)["Shards"]
    return [s for s in shards if "EndingSequenceNumber" not in s.get("SequenceNumberRange", {})]


def split(client: Any, stream: str, shard: Dict[str, Any]) -> None:
    lo, hi = int(shard["HashKeyRange"]["StartingHashKey"]), int(shard["HashKeyRange"]["EndingHashKey"])
    client.split_shard(StreamName=stream, ShardToSplit=shard["ShardId"], NewStartingHashKey=str((lo + hi) // 2))
    time.sleep(0.3)
    wait_active(client, stream)


def merge(client: Any, stream: str, first: Dict[str, Any], second: Dict[str, Any]) -> None:
    client.merge_shards(StreamName=stream, ShardToMerge=first["ShardId"], AdjacentShardToMerge=second["ShardId"])
    time.sleep(0.3)
    wait_active(client, stream)


def adjacent_pair(shards: List[Dict[str, Any]]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    ordered = sorted(shards, key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))
    for a, b in zip(ordered, ordered[1:]):
        if int(a["HashKeyRange"]["EndingHashKey"]) + 1 == int(b["HashKeyRange"]["StartingHashKey"]):
            return a, b
    raise AssertionError("no adjacent open shards")


def run_read(config: Dict[str, Any], streams: List[str], state: Optional[List[Any]] = None, mode: SyncMode = SyncMode.incremental) -> EntrypointOutput:
    builder = CatalogBuilder()
    for name in streams:
        builder.with_stream(name, mode)
    return read(SourceKinesis(), config, builder.build(), state=state)


def run_check(config: Dict[str, Any]) -> Tuple[Any, str]:
    """``check`` as the platform runs it (a config file): its connection status and its log text."""
    import tempfile
    from pathlib import Path

    from airbyte_cdk.test.entrypoint_wrapper import _run_command

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(config))
        output = _run_command(SourceKinesis(), ["check", "--config", str(path)], expecting_exception=None)
    (status,) = [m.connectionStatus for m in output.connection_status_messages]
    return status, "\n".join(m.log.message for m in output.logs)


def read_in_process(config: Dict[str, Any], streams: List[str], state: Optional[List[Any]] = None) -> List[Any]:
    """The AirbyteMessages of a read, without the stdout round trip (the CDK's test wrapper parses output with
    orjson, which turns integers beyond 64 bits into floats; the connector's stdout keeps them exact)."""
    import logging

    builder = CatalogBuilder()
    for name in streams:
        builder.with_stream(name, SyncMode.incremental)
    return list(SourceKinesis().read(logging.getLogger("airbyte"), config, builder.build(), state))


def record_key(data: Dict[str, Any]) -> Key:
    return data["_kinesis_shard_id"], data["_kinesis_sequence_number"], data["_kinesis_sub_sequence_number"]


def state_list(state_message: Any) -> List[Any]:
    """A --state argument holding one STREAM state message taken from a read's output."""
    return [state_message.state]


def latest_states(output: EntrypointOutput) -> List[Any]:
    """The last state per stream, as a --state list."""
    last: Dict[str, Any] = {}
    for message in output.state_messages:
        last[message.state.stream.stream_descriptor.name] = message.state
    return list(last.values())
