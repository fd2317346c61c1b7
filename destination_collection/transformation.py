"""The ingest transformation: ``SELECT … FROM _input [WHERE …]`` run by DuckDB over each batch, sandboxed.

Sandbox: the statement runs in a child process (``transformation_sandbox``) on a private in-memory DuckDB with
external access (files, network, extensions) off, the configuration locked, one thread, an address-space cap (so
values DuckDB allocates outside its memory limit, such as huge ``range()`` lists, fail cleanly) and a per-batch
deadline (past it the child is killed and restarted).
The statement is parsed by DuckDB (``json_serialize_sql``) and checked before it ever runs: one SELECT, reading only
``_input`` (no joins, subqueries, CTEs or set operations), no ``GROUP BY``/``HAVING``/aggregates (rollups are not
supported yet), no ORDER BY/LIMIT, no window functions or ``USING SAMPLE`` (their results would depend on how records
happen to be batched, so a re-delivery could store something else), no ``COLUMNS(…)`` or ``*`` inside expressions.
The statement is then rewritten, not string-patched:

* Only the fields the statement *references* go into DuckDB, under the names the statement spells them. DuckDB
  matches identifiers case-insensitively (ASCII) and would merge or rename fields such as ``id``/``ID``; a field the
  statement does not mention never enters DuckDB, so it cannot collide or change. A reference names the record's
  field of exactly that name; failing that, the one field equal to it ignoring ASCII case (several: NULL, noted in
  ``_airbyte_meta.changes``). Two references differing only in ASCII case are refused.
* ``*`` is not expanded by DuckDB: the record's own fields are copied after the query, byte-identical, in the
  record's order, minus ``EXCLUDE`` names, with ``REPLACE`` values computed by DuckDB and ``RENAME`` applied. An
  explicit projection wins over ``*`` for exactly the same name.
* A hidden row number (an internal name no field or statement can spell) travels through the query, so each output
  row keeps its source record's ``_meta`` and key.
* A reference the batch lacks is NULL (documents are schemaless); a field missing from a record stays missing.

Input column types: integers BIGINT (DECIMAL(38,0) beyond 64 bits), floats DOUBLE, booleans, strings VARCHAR;
objects and arrays JSON (use ``->``/``->>``). Records whose referenced fields hold different kinds of values run in
separate groups (``_type_groups``), so a record's types, and its result, never depend on its batch. Output values convert
exactly (see ``_decode``) or are noted in ``_airbyte_meta.changes`` (NaN/Infinity become null; a DECIMAL a double
cannot hold is rounded).

Errors: one that depends on a record's values (a failed cast, an out-of-range value, ``error()``) belongs to that
record: the failing chunk is split until the records that fail are alone, they are reported in ``BatchResult.failed``
and the rest runs. So does a bind error at run time (the dry run bound the statement with every field NULL, so it
is about the field types of a group's records: ``upper(n)`` where ``n`` is a number). Any other error (parse, bind, unknown column or function, memory, time) is the statement's.
"""
from __future__ import annotations

import base64
import copy
import datetime as dt
import decimal
import json
import math
import secrets
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from . import jsonio
from .duckdb_sql import Refused, ascii_lower, parse_statements, walk
from .transformation_sandbox import ADDRESS_SPACE_HEADROOM, ARROW_INPUT, Sandbox, SandboxError, sandbox_connection

TIMEOUT_SECS = 60.0
CHUNK_ROWS = 2048
CHUNK_BYTES = 64 * 1024**2  # input sent to the sandbox at once: well inside its address-space headroom
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
DEC38_MAX = 10**38 - 1
# DuckDB errors that depend on the values of the rows (a record's fault: isolate it); any other error is the SQL's
VALUE_ERRORS = frozenset({"ConversionException", "OutOfRangeException", "InvalidInputException", "TypeMismatchException"})
SINGLE_ROWS_BELOW = 8  # a failing chunk this small is run row by row instead of halved again
EXACT_REASONS = 64  # failing records per batch run alone for their exact error message
_ABSENT = object()
_NONFINITE = object()


def _config_error(stream: str, sql: str, problem: str) -> AirbyteTracedException:
    return AirbyteTracedException(
        message=f"Ingest transformation of stream '{stream}' is invalid: {problem} SQL: {sql}",
        internal_message=problem,
        failure_type=FailureType.config_error,
    )


def _fold(name: str) -> str:
    """The key a SQL reference matches a field by when no field has exactly its name."""
    return ascii_lower(unicodedata.normalize("NFC", name))


@dataclass
class _Star:
    exclude: list[str]
    replace: dict[str, int]  # field name as written -> position of its value in the result
    rename: dict[str, str]


@dataclass
class _Output:
    name: str | None  # None: DuckDB names it (an unaliased expression)
    position: int  # column of the result
    bare_field: str | None  # a plain unaliased column reference: the field it names


@dataclass
class BatchResult:
    """``rows``: (index of the source record, output fields, ``_airbyte_meta.changes`` entries) per output row;
    ``failed``: index of the source record -> why the transformation failed for it (the rest ran)."""

    rows: list[tuple[int, dict[str, Any], list[dict[str, Any]]]] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)


class Transformation:
    def __init__(self, sql: str, stream: str, timeout_secs: float = TIMEOUT_SECS):
        self.sql = sql.strip().rstrip(";").strip()
        self.stream = stream
        self.timeout_secs = timeout_secs
        # internal names no record field or statement can spell (random per instance, checked against the statement)
        self._row = f"__kc_row_{secrets.token_hex(8)}"
        # parses and rewrites statements only (json_serialize_sql / json_deserialize_sql); nothing runs here
        self._parser = sandbox_connection()
        self._sandbox = Sandbox()
        try:
            self._node = self._parse()
            self._plan()
            self._detect_sql = self._detection_sql()
            self.validate_by_dry_run()
        except BaseException:
            self.close()  # a refused statement must not leave its sandbox process behind
            raise

    # -- checking ---------------------------------------------------------------------------------------------
    def _err(self, problem: str) -> AirbyteTracedException:
        return _config_error(self.stream, self.sql, problem)

    def _parse(self) -> dict:
        err = self._err
        if not self.sql:
            raise err("it is empty.")
        try:
            statements = parse_statements(self._parser, self.sql)
        except Refused as refused:
            if refused.not_select:
                raise err("only a single SELECT ... FROM _input statement is allowed.") from None
            raise err(refused.reason) from None
        if len(statements) != 1:
            raise err("it must be exactly one SELECT statement.")
        node = statements[0]["node"]
        if node.get("type") != "SELECT_NODE":
            raise err("set operations (UNION, INTERSECT, EXCEPT) are not supported; use one SELECT ... FROM _input.")
        if node.get("cte_map", {}).get("map"):
            raise err("WITH (common table expressions) is not supported; select FROM _input directly.")
        source = node.get("from_table") or {}
        if (
            source.get("type") != "BASE_TABLE"
            or ascii_lower(source.get("table_name", "")) != "_input"
            or source.get("schema_name")
            or source.get("catalog_name")
        ):
            raise err("it must read FROM _input and nothing else (no joins, table functions or other tables).")
        if node.get("group_expressions") or node.get("group_sets") or node.get("having"):
            raise err("GROUP BY/HAVING (rollups) is not supported yet; transform rows one by one.")
        if node.get("modifiers"):
            raise err("ORDER BY, LIMIT, OFFSET and DISTINCT are not supported in an ingest transformation.")
        if node.get("sample") or source.get("sample"):
            raise err(
                "USING SAMPLE/TABLESAMPLE is not supported: which records it keeps depends on how they are batched, "
                "so a re-delivery would store different documents; filter with WHERE instead."
            )
        for sub in walk(node.get("select_list", []) + [node.get("where_clause"), node.get("qualify")]):
            if sub.get("class") == "SUBQUERY" or sub.get("type") in ("SELECT_NODE", "SET_OPERATION_NODE"):
                raise err("subqueries are not supported; only _input may be referenced.")
            if sub.get("class") == "WINDOW":
                raise err(
                    f"window functions ({sub.get('function_name', 'OVER')}) are not supported: their result depends "
                    "on which records share a batch, so a re-delivery would store different values."
                )
        if node.get("qualify") is not None:
            raise err("QUALIFY is not supported in an ingest transformation.")
        return node

    def _field_of(self, names: list[str]) -> str:
        """The field a column reference names: ``a``, ``_input.a``, ``t.a`` (t the alias of _input), ``a.b`` (field a)."""
        if len(names) >= 2 and ascii_lower(names[0]) in self._qualifiers:
            return names[1]
        return names[0]

    def _plan(self) -> None:
        """Split the select list into the star (copied after the query) and the expressions DuckDB computes."""
        node = self._node
        source = node.get("from_table") or {}
        self._qualifiers = {"_input"} | ({ascii_lower(source["alias"])} if source.get("alias") else set())
        referenced: dict[str, None] = {}
        for sub in walk([node.get("select_list"), node.get("where_clause")]):
            if sub.get("class") == "COLUMN_REF" and sub.get("column_names"):
                referenced[self._field_of(sub["column_names"])] = None
        select: list[dict] = []
        items: list[_Star | _Output] = []
        explicit: list[str] = []
        star_seen = False
        for expr in node["select_list"]:
            if expr.get("class") == "STAR":
                if expr.get("columns") or expr.get("expr") is not None:
                    raise self._err("COLUMNS(...) is not supported; name the fields (or use * EXCLUDE/REPLACE/RENAME).")
                if expr.get("relation_name") and ascii_lower(expr["relation_name"]) not in self._qualifiers:
                    raise self._err(f"'{expr['relation_name']}.*' names no table; only _input can be selected from.")
                if star_seen:
                    raise self._err("'*' may appear once in the select list.")
                star_seen = True
                exclude = [n for n in expr.get("exclude_list") or [] if isinstance(n, str)]
                exclude += [q.get("column") for q in expr.get("qualified_exclude_list") or [] if isinstance(q, dict) and q.get("column")]
                replace = {}
                for entry in expr.get("replace_list") or []:
                    replace[entry["key"]] = len(select)
                    value = dict(entry["value"])
                    value["alias"] = ""
                    select.append(value)
                rename = {}
                for entry in expr.get("rename_list") or []:
                    key = entry["key"]
                    rename[key.get("column") if isinstance(key, dict) else key] = entry["value"]
                items.append(_Star(exclude, replace, rename))
                continue
            bare = None
            name = expr.get("alias") or None
            if expr.get("class") == "COLUMN_REF" and not name:
                bare = self._field_of(expr["column_names"])
                name = expr["column_names"][-1]
            if name is not None:
                if name in explicit:
                    raise self._err(f"the output field '{name}' is defined twice.")
                explicit.append(name)
            items.append(_Output(name, len(select), bare))
            select.append(expr)
        for item in items:
            if isinstance(item, _Star):
                targets = list(item.rename.values())
                for target in targets:
                    # two fields renamed to one name, or a rename onto an explicit output: one value would be lost
                    if targets.count(target) > 1 or target in explicit:
                        raise self._err(f"the output field '{target}' is defined twice (by RENAME).")
        for sub in walk(select + [node.get("where_clause")]):
            if sub.get("class") == "STAR":
                raise self._err("'*' inside an expression (e.g. struct_pack(*), * LIKE ...) is not supported; name the fields.")
        by_fold: dict[str, str] = {}
        for name in referenced:
            other = by_fold.setdefault(ascii_lower(name), name)
            if other != name:
                raise self._err(
                    f"it references '{other}' and '{name}', which differ only in case: DuckDB cannot tell them apart "
                    "in SQL. Reference one of them; fields the statement does not mention pass through '*' unchanged."
                )
        if ascii_lower(self._row) in by_fold:  # cannot happen by chance (random), only by guessing: refuse
            raise self._err(f"'{self._row}' is a reserved name.")
        self.referenced = set(referenced)
        self._bound = list(referenced)
        self._items = items
        self._explicit = set(explicit)
        self._select = select

    def validate_by_dry_run(self) -> None:
        self.apply([], timeout_secs=max(self.timeout_secs, 30.0))  # a check, not a batch: don't fail it for speed

    def _translate(self, exc: SandboxError) -> AirbyteTracedException:
        text = str(exc)
        if self._row in text and "GROUP BY" in text:
            return self._err("aggregates (rollups) are not supported yet; transform rows one by one.")
        if exc.kind == "PermissionException":
            return self._err("it tried to access files, the network or extensions, which the sandbox forbids.")
        if exc.kind == "Timeout":
            return AirbyteTracedException(
                message=f"Ingest transformation of stream '{self.stream}' took longer than {self.timeout_secs:g}s on one batch and was stopped; simplify it or lower batch_size. SQL: {self.sql}",
                failure_type=FailureType.config_error,
            )
        if exc.kind in ("OutOfMemoryException", "MemoryError"):
            return self._err(
                f"it needed more memory than the sandbox allows ({ADDRESS_SPACE_HEADROOM // 1024**2} MB per batch); "
                "avoid building huge values (range(), repeat(), list functions over large inputs) or lower batch_size.",
            )
        if exc.kind == "Crashed":
            return AirbyteTracedException(
                message=f"Ingest transformation of stream '{self.stream}': {text}; the batch was not written. Retry the sync; if it recurs, simplify the SQL. SQL: {self.sql}",
                internal_message=text,
                failure_type=FailureType.system_error,
            )
        return self._err(f"{text.splitlines()[0] if text else exc.kind}")

    # -- running ----------------------------------------------------------------------------------------------
    def _rewritten_sql(self) -> str:
        node = copy.deepcopy(self._node)
        node["select_list"] = copy.deepcopy(self._select) + [
            {"class": "COLUMN_REF", "type": "COLUMN_REF", "alias": "", "query_location": 0, "column_names": [self._row]}
        ]
        document = {"error": False, "statements": [{"node": node, "named_param_map": []}]}
        return self._parser.execute("SELECT json_deserialize_sql($1)", [jsonio.dumps(document)]).fetchone()[0]

    def apply(self, rows: list[dict[str, Any]], timeout_secs: float | None = None) -> list[tuple[int, dict[str, Any]]]:
        """``run`` for callers that want every record transformed: ``(index of the source row, output row)`` pairs;
        a record the statement fails on raises a config_error naming the stream."""
        result = self.run(rows, timeout_secs)
        if result.failed:
            index, reason = next(iter(result.failed.items()))
            raise self._err(f"it failed on record {index} of the batch: {reason}")
        return [(index, doc) for index, doc, _ in result.rows]

    def run(self, rows: list[dict[str, Any]], timeout_secs: float | None = None) -> BatchResult:
        """Run over ``rows``. Rows go to the sandbox in chunks of at most CHUNK_ROWS rows and about CHUNK_BYTES, all
        under one deadline (which starts once the sandbox process is up: a restart after a timeout does not eat into
        the next batch's). Records the statement fails on for their values are isolated into ``failed``."""
        try:
            self._sandbox.start()
        except SandboxError as exc:
            raise self._translate(exc) from None
        deadline = time.monotonic() + (self.timeout_secs if timeout_secs is None else timeout_secs)
        self._sql_cache: str | None = None
        self._exact_budget = EXACT_REASONS
        result = BatchResult()
        for start in range(0, max(len(rows), 1), CHUNK_ROWS):
            self._apply_chunk(rows, list(range(start, min(start + CHUNK_ROWS, len(rows)))), deadline, result)
        # back into arrival order (type groups and isolation run records out of it; _op folding needs it); stable,
        # so the rows one record produced (unnest) keep their order
        result.rows.sort(key=lambda row: row[0])
        return result

    def _input_sql(self, json_columns: set[int], query: str) -> str:
        projections = [
            (f"CAST(\"c{i}\" AS JSON)" if i in json_columns else f'"c{i}"') + f" AS {_q(name)}"
            for i, name in enumerate(self._bound)
        ]
        projections.append(_q(self._row))
        return f"WITH _input AS (SELECT {', '.join(projections)} FROM {ARROW_INPUT}) " + query

    def _apply_chunk(self, all_rows, indexes: list[int], deadline: float, result: BatchResult, detect: bool = True) -> None:
        if time.monotonic() >= deadline:
            raise self._translate(SandboxError("Timeout", "deadline passed"))
        groups = self._type_groups(all_rows, indexes)
        if len(groups) > 1:
            # records whose referenced fields hold different JSON kinds run apart, so that each one's column types
            # (and so its result) never depend on which other records share its batch
            for group in groups:
                self._apply_chunk(all_rows, group, deadline, result, detect)
            return
        rows = [all_rows[i] for i in indexes]
        table, json_columns, notes = self._input_table(rows)
        if table.nbytes > CHUNK_BYTES and len(rows) > 1:
            half = len(rows) // 2
            self._apply_chunk(all_rows, indexes[:half], deadline, result, detect)
            self._apply_chunk(all_rows, indexes[half:], deadline, result, detect)
            return
        if self._sql_cache is None:
            try:
                self._sql_cache = self._rewritten_sql()
            except duckdb.Error as exc:
                raise self._err(f"{str(exc).splitlines()[0]}") from None
        try:
            output, columns = self._sandbox.run(self._input_sql(json_columns, self._sql_cache), table, deadline)
        except SandboxError as exc:
            if exc.kind == "BinderException" and rows:
                # the statement bound in the dry run (every field NULL), so this is about the types of these
                # records' values, which all records of a chunk share (see _type_groups): they fail, the rest runs
                first = str(exc).splitlines()[0] if str(exc) else exc.kind
                for index in indexes:
                    result.failed[index] = f"{exc.kind}: {first} (the statement does not apply to this record's field types)"
                return
            if exc.kind not in VALUE_ERRORS or not rows:
                raise self._translate(exc) from None
            self._isolate(all_rows, indexes, deadline, result, exc, table, json_columns, detect)
            return
        self._assemble(rows, indexes, output, columns, notes, result)

    def _type_groups(self, all_rows, indexes: list[int]) -> list[list[int]]:
        """``indexes`` split by the JSON kinds (see ``_kind``) of the referenced fields, in first-seen order. Each
        group becomes one ``_input`` whose column types follow from each record's own values alone: a string never
        becomes JSON text (``"a"`` with quotes) or an integer a DOUBLE because another record of the batch holds
        something else there."""
        if not self._bound:
            return [indexes]
        groups: dict[tuple, list[int]] = {}
        bound = self._bound
        for index in indexes:
            row = all_rows[index]
            key = tuple(_kind(_bound_value(row, ref)) for ref in bound)
            groups.setdefault(key, []).append(index)
        return list(groups.values())

    def _isolate(self, all_rows, indexes, deadline, result, exc, table, json_columns, detect) -> None:
        """A value error in a chunk: find the records it belongs to and run the rest. First one query flags every
        failing record (each expression wrapped in TRY); without it (a statement TRY cannot wrap) the chunk is halved,
        then run row by row below SINGLE_ROWS_BELOW rows. The first EXACT_REASONS failing records of a batch are run
        alone for their exact error message; so even a batch where every record fails costs a bounded number of
        sandbox round trips."""
        if len(indexes) == 1:
            first = str(exc).splitlines()[0] if str(exc) else exc.kind
            result.failed[indexes[0]] = f"{exc.kind}: {first}"
            return
        flagged = self._detect(table, json_columns, deadline) if detect else None
        if flagged:
            failing = [indexes[p] for p in sorted(flagged) if p < len(indexes)]
            for index in failing:
                if self._exact_budget > 0:
                    self._exact_budget -= 1
                    self._apply_chunk(all_rows, [index], deadline, result, detect=False)
                else:
                    result.failed[index] = (
                        f"{exc.kind}: the statement fails on this record's values (found with TRY(); the exact "
                        f"message is reported for the first {EXACT_REASONS} such records of a batch only)"
                    )
            rest = [i for i in indexes if i not in set(failing)]
            if rest:
                self._apply_chunk(all_rows, rest, deadline, result, detect=False)
            return
        if len(indexes) <= SINGLE_ROWS_BELOW:
            for index in indexes:
                self._apply_chunk(all_rows, [index], deadline, result, detect=False)
            return
        half = len(indexes) // 2
        self._apply_chunk(all_rows, indexes[:half], deadline, result, detect=False)
        self._apply_chunk(all_rows, indexes[half:], deadline, result, detect=False)

    def _detect(self, table: pa.Table, json_columns: set[int], deadline: float) -> set[int] | None:
        """Positions (row numbers of ``table``) of the records the statement fails on, in one query; None if the
        statement cannot be checked this way."""
        if self._detect_sql is None:
            return None
        try:
            output, _ = self._sandbox.run(self._input_sql(json_columns, self._detect_sql), table, deadline)
        except SandboxError as exc:
            if exc.kind in ("Timeout", "Crashed", "OutOfMemoryException", "MemoryError"):
                raise self._translate(exc) from None
            return None
        return set(output.column(0).to_pylist())

    def _detection_sql(self) -> str | None:
        """``SELECT row FROM _input WHERE <some expression fails for the row>``, built on the parse tree."""
        where = self._node.get("where_clause")
        exprs = [copy.deepcopy(e) for e in self._select]
        if not exprs and where is None:
            return None
        any_fails = " OR ".join(f"try(__kc_p{i} IS NULL) IS NULL" for i in range(len(exprs)))
        if where is None:
            condition = any_fails
        else:
            condition = "try(__kc_w0 IS NULL) IS NULL" + (f" OR (coalesce(try(__kc_w1), false) AND ({any_fails}))" if exprs else "")
        template = jsonio.loads(self._parser.execute(
            "SELECT json_serialize_sql($1)", [f"SELECT __kc_r FROM _input WHERE {condition}"]
        ).fetchone()[0])
        if template.get("error"):
            return None
        node = template["statements"][0]["node"]
        node["from_table"] = copy.deepcopy(self._node["from_table"])
        places = {"__kc_r": {"class": "COLUMN_REF", "type": "COLUMN_REF", "alias": "", "query_location": 0, "column_names": [self._row]}}
        places.update({f"__kc_p{i}": e for i, e in enumerate(exprs)})
        if where is not None:
            places["__kc_w0"] = where
            places["__kc_w1"] = where

        def fill(value: Any) -> Any:
            if isinstance(value, dict):
                names = value.get("column_names")
                if value.get("class") == "COLUMN_REF" and names and len(names) == 1 and names[0] in places:
                    replacement = copy.deepcopy(places[names[0]])
                    replacement["alias"] = ""
                    return replacement
                return {k: fill(v) for k, v in value.items()}
            if isinstance(value, list):
                return [fill(v) for v in value]
            return value

        document = {"error": False, "statements": [{"node": fill(node), "named_param_map": []}]}
        try:
            return self._parser.execute("SELECT json_deserialize_sql($1)", [jsonio.dumps(document)]).fetchone()[0]
        except duckdb.Error:
            return None

    def _assemble(self, rows, indexes: list[int], output: pa.Table, columns: list[dict], notes, result: BatchResult) -> None:
        values: list[list[Any]] = []
        changes: list[list[list[dict] | None]] = []
        names = [c["name"] for c in columns]
        row_position = len(columns) - 1
        for position, column in enumerate(columns[:-1]):
            label = self._label(position, names)
            decoded, column_changes = _decode(output.column(position), column, label)
            values.append(decoded)
            changes.append(column_changes)
        positions = output.column(row_position).to_pylist()
        runtime_names = {item.position: names[item.position] for item in self._items if isinstance(item, _Output) and item.name is None}
        explicit = self._explicit | set(runtime_names.values())
        for r, index in enumerate(positions):
            source = rows[index]
            doc: dict[str, Any] = {}
            doc_changes = list(notes.get(index, ()))
            for item in self._items:
                if isinstance(item, _Output):
                    if item.bare_field is not None and _resolve_key(source, item.bare_field) is None:
                        continue  # absent in the record: keep it absent
                    name = item.name if item.name is not None else runtime_names[item.position]
                    doc[name] = values[item.position][r]
                    if changes[item.position][r]:
                        doc_changes.extend(changes[item.position][r])
                    continue
                # EXCLUDE drops the field of exactly that name, else every field equal to it ignoring case (as DuckDB
                # would: dropping is what was asked for, e.g. of a secret, whatever the record's spelling)
                excluded = {key for n in item.exclude for key in _matching_keys(source, n)}
                replaced = {_resolve_key(source, n): p for n, p in item.replace.items()}
                renamed = {_resolve_key(source, n): new for n, new in item.rename.items()}
                renamed.pop(None, None)
                taken = set(renamed.values())
                for key, value in source.items():
                    if key in excluded:
                        continue
                    name = renamed.get(key, key)
                    if name in explicit:
                        continue  # an explicit projection of exactly this name wins over '*'
                    if key not in renamed and key in taken:
                        continue  # so does a field renamed to exactly this name (RENAME (k AS id) replaces 'id')
                    position = replaced.get(key)
                    if position is not None:
                        value = values[position][r]
                        if changes[position][r]:
                            doc_changes.extend(changes[position][r])
                    doc[name] = value
            result.rows.append((indexes[index], doc, doc_changes))

    def _label(self, position: int, names: list[str]) -> str:
        for item in self._items:
            if isinstance(item, _Output) and item.position == position:
                return item.name if item.name is not None else names[position]
            if isinstance(item, _Star):
                for key, p in item.replace.items():
                    if p == position:
                        return key
        return names[position]

    def _input_table(self, rows: list[dict[str, Any]]) -> tuple[pa.Table, set[int], dict[int, list[dict]]]:
        """The Arrow table for ``_input``: the referenced fields as ``c0, c1, …`` (typed per column) and the row
        number; returns (table, positions of JSON-typed columns, per-row notes on ambiguous references)."""
        names = [self._row]
        arrays: list[pa.Array] = [pa.array(range(len(rows)), pa.int64())]
        json_columns: set[int] = set()
        notes: dict[int, list[dict]] = {}
        for i, ref in enumerate(self._bound):
            values = []
            for r, row in enumerate(rows):
                value = row.get(ref, _ABSENT)
                if value is _ABSENT:
                    value = _fallback_value(row, ref, notes.setdefault(r, []))
                values.append(value)
            array, is_json = _typed_array(values)
            if is_json:
                json_columns.add(i)
            names.append(f"c{i}")
            arrays.append(array)
        return pa.Table.from_arrays(arrays, names=names), json_columns, {r: n for r, n in notes.items() if n}

    def close(self) -> None:
        self._sandbox.close()
        self._parser.close()


def _resolve_key(row: dict[str, Any], name: str) -> str | None:
    """The record's key a SQL name refers to: exactly ``name``, else the one key equal to it ignoring ASCII case and
    unicode normalisation; None if there is none or several."""
    if name in row:
        return name
    folded = _fold(name)
    found = [key for key in row if _fold(key) == folded]
    return found[0] if len(found) == 1 else None


def _matching_keys(row: dict[str, Any], name: str) -> list[str]:
    """``[name]`` if the record has it, else every key equal to it ignoring ASCII case and normalisation."""
    if name in row:
        return [name]
    folded = _fold(name)
    return [key for key in row if _fold(key) == folded]


def _bound_value(row: dict[str, Any], name: str) -> Any:
    """The value a reference reads from ``row`` (as ``_input_table`` binds it; None if absent or ambiguous)."""
    value = row.get(name, _ABSENT)
    return _fallback_value(row, name, []) if value is _ABSENT else value


def _fallback_value(row: dict[str, Any], name: str, notes: list[dict]) -> Any:
    folded = _fold(name)
    found = [key for key in row if _fold(key) == folded]
    if len(found) == 1:
        return row[found[0]]
    if len(found) > 1:
        notes.append({
            "field": name, "change": "NULLED", "reason": "DESTINATION_TYPECAST_ERROR",
            "detail": f"the SQL name '{name}' matches several fields ({', '.join(sorted(found))}) and none exactly; "
                      "it was NULL for this record",
        })
    return None


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _typed_array(values: list[Any]) -> tuple[pa.Array, bool]:
    seen = {_kind(v) for v in values}
    seen.discard("null")
    if not seen:
        return pa.nulls(len(values)), False
    if seen == {"int"}:
        return pa.array(values, pa.int64()), False
    if seen <= {"int", "bigint"}:
        return pa.array([None if v is None else decimal.Decimal(v) for v in values], pa.decimal128(38, 0)), False
    if seen <= {"int", "float"}:
        return pa.array([None if v is None else float(v) for v in values], pa.float64()), False
    if seen == {"bool"}:
        return pa.array(values, pa.bool_()), False
    if seen == {"str"}:
        return pa.array(values, pa.string()), False
    return pa.array([None if v is None else jsonio.dumps(v) for v in values], pa.string()), True


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


# -- output values ---------------------------------------------------------------------------------------------
def _change(name: str, change: str, detail: str) -> dict[str, Any]:
    return {"field": name, "change": change, "reason": "DESTINATION_TYPECAST_ERROR", "detail": detail}


def _decode(array: pa.ChunkedArray, column: dict, name: str) -> tuple[list[Any], list[list[dict] | None]]:
    """One result column as JSON values, exactly (see ``transformation_sandbox.output_kind`` for what arrives how);
    returns the values and, per row, the ``_airbyte_meta.changes`` entries for values that could not be kept."""
    kind, type_name = column["kind"], column["type"]
    raw = array.to_pylist() if not pa.types.is_interval(array.type) else [
        None if v is None else {"months": v.months, "days": v.days, "microseconds": v.nanoseconds // 1000}
        for v in array.to_pylist()
    ]
    changes: list[list[dict] | None] = [None] * len(raw)
    if kind == "plain":
        if pa.types.is_floating(array.type):
            for i, v in enumerate(raw):
                if v is not None and not math.isfinite(v):
                    raw[i] = None
                    changes[i] = [_change(name, "NULLED", f"{v} is not a JSON number; stored as null")]
        elif pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
            raw = [None if v is None else base64.b64encode(v).decode("ascii") for v in raw]
        return raw, changes
    convert = {"number": _number, "json": _json_value, "temporal": _temporal}.get(kind)
    if convert is None:
        return raw, changes  # "text": DuckDB's text (ENUM, UUID, BIT, …)
    out = []
    for i, text in enumerate(raw):
        if text is None:
            out.append(None)
            continue
        value, detail = convert(text, type_name)
        if detail:
            changes[i] = [_change(name, "TRUNCATED" if kind == "number" else "NULLED", detail)]
        out.append(value)
    return out, changes


def _number(text: str, type_name: str) -> tuple[Any, str | None]:
    if "." not in text and "e" not in text.lower():
        return int(text), None
    value = decimal.Decimal(text)
    if value == value.to_integral_value():
        return int(value), None
    as_float = float(value)
    if decimal.Decimal(repr(as_float)) == value:
        return as_float, None
    return as_float, f"{type_name} value {text} rounded to the nearest double"


def _json_value(text: str, type_name: str) -> tuple[Any, str | None]:
    try:
        value = jsonio.loads(text)
    except ValueError:
        pass
    else:
        if not _has_nonfinite(value):
            return value, None
        # a number beyond DOUBLE's range in JSON text (1e400) is read as inf: not JSON, so null, noted
        return _replace_nonfinite(value), "a number beyond the range of a double inside the value stored as null"
    found = []

    def constant(name: str) -> Any:
        found.append(name)
        return _NONFINITE

    value = json.loads(text, parse_constant=constant)  # DuckDB writes NaN/Infinity inside nested values
    if _has_nonfinite(value):  # json reads 1e400 as inf without calling parse_constant
        found.append("a number beyond the range of a double")
    return _replace_nonfinite(value), f"{', '.join(sorted(set(found)))} inside the value stored as null"


def _has_nonfinite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_nonfinite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_nonfinite(v) for v in value)
    return False


def _replace_nonfinite(value: Any) -> Any:
    if value is _NONFINITE or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, dict):
        return {k: _replace_nonfinite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_nonfinite(v) for v in value]
    return value


def _temporal(text: str, type_name: str) -> tuple[Any, str | None]:
    """ISO-8601 as Python writes it (``2024-01-02T03:04:05.500000+00:00``) when Python holds the value exactly; else
    DuckDB's own text, which is exact (nanoseconds, years beyond 9999 or BC, ``infinity``)."""
    try:
        if type_name == "DATE":
            return dt.date.fromisoformat(text).isoformat(), None
        if type_name.startswith("TIME") and not type_name.startswith("TIMESTAMP"):
            if type_name == "TIME_NS" and "." in text and len(text.split(".")[1].rstrip("0")) > 6:
                return text, None
            return dt.time.fromisoformat(text).isoformat(), None
        if type_name == "TIMESTAMP_NS" and "." in text and len(text.split(".")[1].rstrip("0")) > 6:
            return text.replace(" ", "T", 1), None
        return dt.datetime.fromisoformat(text).isoformat(), None
    except ValueError:
        return text, None


def check_sql(sql: str, stream: str) -> None:
    """Raise a config_error if ``sql`` is not an acceptable ingest transformation."""
    Transformation(sql, stream).close()
