"""The set-based batch path's SQL for PostgreSQL (the flow and every decision: set_batch.py).

* **Staging**: the batch's texts go to a temporary table with one ``COPY`` (CSV with the control characters \\x02 as
  delimiter and \\x01 as quote: orjson escapes every control character inside a JSON text and writes none outside
  strings, so the texts need no escaping at all).
* **Parsing**: ``json_object_keys`` for the key lists (``json``, not ``jsonb``: it keeps the record's key order), then
  once per record ``json_to_record`` with every top-level name the batch has as a ``json`` column: the values as the
  record holds them, number tokens verbatim (``jsonb`` would turn ``1e20`` into ``100000000000000000000``, and the
  per-record path tells an integer from a float by its token), into a temporary table ``values`` read by the later
  steps. Types are classified into the names DuckDB's ``json_type`` uses (``set_batch.KIND``).
* **Stored rows**: ``_id = ANY(ARRAY(SELECT id FROM ids ORDER BY id))``: an index scan of the ``_id`` primary key
  driven by the batch's ids, however big the collection (``test_lookup_plans_postgres.py`` checks the plan).
* **Rows**: the delete by ``_id`` (the index again), then ``INSERT … SELECT`` with ``_doc`` as the record's ``jsonb``
  without the metadata keys (``-``), typed values cast from their tokens, UUIDv7 ids and raw ids made in SQL
  (PostgreSQL 15 has no ``uuidv7()``).
"""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

from . import jsonio
from .column_types import BIGINT, BOOLEAN, DOUBLE, JSON, VARCHAR
from .naming import quote_ident
from .set_batch import (
    ARRIVAL_RE, DELETE_RE, ID_TYPES, REPSERT_RE, SetBatch, StoredRows, literal,
)

MAX_NAME_BYTES = 63  # json_to_record's column names are identifiers: PostgreSQL truncates longer ones
MAX_COLUMNS = 1500  # a table has at most 1600 columns; ``values`` has one per distinct top-level name, plus 3
_COPY_CHUNK = 4096  # records per COPY write


def uuidv7_sql() -> str:
    """SQL for a fresh time-ordered UUID per row (version 7, as documents.new_uuids makes them: 48 bits of Unix
    milliseconds, fixed per statement here as per chunk there, then random bits): the milliseconds from Python, the
    rest of ``gen_random_uuid()``'s text after its version digit (its variant is version 7's too). PostgreSQL 15 has
    no ``uuidv7()``."""
    stamp = f"{time.time_ns() // 1_000_000:012x}"
    return f"'{stamp[:8]}-{stamp[8:]}-7' || substr(gen_random_uuid()::text, 16)"


INT64_MIN_TEXT, INT64_MAX_TEXT = "-9223372036854775808", "9223372036854775807"
# the SQL cast of a value's text for each typed column type the path writes (FITS: values of the right kind only)
_CASTS = {VARCHAR: "{v} #>> '{{}}'", BIGINT: "({v} #>> '{{}}')::bigint", DOUBLE: "({v} #>> '{{}}')::float8",
          BOOLEAN: "({v} #>> '{{}}')::boolean", JSON: "{v}::jsonb"}


def kind_sql(value: str) -> str:
    """SQL for the JSON type of a ``json`` value (NULL: missing or null), named as ``set_batch.KIND`` names them. By
    its first character: ``json_to_record`` hands a value over as the record's own token, which orjson wrote compact
    (no leading blank), so no value is parsed again; numbers are integers when all digits (orjson writes every float
    with a '.' or an exponent)."""
    token = f"{value}::text"
    integer = (
        f"CASE WHEN length({token}) < 19 OR {token}::numeric BETWEEN {INT64_MIN_TEXT} AND {INT64_MAX_TEXT} "
        f"THEN 'BIGINT' ELSE 'UBIGINT' END"
    )
    return (
        f"CASE WHEN {value} IS NULL THEN 'NULL' ELSE CASE left({token}, 1) WHEN '\"' THEN 'VARCHAR' "
        f"WHEN '{{' THEN 'OBJECT' WHEN '[' THEN 'ARRAY' WHEN 't' THEN 'BOOLEAN' WHEN 'f' THEN 'BOOLEAN' "
        f"WHEN 'n' THEN 'NULL' ELSE CASE WHEN {token} ~ '^-?[0-9]+$' THEN {integer} ELSE 'DOUBLE' END END END"
    )


def _anchored(pattern: str) -> str:
    return literal(f"^({pattern})$")


class PostgresSetBatch(SetBatch):
    @contextlib.contextmanager
    def _stage(self, created: list[str]) -> Iterator[None]:
        store = self.store
        self.staged = f"__kc_lane_stage_{self.suffix}"
        self.values = f"__kc_lane_values_{self.suffix}"
        store.execute(f"CREATE TEMP TABLE {self.staged} (seq integer, d text, e bigint)")
        created.append(self.staged)
        batch = self.batch

        def chunks() -> Iterator[bytes]:
            texts, emitted = batch.texts, batch.emitted_at
            for start in range(0, len(texts), _COPY_CHUNK):
                stop = min(start + _COPY_CHUNK, len(texts))
                yield "".join([
                    f"{index}\x02{texts[index]}\x02{'' if emitted[index] is None else emitted[index]}\n"
                    for index in range(start, stop)
                ]).encode("utf-8", "surrogatepass")

        store.copy_text(self.staged, "seq, d, e", chunks(), "FORMAT csv, DELIMITER E'\\x02', QUOTE E'\\x01'")
        yield

    # -- 1. key lists -----------------------------------------------------------------------------------------------
    def _key_lists(self):
        rows = self.store.fetchall(
            # (json_object_keys fails on a text with \u0000 anywhere: such a record has no key list here)
            f"SELECT k, min(seq) AS first, bool_or(NOT obj), bool_or(nul) FROM (SELECT seq, obj, nul, "
            f"CASE WHEN obj AND NOT nul THEN ARRAY(SELECT json_object_keys(d::json)) END AS k FROM (SELECT seq, d, "
            f"left(d, 1) = '{{' AS obj, strpos(d, '\\u0000') > 0 AS nul FROM {self.staged}) AS s) AS r "
            f"GROUP BY k ORDER BY first"
        )
        if any(nul for _, _, _, nul in rows):
            return self._fallback("a NUL character (\\u0000): jsonb cannot hold it, the per-record path encodes it")
        return [(keys, not_object) for keys, _, not_object, _ in rows]

    # -- 2. every top-level value, once per record ----------------------------------------------------------------
    def _prepare(self, created: list[str]) -> bool:
        names = list(dict.fromkeys(key for group in self.groups for key in group.keys))
        if len(names) > MAX_COLUMNS:
            return bool(self._fallback(f"more than {MAX_COLUMNS} distinct top-level names"))
        if "" in names:
            return bool(self._fallback("an empty field name (json_to_record's column names are identifiers)"))
        long = next((name for name in names if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES), None)
        if long is not None:
            return bool(self._fallback(f"a field name longer than {MAX_NAME_BYTES} bytes ({long[:40]!r}…)"))
        self.column = {name: f"v{index}" for index, name in enumerate(names)}
        if len(self.groups) == 1:
            group = "0"
        else:
            group = "CASE ARRAY(SELECT json_object_keys(s.d::json)) " + " ".join(
                f"WHEN ARRAY[{', '.join(literal(k) for k in g.keys)}]::text[] THEN {g.index}" for g in self.groups
            ) + " END"
        definition = ", ".join(f"{quote_ident(name)} json" for name in names)
        selects = ", ".join(f"x.{quote_ident(name)} AS {self.column[name]}" for name in names)
        self.store.execute(
            f"CREATE TEMP TABLE {self.values} AS SELECT s.seq, s.e, {group} AS g{', ' if names else ''}{selects} "
            f"FROM {self.staged} s, json_to_record(s.d::json) AS x({definition or 'unused json'})"
        )
        created.append(self.values)
        return True

    def _value(self, key: str, alias: str = "p") -> str:
        """A top-level value of the record (``json``; NULL when no record of the batch has the key)."""
        column = self.column.get(key)
        return f"{alias}.{column}" if column else "NULL::json"

    # -- 3. fold repeated ids -----------------------------------------------------------------------------------------
    def _id_sql(self) -> tuple[str, str]:
        """SQL for a record's ``_id`` (a generated UUIDv7 where it has none), and SQL true when its id values are not
        of the id types."""
        layers, problems = [], []
        keys = self.id_keys
        kinds = {key: kind_sql(self._value(key)) for key in keys}
        for pos in (self.id_field_pos, self.id_key_pos):
            if pos is not None:
                key = keys[pos - 1]
                layers.append(
                    f"CASE WHEN {kinds[key]} IN ('VARCHAR', 'BIGINT', 'UBIGINT') THEN {self._value(key)} #>> '{{}}' END"
                )
        if self.pk_pos:
            # the key's JSON array as jsonio.dumps writes it: the texts are orjson's, so a string's token is as is
            parts = " || ',' || ".join(
                f"CASE WHEN {kinds[keys[p - 1]]} IN ('VARCHAR', 'BIGINT', 'UBIGINT') THEN {self._value(keys[p - 1])}::text "
                f"ELSE 'null' END"
                for p in self.pk_pos
            )
            layers.append(f"'[' || {parts} || ']'")
        for pos in (self.id_field_pos, self.id_key_pos, *self.pk_pos):
            if pos is not None:
                problems.append(f"{kinds[keys[pos - 1]]} NOT IN ({', '.join(literal(t) for t in sorted(ID_TYPES))})")
        id_sql = f"coalesce({', '.join(layers)}, {uuidv7_sql()})" if layers else uuidv7_sql()
        return id_sql, " OR ".join(problems) or "false"

    def _fold_ids(self, created: list[str]) -> None:
        id_sql, problem = self._id_sql()
        op_sql, extra = "NULL::text", ""
        if self.ops:
            op = self._value("_op")
            text = f"({op} #>> '{{}}')"
            op_sql = (
                f"CASE WHEN json_typeof({op}) = 'string' AND {text} ~ {_anchored(REPSERT_RE)} THEN 'R' "
                f"WHEN json_typeof({op}) = 'string' AND {text} ~ {_anchored(DELETE_RE)} THEN 'D' END"
            )
            problem = f"({problem}) OR ({op_sql}) IS NULL"
            extra = (
                ", (array_agg(op ORDER BY seq DESC))[1] AS last_op, count(*) FILTER (WHERE op = 'R') AS repserts, "
                "count(*) FILTER (WHERE op = 'D' AND previous = 'R') AS deletes_after, "
                "bool_or(op = 'D' AND previous IS NULL) AS delete_first"
            )
        store = self.store
        store.execute(
            f"CREATE TEMP TABLE {self.ids} AS SELECT id, count(*) AS n, min(seq) AS first, max(seq) AS last, "
            f"min(g) AS g, max(g) AS g_max, bool_or(bad) AS bad{extra} FROM (SELECT seq, g, id, op, bad, "
            f"lag(op) OVER (PARTITION BY id ORDER BY seq) AS previous FROM (SELECT p.seq, p.g, {id_sql} AS id, "
            f"{op_sql} AS op, {problem} AS bad FROM {self.values} p) AS a) AS b GROUP BY id"
        )
        store.execute(f"ANALYZE {self.ids}")

    # -- 4. value types -----------------------------------------------------------------------------------------------
    def _value_types(self) -> tuple[dict[str, set[str]], bool]:
        fields = list(self.field_pos)
        kinds = " || ',' || ".join(kind_sql(self._value(key)) for key in fields) or "''"
        if "_kinesis_arrival_time" in self.kinesis_keys:
            a = self._value("_kinesis_arrival_time")
            text = f"({a} #>> '{{}}')"
            # the form both parsers read alike, of a date that exists (PostgreSQL has no TRY_CAST: a cast of Feb 30
            # fails the statement, so such a batch goes the per-record way); CASE fixes the order of the checks
            day_exists = (
                f"substr({text}, 9, 2)::int <= extract(day FROM make_date(substr({text}, 1, 4)::int, "
                f"substr({text}, 6, 2)::int, 1) + interval '1 month' - interval '1 day')"
            )
            arrival = (
                f"CASE WHEN {a} IS NULL THEN true WHEN json_typeof({a}) <> 'string' THEN false "
                f"WHEN NOT {text} ~ {_anchored(ARRIVAL_RE)} THEN false "
                f"WHEN substr({text}, 6, 2) NOT BETWEEN '01' AND '12' OR substr({text}, 9, 2) NOT BETWEEN '01' AND '31' "
                f"THEN false ELSE {day_exists} END"
            )
        else:
            arrival = "true"
        rows = self.store.fetchall(
            f"SELECT t, bool_and(a) FROM (SELECT {kinds} AS t, {arrival} AS a {self._written(self.values, 'p')}) AS k "
            f"GROUP BY t"
        )
        types: dict[str, set[str]] = {key: set() for key in fields}
        arrival_ok = True
        for type_list, ok in rows:
            arrival_ok = arrival_ok and ok is not False
            if fields:
                for key, kind in zip(fields, type_list.split(",")):
                    types[key].add(kind)
        return types, arrival_ok

    def _beyond_64_bits(self, keys: list[str]) -> list[str]:
        # kind_sql says UBIGINT only past the 64-bit range
        return list(keys)

    # -- 5. the stored rows -------------------------------------------------------------------------------------------
    def _stored(self, created: list[str], old_generation: str) -> StoredRows:
        """Through the ``_id`` index: ``= ANY`` of the batch's ids (sorted: the index pages are then read in order),
        materialized before the join with the batch's ids so that the plan cannot turn into a scan."""
        store = self.store
        table = self.writer.table
        store.execute(
            f"CREATE TEMP TABLE {self.rm} AS WITH t AS MATERIALIZED (SELECT _id, _event_time, _airbyte_generation_id, "
            f"{store.catalog.shape_sql(table)} AS shape FROM {store.q(table)} "
            f"WHERE _id = ANY(ARRAY(SELECT id FROM {self.ids} ORDER BY id))) "
            f"SELECT t._id AS id, t._event_time AS event_time, t._airbyte_generation_id AS generation, "
            f"t.shape::text AS shape, ({self._shape_sql('i.g')})::text AS expected FROM t JOIN {self.ids} i ON t._id = i.id"
        )
        return StoredRows(*(int(v) for v in store.fetchall(
            f"SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE {old_generation}), "
            f"count(*) FILTER (WHERE shape IS NULL OR expected IS NULL OR shape <> expected) FROM {self.rm}"
        )[0]))

    # -- 6. the rows --------------------------------------------------------------------------------------------------
    def _delete(self) -> int:
        store = self.store
        return int(store.fetchall(
            f"WITH gone AS (DELETE FROM {store.q(self.writer.table)} WHERE _id = ANY(ARRAY(SELECT id FROM {self.rm} "
            f"ORDER BY id)) RETURNING 1) SELECT count(*) FROM gone"
        )[0][0])

    def _insert_sql(self, start: int, stop: int) -> str:
        writer = self.writer
        store = self.store
        ingested = f"{literal(self.ingested_at.isoformat())}::timestamptz"
        arrival = self._value("_kinesis_arrival_time") if "_kinesis_arrival_time" in self.kinesis_keys else None
        # (checked in _value_types: every arrival time casts)
        event_time = f"coalesce(({arrival} #>> '{{}}')::timestamptz, {ingested})" if arrival else ingested
        # the record parsed to jsonb once (p.j): _doc is it without the metadata keys, _meta takes their values
        dropped = ", ".join(literal(key) for key in [*self.kinesis_keys, "_id", "_op"])
        generated = self.generated and not self.ops
        values = {
            "_id": uuidv7_sql() if generated else "p.id",
            "_event_time": event_time,
            "_meta": self._meta_sql("p.g", "jsonb_build_object", lambda key: f"p.j -> {literal(key)}", "'{}'::jsonb"),
            "_doc": f"p.j - ARRAY[{dropped}]::text[]",
            "_airbyte_raw_id": uuidv7_sql(),
            # (emitted_at: NULL unless an integer of ms within documents.extracted_time's range; whole seconds and
            # the milliseconds apart: to_timestamp takes a double)
            "_airbyte_extracted_at": (
                f"coalesce(to_timestamp(p.e / 1000) + (p.e % 1000) * interval '1 millisecond', {ingested})"
            ),
            "_airbyte_meta": f"{literal(jsonio.dumps(self._meta_value()))}::jsonb",
            "_airbyte_generation_id": self._generation_sql(),
        }
        self._add_shape(values, "p.g")
        # typed values from the record's own tokens (jsonb would turn -0.0 into 0)
        for key, column in writer.columns.items():
            if key in self.field_pos:
                values[column.name] = _CASTS[column.type].format(v=self._value(key))
        if generated:
            source = f"FROM {self.values} p"
        elif self._writes_all():
            source = f"FROM {self.values} p JOIN {self.ids} i ON p.seq = i.last"
        else:
            source = self._written(self.values, 'p')
        columns = ", ".join(quote_ident(name) for name in values)
        # (OFFSET 0 keeps the subquery from being pulled up: p.j is parsed once per row, not once per use)
        return (
            f"INSERT INTO {store.q(writer.table)} ({columns}) SELECT {', '.join(values.values())} FROM (SELECT p.*, "
            f"{'NULL' if generated else 'i.id'} AS id, s.d::jsonb AS j {source} JOIN {self.staged} s ON s.seq = p.seq "
            f"WHERE p.seq >= {int(start)} AND p.seq < {int(stop)} OFFSET 0) AS p"
        )
