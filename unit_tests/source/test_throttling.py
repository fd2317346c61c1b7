"""ShardBudget spacing (calls/s and MB/s) with a fake clock, and the single tenacity retry policy."""
from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from source_kinesis.throttling import RetryCounters, ShardBudget, retrying


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetRecords")


def test_first_call_is_due_immediately() -> None:
    assert ShardBudget(2, 1, clock=FakeClock()).next_call_at() == 0.0


@pytest.mark.parametrize("calls_per_second, spacing", [(2, 0.5), (5, 0.2), (0.1, 10.0), (1, 1.0)])
def test_calls_per_second_spacing(calls_per_second: float, spacing: float) -> None:
    budget = ShardBudget(calls_per_second, 2, clock=FakeClock())
    budget.record_call(started_at=100.0, response_bytes=0)
    assert budget.next_call_at() == pytest.approx(100.0 + spacing)
    budget.record_call(started_at=100.0 + spacing, response_bytes=10)
    assert budget.next_call_at() == pytest.approx(100.0 + 2 * spacing)


@pytest.mark.parametrize(
    "megabytes_per_second, response_bytes, spacing",
    [
        (1, 3_000_000, 3.0),  # 3 MB at 1 MB/s: 3 s before the next call, more than the 0.5 s call spacing
        (2, 3_000_000, 1.5),
        (0.5, 100_000, 0.5),  # 0.2 s of bytes budget < 0.5 s of call spacing: the call spacing wins
        (1, 500_000, 0.5),
        (1, 800_000, 0.8),
    ],
)
def test_megabytes_per_second_spacing(megabytes_per_second: float, response_bytes: int, spacing: float) -> None:
    budget = ShardBudget(2, megabytes_per_second, clock=FakeClock())
    budget.record_call(started_at=50.0, response_bytes=response_bytes)
    assert budget.next_call_at() == pytest.approx(50.0 + spacing)


def test_throughput_over_many_calls_respects_budget() -> None:
    budget = ShardBudget(5, 1, clock=FakeClock(0.0))
    t = 0.0
    total = 0
    for size in [900_000, 10, 10, 2_000_000, 0, 400_000] * 5:
        t = max(t, budget.next_call_at())
        budget.record_call(t, size)
        total += size
    # bytes fetched before the last call's start never exceed the MB/s budget over the elapsed time
    assert total - 400_000 <= 1_000_000 * t + 1e-6
    assert 30 - 1 <= 5 * t + 1e-6


def run_policy(errors, budget_seconds: float = 60.0):
    counters = RetryCounters()
    sleeps = []
    attempts = iter(errors)

    def call():
        error = next(attempts, None)
        if error is not None:
            raise error
        return "ok"

    policy = retrying(budget_seconds, counters, sleep=sleeps.append)
    return policy, call, counters, sleeps


@pytest.mark.parametrize(
    "code, status, is_throttle",
    [
        ("ProvisionedThroughputExceededException", 400, True),
        ("LimitExceededException", 400, True),
        ("KMSThrottlingException", 400, True),
        ("ThrottlingException", 400, True),
        ("InternalFailure", 500, False),
        ("ServiceUnavailable", 503, False),
        ("SomethingNew", 502, False),
    ],
)
def test_retryable_errors_are_retried_and_counted(code: str, status: int, is_throttle: bool) -> None:
    policy, call, counters, sleeps = run_policy([client_error(code, status)] * 3)
    assert policy(call) == "ok"
    assert counters.retries == 3 == len(sleeps)
    assert counters.throttles == (3 if is_throttle else 0)
    assert all(0 <= s <= 10.0 for s in sleeps)


@pytest.mark.parametrize("code", ["AccessDeniedException", "InvalidArgumentException", "ResourceNotFoundException", "ExpiredIteratorException"])
def test_non_retryable_errors_fail_at_once(code: str) -> None:
    policy, call, counters, sleeps = run_policy([client_error(code)])
    with pytest.raises(ClientError) as info:
        policy(call)
    assert info.value.response["Error"]["Code"] == code
    assert (counters.retries, counters.throttles, sleeps) == (0, 0, [])


def test_connection_errors_are_retried() -> None:
    policy, call, counters, _ = run_policy([ConnectionResetError("reset"), TimeoutError("slow")])
    assert policy(call) == "ok"
    assert (counters.retries, counters.throttles) == (2, 0)


def test_backoff_is_capped() -> None:
    policy, call, counters, sleeps = run_policy([client_error("ProvisionedThroughputExceededException")] * 40)
    assert policy(call) == "ok"
    assert max(sleeps) <= 10.0
    assert counters.throttles == 40


def test_budget_exhausted_reraises_last_error_and_counts_last_throttle() -> None:
    import time

    counters = RetryCounters()

    def call():
        raise client_error("ProvisionedThroughputExceededException")

    policy = retrying(0.05, counters, sleep=lambda s: time.sleep(0.02))
    with pytest.raises(ClientError):
        policy(call)
    assert counters.throttles >= 2
    assert counters.throttles == counters.retries + 1  # the last throttle is counted, but no backoff follows it


def test_an_idle_shard_is_polled_at_most_every_idle_interval_until_records_come() -> None:
    """Empty pages at the tip: the first keeps the call spacing (a quiet moment under load), from the second on the
    shard is polled every IDLE_INTERVAL_SECONDS; a page with records (or a non-idle empty one, behind the tip) brings
    the full budget back at once."""
    from source_kinesis.throttling import IDLE_AFTER_EMPTY_CALLS, IDLE_INTERVAL_SECONDS

    assert IDLE_AFTER_EMPTY_CALLS == 2 and IDLE_INTERVAL_SECONDS == 1.0
    budget = ShardBudget(5, 2, clock=FakeClock())
    budget.record_call(10.0, 0, idle=True)
    assert budget.next_call_at() == pytest.approx(10.2)
    budget.record_call(10.2, 0, idle=True)
    assert budget.next_call_at() == pytest.approx(11.2)
    budget.record_call(11.2, 0, idle=True)
    assert budget.next_call_at() == pytest.approx(12.2)
    budget.record_call(12.2, 500, idle=False)  # records: the full budget again
    assert budget.next_call_at() == pytest.approx(12.4)
    budget.record_call(12.4, 0, idle=True)
    assert budget.next_call_at() == pytest.approx(12.6)  # one empty page is not idleness yet
    budget.record_call(12.6, 0, idle=False)  # empty but behind the tip (a gap in the shard): still reading
    budget.record_call(12.8, 0, idle=True)
    assert budget.next_call_at() == pytest.approx(13.0)
    slow = ShardBudget(0.5, 2, clock=FakeClock())  # a budget slower than the idle interval keeps its spacing
    slow.record_call(0.0, 0, idle=True)
    slow.record_call(2.0, 0, idle=True)
    assert slow.next_call_at() == pytest.approx(4.0)


def test_a_following_reader_marks_empty_pages_at_the_tip_as_idle() -> None:
    """The reader hands the budget the idle signal: empty at the tip (MillisBehindLatest 0) backs off, empty but
    behind does not, records do not."""
    import datetime as dt

    from source_kinesis.shard_reader import ShardReader, StartPosition

    responses = [([], 0), ([], 0), ([], 0), ([], 5000), ([{"n": 1}], 0)]
    clock = FakeClock(100.0)

    class Tip:
        def get_shard_iterator(self, **kwargs):
            return {"ShardIterator": "it-0"}

        def get_records(self, ShardIterator, Limit):
            records, behind = responses.pop(0)
            out = [{"SequenceNumber": str(10 + len(responses)), "Data": b"{}", "PartitionKey": "k",
                    "ApproximateArrivalTimestamp": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)} for _ in records]
            return {"Records": out, "NextShardIterator": "it-1", "MillisBehindLatest": behind}

    reader = ShardReader(Tip(), "s", {"StreamName": "s"}, "shard-0", StartPosition("TRIM_HORIZON"),
                         budget=ShardBudget(2, 2, clock=clock), records_per_call=10, retry_budget_seconds=5,
                         follow=True, sync_started_at=dt.datetime.now(dt.timezone.utc), stale_policy="restart",
                         clock=clock)
    gaps = []
    for _ in range(5):
        clock.now = max(clock.now, reader.next_due())
        started = clock.now
        page = reader.poll()
        assert page.error is None, page.error
        gaps.append(round(reader.next_due() - started, 3))
    assert gaps == [0.5, 1.0, 1.0, 0.5, 0.5]
