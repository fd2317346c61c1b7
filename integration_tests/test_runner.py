"""kinesis-collection against kinesis-mock and DuckDB, as a user runs it: a subprocess with config files."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from collection_runner.locking import read_holder
from collection_runner.query_service import ask
from integration_tests.source_helpers import Producer, open_shards, split

SCRIPT = shutil.which("kinesis-collection") or str(Path(sys.executable).parent / "kinesis-collection")


def write_configs(tmp_path: Path, kinesis_mock, stream: str, **source_overrides):
    source = tmp_path / "source.json"
    source.write_text(json.dumps(kinesis_mock.source_config([stream], **source_overrides)))
    destination = tmp_path / "destination.json"
    destination.write_text(json.dumps({"store": {"store_type": "duckdb", "path": str(tmp_path / "collection.duckdb")}}))
    return str(source), str(destination)


def runner(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=180, **kwargs)


def collection_rows(tmp_path: Path, table: str):
    con = duckdb.connect(str(tmp_path / "collection.duckdb"), read_only=True)
    try:
        return con.execute(f'SELECT _id, "pk", "n" FROM "{table}"').fetchall()
    finally:
        con.close()


def table_name(stream: str) -> str:
    from destination_collection.naming import table_name as name

    return name("", stream)


def test_bounded_sync_then_incremental_sync(tmp_path, kinesis_mock, kinesis, new_stream):
    stream = new_stream(shards=2, prefix="run")
    producer = Producer(kinesis, stream)
    producer.put(80)
    source, destination = write_configs(tmp_path, kinesis_mock, stream)
    first = runner("sync", "--source", source, "--destination", destination)
    assert first.returncode == 0, first.stderr
    assert "Sync done: 80 records" in first.stderr
    rows = collection_rows(tmp_path, table_name(stream))
    assert sorted((pk, n) for _, pk, n in rows) == sorted((e["pk"], e["n"]) for e in producer.sent)
    producer.put(20)
    second = runner("sync", "--source", source, "--destination", destination)
    assert second.returncode == 0 and "Sync done: 20 records" in second.stderr
    assert len(collection_rows(tmp_path, table_name(stream))) == 100
    stats = runner("stats", "--destination", destination, "--format", "json")
    assert stats.returncode == 0
    state = json.loads(stats.stdout)["collections"][0]["state"]
    state = json.loads(state) if isinstance(state, str) else state
    assert state["stream"]["stream_state"]["version"] == 1


def test_sigkill_mid_sync_then_resume_loses_and_duplicates_nothing(tmp_path, kinesis_mock, kinesis, new_stream):
    stream = new_stream(shards=3, prefix="kill")
    producer = Producer(kinesis, stream)
    producer.put(600)
    source, destination = write_configs(
        tmp_path, kinesis_mock, stream, records_per_call=10, get_records_per_second=2, checkpoint_interval_records=25
    )
    dest = json.loads(Path(destination).read_text())
    dest["batch_size"] = 30
    Path(destination).write_text(json.dumps(dest))
    proc = subprocess.Popen([SCRIPT, "sync", "--source", source, "--destination", destination], stderr=subprocess.DEVNULL)
    # Kill mid-sync: once the runner has committed some documents (asked through its query socket, as
    # `kinesis-collection query` does), while it is still reading (10 records per call at 2 calls/s per shard).
    db = str(tmp_path / "collection.duckdb")
    table = table_name(stream)
    deadline = time.monotonic() + 90
    committed = 0
    while time.monotonic() < deadline and proc.poll() is None and committed == 0:
        holder = read_holder(db)
        if holder and holder.get("socket"):
            answer = ask(holder["socket"], {"command": "query", "format": "json", "sql": f'SELECT count(*) AS n FROM "{table}"'})
            if answer.get("ok"):
                committed = json.loads(answer["output"].splitlines()[0])["n"]
        time.sleep(0.2)
    assert proc.poll() is None, "the sync finished before it could be killed; slow it down"
    assert committed > 0, "nothing was committed in time"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    partial = collection_rows(tmp_path, table_name(stream))
    assert 0 < len(partial) < 600
    resumed = runner("sync", "--source", source, "--destination", destination)
    assert resumed.returncode == 0, resumed.stderr
    rows = collection_rows(tmp_path, table_name(stream))
    assert len(rows) == len({r[0] for r in rows}) == 600
    assert sorted((pk, n) for _, pk, n in rows) == sorted((e["pk"], e["n"]) for e in producer.sent)


def test_follow_picks_up_new_records_and_shards_answers_queries_and_stops_on_sigterm(tmp_path, kinesis_mock, kinesis, new_stream):
    stream = new_stream(shards=2, prefix="follow")
    producer = Producer(kinesis, stream)
    producer.put(30)
    source, destination = write_configs(tmp_path, kinesis_mock, stream, get_records_per_second=4)
    proc = subprocess.Popen([SCRIPT, "follow", "--source", source, "--destination", destination], stderr=subprocess.PIPE, text=True)
    table = table_name(stream)
    try:
        def count() -> int:
            result = runner("query", "--destination", destination, "--format", "json", f'SELECT count(*) AS n FROM "{table}"')
            if result.returncode != 0:
                return -1
            return json.loads(result.stdout.splitlines()[0])["n"]  # JSON lines, one object per row

        def wait_for(expected: int, timeout: float = 40.0) -> int:
            deadline = time.monotonic() + timeout
            got = -1
            while time.monotonic() < deadline:
                got = count()
                if got == expected:
                    return got
                time.sleep(0.3)
            return got

        assert wait_for(30) == 30
        producer.put(20, batch="after-start")
        assert wait_for(50) == 50
        split(kinesis, stream, open_shards(kinesis, stream)[0])
        producer.put(40, batch="after-split")
        assert wait_for(90) == 90
        describe = runner("describe", "--destination", destination, table)
        assert describe.returncode == 0 and "pk" in describe.stdout
        second = runner("sync", "--source", source, "--destination", destination)
        assert second.returncode == 3 and "Another runner" in second.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Follow stopped" in err
    rows = collection_rows(tmp_path, table)
    assert len(rows) == len({r[0] for r in rows}) == 90
    # The committed state covers everything: a sync now reads nothing new.
    again = runner("sync", "--source", source, "--destination", destination)
    assert again.returncode == 0 and "Sync done: 0 records" in again.stderr


def test_reset_forgets_state_and_optionally_empties(tmp_path, kinesis_mock, kinesis, new_stream):
    stream = new_stream(shards=1, prefix="reset")
    Producer(kinesis, stream).put(10)
    source, destination = write_configs(tmp_path, kinesis_mock, stream)
    assert runner("sync", "--source", source, "--destination", destination).returncode == 0
    reset = runner("reset", "--destination", destination, "--stream", stream, "--empty-collection")
    assert reset.returncode == 0 and "10 documents deleted" in reset.stderr
    assert collection_rows(tmp_path, table_name(stream)) == []
    again = runner("sync", "--source", source, "--destination", destination)
    assert "Sync done: 10 records" in again.stderr
    assert len(collection_rows(tmp_path, table_name(stream))) == 10


def test_config_errors_exit_2_with_a_message(tmp_path, kinesis_mock):
    source, destination = write_configs(tmp_path, kinesis_mock, "no-such-stream")
    result = runner("sync", "--source", source, "--destination", destination)
    assert result.returncode == 2
    assert "no-such-stream" in result.stderr and "config_error" in result.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = runner("sync", "--source", str(bad), "--destination", destination)
    assert result.returncode == 2 and "not valid JSON" in result.stderr


def test_an_idle_follow_makes_no_commits(tmp_path, kinesis_mock, kinesis, new_stream):
    """The source checkpoints every checkpoint_interval_seconds even when nothing arrives; the runner commits only
    states that moved (collection_runner/repeated_states.py): after the records are in, an idle follow of 4 s with a
    0.5 s checkpoint interval adds no commit."""
    stream = new_stream(shards=2, prefix="idle")
    producer = Producer(kinesis, stream)
    producer.put(10)
    source, destination = write_configs(tmp_path, kinesis_mock, stream, checkpoint_interval_seconds=0.5)
    proc = subprocess.Popen([SCRIPT, "follow", "--source", source, "--destination", destination],
                            stderr=subprocess.PIPE, text=True)
    table = table_name(stream)

    def committed_states() -> list:
        result = runner("stats", "--destination", destination, "--format", "json")
        return [c["state_committed_at"] for c in json.loads(result.stdout)["collections"]] \
            if result.returncode == 0 else []

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            result = runner("query", "--destination", destination, "--format", "json", f'SELECT count(*) AS n FROM "{table}"')
            if result.returncode == 0 and json.loads(result.stdout.splitlines()[0])["n"] == 10:
                break
            time.sleep(0.3)
        time.sleep(1.5)  # the checkpoint right after the records (the source's drained checkpoint) goes in
        before = committed_states()
        time.sleep(4)
        after = committed_states()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert before and before == after, (before, after)
    assert len(collection_rows(tmp_path, table)) == 10
