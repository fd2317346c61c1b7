"""A bounded pool of threads that polls shard readers in due-time order.

At most ``workers`` GetRecords calls are in flight. Each reader sits in a heap keyed by the time its budget allows
its next call; a worker takes the earliest due reader, polls it once, hands the page to the bounded output queue
(so a slow consumer slows the readers instead of growing memory) and puts the reader back unless the page was its
last. A reader is never polled twice at once, so pages of one shard reach the queue in order. Idle workers sleep on
a condition until the next due time: no busy-waiting. A reader whose data is pushed (enhanced fan-out) is due only
when it has something (or at its idle re-check): it calls the ``wake`` it was attached with when data arrives, which
makes it due at once (its earlier heap entry goes stale), so an idle shard never holds a worker waiting. Hand-written because ``concurrent.futures`` has no notion of
"run this task again at time T" and a scheduler library would add a dependency for ~60 lines.
"""
from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from typing import Callable, Dict, List, Optional, Set, Tuple

from source_kinesis.readers import Reader
from source_kinesis.shard_reader import Page


class ShardPool:
    def __init__(self, workers: int, out: "queue.Queue[Page]", clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.clock = clock
        self._heap: List[Tuple[float, int, Reader]] = []
        self._tie = itertools.count()
        self._entry: Dict[Reader, int] = {}  # a reader's live heap entry (its tie); other entries of it are stale
        self._polling: Set[Reader] = set()  # readers being polled now
        self._woken: Set[Reader] = set()  # woken while being polled: due at once when put back
        self._cond = threading.Condition()
        self._stopping = False
        self._busy = 0
        self._threads = [threading.Thread(target=self._work, name=f"shard-reader-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, reader: Reader) -> None:
        reader.attach(lambda: self.wake(reader))
        with self._cond:
            self._push(reader, reader.next_due())

    def wake(self, reader: Reader) -> None:
        """``reader`` has something to hand over: poll it as soon as a worker is free."""
        with self._cond:
            if reader in self._polling:
                self._woken.add(reader)
            elif reader in self._entry:
                self._push(reader, 0.0)

    def _push(self, reader: Reader, due: float) -> None:
        tie = next(self._tie)
        self._entry[reader] = tie
        heapq.heappush(self._heap, (due, tie, reader))
        self._cond.notify()

    def stop(self) -> None:
        """Ask workers to finish their current poll and exit. Pages already queued stay in the queue."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def join(self, timeout: float = 120.0) -> None:
        deadline = self.clock() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - self.clock()))

    def in_flight(self) -> int:
        """Polls running now (a GetRecords whose page has not reached the output queue yet)."""
        with self._cond:
            return self._busy

    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def _next(self) -> Optional[Reader]:
        with self._cond:
            while True:
                if self._stopping:
                    return None
                if self._heap:
                    due, tie, reader = self._heap[0]
                    if self._entry.get(reader) != tie or reader.cancelled:  # stale (woken since), or cancelled
                        heapq.heappop(self._heap)
                        if self._entry.get(reader) == tie:
                            del self._entry[reader]
                        continue
                    wait = due - self.clock()
                    if wait <= 0:
                        heapq.heappop(self._heap)
                        del self._entry[reader]
                        self._polling.add(reader)
                        self._busy += 1
                        return reader
                    self._cond.wait(wait)
                else:
                    self._cond.wait()

    def _work(self) -> None:
        while True:
            reader = self._next()
            if reader is None:
                return
            try:
                page = reader.poll()
                # Block while the consumer is behind, but notice a stop request.
                while True:
                    try:
                        self.out.put(page, timeout=0.2)
                        break
                    except queue.Full:
                        if self._stopping:
                            # The emitter is gone or stopping; leave the page unqueued (its records were not
                            # emitted, so no checkpoint covers them and the next sync reads them again).
                            page = None
                            break
                with self._cond:
                    self._polling.discard(reader)
                    woken = reader in self._woken
                    self._woken.discard(reader)
                    if page is not None and not page.final and not reader.cancelled:
                        self._push(reader, 0.0 if woken else reader.next_due())
            finally:
                with self._cond:
                    self._polling.discard(reader)
                    self._busy -= 1
                    self._cond.notify_all()
