"""A total deadline for every AWS call of the source, a stop request that ends any call or backoff at once, and the
outage clock that bounds every retry loop once the endpoint stops making progress.

Every Kinesis and STS call of ``check``, ``discover``, ``read`` and ``follow`` goes through a ``GuardedClient``
(``ClientFactory.kinesis()`` returns one; the orchestrator wraps any client it is given), so none can be missed.

Why a worker thread with a bounded wait: botocore's ``read_timeout`` is per socket read, so a server that sends one
byte every few seconds keeps a call alive forever, and botocore has no total-deadline option. The alternatives were a
watchdog that closes the call's socket (botocore keeps the socket inside urllib3's pool: reaching it means private
fields of two libraries) or our own HTTP sender behind botocore's ``before-send`` event (re-implementing proxies,
TLS verification and connection pooling). A thread per call costs ~50 µs (a GetRecords round trip is milliseconds),
covers every operation the same way — including the STS AssumeRole botocore makes inside a call to refresh
credentials — and lets a stop request abandon a call at once instead of at its deadline. The cost: an abandoned
call's daemon thread lives on, holding one connection, until the server finishes answering or stays silent for the
client's ``read_timeout`` — a server that keeps dripping bytes keeps it alive until the process ends, one thread per
abandoned try, so at most one per retry within the budget; its result is discarded (all calls are reads, so
abandoning one has no effect on the stream).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

# One call (connect, send, every read of the response) ends within this many seconds.
CALL_DEADLINE_SECONDS = 20.0
# How often a caller waiting on a call looks at the stop events (stop latency while a call is in flight).
STOP_POLL_SECONDS = 0.05


class Stopped(AirbyteTracedException):
    """A stop was requested (SIGTERM, the runner, the end of a bounded sync) while a call or its backoff waited.
    Not a failure: callers that stop on request catch it; should one escape, it reads as a transient error."""

    def __init__(self, action: str) -> None:
        message = f"Stopped on request while calling {action}."
        super().__init__(message=message, internal_message=message, failure_type=FailureType.transient_error)


class CallDeadlineExceeded(Exception):
    """A call got no complete answer within its deadline (a silent, slow-dripping or stalled endpoint). Retryable."""

    def __init__(self, action: str, endpoint: str, seconds: float) -> None:
        super().__init__(f"{endpoint} gave no complete answer to {action} within {seconds:.0f} s")


class EndpointStalled(Exception):
    """No call to the endpoint succeeded for longer than the caller's retry budget: fail without another try."""

    def __init__(self, action: str, endpoint: str, seconds: float, last_error: str) -> None:
        super().__init__(f"no call to {endpoint} succeeded for {seconds:.0f} s (last error: {last_error}); {action} was not tried again")


class OutageClock:
    """Shared by every guard of one client: when the current run of failed calls began (None while calls succeed)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.failing_since: Optional[float] = None
        self.last_error = ""

    def success(self) -> None:
        self.failing_since = None

    def failure(self, exc: BaseException) -> None:
        if self.failing_since is None:
            self.failing_since = self.clock()
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]

    def outage_seconds(self) -> float:
        since = self.failing_since
        return 0.0 if since is None else self.clock() - since


@dataclass(frozen=True)
class CallGuard:
    """How calls run: ``call_seconds`` per call, an optional overall ``deadline`` (monotonic; check uses one), and
    the stop events that abandon a call or a backoff at once."""

    endpoint: str = "the endpoint"
    call_seconds: float = CALL_DEADLINE_SECONDS
    stops: Tuple[threading.Event, ...] = ()
    deadline: Optional[float] = None
    outage: OutageClock = field(default_factory=OutageClock)

    def with_stops(self, *events: Optional[threading.Event]) -> "CallGuard":
        extra = tuple(e for e in events if e is not None and e not in self.stops)
        return replace(self, stops=self.stops + extra)

    def with_total(self, seconds: float) -> "CallGuard":
        return replace(self, deadline=time.monotonic() + seconds)

    def stopped(self) -> bool:
        return any(event.is_set() for event in self.stops)

    def check_stop(self, action: str) -> None:
        if self.stopped():
            raise Stopped(action)

    def remaining(self) -> Optional[float]:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def expired(self) -> bool:
        remaining = self.remaining()
        return remaining is not None and remaining <= 0

    def sleep(self, seconds: float, action: str = "a retry") -> None:
        """A backoff that a stop request ends at once (raising ``Stopped``) and the overall deadline shortens."""
        remaining = self.remaining()
        if remaining is not None:
            seconds = min(seconds, max(0.0, remaining))
        end = time.monotonic() + seconds
        while True:
            self.check_stop(action)
            left = end - time.monotonic()
            if left <= 0:
                return
            if len(self.stops) == 1:
                self.stops[0].wait(left)
            else:
                time.sleep(min(left, STOP_POLL_SECONDS) if self.stops else left)

    def call(self, action: str, fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
        """``fn(**kwargs)`` on a worker thread; the caller waits at most the call's deadline (or the overall one),
        and not at all once a stop is requested."""
        self.check_stop(action)
        limit = self.call_seconds
        remaining = self.remaining()
        if remaining is not None:
            limit = min(limit, remaining)
        if limit <= 0:
            raise CallDeadlineExceeded(action, self.endpoint, 0)
        box: Dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                box["result"] = fn(**kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=work, name=f"aws-call-{action}", daemon=True).start()
        end = time.monotonic() + limit
        while True:
            left = end - time.monotonic()
            if done.wait(max(0.0, min(left, STOP_POLL_SECONDS) if self.stops else left)):
                break
            if self.stopped():
                raise Stopped(action)
            if time.monotonic() >= end:
                raise CallDeadlineExceeded(action, self.endpoint, limit)
        if "error" in box:
            raise box.pop("error")
        return box["result"]


class GuardedClient:
    """A boto3 client whose every API operation (``client.meta.method_to_api_mapping``) runs under a ``CallGuard``.
    Everything else (``meta``, ``exceptions``, ...) is the client's own."""

    def __init__(self, client: Any, guard: Optional[CallGuard] = None) -> None:
        self._client = client
        self.guard = guard or CallGuard(endpoint=str(getattr(getattr(client, "meta", None), "endpoint_url", "the endpoint")))
        self._operations: Mapping[str, str] = getattr(getattr(client, "meta", None), "method_to_api_mapping", {}) or {}

    def with_guard(self, guard: CallGuard) -> "GuardedClient":
        return GuardedClient(self._client, guard)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name.startswith("_") or not callable(attr):
            return attr
        if self._operations:
            action = self._operations.get(name)
            if action is None:  # get_paginator, close, ...: not API operations
                return attr
        else:  # a client without botocore's meta (a test double): every public method is an operation
            action = "".join(part.title() for part in name.split("_"))
        guard = self.guard

        def guarded_call(**kwargs: Any) -> Any:
            return guard.call(action, attr, kwargs)

        guarded_call.guard = guard  # type: ignore[attr-defined] - read by throttling.call_kinesis
        guarded_call.__name__ = name
        return guarded_call


def guarded(client: Any, *stops: Optional[threading.Event]) -> GuardedClient:
    """``client`` under a guard that also honours ``stops`` (a GuardedClient keeps its guard's deadline and clock)."""
    base = client if isinstance(client, GuardedClient) else GuardedClient(client)
    return base.with_guard(base.guard.with_stops(*stops))


def guard_of(method: Any) -> Optional[CallGuard]:
    return getattr(method, "guard", None)
