"""ShardReader.poll() on a real boto3 Kinesis client with botocore's Stubber: retries, expiry, stop rules, stale checkpoints."""
from __future__ import annotations

import datetime as dt
import time
from typing import Any, Dict, List, Optional

import boto3
import pytest
from airbyte_cdk.models import FailureType
from botocore.config import Config
from botocore.stub import Stubber

from source_kinesis.shard_reader import ShardEnded, ShardGone, ShardReader, StartPosition, StopRuleMet
from source_kinesis.throttling import ShardBudget

STREAM = "orders"
SHARD = "shardId-000000000007"
REF = {"StreamName": STREAM}
SYNC_START = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
BEFORE = SYNC_START - dt.timedelta(minutes=5)
AFTER = SYNC_START + dt.timedelta(seconds=5)
LIMIT = 100


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def client():
    kinesis = boto3.client(
        "kinesis",
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret-example",
        config=Config(retries={"total_max_attempts": 1}),
    )
    with Stubber(kinesis) as stubber:
        kinesis.stubber = stubber
        yield kinesis
        stubber.assert_no_pending_responses()


def make_reader(client, start: StartPosition = StartPosition("TRIM_HORIZON"), *, follow: bool = False, stale_policy: str = "restart",
                retry_budget_seconds: float = 60.0, sleep=lambda s: None, clock: Optional[FakeClock] = None) -> ShardReader:
    clock = clock or FakeClock()
    return ShardReader(
        client,
        STREAM,
        REF,
        SHARD,
        start,
        budget=ShardBudget(5, 2, clock=clock),
        records_per_call=LIMIT,
        retry_budget_seconds=retry_budget_seconds,
        follow=follow,
        sync_started_at=SYNC_START,
        stale_policy=stale_policy,
        sleep=sleep,
        clock=clock,
    )


def rec(seq: int, arrived: dt.datetime = BEFORE, data: bytes = b'{"a": 1}') -> Dict[str, Any]:
    return {"SequenceNumber": str(seq), "ApproximateArrivalTimestamp": arrived, "Data": data, "PartitionKey": f"pk-{seq}"}


def expect_iterator(client, iterator: str = "it-1", kind: str = "TRIM_HORIZON", **extra: Any) -> None:
    params = dict(REF, ShardId=SHARD, ShardIteratorType=kind, **extra)
    client.stubber.add_response("get_shard_iterator", {"ShardIterator": iterator}, params)


def expect_records(client, iterator: str, records: List[Dict[str, Any]], next_iterator: Optional[str] = "next", behind: int = 0,
                   child_shards: Optional[List[Dict[str, Any]]] = None) -> None:
    response: Dict[str, Any] = {"Records": records, "MillisBehindLatest": behind}
    if next_iterator:
        response["NextShardIterator"] = next_iterator
    if child_shards is not None:
        response["ChildShards"] = child_shards
    client.stubber.add_response("get_records", response, {"ShardIterator": iterator, "Limit": LIMIT})


def expect_error(client, method: str, code: str, status: int = 400, params: Optional[Dict[str, Any]] = None) -> None:
    client.stubber.add_client_error(method, service_error_code=code, service_message=f"{code} happened", http_status_code=status,
                                    expected_params=params)


def seqs(page) -> List[str]:
    return [r["SequenceNumber"] for r in page.records]


# ------------------------------------------------------------------------------------------------- retries
@pytest.mark.parametrize("throttles", [1, 3, 7])
def test_throttled_get_records_then_success(client, throttles: int) -> None:
    expect_iterator(client)
    for _ in range(throttles):
        expect_error(client, "get_records", "ProvisionedThroughputExceededException", params={"ShardIterator": "it-1", "Limit": LIMIT})
    expect_records(client, "it-1", [rec(1), rec(2)], behind=10)
    reader = make_reader(client)
    page = reader.poll()
    assert page.error is None
    assert seqs(page) == ["1", "2"]
    assert reader.stats.retry.throttles == throttles
    assert reader.stats.retry.retries == throttles
    assert reader.stats.calls == 1 and reader.stats.records == 2


@pytest.mark.parametrize(
    "code, status, throttle",
    [
        ("LimitExceededException", 400, True),
        ("KMSThrottlingException", 400, True),
        ("InternalFailure", 500, False),
        ("ServiceUnavailable", 503, False),
        ("BadGateway", 502, False),
    ],
)
def test_other_retryable_errors(client, code: str, status: int, throttle: bool) -> None:
    expect_iterator(client)
    expect_error(client, "get_records", code, status)
    expect_error(client, "get_records", code, status)
    expect_records(client, "it-1", [rec(1)], behind=10)
    reader = make_reader(client)
    page = reader.poll()
    assert page.error is None and seqs(page) == ["1"]
    assert reader.stats.retry.retries == 2
    assert reader.stats.retry.throttles == (2 if throttle else 0)


def test_throttled_get_shard_iterator_is_retried(client) -> None:
    expect_error(client, "get_shard_iterator", "LimitExceededException")
    expect_iterator(client)
    expect_records(client, "it-1", [rec(1)], behind=10)
    reader = make_reader(client)
    page = reader.poll()
    assert page.error is None and seqs(page) == ["1"]
    assert reader.stats.retry.throttles == 1 and reader.stats.retry.retries == 1


def test_retry_budget_exhausted_is_transient_error_naming_shard(client) -> None:
    expect_iterator(client)
    for _ in range(60):
        expect_error(client, "get_records", "ProvisionedThroughputExceededException")
    reader = make_reader(client, retry_budget_seconds=0.05, sleep=lambda s: time.sleep(0.02))
    page = reader.poll()
    assert page.error is not None
    assert page.error.failure_type == FailureType.transient_error
    assert SHARD in page.error.message and STREAM in page.error.message
    assert "kinesis:GetRecords" in page.error.message and "ProvisionedThroughputExceededException" in page.error.message
    assert page.final and page.records == []
    assert reader.stats.retry.throttles == reader.stats.retry.retries + 1 >= 2
    # the unused error responses stay queued; clear them for the fixture's pending check
    client.stubber._queue.clear()


def test_access_denied_on_get_records_is_config_error(client) -> None:
    expect_iterator(client)
    expect_error(client, "get_records", "AccessDeniedException")
    reader = make_reader(client)
    page = reader.poll()
    assert page.error.failure_type == FailureType.config_error
    assert "kinesis:GetRecords" in page.error.message and STREAM in page.error.message and SHARD in page.error.message
    assert reader.stats.retry.retries == 0


def test_access_denied_on_get_shard_iterator_names_that_action(client) -> None:
    expect_error(client, "get_shard_iterator", "AccessDeniedException")
    page = make_reader(client).poll()
    assert page.error.failure_type == FailureType.config_error
    assert "kinesis:GetShardIterator" in page.error.message


# -------------------------------------------------------------------------------------------- expiry
def test_expired_iterator_reacquires_after_last_fetched_record(client) -> None:
    expect_iterator(client, "it-1")
    expect_records(client, "it-1", [rec(101), rec(102)], next_iterator="it-2", behind=50)
    expect_error(client, "get_records", "ExpiredIteratorException", params={"ShardIterator": "it-2", "Limit": LIMIT})
    expect_iterator(client, "it-3", "AFTER_SEQUENCE_NUMBER", StartingSequenceNumber="102")
    expect_records(client, "it-3", [rec(103), rec(104)], next_iterator="it-4", behind=0)
    reader = make_reader(client)
    first, second = reader.poll(), reader.poll()
    assert first.error is None and second.error is None
    assert seqs(first) + seqs(second) == ["101", "102", "103", "104"]
    assert reader.stats.iterator_refreshes == 1
    assert reader.stats.calls == 2 and reader.stats.records == 4


def test_expired_iterator_before_any_record_restarts_at_the_start_position(client) -> None:
    expect_iterator(client, "it-1", "AT_SEQUENCE_NUMBER", StartingSequenceNumber="55")
    expect_error(client, "get_records", "ExpiredIteratorException")
    expect_iterator(client, "it-2", "AT_SEQUENCE_NUMBER", StartingSequenceNumber="55")
    expect_records(client, "it-2", [rec(55), rec(56)], behind=5)
    reader = make_reader(client, StartPosition("AT_SEQUENCE_NUMBER", sequence_number="55"))
    page = reader.poll()
    assert seqs(page) == ["55", "56"] and reader.stats.iterator_refreshes == 1


def test_expired_iterator_then_stale_position_with_policy_fail_is_config_error(client) -> None:
    expect_iterator(client, "it-1")
    expect_records(client, "it-1", [rec(7)], next_iterator="it-2", behind=50)
    expect_error(client, "get_records", "ExpiredIteratorException")
    expect_error(client, "get_shard_iterator", "InvalidArgumentException")
    reader = make_reader(client, stale_policy="fail")
    reader.poll()
    page = reader.poll()
    assert page.error is not None and page.error.failure_type == FailureType.config_error
    assert SHARD in page.error.message and "7" in page.error.message


def test_expired_iterator_then_stale_position_with_policy_restart_warns(client) -> None:
    expect_iterator(client, "it-1")
    expect_records(client, "it-1", [rec(7)], next_iterator="it-2", behind=50)
    expect_error(client, "get_records", "ExpiredIteratorException")
    expect_error(client, "get_shard_iterator", "InvalidArgumentException")
    expect_iterator(client, "it-th", "TRIM_HORIZON")
    expect_records(client, "it-th", [rec(20)], next_iterator="it-4", behind=0)
    reader = make_reader(client, stale_policy="restart")
    reader.poll()
    page = reader.poll()
    assert page.error is None and seqs(page) == ["20"]
    assert page.stale_restart and SHARD in page.stale_restart and "7" in page.stale_restart


# ------------------------------------------------------------------------------------------ stop rules
def test_empty_page_caught_up_stops(client) -> None:
    expect_iterator(client)
    expect_records(client, "it-1", [], behind=0)
    page = make_reader(client).poll()
    assert isinstance(page, StopRuleMet) and not isinstance(page, ShardEnded) and page.reason == "caught up"
    assert page.final


def test_empty_page_still_behind_keeps_reading(client) -> None:
    expect_iterator(client)
    expect_records(client, "it-1", [], next_iterator="it-2", behind=120_000)
    expect_records(client, "it-2", [rec(9)], next_iterator="it-3", behind=0)
    reader = make_reader(client)
    page = reader.poll()
    assert not isinstance(page, StopRuleMet) and not page.final and page.millis_behind == 120_000
    assert reader.stats.empty_calls == 1
    second = reader.poll()
    assert seqs(second) == ["9"] and not isinstance(second, StopRuleMet)  # records from before the sync: not a stop yet


def test_page_of_records_arrived_after_sync_start_stops(client) -> None:
    expect_iterator(client)
    expect_records(client, "it-1", [rec(1, AFTER), rec(2, AFTER)], behind=10)
    page = make_reader(client).poll()
    assert isinstance(page, StopRuleMet) and seqs(page) == ["1", "2"]  # the records are still delivered
    assert "after the sync started" in page.reason


def test_mixed_page_before_and_after_sync_start_continues(client) -> None:
    expect_iterator(client)
    expect_records(client, "it-1", [rec(1, BEFORE), rec(2, AFTER)], behind=10)
    page = make_reader(client).poll()
    assert not isinstance(page, StopRuleMet) and seqs(page) == ["1", "2"]


def test_no_next_iterator_means_ended_with_children(client) -> None:
    children = [
        {"ShardId": "shardId-000000000008", "ParentShards": [SHARD], "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "100"}},
        {"ShardId": "shardId-000000000009", "ParentShards": [SHARD], "HashKeyRange": {"StartingHashKey": "101", "EndingHashKey": "200"}},
    ]
    expect_iterator(client)
    expect_records(client, "it-1", [rec(5)], next_iterator=None, behind=0, child_shards=children)
    page = make_reader(client).poll()
    assert isinstance(page, ShardEnded) and page.final and seqs(page) == ["5"]
    assert [c["ShardId"] for c in page.child_shards] == ["shardId-000000000008", "shardId-000000000009"]
    assert page.child_shards[0]["ParentShards"] == [SHARD]


@pytest.mark.parametrize("records, behind", [([], 0), ([rec(1, AFTER)], 0), ([rec(1, BEFORE)], 0)])
def test_follow_mode_only_stops_at_shard_end(client, records, behind) -> None:
    expect_iterator(client)
    expect_records(client, "it-1", records, next_iterator="it-2", behind=behind)
    expect_records(client, "it-2", [], next_iterator=None, behind=0, child_shards=[])
    reader = make_reader(client, follow=True)
    page = reader.poll()
    assert not isinstance(page, StopRuleMet) and not page.final
    last = reader.poll()
    assert isinstance(last, ShardEnded) and last.final


def test_budget_accounts_for_bytes_of_the_page(client) -> None:
    clock = FakeClock(500.0)
    big = b"x" * 1_000_000
    expect_iterator(client)
    expect_records(client, "it-1", [rec(1, data=big), rec(2, data=big), rec(3, data=big)], behind=10)
    reader = make_reader(client, clock=clock)
    assert reader.next_due() == 0.0
    reader.poll()
    # 3 MB (+ partition keys) at 2 MB/s: about 1.5 s, more than the 0.2 s call spacing of 5 calls/s
    assert reader.next_due() == pytest.approx(500.0 + (3_000_000 + 12) / 2_000_000)
    assert reader.stats.bytes == 3_000_000 + 12


# ----------------------------------------------------------------------------------- stale checkpoints
def test_stale_checkpoint_restart_at_trim_horizon(client) -> None:
    expect_error(client, "get_shard_iterator", "InvalidArgumentException",
                 params=dict(REF, ShardId=SHARD, ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber="4242"))
    expect_iterator(client, "it-th", "TRIM_HORIZON")
    expect_records(client, "it-th", [rec(5000)], behind=10)
    reader = make_reader(client, StartPosition("AT_SEQUENCE_NUMBER", sequence_number="4242"), stale_policy="restart")
    page = reader.poll()
    assert page.error is None and seqs(page) == ["5000"]
    assert page.stale_restart is not None
    assert SHARD in page.stale_restart and "4242" in page.stale_restart and STREAM in page.stale_restart
    assert "TRIM_HORIZON" in page.stale_restart


def test_stale_checkpoint_fail_is_config_error(client) -> None:
    expect_error(client, "get_shard_iterator", "InvalidArgumentException")
    reader = make_reader(client, StartPosition("AT_SEQUENCE_NUMBER", sequence_number="4242"), stale_policy="fail")
    page = reader.poll()
    assert page.error is not None and page.error.failure_type == FailureType.config_error
    assert SHARD in page.error.message and "4242" in page.error.message and "stale_checkpoint" in page.error.message
    assert page.records == [] and page.final


def test_invalid_argument_on_trim_horizon_is_not_a_stale_checkpoint(client) -> None:
    expect_error(client, "get_shard_iterator", "InvalidArgumentException")
    page = make_reader(client).poll()
    assert page.error is not None and page.error.failure_type == FailureType.system_error
    assert page.stale_restart is None


def test_trimmed_shard_is_gone(client) -> None:
    expect_error(client, "get_shard_iterator", "ResourceNotFoundException")
    page = make_reader(client).poll()
    assert isinstance(page, ShardGone) and page.final and page.error is None


def test_start_positions_reach_get_shard_iterator(client) -> None:
    ts = dt.datetime(2026, 1, 1, 11, 0, tzinfo=dt.timezone.utc)
    expect_iterator(client, "it-1", "AT_TIMESTAMP", Timestamp=ts)
    expect_records(client, "it-1", [], behind=0)
    make_reader(client, StartPosition("AT_TIMESTAMP", timestamp=ts)).poll()
    assert StartPosition("AT_TIMESTAMP", timestamp=ts).describe() == "AT_TIMESTAMP 2026-01-01T11:00:00+00:00"
    assert StartPosition("AT_SEQUENCE_NUMBER", sequence_number="9").describe() == "AT_SEQUENCE_NUMBER 9"
