"""Typed columns for top-level fields: which type a field gets, how types widen, and whether a value fits.

Logical types (each store maps them to SQL): BOOLEAN, BIGINT, DECIMAL (38 digits, for integers beyond 64 bits),
DOUBLE, VARCHAR, JSON (objects, arrays, and the top type for fields whose values disagree).

* Inferred columns (fields the stream schema does not declare) widen as values arrive:
  BIGINT → DECIMAL → DOUBLE for numbers; any other disagreement → JSON, which holds every value.
* Declared columns (from the stream's JSON schema) keep their type, except that an integer column widens to
  DECIMAL when an integer beyond 64 bits arrives (integers stay exact).
* A value that does not fit its column is stored as NULL in the column, kept unchanged in ``_doc``, and listed in
  ``_airbyte_meta.changes`` as ``{"field", "change": "NULLED", "reason": "DESTINATION_TYPECAST_ERROR"}``.
"""
from __future__ import annotations

import decimal
from dataclasses import dataclass
from typing import Any, Mapping

BOOLEAN, BIGINT, DECIMAL, DOUBLE, VARCHAR, JSON = "BOOLEAN", "BIGINT", "DECIMAL", "DOUBLE", "VARCHAR", "JSON"
LOGICAL_TYPES = (BOOLEAN, BIGINT, DECIMAL, DOUBLE, VARCHAR, JSON)
NUMERIC_CHAIN = (BIGINT, DECIMAL, DOUBLE)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
DEC38_MAX = 10**38 - 1

MISFIT = object()


@dataclass
class Column:
    field: str
    name: str
    type: str
    declared: bool = False


def value_type(value: Any) -> str | None:
    """The narrowest logical type that holds ``value`` (None for null)."""
    if value is None:
        return None
    if value is True or value is False:
        return BOOLEAN
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return BIGINT
        return DECIMAL if -DEC38_MAX <= value <= DEC38_MAX else JSON
    if isinstance(value, float):
        return DOUBLE
    if isinstance(value, str):
        return VARCHAR
    return JSON


def unify(current: str | None, new: str | None) -> str | None:
    if current is None:
        return new
    if new is None or new == current:
        return current
    if current in NUMERIC_CHAIN and new in NUMERIC_CHAIN:
        return NUMERIC_CHAIN[max(NUMERIC_CHAIN.index(current), NUMERIC_CHAIN.index(new))]
    return JSON


def widen(column: Column, observed: str) -> str:
    """The type ``column`` should have after seeing a value of type ``observed``."""
    if column.declared:
        if column.type == BIGINT and observed == DECIMAL:
            return DECIMAL
        return column.type
    return unify(column.type, observed) or column.type


def declared_type(schema: Mapping[str, Any] | None) -> str:
    """Logical type for a JSON-schema property (Airbyte flavour)."""
    if not isinstance(schema, Mapping):
        return JSON
    types = schema.get("type")
    if isinstance(types, str):
        types = [types]
    types = [t for t in (types or []) if t != "null"]
    airbyte_type = schema.get("airbyte_type")
    if len(types) != 1:
        return JSON
    kind = types[0]
    if kind == "integer" or (kind == "number" and airbyte_type in ("integer", "big_integer")):
        return BIGINT
    if kind == "number":
        return DOUBLE
    if kind == "boolean":
        return BOOLEAN
    if kind == "string":
        return VARCHAR
    return JSON


def convert(value: Any, logical: str) -> Any:
    """``value`` as it goes into a column of type ``logical``; MISFIT if it does not fit."""
    if value is None:
        return None
    if logical == JSON:
        return value
    is_bool = value is True or value is False
    if logical == BOOLEAN:
        return value if is_bool else MISFIT
    if logical == VARCHAR:
        return value if isinstance(value, str) else MISFIT
    if is_bool:
        return MISFIT
    if logical == BIGINT:
        return value if isinstance(value, int) and INT64_MIN <= value <= INT64_MAX else MISFIT
    if logical == DECIMAL:
        return decimal.Decimal(value) if isinstance(value, int) and -DEC38_MAX <= value <= DEC38_MAX else MISFIT
    if logical == DOUBLE:
        if isinstance(value, float):
            return value
        if isinstance(value, int):
            try:
                return float(value)
            except OverflowError:
                return MISFIT
        return MISFIT
    return MISFIT


def misfit_change(field: str, logical: str) -> dict[str, Any]:
    return {
        "field": field,
        "change": "NULLED",
        "reason": "DESTINATION_TYPECAST_ERROR",
        "detail": f"value does not fit the {logical} column; kept in _doc",
    }
