"""The performance fast paths give exactly what the general paths give."""
from __future__ import annotations

import datetime as dt
import random
import uuid

import pytest

from destination_collection import jsonio
from destination_collection.collection_writer import CollectionWriter
from destination_collection.column_types import Column
from destination_collection.config import parse_config
from destination_collection.documents import UuidPool, new_uuids
from destination_collection.operations import Document
from destination_collection.stores.base import Store


# -- big-integer detection: the translate/find scan equals the regex rule -----------------------------------------
@pytest.mark.parametrize(
    "raw, expected",
    [
        (b'{"a": 12345678901234567890}', True),
        (b'{"a":-12345678901234567890}', True),
        (b'{"a": [1, 12345678901234567890]}', True),
        (b'{"a":\n\t 12345678901234567890}', True),
        (b'{"a": "12345678901234567890"}', False),  # in a string: Kinesis sequence numbers
        (b'{"a": 1234567890123456789}', False),  # 19 digits fit int64
        (b'{"a": 1.12345678901234567890}', False),
        (b'{"s": "49590338271490256608559692538361571095921575989136588898", "b": 123456789012345678901234567}', True),
    ],
)
def test_big_int_scan_cases(raw, expected):
    assert jsonio._maybe_big_int(raw) is expected
    assert bool(jsonio._MAYBE_BIG_INT.search(raw)) is expected


def test_big_int_scan_equals_regex_on_random_input():
    rng = random.Random(3)
    alphabet = b'0123456789 :,[-"a\t.e'
    for _ in range(50_000):
        raw = bytes(rng.choice(alphabet) if rng.random() < 0.3 else rng.choice(b"0123456789")
                    for _ in range(rng.randrange(15, 80)))
        assert jsonio._maybe_big_int(raw) == bool(jsonio._MAYBE_BIG_INT.search(raw)), raw


def test_loads_keeps_big_ints_exact_and_sequence_numbers_as_text():
    line = b'{"seq": "49590338271490256608559692538361571095921575989136588898", "n": 123456789012345678901234567}'
    assert jsonio.loads(line) == {"seq": "49590338271490256608559692538361571095921575989136588898",
                                  "n": 123456789012345678901234567}
    assert jsonio.loads(b"123456789012345678901234567") == 123456789012345678901234567


# -- generated ids ------------------------------------------------------------------------------------------------
def test_generated_ids_are_uuid7_unique_and_ordered_within_a_chunk():
    chunk = new_uuids(5000)
    parsed = [uuid.UUID(text) for text in chunk]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert [str(u) for u in parsed] == chunk  # canonical text
    assert chunk == sorted(chunk)
    ms = int(chunk[0].replace("-", "")[:12], 16)
    assert abs(ms - dt.datetime.now(dt.timezone.utc).timestamp() * 1000) < 60_000
    many = set(chunk)
    pool = UuidPool(chunk=100)
    for _ in range(20_000):
        many.add(pool.take())
    assert len(many) == 25_000


# -- columnar rows == per-value rows ------------------------------------------------------------------------------
class _NulRefusingStore(Store):
    """Only the encode hooks matter here (PostgreSQL's NUL rule without a server)."""

    def encode_text(self, value):
        return None if "\x00" in value else value

    def encode_document(self, value):
        text = jsonio.dumps(value)
        return text, ([{"field": "_doc", "change": "NULLED", "reason": "NUL"}] if "\\u0000" in text else [])

    close = transaction = execute = fetchall = fetch_with_columns = sql_type = _table_exists = None
    fetch_documents = delete_documents = write_rows = table_bytes = _alter_type_sql = iter_documents = None


class _PlainStore(_NulRefusingStore):
    def encode_text(self, value):
        return value

    def encode_document(self, value):
        return jsonio.dumps(value), []


def _writer(store) -> CollectionWriter:
    config = parse_config({"store": {"store_type": "duckdb", "path": ":memory:"}})
    from airbyte_cdk.models import ConfiguredAirbyteStreamSerializer

    configured = ConfiguredAirbyteStreamSerializer.load({
        "stream": {"name": "s", "json_schema": {}, "supported_sync_modes": ["incremental"]},
        "sync_mode": "incremental", "destination_sync_mode": "append",
    })
    writer = CollectionWriter(store, configured, config)
    writer.columns = {
        "s": Column("s", "s", "VARCHAR"), "b": Column("b", "b", "BOOLEAN"), "f": Column("f", "f", "DOUBLE"),
        "i": Column("i", "i", "BIGINT"), "d": Column("d", "d", "DECIMAL"), "j": Column("j", "j", "JSON"),
    }
    return writer


def _docs(seed: int) -> dict[str, Document]:
    rng = random.Random(seed)
    pool = ["x", "nul\x00", "", 1, -5, 2**63, 2**70, 1.5, True, False, None, {"a": [1, "\x00"]}, [1, 2], "ü🔔"]
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    docs = {}
    for n in range(300):
        fields = {}
        for key in rng.sample(["s", "b", "f", "i", "d", "j", "other"], rng.randrange(0, 7)):
            fields[key] = rng.choice(pool)
        prior = [{"field": "x", "change": "NULLED", "reason": "R"}] if rng.random() < 0.1 else []
        docs[f"id{n}"] = Document(fields, {"k": n}, now, f"raw{n}", now, prior)
    return docs


@pytest.mark.parametrize("store_class", [_PlainStore, _NulRefusingStore])
def test_columnar_rows_equal_the_per_value_path(store_class):
    for seed in range(5):
        docs = _docs(seed)
        fast = _writer(store_class())
        spec, data = fast._rows(docs)
        # reference: every document through the per-value path
        slow = _writer(store_class())
        typed = {key: [None] * len(docs) for key in slow.columns}
        metas = []
        for index, doc in enumerate(docs.values()):
            changes = slow._row_slow(doc, index, typed, list(doc.changes) + slow.store.encode_document(doc.fields)[1])
            metas.append(jsonio.dumps({"sync_id": None, "changes": changes}))
        for key, column in slow.columns.items():
            assert data[column.name] == typed[key], key
        assert data["_airbyte_meta"] == metas
        assert data["_doc"] == [slow.store.encode_document(d.fields)[0] for d in docs.values()]
        assert fast.stats.misfits == slow.stats.misfits
