"""JSON in and out without losing integers beyond 64 bits.

orjson is fast but turns integers above 2**64 into floats when loading and refuses them when dumping. Lines that
may hold such a number (a bare run of 20+ digits) go through the standard library instead, which keeps them exact.
"""
from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import sys
import threading
from typing import Any

import orjson

# orjson keeps integers in [-2**63, 2**64 - 1] exact and turns others into floats: a run of 20+ digits, or of 19
# after a minus sign above 9223372036854775808 (-9223372036854775809 … -9999999999999999999), may be outside that
# range. _MAYBE_BIG_INT is the 20+-digit / any-19-digit-negative superset of the rule (the 2**63 comparison is not
# a regular expression); _maybe_big_int is the exact rule, fast.
_MAYBE_BIG_INT = re.compile(rb"[:\[,][ \t\r\n]*(?:-?[0-9]{20}|-[0-9]{19})")
_NUMBER_START = frozenset(b"-0123456789")
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_RUN = b"0" * 19
_INT64_MIN_DIGITS = b"9223372036854775808"  # 2**63: orjson parses -2**63 exactly, anything lower as a float
_BEFORE_NUMBER = frozenset(b":[,")
_SPACE = frozenset(b" \t\r\n")
_NOT_ZERO = re.compile(rb"[^0]")


def _maybe_big_int(raw: bytes) -> bool:
    """True if ``raw`` has, right after ``:``, ``[`` or ``,`` (whitespace between allowed), a run of 20+ digits or a
    minus sign and 19 digits above 9223372036854775808: what ``_MAYBE_BIG_INT.search`` finds, minus the 19-digit
    negatives orjson holds exactly, ~10x faster (C-level translate/find
    instead of a regex tried at every position; the digit runs of Kinesis sequence numbers, which sit in strings,
    are skipped)."""
    mapped = raw.translate(_DIGITS_TO_ZERO)
    start = mapped.find(_RUN)
    while start != -1:
        rest = _NOT_ZERO.search(mapped, start + 19)  # the end of this run
        end = len(mapped) if rest is None else rest.start()
        j = start - 1
        negative = j >= 0 and mapped[j] == 0x2D  # '-'
        if negative:
            j -= 1
        # 19 digits after '-' are below orjson's range only past -9223372036854775808 (same-length text compares as
        # the number does); most 19-digit negatives (e.g. any of -2**62 .. -10**18) stay on the fast path
        if end - start >= 20 or (negative and raw[start:end] > _INT64_MIN_DIGITS):
            while j >= 0 and mapped[j] in _SPACE:
                j -= 1
            if j >= 0 and mapped[j] in _BEFORE_NUMBER:
                return True
        if rest is None:
            return False
        start = mapped.find(_RUN, end)
    return False


_DEEP_LIMIT = 20_000  # Python frames for documents nested up to orjson's own limit (1024) and a little beyond
_deep_lock = threading.Lock()


def _deep(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a recursive stdlib JSON call; on RecursionError retry once with a higher recursion limit (the stdlib
    recurses once per nesting level, ~3 frames each), and past that report the value as nested too deeply."""
    try:
        return fn(*args, **kwargs)
    except RecursionError:
        pass
    with _deep_lock:
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(max(old, _DEEP_LIMIT))
        try:
            return fn(*args, **kwargs)
        except RecursionError:
            raise ValueError("nested too deeply") from None
        finally:
            sys.setrecursionlimit(old)


def _no_constants(name: str) -> Any:
    # NaN/Infinity are not JSON; orjson refuses them, so the stdlib path must too (else they are stored silently).
    raise ValueError(f"{name} is not valid JSON")


def _bare_number(raw: bytes) -> bool:
    """Whether the text is a bare number (first non-blank character); a line opening an object says no at once."""
    if raw[0] == 0x7B:  # '{'
        return False
    stripped = raw.lstrip()
    return bool(stripped) and stripped[0] in _NUMBER_START


MAX_DEPTH = 1024  # orjson's nesting limit; the stdlib path enforces the same, so both accept the same lines


def _depth_exceeds(value: Any, limit: int) -> bool:
    """True if containers nest deeper than ``limit`` (iterative: deep values must not exhaust the stack)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def loads(data: bytes | str) -> Any:
    """Parse one JSON value; ``ValueError`` (orjson's JSONDecodeError is one) for anything that is not valid JSON."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) >= 20 and (_maybe_big_int(raw) or _bare_number(raw)):
        value = _deep(json.loads, raw, parse_constant=_no_constants)
        if _depth_exceeds(value, MAX_DEPTH):
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        return value
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
    except TypeError:  # big integers, and nesting deeper than orjson writes (254 levels)
        return _deep(
            json.dumps, value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys, default=_stdlib_default
        )


def dumps_many(values: list[Any]) -> list[str]:
    """``[dumps(v) for v in values]``, with orjson called directly for the values it encodes as is (the rest —
    big integers, Decimal, datetime, deep nesting, … — go through ``dumps``)."""
    out: list[str] = []
    append = out.append
    fast = orjson.dumps
    for value in values:
        try:
            append(fast(value).decode("utf-8"))
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            append(dumps(value))
    return out


def dumpb(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=_default)
    except TypeError:
        return dumps(value).encode("utf-8")
