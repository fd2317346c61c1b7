"""A bounded pool of threads that polls shard readers in due-time order.

At most ``workers`` GetRecords calls are in flight. Each reader sits in a heap keyed by the time its budget allows
its next call; a worker takes the earliest due reader, polls it once, hands the page to the bounded output queue
(so a slow consumer slows the readers instead of growing memory) and puts the reader back unless the page was its
last. A reader is never polled twice at once, so pages of one shard reach the queue in order. Idle workers sleep on
a condition until the next due time: no busy-waiting. Hand-written because ``concurrent.futures`` has no notion of
"run this task again at time T" and a scheduler library would add a dependency for ~60 lines.
"""
from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from typing import Callable, List, Optional, Tuple

from source_kinesis.readers import Reader
from source_kinesis.shard_reader import Page


class ShardPool:
    def __init__(self, workers: int, out: "queue.Queue[Page]", clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.clock = clock
        self._heap: List[Tuple[float, int, Reader]] = []
        self._tie = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._busy = 0
        self._threads = [threading.Thread(target=self._work, name=f"shard-reader-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, reader: Reader) -> None:
        with self._cond:
            heapq.heappush(self._heap, (reader.next_due(), next(self._tie), reader))
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
                    due, _, reader = self._heap[0]
                    if reader.cancelled:
                        heapq.heappop(self._heap)
                        continue
                    wait = due - self.clock()
                    if wait <= 0:
                        heapq.heappop(self._heap)
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
                if page is not None and not page.final and not reader.cancelled:
                    with self._cond:
                        heapq.heappush(self._heap, (reader.next_due(), next(self._tie), reader))
                        self._cond.notify()
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()
