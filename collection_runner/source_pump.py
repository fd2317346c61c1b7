"""The source's messages, read on their own thread, so a stop never waits for the source longer than a bound.

The runner's write loop consumes the source's generator. Left on one thread, a source stuck in a retry backoff or a
long GetRecords blocks the write loop too: nothing is committed and a SIGTERM waits for the whole retry budget.
``SourcePump`` runs the generator on a daemon thread and hands its messages over through a bounded buffer (the
source slows down when the writer is behind, as before). The consumer side (``messages()``):

* yields every message in the order the source emitted it (records, states, traces);
* yields ``HEARTBEAT`` (a LOG message, which the write loop ignores) while the source is quiet, so the write
  loop's interval flushes and state echoes still happen during an outage;
* once ``stop_event`` is set, gives the source ``grace_seconds`` to finish on its own (its final checkpoints), whether
  it is quiet or still emitting; past that, it yields what the source already emitted (at most ``max_buffered``
  messages: the write loop's work after the grace is bounded too) and ends: the write loop commits it, the source thread is left
  behind (a daemon: it dies with the process). Only states the source emitted are committed, each after every
  record it covers; records emitted after the last state are committed too and read again by the next run (the
  deterministic ``_id`` of ``append_dedup`` absorbs that re-delivery);
* an exception raised by the source is kept and re-raised by ``raise_error()`` after the write loop has committed
  the messages emitted before it (an error the source raised after the stop request is only logged: the user
  asked to stop).
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Deque, Iterable, Iterator, Optional

from airbyte_cdk.models import Type

from destination_collection.protocol_loop import JsonRecord

_RECORD_TYPES = (JsonRecord, bytes)  # the records of a source process (source_process): framed data, or a RECORD line

# A LOG message: the write loop ignores it, but checks its flush interval and releases committed echoes after it.
HEARTBEAT = {"type": "LOG", "log": {"level": "DEBUG", "message": "source quiet"}}
# How long the source may be quiet before a heartbeat: HEARTBEAT_SECONDS, and ACTIVE_HEARTBEAT_SECONDS within
# ACTIVE_SECONDS of the last RECORD. The write loop acts only on messages, so this is also how late a state its group
# commit holds back (at most flush_interval_secs: 0.1 s in follow mode) is committed once the source has gone quiet.
# With 0.25 s alone the held state waited for the next poll's records instead (the freshness benchmark, 1,000
# records/s on 4 shards: emitted → queryable p50 0.23 s, 0.15 s with 0.05 s heartbeats). 0.05 s all the time cost an
# idle runner 0.3 % of a core (1.66 % → 1.99 % over 30 s on 4 idle shards), hence only after records.
HEARTBEAT_SECONDS = 0.25
ACTIVE_HEARTBEAT_SECONDS = 0.05
ACTIVE_SECONDS = 1.0


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
                self._buffer.append(message)
                if self._consumer_waiting:
                    with self._cond:
                        self._cond.notify_all()
                if len(self._buffer) >= self.max_buffered:
                    with self._cond:
                        self._producer_waiting = True
                        while len(self._buffer) >= self.max_buffered and not self._abandoned:
                            self._cond.wait(0.2)
                        self._producer_waiting = False
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer's thread
            self.error = exc
            self.error_after_stop = self.stop_event.is_set()
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

    # -- the consumer's thread --------------------------------------------------------------------------------
    def messages(self) -> Iterator[Any]:
        buffer = self._buffer
        stop_deadline: Optional[float] = None
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
                    yield from self._drain()
                    return
                try:
                    message = buffer.popleft()
                except IndexError:
                    message = None
                    empty = True
                else:
                    empty = False
                if not empty:
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

    def _drain(self) -> Iterator[Any]:
        while True:
            try:
                yield self._buffer.popleft()
            except IndexError:
                return

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
