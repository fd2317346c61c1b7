"""The pool reads independent shards concurrently, never more than max_parallel_shards at once, never one shard
twice at once, and keeps each shard's pages in order."""
from __future__ import annotations

import datetime as dt
import queue
import threading
import time
from collections import defaultdict

import pytest

from source_kinesis.shard_pool import ShardPool
from source_kinesis.shard_reader import ShardEnded, ShardReader, StartPosition
from source_kinesis.throttling import ShardBudget


class SlowFakeKinesis:
    """GetRecords takes 50 ms; records how many calls overlap, overall and per shard."""

    def __init__(self, pages_per_shard: int) -> None:
        self.pages = pages_per_shard
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.per_shard = defaultdict(int)
        self.max_per_shard = 0

    def get_shard_iterator(self, ShardId, **kwargs):
        return {"ShardIterator": f"{ShardId}|0"}

    def get_records(self, ShardIterator, Limit):
        shard, page = ShardIterator.split("|")
        page = int(page)
        with self.lock:
            self.in_flight += 1
            self.per_shard[shard] += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.max_per_shard = max(self.max_per_shard, self.per_shard[shard])
        time.sleep(0.05)
        with self.lock:
            self.in_flight -= 1
            self.per_shard[shard] -= 1
        record = {
            "SequenceNumber": str(1000 + page),
            "ApproximateArrivalTimestamp": dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
            "Data": b"{}",
            "PartitionKey": "k",
        }
        last = page + 1 >= self.pages
        response = {"Records": [record], "MillisBehindLatest": 0}
        if not last:
            response["NextShardIterator"] = f"{shard}|{page + 1}"
        return response


def drain(workers: int, shards: int, pages: int):
    client = SlowFakeKinesis(pages)
    out: "queue.Queue" = queue.Queue(maxsize=4)
    pool = ShardPool(workers, out)
    for i in range(shards):
        reader = ShardReader(
            client, "s", {"StreamName": "s"}, f"shard-{i}", StartPosition("TRIM_HORIZON"),
            budget=ShardBudget(5, 2), records_per_call=10, retry_budget_seconds=5, follow=False,
            sync_started_at=dt.datetime.now(dt.timezone.utc), stale_policy="restart",
        )
        pool.submit(reader)
    seen = defaultdict(list)
    ended = 0
    while ended < shards:
        page = out.get(timeout=30)
        assert page.error is None
        seen[page.reader.shard_id].extend(int(r["SequenceNumber"]) for r in page.records)
        ended += isinstance(page, ShardEnded)
    pool.stop()
    pool.join()
    return client, seen


@pytest.mark.parametrize("workers, shards", [(4, 4), (2, 6), (8, 3)])
def test_shards_are_read_concurrently_within_the_bound(workers, shards):
    client, seen = drain(workers, shards, pages=4)
    assert client.max_in_flight == min(workers, shards)
    assert client.max_per_shard == 1
    assert all(seqs == [1000, 1001, 1002, 1003] for seqs in seen.values())
    assert len(seen) == shards
