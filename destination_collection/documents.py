"""Turning one Airbyte record into one change on a document: ``_id``, ``_event_time``, ``_meta`` and ``_op``.

* ``_meta``: the record's ``_kinesis_*`` fields move to ``_meta.kinesis`` (``stream, shard_id, sequence_number,
  sub_sequence_number, partition_key, arrival_time``); a record the source kept raw (``_kinesis_raw_data`` +
  ``_kinesis_error``) gets ``_meta.bad = {"reason", "raw"}``; payload fields the source shadowed
  (``_kinesis_shadowed``) are restored into the document under their own names; a ``_meta`` the record itself
  carries is kept as ``_meta.supplied``.
* ``_id``: the configured ``id_field``; else the record's (or the transformation's) ``_id``; else, under
  ``append_dedup``, the primary key encoded as a canonical JSON array (``["shardId-0001","4959…",0]``:
  deterministic, collision-free, unicode kept as is); else a random UUID.
* ``_event_time``: the configured field; else the record's ``_event_time``; else ``_kinesis_arrival_time``; else
  the ingestion time. Numbers are epoch values in the configured unit (``auto``: by magnitude).
* ``_op`` (not stored): case-insensitive in ASCII only (``"ınsert"`` is unknown, not INSERT), surrounding ASCII
  blanks ignored; missing means UPSERT; anything else unknown becomes an ERROR change.
"""
from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from . import jsonio
from .config import CollectionConfig
from .duckdb_sql import ascii_upper

OPS = ("INSERT", "UPDATE", "UPSERT", "DELETE", "REPLACE", "REPSERT")
ERROR_OP = "ERROR"

KINESIS_PREFIX = "_kinesis_"
KINESIS_FIELDS = {
    "_kinesis_stream": "stream",
    "_kinesis_shard_id": "shard_id",
    "_kinesis_sequence_number": "sequence_number",
    "_kinesis_sub_sequence_number": "sub_sequence_number",
    "_kinesis_partition_key": "partition_key",
    "_kinesis_arrival_time": "arrival_time",
}
SPECIAL_FIELDS = ("_id", "_event_time", "_op", "_meta")
# A catalog property with this keyword set to true holds a type inferred from a sample (source-kinesis's discover):
# a hint, not a declaration (README, "Schema at discover")
INFERRED_KEYWORD = "x-inferred"

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


# emitted_at values datetime can hold (year 1..9999), in ms since the epoch.
EMITTED_MIN_MS = -62_135_596_800_000
EMITTED_MAX_MS = 253_402_300_799_999


def extracted_time(emitted_at_ms: Any, ingested_at: dt.datetime) -> dt.datetime:
    """``_airbyte_extracted_at`` from a record's ``emitted_at`` (ms); the ingestion time when it is missing or not a
    usable number (a hostile or broken source must not stop the write)."""
    if type(emitted_at_ms) in (int, float) and EMITTED_MIN_MS <= emitted_at_ms <= EMITTED_MAX_MS:
        return EPOCH + dt.timedelta(milliseconds=emitted_at_ms)
    return ingested_at


@dataclass(slots=True)
class Change:
    """One record, ready to be applied to the document with ``id``."""

    id: str
    op: str
    fields: dict[str, Any]
    event_time: dt.datetime
    meta: dict[str, Any]
    raw_id: str
    extracted_at: dt.datetime
    changes: list[dict[str, Any]] = field(default_factory=list)
    generated_id: bool = False
    op_error: str | None = None
    record: dict[str, Any] | None = None  # the record as received, kept for ERROR changes only


def new_uuids(count: int) -> list[str]:
    """``count`` time-ordered UUIDs (version 7, RFC 9562 "monotonic random"), generated in bulk.

    48 bits of Unix milliseconds, then a random 74-bit value that increases by one per id within a chunk: unique
    like random UUIDs (26 random bits fixed per chunk + a random 47-bit starting counter), but consecutive ids share
    a long prefix, which keeps DuckDB's primary-key index (an ART) cheap — random keys cost it ~3x more per insert.
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = (rand >> 68) & 0xFFF  # 12 bits
    rand_hi = (rand >> 48) & 0x3FFF  # top 14 of rand_b's 62 bits, fixed per chunk
    low = rand & ((1 << 47) - 1)  # rand_b's low 48 bits start below 2**47: no carry for any chunk size
    prefix_value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | (rand_hi << 48)
    h = f"{prefix_value:032x}"
    prefix = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-"
    return [f"{prefix}{value:012x}" for value in range(low, low + count)]


class UuidPool:
    def __init__(self, chunk: int = 4096):
        self.chunk = chunk
        self.items: list[str] = []
        self.next = 0

    def take(self) -> str:
        if self.next >= len(self.items):
            self.items, self.next = new_uuids(self.chunk), 0
        item = self.items[self.next]
        self.next += 1
        return item


def split_metadata(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate document fields from source metadata. Special fields (_id, _op, ...) stay in the fields.

    Copies the record at C speed, then looks only at its ``_``-prefixed keys (Kinesis records: 6 of 20); removing
    keys keeps the others in their order, as building the fields key by key would."""
    underscored = [key for key in data if key[:1] == "_"]
    fields = dict(data)
    if not underscored:
        return fields, {}
    meta: dict[str, Any] = {}
    kinesis: dict[str, Any] = {}
    shadowed = None
    raw = error = None
    has_raw = False
    for key in underscored:
        if key.startswith(KINESIS_PREFIX):
            value = fields.pop(key)
            if key in KINESIS_FIELDS:
                kinesis[KINESIS_FIELDS[key]] = value
            elif key == "_kinesis_shadowed":
                shadowed = value
            elif key == "_kinesis_raw_data":
                raw, has_raw = value, True
            elif key == "_kinesis_error":
                error, has_raw = value, True
            else:
                kinesis[key[len(KINESIS_PREFIX):]] = value
        elif key == "_meta":
            meta["supplied"] = fields.pop(key)
    if isinstance(shadowed, dict):
        for key, value in shadowed.items():
            fields.setdefault(key, value)
    elif shadowed is not None:
        kinesis["shadowed"] = shadowed
    if kinesis:
        meta["kinesis"] = kinesis
    if has_raw:
        meta["bad"] = {"reason": error, "raw": raw}
    return fields, meta


def strip_metadata(row: dict[str, Any]) -> dict[str, Any]:
    """Fields of a transformation output row (metadata already taken from the original record)."""
    if not any(k.startswith(KINESIS_PREFIX) or k == "_meta" for k in row):
        return row
    fields, _ = split_metadata(row)
    return fields


def id_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return jsonio.dumps(value, sort_keys=True)


def encode_primary_key(record: dict[str, Any], primary_key: Sequence[Sequence[str]]) -> str:
    """Canonical JSON array of the key values: equal keys give equal ids, different keys different ids."""
    values = []
    for path in primary_key:
        value: Any = record
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        values.append(value)
    return jsonio.dumps(values, sort_keys=True)


def parse_event_time(value: Any, unit: str = "auto") -> dt.datetime | None:
    """An aware UTC datetime from an ISO-8601 string, a datetime, or an epoch number; None if not parseable."""
    if value is None or isinstance(value, bool):
        return None
    try:
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, dt.date):
            return dt.datetime(value.year, value.month, value.day, tzinfo=UTC)
        if isinstance(value, str):
            text = value.strip()
            if "-" in text[1:] or ":" in text:  # looks like ISO-8601: skip the (raising) float attempt
                try:
                    parsed = dt.datetime.fromisoformat(text)
                    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
                except ValueError:
                    pass  # e.g. "1e-5": an epoch number after all
            try:
                number = float(text)
            except ValueError:
                parsed = dt.datetime.fromisoformat(text)
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
            return _from_epoch(number, unit)
        if isinstance(value, (int, float)):
            return _from_epoch(value, unit)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _from_epoch(number: float, unit: str) -> dt.datetime | None:
    if number != number:  # NaN
        return None
    if unit == "auto":
        magnitude = abs(number)
        unit = "s" if magnitude < 1e11 else "ms" if magnitude < 1e14 else "us"
    micros = {"s": 1_000_000, "ms": 1_000, "us": 1}[unit]
    if isinstance(number, int):
        return EPOCH + dt.timedelta(microseconds=number * micros)
    return EPOCH + dt.timedelta(microseconds=round(number * micros))


class DocumentBuilder:
    """Derives changes for one collection (stream)."""

    def __init__(self, settings: CollectionConfig, primary_key: Sequence[Sequence[str]] | None, dedup: bool):
        self.settings = settings
        self.primary_key = [list(p) for p in (primary_key or []) if p]
        self.use_primary_key = dedup and bool(self.primary_key)
        self.uuids = UuidPool()

    def build_many(self, batch: list[tuple[Any, Any]], ingested_at: dt.datetime) -> list[Change]:
        """``build`` for a batch of raw records (no transformation): the same changes, with the common case (no
        configured id/event-time field, no ``_event_time``/``_op`` in the record) derived inline; anything else
        goes through ``build`` record by record."""
        settings = self.settings
        build = self.build
        changes: list[Change] = []
        append = changes.append
        if settings.id_field or settings.event_time_field:
            for data, emitted_at in batch:
                if not isinstance(data, dict):
                    data = {"_value": data}
                fields, meta = split_metadata(data)
                append(build(fields, data, meta, emitted_at, ingested_at))
            return changes
        take = self.uuids.take
        use_primary_key = self.use_primary_key
        primary_key = self.primary_key
        parse = parse_event_time
        for data, emitted_at in batch:
            if not isinstance(data, dict):
                data = {"_value": data}
            fields, meta = split_metadata(data)
            if "_event_time" in fields or "_op" in fields:
                append(build(fields, data, meta, emitted_at, ingested_at))
                continue
            generated = False
            special_id = fields.pop("_id") if "_id" in fields else None
            if special_id is not None:
                doc_id = special_id if type(special_id) is str else id_text(special_id)
            elif use_primary_key:
                doc_id = encode_primary_key(data, primary_key)
            else:
                doc_id, generated = take(), True
            event_time = None
            kinesis = meta.get("kinesis")
            if kinesis:
                arrival = kinesis.get("arrival_time")
                if arrival is not None:
                    event_time = parse(arrival)
            if event_time is None:
                event_time = ingested_at
            extracted_at = extracted_time(emitted_at, ingested_at)
            append(Change(doc_id, "UPSERT", fields, event_time, meta, take(), extracted_at, [], generated))
        return changes

    def build(
        self,
        row: dict[str, Any],
        original: dict[str, Any],
        meta: dict[str, Any],
        emitted_at_ms: int | float | None,
        ingested_at: dt.datetime,
    ) -> Change:
        """``row``: the document fields (after transformation, metadata removed); ``original``: the record."""
        changes: list[dict[str, Any]] = []
        settings = self.settings
        fields = row
        special = None
        if "_id" in fields or "_event_time" in fields or "_op" in fields:
            fields = dict(fields)
            special = {name: fields.pop(name) for name in ("_id", "_event_time", "_op") if name in fields}
        special = special or {}

        generated = False
        if settings.id_field and fields.get(settings.id_field) is not None:
            doc_id = id_text(fields[settings.id_field])
        elif special.get("_id") is not None:
            doc_id = id_text(special["_id"])
        elif self.use_primary_key:
            doc_id = encode_primary_key(original, self.primary_key)
        else:
            doc_id, generated = self.uuids.take(), True

        event_time = None
        unit = settings.event_time_unit
        if settings.event_time_field and fields.get(settings.event_time_field) is not None:
            event_time = parse_event_time(fields[settings.event_time_field], unit)
            if event_time is None:
                changes.append(_change(settings.event_time_field, "not a timestamp; _event_time fell back"))
        if event_time is None and special.get("_event_time") is not None:
            event_time = parse_event_time(special["_event_time"], unit)
            if event_time is None:
                changes.append(_change("_event_time", "not a timestamp; _event_time fell back"))
        if event_time is None:
            kinesis = meta.get("kinesis")
            if kinesis and kinesis.get("arrival_time") is not None:
                event_time = parse_event_time(kinesis["arrival_time"])
        if event_time is None:
            event_time = ingested_at

        op_value = special.get("_op")
        op_error = None
        if op_value is None:
            op = "UPSERT"
        else:
            op = ascii_upper(op_value.strip(_ASCII_SPACE)) if isinstance(op_value, str) else None
            if op not in OPS:
                op_error = f"unknown _op {jsonio.dumps(op_value)}; expected one of {', '.join(OPS)} (any case)"
                op = ERROR_OP

        extracted_at = extracted_time(emitted_at_ms, ingested_at)
        return Change(
            id=doc_id,
            op=op,
            fields=fields,
            event_time=event_time,
            meta=meta,
            raw_id=self.uuids.take(),
            extracted_at=extracted_at,
            changes=changes,
            generated_id=generated,
            op_error=op_error,
            record=original if op_error else None,
        )

    def build_failed(
        self,
        original: dict[str, Any],
        meta: dict[str, Any],
        emitted_at_ms: int | float | None,
        ingested_at: dt.datetime,
        reason: str,
    ) -> Change:
        """The change for a record the ingest transformation failed on: an ERROR change (see ``operations``) for the
        document the untransformed record names, so a stored document's data stays untouched, the record itself is
        kept in ``_meta.error.record`` with the reason, and the sync goes on."""
        fields = {k: v for k, v in strip_metadata(original).items() if k != "_op"}
        change = self.build(fields, original, meta, emitted_at_ms, ingested_at)
        change.op = ERROR_OP
        change.op_error = f"ingest transformation failed for this record: {reason}"
        change.record = original
        return change


_ASCII_SPACE = " \t\n\r\f\v"


def _change(field_name: str, detail: str) -> dict[str, Any]:
    return {"field": field_name, "change": "NULLED", "reason": "DESTINATION_TYPECAST_ERROR", "detail": detail}
