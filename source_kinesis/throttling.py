"""The read budget per shard, and the one retry policy for every Kinesis call.

Kinesis allows each shard 5 GetRecords calls/s and 2 MB/s, shared by every polling consumer of the stream. The
``ShardBudget`` spaces one shard's calls so both the calls/s and the MB/s budget hold. It is a dozen lines of
arithmetic over the previous call, hand-written because rate-limiter libraries (pyrate-limiter, limits) model
request counts, not "this response cost N bytes, so wait N/rate before the next call".

Retries: botocore's own retries are off (see auth.py), so this is the only layer that retries: throttling
(ProvisionedThroughputExceeded, LimitExceeded, KMS throttling), 5xx and connection errors are retried with
exponential backoff and full jitter (tenacity) until the retry budget (seconds) is spent. A backoff never runs past
the budget, so the last try starts within it and a call that keeps failing ends within the budget plus one call's
deadline (``deadlines.CALL_DEADLINE_SECONDS``). Through a ``GuardedClient`` (always, in check/discover/read/follow)
the budget also counts from the first failure of *any* call to the endpoint: once nothing succeeded for a whole
budget, calls fail without another try, so N sequential calls against a dead endpoint do not take N budgets; a stop
request ends a backoff at once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, FrozenSet, Mapping, Optional

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from source_kinesis.deadlines import EndpointStalled, guard_of
from botocore.parsers import ResponseParserError

from source_kinesis.errors import IncompleteResponse, MalformedResponse, error_code, is_retryable, is_throttling

# A member every successful response of the call carries. botocore does not enforce Content-Length (its urllib3
# session passes enforce_content_length=False) and its JSON parser turns an unparseable body into {}: a 200 response
# cut short in transit arrives as a "successful" dict without these members (GetRecords would read as "shard closed
# and drained", ListShards as "no shards"). Their absence means a broken response: retried like a connection error.
REQUIRED_MEMBER = {
    "GetRecords": "Records",
    "GetShardIterator": "ShardIterator",
    "ListShards": "Shards",
    "DescribeStream": "StreamDescription",
    "ListStreams": "StreamNames",
    "SubscribeToShard": "EventStream",
}

# Control-plane calls (ListShards, DescribeStream, ListStreams) retry for this long at most.
CONTROL_PLANE_RETRY_SECONDS = 60.0


# An idle shard (IDLE_AFTER_EMPTY_CALLS empty pages in a row at its tip, MillisBehindLatest 0) is polled at most every
# IDLE_INTERVAL_SECONDS until a page brings records: an idle follow costs half the calls (and CPU) at the default
# 2 calls/s, while a shard that is receiving records, or went quiet for less than a second, keeps the full budget.
IDLE_AFTER_EMPTY_CALLS = 2
IDLE_INTERVAL_SECONDS = 1.0


class ShardBudget:
    def __init__(self, calls_per_second: float, megabytes_per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_interval = 1.0 / calls_per_second
        self.bytes_per_second = megabytes_per_second * 1_000_000
        self.clock = clock
        self._next = 0.0
        self._empty_at_tip = 0  # empty pages in a row at the shard's tip

    def next_call_at(self) -> float:
        return self._next

    def record_call(self, started_at: float, response_bytes: int, idle: bool = False) -> None:
        """``idle``: the page was empty and at the shard's tip (counts towards the idle interval)."""
        self._empty_at_tip = self._empty_at_tip + 1 if idle else 0
        interval = max(self.min_interval, response_bytes / self.bytes_per_second)
        if self._empty_at_tip >= IDLE_AFTER_EMPTY_CALLS:
            interval = max(interval, IDLE_INTERVAL_SECONDS)
        self._next = started_at + interval


@dataclass
class RetryCounters:
    throttles: int = 0
    retries: int = 0


def retrying(
    budget_seconds: float,
    counters: RetryCounters,
    sleep: Callable[[float], None] = time.sleep,
    max_backoff: float = 10.0,
    give_up: Optional[Callable[[], bool]] = None,
    retry_codes: FrozenSet[str] = frozenset(),
) -> Retrying:
    """A tenacity policy: retry retryable AWS errors with full-jitter exponential backoff within the budget.

    Every failed attempt is classified once (so the throttle count equals the throttles Kinesis returned, including
    the last one when the budget runs out); every backoff is counted as a retry. ``retry_codes``: error codes one
    call also retries (SubscribeToShard: ResourceInUseException while the previous subscription is still active).
    """

    def classify(exc: BaseException) -> bool:
        if is_throttling(exc):
            counters.throttles += 1
        return is_retryable(exc) or (bool(retry_codes) and error_code(exc) in retry_codes)

    def count_retry(state: RetryCallState) -> None:
        counters.retries += 1

    backoff = wait_random_exponential(multiplier=0.1, max=max_backoff)

    def wait(state: RetryCallState) -> float:  # never sleep past the budget: the last try starts within it
        return max(0.0, min(backoff(state), budget_seconds - (state.seconds_since_start or 0.0)))

    def stop(state: RetryCallState) -> bool:
        return stop_after_delay(budget_seconds)(state) or (give_up is not None and give_up())

    return Retrying(
        retry=retry_if_exception(classify),
        wait=wait,
        stop=stop,
        sleep=sleep,
        before_sleep=count_retry,
        reraise=True,
    )


def call_kinesis(
    action: str,
    method: Callable[..., Any],
    kwargs: Mapping[str, Any],
    *,
    budget_seconds: float = CONTROL_PLANE_RETRY_SECONDS,
    counters: Optional[RetryCounters] = None,
    sleep: Callable[[float], None] = time.sleep,
    retry_codes: FrozenSet[str] = frozenset(),
) -> Any:
    """One Kinesis call (``action`` e.g. "ListShards") under the retry policy, with the response checked for the
    member every complete response carries. Raises the last error once the budget is spent."""
    required = REQUIRED_MEMBER.get(action)
    guard = guard_of(method)

    def parsed(**call_kwargs: Any) -> Any:
        try:
            return method(**call_kwargs)
        except (ValueError, OverflowError, ResponseParserError) as exc:
            # A body botocore cannot parse as Kinesis JSON: not JSON at all (ResponseParserError, UnicodeDecodeError),
            # a blob that is not base64 (binascii.Error), a timestamp that is not one (ValueError, OverflowError).
            # botocore raises these only while parsing a response (bad parameters are a ParamValidationError).
            raise MalformedResponse(f"{action} returned a body that is not Kinesis JSON ({type(exc).__name__}: {str(exc)[:120]})") from None

    if guard is None:

        def attempt(**call_kwargs: Any) -> Any:
            response = parsed(**call_kwargs)
            if required is not None and (not isinstance(response, dict) or required not in response):
                raise IncompleteResponse(action, required)
            return response

        return retrying(budget_seconds, counters if counters is not None else RetryCounters(), sleep=sleep, retry_codes=retry_codes)(attempt, **kwargs)

    outage = guard.outage
    if outage.outage_seconds() >= budget_seconds:
        raise EndpointStalled(action, guard.endpoint, outage.outage_seconds(), outage.last_error)

    def guarded_attempt(**call_kwargs: Any) -> Any:
        try:
            response = parsed(**call_kwargs)
            if required is not None and (not isinstance(response, dict) or required not in response):
                raise IncompleteResponse(action, required)
        except Exception as exc:
            if is_retryable(exc):
                outage.failure(exc)
            raise
        outage.success()
        return response

    def guarded_sleep(seconds: float) -> None:
        guard.check_stop(action)
        if sleep is time.sleep:
            guard.sleep(seconds, action)
        else:  # an injected sleep (tests) still honours a stop on both sides
            sleep(seconds)
            guard.check_stop(action)

    def give_up() -> bool:
        return guard.expired() or outage.outage_seconds() >= budget_seconds

    policy = retrying(
        budget_seconds, counters if counters is not None else RetryCounters(), sleep=guarded_sleep, give_up=give_up, retry_codes=retry_codes
    )
    return policy(guarded_attempt, **kwargs)
