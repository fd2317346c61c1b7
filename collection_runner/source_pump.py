"""The source's messages, read on their own thread, so a stop never waits for the source longer than a bound.

The runner's write loop consumes the source's generator. Left on one thread, a source stuck in a retry backoff or a
long GetRecords blocks the write loop too: nothing is committed and a SIGTERM waits for the whole retry budget.
``SourcePump`` runs the generator on a daemon thread and hands its messages over through a bounded buffer (the
source slows down when the writer is behind, as before). The consumer side (``messages()``):

* yields every message in the order the source emitted it (records, states, traces);
* yields ``HEARTBEAT`` (a LOG message, which the write loop ignores) while the source is quiet, so the write
  loop's interval flushes and state echoes still happen during an outage;
* once ``stop_event`` is set, gives the source ``grace_seconds`` to finish on its own (its final checkpoints), whether
  it is quiet or still emitting; past that, it yields what the source already emitted and ends: the write loop
  commits it, the source thread is left behind (a daemon: it dies with the process). Whatever happens, at most
  ``max_after_stop`` messages and ``max_after_stop_bytes`` bytes of records are yielded after the stop (a source
  process reads on while the writer is busy, so its buffer can hold far more than the writer commits in the stop
  bound): the rest is dropped, unread by the write loop, and read again by the next run. Dropping a tail is safe: only
  states the source emitted are committed, each after every record it covers; records emitted after the last state
  are committed too and read again by the next run (the deterministic ``_id`` of ``append_dedup`` absorbs that
  re-delivery);
* holds at most ``max_buffered`` messages and ``max_buffered_bytes`` bytes of records (``size_of``) for the write
  loop: the source waits when the writer is behind;
* an exception raised by the source is kept and re-raised by ``raise_error()`` after the write loop has committed
  the messages emitted before it (an error the source raised after the stop request is only logged: the user
  asked to stop).
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable, Deque, Iterable, Iterator, Optional

from airbyte_cdk.models import Type

from destination_collection.protocol_loop import JsonRecord

_RECORD_TYPES = (JsonRecord, bytes)  # the records of a source process (source_process): framed data, or a RECORD line

# A LOG message: the write loop ignores it, but checks its flush interval and releases committed echoes after it.
HEARTBEAT = {"type": "LOG", "log": {"level": "DEBUG", "message": "source quiet"}}
# How long the source may be quiet before a heartbeat: HEARTBEAT_SECONDS, and ACTIVE_HEARTBEAT_SECONDS within
# ACTIVE_SECONDS of the last RECORD. The write loop acts only on messages, so this is also how late a state its group
# commit holds back (at most flush_interval_secs: 0.05 s in follow mode) is committed once the source has gone quiet.
# With 0.25 s alone the held state waited for the next poll's records instead (the freshness benchmark, 1,000
# records/s on 4 shards: emitted → queryable p50 0.23 s, 0.15 s with 0.05 s heartbeats). 0.05 s all the time cost an
# idle runner 0.3 % of a core (1.66 % → 1.99 % over 30 s on 4 idle shards), hence only after records.
HEARTBEAT_SECONDS = 0.25
ACTIVE_HEARTBEAT_SECONDS = 0.05
ACTIVE_SECONDS = 1.0
# What the write loop may still be given after a stop request (see the module's docstring). The runner exits within 5 s
# of a stop: the grace (1.5 s), this work, the last commit and closing. The writer takes ~20-40k small records/s here
# (20,000 is ~0.5-1 s with its commit); 16 MiB bounds the same for large records.
MAX_AFTER_STOP = 20_000
MAX_AFTER_STOP_BYTES = 16 * 1024 * 1024


class SourcePump:
    def __init__(
        self,
        messages: Iterable[Any],
        stop_event: threading.Event,
        logger: logging.Logger,
        *,
        grace_seconds: float = 1.5,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        active_heartbeat_seconds: float = ACTIVE_HEARTBEAT_SECONDS,
        max_buffered: int = 2_000,
        max_buffered_bytes: Optional[int] = None,
        size_of: Callable[[Any], int] = lambda _message: 0,
        max_after_stop: int = MAX_AFTER_STOP,
        max_after_stop_bytes: int = MAX_AFTER_STOP_BYTES,
        clock: Any = time.monotonic,
    ) -> None:
        self._source = messages
        self.stop_event = stop_event
        self.logger = logger
        self.grace_seconds = grace_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.active_heartbeat_seconds = min(active_heartbeat_seconds, heartbeat_seconds)
        self._last_record_at: Optional[float] = None  # the consumer's clock when it last took a RECORD
        self.max_buffered = max_buffered
        self.max_buffered_bytes = max_buffered_bytes
        self.size_of = size_of
        self.max_after_stop = max_after_stop
        self.max_after_stop_bytes = max_after_stop_bytes
        # bytes of records put in and taken out of the buffer: each counter written by one thread only (no lock)
        self._produced_bytes = 0
        self._consumed_bytes = 0
        self.dropped_after_stop = 0  # messages not yielded because of the bound on the work after a stop
        self.clock = clock
        self._buffer: Deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._consumer_waiting = False
        self._producer_waiting = False
        self._finished = False  # the source's generator returned or raised
        self._abandoned = False  # the consumer stopped listening
        self.error: Optional[BaseException] = None
        self.error_after_stop = False
        self.abandoned_source = False  # the stop grace ran out with the source still running
        self._thread = threading.Thread(target=self._produce, name="source-reader", daemon=True)

    # -- the source's thread ----------------------------------------------------------------------------------
    def start(self) -> "SourcePump":
        self._thread.start()
        return self

    def _produce(self) -> None:
        source = iter(self._source)
        try:
            for message in source:
                if self._abandoned:
                    break
                self._produced_bytes += self.size_of(message)
                self._buffer.append(message)
                if self._consumer_waiting:
                    with self._cond:
                        self._cond.notify_all()
                if self._full():
                    with self._cond:
                        self._producer_waiting = True
                        while self._full() and not self._abandoned:
                            self._cond.wait(0.2)
                        self._producer_waiting = False
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer's thread
            self.error = exc
            # (a source process's error says itself whether it came after the stop: it may be read here much later)
            after_stop = getattr(exc, "raised_after_stop", None)
            self.error_after_stop = self.stop_event.is_set() if after_stop is None else after_stop
        finally:
            with self._cond:
                self._finished = True
                self._cond.notify_all()
            close = getattr(source, "close", None)
            if close is not None and self._abandoned:
                try:
                    close()  # only reached when the source yielded again after being abandoned
                except Exception:  # noqa: BLE001
                    pass

    def _full(self) -> bool:
        return len(self._buffer) >= self.max_buffered or (
            self.max_buffered_bytes is not None and self._produced_bytes - self._consumed_bytes >= self.max_buffered_bytes
        )

    # -- the consumer's thread --------------------------------------------------------------------------------
    def messages(self) -> Iterator[Any]:
        buffer = self._buffer
        stop_deadline: Optional[float] = None
        after_stop = [0, 0]  # messages and bytes of records yielded since the stop was seen
        try:
            while True:
                # The grace counts from the stop whether or not the source is still emitting: a source that keeps
                # emitting after the stop (a backlog of pages in flight, or one that ignores the stop) must not keep
                # the write loop busy past the bound. Then only what is already buffered is committed.
                if stop_deadline is None:
                    if self.stop_event.is_set():
                        stop_deadline = self.clock() + self.grace_seconds
                        # said here, not in the signal handler: logging from a handler can interrupt a log write
                        reason = getattr(self.stop_event, "reason", "Stop requested")
                        self.logger.info(f"{reason}: stopping after the data already read is committed...")
                elif not self._finished and self.clock() >= stop_deadline:
                    self._abandon()
                    yield from self._drain(after_stop)
                    return
                try:
                    message = buffer.popleft()
                except IndexError:
                    message = None
                    empty = True
                else:
                    empty = False
                if not empty:
                    size = self.size_of(message)
                    self._consumed_bytes += size
                    if stop_deadline is not None and not self._within_stop_bound(after_stop, size):
                        return
                    if self._producer_waiting:
                        with self._cond:
                            self._cond.notify_all()
                    if type(message) in _RECORD_TYPES or getattr(message, "type", None) is Type.RECORD:
                        self._last_record_at = self.clock()
                    yield message
                    continue
                if self._finished and not buffer:
                    return
                with self._cond:
                    self._consumer_waiting = True
                    if not buffer and not self._finished:
                        timeout = self.heartbeat_seconds
                        if self._last_record_at is not None and self.clock() - self._last_record_at < ACTIVE_SECONDS:
                            timeout = self.active_heartbeat_seconds
                        if stop_deadline is not None:
                            timeout = max(0.0, min(timeout, stop_deadline - self.clock()))
                        self._cond.wait(timeout)
                    self._consumer_waiting = False
                if not buffer and not self._finished:
                    yield HEARTBEAT
        finally:
            # The consumer left (done, abandoned, or the write loop failed): the source must not block on us.
            self._abandoned = True
            with self._cond:
                self._cond.notify_all()

    def _abandon(self) -> None:
        self._abandoned = True
        self.abandoned_source = True
        self.logger.warning(
            f"Stop requested: the source did not finish within {self.grace_seconds:g} s (an endpoint not answering, or "
            "a retry backoff); committing what it already read and leaving it. The next run reads on from the last "
            "committed state."
        )

    def _within_stop_bound(self, after_stop: list, size: int) -> bool:
        """Count one more message yielded after the stop; False (after saying so) once it would pass the bound: the
        message and every one after it are dropped."""
        after_stop[0] += 1
        after_stop[1] += size
        if after_stop[0] <= self.max_after_stop and after_stop[1] <= self.max_after_stop_bytes:
            return True
        self.dropped_after_stop = 1 + len(self._buffer)
        self._abandoned = True
        self.abandoned_source = self.abandoned_source or not self._finished  # (still emitting: it is left behind)
        self.logger.info(
            f"Stop requested: {self.dropped_after_stop:,}+ message(s) already read are left uncommitted, to keep the stop "
            f"within its bound ({self.max_after_stop:,} messages or {self.max_after_stop_bytes // 1048576} MiB are committed "
            "after a stop); the next run reads them again from the last committed state."
        )
        return False

    def _drain(self, after_stop: list) -> Iterator[Any]:
        while True:
            try:
                message = self._buffer.popleft()
            except IndexError:
                return
            size = self.size_of(message)
            self._consumed_bytes += size
            if not self._within_stop_bound(after_stop, size):
                return
            yield message

    def close(self) -> None:
        """The consumer is done (or failed): release the source's thread if it waits on the buffer."""
        self._abandoned = True
        with self._cond:
            self._cond.notify_all()

    def raise_error(self) -> None:
        """Re-raise the source's error, unless it came after the stop request (then it is logged)."""
        if self.error is None:
            return
        if self.error_after_stop:
            message = getattr(self.error, "message", None) or f"{type(self.error).__name__}: {self.error}"
            self.logger.warning(f"The source failed after the stop request (ignored: the run was stopping): {message}")
            return
        raise self.error
