"""Issue 15, items 3 and 10 (destination): big records, memory and batch bounds in the config, DuckDB paths that are
not regular files.

* Big records (append_dedup batches of 1 MB documents, single records of 10-20 MB, wide documents) are written by
  the ``destination-collection write`` process with the default settings, every document stored, and its peak RSS
  (VmHWM polled from /proc) stays under a generous 1 GB. Before: DuckDB's ``OutOfMemoryException`` as "Something
  went wrong", on every retry.
* ``batch_max_bytes`` bounds a batch by input bytes; a record bigger than the bound is a batch of its own.
* An out-of-memory error that still happens is a config_error naming the stream and the settings.
* memory_limit / temp_directory / batch_max_bytes are validated config fields (the environment is not read).
* A DuckDB path (or its .wal) that is a FIFO, a directory, a device, a socket, or a symlink to one: check and write
  fail fast with a config_error naming the path (before: check hung forever on a FIFO).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_collection.config import parse_config
from destination_collection.protocol_loop import write_messages
from destination_collection.stores import open_store
from unit_tests.destination.harness import record, state, stream

MiB = 1024 * 1024
GB = 10**9
CLI = str(Path(sys.executable).with_name("destination-collection"))


def _catalog(mode: str = "append_dedup") -> dict[str, Any]:
    return {"streams": [stream("s", mode=mode, pk=[["k"]])]}


def _lines(records: list[dict[str, Any]], final: Any = "end") -> bytes:
    messages = [record("s", data) for data in records] + [state("s", final)]
    return b"".join(json.dumps(m).encode() + b"\n" for m in messages)


def _run_write(tmp_path: Path, config: dict[str, Any], payload: bytes, timeout: float = 240) -> tuple[int, list[dict], str, int]:
    """``destination-collection write`` as a child process; (exit code, stdout messages, stderr, peak RSS bytes)."""
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "catalog.json").write_text(json.dumps(_catalog()))
    (tmp_path / "input.jsonl").write_bytes(payload)
    with open(tmp_path / "input.jsonl", "rb") as stdin, open(tmp_path / "out", "wb") as out, open(tmp_path / "err", "wb") as err:
        proc = subprocess.Popen(
            [CLI, "write", "--config", str(tmp_path / "config.json"), "--catalog", str(tmp_path / "catalog.json")],
            stdin=stdin, stdout=out, stderr=err,
        )
        peak = 0
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            try:
                with open(f"/proc/{proc.pid}/status") as status:
                    for line in status:
                        if line.startswith("VmHWM:"):
                            peak = max(peak, int(line.split()[1]) * 1024)
            except OSError:
                pass
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                pytest.fail(f"write did not finish within {timeout}s")
            time.sleep(0.02)
    messages = [json.loads(line) for line in (tmp_path / "out").read_text().splitlines() if line.strip()]
    return proc.returncode, messages, (tmp_path / "err").read_text(), peak


def _documents(db: Path, config: dict[str, Any]) -> dict[str, Any]:
    store = open_store(parse_config(config), read_only=True)
    try:
        return {row[0]: json.loads(row[3]) for row in store.iter_documents("s")}
    finally:
        store.close()


def _errors(messages: list[dict]) -> list[str]:
    return [m["trace"]["error"]["message"] for m in messages if m.get("type") == "TRACE" and m["trace"].get("type") == "ERROR"]


BIG_CASES = {
    # 25 documents of 1 MB in one append_dedup batch: a string field, nested objects, 256+ typed columns
    "25x1MB-string": lambda: [{"k": i, "v": chr(97 + i % 26) * 1_000_000} for i in range(25)],
    "25x1MB-nested": lambda: [{"k": i, "items": [{"a": j, "b": "y" * 70, "c": [1, 2, 3]} for j in range(10_000)]} for i in range(25)],
    "25x1MB-wide": lambda: [{"k": i, **{f"f{j}": "z" * 1000 for j in range(990)}} for i in range(25)],
    "1x10MiB": lambda: [{"k": 0, "v": "x" * (10 * MiB - 100)}],
    "4x10MiB": lambda: [{"k": i, "v": str(i) * (10 * MiB - 100)} for i in range(4)],
    "1x20MB": lambda: [{"k": 0, "v": "x" * 20_000_000}],
}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("case", list(BIG_CASES))
def test_big_records_are_written_with_the_default_settings(tmp_path, case, reliability):
    """Written twice (insert, then update of the same _ids): both succeed, every document is stored in full, the
    state is echoed, and the write process stays under 1 GB of resident memory."""
    db = tmp_path / "c.duckdb"
    config = {"store": {"store_type": "duckdb", "path": str(db)}}
    records = BIG_CASES[case]()
    peaks = []
    for attempt in ("insert", "update"):
        if attempt == "update":
            for data in records:
                data["round"] = 2
        code, messages, stderr, peak = _run_write(tmp_path, config, _lines(records, attempt))
        peaks.append(peak)
        assert code == 0, (_errors(messages), stderr[-2000:])
        echoed = [m["state"]["stream"]["stream_state"] for m in messages if m.get("type") == "STATE"]
        assert echoed == [attempt]
        assert peak < GB, f"{case} {attempt}: peak RSS {peak / 1e6:.0f} MB"
    documents = _documents(db, config)
    assert len(documents) == len(records)
    for data in records:
        assert documents[json.dumps([data["k"]])] == data
    reliability(cases=1)
    print(f"{case}: peak RSS {[round(p / 1e6) for p in peaks]} MB")


def test_batch_max_bytes_bounds_a_batch_and_a_bigger_record_is_its_own_batch(tmp_path, monkeypatch, reliability):
    from destination_collection.collection_writer import CollectionWriter

    batches: list[int] = []
    original = CollectionWriter.take_changes

    def take_changes(self):
        if self.buffer:
            batches.append(len(self.buffer))
        return original(self)

    monkeypatch.setattr(CollectionWriter, "take_changes", take_changes)
    config = {"store": {"store_type": "duckdb", "path": str(tmp_path / "b.duckdb")}, "batch_max_bytes": 100_000}
    small = [record("s", {"k": i, "v": "a" * 20_000}) for i in range(10)]  # ~20 kB each: 4 per 100 kB batch
    huge = [record("s", {"k": 100, "v": "h" * 300_000})]  # bigger than the bound: alone, never refused
    tail = [record("s", {"k": 200 + i, "v": "t" * 20_000}) for i in range(2)]
    lines = [json.dumps(m) for m in small + huge + tail + [state("s", 1)]]
    echoes = list(write_messages(config, _catalog("append"), lines))
    assert [e["state"]["destinationStats"]["recordCount"] for e in echoes] == [13.0]
    assert sum(batches) == 13
    assert 1 in batches and batches[:3] == [4, 4, 2] and batches[3] == 1, batches
    # objects instead of lines (the runner's in-process path) are measured too
    batches.clear()
    config["store"]["path"] = str(tmp_path / "b2.duckdb")
    list(write_messages(config, _catalog("append"), small + huge + tail + [state("s", 1)]))
    assert batches[:3] == [4, 4, 2] and batches[3] == 1, batches
    documents = _documents(tmp_path / "b2.duckdb", config)
    assert len(documents) == 13
    reliability(cases=2)


def test_out_of_memory_names_the_stream_and_the_settings(tmp_path, reliability):
    """A memory_limit too small for a batch: a config_error naming the stream, memory_limit and batch_max_bytes (not
    "Something went wrong"); nothing of that batch is committed; what the earlier state covered is."""
    config = {"store": {"store_type": "duckdb", "path": str(tmp_path / "o.duckdb"), "memory_limit": "64MB"}}
    messages = [record("s", {"k": 1, "v": "small"}), state("s", 1)]
    messages += [record("s", {"k": i, "v": "y" * 3_000_000}) for i in range(2, 40)] + [state("s", 2)]
    echoed = []
    with pytest.raises(AirbyteTracedException) as caught:
        for echo in write_messages(config, _catalog(), messages):
            echoed.append(echo["state"]["stream"]["stream_state"])
    message = caught.value.message
    assert caught.value.failure_type.value == "config_error"
    assert "'s'" in message and "memory_limit" in message and "64MB" in message and "batch_max_bytes" in message
    assert echoed in ([], [1])  # state 1's echo may still wait for its background COMMIT
    store = open_store(parse_config(config), read_only=True)
    try:
        committed = store.states.messages()
        ids = [row[0] for row in store.iter_documents("s")]
    finally:
        store.close()
    assert [c["stream"]["stream_state"] for c in committed] == [1]
    assert ids == [json.dumps([1])]
    reliability(cases=1)


def test_memory_settings_come_from_the_config_not_the_environment(tmp_path, monkeypatch, reliability):
    monkeypatch.setenv("DESTINATION_COLLECTION_DUCKDB_MEMORY_LIMIT", "10GB")
    temp = tmp_path / "spill"
    config = parse_config({"store": {"store_type": "duckdb", "path": str(tmp_path / "m.duckdb"), "memory_limit": "300MiB",
                                     "temp_directory": str(temp)}})
    store = open_store(config)
    try:
        settings = dict(store.fetchall("SELECT name, value FROM duckdb_settings() WHERE name IN ('memory_limit', 'temp_directory')"))
    finally:
        store.close()
    assert settings["memory_limit"] == "300.0 MiB"
    assert settings["temp_directory"] == str(temp)
    default = open_store(parse_config({"store": {"store_type": "duckdb", "path": str(tmp_path / "d.duckdb")}}))
    try:
        settings = dict(default.fetchall("SELECT name, value FROM duckdb_settings() WHERE name IN ('memory_limit', 'temp_directory')"))
    finally:
        default.close()
    assert settings["memory_limit"] == "244.1 MiB"  # 256MB, whatever the environment says
    assert settings["temp_directory"] == str(tmp_path / "d.duckdb") + ".tmp"
    reliability(cases=2)


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"memory_limit": "lots"}, "store.duckdb.memory_limit"),
        ({"memory_limit": "80%"}, "store.duckdb.memory_limit"),
        ({"memory_limit": "1MB"}, "store.duckdb.memory_limit"),
        ({"memory_limit": "256MB'; SET threads=64; --"}, "store.duckdb.memory_limit"),
        ({"memory_limit": ""}, "store.duckdb.memory_limit"),
        ({"temp_directory": ""}, "store.duckdb.temp_directory"),
        ({"temp_directory": "  "}, "store.duckdb.temp_directory"),
        ({"temp_directory": "/tmp/a\x00b"}, "store.duckdb.temp_directory"),
        ({"batch_max_bytes": 0}, "batch_max_bytes"),
        ({"batch_max_bytes": -1}, "batch_max_bytes"),
        ({"batch_max_bytes": 10**12}, "batch_max_bytes"),
        ({"batch_max_bytes": "big"}, "batch_max_bytes"),
    ],
)
def test_invalid_memory_settings_are_config_errors(tmp_path, fields, named, reliability):
    store = {"store_type": "duckdb", "path": str(tmp_path / "x.duckdb")}
    top = {}
    for key, value in fields.items():
        (top if key.startswith("batch") else store)[key] = value
    with pytest.raises(AirbyteTracedException) as caught:
        parse_config({"store": store, **top})
    assert caught.value.failure_type.value == "config_error"
    assert named in caught.value.message
    reliability(cases=1)


@pytest.mark.parametrize("value, ok", [("256MB", True), ("1.5GiB", True), ("512 mib", True), ("64MB", True), ("63MB", False)])
def test_memory_limit_units(tmp_path, value, ok):
    raw = {"store": {"store_type": "duckdb", "path": str(tmp_path / "x.duckdb"), "memory_limit": value}}
    if ok:
        assert parse_config(raw).store.memory_limit == value
    else:
        with pytest.raises(AirbyteTracedException):
            parse_config(raw)


def _special_paths(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name → (database path, what the message must call it)."""
    fifo = tmp_path / "fifo.duckdb"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.duckdb"
    folder.mkdir()
    sock_path = tmp_path / "s.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    paths = {
        "fifo": (fifo, "FIFO"),
        "directory": (folder, "directory"),
        "dev-null": (Path("/dev/null"), "character device"),
        "dev-zero": (Path("/dev/zero"), "character device"),
        "socket": (sock_path, "socket"),
    }
    for name, (target, what) in list(paths.items()):
        link = tmp_path / f"link-to-{name}.duckdb"
        link.symlink_to(target)
        paths[f"symlink-to-{name}"] = (link, what)
    wal_db = tmp_path / "walfifo.duckdb"
    os.mkfifo(str(wal_db) + ".wal")
    paths["wal-is-fifo"] = (wal_db, "FIFO")
    return paths


def _cli(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.timeout(240)
def test_duckdb_path_that_is_not_a_regular_file_fails_fast(tmp_path, reliability):
    """check and write: a config_error naming the path within seconds (a FIFO used to hang check forever)."""
    cases = _special_paths(tmp_path)
    (tmp_path / "catalog.json").write_text(json.dumps(_catalog()))
    for name, (path, what) in cases.items():
        config = tmp_path / f"{name}.json"
        config.write_text(json.dumps({"store": {"store_type": "duckdb", "path": str(path)}}))
        started = time.monotonic()
        done = _cli(["check", "--config", str(config)])
        status = [json.loads(l) for l in done.stdout.splitlines() if '"CONNECTION_STATUS"' in l]
        assert status and status[0]["connectionStatus"]["status"] == "FAILED", (name, done.stdout[-500:])
        text = status[0]["connectionStatus"]["message"]
        assert str(path) in text and what in text, (name, text)
        done = _cli(["write", "--config", str(config), "--catalog", str(tmp_path / "catalog.json")])
        errors = [json.loads(l)["trace"]["error"] for l in done.stdout.splitlines() if '"TRACE"' in l]
        assert done.returncode == 1 and errors, (name, done.stdout[-500:], done.stderr[-500:])
        assert errors[0]["failure_type"] == "config_error" and str(path) in errors[0]["message"], (name, errors)
        assert time.monotonic() - started < 60, name
    # the in-process API (the runner's path) refuses them the same way
    for name, (path, what) in cases.items():
        with pytest.raises(AirbyteTracedException) as caught:
            open_store(parse_config({"store": {"store_type": "duckdb", "path": str(path)}}))
        assert caught.value.failure_type.value == "config_error" and what in caught.value.message
    reliability(cases=len(cases) * 3)


def test_temp_directory_that_is_a_file_is_a_config_error(tmp_path, reliability):
    blocker = tmp_path / "spill"
    blocker.write_text("not a folder")
    with pytest.raises(AirbyteTracedException) as caught:
        open_store(parse_config({"store": {"store_type": "duckdb", "path": str(tmp_path / "x.duckdb"), "temp_directory": str(blocker)}}))
    assert caught.value.failure_type.value == "config_error"
    assert str(blocker) in caught.value.message and "temp_directory" in caught.value.message
    reliability(cases=1)


# -- round 2: variants the first round's tests did not try ------------------------------------------------------
def test_many_streams_share_one_byte_bound(tmp_path, monkeypatch, reliability):
    """batch_max_bytes bounds the bytes buffered over ALL streams: 30 interleaved streams each nearly filling a batch
    used to hold 30 × batch_max_bytes (measured: 40 streams of 100 KB records, 4.6 GB RSS with the defaults)."""
    from destination_collection import collection_writer

    outstanding = {"now": 0, "peak": 0}
    real_add, real_take = collection_writer.CollectionWriter.add, collection_writer.CollectionWriter.take_changes

    def add(self, data, emitted_at, now, size=0):
        outstanding["now"] += size
        outstanding["peak"] = max(outstanding["peak"], outstanding["now"])
        return real_add(self, data, emitted_at, now, size)

    def take(self):
        outstanding["now"] -= self.buffered_bytes()
        return real_take(self)

    monkeypatch.setattr(collection_writer.CollectionWriter, "add", add)
    monkeypatch.setattr(collection_writer.CollectionWriter, "take_changes", take)
    streams, per_stream, bound = 30, 12, 256 * 1024
    config = {"store": {"store_type": "duckdb", "path": str(tmp_path / "m.duckdb")}, "batch_max_bytes": bound}
    catalog = {"streams": [stream(f"s{i}") for i in range(streams)]}
    lines = []
    for n in range(per_stream):
        for i in range(streams):
            lines.append(json.dumps(record(f"s{i}", {"k": n, "v": "x" * 20_000})).encode())
    lines += [json.dumps(state(f"s{i}", "end")).encode() for i in range(streams)]
    echoed = list(write_messages(config, catalog, lines))
    assert len(echoed) == streams
    biggest = max(len(line) for line in lines)
    assert outstanding["peak"] <= bound + biggest, f"{outstanding['peak']} bytes buffered with batch_max_bytes={bound}"
    store = open_store(parse_config(config), read_only=True)
    try:
        assert all(store.count_documents(f"s{i}") == per_stream for i in range(streams))  # nothing lost
    finally:
        store.close()
    reliability(cases=1)


@pytest.mark.parametrize("value", ["99999999TB", "1000000000000000000000000TB", "1001TB"])
def test_absurd_memory_limits_are_config_errors(tmp_path, value, reliability):
    """Before: DuckDB's own ParserException ("Memory value out of range") from write and check, no failure type."""
    with pytest.raises(AirbyteTracedException) as caught:
        parse_config({"store": {"store_type": "duckdb", "path": str(tmp_path / "x.duckdb"), "memory_limit": value}})
    assert caught.value.failure_type.value == "config_error" and "store.duckdb.memory_limit" in caught.value.message
    reliability(cases=1)


def test_temp_directory_that_cannot_be_created_or_written_is_a_config_error(tmp_path, reliability):
    """DuckDB creates temp_directory only when a big batch first spills; a folder it cannot create or write failed
    there, on every retry. Now open (check and write) refuses it, naming it. A read-only open (query) does not care."""
    for folder in ("/proc/self/kc-spill", "/proc/self/kc-spill/deeper", "/proc/self"):
        with pytest.raises(AirbyteTracedException) as caught:
            open_store(parse_config({"store": {"store_type": "duckdb", "path": str(tmp_path / "x.duckdb"), "temp_directory": folder}}))
        assert caught.value.failure_type.value == "config_error", folder
        assert folder in caught.value.message and "temp_directory" in caught.value.message, caught.value.message
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store": {"store_type": "duckdb", "path": str(tmp_path / "x.duckdb"), "temp_directory": "/proc/self/kc-spill"}}))
    done = _cli(["check", "--config", str(config)])
    status = [json.loads(l) for l in done.stdout.splitlines() if '"CONNECTION_STATUS"' in l]
    assert status[0]["connectionStatus"]["status"] == "FAILED" and "/proc/self/kc-spill" in status[0]["connectionStatus"]["message"]
    fine = open_store(parse_config({"store": {"store_type": "duckdb", "path": str(tmp_path / "y.duckdb"), "temp_directory": str(tmp_path / "a" / "b")}}))
    fine.close()
    reliability(cases=4)
