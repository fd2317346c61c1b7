"""The collections' catalog: the metadata tables' DDL, and each collection's table and field → column mapping.

Metadata tables (same schema as the collections):

* ``_collection_catalog(table_name, stream, namespace, created_at, last_write_at, purged_documents)``
* ``_collection_columns(table_name, field, column_name, column_type, declared)``: the field → column mapping
* ``_collection_state(stream_key, state_type, namespace, stream, state_json, committed_at)``: created here with the
  others; read and written by ``state_table.StateTable``.

Everything here is SQL both stores share over the store's narrow dialect interface (``execute``, ``fetchall``, ``q``,
``param``, ``sql_type``, ``table_exists``, ``alter_type_sql``, ``ensure_schema``, ``id_constraint``); one catalog per
store (``Store.catalog``), which caches per table whether it has the ``_doc_shape`` column.
"""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from ..column_types import Column
from ..naming import CATALOG_TABLE, COLUMNS_TABLE, STATE_TABLE, quote_ident

if TYPE_CHECKING:
    from .base import Store

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


class CollectionCatalog:
    def __init__(self, store: "Store"):
        self.store = store
        self._shaped: dict[str, bool] = {}  # per table: whether it has the _doc_shape column (see system_columns)

    def ensure_metadata(self) -> None:
        """Create the schema and the metadata tables if missing, in a transaction (the caller's, if it has one) holding
        the store's metadata-DDL lock: writers sharing a PostgreSQL schema may run this at the same moment."""
        store = self.store
        with store.transaction():
            store.lock_metadata_ddl()
            store.ensure_schema()
            text, ts = store.sql_type("VARCHAR"), "TIMESTAMPTZ"
            store.execute(
                f"CREATE TABLE IF NOT EXISTS {store.q(CATALOG_TABLE)} (table_name {text} PRIMARY KEY, stream {text} NOT NULL, "
                f"namespace {text}, created_at {ts}, last_write_at {ts}, purged_documents BIGINT DEFAULT 0)"
            )
            store.execute(
                f"CREATE TABLE IF NOT EXISTS {store.q(COLUMNS_TABLE)} (table_name {text} NOT NULL, field {text} NOT NULL, "
                f"column_name {text} NOT NULL, column_type {text} NOT NULL, declared BOOLEAN NOT NULL, "
                f"PRIMARY KEY (table_name, field))"
            )
            store.execute(
                f"CREATE TABLE IF NOT EXISTS {store.q(STATE_TABLE)} (stream_key {text} PRIMARY KEY, state_type {text}, "
                f"namespace {text}, stream {text}, state_json {text} NOT NULL, committed_at {ts} NOT NULL)"
            )

    def ensure_collection(self, table: str, stream: str, namespace: str | None, declared: list[Column]) -> dict[str, Column]:
        """Create the collection table (and its declared columns) if missing; return its column map."""
        store = self.store
        if not store.table_exists(table):
            system = ", ".join(
                f"{quote_ident(name)} {store.sql_type(kind)}" + (store.id_constraint if name == "_id" else "")
                for name, kind in SYSTEM_COLUMN_TYPES
            )
            store.execute(f"CREATE TABLE {store.q(table)} ({system})")
            store.execute(
                f"INSERT INTO {store.q(CATALOG_TABLE)} (table_name, stream, namespace, created_at, purged_documents) "
                f"VALUES ({_params(store, 4)}, 0) ON CONFLICT (table_name) DO NOTHING",
                [table, stream, namespace, _now()],
            )
        columns = self.load_columns(table)
        if self.system_columns(table, columns) is SYSTEM_COLUMN_TYPES and SHAPE_COLUMN not in self._column_names(table):
            store.execute(f"ALTER TABLE {store.q(table)} ADD COLUMN {SHAPE_COLUMN} {store.sql_type('VARCHAR')}")
        new = [c for c in declared if c.field not in columns]
        if new:
            self.add_columns(table, new)
            columns.update({c.field: c for c in new})
        return columns

    def system_columns(self, table: str, columns: dict[str, Column]) -> tuple[tuple[str, str], ...]:
        """The system columns of ``table`` (given its typed ``columns``): all of them, or all but ``_doc_shape`` when a
        typed column made before it existed has that name."""
        shaped = not any(c.name.lower() == SHAPE_COLUMN for c in columns.values())
        self._shaped[table] = shaped
        return SYSTEM_COLUMN_TYPES if shaped else tuple(pair for pair in SYSTEM_COLUMN_TYPES if pair[0] != SHAPE_COLUMN)

    def shape_sql(self, table: str, alias: str = "") -> str:
        """The SQL for a row's ``_doc_shape`` in a lookup (NULL for a collection without the column)."""
        shaped = self._shaped.get(table)
        if shaped is None:
            self.system_columns(table, self.load_columns(table))
            shaped = self._shaped[table]
        return f"{alias}{SHAPE_COLUMN}" if shaped else "NULL"

    def _column_names(self, table: str) -> set[str]:
        store = self.store
        rows = store.fetchall(
            f"SELECT column_name FROM information_schema.columns WHERE table_schema = {store.param} "
            f"AND table_name = {store.param}",
            [store.schema or "main", table],
        )
        return {row[0] for row in rows}

    def load_columns(self, table: str) -> dict[str, Column]:
        store = self.store
        rows = store.fetchall(
            f"SELECT field, column_name, column_type, declared FROM {store.q(COLUMNS_TABLE)} "
            f"WHERE table_name = {store.param}",
            [table],
        )
        return {f: Column(f, name, kind, bool(declared)) for f, name, kind, declared in rows}

    def add_columns(self, table: str, columns: list[Column]) -> None:
        store = self.store
        for column in columns:
            store.execute(
                f"ALTER TABLE {store.q(table)} ADD COLUMN {quote_ident(column.name)} {store.sql_type(column.type)}"
            )
            store.execute(
                f"INSERT INTO {store.q(COLUMNS_TABLE)} (table_name, field, column_name, column_type, declared) "
                f"VALUES ({_params(store, 5)})",
                [table, column.field, column.name, column.type, column.declared],
            )

    def widen_column(self, table: str, column: Column, new_type: str) -> None:
        store = self.store
        store.execute(store.alter_type_sql(table, column.name, new_type))
        store.execute(
            f"UPDATE {store.q(COLUMNS_TABLE)} SET column_type = {store.param} WHERE table_name = {store.param} "
            f"AND field = {store.param}",
            [new_type, table, column.field],
        )

    def touch_collection(self, table: str) -> None:
        store = self.store
        store.execute(
            f"UPDATE {store.q(CATALOG_TABLE)} SET last_write_at = {store.param} WHERE table_name = {store.param}",
            [_now(), table],
        )

    def count_purged(self, table: str, count: int) -> None:
        """Add ``count`` documents purged by retention to the collection's ``purged_documents``."""
        store = self.store
        store.execute(
            f"UPDATE {store.q(CATALOG_TABLE)} SET purged_documents = coalesce(purged_documents, 0) + {store.param} "
            f"WHERE table_name = {store.param}",
            [int(count), table],
        )

    def collections(self) -> list[dict[str, Any]]:
        return self.store.table_rows(
            CATALOG_TABLE, 'table_name AS "table", stream, namespace, created_at, last_write_at, purged_documents',
            "table_name",
        )


def _params(store: "Store", count: int) -> str:
    return ", ".join([store.param] * count)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
