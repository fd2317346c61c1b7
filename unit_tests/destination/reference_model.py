"""A straightforward, per-record reference of what a collection must contain (issue 11, differential tests).

The specification is the ``_op`` table and the accounting rules in ``destination_collection/operations.py``. This
model applies ONE change at a time to a plain dict ``_id -> document`` and never looks at the store or the
destination's fold; what it shares with the destination is only the derivation of a change from a record
(``DocumentBuilder``: ``_id``, ``_event_time``, ``_op``, ``_meta``), which is not what these tests are about, and
the per-value rules of ``column_types`` (which type a value has, how types unify, whether a value fits).

Batch boundaries (``simulate``) matter for three things only, none of them the documents' content:

* ``ChangeCounts``: ``merged`` counts the earlier applied changes of an ``_id`` within one batch, and the net
  effect (inserted / updated / replaced / deleted) is taken against the document as it was before the batch;
* which documents are written by a batch (the latest state of every ``_id`` a batch applied or errored), hence
  which values typed columns see, and so the column types (they widen as written values arrive);
* typed column values of rows a later batch did not rewrite, which keep the values (converted by widening) and the
  misfits of the batch that wrote them.

Typed column values are normalised to Python values (``normalise``): JSON columns parsed, DECIMAL as ``int``.
PostgreSQL's NUL encoding (``{"$base64_utf8": ...}`` in jsonb, NULL + a change in a text column) is modelled when
``nul_encoding`` is true.
"""
from __future__ import annotations

import base64
import datetime as dt
import decimal
from dataclasses import dataclass, field
from typing import Any

from destination_collection import jsonio
from destination_collection.operations import READS_STORED_DOCUMENT
from destination_collection.column_types import (
    BIGINT,
    DECIMAL,
    DOUBLE,
    JSON,
    MISFIT,
    VARCHAR,
    convert,
    declared_type,
    misfit_change,
    unify,
    value_type,
)
from destination_collection.config import CollectionConfig
from destination_collection.documents import ERROR_OP, DocumentBuilder, SPECIAL_FIELDS, KINESIS_PREFIX, split_metadata
from destination_collection.operations import ChangeCounts

UTC = dt.timezone.utc
INGESTED_AT = dt.datetime(2000, 1, 1, tzinfo=UTC)  # the model's "ingestion time" (runs use the wall clock)
NUL_STRING_KEY = "$base64_utf8"


# -- documents ----------------------------------------------------------------------------------------------------
@dataclass
class RefDoc:
    fields: dict[str, Any]
    meta: dict[str, Any]
    event_time: dt.datetime
    extracted_at: dt.datetime
    changes: list[dict[str, Any]]  # _airbyte_meta.changes the last applied change brought (event-time fallbacks)
    error_only: bool = False


@dataclass
class RefColumn:
    field: str
    type: str
    declared: bool = False


@dataclass
class RefRow:
    """What the store row holds besides the document: typed values and the write-time changes."""

    typed: dict[str, Any]
    write_changes: list[dict[str, Any]]  # encoding changes + misfits of the batch that last wrote the row


@dataclass
class BatchLog:
    existed: dict[str, bool] = field(default_factory=dict)  # present (and not error-only) before the batch
    physical: dict[str, bool] = field(default_factory=dict)  # a row (any) before the batch
    based_on_stored: dict[str, bool] = field(default_factory=dict)
    last_op: dict[str, str] = field(default_factory=dict)
    touched: dict[str, bool] = field(default_factory=dict)
    placeholder_before: dict[str, bool] = field(default_factory=dict)  # an error-only document before the batch
    ops: dict[str, set] = field(default_factory=dict)  # every _op of the batch's changes of an _id


class ReferenceCollection:
    """One stream's collection, applied record by record."""

    def __init__(self, configured: dict[str, Any], settings: CollectionConfig, nul_encoding: bool = False):
        stream = configured["stream"]
        self.name = stream["name"]
        self.mode = configured.get("destination_sync_mode") or "append"
        primary_key = configured.get("primary_key") or stream.get("source_defined_primary_key") or []
        self.builder = DocumentBuilder(settings, primary_key, dedup=self.mode == "append_dedup")
        self.guard = settings.ignore_older_changes
        self.nul_encoding = nul_encoding
        self.docs: dict[str, RefDoc] = {}
        self.rows: dict[str, RefRow] = {}
        self.counts = ChangeCounts()
        self.records = 0
        self.columns: dict[str, RefColumn] = {}
        properties = (stream.get("json_schema") or {}).get("properties") or {}
        for name, prop in properties.items():
            if not name.startswith(KINESIS_PREFIX) and name not in SPECIAL_FIELDS and "\x00" not in name:
                self.columns[name] = RefColumn(name, declared_type(prop), declared=True)
        self._batch: BatchLog | None = None

    # -- one change at a time ----------------------------------------------------------------------------------
    def change_for(self, data: Any, emitted_at: Any):
        if not isinstance(data, dict):
            data = {"_value": data}
        fields, meta = split_metadata(data)
        return self.builder.build(fields, data, meta, emitted_at, INGESTED_AT)

    def begin_batch(self) -> None:
        self._batch = BatchLog()

    def apply(self, data: Any, emitted_at: Any) -> str:
        """Apply one record; returns what became of it ('applied', 'skipped', 'ignored_older', 'errors')."""
        self.records += 1
        change = self.change_for(data, emitted_at)
        key = change.id
        log = self._batch
        doc = self.docs.get(key)
        if key not in log.existed:
            log.existed[key] = doc is not None and not doc.error_only  # "an error-only document counts as absent"
            log.physical[key] = doc is not None
            log.based_on_stored[key] = log.existed[key]
            log.touched[key] = False
            log.placeholder_before[key] = doc is not None and doc.error_only
        exists = doc is not None and not doc.error_only
        op = change.op
        log.ops.setdefault(key, set()).add(op)

        def new() -> RefDoc:
            return RefDoc(dict(change.fields), dict(change.meta), change.event_time, change.extracted_at, list(change.changes))

        if op == ERROR_OP:  # unknown _op: data untouched, the error in _meta.error; an error-only doc when absent
            self.counts.errors += 1
            error = {"reason": change.op_error, "record": change.record}
            if exists:
                self.docs[key] = RefDoc(doc.fields, {**doc.meta, "error": error}, doc.event_time, change.extracted_at,
                                        list(change.changes))
            else:
                self.docs[key] = RefDoc({}, {**change.meta, "error": {**error, "error_only": True}}, change.event_time,
                                        change.extracted_at, list(change.changes), error_only=True)
            log.touched[key] = True
            return "errors"
        if self.guard and exists and change.event_time < doc.event_time:
            self.counts.ignored_older += 1
            return "ignored_older"
        if op in ("UPSERT", "UPDATE") and exists:  # top-level merge: the change's fields win
            meta = {k: v for k, v in doc.meta.items() if k not in ("bad", "error")}
            meta.update(change.meta)
            result: RefDoc | None = RefDoc({**doc.fields, **change.fields}, meta, change.event_time,
                                           change.extracted_at, list(change.changes))
        elif op == "UPSERT" or (op == "INSERT" and not exists) or op == "REPSERT" or (op == "REPLACE" and exists):
            result = new()
            log.based_on_stored[key] = False
        elif op == "DELETE" and doc is not None:  # an error-only document is removed too
            result = None
            log.based_on_stored[key] = False
        else:  # INSERT on an existing doc, UPDATE / REPLACE / DELETE on an absent one
            self.counts.skipped += 1
            return "skipped"
        if key in log.last_op:
            self.counts.merged += 1
        log.last_op[key] = op
        log.touched[key] = True
        if result is None:
            self.docs.pop(key, None)
        else:
            self.docs[key] = result
        return "applied"

    def end_batch(self) -> None:
        """Net effects against the document before the batch; rows written / deleted; columns evolved."""
        log, self._batch = self._batch, None
        written: list[str] = []
        for key, touched in log.touched.items():
            if not touched:
                continue
            op = log.last_op.get(key)
            if log.placeholder_before[key] and not (self.guard or log.ops[key] & READS_STORED_DOCUMENT):
                # operations.py's documented exception: a batch of only REPSERT/DELETE for an _id does not read the
                # stored document, so rewriting an error-only document counts as replaced (not inserted)
                log.existed[key] = log.based_on_stored[key] = True
                if op == "REPSERT" or op == "DELETE":
                    log.based_on_stored[key] = False
            if op is not None:
                if op == "DELETE":
                    self.counts.deleted += 1
                elif not log.existed[key]:
                    self.counts.inserted += 1
                elif log.based_on_stored[key]:
                    self.counts.updated += 1
                else:
                    self.counts.replaced += 1
            if key in self.docs:
                written.append(key)
            else:
                self.rows.pop(key, None)
        self._evolve([self.docs[key].fields for key in written])
        for key in written:
            self.rows[key] = self._row(self.docs[key].fields)

    # -- typed columns -----------------------------------------------------------------------------------------
    def _evolve(self, field_dicts: list[dict[str, Any]]) -> None:
        observed: dict[str, set[str]] = {}
        for fields in field_dicts:
            for key, value in fields.items():
                kind = value_type(value)
                if kind is not None:
                    observed.setdefault(key, set()).add(kind)
        for key, kinds in observed.items():
            column = self.columns.get(key)
            if column is None:
                if "\x00" in key:
                    continue
                logical = None
                for kind in sorted(kinds):
                    logical = unify(logical, kind)
                self.columns[key] = RefColumn(key, logical)
                continue
            target = column.type
            for kind in sorted(kinds):
                if column.declared:
                    if target == BIGINT and kind == DECIMAL:
                        target = DECIMAL
                else:
                    target = unify(target, kind) or target
            if target != column.type:
                for row in self.rows.values():  # the store converts the values it holds
                    row.typed[key] = widened(row.typed.get(key), target)
                column.type = target

    def _row(self, fields: dict[str, Any]) -> RefRow:
        typed: dict[str, Any] = {}
        changes: list[dict[str, Any]] = []
        if self.nul_encoding:
            encode_nul(fields, "", changes)
        for key, value in fields.items():
            column = self.columns.get(key)
            if column is None or value is None:
                continue
            converted = convert(value, column.type)
            if converted is MISFIT or (
                self.nul_encoding and column.type == VARCHAR and isinstance(converted, str) and "\x00" in converted
            ):
                changes.append(misfit_change(key, column.type))
                continue
            if column.type == JSON and self.nul_encoding:
                converted = encode_nul(converted, "", [])
            typed[key] = normalise(converted)
        return RefRow(typed, changes)

    # -- expectations ------------------------------------------------------------------------------------------
    def expected_rows(self) -> dict[str, dict[str, Any]]:
        """Per ``_id``: ``_doc``, ``_meta``, ``_event_time``, ``_airbyte_extracted_at``, changes, typed values, as the
        store should hold them."""
        out = {}
        for key, doc in self.docs.items():
            row = self.rows[key]
            fields, meta = doc.fields, doc.meta
            if self.nul_encoding:
                fields, meta = encode_nul(fields, "", []), encode_nul(meta, "", [])
            out[key] = {
                "_doc": fields,
                "_meta": meta,
                "_event_time": doc.event_time,
                "_airbyte_extracted_at": doc.extracted_at,
                "changes": list(doc.changes) + row.write_changes,
                "typed": {k: v for k, v in row.typed.items() if v is not None},
            }
        return out

    def column_types(self) -> dict[str, str]:
        return {name: column.type for name, column in self.columns.items()}


def widened(value: Any, target: str) -> Any:
    """A stored typed value after ``ALTER … TYPE target`` (normalised form in, normalised form out)."""
    if value is None:
        return None
    if target == DOUBLE and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value  # BIGINT → DECIMAL keeps the integer; anything → JSON keeps the value (to_json)


def encode_nul(value: Any, path: str, changes: list[dict[str, Any]]) -> Any:
    """PostgreSQL's jsonb encoding of strings holding NUL (see stores/postgres_store.py's docstring)."""
    if isinstance(value, str):
        if "\x00" in value:
            changes.append({
                "field": path or "_doc",
                "change": "NULLED",
                "reason": "DESTINATION_SERIALIZATION_ERROR",
                "detail": f'PostgreSQL jsonb cannot hold NUL; stored as {{"{NUL_STRING_KEY}": ...}}',
            })
            return {NUL_STRING_KEY: base64.b64encode(value.encode("utf-8")).decode("ascii")}
        return value
    if isinstance(value, dict):
        return {k: encode_nul(v, f"{path}.{k}" if path else k, changes) for k, v in value.items()}
    if isinstance(value, list):
        return [encode_nul(v, f"{path}[{i}]", changes) for i, v in enumerate(value)]
    return value


def normalise(value: Any) -> Any:
    """A typed column value as Python: JSON text parsed, DECIMAL as int."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def same(a: Any, b: Any) -> bool:
    """Equality of JSON-like values that does not confuse booleans with numbers (True == 1 in Python)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def canonical(value: Any) -> str:
    """Order-independent text of a JSON-like value (for multisets: append collections, change lists)."""
    return jsonio.dumps(_tag(value), sort_keys=True)


def _tag(value: Any) -> Any:
    if isinstance(value, bool):
        return {"$bool": value}
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _tag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tag(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.astimezone(UTC).isoformat()
    return value


# -- batches ---------------------------------------------------------------------------------------------------------
def simulate(
    streams: list[dict[str, Any]],
    collections: list[dict[str, Any]],
    syncs: list[list[dict[str, Any]]],
    batch_size: int,
    nul_encoding: bool = False,
) -> dict[str, ReferenceCollection]:
    """Apply ``syncs`` (each a list of RECORD / STATE message dicts, one ``write`` each) record by record, with the
    write loop's batch boundaries: a stream's batch ends when it holds ``batch_size`` records, at a STATE for that
    stream (a GLOBAL state: every stream) and at the end of a sync. (Byte and time limits are configured out of
    reach by the tests.)"""
    settings = {c["stream"]: CollectionConfig(**c) for c in collections}
    models = {
        s["stream"]["name"]: ReferenceCollection(
            s, settings.get(s["stream"]["name"]) or CollectionConfig(stream=s["stream"]["name"]), nul_encoding
        )
        for s in streams
    }
    for messages in syncs:
        buffers: dict[str, list[tuple[Any, Any]]] = {name: [] for name in models}

        def flush(name: str) -> None:
            batch, buffers[name] = buffers[name], []
            if not batch:
                return
            model = models[name]
            model.begin_batch()
            for data, emitted_at in batch:
                model.apply(data, emitted_at)
            model.end_batch()

        for message in messages:
            if message["type"] == "RECORD":
                record = message["record"]
                name = record["stream"]
                buffers[name].append((record.get("data"), record.get("emitted_at")))
                if len(buffers[name]) >= batch_size:
                    flush(name)
            elif message["type"] == "STATE":
                state = message["state"]
                if state.get("type") == "STREAM":
                    flush(state["stream"]["stream_descriptor"]["name"])
                else:
                    for name in models:
                        flush(name)
        for name in models:
            flush(name)
    return models

