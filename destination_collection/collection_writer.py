"""One collection's write path: buffer records, derive documents, transform, fold ``_op``s, evolve columns, and
apply the batch to the store (the caller owns the transaction)."""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from airbyte_cdk.models import ConfiguredAirbyteStream

from . import jsonio
from .column_types import BIGINT, INT64_MAX, INT64_MIN, JSON, VARCHAR, Column, convert, declared_type, misfit_change, value_type, widen, unify, MISFIT
from .config import DestinationConfig
from .documents import EMITTED_MAX_MS, EMITTED_MIN_MS, INFERRED_KEYWORD, KINESIS_PREFIX, SPECIAL_FIELDS, Change, DocumentBuilder, split_metadata, strip_metadata
from .generations import GenerationPlan, plan_generation
from .set_batch import MAX_RECORD_BYTES, SET_BATCH_OPS, JsonBatch, json_batch_records, set_batch_class
from .naming import SYSTEM_COLUMNS, column_name, table_name
from .operations import ChangeCounts, DocumentReads, FoldResult, Stored, document_shape, fold
from .stores.base import SHAPE_COLUMN, SYSTEM_COLUMN_TYPES, Store
from .transformation import Transformation

logger = logging.getLogger("airbyte")
# Typed columns per collection, at most; other top-level fields are kept in _doc only.
MAX_TYPED_COLUMNS = 256
_SIMPLE_TYPES = {str: VARCHAR, bool: "BOOLEAN", float: "DOUBLE", dict: JSON, list: JSON}
FAST_OPS = ("INSERT", "UPSERT", "REPSERT")
_EXACT = {VARCHAR: str, "BOOLEAN": bool, "DOUBLE": float}


@dataclass
class ColumnPlan:
    """New typed columns and widenings a batch needs (``CollectionWriter.plan_columns``)."""

    new_columns: list[Column] = field(default_factory=list)
    widenings: list[tuple[Column, str]] = field(default_factory=list)
    capped: str | None = None  # the first field past MAX_TYPED_COLUMNS (it stays in _doc only)


def stream_key(name: str, namespace: str | None) -> str:
    return f"{namespace}.{name}" if namespace else name


@dataclass
class WriterStats:
    """A stream's summary. ``records`` received + ``extra_rows`` (rows a transformation emitted beyond one per record)
    = ``filtered`` (records it emitted no row for) + ``counts.total()`` (every change, by what became of it). The
    rest counts values or documents, not changes."""

    records: int = 0
    extra_rows: int = 0
    filtered: int = 0
    counts: ChangeCounts = field(default_factory=ChangeCounts)
    misfits: int = 0
    generations_removed: int = 0
    purged: int = 0
    samples: list[str] = field(default_factory=list)

    def adds_up(self) -> bool:
        return self.records + self.extra_rows == self.filtered + self.counts.total()

    def summary(self) -> str:
        c = self.counts
        extra = f" (+{self.extra_rows} extra rows from the transformation)" if self.extra_rows else ""
        return (
            f"{self.records} records{extra}: {c.inserted} inserted, {c.updated} updated, {c.replaced} replaced, "
            f"{c.deleted} deleted, {c.merged} merged into a later change of the same _id in their batch, {c.skipped} "
            f"skipped by their _op, {c.ignored_older} older changes ignored, {c.errors} errors (kept in _meta.error), "
            f"{self.filtered} filtered by the transformation"
        )


class CollectionWriter:
    def __init__(self, store: Store, configured: ConfiguredAirbyteStream, config: DestinationConfig):
        stream = configured.stream
        self.store = store
        self.name = stream.name
        self.namespace = stream.namespace
        self.key = stream_key(stream.name, stream.namespace)
        self.table = table_name(config.collection_prefix, stream.name, stream.namespace)
        self.settings = config.collection(stream.name)
        mode = configured.destination_sync_mode
        self.mode = getattr(mode, "value", mode) or "append"
        primary_key = configured.primary_key or stream.source_defined_primary_key or []
        self.builder = DocumentBuilder(self.settings, primary_key, dedup=self.mode == "append_dedup")
        self.transformation = (
            Transformation(self.settings.transformation_sql, stream.name) if self.settings.transformation_sql else None
        )
        self.generation_id = configured.generation_id
        self.minimum_generation_id = configured.minimum_generation_id
        self.sync_id = configured.sync_id
        self.declared = self._declared_columns(stream.json_schema or {})
        self.columns: dict[str, Column] = {}
        self.system_columns = SYSTEM_COLUMN_TYPES
        self._column_cap_logged = False
        self.plan = GenerationPlan(self.generation_id, None)
        self.buffer: list[tuple[dict[str, Any], Any]] = []
        # the buffer holds each record's data as JSON text (set_batch.JsonBatch) rather than as an object: ~20 bytes
        # of text per ~100 bytes of Python objects, and no object kept per record (see add)
        self._texts = False
        # the set-based path (set_batch.py) for this collection: a store that runs it, no transformation, no
        # event-time field, an id_field / primary key of top-level fields that are not metadata
        settings = self.settings
        self.set_batch = set_batch_class(store)
        self.set_batches = (
            self.set_batch is not None
            and self.transformation is None
            and not settings.event_time_field
            and not (settings.id_field and (settings.id_field.startswith(KINESIS_PREFIX) or settings.id_field in SPECIAL_FIELDS))
            and all(len(path) == 1 for path in self.builder.primary_key)
        )
        self.first_buffered_at: float | None = None
        self._buffered_bytes = 0  # input bytes of the records in ``buffer`` (valid while it is not empty)
        self.records_since_state = 0
        self.complete = False
        self.stats = WriterStats()
        # seconds the last ``apply`` spent looking up stored documents and deleting the rows it rewrites: the part of
        # a commit that grows with the collection however few records it carries (the write loop holds states back
        # while it is large; see protocol_loop.HOLD_FACTOR)
        self.lookup_seconds = 0.0
        self._empty_meta_text: dict[str, str] = {}

    @staticmethod
    def _declared_columns(schema: dict[str, Any]) -> list[tuple[str, str, bool]]:
        """(field, logical type, declared) per top-level property. A property marked ``INFERRED_KEYWORD`` (a type
        the source inferred from a sample) gets its column up front but widens as values need, like a column the
        data created; any other property's type is a declaration (values that do not fit are misfits)."""
        properties = schema.get("properties") if isinstance(schema, dict) else None
        if not isinstance(properties, dict):
            return []
        return [
            (name, declared_type(prop), not (isinstance(prop, dict) and prop.get(INFERRED_KEYWORD) is True))
            for name, prop in properties.items()
            if not name.startswith(KINESIS_PREFIX) and name not in SPECIAL_FIELDS and "\x00" not in name
        ]

    # -- lifecycle --------------------------------------------------------------------------------------------
    def open(self) -> None:
        """Create the collection if needed and fix this sync's generation plan (inside a transaction)."""
        existing = self.store.catalog.load_columns(self.table)
        taken = {c.name.lower() for c in existing.values()} | set(SYSTEM_COLUMNS)
        declared = []
        for field_name, logical, is_declared in self.declared:
            if field_name in existing:
                continue
            name = column_name(field_name, taken)
            taken.add(name.lower())
            declared.append(Column(field_name, name, logical, declared=is_declared))
        self.columns = self.store.catalog.ensure_collection(self.table, self.name, self.namespace, declared)
        self.system_columns = self.store.catalog.system_columns(self.table, self.columns)
        self.plan = plan_generation(
            self.mode, self.generation_id, self.minimum_generation_id, lambda: self.store.max_generation(self.table)
        )

    def close(self) -> None:
        if self.transformation:
            self.transformation.close()

    def add(self, data: dict[str, Any], emitted_at: Any, now: float, size: int = 0) -> None:
        """Buffer one record parsed from a protocol line (JSON values only); ``size`` is its input size in bytes (its
        RECORD line), for ``batch_max_bytes``.

        For the set-based path the record is kept as its JSON text: a record that path cannot take (an
        ``_op`` other than REPSERT or DELETE, an ``_event_time`` or ``_meta`` key, an integer past 64 bits orjson does not write, not an object) turns the
        batch back into objects."""
        if not self.buffer:  # the first record of a new batch (taking the changes emptied the buffer)
            self.first_buffered_at = now
            self._buffered_bytes = 0
            self._texts = self.set_batches
        if self._texts:
            text = None
            if type(data) is dict and "_event_time" not in data and "_meta" not in data:
                op = data.get("_op")
                # (a quick pre-check: set_batch checks each _op exactly; other _ops need the per-record path)
                if op is None or (type(op) is str and op.strip().upper() in SET_BATCH_OPS):
                    try:
                        # decoded: orjson's bytes keep an 8 KiB allocation however short the text (measured with
                        # orjson 3.13: a 27k-record batch of 0.5 KB records held ~220 MB instead of ~17 MB)
                        text = orjson.dumps(data).decode()
                    except TypeError:
                        pass
            if text is None:
                self._to_objects()
            else:
                data = text
        self._buffered_bytes += size
        self.buffer.append((data, emitted_at))
        self.records_since_state += 1
        self.stats.records += 1

    def add_text(self, text: str, emitted_at: Any, now: float, size: int = 0) -> None:
        """``add`` for a record whose data is given as the text of a JSON object as ``orjson.dumps`` writes it (a
        producer in this process that already holds that text: the runner's source process). The text is buffered
        as it is — no parse, no re-serialization — when the set-based path can take it; a text that may hold an
        ``_op``, ``_event_time`` or ``_meta`` key (the names anywhere in it: conservative) or a batch already of
        objects takes ``add``'s checks with the parsed object (the same outcome as the record given as a line)."""
        if not self.set_batches or (self.buffer and not self._texts) or '"_op"' in text or '"_event_time"' in text or '"_meta"' in text:
            self.add(jsonio.loads(text), emitted_at, now, size)
            return
        if not self.buffer:  # the first record of a new batch, as in ``add``
            self.first_buffered_at = now
            self._buffered_bytes = 0
            self._texts = True
        self._buffered_bytes += size
        self.buffer.append((text, emitted_at))
        self.records_since_state += 1
        self.stats.records += 1

    def add_object(self, data: Any, emitted_at: Any, now: float, size: int = 0) -> None:
        """``add`` for a record given as an object (in-process callers), not parsed from a line: it may hold values that
        are not JSON (NaN, datetimes, …), so its batch takes the per-record path."""
        if not self.buffer:
            self._texts = False
        self._to_objects()
        self.add(data, emitted_at, now, size)

    def _to_objects(self) -> None:
        """The batch so far back from texts to objects (for the per-record path)."""
        if self._texts:
            self._texts = False
            self.buffer = json_batch_records(self.buffer)

    def buffered_bytes(self) -> int:
        """Input bytes of the buffered records (0 when the buffer is empty)."""
        return self._buffered_bytes if self.buffer else 0

    # -- batch processing -------------------------------------------------------------------------------------
    def take_changes(self) -> list[Change] | JsonBatch:
        """Empty the buffer into what ``apply`` takes: a ``JsonBatch`` for the set-based path when this collection
        and the records allow it (see set_batch.py), else changes (documents + transformation)."""
        batch, self.buffer, self.first_buffered_at = self.buffer, [], None
        if not batch:
            return []
        if self._texts:
            self._texts = self.set_batches
            json_batch = self._json_batch(batch)
            if json_batch is not None:
                return json_batch
            batch = json_batch_records(batch)
        return self._changes(batch)

    @staticmethod
    def _json_batch(batch: list[tuple[str, Any]]) -> JsonBatch | None:
        """The buffered texts as a ``JsonBatch``, or None when the batch is not for the set-based path (a record
        bigger than ``MAX_RECORD_BYTES``, a float ``emitted_at``)."""
        texts = [text for text, _ in batch]
        # (bytes of UTF-8: a text of n characters has n to 4n; only texts past a quarter of the bound are encoded)
        quarter = MAX_RECORD_BYTES // 4
        if max(map(len, texts)) > quarter and any(
            len(text) > quarter and len(text.encode()) > MAX_RECORD_BYTES for text in texts
        ):
            return None
        # _airbyte_extracted_at: an integer emitted_at in range (documents.extracted_time); anything else but a float
        # means the ingestion time (None here), a float goes the per-record way (its rounding to microseconds)
        raw = [e for _, e in batch]
        if any(type(e) is float for e in raw):
            return None
        emitted = [e if type(e) is int and EMITTED_MIN_MS <= e <= EMITTED_MAX_MS else None for e in raw]
        return JsonBatch(texts, emitted, raw)

    def _changes(self, batch: list[tuple[Any, Any]]) -> list[Change]:
        now = dt.datetime.now(dt.timezone.utc)
        build = self.builder.build
        if self.transformation is None:
            return self.builder.build_many(batch, now)
        originals = [data if isinstance(data, dict) else {"_value": data} for data, _ in batch]
        result = self.transformation.run(originals)
        produced = {index for index, _, _ in result.rows}
        self.stats.filtered += len(batch) - len(produced) - len(result.failed)
        self.stats.extra_rows += len(result.rows) - len(produced)
        ordered: list[tuple[int, Change]] = []  # by source record: _op folding follows arrival order
        metas: dict[int, dict[str, Any]] = {}
        for index, row, notes in result.rows:
            if index not in metas:
                metas[index] = split_metadata(originals[index])[1]
            change = build(strip_metadata(row), originals[index], metas[index], batch[index][1], now)
            if notes:
                change.changes = notes + change.changes
            ordered.append((index, change))
        if result.failed:
            # a record the statement fails on for its values (a cast, an out-of-range date, error()) becomes an
            # ERROR change: its document's data stays untouched, the record and the reason go to _meta.error, apply
            # counts it with the errors, and the rest of the batch goes on
            for index, reason in result.failed.items():
                meta = split_metadata(originals[index])[1]
                ordered.append((index, self.builder.build_failed(originals[index], meta, batch[index][1], now, reason)))
            ordered.sort(key=lambda pair: pair[0])
            kinds = sorted({reason.split(":", 1)[0] for reason in result.failed.values()})
            logger.warning(
                f"Stream '{self.name}': the ingest transformation failed on {len(result.failed)} of {len(batch)} "
                f"record(s) ({', '.join(kinds)}); each is kept with the reason in _meta.error of its document in "
                f"{self.table}, and the sync goes on."
            )
        return [change for _, change in ordered]

    def apply(self, changes: list[Change] | JsonBatch) -> None:
        """Apply what ``take_changes`` gave to the store; the caller holds the transaction. A ``JsonBatch`` goes the
        set-based way (set_batch.py) unless it needs this per-record path, which it then takes.

        One lookup (skipped when every change is a new document with a generated id), the fold in arrival order,
        then column changes (DDL first: DuckDB refuses to commit an ALTER that follows a DELETE of the same table in
        one transaction), then one write: remove the stored rows that are deleted or rewritten, insert the rest."""
        self.lookup_seconds = 0.0
        if not changes:
            return
        if isinstance(changes, JsonBatch):
            lane = self.set_batch(self, changes, dt.datetime.now(dt.timezone.utc))
            if lane.apply():
                self.store.catalog.touch_collection(self.table)
                return
            logger.debug(f"Stream '{self.name}': a batch takes the per-record path ({lane.reason}).")
            found_rows, changes = lane.found_rows, self._changes(changes.records())
            lane_lookup_seconds = lane.lookup_seconds
        else:
            found_rows, lane_lookup_seconds = None, 0.0
        store = self.store
        plain = all(c.generated_id and c.op in FAST_OPS for c in changes)
        if plain:  # fresh random ids only: every change is a new document, nothing to fetch or fold
            stored: dict[str, Stored] = {}
            result = FoldResult(writes={c.id: c for c in changes}, counts=ChangeCounts(inserted=len(changes)))
        else:
            guard = self.settings.ignore_older_changes
            reads = DocumentReads(changes, guard)
            started = time.perf_counter()
            ids = list(dict.fromkeys(c.id for c in changes))
            if found_rows is not None:  # the set-based path found the stored rows of these ids already
                stored = store.lookup(self.table, ids, reads, found_rows)
            else:
                stored = store.lookup(self.table, ids, reads)
            self.lookup_seconds = time.perf_counter() - started + lane_lookup_seconds
            reads.complete(stored)
            result = fold(
                changes, stored, guard=guard,
                min_alive_generation=self.plan.min_alive_generation,
            )
        stats = self.stats
        stats.counts.add(result.counts)
        for sample in result.error_samples:
            if len(stats.samples) < 5:
                stats.samples.append(sample)
        if result.counts.errors:
            logger.warning(
                f"Stream '{self.name}': {result.counts.errors} record(s) with an unknown _op or a failed ingest transformation were not applied; the error is "
                f"recorded in _meta.error of their documents in {self.table} (e.g. {result.error_samples[0]})."
            )
        values_by_field = self._evolve(result.writes.values()) if result.writes else {}
        removed = {key: stored[key] for key in (*result.deletes, *result.writes) if key in stored}
        columns, data = self._rows(result.writes, values_by_field)
        if removed:  # the delete scans the collection (DuckDB) or its _id index (PostgreSQL): timed with the lookup
            started = time.perf_counter()
            store.write_batch(self.table, removed, [], {"_id": []})
            self.lookup_seconds += time.perf_counter() - started
        store.write_batch(self.table, {}, columns, data)
        store.catalog.touch_collection(self.table)

    def _evolve(self, docs) -> dict[str, list]:
        """Create and widen columns for the batch; returns each field's values in document order, which ``_rows``
        reuses (one pass per field over the batch instead of two)."""
        # per field: its values once (C-level comprehensions), then the distinct Python types; only integers need
        # their values (BIGINT / DECIMAL / JSON by magnitude), and a batch within int64 is BIGINT without a look at
        # each value
        field_dicts = [doc.fields for doc in docs]
        observed: dict[str, set[str]] = {}
        simple = _SIMPLE_TYPES
        none_type = type(None)
        values_by_field: dict[str, list] = {}
        for key in set().union(*field_dicts):
            values = values_by_field[key] = [f.get(key) for f in field_dicts]
            for kind_type in set(map(type, values)):
                if kind_type is none_type:
                    continue
                kind = simple.get(kind_type)
                if kind is not None:
                    observed.setdefault(key, set()).add(kind)
                    continue
                same = [v for v in values if type(v) is kind_type]
                if kind_type is int and INT64_MIN <= min(same) and max(same) <= INT64_MAX:
                    kinds = {BIGINT}
                else:  # big integers, subclasses, Decimal, …: by value, as value_type says
                    kinds = {value_type(v) for v in same}
                    kinds.discard(None)
                if kinds:
                    observed.setdefault(key, set()).update(kinds)
        if any(key not in self.columns for key in observed):
            # new columns are created (and named) in order of first appearance, as before
            order = dict.fromkeys(key for doc in docs for key in doc.fields)
            observed = {key: observed[key] for key in order if key in observed}
        self.apply_columns(self.plan_columns(observed))
        return values_by_field

    def plan_columns(self, observed: dict[str, set[str]]) -> "ColumnPlan":
        """What the batch's values need of the typed columns (``observed``: field → the logical types of its non-null
        values, fields in order of first appearance): new columns and widenings, decided here, changed by
        ``apply_columns``. The per-record path and the set-based path (set_batch.py) share this policy."""
        plan = ColumnPlan()
        taken = {c.name.lower() for c in self.columns.values()} | set(SYSTEM_COLUMNS)
        count = len(self.columns)
        for key, kinds in observed.items():
            column = self.columns.get(key)
            if column is None:
                if "\x00" in key:
                    continue
                if count >= MAX_TYPED_COLUMNS:
                    # Past the cap a field lives in _doc only (still queryable as JSON): a record with thousands of
                    # keys must not exhaust the store (PostgreSQL allows 1600 columns; DuckDB's memory per column).
                    plan.capped = plan.capped or key
                    continue
                logical = None
                for kind in kinds:
                    logical = unify(logical, kind)
                name = column_name(key, taken)
                taken.add(name.lower())
                plan.new_columns.append(Column(key, name, logical))
                count += 1
                continue
            target = column.type
            for kind in kinds:
                target = widen(Column(key, column.name, target, column.declared), kind)
            if target != column.type:
                plan.widenings.append((column, target))
        return plan

    def column_type(self, key: str, plan: "ColumnPlan") -> str | None:
        """The type field ``key``'s column will have once ``plan`` is applied (None: no typed column)."""
        for column, target in plan.widenings:
            if column.field == key:
                return target
        column = self.columns.get(key)
        if column is not None:
            return column.type
        for column in plan.new_columns:
            if column.field == key:
                return column.type
        return None

    def apply_columns(self, plan: "ColumnPlan") -> None:
        """Make the typed columns what ``plan`` says (DDL; inside the caller's transaction)."""
        if plan.capped and not self._column_cap_logged:
            self._column_cap_logged = True
            logger.warning(
                f"Collection {self.table}: more than {MAX_TYPED_COLUMNS} top-level fields; fields beyond "
                f"the first {MAX_TYPED_COLUMNS} (e.g. '{plan.capped}') get no typed column and stay in _doc."
            )
        for column, target in plan.widenings:
            logger.info(f"Collection {self.table}: column for field '{column.field}' widens from {column.type} to {target}.")
            self.store.catalog.widen_column(self.table, column, target)
            column.type = target
        for column in plan.new_columns:
            self.columns[column.field] = column
        if plan.new_columns:
            self.store.catalog.add_columns(self.table, plan.new_columns)

    def _rows(self, writes, values_by_field: dict[str, list]) -> tuple[list[tuple[str, str]], dict[str, list]]:
        """Column lists for the batch. Columnar: each typed column is built with one comprehension and checked in
        bulk; a document holding any value that is not simply its column's Python type (a misfit, a conversion, a
        NUL the store cannot hold) goes through the per-value path (``_row_slow``), which records its changes in
        field order exactly as a per-document loop does."""
        store = self.store
        n = len(writes)
        ids = list(writes.keys())
        docs = list(writes.values())
        columns = self.columns
        sync_id = self.sync_id
        empty_meta = jsonio.dumps({"sync_id": sync_id, "changes": []})
        encode_many = store.encode_documents
        doc_texts, doc_changes_all = encode_many([doc.fields for doc in docs])
        metas = encode_many([doc.meta for doc in docs])[0]
        keeps_nul = store.holds_nul
        typed: dict[str, list] = {}
        slow: set[int] = set()
        for key, column in columns.items():
            values = values_by_field.get(key)
            if values is None:  # a column no document of this batch has
                typed[key] = [None] * n
                continue
            kind = column.type
            exact = _EXACT.get(kind)
            if exact is not None:
                bad = [i for i, v in enumerate(values) if v is not None and type(v) is not exact]
                if kind == VARCHAR and not keeps_nul:
                    bad += [i for i, v in enumerate(values) if type(v) is str and "\x00" in v]
            elif kind == BIGINT:
                bad = [i for i, v in enumerate(values)
                       if v is not None and (type(v) is not int or not INT64_MIN <= v <= INT64_MAX)]
            elif kind == JSON:
                texts = iter(encode_many([v for v in values if v is not None])[0])
                values = [None if v is None else next(texts) for v in values]
                bad = []
            else:  # DECIMAL: converted value by value
                bad = list(range(n))
            if bad:
                slow.update(bad)
            typed[key] = values
        airbyte_metas = []
        for index, doc in enumerate(docs):
            changes = doc.changes
            doc_changes = doc_changes_all[index] if doc_changes_all else []
            if index in slow:
                changes = self._row_slow(doc, index, typed, list(changes) + doc_changes)
            elif doc_changes:
                changes = list(changes) + doc_changes
            airbyte_metas.append(jsonio.dumps({"sync_id": sync_id, "changes": changes}) if changes else empty_meta)
        times = [doc.event_time for doc in docs]
        raw_ids = [doc.raw_id for doc in docs]
        extracted = [doc.extracted_at for doc in docs]
        docs = doc_texts
        data: dict[str, list] = {
            "_id": ids,
            "_event_time": times,
            "_meta": metas,
            "_doc": docs,
            "_airbyte_raw_id": raw_ids,
            "_airbyte_extracted_at": extracted,
            "_airbyte_meta": airbyte_metas,
            "_airbyte_generation_id": [self.plan.write_generation] * n,
        }
        spec = list(self.system_columns)
        if (SHAPE_COLUMN, "VARCHAR") in spec:  # (not in a collection whose typed column has that name: base.py)
            data[SHAPE_COLUMN] = [document_shape(doc.fields, doc.meta) for doc in writes.values()]
        for key, column in columns.items():
            spec.append((column.name, column.type))
            data[column.name] = typed[key]
        return spec, data

    def _row_slow(self, doc, index: int, typed: dict[str, list], changes: list) -> list:
        """The per-value path for one document: conversions, misfits (NULL + a change), text the store refuses."""
        store = self.store
        columns = self.columns
        for key, value in doc.fields.items():
            column = columns.get(key)
            if column is None:
                continue
            typed[key][index] = None
            if value is None:
                continue
            if type(value) is _EXACT.get(column.type) and (column.type != VARCHAR or "\x00" not in value):
                typed[key][index] = value
                continue
            converted = convert(value, column.type)
            if converted is MISFIT:
                changes.append(misfit_change(key, column.type))
                self.stats.misfits += 1
                continue
            if column.type == JSON:
                converted, _ = store.encode_document(converted)
            elif column.type == VARCHAR:
                converted = store.encode_text(converted)
                if converted is None:
                    changes.append(misfit_change(key, column.type))
                    self.stats.misfits += 1
            typed[key][index] = converted
        return changes

    # -- end of stream and retention --------------------------------------------------------------------------
    def remove_old_generations(self) -> int:
        if not self.plan.truncates:
            return 0
        removed = self.store.delete_generations_before(self.table, self.plan.min_alive_generation)
        self.stats.generations_removed += removed
        if removed:
            logger.info(
                f"Collection {self.table}: removed {removed} document(s) of generations older than "
                f"{self.plan.min_alive_generation} after stream '{self.name}' completed."
            )
        return removed
