"""Lookups are driven from the batch's side and read stored documents only when a change needs them (issue 11, item 2),
proven with DuckDB's own EXPLAIN of the statements the store runs during real writes."""
from __future__ import annotations

import re

import pytest

from destination_collection.stores import duckdb_store
from unit_tests.destination.harness import record, stream

S = "orders"


@pytest.fixture
def plans(monkeypatch):
    """Every SELECT the DuckDB store runs during a write, with DuckDB's EXPLAIN of it (taken before it runs, while
    the staged Arrow tables are registered)."""
    seen: list[tuple[str, str]] = []
    original = duckdb_store.DuckDBStore.fetchall

    def explain(self, sql, params):
        # a SELECT with a join of the collection, or the one a set-based batch keeps in a temporary table
        select = sql
        if sql.lstrip().upper().startswith("CREATE TEMP TABLE"):
            select = sql[sql.index(" AS SELECT ") + 4:]
        if select.lstrip().upper().startswith("SELECT") and " JOIN " in select and f'"{S}"' in select:
            plan = "\n".join(row[1] for row in original(self, "EXPLAIN " + select, params))
            seen.append((sql, plan))

    def spy(self, sql, params=None):
        explain(self, sql, params)
        return original(self, sql, params)

    execute = duckdb_store.DuckDBStore.execute

    def spy_execute(self, sql, params=None):
        explain(self, sql, params)
        return execute(self, sql, params)

    monkeypatch.setattr(duckdb_store.DuckDBStore, "fetchall", spy)
    monkeypatch.setattr(duckdb_store.DuckDBStore, "execute", spy_execute)
    return seen


def _scan_projections(plan: str, table: str) -> set[str]:
    """The columns the plan's scan of ``table`` reads (the 'Projections' of its SEQ_SCAN box)."""
    boxes = plan.split("┌")
    for box in boxes:
        if "SEQ_SCAN" in box and f".{table}" in box.replace(" ", "") or (f"Table: {table}" in box and "SEQ_SCAN" in box):
            text = re.sub(r"[│└┘─┴┬├┤┼]", " ", box)
            if "Projections:" not in text:
                continue
            after = text.split("Projections:", 1)[1]
            return {word for word in after.split() if word.startswith("_") or word == "rowid"}
    return set()


def _seed(harness, count=50):
    harness.write([stream(S)], [record(S, {"k": k, "v": "seed", "n": k}) for k in range(count)])


def test_repsert_and_delete_batches_read_only_the_id_column(harness, plans):
    _seed(harness)
    plans.clear()
    harness.write(
        [stream(S)],
        [record(S, {"k": k, "v": "new", "_op": "repsert"}) for k in range(0, 10)]
        + [record(S, {"k": k, "_op": "delete"}) for k in range(10, 20)]
        + [record(S, {"k": 1000 + k, "v": "fresh", "_op": "repsert"}) for k in range(5)],
    )
    assert len(plans) == 1, [sql for sql, _ in plans]  # one lookup, no document read
    sql, plan = plans[0]
    assert "HASH_JOIN" in plan
    read = _scan_projections(plan, S)
    assert "_id" in read and not ({"_doc", "_meta"} & read), plan
    docs = harness.docs(S)
    assert len(docs) == 50 - 10 + 5 and docs["[1]"] == {"k": 1, "v": "new"} and "[15]" not in docs


def test_merges_read_documents_only_for_the_stored_ids_they_touch(harness, plans):
    _seed(harness)
    plans.clear()
    harness.write([stream(S)], [record(S, {"k": 3, "w": "merged"}), record(S, {"k": 999, "w": "new"})])
    assert len(plans) == 2, [sql for sql, _ in plans]
    first, second = plans
    assert not ({"_doc", "_meta"} & _scan_projections(first[1], S)), first[1]
    # the second join is by rowid, from the ids the first one found (one stored id here), and reads the documents
    assert "rowid" in second[0] and "HASH_JOIN" in second[1]
    assert {"_doc", "_meta"} <= _scan_projections(second[1], S), second[1]
    assert harness.docs(S)["[3]"] == {"k": 3, "v": "seed", "n": 3, "w": "merged"}


def test_upserts_of_whole_documents_read_no_document(harness, plans):
    """Changes with the stored documents' field names (what event streams send) overwrite every stored field: the
    lookup reads each row's _doc_shape, not its _doc; a change with fewer fields reads that one document."""
    _seed(harness)
    plans.clear()
    harness.write([stream(S)], [record(S, {"k": k, "v": "new", "n": -k}) for k in range(0, 50, 2)])
    assert len(plans) == 1, [sql for sql, _ in plans]
    assert not ({"_doc", "_meta"} & _scan_projections(plans[0][1], S)), plans[0][1]
    plans.clear()
    harness.write([stream(S)], [record(S, {"k": 4, "v": "newer", "n": 0}), record(S, {"k": 5, "v": "partial"})])
    assert len(plans) == 2 and {"_doc", "_meta"} <= _scan_projections(plans[1][1], S)
    docs = harness.docs(S)
    assert docs["[2]"] == {"k": 2, "v": "new", "n": -2} and docs["[3]"] == {"k": 3, "v": "seed", "n": 3}
    assert docs["[4]"] == {"k": 4, "v": "newer", "n": 0} and docs["[5]"] == {"k": 5, "v": "partial", "n": 5}


def test_append_with_generated_ids_does_no_lookup(harness, plans, monkeypatch):
    calls = []
    original = duckdb_store.DuckDBStore.lookup
    monkeypatch.setattr(duckdb_store.DuckDBStore, "lookup", lambda self, *a: calls.append(a) or original(self, *a))
    harness.write([stream(S, mode="append")], [record(S, {"k": k}) for k in range(20)])
    harness.write([stream(S, mode="append")], [record(S, {"k": k}) for k in range(20)])
    assert calls == [] and plans == []
    assert len(harness.docs(S)) == 40


def test_new_collections_have_no_primary_key_index(harness):
    """DuckDB's ART index of a key lives wholly in memory (~350 MB at 10 M ids) and serves no join."""
    _seed(harness, 5)
    rows = harness.query(f"SELECT constraint_type FROM duckdb_constraints() WHERE table_name = '{S}'")
    assert "PRIMARY KEY" not in {r["constraint_type"] for r in rows}
    assert {r["constraint_type"] for r in rows} >= {"NOT NULL"}
    assert harness.query(f"SELECT count(*) AS n FROM duckdb_indexes() WHERE table_name = '{S}'")[0]["n"] == 0


def test_an_id_stored_twice_is_written_back_once(harness):
    """Without a PRIMARY KEY nothing stops a copy made outside the writer (an INSERT … SELECT by hand); the next batch
    that writes such an _id replaces every row of it, so the collection heals instead of keeping a stale twin."""
    _seed(harness, 3)
    harness.execute(f"INSERT INTO {harness.table(S)} SELECT * FROM {harness.table(S)} WHERE _id = '[1]'")
    assert harness.query(f"SELECT count(*) AS n FROM {harness.table(S)} WHERE _id = '[1]'")[0]["n"] == 2
    harness.write([stream(S)], [record(S, {"k": 1, "w": "merged"}), record(S, {"k": 2, "_op": "repsert"})])
    rows = harness.query(f"SELECT _id FROM {harness.table(S)} ORDER BY _id")
    assert [r["_id"] for r in rows] == ["[0]", "[1]", "[2]"]
    assert harness.docs(S)["[1]"] == {"k": 1, "v": "seed", "n": 1, "w": "merged"}
