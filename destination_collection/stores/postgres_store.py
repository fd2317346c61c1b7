"""PostgreSQL store: a batch is one lookup through the ``_id`` index (``_id = ANY(…)``, documents read only for the ids
that need them), one ``DELETE`` of the rows it deletes or rewrites (through the index), and one ``COPY`` of its rows
straight into the collection. Merges read back the NUL encoding below decoded (``_decode_nul``), so a document merged
in a later batch is encoded exactly as one merged within a batch.

``jsonb`` cannot hold the NUL character (``\\u0000``). A string value containing it is stored in ``_doc`` as
``{"$base64_utf8": "<base64 of its UTF-8>"}`` (lossless) and listed in ``_airbyte_meta.changes`` with reason
``DESTINATION_SERIALIZATION_ERROR``; a text column gets NULL for it. An object key containing NUL turns the whole
document into ``{"$document_base64_utf8": …}``.

A statement refused for lack of a privilege (no ``CREATE`` on the database or schema, no ``USAGE`` on the schema,
none on a table) is a ``config_error`` naming the user, database and schema and the ``GRANT`` to run, for ``check``
and ``write`` alike.
"""
from __future__ import annotations

import base64
import logging
import contextlib
import itertools
from typing import Any, Iterable, Iterator, Sequence

import psycopg
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from .. import jsonio
from ..config import PostgresStoreConfig
from ..naming import quote_ident
from ..operations import DocumentReads, Stored
from .base import Store
from .postgres_connection import connect
from .postgres_locks import lock_metadata_ddl

logger = logging.getLogger("airbyte")

_TYPES = {
    "BOOLEAN": "boolean",
    "BIGINT": "bigint",
    "DECIMAL": "numeric(38,0)",
    "DOUBLE": "double precision",
    "VARCHAR": "text",
    "JSON": "jsonb",
    "TIMESTAMPTZ": "timestamptz",
}
_names = itertools.count()
NUL_STRING_KEY = "$base64_utf8"
NUL_DOCUMENT_KEY = "$document_base64_utf8"


class PostgresStore(Store):
    name = "postgres"
    param = "%s"
    holds_nul = False
    set_batches = True  # runs the set-based batch path (set_batch_postgres.py)

    def __init__(self, config: PostgresStoreConfig, read_only: bool = False):
        self.config = config
        self.schema = config.schema_
        self.conn = connect(config)
        self._tx: Any = None
        if read_only:
            self.conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        if read_only or not config.set_based_batches:  # config store.set_based_batches: the per-record path only
            self.set_batches = False
        elif not self.fetchall("SELECT has_database_privilege(current_database(), 'TEMP')")[0][0]:
            # the set-based path stages batches in temporary tables (a failed CREATE TEMP TABLE would abort the
            # transaction): without the privilege every batch takes the per-record path, which needs none
            logger.warning(
                f"PostgreSQL user '{config.username}' may not create temporary tables in database "
                f"'{config.database}': set_based_batches is ignored (every batch takes the per-record path). "
                f"GRANT TEMP ON DATABASE {quote_ident(config.database)} TO {quote_ident(config.username)} to use it."
            )
            self.set_batches = False
        else:
            # the set-based path stages each batch in temporary tables (~2x its JSON text); past temp_buffers (8MB
            # by default) they go through files. Settable only before the session's first temporary table. Its SQL
            # writes string literals with backslashes meant as themselves (regular expressions, '\u0000'): the
            # default since PostgreSQL 9.1, set in case a server or role turned it off.
            self.conn.execute("SET temp_buffers = '64MB'")
            self.conn.execute("SET standard_conforming_strings = on")

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self._tx is not None:
            yield
            return
        with self.conn.transaction() as tx:
            self._tx = tx
            try:
                yield
            finally:
                self._tx = None

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        try:
            self.conn.execute(sql, params)
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReservedName) as exc:
            raise self._not_allowed(exc) from None

    def fetchall(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReservedName) as exc:
            raise self._not_allowed(exc) from None

    def _not_allowed(self, exc: psycopg.Error) -> AirbyteTracedException:
        text = " ".join(str(exc).split()) or type(exc).__name__
        user, schema, database = self.config.username, self.schema, self.config.database
        return AirbyteTracedException(
            message=(
                f"PostgreSQL refused user '{user}' on schema '{schema}' of database '{database}': {text}. The user "
                f"needs USAGE and CREATE on the schema (GRANT USAGE, CREATE ON SCHEMA {quote_ident(schema)} TO "
                f"{quote_ident(user)}), and CREATE on the database while the schema does not exist yet (GRANT CREATE "
                f"ON DATABASE {quote_ident(database)} TO {quote_ident(user)}), or use a schema it owns."
            ),
            internal_message=text,
            failure_type=FailureType.config_error,
        )

    def fetch_with_columns(self, sql: str) -> tuple[list[str], list[tuple]]:
        cursor = self.conn.execute(sql)
        rows = cursor.fetchall() if cursor.description else []
        return [d.name for d in cursor.description or []], rows

    def ensure_schema(self) -> None:
        # CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema exists: only create it when
        # missing, so a user granted USAGE, CREATE on an existing schema is enough.
        if not self.fetchall("SELECT 1 FROM pg_namespace WHERE nspname = %s", [self.schema]):
            self.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.schema)}")

    def lock_metadata_ddl(self) -> None:
        lock_metadata_ddl(self, self.config.database, self.schema)

    def sql_type(self, logical: str) -> str:
        return _TYPES[logical]

    def alter_type_sql(self, table: str, column: str, new_type: str) -> str:
        col = quote_ident(column)
        using = f"to_jsonb({col})" if new_type == "JSON" else f"{col}::{self.sql_type(new_type)}"
        return f"ALTER TABLE {self.q(table)} ALTER COLUMN {col} TYPE {self.sql_type(new_type)} USING {using}"

    def table_exists(self, table: str) -> bool:
        return bool(
            self.fetchall(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s", [self.schema, table]
            )
        )

    def encode_document(self, value: Any) -> tuple[str, list[dict[str, Any]]]:
        text = jsonio.dumps(value)
        if "\\u0000" not in text:
            return text, []
        changes: list[dict[str, Any]] = []
        try:
            encoded = _encode_nul(value, "", changes)
        except _NulKey:
            raw = base64.b64encode(text.encode("utf-8")).decode("ascii")
            return jsonio.dumps({NUL_DOCUMENT_KEY: raw}), [_nul_change("", "an object key contains NUL")]
        return jsonio.dumps(encoded), changes

    def encode_documents(self, values: list[Any]) -> tuple[list[str], list[list[dict[str, Any]]] | None]:
        texts = jsonio.dumps_many(values)
        changes = None
        for index, text in enumerate(texts):
            if "\\u0000" in text:  # rare: the per-value path (same text and changes as encode_document)
                if changes is None:
                    changes = [[] for _ in texts]
                texts[index], changes[index] = self.encode_document(values[index])
        return texts, changes

    def lookup(self, table: str, ids: list[str], reads: DocumentReads) -> dict[str, Stored]:
        if not ids:
            return {}
        # through the _id index (an index scan or a nested loop over ANY's array: proportional to the batch): first
        # the small columns, then the documents the batch needs (reads.needs), by _id again. The arrays go sorted:
        # measured at 10 M rows, 10k ids took 0.09-0.2 s in arrival order and 0.046 s sorted (the server's own work
        # was 30 ms either way). An _id index carrying these columns (PRIMARY KEY … INCLUDE) makes this an index-only
        # scan, but the DELETE of the rewritten rows then reads the heap pages instead: measured at 10 M rows (100k
        # change batch, 1 GB shared_buffers) lookups 1.0 -> 0.81 s, deletes 0.26 -> 0.57 s, so no index carries them
        rows = self.fetchall(
            f"SELECT _id, _event_time, _airbyte_generation_id, {self.catalog.shape_sql(table)} "
            f"FROM {self.q(table)} WHERE _id = ANY(%s)",
            [sorted(ids)],
        )
        found = {key: Stored(None, None, event_time, generation, None, shape) for key, event_time, generation, shape in rows}
        wanted = [key for key, stored in found.items() if reads.needs(key, stored.shape)]
        if wanted:
            for key, doc, meta in self.fetchall(
                f"SELECT _id, _doc::text, _meta::text FROM {self.q(table)} WHERE _id = ANY(%s)", [sorted(wanted)]
            ):
                stored = found[key]
                stored.fields = _decode_nul(jsonio.loads(doc)) if doc else {}
                stored.meta = _decode_nul(jsonio.loads(meta)) if meta else {}
        return found

    def write_batch(
        self, table: str, removed: dict[str, Stored], columns: list[tuple[str, str]], data: dict[str, list]
    ) -> None:
        if removed:
            self.execute(f"DELETE FROM {self.q(table)} WHERE _id = ANY(%s)", [sorted(removed)])
        if data["_id"]:
            # every row is new now: COPY straight into the collection (the rows cross the server once; no staging
            # table, no ON CONFLICT); a row whose _id is stored after all fails the batch like a PRIMARY KEY does
            names = ", ".join(quote_ident(name) for name, _ in columns)
            self._copy(self.q(table), names, columns, data)

    def copy_text(self, target: str, names: str, chunks: Iterable[bytes], options: str) -> None:
        """``COPY target (names) FROM STDIN (options)`` of data already in COPY's text or CSV form, in chunks."""
        with self.conn.cursor() as cursor:
            with cursor.copy(f"COPY {target} ({names}) FROM STDIN ({options})") as copy:
                for chunk in chunks:
                    copy.write(chunk)

    def _copy(self, target: str, names: str, columns: list[tuple[str, str]], data: dict[str, list]) -> None:
        with self.conn.cursor() as cursor:
            with cursor.copy(f"COPY {target} ({names}) FROM STDIN") as copy:
                write_row = copy.write_row
                for row in zip(*(data[name] for name, _ in columns)):
                    write_row(row)

    def table_bytes(self, table: str) -> int | None:
        return int(self.fetchall("SELECT pg_total_relation_size(%s::regclass)", [self.q(table)])[0][0])

    def iter_documents(self, table: str, batch: int = 10_000) -> Iterator[tuple[str, Any, str, str]]:
        with self.conn.transaction():
            with self.conn.cursor(name=f"kc_iter_{next(_names)}") as cursor:
                cursor.itersize = batch
                cursor.execute(f"SELECT _id, _event_time, _meta::text, _doc::text FROM {self.q(table)}")
                yield from cursor

    # -- read-only view (inspect commands; see read_only_query.py) ------------------------------------------
    def read_only_view(self) -> "PostgresStore":
        """A new session whose transactions are READ ONLY by default (each query also sets it explicitly); dates and
        timestamps Python cannot hold (``infinity``, years past 9999 or BC) come back as their text."""
        from psycopg.types.datetime import DateLoader, TimestampLoader, TimestamptzLoader

        view = PostgresStore(self.config, read_only=True)
        for oid_name, base in (("date", DateLoader), ("timestamp", TimestampLoader), ("timestamptz", TimestamptzLoader)):
            loader = type(f"Lenient{base.__name__}", (base,), {"load": _lenient_load(base)})
            view.conn.adapters.register_loader(oid_name, loader)
        return view

    @contextlib.contextmanager
    def read_only_snapshot(self) -> Iterator[None]:
        # BEGIN; SET TRANSACTION READ ONLY first (before any query: it cannot be switched back to READ WRITE after a
        # query ran); always rolled back
        with self.conn.transaction(force_rollback=True):
            self.conn.execute("SET TRANSACTION READ ONLY")
            yield

    def run_read_only(self, sql: str, timeout_secs: float) -> tuple[list[str], list[tuple]]:
        """One statement via the extended query protocol (``prepare=True``: Parse/Bind/Execute, which refuses several
        statements in one text) inside a READ ONLY transaction with ``statement_timeout`` set for it, rolled back.
        The session is the caller's own and closed after the command, so session-level effects that a read-only
        transaction permits (``set_config``, advisory locks, ``LISTEN``, ``PREPARE``) end with it."""
        from ..read_only_query import ResultBound, check_postgres_text

        check_postgres_text(sql)  # DO, CALL, COPY, pg_terminate_backend, advisory locks …: refused (see there)
        bound = ResultBound(sql)
        with self.read_only_snapshot():
            self.conn.execute("SELECT set_config('statement_timeout', %s, true)", [str(max(1, int(timeout_secs * 1000)))])
            with self.conn.cursor() as cursor:
                try:
                    # stream(): the extended protocol (one statement) in single-row mode, so the result is never
                    # held whole by libpq; past MAX_RESULT_BYTES it is refused (closing the stream cancels the rest)
                    rows: list[tuple] = []
                    stream = cursor.stream(sql)
                    try:
                        for row in stream:
                            rows.append(row)
                            if len(rows) % 256 == 0:
                                bound.add(rows[-256:])
                        bound.add(rows[len(rows) - len(rows) % 256:])
                    finally:
                        stream.close()
                except psycopg.errors.SyntaxError as exc:
                    if "multiple commands" in str(exc):
                        raise AirbyteTracedException(
                            message=f"Query refused: it holds several statements; send exactly one per request. SQL: {sql}",
                            failure_type=FailureType.config_error,
                        ) from None
                    raise
                except psycopg.errors.ReadOnlySqlTransaction as exc:
                    raise AirbyteTracedException(
                        message=f"Query refused: {str(exc).strip().splitlines()[0]} (inspect queries are read-only). SQL: {sql}",
                        failure_type=FailureType.config_error,
                    ) from None
                except psycopg.errors.QueryCanceled:
                    raise AirbyteTracedException(
                        message=(
                            f"Query stopped after {timeout_secs:g} s (its time limit, statement_timeout); narrow it or "
                            f"raise --timeout. SQL: {sql}"
                        ),
                        failure_type=FailureType.config_error,
                    ) from None
                return [d.name for d in cursor.description or []], rows

    def interrupt(self) -> None:
        self.conn.cancel_safe(timeout=2.0)


def _lenient_load(base: Any) -> Any:
    def load(self: Any, data: Any) -> Any:
        try:
            return base.load(self, data)
        except psycopg.DataError:
            return bytes(data).decode("utf-8", "replace")

    return load


class _NulKey(Exception):
    pass


def _nul_change(path: str, detail: str) -> dict[str, Any]:
    return {
        "field": path or "_doc",
        "change": "NULLED",
        "reason": "DESTINATION_SERIALIZATION_ERROR",
        "detail": f"PostgreSQL jsonb cannot hold NUL; {detail}",
    }


def _encode_nul(value: Any, path: str, changes: list[dict[str, Any]]) -> Any:
    if isinstance(value, str):
        if "\x00" in value:
            changes.append(_nul_change(path, f'stored as {{"{NUL_STRING_KEY}": ...}}'))
            return {NUL_STRING_KEY: base64.b64encode(value.encode("utf-8")).decode("ascii")}
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if "\x00" in key:
                raise _NulKey()
            out[key] = _encode_nul(item, f"{path}.{key}" if path else key, changes)
        return out
    if isinstance(value, list):
        return [_encode_nul(item, f"{path}[{i}]", changes) for i, item in enumerate(value)]
    return value


def _decode_nul(value: Any) -> Any:
    """A stored value as it was before ``_encode_nul``: what a merge in a later batch builds on, so the merged document
    is encoded (and its changes recorded) exactly as if the merge had happened within one batch. Only objects this
    store writes are decoded: one key, whose base64 text decodes to UTF-8 holding NUL (an encoding only NUL causes)."""
    if isinstance(value, dict):
        if len(value) == 1:
            (name, item), = value.items()
            if name in (NUL_STRING_KEY, NUL_DOCUMENT_KEY) and isinstance(item, str):
                try:
                    text = base64.b64decode(item.encode("ascii"), validate=True).decode("utf-8")
                except (ValueError, UnicodeError):
                    text = None
                if text is not None and "\x00" in text:
                    if name == NUL_STRING_KEY:
                        return text
                    try:
                        return jsonio.loads(text)
                    except ValueError:
                        pass
        return {name: _decode_nul(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_decode_nul(item) for item in value]
    return value
