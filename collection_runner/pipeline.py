"""Source to collection: the source's messages feed the destination's write loop.

The source runs in a process of its own (``source_process``: reading and writing use both cores), or, with
``source_in_process`` (``--source-in-process``: the reference the differential tests compare with, and the
mode for tests that replace the source in this process), on a thread of the runner's process. Either way its
messages go through the same ``SourcePump``, the same filters and the same write loop.

The state lives in the store: the destination commits each flush's latest state per stream in the same
transaction as its data, and the runner starts the source from those committed states. A crash can therefore
never separate data from state; whatever was read but not committed is read again, and the deterministic ``_id``
of ``append_dedup`` absorbs the re-delivery.

A stop request (SIGINT/SIGTERM) never waits on the source for long: the source runs on its own thread
(``SourcePump``), gets a short grace to emit its final checkpoints, and is then left behind while the write loop
commits what it already emitted (an endpoint that stopped answering cannot hold the runner for its retry budget).
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional

from airbyte_cdk.models import ConfiguredAirbyteCatalog, ConfiguredAirbyteCatalogSerializer

from collection_runner import source_process
from collection_runner.configs import registered_secrets
from collection_runner.locking import StoreLock, collections_for
from collection_runner.progress import RunnerProgress
from collection_runner.query_service import QUERY_TIMEOUT_SECS, QueryService
from collection_runner.repeated_states import RepeatedStates
from collection_runner.source_pump import SourcePump
from destination_collection.config import DuckDBStoreConfig, parse_config as parse_destination_config
from destination_collection.protocol_loop import write_messages
from destination_collection.stores import open_store
from source_kinesis.follow import follow
from source_kinesis.source import SourceKinesis


# After a stop request, how long the source may take to emit its final checkpoints before the runner commits what it
# already has without them. The runner exits within 5 s of SIGTERM: this grace, the last commit, closing the store.
STOP_GRACE_SECONDS = 1.5
SLOW_CLOSE_SECONDS = 2.0  # closing longer than this (of the 5 s stop bound) is logged with where the time went
# Messages the pump may hold for the write loop. A source process reads on while the writer applies a batch (a
# 50,000-record batch takes ~1 s of the store's SQL): a small buffer made it wait for every commit, as a pipe's 64 KiB
# does in ``read | write``. Bounded by bytes too (Kinesis records reach 1 MiB): 64 MiB of records at most. In this
# process the source shares the GIL with the writer, so buffering gains nothing there.
CHILD_BUFFERED = 100_000
CHILD_BUFFERED_BYTES = 64 * 1024 * 1024
IN_PROCESS_BUFFERED = 2_000


def _stream_name(state: Mapping[str, Any]) -> Optional[str]:
    return ((state.get("stream") or {}).get("stream_descriptor") or {}).get("name")


def committed_source_states(store: Any, catalog: ConfiguredAirbyteCatalog) -> List[Dict[str, Any]]:
    """The committed STREAM states of the catalog's streams, as the source's ``state`` argument."""
    names = {s.stream.name for s in catalog.streams}
    return [s for s in store.states.messages() if s.get("type", "STREAM") == "STREAM" and _stream_name(s) in names]


@dataclass
class RunSummary:
    text: str
    records: int
    commits: int
    errors: int
    stopped: bool = False  # ended by the stop request (SIGINT/SIGTERM)
    source_abandoned: bool = False  # the source was still busy when the stop grace ran out


def run_pipeline(
    source_config: Mapping[str, Any],
    destination_config: Mapping[str, Any],
    catalog: ConfiguredAirbyteCatalog,
    *,
    follow_mode: bool,
    stop_event: threading.Event,
    logger: logging.Logger,
    progress: RunnerProgress,
    stop_grace_seconds: float = STOP_GRACE_SECONDS,
    query_timeout: float = QUERY_TIMEOUT_SECS,
    on_reading: Callable[[], None] = lambda: None,
    source_in_process: bool = False,
) -> RunSummary:
    """Run one bounded sync, or follow until ``stop_event`` is set. Source errors re-raise after the committed part
    (what the source emitted before failing is committed first), except an error after the stop request.
    ``on_reading`` is called once the store is ready, just before the source is asked for its first message (the
    runner's stop handlers change meaning there: see ``stopping``). ``source_in_process``: the source on a thread
    of this process instead of its own process."""
    destination = parse_destination_config(destination_config)
    mode = "follow" if follow_mode else "sync"
    names = [s.stream.name for s in catalog.streams]
    collections = collections_for(destination, [(s.stream.name, s.stream.namespace) for s in catalog.streams])
    # (the source's process, prestarted by the CLI, imports while the store is locked and opened; closed on the way out)
    in_this_process = contextlib.nullcontext(None)
    with (in_this_process if source_in_process else source_process.take()) as child, \
            StoreLock(destination, {"mode": mode}, logger=logger, collections=collections) as lock:
        store = open_store(destination)
        service: Optional[QueryService] = None
        try:
            if isinstance(destination.store, DuckDBStoreConfig):
                service = QueryService(store, logger, timeout_secs=query_timeout, holder=lock.holder()).start()
                lock.update(socket=service.socket_path, mode=mode)
            else:
                lock.announce(store)  # PostgreSQL: who holds these collections, for `stats` and refused runners
            states = committed_source_states(store, catalog)
            logger.info(
                f"{'Following' if follow_mode else 'Syncing'} {', '.join(names)}: "
                + (f"resuming {len(states)} stream(s) from the state committed in the store" if states else "no committed state yet (first sync)")
            )
            if child is not None:
                child.send_job(
                    dict(source_config), ConfiguredAirbyteCatalogSerializer.dump(catalog), states, follow_mode=follow_mode,
                    streams=names, secrets=registered_secrets(), verbose=logger.isEnabledFor(logging.DEBUG),
                )
                child.forward_stop(stop_event)
                messages = child.messages()
            elif follow_mode:
                messages = follow(source_config, states, streams=names, stop_event=stop_event, logger=logger)
            else:
                messages = SourceKinesis(stop_event=stop_event).read(logger, source_config, catalog, states)
            on_reading()
            if child is None:
                pump = SourcePump(messages, stop_event, logger, grace_seconds=stop_grace_seconds, max_buffered=IN_PROCESS_BUFFERED)
            else:
                pump = SourcePump(
                    messages, stop_event, logger, grace_seconds=stop_grace_seconds, max_buffered=CHILD_BUFFERED,
                    max_buffered_bytes=CHILD_BUFFERED_BYTES, size_of=source_process.message_size,
                )
            pump.start()
            try:
                # (a state equal to the last committed one for its stream is not committed again: an idle runner
                # makes no commits; see repeated_states. The lock is still checked at each such state: a lost
                # PostgreSQL lock stops an idle runner as it stops a busy one, before its next commit)
                idle_check = lambda: stop_event.is_set() or lock.verify()  # noqa: E731
                fresh = RepeatedStates(states, on_repeat=idle_check).filter(pump.messages())
                for echo in write_messages(destination, catalog, progress.observe(fresh), store=store):
                    progress.on_commit(echo)
                    if not stop_event.is_set():  # stopping anyway: what was committed is, exit 0
                        lock.verify()  # PostgreSQL: the advisory lock went with a lost session? stop (exit 3)
            finally:
                pump.close()
                if child is not None:  # nobody reads its pipe once the pump let go: no reason to wait for it
                    child.close(wait=not (pump.abandoned_source or pump.dropped_after_stop))
            pump.raise_error()
        finally:
            # a query that ignored its interrupt still runs on a cursor of this connection: closing the connection
            # under it is unsafe, and everything is committed already (the next open replays the WAL)
            started = time.monotonic()
            stopped = service is None or service.stop()
            service_secs = time.monotonic() - started
            if stopped:
                store.close()
            closing_secs = time.monotonic() - started - service_secs
            if service_secs + closing_secs > SLOW_CLOSE_SECONDS:  # the stop bound's budget: say where it went
                logger.warning(f"Closing took {service_secs + closing_secs:.1f} s: the query service {service_secs:.1f} s, the store {closing_secs:.1f} s.")
    return RunSummary(
        progress.finish(), progress.records, progress.commits, progress.errors,
        stopped=stop_event.is_set(), source_abandoned=pump.abandoned_source,
    )
