"""One runner per store at a time.

DuckDB: an exclusive ``flock`` on ``<database>.runner.lock`` beside the file (released by the kernel if the
runner dies, so a crash never leaves a stale lock); the lock file also says which process holds it and where its
query socket is. PostgreSQL: a session-level advisory lock keyed on the schema, held on its own connection.

The lock file is opened without following symlinks (``O_NOFOLLOW``), never truncated before the lock is held, and
only used when it is a regular file with one link, owned by the current user, in a directory owned by the current
user (or root) that others cannot write to (unless it has the sticky bit, like /tmp). Anything else at that path —
a symlink (dangling or not), a hard link to another file, a directory, a FIFO, a file of another user — is refused
with an error naming it, and never written. A lock file left by a killed runner is reused, and the query-socket
folder it names is removed once its owner is dead.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import stat
import time
from typing import Any, Dict, Optional

from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_collection.config import DestinationConfig, DuckDBStoreConfig

# The query service's socket folders: ``tempfile.mkdtemp(prefix=SOCKET_FOLDER_PREFIX)`` (see query_service.py).
SOCKET_FOLDER_PREFIX = "kinesis-collection-"
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: opening a FIFO must not hang


class RunnerBusy(AirbyteTracedException):
    """Another runner holds the store."""


class UnsafeLockPath(AirbyteTracedException):
    """Something other than our own regular lock file is at the lock path, or its directory is not private."""


def lock_path(db_path: str) -> str:
    return db_path + ".runner.lock"


def _unsafe(message: str) -> UnsafeLockPath:
    return UnsafeLockPath(message=message, internal_message=message, failure_type=FailureType.config_error)


def check_directory(directory: str) -> None:
    """The lock file's directory must be owned by the current user or root, and not writable by others unless
    sticky: otherwise another user could swap the lock file for a link between our checks and our writes."""
    try:
        st = os.stat(directory)
    except OSError as exc:
        raise _unsafe(f"Cannot use the directory {directory} for the runner lock: {exc.strerror}.") from None
    if not stat.S_ISDIR(st.st_mode):
        raise _unsafe(f"{directory} (the directory of the runner lock) is not a directory.")
    if st.st_uid not in (os.geteuid(), 0):
        raise _unsafe(
            f"The directory {directory} (of the DuckDB file and its runner lock) belongs to another user (uid {st.st_uid}). "
            "Keep the database in a directory you own."
        )
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        raise _unsafe(
            f"The directory {directory} (of the DuckDB file and its runner lock) is writable by every user without the "
            f"sticky bit. Keep the database in a private directory, or run `chmod o-w {directory}`."
        )


def _describe(path: str, st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return f"a symbolic link (to {target})"
    if stat.S_ISDIR(st.st_mode):
        return "a directory"
    if stat.S_ISFIFO(st.st_mode):
        return "a FIFO"
    if stat.S_ISSOCK(st.st_mode):
        return "a socket"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return "a device"
    if st.st_nlink != 1:
        return f"a file with {st.st_nlink} hard links (another file's contents)"
    if st.st_uid != os.geteuid():
        return f"a file of another user (uid {st.st_uid})"
    return "not a regular file"


def _refused(path: str, st: os.stat_result) -> UnsafeLockPath:
    return _unsafe(
        f"The runner lock path {path} is {_describe(path, st)}, not the runner's own lock file; refusing to open or "
        "write it. Check who created it, then remove it (the runner creates a fresh one)."
    )


def _open_lock_file(path: str, create: bool) -> Optional[int]:
    """An fd on the lock file, checked (regular, one link, ours); None if it does not exist and ``create`` is off."""
    check_directory(os.path.dirname(os.path.abspath(path)))
    flags = (os.O_RDWR | os.O_CREAT if create else os.O_RDONLY) | _OPEN_FLAGS
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EACCES, errno.EPERM):
            try:
                raise _refused(path, os.lstat(path)) from None
            except OSError:
                pass
        raise _unsafe(f"Cannot open the runner lock file {path}: {exc.strerror}.") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.geteuid():
            raise _refused(path, st)
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _read_fd(fd: int) -> Dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
        if sum(len(c) for c in chunks) > 1 << 20:
            break
    try:
        value = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def read_holder(db_path: str) -> Optional[Dict[str, Any]]:
    """What the lock file says about the runner holding ``db_path``, if one holds it now."""
    fd = _open_lock_file(lock_path(db_path), create=False)
    if fd is None:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_fd(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a process of another user has that pid now
    return True


def remove_stale_socket_folder(previous: Dict[str, Any], logger: Any = None) -> bool:
    """Remove the query-socket folder a dead runner named in its lock file (we hold the lock now, so it is dead or
    gone). Only a folder of ours made by the query service (``<tmp>/kinesis-collection-*``, a real directory holding
    at most its socket) whose recorded pid is not alive; anything else is left alone. Returns whether it removed it."""
    socket_path = previous.get("socket")
    if not isinstance(socket_path, str) or not os.path.isabs(socket_path) or _pid_alive(previous.get("pid")):
        return False
    folder = os.path.dirname(socket_path)
    if not os.path.basename(folder).startswith(SOCKET_FOLDER_PREFIX):
        return False
    try:
        st = os.lstat(folder)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        return False
    try:
        names = os.listdir(folder)
        for name in names:
            entry = os.path.join(folder, name)
            entry_st = os.lstat(entry)
            if name != os.path.basename(socket_path) or not stat.S_ISSOCK(entry_st.st_mode):
                return False  # not only our socket: leave it
        for name in names:
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)
    except OSError:
        return False
    if logger is not None:
        logger.info(f"Removed the query-socket folder {folder} left by runner pid {previous.get('pid')}, which is no longer running.")
    return True


class StoreLock:
    def __init__(self, config: DestinationConfig, info: Optional[Dict[str, Any]] = None, logger: Any = None) -> None:
        self.config = config
        self.info = dict(info or {})
        self._fd: Optional[int] = None
        self._pg: Any = None
        self.db_path: Optional[str] = None
        self.logger = logger

    def acquire(self) -> "StoreLock":
        if isinstance(self.config.store, DuckDBStoreConfig):
            self._acquire_file(self.config.store.resolved_path())
        else:
            self._acquire_postgres()
        return self

    def _acquire_file(self, db_path: str) -> None:
        self.db_path = db_path
        os.makedirs(os.path.dirname(os.path.abspath(db_path)), exist_ok=True)
        fd = _open_lock_file(lock_path(db_path), create=True)
        assert fd is not None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_fd(fd)
            os.close(fd)
            raise RunnerBusy(
                message=(
                    f"Another runner (pid {holder.get('pid', '?')}, {holder.get('mode', 'running')} since "
                    f"{holder.get('started_at', '?')}) is writing to {db_path}. One runner per store at a time: stop "
                    "it first, or use `kinesis-collection query/describe/stats`, which go through it."
                ),
                failure_type=FailureType.transient_error,
            ) from None
        except BaseException:
            os.close(fd)
            raise
        previous = _read_fd(fd)  # a runner killed without releasing (SIGKILL, power loss) left its description
        if previous:
            remove_stale_socket_folder(previous, self.logger)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(dict(self.info, pid=os.getpid(), started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))).encode())
        os.fsync(fd)
        self._fd = fd

    def update(self, **info: Any) -> None:
        """Rewrite the lock file's description (e.g. once the query socket is listening)."""
        self.info.update(info)
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.lseek(self._fd, 0, os.SEEK_SET)
            os.write(self._fd, json.dumps(dict(self.info, pid=os.getpid(), started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))).encode())

    def _acquire_postgres(self) -> None:
        import psycopg

        store = self.config.store
        key = int.from_bytes(hashlib.sha256(f"kinesis-collection:{store.database}:{store.schema_}".encode()).digest()[:8], "big", signed=True)
        try:
            conn = psycopg.connect(
                host=store.host, port=store.port, dbname=store.database, user=store.username,
                password=store.password, sslmode=store.ssl_mode, autocommit=True, connect_timeout=10,
            )
        except psycopg.OperationalError as exc:
            text = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
            # Wrong credentials or names are the user's to fix; a server down or unreachable is an outage (retry later).
            auth = any(word in text.lower() for word in ("password", "authentication", "role", "does not exist", "ssl"))
            raise AirbyteTracedException(
                message=(
                    f"Cannot connect to PostgreSQL at {store.host}:{store.port} to take the runner lock: {text}. "
                    + ("Check the user, password, database and SSL mode." if auth else "Check that the server is up and reachable, then retry.")
                ),
                failure_type=FailureType.config_error if auth else FailureType.transient_error,
            ) from None
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()[0]
        if not got:
            conn.close()
            raise RunnerBusy(
                message=(
                    f"Another runner is writing to PostgreSQL schema '{store.schema_}' of database '{store.database}'. "
                    "One runner per store at a time: stop it first."
                ),
                failure_type=FailureType.transient_error,
            )
        self._pg = conn

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None
        if self._pg is not None:
            try:
                self._pg.close()  # ends the session: the advisory lock goes with it
            finally:
                self._pg = None

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
