"""One runner per store at a time.

DuckDB: an exclusive ``flock`` on ``<database>.runner.lock`` beside the file (released by the kernel if the
runner dies, so a crash never leaves a stale lock); the lock file also says which process holds it and where its
query socket is. PostgreSQL: a session-level advisory lock keyed on the schema, held on its own connection.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from typing import Any, Dict, Optional

from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_collection.config import DestinationConfig, DuckDBStoreConfig


class RunnerBusy(AirbyteTracedException):
    """Another runner holds the store."""


def lock_path(db_path: str) -> str:
    return db_path + ".runner.lock"


def read_holder(db_path: str) -> Optional[Dict[str, Any]]:
    """What the lock file says about the runner holding ``db_path``, if one holds it now."""
    path = lock_path(db_path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
            try:
                return json.loads(text) if text else {}
            except ValueError:
                return {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class StoreLock:
    def __init__(self, config: DestinationConfig, info: Optional[Dict[str, Any]] = None) -> None:
        self.config = config
        self.info = dict(info or {})
        self._fd: Optional[int] = None
        self._pg: Any = None
        self.db_path: Optional[str] = None

    def acquire(self) -> "StoreLock":
        if isinstance(self.config.store, DuckDBStoreConfig):
            self._acquire_file(self.config.store.resolved_path())
        else:
            self._acquire_postgres()
        return self

    def _acquire_file(self, db_path: str) -> None:
        self.db_path = db_path
        os.makedirs(os.path.dirname(os.path.abspath(db_path)), exist_ok=True)
        fd = os.open(lock_path(db_path), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(db_path) or {}
            raise RunnerBusy(
                message=(
                    f"Another runner (pid {holder.get('pid', '?')}, {holder.get('mode', 'running')} since "
                    f"{holder.get('started_at', '?')}) is writing to {db_path}. One runner per store at a time: stop "
                    "it first, or use `kinesis-collection query/describe/stats`, which go through it."
                ),
                failure_type=FailureType.transient_error,
            ) from None
        os.ftruncate(fd, 0)
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
            raise AirbyteTracedException(
                message=f"Cannot connect to PostgreSQL at {store.host}:{store.port} to take the runner lock: {str(exc).splitlines()[0]}",
                failure_type=FailureType.config_error,
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
