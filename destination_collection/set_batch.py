"""The set-based batch path: a batch goes into the store as JSON text, and the store does the rest as set operations.

**Input (the batch interface).** ``JsonBatch``: per record, its ``data`` object as JSON text (``str``) exactly as
``orjson.dumps`` writes it, decoded (canonical: no duplicate keys, no NaN, integers within 64 bits), its ``emitted_at``
normalised (an int of ms in range, else None: the ingestion time) and as received. The write loop buffers records it
parsed from protocol lines as such texts (``CollectionWriter.add``: no object is kept per record) and hands the batch
over (``take_changes``); a caller that already holds such texts (the runner) can hand them over as they are. A batch
this path does not take is read back into objects (``records``) for the per-record path.

**What runs in the store**, one statement per step over the staged batch (the SQL of each store is in its own module:
``set_batch_duckdb.py``, vectorized on both cores; ``set_batch_postgres.py``, the texts sent with one ``COPY``): the
records' key lists, grouped (a stream has a handful of distinct ones); ``_id`` (``id_field``, the record's ``_id``,
the primary key as a canonical JSON array, else a generated UUIDv7) and the fold of repeated ids (the last change of
an id wins: see below); the JSON types of the written records' fields, for new and widened typed columns decided by
``CollectionWriter.plan_columns`` as on the per-record path; the stored rows of the batch's ids (driven from the
batch's side); then the delete of the stored rows the batch rewrites or deletes and an ``INSERT … SELECT`` per slice
of the batch (``_slices``: bounded in records and characters, see ``INSERT_ROWS``) that writes ``_doc`` (the record
without the ``_kinesis_*`` fields, ``_id`` and ``_op``), ``_meta`` (``{"kinesis": …}``), ``_event_time``
(``_kinesis_arrival_time``), the typed columns and ``_doc_shape`` (computed in Python once per distinct key list).
This module holds the flow and every decision (which batches, what is counted); the store modules only the SQL.

**Which batches.** The ones whose result is the last change of each ``_id`` without reading any stored document,
which is what event streams send: no ingest transformation, no ``event_time_field``; every record an object whose
only underscored metadata are ``_kinesis_*`` fields (not ``_kinesis_shadowed`` / ``_raw_data`` / ``_error``), ``_id``
and ``_op``, with no ``_event_time`` or ``_meta``; either no record with an ``_op`` (upserts) or every ``_op`` a
REPSERT or DELETE (they read no stored document: each id's last change decides, counted as operations.fold counts);
ids that are strings or integers (DuckDB: primary-key strings without characters JSON escapes); arrival times in
``YYYY-MM-DDTHH:MM:SS[.ffffff](Z|±HH:MM)`` form (PostgreSQL: of a date that exists); values that fit their typed
columns as they are (after widening); for upserts, every change of an ``_id`` in the batch, and its stored
document, with the same field names in the same order (``_doc_shape``: then the merge of a change onto it is the
change) and one stored row per ``_id``; stored rows of the live generation; no older-change guard when an ``_id``
repeats, is stored, or has an ``_op``; PostgreSQL: no NUL character (jsonb cannot hold it: the per-record path
encodes it), field names that are identifiers (not empty, at most 63 bytes) and arrival times of dates that exist.
Any other batch goes through the per-record path (documents.py, operations.fold), the reference this path is tested
against (``unit_tests/destination/test_set_batch.py``, ``integration_tests/destination/test_set_batch_postgres.py``):
every check runs before the batch writes anything.
"""
from __future__ import annotations

import abc
import contextlib
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import orjson

from .column_types import BIGINT, BOOLEAN, DOUBLE, JSON, VARCHAR
from .documents import KINESIS_FIELDS, KINESIS_PREFIX
from .operations import ChangeCounts, document_shape
from .stores.base import SHAPE_COLUMN

if TYPE_CHECKING:
    from .collection_writer import CollectionWriter
    from .stores.base import Store

# Groups of distinct key lists a batch may have; more (records of ever different shapes) take the per-record path,
# as do records with more distinct top-level names than MAX_NAMES.
MAX_GROUPS = 32
MAX_NAMES = 512
# Records up to this size (their JSON text) only: DuckDB's JSON functions hold a parsed copy of each record per
# function and thread, and a batch of big records took more than the default memory_limit (a 10 MiB record: 244 MiB)
# where the per-record path writes it in bounded memory.
MAX_RECORD_BYTES = 256 * 1024
UNSUPPORTED_UNDERSCORED = ("_event_time", "_meta", "_kinesis_shadowed", "_kinesis_raw_data", "_kinesis_error")
# the _ops a batch of changes that read no stored document may carry (documents.py: trimmed of ASCII blanks, ASCII
# letters in any case; written out letter by letter: a regular expression's case folding would also match 'ſ' or 'K')
SET_BATCH_OPS = ("REPSERT", "DELETE")
_BLANKS = r"[ \t\n\r\f\v]*"
REPSERT_RE = _BLANKS + "[Rr][Ee][Pp][Ss][Ee][Rr][Tt]" + _BLANKS
DELETE_RE = _BLANKS + "[Dd][Ee][Ll][Ee][Tt][Ee]" + _BLANKS
# Arrival times both parsers read the same way (Python's datetime.fromisoformat and the store's TIMESTAMPTZ cast): an
# explicit offset, hours 00-23, seconds 00-59, 1-6 fractional digits, years 1000-9999. A date that does not exist
# (Feb 30) fails both: the ingestion time, as on the per-record path.
ARRIVAL_RE = (
    r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
)
# JSON value types (as DuckDB's json_type names them; the PostgreSQL SQL classifies values into the same names) →
# the logical type the per-record path observes (column_types.value_type). UBIGINT: an integer past 2**63 - 1.
ID_TYPES = frozenset({"VARCHAR", "BIGINT", "UBIGINT", "NULL"})
KIND = {"VARCHAR": VARCHAR, "BOOLEAN": BOOLEAN, "DOUBLE": DOUBLE, "BIGINT": BIGINT, "UBIGINT": BIGINT,
        "OBJECT": JSON, "ARRAY": JSON}
# the JSON value types each column type takes without a conversion the per-record path would note (a misfit)
FITS = {
    VARCHAR: frozenset({"VARCHAR", "NULL"}),
    BOOLEAN: frozenset({"BOOLEAN", "NULL"}),
    BIGINT: frozenset({"BIGINT", "UBIGINT", "NULL"}),
    DOUBLE: frozenset({"DOUBLE", "BIGINT", "UBIGINT", "NULL"}),
    JSON: frozenset({"VARCHAR", "BOOLEAN", "DOUBLE", "BIGINT", "UBIGINT", "OBJECT", "ARRAY", "NULL"}),
}
_names = iter(range(1, 1 << 62))
# The INSERT runs over slices of the batch of at most this many records and characters of JSON text: DuckDB holds a
# statement's rows in memory outside what it can evict (measured: ~130 MB for one INSERT of a 16 MiB, 23k-record batch,
# 8× its text), and with a 10 M-document collection's _id column cached beside it, one INSERT of such a batch ran out
# of the default memory_limit (256MB); slices of 8192 records kept it at ~40-77 MB. (PostgreSQL streams an INSERT's
# rows; it runs the same slices.)
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
    """A SQL string literal (standard SQL: quotes doubled; DuckDB, and PostgreSQL with standard_conforming_strings on,
    its default since 9.1, read backslashes as themselves)."""
    return "'" + text.replace("'", "''") + "'"


def pointer(path: list[str]) -> str:
    """An RFC 6901 JSON pointer."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in path)


@dataclass
class Group:
    """One distinct key list of the batch."""

    index: int
    keys: list[str]
    fields: list[str]
    kinesis: list[tuple[str, str]]  # (record key, _meta.kinesis name) in record order
    shape: str | None


@dataclass
class StoredRows:
    """What step 5 found of the batch's ids in the collection."""

    rows: int  # stored rows of the batch's ids
    ids: int  # distinct ids among them
    old_generation: int  # rows of a generation older than the live one
    other_shape: int  # rows whose _doc_shape is not the one the batch's changes of that id have


class SetBatch(abc.ABC):
    """One batch through the set-based path, inside the caller's transaction. ``apply`` returns False, having
    written nothing, when the batch needs the per-record path. Subclasses supply each step's SQL."""

    def __init__(self, writer: "CollectionWriter", batch: JsonBatch, ingested_at: dt.datetime) -> None:
        self.writer = writer
        self.store: "Store" = writer.store
        self.batch = batch
        self.ingested_at = ingested_at
        suffix = next(_names)
        self.ids = f"__kc_lane_ids_{suffix}"
        self.rm = f"__kc_lane_rm_{suffix}"
        self.suffix = suffix
        self.reason = ""  # why the batch took the per-record path (for tests and debug logs)
        # the stored rows of the batch's ids when the batch takes the per-record path after looking them up (stores
        # whose lookup can take them: DuckDBStore.lookup's found_rows)
        self.found_rows: list[tuple] | None = None
        self.lookup_seconds = 0.0  # what looking up the stored rows took
        self.rm_rows = 0  # stored rows the batch deletes or rewrites

    # -- the whole batch ------------------------------------------------------------------------------------------
    def apply(self) -> bool:
        store = self.store
        created: list[str] = []
        failed = True
        try:
            with self._stage(created):
                groups = self._groups()
                if groups is None:
                    return False
                self.groups = groups
                self._paths(groups)
                if not self._prepare(created):
                    return False
                folded = self._fold(created)
                if folded is None:
                    return False
                plan = self._check_values()
                if plan is None:
                    return False
                counts = self._find_stored(folded, created)
                if counts is None:
                    return False
                # what grows with the collection (protocol_loop.HOLD_FACTOR): the lookup of the stored rows, and the
                # delete
                lookup_seconds = self.lookup_seconds
                # every check passed: from here on the batch is written (DDL first, as on the per-record path)
                self.writer.apply_columns(plan)
                if self.rm_rows:
                    started = time.perf_counter()
                    gone = self._delete()
                    lookup_seconds += time.perf_counter() - started
                    if gone != self.rm_rows:
                        raise RuntimeError(
                            f"Collection {self.writer.table}: deleting {self.rm_rows} looked-up row(s) "
                            f"removed {gone} row(s); the batch was rolled back."
                        )
                for start, stop in _slices([len(text) for text in self.batch.texts]):
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

    # -- the steps' SQL (each store's module) --------------------------------------------------------------------------
    @abc.abstractmethod
    def _stage(self, created: list[str]) -> contextlib.AbstractContextManager[None]:
        """Put the batch's texts where the statements read them (``self.staged``: seq, d = text, e = emitted_at)."""

    @abc.abstractmethod
    def _key_lists(self) -> list[tuple[list[str] | None, bool]] | None:
        """The distinct key lists (record order) with whether a record of that list is not an object, in the order
        of their first record; None (after ``_fallback``) for a batch the store cannot take as it is."""

    def _prepare(self, created: list[str]) -> bool:
        """Anything the later steps read that the store computes once per record (False: after ``_fallback``)."""
        return True

    @abc.abstractmethod
    def _fold_ids(self, created: list[str]) -> None:
        """Create ``self.ids``: one row per id (id, n = its changes, first and last = their seqs, g and g_max = the
        least and greatest key-list index of its records, bad = a record with a bad id value or _op, and for _ops
        last_op, repserts, deletes_after, delete_first; see ``_fold``)."""

    @abc.abstractmethod
    def _value_types(self) -> tuple[dict[str, set[str]], bool]:
        """The JSON types (``KIND``'s names, "NULL" for null or missing) of each field among the written records, and
        whether every written record's arrival time is one the path reads."""

    @abc.abstractmethod
    def _beyond_64_bits(self, keys: list[str]) -> list[str]:
        """Which of ``keys`` (fields with UBIGINT values) hold an integer past 2**63 - 1 in a written record."""

    @abc.abstractmethod
    def _stored(self, created: list[str], old_generation: str) -> StoredRows:
        """Create ``self.rm`` (the stored rows of the batch's ids: id, event_time, generation, shape, expected) through
        the _id index or a plan driven from the batch side; ``old_generation`` is SQL true for a row of an older
        generation."""

    def _found_rows(self) -> list[tuple] | None:
        """The stored rows for the per-record path's lookup (None: it looks them up itself)."""
        return None

    @abc.abstractmethod
    def _delete(self) -> int:
        """Delete the rows in ``self.rm`` from the collection; how many went."""

    @abc.abstractmethod
    def _insert_sql(self, start: int, stop: int) -> str:
        """The INSERT of the written records among the batch's ``start`` ≤ seq < ``stop``."""

    # -- 1. key lists -----------------------------------------------------------------------------------------------
    def _groups(self) -> list[Group] | None:
        rows = self._key_lists()
        if rows is None:
            return None
        if any(not_object for _, not_object in rows):
            return self._fallback("a record that is not a JSON object")
        if len(rows) > MAX_GROUPS:
            return self._fallback(f"more than {MAX_GROUPS} distinct key lists")
        groups = []
        for index, (keys, _) in enumerate(rows):
            if len(keys) > MAX_NAMES:
                return self._fallback(f"a record with more than {MAX_NAMES} keys")
            fields, kinesis = [], []
            for key in keys:
                if "\x00" in key or key in UNSUPPORTED_UNDERSCORED:
                    return self._fallback(f"a record with the key {key!r}")
                if key.startswith(KINESIS_PREFIX):
                    kinesis.append((key, KINESIS_FIELDS.get(key, key[len(KINESIS_PREFIX):])))
                elif key not in ("_id", "_op"):
                    fields.append(key)
            meta = {"kinesis": None} if kinesis else {}
            groups.append(Group(index, list(keys), fields, kinesis, document_shape(dict.fromkeys(fields), meta)))
        self.has_id_key = any("_id" in g.keys for g in groups)
        with_op = [("_op" in g.keys) for g in groups]
        if any(with_op) and not all(with_op):
            return self._fallback("records with and without an _op in one batch")
        # every record carries an _op: a batch of REPSERTs and DELETEs (checked per record in _fold), which read no
        # stored document; else no record does: upserts of whole documents
        self.ops = all(with_op)
        return groups

    # -- 2. what is read per record ---------------------------------------------------------------------------------
    def _paths(self, groups: list[Group]) -> None:
        """The fields (``field_pos``: field → 1-based position in the list of their JSON types), the ``_kinesis_*``
        keys, and the id values (``id_field_pos``, ``id_key_pos``, ``pk_pos``: positions in the list of id values,
        whose top-level names are ``id_keys``)."""
        self.field_pos: dict[str, int] = {}
        for group in groups:
            for key in group.fields:
                self.field_pos.setdefault(key, len(self.field_pos) + 1)
        self.kinesis_keys = list(dict.fromkeys(key for group in groups for key, _ in group.kinesis))
        positions: dict[str, int] = {}
        keys: list[str] = []

        def position(path: list[str]) -> int:
            if pointer(path) not in positions:
                keys.append(path[0])
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
        self.id_keys = keys

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
        self._fold_ids(created)
        created.append(self.ids)
        distinct, repeated, mixed, bad = (int(v) for v in self.store.fetchall(
            f"SELECT count(*), count(*) FILTER (WHERE n > 1), count(*) FILTER (WHERE g <> g_max), "
            f"count(*) FILTER (WHERE bad) FROM {self.ids}"
        )[0])
        if bad:
            return self._fallback("an id value that is not a string or an integer, or an _op other than REPSERT or "
                                  "DELETE")
        if mixed and not self.ops:
            return self._fallback("changes of one _id with different field names")
        if self.writer.settings.ignore_older_changes and (repeated or self.ops):
            return self._fallback("the older-change guard with repeated ids or _ops")
        self.repeated = repeated
        return distinct, repeated

    def _writes_all(self) -> bool:
        """Whether every record of the batch is written (no fold dropped a change): no ``self.ids`` join needed."""
        return not self.ops and (self.generated or not self.repeated)

    def _written(self, table: str, alias: str) -> str:
        """FROM clause of the records the batch writes, from ``table`` (one row per record, by ``seq``) as ``alias``:
        the last change of each id."""
        if self.ops:  # the ids whose last change is a REPSERT
            return f"FROM {table} {alias} JOIN {self.ids} i ON {alias}.seq = i.last AND i.last_op = 'R'"
        if self._writes_all():
            return f"FROM {table} {alias}"
        return f"FROM {table} {alias} JOIN {self.ids} i ON {alias}.seq = i.last"

    # -- 4. value types: typed columns, arrival times -----------------------------------------------------------------
    def _check_values(self):
        """The types of the values the batch writes, for the typed columns (``CollectionWriter.plan_columns``)."""
        writer = self.writer
        types, arrival_ok = self._value_types()
        if not arrival_ok:
            return self._fallback("an arrival time not in the form both parsers read alike")
        unsigned = [key for key, kinds in types.items() if "UBIGINT" in kinds]
        # integers past 2**63 - 1 are DECIMAL or JSON on the per-record path (column_types.value_type)
        beyond = self._beyond_64_bits(unsigned) if unsigned else []
        if beyond:
            return self._fallback(f"an integer beyond 64 bits in field {beyond[0]!r}")
        observed = {key: {KIND[k] for k in kinds if k != "NULL"} for key, kinds in types.items()}
        plan = writer.plan_columns({key: kinds for key, kinds in observed.items() if kinds})
        for key, kinds in types.items():
            column_type = writer.column_type(key, plan)
            if column_type is not None and not kinds <= FITS.get(column_type, frozenset()):
                return self._fallback(f"field {key!r}: values that do not fit its {column_type} column as they are")
        return plan

    # -- 5. the stored rows -------------------------------------------------------------------------------------------
    def _find_stored(self, folded: tuple[int, int], created: list[str]) -> ChangeCounts | None:
        """The stored rows of the batch's ids and what the batch does to them."""
        n = len(self.batch)
        distinct, _ = folded
        if self.generated:
            return self._op_counts(None) if self.ops else ChangeCounts(inserted=n)
        minimum = self.writer.plan.min_alive_generation
        old = f"generation IS NULL OR generation < {int(minimum)}" if minimum is not None else "false"
        started = time.perf_counter()
        found = self._stored(created, old)
        created.append(self.rm)
        self.lookup_seconds = time.perf_counter() - started
        if found.old_generation:
            reason = "stored documents of an older generation"
        elif self.ops:  # REPSERTs and DELETEs read no document: any shape, any number of rows per id
            reason = None
        elif found.rows != found.ids:
            reason = "an _id stored in more than one row"
        elif found.other_shape:
            reason = "stored documents with other field names (a merge reads them)"
        elif self.writer.settings.ignore_older_changes and found.rows:
            reason = "the older-change guard with stored documents"
        else:
            reason = None
        if reason:  # the per-record path takes the stored rows found here along (no second lookup)
            self.found_rows = self._found_rows()
            return self._fallback(reason)
        self.rm_rows = found.rows
        if self.ops:
            return self._op_counts(self.rm)
        return ChangeCounts(inserted=distinct - found.rows, updated=found.rows, merged=n - distinct)

    def _shape_sql(self, group_sql: str) -> str:
        """SQL for the ``_doc_shape`` of the group whose index ``group_sql`` gives."""
        return by_group([(g.index, literal(g.shape) if g.shape else "NULL") for g in self.groups], group_sql)

    def _op_counts(self, stored_rows: str | None) -> ChangeCounts:
        """operations.fold's accounting for REPSERTs and DELETEs, per id: ``applied`` changes (every REPSERT, a
        DELETE after a REPSERT, a first DELETE of a stored id), the rest skipped; all but the last applied one merged;
        the last change's _op says deleted, or inserted / replaced as the id was stored or not."""
        stored = f"LEFT JOIN (SELECT DISTINCT id FROM {stored_rows}) r ON i.id = r.id" if stored_rows else ""
        is_stored = "r.id IS NOT NULL" if stored_rows else "false"
        applied = f"repserts + deletes_after + CASE WHEN delete_first AND {is_stored} THEN 1 ELSE 0 END"
        row = self.store.fetchall(
            f"SELECT coalesce(sum(n - a), 0), coalesce(sum(greatest(a - 1, 0)), 0), "
            f"count(*) FILTER (WHERE last_op = 'D' AND a > 0), count(*) FILTER (WHERE last_op = 'R' AND NOT stored), "
            f"count(*) FILTER (WHERE last_op = 'R' AND stored) "
            f"FROM (SELECT i.n, i.last_op, {applied} AS a, {is_stored} AS stored FROM {self.ids} i {stored}) AS c"
        )[0]
        skipped, merged, deleted, inserted, replaced = (int(v) for v in row)
        return ChangeCounts(inserted=inserted, replaced=replaced, deleted=deleted, merged=merged, skipped=skipped)

    # -- 6. the rows --------------------------------------------------------------------------------------------------
    def _meta_value(self) -> dict[str, Any]:
        """``_airbyte_meta`` of every row the batch writes (no change to note)."""
        return {"sync_id": self.writer.sync_id, "changes": []}

    def _meta_sql(self, group_sql: str, object_function: str, value_of: Callable[[str], str], empty: str) -> str:
        """SQL for ``_meta``: ``{"kinesis": {name: value, …}}`` of the record's ``_kinesis_*`` keys in its group's
        order (``object_function`` builds a JSON object from name, value pairs; ``value_of`` reads a record key's
        value), ``empty`` for a group without them."""
        metas = []
        for g in self.groups:
            if g.kinesis:
                inner = ", ".join(f"{literal(name)}, {value_of(key)}" for key, name in g.kinesis)
                metas.append((g.index, f"{object_function}('kinesis', {object_function}({inner}))"))
            else:
                metas.append((g.index, empty))
        return by_group(metas, group_sql)

    def _generation_sql(self) -> str:
        generation = self.writer.plan.write_generation
        return str(int(generation)) if generation is not None else "NULL"

    def _add_shape(self, values: dict[str, str], group_sql: str) -> None:
        """``_doc_shape`` into the INSERT's ``values`` (column → SQL) where the collection has the column."""
        if SHAPE_COLUMN in (name for name, _ in self.writer.system_columns):
            values[SHAPE_COLUMN] = self._shape_sql(group_sql)


def set_batch_class(store: "Store") -> type[SetBatch] | None:
    """The set-based path for ``store`` (its declared capability ``set_batches``), None when it runs none."""
    if not getattr(store, "set_batches", False):
        return None
    if store.name == "duckdb":
        from .set_batch_duckdb import DuckDBSetBatch

        return DuckDBSetBatch
    if store.name == "postgres":
        from .set_batch_postgres import PostgresSetBatch

        return PostgresSetBatch
    return None


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


def by_group(pairs: list[tuple[int, str]], group_sql: str) -> str:
    """SQL choosing, per record, the SQL of its group (``group_sql`` gives the group index)."""
    if len(pairs) == 1:
        return pairs[0][1]
    return f"CASE {group_sql} " + " ".join(f"WHEN {index} THEN {sql}" for index, sql in pairs) + " END"
