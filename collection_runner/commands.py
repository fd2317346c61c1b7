"""What each ``kinesis-collection`` command does (the CLI module only parses arguments and maps errors)."""
from __future__ import annotations

import argparse
import logging
import threading
from typing import Any, Callable, Dict, Optional, TypeVar

from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from collection_runner.cli import EXIT_OK, EXIT_SYSTEM, install_stop_handlers
from collection_runner.configs import follow_tuned, load_catalog, load_destination_config, load_source_config
from collection_runner.locking import StoreLock, read_holder
from collection_runner.pipeline import run_pipeline
from collection_runner.progress import RunnerProgress
from collection_runner.query_service import ask
from destination_collection import inspect as inspect_cmd
from destination_collection.config import DuckDBStoreConfig, parse_config as parse_destination_config
from destination_collection.naming import STATE_TABLE
from destination_collection.stores import open_store

logger = logging.getLogger("airbyte")
T = TypeVar("T")


def _until_stopped(work: Callable[[], T], stop_event: threading.Event, what: str) -> Optional[T]:
    """``work()``'s result, run on a daemon thread; None if the stop is requested first (a discovery against an
    endpoint that stopped answering must not hold a SIGTERM for its retry budget)."""
    result: Dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name=what, daemon=True)
    thread.start()
    while thread.is_alive() and not stop_event.is_set():
        thread.join(0.1)
    if thread.is_alive():
        return None
    if "error" in result:
        raise result["error"]
    return result["value"]


def sync(args: argparse.Namespace) -> int:
    follow_mode = args.command == "follow"
    stop_event = threading.Event()
    install_stop_handlers(stop_event)
    source_config = load_source_config(args.source)
    destination_config = load_destination_config(args.destination)
    if follow_mode:
        source_config, destination_config = follow_tuned(source_config, destination_config)
    catalog = _until_stopped(lambda: load_catalog(args.catalog, source_config, logger), stop_event, "discovery")
    if catalog is None:
        logger.info("Stopped before reading anything (during discovery): nothing to commit.")
        return EXIT_OK
    progress = RunnerProgress(logger)
    summary = run_pipeline(
        source_config, destination_config, catalog, follow_mode=follow_mode, stop_event=stop_event, logger=logger, progress=progress,
        query_timeout=args.query_timeout,
    )
    logger.info(f"{'Follow stopped' if follow_mode else 'Sync stopped' if summary.stopped else 'Sync done'}: {summary.text}")
    if summary.stopped:
        return EXIT_OK  # SIGINT/SIGTERM: what was read is committed; errors of the source after the stop are logged
    return EXIT_OK if not summary.errors else EXIT_SYSTEM


def reset(args: argparse.Namespace) -> int:
    config = parse_destination_config(load_destination_config(args.destination))
    with StoreLock(config, {"mode": "reset"}):
        store = open_store(config)
        try:
            with store.transaction():
                store.execute(f"DELETE FROM {store.q(STATE_TABLE)} WHERE stream_key = {store.param}", [args.stream])
                emptied = None
                if args.empty_collection:
                    table = inspect_cmd.resolve_collection(store, args.stream)
                    emptied = store.count_documents(table)
                    store.execute(f"DELETE FROM {store.q(table)}")
        finally:
            store.close()
    logger.info(
        f"Stream '{args.stream}': committed state forgotten; the next sync reads it from its start position"
        + (f"; {emptied} documents deleted from its collection." if emptied is not None else ".")
    )
    return EXIT_OK


def inspect(args: argparse.Namespace) -> int:
    config = parse_destination_config(load_destination_config(args.destination))
    request = {
        "command": args.command,
        "sql": getattr(args, "sql", None),
        "collection": getattr(args, "collection", None),
        "limit": getattr(args, "limit", None),
        "format": args.format,
        "timeout": args.timeout,
    }
    if isinstance(config.store, DuckDBStoreConfig):
        holder = read_holder(config.store.resolved_path())
        if holder is not None:
            if not holder.get("socket"):
                raise AirbyteTracedException(
                    message=f"A runner (pid {holder.get('pid', '?')}) is starting up on this store; try again in a moment.",
                    failure_type=FailureType.transient_error,
                )
            response = ask(holder["socket"], request, timeout=args.timeout + 15.0)
            if not response.get("ok"):
                failure = FailureType(response.get("failure_type", "system_error"))
                raise AirbyteTracedException(message=response.get("error", "query failed"), failure_type=failure)
            print(response["output"])
            return EXIT_OK
    store = open_store(config, read_only=True)
    try:
        view = store.read_only_view()
        try:
            output = inspect_cmd.render_command(
                view, args.command, sql=request["sql"], collection=request["collection"], limit=request["limit"],
                fmt=args.format, timeout_secs=args.timeout,
            )
        finally:
            view.close()
        print(output)
    finally:
        store.close()
    return EXIT_OK
