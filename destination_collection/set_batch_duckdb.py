"""The set-based batch path's SQL for DuckDB (the flow and every decision: set_batch.py).

The batch is staged as an Arrow table (zero-copy scans) and its statements run on one DuckDB thread, the two that
read the whole collection (the join and the delete) on ``store.threads`` (``DuckDBStore.collection_statements``);
DuckDB's JSON functions run vectorized: ``json_keys`` for the key lists, ``json_type`` / ``json_extract_string`` with a list of
JSON pointers for the id values and the fields' types, a hash join with the batch's ids as the build side for the
stored rows (their ``rowid`` kept for the delete), and per slice an ``INSERT … SELECT`` that reads every value a row
needs in one parse (``json_transform``) and writes ``_doc`` with ``json_merge_patch`` removing the ``_kinesis_*``
fields and ``_id``.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import pyarrow as pa

from . import jsonio
from .column_types import INT64_MAX
from .naming import quote_ident
from .set_batch import (
    ARRIVAL_RE, DELETE_RE, ID_TYPES, REPSERT_RE, SetBatch, StoredRows, literal, pointer,
)

_SCAN_CHUNK = 8192  # rows per Arrow record batch staged (DuckDB scans them in parallel)
# primary-key strings that orjson writes as '"' + text + '"' (nothing to escape)
_PLAIN_STRING_RE = r'[^"\\\x{00}-\x{1f}]*'


class DuckDBSetBatch(SetBatch):
    @contextlib.contextmanager
    def _stage(self, created: list[str]) -> Iterator[None]:
        batch = self.batch
        staged_table = pa.table({
            "seq": pa.array(range(len(batch)), pa.int64()),
            "d": pa.array(batch.texts, pa.string()),
            "e": pa.array(batch.emitted_at, pa.int64()),
        })
        # several record batches: DuckDB scans an Arrow table one record batch per thread
        staged_table = pa.Table.from_batches(staged_table.to_batches(max_chunksize=_SCAN_CHUNK))
        with self.store.staged(staged_table) as staged:
            self.staged = staged
            yield

    # -- 1. key lists -----------------------------------------------------------------------------------------------
    def _key_lists(self):
        rows = self.store.fetchall(
            # (grouped by the lists themselves: grouping by their hash is ~0.5 µs per record cheaper, but a collision,
            # which a producer could craft, would give records another list's _meta and _doc_shape)
            f"SELECT json_keys(d) AS keys, min(seq) AS first, bool_or(left(d, 1) <> '{{') FROM {self.staged} "
            f"GROUP BY keys ORDER BY first"
        )
        return [(keys, not_object) for keys, _, not_object in rows]

    def _group_sql(self, alias: str) -> str:
        """A record's group (distinct key list) index."""
        if len(self.groups) == 1:
            return "0"
        return f"CASE json_keys({alias}.d) " + " ".join(
            f"WHEN [{', '.join(literal(k) for k in g.keys)}]::VARCHAR[] THEN {g.index}" for g in self.groups
        ) + " END"

    # -- 3. fold repeated ids -----------------------------------------------------------------------------------------
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
            f"coalesce(tv[{p}], 'NULL') NOT IN ({', '.join(literal(t) for t in sorted(ID_TYPES))})"
            for p in (self.id_field_pos, self.id_key_pos, *self.pk_pos) if p is not None
        ]
        checks += [
            f"(tv[{p}] = 'VARCHAR' AND NOT regexp_full_match(sv[{p}], {literal(_PLAIN_STRING_RE)}))"
            for p in self.pk_pos
        ]
        return " OR ".join(checks)

    def _fold_ids(self, created: list[str]) -> None:
        id_sql = "uuidv7()::VARCHAR" if self.generated else self._id_sql()
        problem = self._id_problem_sql() if not self.generated else "false"
        extra = ""
        op_sql = "NULL"
        if self.ops:
            o = self.op_pos
            op_sql = (
                f"CASE WHEN tv[{o}] = 'VARCHAR' AND regexp_full_match(sv[{o}], {literal(REPSERT_RE)}) THEN 'R' "
                f"WHEN tv[{o}] = 'VARCHAR' AND regexp_full_match(sv[{o}], {literal(DELETE_RE)}) THEN 'D' END"
            )
            problem = f"({problem}) OR op IS NULL"
            extra = (
                ", arg_max(op, seq) AS last_op, count(*) FILTER (op = 'R') AS repserts, "
                "count(*) FILTER (op = 'D' AND previous = 'R') AS deletes_after, "
                "bool_or(op = 'D' AND previous IS NULL) AS delete_first"
            )
        store = self.store
        store.execute(
            f"CREATE TEMP TABLE {self.ids} AS SELECT id, count(*) AS n, min(seq) AS first, max(seq) AS last, "
            f"min(g) AS g, max(g) AS g_max, bool_or({problem}) AS bad{extra} FROM (SELECT seq, g, id, op, "
            f"lag(op) OVER (PARTITION BY id ORDER BY seq) AS previous, tv, sv FROM (SELECT seq, g, {id_sql} AS id, "
            f"{op_sql} AS op, tv, sv FROM (SELECT s.seq, {self._group_sql('s')} AS g, "
            f"json_type(s.d, {_pointer_list(None, self.id_pointers)}) AS tv, "
            f"json_extract_string(s.d, {_pointer_list(None, self.id_pointers)}) AS sv FROM {self.staged} s))) "
            f"GROUP BY id"
        )

    # -- 4. value types -----------------------------------------------------------------------------------------------
    def _value_types(self) -> tuple[dict[str, set[str]], bool]:
        fields = list(self.field_pos)
        selects = ["list(DISTINCT t)"]  # the distinct lists of the fields' types: a handful per batch
        arrival = "_kinesis_arrival_time" in self.kinesis_keys
        inner = [f"json_type(s.d, {_pointer_list([[key] for key in fields])}) AS t"]
        if arrival:
            inner.append(f"json_extract(s.d, {literal(pointer(['_kinesis_arrival_time']))}) AS a")
            selects.append(
                f"bool_and(a IS NULL OR json_type(a) = 'NULL' OR (json_type(a) = 'VARCHAR' AND "
                f"regexp_full_match(a->>'$', {literal(ARRIVAL_RE)})))"
            )
        written = self._written(self.staged, "s")
        row = self.store.fetchall(f"SELECT {', '.join(selects)} FROM (SELECT {', '.join(inner)} {written})")[0]
        types: dict[str, set[str]] = {key: set() for key in fields}
        for type_list in row[0] or ():
            for key, kind in zip(fields, type_list):
                if kind is not None:
                    types[key].add(kind)
        return types, not (arrival and row[1] is False)

    def _beyond_64_bits(self, keys: list[str]) -> list[str]:
        spec = jsonio.dumps(dict.fromkeys(keys, "HUGEINT"))
        biggest = self.store.fetchall(
            f"SELECT {', '.join(f'max(struct_extract_at(r, {i}))' for i in range(1, len(keys) + 1))} "
            f"FROM (SELECT TRY(json_transform(s.d, {literal(spec)})) AS r {self._written(self.staged, 's')})"
        )[0]
        return [key for key, value in zip(keys, biggest) if value is None or value > INT64_MAX]

    # -- 5. the stored rows -------------------------------------------------------------------------------------------
    def _stored(self, created: list[str], old_generation: str) -> StoredRows:
        """A hash join with the batch's ids as the build side (DuckDB does not use an index for joins); the rowids
        are kept for the delete."""
        store = self.store
        shape = store.catalog.shape_sql(self.writer.table, 't.')
        with store.collection_statements():
            store.execute(
                f"CREATE TEMP TABLE {self.rm} AS SELECT t.rowid AS r, t._id AS id, t._event_time AS event_time, "
                f"t._airbyte_generation_id AS generation, CAST({shape} AS VARCHAR) AS shape, "
                f"CAST({self._shape_sql('i.g')} AS VARCHAR) AS expected "
                f"FROM {store.q(self.writer.table)} t JOIN {self.ids} i ON t._id = i.id"
            )
        return StoredRows(*store.fetchall(
            f"SELECT count(*), count(DISTINCT id), count(*) FILTER ({old_generation}), "
            f"count(*) FILTER (shape IS NULL OR expected IS NULL OR shape <> expected) FROM {self.rm}"
        )[0])

    def _found_rows(self) -> list[tuple]:
        return self.store.fetchall(f"SELECT id, event_time, generation, shape, r FROM {self.rm}")

    # -- 6. the rows --------------------------------------------------------------------------------------------------
    def _delete(self) -> int:
        store = self.store
        with store.collection_statements():
            return store.fetchall(
                f"DELETE FROM {store.q(self.writer.table)} AS t USING {self.rm} AS r WHERE t.rowid = r.r"
            )[0][0]

    def _insert_sql(self, start: int, stop: int) -> str:
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
        values = {
            "_id": "uuidv7()::VARCHAR" if self.generated and not self.ops else "l.id",
            "_event_time": event_time,
            "_meta": self._meta_sql("l.g", "json_object", value, "'{}'::JSON"),
            # (json_merge_patch: ~3 µs per record, but its result is JSON already; a cut of the text, ~1 µs, would be
            # parsed again to validate it as JSON on insert, ~1.5 µs: measured, no gain)
            "_doc": f"json_merge_patch(l.d, {literal(jsonio.dumps(dict.fromkeys([*self.kinesis_keys, '_id', '_op'])))})",
            "_airbyte_raw_id": "uuidv7()::VARCHAR",
            # (emitted_at: None unless an integer within documents.extracted_time's range)
            "_airbyte_extracted_at": f"coalesce(make_timestamptz(l.e * 1000), {ingested})",
            "_airbyte_meta": f"{literal(jsonio.dumps(self._meta_value()))}::JSON",
            "_airbyte_generation_id": self._generation_sql(),
        }
        self._add_shape(values, "l.g")
        for key, column in typed:
            values[column.name] = value(key)
        inner = ["s.d", "s.e", f"{self._group_sql('s')} AS g"]
        inner.append(f"json_transform(s.d, {literal(jsonio.dumps(spec))}) AS r" if spec else "NULL AS r")
        if self.generated and not self.ops:
            source = f"FROM {self.staged} s"
        elif self.ops:
            inner.append("i.id")
            source = self._written(self.staged, 's')
        else:
            inner.append("i.id")
            source = f"FROM {self.staged} s JOIN {self.ids} i ON s.seq = i.last"
        columns = ", ".join(quote_ident(name) for name in values)
        # (rows in no particular order: the physical order of a collection is not part of its contract)
        return (
            f"INSERT INTO {store.q(writer.table)} ({columns}) SELECT {', '.join(values.values())} "
            f"FROM (SELECT {', '.join(inner)} {source} WHERE s.seq >= {int(start)} AND s.seq < {int(stop)}) l"
        )


def _pointer_list(paths: list[list[str]] | None, pointers: list[str] | None = None) -> str:
    pointers = pointers if pointers is not None else [pointer(path) for path in paths or []]
    return "[" + ", ".join(literal(p) for p in pointers) + "]::VARCHAR[]"


def _id_text(p: int) -> str:
    """``documents.id_text`` of id value ``p`` when of the id types (a string as itself, an integer as its digits)."""
    return f"CASE WHEN tv[{p}] IN ('VARCHAR', 'BIGINT', 'UBIGINT') THEN sv[{p}] END"


def _pk_text(p: int) -> str:
    """Primary-key value ``p`` as ``jsonio.dumps`` writes it inside the key's JSON array (missing: null)."""
    return (
        f"CASE tv[{p}] WHEN 'VARCHAR' THEN '\"' || sv[{p}] || '\"' WHEN 'BIGINT' THEN sv[{p}] WHEN 'UBIGINT' THEN "
        f"sv[{p}] ELSE 'null' END"
    )
