"""One process, source to collection: the source's generator feeds the destination's write loop directly.

The state lives in the store: the destination commits each flush's latest state per stream in the same
transaction as its data, and the runner starts the source from those committed states. A crash can therefore
never separate data from state; whatever was read but not committed is read again, and the deterministic ``_id``
of ``append_dedup`` absorbs the re-delivery.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from airbyte_cdk.models import ConfiguredAirbyteCatalog

from collection_runner.locking import StoreLock
from collection_runner.progress import RunnerProgress
from collection_runner.query_service import QueryService
from destination_collection.config import DuckDBStoreConfig, parse_config as parse_destination_config
from destination_collection.protocol_loop import write_messages
from destination_collection.stores import open_store
from source_kinesis.follow import follow
from source_kinesis.source import SourceKinesis


def _stream_name(state: Mapping[str, Any]) -> Optional[str]:
    return ((state.get("stream") or {}).get("stream_descriptor") or {}).get("name")


def committed_source_states(store: Any, catalog: ConfiguredAirbyteCatalog) -> List[Dict[str, Any]]:
    """The committed STREAM states of the catalog's streams, as the source's ``state`` argument."""
    names = {s.stream.name for s in catalog.streams}
    return [s for s in store.committed_state_messages() if s.get("type", "STREAM") == "STREAM" and _stream_name(s) in names]


@dataclass
class RunSummary:
    text: str
    records: int
    commits: int
    errors: int


def run_pipeline(
    source_config: Mapping[str, Any],
    destination_config: Mapping[str, Any],
    catalog: ConfiguredAirbyteCatalog,
    *,
    follow_mode: bool,
    stop_event: threading.Event,
    logger: logging.Logger,
    progress: RunnerProgress,
) -> RunSummary:
    """Run one bounded sync, or follow until ``stop_event`` is set. Source errors re-raise after the committed part."""
    destination = parse_destination_config(destination_config)
    mode = "follow" if follow_mode else "sync"
    with StoreLock(destination, {"mode": mode}) as lock:
        store = open_store(destination)
        service: Optional[QueryService] = None
        try:
            if isinstance(destination.store, DuckDBStoreConfig):
                service = QueryService(store, logger).start()
                lock.update(socket=service.socket_path, mode=mode)
            states = committed_source_states(store, catalog)
            names = [s.stream.name for s in catalog.streams]
            logger.info(
                f"{'Following' if follow_mode else 'Syncing'} {', '.join(names)}: "
                + (f"resuming {len(states)} stream(s) from the state committed in the store" if states else "no committed state yet (first sync)")
            )
            if follow_mode:
                messages = follow(source_config, states, streams=names, stop_event=stop_event, logger=logger)
            else:
                messages = SourceKinesis(stop_event=stop_event).read(logger, source_config, catalog, states)
            for echo in write_messages(destination, catalog, progress.observe(messages), store=store):
                progress.on_commit(echo)
        finally:
            if service is not None:
                service.stop()
            store.close()
    return RunSummary(progress.finish(), progress.records, progress.commits, progress.errors)
