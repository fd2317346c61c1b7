"""The differential tests of unit_tests/destination/test_differential.py against a real PostgreSQL: batch writes
(``batch_size`` 10_000, 1, 2 or 7) against the per-record reference (reference_model.py) and against each other.

PostgreSQL adds what DuckDB cannot show: jsonb cannot hold NUL, so a string with NUL is stored in ``_doc`` / ``_meta``
as ``{"$base64_utf8": …}`` with a ``DESTINATION_SERIALIZATION_ERROR`` change, and a text column gets NULL plus a
misfit change (the reference models both); integers beyond 64 bits go through ``numeric(38,0)`` and jsonb. Stored
documents are read back from jsonb for merges, so every cross-batch merge goes through that encoding.
"""
from __future__ import annotations

import itertools
import os

from hypothesis import example, given

from unit_tests.destination.harness import EMITTED_AT, Harness, record, state, stream
from unit_tests.destination.test_differential import S, _nasty, _settings, check_scenario, scenarios, Scenario

_schemas = itertools.count()


def _nul_examples() -> list[Scenario]:
    r = lambda data, t=0: record(S, data, emitted_at=EMITTED_AT + 1000 * t)  # noqa: E731
    return [
        # a NUL string stored, then merged onto in a later batch (the stored document comes back from jsonb)
        Scenario([stream(S, pk=[["k"]])], [{"stream": S}], [[
            r({"k": 1, "s": "a\x00b", "n": 2**70}), state(S, {}), r({"k": 1, "t": "x", "_op": "update"}),
            r({"k": 2, "s": "plain", "nested": {"t": "\x00"}}), r({"k": 2, "_op": "bogus\x00"}),
        ]], [10_000, 1, 2], False),
    ]


def _examples(test):
    for scenario in _nasty() + _nul_examples():
        test = example(scenario=scenario)(test)
    return test


@_examples
@_settings(max_examples=int(os.environ.get("DIFFERENTIAL_PG_EXAMPLES", "60")))
@given(scenario=scenarios(max_messages=14))
def test_batches_and_per_record_reference_agree_postgres(postgres_server, scenario):
    prefix = f"d{next(_schemas)}"
    counter = itertools.count()
    check_scenario(
        lambda: Harness(postgres_server.store_config(schema=f"{prefix}_{next(counter)}")), scenario, nul_encoding=True
    )


def test_nul_string_of_a_stored_document_survives_a_merge_in_a_later_batch(postgres_server):
    """A merge onto a document stored by an earlier batch reads it back from jsonb, where a NUL string is
    ``{"$base64_utf8": …}``; the merged document then carries that object as the field's value: the text column
    ``s`` widens to jsonb and holds the encoding object, and the ``_airbyte_meta.changes`` entries saying the value
    was encoded are dropped. In one batch (merge in memory) the column stays text (NULL + misfit change) and the
    changes are kept. The per-record reference keeps the field a string in both cases."""
    counter = itertools.count()
    prefix = f"d{next(_schemas)}"
    scenario = Scenario(
        [stream(S, pk=[["k"]])], [{"stream": S}],
        [[record(S, {"k": 1, "s": "a\x00b"})], [record(S, {"k": 1, "t": "x", "_op": "update"})]], [10_000, 1], False,
    )
    check_scenario(lambda: Harness(postgres_server.store_config(schema=f"{prefix}_{next(counter)}")), scenario, True)
