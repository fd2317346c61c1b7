"""The Store interface: everything the destination needs from a database, with shared SQL for both stores.

One collection = one table::

    _id TEXT PRIMARY KEY (DuckDB: NOT NULL, unique by the writer; see duckdb_store.py), _event_time TIMESTAMPTZ, _meta JSON, _doc JSON (every field of the document),
    _airbyte_raw_id, _airbyte_extracted_at, _airbyte_meta JSON, _airbyte_generation_id BIGINT,
    _doc_shape TEXT (the document's field names, so that a write can skip reading it: operations.document_shape),
    then one typed column per top-level field (see column_types.py)

A collection created before ``_doc_shape`` existed gets the column when a sync opens it (NULL in its rows until they
are rewritten: such rows are read when a change needs them), unless one of its typed columns already has that name:
then it goes without (``system_columns``).

Metadata tables (same schema as the collections):

* ``_collection_catalog(table_name, stream, namespace, created_at, last_write_at, purged_documents)``
* ``_collection_columns(table_name, field, column_name, column_type, declared)``: the field → column mapping
* ``_collection_state(stream_key, state_type, namespace, stream, state_json, committed_at)``: the latest committed
  state per stream (``stream_key`` = name, or ``namespace.name``; ``__global__`` for a GLOBAL/LEGACY state),
  written in the same transaction as the data it covers.
"""
from __future__ import annotations

import abc
import contextlib
import datetime as dt
from typing import Any, Iterator, Sequence

from .. import jsonio
from ..column_types import Column
from ..naming import CATALOG_TABLE, COLUMNS_TABLE, STATE_TABLE, quote_ident
from ..operations import DocumentReads, Stored

GLOBAL_STATE_KEY = "__global__"
SYSTEM_COLUMN_TYPES = (
    ("_id", "VARCHAR"),
    ("_event_time", "TIMESTAMPTZ"),
    ("_meta", "JSON"),
    ("_doc", "JSON"),
    ("_airbyte_raw_id", "VARCHAR"),
    ("_airbyte_extracted_at", "TIMESTAMPTZ"),
    ("_airbyte_meta", "JSON"),
    ("_airbyte_generation_id", "BIGINT"),
    ("_doc_shape", "VARCHAR"),
)
SHAPE_COLUMN = "_doc_shape"


class Store(abc.ABC):
    """Shared behaviour; subclasses supply the dialect (types, staging, parameters)."""

    name = "store"
    # declared capabilities: text columns can hold U+0000 (PostgreSQL's cannot: such a value is a misfit there)
    holds_nul = True
    # runs the set-based batch path (set_batch.py: DuckDB SQL over a batch staged as JSON text) with ``staged``
    set_batches = False
    schema: str | None = None
    json_sql_type = "JSON"
    param = "?"
    id_constraint = " PRIMARY KEY"  # what a new collection's _id column declares (see DuckDBStore)
    _shaped_tables: dict[str, bool] | None = None

    # -- connection and transactions --------------------------------------------------------------------------
    @abc.abstractmethod
    def close(self) -> None: ...

    def commit_pending(self) -> bool:
        """Whether the last transaction's COMMIT is still running (stores that commit in the background); a finished
        one that failed raises here. Synchronous stores: always False."""
        return False

    def settle(self) -> None:
        """Wait for a background COMMIT and raise its error, if any (synchronous stores: nothing to do)."""

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[None]: ...

    @abc.abstractmethod
    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None: ...

    @abc.abstractmethod
    def fetchall(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]: ...

    @abc.abstractmethod
    def fetch_with_columns(self, sql: str) -> tuple[list[str], list[tuple]]: ...

    # -- dialect ----------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def sql_type(self, logical: str) -> str: ...

    @abc.abstractmethod
    def _table_exists(self, table: str) -> bool: ...

    # -- the batch write path (collection_writer.py): one lookup and one write per batch ---------------------
    @abc.abstractmethod
    def lookup(self, table: str, ids: list[str], reads: DocumentReads) -> dict[str, Stored]:
        """The stored rows of ``ids`` (distinct), by set operations driven from the batch's side: event time,
        generation, shape and locator of each; ``fields``/``meta`` only where ``reads.needs(_id, shape)`` (None for
        the others: not read)."""

    @abc.abstractmethod
    def write_batch(
        self, table: str, removed: dict[str, Stored], columns: list[tuple[str, str]], data: dict[str, list]
    ) -> None:
        """Remove the stored rows in ``removed`` (deleted or rewritten documents, as ``lookup`` returned them), then
        insert ``data`` (column name → values) in bulk. No ``_id`` of ``data`` is stored once ``removed`` is gone."""

    @abc.abstractmethod
    def table_bytes(self, table: str) -> int | None: ...

    def encode_document(self, value: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        """JSON text for a JSON column, plus any changes the store had to make to hold it."""
        return jsonio.dumps(value), []

    def encode_documents(self, values: list[Any]) -> tuple[list[str], list[list[dict[str, Any]]] | None]:
        """``encode_document`` for many values: their texts, and their changes (None when no value needed any)."""
        if type(self).encode_document is Store.encode_document:
            return jsonio.dumps_many(values), None
        encoded = [self.encode_document(value) for value in values]
        changes = [c for _, c in encoded]
        return [t for t, _ in encoded], (changes if any(changes) else None)

    def encode_text(self, value: str) -> str | None:
        """A string for a text column, or None if the store cannot hold it (U+0000 where ``holds_nul`` is false)."""
        return None if not self.holds_nul and "\x00" in value else value

    # -- names ------------------------------------------------------------------------------------------------
    def q(self, table: str) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(table)}" if self.schema else quote_ident(table)

    def _p(self, count: int) -> str:
        return ", ".join([self.param] * count)

    # -- metadata ---------------------------------------------------------------------------------------------
    def ensure_metadata(self) -> None:
        text, ts = self.sql_type("VARCHAR"), "TIMESTAMPTZ"
        self.execute(
            f"CREATE TABLE IF NOT EXISTS {self.q(CATALOG_TABLE)} (table_name {text} PRIMARY KEY, stream {text} NOT NULL, "
            f"namespace {text}, created_at {ts}, last_write_at {ts}, purged_documents BIGINT DEFAULT 0)"
        )
        self.execute(
            f"CREATE TABLE IF NOT EXISTS {self.q(COLUMNS_TABLE)} (table_name {text} NOT NULL, field {text} NOT NULL, "
            f"column_name {text} NOT NULL, column_type {text} NOT NULL, declared BOOLEAN NOT NULL, "
            f"PRIMARY KEY (table_name, field))"
        )
        self.execute(
            f"CREATE TABLE IF NOT EXISTS {self.q(STATE_TABLE)} (stream_key {text} PRIMARY KEY, state_type {text}, "
            f"namespace {text}, stream {text}, state_json {text} NOT NULL, committed_at {ts} NOT NULL)"
        )

    def ensure_collection(self, table: str, stream: str, namespace: str | None, declared: list[Column]) -> dict[str, Column]:
        """Create the collection table (and its declared columns) if missing; return its column map."""
        if not self._table_exists(table):
            system = ", ".join(
                f"{quote_ident(name)} {self.sql_type(kind)}" + (self.id_constraint if name == "_id" else "")
                for name, kind in SYSTEM_COLUMN_TYPES
            )
            self.execute(f"CREATE TABLE {self.q(table)} ({system})")
            self.execute(
                f"INSERT INTO {self.q(CATALOG_TABLE)} (table_name, stream, namespace, created_at, purged_documents) "
                f"VALUES ({self._p(4)}, 0) ON CONFLICT (table_name) DO NOTHING",
                [table, stream, namespace, _now()],
            )
        columns = self.load_columns(table)
        if self.system_columns(table, columns) is SYSTEM_COLUMN_TYPES and SHAPE_COLUMN not in self._column_names(table):
            self.execute(f"ALTER TABLE {self.q(table)} ADD COLUMN {SHAPE_COLUMN} {self.sql_type('VARCHAR')}")
        new = [c for c in declared if c.field not in columns]
        if new:
            self.add_columns(table, new)
            columns.update({c.field: c for c in new})
        return columns

    def system_columns(self, table: str, columns: dict[str, Column]) -> tuple[tuple[str, str], ...]:
        """The system columns of ``table`` (given its typed ``columns``): all of them, or all but ``_doc_shape`` when a
        typed column made before it existed has that name."""
        shaped = not any(c.name.lower() == SHAPE_COLUMN for c in columns.values())
        self._shaped()[table] = shaped
        return SYSTEM_COLUMN_TYPES if shaped else tuple(pair for pair in SYSTEM_COLUMN_TYPES if pair[0] != SHAPE_COLUMN)

    def _shaped(self) -> dict[str, bool]:
        """Per table: whether it has the ``_doc_shape`` column (filled by ``system_columns``)."""
        if self._shaped_tables is None:
            self._shaped_tables = {}
        return self._shaped_tables

    def shape_sql(self, table: str, alias: str = "") -> str:
        """The SQL for a row's ``_doc_shape`` in ``lookup`` (NULL for a collection without the column)."""
        shaped = self._shaped().get(table)
        if shaped is None:
            self.system_columns(table, self.load_columns(table))
            shaped = self._shaped()[table]
        return f"{alias}{SHAPE_COLUMN}" if shaped else "NULL"

    def _column_names(self, table: str) -> set[str]:
        rows = self.fetchall(
            f"SELECT column_name FROM information_schema.columns WHERE table_schema = {self.param} "
            f"AND table_name = {self.param}",
            [self.schema or "main", table],
        )
        return {row[0] for row in rows}

    def load_columns(self, table: str) -> dict[str, Column]:
        rows = self.fetchall(
            f"SELECT field, column_name, column_type, declared FROM {self.q(COLUMNS_TABLE)} WHERE table_name = {self.param}",
            [table],
        )
        return {f: Column(f, name, kind, bool(declared)) for f, name, kind, declared in rows}

    def add_columns(self, table: str, columns: list[Column]) -> None:
        for column in columns:
            self.execute(f"ALTER TABLE {self.q(table)} ADD COLUMN {quote_ident(column.name)} {self.sql_type(column.type)}")
            self.execute(
                f"INSERT INTO {self.q(COLUMNS_TABLE)} (table_name, field, column_name, column_type, declared) "
                f"VALUES ({self._p(5)})",
                [table, column.field, column.name, column.type, column.declared],
            )

    def widen_column(self, table: str, column: Column, new_type: str) -> None:
        self.execute(self._alter_type_sql(table, column.name, new_type))
        self.execute(
            f"UPDATE {self.q(COLUMNS_TABLE)} SET column_type = {self.param} WHERE table_name = {self.param} AND field = {self.param}",
            [new_type, table, column.field],
        )

    @abc.abstractmethod
    def _alter_type_sql(self, table: str, column: str, new_type: str) -> str: ...

    def touch_collection(self, table: str) -> None:
        self.execute(
            f"UPDATE {self.q(CATALOG_TABLE)} SET last_write_at = {self.param} WHERE table_name = {self.param}",
            [_now(), table],
        )

    def collections(self) -> list[dict[str, Any]]:
        if not self._table_exists(CATALOG_TABLE):
            return []
        rows = self.fetchall(
            f"SELECT table_name, stream, namespace, created_at, last_write_at, purged_documents "
            f"FROM {self.q(CATALOG_TABLE)} ORDER BY table_name"
        )
        keys = ("table", "stream", "namespace", "created_at", "last_write_at", "purged_documents")
        return [dict(zip(keys, row)) for row in rows]

    # -- generations and retention ----------------------------------------------------------------------------
    def max_generation(self, table: str) -> int | None:
        return self.fetchall(f"SELECT max(_airbyte_generation_id) FROM {self.q(table)}")[0][0]

    def delete_generations_before(self, table: str, minimum: int) -> int:
        where = f"_airbyte_generation_id IS NULL OR _airbyte_generation_id < {self.param}"
        count = self.fetchall(f"SELECT count(*) FROM {self.q(table)} WHERE {where}", [minimum])[0][0]
        if count:
            self.execute(f"DELETE FROM {self.q(table)} WHERE {where}", [minimum])
        return int(count)

    def purge_older_than(self, table: str, cutoff: dt.datetime) -> int:
        count = self.fetchall(f"SELECT count(*) FROM {self.q(table)} WHERE _event_time < {self.param}", [cutoff])[0][0]
        if count:
            self.execute(f"DELETE FROM {self.q(table)} WHERE _event_time < {self.param}", [cutoff])
            self.execute(
                f"UPDATE {self.q(CATALOG_TABLE)} SET purged_documents = coalesce(purged_documents, 0) + {self.param} "
                f"WHERE table_name = {self.param}",
                [int(count), table],
            )
        return int(count)

    # -- state ------------------------------------------------------------------------------------------------
    def save_state(self, stream_key: str, state_type: str, namespace: str | None, stream: str | None, state_json: str) -> None:
        self.execute(
            f"INSERT INTO {self.q(STATE_TABLE)} (stream_key, state_type, namespace, stream, state_json, committed_at) "
            f"VALUES ({self._p(6)}) ON CONFLICT (stream_key) DO UPDATE SET state_type = excluded.state_type, "
            f"namespace = excluded.namespace, stream = excluded.stream, state_json = excluded.state_json, "
            f"committed_at = excluded.committed_at",
            [stream_key, state_type, namespace, stream, state_json, _now()],
        )

    def committed_states(self) -> dict[str, str]:
        """Latest committed state per stream key: the raw JSON of the echoed ``state`` object."""
        if not self._table_exists(STATE_TABLE):
            return {}
        return dict(self.fetchall(f"SELECT stream_key, state_json FROM {self.q(STATE_TABLE)} ORDER BY stream_key"))

    def committed_state_messages(self) -> list[dict[str, Any]]:
        """The committed states as a list of state objects, ready for a source's ``--state`` (or ``state=``)."""
        return [jsonio.loads(text) for text in self.committed_states().values()]

    def committed_state_rows(self) -> list[dict[str, Any]]:
        if not self._table_exists(STATE_TABLE):
            return []
        rows = self.fetchall(
            f"SELECT stream_key, state_type, namespace, stream, state_json, committed_at FROM {self.q(STATE_TABLE)} ORDER BY stream_key"
        )
        keys = ("stream_key", "state_type", "namespace", "stream", "state_json", "committed_at")
        return [dict(zip(keys, row)) for row in rows]

    # -- inspection -------------------------------------------------------------------------------------------
    def count_documents(self, table: str) -> int:
        return int(self.fetchall(f"SELECT count(*) FROM {self.q(table)}")[0][0])

    @abc.abstractmethod
    def iter_documents(self, table: str, batch: int = 10_000) -> Iterator[tuple[str, Any, str, str]]:
        """Yield (_id, _event_time, _meta JSON text, _doc JSON text) for every document."""

    # -- read-only view (inspect commands: statement text from a user) ---------------------------------------
    def read_only_view(self) -> "Store":
        """A view of this store for the inspect commands: its own connection to the same database, on which
        ``run_read_only``, ``read_only_snapshot`` and ``interrupt`` work, and through which nothing can be changed
        (DuckDB: a cursor with external access off; PostgreSQL: a read-only session). Create it on the thread that
        owns this store; use it from one thread at a time; close it with ``close()``."""
        raise NotImplementedError(f"{type(self).__name__} has no read-only view")

    def read_only_snapshot(self) -> contextlib.AbstractContextManager[None]:
        """(Views) A transaction that sees committed data and is always rolled back."""
        raise NotImplementedError(f"{type(self).__name__} is not a read-only view")

    def run_read_only(self, sql: str, timeout_secs: float) -> tuple[list[str], list[tuple]]:
        """(Views) One statement of user text, refused unless it is a single read-only query, run inside
        ``read_only_snapshot``; its columns and rows. ``timeout_secs`` is also given to the database where it has its
        own limit (PostgreSQL ``statement_timeout``); the caller enforces it with ``interrupt``."""
        raise NotImplementedError(f"{type(self).__name__} is not a read-only view")

    def interrupt(self) -> None:
        """(Views) Stop the statement running on this connection, from another thread (it then raises there)."""
        raise NotImplementedError(f"{type(self).__name__} is not a read-only view")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
