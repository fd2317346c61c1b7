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
* ``Deadline``: runs a function (a query, ``describe``, ``stats``) with a time limit and lets another thread stop
  it (client gone, shutdown): on expiry or ``cancel`` it calls ``view.interrupt()`` (DuckDB ``interrupt()``,
  PostgreSQL cancel), repeatedly until the function returns, and turns the resulting error into a message.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable, TypeVar

from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from . import jsonio

DEFAULT_TIMEOUT_SECS = 60.0
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


def _walk(node: Any) -> Iterable[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def check_duckdb_select(con: Any, sql: str) -> None:
    """Raise a config_error unless ``sql`` is a single read-only SELECT (``con``: a DuckDB connection or cursor)."""
    if not sql.strip():
        raise _refused(sql, "the statement is empty.")
    parsed = jsonio.loads(con.execute("SELECT json_serialize_sql($1)", [sql]).fetchone()[0])
    if parsed.get("error"):
        message = str(parsed.get("error_message") or "it could not be parsed")
        if "Only SELECT" in message:
            raise _refused(sql, "only SELECT statements may run here (no SET, PRAGMA, CALL, ATTACH, COPY, EXPORT, INSTALL, LOAD, CHECKPOINT, DDL, DML or transaction statements).")
        raise _refused(sql, message.rstrip(".!") + ".")
    statements = parsed.get("statements") or []
    if len(statements) != 1:
        raise _refused(sql, f"it holds {len(statements)} statements; send exactly one per request.")
    tree = statements[0]
    ctes = {
        str(entry.get("key", "")).lower()
        for node in _walk(tree)
        for entry in ((node.get("cte_map") or {}).get("map") or [])
        if isinstance(node.get("cte_map"), dict)
    }
    known = _known_relations(con)
    for node in _walk(tree):
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
                failure_type=FailureType.config_error,
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
