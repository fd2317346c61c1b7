"""The set-based path's differential tests (unit_tests/destination/test_set_batch.py) against a real PostgreSQL: the
same randomized Kinesis-shaped batches written with the set-based path (set_batch_postgres.py) and with it switched
off (config ``set_based_batches: true``, its default being false on PostgreSQL; ``PostgresStore.set_batches = False``: every batch through documents.py and operations.fold, the reference)
must give identical collections, column types and summaries; the explicit scenarios of the DuckDB tests run here as
they are. PostgreSQL adds its own hand-overs: a NUL character anywhere in a batch (jsonb cannot hold it; the
per-record path encodes it) and field names that are not identifiers (empty, or past 63 bytes)."""
from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from destination_collection.stores.postgres_store import PostgresStore
from unit_tests.destination import test_set_batch as cases
from unit_tests.destination.harness import Harness, record

S = cases.S
_schemas = itertools.count()
TAKEN: list[bool] = []


_CHECK = cases.check


def _check(server, scenario):
    prefix = f"sb{next(_schemas)}"
    counter = itertools.count()
    return _CHECK(
        scenario, lambda: Harness({**server.store_config(schema=f"{prefix}_{next(counter)}"), "set_based_batches": True}),
        PostgresStore,
    )


def _own_database(server, user: str, password: str, database: str, before=(), after=()) -> None:
    """A fresh login role owning a fresh database; ``before``/``after`` run as the admin around CREATE DATABASE."""
    with server.admin_connect("postgres") as con:
        con.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        con.execute(f'DROP ROLE IF EXISTS "{user}"')
        con.execute(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'")
        for sql in before:
            con.execute(sql)
        con.execute(f'CREATE DATABASE "{database}" OWNER "{user}"')
        for sql in after:
            con.execute(sql)


@pytest.fixture
def on_postgres(postgres_server, monkeypatch):
    """The DuckDB module's explicit tests, run against PostgreSQL (their ``check`` calls go to ``_check``)."""
    monkeypatch.setattr(cases, "check", lambda scenario: _check(postgres_server, scenario))


@settings(max_examples=int(os.environ.get("SET_BATCH_PG_EXAMPLES", "50")), deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if os.environ.get("DIFFERENTIAL_SHRINK") else []))
@given(scenario=cases.scenarios())
def test_the_set_based_path_and_the_per_record_path_write_the_same_collections_postgres(postgres_server, scenario):
    TAKEN.extend(_check(postgres_server, scenario))


def test_the_randomized_batches_exercise_the_set_based_path_postgres(postgres_server):
    if not TAKEN:
        test_the_set_based_path_and_the_per_record_path_write_the_same_collections_postgres(postgres_server)
    share = sum(TAKEN) / len(TAKEN)
    assert 0.15 < share < 0.95, f"{sum(TAKEN)} of {len(TAKEN)} batches took the set-based path"


def test_repeated_ids_in_one_batch_and_across_batches_are_folded_the_same_way(on_postgres):
    cases.test_repeated_ids_in_one_batch_and_across_batches_are_folded_the_same_way()


def test_a_batch_the_set_based_path_does_not_cover_is_written_by_the_per_record_path_whole(on_postgres):
    cases.test_a_batch_the_set_based_path_does_not_cover_is_written_by_the_per_record_path_whole()


def test_repserts_and_deletes_are_folded_and_counted_the_same_way(on_postgres):
    cases.test_repserts_and_deletes_are_folded_and_counted_the_same_way()


def test_field_names_of_every_kind_are_written_the_same_way(postgres_server):
    """The odd names of the DuckDB test; a name past 63 bytes (PostgreSQL's identifier limit, which json_to_record's
    column list is) sends its batch the per-record way, one of 63 bytes does not."""
    odd = {"'": "q", '"': 2, "a.b": 3, "[0]": 4, "$": 5, "/": 6, "~": 7, "~1": 8, "id": "l", "ID": "U",
           "Id": 9, "😀": 10, "x" * 63: 11, "_kinesis_": "bare", "_kinesis_x'y": "meta", "_other": None,
           "seq": "a column name of the staging table", "e": 1, "g": 2, "v0": 3}
    wide = {f"f{i}": i for i in range(300)}
    scenario = {"mode": "id_field", "collection": {"stream": S, "id_field": "order"}, "pk": [["order"]],
                "overwrite": False, "batch_size": 10_000, "syncs": [
                    [record(S, cases._kinesis("o-1", 1, **odd)), record(S, cases._kinesis("o-2", 2, **odd))],
                    [record(S, cases._kinesis("o-1", 3, **odd)), record(S, {**wide, **cases._kinesis("o-3", 4)})],
                    [record(S, cases._kinesis("o-4", 5, **{"é" * 32: 1}))],  # 64 bytes
                    [record(S, cases._kinesis("o-4", 6, **{"": 1}))],  # not an identifier
                ]}
    assert _check(postgres_server, scenario) == [True, True, False, False]


def test_a_nul_character_sends_the_batch_the_per_record_way(postgres_server):
    """jsonb cannot hold U+0000: the per-record path stores such strings encoded and notes it; a batch with one goes
    that way whole, with the same collection as the reference."""
    scenario = {"mode": "id_field", "collection": {"stream": S, "id_field": "order"}, "pk": [["order"]],
                "overwrite": False, "batch_size": 10_000, "syncs": [
                    [record(S, cases._kinesis("o-1", 1, a="x")), record(S, cases._kinesis("o-2", 2, a="n\x00ul"))],
                    [record(S, cases._kinesis("o-1", 3, a="y")), record(S, cases._kinesis("o-3", 4, a="back\\u0000"))],
                    [record(S, cases._kinesis("o-1", 5, a="z"))],
                ]}
    assert _check(postgres_server, scenario) == [False, False, True]


def test_without_the_temp_privilege_batches_take_the_per_record_path(postgres_server, caplog):
    """The set-based path stages batches in temporary tables; a user without TEMP on the database gets the per-record
    path (which needs none) and a warning naming the GRANT, not a failed sync."""
    import psycopg

    user, database = "kc_no_temp", "kc_no_temp_db"
    _own_database(postgres_server, user, "pw-no-temp", database, after=[
        f'REVOKE TEMP ON DATABASE "{database}" FROM PUBLIC', f'REVOKE TEMP ON DATABASE "{database}" FROM "{user}"'])
    config = {**postgres_server.store_config(schema="public"), "database": database, "username": user,
              "password": "pw-no-temp", "set_based_batches": True}
    with psycopg.connect(host=config["host"], port=config["port"], dbname=database, user=user,
                         password="pw-no-temp") as con:
        assert con.execute("SELECT has_database_privilege(current_database(), 'TEMP')").fetchone()[0] is False
    harness = Harness(config)
    harness.options = {"collections": [{"stream": S, "id_field": "order"}]}
    with caplog.at_level("WARNING", logger="airbyte"):
        harness.write([cases.stream(S, pk=[["order"]])], [record(S, cases._kinesis(f"o-{n}", n, a=n)) for n in range(3)])
    assert {key: row["_doc"] for key, row in harness.rows(S).items()} == {f"o-{n}": {"order": f"o-{n}", "a": n} for n in range(3)}
    assert any("may not create temporary tables" in r.getMessage() and "GRANT TEMP ON DATABASE" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_names_and_values_that_sql_copy_and_psycopg_treat_specially(postgres_server):
    """What the PostgreSQL SQL and its COPY could misread: psycopg placeholders (``%s``, ``%(x)s``), SQL keywords in
    any case, the COPY delimiter and quote (\\x02, \\x01) and newlines in strings (orjson escapes them), backslashes,
    braces, a name of exactly 63 bytes in multibyte characters, numbers at the edges of double precision, a float
    that jsonb would print as an integer (1e20) and negative zero."""
    odd = {"%s": "%s", "%(x)s": "%(x)s", "select": 1, "SELECT": 2, "from": None, "{": "}", "\\": "\\\\",
           "a\x02b": "c\x01d\ne", "é" * 31 + "x": 3, "big": 1.7976931348623157e308, "tiny": 5e-324,
           "float_int": 1e20, "negzero": -0.0, "sn": "1e20"}
    scenario = {"mode": "id_field", "collection": {"stream": S, "id_field": "order"}, "pk": [["order"]],
                "overwrite": False, "batch_size": 10_000, "syncs": [
                    [record(S, cases._kinesis("o-1", 1, **odd)), record(S, cases._kinesis("o-2", 2, **odd))],
                    [record(S, cases._kinesis("o-1", 3, **odd)), record(S, cases._kinesis("o-3", 4, **odd))],
                ]}
    assert _check(postgres_server, scenario) == [True, True]


def test_a_role_with_standard_conforming_strings_off_gets_the_same_collection(postgres_server):
    """The path's SQL writes backslashes in string literals as themselves (regular expressions, '\\u0000'); the
    session turns standard_conforming_strings on, whatever the server or role says."""
    user, database = "kc_nonstd", "kc_nonstd_db"
    _own_database(postgres_server, user, "pw-nonstd", database,
                  before=[f'ALTER ROLE "{user}" SET standard_conforming_strings = off'])
    schemas = itertools.count()

    def harness():
        return Harness({**postgres_server.store_config(schema=f"n{next(schemas)}"), "database": database,
                        "username": user, "password": "pw-nonstd", "set_based_batches": True})

    values = {"s": "back\\slash", "op_like": " repsert\\n", "t": "a.b"}
    scenario = {"mode": "id_field", "collection": {"stream": S, "id_field": "order"}, "pk": [["order"]],
                "overwrite": False, "batch_size": 10_000, "syncs": [
                    [record(S, cases._kinesis("o-1", 1, **values)), record(S, cases._kinesis("o-2", 2, **values))],
                    [record(S, {**cases._kinesis("o-1", 3, **values), "_op": "repsert\t"}),
                     record(S, {**cases._kinesis("o-2", 4), "_op": " DELETE"}),
                     record(S, {**cases._kinesis("o-3", 5, **values), "_op": "REPSERT"})],
                ]}
    assert _CHECK(scenario, harness, PostgresStore) == [True, True]
