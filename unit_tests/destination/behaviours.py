"""Store-independent behaviour tests. Collected by test_behaviours_duckdb.py (unit) and by
integration_tests/destination/test_behaviours_postgres.py (a real PostgreSQL), each providing a ``harness``."""
from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from unit_tests.destination.harness import KINESIS_PK, complete, kinesis, record, state, stream, utc

S = "orders"


# -- documents ----------------------------------------------------------------------------------------------------
def test_kinesis_record_becomes_document_with_meta_and_deterministic_id(harness):
    streams = [stream(S, pk=KINESIS_PK)]
    batch = [kinesis(S, 1, {"user": "ann", "amount": 3}), kinesis(S, 2, {"user": "bob", "amount": 4}, sub=1)]
    harness.write(streams, batch + [state(S, {"n": 1})])
    harness.write(streams, batch + [state(S, {"n": 2})])  # re-delivery
    rows = harness.rows(S)
    assert len(rows) == 2
    first_id = json.dumps(["shardId-000000000000", str(49_590_338_271_490_256_608_559_692_538_361_571_095_921_575_989_136_588_899), 0], separators=(",", ":"))
    row = rows[first_id]
    assert row["_doc"] == {"user": "ann", "amount": 3}
    assert row["_meta"]["kinesis"] == {
        "stream": S,
        "shard_id": "shardId-000000000000",
        "sequence_number": "49590338271490256608559692538361571095921575989136588899",
        "sub_sequence_number": 0,
        "partition_key": "pk-1",
        "arrival_time": "2026-11-25T21:30:39.248Z",
    }
    assert row["_event_time"] == dt.datetime(2026, 11, 25, 21, 30, 39, 248000, tzinfo=dt.timezone.utc)
    assert row["user"] == "ann" and row["amount"] == 3
    assert "_kinesis_shard_id" not in row


def test_raw_record_kept_under_meta_bad_and_shadowed_fields_restored(harness):
    raw = kinesis(S, 1, {})
    raw["record"]["data"].update({"_kinesis_raw_data": "AAEC/w==", "_kinesis_error": "payload is not JSON"})
    shadowed = kinesis(S, 2, {"x": 1})
    shadowed["record"]["data"]["_kinesis_shadowed"] = {"_kinesis_stream": "payload's own"}
    harness.write([stream(S, pk=KINESIS_PK)], [raw, shadowed])
    rows = list(harness.rows(S).values())
    bad = [r for r in rows if "bad" in r["_meta"]]
    assert len(bad) == 1 and bad[0]["_meta"]["bad"] == {"reason": "payload is not JSON", "raw": "AAEC/w=="}
    assert bad[0]["_doc"] == {}
    other = [r for r in rows if "bad" not in r["_meta"]][0]
    assert other["_doc"] == {"x": 1, "_kinesis_stream": "payload's own"}
    assert other["_meta"]["kinesis"]["stream"] == S


def test_id_derivation_record_id_pk_composite_unicode_and_uuid(harness):
    streams = [
        stream("own", pk=[["k"]]),
        stream("composite", pk=[["a"], ["b", "c"]]),
        stream("appended", mode="append", pk=[["k"]]),
        stream("configured", pk=[["k"]]),
    ]
    harness.options = {"collections": [{"stream": "configured", "id_field": "order_no"}]}
    harness.write(
        streams,
        [
            record("own", {"_id": "dms-key-1", "k": 1}),
            record("own", {"k": 2}),
            record("composite", {"a": "ü€", "b": {"c": 7}, "v": 1}),
            record("composite", {"a": "ü€", "b": {"c": "7"}, "v": 2}),
            record("composite", {"a": "x,y", "b": {"c": 1}, "v": 3}),
            record("composite", {"a": "x", "b": {"c": "y,1"}, "v": 4}),
            record("appended", {"k": 1}),
            record("appended", {"k": 1}),
            record("configured", {"k": 1, "order_no": 1234}),
        ],
    )
    assert set(harness.docs("own")) == {"dms-key-1", "[2]"}
    assert set(harness.docs("composite")) == {'["ü€",7]', '["ü€","7"]', '["x,y",1]', '["x","y,1"]'}
    appended = harness.docs("appended")
    assert len(appended) == 2 and all(len(k) == 36 for k in appended)  # UUIDs: the pk is not used in append
    assert set(harness.docs("configured")) == {"1234"}


def test_event_time_from_field_units_and_fallbacks(harness):
    harness.options = {
        "collections": [
            {"stream": "secs", "event_time_field": "ts", "event_time_unit": "s"},
            {"stream": "auto", "event_time_field": "ts"},
        ]
    }
    harness.write(
        [stream("secs"), stream("auto"), stream("plain")],
        [
            record("secs", {"k": 1, "ts": 1_700_000_000}),
            record("auto", {"k": 1, "ts": 1_700_000_000_123}),
            record("auto", {"k": 2, "ts": 1_700_000_000_123_456}),
            record("auto", {"k": 3, "ts": "2024-02-29T12:00:00+02:00"}),
            record("auto", {"k": 4, "ts": "not a time"}),
            record("plain", {"k": 1, "_event_time": "2020-01-01T00:00:00Z"}),
        ],
    )
    assert harness.rows("secs")["[1]"]["_event_time"] == utc(2023, 11, 14, 22, 13, 20)
    auto = harness.rows("auto")
    assert auto["[1]"]["_event_time"] == utc(2023, 11, 14, 22, 13, 20, 123000)
    assert auto["[2]"]["_event_time"] == utc(2023, 11, 14, 22, 13, 20, 123456)
    assert auto["[3]"]["_event_time"] == utc(2024, 2, 29, 10, 0, 0)
    fallback = auto["[4]"]
    assert fallback["_event_time"] > utc(2025, 1, 1)  # ingestion time
    assert fallback["_airbyte_meta"]["changes"][0]["field"] == "ts"
    assert fallback["_doc"]["ts"] == "not a time"
    assert harness.rows("plain")["[1]"]["_event_time"] == utc(2020, 1, 1)


# -- _op ---------------------------------------------------------------------------------------------------------
def _seed(harness, streams):
    harness.write(streams, [record(S, {"k": i, "v": "old", "keep": i}) for i in range(1, 7)])


def test_every_op_on_existing_and_absent_documents(harness):
    streams = [stream(S)]
    _seed(harness, streams)
    harness.write(
        streams,
        [
            record(S, {"k": 1, "v": "new", "_op": "INSERT"}),  # exists: ignored
            record(S, {"k": 11, "v": "new", "_op": "insert"}),  # absent: inserted
            record(S, {"k": 2, "v": "new", "_op": "UPDATE"}),  # merged
            record(S, {"k": 12, "v": "new", "_op": "Update"}),  # absent: ignored
            record(S, {"k": 3, "v": "new"}),  # default UPSERT merges
            record(S, {"k": 13, "v": "new", "_op": "upsert"}),  # inserted
            record(S, {"k": 4, "_op": "DELETE"}),
            record(S, {"k": 14, "_op": "delete"}),  # absent: nothing
            record(S, {"k": 5, "v": "new", "_op": "REPLACE"}),  # whole doc replaced
            record(S, {"k": 15, "v": "new", "_op": "replace"}),  # absent: ignored
            record(S, {"k": 6, "v": "new", "_op": "REPSERT"}),
            record(S, {"k": 16, "v": "new", "_op": "repsert"}),
        ],
    )
    docs = harness.docs(S)
    assert docs["[1]"] == {"k": 1, "v": "old", "keep": 1}
    assert docs["[11]"] == {"k": 11, "v": "new"}
    assert docs["[2]"] == {"k": 2, "v": "new", "keep": 2}
    assert "[12]" not in docs
    assert docs["[3]"] == {"k": 3, "v": "new", "keep": 3}
    assert docs["[13]"] == {"k": 13, "v": "new"}
    assert "[4]" not in docs and "[14]" not in docs
    assert docs["[5]"] == {"k": 5, "v": "new"}
    assert "[15]" not in docs
    assert docs["[6]"] == {"k": 6, "v": "new"}
    assert docs["[16]"] == {"k": 16, "v": "new"}
    assert harness.rows(S)["[2]"]["keep"] == 2  # typed column kept for merged field


def test_several_ops_on_one_id_in_one_batch_apply_in_order(harness):
    streams = [stream(S)]
    harness.write(
        streams,
        [
            record(S, {"k": 1, "a": 1, "_op": "INSERT"}),
            record(S, {"k": 1, "b": 2, "_op": "UPDATE"}),
            record(S, {"k": 1, "a": 9, "_op": "INSERT"}),  # exists now: ignored
            record(S, {"k": 2, "a": 1}),
            record(S, {"k": 2, "_op": "DELETE"}),
            record(S, {"k": 2, "c": 3, "_op": "UPDATE"}),  # deleted: ignored
            record(S, {"k": 3, "a": 1}),
            record(S, {"k": 3, "_op": "DELETE"}),
            record(S, {"k": 3, "z": 1, "_op": "REPSERT"}),
        ],
    )
    assert harness.docs(S) == {"[1]": {"k": 1, "a": 1, "b": 2}, "[3]": {"k": 3, "z": 1}}
    # and across a stored document: delete + re-insert in one batch
    harness.write(streams, [record(S, {"k": 1, "_op": "DELETE"}), record(S, {"k": 1, "fresh": True, "_op": "INSERT"})])
    assert harness.docs(S)["[1]"] == {"k": 1, "fresh": True}


def test_unknown_op_is_recorded_in_meta_not_a_crash(harness):
    streams = [stream(S)]
    harness.write(streams, [record(S, {"k": 1, "v": 1})])
    echoes = harness.write(
        streams, [record(S, {"k": 1, "v": 2, "_op": "MERGE"}), record(S, {"k": 2, "_op": 5}), state(S, {"s": 1})]
    )
    assert len(echoes) == 1
    rows = harness.rows(S)
    assert rows["[1]"]["_doc"] == {"k": 1, "v": 1}  # data untouched
    assert "unknown _op" in rows["[1]"]["_meta"]["error"]["reason"]
    assert rows["[1]"]["_meta"]["error"]["record"] == {"k": 1, "v": 2, "_op": "MERGE"}
    assert rows["[2]"]["_doc"] == {} and rows["[2]"]["_meta"]["error"]["error_only"] is True
    # an error-only document does not block a later INSERT
    harness.write(streams, [record(S, {"k": 2, "v": 3, "_op": "INSERT"})])
    assert harness.rows(S)["[2]"]["_doc"] == {"k": 2, "v": 3}
    assert "error" not in harness.rows(S)["[2]"]["_meta"]


def test_upserts_merge_alike_whether_or_not_they_carry_every_stored_field(harness):
    """A merge whose change has the stored document's field names (and _meta keys) is applied without reading the
    stored document (``_doc_shape``); every other merge reads it. Both give the ``_op`` table's result."""
    streams = [stream(S)]
    bad = {"_kinesis_raw_data": "AAEC", "_kinesis_error": "payload is not JSON"}
    harness.write(streams, [
        record(S, {"k": 1, "a": 1, "b": 2}),
        record(S, {"k": 2, "a": 1, "b": 2}),
        record(S, {"k": 3, "a": 1, "b": 2}),
        record(S, {"k": 4, "a": 1, **bad}),
        record(S, {"k": 5, "_op": "MERGE"}),  # an error-only placeholder
        record(S, {"k": 6, "_op": "MERGE"}),
        record(S, {"k": 7, "a": 1, "_meta": {"src": "seed"}}),
        record(S, {"k": 8, "a": 1, "b": 2}),
    ])
    harness.write(streams, [
        record(S, {"k": 1, "a": 10, "b": 20}),  # the same names: nothing to read
        record(S, {"k": 2, "b": 20, "a": 10}),  # the same names in another order: the stored order stays
        record(S, {"k": 3, "a": 10}),  # fewer names: b is kept
        record(S, {"k": 4, "a": 10}),  # the stored _meta.bad described the stored change only
        record(S, {"k": 5}),  # onto a placeholder: inserted
        record(S, {"k": 6, "_op": "INSERT"}),
        record(S, {"k": 7, "a": 10}),  # _meta.src is kept (a _meta key the change lacks)
        record(S, {"k": 8, "a": 10, "b": 20}), record(S, {"k": 8, "a": 11}), record(S, {"k": 8, "a": 12, "b": 22}),
    ])
    rows = harness.rows(S)
    docs = {key: row["_doc"] for key, row in rows.items()}
    assert docs["[1]"] == {"k": 1, "a": 10, "b": 20}
    assert docs["[2]"] == {"k": 2, "a": 10, "b": 20}
    if harness.store_config["store_type"] == "duckdb":  # (PostgreSQL's jsonb orders keys its own way)
        assert list(docs["[2]"]) == ["k", "a", "b"]
    assert docs["[3]"] == {"k": 3, "a": 10, "b": 2}
    assert docs["[4]"] == {"k": 4, "a": 10} and "bad" not in rows["[4]"]["_meta"]
    assert docs["[5]"] == {"k": 5} and "error" not in rows["[5]"]["_meta"]
    assert docs["[6]"] == {"k": 6} and "error" not in rows["[6]"]["_meta"]
    assert docs["[7]"] == {"k": 7, "a": 10} and rows["[7]"]["_meta"]["supplied"] == {"src": "seed"}
    assert docs["[8]"] == {"k": 8, "a": 12, "b": 22}
    # and a third batch merges onto what the second wrote (its shapes are the merged documents')
    harness.write(streams, [record(S, {"k": 3, "a": 100, "b": 200}), record(S, {"k": 3, "c": 1})])
    assert harness.docs(S)["[3]"] == {"k": 3, "a": 100, "b": 200, "c": 1}


def test_a_collection_made_before_doc_shape_gets_the_column_and_merges_the_same(harness):
    streams = [stream(S)]
    harness.write(streams, [record(S, {"k": k, "a": 1, "b": 2}) for k in range(3)])
    harness.execute(f"ALTER TABLE {harness.table(S)} DROP COLUMN _doc_shape")
    harness.write(streams, [record(S, {"k": 0, "a": 10, "b": 20}), record(S, {"k": 1, "a": 10})])
    rows = harness.rows(S)
    assert {key: row["_doc"] for key, row in rows.items()} == {
        "[0]": {"k": 0, "a": 10, "b": 20}, "[1]": {"k": 1, "a": 10, "b": 2}, "[2]": {"k": 2, "a": 1, "b": 2}}
    assert rows["[0]"]["_doc_shape"] is not None and rows["[2]"]["_doc_shape"] is None  # old rows: read when needed
    harness.write(streams, [record(S, {"k": 2, "a": 10, "b": 20})])
    assert harness.docs(S)["[2]"] == {"k": 2, "a": 10, "b": 20}


def test_a_typed_column_that_an_older_version_named_doc_shape_stays_the_users(harness):
    """Before _doc_shape existed, a payload field of that name got a typed column of that name: it keeps holding the
    field's values, and the collection goes without shapes (its documents are read whenever a merge needs them)."""
    streams = [stream(S)]
    harness.write(streams, [record(S, {"k": 1, "a": 1})])
    harness.execute(
        f"ALTER TABLE {harness.table(S)} DROP COLUMN _doc_shape",
        f"ALTER TABLE {harness.table(S)} ADD COLUMN _doc_shape VARCHAR",
        f"INSERT INTO {harness.table('_collection_columns')} (table_name, field, column_name, column_type, declared) "
        f"VALUES ('{S}', '_doc_shape', '_doc_shape', 'VARCHAR', false)",
    )
    harness.write(streams, [record(S, {"k": 1, "a": 2, "_doc_shape": "mine"}), record(S, {"k": 2, "_doc_shape": "x"})])
    harness.write(streams, [record(S, {"k": 1, "a": 3, "_doc_shape": "mine"}), record(S, {"k": 2, "b": 1})])
    rows = harness.rows(S)
    assert rows["[1]"]["_doc"] == {"k": 1, "a": 3, "_doc_shape": "mine"} and rows["[1]"]["_doc_shape"] == "mine"
    assert rows["[2]"]["_doc"] == {"k": 2, "_doc_shape": "x", "b": 1} and rows["[2]"]["_doc_shape"] == "x"


def test_guard_ignores_older_changes_and_counts_them(harness, caplog):
    harness.options = {"collections": [{"stream": S, "event_time_field": "ts", "ignore_older_changes": True}]}
    streams = [stream(S)]
    harness.write(streams, [record(S, {"k": 1, "v": "t10", "ts": 10}), record(S, {"k": 2, "v": "t10", "ts": 10})])
    with caplog.at_level("INFO", logger="airbyte"):
        harness.write(
            streams,
            [
                record(S, {"k": 1, "v": "t5", "ts": 5}),  # older: ignored
                record(S, {"k": 1, "v": "t20", "ts": 20}),
                record(S, {"k": 1, "v": "t15", "ts": 15}),  # older than the t20 in the same batch: ignored
                record(S, {"k": 2, "_op": "DELETE", "ts": 3}),  # older delete: ignored
            ],
        )
    docs = harness.docs(S)
    assert docs["[1]"]["v"] == "t20" and docs["[2]"]["v"] == "t10"
    assert "3 older changes ignored" in caplog.text


def test_a_batch_that_deletes_and_changes_columns_commits(harness):
    """Deletes and rewrites in the same batch (one transaction) as new and widened columns: DuckDB refuses to commit
    an ALTER TABLE that follows a DELETE of the same table, so column changes must come first."""
    streams = [stream(S)]
    harness.write(streams, [record(S, {"k": k, "n": k}) for k in range(1, 5)])
    harness.write(
        streams,
        [
            record(S, {"k": 1, "_op": "delete"}),
            record(S, {"k": 2, "n": 2.5, "_op": "repsert"}),  # widens n from BIGINT
            record(S, {"k": 3, "added": "x"}),  # a new column, merged onto a stored document
            record(S, {"k": 4, "_op": "delete"}),
            record(S, {"k": 5, "other": True}),  # another new column
        ],
    )
    docs = harness.docs(S)
    assert docs == {"[2]": {"k": 2, "n": 2.5}, "[3]": {"k": 3, "n": 3, "added": "x"}, "[5]": {"k": 5, "other": True}}
    rows = harness.rows(S)
    assert rows["[3]"]["added"] == "x" and rows["[2]"]["n"] == 2.5 and rows["[5]"]["other"] is True


def test_summary_accounts_for_every_record(harness, caplog):
    """Every record ends in exactly one count, and the counts sum to the records received plus the extra rows a
    transformation emitted (issue 11: "600 records: 422 inserted, 14 updated" left users asking where 164 went)."""
    T = "parts"
    harness.options = {
        "collections": [
            {"stream": S, "event_time_field": "ts", "ignore_older_changes": True},
            {"stream": T, "transformation_sql": "SELECT k, unnest(string_split(s, ',')) AS part FROM _input WHERE k <> 3"},
        ]
    }
    streams = [stream(S), stream(T, mode="append")]
    harness.write(streams, [record(S, {"k": k, "v": "seed", "ts": 10}) for k in range(1, 6)])
    with caplog.at_level("INFO", logger="airbyte"):
        harness.write(
            streams,
            [
                record(S, {"k": 1, "v": "updated", "ts": 20, "_op": "update"}),  # updated
                record(S, {"k": 1, "v": "old", "ts": 5}),  # older than the document: ignored
                record(S, {"k": 2, "ts": 20, "_op": "delete"}),  # deleted
                record(S, {"k": 3, "w": "new", "ts": 20, "_op": "repsert"}),  # replaced
                record(S, {"k": 6, "v": "a", "ts": 20, "_op": "insert"}),  # merged into the next change
                record(S, {"k": 6, "w": "b", "ts": 21}),  # inserted (k=6 was absent)
                record(S, {"k": 7, "v": "x", "ts": 20, "_op": "update"}),  # skipped: absent
                record(S, {"k": 4, "ts": 20, "_op": "bogus"}),  # error
                record(S, {"k": 5, "v": "x", "ts": 20}),  # merged into the delete
                record(S, {"k": 5, "ts": 21, "_op": "delete"}),  # deleted
                record(S, {"k": 8, "ts": 20, "_op": "delete"}),  # skipped: absent
                record(S, {"k": 1, "v": "again", "ts": 30, "_op": "insert"}),  # skipped: exists
                record(T, {"k": 1, "s": "a,b,c"}),  # three rows: two extra
                record(T, {"k": 2, "s": "d"}),
                record(T, {"k": 3, "s": "e"}),  # filtered
            ],
        )
    assert (
        "12 records: 1 inserted, 1 updated, 1 replaced, 2 deleted, 2 merged into a later change of the same _id in "
        "their batch, 3 skipped by their _op, 1 older changes ignored, 1 errors (kept in _meta.error), 0 filtered"
    ) in caplog.text
    assert (
        "3 records (+2 extra rows from the transformation): 4 inserted, 0 updated, 0 replaced, 0 deleted, 0 merged "
        "into a later change of the same _id in their batch, 0 skipped by their _op, 0 older changes ignored, "
        "0 errors (kept in _meta.error), 1 filtered"
    ) in caplog.text
    assert "does not add up" not in caplog.text
    docs = harness.docs(S)
    assert set(docs) == {"[1]", "[3]", "[4]", "[6]"}
    assert docs["[1]"]["v"] == "updated" and docs["[3]"] == {"k": 3, "w": "new", "ts": 20}
    assert docs["[6]"] == {"k": 6, "v": "a", "w": "b", "ts": 21}
    assert sorted(d["part"] for d in harness.docs(T).values()) == ["a", "b", "c", "d"]


def test_without_guard_the_latest_received_wins(harness):
    harness.options = {"collections": [{"stream": S, "event_time_field": "ts"}]}
    harness.write([stream(S)], [record(S, {"k": 1, "v": "t10", "ts": 10}), record(S, {"k": 1, "v": "t5", "ts": 5})])
    assert harness.docs(S)["[1]"]["v"] == "t5"


# -- sync modes and generations ----------------------------------------------------------------------------------
def test_append_keeps_every_record(harness):
    streams = [stream(S, mode="append")]
    harness.write(streams, [record(S, {"k": 1}), record(S, {"k": 1})])
    harness.write(streams, [record(S, {"k": 1})])
    assert len(harness.docs(S)) == 3


def test_append_dedup_keeps_latest_per_key(harness):
    streams = [stream(S)]
    harness.write(streams, [record(S, {"k": 1, "v": 1}), record(S, {"k": 1, "v": 2})])
    harness.write(streams, [record(S, {"k": 1, "v": 3}), record(S, {"k": 2, "v": 1})])
    assert harness.docs(S) == {"[1]": {"k": 1, "v": 3}, "[2]": {"k": 2, "v": 1}}


def test_overwrite_replaces_only_after_stream_complete(harness):
    streams = [stream(S, mode="overwrite")]
    harness.write(streams, [record(S, {"k": 1}), record(S, {"k": 2}), complete(S)])
    assert len(harness.docs(S)) == 2
    # an interrupted overwrite (no COMPLETE): readers still see the old documents plus the new ones
    harness.write(streams, [record(S, {"k": 3}), state(S, {})])
    assert sorted(d["k"] for d in harness.docs(S).values()) == [1, 2, 3]
    # a finished overwrite leaves exactly the new generation
    harness.write(streams, [record(S, {"k": 4}), record(S, {"k": 5}), complete(S), state(S, {})])
    assert sorted(d["k"] for d in harness.docs(S).values()) == [4, 5]
    # empty source: overwrite empties only once complete
    harness.write(streams, [complete(S)])
    assert harness.docs(S) == {}


def test_overwrite_with_repeated_generation_ids_still_replaces(harness):
    streams = [stream(S, mode="overwrite", generation_id=1, minimum_generation_id=1)]
    harness.write(streams, [record(S, {"k": 1}), complete(S)])
    harness.write(streams, [record(S, {"k": 2}), complete(S)])
    assert [d["k"] for d in harness.docs(S).values()] == [2]


def test_refresh_truncates_older_generations_after_complete(harness):
    harness.write([stream(S, generation_id=1, minimum_generation_id=0)], [record(S, {"k": 1, "a": 1}), record(S, {"k": 2})])
    refresh = [stream(S, generation_id=2, minimum_generation_id=2)]
    harness.write(refresh, [record(S, {"k": 1, "b": 2}), state(S, {"x": 1})])
    rows = harness.rows(S)
    # before COMPLETE the old generation is still visible; the stored doc of gen 1 counted as absent (no merge)
    assert rows["[1]"]["_doc"] == {"k": 1, "b": 2} and rows["[1]"]["_airbyte_generation_id"] == 2
    assert rows["[2]"]["_airbyte_generation_id"] == 1
    harness.write(refresh, [record(S, {"k": 3}), complete(S)])
    rows = harness.rows(S)
    assert set(rows) == {"[1]", "[3]"} and {r["_airbyte_generation_id"] for r in rows.values()} == {2}


def test_generation_ids_may_be_null_and_append_keeps_older_generations(harness):
    harness.write([stream(S)], [record(S, {"k": 1}), complete(S)])
    harness.write([stream(S, generation_id=5, minimum_generation_id=0)], [record(S, {"k": 2}), complete(S)])
    rows = harness.rows(S)
    assert {k: r["_airbyte_generation_id"] for k, r in rows.items()} == {"[1]": None, "[2]": 5}


# -- state ---------------------------------------------------------------------------------------------------------
def test_state_echo_keeps_id_and_unknown_fields_and_counts_records(harness):
    streams = [stream(S), stream("other")]
    echoes = harness.write(
        streams,
        [
            record(S, {"k": 1}),
            record(S, {"k": 2}),
            record("other", {"k": 1}),
            state(S, {"cursor": 2}, state_id=41, sourceStats={"recordCount": 2.0}, futureField={"x": [1]}),
            state("other", {"cursor": 1}, state_id="abc"),
            state(S, {"cursor": 2}, state_id=42),
        ],
    )
    assert [e["state"]["id"] for e in echoes] == [41, "abc", 42]
    assert echoes[0]["state"]["futureField"] == {"x": [1]} and echoes[0]["state"]["sourceStats"] == {"recordCount": 2.0}
    assert [e["state"]["destinationStats"]["recordCount"] for e in echoes] == [2.0, 1.0, 0.0]
    assert echoes[0]["state"]["stream"]["stream_state"] == {"cursor": 2}
    stored = harness.states()
    assert stored[S]["id"] == 42 and stored["other"]["stream"]["stream_state"] == {"cursor": 1}


def test_global_state_commits_all_streams(harness):
    streams = [stream("a"), stream("b")]
    glob = {"type": "STATE", "state": {"type": "GLOBAL", "id": 9, "global": {"shared_state": {"lsn": 7}, "stream_states": []}}}
    echoes = harness.write(streams, [record("a", {"k": 1}), record("b", {"k": 1}), glob])
    assert echoes[0]["state"]["id"] == 9 and echoes[0]["state"]["destinationStats"]["recordCount"] == 2.0
    assert harness.states()["__global__"]["global"]["shared_state"] == {"lsn": 7}


def test_state_is_echoed_only_after_its_records_are_committed(harness):
    streams = [stream(S)]
    harness.options = {"batch_size": 2}
    seen = []

    def feed():
        for i in range(5):
            yield json.dumps(record(S, {"k": i}))
        yield json.dumps(state(S, {"upto": 4}, state_id=1))

    for echo in harness.iter_write(streams, feed()):
        seen.append(len(harness.docs(S)))  # what a reader sees at the moment the state comes out
    assert seen == [5]


def test_crash_between_flush_and_commit_acknowledges_nothing(harness, monkeypatch):
    streams = [stream(S)]
    harness.write(streams, [record(S, {"k": 0}), state(S, {"upto": 0}, state_id=1)])
    from destination_collection.stores.state_table import StateTable

    def explode(self, *args, **kwargs):
        raise RuntimeError("killed before commit")

    monkeypatch.setattr(StateTable, "save", explode)
    echoes = []
    with pytest.raises(RuntimeError, match="killed before commit"):
        for echo in harness.iter_write(streams, [record(S, {"k": 1}), record(S, {"k": 2}), state(S, {"upto": 2}, state_id=2)]):
            echoes.append(echo)
    monkeypatch.undo()
    assert echoes == []
    assert set(harness.docs(S)) == {"[0]"}  # the batch rolled back with its state
    assert harness.states()[S]["id"] == 1


# -- storage: types, big integers, identifiers -----------------------------------------------------------------
def test_type_mismatch_kept_in_document_and_recorded(harness):
    schema = {"type": "object", "properties": {"k": {"type": "integer"}, "qty": {"type": ["null", "integer"]}, "flag": {"type": "boolean"}}}
    harness.write([stream(S, schema=schema)], [record(S, {"k": 1, "qty": 5, "flag": True}), record(S, {"k": 2, "qty": "five", "flag": "yes"})])
    rows = harness.rows(S)
    assert rows["[1]"]["qty"] == 5 and rows["[1]"]["flag"] is True
    bad = rows["[2]"]
    assert bad["qty"] is None and bad["flag"] is None
    assert bad["_doc"] == {"k": 2, "qty": "five", "flag": "yes"}
    assert sorted(c["field"] for c in bad["_airbyte_meta"]["changes"]) == ["flag", "qty"]
    assert {c["change"] for c in bad["_airbyte_meta"]["changes"]} == {"NULLED"}


def test_inferred_columns_widen(harness):
    streams = [stream(S)]
    harness.write(streams, [record(S, {"k": 1, "n": 1, "m": 1})])
    harness.write(streams, [record(S, {"k": 2, "n": 2.5, "m": "text"})])
    rows = harness.rows(S)
    assert rows["[1]"]["n"] == 1.0 and rows["[2]"]["n"] == 2.5
    assert harness.json_value(rows["[1]"]["m"]) == 1 and harness.json_value(rows["[2]"]["m"]) == "text"  # now JSON


def test_types_a_source_inferred_are_hints_that_widen_while_declared_types_make_misfits(harness):
    # source-kinesis's discover marks the payload types it sampled with "x-inferred": the columns exist from the
    # start with those types, and widen as later values need; an unmarked type stays a declaration
    hint = {"type": ["integer", "null"], "x-inferred": True}
    schema = {"type": "object", "properties": {
        "k": {"type": "integer"}, "amount": hint, "label": {"type": ["string", "null"], "x-inferred": True},
        "qty": {"type": ["integer", "null"]},
    }}
    streams = [stream(S, schema=schema)]
    harness.write(streams, [record(S, {"k": 1, "amount": 3, "label": "a", "qty": 1})])
    assert {"amount", "label", "qty"} <= set(harness.rows(S)["[1]"])  # created from the catalog, before any widening
    harness.write(streams, [record(S, {"k": 2, "amount": 12.5, "label": {"nested": True}, "qty": 2.5})])
    rows = harness.rows(S)
    assert rows["[1]"]["amount"] == 3 and rows["[2]"]["amount"] == 12.5  # widened to DOUBLE, not a misfit
    assert harness.json_value(rows["[2]"]["label"]) == {"nested": True}  # widened to JSON
    assert rows["[2]"]["qty"] is None and rows["[2]"]["_doc"]["qty"] == 2.5  # declared integer: a misfit
    assert [c["field"] for c in rows["[2]"]["_airbyte_meta"]["changes"]] == ["qty"]


def test_integers_beyond_64_bits_stay_exact(harness):
    huge, giant = 2**70 + 1, 10**50 + 7
    schema = {"type": "object", "properties": {"k": {"type": "integer"}, "declared": {"type": "integer"}}}
    lines = [
        json.dumps(record(S, {"k": 1, "declared": 5, "n": 5})),
        '{"type":"RECORD","record":{"stream":"orders","emitted_at":1,"data":{"k":2,"declared":%d,"n":%d,"g":%d,"nested":{"x":%d}}}}'
        % (huge, huge, giant, giant),
    ]
    harness.write([stream(S, schema=schema)], lines, as_lines=False)
    rows = harness.rows(S)
    row = rows["[2]"]
    assert row["_doc"] == {"k": 2, "declared": huge, "n": huge, "g": giant, "nested": {"x": giant}}
    assert int(row["declared"]) == huge and int(row["n"]) == huge
    assert harness.json_value(row["g"]) == giant
    assert int(rows["[1]"]["declared"]) == 5


def test_identifiers_that_need_quoting(harness):
    long_name = "f" * 128
    odd_stream = 'Select "weird" stream-name ' + "x" * 100
    data = {"k": 1, 'he said "hi"': 1, "with space": "s", "select": True, "from": "kw", long_name: 2, "User": 1, "user": 2}
    harness.write([stream(odd_stream)], [record(odd_stream, data)])
    store = harness.store()
    try:
        table = [c["table"] for c in store.catalog.collections() if c["stream"] == odd_stream][0]
    finally:
        store.close()
    assert len(table.encode()) <= 63 and table.startswith("select__weird__stream_name")
    row = list(harness.rows(table).values())[0]
    assert row["_doc"] == data
    assert row['he said "hi"'] == 1 and row["with space"] == "s" and row["select"] is True and row["from"] == "kw"
    assert row["User"] == 1
    hashed = [k for k in row if k.startswith("f" * 40)]
    assert len(hashed) == 1 and len(hashed[0]) <= 63 and row[hashed[0]] == 2


def test_nul_characters_are_stored_losslessly(harness):
    harness.write([stream(S)], [record(S, {"k": 1, "s": "a\u0000b", "nested": {"t": "\u0000"}, "ok": "fine"})])
    row = harness.rows(S)["[1]"]
    doc = row["_doc"]
    if harness.store_config["store_type"] == "postgres":
        import base64

        assert base64.b64decode(doc["s"]["$base64_utf8"]).decode() == "a\u0000b"
        assert base64.b64decode(doc["nested"]["t"]["$base64_utf8"]).decode() == "\u0000"
        assert row["s"] is None
        assert {c["field"] for c in row["_airbyte_meta"]["changes"]} >= {"s", "nested.t"}
    else:
        assert doc == {"k": 1, "s": "a\u0000b", "nested": {"t": "\u0000"}, "ok": "fine"}
    assert doc["ok"] == "fine"


# -- transformation ------------------------------------------------------------------------------------------------
def test_transformation_projection_precedence_filter_and_special_outputs(harness):
    sql = (
        "SELECT *, upper(name) AS name, concat('order-', CAST(order_no AS VARCHAR)) AS _id, "
        "CAST(ts AS TIMESTAMP) AS _event_time, op AS _op FROM _input WHERE coalesce(kind, '') <> 'test'"
    )
    harness.options = {"collections": [{"stream": S, "transformation_sql": sql}]}
    streams = [stream(S, pk=KINESIS_PK)]
    harness.write(
        streams,
        [
            kinesis(S, 1, {"order_no": 1, "name": "ann", "ts": "2024-01-01 00:00:00", "op": "UPSERT", "kind": "real"}),
            kinesis(S, 2, {"order_no": 2, "name": "bob", "ts": "2024-01-02 00:00:00", "op": "UPSERT", "kind": "test"}),
            kinesis(S, 3, {"order_no": 3, "name": "cy", "ts": "2024-01-03 00:00:00", "op": "UPSERT"}),
        ],
    )
    rows = harness.rows(S)
    assert set(rows) == {"order-1", "order-3"}
    assert rows["order-1"]["_doc"] == {"order_no": 1, "name": "ANN", "ts": "2024-01-01 00:00:00", "op": "UPSERT", "kind": "real"}
    assert rows["order-3"]["_doc"] == {"order_no": 3, "name": "CY", "ts": "2024-01-03 00:00:00", "op": "UPSERT"}  # 'kind' stays absent
    assert rows["order-1"]["_event_time"] == utc(2024, 1, 1)
    assert rows["order-1"]["_meta"]["kinesis"]["sequence_number"].endswith("8899")
    harness.write(streams, [kinesis(S, 4, {"order_no": 3, "ts": "2024-01-04 00:00:00", "op": "delete"})])
    assert set(harness.docs(S)) == {"order-1"}


def test_transformation_drops_and_computes_fields(harness):
    sql = "SELECT * EXCLUDE (card), sha256(email) AS email, amount * 2 AS doubled FROM _input"
    harness.options = {"collections": [{"stream": S, "transformation_sql": sql}]}
    harness.write([stream(S)], [record(S, {"k": 1, "card": "4111", "email": "a@b.c", "amount": 21, "tags": ["x"]})])
    doc = harness.docs(S)["[1]"]
    assert "card" not in doc and doc["doubled"] == 42 and doc["tags"] == ["x"]
    assert doc["email"] == hashlib.sha256(b"a@b.c").hexdigest()


# -- retention -----------------------------------------------------------------------------------------------------
def test_retention_purges_old_documents(harness, caplog):
    harness.options = {"collections": [{"stream": S, "event_time_field": "ts", "retention_secs": 3600}]}
    now = dt.datetime.now(dt.timezone.utc)
    with caplog.at_level("INFO", logger="airbyte"):
        harness.write(
            [stream(S)],
            [
                record(S, {"k": 1, "ts": (now - dt.timedelta(hours=2)).isoformat()}),
                record(S, {"k": 2, "ts": (now - dt.timedelta(minutes=5)).isoformat()}),
            ],
        )
    assert set(harness.docs(S)) == {"[2]"}
    assert "purged 1 document(s)" in caplog.text
    store = harness.store()
    try:
        assert [c["purged_documents"] for c in store.catalog.collections() if c["table"] == S] == [1]
    finally:
        store.close()


# -- errors --------------------------------------------------------------------------------------------------------
def test_malformed_lines_and_unknown_streams_reported_with_counts_nothing_lost(harness):
    streams = [stream(S)]
    lines = [
        json.dumps(record(S, {"k": 1})),
        "this is not json",
        '{"no": "type"}',
        json.dumps(record("ghost", {"k": 1})),
        json.dumps(record("ghost", {"k": 2})),
        json.dumps(state(S, {"c": 1}, state_id=3)),
        json.dumps(record(S, {"k": 2})),
    ]
    echoes = []
    with pytest.raises(AirbyteTracedException) as info:
        for echo in harness.iter_write(streams, lines, as_lines=False):
            echoes.append(echo)
    message = info.value.message
    assert "2 malformed input line(s)" in message and "line 2" in message and "line 3" in message
    assert "2 record(s) of streams not in the configured catalog" in message and "'ghost': 2" in message
    assert [e["state"]["id"] for e in echoes] == [3]
    assert set(harness.docs(S)) == {"[1]", "[2]"}  # the record after the last state was committed too
