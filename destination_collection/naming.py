"""Collection (table) and column names, and SQL identifier quoting.

Rules (documented in docs/destination-collection.md, "Storage layout"):

* A stream maps to exactly one table. The table name is ``prefix + stream`` (``prefix + namespace + "_" + stream``
  when the stream has a namespace), sanitised to ``[a-z0-9_]`` (not starting with a digit). When sanitising changed
  the name, when it is longer than PostgreSQL's 63-byte identifier limit, when a namespace is involved (the
  concatenation would be ambiguous), when it is reserved (``_collection_*`` metadata tables) or when the result
  already looks like a hashed name, the name is cut and gets ``__`` + 8 hex characters of a SHA-1 over the exact
  inputs. Unchanged names never end in such a suffix, so the mapping is injective (up to a 32-bit hash collision,
  which is detected when the catalog is opened).
* A top-level document field keeps its own name as its column name (quoted, so spaces, quotes and keywords are
  fine) unless it is reserved, longer than 63 bytes, contains NUL, or clashes case-insensitively with a column
  already assigned (DuckDB identifiers are case-insensitive); then it is cut and gets ``__`` + a hash. The
  assignment is stored in ``_collection_columns`` so it never changes once made.
* Every identifier that reaches SQL goes through :func:`quote_ident`.
"""
from __future__ import annotations

import hashlib
import json
import re

MAX_IDENTIFIER_BYTES = 63
HASH_CHARS = 8

STATE_TABLE = "_collection_state"
CATALOG_TABLE = "_collection_catalog"
COLUMNS_TABLE = "_collection_columns"
# who holds each collection's runner lock (PostgreSQL): written and read by kinesis-collection (collection_runner/locking.py)
RUNNERS_TABLE = "_collection_runners"
METADATA_TABLES = (STATE_TABLE, CATALOG_TABLE, COLUMNS_TABLE, RUNNERS_TABLE)

# Columns every collection table has; a document field with one of these names gets a hashed column name.
SYSTEM_COLUMNS = (
    "_id",
    "_event_time",
    "_meta",
    "_doc",
    "_airbyte_raw_id",
    "_airbyte_extracted_at",
    "_airbyte_meta",
    "_airbyte_generation_id",
    "_doc_shape",
)

_HASHED = re.compile(r"__[0-9a-f]{%d}$" % HASH_CHARS)
_UNSAFE = re.compile(r"[^a-z0-9_]")


def quote_ident(name: str) -> str:
    """Quote an SQL identifier for DuckDB and PostgreSQL (double quotes, embedded quotes doubled)."""
    if "\x00" in name:
        raise ValueError("SQL identifiers cannot contain NUL characters")
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str | None, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}" if schema else quote_ident(name)


def short_hash(*parts: object) -> str:
    return hashlib.sha1(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()[:HASH_CHARS]


def _cut_bytes(text: str, max_bytes: int) -> str:
    encoded = text.encode("utf-8")[:max_bytes]
    return encoded.decode("utf-8", errors="ignore")


def _with_hash(base: str, digest: str) -> str:
    return _cut_bytes(base, MAX_IDENTIFIER_BYTES - HASH_CHARS - 2) + "__" + digest


def sanitize(text: str) -> str:
    cleaned = _UNSAFE.sub("_", text.lower())
    if not cleaned or cleaned[0].isdigit():
        cleaned = "_" + cleaned
    return cleaned


def table_name(prefix: str, stream: str, namespace: str | None = None) -> str:
    """The collection table for a stream (injective over (prefix, namespace, stream))."""
    raw = prefix + (f"{namespace}_" if namespace else "") + stream
    clean = sanitize(raw)
    needs_hash = (
        clean != raw
        or bool(namespace)
        or len(clean.encode("utf-8")) > MAX_IDENTIFIER_BYTES
        or clean.startswith("_collection_")
        or bool(_HASHED.search(clean))
    )
    if needs_hash:
        return _with_hash(clean, short_hash(prefix, namespace, stream))
    return clean


def column_name(field: str, taken_lower: set[str]) -> str:
    """The column for a top-level field, given the lower-cased names already used in the table."""
    plain_ok = (
        field
        and "\x00" not in field
        and len(field.encode("utf-8")) <= MAX_IDENTIFIER_BYTES
        and field.lower() not in SYSTEM_COLUMNS
        and field.lower() not in taken_lower
    )
    if plain_ok:
        return field
    base = field.replace("\x00", "") or "field"
    candidate = _with_hash(base, short_hash(field))
    salt = 0
    while candidate.lower() in taken_lower or candidate.lower() in SYSTEM_COLUMNS:
        salt += 1
        candidate = _with_hash(base, short_hash(field, salt))
    return candidate
