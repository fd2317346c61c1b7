"""DuckDB store: one embedded database file; batches are staged as Arrow tables (zero-copy scans).

A batch is one lookup and one write (see ``Store.lookup`` / ``Store.write_batch``):

* **Lookup**: a hash join with the batch's ids as the build side reads the table's ``_id`` column and returns each
  stored id's ``rowid`` and ``_doc_shape``; a second join by rowid reads ``_doc``/``_meta`` only for the stored ids
  whose changes need them (``operations.DocumentReads``: merges whose change does not have the stored document's
  shape, changes onto a row that may be an error-only placeholder). Measured on DuckDB 1.5 with 5k stored ids among
  10k: ~10 ms and ~30 ms in a 100k-document collection, ~0.14 s and ~0.9 s in a 10 M-document one. Both grow with
  the collection: DuckDB reads (decompresses) every 2048-row vector holding a wanted row, and random ids touch most
  vectors; it has no per-row fetch outside its ART index (which is not used for joins either). Upserts of whole
  documents (the same field names as stored) skip the second join.
* **Write**: ``DELETE … USING`` the looked-up rowids of the rows the batch deletes or rewrites, then one plain
  ``INSERT … SELECT`` of the batch's rows (never ``ON CONFLICT DO UPDATE``: its in-place update of random rows costs
  ~90 µs per row at 2 M rows, and it needs several times the staged bytes in memory for large values).

Collections have no PRIMARY KEY (``DuckDBStore.id_constraint``): the ART index of a 10 M-document collection takes
~350 MB that DuckDB cannot evict (writes failed past the default ``memory_limit``).

Memory: ``memory_limit`` (config ``store.memory_limit``) bounds DuckDB's buffer manager, not the process. An
out-of-memory error is raised as ``DuckDBOutOfMemory`` (a ``MemoryError``), which the write loop reports naming the
stream and the settings.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import stat
import threading
from typing import Any, Iterator, Sequence

import duckdb
import pyarrow as pa
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from .. import jsonio
from ..config import DEFAULT_CHECKPOINT_THRESHOLD, DEFAULT_MEMORY_LIMIT
from ..naming import quote_ident
from ..operations import DocumentReads, Stored
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
# Row-group merges (DuckDB's vacuum) a checkpoint may run; None = DuckDB's own default (100). Measured at 10 M
# documents under uniform updates (1 % of the documents per 100k-record sync; bench.flatness_probe --sustained), the
# default let one COMMIT merge most of the collection at once (19.3 s in the 24th sync); 2 spread the merges over the
# following checkpoints (no COMMIT over 2.4 s, the same total time) but made delete-heavy CDC into a 1 M-document
# collection ~30 % slower (its thinned row groups wait longer to be merged). So the default stays DuckDB's.
MAX_VACUUM_TASKS: int | None = None
logger = logging.getLogger("airbyte")


class DuckDBOutOfMemory(MemoryError):
    """DuckDB refused an allocation past ``memory_limit``; the write loop names the stream and the settings."""

    def __init__(self, detail: str, memory_limit: str):
        super().__init__(detail)
        self.detail = detail
        self.memory_limit = memory_limit


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a regular file"


def check_database_path(path: str, temp_directory: str | None = None, read_only: bool = False) -> None:
    """Refuse, before DuckDB opens anything, a database path (or its ``.wal``) that exists but is not a regular file
    (following symlinks): DuckDB would block forever opening a FIFO, and fail obscurely on a directory, a socket or
    a device. Also a ``temp_directory`` that exists but is not a directory, or (for writing) that this process
    cannot create or write: DuckDB creates it only when it first spills, deep inside a big batch, where the failure
    would repeat on every retry. ``os.stat`` never blocks on a FIFO."""
    for candidate, what in ((path, "DuckDB path"), (path + ".wal", "DuckDB write-ahead log of")):
        try:
            mode = os.stat(candidate).st_mode
        except OSError:  # missing (created by DuckDB), a dangling symlink or no permission: DuckDB reports those
            continue
        if not stat.S_ISREG(mode):
            shown = path if candidate == path else f"{path} ({candidate})"
            raise AirbyteTracedException(
                message=(
                    f"{what} {shown} is {_file_kind(mode)}, not a database file; point store.path at a regular file "
                    f"(it is created when missing)."
                ),
                failure_type=FailureType.config_error,
            )
    if temp_directory:
        try:
            mode = os.stat(temp_directory).st_mode
        except OSError:
            if not read_only:
                _check_creatable(temp_directory)
            return
        if not read_only and stat.S_ISDIR(mode) and not os.access(temp_directory, os.W_OK | os.X_OK):
            raise AirbyteTracedException(
                message=(
                    f"DuckDB temp_directory {temp_directory} is not writable by this process (user id {os.geteuid()}); "
                    f"grant write access or point store.temp_directory at another folder."
                ),
                failure_type=FailureType.config_error,
            )
        if not stat.S_ISDIR(mode):
            raise AirbyteTracedException(
                message=(
                    f"DuckDB temp_directory {temp_directory} is {_file_kind(mode)}, not a directory; point "
                    f"store.temp_directory at a folder (created when missing) or leave it out."
                ),
                failure_type=FailureType.config_error,
            )


def _check_creatable(folder: str) -> None:
    """A missing temp_directory: its nearest existing ancestor must be a folder this process can write."""
    parent = os.path.dirname(os.path.abspath(folder))
    while parent and not os.path.lexists(parent) and parent != os.path.dirname(parent):
        parent = os.path.dirname(parent)
    if not (os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK)):
        raise AirbyteTracedException(
            message=(
                f"DuckDB temp_directory {folder} cannot be created: {parent} is not a folder this process can write; "
                f"point store.temp_directory at a writable folder or leave it out."
            ),
            failure_type=FailureType.config_error,
        )


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
    # No PRIMARY KEY: DuckDB keeps a key's whole ART index in memory (~350 MB at 10 M ids, past memory_limit's
    # default: writes failed with OutOfMemory) and does not use it for joins. _id stays unique because every batch
    # removes the stored rows of the ids it writes (write_batch) before inserting them. Collections created with a
    # PRIMARY KEY by earlier versions keep it and work the same way.
    id_constraint = " NOT NULL"
    memory_limit = DEFAULT_MEMORY_LIMIT
    set_batches = True  # runs the set-based batch path (set_batch.py)

    def __init__(
        self, path: str, read_only: bool = False, memory_limit: str = DEFAULT_MEMORY_LIMIT,
        temp_directory: str | None = None, checkpoint_threshold: str = DEFAULT_CHECKPOINT_THRESHOLD,
        threads: int | None = None, background_commit: bool = True, set_based_batches: bool = True,
    ):
        """``checkpoint_threshold``: the WAL size at which a commit checkpoints (config ``store.checkpoint_threshold``;
        a checkpoint's cost grows with the collection). ``threads``: DuckDB's worker threads (config ``store.threads``; None =
        DuckDB's default, one per core) for statements over a whole collection (``collection_statements``); the others
        run on one. ``background_commit``: COMMIT runs on a background thread
        (DuckDB releases the GIL while it writes the WAL and checkpoints), so the write loop prepares the next batch
        meanwhile; every later use of the connection waits for it first, and the write loop echoes a state only once
        its COMMIT has finished."""
        self.path = path
        self.memory_limit = memory_limit
        if path != ":memory:":
            check_database_path(path, temp_directory, read_only)
            parent = os.path.dirname(path)
            if parent and not os.path.isdir(parent):
                try:
                    os.makedirs(parent, exist_ok=True)
                except OSError as exc:
                    raise AirbyteTracedException(
                        message=f"Cannot create the folder for DuckDB file {path}: {exc.strerror}. Check the path and permissions.",
                        failure_type=FailureType.config_error,
                    ) from None
        settings = {"temp_directory": temp_directory} if temp_directory else {}
        try:
            self.con = duckdb.connect(path, read_only=read_only, config=settings)
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
            self.con.execute(f"SET memory_limit = '{memory_limit}'")
            # validated by the config model (a size such as 16MB): safe to inline
            self.con.execute(f"SET checkpoint_threshold = '{checkpoint_threshold}'")
            if MAX_VACUUM_TASKS is not None:
                self.con.execute(f"SET max_vacuum_tasks = {int(MAX_VACUUM_TASKS)}")
        # validated by the config model (an integer 1-256); None: DuckDB's default (one per core)
        self.threads = int(threads or self.con.execute("SELECT current_setting('threads')").fetchone()[0])
        if not read_only:
            self.con.execute("SET threads = 1")  # but in collection_statements
        self._in_tx = False
        self._pending: _Commit | None = None
        self.background_commit = background_commit and not read_only
        if not set_based_batches:  # config store.set_based_batches: every batch takes the per-record path
            self.set_batches = False

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
            if isinstance(pending.error, duckdb.OutOfMemoryException):
                raise self._out_of_memory(pending.error)
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
        try:
            self.con.execute(sql, params) if params is not None else self.con.execute(sql)
        except duckdb.OutOfMemoryException as exc:
            raise self._out_of_memory(exc) from None

    def fetchall(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        self.settle()
        try:
            return (self.con.execute(sql, params) if params is not None else self.con.execute(sql)).fetchall()
        except duckdb.OutOfMemoryException as exc:
            raise self._out_of_memory(exc) from None

    def _out_of_memory(self, exc: BaseException) -> DuckDBOutOfMemory:
        return DuckDBOutOfMemory(str(exc).splitlines()[0], self.memory_limit)

    def fetch_with_columns(self, sql: str) -> tuple[list[str], list[tuple]]:
        self.settle()
        cursor = self.con.execute(sql)
        rows = cursor.fetchall()
        return [d[0] for d in cursor.description or []], rows

    def sql_type(self, logical: str) -> str:
        return _TYPES[logical]

    def alter_type_sql(self, table: str, column: str, new_type: str) -> str:
        col = quote_ident(column)
        using = f" USING to_json({col})" if new_type == "JSON" else ""
        return f"ALTER TABLE {self.q(table)} ALTER {col} SET DATA TYPE {self.sql_type(new_type)}{using}"

    def table_exists(self, table: str) -> bool:
        return bool(
            self.fetchall(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = 'main' AND table_name = ?", [table]
            )
        )

    @contextlib.contextmanager
    def collection_statements(self) -> Iterator[None]:
        """The block's statements read a whole collection (a lookup's join, a delete by row ids, retention): they run
        on ``threads``; everything else (a batch's own statements, COMMIT) on one. Measured (DuckDB 1.5, 2 cores, a
        100k ``append_dedup`` in-process): one thread took 36-37 µs CPU per record against 43-45 on two, and less
        wall time (3.7 s vs 4.1-4.4 s): statements over a ≤ 8,192-record slice gain nothing from a second thread, and
        COMMIT with two cost ~7 µs per record more; but the join and the delete over 10 M documents run ~1.6× faster
        on two (flatness 0.77 on one thread throughout, against 0.87 before). ``SET threads`` costs ~0.2 ms."""
        if self.threads == 1:
            yield
            return
        self.settle()
        self.con.execute(f"SET threads = {self.threads}")
        try:
            yield
        finally:
            self.con.execute("SET threads = 1")

    @contextlib.contextmanager
    def staged(self, table: pa.Table) -> Iterator[str]:
        """``table`` registered under a fresh name for the statements of the ``with`` block (zero-copy scans)."""
        self.settle()
        name = f"__kc_stage_{next(_names)}"
        self.con.register(name, table)
        try:
            yield name
        finally:
            self.con.unregister(name)

    def lookup(
        self, table: str, ids: list[str], reads: DocumentReads, found_rows: list[tuple] | None = None
    ) -> dict[str, Stored]:
        """``found_rows``: step 1's rows (``_id, _event_time, _airbyte_generation_id, _doc_shape, rowid`` of the stored
        rows of ``ids``) when the caller has them from this transaction already (the set-based path, handing a batch
        over to the per-record one): then only the documents are read."""
        if not ids:
            return {}
        if found_rows is not None:
            rows = found_rows
        else:
            # 1. which ids are stored: a hash join with the batch as the build side, reading only the table's _id
            #    column (and the small columns of matched rows)
            with self.staged(pa.table({"_id": pa.array(ids, pa.string())})) as staged, self.collection_statements():
                rows = self.fetchall(
                    f"SELECT t._id, t._event_time, t._airbyte_generation_id, {self.catalog.shape_sql(table, 't.')}, t.rowid "
                    f"FROM {self.q(table)} t JOIN {staged} s ON t._id = s._id"
                )
        found: dict[str, Stored] = {}
        for key, event_time, generation, shape, rowid in rows:
            stored = found.get(key)
            if stored is None:
                found[key] = Stored(None, None, event_time, generation, (rowid,), shape)
            else:  # two rows of one _id (a copy made outside the writer): the batch's write replaces both
                stored.locator += (rowid,)
                stored.shape = None
        # 2. the documents the batch needs (reads.needs: merges that do not cover the stored shape, placeholders):
        #    a second join, made only when there are some; it reads _doc/_meta of every vector holding one of them,
        #    so its cost grows with the collection (see the module docstring)
        wanted = [key for key, stored in found.items() if reads.needs(key, stored.shape)]
        if wanted:
            wanted_rows = pa.table({"r": pa.array([found[key].locator[0] for key in wanted], pa.int64())})
            with self.staged(wanted_rows) as staged, self.collection_statements():
                docs = self.fetchall(
                    f"SELECT t.rowid, t._doc, t._meta FROM {self.q(table)} t JOIN {staged} s ON t.rowid = s.r"
                )
            by_rowid = {rowid: (doc, meta) for rowid, doc, meta in docs}
            for key in wanted:
                stored = found[key]
                doc, meta = by_rowid[stored.locator[0]]
                stored.fields = jsonio.loads(doc) if doc else {}
                stored.meta = jsonio.loads(meta) if meta else {}
        return found

    def write_batch(
        self, table: str, removed: dict[str, Stored], columns: list[tuple[str, str]], data: dict[str, list]
    ) -> None:
        if removed:
            # by rowid (found by ``lookup`` in this transaction): no second scan of the _id column. (RETURNING would
            # cost ~100x the DELETE itself: DuckDB materialises the deleted rows; the count is checked instead.)
            rowids = [rowid for stored in removed.values() for rowid in stored.locator]
            with self.staged(pa.table({"r": pa.array(rowids, pa.int64())})) as staged, self.collection_statements():
                gone = self.fetchall(f"DELETE FROM {self.q(table)} AS t USING {staged} AS s WHERE t.rowid = s.r")[0][0]
            if gone != len(rowids):
                # rowids are stable within a transaction; if that ever failed, stop before the collection is wrong
                raise RuntimeError(
                    f"Collection {table}: deleting {len(rowids)} looked-up row(s) by rowid removed {gone} "
                    f"row(s); the batch was rolled back."
                )
        if not data["_id"]:
            return
        arrays = [pa.array(data[name], _ARROW[kind]) for name, kind in columns]
        names = ", ".join(quote_ident(name) for name, _ in columns)
        with self.staged(pa.Table.from_arrays(arrays, names=[name for name, _ in columns])) as staged:
            self.execute(f"INSERT INTO {self.q(table)} ({names}) SELECT {names} FROM {staged}")

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

    # -- read-only view (inspect commands; see read_only_query.py) ------------------------------------------
    def read_only_view(self) -> "DuckDBStore":
        """A second connection (a cursor) to this database for statement text from users.

        DuckDB refuses a second read-only connection to a file this process has open read-write, and a cursor shares
        the database's settings; so: the view runs only statements that ``read_only_query.check_duckdb_select``
        accepts, each inside a transaction it rolls back, and external access (files, network, extension loading) is
        switched off for the database (the writer needs none: it stages batches as registered Arrow tables, spills
        to the database's own temporary folder). A database opened read-only (no runner) also gets its configuration
        locked, so not even a parser bug could change a setting. Create it on the thread that owns this store."""
        self.settle()
        cursor = self.con.cursor()
        cursor.execute("SET enable_external_access = false")
        cursor.execute("SET autoinstall_known_extensions = false")
        cursor.execute("SET autoload_known_extensions = false")
        if self._read_only_file():
            cursor.execute("SET lock_configuration = true")
        view = object.__new__(DuckDBStore)
        view.path = self.path
        view.con = cursor
        view._in_tx = False
        view._pending = None
        view.background_commit = False
        view.threads = 1  # the view never changes the database's threads (a setting it shares with the writer)
        return view

    def _read_only_file(self) -> bool:
        try:
            return bool(self.con.execute("SELECT readonly FROM duckdb_databases() WHERE database_name = current_database()").fetchone()[0])
        except duckdb.Error:
            return False

    @contextlib.contextmanager
    def read_only_snapshot(self) -> Iterator[None]:
        self.settle()
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
        finally:
            try:
                self.con.execute("ROLLBACK")
            except duckdb.Error:  # an interrupted statement can leave the transaction already aborted
                pass

    def run_read_only(self, sql: str, timeout_secs: float) -> tuple[list[str], list[tuple]]:
        from ..read_only_query import check_duckdb_select, fetch_bounded

        with self.read_only_snapshot():
            check_duckdb_select(self.con, sql)
            # execute() streams: rows are fetched in chunks and a result past MAX_RESULT_BYTES is refused, never
            # collected whole (a query can produce gigabytes; the runner writes in the same process)
            cursor = self.con.execute(sql)
            try:
                rows = fetch_bounded(cursor, sql)
            except BaseException:
                self.con.interrupt()  # stop the rest of the query now (else the rollback waits for all of it)
                raise
            return [d[0] for d in cursor.description or []], rows

    def interrupt(self) -> None:
        self.con.interrupt()
