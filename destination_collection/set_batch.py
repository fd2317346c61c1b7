"""The set-based batch path: a batch goes into the store as JSON text, and DuckDB does the rest as set operations.

**Input (the batch interface).** ``JsonBatch``: per record, its ``data`` object as JSON text (``str``) exactly as
``orjson.dumps`` writes it, decoded (canonical: no duplicate keys, no NaN, integers within 64 bits), its ``emitted_at``
normalised (an int of ms in range, else None: the ingestion time) and as received. The write loop buffers records it
parsed from protocol lines as such texts (``CollectionWriter.add``: no object is kept per record) and hands the batch
over (``take_changes``); a caller that already holds such texts (the runner) can hand them over as they are. A batch
this path does not take is read back into objects (``records``) for the per-record path.

**What runs in the store** (DuckDB: vectorized, on both cores; each step one statement over the staged batch): the
records' key lists, grouped (a stream has a handful of distinct ones); ``_id`` (``id_field``, the record's ``_id``,
the primary key as a canonical JSON array, else a generated UUIDv7) and the fold of repeated ids (the last change of
an id wins: see below); the JSON types of the written records' fields (``json_type`` with a list of JSON pointers),
for new and widened typed columns decided by ``CollectionWriter.plan_columns`` as on the per-record path; the stored
rows of the batch's ids (a hash join, as the per-record path's lookup); then the delete and an ``INSERT … SELECT``
per slice of the batch (``_slices``: bounded in records and characters, see ``INSERT_ROWS``) that reads every value
a row needs in one parse (``json_transform``), writes ``_doc`` (``json_merge_patch`` removing
the ``_kinesis_*`` fields and ``_id``), ``_meta`` (``{"kinesis": …}`` in the record's key order), ``_event_time``
(``_kinesis_arrival_time``) and ``_doc_shape`` (computed in Python once per distinct key list).

**Which batches.** The ones whose result is the last change of each ``_id`` without reading any stored document,
which is what event streams send: no ingest transformation, no ``event_time_field``; every record an object whose
only underscored metadata are ``_kinesis_*`` fields (not ``_kinesis_shadowed`` / ``_raw_data`` / ``_error``), ``_id``
and ``_op``, with no ``_event_time`` or ``_meta``; either no record with an ``_op`` (upserts) or every ``_op`` a
REPSERT or DELETE (they read no stored document: each id's last change decides, counted as operations.fold counts);
ids that are strings or integers (primary-key strings without characters JSON escapes); arrival times in
``YYYY-MM-DDTHH:MM:SS[.ffffff](Z|±HH:MM)`` form; values that fit their typed columns as they are (after widening);
for upserts, every change of an ``_id`` in the batch, and its stored document, with the same field names in the
same order (``_doc_shape``: then the merge of a change onto it is the change) and one stored row per ``_id``; stored
rows of the live generation; no older-change guard when an ``_id`` repeats, is stored, or has an ``_op``. Any other
batch goes through the per-record path (documents.py, operations.fold), the reference this path is tested against
(``unit_tests/destination/test_set_batch.py``): every check runs before the batch writes anything.
"""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa

from . import jsonio
from .column_types import BIGINT, BOOLEAN, DOUBLE, INT64_MAX, JSON, VARCHAR
from .documents import KINESIS_FIELDS, KINESIS_PREFIX
from .naming import quote_ident
from .operations import ChangeCounts, document_shape
from .stores.base import SHAPE_COLUMN

if TYPE_CHECKING:
    from .collection_writer import CollectionWriter

# Groups of distinct key lists a batch may have; more (records of ever different shapes) take the per-record path,
# as do records with more distinct top-level names than MAX_NAMES.
MAX_GROUPS = 32
MAX_NAMES = 512
# Records up to this size (their JSON text) only: DuckDB's JSON functions hold a parsed copy of each record per
# function and thread, and a batch of big records took more than the default memory_limit (a 10 MiB record: 244 MiB)
# where the per-record path writes it in bounded memory.
MAX_RECORD_BYTES = 256 * 1024
_UNSUPPORTED_UNDERSCORED = ("_event_time", "_meta", "_kinesis_shadowed", "_kinesis_raw_data", "_kinesis_error")
# the _ops a batch of changes that read no stored document may carry (documents.py: trimmed of ASCII blanks, ASCII
# letters in any case; written out letter by letter: a regular expression's case folding would also match 'ſ' or 'K')
SET_BATCH_OPS = ("REPSERT", "DELETE")
_BLANKS = r"[ \t\n\r\f\v]*"
_REPSERT_RE = _BLANKS + "[Rr][Ee][Pp][Ss][Ee][Rr][Tt]" + _BLANKS
_DELETE_RE = _BLANKS + "[Dd][Ee][Ll][Ee][Tt][Ee]" + _BLANKS
# Arrival times both parsers read the same way (Python's datetime.fromisoformat and DuckDB's TIMESTAMPTZ cast): an
# explicit offset, hours 00-23, seconds 00-59, 1-6 fractional digits, years 1000-9999. A date that does not exist
# (Feb 30) fails both: the ingestion time, as on the per-record path.
_ARRIVAL_RE = (
    r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
)
# primary-key strings that orjson writes as '"' + text + '"' (nothing to escape)
_PLAIN_STRING_RE = r'[^"\\\x{00}-\x{1f}]*'
_ID_TYPES = frozenset({"VARCHAR", "BIGINT", "UBIGINT", "NULL"})
# JSON value types (json_type) → the logical type the per-record path observes (column_types.value_type)
_KIND = {"VARCHAR": VARCHAR, "BOOLEAN": BOOLEAN, "DOUBLE": DOUBLE, "BIGINT": BIGINT, "UBIGINT": BIGINT,
         "OBJECT": JSON, "ARRAY": JSON}
# the JSON value types each column type takes without a conversion the per-record path would note (a misfit)
_FITS = {
    VARCHAR: frozenset({"VARCHAR", "NULL"}),
    BOOLEAN: frozenset({"BOOLEAN", "NULL"}),
    BIGINT: frozenset({"BIGINT", "UBIGINT", "NULL"}),
    DOUBLE: frozenset({"DOUBLE", "BIGINT", "UBIGINT", "NULL"}),
    JSON: frozenset({"VARCHAR", "BOOLEAN", "DOUBLE", "BIGINT", "UBIGINT", "OBJECT", "ARRAY", "NULL"}),
}
_names = iter(range(1, 1 << 62))
_SCAN_CHUNK = 8192  # rows per Arrow record batch staged (DuckDB scans them in parallel)
# The INSERT runs over slices of the batch of at most this many records and characters of JSON text: DuckDB holds a
# statement's rows in memory outside what it can evict (measured: ~130 MB for one INSERT of a 16 MiB, 23k-record batch,
# 8× its text), and with a 10 M-document collection's _id column cached beside it, one INSERT of such a batch ran out
# of the default memory_limit (256MB); slices of 8192 records kept it at ~40-77 MB.
INSERT_ROWS = 8192
INSERT_CHARS = 4 * 1024 * 1024


@dataclass
class JsonBatch:
    """A batch for the set-based path (see the module docstring)."""

    texts: list[str]
    emitted_at: list[int | None]
    raw_emitted_at: list[Any] = field(default_factory=list)  # as received, for the per-record path

    def __len__(self) -> int:
        return len(self.texts)

    def records(self) -> list[tuple[Any, Any]]:
        """(data, emitted_at) per record, for the per-record path."""
        return json_batch_records(zip(self.texts, self.raw_emitted_at))


def json_batch_records(pairs) -> list[tuple[Any, Any]]:
    """(JSON text, emitted_at) pairs back to (data object, emitted_at) (orjson reads back what it wrote)."""
    loads = orjson.loads
    return [(loads(text), emitted_at) for text, emitted_at in pairs]


def literal(text: str) -> str:
    """A SQL string literal (standard SQL: quotes doubled; DuckDB reads backslashes as themselves)."""
    return "'" + text.replace("'", "''") + "'"


def pointer(path: list[str]) -> str:
    """An RFC 6901 JSON pointer."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in path)


@dataclass
class _Group:
    """One distinct key list of the batch."""

    index: int
    keys: list[str]
    fields: list[str]
    kinesis: list[tuple[str, str]]  # (record key, _meta.kinesis name) in record order
    shape: str | None


class SetBatch:
    """One batch through the set-based path, inside the caller's transaction. ``apply`` returns False, having
    written nothing, when the batch needs the per-record path."""

    def __init__(self, writer: "CollectionWriter", batch: JsonBatch, ingested_at: dt.datetime) -> None:
        self.writer = writer
        self.store = writer.store
        self.batch = batch
        self.ingested_at = ingested_at
        suffix = next(_names)
        self.ids = f"__kc_lane_ids_{suffix}"
        self.rm = f"__kc_lane_rm_{suffix}"
        self.reason = ""  # why the batch took the per-record path (for tests and debug logs)
        # the stored rows of the batch's ids when the batch takes the per-record path after looking them up
        self.found_rows: list[tuple] | None = None
        self.lookup_seconds = 0.0  # what looking up the stored rows took

    # -- the whole batch ------------------------------------------------------------------------------------------
    def apply(self) -> bool:
        store = self.store
        batch = self.batch
        n = len(batch)
        staged_table = pa.table({
            "seq": pa.array(range(n), pa.int64()),
            "d": pa.array(batch.texts, pa.string()),
            "e": pa.array(batch.emitted_at, pa.int64()),
        })
        # several record batches: DuckDB scans an Arrow table one record batch per thread
        staged_table = pa.Table.from_batches(staged_table.to_batches(max_chunksize=_SCAN_CHUNK))
        created: list[str] = []
        failed = True
        try:
            with store.staged(staged_table) as staged:
                self.staged = staged
                groups = self._groups()
                if groups is None:
                    return False
                self._paths(groups)
                self.groups = groups
                folded = self._fold(created)
                if folded is None:
                    return False
                plan = self._check_values()
                if plan is None:
                    return False
                counts = self._find_stored(folded, created)
                if counts is None:
                    return False
                # what grows with the collection (protocol_loop.HOLD_FACTOR): the join that found the stored rows,
                # and the delete
                lookup_seconds = self.lookup_seconds
                # every check passed: from here on the batch is written (DDL first, as on the per-record path)
                self.writer.apply_columns(plan)
                if self.rm_rows:
                    started = time.perf_counter()
                    gone = store.fetchall(
                        f"DELETE FROM {store.q(self.writer.table)} AS t USING {self.rm} AS r WHERE t.rowid = r.r"
                    )[0][0]
                    lookup_seconds += time.perf_counter() - started
                    if gone != self.rm_rows:
                        raise RuntimeError(
                            f"Collection {self.writer.table}: deleting {self.rm_rows} looked-up row(s) by rowid "
                            f"removed {gone} row(s); the batch was rolled back."
                        )
                for start, stop in _slices([len(text) for text in batch.texts]):
                    store.execute(self._insert_sql(start, stop))
            self.writer.lookup_seconds = lookup_seconds
            self.writer.stats.counts.add(counts)
            failed = False
            return True
        finally:
            if not failed or self.reason:  # (after an error the transaction rolls back, temporary tables with it)
                for name in reversed(created):
                    store.execute(f"DROP TABLE IF EXISTS {name}")

    def _fallback(self, reason: str) -> None:
        self.reason = reason
        return None

    # -- 1. key lists -----------------------------------------------------------------------------------------------
    def _groups(self) -> list[_Group] | None:
        rows = self.store.fetchall(
            # (grouped by the lists themselves: grouping by their hash is ~0.5 µs per record cheaper, but a collision,
            # which a producer could craft, would give records another list's _meta and _doc_shape)
            f"SELECT json_keys(d) AS keys, min(seq) AS first, bool_or(left(d, 1) <> '{{') FROM {self.staged} "
            f"GROUP BY keys ORDER BY first"
        )
        if any(not_object for _, _, not_object in rows):
            return self._fallback("a record that is not a JSON object")
        if len(rows) > MAX_GROUPS:
            return self._fallback(f"more than {MAX_GROUPS} distinct key lists")
        groups = []
        for index, (keys, _, _) in enumerate(rows):
            if len(keys) > MAX_NAMES:
                return self._fallback(f"a record with more than {MAX_NAMES} keys")
            fields, kinesis = [], []
            for key in keys:
                if "\x00" in key or key in _UNSUPPORTED_UNDERSCORED:
                    return self._fallback(f"a record with the key {key!r}")
                if key.startswith(KINESIS_PREFIX):
                    kinesis.append((key, KINESIS_FIELDS.get(key, key[len(KINESIS_PREFIX):])))
                elif key not in ("_id", "_op"):
                    fields.append(key)
            meta = {"kinesis": None} if kinesis else {}
            groups.append(_Group(index, list(keys), fields, kinesis, document_shape(dict.fromkeys(fields), meta)))
        self.has_id_key = any("_id" in g.keys for g in groups)
        with_op = [("_op" in g.keys) for g in groups]
        if any(with_op) and not all(with_op):
            return self._fallback("records with and without an _op in one batch")
        # every record carries an _op: a batch of REPSERTs and DELETEs (checked per record in _fold), which read no
        # stored document; else no record does: upserts of whole documents
        self.ops = all(with_op)
        return groups

    def _group_sql(self, alias: str) -> str:
        """A record's group (distinct key list) index."""
        if len(self.groups) == 1:
            return "0"
        return f"CASE json_keys({alias}.d) " + " ".join(
            f"WHEN [{', '.join(literal(k) for k in g.keys)}]::VARCHAR[] THEN {g.index}" for g in self.groups
        ) + " END"

    # -- 2. what is read per record ---------------------------------------------------------------------------------
    def _paths(self, groups: list[_Group]) -> None:
        """The fields (``field_pos``: field → 1-based position in the list of their JSON types), the ``_kinesis_*``
        keys, and the id values (``id_field_pos``, ``id_key_pos``, ``pk_pos``: positions in the list of id values)."""
        self.field_pos: dict[str, int] = {}
        for group in groups:
            for key in group.fields:
                self.field_pos.setdefault(key, len(self.field_pos) + 1)
        self.kinesis_keys = list(dict.fromkeys(key for group in groups for key, _ in group.kinesis))
        positions: dict[str, int] = {}

        def position(path: list[str]) -> int:
            return positions.setdefault(pointer(path), len(positions) + 1)

        writer = self.writer
        id_field = writer.settings.id_field
        self.id_field_pos = position([id_field]) if id_field else None
        self.id_key_pos = position(["_id"]) if self.has_id_key else None
        builder = writer.builder
        self.pk_pos = [position(path) for path in builder.primary_key] if builder.use_primary_key else []
        self.generated = not positions
        self.op_pos = position(["_op"]) if self.ops else None
        self.id_pointers = list(positions)

    def _id_sql(self) -> str:
        """SQL for a record's ``_id`` from ``tv``/``sv`` (the JSON types and texts of its id values), a generated
        UUIDv7 where it has none."""
        layers = []
        if self.id_field_pos is not None:
            layers.append(_id_text(self.id_field_pos))
        if self.id_key_pos is not None:
            layers.append(_id_text(self.id_key_pos))
        if self.pk_pos:
            parts = " || ',' || ".join(_pk_text(p) for p in self.pk_pos)
            layers.append(f"'[' || {parts} || ']'")
        return f"coalesce({', '.join(layers)}, uuidv7()::VARCHAR)"

    def _id_problem_sql(self) -> str:
        """True for a record whose id values are not of the id types (or a primary-key string JSON escapes)."""
        checks = [
            f"coalesce(tv[{p}], 'NULL') NOT IN ({', '.join(literal(t) for t in sorted(_ID_TYPES))})"
            for p in (self.id_field_pos, self.id_key_pos, *self.pk_pos) if p is not None
        ]
        checks += [
            f"(tv[{p}] = 'VARCHAR' AND NOT regexp_full_match(sv[{p}], {literal(_PLAIN_STRING_RE)}))"
            for p in self.pk_pos
        ]
        return " OR ".join(checks)

    # -- 3. fold repeated ids -----------------------------------------------------------------------------------------
    def _fold(self, created: list[str]) -> tuple[int, int] | None:
        """Group the changes by id (see the module docstring): (distinct ids, ids changed more than once), or None for
        the per-record path. Upserts: the last change of each id is written (its changes have the same field names).
        REPSERTs and DELETEs: per id, the last change's _op, and what the fold's accounting needs (operations.fold):
        a REPSERT always applies; a DELETE applies after a REPSERT, or as the id's first change when it is stored."""
        n = len(self.batch)
        self.repeated = 0
        if self.generated and not self.ops:
            return n, 0
        store = self.store
        id_sql = "uuidv7()::VARCHAR" if self.generated else self._id_sql()
        problem = self._id_problem_sql() if not self.generated else "false"
        extra = ""
        op_sql = "NULL"
        if self.ops:
            o = self.op_pos
            op_sql = (
                f"CASE WHEN tv[{o}] = 'VARCHAR' AND regexp_full_match(sv[{o}], {literal(_REPSERT_RE)}) THEN 'R' "
                f"WHEN tv[{o}] = 'VARCHAR' AND regexp_full_match(sv[{o}], {literal(_DELETE_RE)}) THEN 'D' END"
            )
            problem = f"({problem}) OR op IS NULL"
            extra = (
                ", arg_max(op, seq) AS last_op, count(*) FILTER (op = 'R') AS repserts, "
                "count(*) FILTER (op = 'D' AND previous = 'R') AS deletes_after, "
                "bool_or(op = 'D' AND previous IS NULL) AS delete_first"
            )
        store.execute(
            f"CREATE TEMP TABLE {self.ids} AS SELECT id, count(*) AS n, min(seq) AS first, max(seq) AS last, "
            f"min(g) AS g, max(g) AS g_max, bool_or({problem}) AS bad{extra} FROM (SELECT seq, g, id, op, "
            f"lag(op) OVER (PARTITION BY id ORDER BY seq) AS previous, tv, sv FROM (SELECT seq, g, {id_sql} AS id, "
            f"{op_sql} AS op, tv, sv FROM (SELECT s.seq, {self._group_sql('s')} AS g, "
            f"json_type(s.d, {_pointer_list(None, self.id_pointers)}) AS tv, "
            f"json_extract_string(s.d, {_pointer_list(None, self.id_pointers)}) AS sv FROM {self.staged} s))) "
            f"GROUP BY id"
        )
        created.append(self.ids)
        distinct, repeated, mixed, bad = store.fetchall(
            f"SELECT count(*), count(*) FILTER (n > 1), count(*) FILTER (g <> g_max), count(*) FILTER (bad) "
            f"FROM {self.ids}"
        )[0]
        if bad:
            return self._fallback("an id value that is not a string or an integer, or an _op other than REPSERT or "
                                  "DELETE")
        if mixed and not self.ops:
            return self._fallback("changes of one _id with different field names")
        if self.writer.settings.ignore_older_changes and (repeated or self.ops):
            return self._fallback("the older-change guard with repeated ids or _ops")
        self.repeated = repeated
        return distinct, repeated

    def _written(self) -> str:
        """FROM clause of the records the batch writes (alias ``s``): the last change of each id."""
        if self.ops:  # the ids whose last change is a REPSERT
            return f"FROM {self.staged} s JOIN {self.ids} i ON s.seq = i.last AND i.last_op = 'R'"
        if self.generated or not self.repeated:
            return f"FROM {self.staged} s"
        return f"FROM {self.staged} s JOIN {self.ids} i ON s.seq = i.last"

    # -- 4. value types: typed columns, arrival times -----------------------------------------------------------------
    def _check_values(self):
        """The types of the values the batch writes, for the typed columns (``CollectionWriter.plan_columns``)."""
        writer = self.writer
        fields = list(self.field_pos)
        selects = ["list(DISTINCT t)"]  # the distinct lists of the fields' types: a handful per batch
        arrival = "_kinesis_arrival_time" in self.kinesis_keys
        inner = [f"json_type(s.d, {_pointer_list([[key] for key in fields])}) AS t"]
        if arrival:
            inner.append(f"json_extract(s.d, {literal(pointer(['_kinesis_arrival_time']))}) AS a")
            selects.append(
                f"bool_and(a IS NULL OR json_type(a) = 'NULL' OR (json_type(a) = 'VARCHAR' AND "
                f"regexp_full_match(a->>'$', {literal(_ARRIVAL_RE)})))"
            )
        row = self.store.fetchall(f"SELECT {', '.join(selects)} FROM (SELECT {', '.join(inner)} {self._written()})")[0]
        types: dict[str, set[str]] = {key: set() for key in fields}
        for type_list in row[0] or ():
            for key, kind in zip(fields, type_list):
                if kind is not None:
                    types[key].add(kind)
        if arrival and row[1] is False:
            return self._fallback("an arrival time not in the form both parsers read alike")
        unsigned = [key for key, kinds in types.items() if "UBIGINT" in kinds]
        if unsigned:
            # integers past 2**63 - 1 are DECIMAL or JSON on the per-record path (column_types.value_type)
            spec = jsonio.dumps(dict.fromkeys(unsigned, "HUGEINT"))
            biggest = self.store.fetchall(
                f"SELECT {', '.join(f'max(struct_extract_at(r, {i}))' for i in range(1, len(unsigned) + 1))} "
                f"FROM (SELECT TRY(json_transform(s.d, {literal(spec)})) AS r {self._written()})"
            )[0]
            for key, value in zip(unsigned, biggest):
                if value is None or value > INT64_MAX:
                    return self._fallback(f"an integer beyond 64 bits in field {key!r}")
        observed = {key: {_KIND[k] for k in kinds if k != "NULL"} for key, kinds in types.items()}
        plan = writer.plan_columns({key: kinds for key, kinds in observed.items() if kinds})
        for key, kinds in types.items():
            column_type = writer.column_type(key, plan)
            if column_type is not None and not kinds <= _FITS.get(column_type, frozenset()):
                return self._fallback(f"field {key!r}: values that do not fit its {column_type} column as they are")
        return plan

    # -- 5. the stored rows -------------------------------------------------------------------------------------------
    def _find_stored(self, folded: tuple[int, int], created: list[str]) -> ChangeCounts | None:
        """The stored rows of the batch's ids (their rowids kept for the delete) and what the batch does to them."""
        n = len(self.batch)
        distinct, _ = folded
        self.rm_rows = 0  # stored rows the batch deletes or rewrites
        if self.generated:
            return self._op_counts(None) if self.ops else ChangeCounts(inserted=n)
        store = self.store
        table = store.q(self.writer.table)
        shapes = "CASE i.g " + " ".join(
            f"WHEN {g.index} THEN {literal(g.shape) if g.shape else 'NULL'}" for g in self.groups
        ) + " END"
        started = time.perf_counter()
        store.execute(
            f"CREATE TEMP TABLE {self.rm} AS SELECT t.rowid AS r, t._id AS id, t._event_time AS event_time, "
            f"t._airbyte_generation_id AS generation, "
            f"CAST({store.shape_sql(self.writer.table, 't.')} AS VARCHAR) AS shape, CAST({shapes} AS VARCHAR) AS expected "
            f"FROM {table} t JOIN {self.ids} i ON t._id = i.id"
        )
        created.append(self.rm)
        self.lookup_seconds = time.perf_counter() - started
        minimum = self.writer.plan.min_alive_generation
        old = f"generation IS NULL OR generation < {int(minimum)}" if minimum is not None else "false"
        stored, stored_ids, old_rows, other_shape = store.fetchall(
            f"SELECT count(*), count(DISTINCT id), count(*) FILTER ({old}), "
            f"count(*) FILTER (shape IS NULL OR expected IS NULL OR shape <> expected) FROM {self.rm}"
        )[0]
        if old_rows:
            reason = "stored documents of an older generation"
        elif self.ops:  # REPSERTs and DELETEs read no document: any shape, any number of rows per id
            reason = None
        elif stored != stored_ids:
            reason = "an _id stored in more than one row"
        elif other_shape:
            reason = "stored documents with other field names (a merge reads them)"
        elif self.writer.settings.ignore_older_changes and stored:
            reason = "the older-change guard with stored documents"
        else:
            reason = None
        if reason:  # the per-record path takes the stored rows found here along (no second join)
            self.found_rows = store.fetchall(f"SELECT id, event_time, generation, shape, r FROM {self.rm}")
            return self._fallback(reason)
        self.rm_rows = stored
        if self.ops:
            return self._op_counts(self.rm)
        return ChangeCounts(inserted=distinct - stored, updated=stored, merged=n - distinct)

    def _op_counts(self, stored_rows: str | None) -> ChangeCounts:
        """operations.fold's accounting for REPSERTs and DELETEs, per id: ``applied`` changes (every REPSERT, a
        DELETE after a REPSERT, a first DELETE of a stored id), the rest skipped; all but the last applied one merged;
        the last change's _op says deleted, or inserted / replaced as the id was stored or not."""
        stored = f"LEFT JOIN (SELECT DISTINCT id FROM {stored_rows}) r ON i.id = r.id" if stored_rows else ""
        is_stored = "r.id IS NOT NULL" if stored_rows else "false"
        applied = f"repserts + deletes_after + CASE WHEN delete_first AND {is_stored} THEN 1 ELSE 0 END"
        row = self.store.fetchall(
            f"SELECT coalesce(sum(n - a), 0), coalesce(sum(greatest(a - 1, 0)), 0), "
            f"count(*) FILTER (last_op = 'D' AND a > 0), count(*) FILTER (last_op = 'R' AND NOT stored), "
            f"count(*) FILTER (last_op = 'R' AND stored) "
            f"FROM (SELECT i.n, i.last_op, {applied} AS a, {is_stored} AS stored FROM {self.ids} i {stored})"
        )[0]
        skipped, merged, deleted, inserted, replaced = (int(v) for v in row)
        return ChangeCounts(inserted=inserted, replaced=replaced, deleted=deleted, merged=merged, skipped=skipped)

    # -- 6. the rows --------------------------------------------------------------------------------------------------
    def _insert_sql(self, start: int, stop: int) -> str:
        """The INSERT of the written records among the batch's ``start`` ≤ seq < ``stop``."""
        writer = self.writer
        store = self.store
        ingested = f"TIMESTAMPTZ {literal(self.ingested_at.isoformat())}"
        # one parse per row for every value the row needs but _doc (json_transform: case-sensitive keys, JSON null
        # → NULL; the typed values were checked to fit; metadata as JSON), read by position: struct field names
        # compare case-insensitively
        spec: dict[str, str] = {}
        for key in self.kinesis_keys:
            spec[key] = "JSON"
        typed = [(key, column) for key, column in writer.columns.items() if key in self.field_pos]
        for key, column in typed:
            spec[key] = store.sql_type(column.type)
        position = {key: index for index, key in enumerate(spec, start=1)}

        def value(key: str) -> str:
            return f"struct_extract_at(l.r, {position[key]})"

        arrival = "_kinesis_arrival_time" if "_kinesis_arrival_time" in self.kinesis_keys else None
        event_time = f"coalesce(TRY_CAST({value(arrival)}->>'$' AS TIMESTAMPTZ), {ingested})" if arrival else ingested
        metas = []
        for g in self.groups:
            if g.kinesis:
                inner = ", ".join(f"{literal(name)}, {value(key)}" for key, name in g.kinesis)
                metas.append((g.index, f"json_object('kinesis', json_object({inner}))"))
            else:
                metas.append((g.index, "'{}'::JSON"))
        empty_meta = jsonio.dumps({"sync_id": writer.sync_id, "changes": []})
        generation = writer.plan.write_generation
        values = {
            "_id": "uuidv7()::VARCHAR" if self.generated and not self.ops else "l.id",
            "_event_time": event_time,
            "_meta": _by_group(metas),
            # (json_merge_patch: ~3 µs per record, but its result is JSON already; a cut of the text, ~1 µs, would be
            # parsed again to validate it as JSON on insert, ~1.5 µs: measured, no gain)
            "_doc": f"json_merge_patch(l.d, {literal(jsonio.dumps(dict.fromkeys([*self.kinesis_keys, '_id', '_op'])))})",
            "_airbyte_raw_id": "uuidv7()::VARCHAR",
            # (emitted_at: None unless an integer within documents.extracted_time's range)
            "_airbyte_extracted_at": f"coalesce(make_timestamptz(l.e * 1000), {ingested})",
            "_airbyte_meta": f"{literal(empty_meta)}::JSON",
            "_airbyte_generation_id": str(int(generation)) if generation is not None else "NULL",
        }
        if SHAPE_COLUMN in (name for name, _ in writer.system_columns):
            values[SHAPE_COLUMN] = _by_group([(g.index, literal(g.shape) if g.shape else "NULL") for g in self.groups])
        for key, column in typed:
            values[column.name] = value(key)
        inner = ["s.d", "s.e", f"{self._group_sql('s')} AS g"]
        inner.append(f"json_transform(s.d, {literal(jsonio.dumps(spec))}) AS r" if spec else "NULL AS r")
        if self.generated and not self.ops:
            source = f"FROM {self.staged} s"
        elif self.ops:
            inner.append("i.id")
            source = self._written()
        else:
            inner.append("i.id")
            source = f"FROM {self.staged} s JOIN {self.ids} i ON s.seq = i.last"
        columns = ", ".join(quote_ident(name) for name in values)
        # (rows in no particular order: the physical order of a collection is not part of its contract)
        return (
            f"INSERT INTO {store.q(writer.table)} ({columns}) SELECT {', '.join(values.values())} "
            f"FROM (SELECT {', '.join(inner)} {source} WHERE s.seq >= {int(start)} AND s.seq < {int(stop)}) l"
        )


def _slices(lengths: list[int]) -> list[tuple[int, int]]:
    """Consecutive (start, stop) ranges of the batch's records, each of at most ``INSERT_ROWS`` records and, unless it
    is a single record, ``INSERT_CHARS`` characters of their texts."""
    slices = []
    start = size = 0
    for index, length in enumerate(lengths):
        if index > start and (index - start >= INSERT_ROWS or size + length > INSERT_CHARS):
            slices.append((start, index))
            start, size = index, 0
        size += length
    if start < len(lengths):
        slices.append((start, len(lengths)))
    return slices


def _pointer_list(paths: list[list[str]] | None, pointers: list[str] | None = None) -> str:
    pointers = pointers if pointers is not None else [pointer(path) for path in paths or []]
    return "[" + ", ".join(literal(p) for p in pointers) + "]::VARCHAR[]"


def _by_group(pairs: list[tuple[int, str]]) -> str:
    if len(pairs) == 1:
        return pairs[0][1]
    return "CASE l.g " + " ".join(f"WHEN {index} THEN {sql}" for index, sql in pairs) + " END"


def _id_text(p: int) -> str:
    """``documents.id_text`` of id value ``p`` when of the id types (a string as itself, an integer as its digits)."""
    return f"CASE WHEN tv[{p}] IN ('VARCHAR', 'BIGINT', 'UBIGINT') THEN sv[{p}] END"


def _pk_text(p: int) -> str:
    """Primary-key value ``p`` as ``jsonio.dumps`` writes it inside the key's JSON array (missing: null)."""
    return (
        f"CASE tv[{p}] WHEN 'VARCHAR' THEN '\"' || sv[{p}] || '\"' WHEN 'BIGINT' THEN sv[{p}] WHEN 'UBIGINT' THEN "
        f"sv[{p}] ELSE 'null' END"
    )
