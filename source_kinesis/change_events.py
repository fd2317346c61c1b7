"""Change events: AWS DMS and DynamoDB records -> documents with ``_op``, ``_id`` and ``_event_time``.

Both functions take the parsed JSON value of one user payload and return the fields of the records it becomes
(``None`` for a control record, which the caller skips and counts). A payload that is not a valid change event
raises ``ValueError`` with a reason that names fields and tables, never values.

``_id`` is canonical JSON (no whitespace, object keys sorted) of an array that starts with the table, e.g.
``["shop","customers",102]`` (DMS: schema, table, then the primary-key values in the configured order) or
``["Orders",{"pk":"order#42","sk":1}]`` (DynamoDB: table, then the unmarshalled ``Keys``). JSON escaping makes the
encoding injective: two different tables or keys never produce the same ``_id``, and the key order in the record
does not matter.
"""
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal, InvalidOperation
from typing import Any, Dict, List, Optional, Sequence

import orjson

OP_FIELD = "_op"
ID_FIELD = "_id"
EVENT_TIME_FIELD = "_event_time"

REPSERT = "REPSERT"
UPSERT = "UPSERT"
DELETE = "DELETE"

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


# ---------------------------------------------------------------------------------------------------------- helpers
def canonical_id(parts: Sequence[Any]) -> str:
    """Canonical JSON of ``parts``: compact, keys sorted, UTF-8 as is; integers of any size exact."""
    try:
        return orjson.dumps(list(parts), option=orjson.OPT_SORT_KEYS).decode("utf-8")
    except TypeError:  # orjson refuses integers beyond 64 bits
        return json.dumps(list(parts), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def iso_from_epoch(value: Any, unit: str = "ms") -> str:
    """ISO-8601 UTC with ``Z``: ``unit`` ms -> 3 fractional digits, us -> 6. Exact integer arithmetic."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("timestamp is not a number")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("timestamp is not an integer")
        value = int(value)
    per_second, digits = (1000, 3) if unit == "ms" else (1_000_000, 6)
    seconds, fraction = divmod(value, per_second)
    try:
        moment = _EPOCH + dt.timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError("timestamp out of range") from None
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction:0{digits}d}Z"


def iso_from_text(value: Any) -> Optional[str]:
    """An ISO-8601 timestamp normalised to UTC with ``Z`` and microseconds; naive times are taken as UTC (DMS writes
    UTC). ``None`` if ``value`` is not such a timestamp."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    try:
        moment = moment.astimezone(dt.timezone.utc)
    except (OverflowError, ValueError):
        return None
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond:06d}Z"


# -------------------------------------------------------------------------------------------------------------- DMS
DMS_SCHEMA_FIELD = "_dms_schema"
DMS_TABLE_FIELD = "_dms_table"
DMS_OPERATION_FIELD = "_dms_operation"
DMS_TRANSACTION_FIELD = "_dms_transaction_id"
DMS_TIMESTAMP_FIELD = "_dms_timestamp"

_DMS_OPS = {"load": REPSERT, "insert": REPSERT, "update": REPSERT, "delete": DELETE}


def dms_records(value: Any, primary_key: Sequence[str]) -> Optional[List[Dict[str, Any]]]:
    """One DMS record -> one document (two when an update changed the primary key: DELETE old, REPSERT new)."""
    if not isinstance(value, dict):
        raise ValueError("not a DMS record: payload is not a JSON object")
    metadata = value.get("metadata")
    if not isinstance(metadata, dict):
        raise ValueError("not a DMS record: no 'metadata' object")
    record_type = metadata.get("record-type")
    if record_type == "control":
        return None
    if record_type != "data":
        raise ValueError(f"not a DMS record: metadata.record-type is {_kind(record_type)}, expected 'data' or 'control'")
    operation = metadata.get("operation")
    op = _DMS_OPS.get(operation) if isinstance(operation, str) else None
    if op is None:
        raise ValueError("DMS data record with an unknown metadata.operation")
    row = value.get("data")
    if not isinstance(row, dict):
        raise ValueError("DMS data record without a 'data' object")
    schema, table = metadata.get("schema-name"), metadata.get("table-name")
    if not isinstance(table, str) or not table:
        raise ValueError("DMS data record without metadata.table-name")
    if not isinstance(schema, str):
        schema = ""
    doc_id = _dms_id(schema, table, row, primary_key, "data")

    extra = {DMS_SCHEMA_FIELD: schema, DMS_TABLE_FIELD: table, DMS_OPERATION_FIELD: operation}
    if "transaction-id" in metadata:
        extra[DMS_TRANSACTION_FIELD] = metadata["transaction-id"]
    timestamp = metadata.get("timestamp")
    if timestamp is not None:
        event_time = iso_from_text(timestamp)
        if event_time is not None:
            extra[EVENT_TIME_FIELD] = event_time
        else:  # not a timestamp we can read: keep it as sent rather than guess
            extra[DMS_TIMESTAMP_FIELD] = timestamp

    out: List[Dict[str, Any]] = []
    if operation == "update":
        # The before-image sits under a configurable name (BeforeImageSettings.FieldName): any other object.
        for key, before in value.items():
            if key in ("data", "metadata") or not isinstance(before, dict):
                continue
            if all(column in before for column in primary_key):
                old_id = _dms_id(schema, table, before, primary_key, key)
                if old_id != doc_id:
                    out.append({**before, OP_FIELD: DELETE, ID_FIELD: old_id, **extra})
            break
    row.update(extra)
    row[OP_FIELD] = op
    row[ID_FIELD] = doc_id
    out.append(row)
    return out


def _dms_id(schema: str, table: str, row: Dict[str, Any], primary_key: Sequence[str], where: str) -> str:
    parts: List[Any] = [schema, table]
    for column in primary_key:
        if column not in row:
            raise ValueError(f"primary-key column '{column}' missing from '{where}' of table {schema}.{table} (dms_primary_key)")
        parts.append(row[column])
    return canonical_id(parts)


# --------------------------------------------------------------------------------------------------------- DynamoDB
DYNAMODB_TABLE_FIELD = "_dynamodb_table"
DYNAMODB_EVENT_NAME_FIELD = "_dynamodb_event_name"
DYNAMODB_EVENT_ID_FIELD = "_dynamodb_event_id"
DYNAMODB_USER_IDENTITY_FIELD = "_dynamodb_user_identity"

# DynamoDB numbers have at most 38 significant digits and magnitudes within 1E-130 .. 9.99E+125.
_MAX_EXPONENT = 126


def dynamodb_records(value: Any) -> List[Dict[str, Any]]:
    """One DynamoDB-to-Kinesis record -> one document (REPSERT / UPSERT / DELETE)."""
    if not isinstance(value, dict):
        raise ValueError("not a DynamoDB record: payload is not a JSON object")
    event_name = value.get("eventName")
    change = value.get("dynamodb")
    table = value.get("tableName")
    if event_name not in ("INSERT", "MODIFY", "REMOVE"):
        raise ValueError("not a DynamoDB record: eventName is not INSERT, MODIFY or REMOVE")
    if not isinstance(change, dict):
        raise ValueError("not a DynamoDB record: no 'dynamodb' object")
    if not isinstance(table, str) or not table:
        raise ValueError("DynamoDB record without tableName")
    raw_keys = change.get("Keys")
    if not isinstance(raw_keys, dict) or not raw_keys:
        raise ValueError("DynamoDB record without dynamodb.Keys")
    keys = unmarshal_item(raw_keys)
    doc_id = canonical_id([table, keys])

    if event_name == "REMOVE":
        op, fields = DELETE, dict(keys)
    elif "NewImage" in change:
        image = change["NewImage"]
        if not isinstance(image, dict):
            raise ValueError("DynamoDB record whose dynamodb.NewImage is not an object")
        op, fields = REPSERT, unmarshal_item(image)
    else:  # KEYS_ONLY / OLD_IMAGE stream views: no whole item, so merge rather than replace
        op, fields = UPSERT, dict(keys)

    fields[OP_FIELD] = op
    fields[ID_FIELD] = doc_id
    created = change.get("ApproximateCreationDateTime")
    if created is not None:
        unit = "us" if change.get("ApproximateCreationDateTimePrecision") == "MICROSECOND" else "ms"
        fields[EVENT_TIME_FIELD] = iso_from_epoch(created, unit)
    fields[DYNAMODB_TABLE_FIELD] = table
    fields[DYNAMODB_EVENT_NAME_FIELD] = event_name
    fields[DYNAMODB_EVENT_ID_FIELD] = value.get("eventID")
    fields[DYNAMODB_USER_IDENTITY_FIELD] = value.get("userIdentity")
    return [fields]


def unmarshal_item(item: Dict[str, Any]) -> Dict[str, Any]:
    return {name: unmarshal(attribute) for name, attribute in item.items()}


def unmarshal(attribute: Any) -> Any:
    """A typed AttributeValue -> plain JSON: numbers exact, sets as arrays, binary as its base64 string."""
    if not isinstance(attribute, dict) or len(attribute) != 1:
        raise ValueError("invalid DynamoDB AttributeValue: expected an object with one type key")
    ((kind, value),) = attribute.items()
    if kind == "S":
        return _typed(value, str, kind)
    if kind == "N":
        return dynamodb_number(value)
    if kind == "BOOL":
        return _typed(value, bool, kind)
    if kind == "NULL":
        return None
    if kind == "M":
        return unmarshal_item(_typed(value, dict, kind))
    if kind == "L":
        return [unmarshal(element) for element in _typed(value, list, kind)]
    if kind == "B":
        return _typed(value, str, kind)
    if kind in ("SS", "BS"):
        return [_typed(element, str, kind) for element in _typed(value, list, kind)]
    if kind == "NS":
        return [dynamodb_number(element) for element in _typed(value, list, kind)]
    raise ValueError(f"invalid DynamoDB AttributeValue: unknown type {kind[:10]!r}")


def dynamodb_number(text: Any) -> Any:
    """DynamoDB ``N`` string -> int (exact, any size) when integral; float when the float is exactly the decimal
    (shortest repr round-trips, e.g. 19.99); else the exact decimal string (more digits than a double holds)."""
    if not isinstance(text, str):
        raise ValueError("invalid DynamoDB number: not a string")
    if text.isdecimal() or (text[:1] == "-" and text[1:].isdecimal()):
        if len(text) > _MAX_EXPONENT + 2:
            raise ValueError("invalid DynamoDB number: out of range")
        return int(text)
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ValueError("invalid DynamoDB number") from None
    if not number.is_finite():
        raise ValueError("invalid DynamoDB number: not finite")
    if number.adjusted() > _MAX_EXPONENT:
        raise ValueError("invalid DynamoDB number: out of range")
    if number == number.to_integral_value():
        return int(number)
    as_float = float(number)
    if Decimal(repr(as_float)) == number:
        return as_float
    return text


def _typed(value: Any, kind: type, name: str) -> Any:
    if type(value) is not kind:
        raise ValueError(f"invalid DynamoDB AttributeValue: {name} holds a {type(value).__name__}")
    return value


def _kind(value: Any) -> str:
    return repr(value[:20]) if isinstance(value, str) else type(value).__name__
