"""Differential tests of the destination's batch write path (issue 11, item 4), DuckDB.

Random message sequences (one ``append_dedup`` stream keyed by ``id_field`` or by its primary key, optionally one
``append`` stream) are written with ``batch_size`` 10_000, 1 and 2 or 7, each into a fresh store, and compared with
``reference_model.simulate`` — a per-record application of operations.py's ``_op`` table — and with each other:

* documents: the same set of ``_id``s, and per ``_id`` the same ``_doc``, ``_meta``, ``_event_time`` (when it comes
  from the configured event-time field; otherwise it is the ingestion time of the batch, which differs between runs)
  and ``_airbyte_extracted_at``, between the 10_000 and the 1 run and against the reference. ``_airbyte_raw_id``
  (a fresh UUID per change) and ``append`` streams' ``_id``s (generated) legitimately differ: ``append``
  collections are compared as multisets of their rows without ``_id``.
* typed columns against the reference run with the same batch boundaries: the same column types, the same non-NULL
  typed values, and the same ``_airbyte_meta.changes`` (as a multiset). Between batch sizes these may legitimately
  differ: a column's type is the union of the types of the values written into it, and a batch of 1 writes every
  intermediate document (``{"a": "x"}`` then ``REPLACE {"a": 1}``: VARCHAR widened to JSON per record, BIGINT in one
  batch), and rows not rewritten keep what widening made of their values.
* the summary: read from the ``Stream '…' → …: N records: …`` INFO line of every run; it adds up
  (``records + extra rows == filtered + all the change counts``) and every count, ``merged`` included, equals the
  reference's for the same batch boundaries (the reference follows operations.py's accounting rules literally).

Input: small id spaces (``1`` and ``"1"`` are the same ``_id`` under ``id_field``), every ``_op`` in mixed case plus
unknown ones, values of every JSON type incl. integers beyond 64 bits and 38 digits, NUL characters, nested objects
and lists, declared columns (misfits), ``_meta`` / ``_kinesis_*`` metadata, an event-time field with the older-change
guard on and off, STREAM and GLOBAL states at random points, and one or two syncs.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable
from unittest import mock

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from destination_collection import protocol_loop
from destination_collection.naming import SYSTEM_COLUMNS
from destination_collection.operations import CHANGE_OUTCOMES
from unit_tests.destination.harness import EMITTED_AT, Harness, record, state, stream
from unit_tests.destination.reference_model import canonical, normalise, same, simulate

S, A = "s", "a"  # the append_dedup stream and the append stream
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}}
BIG_INTS = [2**63 - 1, -(2**63), 2**63, -(10**19) - 1, 2**70 + 1, 10**38 - 1, 10**38, -(10**40)]
OP_VALUES = [None, None, None, "INSERT", "insert", "Update", "UPDATE", "UPSERT", " upsert ", "DELETE", "delete",
             "REPLACE", "Replace", "REPSERT", "repsert", "MERGE", 5, "\u0131nsert"]

# -- input ----------------------------------------------------------------------------------------------------------
texts = st.text(alphabet=st.sampled_from(["a", "b", "é", "\x00", "😀", " "]), max_size=3)
ints = st.one_of(st.integers(-3, 3), st.sampled_from(BIG_INTS))
floats = st.one_of(
    st.sampled_from([0.5, -0.0, 2.0, 1e-7, 123456.789]),
    st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=2), st.dictionaries(st.sampled_from(["x", "y"]), inner, max_size=2)),
    max_leaves=3,
)


@dataclass
class Scenario:
    streams: list[dict[str, Any]]
    collections: list[dict[str, Any]]
    syncs: list[list[dict[str, Any]]]
    batch_sizes: list[int]
    event_time: bool  # _event_time of S comes from the records (comparable between runs)

    def __repr__(self) -> str:  # what hypothesis prints for a failing example: enough to replay it by hand
        lines = [f"Scenario(batch_sizes={self.batch_sizes}, collections={self.collections!r},",
                 f"  streams={[(s['stream']['name'], s['destination_sync_mode'], s['primary_key'], bool(s['stream']['json_schema'].get('properties'))) for s in self.streams]},"]
        for number, sync in enumerate(self.syncs):
            lines.append(f"  sync {number}:")
            for message in sync:
                if message["type"] == "RECORD":
                    lines.append(f"    {message['record']['stream']}: {message['record']['data']!r} @{message['record']['emitted_at']}")
                else:
                    lines.append(f"    STATE {message['state'].get('type')} {message['state'].get('stream', {}).get('stream_descriptor', '')}")
        return "\n".join(lines) + ")"


@st.composite
def scenarios(draw: Callable, max_messages: int = 18) -> Scenario:
    key_mode = draw(st.sampled_from(["pk", "id_field"]))
    event_time = draw(st.booleans())
    guard = event_time and draw(st.booleans())
    declared = draw(st.booleans())
    with_append = draw(st.booleans())
    collection: dict[str, Any] = {"stream": S}
    if key_mode == "id_field":
        collection["id_field"] = "id"
    if event_time:
        collection["event_time_field"] = "ts"
        collection["ignore_older_changes"] = guard
    streams = [stream(S, pk=[["k"]], schema=SCHEMA if declared else None)]
    if with_append:
        streams.append(stream(A, mode="append", pk=[["k"]]))
    kinds = [S] * 6 + ([A] * 2 if with_append else []) + ["state " + S, "global"] + (["state " + A] if with_append else [])
    messages = []
    for index in range(draw(st.integers(1, max_messages))):
        kind = draw(st.sampled_from(kinds))
        if kind == "global":
            messages.append({"type": "STATE", "state": {"type": "GLOBAL", "global": {"shared_state": {"i": index}, "stream_states": []}}})
            continue
        if kind.startswith("state "):
            messages.append(state(kind[6:], {"i": index}))
            continue
        data: dict[str, Any] = dict(draw(st.dictionaries(st.sampled_from(["a", "b", "c"]), values, max_size=3)))
        if kind == S:
            if key_mode == "pk":
                data["k"] = draw(st.sampled_from([0, 1, 1, 2, "1"]))
            else:
                data["id"] = draw(st.sampled_from([0, 1, 1, "1", "a", None]))
            if draw(st.integers(0, 9)) == 0:
                data["_id"] = draw(st.sampled_from(["1", "x"]))
            if event_time:
                data["ts"] = draw(st.integers(0, 4))
        op = draw(st.sampled_from(OP_VALUES))
        if op is not None:
            data["_op"] = op
        extra = draw(st.integers(0, 9))
        if extra == 0:
            data["_meta"] = draw(st.sampled_from([{"src": 1}, "m", None]))
        elif extra == 1:
            data["_kinesis_partition_key"] = draw(st.sampled_from(["p1", "p2"]))
        elif extra == 2:
            data.update({"_kinesis_raw_data": "AAEC", "_kinesis_error": "payload is not JSON"})
        messages.append(record(kind, data, emitted_at=EMITTED_AT + 1000 * draw(st.integers(0, 3))))
    cut = draw(st.integers(0, len(messages)))
    syncs = [m for m in (messages[:cut], messages[cut:]) if m] if draw(st.booleans()) else [messages]
    batch_sizes = [10_000, 1, draw(st.sampled_from([2, 7]))]
    return Scenario(streams, [collection], syncs, batch_sizes, event_time)


# -- running and reading ----------------------------------------------------------------------------------------------
SUMMARY = re.compile(
    r"Stream '(?P<key>[^']*)' → \S+: (?P<records>\d+) records(?: \(\+(?P<extra_rows>\d+) extra rows[^)]*\))?: "
    r"(?P<inserted>\d+) inserted, (?P<updated>\d+) updated, (?P<replaced>\d+) replaced, (?P<deleted>\d+) deleted, "
    r"(?P<merged>\d+) merged [^,]*, (?P<skipped>\d+) skipped [^,]*, (?P<ignored_older>\d+) older changes ignored, "
    r"(?P<errors>\d+) errors [^,]*, (?P<filtered>\d+) filtered"
)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def captured_log():
    logger = logging.getLogger("airbyte")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@dataclass
class Run:
    batch_size: int
    rows: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # stream -> _id -> row
    column_types: dict[str, dict[str, str]] = field(default_factory=dict)
    summary: dict[str, dict[str, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def write_run(harness: Harness, scenario: Scenario, batch_size: int) -> Run:
    harness.options = {"collections": scenario.collections, "batch_size": batch_size, "flush_interval_secs": 1e9}
    run = Run(batch_size)
    for sync in scenario.syncs:
        # every STATE commits as it arrives (no group commit): the reference model's batches end at each state, and
        # the summary's "merged into a later change in their batch" depends on where batches end
        with captured_log() as lines, mock.patch.object(protocol_loop, "HOLD_FACTOR", 0):
            harness.write(scenario.streams, sync)
        for line in lines:
            match = SUMMARY.search(line)
            if match:
                counts = run.summary.setdefault(match["key"], {})
                for name, value in match.groupdict().items():
                    if name != "key":
                        counts[name] = counts.get(name, 0) + int(value or 0)
            elif "does not add up" in line:
                run.warnings.append(line)
    store = harness.store()
    try:
        columns = {s["stream"]["name"]: store.catalog.load_columns(s["stream"]["name"]) for s in scenario.streams}
    finally:
        store.close()
    for configured in scenario.streams:
        name = configured["stream"]["name"]
        run.column_types[name] = {f: c.type for f, c in columns[name].items()}
        by_column = {c.name: f for f, c in columns[name].items()}
        rows = {}
        for key, row in harness.rows(name).items():
            typed = {}
            for column, value in row.items():
                if column in SYSTEM_COLUMNS or value is None:
                    continue
                if columns[name][by_column[column]].type == "JSON":
                    value = harness.json_value(value)
                typed[by_column[column]] = normalise(value)
            rows[key] = {
                "_doc": row["_doc"],
                "_meta": row["_meta"],
                "_event_time": row["_event_time"],
                "_airbyte_extracted_at": row["_airbyte_extracted_at"],
                "changes": (row["_airbyte_meta"] or {}).get("changes") or [],
                "typed": typed,
            }
        run.rows[name] = rows
    return run


# -- comparing --------------------------------------------------------------------------------------------------------
DOC_PARTS = ("_doc", "_meta", "_airbyte_extracted_at")


def _differences(left: dict[str, dict[str, Any]], right: dict[str, dict[str, Any]], parts, labels) -> list[str]:
    problems = []
    if set(left) != set(right):
        problems.append(
            f"_ids only in {labels[0]}: {sorted(set(left) - set(right))}; only in {labels[1]}: {sorted(set(right) - set(left))}"
        )
    for key in sorted(set(left) & set(right)):
        for part in parts:
            a, b = left[key][part], right[key][part]
            if part == "changes":
                equal = sorted(map(canonical, a)) == sorted(map(canonical, b))
            elif part in ("_event_time", "_airbyte_extracted_at"):
                equal = a == b
            else:
                equal = same(a, b)
            if not equal:
                problems.append(f"_id {key!r} {part}: {labels[0]} {a!r} != {labels[1]} {b!r}")
    return problems


def _multiset(rows: dict[str, dict[str, Any]], parts) -> list[str]:
    return sorted(
        canonical({p: sorted(map(canonical, r[p])) if p == "changes" else r[p] for p in parts}) for r in rows.values()
    )


def check_scenario(make_harness: Callable[[], Harness], scenario: Scenario, nul_encoding: bool) -> None:
    runs: dict[int, Run] = {}
    problems: list[str] = []
    s_parts = DOC_PARTS + (("_event_time",) if scenario.event_time else ())
    for batch_size in scenario.batch_sizes:
        if batch_size in runs:
            continue
        run = runs[batch_size] = write_run(make_harness(), scenario, batch_size)
        model = simulate(scenario.streams, scenario.collections, scenario.syncs, batch_size, nul_encoding)
        label = f"batch_size={batch_size}"
        problems += [f"{label}: {w}" for w in run.warnings]
        for name, reference in model.items():
            expected = reference.expected_rows()
            actual = run.rows[name]
            parts = (s_parts if name == S else DOC_PARTS) + ("changes", "typed")
            if name == S:
                problems += [f"{label} {name}: {p}" for p in _differences(actual, expected, parts, ("store", "reference"))]
            elif _multiset(actual, parts) != _multiset(expected, parts):
                problems.append(f"{label} {name}: append rows differ:\n  store     {_multiset(actual, parts)}\n"
                                f"  reference {_multiset(expected, parts)}")
            if run.column_types[name] != reference.column_types():
                problems.append(f"{label} {name}: column types {run.column_types[name]} != reference {reference.column_types()}")
            summary = run.summary.get(name)
            if summary is None:
                problems.append(f"{label} {name}: no summary line")
                continue
            total = sum(summary[o] for o in CHANGE_OUTCOMES)
            if summary["records"] + summary["extra_rows"] != summary["filtered"] + total:
                problems.append(f"{label} {name}: summary does not add up: {summary}")
            want = {o: getattr(reference.counts, o) for o in CHANGE_OUTCOMES} | {"records": reference.records}
            got = {o: summary[o] for o in want}
            if got != want:
                problems.append(f"{label} {name}: counts {got} != reference {want}")
    # batch_size 10_000 vs 1: the same documents (typed columns may differ: see the module's docstring)
    big, one = runs[10_000], runs[1]
    problems += [f"10_000 vs 1 {S}: {p}" for p in _differences(big.rows[S], one.rows[S], s_parts, ("10_000", "1"))]
    if A in big.rows and _multiset(big.rows[A], DOC_PARTS) != _multiset(one.rows[A], DOC_PARTS):
        problems.append(f"10_000 vs 1 {A}: append documents differ")
    assert not problems, "\n".join(problems)


# -- the test ---------------------------------------------------------------------------------------------------------
def _nasty() -> list[Scenario]:
    """Hand-written examples for cases that random search finds rarely."""
    coll = {"stream": S, "event_time_field": "ts", "ignore_older_changes": True}
    r = lambda data, t=0: record(S, data, emitted_at=EMITTED_AT + 1000 * t)  # noqa: E731
    return [
        # many changes to one _id in one batch and across batches, an error-only doc, deletes and re-inserts
        Scenario([stream(S, pk=[["k"]], schema=SCHEMA)], [coll], [[
            r({"k": 1, "ts": 1, "a": 1, "_op": "insert"}),
            r({"k": 1, "ts": 2, "b": "x", "_op": "update"}),
            r({"k": 1, "ts": 0, "a": 5}),  # older: ignored
            r({"k": 1, "ts": 3, "_op": "MERGE"}, 1),  # error on an existing doc
            r({"k": 2, "ts": 3, "_op": "bogus"}),  # error-only doc
            state(S, {"n": 1}),
            r({"k": 2, "ts": 3, "a": 2**70, "_op": "INSERT"}),  # onto the error-only doc; DECIMAL column
            r({"k": 1, "ts": 4, "_op": "delete"}),
            r({"k": 1, "ts": 4, "c": [1, {"x": None}], "_op": "REPSERT"}, 2),
            r({"k": 3, "ts": 4, "a": "not an int", "b": 7, "_op": "replace"}),  # absent: skipped
        ]], [10_000, 1, 2], True),
        # one column through every widening, and id 1 == "1" under id_field
        Scenario([stream(S, pk=[["k"]]), stream(A, mode="append")], [{"stream": S, "id_field": "id"}], [[
            r({"id": 1, "n": 1}), r({"id": "1", "n": 2**64}), record(A, {"n": True, "_op": "update"}),
            r({"id": 2, "n": 0.5}), state(S, {}), r({"id": 3, "n": "text\x00nul"}), record(A, {"n": [1]}),
            r({"id": 1, "n": None, "_op": "REPLACE"}),
        ], [r({"id": 2, "_op": "Update", "m": {"deep": 10**40}}), r({"id": 9, "_op": "delete"})]], [10_000, 1, 7], False),
    ]


def _settings(max_examples: int):
    # Shrinking re-runs whole syncs (~0.6 s per example on DuckDB) and can outlast pytest's timeout: it runs only
    # with DIFFERENTIAL_SHRINK=1; a failing example is printed unshrunk otherwise (at most 18 messages).
    phases = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if os.environ.get("DIFFERENTIAL_SHRINK") else [])
    return settings(
        max_examples=max_examples,
        phases=phases,
        deadline=None,
        derandomize=not os.environ.get("DIFFERENTIAL_RANDOM"),  # set it to search beyond CI's fixed examples
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )


def _duckdb_harness_factory(directory: str) -> Callable[[], Harness]:
    counter = iter(range(10**9))
    return lambda: Harness({"store_type": "duckdb", "path": os.path.join(directory, f"c{next(counter)}.duckdb")})


def _with_examples(test):
    for scenario in _nasty():
        test = example(scenario=scenario)(test)
    return test


@_with_examples
@_settings(max_examples=int(os.environ.get("DIFFERENTIAL_EXAMPLES", "50")))
@given(scenario=scenarios())
def test_batches_and_per_record_reference_agree_duckdb(scenario):
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as directory:
        check_scenario(_duckdb_harness_factory(directory), scenario, nul_encoding=False)


# -- minimal reproductions of what the differential test found (each fails on its own until fixed) ---------------------
def _one_stream(*syncs, batch_sizes=(10_000, 1), collections=({"stream": S},)) -> Scenario:
    return Scenario([stream(S, pk=[["k"]])], list(collections), [list(sync) for sync in syncs], list(batch_sizes), False)


def test_second_delete_of_a_stored_document_in_one_batch_is_skipped(tmp_path):
    """operations.py: DELETE of an absent document is skipped. After the first DELETE in the batch the document is
    absent, so the second one applies nothing; a per-record application counts it skipped. fold() counts it
    ``merged`` when the document was stored before the batch (its ``physical`` check, meant for documents of a
    replaced generation, also lets a repeated DELETE through)."""
    scenario = _one_stream(
        [record(S, {"k": 1})],
        [record(S, {"k": 1, "_op": "DELETE"}), record(S, {"k": 1, "_op": "DELETE"})],
    )
    check_scenario(_duckdb_harness_factory(str(tmp_path)), scenario, nul_encoding=False)


def test_insert_onto_a_stored_error_only_document_counts_as_inserted(tmp_path):
    """operations.py: "An error-only document counts as absent", and a change's net effect is ``inserted`` when
    the document was absent before the batch. fold() counts an INSERT / UPSERT / REPSERT onto an error-only
    document stored by an earlier batch as ``replaced`` (its ``existed`` includes placeholders); in the same batch
    as the error it counts ``inserted``, so the summary depends on the batch boundaries."""
    scenario = _one_stream([record(S, {"k": 2, "_op": "bogus"})], [record(S, {"k": 2, "v": 1, "_op": "INSERT"})])
    check_scenario(_duckdb_harness_factory(str(tmp_path)), scenario, nul_encoding=False)


def test_negative_integers_of_19_digits_below_int64_stay_exact(tmp_path):
    """-(2**63) - 1 … -(10**19) + 1 have 19 digits: jsonio's big-integer rule (20+ digits) lets orjson parse the
    line, and orjson turns them into floats, so ``_doc`` holds -9.223372036854776e+18 (the random test draws
    -(10**19) - 1 instead, which has 20 digits, until this is fixed)."""
    scenario = _one_stream([record(S, {"k": 1, "n": -(2**63) - 1, "m": {"x": -(10**19) + 1}})])
    check_scenario(_duckdb_harness_factory(str(tmp_path)), scenario, nul_encoding=False)


def test_repsert_onto_a_stored_error_only_document_counts_as_replaced(tmp_path):
    """The documented exception (operations.py): a batch whose changes of an _id are only REPSERT/DELETE does not
    read the stored document, so rewriting an error-only document stored by an earlier batch counts as replaced.
    The reference model mirrors that rule; the documents agree either way."""
    scenario = _one_stream([record(S, {"k": 2, "_op": "bogus"})], [record(S, {"k": 2, "v": 1, "_op": "REPSERT"})])
    check_scenario(_duckdb_harness_factory(str(tmp_path)), scenario, nul_encoding=False)
