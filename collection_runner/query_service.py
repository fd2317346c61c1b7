"""query / describe / stats while a runner holds a DuckDB file.

DuckDB lets one process open a file for writing, and no other process may open it meanwhile, even read-only. So
the runner answers these commands itself: it listens on a Unix socket (mode 0600, in a private temporary folder,
named in the lock file) and runs each request on a read-only view of its store (``Store.read_only_view()``: a second
connection to the same database, external access off), one request at a time. A ``query`` must be a single
read-only statement (``destination_collection.read_only_query``) and every request runs inside a transaction that
is always rolled back: it can read everything committed, and change nothing.

Every request has a time limit (the client's ``timeout``, at most the runner's ``--query-timeout``, default 60 s)
and is interrupted when its client disconnects or the runner stops; ``stop()`` returns within a few seconds even
while a query runs. The protocol is one JSON line each way.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import select
import socket
import socketserver
import tempfile
import threading
import time
from typing import Any, Callable, Dict, Iterator, Optional

from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_collection import inspect as inspect_cmd
from destination_collection.read_only_query import DEFAULT_TIMEOUT_SECS, Deadline
from destination_collection.stores import Store

MAX_REQUEST_BYTES = 1 << 20
QUERY_TIMEOUT_SECS = DEFAULT_TIMEOUT_SECS
REQUEST_IO_TIMEOUT_SECS = 10.0  # reading a request and writing its answer (a query's own time limit is separate)
STOP_WAIT_SECS = 2.0
ANSWER_WAIT_SECS = 0.5  # after that, how long stop() lets handlers write their last answers  # how long stop() waits for an interrupted query to give its connection back


def _client_gone(sock: socket.socket) -> Optional[str]:
    """A reason if the client has closed its end (EOF or reset), else None; never blocks."""
    try:
        poller = select.poll()  # not select.select: it raises ValueError for descriptors >= 1024
        poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
        if not poller.poll(0):
            return None
        if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
            return "its client disconnected"
    except BlockingIOError:
        return None
    except (OSError, ValueError):
        return "its client disconnected"
    return None


class _Handler(socketserver.StreamRequestHandler):
    # a client that connects and sends nothing (or answers nothing) must not pin a thread and a descriptor forever
    timeout = REQUEST_IO_TIMEOUT_SECS

    def handle(self) -> None:
        service: QueryService = self.server.service  # type: ignore[attr-defined]
        with service.handling():
            self._handle(service)

    def _handle(self, service: "QueryService") -> None:
        try:
            line = self.rfile.readline(MAX_REQUEST_BYTES)
        except OSError:  # TimeoutError included: no request within REQUEST_IO_TIMEOUT_SECS
            return
        if not line:
            return
        try:
            if len(line) >= MAX_REQUEST_BYTES and not line.endswith(b"\n"):
                raise AirbyteTracedException(
                    message=f"Bad request: larger than {MAX_REQUEST_BYTES // (1 << 20)} MiB; send a shorter statement.",
                    failure_type=FailureType.config_error,
                )
            try:
                request = json.loads(line)
            except ValueError:
                request = None
            if not isinstance(request, dict):
                raise AirbyteTracedException(message="Bad request: expected one JSON object on one line.", failure_type=FailureType.config_error)
            response = {"ok": True, "output": service.answer(request, poll=lambda: _client_gone(self.connection))}
        except AirbyteTracedException as exc:
            response = {"ok": False, "error": exc.message, "failure_type": exc.failure_type.value if exc.failure_type else "system_error"}
        except Exception as exc:  # noqa: BLE001 - reported to the client, the runner goes on
            response = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "failure_type": "system_error"}
        try:
            self.wfile.write(json.dumps(response).encode() + b"\n")
        except OSError:  # the client has gone; nothing to answer
            pass


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


class QueryService:
    def __init__(self, store: Store, logger: logging.Logger, timeout_secs: float = QUERY_TIMEOUT_SECS,
                 holder: Optional[Dict[str, Any]] = None) -> None:
        self.logger = logger
        self.holder = holder  # this runner (locking.StoreLock.holder): it holds every collection of the file
        self.timeout_secs = float(timeout_secs)
        # The store's read-only view: created here, on the runner's thread (creating a DuckDB cursor is not
        # thread-safe), and used only by the service's handler threads, one request at a time (self._lock).
        self._view = store.read_only_view()
        self._dir = tempfile.mkdtemp(prefix="kinesis-collection-")
        os.chmod(self._dir, 0o700)
        self.socket_path = os.path.join(self._dir, "query.sock")
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._current: Optional[Deadline] = None
        self._handlers = 0  # connections being handled (reading, answering, writing the answer)
        self._handlers_done = threading.Condition()

    def start(self) -> "QueryService":
        self._server = _Server(self.socket_path, _Handler)
        self._server.service = self  # type: ignore[attr-defined]
        os.chmod(self.socket_path, 0o600)
        # (``stop`` waits for the serving loop to see the request: up to poll_interval, 0.5 s by default; 0.1 s costs an
        # idle runner ~10 wake-ups/s, ~0.02 % of a core)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="query-service", daemon=True)
        self._thread.start()
        return self

    def _timeout(self, request: Dict[str, Any]) -> float:
        asked = request.get("timeout")
        if asked is None:
            return self.timeout_secs
        if isinstance(asked, bool) or not isinstance(asked, (int, float)) or not math.isfinite(asked) or asked <= 0:
            raise AirbyteTracedException(
                message=f"Bad request: timeout must be a positive number of seconds, not {asked!r}.", failure_type=FailureType.config_error
            )
        return min(float(asked), self.timeout_secs)

    def answer(self, request: Dict[str, Any], poll: Optional[Callable[[], Optional[str]]] = None) -> str:
        timeout = self._timeout(request)
        limit = request.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise AirbyteTracedException(message=f"Bad request: limit must be an integer, not {limit!r}.", failure_type=FailureType.config_error)
        fmt = request.get("format", "table")
        if fmt not in ("table", "json"):
            raise AirbyteTracedException(message=f"Bad request: format must be table or json, not {fmt!r}.", failure_type=FailureType.config_error)

        def stop_reason() -> Optional[str]:
            if self._stopping.is_set():
                return "shutdown"
            return poll() if poll is not None else None

        started = time.monotonic()
        while not self._lock.acquire(timeout=0.1):  # another request runs: wait, within this one's time limit
            reason = stop_reason()
            if reason == "shutdown":
                raise _shutdown_error()
            if reason or time.monotonic() - started >= timeout:
                raise AirbyteTracedException(
                    message=f"The runner was busy answering another query for {timeout:g} s (the time limit); try again.",
                    failure_type=FailureType.transient_error,
                )
        try:
            if self._stopping.is_set():
                raise _shutdown_error()
            waited = time.monotonic() - started  # for another request: the time limit counts from the arrival
            deadline = Deadline(self._view, timeout if waited < 0.1 else max(0.1, round(timeout - waited, 1)), poll=stop_reason)
            self._current = deadline
            return inspect_cmd.render_command(
                self._view,
                str(request.get("command", "")),
                sql=request.get("sql") if isinstance(request.get("sql"), str) else None,
                collection=request.get("collection") if isinstance(request.get("collection"), str) else None,
                limit=limit,
                fmt=fmt,
                deadline=deadline,
                holders=None if self.holder is None else (lambda tables: {table: self.holder for table in tables}),
            )
        finally:
            self._current = None
            self._lock.release()

    @contextlib.contextmanager
    def handling(self) -> Iterator[None]:
        with self._handlers_done:
            self._handlers += 1
        try:
            yield
        finally:
            with self._handlers_done:
                self._handlers -= 1
                self._handlers_done.notify_all()

    def stop(self) -> bool:
        """Stop answering: interrupt a running request, close the socket, then the view. Returns within a few seconds:
        True once the view is closed, False when a request still holds it (then its store must not be closed under
        it either)."""
        self._stopping.set()
        current = self._current
        if current is not None:
            current.cancel("shutdown")
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        closed = self._lock.acquire(timeout=STOP_WAIT_SECS)
        if closed:
            try:
                self._view.close()
            finally:
                self._lock.release()
        else:
            self.logger.warning(f"A query did not stop within {STOP_WAIT_SECS:g} s of the shutdown; exiting without waiting for it.")
        # a handler whose query was just interrupted still writes its answer ("shutting down"): give it a moment, so
        # the client reads that instead of a reset connection when the process exits
        with self._handlers_done:
            self._handlers_done.wait_for(lambda: self._handlers == 0, timeout=ANSWER_WAIT_SECS)
        try:
            os.unlink(self.socket_path)
        except OSError:
            pass
        try:
            os.rmdir(self._dir)
        except OSError:
            pass
        return closed


def _shutdown_error() -> AirbyteTracedException:
    return AirbyteTracedException(
        message="The runner is shutting down; run the command again (without a runner the file is opened read-only).",
        failure_type=FailureType.transient_error,
    )


def ask(socket_path: str, request: Dict[str, Any], timeout: float = 300.0) -> Dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):  # refused before reading it all (too large): read why
            pass
        chunks = []
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                break
    if not chunks:
        return {"ok": False, "error": "The runner closed the connection without answering (it is stopping?); try again.", "failure_type": "transient_error"}
    return json.loads(b"".join(chunks))
