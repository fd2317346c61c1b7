"""Which Kinesis streams the config names, and how each appears in the Airbyte catalog.

Streams named explicitly (names or ARNs) are resolved with ``DescribeStream`` alone, so the least-privilege policy
(ListShards, DescribeStream, GetShardIterator, GetRecords) is enough. Glob patterns need ``ListStreams``; when it
is denied, the error says so and how to avoid it.
"""
from __future__ import annotations

import datetime as dt
import json
import pkgutil
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from airbyte_cdk.models import AirbyteStream, SyncMode

from source_kinesis.config import SourceConfig, StreamRef
from source_kinesis.errors import ACCESS_DENIED, MalformedResponse, config_error, error_code, translate
from source_kinesis.pagination import Pagination
from source_kinesis.records import CURSOR_FIELD, PRIMARY_KEY
from source_kinesis.state import iso_ms
from source_kinesis.throttling import CONTROL_PLANE_RETRY_SECONDS, call_kinesis


@dataclass(frozen=True)
class KinesisStream:
    name: str
    arn: str
    created_at: str  # ISO-8601 UTC ms
    status: str
    encryption: str
    api_ref: Mapping[str, str]  # {"StreamName": ...} or {"StreamARN": ...}, passed to every data-plane call


def describe(client: Any, ref: Mapping[str, str], name: str, retry_budget_seconds: float = CONTROL_PLANE_RETRY_SECONDS) -> KinesisStream:
    try:
        desc = call_kinesis("DescribeStream", client.describe_stream, dict(ref, Limit=1), budget_seconds=retry_budget_seconds)["StreamDescription"]
        if not isinstance(desc, dict) or not isinstance(desc.get("StreamName"), str) or not isinstance(desc.get("StreamARN"), str):
            raise MalformedResponse(f"DescribeStream returned a StreamDescription without a StreamName and StreamARN: {str(desc)[:100]}")
    except Exception as exc:  # noqa: BLE001
        raise translate(exc, "DescribeStream", name) from None
    created = desc.get("StreamCreationTimestamp")
    if isinstance(created, (int, float)):
        created = dt.datetime.fromtimestamp(created, dt.timezone.utc)
    created_iso = iso_ms(created) if isinstance(created, dt.datetime) else str(created)
    status = desc.get("StreamStatus", "ACTIVE")
    if status in ("CREATING", "DELETING"):
        raise config_error(f"Kinesis stream '{name}' is {status}; it can be read once it is ACTIVE.")
    return KinesisStream(
        name=desc["StreamName"],
        arn=desc["StreamARN"],
        created_at=created_iso,
        status=status,
        encryption=desc.get("EncryptionType", "NONE"),
        api_ref=dict(ref),
    )


def list_stream_names(client: Any, pattern: str, retry_budget_seconds: float = CONTROL_PLANE_RETRY_SECONDS) -> List[str]:
    """Every stream name of the account/region, across pages, under the pagination bounds of ``pagination.py``."""
    names: List[str] = []
    kwargs: Dict[str, Any] = {"Limit": 100}
    pages = Pagination("ListStreams", "the account's stream list", retry_budget_seconds)
    try:
        while True:
            response = call_kinesis("ListStreams", client.list_streams, kwargs, budget_seconds=pages.call_budget())
            page_names = response.get("StreamNames")
            if not isinstance(page_names, list) or not all(isinstance(n, str) for n in page_names):
                raise MalformedResponse(f"ListStreams returned StreamNames that are not a list of names: {str(page_names)[:100]}")
            pages.add_items(len(page_names))
            names.extend(page_names)
            if not response.get("HasMoreStreams"):
                return names
            token = response.get("NextToken")
            if token:
                pages.next_token(token)
                kwargs = {"Limit": 100, "NextToken": token}
            else:
                if not page_names:
                    raise MalformedResponse("ListStreams said HasMoreStreams but returned no stream name to continue after")
                pages.next_token(f"after:{names[-1]}")
                kwargs = {"Limit": 100, "ExclusiveStartStreamName": names[-1]}
    except Exception as exc:  # noqa: BLE001
        if error_code(exc) in ACCESS_DENIED:
            raise config_error(
                f"The stream pattern '{pattern}' needs kinesis:ListStreams, which is denied. Name the streams explicitly "
                "(names or ARNs need only ListShards, DescribeStream, GetShardIterator and GetRecords), or allow kinesis:ListStreams."
            ) from None
        raise translate(exc, "ListStreams") from None


def ref_for(stream_ref: StreamRef, name: str) -> Dict[str, str]:
    return {"StreamARN": stream_ref.arn} if stream_ref.arn else {"StreamName": name}


def resolve_streams(
    client: Any, config: SourceConfig, require_matches: bool = False, retry_budget_seconds: float = CONTROL_PLANE_RETRY_SECONDS
) -> List[KinesisStream]:
    """Every stream the config names, each once, in config order."""
    found: Dict[str, KinesisStream] = {}
    all_names: Optional[List[str]] = None
    for stream_ref in config.stream_refs:
        if stream_ref.pattern is None:
            if stream_ref.name not in found:
                found[stream_ref.name] = describe(client, ref_for(stream_ref, stream_ref.name), stream_ref.name, retry_budget_seconds)
            continue
        if all_names is None:
            all_names = list_stream_names(client, stream_ref.pattern, retry_budget_seconds)
        matches = [n for n in all_names if stream_ref.matches(n)]
        if not matches and require_matches:
            raise config_error(f"The stream pattern '{stream_ref.pattern}' matches no stream in region {config.region}.")
        for name in matches:
            if name not in found:
                found[name] = describe(client, {"StreamName": name}, name, retry_budget_seconds)
    return list(found.values())


def resolve_catalog_stream(client: Any, config: SourceConfig, name: str) -> KinesisStream:
    """A stream the catalog asks for, without ListStreams: names and patterns resolve by name, ARNs by ARN."""
    for stream_ref in config.stream_refs:
        if stream_ref.matches(name):
            return describe(client, ref_for(stream_ref, name), name, config.retry_budget_seconds)
    raise config_error(
        f"The catalog asks for stream '{name}', which no entry of the source's 'streams' setting matches. "
        "Refresh the source schema or add the stream to the configuration."
    )


def record_schema() -> Dict[str, Any]:
    raw = pkgutil.get_data("source_kinesis", "schemas/kinesis_record.json")
    assert raw is not None
    return json.loads(raw)


def airbyte_stream(name: str, schema: Optional[Dict[str, Any]] = None) -> AirbyteStream:
    return AirbyteStream(
        name=name,
        json_schema=schema or record_schema(),
        supported_sync_modes=[SyncMode.full_refresh, SyncMode.incremental],
        source_defined_cursor=True,
        default_cursor_field=list(CURSOR_FIELD),
        source_defined_primary_key=[list(p) for p in PRIMARY_KEY],
        is_resumable=True,
    )
