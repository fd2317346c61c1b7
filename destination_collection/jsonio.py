"""JSON in and out without losing integers beyond 64 bits.

orjson is fast but turns integers above 2**64 into floats when loading and refuses them when dumping. Lines that
may hold such a number (a bare run of 20+ digits) go through the standard library instead, which keeps them exact.
"""
from __future__ import annotations

import datetime as dt
import decimal
import json
import re
from typing import Any

import orjson

_MAYBE_BIG_INT = re.compile(rb"[:\[,][ \t\r\n]*-?[0-9]{20}")
_NUMBER_START = frozenset(b"-0123456789")


def loads(data: bytes | str) -> Any:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if _MAYBE_BIG_INT.search(raw) or (len(raw) >= 20 and raw.lstrip()[:1] and raw.lstrip()[0] in _NUMBER_START):
        return json.loads(raw)
    return orjson.loads(raw)


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        if value == value.to_integral_value():
            return int(value)
        return float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        import base64

        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _stdlib_default(value: Any) -> Any:
    return _default(value)


def dumps(value: Any, sort_keys: bool = False) -> str:
    """Compact JSON text; exact for big integers; deterministic when sort_keys."""
    try:
        return orjson.dumps(value, default=_default, option=orjson.OPT_SORT_KEYS if sort_keys else 0).decode("utf-8")
    except TypeError:
        return json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys, default=_stdlib_default
        )


def dumpb(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=_default)
    except TypeError:
        return dumps(value).encode("utf-8")
