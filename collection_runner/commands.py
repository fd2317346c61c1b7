"""What each ``kinesis-collection`` command does (the CLI module only parses arguments and maps errors)."""
from __future__ import annotations

import argparse
import logging
import threading

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


def sync(args: argparse.Namespace) -> int:
    follow_mode = args.command == "follow"
    source_config = load_source_config(args.source)
    destination_config = load_destination_config(args.destination)
    if follow_mode:
        source_config, destination_config = follow_tuned(source_config, destination_config)
    catalog = load_catalog(args.catalog, source_config, logger)
    stop_event = threading.Event()
    install_stop_handlers(stop_event)
    progress = RunnerProgress(logger)
    summary = run_pipeline(
        source_config, destination_config, catalog, follow_mode=follow_mode, stop_event=stop_event, logger=logger, progress=progress
    )
    logger.info(f"{'Follow stopped' if follow_mode else 'Sync done'}: {summary.text}")
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
    }
    if isinstance(config.store, DuckDBStoreConfig):
        holder = read_holder(config.store.resolved_path())
        if holder is not None:
            if not holder.get("socket"):
                raise AirbyteTracedException(
                    message=f"A runner (pid {holder.get('pid', '?')}) is starting up on this store; try again in a moment.",
                    failure_type=FailureType.transient_error,
                )
            response = ask(holder["socket"], request)
            if not response.get("ok"):
                failure = FailureType(response.get("failure_type", "system_error"))
                raise AirbyteTracedException(message=response.get("error", "query failed"), failure_type=failure)
            print(response["output"])
            return EXIT_OK
    store = open_store(config, read_only=True)
    try:
        print(
            inspect_cmd.render_command(
                store, args.command, sql=request["sql"], collection=request["collection"], limit=request["limit"], fmt=args.format
            )
        )
    finally:
        store.close()
    return EXIT_OK
