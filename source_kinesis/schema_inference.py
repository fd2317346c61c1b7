"""Infer a stream's JSON schema from sampled records with genson (the inference library the CDK ships).

``infer_schema`` takes the ``fields`` of decoded records (what ``PayloadDecoder.decode`` returns, bad records
included: they are emitted too) and returns a draft-07-compatible object schema. It is deliberately open:

- no ``required`` lists (a sample cannot prove a field is always there) and no ``additionalProperties: false``,
  so records unlike the sample still validate;
- values nested deeper than ``MAX_DEPTH`` levels are described as ``{}`` (any value) instead of recursing, so a
  pathological payload (orjson accepts 1024 levels) cannot exhaust the Python stack at discover.

Sampling (how many records, for how long) is the caller's job; this module only describes what it is given.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable

from genson import SchemaBuilder
from genson.schema.strategies import SchemaStrategy

MAX_DEPTH = 32


class _Deep:
    """Stands for a value nested deeper than MAX_DEPTH."""

    __slots__ = ()


_DEEP = _Deep()


class _AnyValue(SchemaStrategy):
    @classmethod
    def match_object(cls, obj: Any) -> bool:
        return isinstance(obj, _Deep)

    @classmethod
    def match_schema(cls, schema: Dict[str, Any]) -> bool:
        return False

    def add_object(self, obj: Any) -> None:
        pass

    def to_schema(self) -> Dict[str, Any]:
        return {}


class _Builder(SchemaBuilder):
    EXTRA_STRATEGIES = (_AnyValue,)


def infer_schema(records: Iterable[Dict[str, Any]]) -> Dict[str, Any]:
    """The JSON schema of ``records`` (dicts; anything else is ignored). ``{"type": "object"}`` for no records."""
    builder = _Builder(schema_uri=None)
    builder.add_schema({"type": "object"})
    for record in records:
        if isinstance(record, dict):
            builder.add_object(_bounded(record) if _deeper_than(record, MAX_DEPTH) else record)
    schema = builder.to_schema()
    schema.pop("$schema", None)
    _open(schema)
    return schema


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if type(item) is dict:
            stack.extend((child, depth + 1) for child in item.values())
        elif type(item) is list:
            stack.extend((child, depth + 1) for child in item)
    return False


def _bounded(value: Any, depth: int = 0) -> Any:
    if type(value) is dict:
        if depth >= MAX_DEPTH:
            return _DEEP
        return {key: _bounded(child, depth + 1) for key, child in value.items()}
    if type(value) is list:
        if depth >= MAX_DEPTH:
            return _DEEP
        return [_bounded(child, depth + 1) for child in value]
    return value


def _open(schema: Dict[str, Any]) -> None:
    """Drop every ``required`` list, walking schema nodes only (a property may itself be named "required")."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        node.pop("required", None)
        stack.extend((node.get("properties") or {}).values())
        stack.extend((node.get("patternProperties") or {}).values())
        items = node.get("items")
        if isinstance(items, list):
            stack.extend(items)
        elif isinstance(items, dict):
            stack.append(items)
        stack.extend(node.get("anyOf") or ())
