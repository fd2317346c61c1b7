"""``_op`` semantics: fold a batch's changes per ``_id`` (in arrival order) onto the stored documents.

| _op      | document exists                          | document absent        |
|----------|------------------------------------------|------------------------|
| INSERT   | ignored (counted as skipped)             | inserted               |
| UPDATE   | top-level fields merged                  | ignored (skipped)      |
| UPSERT   | top-level fields merged (default op)     | inserted               |
| DELETE   | deleted                                  | ignored (skipped)      |
| REPLACE  | whole document replaced                  | ignored (skipped)      |
| REPSERT  | whole document replaced                  | inserted               |
| unknown  | data untouched; error in ``_meta.error`` | error-only document    |

Merging: fields in the change win, fields only in the stored document stay. ``_event_time`` and the Airbyte
columns always come from the latest applied change; ``_meta`` is merged at the top level (``bad``/``error`` only
describe the change that carried them). With ``ignore_older_changes`` a change older (by ``_event_time``) than the
current document is ignored and counted. A stored document of a generation that is being replaced (overwrite,
refresh) counts as absent. An error-only document counts as absent for later changes.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterable

from .documents import ERROR_OP, Change


@dataclass(slots=True)
class Document:
    fields: dict[str, Any]
    meta: dict[str, Any]
    event_time: dt.datetime
    raw_id: str
    extracted_at: dt.datetime
    changes: list[dict[str, Any]]


@dataclass(slots=True)
class Stored:
    fields: dict[str, Any]
    meta: dict[str, Any]
    event_time: dt.datetime | None
    generation: int | None


@dataclass
class FoldResult:
    writes: dict[str, Document] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    skipped: int = 0
    ignored_older: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)


def _new(change: Change) -> Document:
    return Document(change.fields, change.meta, change.event_time, change.raw_id, change.extracted_at, change.changes)


def _merge(current: Document, change: Change) -> Document:
    meta = {k: v for k, v in current.meta.items() if k not in ("bad", "error")}
    meta.update(change.meta)
    return Document(
        {**current.fields, **change.fields}, meta, change.event_time, change.raw_id, change.extracted_at, change.changes
    )


def _is_placeholder(doc: Document | None) -> bool:
    return doc is not None and not doc.fields and bool((doc.meta.get("error") or {}).get("error_only"))


def fold(
    changes: Iterable[Change],
    stored: dict[str, Stored],
    guard: bool = False,
    min_alive_generation: int | None = None,
) -> FoldResult:
    result = FoldResult()
    current: dict[str, Document | None] = {}
    physical: dict[str, bool] = {}
    existed: dict[str, bool] = {}
    touched: dict[str, bool] = {}
    for change in changes:
        key = change.id
        if key not in current:
            old = stored.get(key)
            physical[key] = old is not None
            alive = old is not None and not (
                min_alive_generation is not None and (old.generation is None or old.generation < min_alive_generation)
            )
            current[key] = (
                Document(old.fields, old.meta, old.event_time or change.event_time, "", change.extracted_at, [])
                if alive
                else None
            )
            existed[key] = current[key] is not None
            touched[key] = False
        doc = current[key]
        exists = doc is not None and not _is_placeholder(doc)
        op = change.op
        if guard and exists and op != ERROR_OP and change.event_time < doc.event_time:
            result.ignored_older += 1
            continue
        if op == "UPSERT":
            doc = _merge(doc, change) if exists else _new(change)
        elif op == "INSERT":
            if exists:
                result.skipped += 1
                continue
            doc = _new(change)
        elif op == "UPDATE":
            if not exists:
                result.skipped += 1
                continue
            doc = _merge(doc, change)
        elif op == "DELETE":
            if doc is None and not physical[key]:
                result.skipped += 1
                continue
            doc = None
            result.deleted += 1
        elif op == "REPLACE":
            if not exists:
                result.skipped += 1
                continue
            doc = _new(change)
        elif op == "REPSERT":
            doc = _new(change)
        else:  # ERROR: unknown _op
            result.errors += 1
            if len(result.error_samples) < 5:
                result.error_samples.append(f"_id {key}: {change.op_error}")
            error = {"reason": change.op_error, "record": change.record}
            if exists:
                doc = Document(doc.fields, {**doc.meta, "error": error}, doc.event_time, change.raw_id,
                               change.extracted_at, change.changes)
            else:
                doc = Document({}, {**change.meta, "error": {**error, "error_only": True}}, change.event_time,
                               change.raw_id, change.extracted_at, change.changes)
        current[key] = doc
        touched[key] = True
    for key, doc in current.items():
        if not touched[key]:
            continue
        if doc is None:
            if physical[key]:
                result.deletes.append(key)
        else:
            result.writes[key] = doc
            if existed[key]:
                result.updated += 1
            else:
                result.inserted += 1
    return result
