"""What each ``kinesis-collection`` command does (the CLI module only parses arguments and maps errors)."""
from __future__ import annotations

import argparse
import logging
import socket
from typing import Any, Dict

from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from collection_runner.exit_codes import EXIT_OK, EXIT_SYSTEM
from collection_runner.configs import follow_tuned, load_catalog, load_destination_config, load_source_config
from collection_runner.locking import StoreLock, collection_holders, collections_for, read_holder, runner_socket
from collection_runner.pipeline import run_pipeline
from collection_runner.progress import RunnerProgress
from collection_runner.query_service import ask
from collection_runner.stopping import Stopper
from destination_collection import inspect as inspect_cmd
from destination_collection.config import DuckDBStoreConfig, parse_config as parse_destination_config
from destination_collection.naming import STATE_TABLE
from destination_collection.stores import open_store

logger = logging.getLogger("airbyte")


def sync(args: argparse.Namespace) -> int:
    """sync/follow. A stop signal before the source is asked for anything (configs, discovery, the store lock and
    connection) raises ``StopBeforeReading`` (exit 0, nothing to commit); once reading, it commits what was read."""
    follow_mode = args.command == "follow"
    stopper = Stopper(logger).install()
    source_config = load_source_config(args.source)
    destination_config = load_destination_config(args.destination)
    if follow_mode:
        source_config, destination_config = follow_tuned(source_config, destination_config)
    catalog = load_catalog(args.catalog, source_config, logger)
    progress = RunnerProgress(logger)
    summary = run_pipeline(
        source_config, destination_config, catalog, follow_mode=follow_mode, stop_event=stopper.event, logger=logger, progress=progress,
        query_timeout=args.query_timeout, on_reading=stopper.reading, source_in_process=args.source_in_process,
    )
    logger.info(f"{'Follow stopped' if follow_mode else 'Sync stopped' if summary.stopped else 'Sync done'}: {summary.text}")
    if summary.stopped:
        return EXIT_OK  # SIGINT/SIGTERM: what was read is committed; errors of the source after the stop are logged
    return EXIT_OK if not summary.errors else EXIT_SYSTEM


def reset(args: argparse.Namespace) -> int:
    """Forget one stream's committed state (and, with ``--empty-collection``, its documents). DuckDB: while no runner
    holds the file. PostgreSQL: while no runner holds that stream's collection; runners of other collections go on."""
    if not args.stream.strip():
        raise AirbyteTracedException(message="reset: --stream is empty; give the name of the stream to reset.", failure_type=FailureType.config_error)
    config = parse_destination_config(load_destination_config(args.destination))
    # exactly the collection this stream is written to under the configured collection_prefix: the one locked is the
    # one emptied (a table name or another prefix's collection given as --stream must not empty a collection that
    # another runner holds)
    collections = collections_for(config, [args.stream])
    (table,) = collections
    with StoreLock(config, {"mode": "reset"}, collections=collections):
        store = open_store(config)
        try:
            with store.transaction():
                if store.table_exists(STATE_TABLE):  # a store never synced has none: nothing to forget
                    store.execute(f"DELETE FROM {store.q(STATE_TABLE)} WHERE stream_key = {store.param}", [args.stream])
                emptied = None
                if args.empty_collection:
                    if not store.table_exists(table):
                        raise AirbyteTracedException(
                            message=(
                                f"Stream '{args.stream}' has no collection {table} (collection_prefix "
                                f"'{config.collection_prefix}') to empty; --stream takes the stream's name as the source "
                                f"names it, not a table name. Collections: {', '.join(row['table'] for row in store.catalog.collections()) or 'none yet'}."
                            ),
                            failure_type=FailureType.config_error,
                        )
                    owner = next((row for row in store.catalog.collections() if row["table"] == table), None)
                    if owner is None or owner["stream"] != args.stream or owner["namespace"]:
                        # table names are not unique across prefixes ("kin_" + "orders" = "" + "kin_orders")
                        written_by = "no stream (it is not a collection)" if owner is None else f"stream '{owner['stream']}'"
                        raise AirbyteTracedException(
                            message=(
                                f"Collection {table} is written by {written_by}, not by stream '{args.stream}'; not emptying "
                                "it. Reset that stream with the destination config (collection_prefix) it is synced with."
                            ),
                            failure_type=FailureType.config_error,
                        )
                    emptied = store.count_documents(table)
                    store.execute(f"DELETE FROM {store.q(table)}")
        finally:
            store.close()
    logger.info(
        f"Stream '{args.stream}': committed state forgotten; the next sync reads it from its start position"
        + (f"; {emptied} documents deleted from its collection." if emptied is not None else ".")
    )
    return EXIT_OK


def _ask_runner(socket_path: str, holder: Dict[str, Any], request: Dict[str, Any], timeout: float) -> str:
    """The runner's answer to ``request``; its failures, a connection that fails (the runner stopping between our
    checks and the connect) and an answer that is not ours become errors with a clear message, never a traceback."""
    pid = holder.get("pid", "?")
    try:
        response = ask(socket_path, request, timeout=timeout)
    except socket.timeout:
        raise AirbyteTracedException(
            message=f"The runner (pid {pid}) did not answer within {timeout:g} s; try again, or with a larger --timeout.",
            failure_type=FailureType.transient_error,
        ) from None
    except OSError as exc:
        raise AirbyteTracedException(
            message=f"Cannot reach the runner (pid {pid}) at {socket_path}: {exc.strerror or exc}. It may be stopping; try again.",
            failure_type=FailureType.transient_error,
        ) from None
    except ValueError:
        response = None
    if not isinstance(response, dict) or not isinstance(response.get("output" if response.get("ok") else "error"), str):
        raise AirbyteTracedException(
            message=f"The runner (pid {pid}) at {socket_path} sent an answer that is not a query service's; try again.",
            failure_type=FailureType.system_error,
        )
    if not response["ok"]:
        try:
            failure = FailureType(response.get("failure_type", "system_error"))
        except ValueError:
            failure = FailureType.system_error
        raise AirbyteTracedException(message=response["error"], failure_type=failure)
    return response["output"]


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
        db_path = config.store.resolved_path()
        holder = read_holder(db_path)
        if holder is not None:
            print(_ask_runner(runner_socket(holder, db_path), holder, request, timeout=args.timeout + 15.0))
            return EXIT_OK
    store = open_store(config, read_only=True)
    try:
        view = store.read_only_view()
        holders = None
        if args.command == "stats":  # which runner holds each collection
            store_config = config.store
            if isinstance(store_config, DuckDBStoreConfig):
                holders = lambda tables: {}  # noqa: E731 - no runner holds the file (read_holder said so above)
            else:  # PostgreSQL: pg_locks and _collection_runners; reads only
                holders = lambda tables: collection_holders(view.fetchall, store_config.database, store_config.schema_, tables)  # noqa: E731
        try:
            output = inspect_cmd.render_command(
                view, args.command, sql=request["sql"], collection=request["collection"], limit=request["limit"],
                fmt=args.format, timeout_secs=args.timeout, holders=holders,
            )
        finally:
            view.close()
        print(output)
    finally:
        store.close()
    return EXIT_OK
