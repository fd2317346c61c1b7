"""How ``source-kinesis read`` writes a RECORD line (``run.record_line``): orjson, and the exact standard-library
fallback for what orjson does not write — integers past 64 bits, and payloads nested deeper than its 254 levels (the
parser accepts 1,024: a 990-level payload once failed every sync that read it with a RecursionError)."""
from __future__ import annotations

import json

from airbyte_cdk.models import AirbyteMessage, AirbyteRecordMessage, Type

from source_kinesis.json_exact import MAX_DEPTH, loads_exact
from source_kinesis.run import record_line


def line_of(data) -> bytes:
    return record_line(AirbyteMessage(type=Type.RECORD, record=AirbyteRecordMessage(stream="s", data=data, emitted_at=7)))


def test_a_plain_record_is_one_compact_line():
    assert line_of({"a": 1, "é": "x"}) == '{"type":"RECORD","record":{"stream":"s","data":{"a":1,"é":"x"},"emitted_at":7}}\n'.encode()


def test_integers_past_64_bits_stay_exact():
    line = line_of({"big": 2**70 + 1, "neg": -(2**66)})
    assert line.endswith(b"\n") and b'"big":1180591620717411303425' in line and b'"neg":-73786976294838206464' in line


def test_a_payload_nested_as_deep_as_the_parser_accepts_is_written():
    depth = MAX_DEPTH - 3  # the record's own two levels and its data's object around it
    payload = loads_exact(b'{"deep":' + b"[" * depth + b"1" + b"]" * depth + b"}")
    line = line_of(payload)
    assert line == b'{"type":"RECORD","record":{"stream":"s","data":{"deep":' + b"[" * depth + b"1" + b"]" * depth + b'},"emitted_at":7}}\n'
    assert json.loads(line.replace(b"[" * depth + b"1" + b"]" * depth, b"1"))["record"]["data"] == {"deep": 1}
