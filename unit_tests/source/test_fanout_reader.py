"""The enhanced fan-out reader against a scripted SubscribeToShard: where every subscription starts (first position,
renewal after the 5 minutes, after a drop, after ResourceInUse), the checks polling makes, the stop rules, the
shard's end, a stale checkpoint and a consumer deleted mid-sync. The real wire (event-stream framing, HTTP/2, the
replay server's subscriptions, faults) is integration_tests/test_source_fanout.py's."""
from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any, Dict, List, Optional

import pytest
from botocore.exceptions import ClientError, ResponseStreamingError

from source_kinesis.fanout_reader import FanOutReader
from source_kinesis.shard_reader import Page, ReadFailed, ShardEnded, ShardGone, StartPosition, StopRuleMet

ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/orders/consumer/c:1"
BASE = 49_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000


def seq(n: int) -> str:
    return str(BASE + n)


def record(n: int, arrival: float = 1_000.0) -> Dict[str, Any]:
    return {"SequenceNumber": seq(n), "Data": b"{}", "PartitionKey": f"k{n}", "ApproximateArrivalTimestamp": arrival}


def event(numbers: List[int], *, behind: int = 5, continuation: Optional[int] = None, children: Any = None) -> Dict[str, Any]:
    payload: Dict[str, Any] = {"Records": [record(n) for n in numbers], "MillisBehindLatest": behind}
    if children is not None:
        payload["ChildShards"] = children
    else:
        payload["ContinuationSequenceNumber"] = seq(continuation if continuation is not None else (numbers[-1] if numbers else 0))
    return {"SubscribeToShardEvent": payload}


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "SubscribeToShard")


class _Stream:
    """An EventStream: its events, then a clean end or an error (a dropped connection, an exception event)."""

    def __init__(self, events: List[Dict[str, Any]], error: Optional[BaseException] = None) -> None:
        self.events, self.error, self.closed = events, error, False

    def __iter__(self):
        yield from self.events
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.closed = True


class ScriptedClient:
    """``subscribe_to_shard`` answers from a script (a _Stream or an exception per call) and records each call."""

    def __init__(self, script: List[Any], consumer_exists: bool = True) -> None:
        self.script = list(script)
        self.calls: List[Dict[str, Any]] = []
        self.consumer_exists = consumer_exists

    def subscribe_to_shard(self, **kwargs: Any) -> Dict[str, Any]:
        self.calls.append(kwargs["StartingPosition"])
        if not self.script:
            time.sleep(0.05)
            return {"EventStream": _Stream([])}
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return {"EventStream": step}

    def describe_stream_consumer(self, **kwargs: Any) -> Dict[str, Any]:
        if not self.consumer_exists:
            raise client_error("ResourceNotFoundException")
        return {"ConsumerDescription": {"ConsumerARN": ARN, "ConsumerStatus": "ACTIVE"}}


def reader(client: ScriptedClient, start: StartPosition = StartPosition("TRIM_HORIZON"), *, follow: bool = True, **kw: Any) -> FanOutReader:
    return FanOutReader(
        client, "orders", ARN, "shardId-000000000000", start,
        retry_budget_seconds=kw.pop("budget", 30.0), follow=follow,
        sync_started_at=kw.pop("started", dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)),
        stale_policy=kw.pop("stale", "restart"), sleep=lambda s: None,
    )


def pages(r: FanOutReader, until: int, seconds: float = 5.0) -> List[Page]:
    """Poll (as the pool would, a poll never waits) until ``until`` records arrived or a final page, for at most
    ``seconds``."""
    out: List[Page] = []
    got = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        page = r.poll()
        if page.records or page.final or page.stale_restart:
            out.append(page)
        got += len(page.records)
        if page.final or got >= until:
            break
        if not page.records:
            time.sleep(0.005)
    return out or [Page(r)]


def numbers(ps: List[Page]) -> List[int]:
    return [int(rec["SequenceNumber"]) - BASE for p in ps for rec in p.records]


def test_a_subscription_ending_after_its_time_is_renewed_after_the_last_event_handed_over():
    client = ScriptedClient([_Stream([event([1, 2]), event([3], continuation=3)]), _Stream([event([4, 5])])])
    r = reader(client)
    got = pages(r, 5)
    assert numbers(got) == [1, 2, 3, 4, 5]
    assert client.calls[0] == {"Type": "TRIM_HORIZON"}
    assert client.calls[1] == {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": seq(3)}
    assert r.stats.subscriptions >= 2 and r.stats.renewals >= 1 and r.stats.drops == 0
    r.close()


def test_an_empty_event_moves_the_continuation_and_a_drop_resubscribes_after_it():
    dropped = ResponseStreamingError(error="connection reset")
    client = ScriptedClient([_Stream([event([1]), event([], continuation=7)], error=dropped), _Stream([event([8])])])
    r = reader(client)
    assert numbers(pages(r, 2)) == [1, 8]
    assert client.calls[1] == {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": seq(7)}
    assert r.stats.drops == 1 and r.stats.retry.retries >= 1
    r.close()


def test_before_any_record_a_renewal_repeats_the_first_position_and_latest_becomes_at_timestamp():
    client = ScriptedClient([_Stream([event([], continuation=0)]), _Stream([event([1])])])
    r = reader(client, StartPosition("LATEST"))
    assert numbers(pages(r, 1)) == [1]
    assert client.calls[0] == {"Type": "LATEST"}
    assert client.calls[1]["Type"] == "AT_TIMESTAMP" and isinstance(client.calls[1]["Timestamp"], dt.datetime)
    r.close()


def test_resource_in_use_is_retried_by_the_backoff_layer_and_counted():
    client = ScriptedClient([client_error("ResourceInUseException"), client_error("LimitExceededException"), _Stream([event([1])])])
    r = reader(client)
    assert numbers(pages(r, 1)) == [1]
    assert client.calls[:3] == [{"Type": "TRIM_HORIZON"}] * 3 and r.stats.retry.retries == 2 and r.stats.retry.throttles == 1
    r.close()


def test_a_resumed_shard_subscribes_at_its_checkpoint_and_a_repeat_fails_the_shard():
    client = ScriptedClient([_Stream([event([5, 6]), event([6])])])
    r = reader(client, StartPosition("AT_SEQUENCE_NUMBER", sequence_number=seq(5)))
    got = pages(r, 10)
    assert client.calls[0] == {"Type": "AT_SEQUENCE_NUMBER", "SequenceNumber": seq(5)}
    assert numbers(got) == [5, 6]
    assert isinstance(got[-1], ReadFailed) and "repeats or reorders" in got[-1].error.message
    assert "SubscribeToShard" in got[-1].error.message and "shardId-000000000000" in got[-1].error.message


def test_the_last_event_of_a_closed_shard_ends_it_with_its_children():
    children = [{"ShardId": "shardId-000000000002", "ParentShards": ["shardId-000000000000"], "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "10"}}]
    client = ScriptedClient([_Stream([event([1]), event([2], children=children)])])
    got = pages(reader(client), 10)
    assert isinstance(got[-1], ShardEnded) and [c.shard_id for c in got[-1].children] == ["shardId-000000000002"]
    assert numbers(got) == [1, 2]


def test_bounded_stop_rules_are_pollings():
    client = ScriptedClient([_Stream([event([1]), event([], behind=0)])])
    got = pages(reader(client, follow=False), 10)
    assert isinstance(got[-1], StopRuleMet) and got[-1].reason == "caught up" and numbers(got) == [1]
    late = ScriptedClient([_Stream([event([1])])])
    got = pages(reader(late, follow=False, started=dt.datetime(1970, 1, 1, 0, 10, tzinfo=dt.timezone.utc)), 10)
    assert isinstance(got[-1], StopRuleMet) and "after the sync started" in got[-1].reason


def test_a_stale_checkpoint_restarts_at_trim_horizon_with_a_warning_or_fails_under_fail():
    client = ScriptedClient([client_error("InvalidArgumentException"), _Stream([event([1])])])
    got = pages(reader(client, StartPosition("AT_SEQUENCE_NUMBER", sequence_number=seq(3))), 1)
    assert client.calls[1] == {"Type": "TRIM_HORIZON"}
    assert got[-1].stale_restart and "no longer retained" in got[-1].stale_restart and numbers(got) == [1]
    strict = ScriptedClient([client_error("InvalidArgumentException")])
    got = pages(reader(strict, StartPosition("AT_SEQUENCE_NUMBER", sequence_number=seq(3)), stale="fail"), 1)
    assert isinstance(got[-1], ReadFailed) and "Stale checkpoint" in got[-1].error.message


def test_not_found_is_a_gone_shard_unless_the_consumer_is_gone():
    got = pages(reader(ScriptedClient([client_error("ResourceNotFoundException")])), 1)
    assert isinstance(got[-1], ShardGone)
    got = pages(reader(ScriptedClient([client_error("ResourceNotFoundException")], consumer_exists=False)), 1)
    assert isinstance(got[-1], ReadFailed) and "no longer exists" in got[-1].error.message and ARN in got[-1].error.message


def test_not_found_mid_subscription_ends_the_shard_after_the_records_already_handed_over():
    gone = client_error("ResourceNotFoundException")
    got = pages(reader(ScriptedClient([_Stream([event([1, 2])], error=gone)])), 10)
    assert numbers(got) == [1, 2] and isinstance(got[-1], ShardGone)


def test_access_denied_names_the_action_and_the_consumer_resource():
    got = pages(reader(ScriptedClient([client_error("AccessDeniedException")])), 1)
    assert isinstance(got[-1], ReadFailed)
    message = got[-1].error.message
    assert "kinesis:SubscribeToShard" in message and "stream/orders/consumer/*" in message


def test_an_event_without_continuation_or_children_fails_the_shard():
    bad = {"SubscribeToShardEvent": {"Records": [], "MillisBehindLatest": 0}}
    got = pages(reader(ScriptedClient([_Stream([bad])])), 1)
    assert isinstance(got[-1], ReadFailed) and "ContinuationSequenceNumber" in got[-1].error.message


def test_drops_without_any_event_for_a_whole_budget_fail_the_shard():
    dropped = ResponseStreamingError(error="reset")
    client = ScriptedClient([_Stream([], error=dropped) for _ in range(200)])
    r = reader(client, budget=0.2)
    deadline = time.monotonic() + 10
    page: Page = Page(r)
    while time.monotonic() < deadline and not page.final:
        page = r.poll()
    assert isinstance(page, ReadFailed) and "kept dropping" in page.error.message


@pytest.mark.parametrize("mode", ["follow", "bounded"])
def test_close_ends_the_subscription_thread(mode):
    client = ScriptedClient([_Stream([event([n]) for n in range(1, 50)])])
    r = reader(client, follow=mode == "follow")
    r.poll()
    r.close()
    r._thread.join(timeout=5)  # noqa: SLF001 - the test owns the reader
    assert not r._thread.is_alive()  # noqa: SLF001


# -- regressions found by review ---------------------------------------------------------------------------------
def test_a_consumer_check_that_fails_after_not_found_fails_the_shard_instead_of_calling_it_gone():
    class Denied(ScriptedClient):
        def describe_stream_consumer(self, **kwargs: Any) -> Dict[str, Any]:
            raise client_error("AccessDeniedException")

    got = pages(reader(Denied([client_error("ResourceNotFoundException")])), 1)
    assert isinstance(got[-1], ReadFailed) and "kinesis:DescribeStreamConsumer" in got[-1].error.message


def test_a_silent_subscription_is_ended_and_the_shard_fails_once_nothing_was_heard_for_the_bound(monkeypatch):
    monkeypatch.setattr("source_kinesis.fanout_reader.SILENT_SUBSCRIPTION_SECONDS", 0.2)
    release = threading.Event()

    class Silent(_Stream):
        def __iter__(self):
            release.wait(30)  # a subscription that neither sends nor fails (until closed)
            raise ResponseStreamingError(error="closed")
            yield  # pragma: no cover

        def close(self) -> None:
            release.set()

    client = ScriptedClient([Silent([]) for _ in range(50)])
    r = reader(client, follow=False, budget=0.3)
    deadline, page = time.monotonic() + 10, Page(r)
    while time.monotonic() < deadline and not page.final:
        page = r.poll()
        time.sleep(0.02)
    assert isinstance(page, ReadFailed) and "nothing arrived" in page.error.message or "kept dropping" in page.error.message
    assert len(client.calls) >= 2  # the silent subscription was ended and renewed before the shard failed


def test_subscriptions_that_end_at_once_without_an_event_are_renewed_after_a_backoff():
    class Instant(ScriptedClient):
        def subscribe_to_shard(self, **kwargs: Any) -> Dict[str, Any]:
            self.calls.append(kwargs["StartingPosition"])
            return {"EventStream": _Stream([])}

    client = Instant([])
    r = FanOutReader(client, "orders", ARN, "shardId-000000000000", StartPosition("TRIM_HORIZON"), retry_budget_seconds=30,
                     follow=True, sync_started_at=dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc), stale_policy="restart")
    r.poll()
    time.sleep(1.0)
    r.close()
    assert len(client.calls) < 40, f"{len(client.calls)} subscriptions in 1 s: no backoff between empty renewals"


def test_idle_fan_out_shards_do_not_hold_the_pools_workers_from_a_busy_one():
    import queue as queue_module

    from source_kinesis.shard_pool import ShardPool

    busy = reader(ScriptedClient([_Stream([event([n]) for n in range(1, 200)])]))
    idle = [reader(ScriptedClient([])) for _ in range(8)]
    out: "queue_module.Queue[Page]" = queue_module.Queue(maxsize=64)
    pool = ShardPool(2, out)
    for r in [busy] + idle:
        pool.submit(r)
    got, deadline = 0, time.monotonic() + 10
    while got < 199 and time.monotonic() < deadline:
        try:
            page = out.get(timeout=0.1)
        except queue_module.Empty:
            continue
        if page.reader is busy:
            got += len(page.records)
    pool.stop()
    for r in [busy] + idle:
        r.close()
    assert got == 199


def test_resource_in_use_for_the_whole_budget_is_a_transient_error_naming_the_consumer():
    got = pages(reader(ScriptedClient([client_error("ResourceInUseException")] * 100_000), budget=0.3), 1)
    error = got[-1].error
    assert isinstance(got[-1], ReadFailed) and error.failure_type.value == "transient_error"
    assert ARN in error.message and "own consumer" in error.message


def test_a_renewal_refused_at_a_continuation_number_renews_after_the_last_record_instead_of_restarting():
    client = ScriptedClient([_Stream([event([1, 2], continuation=9)], error=ResponseStreamingError(error="reset")),
                             client_error("InvalidArgumentException"), _Stream([event([3])])])
    r = reader(client)
    got = pages(r, 3)
    assert numbers(got) == [1, 2, 3] and not any(p.stale_restart for p in got)
    assert client.calls[1] == {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": seq(9)}
    assert client.calls[2] == {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": seq(2)}
    r.close()


def test_registering_past_the_consumer_limit_is_a_config_error_naming_the_limit():
    import logging

    from source_kinesis.config import EnhancedFanOut
    from source_kinesis.consumers import resolve_consumer
    from source_kinesis.kinesis_api import KinesisStream

    class Full:
        def describe_stream_consumer(self, **kwargs: Any) -> Dict[str, Any]:
            raise client_error("ResourceNotFoundException")

        def register_stream_consumer(self, **kwargs: Any) -> Dict[str, Any]:
            raise client_error("LimitExceededException")

    stream = KinesisStream("orders", "arn:aws:kinesis:us-east-1:123456789012:stream/orders", "x", "ACTIVE", "NONE", {"StreamName": "orders"})
    with pytest.raises(Exception) as info:
        resolve_consumer(Full(), EnhancedFanOut(mode="enhanced_fan_out", consumer_name="c"), stream, logging.getLogger("t"), retry_budget_seconds=0.3)
    assert info.value.failure_type.value == "config_error" and "20 consumers" in info.value.message
