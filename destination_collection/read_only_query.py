"""Statement text from a user (``query``), run so that it can change nothing and ends in bounded time.

Two parts:

* ``check_duckdb_select``: the DuckDB statement guard. DuckDB parses the text itself (``json_serialize_sql``, which
  serializes SELECT statements only: SET, RESET, PRAGMA, CALL, ATTACH, DETACH, COPY, EXPORT, INSTALL, LOAD,
  CHECKPOINT, DDL, DML and transaction statements are refused by the parser, as is ``SELECT … FOR UPDATE``), and the
  text must be exactly one statement. The parse tree is then checked: table functions must be on an allow-list of
  functions that read only the database or generate rows (no ``read_csv``/``read_json``/``glob``/``query``/
  ``query_table``/``duckdb_secrets``/``checkpoint`` …), tables must exist in the database (so ``FROM 'file.csv'``
  cannot become a file scan), and a few scalar functions with effects outside the query are refused (``getenv``,
  ``nextval``, ``setseed``, ``write_log`` …). The store then runs the statement inside a transaction it rolls back,
  with external access (files, network, extensions) off.
  PostgreSQL has no parser here: its store sends one statement through the extended query protocol (which refuses
  several) inside a ``READ ONLY`` transaction with a ``statement_timeout``, then rolls back (see PostgresStore).
  ``check_postgres_text`` first refuses statements a READ ONLY transaction still permits but that act outside it
  (``DO``, ``CALL``, ``COPY``, session ``SET``; signalling or terminating other sessions, e.g. the writer's:
  ``pg_terminate_backend``; advisory locks, large objects, server files, ``dblink``, ``set_config``; functions that
  run SQL text, which could assemble any of these). Names are matched anywhere in the text, strings included.
* ``check_statement_text`` (both stores): text with NUL or that is not valid UTF-8 is refused with a clear message
  (DuckDB would stop reading at the NUL, so the text checked and the text run could differ).
* ``ResultBound``: a query's result is fetched in chunks and refused once its rows exceed ``MAX_RESULT_BYTES``
  (estimated from the Python values), so a huge result cannot grow the process (the runner writes meanwhile).
* ``Deadline``: runs a function (a query, ``describe``, ``stats``) with a time limit and lets another thread stop
  it (client gone, shutdown): on expiry or ``cancel`` it calls ``view.interrupt()`` (DuckDB ``interrupt()``,
  PostgreSQL cancel), repeatedly until the function returns, and turns the resulting error into a message.
"""
from __future__ import annotations

import re
import threading
import time
from typing import Any, Callable, TypeVar

from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from .duckdb_sql import Refused, parse_statements, walk

DEFAULT_TIMEOUT_SECS = 60.0
# A query's rows may hold at most this many bytes (estimated from the fetched values); more is refused, with advice
# to add a LIMIT. The rendered text is a few times this at most, so the runner stays within its memory budget.
MAX_RESULT_BYTES = 64 * 1024 * 1024
T = TypeVar("T")

# Table functions that read only the database's own catalog or generate rows. Everything else (file and network
# readers, query/query_table, secrets, checkpoint, logging and profiling switches, Python scans) is refused.
ALLOWED_TABLE_FUNCTIONS = frozenset(
    {
        "range", "generate_series", "unnest", "repeat", "repeat_row", "json_each", "json_tree",
        "duckdb_columns", "duckdb_constraints", "duckdb_databases", "duckdb_dependencies", "duckdb_functions",
        "duckdb_indexes", "duckdb_keywords", "duckdb_schemas", "duckdb_sequences", "duckdb_tables", "duckdb_types",
        "duckdb_views", "duckdb_memory", "pragma_table_info", "pragma_database_size", "pragma_storage_info",
        "pragma_version", "pragma_collations", "pg_timezone_names", "icu_calendar_names", "summary",
    }
)
# Scalar functions whose effect reaches outside the query (environment, sequences, the session's random seed,
# the log, profiling, running serialized SQL, secrets).
REFUSED_FUNCTIONS = frozenset(
    {
        "getenv", "nextval", "setseed", "write_log", "enable_profile", "disable_profile", "which_secret",
        "json_execute_serialized_sql", "query", "query_table",
    }
)
# Kinds of FROM items a read-only SELECT may use (anything unknown is refused rather than guessed about).
_TABLE_REFS = frozenset({"BASE_TABLE", "TABLE_FUNCTION", "JOIN", "SUBQUERY", "EXPRESSION_LIST", "EMPTY", "SHOW_REF", "PIVOT", "DELIM_GET", "COLUMN_DATA"})


def _refused(sql: str, problem: str) -> AirbyteTracedException:
    return AirbyteTracedException(
        message=f"Query refused: {problem} Inspect queries are read-only: one SELECT (or DESCRIBE/SHOW/SUMMARIZE) statement. SQL: {sql}",
        internal_message=problem,
        failure_type=FailureType.config_error,
    )


def check_statement_text(sql: str) -> None:
    """Refuse text that is empty, holds NUL or is not valid UTF-8 (a lone surrogate from an undecodable argument)."""
    if not sql.strip():
        raise _refused(sql, "the statement is empty.")
    if "\x00" in sql:
        raise _refused(sql.replace("\x00", "\\x00"), "the text holds a NUL character (\\x00); remove it.")
    try:
        sql.encode("utf-8")
    except UnicodeEncodeError:
        shown = sql.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
        raise _refused(shown, "the text is not valid UTF-8; pass it as UTF-8 text.") from None


# PostgreSQL: statements a READ ONLY transaction still runs but whose effect reaches outside it (see the module
# docstring). Leading keywords other than these are refused; the names below are refused anywhere in the text.
_PG_LEADING = frozenset({"select", "with", "values", "table", "explain", "show"})
_PG_REFUSED_NAMES = re.compile(
    r"\b(?:pg_terminate_backend|pg_cancel_backend|pg_signal_backend|pg_reload_conf|pg_rotate_logfile"
    r"|pg_log_backend\w*|pg_(?:try_)?advisory\w*|pg_notify|set_config|pg_read_(?:binary_)?file|pg_ls_\w+"
    r"|pg_stat_file|pg_file_\w+|lo_(?:import|export|open|close|creat|create|unlink|put|get|from_bytea|write|read"
    r"|truncate\w*|lseek\w*|tell\w*)|loread|lowrite|dblink\w*|pg_promote|pg_switch_wal|pg_create_\w+|pg_drop_\w+"
    r"|pg_replication_\w+|pg_logical_\w+|pg_stat_reset\w*|pg_backup_\w+|pg_wal_replay_\w+"
    r"|pg_import_system_collations|query_to_xml\w*|query_to_xmlschema|cursor_to_xml\w*|ts_stat|ts_rewrite|nextval|setval)\b",
    re.IGNORECASE,
)


def check_postgres_text(sql: str) -> None:
    """Raise a config_error for PostgreSQL statement text that could act outside a READ ONLY transaction."""
    check_statement_text(sql)
    if re.search(r"\bu&['\"]|\buescape\b", sql, re.IGNORECASE):  # U&"pg\005fsleep": names spelt with escapes
        raise _refused(sql, "Unicode-escaped names and strings (U&'...') are not accepted here; write them plainly.")
    words = re.sub(r"--[^\n]*|/\*.*?\*/", " ", sql, flags=re.DOTALL).lstrip(" \t\r\n(").split(None, 1)
    leading = re.split(r"\W", words[0].lower(), maxsplit=1)[0] if words else ""
    if leading not in _PG_LEADING:
        raise _refused(sql, f"only SELECT (or WITH, VALUES, TABLE, EXPLAIN, SHOW) statements may run here, not {leading.upper() or 'this'}.")
    found = _PG_REFUSED_NAMES.search(sql)
    if found:
        raise _refused(
            sql,
            f"{found.group(0)} acts outside the query (on other sessions such as the writer's, locks, files, "
            "sequences or the session's settings) or waits; it is not allowed here.",
        )


class ResultBound:
    """Counts the estimated bytes of fetched rows; refuses a result past ``max_bytes`` (see ``MAX_RESULT_BYTES``).

    ``chunk()`` is how many rows to fetch next: small at first, then about 1 MiB worth (rows can be megabytes)."""

    def __init__(self, sql: str, max_bytes: int = MAX_RESULT_BYTES) -> None:
        self.sql = sql
        self.max_bytes = max_bytes
        self.bytes = 0
        self.rows = 0

    def chunk(self) -> int:
        if not self.rows:
            return 16
        return max(1, min(2048, (1 << 20) * self.rows // max(1, self.bytes)))

    def add(self, rows: list) -> None:
        self.rows += len(rows)
        self.bytes += sum(_size(value) for row in rows for value in row) + 8 * len(rows)
        if self.bytes > self.max_bytes:
            raise AirbyteTracedException(
                message=(
                    f"Query result too large: more than {self.max_bytes // (1 << 20)} MiB after {self.rows} row(s); "
                    f"add a LIMIT, select fewer columns or aggregate (describe and stats summarise a collection). "
                    f"SQL: {self.sql}"
                ),
                failure_type=FailureType.config_error,
            )


def _size(value: Any) -> int:
    """Approximate bytes of a fetched value (its text length for strings and bytes, nested values summed)."""
    if isinstance(value, (str, bytes, bytearray)):
        return len(value) + 1
    if isinstance(value, dict):
        return sum(_size(k) + _size(v) for k, v in value.items()) + 2
    if isinstance(value, (list, tuple)):
        return sum(_size(v) for v in value) + 2
    return 8


def fetch_bounded(cursor: Any, sql: str, max_bytes: int = MAX_RESULT_BYTES) -> list[tuple]:
    """All rows of an executed cursor, fetched in chunks under a ``ResultBound``."""
    bound = ResultBound(sql, max_bytes)
    rows: list[tuple] = []
    while True:
        chunk = cursor.fetchmany(bound.chunk())
        if not chunk:
            return rows
        bound.add(chunk)
        rows.extend(chunk)


def check_duckdb_select(con: Any, sql: str) -> None:
    """Raise a config_error unless ``sql`` is a single read-only SELECT (``con``: a DuckDB connection or cursor)."""
    check_statement_text(sql)
    try:
        statements = parse_statements(con, sql)
    except Refused as refused:
        if refused.not_select:
            raise _refused(sql, "only SELECT statements may run here (no SET, PRAGMA, CALL, ATTACH, COPY, EXPORT, INSTALL, LOAD, CHECKPOINT, DDL, DML or transaction statements).") from None
        raise _refused(sql, refused.reason) from None
    if len(statements) != 1:
        raise _refused(sql, f"it holds {len(statements)} statements; send exactly one per request.")
    tree = statements[0]
    ctes = {
        str(entry.get("key", "")).lower()
        for node in walk(tree)
        for entry in ((node.get("cte_map") or {}).get("map") or [])
        if isinstance(node.get("cte_map"), dict)
    }
    known = _known_relations(con)
    for node in walk(tree):
        kind = node.get("type")
        if node.get("class") == "FUNCTION" and str(node.get("function_name", "")).lower() in REFUSED_FUNCTIONS:
            raise _refused(sql, f"the function {node['function_name']}() has effects outside the query.")
        if "sample" in node and "alias" in node and kind not in _TABLE_REFS and "query_location" in node and "class" not in node:
            raise _refused(sql, f"a FROM item of kind {kind} is not supported here.")
        if kind == "TABLE_FUNCTION":
            name = str((node.get("function") or {}).get("function_name", "")).lower()
            if name not in ALLOWED_TABLE_FUNCTIONS:
                raise _refused(sql, f"the table function {name}() may read files, the network, secrets or change state; it is not allowed here.")
        elif kind == "BASE_TABLE":
            _check_relation(sql, node, ctes, known)


def _known_relations(con: Any) -> set[tuple[str, str, str]]:
    rows = con.execute(
        "SELECT database_name, schema_name, table_name FROM duckdb_tables() "
        "UNION ALL SELECT database_name, schema_name, view_name FROM duckdb_views()"
    ).fetchall()
    return {(d.lower(), s.lower(), t.lower()) for d, s, t in rows}


def _check_relation(sql: str, node: dict, ctes: set[str], known: set[tuple[str, str, str]]) -> None:
    table = str(node.get("table_name", "")).lower()
    schema = str(node.get("schema_name", "")).lower()
    catalog = str(node.get("catalog_name", "")).lower()
    if not schema and not catalog and table in ctes:
        return
    for database, sch, name in known:
        if name != table:
            continue
        if catalog and catalog != database:
            continue
        if schema and schema not in (sch, database):  # ``x.t``: schema x, or database x's default schema
            continue
        return
    raise AirbyteTracedException(
        message=(
            f"Query failed: no table or view named '{node.get('table_name')}' (list them with SHOW TABLES; file paths "
            f"and other replacement scans are not read by inspect queries). SQL: {sql}"
        ),
        failure_type=FailureType.config_error,
    )


def query_failure_type(exc: BaseException) -> FailureType:
    """Whose fault a failed inspect statement is: the connection or server going away (psycopg's
    ``OperationalError``, DuckDB's ``IOException``/``ConnectionException``) is transient (retry later: an outage is
    never exit 2); DuckDB's internal/fatal errors are ours (system_error); anything else the database refused (syntax,
    unknown table, a failed cast, too much memory for this query) is the statement's (config_error)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"OperationalError", "IOException", "ConnectionException", "InterfaceError"}:
        return FailureType.transient_error
    if names & {"InternalException", "FatalException"}:
        return FailureType.system_error
    return FailureType.config_error


class Deadline:
    """Runs ``fn`` with a time limit; ``cancel(reason)`` from another thread stops it early.

    ``poll`` (optional) is called every ``interval`` seconds while ``fn`` runs; a string it returns cancels with
    that reason (the runner's socket handler uses it to notice a client that has gone)."""

    def __init__(
        self,
        view: Any,
        timeout_secs: float,
        *,
        poll: Callable[[], str | None] | None = None,
        interval: float = 0.1,
    ) -> None:
        self.view = view
        self.timeout_secs = float(timeout_secs)
        self.poll = poll
        self.interval = interval
        self.reason: str | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()

    def cancel(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason
        self._interrupt()

    def _interrupt(self) -> None:
        try:
            self.view.interrupt()
        except Exception:  # noqa: BLE001 - nothing running, or the connection is closing: nothing to stop
            pass

    def _watch(self, started: float) -> None:
        last_interrupt = 0.0
        while not self._done.wait(self.interval):
            now = time.monotonic()
            if self.reason is None:
                if now - started >= self.timeout_secs:
                    self.cancel("timeout")
                elif self.poll is not None:
                    gone = self.poll()
                    if gone:
                        self.cancel(gone)
                last_interrupt = now
            elif now - last_interrupt >= 0.5:
                # an interrupt that arrived between two statements (describe fetches in batches) is lost: repeat it
                self._interrupt()
                last_interrupt = now

    def run(self, fn: Callable[[], T], what: str = "Query") -> T:
        watcher = threading.Thread(target=self._watch, args=(time.monotonic(),), name="query-deadline", daemon=True)
        watcher.start()
        try:
            result = fn()
        except AirbyteTracedException:
            if self.reason is not None:
                raise self.stopped_error(what) from None
            raise
        except Exception as exc:
            if self.reason is not None:
                raise self.stopped_error(what) from None
            raise AirbyteTracedException(
                message=f"{what} failed: {(str(exc).strip().splitlines() or [type(exc).__name__])[0]}",
                internal_message=str(exc),
                failure_type=query_failure_type(exc),
            ) from None
        finally:
            self._done.set()
            watcher.join()
        if self.reason is not None:
            raise self.stopped_error(what)
        return result

    def stopped_error(self, what: str) -> AirbyteTracedException:
        if self.reason == "timeout":
            return AirbyteTracedException(
                message=(
                    f"{what} stopped after {self.timeout_secs:g} s (its time limit); narrow it (a WHERE, a LIMIT) or "
                    "raise --timeout (a runner answers up to its own --query-timeout)."
                ),
                failure_type=FailureType.config_error,
            )
        if self.reason == "shutdown":
            return AirbyteTracedException(
                message=f"{what} stopped: the runner is shutting down; run it again (without a runner the file is opened read-only).",
                failure_type=FailureType.transient_error,
            )
        return AirbyteTracedException(
            message=f"{what} stopped: {self.reason}.", failure_type=FailureType.transient_error
        )
