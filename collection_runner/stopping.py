"""What SIGINT, SIGTERM and SIGHUP mean to ``kinesis-collection sync|follow``, in one place.

The promise: a stop signal commits what was read and ends the process with exit 0 within 5 s, whatever the source,
the store or a query is doing. Two phases:

* **Before the source is asked for anything** (start-up: Python's imports, the configs, discovery, the store lock,
  the store's connection): nothing has been read, so nothing is to be committed. The handler raises
  ``StopBeforeReading`` on the main thread, which interrupts whatever it waits for (a PostgreSQL server that
  accepts but never answers holds ``connect`` for its 15 s timeout; an endpoint that stopped answering holds
  discovery for its retry budget); ``cli.run`` ends the process with exit 0. ``install_early`` covers the imports,
  before even the CLI's modules are loaded, so a signal there is neither a traceback nor exit 143: it is held until
  the imports are done and raised when the run installs its handlers (``Stopper.install``). Raising inside an import
  broke C extensions half-way (a signal during ``import duckdb`` gave "ImportError: initialization failed", then a
  crash, exit -11, or a hang).
* **Once reading** (``Stopper.reading()``): the handler only sets ``event``. The pipeline gives the source a short
  grace for its final checkpoints, commits what it emitted, and returns (``pipeline.py``, ``source_pump.py``).

SIGHUP (the terminal closed) is a stop like SIGTERM. A second SIGINT after a stop interrupts at once
(``KeyboardInterrupt``: exit 1, "Interrupted."; what was committed stays committed).
"""
from __future__ import annotations

import signal
import sys
import threading
from typing import Any, Callable, Optional

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopBeforeReading(BaseException):
    """A stop signal arrived before the source was asked for anything: nothing to commit, exit 0.

    A BaseException (like KeyboardInterrupt), so no ``except Exception`` on the way turns it into an error."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signal_name = signal.Signals(signum).name


def ignore_stop_signals() -> None:
    """On the way out: a further stop signal must neither interrupt it (a traceback) nor, once the interpreter
    restores the default actions while it finalizes, kill the process (exit -15/-2 instead of the code decided)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


_held: list[int] = []  # a stop signal that arrived during the imports (install_early), raised by Stopper.install


def _hold_stop(signum: int, _frame: Any) -> None:
    if not _held:
        _held.append(signum)
        # the source's process, started before the imports, has nothing to do now: its imports stop competing for the
        # CPU with ours (``cli.main`` reaps it)
        from collection_runner import source_process

        source_process.kill_prestarted()


def install_early(argv: list) -> None:
    """At process start, before the heavy imports: a stop signal to sync/follow ends the process quietly with exit 0
    (``StopBeforeReading``). The other commands keep the default actions (``cli.run`` reports a SIGINT's
    KeyboardInterrupt as "Interrupted.", without a traceback)."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command in ("sync", "follow"):
        for signum in STOP_SIGNALS:
            signal.signal(signum, _hold_stop)


class StopRequest(threading.Event):
    """The pipeline's stop event, with what asked for the stop (the signal's name), said once the pump sees it."""

    reason = "Stop requested"


class Stopper:
    """The stop handlers of one sync/follow run; ``event`` is the pipeline's stop request."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger
        self.event = StopRequest()
        self._raise = True  # before reading: a stop raises StopBeforeReading (once: the clean-up is not interrupted)

    def install(self) -> "Stopper":
        """Install the handlers; a stop signal held since ``install_early`` (the imports are done now) raises here."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)
        if _held:
            self._handle(_held[0], None)
        return self

    def reading(self) -> None:
        """From now on a stop commits what was read: the handler only sets ``event`` (never raises mid-pipeline)."""
        self._raise = False

    def _handle(self, signum: int, _frame: Any) -> None:
        if self._raise:
            self._raise = False
            self.event.set()
            raise StopBeforeReading(signum)
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        # no logging here: a handler runs between two bytecodes of the main thread, possibly inside a log write of
        # its own ("reentrant call"); the source pump says it once it sees the event
        self.event.reason = signal.Signals(signum).name
        self.event.set()


def stopped_before_reading(exc: StopBeforeReading, log: Optional[Callable[[str], None]] = None) -> int:
    """The exit code (0) of a run stopped before it read anything, after saying so."""
    text = f"{exc.signal_name}: stopped before reading anything; nothing to commit."
    if log is not None:
        log(text)
    else:
        try:
            sys.stderr.write(text + "\n")
        except (OSError, ValueError):
            pass
    return 0
