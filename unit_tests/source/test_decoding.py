"""PayloadDecoder: json / text / bytes, gzip and zlib detection, the bad-record policy and its counters."""
from __future__ import annotations

import base64
import gzip
import logging
import zlib

import orjson
import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_kinesis import decoding
from source_kinesis.decoding import (
    BAD_KEPT,
    BAD_SKIPPED,
    ERROR_FIELD,
    MAX_DECOMPRESSED_BYTES,
    RAW_DATA_FIELD,
    VALUE_FIELD,
    decompress,
)
from unit_tests.source.decoding_fixtures import SEQ, SHARD, decode_one, decoder, make_logger, raw_of

MIB = 1024 * 1024


# ------------------------------------------------------------------------------------------------------------ json
def test_json_object_becomes_the_fields():
    assert decode_one("json", b'{"id": 1, "name": "a", "nested": {"x": [1, 2.5, null, true]}}') == {
        "id": 1,
        "name": "a",
        "nested": {"x": [1, 2.5, None, True]},
    }


@pytest.mark.parametrize(
    "payload, value",
    [(b"[1, 2]", [1, 2]), (b'"text"', "text"), (b"42", 42), (b"-1.5", -1.5), (b"null", None), (b"true", True), (b"  {}  ", {})],
)
def test_non_object_json_is_kept_under_the_value_field(payload, value):
    fields = decode_one("json", payload)
    assert fields == (value if isinstance(value, dict) else {VALUE_FIELD: value})


def test_one_record_with_sub_sequence_zero_and_the_kinesis_partition_key():
    records = decoder().decode(b'{"a": 1}', "the-key", SHARD, SEQ)
    assert [(r.sub_sequence_number, r.partition_key, r.explicit_hash_key) for r in records] == [(0, "the-key", None)]


def test_fields_are_a_fresh_dict_per_record():
    d = decoder()
    first = d.decode(b'{"a": 1}', "pk", SHARD, SEQ)[0].fields
    first["_kinesis_stream"] = "x"  # the read path adds its fields in place
    assert d.decode(b'{"a": 1}', "pk", SHARD, SEQ)[0].fields == {"a": 1}


@pytest.mark.parametrize(
    "literal, value",
    [
        ("18446744073709551616", 2**64),  # just past orjson's unsigned range
        ("-9223372036854775809", -(2**63) - 1),  # just past its signed range
        ("123456789012345678901234567890123456789012345678901234567890", 123456789012345678901234567890123456789012345678901234567890),
        ("18446744073709551615", 2**64 - 1),  # still in orjson's range
        ("-9223372036854775808", -(2**63)),
    ],
)
def test_integers_beyond_64_bits_stay_exact(literal, value):
    fields = decode_one("json", f'{{"n": {literal}, "deep": [{{"m": {literal}}}], "f": 1.5, "s": "{literal}"}}'.encode())
    assert fields["n"] == value and type(fields["n"]) is int
    assert fields["deep"][0]["m"] == value and type(fields["deep"][0]["m"]) is int
    assert fields["f"] == 1.5 and fields["s"] == literal


def test_big_integer_at_top_level_and_in_gzip():
    assert decode_one("json", b"340282366920938463463374607431768211456") == {VALUE_FIELD: 2**128}
    assert decode_one("json", gzip.compress(b'{"n": 340282366920938463463374607431768211457}')) == {"n": 2**128 + 1}


def test_long_digit_runs_in_strings_do_not_change_the_result():
    payload = b'{"id": "38601243765231451206436357342537654474561386484217790464", "x": 1e300, "y": 12.5}'
    assert decode_one("json", payload) == {"id": "38601243765231451206436357342537654474561386484217790464", "x": 1e300, "y": 12.5}


@pytest.mark.parametrize("payload", [b"NaN", b'{"a": NaN}', b'{"a": Infinity}', b"[-Infinity]"])
def test_nan_and_infinity_are_bad_records(payload):
    fields = decode_one("json", payload)
    assert raw_of(fields) == payload
    assert fields[ERROR_FIELD] == "invalid JSON: NaN and Infinity are not JSON"


@pytest.mark.parametrize(
    "payload",
    [b"", b"{", b'{"a": 1} trailing', b"\xef\xbb\xbf{}", b'{"a": "\xff"}', b'"\\ud800"', b"{'a': 1}"],
)
def test_invalid_json_is_a_bad_record_with_the_payload_kept(payload):
    fields = decode_one("json", payload)
    assert set(fields) == {RAW_DATA_FIELD, ERROR_FIELD}
    assert raw_of(fields) == payload
    assert fields[ERROR_FIELD].startswith("invalid JSON")


@pytest.mark.parametrize("depth", [1000, 1024])
def test_deep_nesting_within_the_limit_decodes(depth):
    payload = b"[" * depth + b"18446744073709551616" + b"]" * depth
    fields = decode_one("json", payload)
    value = fields[VALUE_FIELD]
    for _ in range(depth - 1):
        value = value[0]
    assert value == [2**64] and type(value[0]) is int
    assert decode_one("json", b"[" * 1024 + b"]" * 1024)  # orjson's limit itself


@pytest.mark.parametrize("depth", [1025, 10_000, 100_000])
def test_deep_nesting_beyond_1024_levels_is_a_bad_record_not_a_crash(depth):
    payload = b'{"a":' * depth + b"1" + b"}" * depth
    fields = decode_one("json", payload)
    assert fields[ERROR_FIELD] == "JSON nested deeper than 1024 levels"
    assert raw_of(fields) == payload


def test_one_mib_payloads():
    big = {"blob": "x" * MIB, "items": list(range(1000))}
    payload = orjson.dumps(big)
    assert len(payload) > MIB
    assert decode_one("json", payload) == big
    assert decode_one("json", gzip.compress(payload)) == big
    text = ("é" * (MIB // 2)).encode()
    assert decode_one("text", text) == {VALUE_FIELD: "é" * (MIB // 2)}
    raw = bytes(range(256)) * (MIB // 256)
    assert base64.b64decode(decode_one("bytes", raw)[VALUE_FIELD]) == raw
    bad = b"{" + b"x" * MIB
    assert raw_of(decode_one("json", bad)) == bad


# ------------------------------------------------------------------------------------------------------ text/bytes
def test_text_is_utf8_in_one_field():
    assert decode_one("text", "héllo wörld\n".encode()) == {VALUE_FIELD: "héllo wörld\n"}
    assert decode_one("text", b"") == {VALUE_FIELD: ""}
    assert decode_one("text", b'{"a": 1}') == {VALUE_FIELD: '{"a": 1}'}


def test_invalid_utf8_text_is_a_bad_record():
    payload = b"abc\xff\xfedef"
    fields = decode_one("text", payload)
    assert raw_of(fields) == payload
    assert fields[ERROR_FIELD] == "invalid UTF-8 at byte 3"


@pytest.mark.parametrize("payload", [b"", b"\x00\x01\xff", gzip.compress(b'{"a": 1}'), zlib.compress(b"{}"), b"\xf3\x89\x9a\xc2rest"])
def test_bytes_are_base64_and_never_altered(payload):
    fields = decode_one("bytes", payload)
    assert fields == {VALUE_FIELD: base64.b64encode(payload).decode()}


# --------------------------------------------------------------------------------------------------- compression
@pytest.mark.parametrize("compress", [gzip.compress, zlib.compress, lambda b: zlib.compress(b, 9), lambda b: zlib.compress(b, 1)])
def test_gzip_and_zlib_payloads_are_decompressed(compress):
    assert decode_one("json", compress(b'{"compressed": true}')) == {"compressed": True}
    assert decode_one("text", compress("dé".encode())) == {VALUE_FIELD: "dé"}


def test_multi_member_gzip_is_one_payload():
    payload = gzip.compress(b'{"a": ') + gzip.compress(b"1}")
    assert decode_one("json", payload) == {"a": 1}


@pytest.mark.parametrize("text", ["x^hello", "x\u009c", "x\u00dazzz", "8=", "H\u0089", "x^"])
def test_text_that_merely_starts_like_a_zlib_header_stays_text(text):
    payload = text.encode("latin-1") if not text.isascii() else text.encode()
    if text.isascii():
        assert decode_one("text", payload) == {VALUE_FIELD: text}
    assert decompress(payload) is None


def test_zlib_header_check():
    # every real zlib header is recognised; "x^" (0x78 0x5e) is both a real header and text
    for level in range(10):
        assert decompress(zlib.compress(b"payload", level)) == b"payload"


@pytest.mark.parametrize(
    "make",
    [
        lambda: gzip.compress(b'{"a": 1}')[:-1],  # truncated trailer
        lambda: gzip.compress(b'{"a": 1}')[:-8] + b"\x00" * 8,  # bad CRC / size
        lambda: zlib.compress(b'{"a": 1}')[:-1],  # truncated adler32
        lambda: zlib.compress(b'{"a": 1}')[:-4] + b"\x00\x00\x00\x00",  # bad adler32
        lambda: zlib.compress(b'{"a": 1}') + b"junk",  # trailing bytes
        lambda: gzip.compress(b'{"a": 1}') + b"junk",
        lambda: b"\x1f\x8b\x08" + b"\x00" * 20,
    ],
)
def test_payloads_that_do_not_decompress_cleanly_are_not_compressed(make):
    payload = make()
    assert decompress(payload) is None
    fields = decode_one("json", payload)
    assert raw_of(fields) == payload  # not JSON either: kept whole, never half-decompressed


def test_decompression_bomb_is_a_bad_record():
    bomb = gzip.compress(b"\x00" * (MAX_DECOMPRESSED_BYTES + 1), 9)
    assert len(bomb) < 100 * 1024
    fields = decode_one("json", bomb)
    assert raw_of(fields) == bomb
    assert fields[ERROR_FIELD] == "compressed payload inflates to more than 64 MiB"
    zbomb = zlib.compress(b" " * (MAX_DECOMPRESSED_BYTES + 1), 9)
    assert decode_one("text", zbomb)[ERROR_FIELD] == "compressed payload inflates to more than 64 MiB"


def test_decompression_cap_is_exact():
    exact = b"a" * 1000
    assert decompress(gzip.compress(exact), limit=1000) == exact
    with pytest.raises(decoding.PayloadError):
        decompress(gzip.compress(exact + b"a"), limit=1000)
    with pytest.raises(decoding.PayloadError):  # the cap counts all members together
        decompress(gzip.compress(exact) + gzip.compress(b"a"), limit=1000)


# ------------------------------------------------------------------------------------------------ bad-record policy
def test_keep_emits_raw_payload_and_reason_and_counts_per_shard():
    d = decoder(on_bad_record="keep")
    records = d.decode(b"not json", "pk-1", SHARD, SEQ)
    assert len(records) == 1 and records[0].sub_sequence_number == 0 and records[0].partition_key == "pk-1"
    assert records[0].fields[RAW_DATA_FIELD] == base64.b64encode(b"not json").decode()
    assert d.counters.by_shard[SHARD][BAD_KEPT] == 1
    d.decode(b"{", "pk", "shardId-2", SEQ)
    assert d.counters.by_shard["shardId-2"][BAD_KEPT] == 1 and d.counters.total(BAD_KEPT) == 2


def test_skip_counts_and_logs_shard_and_sequence():
    logger, handler = make_logger("airbyte.test_skip")
    d = decoder(on_bad_record="skip", logger=logger)
    assert d.decode(b"not json", "pk", SHARD, SEQ) == []
    assert d.counters.by_shard[SHARD][BAD_SKIPPED] == 1
    [message] = handler.messages(logging.WARNING)
    assert SHARD in message and SEQ in message and "orders" in message and "invalid JSON" in message
    assert "not json" not in message  # the payload itself is never logged


def test_skip_logging_is_bounded():
    logger, handler = make_logger("airbyte.test_bounded")
    d = decoder(on_bad_record="skip", logger=logger)
    for _ in range(10_000):
        d.decode(b"x", "pk", SHARD, SEQ)
    assert d.counters.by_shard[SHARD][BAD_SKIPPED] == 10_000
    assert len(handler.records) == 10 + 3  # the first ten, then the 100th, 1,000th and 10,000th
    assert "10000 skipped" in handler.records[-1].getMessage()


def test_fail_raises_a_config_error_naming_stream_shard_sequence_and_reason():
    d = decoder(on_bad_record="fail")
    with pytest.raises(AirbyteTracedException) as info:
        d.decode(b"\xff not json", "pk", SHARD, SEQ)
    exc = info.value
    assert exc.failure_type == FailureType.config_error
    for part in ("orders", SHARD, SEQ, "invalid JSON"):
        assert part in exc.message
    assert d.decode(b'{"fine": 1}', "pk", SHARD, SEQ)[0].fields == {"fine": 1}


def test_an_internal_decoder_error_is_a_bad_record_not_a_crash(monkeypatch):
    d = decoder()

    def boom(data):
        raise KeyError("bug")

    monkeypatch.setattr(d, "_fields_of", boom)
    fields = d.decode(b'{"a": 1}', "pk", SHARD, SEQ)[0].fields
    assert fields[ERROR_FIELD] == "decoder error (KeyError)" and raw_of(fields) == b'{"a": 1}'


def test_bytearray_and_memoryview_payloads():
    assert decoder().decode(bytearray(b'{"a": 1}'), "pk", SHARD, SEQ)[0].fields == {"a": 1}
    assert decoder().decode(memoryview(b'{"a": 2}'), "pk", SHARD, SEQ)[0].fields == {"a": 2}
