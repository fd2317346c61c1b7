"""Differential tests of the set-based batch path (set_batch.py) against the per-record path (issue 11, item 4).

The same messages are written twice into fresh DuckDB files: once as the destination runs (a batch the set-based path
covers goes that way) and once with the set-based path switched off (``DuckDBStore.set_batches = False``: every batch
through documents.py and operations.fold, the reference). The collections must be identical: per ``_id`` the
``_doc`` and ``_meta`` (values and key order), ``_event_time`` and ``_airbyte_extracted_at`` (where they do not come
from the ingestion time, which differs between runs), ``_airbyte_meta``, ``_doc_shape``, the generation, every typed
value; the same column types; the same summary counts. ``append`` collections (generated ids) are compared as
multisets of rows without ``_id``.

Input: Kinesis-shaped records (the six ``_kinesis_*`` fields, sometimes one missing or moved) whose payload fields
come from a small pool (so shapes repeat) with values of every JSON type — integers at and past the 64-bit edges,
strings with quotes, backslashes, control characters, NUL and non-ASCII, nested objects, nulls — ids from a small
pool (strings and integers, sometimes of other types, sometimes null or absent), sometimes ``_id`` / ``_op`` /
``_meta`` keys, arrival times in and out of the form the set-based path reads, ``emitted_at`` of several kinds, many
changes of one ``_id`` in one batch and across batches (two syncs), ``append`` / ``append_dedup`` by ``id_field`` or
by primary key, and an overwrite sync (generations). Each example also records which batches took the set-based
path; the test asserts that a good share of them did, so it cannot pass by never using it.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
from typing import Any, Callable

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from unittest import mock

from destination_collection import protocol_loop, set_batch
from destination_collection.documents import parse_event_time
from destination_collection.naming import SYSTEM_COLUMNS
from destination_collection.stores import duckdb_store
from unit_tests.destination.harness import Harness, record, state, stream
from unit_tests.destination.reference_model import canonical
from unit_tests.destination.test_differential import SUMMARY, captured_log

S = "events"
FIELDS = ["a", "b", "c", "ID", "id", "é", "x/y", "q'uote"]
KINESIS = ["_kinesis_stream", "_kinesis_shard_id", "_kinesis_sequence_number", "_kinesis_sub_sequence_number",
           "_kinesis_partition_key", "_kinesis_arrival_time"]
INTS = [0, 1, -1, 2**31, 2**63 - 1, -(2**63), 2**63, 2**64 - 1, 2**64, 10**30]
STRINGS = ["", "x", "Grüße 🔔", 'q"uote', "back\\slash", "tab\tnl\n", "nul\x00", "\x1f", "/", "'"]
ARRIVALS = ["2026-11-25T21:30:39.248Z", "2026-11-25T21:30:39Z", "2026-11-25T23:30:39.248123+02:00",
            "2026-02-30T00:00:00Z", "2026-03-01T24:00:00Z", "2026-11-25 21:30:39Z", "2026-11-25T21:30:39.1234567Z",
            "0999-01-01T00:00:00Z", 1700000000, None]

scalars = st.one_of(st.none(), st.booleans(), st.sampled_from(INTS), st.sampled_from(STRINGS),
                    st.sampled_from([0.5, -0.0, 1e20, 5e-324, 2.0]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=2), st.dictionaries(st.sampled_from(["x", "_kinesis_stream", "k"]), inner, max_size=2)
), max_leaves=3)
ids = st.sampled_from(["o-1", "o-2", "o-3", 1, 2, 2**64 - 1, None, 1.5, True, {"n": 1}, 'q"id', "o\\1"])


@st.composite
def payloads(draw: Callable, keyed: bool, cdc: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {}
    # mostly one field list (an event stream's), sometimes another (a new shape)
    names = FIELDS[:3] if draw(st.integers(0, 3)) else draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True))
    for name in names:
        data[name] = draw(values) if draw(st.integers(0, 2)) == 0 else draw(st.sampled_from([1, 2, "v", None, 3.5]))
    if keyed:
        data["order"] = draw(ids) if draw(st.integers(0, 5)) else draw(st.sampled_from(["o-1", "o-2"]))
        if draw(st.integers(0, 12)) == 0:
            del data["order"]
    if cdc:  # the dms format's changes: whole rows and deletes (sometimes an _op the set-based path does not take)
        data["_op"] = draw(st.sampled_from(["REPSERT", "REPSERT", "DELETE", " repsert ", "Delete\t"])) if draw(
            st.integers(0, 15)) else draw(st.sampled_from(["UPSERT", "bogus", "rep\u017fert", None, 5]))
    extra = draw(st.integers(0, 24))
    if extra == 0:
        data["_id"] = draw(st.sampled_from(["i-1", 7, None, [1]]))
    elif extra == 1:
        data["_op"] = draw(st.sampled_from(["DELETE", "repsert", "bogus"]))
    elif extra == 2:
        data["_meta"] = {"m": 1}
    elif extra == 3:
        data["_other"] = draw(scalars)
    kinesis = {
        "_kinesis_stream": "orders",
        "_kinesis_shard_id": draw(st.sampled_from(["shardId-000000000000", "shardId-000000000001"])),
        "_kinesis_sequence_number": str(49_590_338_271_490_256_608_559_692_538_361_571_095_921_575_989_136_588_898
                                        + draw(st.integers(0, 3))),
        "_kinesis_sub_sequence_number": draw(st.sampled_from([0, 0, 1])),
        "_kinesis_partition_key": draw(st.sampled_from(["p", 'p"q'])),
        "_kinesis_arrival_time": ARRIVALS[0] if draw(st.integers(0, 3)) else draw(st.sampled_from(ARRIVALS)),
    }
    layout = draw(st.integers(0, 12))
    if layout == 0:
        del kinesis[draw(st.sampled_from(KINESIS))]
    elif layout == 1:  # metadata first: other key order, another shape
        return {**kinesis, **data}
    return {**data, **kinesis}


@st.composite
def scenarios(draw: Callable) -> dict[str, Any]:
    mode = draw(st.sampled_from(["id_field", "pk", "append", "id_field"]))
    collection: dict[str, Any] = {"stream": S}
    if mode == "id_field":
        collection["id_field"] = "order"
    pk = [["_kinesis_shard_id"], ["_kinesis_sequence_number"], ["_kinesis_sub_sequence_number"]] if mode == "pk" else [["order"]]
    overwrite = mode != "append" and draw(st.integers(0, 5)) == 0
    cdc = draw(st.integers(0, 2)) == 0
    syncs = []
    for number in range(draw(st.integers(1, 2))):
        messages = []
        for index in range(draw(st.integers(1, 14))):
            if draw(st.integers(0, 6)) == 0:
                messages.append(state(S, {"i": index}))
            emitted = draw(st.sampled_from([1_700_000_000_000, 1_700_000_000_000, 1_700_000_001_000, None, 10**30,
                                            1.7e12, "later"]))
            messages.append(record(S, draw(payloads(keyed=mode != "pk", cdc=cdc)), emitted_at=emitted))
        syncs.append(messages)
    return {"mode": mode, "collection": collection, "pk": pk, "syncs": syncs, "overwrite": overwrite,
            "batch_size": draw(st.sampled_from([10_000, 3]))}


def _streams(scenario: dict[str, Any], sync: int) -> list[dict[str, Any]]:
    mode = "append" if scenario["mode"] == "append" else "append_dedup"
    if scenario["overwrite"]:  # the second sync replaces the first one's generation
        return [stream(S, mode=mode, pk=scenario["pk"], generation_id=sync + 1, minimum_generation_id=sync + 1)]
    return [stream(S, mode=mode, pk=scenario["pk"], generation_id=1, minimum_generation_id=0, sync_id=7)]


def _write(scenario: dict[str, Any], lane: bool, harness: Harness, store_class: type = duckdb_store.DuckDBStore
           ) -> dict[str, Any]:
    harness.options = {"collections": [scenario["collection"]], "batch_size": scenario["batch_size"],
                       "flush_interval_secs": 1e9}
    taken: list[bool] = []
    summary: dict[str, int] = {}
    original = set_batch.SetBatch.apply

    def apply(self):
        result = original(self)
        taken.append(result)
        return result

    saved = store_class.set_batches
    store_class.set_batches = lane
    set_batch.SetBatch.apply = apply
    try:
        for number, sync in enumerate(scenario["syncs"]):
            # every STATE commits as it arrives: with group commit, where batches end would depend on timing
            # (and the set-based INSERT runs over slices of 2 records, so a batch's rows span several statements)
            with captured_log() as lines, mock.patch.object(protocol_loop, "HOLD_FACTOR", 0), \
                    mock.patch.object(set_batch, "INSERT_ROWS", 2):
                harness.write(_streams(scenario, number), sync)
            for line in lines:
                match = SUMMARY.search(line)
                if match:
                    for name, value in match.groupdict().items():
                        if name != "key":
                            summary[name] = summary.get(name, 0) + int(value or 0)
    finally:
        store_class.set_batches = saved
        set_batch.SetBatch.apply = original
    store = harness.store()
    try:
        columns = {f: (c.name, c.type) for f, c in store.catalog.load_columns(S).items()}
    finally:
        store.close()
    rows = harness.rows(S)
    json_columns = {name for name, kind in columns.values() if kind == "JSON"}
    for row in rows.values():  # JSON values compare as JSON (escapes may be written in either case: \u001f, \u001F)
        for name in json_columns:
            if row.get(name) is not None:
                row[name] = harness.json_value(row[name])
    return {"rows": rows, "columns": columns, "summary": summary, "taken": taken}


def _comparable(row: dict[str, Any], generated: bool) -> dict[str, Any]:
    """A row as the two runs must agree on it: JSON with key order, ingestion-time values left out."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        if name in ("_airbyte_raw_id",) or (generated and name == "_id"):
            continue
        if name in ("_doc", "_meta", "_airbyte_meta") or isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=False, ensure_ascii=False)
        elif isinstance(value, float):  # repr: -0.0 == 0.0 would hide a lost sign
            value = repr(value)
        out[name] = value
    return out


def _ingestion_dependent(row: dict[str, Any], scenario: dict[str, Any]) -> set[str]:
    """Columns that hold the ingestion time in this row (a fresh value per run)."""
    names = set()
    arrival = (row["_meta"] or {}).get("kinesis", {}).get("arrival_time")
    if arrival is None or parse_event_time(arrival) is None:
        names.add("_event_time")
    extracted = row["_airbyte_extracted_at"]
    if extracted is not None and extracted > dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1):
        names.add("_airbyte_extracted_at")
    return names


def check(scenario: dict[str, Any], harnesses: Callable[[], Harness] | None = None,
          store_class: type = duckdb_store.DuckDBStore) -> list[bool]:
    """Write ``scenario`` both ways, into fresh stores (``harnesses``: one per call; default: DuckDB files) and
    compare; returns which batches took the set-based path."""
    with tempfile.TemporaryDirectory() as folder:
        if harnesses is None:
            paths = iter(os.path.join(folder, f"{n}.duckdb") for n in range(2))
            harnesses = lambda: Harness({"store_type": "duckdb", "path": next(paths)})  # noqa: E731
        lane = _write(scenario, True, harnesses(), store_class)
        reference = _write(scenario, False, harnesses(), store_class)
    problems = []
    if lane["columns"] != reference["columns"]:
        problems.append(f"columns: {lane['columns']} != {reference['columns']}")
    if lane["summary"] != reference["summary"]:
        problems.append(f"summary: {lane['summary']} != {reference['summary']}")
    generated = scenario["mode"] == "append"

    def rows(run: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for row in run["rows"].values():
            skip = _ingestion_dependent(row, scenario)
            out.append({k: v for k, v in _comparable(row, generated).items() if k not in skip})
        return out

    if generated:
        left = sorted(canonical({k: str(v) for k, v in r.items()}) for r in rows(lane))
        right = sorted(canonical({k: str(v) for k, v in r.items()}) for r in rows(reference))
        if left != right:
            problems.append(f"append rows differ:\n  set-based  {left}\n  per-record {right}")
    else:
        left = {r["_id"]: r for r in rows(lane)}
        right = {r["_id"]: r for r in rows(reference)}
        if set(left) != set(right):
            problems.append(f"_ids: only set-based {sorted(set(left) - set(right))}, only per-record {sorted(set(right) - set(left))}")
        for key in sorted(set(left) & set(right)):
            a, b = left[key], right[key]
            for name in sorted(set(a) | set(b)):
                if name in a and name in b and a[name] != b[name]:
                    problems.append(f"_id {key!r} {name}: set-based {a[name]!r} != per-record {b[name]!r}")
    assert not problems, "\n".join(problems[:20])
    assert not reference["taken"], "the reference run must not use the set-based path"
    return lane["taken"]


TAKEN: list[bool] = []


@settings(max_examples=int(os.environ.get("SET_BATCH_EXAMPLES", "120")), deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if os.environ.get("DIFFERENTIAL_SHRINK") else []))
@given(scenarios())
def test_the_set_based_path_and_the_per_record_path_write_the_same_collections(scenario):
    TAKEN.extend(check(scenario))


def test_the_randomized_batches_exercise_the_set_based_path():
    """Runs after the property test (same module, file order): a good share of its batches took the set-based path,
    and some did not (both sides of every check were exercised)."""
    if not TAKEN:
        test_the_set_based_path_and_the_per_record_path_write_the_same_collections()
    share = sum(TAKEN) / len(TAKEN)
    assert 0.2 < share < 0.95, f"{sum(TAKEN)} of {len(TAKEN)} batches took the set-based path"


def _kinesis(order: Any, n: int, **payload: Any) -> dict[str, Any]:
    return {"order": order, **payload, "_kinesis_stream": "orders", "_kinesis_shard_id": "shardId-000000000000",
            "_kinesis_sequence_number": str(10**55 + n), "_kinesis_sub_sequence_number": 0,
            "_kinesis_partition_key": "p", "_kinesis_arrival_time": f"2026-11-25T21:30:{n % 60:02d}.248Z"}


def test_repeated_ids_in_one_batch_and_across_batches_are_folded_the_same_way():
    scenario = {"mode": "id_field", "collection": {"stream": S, "id_field": "order"}, "pk": [["order"]],
                "overwrite": False, "batch_size": 10_000, "syncs": [
                    [record(S, _kinesis("o-1", 1, a=1, b="x")), record(S, _kinesis("o-1", 2, a=2, b="y")),
                     record(S, _kinesis(5, 3, a=3, b="z")), record(S, _kinesis("5", 4, a=4, b=None))],
                    [record(S, _kinesis("o-1", 5, a=5, b="w")), record(S, _kinesis("o-2", 6, a=6, b="v")),
                     record(S, _kinesis("o-2", 7, a=7.5, b="u")), record(S, _kinesis(5, 8, a=None, b="t"))],
                ]}
    taken = check(scenario)
    assert taken == [True, True]


def test_a_batch_the_set_based_path_does_not_cover_is_written_by_the_per_record_path_whole():
    """One record with an _op in a batch of plain ones: the whole batch goes the per-record way (nothing written
    twice), with the same result."""
    scenario = {"mode": "id_field", "collection": {"stream": S, "id_field": "order"}, "pk": [["order"]],
                "overwrite": False, "batch_size": 10_000, "syncs": [
                    [record(S, _kinesis("o-1", 1, a=1)), record(S, _kinesis("o-2", 2, a=2))],
                    [record(S, _kinesis("o-1", 3, a=3)), record(S, {**_kinesis("o-2", 4), "_op": "DELETE"}),
                     record(S, _kinesis("o-3", 5, a=5))],
                    [record(S, _kinesis("o-1", 6, a=6, extra={"n": 1}))],  # another shape than the stored one
                ]}
    # the second batch mixes records with and without an _op, the last one's change has other field names than the
    # stored document: the set-based path looks at both, and hands both over
    assert check(scenario) == [True, False, False]


def test_repserts_and_deletes_are_folded_and_counted_the_same_way():
    """The dms format's changes, each sequence operations.fold distinguishes: a DELETE of an absent id (skipped), of
    a stored one (deleted), twice (the second skipped), after a REPSERT in the batch (merged, then deleted), a
    REPSERT after a DELETE (replaced), REPSERTs of new and stored ids with other field names."""
    def r(order, n, op, **payload):
        return record(S, {**_kinesis(order, n, **payload), "_op": op})

    scenario = {"mode": "id_field", "collection": {"stream": S, "id_field": "order"}, "pk": [["order"]],
                "overwrite": False, "batch_size": 10_000, "syncs": [
                    [r("o-1", 1, "REPSERT", a=1), r("o-2", 2, "REPSERT", a=2), r("o-3", 3, "REPSERT", a=3),
                     r("o-4", 4, "repsert", a=4, b="x")],
                    [r("o-9", 5, "DELETE"), r("o-1", 6, "DELETE"), r("o-1", 7, " delete "),
                     r("o-5", 8, "REPSERT", z=1), r("o-5", 9, "DELETE"), r("o-2", 10, "DELETE"),
                     r("o-2", 11, "REPSERT", c=[1]), r("o-3", 12, "REPSERT", other=True), r("o-6", 13, "REPSERT"),
                     r("o-6", 14, "REPSERT", a=6), r("o-4", 15, "Delete"), r("o-4", 16, "DELETE"),
                     r("o-4", 17, "REPSERT", a=44)],
                ]}
    assert check(scenario) == [True, True]


def test_field_names_of_every_kind_are_written_the_same_way():
    """Names SQL, JSON pointers and struct fields treat specially: the empty name, quotes, dots, brackets, '$', '/',
    '~', case-only differences, emoji, a bare ``_kinesis_`` prefix, ``_kinesis_`` names outside the contract, and
    more top-level names than the typed-column cap."""
    odd = {"": 1, "'": "q", '"': 2, "a.b": 3, "[0]": 4, "$": 5, "/": 6, "~": 7, "~1": 8, "id": "l", "ID": "U",
           "Id": 9, "😀": 10, "x" * 300: 11, "_kinesis_": "bare", "_kinesis_x'y": "meta", "_other": None}
    wide = {f"f{i}": i for i in range(300)}
    scenario = {"mode": "id_field", "collection": {"stream": S, "id_field": "order"}, "pk": [["order"]],
                "overwrite": False, "batch_size": 10_000, "syncs": [
                    [record(S, _kinesis("o-1", 1, **odd)), record(S, _kinesis("o-2", 2, **odd))],
                    [record(S, _kinesis("o-1", 3, **odd)), record(S, {**wide, **_kinesis("o-3", 4)})],
                ]}
    taken = check(scenario)
    assert taken[0] is True, taken


def test_the_config_switch_sends_every_batch_through_the_per_record_path(tmp_path, monkeypatch):
    calls = []
    original = set_batch.SetBatch.apply
    monkeypatch.setattr(set_batch.SetBatch, "apply", lambda self: calls.append(1) or original(self))
    streams = [stream(S, pk=[["order"]])]
    messages = [record(S, _kinesis(f"o-{n}", n, a=n)) for n in range(5)]
    for switch, expected in ((False, []), (True, [1])):
        harness = Harness({"store_type": "duckdb", "path": str(tmp_path / f"{switch}.duckdb"),
                           "set_based_batches": switch})
        harness.options = {"collections": [{"stream": S, "id_field": "order"}]}
        calls.clear()
        harness.write(streams, messages)
        assert calls == expected
        assert {key: row["_doc"] for key, row in harness.rows(S).items()} == {
            f"o-{n}": {"order": f"o-{n}", "a": n} for n in range(5)}


def test_the_insert_runs_over_slices_bounded_by_records_and_characters(monkeypatch):
    """One INSERT per slice of the batch (DuckDB holds a statement's rows in memory): consecutive, covering every
    record once, each within INSERT_ROWS records and INSERT_CHARS characters unless it is a single record."""
    monkeypatch.setattr(set_batch, "INSERT_ROWS", 4)
    monkeypatch.setattr(set_batch, "INSERT_CHARS", 100)
    assert set_batch._slices([]) == []
    assert set_batch._slices([10] * 9) == [(0, 4), (4, 8), (8, 9)]
    assert set_batch._slices([40, 40, 40, 10, 10]) == [(0, 2), (2, 5)]
    assert set_batch._slices([500, 10, 500]) == [(0, 1), (1, 2), (2, 3)]  # a record over the bound goes alone
    lengths = [(n * 37) % 90 + 1 for n in range(1000)]
    slices = set_batch._slices(lengths)
    assert [start for start, _ in slices] == [0] + [stop for _, stop in slices[:-1]] and slices[-1][1] == 1000
    for start, stop in slices:
        assert stop - start <= 4 and (stop - start == 1 or sum(lengths[start:stop]) <= 100)


def test_records_over_the_size_bound_in_utf8_bytes_take_the_per_record_path(tmp_path, monkeypatch):
    """The per-record bound (MAX_RECORD_BYTES) counts UTF-8 bytes of the record's JSON, not characters: a record of
    fewer characters than the bound but more bytes sends its batch the per-record way; a batch under it does not."""
    calls = []
    original = set_batch.SetBatch.apply
    monkeypatch.setattr(set_batch.SetBatch, "apply", lambda self: calls.append(len(self.batch)) or original(self))
    monkeypatch.setattr(set_batch, "MAX_RECORD_BYTES", 3000)
    monkeypatch.setattr("destination_collection.collection_writer.MAX_RECORD_BYTES", 3000)
    streams = [stream(S, pk=[["order"]])]
    harness = Harness({"store_type": "duckdb", "path": str(tmp_path / "c.duckdb")})
    harness.options = {"collections": [{"stream": S, "id_field": "order"}]}
    wide = "\u20ac" * 1200  # 1,200 characters, 3,600 bytes of UTF-8
    narrow = "e" * 1200
    harness.write(streams, [record(S, _kinesis("o-1", 1, t=narrow)), state(S, {"n": 1}),
                            record(S, _kinesis("o-2", 2, t=wide)), record(S, _kinesis("o-3", 3, t=narrow))])
    assert calls == [1], calls  # only the first batch; the one holding the wide record went the per-record way
    docs = {key: row["_doc"] for key, row in harness.rows(S).items()}
    assert docs == {"o-1": {"order": "o-1", "t": narrow}, "o-2": {"order": "o-2", "t": wide},
                    "o-3": {"order": "o-3", "t": narrow}}
