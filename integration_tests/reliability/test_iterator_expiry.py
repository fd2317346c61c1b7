"""Iterator expiry for real: kinesis-mock expires shard iterators 300 s after they were issued.

A slow consumer — the source's own ``ShardReader`` (with the client the source builds), polled once and then not
again for 305 s — must recover on its next poll: the expired iterator is re-acquired after the last record fetched,
nothing is lost or repeated, and ``iterator_refreshes`` counts the refresh.

Two readers share the one wait (one test; the conftest moves it to the front of the run so that, with
``pytest -n 2``, the wait overlaps the rest of the suite on the other worker):

* a shard read from ``TRIM_HORIZON`` whose first page was fetched: it resumes ``AFTER_SEQUENCE_NUMBER`` the last
  record fetched;
* a shard read from ``LATEST`` (a first sync with ``start_position: LATEST``) that had fetched nothing yet when new
  records arrived: its refresh must not jump over them.
"""
from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import pytest

from integration_tests.kinesis_mock import create_stream
from source_kinesis.auth import ClientFactory
from source_kinesis.config import parse_config
from source_kinesis.shard_reader import ShardReader, StartPosition
from source_kinesis.throttling import ShardBudget

WAIT_SECONDS = 305.0  # kinesis-mock: iterators live 300 s
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("iterator-expiry"), pytest.mark.timeout(480)]


def put(client, stream: str, start: int, count: int) -> None:
    records = [{"Data": json.dumps({"n": i}).encode(), "PartitionKey": f"k{i % 3}"} for i in range(start, start + count)]
    assert client.put_records(StreamName=stream, Records=records)["FailedRecordCount"] == 0


def reader(kinesis_mock, stream: str, start: StartPosition) -> ShardReader:
    config = parse_config(kinesis_mock.source_config([stream]))
    shard_id = kinesis_mock.client().list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    return ShardReader(
        ClientFactory(config).kinesis(),
        stream,
        {"StreamName": stream},
        shard_id,
        start,
        budget=ShardBudget(5, 2),
        records_per_call=10,
        retry_budget_seconds=30,
        follow=True,
        sync_started_at=dt.datetime.now(dt.timezone.utc),
        stale_policy="fail",
    )


def drain(shard_reader: ShardReader, polls: int = 20) -> list:
    """Poll until an empty page that is caught up; the ``n`` of every record fetched, in order."""
    got = []
    for _ in range(polls):
        page = shard_reader.poll()
        assert page.error is None, page.error.message
        assert not page.stale_restart, page.stale_restart
        got += [json.loads(r["Data"])["n"] for r in page.records]
        if not page.records and page.millis_behind == 0:
            return got
        time.sleep(0.2)
    raise AssertionError(f"not caught up after {polls} polls: {got}")


def test_slow_consumers_recover_after_real_iterator_expiry(kinesis_mock, reliability):
    """One test (one 305 s wait) for both readers, so no scheduler can split the wait over two workers."""
    client = kinesis_mock.client()
    suffix = uuid.uuid4().hex[:8]
    horizon_stream, latest_stream = f"expiry-horizon-{suffix}", f"expiry-latest-{suffix}"
    create_stream(client, horizon_stream, 1)
    create_stream(client, latest_stream, 1)
    put(client, horizon_stream, 0, 30)
    horizon = reader(kinesis_mock, horizon_stream, StartPosition("TRIM_HORIZON"))
    first_page = horizon.poll()
    assert first_page.error is None and len(first_page.records) == 10
    first = [json.loads(r["Data"])["n"] for r in first_page.records]
    latest = reader(kinesis_mock, latest_stream, StartPosition("LATEST"))
    empty = latest.poll()
    assert empty.error is None and empty.records == []
    put(client, latest_stream, 0, 20)  # arrive after the LATEST iterator was issued: they belong to this sync
    time.sleep(WAIT_SECONDS)  # the consumer stalls (e.g. a slow destination): both iterators expire

    rest = drain(horizon)
    assert horizon.stats.iterator_refreshes == 1
    assert first + rest == list(range(30)), "a record was lost or repeated across the iterator refresh"
    got = drain(latest)
    assert latest.stats.iterator_refreshes == 1
    assert got == list(range(20)), f"{20 - len(got)} records that arrived during the stall were skipped"
    reliability(expired_iterators=2, records_checked=50, seconds_stalled=int(WAIT_SECONDS))
