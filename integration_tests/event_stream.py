"""An encoder of AWS event-stream messages (``application/vnd.amazon.eventstream``), as Kinesis' ``SubscribeToShard``
sends them; botocore's ``botocore.eventstream.EventStreamBuffer`` is the decoder the tests check it against.

A message on the wire::

    prelude   total length (u32 BE, the whole message) | headers length (u32 BE) | CRC32 of those 8 bytes (u32 BE)
    headers   each: name length (u8) | name (UTF-8) | value type (u8; 7 = string) | value length (u16 BE) | value
    payload   the bytes
    trailer   CRC32 of everything before it (u32 BE)

Only string headers are written (all that Kinesis sends). ``event(type, payload)`` is an event message
(``:message-type: event``, ``:event-type``, ``:content-type: application/json``); ``exception(type, message)`` an
exception message (``:message-type: exception``, ``:exception-type``, a JSON payload ``{"message": ...}``), which
botocore raises as ``EventStreamError`` with that code while iterating.
"""
from __future__ import annotations

import binascii
import json
import struct
from typing import Iterable, Tuple

PRELUDE_LENGTH = 12
TRAILER_LENGTH = 4
STRING = 7  # the header value type of a UTF-8 string
CONTENT_TYPE = "application/vnd.amazon.eventstream"


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode("utf-8"), value.encode("utf-8")
    if not 1 <= len(raw_name) <= 255:
        raise ValueError(f"header name {name!r} must be 1-255 bytes")
    if len(raw_value) > 0xFFFF:
        raise ValueError(f"header {name!r}: a string value is at most 65535 bytes")
    return struct.pack(">B", len(raw_name)) + raw_name + struct.pack(">BH", STRING, len(raw_value)) + raw_value


def message(headers: Iterable[Tuple[str, str]], payload: bytes) -> bytes:
    """One event-stream message with string headers (in the order given) and a payload."""
    raw_headers = b"".join(_header(name, value) for name, value in headers)
    total = PRELUDE_LENGTH + len(raw_headers) + len(payload) + TRAILER_LENGTH
    prelude = struct.pack(">II", total, len(raw_headers))
    prelude += struct.pack(">I", binascii.crc32(prelude) & 0xFFFFFFFF)
    body = prelude + raw_headers + payload
    return body + struct.pack(">I", binascii.crc32(body) & 0xFFFFFFFF)


def event(event_type: str, payload: bytes) -> bytes:
    """An event message: ``:message-type: event``, ``:event-type: <event_type>``, a JSON payload."""
    return message([(":message-type", "event"), (":event-type", event_type), (":content-type", "application/json")], payload)


def exception(exception_type: str, text: str) -> bytes:
    """An exception message: ``:message-type: exception``, ``:exception-type: <exception_type>``, payload
    ``{"message": text}``."""
    payload = json.dumps({"message": text}, separators=(",", ":")).encode()
    return message([(":message-type", "exception"), (":exception-type", exception_type), (":content-type", "application/json")], payload)
