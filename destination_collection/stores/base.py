"""The Store interface: everything the destination needs from a database, with shared SQL for both stores.

One collection = one table::

    _id TEXT PRIMARY KEY (DuckDB: NOT NULL, unique by the writer; see duckdb_store.py), _event_time TIMESTAMPTZ, _meta JSON, _doc JSON (every field of the document),
    _airbyte_raw_id, _airbyte_extracted_at, _airbyte_meta JSON, _airbyte_generation_id BIGINT,
    _doc_shape TEXT (the document's field names, so that a write can skip reading it: operations.document_shape),
    then one typed column per top-level field (see column_types.py)

The metadata tables and the collections' DDL: ``collection_catalog.py`` (``Store.catalog``); the committed states:
``state_table.py`` (``Store.states``). This class is the dialect: connection and transactions, statements, types,
the lookup and bulk write of a batch, value encoding, and the read-only view.
"""
from __future__ import annotations

import abc
import contextlib
import datetime as dt
import functools
from typing import Any, Iterator, Sequence

from .. import jsonio
from ..naming import quote_ident
from ..operations import DocumentReads, Stored
from .collection_catalog import SHAPE_COLUMN, SYSTEM_COLUMN_TYPES, CollectionCatalog
from .state_table import GLOBAL_STATE_KEY, StateTable

__all__ = ["GLOBAL_STATE_KEY", "SHAPE_COLUMN", "SYSTEM_COLUMN_TYPES", "Store"]


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

    @functools.cached_property
    def catalog(self) -> CollectionCatalog:
        """The metadata tables and the collections' DDL (collection_catalog.py)."""
        return CollectionCatalog(self)

    @functools.cached_property
    def states(self) -> StateTable:
        """The committed states (state_table.py)."""
        return StateTable(self)

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
    def table_exists(self, table: str) -> bool: ...

    @abc.abstractmethod
    def alter_type_sql(self, table: str, column: str, new_type: str) -> str:
        """The statement that changes ``column``'s type to ``new_type`` (a logical type), converting its values."""

    def ensure_schema(self) -> None:
        """Create the store's schema when it has one and it is missing (before the metadata tables)."""

    def lock_metadata_ddl(self) -> None:
        """Inside a transaction, before the DDL of the shared metadata tables: wait until no other writer of the store
        runs it (PostgreSQL: several writers may share a schema, see ``postgres_locks``). One writer per file: nothing."""

    @contextlib.contextmanager
    def collection_statements(self) -> Iterator[None]:
        """Around statements that read a whole collection (DuckDB runs them on more threads than the others)."""
        yield

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
    def table_rows(self, table: str, columns: str, order_by: str) -> list[dict[str, Any]]:
        """Every row of ``table`` (``columns``: a select list) as a dict keyed by column name or alias, ordered by
        ``order_by``; [] when the table does not exist yet."""
        if not self.table_exists(table):
            return []
        names, rows = self.fetch_with_columns(f"SELECT {columns} FROM {self.q(table)} ORDER BY {order_by}")
        return [dict(zip(names, row)) for row in rows]

    def q(self, table: str) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(table)}" if self.schema else quote_ident(table)

    # -- generations and retention ----------------------------------------------------------------------------
    def max_generation(self, table: str) -> int | None:
        with self.collection_statements():
            return self.fetchall(f"SELECT max(_airbyte_generation_id) FROM {self.q(table)}")[0][0]

    def delete_generations_before(self, table: str, minimum: int) -> int:
        where = f"_airbyte_generation_id IS NULL OR _airbyte_generation_id < {self.param}"
        with self.collection_statements():
            count = self.fetchall(f"SELECT count(*) FROM {self.q(table)} WHERE {where}", [minimum])[0][0]
            if count:
                self.execute(f"DELETE FROM {self.q(table)} WHERE {where}", [minimum])
        return int(count)

    def purge_older_than(self, table: str, cutoff: dt.datetime) -> int:
        with self.collection_statements():
            count = self.fetchall(
                f"SELECT count(*) FROM {self.q(table)} WHERE _event_time < {self.param}", [cutoff]
            )[0][0]
            if count:
                self.execute(f"DELETE FROM {self.q(table)} WHERE _event_time < {self.param}", [cutoff])
        if count:
            self.catalog.count_purged(table, int(count))
        return int(count)

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

