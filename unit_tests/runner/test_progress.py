"""What the runner's progress line counts and shows, from a source in this process (CDK messages) and from the source
process (``SourceProgress`` counts, records as ``JsonRecord``s, other messages as dicts)."""
from __future__ import annotations

import datetime as dt
import io
import logging

from airbyte_cdk.models import AirbyteMessage, AirbyteRecordMessage, Type

from collection_runner.progress import RunnerProgress
from collection_runner.source_process import SourceProgress
from destination_collection.protocol_loop import JsonRecord


def progress() -> RunnerProgress:
    return RunnerProgress(logging.getLogger("test-progress"), out=io.StringIO(), interactive=False)


def echo(name: str) -> dict:
    return {"type": "STATE", "state": {"type": "STREAM", "stream": {"stream_descriptor": {"name": name}, "stream_state": {}}}}


def iso(seconds_ago: float) -> str:
    at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds_ago)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def test_in_process_records_are_counted_and_a_commit_gives_the_lag_of_its_stream():
    p = progress()
    records = [AirbyteMessage(type=Type.RECORD, record=AirbyteRecordMessage(
        stream="orders", data={"n": i, "_kinesis_arrival_time": iso(30 - i)}, emitted_at=1)) for i in range(3)]
    assert list(p.observe(records)) == records
    assert p.records == 3 and p.streams["orders"].records == 3
    p.on_commit(echo("orders"))
    assert 27 <= p.streams["orders"].lag_seconds <= 29  # the newest record committed arrived ~28 s ago
    p.on_commit(echo("orders"))
    assert p.streams["orders"].lag_seconds == 0.0  # nothing new since: caught up


def test_the_source_process_counts_come_from_its_progress_messages_and_records_pass_uncounted():
    p = progress()
    record = JsonRecord("orders", None, '{"n":1}', 1, 10)
    error = {"type": "TRACE", "trace": {"type": "ERROR", "error": {"message": "shard 0 failed"}}}
    state = echo("orders")
    messages = [record, b'{"type":"RECORD"}', SourceProgress({"orders": {"records": 2, "newest_arrival": iso(12)}}), error, state,
                SourceProgress({"orders": {"records": 5, "newest_arrival": iso(11)}})]
    passed = list(p.observe(messages))
    assert passed == [record, b'{"type":"RECORD"}', error, state]  # the progress messages are taken, never written
    assert p.records == 5 and p.streams["orders"].records == 5 and p.errors == 1
    p.on_commit(state)
    assert 10 <= p.streams["orders"].lag_seconds <= 12
    assert p.commits == 1
