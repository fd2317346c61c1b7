"""Issue 15 (items 7, 8, 10): the source never hangs and reads strict input. In-process, fast: test doubles for the
Kinesis client (a call that never returns, an endpoint that is down, pagination that never ends) and hostile saved
states and catalogs. The real-process bounds (CLI check/read against hostile loopback endpoints, SIGTERM) are in
integration_tests/reliability/test_hardening_source_deadlines.py."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List

import pytest
from airbyte_cdk.models import ConfiguredAirbyteCatalogSerializer, FailureType, Type
from airbyte_cdk.utils.traced_exception import AirbyteTracedException
from botocore.exceptions import EndpointConnectionError

from source_kinesis import deadlines
from source_kinesis.config import parse_config
from source_kinesis.deadlines import CallDeadlineExceeded, CallGuard, GuardedClient, Stopped
from source_kinesis.kinesis_api import KinesisStream, list_shards, list_stream_names
from source_kinesis.orchestrator import Orchestrator
from source_kinesis.source import SourceKinesis
from source_kinesis.state import StreamState
from source_kinesis.throttling import call_kinesis

STREAM = KinesisStream("orders", "arn:aws:kinesis:us-east-1:000000000000:stream/orders", "2026-01-01T00:00:00.000Z", "ACTIVE", "NONE", {"StreamName": "orders"})


def config(**overrides: Any) -> Dict[str, Any]:
    raw = {"credentials": {"auth_type": "access_keys", "aws_access_key_id": "AKIAHOSTILE", "aws_secret_access_key": "hostile-secret-0001"},
           "region": "us-east-1", "streams": ["orders"], "endpoint_url": "http://127.0.0.1:9"}
    raw.update(overrides)
    return raw


class Hangs:
    """A client whose every call blocks until released (a server that accepts and never answers, or drips)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def describe_stream(self, **kwargs: Any) -> Any:
        self.calls += 1
        self.release.wait(30)
        return {"StreamDescription": {}}


# ---------------------------------------------------------------------------------------------- per-call deadline
def test_a_call_that_never_answers_ends_at_its_deadline_naming_the_endpoint_and_call(reliability) -> None:
    hangs = Hangs()
    client = GuardedClient(hangs, CallGuard(endpoint="http://127.0.0.1:4567", call_seconds=0.5))
    started = time.monotonic()
    with pytest.raises(CallDeadlineExceeded) as info:
        client.describe_stream(StreamName="orders")
    assert time.monotonic() - started < 2.0
    assert "http://127.0.0.1:4567" in str(info.value) and "DescribeStream" in str(info.value)
    hangs.release.set()
    reliability(cases=1)


@pytest.mark.parametrize("where", ["in_flight", "in_backoff"])
def test_a_stop_abandons_a_call_in_flight_or_in_backoff_at_once(where: str, reliability) -> None:
    stop = threading.Event()
    hangs = Hangs()

    class Down:
        def list_shards(self, **kwargs: Any) -> Any:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    target = hangs.describe_stream if where == "in_flight" else Down().list_shards
    client = GuardedClient(hangs if where == "in_flight" else Down(), CallGuard(call_seconds=60, stops=(stop,)))
    method = client.describe_stream if where == "in_flight" else client.list_shards
    assert target is not None
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Stopped):
        call_kinesis("DescribeStream" if where == "in_flight" else "ListShards", method, {}, budget_seconds=90)
    assert time.monotonic() - started < 1.5  # not the 60 s deadline, not the 90 s budget
    hangs.release.set()
    reliability(cases=1)


def test_an_outage_ends_every_later_call_at_once_once_the_budget_is_spent(reliability) -> None:
    """N sequential calls against a dead endpoint take one retry budget, not N (read ends within budget + one
    call's deadline once the endpoint stops making progress)."""

    class Down:
        def describe_stream(self, **kwargs: Any) -> Any:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    client = GuardedClient(Down(), CallGuard(call_seconds=5))
    started = time.monotonic()
    for _ in range(5):
        with pytest.raises(Exception):
            call_kinesis("DescribeStream", client.describe_stream, {"StreamName": "orders"}, budget_seconds=0.6)
    assert time.monotonic() - started < 0.6 + 1.5
    reliability(cases=1)


# ------------------------------------------------------------------------------------------------ pagination bounds
class Pages:
    def __init__(self, repeat: bool) -> None:
        self.repeat, self.calls = repeat, 0

    def list_shards(self, **kwargs: Any) -> Any:
        self.calls += 1
        token = "same" if self.repeat else f"t{self.calls}"
        return {"Shards": [{"ShardId": f"shardId-{self.calls:012d}"}], "NextToken": token}

    def list_streams(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.repeat:
            return {"StreamNames": [], "HasMoreStreams": True}
        return {"StreamNames": [f"s{self.calls}"], "HasMoreStreams": True, "NextToken": f"t{self.calls}"}


@pytest.mark.parametrize("repeat", [True, False], ids=["repeated_token", "endless_tokens"])
def test_list_shards_pagination_is_bounded_and_names_stream_and_call(repeat: bool, reliability) -> None:
    pages = Pages(repeat)
    with pytest.raises(AirbyteTracedException) as info:
        list_shards(GuardedClient(pages), {"StreamName": "orders"}, "orders", 5)
    assert info.value.failure_type == FailureType.transient_error
    assert "ListShards" in info.value.message and "'orders'" in info.value.message
    assert pages.calls <= 1001
    reliability(cases=1)


@pytest.mark.parametrize("repeat", [True, False], ids=["empty_page_has_more", "endless_tokens"])
def test_list_streams_pagination_is_bounded(repeat: bool, reliability) -> None:
    pages = Pages(repeat)
    with pytest.raises(AirbyteTracedException) as info:
        list_stream_names(GuardedClient(pages), "sales*", 5)
    assert "ListStreams" in info.value.message and info.value.failure_type == FailureType.transient_error
    assert pages.calls <= 1001
    reliability(cases=1)


# ------------------------------------------------------------------------------------- SIGTERM during an outage
class DownForReads:
    """ListShards works, every GetShardIterator/GetRecords fails as if the endpoint went away."""

    def list_shards(self, **kwargs: Any) -> Any:
        return {"Shards": [{"ShardId": "shardId-000000000000"}]}

    def get_shard_iterator(self, **kwargs: Any) -> Any:
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    get_records = get_shard_iterator


@pytest.mark.parametrize("follow", [False, True], ids=["read", "follow"])
def test_stop_during_an_outage_ends_cleanly_with_a_final_state(follow: bool, reliability) -> None:
    stop = threading.Event()
    cfg = parse_config(config(retry_budget_seconds=90))
    orchestrator = Orchestrator(cfg, DownForReads(), logging.getLogger("airbyte"), follow=follow, stop_event=stop)
    threading.Timer(1.0, stop.set).start()
    started = time.monotonic()
    messages = list(orchestrator.run(["orders"], lambda name: STREAM, {}))  # no exception: a stop is not a failure
    assert time.monotonic() - started < 4.0
    states = [m for m in messages if m.type == Type.STATE]
    assert states and "shardId-000000000000" in states[-1].state.stream.stream_state.shards
    assert not [m for m in messages if m.type == Type.TRACE and m.trace.error is not None]
    reliability(cases=1)


def test_an_outage_past_the_budget_is_a_transient_error_naming_the_stream(reliability) -> None:
    cfg = parse_config(config(retry_budget_seconds=1))
    orchestrator = Orchestrator(cfg, DownForReads(), logging.getLogger("airbyte"))
    with pytest.raises(AirbyteTracedException) as info:
        list(orchestrator.run(["orders"], lambda name: STREAM, {}))
    assert info.value.failure_type == FailureType.transient_error  # exit 3 in the runner, never 2
    assert "orders" in info.value.message and "GetShardIterator" in info.value.message
    reliability(cases=1)


# ------------------------------------------------------------------------------------------- strict state and catalog
def state_with(**shard: Any) -> Dict[str, Any]:
    return {"version": 1, "stream_arn": STREAM.arn, "stream_created_at": STREAM.created_at, "shards": {"shardId-000000000000": shard}}


@pytest.mark.parametrize(
    "field, value",
    [("started_at", "garbage"), ("started_at", 12345), ("started_at", ["2026-01-01"]), ("started_at", ""),
     ("sequence_number", " 12 "), ("sequence_number", "1_000"), ("sequence_number", "١٢"), ("sequence_number", "１２"),
     ("sequence_number", "12\n"), ("sequence_number", "-5"), ("sequence_number", "+5"), ("sequence_number", ""), ("sequence_number", 1.5),
     ("sequence_number", True), ("sub_sequence_number", "1_0"), ("sub_sequence_number", -1), ("sub_sequence_number", 2.7),
     ("sub_sequence_number", True), ("sub_sequence_number", "٣"), ("parents", "shardId-1"), ("parents", [1]), ("finished", "yes")],
)
def test_a_malformed_state_field_is_a_config_error_naming_stream_and_field(field: str, value: Any, reliability) -> None:
    with pytest.raises(AirbyteTracedException) as info:
        StreamState.from_dict(state_with(**{field: value}), "orders")
    assert info.value.failure_type == FailureType.config_error
    assert "'orders'" in info.value.message and field in info.value.message and "shardId-000000000000" in info.value.message
    reliability(cases=1)


@pytest.mark.parametrize("blob", [["not", "an", "object"], {"version": "1", "shards": {}}, {"version": 1, "shards": ["shardId-1"]}, {"version": 1, "stream_arn": 5}])
def test_a_malformed_state_blob_is_a_config_error(blob: Any, reliability) -> None:
    with pytest.raises(AirbyteTracedException) as info:
        StreamState.from_dict(blob, "orders")
    assert info.value.failure_type == FailureType.config_error and "'orders'" in info.value.message
    reliability(cases=1)


def test_valid_states_still_parse() -> None:
    parsed = StreamState.from_dict(state_with(sequence_number="49680563867986159986657533475467675693680969201316003842", sub_sequence_number=3,
                                              started_at="2026-11-25T21:30:38.123Z", parents=["shardId-000000000001"], finished=False), "orders")
    shard = parsed.shards["shardId-000000000000"]
    assert (shard.sequence_number, shard.sub_sequence_number, shard.started_at) == ("49680563867986159986657533475467675693680969201316003842", 3, "2026-11-25T21:30:38.123Z")


def test_a_catalog_listing_a_stream_twice_is_refused_naming_it(reliability) -> None:
    entry = {"stream": {"name": "orders", "json_schema": {}, "supported_sync_modes": ["incremental"]}, "sync_mode": "incremental", "destination_sync_mode": "append"}
    other = dict(entry, stream=dict(entry["stream"], name="payments"))
    catalog = ConfiguredAirbyteCatalogSerializer.load({"streams": [entry, other, entry]})
    with pytest.raises(AirbyteTracedException) as info:
        list(SourceKinesis().read(logging.getLogger("airbyte"), config(streams=["orders", "payments"]), catalog))
    assert info.value.failure_type == FailureType.config_error and "'orders'" in info.value.message
    reliability(cases=1)


@pytest.mark.parametrize("sequence_number", ["١٢", " 12", "1_000", "", None, 12])
def test_a_get_records_sequence_number_that_is_not_digits_fails_the_shard_by_name(sequence_number: Any, reliability) -> None:
    class Hostile(DownForReads):
        def get_shard_iterator(self, **kwargs: Any) -> Any:
            return {"ShardIterator": "it"}

        def get_records(self, **kwargs: Any) -> Any:
            return {"Records": [{"SequenceNumber": sequence_number, "Data": b"{}", "PartitionKey": "k", "ApproximateArrivalTimestamp": 1.0}],
                    "NextShardIterator": "it", "MillisBehindLatest": 0}

    orchestrator = Orchestrator(parse_config(config(retry_budget_seconds=1)), Hostile(), logging.getLogger("airbyte"))
    with pytest.raises(AirbyteTracedException) as info:
        list(orchestrator.run(["orders"], lambda name: STREAM, {}))
    assert "SequenceNumber" in info.value.message and "shardId-000000000000" in info.value.message and "GetRecords" in info.value.message
    reliability(cases=1)


def test_deadline_constants_keep_check_within_the_issue_bound() -> None:
    from source_kinesis.source import CHECK_TOTAL_SECONDS

    assert CHECK_TOTAL_SECONDS <= 25 and deadlines.CALL_DEADLINE_SECONDS <= CHECK_TOTAL_SECONDS


# ------------------------------------------------------------------------------ round 2: what an endpoint says
def rec(seq: Any, **fields: Any) -> Dict[str, Any]:
    record = {"SequenceNumber": str(seq), "Data": b'{"a": 1}', "PartitionKey": "k", "ApproximateArrivalTimestamp": 1.0}
    record.update(fields)
    return record


class Scripted(DownForReads):
    """ListShards lists ``shards``; GetShardIterator names the shard; GetRecords pages come from ``pages(shard, n)``."""

    def __init__(self, pages: Any, shards: Any = None) -> None:
        self.pages, self.calls = pages, {}
        self.shards = shards if shards is not None else [{"ShardId": "shardId-000000000000"}]

    def list_shards(self, **kwargs: Any) -> Any:
        return {"Shards": self.shards}

    def get_shard_iterator(self, **kwargs: Any) -> Any:
        return {"ShardIterator": kwargs["ShardId"]}

    def get_records(self, **kwargs: Any) -> Any:
        shard = kwargs["ShardIterator"]
        self.calls[shard] = self.calls.get(shard, 0) + 1
        return self.pages(shard, self.calls[shard])


def sync(client: Any, state: Any = None, seconds: float = 20.0, **settings: Any) -> tuple:
    """(records' sequence numbers, states, the error or None, elapsed) of a bounded read; a stop after ``seconds``
    is a test failure (the read must end by itself)."""
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    orchestrator = Orchestrator(parse_config(config(**dict({"retry_budget_seconds": 1}, **settings))), client, logging.getLogger("airbyte"), stop_event=stop)
    started, out, error = time.monotonic(), [], None
    try:
        for message in orchestrator.run(["orders"], lambda name: STREAM, {"orders": state} if state else {}):
            out.append(message)
    except AirbyteTracedException as exc:
        error = exc
    finally:
        timer.cancel()
    assert not stop.is_set(), "the bounded read did not end by itself"
    records = [m.record.data["_kinesis_sequence_number"] for m in out if m.type == Type.RECORD]
    states = [m.state.stream.stream_state for m in out if m.type == Type.STATE]
    return records, states, error, time.monotonic() - started


def assert_endpoint_error(error: Any, *words: str) -> None:
    assert error is not None, "the read succeeded"
    assert error.failure_type == FailureType.transient_error, error.message
    for word in ("'orders'",) + words:
        assert word in error.message, (word, error.message)


@pytest.mark.parametrize("behind", [5000, 10**30, None], ids=["behind_5s", "behind_huge", "behind_absent"])
def test_a_bounded_read_ends_when_empty_pages_never_get_closer_to_the_tip(behind: Any, reliability) -> None:
    """Empty pages, the same iterator and a MillisBehindLatest that never drops (or is absent) kept a bounded read
    polling until it was killed; it now fails the shard after retry_budget_seconds without progress."""

    def pages(shard: str, n: int) -> Any:
        page = {"Records": [], "NextShardIterator": shard}
        if behind is not None:
            page["MillisBehindLatest"] = behind
        return page

    records, states, error, elapsed = sync(Scripted(pages), retry_budget_seconds=1)
    assert elapsed < 1 + 3.0
    assert_endpoint_error(error, "shardId-000000000000", "GetRecords", "not making progress")
    reliability(cases=1)


def test_empty_pages_that_get_closer_to_the_tip_are_progress(reliability) -> None:
    def pages(shard: str, n: int) -> Any:  # 12 empty pages, behind dropping, then caught up with one record
        if n <= 12:
            return {"Records": [], "NextShardIterator": shard, "MillisBehindLatest": 100_000 - n}
        if n == 13:
            return {"Records": [rec(5)], "NextShardIterator": shard, "MillisBehindLatest": 0}
        return {"Records": [], "NextShardIterator": shard, "MillisBehindLatest": 0}

    records, states, error, _ = sync(Scripted(pages), retry_budget_seconds=1, get_records_per_second=5)
    assert error is None and records == ["5"]
    reliability(cases=1)


@pytest.mark.parametrize("behind", [-1, "12", 1.5, True], ids=["negative", "string", "float", "bool"])
def test_a_millis_behind_latest_that_is_not_a_count_fails_the_shard_by_name(behind: Any, reliability) -> None:
    records, states, error, _ = sync(Scripted(lambda shard, n: {"Records": [], "NextShardIterator": shard, "MillisBehindLatest": behind}))
    assert_endpoint_error(error, "shardId-000000000000", "MillisBehindLatest")
    reliability(cases=1)


@pytest.mark.parametrize("pages, emitted", [
    ([[1, 2, 3], [2, 3, 4]], ["1", "2", "3"]),  # repeated across pages
    ([[5, 6], [3, 4]], ["5", "6"]),  # backwards
    ([[1, 1, 2]], []),  # repeated within a page: nothing of the page goes out
    ([[1, 3, 2]], []),  # out of order within a page
], ids=["repeat_across_pages", "backwards", "repeat_in_page", "reordered_in_page"])
def test_sequence_numbers_that_repeat_or_go_backwards_are_never_emitted_twice(pages: Any, emitted: List[str], reliability) -> None:
    def answer(shard: str, n: int) -> Any:
        if n <= len(pages):
            return {"Records": [rec(s) for s in pages[n - 1]], "NextShardIterator": shard, "MillisBehindLatest": 10}
        return {"Records": [], "NextShardIterator": shard, "MillisBehindLatest": 0}

    records, states, error, _ = sync(Scripted(answer))
    assert records == emitted  # exactly once, in order, up to the breach
    assert_endpoint_error(error, "shardId-000000000000", "GetRecords", "sequence number")
    assert states[-1].shards["shardId-000000000000"]["sequence_number"] == (emitted[-1] if emitted else None)
    reliability(cases=1)


@pytest.mark.parametrize("first", [3, 5], ids=["before_checkpoint", "the_checkpoint_only_as_first_after_it"])
def test_a_resumed_shard_never_re_emits_records_at_or_before_its_checkpoint(first: int, reliability) -> None:
    state = {"version": 1, "stream_arn": STREAM.arn, "stream_created_at": STREAM.created_at,
             "shards": {"shardId-000000000000": {"sequence_number": "5"}}}

    def answer(shard: str, n: int) -> Any:
        if n == 1:
            return {"Records": [rec(s) for s in range(first, 8)], "NextShardIterator": shard, "MillisBehindLatest": 10}
        return {"Records": [], "NextShardIterator": shard, "MillisBehindLatest": 0}

    records, states, error, _ = sync(Scripted(answer), state=state)
    if first == 5:  # AT_SEQUENCE_NUMBER returns the checkpoint's record first: skipped, the rest emitted once
        assert error is None and records == ["6", "7"]
    else:
        assert records == [] and error is not None
        assert_endpoint_error(error, "shardId-000000000000", "sequence number 3")
    reliability(cases=1)


@pytest.mark.parametrize("bad", [
    {"Records": {"a": 1}}, {"Records": ["x"]}, {"Records": [{"SequenceNumber": "1"}]},
    {"Records": [rec(1, Data=None)]}, {"Records": [rec(1, PartitionKey=7)]}, {"Records": [rec(1, ApproximateArrivalTimestamp=float("nan"))]},
    {"Records": [rec(1, ApproximateArrivalTimestamp=1e300)]}, {"Records": [rec(1, ApproximateArrivalTimestamp="2026")]},
    {"Records": [], "NextShardIterator": 5}, {"Records": [], "NextShardIterator": ""},
], ids=["records_not_list", "record_not_object", "no_data", "data_null", "partition_key_int", "arrival_nan", "arrival_huge",
        "arrival_string", "iterator_int", "iterator_empty"])
def test_a_get_records_page_not_shaped_like_kinesis_fails_the_shard_by_name(bad: Dict[str, Any], reliability) -> None:
    """These raised TypeError/KeyError on the emitting thread (a system_error, or a traceback) or were taken as
    the shard's end; now a transient_error naming stream, shard and call, before any record of the page."""
    page = dict({"NextShardIterator": "shardId-000000000000", "MillisBehindLatest": 0}, **bad)
    records, states, error, _ = sync(Scripted(lambda shard, n: page))
    assert records == []
    assert_endpoint_error(error, "shardId-000000000000", "GetRecords")
    reliability(cases=1)


CHILD = "shardId-000000000001"


@pytest.mark.parametrize("children, words", [
    ([{"ShardId": CHILD, "ParentShards": [CHILD]}], ("own parent",)),
    ([{"ShardId": "shardId-000000000000", "ParentShards": []}], ("own ChildShards",)),
    (["shardId-000000000001"], ("not an object",)),
    ({"ShardId": CHILD}, ("not a list",)),
    ([{"ParentShards": ["shardId-000000000000"]}], ("not shard ids",)),
    ([{"ShardId": 5, "ParentShards": ["shardId-000000000000"]}], ("not shard ids",)),
    ([{"ShardId": CHILD, "ParentShards": "shardId-000000000000"}], ("not a list",)),
    ([{"ShardId": CHILD, "ParentShards": ["shardId-000000000000"], "HashKeyRange": {"StartingHashKey": "1_0", "EndingHashKey": "9"}}], ("hash key",)),
], ids=["child_own_parent", "shard_its_own_child", "child_not_object", "children_not_list", "child_without_id", "child_id_int",
        "parents_string", "child_hash_key_underscore"])
def test_child_shards_that_are_not_kinesis_shards_fail_the_shard_by_name(children: Any, words: tuple, reliability) -> None:
    def answer(shard: str, n: int) -> Any:
        if shard == "shardId-000000000000":
            return {"Records": [rec(1)], "NextShardIterator": None, "MillisBehindLatest": 0, "ChildShards": children}
        return {"Records": [], "NextShardIterator": None, "MillisBehindLatest": 0}

    records, states, error, _ = sync(Scripted(answer))
    assert records == []  # the page is refused whole: its record goes out with the next sync, once
    assert_endpoint_error(error, "shardId-000000000000", "GetRecords", *words)
    reliability(cases=1)


def test_child_shards_that_close_a_lineage_cycle_fail_instead_of_never_being_read(reliability) -> None:
    """shard 1 (listed) names the new child 2 as its parent; 0's ChildShards give 2 with parent 1: 1 → 2 → 1."""
    listed = [{"ShardId": "shardId-000000000000"}, {"ShardId": "shardId-000000000001", "ParentShardId": "shardId-000000000002"}]

    def answer(shard: str, n: int) -> Any:
        children = [{"ShardId": "shardId-000000000002", "ParentShards": ["shardId-000000000000", "shardId-000000000001"]}]
        return {"Records": [], "NextShardIterator": None, "MillisBehindLatest": 0, "ChildShards": children if shard.endswith("0") else []}

    records, states, error, _ = sync(Scripted(answer, listed))
    assert_endpoint_error(error, "GetRecords", "cycle")
    reliability(cases=1)


@pytest.mark.parametrize("shards, words", [
    ([{"ShardId": "shardId-000000000000", "ParentShardId": "shardId-000000000000"}], ("own parent",)),
    ([{"ShardId": "shardId-000000000000", "ParentShardId": "shardId-000000000001"},
      {"ShardId": "shardId-000000000001", "ParentShardId": "shardId-000000000000"}], ("cycle",)),
    ([{"ShardId": "a", "AdjacentParentShardId": "c"}, {"ShardId": "b", "ParentShardId": "a"}, {"ShardId": "c", "ParentShardId": "b"}], ("cycle",)),
    ([{"ShardId": ""}], ("not shard ids",)),
    ([{"ShardId": "shardId-000000000000", "ParentShardId": 7}], ("not shard ids",)),
] + [([{"ShardId": "shardId-000000000000", "HashKeyRange": {"StartingHashKey": key, "EndingHashKey": "10"}}], ("hash key",))
     for key in ["1_0", " 1", "١", "１", "-5", "1e3", "+1", 5, str(2**128), ""]]
  + [([{"ShardId": "shardId-000000000000", "HashKeyRange": {"StartingHashKey": "10", "EndingHashKey": "9"}}], ("ends before",)),
     ([{"ShardId": "shardId-000000000000", "HashKeyRange": "0-9"}], ("HashKeyRange",))])
def test_list_shards_lineage_and_hash_keys_are_checked(shards: Any, words: tuple, reliability) -> None:
    """A shard that is its own ancestor was never ready, so a bounded read ended without reading it (silently);
    hash keys went through int(), which takes "1_0", " 1" and other scripts' digits."""
    records, states, error, _ = sync(Scripted(lambda shard, n: {"Records": [], "NextShardIterator": None, "MillisBehindLatest": 0}, shards))
    assert_endpoint_error(error, "ListShards", *words)
    reliability(cases=1)


def test_list_shards_with_duplicate_ids_reads_each_shard_once(reliability) -> None:
    shards = [{"ShardId": "shardId-000000000000"}] * 3
    client = Scripted(lambda shard, n: {"Records": [rec(n)] if n == 1 else [], "NextShardIterator": None, "MillisBehindLatest": 0}, shards)
    records, states, error, _ = sync(client)
    assert error is None and records == ["1"] and client.calls == {"shardId-000000000000": 1}
    reliability(cases=1)


@pytest.mark.parametrize("exc", ["base64", "timestamp"])
def test_a_body_botocore_cannot_parse_is_a_retried_endpoint_error_not_a_system_error(exc: str, reliability) -> None:
    import binascii

    class Garbled:
        def get_records(self, **kwargs: Any) -> Any:
            if exc == "base64":
                raise binascii.Error("Invalid base64-encoded string")
            raise ValueError('Invalid timestamp "garbage"')

    client = GuardedClient(Garbled(), CallGuard(call_seconds=5))
    with pytest.raises(Exception) as info:
        call_kinesis("GetRecords", client.get_records, {}, budget_seconds=0.3)
    from source_kinesis.errors import MalformedResponse, translate

    assert isinstance(info.value, MalformedResponse) and "GetRecords" in str(info.value)
    translated = translate(info.value, "GetRecords", "orders", "shardId-000000000000")
    assert translated.failure_type == FailureType.transient_error
    reliability(cases=1)


@pytest.mark.parametrize("status", [301, 302, 307, 400, 404, 405])
def test_an_http_status_without_a_kinesis_error_names_the_status_and_the_endpoint_url(status: int, reliability) -> None:
    from botocore.exceptions import ClientError
    from source_kinesis.errors import translate

    error = ClientError({"Error": {"Code": str(status), "Message": "<html>secret-looking page</html>"},
                         "ResponseMetadata": {"HTTPStatusCode": status}}, "DescribeStream")
    translated = translate(error, "DescribeStream", "orders")
    assert translated.failure_type == FailureType.transient_error  # was a system_error ("301: ")
    assert f"HTTP {status}" in translated.message and "endpoint URL" in translated.message and "'orders'" in translated.message
    reliability(cases=1)
