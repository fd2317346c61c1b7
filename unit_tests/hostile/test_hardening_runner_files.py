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
