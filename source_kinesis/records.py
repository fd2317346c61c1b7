"""The record contract shared with the destination: the ``_kinesis_*`` fields beside the payload's own.

Every record carries ``_kinesis_stream``, ``_kinesis_shard_id``, ``_kinesis_sequence_number`` (string),
``_kinesis_sub_sequence_number`` (integer, 0 unless KPL-aggregated), ``_kinesis_partition_key`` and
``_kinesis_arrival_time`` (ISO-8601 UTC, milliseconds). These names win over payload fields of the same name; the
payload's values are not dropped but moved under ``_kinesis_shadowed`` (``{name: value}``).
"""
from __future__ import annotations

import datetime as dt
import time
from typing import Any, Dict, Union

STREAM = "_kinesis_stream"
SHARD_ID = "_kinesis_shard_id"
SEQUENCE_NUMBER = "_kinesis_sequence_number"
SUB_SEQUENCE_NUMBER = "_kinesis_sub_sequence_number"
PARTITION_KEY = "_kinesis_partition_key"
ARRIVAL_TIME = "_kinesis_arrival_time"
SHADOWED = "_kinesis_shadowed"
CONTRACT_FIELDS = (STREAM, SHARD_ID, SEQUENCE_NUMBER, SUB_SEQUENCE_NUMBER, PARTITION_KEY, ARRIVAL_TIME, SHADOWED)
PRIMARY_KEY = [[SHARD_ID], [SEQUENCE_NUMBER], [SUB_SEQUENCE_NUMBER]]
CURSOR_FIELD = [SEQUENCE_NUMBER]


def epoch_seconds(value: Union[float, int, dt.datetime]) -> float:
    """A Kinesis timestamp as epoch seconds. The source's clients parse timestamps to epoch numbers (see
    auth.py: botocore's datetime parsing is a large share of GetRecords' cost); stubs and other clients give datetimes."""
    if type(value) is float or type(value) is int:
        return value
    return value.timestamp()


_second_cache: Dict[int, str] = {}


def arrival_iso(value: Union[float, int, dt.datetime]) -> str:
    """ISO-8601 UTC with milliseconds, e.g. 2026-11-25T21:30:39.248Z (hot path: the seconds part is cached)."""
    millis = int(round(epoch_seconds(value) * 1000))
    seconds, ms = divmod(millis, 1000)
    head = _second_cache.get(seconds)
    if head is None:
        if len(_second_cache) > 4096:
            _second_cache.clear()
        head = _second_cache[seconds] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{head}.{ms:03d}Z"


def build_record(
    fields: Dict[str, Any],
    stream: str,
    shard_id: str,
    sequence_number: str,
    sub_sequence_number: int,
    partition_key: str,
    arrival_time: str,
) -> Dict[str, Any]:
    """Add the contract fields to a decoded payload (in place; the decoder hands over a fresh dict)."""
    shadowed = None
    for name in CONTRACT_FIELDS:
        if name in fields:
            if shadowed is None:
                shadowed = {}
            shadowed[name] = fields.pop(name)
    fields[STREAM] = stream
    fields[SHARD_ID] = shard_id
    fields[SEQUENCE_NUMBER] = sequence_number
    fields[SUB_SEQUENCE_NUMBER] = sub_sequence_number
    fields[PARTITION_KEY] = partition_key
    fields[ARRIVAL_TIME] = arrival_time
    if shadowed is not None:
        fields[SHADOWED] = shadowed
    return fields
