"""Issue 15 (item 9): the runner's lock file and query-socket folder are safe against what others put in their way.

Whatever sits at ``<db>.runner.lock`` that is not the runner's own regular file — a symlink to a file we own, to
an /etc/passwd-like file, a dangling symlink, a hard link to another file, a directory, a FIFO — is refused with an
error naming the path (config_error), and its target is never created, truncated or written. The lock's directory
must be ours (or root's) and not writable by others unless sticky. A lock file left by a SIGKILLed runner is reused,
and the socket folder it names is removed once its owner is dead; two runners still exclude each other.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from collection_runner.locking import RunnerBusy, StoreLock, lock_path, read_holder
from destination_collection.config import parse_config

SECRET_CONTENT = "root:x:0:0:root:/root:/bin/bash\nthe target's contents, which must survive\n"


def _config(db: Path):
    return parse_config({"store": {"store_type": "duckdb", "path": str(db)}})


def _target(tmp_path: Path) -> Path:
    target = tmp_path / "elsewhere" / "passwd"
    target.parent.mkdir()
    target.write_text(SECRET_CONTENT)
    return target


def _assert_refused(db: Path, words: str) -> AirbyteTracedException:
    with pytest.raises(AirbyteTracedException) as caught:
        with StoreLock(_config(db), {"mode": "sync"}):
            pass
    exc = caught.value
    assert exc.failure_type == FailureType.config_error, exc.message
    assert lock_path(str(db)) in exc.message, exc.message
    assert words in exc.message, exc.message
    return exc


def _plant(kind: str, tmp_path: Path, lock: Path):
    """Put a ``kind`` at the lock path; returns the file whose contents must survive (or None)."""
    if kind == "symlink-to-own-file":
        target = _target(tmp_path)
        lock.symlink_to(target)
        return target
    if kind == "symlink-relative":
        target = _target(tmp_path)
        lock.symlink_to(os.path.relpath(target, lock.parent))
        return target
    if kind == "dangling-symlink":
        lock.symlink_to(tmp_path / "elsewhere-not-yet" / "created-by-attacker")
        return None
    if kind == "hard-link":
        target = _target(tmp_path)
        os.link(target, lock)
        return target
    if kind == "directory":
        lock.mkdir()
        return None
    if kind == "fifo":
        os.mkfifo(lock)
        return None
    raise ValueError(kind)


@pytest.mark.parametrize(
    "kind, words",
    [
        ("symlink-to-own-file", "symbolic link"),
        ("symlink-relative", "symbolic link"),
        ("dangling-symlink", "symbolic link"),
        ("hard-link", "hard links"),
        ("directory", "a directory"),
        ("fifo", "a FIFO"),
    ],
)
def test_anything_but_our_own_lock_file_is_refused_and_left_untouched(tmp_path, kind, words, reliability):
    db = tmp_path / "collection.duckdb"
    lock = Path(lock_path(str(db)))
    target = _plant(kind, tmp_path, lock)
    before = os.lstat(lock)
    started = time.monotonic()
    _assert_refused(db, words)
    assert time.monotonic() - started < 2, "opening the lock path blocked (a FIFO?)"
    after = os.lstat(lock)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode), "the planted entry was replaced"
    if target is not None:
        assert target.read_text() == SECRET_CONTENT, "the link's target was written"
        assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(os.stat(target).st_mode)
    if kind == "dangling-symlink":
        assert not (tmp_path / "elsewhere-not-yet").exists(), "the dangling symlink's target was created"
    # a query client reading the holder is refused too (it would follow the planted file to a planted socket)
    if kind != "directory":
        with pytest.raises(AirbyteTracedException) as caught:
            read_holder(str(db))
        assert lock_path(str(db)) in caught.value.message
    reliability(cases=1)


def test_world_writable_directory_without_sticky_bit_is_refused(tmp_path, reliability):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(AirbyteTracedException) as caught:
        with StoreLock(_config(shared / "collection.duckdb")):
            pass
    assert caught.value.failure_type == FailureType.config_error
    assert str(shared) in caught.value.message and "chmod o-w" in caught.value.message
    assert not Path(lock_path(str(shared / "collection.duckdb"))).exists(), "the lock file was created anyway"
    # sticky (like /tmp): accepted
    os.chmod(shared, 0o1777)
    with StoreLock(_config(shared / "collection.duckdb")):
        assert stat.S_IMODE(os.stat(lock_path(str(shared / "collection.duckdb"))).st_mode) & 0o077 == 0
    reliability(cases=2)


def test_directory_of_another_user_is_refused(tmp_path, monkeypatch, reliability):
    """As root: a directory chowned to another uid; otherwise: the current user pretends to have another uid."""
    folder = tmp_path / "theirs"
    folder.mkdir()
    if os.geteuid() == 0:
        os.chown(folder, 4242, 4242)
    else:
        real_uid = os.geteuid()
        monkeypatch.setattr(os, "geteuid", lambda: real_uid + 4242)
    db = folder / "collection.duckdb"
    with pytest.raises(AirbyteTracedException) as caught:
        with StoreLock(_config(db)):
            pass
    assert caught.value.failure_type == FailureType.config_error
    assert "belongs to another user" in caught.value.message and str(folder) in caught.value.message
    assert not Path(lock_path(str(db))).exists()
    reliability(cases=1)


_KILLED_RUNNER = r"""
import os, sys, socket, tempfile, time
sys.path.insert(0, {root!r})
from collection_runner.locking import StoreLock
from destination_collection.config import parse_config
lock = StoreLock(parse_config({{"store": {{"store_type": "duckdb", "path": {db!r}}}}}), {{"mode": "follow"}}).acquire()
folder = tempfile.mkdtemp(prefix="kinesis-collection-")
path = os.path.join(folder, "query.sock")
server = socket.socket(socket.AF_UNIX); server.bind(path); server.listen()
lock.update(socket=path)
print(path, flush=True)
time.sleep(60)
"""


def _start_holder(db: Path) -> "tuple[subprocess.Popen, str]":
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUNNER.format(root=root, db=str(db))], stdout=subprocess.PIPE, text=True)
    socket_path = proc.stdout.readline().strip()
    assert socket_path, "the holder did not start"
    return proc, socket_path


def test_lock_of_a_sigkilled_runner_is_reused_and_its_socket_folder_removed(tmp_path, reliability):
    db = tmp_path / "collection.duckdb"
    proc, socket_path = _start_holder(db)
    try:
        holder = read_holder(str(db))
        assert holder and holder["pid"] == proc.pid and holder["socket"] == socket_path
        # while it lives: a second runner is refused (transient), and its socket folder is left alone
        with pytest.raises(RunnerBusy) as caught:
            StoreLock(_config(db), {"mode": "sync"}).acquire()
        assert caught.value.failure_type == FailureType.transient_error and str(proc.pid) in caught.value.message
        assert os.path.exists(socket_path)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    folder = os.path.dirname(socket_path)
    assert os.path.isdir(folder), "precondition: a killed runner leaves its socket folder"
    assert read_holder(str(db)) is None, "no live holder after the kill"
    inode = os.stat(lock_path(str(db))).st_ino
    with StoreLock(_config(db), {"mode": "sync"}):
        assert os.stat(lock_path(str(db))).st_ino == inode, "the lock file was replaced instead of reused"
        assert not os.path.exists(folder), "the dead runner's socket folder is still there"
        assert json.loads(Path(lock_path(str(db))).read_text())["pid"] == os.getpid()
    assert Path(lock_path(str(db))).read_text() == "", "released: the description is cleared"
    reliability(cases=1, kills=1)


@pytest.mark.parametrize("planted", ["not-our-prefix", "extra-file", "symlinked-folder", "live-pid"])
def test_stale_lock_naming_a_folder_that_is_not_a_dead_runners_is_left_alone(tmp_path, planted, reliability):
    """A lock file's ``socket`` is data anyone may have written: only a dead runner's own socket folder goes."""
    db = tmp_path / "collection.duckdb"
    keep = Path(tempfile.mkdtemp(prefix="kinesis-collection-" if planted != "not-our-prefix" else "precious-", dir=tmp_path))
    sock_path = keep / "query.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    pid = 999_999_999
    named = sock_path
    if planted == "extra-file":
        (keep / "important.txt").write_text("keep me")
    elif planted == "symlinked-folder":
        link = tmp_path / "kinesis-collection-link"
        link.symlink_to(keep, target_is_directory=True)
        named = link / "query.sock"
    elif planted == "live-pid":
        pid = os.getpid()
    Path(lock_path(str(db))).write_text(json.dumps({"pid": pid, "socket": str(named)}))
    try:
        with StoreLock(_config(db), {"mode": "sync"}):
            pass
        assert sock_path.exists() and keep.is_dir(), f"{planted}: a folder that was not a dead runner's was removed"
    finally:
        server.close()
    reliability(cases=1)


def test_clean_stale_lock_without_socket_is_reused(tmp_path, reliability):
    db = tmp_path / "collection.duckdb"
    Path(lock_path(str(db))).write_text('{"pid": 999999999, "mode": "follow"}')
    os.chmod(lock_path(str(db)), 0o600)
    with StoreLock(_config(db), {"mode": "sync"}):
        assert json.loads(Path(lock_path(str(db))).read_text())["mode"] == "sync"
    reliability(cases=1)


# ---------------------------------------------------------------------------------------------------------------
# Round 2: what a lock file may hold, what a query client connects to, start-up signals, closed pipes, catalogs.
# ---------------------------------------------------------------------------------------------------------------
_STALE_CONTENTS = {
    "nested-arrays": "[" * 200_000,
    "nested-objects": '{"a":' * 50_000 + "1" + "}" * 50_000,
    "pid-too-big-for-kill": json.dumps({"pid": 2**70, "socket": "/tmp/kinesis-collection-gone/query.sock"}),
    "pid-negative-huge": json.dumps({"pid": -(2**70), "socket": "/tmp/kinesis-collection-gone/query.sock"}),
    "nul-in-socket-path": json.dumps({"pid": 999_999_999, "socket": "/tmp/kinesis-collection-\u0000x/query.sock"}),
    "lone-surrogate-in-socket-path": '{"pid": 999999999, "socket": "/tmp/kinesis-collection-\\ud800/query.sock"}',
    "socket-not-a-string": json.dumps({"pid": 999_999_999, "socket": ["/tmp/x"]}),
    "relative-socket": json.dumps({"pid": 999_999_999, "socket": "kinesis-collection-x/query.sock"}),
    "ten-megabytes": json.dumps({"pid": 999_999_999, "pad": "x" * (10 << 20)}),
    "nul-bytes": "\x00" * 4096,
    "invalid-utf8": b'{"pid": 1, "socket": "\xff\xfe"}',
    "json-array": "[1, 2, 3]",
}


@pytest.mark.parametrize("kind", sorted(_STALE_CONTENTS))
def test_whatever_a_stale_lock_file_holds_the_next_runner_starts(tmp_path, kind, reliability):
    """A killed runner's lock file (or one someone wrote into) is data: deep nesting (RecursionError), a pid too big
    for kill() (OverflowError), a NUL or a lone surrogate in the socket path (ValueError/UnicodeEncodeError) made
    every later start fail. Now each is ignored, the lock is taken, and the file holds our description."""
    db = tmp_path / "collection.duckdb"
    content = _STALE_CONTENTS[kind]
    Path(lock_path(str(db))).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    os.chmod(lock_path(str(db)), 0o600)
    with StoreLock(_config(db), {"mode": "sync"}):
        assert json.loads(Path(lock_path(str(db))).read_text())["pid"] == os.getpid()
    assert read_holder(str(db)) is None
    reliability(cases=1)


def test_a_lock_file_others_may_write_is_made_private_when_taken(tmp_path, reliability):
    """Its contents name the socket query clients connect to: nobody else may write it while we hold it."""
    db = tmp_path / "collection.duckdb"
    Path(lock_path(str(db))).write_text("{}")
    os.chmod(lock_path(str(db)), 0o666)
    with StoreLock(_config(db), {"mode": "sync"}):
        assert stat.S_IMODE(os.stat(lock_path(str(db))).st_mode) == 0o600
    reliability(cases=1)


_FAKE_RUNNER = r"""
import fcntl, json, os, socket, sys, time
lock_file, socket_path, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({"pid": pid or os.getpid(), "mode": "follow", "socket": socket_path}).encode())
server = None
listen = len(sys.argv) < 5 or sys.argv[4] != "no-listener"
if listen and not os.path.exists(socket_path) and os.path.isabs(socket_path) and os.path.isdir(os.path.dirname(socket_path)):
    server = socket.socket(socket.AF_UNIX)
    server.bind(socket_path)
    server.listen()
print("ready", flush=True)
deadline = time.monotonic() + 60
while server is not None and time.monotonic() < deadline:
    server.settimeout(deadline - time.monotonic())
    try:
        conn, _ = server.accept()
    except OSError:
        break
    received = conn.recv(65536)
    open(socket_path + ".received", "wb").write(received)
    conn.sendall(json.dumps({"ok": True, "output": "PLANTED ANSWER"}).encode() + b"\n")
    conn.close()
time.sleep(60)
"""


def _planted_socket(kind: str, tmp_path: Path) -> "tuple[str, int]":
    """A socket path for the fake runner to name, set up as ``kind``; and the pid it writes (0: its own)."""
    if kind == "folder-open-to-others":
        folder = tmp_path / "kinesis-collection-open"
        folder.mkdir()
        os.chmod(folder, 0o755)
        return str(folder / "query.sock"), 0
    if kind == "folder-not-ours-by-name":
        folder = tmp_path / "attacker-folder"
        folder.mkdir(mode=0o700)
        return str(folder / "query.sock"), 0
    if kind == "folder-is-a-symlink":
        real = tmp_path / "real-folder"
        real.mkdir(mode=0o700)
        link = tmp_path / "kinesis-collection-link"
        link.symlink_to(real, target_is_directory=True)
        return str(link / "query.sock"), 0
    if kind == "folder-of-another-user":
        folder = tmp_path / "kinesis-collection-theirs"
        folder.mkdir(mode=0o700)
        os.chown(folder, 4242, 4242)
        return str(folder / "query.sock"), 0
    if kind == "a-regular-file":
        folder = Path(tempfile.mkdtemp(prefix="kinesis-collection-", dir=tmp_path))
        (folder / "query.sock").write_text("not a socket")
        return str(folder / "query.sock"), 0
    if kind == "relative-path":
        return "kinesis-collection-x/query.sock", 0
    raise ValueError(kind)


def _run_query(db: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    destination = tmp_path / "destination.json"
    destination.write_text(json.dumps({"store": {"store_type": "duckdb", "path": str(db)}}))
    return subprocess.run(
        [_script("kinesis-collection"), "query", "--destination", str(destination), *extra, "SELECT 42 AS secret_query"],
        capture_output=True, text=True, timeout=60,
    )


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown a folder to another user")
@pytest.mark.parametrize(
    "kind", ["folder-open-to-others", "folder-not-ours-by-name", "folder-is-a-symlink", "folder-of-another-user", "a-regular-file", "relative-path"]
)
def test_query_client_never_talks_to_a_socket_that_is_not_the_runners(tmp_path, kind, reliability):
    """The lock file names the socket the query client connects to. A socket in a folder others can enter or own,
    reached through a symlink, not a socket, or a relative path, is refused (config_error, exit 2, naming it): the
    query is not sent, and a planted answer is never printed. Before: the client sent its SQL and printed the
    answer of whoever listened there."""
    db = tmp_path / "collection.duckdb"
    socket_path, pid = _planted_socket(kind, tmp_path)
    fake = subprocess.Popen([sys.executable, "-c", _FAKE_RUNNER, lock_path(str(db)), socket_path, str(pid)], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert fake.stdout.readline().strip() == "ready"
        result = _run_query(db, tmp_path)
    finally:
        fake.kill()
        fake.wait(timeout=10)
    assert "PLANTED ANSWER" not in result.stdout, f"{kind}: the planted socket answered the query"
    assert not os.path.exists(os.path.join(tmp_path, socket_path) + ".received"), f"{kind}: the query was sent to the planted socket"
    assert result.returncode == 2, (kind, result.returncode, result.stderr[-2000:])
    assert "config_error" in result.stderr and "refusing to connect" in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
    reliability(cases=1)


@pytest.mark.parametrize("kind", ["socket-gone", "pid-dead"])
def test_query_client_facing_a_runner_that_is_stopping_gets_a_transient_error(tmp_path, kind, reliability):
    """The runner holds the lock but its socket is already gone (stopping), or the pid it wrote is dead: exit 3,
    "try again", no traceback (before: FileNotFoundError as a system_error, exit 1)."""
    db = tmp_path / "collection.duckdb"
    folder = Path(tempfile.mkdtemp(prefix="kinesis-collection-", dir=tmp_path))
    socket_path = str(folder / "query.sock")
    pid = 999_999_999 if kind == "pid-dead" else 0
    if kind == "pid-dead":
        socket.socket(socket.AF_UNIX).bind(socket_path)
    fake = subprocess.Popen([sys.executable, "-c", _FAKE_RUNNER, lock_path(str(db)), socket_path, str(pid), "no-listener"], stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout.readline().strip() == "ready"
        result = _run_query(db, tmp_path)
    finally:
        fake.kill()
        fake.wait(timeout=10)
    assert result.returncode == 3, (kind, result.returncode, result.stderr[-2000:])
    assert "transient_error" in result.stderr and "try again" in result.stderr and "Traceback" not in result.stderr
    reliability(cases=1)


def test_query_output_into_a_closed_pipe_exits_0_without_noise(tmp_path, reliability):
    """``kinesis-collection query ... | head -1``: the reader leaves early. Exit 0, nothing on stderr (before: exit
    1 with "system_error: BrokenPipeError" and the interpreter's "Exception ignored" lines)."""
    import duckdb

    db = tmp_path / "collection.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE t AS SELECT range AS i, repeat('x', 100) AS pad FROM range(200000)")
    con.close()
    destination = tmp_path / "destination.json"
    destination.write_text(json.dumps({"store": {"store_type": "duckdb", "path": str(db)}}))
    result = subprocess.run(
        f"{_script('kinesis-collection')} query --destination {destination} --format json 'SELECT * FROM t' | head -c 10",
        shell=True, capture_output=True, text=True, timeout=120, executable="/bin/bash",
    )
    proc = subprocess.run(
        ["/bin/bash", "-c", f"set -o pipefail; {_script('kinesis-collection')} query --destination {destination} --format json 'SELECT * FROM t' 2>{tmp_path}/err | head -c 10 >/dev/null"],
        timeout=120,
    )
    assert result.stdout == '{"i":0,"pa'
    assert proc.returncode == 0, (proc.returncode, (tmp_path / "err").read_text()[-2000:])
    assert (tmp_path / "err").read_text() == "", (tmp_path / "err").read_text()[-2000:]
    reliability(cases=1)


_REFUSED_SOURCE = {
    "streams": ["s"], "region": "us-east-1", "endpoint_url": "http://127.0.0.1:1", "retry_budget_seconds": 60,
    "credentials": {"auth_type": "access_keys", "aws_access_key_id": "AKIAEXAMPLEKEY00", "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"},
}


@pytest.mark.parametrize(
    "signals",
    [[signal.SIGTERM], [signal.SIGINT], [signal.SIGHUP], [signal.SIGINT, signal.SIGTERM], [signal.SIGTERM, signal.SIGINT], [signal.SIGTERM, signal.SIGTERM]],
    ids=["TERM", "INT", "HUP", "INT-then-TERM", "TERM-then-INT", "TERM-twice"],
)
@pytest.mark.parametrize("delay", [0.3, 1.2, 2.5])
def test_a_stop_signal_during_start_up_exits_0_quietly_and_fast(tmp_path, signals, delay, reliability):
    """From the imports (the CDK's take ~1.5 s) through discovery against an endpoint that refuses (a 60 s retry
    budget): a stop signal (or two, 50 ms apart) ends ``sync`` with exit 0 within a second, one line on stderr, no
    traceback, nothing on stdout. Before: exit 143 (SIGTERM) / a KeyboardInterrupt traceback (SIGINT) during the
    imports, SIGHUP killed the process at any time, and a second signal while the interpreter finalized killed it
    (exit -15/-2)."""
    source = tmp_path / "source.json"
    source.write_text(json.dumps(_REFUSED_SOURCE))
    destination = tmp_path / "destination.json"
    destination.write_text(json.dumps({"store": {"store_type": "duckdb", "path": str(tmp_path / "c.duckdb")}}))
    proc = subprocess.Popen(
        [_script("kinesis-collection"), "sync", "--source", str(source), "--destination", str(destination)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(delay)
    signalled = time.monotonic()
    for n, signum in enumerate(signals):
        if n:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - signalled
    assert proc.returncode == 0, (proc.returncode, err[-2000:])
    assert elapsed < 3.0, f"exited {elapsed:.1f} s after the signal"
    assert out == "" and "Traceback" not in err and "nothing to commit" in err, (out[:500], err[-2000:])
    assert _REFUSED_SOURCE["credentials"]["aws_secret_access_key"] not in out + err
    reliability(cases=1, signals=1)


@pytest.mark.parametrize("streams, words", [(["a", "b", "a"], "'a' more than once"), ([], "lists no stream")])
def test_a_catalog_listing_a_stream_twice_or_none_is_a_config_error_naming_it(tmp_path, streams, words, reliability):
    from airbyte_cdk.models import AirbyteStream, ConfiguredAirbyteCatalog, ConfiguredAirbyteCatalogSerializer, SyncMode

    from collection_runner.configs import configured_stream, load_catalog

    configured = [
        configured_stream(AirbyteStream(name=name, json_schema={"type": "object"}, supported_sync_modes=[SyncMode.incremental]))
        for name in streams
    ]
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(ConfiguredAirbyteCatalogSerializer.dump(ConfiguredAirbyteCatalog(streams=configured))))
    with pytest.raises(AirbyteTracedException) as caught:
        load_catalog(str(path), {}, None)
    assert caught.value.failure_type == FailureType.config_error
    assert words in caught.value.message and str(path) in caught.value.message
    reliability(cases=1)


def test_exit_codes_of_postgresql_errors(reliability):
    """A PostgreSQL restart mid-run (AdminShutdown), a lost connection, a deadlock are outages: exit 3 (before: 1).
    A wrong password (labelled config_error by the store's connect) stays 2; a missing table is not transient."""
    import psycopg
    from airbyte_cdk.utils.traced_exception import AirbyteTracedException as Traced

    from collection_runner.cli import EXIT_CONFIG, EXIT_SYSTEM, EXIT_TRANSIENT, exit_code

    def labelled(kind, cause):
        try:
            try:
                raise cause
            except BaseException:
                raise Traced(message="m", failure_type=kind) from None
        except BaseException as exc:  # noqa: BLE001
            return exc

    cases = [
        (psycopg.errors.AdminShutdown("terminating connection due to administrator command"), EXIT_TRANSIENT),
        (psycopg.errors.CannotConnectNow("the database system is starting up"), EXIT_TRANSIENT),
        (psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"), EXIT_TRANSIENT),
        (psycopg.errors.DeadlockDetected("deadlock detected"), EXIT_TRANSIENT),
        (psycopg.errors.TooManyConnections("sorry, too many clients already"), EXIT_TRANSIENT),
        (labelled(FailureType.system_error, psycopg.errors.AdminShutdown("x")), EXIT_TRANSIENT),
        (labelled(FailureType.config_error, psycopg.OperationalError("password authentication failed")), EXIT_CONFIG),
        (psycopg.errors.UndefinedTable("relation does not exist"), EXIT_SYSTEM),
        (psycopg.errors.InsufficientPrivilege("permission denied"), EXIT_SYSTEM),
    ]
    for exc, expected in cases:
        assert exit_code(exc) == expected, (type(exc).__name__, exit_code(exc))
    reliability(cases=len(cases))


def test_a_query_client_reading_the_lock_never_makes_a_starting_runner_busy(tmp_path, reliability):
    """``read_holder`` (what ``query`` does to find the runner) takes a shared lock for an instant; a runner starting
    at that instant used to exit 3 "Another runner (pid ?)" although no runner held the store."""
    import fcntl
    import threading

    db = tmp_path / "c.duckdb"
    with StoreLock(_config(db), {"mode": "sync"}):
        pass  # the lock file exists, as after any earlier run
    fd = os.open(lock_path(str(db)), os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a reader holding its shared lock a little longer than usual
    release = threading.Timer(0.3, lambda: (fcntl.flock(fd, fcntl.LOCK_UN), os.close(fd)))
    release.start()
    try:
        with StoreLock(_config(db), {"mode": "sync"}):
            holder = read_holder(str(db))
            assert holder and holder["pid"] == os.getpid()
    finally:
        release.join()
    reliability(cases=1)
