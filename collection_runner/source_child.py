"""The program of the runner's source process: ``python -m collection_runner.source_child --parent PID``.

It reads its job from stdin (one JSON line, see ``source_process.SourceProcess.send_job``), runs the source
(``SourceKinesis.read`` for ``sync``, ``follow`` for ``follow``) and writes its messages as lines on its stdout
(duplicated to a private descriptor at start; descriptor 1 then points at stderr).
Everything about how the runner and this child talk is described in ``source_process``; this module only does the
child's side of it.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any, Optional

# Before any heavy import: the stop signal only asks for a stop (the source then emits its final checkpoints), a
# terminal's SIGINT/SIGHUP are the runner's to handle (it forwards a stop), and the child dies with the runner.
_stop = threading.Event()
signal.signal(signal.SIGTERM, lambda _signum, _frame: _stop.set())
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGHUP})  # blocked by the runner while it spawned us

# The runner's pipe is a private descriptor; file descriptor 1 (and ``sys.stdout``) point at stderr from here on, so
# whatever a library prints lands in the log instead of in the middle of a record line.
_PIPE_FD = os.dup(1)
os.dup2(2, 1)
sys.stdout = sys.stderr

# How often, at most, the progress counts are sent while records flow (they are also sent before every state).
PROGRESS_SECONDS = 0.5
# Following, how long a record may wait in the pipe's write buffer: records are flushed with every other message (a
# state follows a poll round), and at least this often, so a record the runner could commit on its flush interval
# (0.1 s) before the round's state does not wait for that state (freshness, the benchmark's 10,000 records/s).
FOLLOW_FLUSH_SECONDS = 0.05


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the runner dies (Linux ``PR_SET_PDEATHSIG``: no library offers it; ctypes calls prctl), and exit
    now if it is already gone (it died before the request took effect: we were reparented)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # stdin's end of file (``_watch_stdin``) still ends us
    if os.getppid() != parent:
        os._exit(0)


def _watch_stdin(stdin) -> None:
    """The runner keeps our stdin open while it runs: its end of file means the runner is gone (or done with us)."""

    def watch() -> None:
        try:
            while stdin.read(65536):
                pass
        except (OSError, ValueError):
            pass
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list) -> int:
    parent = int(argv[argv.index("--parent") + 1]) if "--parent" in argv else os.getppid()
    _die_with_parent(parent)
    # the imports first (seconds: the CDK's alone ~2 s), while the runner checks the configs and opens the store
    import orjson

    from collection_runner import source_process
    from collection_runner.cli import exit_code, failure_kind, setup_logging
    from destination_collection import without_pandas

    without_pandas.install()
    from airbyte_cdk.models import AirbyteMessageSerializer, ConfiguredAirbyteCatalogSerializer, Type
    from airbyte_cdk.utils.airbyte_secrets_utils import filter_secrets, update_secrets
    from airbyte_cdk.utils.traced_exception import AirbyteTracedException

    from source_kinesis.follow import follow
    from source_kinesis.run import record_line
    from source_kinesis.source import SourceKinesis

    stdin = sys.stdin.buffer
    job_line = stdin.readline()
    if not job_line.strip():
        return 0  # the runner ended before reading (a config error, a stop): nothing to do
    _watch_stdin(stdin)
    job = orjson.loads(job_line)
    update_secrets(list(job.get("secrets") or []))
    setup_logging(bool(job.get("verbose")))
    import logging

    logger = logging.getLogger("airbyte")
    out = open(_PIPE_FD, "wb", buffering=1 << 20, closefd=False)
    counts: dict = {}
    newest: dict = {}

    def send_progress() -> None:
        streams = {name: {"records": n, "newest_arrival": newest.get(name)} for name, n in counts.items()}
        out.write(orjson.dumps({"type": source_process.PROGRESS, "streams": streams}, option=orjson.OPT_APPEND_NEWLINE))

    dumps = orjson.dumps
    tab = b"\t"

    def framed(message: Any) -> Optional[bytes]:
        """The runner's own framing of a record (``source_process.TEXT_RECORD``): its data's JSON as the write loop
        buffers it, so the runner neither parses nor re-serializes it. None when only the wire line can carry it (a
        namespace, an integer past 64 bits or nesting deeper than orjson writes, a stream name with a tab or a
        newline, an emitted_at that is not an integer)."""
        record = message.record
        stream = record.stream
        if record.namespace is not None or type(record.emitted_at) is not int or "\t" in stream or "\n" in stream:
            return None
        try:
            data = dumps(record.data)
        except TypeError:
            return None
        if data[:1] != b"{":
            return None
        return b"".join((source_process.TEXT_RECORD, stream.encode(), tab, str(record.emitted_at).encode(), tab, data, b"\n"))

    # Following: records written since the last flush wake a flusher that flushes them FOLLOW_FLUSH_SECONDS later (an
    # idle child makes no wake-ups: a flusher polling every 0.05 s woke it 20 times a second).
    unflushed = threading.Event()
    if job.get("follow"):
        def flush_soon() -> None:
            while True:
                unflushed.wait()
                time.sleep(FOLLOW_FLUSH_SECONDS)
                unflushed.clear()  # before the flush: a record written after it sets it again
                try:
                    out.flush()  # (BufferedWriter locks: whole lines only, from either thread)
                except (OSError, ValueError):
                    return

        threading.Thread(target=flush_soon, name="pipe-flusher", daemon=True).start()
    else:
        unflushed.set()  # a bounded sync flushes with its states only (``set``: never signalled per record)

    code = 0
    try:
        if job.get("follow"):
            messages = follow(job["source_config"], job.get("states") or [], streams=job.get("streams"), stop_event=_stop, logger=logger)
        else:
            catalog = ConfiguredAirbyteCatalogSerializer.load(job["catalog"])
            messages = SourceKinesis(stop_event=_stop).read(logger, job["source_config"], catalog, job.get("states") or [])
        last_progress = time.monotonic()
        for message in messages:
            if message.type == Type.RECORD:
                record = message.record
                name = record.stream
                counts[name] = counts.get(name, 0) + 1
                arrival = record.data.get("_kinesis_arrival_time") if type(record.data) is dict else None
                if arrival is not None and (newest.get(name) is None or arrival > newest[name]):
                    newest[name] = arrival
                out.write(framed(message) or record_line(message))
                if not unflushed.is_set():
                    unflushed.set()
                if counts[name] & 1023 == 0 and time.monotonic() - last_progress >= PROGRESS_SECONDS:
                    send_progress()
                    last_progress = time.monotonic()
                continue
            if message.type == Type.STATE:
                send_progress()  # before the state: the runner's lag line counts what this state covers
                last_progress = time.monotonic()
            out.write(orjson.dumps(AirbyteMessageSerializer.dump(message), option=orjson.OPT_APPEND_NEWLINE))
            out.flush()  # a state (or status) never waits behind the buffer: the runner commits on it
    except BaseException as exc:  # noqa: BLE001 - every error reaches the runner with its failure type
        code = exit_code(exc) if isinstance(exc, Exception) else 1
        if isinstance(exc, AirbyteTracedException):
            text = exc.message or str(exc)
        else:
            text = f"{type(exc).__name__}: {exc}"
        failure = failure_kind(exc) if isinstance(exc, Exception) else "system_error"
        logger.debug("Traceback of the source's error:", exc_info=True)
        try:
            send_progress()  # what was read before the error, for the runner's summary
            failed = {"type": source_process.FAILED, "failure_type": failure, "message": filter_secrets(text), "after_stop": _stop.is_set()}
            out.write(orjson.dumps(failed, option=orjson.OPT_APPEND_NEWLINE))
        except Exception:  # noqa: BLE001
            pass
    finally:
        try:
            if _stop.is_set() and code == 0:
                out.write(orjson.dumps({"type": source_process.STOPPED}, option=orjson.OPT_APPEND_NEWLINE))
            out.flush()
        except OSError:
            code = code or 1  # the runner stopped listening
    return code


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)  # not sys.exit: the source's reader threads may still wait on an endpoint (the runner is done)
