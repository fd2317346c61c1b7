"""PostgreSQL advisory-lock keys of a store, and the lock that serializes the DDL of its shared metadata tables.

Several writers may share one schema: ``kinesis-collection`` runners on several machines, each holding the collections
of its own streams (``collection_runner.locking``), and Airbyte syncs. What they share are the ``_collection_*``
metadata tables (one row per collection or stream each, so their writes never touch the same rows) and the DDL that
creates them. ``CREATE SCHEMA/TABLE IF NOT EXISTS`` run by two sessions at once can both find the object missing, and
the second then fails on a unique index of the system catalogs (``pg_namespace``, ``pg_type``): every such DDL runs in
a transaction holding the transaction-level advisory lock ``metadata_ddl_key`` of the schema (``lock_metadata_ddl``).

Keys are the first 8 bytes of a SHA-256 of a text naming database, schema and object, as a signed ``bigint``:
stable across versions and machines (``hash()`` is not). The keys since 0.1.3 hash a JSON list of the names, so no
two of them share a text whatever the names contain (``"s:collection:t"`` as a schema name cannot forge a collection's
key); ``store_key`` keeps 0.1.x's text so older runners and newer ones still meet on it. ``pg_locks`` shows a ``bigint`` key as ``classid`` (its high
32 bits) and ``objid`` (its low 32 bits) with ``objsubid`` 1: ``lock_columns``.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any


def _key(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


def store_key(database: str, schema: str) -> int:
    """The whole-store runner lock of kinesis-collection 0.1.x (one runner per schema). Runners since 0.1.3 hold it
    shared, so a runner of an older version (which takes it exclusively) and a newer one never write at once."""
    return _key(f"kinesis-collection:{database}:{schema}")


def _named_key(database: str, schema: str, kind: str, name: str = "") -> int:
    return _key(json.dumps(["kinesis-collection", database, schema, kind, name]))


def collection_key(database: str, schema: str, table: str) -> int:
    """The runner lock of one collection (its table) of the store."""
    return _named_key(database, schema, "collection", table)


def stream_key(database: str, schema: str, stream: str) -> int:
    """The runner lock of one stream's committed state (``_collection_state`` is keyed by stream, not by collection:
    two runners writing one stream into two collections, with different ``collection_prefix``, would share it)."""
    return _named_key(database, schema, "stream", stream)


def metadata_ddl_key(database: str, schema: str) -> int:
    return _named_key(database, schema, "metadata-ddl")


def lock_columns(key: int) -> tuple[int, int]:
    """``(classid, objid)`` of ``key`` as ``pg_locks`` shows a ``bigint`` advisory lock (``objsubid`` = 1)."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


def lock_metadata_ddl(conn: Any, database: str, schema: str) -> None:
    """Wait for, then hold until the current transaction ends, the schema's metadata-DDL lock. ``conn``: anything
    with psycopg's ``execute``; must be inside a transaction (in autocommit the lock would end with the statement)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", [metadata_ddl_key(database, schema)])
