"""Inspect commands: ``query`` (SQL), ``describe`` (field paths, types, occurrence counts) and ``stats``.

They open the store read-only (a DuckDB file is opened in read-only mode; a PostgreSQL session is made read-only),
so they can never change a collection.
"""
from __future__ import annotations

import datetime as dt
import decimal
from collections import Counter
from typing import Any, Iterable

from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from . import jsonio
from .stores.base import Store


def run_query(store: Store, sql: str) -> tuple[list[str], list[tuple]]:
    try:
        return store.fetch_with_columns(sql)
    except AirbyteTracedException:
        raise
    except Exception as exc:  # the database's own message is the useful part
        raise AirbyteTracedException(
            message=f"Query failed: {str(exc).strip().splitlines()[0]}. SQL: {sql}",
            failure_type=FailureType.config_error,
        ) from None


def resolve_collection(store: Store, name: str) -> str:
    """A collection table from a table name or a stream name (namespace.name also accepted)."""
    catalog = store.collections()
    for row in catalog:
        if row["table"] == name:
            return name
    for row in catalog:
        key = f"{row['namespace']}.{row['stream']}" if row["namespace"] else row["stream"]
        if name in (row["stream"], key):
            return row["table"]
    known = ", ".join(r["table"] for r in catalog) or "none yet"
    raise AirbyteTracedException(
        message=f"No collection named '{name}' (collections: {known}).", failure_type=FailureType.config_error
    )


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _paths(value: Any, path: tuple[str, ...], counter: Counter) -> None:
    counter[(path, _type_name(value))] += 1
    if isinstance(value, dict):
        for key, item in value.items():
            _paths(item, path + (key,), counter)
    elif isinstance(value, list):
        for item in value:
            _paths(item, path + ("*",), counter)


def describe(store: Store, collection: str, limit: int | None = None) -> tuple[int, list[dict[str, Any]]]:
    """Like Rockset's DESCRIBE: one row per (field path, type) with the number of documents holding it."""
    table = resolve_collection(store, collection)
    counter: Counter = Counter()
    total = 0
    for doc_id, event_time, meta_text, doc_text in store.iter_documents(table):
        total += 1
        seen: Counter = Counter()
        seen[(("_id",), "string")] += 1
        if event_time is not None:
            seen[(("_event_time",), "timestamp")] += 1
        _paths(jsonio.loads(meta_text) if meta_text else {}, ("_meta",), seen)
        for key, value in (jsonio.loads(doc_text) if doc_text else {}).items():
            _paths(value, (key,), seen)
        for key in seen:  # occurrences = documents containing the path with that type
            counter[key] += 1
        if limit and total >= limit:
            break
    rows = [
        {"field": list(path), "type": kind, "occurrences": count, "total": total}
        for (path, kind), count in sorted(counter.items(), key=lambda item: (item[0][0], item[0][1]))
    ]
    return total, rows


def stats(store: Store) -> dict[str, Any]:
    states = {row["stream_key"]: row for row in store.committed_state_rows()}
    collections = []
    for row in store.collections():
        key = f"{row['namespace']}.{row['stream']}" if row["namespace"] else row["stream"]
        state = states.get(key)
        collections.append(
            {
                "collection": row["table"],
                "stream": key,
                "documents": store.count_documents(row["table"]),
                "bytes": store.table_bytes(row["table"]),
                "created_at": row["created_at"],
                "last_write_at": row["last_write_at"],
                "purged_documents": row["purged_documents"],
                "state_committed_at": state["committed_at"] if state else None,
                "state": jsonio.loads(state["state_json"]) if state else None,
            }
        )
    global_state = states.get("__global__")
    return {
        "collections": collections,
        "global_state": jsonio.loads(global_state["state_json"]) if global_state else None,
    }


# -- rendering ------------------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (dict, list)):
        return jsonio.dumps(value)
    return str(value)


def render_table(columns: list[str], rows: Iterable[Iterable[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = min(max(widths[i], len(text)), 80)
    def line(values: list[str]) -> str:
        return " | ".join(v[:80].ljust(widths[i]) for i, v in enumerate(values)).rstrip()
    out = [line(columns), "-+-".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    out.append(f"({len(cells)} row{'s' if len(cells) != 1 else ''})")
    return "\n".join(out)


def render_json(columns: list[str], rows: Iterable[Iterable[Any]]) -> str:
    return "\n".join(jsonio.dumps({c: _jsonable(v) for c, v in zip(columns, row)}) for row in rows)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def render_command(
    store: Store,
    command: str,
    *,
    sql: str | None = None,
    collection: str | None = None,
    limit: int | None = None,
    fmt: str = "table",
) -> str:
    """The text the inspect commands print (``query``, ``describe``, ``stats``), as a table or JSON.

    Shared by ``destination-collection`` and the runner, which answers these through its own connection while it
    holds a DuckDB file."""
    if command == "query":
        columns, rows = run_query(store, sql or "")
    elif command == "describe":
        _total, described = describe(store, collection or "", limit)
        columns = ["field", "type", "occurrences", "total"]
        rows = [[r["field"], r["type"], r["occurrences"], r["total"]] for r in described]
    elif command == "stats":
        result = stats(store)
        if fmt == "json":
            return jsonio.dumps(_jsonable(result))
        columns = ["collection", "stream", "documents", "bytes", "last_write_at", "purged_documents", "state_committed_at", "state"]
        rows = [[c[k] for k in columns] for c in result["collections"]]
        if result["global_state"] is not None:
            rows.append(["(global state)", "", None, None, None, None, None, result["global_state"]])
    else:
        raise ValueError(f"unknown inspect command {command!r}")
    return render_json(columns, rows) if fmt == "json" else render_table(columns, rows)
