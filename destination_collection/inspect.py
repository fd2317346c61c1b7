"""Inspect commands: ``query`` (SQL), ``describe`` (field paths, types, occurrence counts) and ``stats``.

They run on a read-only view of the store (``Store.read_only_view``; see ``read_only_query``): a ``query`` must be
one read-only statement, refused otherwise, and runs inside a transaction that is rolled back; every command has a
time limit (``timeout_secs``, default 60 s) and can be stopped from another thread (``poll``).
"""
from __future__ import annotations

import datetime as dt
import decimal
import itertools
import math
import uuid
from collections import Counter
from typing import Any, Callable, Iterable

from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from . import jsonio
from .read_only_query import DEFAULT_TIMEOUT_SECS, Deadline, query_failure_type
from .stores.base import Store


def run_query(view: Store, sql: str, timeout_secs: float = DEFAULT_TIMEOUT_SECS) -> tuple[list[str], list[tuple]]:
    """``sql`` on a read-only view (``Store.read_only_view()``): one read-only statement, else a config_error."""
    try:
        return view.run_read_only(sql, timeout_secs)
    except AirbyteTracedException:
        raise
    except Exception as exc:  # the database's own message is the useful part
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AirbyteTracedException(
            message=f"Query failed: {text}. SQL: {sql}", internal_message=str(exc), failure_type=query_failure_type(exc)
        ) from None


def resolve_collection(store: Store, name: str) -> str:
    """A collection table from a table name or a stream name (namespace.name also accepted)."""
    catalog = store.catalog.collections()
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


Holders = Callable[[list[str]], dict[str, dict[str, Any]]]


def stats(store: Store, holders: Holders | None = None) -> dict[str, Any]:
    """Per collection: documents, bytes, times, committed state; with ``holders`` (kinesis-collection: which runner
    holds each collection, ``{table: {host, pid, mode, since}}``) also ``runner`` (None: no runner holds it)."""
    states = {row["stream_key"]: row for row in store.states.rows()}
    collections = []
    for row in store.catalog.collections():
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
    if holders is not None:
        held = holders([c["collection"] for c in collections])
        for collection in collections:
            collection["runner"] = held.get(collection["collection"])
    global_state = states.get("__global__")
    return {
        "collections": collections,
        "global_state": jsonio.loads(global_state["state_json"]) if global_state else None,
    }


# -- rendering ------------------------------------------------------------------------------------------------
# Every value a database hands back renders in both formats: JSON gets JSON types where they are exact (numbers,
# booleans, strings, objects, arrays) and text otherwise (NaN/Infinity, decimals a double cannot hold, UUIDs, BLOBs
# as \\x-hex, INTERVALs as ISO 8601 durations, times/dates as ISO 8601, anything else as its text).
def _duration(value: dt.timedelta) -> str:
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    sign, micros = ("-", -micros) if micros < 0 else ("", micros)
    days, rest = divmod(micros, 86_400 * 1_000_000)
    hours, rest = divmod(rest, 3_600 * 1_000_000)
    minutes, rest = divmod(rest, 60 * 1_000_000)
    seconds, fraction = divmod(rest, 1_000_000)
    time_part = "".join(
        f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M")) if n
    ) + (f"{seconds}.{fraction:06d}".rstrip("0").rstrip(".") + "S" if seconds or fraction else "")
    text = f"{sign}P" + (f"{days}D" if days else "") + (f"T{time_part}" if time_part else "")
    return text if text not in ("P", "-P") else "PT0S"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return "NaN" if value.is_nan() else ("Infinity" if value > 0 else "-Infinity")
        if value == value.to_integral_value():
            return int(value)
        as_float = float(value)
        return as_float if decimal.Decimal(repr(as_float)) == value else str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return _duration(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, dict):
        return {k if isinstance(k, str) else _text(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return str(value)


def _text(value: Any) -> str:
    """A value as text (a MAP key, a table cell)."""
    converted = _jsonable(value)
    if isinstance(converted, str):
        return converted
    return jsonio.dumps(converted)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if value is True or value is False:
        return str(value)
    return _text(value)


def _holder_text(holder: dict[str, Any] | None) -> str | None:
    """A stats cell: ``pid 4242 on host-a (follow since 2026-12-02T10:00:00+00:00)``; None when no runner holds it."""
    if holder is None:
        return None
    if holder.get("pid") is None:
        return f"a runner ({holder['unknown']})" if holder.get("unknown") else "a runner starting up"
    since = holder.get("since")
    if isinstance(since, dt.datetime):
        since = since.replace(microsecond=0)
    return f"pid {holder['pid']} on {holder.get('host') or '?'} ({holder.get('mode') or 'running'} since {_text(since)})"


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


def render_command(
    view: Store,
    command: str,
    *,
    sql: str | None = None,
    collection: str | None = None,
    limit: int | None = None,
    fmt: str = "table",
    timeout_secs: float = DEFAULT_TIMEOUT_SECS,
    poll: Callable[[], str | None] | None = None,
    deadline: Deadline | None = None,
    holders: Holders | None = None,
) -> str:
    """The text the inspect commands print (``query``, ``describe``, ``stats``), as a table or JSON.

    ``view`` is a read-only view of the store (``Store.read_only_view()``). Shared by ``destination-collection`` and
    the runner, which answers these on its own view while it holds a DuckDB file. The command runs under a
    ``Deadline`` (``timeout_secs``; ``poll`` may stop it, e.g. when the client has gone; pass ``deadline`` to be
    able to ``cancel`` it from another thread). ``holders``: see ``stats``."""
    if command not in ("query", "describe", "stats"):
        raise AirbyteTracedException(
            message=f"Unknown inspect command {command!r}: use query, describe or stats.", failure_type=FailureType.config_error
        )
    deadline = deadline or Deadline(view, timeout_secs, poll=poll)

    def work() -> str:
        if command == "query":
            columns, rows = run_query(view, sql or "", deadline.timeout_secs)
            return render_json(columns, rows) if fmt == "json" else render_table(columns, rows)
        with view.read_only_snapshot():
            if command == "describe":
                _total, described = describe(view, collection or "", limit)
                columns = ["field", "type", "occurrences", "total"]
                rows = [[r["field"], r["type"], r["occurrences"], r["total"]] for r in described]
                return render_json(columns, rows) if fmt == "json" else render_table(columns, rows)
            result = stats(view, holders)
        if fmt == "json":
            return jsonio.dumps(_jsonable(result))
        columns = ["collection", "stream", "documents", "bytes", "last_write_at", "purged_documents", "state_committed_at", "state"]
        rows = [[c[k] for k in columns] for c in result["collections"]]
        if result["global_state"] is not None:
            rows.append(["(global state)", "", None, None, None, None, None, result["global_state"]])
        if holders is not None:  # kinesis-collection: who holds each collection, after the stream
            columns.insert(2, "runner")
            for row, item in itertools.zip_longest(rows, result["collections"]):
                row.insert(2, _holder_text(item["runner"]) if item else None)
        return render_table(columns, rows)

    return deadline.run(work, what={"query": "Query", "describe": "describe", "stats": "stats"}[command])
