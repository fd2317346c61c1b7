"""Bounds for every paginated Kinesis listing (``ListShards``, ``ListStreams``), so a broken or hostile endpoint
cannot keep the source listing forever or grow its memory without limit.

A listing fails with a ``transient_error`` naming the call and the stream (or the account's stream list) when:

- a ``NextToken`` (or ``ExclusiveStartStreamName``) comes back that was already used in this listing (a loop);
- it passes ``MAX_PAGES`` pages or ``MAX_ITEMS`` items (shards or stream names) — far above Kinesis' quotas
  (ListShards returns up to 1,000 shards a page; an account's default shard quota is 500 to 1,000 and raised limits
  are in the tens of thousands; ListStreams returns 100 names a page);
- it takes longer than its retry budget plus one call's deadline in total (every page, retries included).

Seen tokens are kept as 16-byte digests, so memory stays bounded whatever the token size.
"""
from __future__ import annotations

import hashlib
import time
from typing import Callable, Set

from source_kinesis.deadlines import CALL_DEADLINE_SECONDS
from source_kinesis.errors import MalformedResponse

MAX_PAGES = 1000
MAX_ITEMS = 100_000


class PaginationBoundExceeded(MalformedResponse):
    """A listing broke one of the bounds above."""


class Pagination:
    def __init__(self, action: str, what: str, retry_budget_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.action = action
        self.what = what  # "stream 'orders'" / "the account's stream list", for messages
        self.clock = clock
        self.total_seconds = retry_budget_seconds + CALL_DEADLINE_SECONDS
        self.deadline = clock() + self.total_seconds
        self.retry_budget_seconds = retry_budget_seconds
        self.pages = 0
        self.items = 0
        self._seen: Set[bytes] = set()

    def call_budget(self) -> float:
        """The retry budget of the next page: the listing's budget, never past its total time bound."""
        remaining = self.deadline - self.clock()
        if remaining <= 0:
            raise PaginationBoundExceeded(
                f"{self.action} of {self.what} did not finish within {self.total_seconds:.0f} s ({self.pages} pages so far)"
            )
        return max(0.001, min(self.retry_budget_seconds, remaining))

    def add_items(self, count: int) -> None:
        self.pages += 1
        self.items += count
        if self.pages > MAX_PAGES or self.items > MAX_ITEMS:
            raise PaginationBoundExceeded(
                f"{self.action} of {self.what} returned more than {MAX_PAGES} pages or {MAX_ITEMS} items "
                f"({self.pages} pages, {self.items} items): the endpoint keeps returning a NextToken"
            )

    def next_token(self, token: str) -> None:
        digest = hashlib.blake2b(str(token).encode("utf-8", "surrogatepass"), digest_size=16).digest()
        if digest in self._seen:
            raise PaginationBoundExceeded(
                f"{self.action} of {self.what} returned a NextToken it had already returned (page {self.pages}): "
                "the endpoint's pagination loops"
            )
        self._seen.add(digest)
