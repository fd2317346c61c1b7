"""The ingest transformation: ``SELECT … FROM _input [WHERE …]`` run by DuckDB over each batch, sandboxed.

Sandbox: the statement runs in a child process (``transformation_sandbox``) on a private in-memory DuckDB with
external access (files, network, extensions) off, the configuration locked, one thread, an address-space cap (so
values DuckDB allocates outside its memory limit, such as huge ``range()`` lists, fail cleanly) and a per-batch
deadline (past it the child is killed and restarted).
The statement is parsed by DuckDB (``json_serialize_sql``) and checked before it ever runs: one SELECT, reading only
``_input`` (no joins, subqueries, CTEs or set operations), no ``GROUP BY``/``HAVING``/aggregates (rollups are not
supported yet), no ORDER BY/LIMIT. The statement is then rewritten, not string-patched:

* an explicit projection wins over ``*`` for the same name (``SELECT *, upper(name) AS name`` yields one ``name``,
  the upper-cased one): the names are added to the star's ``EXCLUDE`` list;
* a hidden row number travels through the query, so each output row keeps its source record's ``_meta`` and key;
* columns the statement references but the batch lacks are supplied as NULL (documents are schemaless), and a
  field missing from a record stays missing in its output (``*`` does not turn it into an explicit null).

Input column types: integers BIGINT (DECIMAL(38,0) beyond 64 bits), floats DOUBLE, booleans, strings VARCHAR;
objects, arrays and fields whose type varies within the batch are JSON (use ``->``/``->>``).
"""
from __future__ import annotations

import copy
import datetime as dt
import decimal
import time
import uuid
from typing import Any, Iterable

import duckdb
import pyarrow as pa
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from . import jsonio
from .transformation_sandbox import ADDRESS_SPACE_HEADROOM, ARROW_INPUT, Sandbox, SandboxError, sandbox_connection

ROW_COLUMN = "__kc_row"
TIMEOUT_SECS = 60.0
CHUNK_ROWS = 2048
CHUNK_BYTES = 64 * 1024**2  # input sent to the sandbox at once: well inside its address-space headroom
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
DEC38_MAX = 10**38 - 1


def _config_error(stream: str, sql: str, problem: str) -> AirbyteTracedException:
    return AirbyteTracedException(
        message=f"Ingest transformation of stream '{stream}' is invalid: {problem} SQL: {sql}",
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


class Transformation:
    def __init__(self, sql: str, stream: str, timeout_secs: float = TIMEOUT_SECS):
        self.sql = sql.strip().rstrip(";").strip()
        self.stream = stream
        self.timeout_secs = timeout_secs
        # parses and rewrites statements only (json_serialize_sql / json_deserialize_sql); nothing runs here
        self._parser = sandbox_connection()
        self._sandbox = Sandbox()
        self._node = self._parse()
        self.referenced = {
            n["column_names"][0] for n in _walk(self._node) if n.get("class") == "COLUMN_REF" and n.get("column_names")
        }
        for star in _walk(self._node):
            if star.get("class") == "STAR":
                self.referenced.update(n for n in star.get("exclude_list") or [] if isinstance(n, str))
        self.referenced.discard(ROW_COLUMN)
        self.explicit_names = self._explicit_names()
        try:
            self.validate_by_dry_run()
        except BaseException:
            self.close()  # a refused statement must not leave its sandbox process behind
            raise

    # -- checking ---------------------------------------------------------------------------------------------
    def _parse(self) -> dict:
        err = lambda problem: _config_error(self.stream, self.sql, problem)  # noqa: E731
        if not self.sql:
            raise err("it is empty.")
        serialized = jsonio.loads(self._parser.execute("SELECT json_serialize_sql($1)", [self.sql]).fetchone()[0])
        if serialized.get("error"):
            message = serialized.get("error_message", "")
            if "Only SELECT" in message:
                raise err("only a single SELECT ... FROM _input statement is allowed.")
            raise err(f"{message}.")
        statements = serialized["statements"]
        if len(statements) != 1:
            raise err("it must be exactly one SELECT statement.")
        node = statements[0]["node"]
        if node.get("type") != "SELECT_NODE":
            raise err("set operations (UNION, INTERSECT, EXCEPT) are not supported; use one SELECT ... FROM _input.")
        if node.get("cte_map", {}).get("map"):
            raise err("WITH (common table expressions) is not supported; select FROM _input directly.")
        source = node.get("from_table") or {}
        if source.get("type") != "BASE_TABLE" or source.get("table_name", "").lower() != "_input" or source.get("schema_name"):
            raise err("it must read FROM _input and nothing else (no joins, table functions or other tables).")
        if node.get("group_expressions") or node.get("group_sets") or node.get("having"):
            raise err("GROUP BY/HAVING (rollups) is not supported yet; transform rows one by one.")
        if node.get("modifiers"):
            raise err("ORDER BY, LIMIT, OFFSET and DISTINCT are not supported in an ingest transformation.")
        for sub in _walk(node.get("select_list", []) + [node.get("where_clause"), node.get("qualify")]):
            if sub.get("class") == "SUBQUERY" or sub.get("type") in ("SELECT_NODE", "SET_OPERATION_NODE"):
                raise err("subqueries are not supported; only _input may be referenced.")
        if node.get("qualify") is not None:
            raise err("QUALIFY is not supported in an ingest transformation.")
        return node

    def _explicit_names(self) -> set[str]:
        names = set()
        for expr in self._node["select_list"]:
            if expr.get("class") == "STAR":
                continue
            if expr.get("alias"):
                names.add(expr["alias"])
            elif expr.get("class") == "COLUMN_REF":
                names.add(expr["column_names"][-1])
        return names

    def validate_by_dry_run(self) -> None:
        self.apply([], timeout_secs=max(self.timeout_secs, 30.0))  # a check, not a batch: don't fail it for speed

    def _translate(self, exc: SandboxError) -> AirbyteTracedException:
        text = str(exc)
        if ROW_COLUMN in text and "GROUP BY" in text:
            return _config_error(self.stream, self.sql, "aggregates (rollups) are not supported yet; transform rows one by one.")
        if exc.kind == "PermissionException":
            return _config_error(self.stream, self.sql, "it tried to access files, the network or extensions, which the sandbox forbids.")
        if exc.kind == "Timeout":
            return AirbyteTracedException(
                message=f"Ingest transformation of stream '{self.stream}' took longer than {self.timeout_secs:g}s on one batch and was stopped; simplify it or lower batch_size. SQL: {self.sql}",
                failure_type=FailureType.config_error,
            )
        if exc.kind in ("OutOfMemoryException", "MemoryError"):
            return _config_error(
                self.stream,
                self.sql,
                f"it needed more memory than the sandbox allows ({ADDRESS_SPACE_HEADROOM // 1024**2} MB per batch); "
                "avoid building huge values (range(), repeat(), list functions over large inputs) or lower batch_size.",
            )
        if exc.kind == "Crashed":
            return AirbyteTracedException(
                message=f"Ingest transformation of stream '{self.stream}': {text}; the batch was not written. Retry the sync; if it recurs, simplify the SQL. SQL: {self.sql}",
                internal_message=text,
                failure_type=FailureType.system_error,
            )
        return _config_error(self.stream, self.sql, f"{text.splitlines()[0] if text else exc.kind}")

    # -- running ----------------------------------------------------------------------------------------------
    def _rewritten_sql(self, input_columns: list[str], missing: list[str]) -> str:
        node = copy.deepcopy(self._node)
        present = set(input_columns)
        for expr in node["select_list"]:
            if expr.get("class") == "STAR" and not expr.get("columns") and expr.get("relation_name", "") in ("", "_input"):
                excluded = set(expr.get("exclude_list") or [])
                extra = [n for n in sorted(self.explicit_names) if n in present and n not in excluded]
                extra += [n for n in missing if n not in excluded]
                extra.append(ROW_COLUMN)
                expr["exclude_list"] = list(expr.get("exclude_list") or []) + extra
        node["select_list"].append(
            {"class": "COLUMN_REF", "type": "COLUMN_REF", "alias": ROW_COLUMN, "query_location": 0, "column_names": [ROW_COLUMN]}
        )
        document = {"error": False, "statements": [{"node": node, "named_param_map": []}]}
        return self._parser.execute("SELECT json_deserialize_sql($1)", [jsonio.dumps(document)]).fetchone()[0]

    def apply(self, rows: list[dict[str, Any]], timeout_secs: float | None = None) -> list[tuple[int, dict[str, Any]]]:
        """Run over ``rows``; returns ``(index of the source row, output row)`` pairs.

        Rows go to the sandbox in chunks of at most CHUNK_ROWS rows and about CHUNK_BYTES, all under one deadline
        (which starts once the sandbox process is up: a restart after a timeout does not eat into the next batch's)."""
        try:
            self._sandbox.start()
        except SandboxError as exc:
            raise self._translate(exc) from None
        deadline = time.monotonic() + (self.timeout_secs if timeout_secs is None else timeout_secs)
        if len(rows) <= CHUNK_ROWS:
            return self._apply_chunk(rows, 0, deadline)
        output: list[tuple[int, dict[str, Any]]] = []
        for start in range(0, len(rows), CHUNK_ROWS):
            output.extend(self._apply_chunk(rows[start : start + CHUNK_ROWS], start, deadline))
        return output

    def _apply_chunk(self, rows: list[dict[str, Any]], offset: int, deadline: float) -> list[tuple[int, dict[str, Any]]]:
        if time.monotonic() >= deadline:
            raise self._translate(SandboxError("Timeout", "deadline passed"))
        table, json_columns, columns = _input_table(rows)
        if table.nbytes > CHUNK_BYTES and len(rows) > 1:
            half = len(rows) // 2
            return self._apply_chunk(rows[:half], offset, deadline) + self._apply_chunk(rows[half:], offset + half, deadline)
        missing = sorted(c for c in self.referenced if c not in columns and c != ROW_COLUMN)
        arrays = [table.column(i) for i in range(table.num_columns)]
        names = list(table.column_names)
        for name in missing:
            arrays.append(pa.nulls(len(rows)))
            names.append(name)
        table = pa.Table.from_arrays(arrays, names=names)
        projections = ", ".join(
            f"CAST({_q(n)} AS JSON) AS {_q(n)}" if n in json_columns else _q(n) for n in names
        )
        try:
            rewritten = self._rewritten_sql(columns, missing)
        except duckdb.Error as exc:
            raise _config_error(self.stream, self.sql, f"{str(exc).splitlines()[0]}") from None
        sql = f"WITH _input AS (SELECT {projections} FROM {ARROW_INPUT}) " + rewritten
        try:
            result, json_out = self._sandbox.run(sql, table, deadline)
        except SandboxError as exc:
            raise self._translate(exc) from None
        out_json = set(json_out)
        output: list[tuple[int, dict[str, Any]]] = []
        out_names = result.column_names
        input_names = set(columns)
        for record in result.to_pylist():
            index = record.pop(ROW_COLUMN)
            source = rows[index]
            doc: dict[str, Any] = {}
            for name in out_names:
                if name == ROW_COLUMN:
                    continue
                value = record[name]
                if value is None and name in input_names and name not in source:
                    continue  # absent in the record: keep it absent
                if value is not None:
                    value = jsonio.loads(value) if name in out_json else _plain(value)
                doc[name] = value
            output.append((index + offset, doc))
        return output

    def close(self) -> None:
        self._sandbox.close()
        self._parser.close()


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        import base64

        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if True}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return str(value)


def _input_table(rows: list[dict[str, Any]]) -> tuple[pa.Table, set[str], list[str]]:
    """An Arrow table for ``_input``; returns (table, JSON-typed columns, field names)."""
    kinds: dict[str, set[str]] = {}
    for row in rows:
        for key, value in row.items():
            kinds.setdefault(key, set()).add(_kind(value))
    names = [ROW_COLUMN]
    arrays: list[pa.Array] = [pa.array(range(len(rows)), pa.int64())]
    json_columns: set[str] = set()
    columns = []
    for key, seen in kinds.items():
        seen.discard("null")
        values = [row.get(key) for row in rows]
        if not seen:
            array = pa.nulls(len(rows))
        elif seen == {"int"}:
            array = pa.array(values, pa.int64())
        elif seen <= {"int", "bigint"}:
            array = pa.array([None if v is None else decimal.Decimal(v) for v in values], pa.decimal128(38, 0))
        elif seen <= {"int", "float"}:
            array = pa.array([None if v is None else float(v) for v in values], pa.float64())
        elif seen == {"bool"}:
            array = pa.array(values, pa.bool_())
        elif seen == {"str"}:
            array = pa.array(values, pa.string())
        else:
            array = pa.array([None if v is None else jsonio.dumps(v) for v in values], pa.string())
            json_columns.add(key)
        names.append(key)
        arrays.append(array)
        columns.append(key)
    return pa.Table.from_arrays(arrays, names=names), json_columns, columns


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return "int"
        return "bigint" if -DEC38_MAX <= value <= DEC38_MAX else "json"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "json"


def check_sql(sql: str, stream: str) -> None:
    """Raise a config_error if ``sql`` is not an acceptable ingest transformation."""
    Transformation(sql, stream).close()
