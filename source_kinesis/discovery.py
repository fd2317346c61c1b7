"""Which Kinesis streams the config names, and how each appears in the Airbyte catalog.

Streams named explicitly (names or ARNs) are resolved with ``DescribeStream`` alone, so the least-privilege policy
(ListShards, DescribeStream, GetShardIterator, GetRecords) is enough. Glob patterns need ``ListStreams``; when it
is denied, the error says so and how to avoid it.
"""
from __future__ import annotations

import json
import pkgutil
from typing import Any, Dict, List, Optional

from airbyte_cdk.models import AirbyteStream, SyncMode

from source_kinesis.config import SourceConfig, StreamRef
from source_kinesis.errors import config_error
from source_kinesis.kinesis_api import KinesisStream, list_stream_names
from source_kinesis.kinesis_api import describe_stream as describe
from source_kinesis.records import CURSOR_FIELD, PRIMARY_KEY
from source_kinesis.throttling import CONTROL_PLANE_RETRY_SECONDS

__all__ = ["KinesisStream", "airbyte_stream", "record_schema", "resolve_catalog_stream", "resolve_streams"]


def ref_for(stream_ref: StreamRef, name: str) -> Dict[str, str]:
    """How the calls address a stream the config names (the API layer's stream_params take it as is)."""
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
