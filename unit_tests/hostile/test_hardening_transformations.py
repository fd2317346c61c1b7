"""Issue 15 (items 1, 2, 4, and `_op` in ASCII): an ingest transformation never corrupts a field it does not mention,
one record's bad values never stop a collection, every output type converts exactly or is noted, and `_op` keywords
match in ASCII only."""
from __future__ import annotations

import time

import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_collection.transformation import Transformation
from unit_tests.destination.harness import KINESIS_PK, Harness, kinesis, record, stream

S = "orders"

# field names DuckDB would merge, rename or confuse with internal columns; values that must come back unchanged
HOSTILE = {
    "k": "a",
    "id": "lower", "ID": "UPPER", "Id": 3, "iD": [1, {"x": None}],
    "__kc_row": "forged row", "__KC_ROW": 7, "__kc_row_0": 1, "__kc_input": "t", "_INPUT": 5, "_input": 6,
    "\u00e9": "nfc", "e\u0301": "nfd", "\u212a": "kelvin", "K": "ascii K",
    'quo"te': 1, "": "empty", " ": "blank", "c0": "looks positional", "c1": 2, "rowid": 9,
    "big": 2**70, "huge": 10**40, "neg0": -0.0, "nested": {"ID": 1, "id": 2}, "nul": "a\u0000b",
}


@pytest.fixture
def transform():
    made = []

    def make(sql: str) -> Transformation:
        made.append(Transformation(sql, S))
        return made[-1]

    yield make
    for t in made:
        t.close()


def _same(a, b) -> bool:
    """Equal including types (True != 1, -0.0 keeps its sign) and key order-insensitive."""
    return repr(sorted(a.items(), key=lambda kv: kv[0])) == repr(sorted(b.items(), key=lambda kv: kv[0]))


@pytest.mark.parametrize(
    "sql, added",
    [
        ("SELECT * FROM _input", {}),
        ("SELECT * FROM _input WHERE k = 'a'", {}),
        ("SELECT t.* FROM _input AS t WHERE t.k IS NOT NULL", {}),
        ("SELECT *, upper(k) AS k2 FROM _input", {"k2": "A"}),
        ("SELECT *, upper(id) AS id_up FROM _input", {"id_up": "LOWER"}),
        ("SELECT *, \"ID\" || '!' AS shout FROM _input", {"shout": "UPPER!"}),
        ("SELECT _input.*, 1 AS one FROM _input", {"one": 1}),
    ],
)
def test_fields_the_statement_does_not_mention_pass_through_byte_identical(transform, reliability, sql, added):
    rows = transform(sql).apply([dict(HOSTILE), {"k": "a", "ID": "only upper"}])
    reliability(cases=1)
    assert [i for i, _ in rows] == [0, 1]
    assert _same(rows[0][1], {**HOSTILE, **added}), rows[0][1]
    # the second record has no field spelled 'id' exactly, only 'ID': a reference binds it (ASCII case, unique)
    second = {"id_up": "ONLY UPPER"} if "id_up" in added else {"shout": "only upper!"} if "shout" in added else added
    assert _same(rows[1][1], {"k": "a", "ID": "only upper", **second})


def test_exclude_replace_rename_touch_only_the_named_field(transform, reliability):
    sql = "SELECT * EXCLUDE (__kc_row) REPLACE (upper(id) AS id) RENAME (\"_INPUT\" AS input_upper) FROM _input"
    [(_, doc)] = transform(sql).apply([dict(HOSTILE)])
    reliability(cases=1)
    expected = {k: v for k, v in HOSTILE.items() if k not in ("__kc_row", "id", "_INPUT")}
    assert _same(doc, {**expected, "id": "LOWER", "input_upper": 5})


def test_explicit_projection_wins_over_star_for_exactly_its_name(transform, reliability):
    [(_, doc)] = transform("SELECT *, upper(name) AS name FROM _input").apply([{"name": "x", "NAME": "keep", "Name": "too"}])
    reliability(cases=1)
    assert doc == {"name": "X", "NAME": "keep", "Name": "too"}


def test_a_reference_binds_its_exact_field_then_the_one_equal_ignoring_ascii_case(transform, reliability):
    rows = transform("SELECT *, upper(Name) AS shout FROM _input").apply(
        [{"Name": "exact", "name": "other"}, {"name": "only lower"}, {"NAME": "x", "name": "y"}, {"\u212aName": "no"}]
    )
    reliability(cases=4)
    assert [doc["shout"] for _, doc in rows] == ["EXACT", "ONLY LOWER", None, None]


@pytest.mark.parametrize(
    "sql, fragment",
    [
        ("SELECT id, \"ID\" FROM _input", "differ only in case"),
        ("SELECT * FROM _input WHERE id = 1 AND Id = 2", "differ only in case"),
        ("SELECT *, row_number() OVER () AS n FROM _input", "window functions"),
        ("SELECT *, sum(a) OVER (PARTITION BY b) AS s FROM _input", "window functions"),
        ("SELECT * FROM _input USING SAMPLE 10%", "SAMPLE"),
        ("SELECT * FROM _input TABLESAMPLE 5 ROWS", "SAMPLE"),
        ("SELECT COLUMNS('i.*') FROM _input", "COLUMNS"),
        ("SELECT * LIKE 'i%' FROM _input", "'*' inside an expression"),
        ("SELECT a AS x, b AS x FROM _input", "defined twice"),
        ("SELECT other.* FROM _input", "names no table"),
    ],
)
def test_statements_that_cannot_be_repeatable_or_unambiguous_are_config_errors(sql, fragment, reliability):
    with pytest.raises(AirbyteTracedException) as info:
        Transformation(sql, S).close()
    reliability(cases=1)
    assert info.value.failure_type == FailureType.config_error
    assert fragment in info.value.message and f"stream '{S}'" in info.value.message


# -- item 2: one record's values never stop the collection ----------------------------------------------------------
@pytest.mark.parametrize(
    "sql, bad",
    [
        ("SELECT *, CAST(ts AS TIMESTAMP) AS _event_time FROM _input", {"ts": "not a time"}),
        ("SELECT *, CAST(n AS INTEGER) AS i FROM _input", {"n": "twelve"}),
        ("SELECT *, CAST(n AS TINYINT) AS i FROM _input", {"n": 1000}),
        ("SELECT *, json_extract(payload, '$.a') AS a FROM _input", {"payload": "{broken"}),
        ("SELECT *, CASE WHEN n < 0 THEN error('negative n') END AS chk FROM _input", {"n": -1}),
        ("SELECT * FROM _input WHERE CAST(n AS INTEGER) > 0", {"n": "x"}),
        ("SELECT *, date_add(DATE '2020-01-01', to_days(CAST(n AS INTEGER))) AS d FROM _input", {"n": 2_000_000_000}),
    ],
)
def test_a_value_error_belongs_to_its_record_and_the_rest_runs(transform, reliability, sql, bad):
    good = {"ts": "2024-01-01 00:00:00", "n": 5, "payload": '{"a": 1}'}
    rows = [dict(good, k=i) for i in range(300)]
    rows[7] = {**good, **bad, "k": 7}
    rows[250] = {**good, **bad, "k": 250}
    result = transform(sql).run(rows)
    reliability(cases=1)
    assert set(result.failed) == {7, 250}
    assert all(r.split(":")[0].endswith("Exception") for r in result.failed.values())
    assert sorted(i for i, _, _ in result.rows) == [i for i in range(300) if i not in (7, 250)]


def test_a_batch_where_every_record_fails_is_isolated_in_bounded_time(transform, reliability):
    t = transform("SELECT *, CAST(ts AS TIMESTAMP) AS _event_time FROM _input")
    started = time.monotonic()
    result = t.run([{"ts": f"bad {i}"} for i in range(6000)])
    elapsed = time.monotonic() - started
    reliability(cases=6000)
    assert len(result.failed) == 6000 and not result.rows
    assert "bad 0" in result.failed[0]  # the first ones carry DuckDB's exact message
    assert elapsed < 20, elapsed  # a round trip per record would be ~20 s here (n log n: far more)


def test_errors_removing_records_cannot_fix_stay_config_errors(reliability):
    for sql in ("SELECT *, no_such_function(a) AS b FROM _input", "SELECT *, a + FROM _input",
                "SELECT *, 1 + [1] AS x FROM _input"):
        with pytest.raises(AirbyteTracedException) as info:
            Transformation(sql, S).close()
        assert info.value.failure_type == FailureType.config_error and f"stream '{S}'" in info.value.message
    reliability(cases=3)


def test_failed_records_become_error_documents_and_the_sync_goes_on(tmp_path, reliability):
    harness = Harness({"store_type": "duckdb", "path": str(tmp_path / "c.duckdb")})
    sql = "SELECT *, CAST(ts AS TIMESTAMP) AS _event_time, upper(name) AS name FROM _input"
    harness.options = {"collections": [{"stream": S, "transformation_sql": sql}]}
    streams = [stream(S, pk=[["k"]])]
    harness.write(streams, [record(S, {"k": 1, "name": "ann", "ts": "2024-01-01 00:00:00"})])
    out = harness.write(streams, [
        record(S, {"k": 1, "name": "evil", "ts": "garbage"}),  # fails: the stored document must stay as it was
        record(S, {"k": 2, "name": "bo", "ts": "infinity"}),  # not a failure: _event_time falls back, noted
        record(S, {"k": 3, "name": "cy", "ts": "2024-01-03", "__kc_row": 1, "__KC_ROW": 2, "ID": "x", "id": "y"}),
        record(S, {"k": 4, "name": "di", "ts": "20x4"}),
        {"type": "STATE", "state": {"type": "STREAM", "stream": {"stream_descriptor": {"name": S}, "stream_state": {"s": 1}}}},
    ])
    reliability(cases=4)
    assert any(m.get("type") == "STATE" for m in out)  # committed: the sync went on
    rows = harness.rows(S)
    assert rows["[1]"]["_doc"] == {"k": 1, "name": "ANN", "ts": "2024-01-01 00:00:00"}
    assert "garbage" in rows["[1]"]["_meta"]["error"]["reason"] and rows["[1]"]["_meta"]["error"]["record"]["name"] == "evil"
    assert rows["[2]"]["_doc"]["name"] == "BO" and rows["[2]"]["_airbyte_meta"]["changes"]
    assert rows["[3]"]["_doc"] == {"k": 3, "name": "CY", "ts": "2024-01-03", "__kc_row": 1, "__KC_ROW": 2, "ID": "x", "id": "y"}
    assert rows["[4]"]["_doc"] == {} and rows["[4]"]["_meta"]["error"]["record"] == {"k": 4, "name": "di", "ts": "20x4"}


# -- item 4: output types --------------------------------------------------------------------------------------------
def _change(field, change="NULLED"):
    return (field, change)


@pytest.mark.parametrize(
    "expr, expected, noted",
    [
        ("340282366920938463463374607431768211455::UHUGEINT", 340282366920938463463374607431768211455, None),
        ("(-170141183460469231731687303715884105727)::HUGEINT", -170141183460469231731687303715884105727, None),
        ("18446744073709551615::UBIGINT", 18446744073709551615, None),
        ("99999999999999999999999999999999999999::DECIMAL(38,0)", 10**38 - 1, None),
        ("1.25::DECIMAL(38,10)", 1.25, None),
        ("12345678901234567890.1234567890::DECIMAL(38,10)", 12345678901234567890.1234567890, "TRUNCATED"),
        ("MAP {1: 'x', 2: 'y'}", {"1": "x", "2": "y"}, None),
        ("MAP {'k': [1, 2]}", {"k": [1, 2]}, None),
        ("{'a b': 1, 'q\"x': 2, 'u': 340282366920938463463374607431768211455::UHUGEINT}",
         {"a b": 1, 'q"x': 2, "u": 340282366920938463463374607431768211455}, None),
        ("[1, 2]::INTEGER[2]", [1, 2], None),
        ("union_value(k := 'x')", {"k": "x"}, None),
        ("TIMETZ '12:00:00+05:30'", "12:00:00+05:30", None),
        ("TIMESTAMP_NS '2020-01-01 01:02:03.123456789'", "2020-01-01T01:02:03.123456789", None),
        ("TIMESTAMPTZ '2020-01-01 01:02:03+05'", "2019-12-31T20:02:03+00:00", None),
        ("TIMESTAMP '2024-01-02 03:04:05.5'", "2024-01-02T03:04:05.500000", None),
        ("'294247-01-10'::DATE", "294247-01-10", None),
        ("'infinity'::DATE", "infinity", None),
        ("'-infinity'::TIMESTAMP", "-infinity", None),
        ("INTERVAL '1 month 2 days 3 seconds'", {"months": 1, "days": 2, "microseconds": 3_000_000}, None),
        ("'\\xAA\\x00'::BLOB", "qgA=", None),
        ("'0101'::BIT", "0101", None),
        ("'b'::ENUM('a', 'b')", "b", None),
        ("'00000000-0000-0000-0000-000000000001'::UUID", "00000000-0000-0000-0000-000000000001", None),
        ("'NaN'::DOUBLE", None, "NULLED"),
        ("'-Infinity'::DOUBLE", None, "NULLED"),
        ("1 / 0", None, "NULLED"),
        ("[1.0, 'NaN'::DOUBLE]", [1.0, None], "NULLED"),
        ("-0.0::DOUBLE", -0.0, None),
    ],
)
def test_every_output_type_converts_exactly_or_is_noted(transform, reliability, expr, expected, noted):
    result = transform(f"SELECT {expr} AS v FROM _input").run([{"k": 1}])
    reliability(cases=1)
    [(_, doc, changes)] = result.rows
    assert repr(doc["v"]) == repr(expected)
    assert [(c["field"], c["change"]) for c in changes] == ([] if noted is None else [("v", noted)])


# -- _op matched in ASCII only ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("op, applied", [
    ("ınsert", False), ("upſert", False), ("ＵＰＳＥＲＴ", False), ("\u00a0upsert", False), ("delete\u2003", False),
    (" Upsert\t", True), ("iNsErT", True),
])
def test_op_keywords_match_in_ascii_only(tmp_path, reliability, op, applied):
    harness = Harness({"store_type": "duckdb", "path": str(tmp_path / "c.duckdb")})
    harness.write([stream(S)], [record(S, {"k": 1, "v": 1, "_op": op})])
    reliability(cases=1)
    row = harness.rows(S)["[1]"]
    if applied:
        assert row["_doc"] == {"k": 1, "v": 1}
    else:
        assert row["_doc"] == {} and "unknown _op" in row["_meta"]["error"]["reason"]


# -- round 2: a record's result never depends on the other records of its batch ---------------------------------------
@pytest.mark.parametrize(
    "sql, value, expected",
    [
        ("SELECT *, s || '!' AS x FROM _input", "a", "a!"),  # was '"a"!' (JSON text) next to a number
        ("SELECT *, upper(s) AS x FROM _input", "a", "A"),  # was '"A"'
        ("SELECT *, length(s) AS x FROM _input", "abc", 3),  # was 5 (the quotes counted)
        ("SELECT *, s AS x FROM _input", 1, 1),  # was 1.0 next to a float
        ("SELECT *, s || '' AS x FROM _input", 7, "7"),  # was '7.0' next to a float
    ],
)
def test_a_records_result_does_not_depend_on_its_batch(transform, reliability, sql, value, expected):
    t = transform(sql)
    alone = t.run([{"s": value}]).rows
    for others in ([1], [1.5], ["b"], [[1]], [{"a": 1}], [2**70], [None, True]):
        rows = [{"s": value}] + [{"s": o} for o in others]
        mixed = [(doc, changes) for i, doc, changes in t.run(rows).rows if i == 0]
        assert repr(mixed) == repr([(alone[0][1], alone[0][2])]), (others, mixed)
    reliability(cases=7)
    assert repr(alone[0][1]["x"]) == repr(expected)


def test_a_field_type_the_statement_cannot_bind_fails_only_those_records(transform, reliability):
    """upper(n) binds for strings, not numbers: the records with numbers fail alone (BinderException in
    ``failed``), whether or not strings share their batch; the statement is not a config_error."""
    t = transform("SELECT *, upper(n) AS u FROM _input")
    for batch in ([{"n": 1}], [{"n": "a"}, {"n": 1}, {"n": "b"}], [{"n": 1.5}, {"n": 2}]):
        result = t.run(batch)
        bad = {i for i, r in enumerate(batch) if not isinstance(r["n"], str)}
        assert set(result.failed) == bad
        assert all("BinderException" in reason and "upper" in reason for reason in result.failed.values())
        assert [(i, doc["u"]) for i, doc, _ in result.rows] == [(i, r["n"].upper()) for i, r in enumerate(batch) if i not in bad]
    reliability(cases=3)


def test_output_rows_keep_arrival_order_across_type_groups(transform, reliability):
    rows = [{"k": i, "s": "x" if i % 3 else i} for i in range(30)]
    result = transform("SELECT *, s AS t FROM _input").run(rows)
    reliability(cases=1)
    assert [i for i, _, _ in result.rows] == list(range(30))


def test_mixed_types_never_reorder_op_folding(tmp_path, reliability):
    """An UPSERT then a DELETE of one document in one batch, their referenced fields of different kinds: applied in
    arrival order (type groups must not reorder them), so the document is deleted."""
    harness = Harness({"store_type": "duckdb", "path": str(tmp_path / "c.duckdb")})
    harness.options = {"collections": [{"stream": S, "transformation_sql": "SELECT *, lower(op) AS _op FROM _input"}]}
    harness.write([stream(S)], [
        record(S, {"k": 1, "op": "UPSERT", "v": 1}),
        record(S, {"k": 2, "op": None, "v": 2}),
        record(S, {"k": 1, "op": "DELETE"}),
        record(S, {"k": 2, "op": "Delete"}),
        record(S, {"k": 3, "op": "upsert", "v": 3}),
    ])
    reliability(cases=1)
    assert list(harness.rows(S)) == ["[3]"]


@pytest.mark.parametrize(
    "sql, fragment",
    [
        ("SELECT *, 1e309 AS big FROM _input", "beyond the range of DOUBLE"),
        ("SELECT * FROM _input WHERE n < -1e400", "beyond the range of DOUBLE"),
        ("SELECT * RENAME (a AS x, b AS x) FROM _input", "'x' is defined twice"),
        ("SELECT * RENAME (a AS x), 1 AS x FROM _input", "'x' is defined twice"),
        ("SELECT 1 AS x, * RENAME (a AS x) FROM _input", "'x' is defined twice"),
    ],
)
def test_more_statements_refused_with_a_clear_config_error(sql, fragment, reliability):
    with pytest.raises(AirbyteTracedException) as info:
        Transformation(sql, S).close()
    reliability(cases=1)
    assert info.value.failure_type == FailureType.config_error
    assert fragment in info.value.message and f"stream '{S}'" in info.value.message


def test_rename_onto_an_existing_name_keeps_the_renamed_value(transform, reliability):
    [(_, doc)] = transform("SELECT * RENAME (k AS id) FROM _input").apply([{"k": "a", "id": "lower", "ID": "UPPER"}])
    [(_, swapped)] = transform("SELECT * RENAME (k AS id, id AS k) FROM _input").apply([{"k": "a", "id": "b"}])
    reliability(cases=2)
    assert doc == {"id": "a", "ID": "UPPER"}  # was {"id": "lower", ...}: the renamed value was lost
    assert swapped == {"id": "a", "k": "b"}


def test_exclude_without_an_exact_match_drops_every_case_variant(transform, reliability):
    t = transform("SELECT * EXCLUDE (Card) FROM _input")
    rows = t.apply([{"k": 1, "card": "4111", "CARD": "5500"}, {"k": 2, "Card": "x", "card": "kept"}, {"k": 3, "cArD": "y"}])
    reliability(cases=3)
    assert [doc for _, doc in rows] == [{"k": 1}, {"k": 2, "card": "kept"}, {"k": 3}]


@pytest.mark.parametrize("expr", ["'1e400'::JSON", "'[1, -1e999]'::JSON", "json_object('a', '2e308'::JSON)"])
def test_json_numbers_beyond_double_are_nulled_and_noted(transform, reliability, expr):
    [(_, doc, changes)] = transform(f"SELECT {expr} AS v FROM _input").run([{"k": 1}]).rows
    reliability(cases=1)
    assert "inf" not in repr(doc["v"])
    assert [(c["field"], c["change"]) for c in changes] == [("v", "NULLED")] and "double" in changes[0]["detail"]
