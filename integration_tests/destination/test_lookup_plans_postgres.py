"""PostgreSQL lookups go through the _id index, proportional to the batch (issue 11, item 2): EXPLAIN of the statement
the store runs during a real write, on a collection big enough for the planner to choose."""
from __future__ import annotations

import re

from destination_collection.stores import postgres_store
from unit_tests.destination.harness import record, stream

S = "orders"


def _seeded(harness) -> None:
    """20,000 stored documents, analyzed: big enough for the planner to choose between the index and a scan."""
    harness.write([stream(S)], [record(S, {"k": k, "v": "seed"}) for k in range(20_000)], batch_size=20_000)
    store = harness.store()
    try:
        store.execute(f"ANALYZE {harness.table(S)}")
    finally:
        store.close()


def test_lookup_uses_the_id_index_and_reads_documents_only_for_merges(harness, monkeypatch):
    _seeded(harness)
    seen = []
    original = postgres_store.PostgresStore.fetchall

    def spy(self, sql, params=None):
        if "_id = ANY(" in sql and sql.lstrip().upper().startswith("SELECT"):
            plan = "\n".join(row[0] for row in original(self, "EXPLAIN " + sql, params))
            seen.append((sql, params, plan))
        return original(self, sql, params)

    monkeypatch.setattr(postgres_store.PostgresStore, "fetchall", spy)
    harness.write(
        [stream(S)],
        [record(S, {"k": 1, "w": "merged"}), record(S, {"k": 2, "_op": "repsert", "v": "new"}),
         record(S, {"k": 3, "_op": "delete"}), record(S, {"k": 50_000, "v": "fresh"})],
    )
    assert len(seen) == 2, [sql for sql, _, _ in seen]
    for sql, params, plan in seen:
        assert "Index" in plan and "Seq Scan" not in plan, plan
    (first, (ids,), _), (second, (documents,), _) = seen
    assert sorted(ids) == ["[1]", "[2]", "[3]", "[50000]"] and "_doc," not in first and "_doc::" not in first
    # the merge onto a stored document with other fields (UPSERT of k=1); REPSERT, DELETE and new ids read none
    assert documents == ["[1]"] and "_doc::text" in second
    docs = harness.docs(S)
    assert docs["[1]"] == {"k": 1, "v": "seed", "w": "merged"} and docs["[2]"] == {"k": 2, "v": "new"}
    assert "[3]" not in docs and docs["[50000]"] == {"k": 50_000, "v": "fresh"}


def test_upserts_of_whole_documents_read_no_document(harness, monkeypatch):
    """A change with the stored document's field names overwrites all of them: the merge needs no stored values."""
    harness.write([stream(S)], [record(S, {"k": k, "v": "seed"}) for k in range(100)])
    statements = []
    original = postgres_store.PostgresStore.fetchall

    def spy(self, sql, params=None):
        statements.append(sql)
        return original(self, sql, params)

    monkeypatch.setattr(postgres_store.PostgresStore, "fetchall", spy)
    harness.write([stream(S)], [record(S, {"k": k, "v": f"new {k}"}) for k in range(0, 100, 2)])
    assert not [sql for sql in statements if "_doc::text" in sql], statements
    docs = harness.docs(S)
    assert docs["[2]"] == {"k": 2, "v": "new 2"} and docs["[3]"] == {"k": 3, "v": "seed"} and len(docs) == 100


def test_the_set_based_path_finds_and_deletes_stored_rows_through_the_id_index(pg_store_config, monkeypatch):
    """Set-based batches (set_batch_postgres.py): the stored rows of a batch's ids are read through the ``_id`` index
    (``= ANY`` of the batch's ids, materialized before the join), and the rewritten rows deleted through it: never a
    scan of the collection, which a hash join with the batch's ids could choose as the collection grows."""
    from destination_collection import set_batch
    from unit_tests.destination.harness import Harness

    harness = Harness({**pg_store_config, "set_based_batches": True})
    _seeded(harness)
    plans = []
    taken = []
    original_fetchall, original_execute = postgres_store.PostgresStore.fetchall, postgres_store.PostgresStore.execute
    original_apply = set_batch.SetBatch.apply
    collection = harness.table(S)

    def explained(self, sql):
        if collection in sql and sql.lstrip().upper().startswith(("CREATE TEMP TABLE __KC_LANE_RM", "WITH GONE")):
            body = sql if sql.upper().startswith("WITH") else sql.split(" AS ", 1)[1]
            plans.append((sql, "\n".join(row[0] for row in original_fetchall(self, "EXPLAIN " + body))))

    def fetchall(self, sql, params=None):
        explained(self, sql)
        return original_fetchall(self, sql, params)

    def execute(self, sql, params=None):
        explained(self, sql)
        return original_execute(self, sql, params)

    monkeypatch.setattr(postgres_store.PostgresStore, "fetchall", fetchall)
    monkeypatch.setattr(postgres_store.PostgresStore, "execute", execute)
    monkeypatch.setattr(set_batch.SetBatch, "apply", lambda self: taken.append(original_apply(self)) or taken[-1])
    harness.write([stream(S)], [record(S, {"k": k, "v": "changed"}) for k in (*range(0, 2_000, 2), *range(30_000, 31_000))])
    assert taken == [True]
    assert len(plans) == 2, [sql for sql, _ in plans]
    for sql, plan in plans:
        assert "Index" in plan and not re.search(rf"Seq Scan on {S}\b", plan), (sql, plan)
    docs = harness.docs(S)
    assert len(docs) == 21_000 and docs["[2]"] == {"k": 2, "v": "changed"} and docs["[3]"] == {"k": 3, "v": "seed"}
