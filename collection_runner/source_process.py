"""The source in a process of its own: the runner's reading and writing use both cores.

In one process the source (botocore's parsing, record building) and the destination (parsing, the store's SQL) share
one GIL: the runner drained a backlog at the sum of their costs. Here the source runs in a child process
(``source_child``) and hands its messages over a pipe: records as their data's JSON text, which the write loop
buffers as it is (``JsonRecord``: no CDK models, no parse, no re-serialization on the set-based path). The parent
reads the pipe on the ``SourcePump``'s thread, so the child keeps reading while the writer applies a batch.

The contract with the child, all of it here:

* **Start.** ``prestart`` (called by the CLI before its own imports, so both processes import in parallel) or
  ``SourceProcess.spawn`` starts ``python -m collection_runner.source_child --parent PID``. Its job (configs, catalog,
  committed states, the secrets to mask) goes over its stdin as one JSON line: never in a file, an argument or the
  environment. The child shares the runner's process group (a terminal's Ctrl-Z and job control treat the two as one
  job) but ignores SIGINT and SIGHUP: the runner decides what a Ctrl-C means and forwards a stop.
* **Dies with the runner.** The child asks the kernel for SIGKILL when the runner dies (``PR_SET_PDEATHSIG``, Linux)
  and exits when its stdin reaches end of file (the runner gone, anywhere): a SIGKILLed runner leaves no orphan.
* **Stop.** The runner's stop request becomes a SIGTERM to the child: the source emits its final checkpoints and ends
  (exit 0, after a ``_SOURCE_STOPPED`` line). Past the stop grace the pump stops listening and ``close`` kills the
  child. A child stopped by a SIGTERM the runner did not send (sent to it alone), or a following one that ended, is
  an error, not a quiet end of the run — unless the runner's own stop request comes within 2 s (a SIGTERM to the whole
  process group reaches the child first when the runner is in a commit).
* **Messages.** Lines on a private descriptor that is the child's stdout (its file descriptor 1 points at stderr, so
  a library's ``print`` cannot cut into a line): records in the runner's own framing (``TEXT_RECORD``), or, for a
  record that framing cannot carry, the RECORD line (passed on as bytes: the write loop parses it); every other
  protocol message as a dict. Two private lines never reach the write loop: ``_SOURCE_PROGRESS`` (per-stream record
  counts and newest arrival time, for the progress line: ``SourceProgress``) and ``_SOURCE_FAILED`` (the source's
  error with its failure type, decided in the child by the runner's own ``cli.exit_code``, and whether the child had
  been asked to stop when it happened), raised here as an ``AirbyteTracedException`` once what came before it is
  committed (the pump's ``raise_error``). A last line without its newline (the child killed while writing it) is
  dropped; a record line that is not in the framing is an error (never a half record in the store).
* **Logs** go to the runner's stderr directly (the child's stderr is the runner's), masked as the runner's are.
* A child that ends without a word (killed, crashed) is a system error naming its pid and how it ended.

Only the standard library at import time: the CLI imports this module before its heavy imports.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional

PROGRESS = "_SOURCE_PROGRESS"
FAILED = "_SOURCE_FAILED"
RECORD_PREFIX = b'{"type":"RECORD"'  # how every RECORD line of the child starts (source_kinesis.run.record_line)
# A record in the runner's own framing: TEXT_RECORD, the stream's name, a tab, emitted_at (an integer), a tab, the
# record's data as ``orjson.dumps`` writes it (one line: JSON escapes newlines and tabs in strings). Handed to the
# write loop as a ``JsonRecord``: the data is neither parsed nor re-serialized on its way to the store.
TEXT_RECORD = b"R\t"
READ_BYTES = 1 << 20  # the most read from the child's stdout at a time (the pipe is enlarged to this where allowed)
F_SETPIPE_SZ = 1031  # Linux fcntl: set a pipe's capacity (64 KiB by default)
BLOCKED_AT_SPAWN = {signal.SIGINT, signal.SIGHUP}  # the child unblocks them once it ignores them (source_child)
STOPPED = "_SOURCE_STOPPED"  # the child's last line when a SIGTERM stopped it (from the runner, or sent to it alone)
# A child stopped by a SIGTERM the runner did not forward: how long the runner waits for its own stop request (a
# SIGTERM to the whole process group reaches the child first while the runner's main thread is in a commit).
OUTSIDE_STOP_WAIT_SECONDS = 2.0
# How long ``close`` waits for a child that was asked to stop before killing it (the pump's stop grace came first).
CLOSE_WAIT_SECONDS = 0.5


@dataclass
class SourceProgress:
    """What the child read so far, per stream: ``{name: {"records": n, "newest_arrival": iso or None}}``."""

    streams: Dict[str, Dict[str, Any]]


def _argv(parent_pid: int) -> List[str]:
    # -P: the working directory is not on the child's path (a ``collection_runner`` or ``json`` there would be run)
    return [sys.executable, "-P", "-m", "collection_runner.source_child", "--parent", str(parent_pid)]


def _environment() -> Dict[str, str]:
    """The runner's environment, with the folder this runner's own packages come from first on the path: the child runs
    exactly the runner's code (another checkout or an older install cannot slip in)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class SourceProcess:
    """One child process running the source, from spawn to reaping."""

    def __init__(self, proc: "subprocess.Popen[bytes]") -> None:
        self.proc = proc
        self._follow = False
        self._stop_forwarded = False
        self._stop_event: Optional[threading.Event] = None
        self._closed = threading.Event()

    @classmethod
    def spawn(cls) -> "SourceProcess":
        """Start the child. Call it on a thread that outlives the child (the CLI's main thread): the kernel's
        parent-death signal follows the thread that started it."""
        # SIGINT and SIGHUP blocked while the child is started: it inherits the mask, so a Ctrl-C during its start-up
        # stays pending until its first lines ignore both for good (no KeyboardInterrupt traceback); here the blocked
        # signal is delivered as soon as the mask is restored (none is lost).
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED_AT_SPAWN)
        try:
            proc = subprocess.Popen(
                _argv(os.getpid()),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,  # the runner's stderr: the child's log lines appear as the runner's
                close_fds=True,
                env=_environment(),
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        _enlarge_pipe(proc.stdout.fileno())
        return cls(proc)

    def __enter__(self) -> "SourceProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send_job(
        self,
        source_config: Any,
        catalog: Any,
        states: List[Any],
        *,
        follow_mode: bool,
        streams: List[str],
        secrets: List[str],
        verbose: bool,
    ) -> None:
        """The child's whole input, as one JSON line on its stdin (which stays open: its end of file tells the child
        the runner is gone)."""
        job = {
            "source_config": source_config,
            "catalog": catalog,
            "states": states,
            "follow": follow_mode,
            "streams": streams,
            "secrets": secrets,
            "verbose": verbose,
        }
        self._follow = follow_mode
        try:
            self.proc.stdin.write(json.dumps(job).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # the child already ended: ``messages`` reports how

    def forward_stop(self, stop_event: threading.Event) -> None:
        """Turn the runner's stop request into a SIGTERM to the child (a daemon thread that ends with ``close``)."""

        self._stop_event = stop_event

        def watch() -> None:
            while not self._closed.is_set():
                if stop_event.wait(0.5):
                    self._stop_forwarded = True  # (before the signal: the child may end before this thread runs again)
                    self.signal(signal.SIGTERM)
                    return

        threading.Thread(target=watch, name="source-stop-forwarder", daemon=True).start()

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the child if it still runs."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signum)
            except ProcessLookupError:
                pass

    def messages(self) -> Iterator[Any]:
        """The child's messages in order: records as ``JsonRecord``s (or RECORD lines as bytes), ``SourceProgress``,
        other messages as dicts. Raises the child's error (``_SOURCE_FAILED``), or a system error when it ended
        otherwise than by finishing."""
        from airbyte_cdk.models import FailureType
        from airbyte_cdk.utils.traced_exception import AirbyteTracedException

        from destination_collection import jsonio
        from destination_collection.protocol_loop import JsonRecord

        failed: Optional[Dict[str, Any]] = None
        stopped = False
        for line in self._lines():
            if line.startswith(TEXT_RECORD):
                try:
                    _, stream, emitted_at, data = line.split(b"\t", 3)
                    record = JsonRecord(stream.decode(), None, data.decode(), int(emitted_at), len(line) + 1)
                except ValueError:
                    raise self._broken(line) from None
                if not record.data.startswith("{"):
                    raise self._broken(line)
                yield record
                continue
            if line.startswith(RECORD_PREFIX):
                yield line
                continue
            try:
                message = jsonio.loads(line)
            except ValueError:
                message = None
            if not isinstance(message, dict):
                # not ours to interpret (a library writing to our descriptor): said, never passed to the write loop
                logging.getLogger("airbyte").warning(f"The source process wrote a line that is not a message: {line[:200]!r}")
                continue
            kind = message.get("type")
            if kind == PROGRESS:
                yield SourceProgress(message.get("streams") or {})
            elif kind == FAILED:
                failed = message
            elif kind == STOPPED:
                stopped = True
            else:
                yield message
        code = self.proc.wait()
        if self._closed.is_set() and failed is None:
            return  # ended by ``close``: the runner is done with it, whatever it was doing
        if failed is not None:
            try:
                failure_type = FailureType(failed.get("failure_type"))
            except ValueError:
                failure_type = FailureType.system_error
            error = AirbyteTracedException(message=str(failed.get("message")), failure_type=failure_type)
            # whether the child had been asked to stop when it failed (the pump may read this line much later)
            error.raised_after_stop = bool(failed.get("after_stop"))
            raise error
        if code != 0:
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() else f"exited with {code}"
            raise AirbyteTracedException(
                message=(
                    f"The source process (pid {self.proc.pid}) {how} without reporting an error (out of memory? see the "
                    "log lines above). Nothing after the last commit was lost: run again to read on from it."
                ),
                failure_type=FailureType.system_error,
            )
        # (a following source ends only when stopped: one that ended without being asked was stopped from outside)
        if (stopped or self._follow) and not self._stop_forwarded and not self._runner_stopping():
            raise AirbyteTracedException(
                message=(
                    f"The source process (pid {self.proc.pid}) stopped without the runner asking it to (a SIGTERM sent "
                    "to it alone?), so not everything was read. What it read is committed; to stop, signal the runner "
                    "(its pid or its process group); run it again to read on."
                ),
                failure_type=FailureType.system_error,
            )

    def _runner_stopping(self) -> bool:
        """Whether the runner itself is stopping: a SIGTERM to the whole process group reaches the child at once, the
        runner's handler only when its main thread runs Python again (it may be in a commit): wait for it a little."""
        return self._stop_event is not None and self._stop_event.wait(OUTSIDE_STOP_WAIT_SECONDS)

    def _broken(self, line: bytes) -> Exception:
        from airbyte_cdk.models import FailureType
        from airbyte_cdk.utils.traced_exception import AirbyteTracedException

        return AirbyteTracedException(
            message=(
                f"The source process (pid {self.proc.pid}) wrote a record line that is not in the runner's framing "
                f"({len(line)} bytes starting {line[:40]!r}); nothing after the last commit was lost: run again."
            ),
            failure_type=FailureType.system_error,
        )

    def _lines(self) -> Iterator[bytes]:
        """The child's stdout as lines (without their newline), read as much at a time as the pipe holds: a
        line-at-a-time reader cost ~5 µs per record here, most of it taking the GIL back after each small read."""
        fd = self.proc.stdout.fileno()
        pending = b""
        while True:
            try:
                chunk = os.read(fd, READ_BYTES)
            except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
                continue
            if not chunk:
                break
            lines = (pending + chunk).split(b"\n") if pending else chunk.split(b"\n")
            pending = lines.pop()
            yield from lines
        if pending:  # no newline at the end: the child was killed while writing this line
            logging.getLogger("airbyte").warning(
                f"The source process ended in the middle of a line ({len(pending)} bytes dropped, read again by the next run)."
            )

    def close(self, wait: bool = True) -> None:
        """End the child (asked to stop, then killed) and reap it; the runner leaves no process behind. ``wait``
        False: kill it at once (nobody reads its pipe any more, so it could not finish anyway). Idempotent."""
        self._closed.set()
        if wait and self.proc.poll() is None and self._stop_forwarded:
            try:
                self.proc.wait(CLOSE_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.signal(signal.SIGKILL)
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        # (stdout is left to the pump's thread, which may still be reading it: it sees the end of file and ends)
        self.proc.wait()


def message_size(message: Any) -> int:
    """Memory a record among the child's messages takes (for the pump's bound on what it holds): its data's ``str``
    (1 to 4 bytes per character) or its RECORD line, plus the objects around it; other messages count as nothing (a
    handful of small ones)."""
    data = getattr(message, "data", None)
    if type(data) is str:
        return sys.getsizeof(data) + 120
    return sys.getsizeof(message) if type(message) is bytes else 0


def _enlarge_pipe(fd: int) -> None:
    """Let the child write up to READ_BYTES before it waits for us (Linux; elsewhere, or past the system's
    pipe-max-size, the pipe keeps its size: only slower)."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", F_SETPIPE_SZ), READ_BYTES)
    except (ImportError, OSError):
        pass


_prestarted: Optional[SourceProcess] = None


def prestart() -> None:
    """Start the child now, before the runner's own imports: it imports the source while the runner imports the
    destination, checks the configs and opens the store. ``take`` hands it to the pipeline, ``discard`` ends it if the
    run ends before reading."""
    global _prestarted
    if _prestarted is None:
        try:
            _prestarted = SourceProcess.spawn()
        except OSError:
            _prestarted = None  # the pipeline spawns one (and says why if that fails too)


def take() -> SourceProcess:
    """The prestarted child, or a new one."""
    global _prestarted
    process, _prestarted = _prestarted, None
    return process if process is not None else SourceProcess.spawn()


def kill_prestarted() -> None:
    """SIGKILL the prestarted child without waiting (safe in a signal handler); ``discard`` reaps it."""
    process = _prestarted
    if process is not None:
        process.signal(signal.SIGKILL)


def discard() -> None:
    """End a prestarted child that no pipeline took (the run failed or stopped before reading)."""
    global _prestarted
    process, _prestarted = _prestarted, None
    if process is not None:
        process.close()
