"""Who may write: one runner per DuckDB file; on PostgreSQL, one runner per collection.

DuckDB: an exclusive ``flock`` on ``<database>.runner.lock`` beside the file (released by the kernel if the
runner dies, so a crash never leaves a stale lock); the lock file also says which process holds it and where its
query socket is. One writer per file is DuckDB's own rule.

PostgreSQL: several runners (on several machines) may follow their own streams into one schema. Each holds a
session-level advisory lock per collection it writes (``postgres_locks.collection_key``), all on one connection of its
own, taken in sorted order of the collection names (a fixed order: two runners asking for overlapping sets never
wait on each other in a cycle; with ``pg_try_advisory_lock`` nobody waits at all, and a runner refused one lock
releases the ones it took). It also holds one per stream it reads (``postgres_locks.stream_key``, after the
collections): a stream's committed state is one row of ``_collection_state`` whatever collection it is written to, so
two runners with different ``collection_prefix`` following one stream would commit over each other's state. The locks
go with the session: a runner that dies (SIGKILL, power loss, a lost network)
holds nothing once the server notices. Who holds each collection — host, pid, mode, since — is recorded in
``_collection_runners`` (``announce``) and believed only while that runner's session still holds the collection's
lock (``collection_holders`` joins ``pg_locks``): a row left by a dead runner says nothing. Each runner also holds
the 0.1.x whole-schema key shared, so an older runner (which takes it exclusively) and a newer one exclude each other.

The lock file is opened without following symlinks (``O_NOFOLLOW``), never truncated before the lock is held, and
only used when it is a regular file with one link, owned by the current user, in a directory owned by the current
user (or root) that others cannot write to (unless it has the sticky bit, like /tmp). Anything else at that path —
a symlink (dangling or not), a hard link to another file, a directory, a FIFO, a file of another user — is refused
with an error naming it, and never written. A lock file left by a killed runner is reused, and the query-socket
folder it names is removed once its owner is dead.
"""
from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import socket
import stat
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_collection.collection_writer import stream_key
from destination_collection.config import DestinationConfig, DuckDBStoreConfig
from destination_collection.naming import RUNNERS_TABLE, qualified, table_name
from destination_collection.stores import postgres_locks

# How long announce waits for a row of _collection_runners that another session locks (then it says so and goes on).
ANNOUNCE_LOCK_TIMEOUT_MS = 2000
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


# Our own descriptions are a few hundred bytes; anything bigger was not written by a runner and is not parsed.
MAX_LOCK_FILE_BYTES = 64 * 1024


def _read_fd(fd: int) -> Dict[str, Any]:
    """The lock file's description, or {} for anything that is not a small JSON object (garbage, NUL bytes, 10 MB,
    JSON nested deeply enough to exhaust the parser's recursion): a stale lock's contents must never stop a runner."""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    size = 0
    while size <= MAX_LOCK_FILE_BYTES:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > MAX_LOCK_FILE_BYTES:
        return {}
    try:
        value = json.loads(b"".join(chunks) or b"{}")
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
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


# ``read_holder`` (a query client asking who holds the store) takes a shared lock for an instant: a runner starting
# at that instant retries for this long before it calls the store busy
BUSY_RETRY_SECS = 1.0


def _flock_exclusive(fd: int, retry_secs: float) -> None:
    """``LOCK_EX`` without blocking, retried for ``retry_secs``; BlockingIOError when still held."""
    deadline = time.monotonic() + retry_secs
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: not a pid at all (2**70 in a planted lock file)
        return False
    except PermissionError:
        return True  # a process of another user has that pid now
    return True


def _socket_path(value: Any) -> Optional[str]:
    """``value`` if it can be a Unix socket path of ours (an absolute path without NUL that the OS can take), else None.
    The lock file's contents are data: a NUL, a lone surrogate or a relative path must not reach a system call."""
    if not isinstance(value, str) or not os.path.isabs(value) or "\0" in value:
        return None
    try:
        os.fsencode(value)
    except UnicodeError:
        return None
    return value


def _private_folder_error(folder: str, st: os.stat_result) -> Optional[str]:
    """Why ``folder`` (lstat ``st``) is not a query-socket folder of ours: None when it is a real directory named
    ``kinesis-collection-*``, owned by us, that nobody else may enter (mode 0700)."""
    if not os.path.basename(folder).startswith(SOCKET_FOLDER_PREFIX):
        return f"its folder {folder} is not named {SOCKET_FOLDER_PREFIX}*"
    if not stat.S_ISDIR(st.st_mode):
        return f"{folder} is not a directory (a symbolic link?)"
    if st.st_uid != os.geteuid():
        return f"its folder {folder} belongs to another user (uid {st.st_uid})"
    if st.st_mode & 0o077:
        return f"its folder {folder} is open to other users (mode {stat.S_IMODE(st.st_mode):o}, expected 700)"
    return None


def runner_socket(holder: Dict[str, Any], db_path: str) -> str:
    """The query socket of the live runner described by ``holder`` (read_holder), checked before a client connects
    to it: the lock file names it, and a client must not send its SQL (or trust an answer) to a socket someone else
    planted. It must be a socket of ours in a private folder of ours (``kinesis-collection-*``, mode 0700) and the
    runner's pid must be alive. A runner starting up or stopping (no socket yet, or already gone) is transient."""
    pid = holder.get("pid", "?")
    raw = holder.get("socket")
    if raw is None:
        raise AirbyteTracedException(
            message=f"A runner (pid {pid}) is starting up on {db_path}; try again in a moment.", failure_type=FailureType.transient_error
        )
    path = _socket_path(raw)
    if path is None:
        raise _unsafe(
            f"The runner lock file {lock_path(db_path)} names a query socket that is not an absolute path ({str(raw)[:200]!r}); "
            "refusing to connect. Stop the runner holding the store and check who wrote that file."
        )
    folder = os.path.dirname(path)
    try:
        folder_st, sock_st = os.lstat(folder), os.lstat(path)
    except OSError:
        folder_st = sock_st = None
    if sock_st is None or not _pid_alive(pid):
        raise AirbyteTracedException(
            message=f"The runner (pid {pid}) holding {db_path} is starting up or stopping (its query socket {path} is not there); try again in a moment.",
            failure_type=FailureType.transient_error,
        )
    problem = _private_folder_error(folder, folder_st)
    if problem is None and not (stat.S_ISSOCK(sock_st.st_mode) and sock_st.st_uid == os.geteuid()):
        problem = f"{path} is not a socket of ours"
    if problem is not None:
        raise _unsafe(
            f"The runner lock file {lock_path(db_path)} names the query socket {path}, but {problem}; refusing to connect "
            "(another user could answer in the runner's place). Check who wrote that file."
        )
    return path


def remove_stale_socket_folder(previous: Dict[str, Any], logger: Any = None) -> bool:
    """Remove the query-socket folder a dead runner named in its lock file (we hold the lock now, so it is dead or
    gone). Only a private folder of ours made by the query service (``<tmp>/kinesis-collection-*``, mode 0700, a real
    directory holding at most its socket) whose recorded pid is not alive; anything else is left alone. The folder
    is opened once without following a symlink and its entry is removed through that handle, so swapping the name
    for a link between the checks and the removal cannot redirect it. Returns whether it removed it."""
    socket_path = _socket_path(previous.get("socket"))
    if socket_path is None or _pid_alive(previous.get("pid")):
        return False
    folder, name = os.path.split(socket_path)
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if _private_folder_error(folder, os.fstat(dir_fd)) is not None:
            return False
        names = os.listdir(dir_fd)
        if names not in ([], [name]):
            return False  # not only our socket: leave it
        if names:
            if not stat.S_ISSOCK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                return False
            os.unlink(name, dir_fd=dir_fd)
        os.rmdir(folder)  # never follows a symlink; fails unless it is (still) an empty directory
    except OSError:
        return False
    finally:
        os.close(dir_fd)
    if logger is not None:
        logger.info(f"Removed the query-socket folder {folder} left by runner pid {previous.get('pid')}, which is no longer running.")
    return True


def _now_text() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def describe_holder(holder: Optional[Mapping[str, Any]]) -> str:
    """``pid 4242 on host-a, follow since 2026-12-02T10:00:00+00:00`` (what a refused runner and ``stats`` say)."""
    if not holder or holder.get("pid") is None:
        if holder and holder.get("unknown"):
            return f"a runner that cannot be named here: {holder['unknown']}"
        return "a runner starting up or stopping (it has not said who it is)"
    since = holder.get("since")
    since_text = since.replace(microsecond=0).isoformat() if isinstance(since, dt.datetime) else str(since or "?")
    return f"pid {holder['pid']} on {holder.get('host') or '?'}, {holder.get('mode') or 'running'} since {since_text}"


RUNNERS_COLUMNS = ("collection", "stream", "host", "pid", "mode", "started_at", "backend_pid")


def _holders(fetchall: Callable[[str, Sequence[Any]], List[tuple]], database: str, schema: str, names: Sequence[str],
             key: Callable[[str, str, str], int], column: str) -> Dict[str, Dict[str, Any]]:
    if not names:
        return {}
    held = {
        (classid, objid): pid
        for pid, classid, objid in fetchall(
            "SELECT pid, classid::bigint, objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND objsubid = 1 AND mode = 'ExclusiveLock' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            [],
        )
    }
    rows: Dict[tuple, tuple] = {}
    unknown = None
    runners = qualified(schema, RUNNERS_TABLE)
    exists, readable, columns = fetchall(
        "SELECT t IS NOT NULL, t IS NOT NULL AND has_table_privilege(t, 'SELECT'), "
        "(SELECT count(*) FROM pg_attribute WHERE attrelid = t AND attname = ANY(%s) AND NOT attisdropped) "
        "FROM (SELECT to_regclass(%s) AS t) r",
        [list(RUNNERS_COLUMNS), runners],
    )[0]
    if readable and columns != len(RUNNERS_COLUMNS):
        unknown = f"{runners} is not kinesis-collection's (other columns); drop it, the next runner recreates it"
    elif readable:
        for row in fetchall(
            f"SELECT {column}, host, pid, mode, started_at, backend_pid FROM {runners} WHERE {column} = ANY(%s)", [list(names)]
        ):
            rows[(row[0], row[5])] = row[1:5]  # (name, the session that announced it)
    elif exists:
        unknown = f"this role may not read {runners}"
    holders: Dict[str, Dict[str, Any]] = {}
    for name in names:
        session = held.get(postgres_locks.lock_columns(key(database, schema, name)))
        if session is None:
            continue
        row = rows.get((name, session))  # announced by the session that holds the lock now
        if row is not None:
            host, pid, mode, since = row
            holders[name] = {"host": host, "pid": pid, "mode": mode, "since": since}
        else:
            holders[name] = {"host": None, "pid": None, "mode": None, "since": None, **({"unknown": unknown} if unknown else {})}
    return holders


def collection_holders(fetchall: Callable[[str, Sequence[Any]], List[tuple]], database: str, schema: str,
                       tables: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """The runner holding each of ``tables`` (PostgreSQL) that some session holds now: ``{table: {host, pid, mode,
    since}}``; ``{}``-like values (``pid`` None) for a lock whose holder has not announced itself yet, or that this
    role may not look up (no SELECT on ``_collection_runners``: then ``unknown`` says so). Reads only (``pg_locks``,
    ``_collection_runners``): safe on the read-only view ``stats`` uses. ``fetchall(sql, params)``."""
    return _holders(fetchall, database, schema, tables, postgres_locks.collection_key, "collection")


def stream_holders(fetchall: Callable[[str, Sequence[Any]], List[tuple]], database: str, schema: str,
                   streams: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """As ``collection_holders``, for the per-stream locks (a stream's committed state; keys as in
    ``_collection_state``: ``name`` or ``namespace.name``)."""
    return _holders(fetchall, database, schema, streams, postgres_locks.stream_key, "stream")


def collections_for(config: DestinationConfig, streams: Sequence[Any]) -> Dict[str, str]:
    """``{collection table: stream key}`` of the streams a runner writes (the destination's naming rule). ``streams``:
    names, or ``(name, namespace)`` pairs as a configured catalog gives them."""
    pairs = [(item, None) if isinstance(item, str) else (item[0], item[1]) for item in streams]
    return {table_name(config.collection_prefix, name, namespace): stream_key(name, namespace) for name, namespace in pairs}


class StoreLock:
    """The runner's right to write: ``collections`` maps each collection (table) it writes to its stream. DuckDB: the
    whole file, whatever the collections. PostgreSQL: exactly those collections."""

    def __init__(self, config: DestinationConfig, info: Optional[Dict[str, Any]] = None, logger: Any = None,
                 collections: Optional[Mapping[str, str]] = None) -> None:
        self.config = config
        self.info = dict(info or {})
        self.collections = dict(collections or {})
        self._fd: Optional[int] = None
        self._pg: Any = None
        self._pg_checked = 0.0
        self._since = dt.datetime.now(dt.timezone.utc)
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
            _flock_exclusive(fd, BUSY_RETRY_SECS)
        except BlockingIOError:
            holder = _read_fd(fd)
            os.close(fd)
            raise RunnerBusy(
                message=(
                    f"Another runner (pid {holder.get('pid', '?')}, {holder.get('mode', 'running')} since "
                    f"{holder.get('started_at', '?')}) is writing to {db_path}. One runner per DuckDB file at a time: "
                    "stop it first, or use `kinesis-collection query/describe/stats`, which go through it."
                ),
                failure_type=FailureType.transient_error,
            ) from None
        except BaseException:
            os.close(fd)
            raise
        if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
            os.fchmod(fd, 0o600)  # ours (checked): nobody else may write the socket path our query clients connect to
        previous = _read_fd(fd)  # a runner killed without releasing (SIGKILL, power loss) left its description
        if previous:
            remove_stale_socket_folder(previous, self.logger)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(dict(self.info, pid=os.getpid(), started_at=_now_text())).encode())
        os.fsync(fd)
        self._fd = fd

    def update(self, **info: Any) -> None:
        """Rewrite the lock file's description (e.g. once the query socket is listening)."""
        self.info.update(info)
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.lseek(self._fd, 0, os.SEEK_SET)
            os.write(self._fd, json.dumps(dict(self.info, pid=os.getpid(), started_at=_now_text())).encode())

    def holder(self) -> Dict[str, Any]:
        """This runner, as ``stats`` shows a holder."""
        return {"host": socket.gethostname(), "pid": os.getpid(), "mode": self.info.get("mode"), "since": self._since}

    def _where(self) -> str:
        store = self.config.store
        return f"PostgreSQL schema '{store.schema_}' of database '{store.database}'"

    def _acquire_postgres(self) -> None:
        from destination_collection.stores.postgres_connection import connect

        store = self.config.store
        # The destination's own connect: the same timeout, TLS and tunnel, and the same split between what the user
        # must fix (wrong user, password, database: config_error, exit 2) and an outage (server down: exit 3).
        conn = connect(store, application_name="kinesis-collection runner")
        try:
            if not conn.execute("SELECT pg_try_advisory_lock_shared(%s)", [postgres_locks.store_key(store.database, store.schema_)]).fetchone()[0]:
                raise RunnerBusy(
                    message=(
                        f"A kinesis-collection runner older than 0.1.3 (one runner per schema) is writing to {self._where()}. "
                        "Stop it, or upgrade it: since 0.1.3 several runners share a schema, one per collection."
                    ),
                    failure_type=FailureType.transient_error,
                )
            self._check_lock_room(conn)
            # a fixed order (see the module's docstring): the collections by name, then their streams by name
            for table in sorted(self.collections):
                if not conn.execute("SELECT pg_try_advisory_lock(%s)", [postgres_locks.collection_key(store.database, store.schema_, table)]).fetchone()[0]:
                    raise self._busy(f"Collection {table} (stream '{self.collections[table]}')", self._holder_of(conn, collection_holders, table),
                                     self.collections[table])
            for stream in sorted(set(self.collections.values())):
                if not conn.execute("SELECT pg_try_advisory_lock(%s)", [postgres_locks.stream_key(store.database, store.schema_, stream)]).fetchone()[0]:
                    # its collection is free, so another runner writes this stream into a collection of another name
                    # (another collection_prefix): both would commit the one state row of the stream
                    raise self._busy(f"Stream '{stream}' (its committed state, shared by every collection it is written to)",
                                     self._holder_of(conn, stream_holders, stream), stream)
            try:  # the lock's session is always idle: a server-wide idle_session_timeout (PG 14+) must not end it
                conn.execute("SET idle_session_timeout = 0")
            except Exception:  # noqa: BLE001 - an older server has no such setting (and no such timeout)
                pass
        except BaseException as exc:
            conn.close()  # ends the session: every lock taken so far goes with it
            if type(exc).__name__ == "OutOfMemory":  # psycopg.errors.OutOfMemory: the server's shared lock table is full
                raise AirbyteTracedException(
                    message=(
                        f"PostgreSQL could not hold the runner's {2 * len(self.collections)} locks (one per collection and one "
                        f"per stream) in {self._where()}: its shared lock table is full. Split the streams across several "
                        "runners (--catalog), or raise the server's max_locks_per_transaction."
                    ),
                    internal_message=str(exc),
                    failure_type=FailureType.config_error,
                ) from None
            raise
        self._pg = conn
        self._pg_checked = time.monotonic()

    def _check_lock_room(self, conn: Any) -> None:
        """Refuse a runner whose locks would take more than half of the server's lock table (nominal size:
        max_locks_per_transaction × (max_connections + max_prepared_transactions)). Session locks stay for the
        runner's life; a runner filling the table would leave every new connection to the server failing with "out
        of shared memory" (other runners, stats, its own store)."""
        needed = 2 * len(self.collections) + 1
        room = conn.execute(
            "SELECT current_setting('max_locks_per_transaction')::bigint * (current_setting('max_connections')::bigint "
            "+ current_setting('max_prepared_transactions')::bigint)"
        ).fetchone()[0]
        if needed > room // 2:
            raise AirbyteTracedException(
                message=(
                    f"This runner would hold {needed} locks in {self._where()} (one per collection and one per stream of "
                    f"its {len(self.collections)} streams), more than half of the server's lock table ({room} = "
                    "max_locks_per_transaction × connections): other sessions could not connect. Split the streams "
                    "across several runners (--catalog), or raise the server's max_locks_per_transaction."
                ),
                failure_type=FailureType.config_error,
            )

    def _holder_of(self, conn: Any, lookup: Callable[..., Dict[str, Dict[str, Any]]], name: str) -> Optional[Dict[str, Any]]:
        store = self.config.store
        try:
            return lookup(lambda sql, params: conn.execute(sql, params).fetchall(), store.database, store.schema_, [name]).get(name)
        except Exception as exc:  # noqa: BLE001 - who holds it is a courtesy; the refusal is what matters
            try:
                conn.rollback()
            except Exception:  # noqa: BLE001
                pass
            return {"pid": None, "unknown": f"looking it up failed ({' '.join(str(exc).split())[:200] or type(exc).__name__})"}

    def _busy(self, what: str, holder: Optional[Dict[str, Any]], stream: str) -> RunnerBusy:
        return RunnerBusy(
            message=(
                f"{what} in {self._where()} is held by another runner ({describe_holder(holder)}). One runner per "
                "collection and stream: "
                + ("stop that runner first (its next commit would undo the reset). " if self.info.get("mode") == "reset" else
                   f"stop that runner first, or leave stream '{stream}' out of this one's catalog (--catalog). ")
                + "`kinesis-collection stats` shows who holds each collection."
            ),
            failure_type=FailureType.transient_error,
        )

    def announce(self, store: Any) -> None:
        """PostgreSQL: record in ``_collection_runners`` that this runner (host, pid, mode, since; its lock session's
        backend pid) holds its collections, through ``store`` (the destination's store on the same database, whose
        metadata DDL lock serializes the table's creation). Nothing to do for DuckDB (the lock file says it)."""
        if self._pg is None or not self.collections:
            return
        table = qualified(self.config.store.schema_, RUNNERS_TABLE)
        me = self.holder()
        backend = self._pg.info.backend_pid
        p = store.param
        store.catalog.ensure_metadata()  # the schema and the destination's tables, in their own short transaction
        try:
            with store.transaction():  # short: other writers starting wait on the DDL lock only this long
                store.lock_metadata_ddl()
                store.execute(
                    f"CREATE TABLE IF NOT EXISTS {table} (collection text PRIMARY KEY, stream text NOT NULL, host text NOT NULL, "
                    "pid bigint NOT NULL, mode text, started_at timestamptz NOT NULL, backend_pid integer NOT NULL)"
                )
            with store.transaction():  # without the DDL lock; a user's lock on the rows is not waited on for long
                store.execute(f"SET LOCAL lock_timeout = '{ANNOUNCE_LOCK_TIMEOUT_MS}ms'")
                for collection in sorted(self.collections):
                    store.execute(
                        f"INSERT INTO {table} (collection, stream, host, pid, mode, started_at, backend_pid) "
                        f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (collection) DO UPDATE SET stream = EXCLUDED.stream, "
                        "host = EXCLUDED.host, pid = EXCLUDED.pid, mode = EXCLUDED.mode, started_at = EXCLUDED.started_at, "
                        "backend_pid = EXCLUDED.backend_pid",
                        [collection, self.collections[collection], me["host"], me["pid"], me["mode"], me["since"], backend],
                    )
        except Exception as exc:  # noqa: BLE001 - saying who holds the locks is a courtesy; the locks are held
            if self.logger is not None:
                self.logger.warning(
                    f"Could not record this runner in {table} ({' '.join(str(exc).split())[:300] or type(exc).__name__}); "
                    f"`stats` and refused runners will not name it. If another session locks that table's rows, this is "
                    f"why; if the table was not made by kinesis-collection 0.1.3 or later, drop it (the next runner "
                    f"recreates it); the role needs CREATE on schema '{self.config.store.schema_}' and INSERT/UPDATE on the table."
                )

    def verify(self, every_seconds: float = 1.0) -> None:
        """Raise (transient_error: exit 3) if the lock is no longer held. A PostgreSQL advisory lock lives as long as
        its session: a server restart or a killed session releases it silently, and another runner could then write
        to the same collections. The pipeline calls this after each commit and at each state it does not commit (an
        idle runner commits nothing: repeated_states); it asks the server at most every ``every_seconds``. (A file
        lock cannot be lost while the process lives.)"""
        if self._pg is None or time.monotonic() - self._pg_checked < every_seconds:
            return
        try:
            self._pg.execute("SELECT 1").fetchone()
        except Exception as exc:  # noqa: BLE001 - any failure means the session, and so the lock, may be gone
            raise AirbyteTracedException(
                message=(
                    f"The PostgreSQL session holding the runner lock of {', '.join(sorted(self.collections)) or 'the store'} "
                    f"in {self._where()} was lost ({' '.join(str(exc).split())[:200] or type(exc).__name__}): another "
                    "runner could take those collections now, so this one stops after its last commit. Run it again; it "
                    "resumes from the committed state."
                ),
                failure_type=FailureType.transient_error,
            ) from None
        self._pg_checked = time.monotonic()

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
                self._pg.close()  # ends the session: the advisory locks go with it
            finally:
                self._pg = None

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
