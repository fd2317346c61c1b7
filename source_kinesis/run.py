"""Console entry point ``source-kinesis``: spec | check --config | discover --config | read --config --catalog [--state].

Everything goes through the CDK's entrypoint (config validation against the spec, secret filtering, record counts
on state messages, error traces). Only how RECORD messages become text is ours: the CDK's generic serializer costs
about as much per record as botocore's response parsing, so records are written with one ``orjson.dumps`` of a plain
dict (the same wire format). Integers beyond 64 bits and nesting deeper than orjson writes fall back to the stdlib
(``json_exact.dumps_line``: exact, as deep as a payload may be).
"""
from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
from collections import defaultdict
from typing import Any, Dict, List, Optional

from airbyte_cdk.entrypoint import AirbyteEntrypoint
from airbyte_cdk.logger import PRINT_BUFFER
from airbyte_cdk.models import AirbyteMessage, AirbyteStateStats, Type

from source_kinesis.config import parse_config
from source_kinesis.json_exact import dumps_line
from source_kinesis.source import SourceKinesis


def record_line(message: AirbyteMessage) -> bytes:
    record = message.record
    body = {"stream": record.stream, "data": record.data, "emitted_at": record.emitted_at}
    if record.namespace is not None:
        body["namespace"] = record.namespace
    return dumps_line({"type": "RECORD", "record": body})  # (exact beyond 64 bits, and as deep as a payload may be)


class KinesisEntrypoint(AirbyteEntrypoint):
    """The CDK's entrypoint, validating configs with the connector's own model first: its errors name each field
    ("records_per_call: Input should be less than or equal to 10000"), where the CDK's JSON-schema check names only
    the rule. A config the model accepts then still goes through the CDK's check against spec.json."""

    def validate_connection(self, source_spec: Any, config: Any) -> None:  # type: ignore[override]
        parse_config(config)
        AirbyteEntrypoint.validate_connection(source_spec, config)


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM (Airbyte's cancel) and SIGINT end ``read`` cleanly: what was fetched is emitted, then a final state
    per stream, exit 0 — within seconds, whatever the endpoint is doing (calls in flight and backoffs are abandoned
    at once). A second signal ends the process the default way. The handler only sets the event: it never writes,
    so it cannot split a line being written on stdout."""

    def handle(signum: int, frame: Any) -> None:
        if stop.is_set():
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def read(args: List[str]) -> None:
    """``read``, as the CDK's entrypoint does it (validation, secret filter, record counts on states, error traces
    via its exception hook), with records written by ``record_line`` straight to stdout's byte buffer.

    Logs still go through the CDK's logger (text stdout); both write whole lines, from this thread only (the
    source's reader threads never log), so lines never interleave."""
    stop = threading.Event()
    install_stop_handlers(stop)
    source = SourceKinesis(stop_event=stop)
    entrypoint = KinesisEntrypoint(source)
    parsed = entrypoint.parse_args(args)
    spec = source.spec(entrypoint.logger)
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as temp_dir:
        config = source.configure(source.read_config(parsed.config), temp_dir)
        catalog = source.read_catalog(parsed.catalog)
        state = source.read_state(parsed.state)
        entrypoint.set_up_secret_filter(config, spec.connectionSpecification)
        entrypoint.validate_connection(spec, config)
        text = sys.stdout
        # Records go through a large buffer of their own on stdout's descriptor (whole lines only; flushed before
        # every other message, so a state always follows the records it covers).
        out = open(text.fileno(), "wb", buffering=1 << 20, closefd=False)
        counts: Dict[str, float] = defaultdict(float)
        try:
            for message in source.read(entrypoint.logger, config, catalog, state):
                if message.type == Type.RECORD:
                    counts[message.record.stream] += 1.0
                    out.write(record_line(message))
                    continue
                if message.type == Type.STATE and message.state.stream is not None:
                    name = message.state.stream.stream_descriptor.name
                    message.state.sourceStats = AirbyteStateStats(recordCount=counts.pop(name, 0.0))
                text.flush()
                out.write((AirbyteEntrypoint.airbyte_message_to_string(message) + "\n").encode())
                out.flush()
        finally:
            out.flush()
            out.close()


def run(argv: Optional[List[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        _run(args)
    except BrokenPipeError:
        # Whoever reads stdout went away (a consumer that died, `| head`): nothing more can be delivered. Stop at
        # once with one line on stderr instead of a traceback per buffered write; stdout now points at /dev/null so
        # the interpreter's own flush at exit cannot fail again. Exit 1: the records were not all delivered (the
        # last state the reader received, if any, still covers exactly what it received).
        # (The CDK's PRINT_BUFFER may have failed in its own exit while standing in for sys.stdout/sys.stderr.)
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
        sys.stderr.write("source-kinesis: stdout was closed by its reader; stopped.\n")
        sys.exit(1)


def _run(args: List[str]) -> None:
    if args and args[0] == "read":
        read(args)
        return
    entrypoint = KinesisEntrypoint(SourceKinesis())
    parsed = entrypoint.parse_args(args)
    with PRINT_BUFFER:  # as the CDK's launch() does
        for line in entrypoint.run(parsed):
            print(f"{line}\n", end="")
    sys.stdout.flush()  # a closed stdout shows here, inside run()'s BrokenPipeError handling, not at exit


if __name__ == "__main__":
    run()
