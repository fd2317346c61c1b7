"""Property-based tests (hypothesis) of the decoder's promises:

- decoding never raises past the bad-record policy: ``keep`` and ``skip`` never raise, ``fail`` raises only
  ``AirbyteTracedException``;
- ``keep`` loses no byte: every payload is either decoded (and then equals what an independent parser makes of
  it) or kept exactly in ``_kinesis_raw_data``;
- sub-sequence numbers strictly increase within a Kinesis record and do not depend on the policy.
"""
from __future__ import annotations

import base64
import gzip
import json
import zlib

import pytest
from airbyte_cdk.utils.traced_exception import AirbyteTracedException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from source_kinesis import kpl
from source_kinesis.config import FORMATS
from source_kinesis.decoding import ERROR_FIELD, RAW_DATA_FIELD, VALUE_FIELD
from unit_tests.source.decoding_fixtures import SEQ, SHARD, decoder

PROPERTY_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def _flip(data: bytes, index: int) -> bytes:
    if not data:
        return data
    index %= len(data)
    return data[:index] + bytes([data[index] ^ 0x5A]) + data[index + 1 :]


@st.composite
def payloads(draw) -> bytes:
    """Arbitrary bytes, JSON documents (big ints included), compressed or not, whole or damaged."""
    kind = draw(st.sampled_from(["bytes", "json", "json", "text"]))
    if kind == "bytes":
        data = draw(st.binary(max_size=200))
    elif kind == "json":
        data = json.dumps(draw(json_values), ensure_ascii=draw(st.booleans())).encode()
    else:
        data = draw(st.text(max_size=60)).encode("utf-8", "surrogatepass")
    compression = draw(st.sampled_from(["none", "none", "gzip", "zlib"]))
    if compression == "gzip":
        data = gzip.compress(data, mtime=0)
    elif compression == "zlib":
        data = zlib.compress(data)
    damage = draw(st.sampled_from(["none", "none", "none", "truncate", "flip", "prefix"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif damage == "flip":
        data = _flip(data, draw(st.integers(0, 10_000)))
    elif damage == "prefix":
        data = draw(st.sampled_from([b"\x1f\x8b\x08", b"x\x9c", b"x^", b"\xf3\x89\x9a\xc2"])) + data
    return data


@st.composite
def aggregates(draw) -> bytes:
    users = draw(
        st.lists(
            st.tuples(st.text(min_size=1, max_size=5), st.none() | st.integers(0, 2**128 - 1).map(str), payloads()),
            min_size=0,
            max_size=4,
        )
    )
    blob = kpl.encode_aggregate(users)
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if damage == "truncate":
        blob = blob[: draw(st.integers(0, len(blob) - 1))]
    elif damage == "flip":
        blob = _flip(blob, draw(st.integers(4, 10_000)))
    return blob


kinesis_payloads = st.one_of(payloads(), aggregates())


def _independent_json(data: bytes):
    """What the standard library makes of the payload or of its decompression (gzip, zlib); a list of candidates."""
    candidates = [data]
    for inflate in (gzip.decompress, zlib.decompress):
        try:
            candidates.append(inflate(data))
        except Exception:
            pass
    values = []
    for candidate in candidates:
        try:
            values.append(json.loads(candidate))
        except (ValueError, RecursionError):
            pass
    return values


def _independent_text(data: bytes):
    out = []
    for candidate in [data, *(_try(f, data) for f in (gzip.decompress, zlib.decompress))]:
        if candidate is not None:
            try:
                out.append(candidate.decode("utf-8"))
            except UnicodeDecodeError:
                pass
    return out


def _try(fn, data):
    try:
        return fn(data)
    except Exception:
        return None


@PROPERTY_SETTINGS
@given(data=kinesis_payloads, fmt=st.sampled_from(FORMATS), policy=st.sampled_from(["keep", "skip"]))
def test_keep_and_skip_never_raise(data, fmt, policy):
    records = decoder(fmt, on_bad_record=policy).decode(data, "pk", SHARD, SEQ, hash_range=(0, 2**127))
    subs = [r.sub_sequence_number for r in records]
    assert subs == sorted(set(subs))
    if policy == "skip":
        assert not any(ERROR_FIELD in r.fields for r in records)


@PROPERTY_SETTINGS
@given(data=kinesis_payloads, fmt=st.sampled_from(FORMATS))
def test_fail_raises_only_airbyte_traced_exceptions(data, fmt):
    try:
        decoder(fmt, on_bad_record="fail").decode(data, "pk", SHARD, SEQ)
    except AirbyteTracedException as exc:
        assert SHARD in exc.message and SEQ in exc.message


@PROPERTY_SETTINGS
@given(data=payloads())
def test_keep_loses_no_byte_json(data):
    [record] = decoder("json").decode(data, "pk", SHARD, SEQ)
    fields = record.fields
    if ERROR_FIELD in fields:
        assert set(fields) == {RAW_DATA_FIELD, ERROR_FIELD}
        assert base64.b64decode(fields[RAW_DATA_FIELD]) == data
    else:
        expected = _independent_json(data)
        value = fields if VALUE_FIELD not in fields or len(fields) != 1 else fields[VALUE_FIELD]
        assert value in expected or fields in expected


@PROPERTY_SETTINGS
@given(data=payloads())
def test_keep_loses_no_byte_text(data):
    [record] = decoder("text").decode(data, "pk", SHARD, SEQ)
    if ERROR_FIELD in record.fields:
        assert base64.b64decode(record.fields[RAW_DATA_FIELD]) == data
    else:
        assert record.fields[VALUE_FIELD] in _independent_text(data)


@PROPERTY_SETTINGS
@given(data=kinesis_payloads)
def test_bytes_format_is_the_identity(data):
    [record] = decoder("bytes").decode(data, "pk", SHARD, SEQ)
    assert base64.b64decode(record.fields[VALUE_FIELD]) == data


@PROPERTY_SETTINGS
@given(value=json_values)
def test_json_values_round_trip_exactly(value):
    [record] = decoder("json").decode(json.dumps(value).encode(), "pk", SHARD, SEQ)
    decoded = record.fields if isinstance(value, dict) else record.fields[VALUE_FIELD]
    assert decoded == value
    assert json.dumps(decoded, sort_keys=True) == json.dumps(value, sort_keys=True)  # same types: ints stay ints


@PROPERTY_SETTINGS
@given(
    users=st.lists(st.tuples(st.text(min_size=1, max_size=5), st.none() | st.integers(0, 2**128 - 1).map(str), payloads()), max_size=8),
    fmt=st.sampled_from(["json", "text"]),
)
def test_keep_loses_no_user_record_of_a_valid_aggregate(users, fmt):
    records = decoder(fmt).decode(kpl.encode_aggregate(users), "outer", SHARD, SEQ)
    assert [r.sub_sequence_number for r in records] == list(range(len(users)))
    for record, (pk, ehk, payload) in zip(records, users):
        assert (record.partition_key, record.explicit_hash_key) == (pk, ehk)
        if ERROR_FIELD in record.fields:
            assert base64.b64decode(record.fields[RAW_DATA_FIELD]) == payload


@PROPERTY_SETTINGS
@given(blob=aggregates())
def test_a_damaged_aggregate_is_kept_whole(blob):
    try:
        kpl.decode_aggregate(blob)
        intact = True
    except kpl.KplError:
        intact = False
    records = decoder("json").decode(blob, "outer", SHARD, SEQ)
    if not intact:
        [record] = records
        assert base64.b64decode(record.fields[RAW_DATA_FIELD]) == blob


@pytest.mark.parametrize("fmt", ["json", "cloudwatch_logs", "dms"])
@PROPERTY_SETTINGS
@given(blob=aggregates())
def test_sub_sequence_numbers_do_not_depend_on_the_policy(fmt, blob):
    kept = decoder(fmt, on_bad_record="keep").decode(blob, "outer", SHARD, SEQ)
    skipped = decoder(fmt, on_bad_record="skip").decode(blob, "outer", SHARD, SEQ)
    good = [(r.sub_sequence_number, r.fields) for r in kept if ERROR_FIELD not in r.fields]
    assert good == [(r.sub_sequence_number, r.fields) for r in skipped]
