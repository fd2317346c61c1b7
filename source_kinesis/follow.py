"""Follow reads: a Python API for the sync runner (not a UI option, so Airbyte syncs stay bounded).

``follow(config, state, stop_event=...)`` reads every configured stream and shard concurrently and continuously,
picks up new shards as resharding happens, checkpoints on time, never busy-waits when idle, and ends cleanly
(in-flight pages emitted, final state per stream) once ``stop_event`` is set.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Iterator, List, Mapping, Optional

from airbyte_cdk.models import AirbyteMessage

from source_kinesis.auth import ClientFactory
from source_kinesis.config import parse_config
from source_kinesis.deadlines import Stopped
from source_kinesis.discovery import resolve_catalog_stream, resolve_streams
from source_kinesis.orchestrator import Orchestrator
from source_kinesis.source import states_by_stream, unique_stream_names


def follow(
    config: Mapping[str, Any],
    state: Optional[List[Any]] = None,
    *,
    streams: Optional[List[str]] = None,
    stop_event: Optional[threading.Event] = None,
    logger: Optional[logging.Logger] = None,
    progress_interval: float = 30.0,
) -> Iterator[AirbyteMessage]:
    """Yield records, per-stream states and status traces until ``stop_event`` is set.

    ``state`` is a list of STREAM state messages (dicts as Airbyte writes them, or CDK objects); ``streams``
    limits the read to these names (default: every stream the config names or matches).
    """
    cfg = parse_config(config)
    log = logger or logging.getLogger("airbyte")
    try:
        client = ClientFactory(cfg, stop=stop_event).kinesis()
        names = unique_stream_names(streams) if streams is not None else [s.name for s in resolve_streams(client, cfg, retry_budget_seconds=cfg.retry_budget_seconds)]
    except Stopped:
        return  # stopped before reading anything: nothing to emit, nothing to checkpoint
    orchestrator = Orchestrator(cfg, client, log, follow=True, stop_event=stop_event, progress_interval=progress_interval)
    yield from orchestrator.run(names, lambda name: resolve_catalog_stream(client, cfg, name), states_by_stream(state))
