"""Console script ``kinesis-collection``: keep a collection current from Kinesis, without an Airbyte deployment.

    kinesis-collection sync     --source source.json --destination destination.json [--catalog catalog.json] [--query-timeout S]
    kinesis-collection follow   --source source.json --destination destination.json [--catalog catalog.json] [--query-timeout S]
    kinesis-collection reset    --destination destination.json --stream NAME [--empty-collection]
    kinesis-collection query    --destination destination.json [--format table|json] [--timeout S] "SELECT ..."
    kinesis-collection describe --destination destination.json [--format table|json] [--timeout S] [--limit N] COLLECTION
    kinesis-collection stats    --destination destination.json [--format table|json] [--timeout S]

Exit codes: 0 done (sync or follow stopped by SIGINT/SIGTERM/SIGHUP: after a final commit of what was read, whatever
the endpoint is doing; see ``stopping``), 2 configuration error (fix the config, access or catalog), 3 transient error (retry later:
throttling past the budget, an outage, the store busy with another runner), 1 anything else. ``exit_code`` is the
one place that maps an error to its code.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from collection_runner import source_process, stopping
from collection_runner.exit_codes import EXIT_CONFIG, EXIT_OK, EXIT_SYSTEM, EXIT_TRANSIENT

# Only the standard library at import time: the console script imports this module before ``run()`` can install the
# stop handlers, and the CDK's imports take seconds (a SIGTERM then would be exit 143, a SIGINT a traceback).

logger = logging.getLogger("airbyte")


class _SecretFilter(logging.Filter):
    """Masks every registered secret (airbyte_secret fields of both configs) in log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        from airbyte_cdk.utils.airbyte_secrets_utils import filter_secrets

        record.msg = filter_secrets(record.getMessage())
        record.args = ()
        return True


def setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler.addFilter(_SecretFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in ("airbyte",):
        named = logging.getLogger(name)
        named.handlers[:] = []
        named.propagate = True
        named.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("botocore", "urllib3", "boto3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kinesis-collection", description="Keep a collection current from Kinesis streams.")
    parser.add_argument("--verbose", action="store_true", help="debug logs")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("sync", "one bounded sync, then exit"), ("follow", "ingest continuously until SIGINT/SIGTERM")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--source", required=True, help="source-kinesis config (JSON)")
        cmd.add_argument("--destination", required=True, help="destination-collection config (JSON)")
        cmd.add_argument("--catalog", help="configured catalog (JSON); default: every discovered stream, incremental + deduplicated")
        cmd.add_argument(
            "--query-timeout", type=_seconds, default=60.0,
            help="time limit in seconds of query/describe/stats answered by this runner (default 60)",
        )
        cmd.add_argument(
            "--source-in-process", action="store_true",
            help="run the source on a thread of this process instead of its own process (one core: slower; for debugging)",
        )
    reset = sub.add_parser("reset", help="forget a stream's committed state (its next sync starts over)")
    reset.add_argument("--destination", required=True)
    reset.add_argument("--stream", required=True)
    reset.add_argument("--empty-collection", action="store_true", help="also delete every document of its collection")
    query = sub.add_parser("query", help="run read-only SQL (through the runner when one holds the DuckDB file)")
    query.add_argument("--destination", required=True)
    query.add_argument("--format", choices=("table", "json"), default="table")
    query.add_argument("sql")
    describe = sub.add_parser("describe", help="field paths, types and occurrence counts of a collection")
    describe.add_argument("--destination", required=True)
    describe.add_argument("--format", choices=("table", "json"), default="table")
    describe.add_argument("--limit", type=int, default=None)
    describe.add_argument("collection")
    stats = sub.add_parser("stats", help="documents, bytes, last write, committed state and the runner holding it, per collection")
    stats.add_argument("--destination", required=True)
    stats.add_argument("--format", choices=("table", "json"), default="table")
    for inspect_command in (query, describe, stats):
        inspect_command.add_argument(
            "--timeout", type=_seconds, default=60.0,
            help="time limit in seconds (default 60; a runner answering it allows at most its --query-timeout)",
        )
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (0 < value <= 86_400):
        raise argparse.ArgumentTypeError(f"must be a number of seconds between 0 and 86400, not {text!r}")
    return value


def _outage_cause(exc: BaseException) -> Optional[BaseException]:
    """A connection-level error (refused, reset, timed out, throttled) in the chain of ``exc``, if any: an outage is
    transient whatever label a layer gave it."""
    from airbyte_cdk.utils.traced_exception import AirbyteTracedException

    from source_kinesis.errors import is_retryable

    seen = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if not isinstance(current, AirbyteTracedException) and (is_retryable(current) or _database_outage(current, current is exc)):
            return current
        current = current.__cause__ or current.__context__
    return None


# PostgreSQL errors a retry may fix: the connection lost or refused (class 08), the server shutting down, crashed or
# starting (57P01-57P03: a restart mid-run), too many connections, a serialization failure or deadlock.
_PG_TRANSIENT_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300", "40001", "40P01")


def _database_outage(exc: BaseException, unlabelled: bool) -> bool:
    """A PostgreSQL error a retry may fix: a state in ``_PG_TRANSIENT_SQLSTATES`` anywhere in the chain, or, when
    nobody labelled it (``unlabelled``: the error itself, not the cause of a traced error), psycopg's client-side
    "connection lost/closed" (an OperationalError without a state; a connect's wrong password has no state either,
    but ``postgres_connection.connect`` labels that one a config_error)."""
    if not type(exc).__module__.startswith("psycopg"):
        return False
    import psycopg

    if not isinstance(exc, psycopg.OperationalError):  # serialization failures and deadlocks are OperationalErrors too
        return False
    sqlstate = getattr(exc, "sqlstate", None)
    return sqlstate.startswith(_PG_TRANSIENT_SQLSTATES) if sqlstate else unlabelled


def exit_code(exc: BaseException) -> int:
    """The exit code of an error: config_error 2, transient_error 3 (and any outage, even mislabelled), else 1."""
    from airbyte_cdk.models import FailureType
    from airbyte_cdk.utils.traced_exception import AirbyteTracedException

    if isinstance(exc, AirbyteTracedException):
        kind = exc.failure_type or FailureType.system_error
        if kind == FailureType.transient_error:
            return EXIT_TRANSIENT
        if _outage_cause(exc) is not None:
            return EXIT_TRANSIENT
        return EXIT_CONFIG if kind == FailureType.config_error else EXIT_SYSTEM
    return EXIT_TRANSIENT if _outage_cause(exc) is not None else EXIT_SYSTEM


def failure_kind(exc: BaseException) -> str:
    """The failure type an error is reported with, decided by its exit code (``exit_code``): an outage is a
    transient_error whatever its label, an unlabelled error a system_error. Used for the runner's last log line and
    by its source process (``source_child``) to label the error it hands over."""
    return {EXIT_TRANSIENT: "transient_error", EXIT_CONFIG: "config_error"}.get(exit_code(exc), "system_error")


def _run(args: argparse.Namespace) -> int:
    from collection_runner import commands

    if args.command in ("sync", "follow"):
        return commands.sync(args)
    if args.command == "reset":
        return commands.reset(args)
    return commands.inspect(args)


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command in ("sync", "follow") and not args.source_in_process:
        source_process.prestart()  # the source's process imports while this one does (see source_process)
    try:
        return _main(args)
    finally:
        source_process.discard()  # not taken by a pipeline: the run ended before reading


def _main(args: argparse.Namespace) -> int:
    from destination_collection import without_pandas

    without_pandas.install()  # ~45 MB DuckDB/pyarrow would import and never use (see without_pandas.py)
    # The CDK configures the "airbyte" logger (to stdout) when first imported: import it before our own set-up.
    from airbyte_cdk.utils.airbyte_secrets_utils import filter_secrets
    from airbyte_cdk.utils.traced_exception import AirbyteTracedException

    setup_logging(args.verbose)
    try:
        return _run(args)
    except stopping.StopBeforeReading as stop:
        return stopping.stopped_before_reading(stop, logger.info)
    except AirbyteTracedException as exc:
        logger.error(f"{failure_kind(exc)}: {exc.message}")
        return exit_code(exc)
    except KeyboardInterrupt:
        logger.error("Interrupted.")
        return EXIT_SYSTEM
    except BrokenPipeError:
        return _stdout_closed()
    except Exception as exc:  # noqa: BLE001 - an unexpected error still gets its exit code (an outage: 3)
        logger.error(f"{failure_kind(exc)}: {type(exc).__name__}: {filter_secrets(str(exc))}")
        logger.debug("Traceback of the error above:", exc_info=True)
        return exit_code(exc)


def _stdout_closed() -> int:
    """The reader of our stdout went away (``query ... | head -1``): what it did not read is not an error of ours. Exit
    0 quietly, with stdout pointed at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_OK


def run() -> None:
    """The console script: stop signals and Ctrl-C are handled from the first moment (see ``stopping``)."""
    stopping.install_early(sys.argv[1:])
    try:
        code = main()
    except stopping.StopBeforeReading as stop:  # during the imports or the argument parsing
        code = stopping.stopped_before_reading(stop)
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        code = EXIT_SYSTEM
    stopping.ignore_stop_signals()  # the code is decided: a late signal must not turn it into -15/-2
    sys.exit(code)


if __name__ == "__main__":
    run()
