"""Bounded syncs on moto (in-process, no resharding): resume without gap or repeat, LATEST, policies, checkpoints.

moto's sequence numbers are small per-shard integers and it never reshards, so lineage is tested on kinesis-mock
(integration tests); here every stream has independent shards only.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional, Set, Tuple

import pytest
from airbyte_cdk.models import AirbyteStreamStatus, FailureType, SyncMode, Type
from airbyte_cdk.test.catalog_builder import CatalogBuilder
from airbyte_cdk.test.entrypoint_wrapper import read as entrypoint_read
from airbyte_cdk.test.state_builder import StateBuilder

from source_kinesis.source import SourceKinesis

from .conftest import config, errors_of, make_stream, put, records_of, run_orchestrator, states_of

LOGGER = "source_kinesis.test.orchestrator"

Key = Tuple[str, str]  # (shard id, sequence number)


def keys(records: List[Dict[str, Any]]) -> List[Key]:
    return [(r["_kinesis_shard_id"], r["_kinesis_sequence_number"]) for r in records]


def statuses(messages, stream: str) -> List[AirbyteStreamStatus]:
    out = []
    for m in messages:
        if m.type == Type.TRACE and m.trace.stream_status is not None and m.trace.stream_status.stream_descriptor.name == stream:
            out.append(m.trace.stream_status.status)
    return out


def sync(cfg: Dict[str, Any], names: List[str], states: Optional[Dict[str, Any]] = None, speedup: float = 20.0):
    messages, raised = run_orchestrator(cfg, names, states, logging.getLogger(LOGGER), speedup=speedup)
    return messages, raised


def test_full_read_then_resume_returns_nothing(kinesis) -> None:
    make_stream(kinesis, "orders", shards=2)
    written = put(kinesis, "orders", [{"n": i, "_kinesis_stream": "payload-value"} for i in range(30)])
    messages, raised = sync(config(["orders"]), ["orders"])
    assert raised is None
    records = records_of(messages)
    assert sorted(keys(records)) == sorted(written)
    assert len(set(keys(records))) == 30
    first = records[0]
    assert first["_kinesis_stream"] == "orders" and first["_kinesis_shadowed"] == {"_kinesis_stream": "payload-value"}
    assert first["_kinesis_sub_sequence_number"] == 0 and first["_kinesis_partition_key"].startswith("pk-")
    assert first["_kinesis_arrival_time"].endswith("Z") and len(first["_kinesis_arrival_time"]) == 24
    # per-shard order is kept
    for shard in {s for s, _ in written}:
        seen = [int(q) for s, q in keys(records) if s == shard]
        assert seen == sorted(seen)
    assert statuses(messages, "orders") == [AirbyteStreamStatus.STARTED, AirbyteStreamStatus.RUNNING, AirbyteStreamStatus.COMPLETE]
    final = states_of(messages)[-1]
    for shard in {s for s, _ in written}:
        assert final["shards"][shard]["sequence_number"] == max((q for s, q in written if s == shard), key=int)
    again, raised = sync(config(["orders"]), ["orders"], {"orders": final})
    assert raised is None and records_of(again) == []
    assert states_of(again)[-1]["shards"] == final["shards"]


def test_latest_first_sync_is_empty_and_next_sync_has_no_gap(kinesis) -> None:
    make_stream(kinesis, "clicks", shards=2)
    put(kinesis, "clicks", [{"before": i} for i in range(3)])
    time.sleep(0.005)  # keep pre-existing records out of the first sync's millisecond
    messages, raised = sync(config(["clicks"], start_position="LATEST"), ["clicks"])
    assert raised is None and records_of(messages) == []
    state = states_of(messages)[-1]
    assert set(state["shards"]) == {"shardId-000000000000", "shardId-000000000001"}
    for shard in state["shards"].values():
        assert shard["started_at"] and shard["sequence_number"] is None

    # records arriving between the syncs, all into one shard
    written = put(kinesis, "clicks", [{"after": i} for i in range(5)], partition_key="same-key")
    messages, raised = sync(config(["clicks"], start_position="LATEST"), ["clicks"], {"clicks": state})
    assert raised is None
    records = records_of(messages)
    assert keys(records) == written
    assert [r["after"] for r in records] == list(range(5))
    final = states_of(messages)[-1]["shards"]
    busy = written[0][0]
    idle = ({"shardId-000000000000", "shardId-000000000001"} - {busy}).pop()
    assert final[busy]["sequence_number"] == written[-1][1]
    assert final[idle]["sequence_number"] is None and final[idle]["started_at"] == state["shards"][idle]["started_at"]


def test_at_timestamp_first_sync_starts_there(kinesis) -> None:
    make_stream(kinesis, "ts", shards=1)
    put(kinesis, "ts", [{"old": i} for i in range(2)])
    time.sleep(0.01)
    from datetime import datetime, timezone

    cut = datetime.now(timezone.utc)
    time.sleep(0.01)
    written = put(kinesis, "ts", [{"new": i} for i in range(3)])
    messages, raised = sync(config(["ts"], start_position="AT_TIMESTAMP", start_timestamp=cut.isoformat()), ["ts"])
    assert raised is None
    assert keys(records_of(messages)) == written


def test_resume_from_every_checkpoint_returns_exactly_the_remainder(kinesis) -> None:
    make_stream(kinesis, "events", shards=2)
    written = put(kinesis, "events", [{"n": i} for i in range(24)])
    cfg = config(["events"], records_per_call=4, checkpoint_interval_records=5)
    messages, raised = sync(cfg, ["events"])
    assert raised is None
    all_keys = keys(records_of(messages))
    assert sorted(all_keys) == sorted(written)

    # states are never ahead of what was emitted before them
    emitted: Dict[str, int] = {}
    seen: List[Key] = []
    checkpoints: List[Tuple[Dict[str, Any], Set[Key]]] = []
    for m in messages:
        if m.type == Type.RECORD:
            key = (m.record.data["_kinesis_shard_id"], m.record.data["_kinesis_sequence_number"])
            emitted[key[0]] = int(key[1])
            seen.append(key)
        elif m.type == Type.STATE:
            blob = states_of([m])[0]
            for shard_id, shard in blob["shards"].items():
                if shard["sequence_number"] is None:
                    continue
                assert shard_id in emitted and int(shard["sequence_number"]) <= emitted[shard_id]
                assert int(shard["sequence_number"]) == emitted[shard_id]  # and not behind: nothing repeats on resume
            checkpoints.append((blob, set(seen)))
    # a checkpoint at least every 5 records
    record_counts = [len(done) for _, done in checkpoints]
    assert all(b - a <= 5 for a, b in zip(record_counts, record_counts[1:]))
    assert len(checkpoints) >= 24 // 5

    middle = [c for c in checkpoints if 0 < len(c[1]) < 24]
    assert middle
    for blob, done in middle:
        resumed, raised = sync(cfg, ["events"], {"events": blob})
        assert raised is None
        got = keys(records_of(resumed))
        assert len(got) == len(set(got))
        assert set(got) == set(written) - done


def test_source_read_resumes_with_state_builder(kinesis) -> None:
    make_stream(kinesis, "orders", shards=1)
    written = put(kinesis, "orders", [{"n": i} for i in range(6)])
    cfg = config(["orders"])
    catalog = CatalogBuilder().with_stream("orders", SyncMode.incremental).build()
    out = entrypoint_read(SourceKinesis(), cfg, catalog)
    assert out.errors == []
    assert [r.record.data["n"] for r in out.records] == list(range(6))
    blob = out.most_recent_state.stream_state.__dict__
    assert blob["shards"]["shardId-000000000000"]["sequence_number"] == written[-1][1]

    state = StateBuilder().with_stream_state("orders", dict(blob)).build()
    more = put(kinesis, "orders", [{"n": i} for i in range(6, 9)])
    out2 = entrypoint_read(SourceKinesis(), cfg, catalog, state)
    assert out2.errors == []
    assert keys([r.record.data for r in out2.records]) == more

    full = CatalogBuilder().with_stream("orders", SyncMode.full_refresh).build()
    out3 = entrypoint_read(SourceKinesis(), cfg, full, state)  # full refresh ignores the state
    assert len(out3.records) == 9


def saved_state(kinesis, stream: str, shards: Dict[str, Dict[str, Any]], **overrides: Any) -> Dict[str, Any]:
    desc = kinesis.describe_stream(StreamName=stream)["StreamDescription"]
    from source_kinesis.state import iso_ms

    blob = {"version": 1, "stream_arn": desc["StreamARN"], "stream_created_at": iso_ms(desc["StreamCreationTimestamp"]), "shards": {}}
    for shard_id, fields in shards.items():
        blob["shards"][shard_id] = {"sequence_number": None, "sub_sequence_number": 0, "finished": False, "parents": [], "started_at": None, **fields}
    blob.update(overrides)
    return blob


def test_unlisted_unfinished_shard_with_restart_policy_warns_and_continues(kinesis, caplog) -> None:
    make_stream(kinesis, "s", shards=1)
    written = put(kinesis, "s", [{"n": i} for i in range(4)])
    state = saved_state(kinesis, "s", {"shardId-000000000000": {"sequence_number": written[1][1]}, "shardId-000000000099": {"sequence_number": "17"}})
    with caplog.at_level(logging.INFO, logger=LOGGER):
        messages, raised = sync(config(["s"]), ["s"], {"s": state})
    assert raised is None
    assert keys(records_of(messages)) == written[2:]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("shardId-000000000099" in w and "'s'" in w and "17" in w for w in warnings), warnings
    assert "shardId-000000000099" not in states_of(messages)[-1]["shards"]


def test_unlisted_unfinished_shard_with_fail_policy_is_config_error(kinesis) -> None:
    make_stream(kinesis, "s", shards=1)
    put(kinesis, "s", [{"n": 1}])
    state = saved_state(kinesis, "s", {"shardId-000000000000": {}, "shardId-000000000099": {"sequence_number": "17"}})
    messages, raised = sync(config(["s"], stale_checkpoint="fail"), ["s"], {"s": state})
    assert records_of(messages) == []
    errors = errors_of(messages)
    assert len(errors) == 1 and errors[0].failure_type == FailureType.config_error
    assert "shardId-000000000099" in errors[0].message and "'s'" in errors[0].message
    assert errors[0].stream_descriptor.name == "s"
    assert raised is not None and raised.failure_type == FailureType.config_error and "shardId-000000000099" in raised.message
    assert statuses(messages, "s")[-1] == AirbyteStreamStatus.INCOMPLETE


def test_finished_unlisted_shard_is_pruned_silently(kinesis, caplog) -> None:
    make_stream(kinesis, "s", shards=1)
    written = put(kinesis, "s", [{"n": 1}])
    state = saved_state(kinesis, "s", {"shardId-000000000000": {}, "shardId-000000000050": {"sequence_number": "9", "finished": True}})
    with caplog.at_level(logging.INFO, logger=LOGGER):
        messages, raised = sync(config(["s"], stale_checkpoint="fail"), ["s"], {"s": state})
    assert raised is None and keys(records_of(messages)) == written
    assert "shardId-000000000050" not in states_of(messages)[-1]["shards"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("changed", ["stream_arn", "stream_created_at"])
def test_recreated_stream_restart_reads_from_trim_horizon(kinesis, caplog, changed: str) -> None:
    make_stream(kinesis, "s", shards=1)
    written = put(kinesis, "s", [{"n": i} for i in range(3)])
    replacement = {"stream_arn": "arn:aws:kinesis:us-east-1:123456789012:stream/s-old", "stream_created_at": "2020-01-01T00:00:00.000Z"}[changed]
    state = saved_state(kinesis, "s", {"shardId-000000000000": {"sequence_number": written[-1][1]}}, **{changed: replacement})
    with caplog.at_level(logging.INFO, logger=LOGGER):
        messages, raised = sync(config(["s"]), ["s"], {"s": state})
    assert raised is None
    assert keys(records_of(messages)) == written  # the saved position belonged to the old stream
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("re-created" in w and replacement in w for w in warnings), warnings
    final = states_of(messages)[-1]
    assert final[changed] != replacement


def test_recreated_stream_fail_policy(kinesis) -> None:
    make_stream(kinesis, "s", shards=1)
    put(kinesis, "s", [{"n": 1}])
    state = saved_state(kinesis, "s", {"shardId-000000000000": {"sequence_number": "1"}}, stream_created_at="2020-01-01T00:00:00.000Z")
    messages, raised = sync(config(["s"], stale_checkpoint="fail"), ["s"], {"s": state})
    assert records_of(messages) == []
    errors = errors_of(messages)
    assert errors and errors[0].failure_type == FailureType.config_error and "re-created" in errors[0].message
    assert raised is not None and raised.failure_type == FailureType.config_error


def test_one_missing_stream_does_not_stop_the_others(kinesis) -> None:
    make_stream(kinesis, "good", shards=1)
    written = put(kinesis, "good", [{"n": i} for i in range(3)])
    messages, raised = sync(config(["good", "missing"]), ["missing", "good"])
    assert keys(records_of(messages)) == written
    errors = errors_of(messages)
    assert len(errors) == 1 and errors[0].failure_type == FailureType.config_error
    assert "'missing'" in errors[0].message and "kinesis:DescribeStream" in errors[0].message
    assert raised is not None and "missing" in raised.message
    assert statuses(messages, "good")[-1] == AirbyteStreamStatus.COMPLETE
    assert statuses(messages, "missing") == [AirbyteStreamStatus.STARTED, AirbyteStreamStatus.INCOMPLETE]


def test_bad_state_version_fails_that_stream(kinesis) -> None:
    make_stream(kinesis, "s", shards=1)
    messages, raised = sync(config(["s"]), ["s"], {"s": {"version": 99, "shards": {}}})
    errors = errors_of(messages)
    assert errors and errors[0].failure_type == FailureType.config_error and "99" in errors[0].message
    assert raised is not None


def test_max_sync_duration_ends_the_sync_and_next_sync_continues(kinesis) -> None:
    make_stream(kinesis, "slow", shards=1)
    written = put(kinesis, "slow", [{"n": i} for i in range(5)])
    # one record per call and a call every 10 s: only the first page fits in the 1 s budget
    slow = config(["slow"], records_per_call=1, get_records_per_second=0.1, max_sync_duration_seconds=1)
    messages, raised = sync(slow, ["slow"], speedup=1)  # real time: the deadline must not pass before the first page
    assert raised is None
    assert keys(records_of(messages)) == written[:1]
    state = states_of(messages)[-1]
    assert state["shards"]["shardId-000000000000"]["sequence_number"] == written[0][1]
    assert statuses(messages, "slow")[-1] == AirbyteStreamStatus.COMPLETE
    rest, raised = sync(config(["slow"]), ["slow"], {"slow": state})
    assert raised is None and keys(records_of(rest)) == written[1:]


def test_non_json_payloads_are_emitted(kinesis) -> None:
    make_stream(kinesis, "raw", shards=1)
    kinesis.put_record(StreamName="raw", Data=b"[1, 2]", PartitionKey="a")
    kinesis.put_record(StreamName="raw", Data=b"not json", PartitionKey="a")
    messages, raised = sync(config(["raw"]), ["raw"])
    assert raised is None
    records = records_of(messages)
    assert len(records) == 2
    assert all(r["_kinesis_partition_key"] == "a" for r in records)


def test_follow_checkpoints_as_soon_as_it_has_caught_up(kinesis):
    """Follow mode: records emitted are covered by a state once no page is waiting, long before the 60 s checkpoint
    interval, so a runner commits them at once (freshness) — and the state never precedes its records."""
    import threading

    from source_kinesis.auth import ClientFactory
    from source_kinesis.config import parse_config
    from source_kinesis.discovery import resolve_catalog_stream
    from source_kinesis.orchestrator import Orchestrator

    make_stream(kinesis, "fresh", shards=2)
    written = put(kinesis, "fresh", [{"n": i} for i in range(6)])
    cfg = parse_config(config(["fresh"], checkpoint_interval_seconds=60, get_records_per_second=5))
    client = ClientFactory(cfg).kinesis()
    stop = threading.Event()
    orchestrator = Orchestrator(cfg, client, logging.getLogger("airbyte.test"), follow=True, stop_event=stop)
    seen: list = []
    covered_at = None
    started = time.monotonic()
    for message in orchestrator.run(["fresh"], lambda name: resolve_catalog_stream(client, cfg, name), {}):
        if message.type == Type.RECORD:
            seen.append(message.record.data)
        elif message.type == Type.STATE and len(seen) == len(written):
            shards = message.state.stream.stream_state.__dict__["shards"]
            positions = {s: v.get("sequence_number") for s, v in shards.items()}
            last = {}
            for shard_id, sequence in written:
                last[shard_id] = sequence
            if all(positions.get(s) == seq for s, seq in last.items()):
                covered_at = time.monotonic()
                stop.set()
        if time.monotonic() - started > 20:
            stop.set()
    assert len(seen) == len(written)
    assert covered_at is not None, "no state covered the records before the stop"
    assert covered_at - started < 10, f"covered only after {covered_at - started:.1f} s"


def test_follow_covers_every_page_of_a_poll_round_before_the_next_poll(kinesis):
    """Shards polled in step return their pages within milliseconds of each other. Every record of such a round is
    covered by a state before any shard is polled again, however soon after the previous state its page came (the
    first page's checkpoint must not hold the other pages' records back until the next round or the 60 s interval)."""
    import threading

    from source_kinesis.auth import ClientFactory
    from source_kinesis.config import parse_config
    from source_kinesis.discovery import resolve_catalog_stream
    from source_kinesis.orchestrator import Orchestrator

    make_stream(kinesis, "rounds", shards=4)
    written = put(kinesis, "rounds", [{"n": i} for i in range(40)])
    assert len({shard for shard, _ in written}) == 4
    # a poll every 10 s per shard: the first round is the only one unless the records wait for a second
    cfg = parse_config(config(["rounds"], checkpoint_interval_seconds=60, get_records_per_second=0.1))
    client = ClientFactory(cfg).kinesis()
    calls: List[float] = []
    client.meta.events.register("before-call.kinesis.GetRecords", lambda **kwargs: calls.append(time.monotonic()))
    stop = threading.Event()
    last = {}
    for shard_id, sequence in written:
        last[shard_id] = max(last.get(shard_id, sequence), sequence, key=int)
    orchestrator = Orchestrator(cfg, client, logging.getLogger("airbyte.test"), follow=True, stop_event=stop)
    covered_after_calls = None
    started = time.monotonic()
    for message in orchestrator.run(["rounds"], lambda name: resolve_catalog_stream(client, cfg, name), {}):
        if message.type == Type.STATE:
            shards = message.state.stream.stream_state.__dict__["shards"]
            if all(shards.get(s, {}).get("sequence_number") == seq for s, seq in last.items()):
                covered_after_calls = len(calls)
                stop.set()
        if time.monotonic() - started > 30:
            stop.set()
    assert covered_after_calls == 4, f"all records covered only after {covered_after_calls} GetRecords calls (4 shards, one round)"
