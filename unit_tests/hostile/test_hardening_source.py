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
from source_kinesis.discovery import KinesisStream, list_stream_names
from source_kinesis.lineage import list_shards
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
