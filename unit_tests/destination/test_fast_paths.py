"""The performance fast paths give exactly what the general paths give."""
from __future__ import annotations

import datetime as dt
import random
import re
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
        (b'{"a":-9223372036854775809}', True),  # 19 digits, below int64: orjson would return a float
        (b'{"a": [-9999999999999999999]}', True),
        (b'{"a":-9223372036854775808}', False),  # -2**63: orjson keeps it exact
        (b'{"a":-4611686018427387904}', False),  # a common 19-digit negative stays on the fast path
    ],
)
def test_big_int_scan_cases(raw, expected):
    assert jsonio._maybe_big_int(raw) is expected
    assert _reference_big_int(raw) is expected
    assert bool(jsonio._MAYBE_BIG_INT.search(raw)) >= expected  # the regex is a superset of the rule


_NUMBER_RUN = re.compile(rb"[:\[,][ \t\r\n]*(-?)([0-9]+)")


def _reference_big_int(raw: bytes) -> bool:
    """The rule, written plainly: a number (after ':', '[' or ',') orjson cannot hold exactly."""
    for match in _NUMBER_RUN.finditer(raw):
        sign, digits = match.groups()
        if len(digits) >= 20 or (sign and len(digits) == 19 and digits > b"9223372036854775808"):
            return True
    return False


def test_big_int_scan_equals_regex_on_random_input():
    rng = random.Random(3)
    alphabet = b'0123456789 :,[-"a\t.e'
    for _ in range(50_000):
        raw = bytes(rng.choice(alphabet) if rng.random() < 0.3 else rng.choice(b"0123456789")
                    for _ in range(rng.randrange(15, 80)))
        assert jsonio._maybe_big_int(raw) == _reference_big_int(raw), raw


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
    """Only the encode hooks and the declared capability matter here (PostgreSQL's NUL rule without a server)."""

    holds_nul = False

    def encode_text(self, value):
        return None if "\x00" in value else value

    def encode_document(self, value):
        text = jsonio.dumps(value)
        return text, ([{"field": "_doc", "change": "NULLED", "reason": "NUL"}] if "\\u0000" in text else [])

    close = transaction = execute = fetchall = fetch_with_columns = sql_type = table_exists = None
    lookup = write_batch = table_bytes = alter_type_sql = iter_documents = None


class _PlainStore(_NulRefusingStore):
    holds_nul = True

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
        field_dicts = [doc.fields for doc in docs.values()]
        values_by_field = {key: [f.get(key) for f in field_dicts] for key in set().union(*field_dicts)}
        spec, data = fast._rows(docs, values_by_field)
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


# -- batch document builder == one build per record ---------------------------------------------------------------
def _reference_split(data):
    """The key-by-key split_metadata the fast one replaced (kept here as the reference)."""
    from destination_collection.documents import KINESIS_FIELDS, KINESIS_PREFIX

    fields, meta, kinesis = {}, {}, {}
    shadowed = raw = error = None
    has_raw = False
    for key, value in data.items():
        if key[:1] != "_":
            fields[key] = value
        elif key.startswith(KINESIS_PREFIX):
            if key in KINESIS_FIELDS:
                kinesis[KINESIS_FIELDS[key]] = value
            elif key == "_kinesis_shadowed":
                shadowed = value
            elif key == "_kinesis_raw_data":
                raw, has_raw = value, True
            elif key == "_kinesis_error":
                error, has_raw = value, True
            else:
                kinesis[key[len(KINESIS_PREFIX):]] = value
        elif key == "_meta":
            meta["supplied"] = value
        else:
            fields[key] = value
    if isinstance(shadowed, dict):
        for key, value in shadowed.items():
            fields.setdefault(key, value)
    elif shadowed is not None:
        kinesis["shadowed"] = shadowed
    if kinesis:
        meta["kinesis"] = kinesis
    if has_raw:
        meta["bad"] = {"reason": error, "raw": raw}
    return fields, meta


class _Ordered(dict):
    pass


def _raw_batch(seed: int, n: int = 400) -> list:
    rng = random.Random(seed)
    values = ["x", "", 1, 2**70, 1.5, True, None, {"a": 1}, [1, "b"], "ü🔔"]
    times = ["2026-11-25T21:30:39.248Z", " 2026-01-02 03:04:05+02:00 ", "1700000000", 1_700_000_000_123, 1.7e9,
             "garbage", "", None, True, "1e-5", float("nan")]
    emitted = [1_700_000_000_000, 1.7e12, None, "x", 10**20, True, -1]
    batch = []
    for i in range(n):
        r = rng.random()
        if r < 0.03:
            batch.append((rng.choice([5, "text", [1, 2], None]), rng.choice(emitted)))
            continue
        data = {}
        keys = ["a", "b", "_x", "_meta", "_id", "_event_time", "_op", "_kinesis_stream", "_kinesis_shard_id",
                "_kinesis_sequence_number", "_kinesis_sub_sequence_number", "_kinesis_partition_key",
                "_kinesis_arrival_time", "_kinesis_shadowed", "_kinesis_raw_data", "_kinesis_error", "_kinesis_other",
                "", "c"]
        weights = [9, 9, 1, 1, 4, 1, 1, 7, 7, 7, 7, 7, 7, 1, 1, 1, 1, 1, 5]
        for key in rng.choices(keys, weights, k=rng.randrange(0, 12)):
            if key == "_id":
                data[key] = rng.choice([f"id{rng.randrange(50)}", rng.randrange(50), None, {"k": 1}, [1, "a"]])
            elif key in ("_event_time", "_kinesis_arrival_time"):
                data[key] = rng.choice(times)
            elif key == "_op":
                data[key] = rng.choice(["insert", "DELETE", " upsert ", "nope", 3, None])
            elif key == "_kinesis_shadowed":
                data[key] = rng.choice([{"a": "shadow", "_id": "s"}, "odd"])
            else:
                data[key] = rng.choice(values)
        if rng.random() < 0.05:
            data = _Ordered(data)
        batch.append((data, rng.choice(emitted)))
    return batch


class _CountingPool:
    def __init__(self):
        self.n = 0

    def take(self):
        self.n += 1
        return f"u{self.n}"


@pytest.mark.parametrize("mode", ["append", "append_dedup"])
@pytest.mark.parametrize("settings", [{}, {"id_field": "a"}, {"event_time_field": "b"}])
def test_build_many_equals_build_per_record(mode, settings):
    from destination_collection.documents import DocumentBuilder, split_metadata

    config = parse_config({"store": {"store_type": "duckdb", "path": ":memory:"},
                           "collections": [{"stream": "s", **settings}]})
    now = dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)
    for seed in range(6):
        batch = _raw_batch(seed)
        pk = [["_kinesis_shard_id"], ["_kinesis_sequence_number"]] if seed % 2 else [["a"]]
        fast = DocumentBuilder(config.collection("s"), pk, dedup=mode == "append_dedup")
        slow = DocumentBuilder(config.collection("s"), pk, dedup=mode == "append_dedup")
        fast.uuids, slow.uuids = _CountingPool(), _CountingPool()
        got = fast.build_many(batch, now)
        expected = []
        for data, emitted_at in batch:
            if not isinstance(data, dict):
                data = {"_value": data}
            assert split_metadata(data) == _reference_split(data)
            assert list(split_metadata(data)[0]) == list(_reference_split(data)[0])  # field order too
            fields, meta = _reference_split(data)
            expected.append(slow.build(fields, data, meta, emitted_at, now))
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            assert a == b
            assert list(a.fields) == list(b.fields)
            assert type(a.event_time) is type(b.event_time) and type(a.extracted_at) is type(b.extracted_at)


# -- a STATE right after a size flush shares its transaction ------------------------------------------------------
def _counting_transactions(monkeypatch):
    from destination_collection.stores.duckdb_store import DuckDBStore

    log = []
    original = DuckDBStore.transaction

    def transaction(self):
        if not self._in_tx:
            log.append(1)
        return original(self)

    monkeypatch.setattr(DuckDBStore, "transaction", transaction)
    return log


def test_state_after_a_full_batch_commits_with_it(harness, monkeypatch):
    from unit_tests.destination.harness import record, state, stream

    log = _counting_transactions(monkeypatch)
    streams = [stream("a", mode="append", pk=[]), stream("b", mode="append", pk=[])]
    messages = [record("a", {"n": i}) for i in range(4)] + [state("a", 1)]  # batch_size 2: two size flushes
    echoes = harness.write(streams, messages, batch_size=2)
    assert [e["state"]["destinationStats"]["recordCount"] for e in echoes] == [4.0]
    # open (the metadata tables, then the writers: two transactions, so the schema's metadata-DDL lock is not held
    # while the writers' DDL waits), the first full batch (committed when the next record arrives), the second with
    # the state
    assert len(log) == 4
    assert harness.query("SELECT count(*) AS n FROM a")[0]["n"] == 4


def test_full_batch_is_committed_before_a_state_that_does_not_cover_it(harness, monkeypatch):
    from unit_tests.destination.harness import record, state, stream

    streams = [stream("a", mode="append", pk=[]), stream("b", mode="append", pk=[])]
    messages = [record("a", {"n": i}) for i in range(2)] + [state("b", 1), record("b", {"n": 9}), state("a", 2)]
    seen = []
    for echo in harness.iter_write(streams, messages, batch_size=2):
        store = harness.store()
        try:  # what a reader sees when the echo arrives (the write loop is paused at this yield)
            seen.append((echo["state"]["stream"]["stream_descriptor"]["name"], store.count_documents("a")))
        finally:
            store.close()
    assert seen == [("b", 2), ("a", 2)]


def test_full_batch_is_committed_before_the_next_record_and_a_trace(harness):
    from unit_tests.destination.harness import complete, record, state, stream

    streams = [stream("a", mode="append", pk=[])]
    messages = [record("a", {"n": i}) for i in range(3)] + [complete("a"), state("a", 1)]
    echoes = harness.write(streams, messages, batch_size=2)
    assert len(echoes) == 1 and harness.query("SELECT count(*) AS n FROM a")[0]["n"] == 3


# -- column evolution: per-field type scan == the per-pair scan it replaced -------------------------------------------
def _reference_observed(docs):
    from destination_collection.column_types import value_type

    pairs = {(key, type(value)) for doc in docs for key, value in doc.fields.items()}
    observed = {}
    for key, kind_type in pairs:
        kinds = {value_type(v) for doc in docs if type(v := doc.fields.get(key, None)) is kind_type}
        kinds.discard(None)
        if kinds:
            observed.setdefault(key, set()).update(kinds)
    return observed


class _EvolveCatalog:
    def __init__(self, calls: list):
        self.calls = calls

    def add_columns(self, table, columns):
        self.calls.append(("add", [(c.field, c.name, c.type) for c in columns]))

    def widen_column(self, table, column, target):
        self.calls.append(("widen", column.field, target))


class _EvolveStore(_PlainStore):
    def __init__(self):
        self.calls = []
        self.catalog = _EvolveCatalog(self.calls)


def test_evolve_sees_the_same_types_as_the_pair_scan():
    import decimal

    from destination_collection.collection_writer import CollectionWriter as W

    rng = random.Random(11)
    pool = [1, -2**63, 2**63 - 1, 2**63, -2**63 - 1, 10**40, True, 1.5, "s", None, {"a": 1}, [1], decimal.Decimal("1.5"),
            decimal.Decimal(7)]
    for _ in range(200):
        docs = []
        for n in range(rng.randrange(1, 30)):
            keys = rng.sample(["a", "b", "c", "d", "e"], rng.randrange(0, 5))
            docs.append(Document({k: rng.choice(pool) for k in keys}, {}, None, "", None, []))
        store = _EvolveStore()
        writer = _writer(store)
        writer.columns = {}
        writer._evolve(docs)
        expected = _reference_observed(docs)
        got = {}
        for kind, columns in [c for c in store.calls if c[0] == "add"]:
            for field_name, _, logical in columns:
                got[field_name] = logical
        from destination_collection.column_types import unify

        for key, kinds in expected.items():
            logical = None
            for k in kinds:
                logical = unify(logical, k)
            assert got.get(key) == logical, (key, kinds, docs)
        assert set(got) == set(expected)
        order = [c[0] for c in store.calls[0][1]] if store.calls else []
        assert order == [k for k in dict.fromkeys(k for d in docs for k in d.fields) if k in expected]
        # a second batch widens existing columns exactly as the per-pair scan says
        more = [Document({k: rng.choice(pool) for k in rng.sample(["a", "b", "c"], 2)}, {}, None, "", None, [])
                for _ in range(10)]
        before = {k: c.type for k, c in writer.columns.items()}
        store.calls.clear()
        writer._evolve(more)
        for key, kinds in _reference_observed(more).items():
            if key in before:
                from destination_collection.column_types import Column as C, widen

                target = before[key]
                for k in kinds:
                    target = widen(C(key, key, target), k)
                assert writer.columns[key].type == target


# -- JSON texts in bulk == one encode per value ---------------------------------------------------------------------
def _json_values():
    import decimal

    return [{"a": 1}, [1, "x"], {"n": 2**70}, {"d": decimal.Decimal("1.5")}, {"t": dt.datetime(2026, 1, 1)},
            {"nul": "a\x00b"}, {"k\x00": 1}, ["\x00"], {}, "s", 1.5, True, {"deep": [[[[1]]]]}, {"s": {1, 2}}]


def test_dumps_many_equals_dumps():
    nested = current = {}
    for _ in range(400):  # deeper than orjson writes
        current["x"] = {}
        current = current["x"]
    values = _json_values() + [nested]
    assert jsonio.dumps_many(values) == [jsonio.dumps(v) for v in values]


def test_encode_documents_equals_encode_document_per_value():
    from destination_collection.stores.postgres_store import PostgresStore

    postgres = PostgresStore.__new__(PostgresStore)  # the encode hooks need no connection
    for store in (_PlainStore(), _NulRefusingStore(), postgres):
        for values in (_json_values(), [{"a": 1}, [2]], []):
            texts, changes = store.encode_documents(values)
            expected = [store.encode_document(v) for v in values]
            assert texts == [t for t, _ in expected]
            assert (changes or [[] for _ in values]) == [c for _, c in expected]


def test_blank_line_test_equals_strip():
    from destination_collection.protocol_loop import WriteLoop

    for item in [b"", b" ", b"\t\r\n\x0b\x0c", b"\x00", b" x ", "", " \u2003\u3000\n", "\u00a0", "\x85", " a", "\x1c"]:
        assert (not item or item.isspace()) == (not item.strip()), item
    assert WriteLoop._parse_line  # the write loop uses this test


def test_bare_number_detection_equals_lstrip_rule():
    rng = random.Random(5)
    for _ in range(20_000):
        raw = bytes(rng.choice(b" \t\r\n\x0b\x0c{[-0123456789\"a") for _ in range(rng.randrange(20, 30)))
        stripped = raw.lstrip()
        assert jsonio._bare_number(raw) == bool(stripped[:1] and stripped[0] in jsonio._NUMBER_START), raw


def test_gc_threshold_is_raised_during_a_write_and_restored_after(harness):
    import gc

    from unit_tests.destination.harness import record, state, stream

    before = gc.get_threshold()
    during = []
    for _ in harness.iter_write([stream("a", mode="append", pk=[])], [record("a", {"n": 1}), state("a", 1)]):
        during.append(gc.get_threshold())
    assert during and during[0][0] >= 50_000 and during[0][1:] == before[1:]
    assert gc.get_threshold() == before
    with pytest.raises(Exception):  # a failing write restores it too
        list(harness.iter_write([stream("a", mode="append", pk=[])], [record("a", {"n": 1})], batch_size=0))
    assert gc.get_threshold() == before
