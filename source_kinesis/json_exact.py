"""Exact JSON parsing on top of orjson: integers beyond 64 bits stay exact Python ints.

orjson parses integers in [-2**63, 2**64 - 1] as ints and anything bigger silently as a float, so
``18446744073709551616`` would come back as ``1.8446744073709552e+19``. The standard library keeps such integers
exact but is 4-5 times slower. ``loads_exact`` therefore parses everything with orjson and re-parses with the
standard library only the payloads that may have lost digits:

1. Gate (C speed, no regex): an integer outside orjson's range needs at least 19 consecutive digits in the text.
   ``data.translate`` maps every digit to ``0`` and ``b"0" * 19 in ...`` looks for such a run. Most payloads have
   none and are done after one ``orjson.loads`` plus this scan (about a third of the parse time on small objects).
2. Walk: only when the gate fires (long IDs in strings fire it too), the parsed value is walked iteratively for a
   float of magnitude >= 2**63 that is integral, the only floats a big integer can turn into.
3. Re-parse: only when the walk finds one, the payload is parsed again with ``json.loads`` (Python ints, exact).

orjson validates first, so the standard library only ever sees valid, standard JSON: NaN/Infinity literals, lone
surrogates, invalid UTF-8 and nesting deeper than 1024 levels are rejected by orjson and never reach it.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Union

import orjson

# orjson's nesting limit: an array/object nested deeper than this is rejected.
MAX_DEPTH = 1024

_DIGITS_TO_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
# -9223372036854775809 (19 digits) is the shortest integer orjson turns into a float.
_LONG_DIGIT_RUN = b"0" * 19
_BIG = 9223372036854775808.0  # 2**63
_NON_FINITE = ("NaN", "Infinity", "-Infinity", "nan", "inf")


class JSONError(ValueError):
    """The payload is not standard JSON (or cannot be parsed exactly); the message names why, never the content."""


def loads_exact(data: Union[bytes, bytearray, memoryview, str]) -> Any:
    """Parse one JSON document; integers of any size stay exact. Raises ``JSONError``."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith(_HUGE_NUMBER):
            # orjson parses every number through a double and refuses one beyond ~1.8e308 (an integer of 310+
            # digits): valid JSON that must stay exact like any other big integer (reliability suite, issue 7).
            return _loads_huge_numbers(data)
        raise JSONError(_describe(exc)) from None
    if type(data) is not bytes:
        if isinstance(data, str):
            data = data.encode("utf-8")
        elif isinstance(data, memoryview):
            data = data.tobytes()
    if _LONG_DIGIT_RUN in data.translate(_DIGITS_TO_ZERO) and may_hold_big_int_float(value):
        try:
            return json.loads(data)
        except RecursionError:
            return _loads_deep(data)
        except ValueError as exc:  # not expected after orjson accepted it; stay safe
            raise JSONError(f"invalid JSON: {exc.__class__.__name__}") from None
    return value


_HUGE_NUMBER = "number is infinity when parsed as double"


def _reject_constant(name: str) -> Any:
    raise JSONError("invalid JSON: NaN and Infinity are not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise JSONError("invalid JSON: number out of range (a fraction or exponent beyond a double)")
    return value


def _loads_huge_numbers(data: Union[bytes, bytearray, memoryview, str]) -> Any:
    """A payload orjson refused only for a number beyond a double: parse it with the standard library, holding it
    to what orjson enforces (no NaN/Infinity, no lone surrogates, at most MAX_DEPTH levels, valid UTF-8)."""
    if isinstance(data, memoryview):
        data = data.tobytes()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + 2 * MAX_DEPTH)
    try:
        value = json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float)
    except JSONError:
        raise
    except RecursionError:
        raise JSONError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # UnicodeDecodeError and json.JSONDecodeError: the reason, never the content
        raise JSONError(f"invalid JSON: {exc.__class__.__name__}") from None
    finally:
        sys.setrecursionlimit(limit)
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if type(item) is str:
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise JSONError("invalid JSON: lone surrogate in a string") from None
        elif type(item) in (dict, list):
            if depth > MAX_DEPTH:
                raise JSONError(f"JSON nested deeper than {MAX_DEPTH} levels")
            if type(item) is dict:
                stack.extend((key, depth) for key in item)
                item = item.values()
            stack.extend((child, depth + 1) for child in item)
    return value


def _loads_deep(data: bytes) -> Any:
    """The stdlib parser recurses once per level and counts against the interpreter's recursion limit (1000 by
    default), below orjson's 1024 levels: lift the limit by enough for those levels for this one call."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + 2 * MAX_DEPTH)
    try:
        return json.loads(data)
    except RecursionError:
        raise JSONError("JSON with integers beyond 64 bits nested too deeply to parse exactly") from None
    finally:
        sys.setrecursionlimit(limit)


def dumps_line(value: Any) -> bytes:
    """``value`` as compact JSON text plus a newline: orjson, or for what orjson does not write (integers beyond 64
    bits, nesting deeper than its 254 levels) the standard library, with the recursion limit lifted for the levels a
    payload may have (``loads_exact`` accepts up to MAX_DEPTH; the stdlib encoder recurses once per level, and hit the
    default limit at ~980 levels: one such record failed every sync that read it)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        pass
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + 4 * MAX_DEPTH)
    try:
        return (json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    finally:
        sys.setrecursionlimit(limit)


def may_hold_big_int_float(value: Any) -> bool:
    """True when ``value`` holds a float that may have been an integer beyond 64 bits (iterative: no recursion)."""
    stack = [value]
    pop = stack.pop
    extend = stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is dict:
            extend(item.values())
        elif kind is list:
            extend(item)
        elif kind is float and (item >= _BIG or item <= -_BIG) and item.is_integer():
            return True
    return False


def _describe(exc: orjson.JSONDecodeError) -> str:
    """A reason without payload content: orjson's messages name the problem and position only."""
    message = str(exc)
    if message.startswith("depth limit exceeded"):
        return f"JSON nested deeper than {MAX_DEPTH} levels"
    doc, pos = getattr(exc, "doc", None), getattr(exc, "pos", None)
    if isinstance(doc, str) and isinstance(pos, int) and doc.startswith(_NON_FINITE, pos):
        return "invalid JSON: NaN and Infinity are not JSON"
    return f"invalid JSON: {message}"
