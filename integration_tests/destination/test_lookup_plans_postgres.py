"""PostgreSQL lookups go through the _id index, proportional to the batch (issue 11, item 2): EXPLAIN of the statement
the store runs during a real write, on a collection big enough for the planner to choose."""
from __future__ import annotations

from destination_collection.stores import postgres_store
from unit_tests.destination.harness import record, stream

S = "orders"


def test_lookup_uses_the_id_index_and_reads_documents_only_for_merges(harness, monkeypatch):
    harness.write([stream(S)], [record(S, {"k": k, "v": "seed"}) for k in range(20_000)], batch_size=20_000)
    store = harness.store()
    try:
        store.execute(f"ANALYZE {harness.table(S)}")
    finally:
        store.close()
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
    assert len(seen) == 1
    sql, params, plan = seen[0]
    assert "Index" in plan and "Seq Scan" not in plan, plan
    documents, _, ids = params
    assert sorted(ids) == ["[1]", "[2]", "[3]", "[50000]"]
    assert sorted(documents) == ["[1]", "[50000]"]  # the merges (UPSERT); REPSERT and DELETE read no document
    docs = harness.docs(S)
    assert docs["[1]"] == {"k": 1, "v": "seed", "w": "merged"} and docs["[2]"] == {"k": 2, "v": "new"}
    assert "[3]" not in docs and docs["[50000]"] == {"k": 50_000, "v": "fresh"}
