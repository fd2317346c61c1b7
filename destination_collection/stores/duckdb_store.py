"""DuckDB store: one embedded database file; batches are staged as Arrow tables (zero-copy scans)."""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
from typing import Any, Iterator, Sequence

import duckdb
import pyarrow as pa
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from .. import jsonio
from ..naming import quote_ident
from ..operations import Stored
from .base import Store

_TYPES = {
    "BOOLEAN": "BOOLEAN",
    "BIGINT": "BIGINT",
    "DECIMAL": "DECIMAL(38,0)",
    "DOUBLE": "DOUBLE",
    "VARCHAR": "VARCHAR",
    "JSON": "JSON",
    "TIMESTAMPTZ": "TIMESTAMPTZ",
}
_ARROW = {
    "BOOLEAN": pa.bool_(),
    "BIGINT": pa.int64(),
    "DECIMAL": pa.decimal128(38, 0),
    "DOUBLE": pa.float64(),
    "VARCHAR": pa.string(),
    "JSON": pa.string(),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
}
_names = itertools.count()
MEMORY_LIMIT = os.environ.get("DESTINATION_COLLECTION_DUCKDB_MEMORY_LIMIT", "256MB")
# WAL size that triggers a checkpoint (DuckDB's default, 16 MB, when unset). A checkpoint's cost grows with the
# collection (measured: 0.2 s at 30k rows, 0.8 s at 150k), so a larger threshold (64MB, 128MB) writes big backlogs faster, for more memory.
CHECKPOINT_THRESHOLD = os.environ.get("DESTINATION_COLLECTION_DUCKDB_CHECKPOINT_THRESHOLD", "")
# COMMIT runs on a background thread (DuckDB releases the GIL while it writes the WAL and checkpoints), so the write
# loop parses and prepares the next batch meanwhile; every later use of the connection waits for it first, and the
# write loop echoes a state only once its COMMIT has finished. "0" commits synchronously.
BACKGROUND_COMMIT = os.environ.get("DESTINATION_COLLECTION_DUCKDB_BACKGROUND_COMMIT", "1") != "0"
logger = logging.getLogger("airbyte")


class _Commit:
    """One COMMIT running on its own (non-daemon: the interpreter waits for it at exit) thread."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(con,), name="duckdb-commit")
        self.thread.start()

    def _run(self, con: duckdb.DuckDBPyConnection) -> None:
        try:
            con.execute("COMMIT")
        except BaseException as exc:  # handed to the writer's thread by settle()
            self.error = exc


class DuckDBStore(Store):
    name = "duckdb"
    param = "?"

    def __init__(self, path: str, read_only: bool = False):
        self.path = path
        if path != ":memory:":
            parent = os.path.dirname(path)
            if parent and not os.path.isdir(parent):
                try:
                    os.makedirs(parent, exist_ok=True)
                except OSError as exc:
                    raise AirbyteTracedException(
                        message=f"Cannot create the folder for DuckDB file {path}: {exc.strerror}. Check the path and permissions.",
                        failure_type=FailureType.config_error,
                    ) from None
        try:
            self.con = duckdb.connect(path, read_only=read_only)
        except duckdb.IOException as exc:
            text = str(exc)
            hint = (
                "another process holds it open (DuckDB allows one writer per file); stop it or use another path"
                if "lock" in text.lower()
                else "check the path and permissions"
            )
            raise AirbyteTracedException(
                message=f"Cannot open DuckDB file {path}: {hint}.",
                internal_message=text,
                failure_type=FailureType.transient_error if "lock" in text.lower() else FailureType.config_error,
            ) from None
        if not read_only:
            # bound the buffer pool (DuckDB's default is 80 % of RAM: the cache grows with the file). A flush needs
            # far less; DuckDB spills to disk beyond the limit rather than failing.
            self.con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
            if CHECKPOINT_THRESHOLD:
                self.con.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
        self._in_tx = False
        self._pending: _Commit | None = None
        self.background_commit = BACKGROUND_COMMIT and not read_only

    def close(self) -> None:
        try:
            self.settle()
        except Exception as exc:  # the caller is already failing, or settled (and raised) before closing
            logger.warning(f"The last commit to DuckDB file {self.path} failed: {exc}")
        self.con.close()

    def settle(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.thread.join()
            if pending.error is not None:
                raise pending.error

    def commit_pending(self) -> bool:
        if self._pending is None:
            return False
        if self._pending.thread.is_alive():
            return True
        self.settle()
        return False

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self._in_tx:
            yield
            return
        self.settle()
        self.con.execute("BEGIN TRANSACTION")
        self._in_tx = True
        try:
            yield
        except BaseException:
            self._in_tx = False
            self.con.execute("ROLLBACK")
            raise
        self._in_tx = False
        if self.background_commit:
            self._pending = _Commit(self.con)
        else:
            self.con.execute("COMMIT")

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        self.settle()
        self.con.execute(sql, params) if params is not None else self.con.execute(sql)

    def fetchall(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        self.settle()
        return (self.con.execute(sql, params) if params is not None else self.con.execute(sql)).fetchall()

    def fetch_with_columns(self, sql: str) -> tuple[list[str], list[tuple]]:
        self.settle()
        cursor = self.con.execute(sql)
        rows = cursor.fetchall()
        return [d[0] for d in cursor.description or []], rows

    def sql_type(self, logical: str) -> str:
        return _TYPES[logical]

    def _alter_type_sql(self, table: str, column: str, new_type: str) -> str:
        col = quote_ident(column)
        using = f" USING to_json({col})" if new_type == "JSON" else ""
        return f"ALTER TABLE {self.q(table)} ALTER {col} SET DATA TYPE {self.sql_type(new_type)}{using}"

    def _table_exists(self, table: str) -> bool:
        return bool(
            self.fetchall(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = 'main' AND table_name = ?", [table]
            )
        )

    def _register(self, table: pa.Table) -> str:
        self.settle()
        name = f"__kc_stage_{next(_names)}"
        self.con.register(name, table)
        return name

    def fetch_documents(self, table: str, ids: list[str]) -> dict[str, Stored]:
        if not ids:
            return {}
        staged = self._register(pa.table({"_id": pa.array(ids, pa.string())}))
        try:
            rows = self.fetchall(
                f"SELECT t._id, t._event_time, t._airbyte_generation_id, t._doc, t._meta FROM {self.q(table)} t "
                f"JOIN (SELECT DISTINCT _id FROM {staged}) AS wanted ON t._id = wanted._id"
            )
        finally:
            self.con.unregister(staged)
        return {
            row[0]: Stored(jsonio.loads(row[3]) if row[3] else {}, jsonio.loads(row[4]) if row[4] else {}, row[1], row[2])
            for row in rows
        }

    def delete_documents(self, table: str, ids: list[str]) -> None:
        if not ids:
            return
        staged = self._register(pa.table({"_id": pa.array(ids, pa.string())}))
        try:
            self.execute(f"DELETE FROM {self.q(table)} WHERE _id IN (SELECT _id FROM {staged})")
        finally:
            self.con.unregister(staged)

    def write_rows(self, table: str, columns: list[tuple[str, str]], data: dict[str, list], plain_insert: bool) -> None:
        arrays = [pa.array(data[name], _ARROW[kind]) for name, kind in columns]
        arrow = pa.Table.from_arrays(arrays, names=[name for name, _ in columns])
        staged = self._register(arrow)
        names = ", ".join(quote_ident(name) for name, _ in columns)
        sql = f"INSERT INTO {self.q(table)} ({names}) SELECT {names} FROM {staged}"
        if not plain_insert:
            updates = ", ".join(f"{quote_ident(n)} = excluded.{quote_ident(n)}" for n, _ in columns if n != "_id")
            sql += f" ON CONFLICT (_id) DO UPDATE SET {updates}"
        try:
            self.execute(sql)
        finally:
            self.con.unregister(staged)

    def table_bytes(self, table: str) -> int | None:
        try:
            rows = self.fetchall(
                f"SELECT coalesce(sum(strlen(_doc::VARCHAR) + strlen(_meta::VARCHAR)), 0) FROM {self.q(table)}"
            )
            return int(rows[0][0] or 0)
        except duckdb.Error:
            return None

    def iter_documents(self, table: str, batch: int = 10_000) -> Iterator[tuple[str, Any, str, str]]:
        self.settle()
        cursor = self.con.cursor()
        cursor.execute(f"SELECT _id, _event_time, _meta, _doc FROM {self.q(table)}")
        while True:
            rows = cursor.fetchmany(batch)
            if not rows:
                break
            yield from rows
        cursor.close()


