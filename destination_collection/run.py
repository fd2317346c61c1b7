"""Console entry point ``destination-collection``.

Airbyte commands (protocol messages on stdout, logs as LOG messages)::

    destination-collection spec
    destination-collection check --config config.json
    destination-collection write --config config.json --catalog catalog.json < messages.jsonl

Inspect commands (human output on stdout)::

    destination-collection query --config config.json [--format table|json] [--timeout S] "SELECT ..."
    destination-collection describe --config config.json [--limit N] [--format table|json] [--timeout S] <collection or stream>
    destination-collection stats --config config.json [--format table|json] [--timeout S]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

import orjson
from airbyte_cdk.exception_handler import init_uncaught_exception_handler
from airbyte_cdk.logger import PRINT_BUFFER, init_logger
from airbyte_cdk.models import (
    AirbyteConnectionStatus,
    AirbyteMessage,
    AirbyteMessageSerializer,
    ConfiguredAirbyteCatalogSerializer,
    ConnectorSpecificationSerializer,
    FailureType,
    Status,
    Type,
)
from airbyte_cdk.sources.utils.schema_helpers import check_config_against_spec_or_exit
from airbyte_cdk.utils.airbyte_secrets_utils import get_secrets, update_secrets
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from . import inspect as inspect_cmd
from . import jsonio, without_pandas
from .config import migrate_config, parse_config
from .destination import DestinationCollection, raw_spec
from .read_only_query import DEFAULT_TIMEOUT_SECS
from .stores import open_store

logger = logging.getLogger("airbyte")
AIRBYTE_COMMANDS = ("spec", "check", "write")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="destination-collection", description="Rockset-style collections in DuckDB or PostgreSQL.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("spec", help="print the connector specification")
    check = sub.add_parser("check", help="check the config can reach and write the store")
    check.add_argument("--config", required=True)
    write = sub.add_parser("write", help="write Airbyte messages from stdin")
    write.add_argument("--config", required=True)
    write.add_argument("--catalog", required=True)
    query = sub.add_parser("query", help="run SQL against the store (read-only)")
    query.add_argument("--config", required=True)
    query.add_argument("--format", choices=("table", "json"), default="table")
    query.add_argument("sql", help="one read-only SELECT statement")
    describe = sub.add_parser("describe", help="field paths, types and occurrence counts of a collection")
    describe.add_argument("--config", required=True)
    describe.add_argument("--format", choices=("table", "json"), default="table")
    describe.add_argument("--limit", type=int, default=None, help="look at the first N documents only")
    describe.add_argument("collection", help="collection (table) or stream name")
    stats = sub.add_parser("stats", help="documents, bytes, last write and committed state per collection")
    stats.add_argument("--config", required=True)
    stats.add_argument("--format", choices=("table", "json"), default="table")
    for inspect_command in (query, describe, stats):
        inspect_command.add_argument(
            "--timeout", type=_positive_seconds, default=DEFAULT_TIMEOUT_SECS, help="time limit in seconds (default 60)"
        )
    return parser


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (0 < value <= 86_400):
        raise argparse.ArgumentTypeError(f"--timeout must be a number of seconds between 0 and 86400, not {text!r}")
    return value


def _emit(message: AirbyteMessage | dict[str, Any]) -> None:
    if isinstance(message, AirbyteMessage):
        message = AirbyteMessageSerializer.dump(message)
    print(jsonio.dumps(message), flush=False)


def _load_config(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            config = migrate_config(json.load(handle))  # configs written before 0.1.2 still load
    except (OSError, ValueError) as exc:
        raise AirbyteTracedException(
            message=f"Cannot read the config file {path}: {exc}.", failure_type=FailureType.config_error
        ) from None
    spec = ConnectorSpecificationSerializer.load(raw_spec())
    update_secrets(get_secrets(spec.connectionSpecification, config))
    check_config_against_spec_or_exit(config, spec)
    return config


def _airbyte(args: argparse.Namespace) -> int:
    destination = DestinationCollection()
    if args.command == "spec":
        _emit({"type": "SPEC", "spec": raw_spec()})
        return 0
    if args.command == "check":
        try:
            config = _load_config(args.config)
        except AirbyteTracedException as exc:
            _emit(AirbyteMessage(type=Type.CONNECTION_STATUS, connectionStatus=AirbyteConnectionStatus(status=Status.FAILED, message=exc.message)))
            return 0
        _emit(AirbyteMessage(type=Type.CONNECTION_STATUS, connectionStatus=destination.check(logger, config)))
        return 0
    config = _load_config(args.config)
    parse_config(config)
    try:
        with open(args.catalog, "rb") as handle:
            catalog = ConfiguredAirbyteCatalogSerializer.load(orjson.loads(handle.read()))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise AirbyteTracedException(
            message=f"Cannot read the configured catalog {args.catalog}: {exc}.", failure_type=FailureType.config_error
        ) from None
    logger.info("Begin writing to the destination...")
    for echo in destination.write_raw(config, catalog, sys.stdin.buffer):
        _emit(echo)
    logger.info("Writing complete.")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    config = parse_config(_load_config(args.config))
    store = open_store(config, read_only=True)
    try:
        view = store.read_only_view()
        try:
            print(
                inspect_cmd.render_command(
                    view,
                    args.command,
                    sql=getattr(args, "sql", None),
                    collection=getattr(args, "collection", None),
                    limit=getattr(args, "limit", None),
                    fmt=args.format,
                    timeout_secs=args.timeout,
                )
            )
        finally:
            view.close()
        return 0
    finally:
        store.close()


def _log_to_stderr() -> None:
    """The inspect commands print their answer on stdout for people and scripts: log lines (e.g. the SSH tunnel's host
    key fingerprint) go to stderr as text there, not as the Airbyte LOG messages importing the CDK sets up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.handlers[:] = [handler]
    logger.propagate = False


def run(argv: list[str] | None = None) -> None:
    without_pandas.install()  # the console script's process only (see without_pandas.py)
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.command in AIRBYTE_COMMANDS:
        init_logger("airbyte")
        init_uncaught_exception_handler(logger)
        with PRINT_BUFFER:
            try:
                code = _airbyte(args)
            except AirbyteTracedException as exc:
                logger.error(exc.message)
                exc.emit_message()
                code = 1
        sys.exit(code)
    _log_to_stderr()
    try:
        code = _inspect(args)
    except AirbyteTracedException as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    run()
