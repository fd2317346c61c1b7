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
import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable

from . import jsonio
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
    shape: str | None = None  # its _doc_shape (see document_shape)


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


# The stored _doc/_meta a batch needs. A change builds on the stored document when it merges onto it (UPSERT,
# UPDATE) or keeps its fields beside an error (ERROR), and depends on whether it is an error-only placeholder
# (INSERT, REPLACE; every _op under the guard). REPSERT and DELETE need neither.
#
# Shapes let a store skip most of these reads: every row keeps its document's shape (``_doc_shape``, see
# ``document_shape``): a digest of the top-level field names of ``_doc`` and of ``_meta`` in order, or NULL when its
# ``_meta`` holds an error. A known shape says the row is no placeholder; and a merge whose change has the row's very
# shape overwrites every stored field and every kept ``_meta`` key, so its result does not depend on the stored
# values: such an upsert (a full document each time: what event streams send) reads nothing.
READS_STORED_DOCUMENT = frozenset({"UPSERT", "UPDATE", ERROR_OP, "INSERT", "REPLACE"})
_MERGES = frozenset({"UPSERT", "UPDATE"})
_DROPPED_META = ("bad", "error")  # describe only the change that carried them: a merge drops the stored ones
_shapes: dict[tuple[tuple[str, ...], tuple[str, ...]], str | None] = {}
_MAX_SHAPE_NAMES = 4096  # a document with more top-level names gets no shape: it is read when a change needs it


def document_shape(fields: dict[str, Any], meta: dict[str, Any]) -> str | None:
    """The ``_doc_shape`` of a document: a 128-bit BLAKE2b digest (32 hex digits) of its top-level field names and
    its ``_meta`` keys but bad/error, in order; None when ``_meta`` holds an error (the document may be a
    placeholder) or it has too many names. A digest, not the names, so that PostgreSQL rows grow by 33 bytes rather
    than by the names (~150 bytes here: 10 % of a row, and measurably slower lookups at 10 M rows); two different
    lists of names share a digest with a chance of 2^-128, the same bet as the UUIDs the destination generates."""
    if "error" in meta or len(fields) > _MAX_SHAPE_NAMES:
        return None
    key = (tuple(fields), tuple(meta))
    shape = _shapes.get(key)
    if shape is None:
        names = [list(key[0]), [name for name in key[1] if name not in _DROPPED_META]]
        shape = hashlib.blake2b(jsonio.dumps(names).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        if len(_shapes) >= 10_000:  # documents with ever new field names: a bounded cache, not a leak
            _shapes.clear()
        _shapes[key] = shape
    return shape


class DocumentReads:
    """Which stored documents a batch reads (``needs``: given an _id and its stored ``_doc_shape``) and, for the
    ones it does not read although its merges build on them, the stand-in the fold merges onto (``complete``)."""

    def __init__(self, changes: Iterable[Change], guard: bool = False) -> None:
        self._always: set[str] = set()  # a change builds on the stored document whatever its shape
        self._known: set[str] = set()  # needs the stored document unless its shape is known
        self._cover: dict[str, Change] = {}  # merges whose change has one shape: not read if the row has it
        shapes: dict[str, str | None] = {}
        for change in changes:
            key, op = change.id, change.op
            if op == ERROR_OP:
                self._always.add(key)
            elif op in _MERGES:
                shape = document_shape(change.fields, change.meta)
                if shapes.setdefault(key, shape) != shape or shape is None:
                    self._always.add(key)
                self._cover.setdefault(key, change)
            elif guard or op in READS_STORED_DOCUMENT:  # INSERT, REPLACE; any _op under the guard
                self._known.add(key)
        self._shapes = shapes

    def needs(self, key: str, stored_shape: str | None) -> bool:
        if key in self._always:
            return True
        if key in self._cover:
            return stored_shape is None or stored_shape != self._shapes[key]
        return key in self._known and stored_shape is None

    def complete(self, stored: dict[str, Stored]) -> None:
        """Give the stored rows that were not read but are merged onto their stand-in: the covering change's fields
        and kept ``_meta`` keys (the same names in the same order as the row's; the merge overwrites every value)."""
        for key, change in self._cover.items():
            row = stored.get(key)
            if row is not None and row.fields is None:
                row.fields = dict(change.fields)
                row.meta = {name: value for name, value in change.meta.items() if name not in _DROPPED_META}


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
