"""kinesis-collection with its source in a process of its own (collection_runner/source_process.py), against the
in-memory Kinesis (integration_tests/replay.py): the same collection and state as the source in the runner's own
process (the reference, ``--source-in-process``), no orphan after a SIGKILL, the child's errors as the runner's
exit codes."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Tuple

import duckdb
import pytest

from integration_tests.process_helpers import children_of, gone
from integration_tests.fault_proxy import FaultProxy
from integration_tests.replay import ReplayData, ReplayStream

SCRIPT = shutil.which("kinesis-collection") or str(Path(sys.executable).parent / "kinesis-collection")
SECRET = "source-process-secret-8f2c"


def mixed_record(shard: int, offset: int) -> Tuple[str, bytes]:
    """Records of every kind the hand-off treats apart: plain objects (the framed text path), ``_op`` deletes and
    repserts of repeated ids, ``_meta`` and nested ``_event_time`` keys (the text path's conservative fallback),
    integers past 64 bits and nesting deeper than orjson writes (only the RECORD line carries them), strings with tabs, newlines and non-ASCII text, and
    payloads that are not JSON objects."""
    key = f"k{shard}-{offset % 37}"  # ids repeat within a shard only: across shards, order is not defined
    kind = offset % 9
    if kind == 0:
        body = {"_id": key, "n": offset, "_op": "DELETE" if offset % 2 else "REPSERT"}
    elif kind == 1:
        body = {"_id": key, "n": offset, "_meta": {"note": "kept"}}
    elif kind == 2:
        body = {"_id": key, "n": offset, "big": 2**70 + offset}
    elif kind == 3:
        body = {"_id": key, "n": offset, "text": "tab\there\nnew line, é ✓"}
    elif kind == 4:
        body = {"_id": key, "n": offset, "nested": {"_event_time": "2026-01-01T00:00:00Z"}}
    elif kind == 5:
        return f"pk-{shard}-{offset}", b"not json at all"
    elif kind == 6:
        return f"pk-{shard}-{offset}", b"[1, 2, 3]"
    elif kind == 8 and offset % 5 == 0:  # nested 990 levels: past orjson's writer (254), within the parser's 1024
        return f"pk-{shard}-{offset}", ('{"_id":"%s","n":%d,"deep":' % (key, offset) + "[" * 990 + "1" + "]" * 990 + "}").encode()
    else:
        body = {"_id": key, "n": offset, "shard": shard, "amount": offset / 7}
    return f"pk-{shard}-{offset}", json.dumps(body, ensure_ascii=False).encode()


@pytest.fixture
def replay():
    data = ReplayData([
        ReplayStream("mixed", shards=2, records_per_shard=400, make_record=mixed_record),
        ReplayStream("plain", shards=2, records_per_shard=3000),
    ])
    with FaultProxy.replay(data, max_lifetime_seconds=240, max_requests=100_000) as server:
        yield server


def configs(tmp_path: Path, endpoint: str, label: str, streams: List[str]) -> Tuple[str, str, Path]:
    source = tmp_path / f"source-{label}.json"
    source.write_text(json.dumps({
        "credentials": {"auth_type": "access_keys", "aws_access_key_id": "test", "aws_secret_access_key": SECRET},
        "region": "us-east-1", "endpoint_url": endpoint, "streams": streams,
    }))
    db = tmp_path / f"{label}.duckdb"
    destination = tmp_path / f"destination-{label}.json"
    destination.write_text(json.dumps({"store": {"store_type": "duckdb", "path": str(db)}, "batch_size": 700}))
    return str(source), str(destination), db


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=timeout)


def contents(db: Path):
    """Every collection's documents (without what differs between two runs by design: the ingestion's own ids and
    times) and every committed stream state."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        result = {}
        for (table,) in con.execute("SELECT table_name FROM _collection_catalog ORDER BY 1").fetchall():
            result[table] = con.execute(
                f'SELECT * EXCLUDE (_airbyte_raw_id, _airbyte_extracted_at) FROM "{table}" ORDER BY _id'
            ).fetchall()
        states = con.execute("SELECT stream_key, state_json FROM _collection_state ORDER BY 1").fetchall()
        result["states"] = [(key, json.loads(text)["stream"]["stream_state"]) for key, text in states]
        return result
    finally:
        con.close()


def test_the_source_process_gives_the_same_collections_and_states_as_the_source_in_the_runners_process(tmp_path, replay):
    streams = ["mixed", "plain"]
    source, destination, child_db = configs(tmp_path, replay.endpoint_url, "child", streams)
    separate = run("sync", "--source", source, "--destination", destination)
    assert separate.returncode == 0, separate.stderr[-3000:]
    source, destination, reference_db = configs(tmp_path, replay.endpoint_url, "reference", streams)
    reference = run("sync", "--source", source, "--destination", destination, "--source-in-process")
    assert reference.returncode == 0, reference.stderr[-3000:]
    got, expected = contents(child_db), contents(reference_db)
    assert set(got) == {"mixed", "plain", "states"}
    assert len(got["plain"]) == 6000 and len(got["mixed"]) > 74  # (the mixed ids repeat; non-object payloads get their own)
    for name in expected:
        assert got[name] == expected[name], f"{name}: the source process and the reference differ"
    for result in (separate, reference):
        assert "Sync done: 6,800 records" in result.stderr, result.stderr[-2000:]
        assert SECRET not in result.stdout + result.stderr
    # the child's own log lines reach the runner's stderr
    assert "reading shard shardId-000000000000" in separate.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_a_sigkilled_runner_leaves_no_source_process_behind(tmp_path, replay):
    source, destination, _ = configs(tmp_path, replay.endpoint_url, "kill", ["plain"])
    proc = subprocess.Popen([SCRIPT, "follow", "--source", source, "--destination", destination],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        children: List[int] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            children = children_of(proc.pid)
            if children:
                break
            time.sleep(0.1)
        assert children, "the runner started no source process"
        (child,) = children
        with open(f"/proc/{child}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
        assert b"collection_runner.source_child" in argv and not any(SECRET.encode() in part for part in argv)
        time.sleep(3)  # reading by now (its imports done, the job sent)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 5
        while not gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(child), f"the source process {child} outlived its runner"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_the_childs_errors_become_the_runners_exit_codes_with_their_messages(tmp_path, replay):
    source, destination, _ = configs(tmp_path, replay.endpoint_url, "errors", ["plain"])
    catalog = tmp_path / "catalog.json"
    pk = [["_kinesis_shard_id"], ["_kinesis_sequence_number"], ["_kinesis_sub_sequence_number"]]
    catalog.write_text(json.dumps({"streams": [{
        "stream": {"name": "no-such-stream", "json_schema": {"type": "object"}, "supported_sync_modes": ["incremental"]},
        "sync_mode": "incremental", "destination_sync_mode": "append_dedup", "primary_key": pk,
    }]}))
    missing = run("sync", "--source", source, "--destination", destination, "--catalog", str(catalog))
    assert missing.returncode == 2, missing.stderr[-2000:]
    assert "config_error" in missing.stderr and "no-such-stream" in missing.stderr
    assert "Traceback" not in missing.stderr and SECRET not in missing.stderr

    # an endpoint that refuses connections once the source reads: an outage, exit 3 (the parent only reads the store)
    refused = tmp_path / "source-refused.json"
    config = json.loads(Path(source).read_text())
    config.update(endpoint_url="http://127.0.0.1:9", retry_budget_seconds=2)
    refused.write_text(json.dumps(config))
    catalog.write_text(catalog.read_text().replace("no-such-stream", "plain"))
    outage = run("sync", "--source", str(refused), "--destination", destination, "--catalog", str(catalog), timeout=120)
    assert outage.returncode == 3, outage.stderr[-2000:]
    assert "transient_error" in outage.stderr and "Traceback" not in outage.stderr
