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

Accounting (``ChangeCounts``): every change is counted exactly once. Per ``_id`` in a batch, the last applied change
carries the net effect against the store — ``inserted`` (absent before the batch), ``updated`` (merged onto the
stored document), ``replaced`` (stored before, now a document not merged onto it: REPLACE, REPSERT, or a DELETE
followed by a new document) or ``deleted`` — and each earlier applied change of that ``_id`` is ``merged`` into it.
Changes that apply nothing are ``skipped`` (their ``_op`` does not apply; a second DELETE of one ``_id`` in a batch
too), ``ignored_older`` (the guard) or ``errors`` (unknown ``_op``, a failed transformation; such a change writes its
error into ``_meta`` but takes no part in the net effect). A stored error-only document counts as absent, except
under a REPSERT or DELETE, which do not read the stored document: rewriting or removing one counts as replaced or
deleted.
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
    """A stored document as a batch needs it. ``fields``/``meta`` are read only for ids whose changes merge onto the
    stored document (None otherwise: the store did not read them). ``locator`` is the store's handle for the row
    (DuckDB: its rowids — one, or more if the _id was stored twice — valid within the transaction that looked them
    up; PostgreSQL: None, rows are found by _id)."""

    fields: dict[str, Any] | None
    meta: dict[str, Any] | None
    event_time: dt.datetime | None
    generation: int | None
    locator: Any = None


@dataclass
class ChangeCounts:
    """What became of each change (see the module's docstring); the fields sum to the changes counted."""

    inserted: int = 0
    updated: int = 0
    replaced: int = 0
    deleted: int = 0
    merged: int = 0
    skipped: int = 0
    ignored_older: int = 0
    errors: int = 0

    def add(self, other: "ChangeCounts") -> None:
        for name in CHANGE_OUTCOMES:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def total(self) -> int:
        return sum(getattr(self, name) for name in CHANGE_OUTCOMES)


CHANGE_OUTCOMES = tuple(ChangeCounts.__dataclass_fields__)


@dataclass
class FoldResult:
    writes: dict[str, Document] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)
    counts: ChangeCounts = field(default_factory=ChangeCounts)
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


# The stored _doc/_meta a batch needs: changes with these _ops build on the stored document (merge its fields, or
# keep them beside an error), or depend on whether it is an error-only placeholder (INSERT, REPLACE; every _op under
# the guard). The store reads documents only for those ids (REPSERT and DELETE read none: see Store.lookup).
READS_STORED_DOCUMENT = frozenset({"UPSERT", "UPDATE", ERROR_OP, "INSERT", "REPLACE"})


def ids_needing_documents(changes: Iterable[Change], guard: bool = False) -> set[str]:
    if guard:
        return {change.id for change in changes}
    return {change.id for change in changes if change.op in READS_STORED_DOCUMENT}


def fold(
    changes: Iterable[Change],
    stored: dict[str, Stored],
    guard: bool = False,
    min_alive_generation: int | None = None,
) -> FoldResult:
    result = FoldResult()
    counts = result.counts
    current: dict[str, Document | None] = {}
    physical: dict[str, bool] = {}
    existed: dict[str, bool] = {}
    touched: dict[str, bool] = {}
    based_on_stored: dict[str, bool] = {}  # the current document is the stored one, possibly with merges
    last_op: dict[str, str] = {}  # the last applied, non-error change's _op
    for change in changes:
        key = change.id
        if key not in current:
            old = stored.get(key)
            physical[key] = old is not None
            alive = old is not None and not (
                min_alive_generation is not None and (old.generation is None or old.generation < min_alive_generation)
            )
            current[key] = (
                Document(old.fields or {}, old.meta or {}, old.event_time or change.event_time, "", change.extracted_at, [])
                if alive
                else None
            )
            # for the counts, a stored error-only document is absent (as for the _ops), when the store read it: a
            # REPSERT or DELETE reads no document, so one that rewrites or removes a placeholder counts as replaced
            # or deleted (see Store.lookup)
            existed[key] = current[key] is not None and not _is_placeholder(current[key])
            based_on_stored[key] = existed[key]
            touched[key] = False
        doc = current[key]
        exists = doc is not None and not _is_placeholder(doc)
        op = change.op
        if guard and exists and op != ERROR_OP and change.event_time < doc.event_time:
            counts.ignored_older += 1
            continue
        if op == "UPSERT":
            if exists:
                doc = _merge(doc, change)
            else:
                doc = _new(change)
                based_on_stored[key] = False
        elif op == "INSERT":
            if exists:
                counts.skipped += 1
                continue
            doc = _new(change)
            based_on_stored[key] = False
        elif op == "UPDATE":
            if not exists:
                counts.skipped += 1
                continue
            doc = _merge(doc, change)
        elif op == "DELETE":
            # nothing to delete: absent before the batch, or already deleted by an earlier change of this batch
            if doc is None and (not physical[key] or key in last_op):
                counts.skipped += 1
                continue
            doc = None
            based_on_stored[key] = False
        elif op == "REPLACE":
            if not exists:
                counts.skipped += 1
                continue
            doc = _new(change)
            based_on_stored[key] = False
        elif op == "REPSERT":
            doc = _new(change)
            based_on_stored[key] = False
        else:  # ERROR: unknown _op, or a record the transformation failed on
            counts.errors += 1
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
            continue
        if key in last_op:
            counts.merged += 1  # the previous applied change of this _id is folded into this one
        last_op[key] = op
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
        op = last_op.get(key)
        if op is None:  # only error changes: counted as errors
            continue
        if op == "DELETE":
            counts.deleted += 1
        elif not existed[key]:
            counts.inserted += 1
        elif based_on_stored[key]:
            counts.updated += 1
        else:
            counts.replaced += 1
    return result
