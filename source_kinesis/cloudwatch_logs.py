"""CloudWatch Logs subscription messages -> one record per log event.

The caller has already decompressed (gzip) and parsed the payload. ``log_events`` returns the fields of each log
event's record, ``None`` for a ``CONTROL_MESSAGE`` (a health check the caller skips and counts), and raises
``ValueError`` (a reason without content) for anything that is not a subscription message.

Fields of one record (snake_case so they need no quoting in SQL)::

    log_group, log_stream, owner, subscription_filters   from the message
    event_id, timestamp (epoch ms), message              from the log event
    message_json       the message parsed, when it is a JSON object (after optional surrounding whitespace)
    extracted_fields   when the subscription filter pattern extracted fields
    _event_time        the event's timestamp as ISO-8601 UTC with milliseconds

Keys CloudWatch may add later (at either level) are carried over under their own names, so nothing is dropped.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from source_kinesis.change_events import EVENT_TIME_FIELD, iso_from_epoch
from source_kinesis.json_exact import JSONError, loads_exact

_ENVELOPE = {
    "owner": "owner",
    "logGroup": "log_group",
    "logStream": "log_stream",
    "subscriptionFilters": "subscription_filters",
}
_EVENT = {"id": "event_id", "timestamp": "timestamp", "message": "message", "extractedFields": "extracted_fields"}
_KNOWN_ENVELOPE = {"messageType", "logEvents", *_ENVELOPE}


def log_events(value: Any) -> Optional[List[Dict[str, Any]]]:
    if not isinstance(value, dict):
        raise ValueError("not a CloudWatch Logs message: payload is not a JSON object")
    message_type = value.get("messageType")
    if message_type == "CONTROL_MESSAGE":
        return None
    if message_type != "DATA_MESSAGE":
        raise ValueError("not a CloudWatch Logs message: messageType is not DATA_MESSAGE or CONTROL_MESSAGE")
    events = value.get("logEvents")
    if not isinstance(events, list):
        raise ValueError("CloudWatch Logs message without a logEvents array")

    common: Dict[str, Any] = {name: value.get(key) for key, name in _ENVELOPE.items()}
    for key, extra in value.items():
        if key not in _KNOWN_ENVELOPE:
            common[key] = extra

    out: List[Dict[str, Any]] = []
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise ValueError(f"CloudWatch Logs event {index} is not an object")
        timestamp = event.get("timestamp")
        message = event.get("message")
        if not isinstance(message, str):
            raise ValueError(f"CloudWatch Logs event {index} has no message string")
        try:
            event_time = iso_from_epoch(timestamp, "ms")
        except ValueError as exc:
            raise ValueError(f"CloudWatch Logs event {index}: {exc}") from None
        fields = dict(common)
        for key, item in event.items():
            fields[_EVENT.get(key, key)] = item
        fields.setdefault("event_id", None)
        parsed = _json_object(message)
        if parsed is not None:
            fields["message_json"] = parsed
        fields[EVENT_TIME_FIELD] = event_time
        out.append(fields)
    return out


def _json_object(message: str) -> Optional[Dict[str, Any]]:
    head = message[:1]
    if head != "{":
        if not head.isspace() or message.lstrip()[:1] != "{":
            return None
    try:
        parsed = loads_exact(message)
    except JSONError:
        return None
    return parsed if isinstance(parsed, dict) else None
