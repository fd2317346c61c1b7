"""query / describe / stats while a runner holds a DuckDB file.

DuckDB lets one process open a file for writing, and no other process may open it meanwhile, even read-only. So
the runner answers these commands itself: it listens on a Unix socket (mode 0600, in a private temporary folder,
named in the lock file) and runs each request on its own DuckDB cursor (a second connection to the same database,
safe to use from this thread), inside a transaction that is always rolled back: a query can read everything
committed, and change nothing. The protocol is one JSON line each way.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import socket
import socketserver
import tempfile
import threading
from typing import Any, Dict, Optional

from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_collection import inspect as inspect_cmd
from destination_collection.stores import Store

MAX_REQUEST_BYTES = 1 << 20


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        service: QueryService = self.server.service  # type: ignore[attr-defined]
        line = self.rfile.readline(MAX_REQUEST_BYTES)
        try:
            request = json.loads(line)
            response = {"ok": True, "output": service.answer(request)}
        except AirbyteTracedException as exc:
            response = {"ok": False, "error": exc.message, "failure_type": exc.failure_type.value if exc.failure_type else "system_error"}
        except Exception as exc:  # noqa: BLE001 - reported to the client, the runner goes on
            response = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "failure_type": "system_error"}
        self.wfile.write(json.dumps(response).encode() + b"\n")


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


class QueryService:
    def __init__(self, store: Store, logger: logging.Logger) -> None:
        self.store = store
        self.logger = logger
        # A second connection to the same database, created here on the runner's thread (creating cursors is not
        # thread-safe) and used only by the service thread, one request at a time.
        self._con = store.con.cursor()  # type: ignore[attr-defined]
        self._dir = tempfile.mkdtemp(prefix="kinesis-collection-")
        os.chmod(self._dir, 0o700)
        self.socket_path = os.path.join(self._dir, "query.sock")
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def start(self) -> "QueryService":
        self._server = _Server(self.socket_path, _Handler)
        self._server.service = self  # type: ignore[attr-defined]
        os.chmod(self.socket_path, 0o600)
        self._thread = threading.Thread(target=self._server.serve_forever, name="query-service", daemon=True)
        self._thread.start()
        return self

    def answer(self, request: Dict[str, Any]) -> str:
        with self._lock:
            # A view of the store on the service's own connection: same database, its own transaction.
            view = copy.copy(self.store)
            view.con = self._con  # type: ignore[attr-defined]
            view._in_tx = False  # type: ignore[attr-defined]
            view._pending = None  # type: ignore[attr-defined]  # the writer's background COMMIT is not the view's to wait for
            view.con.execute("BEGIN TRANSACTION")
            try:
                return inspect_cmd.render_command(
                    view,
                    request.get("command", ""),
                    sql=request.get("sql"),
                    collection=request.get("collection"),
                    limit=request.get("limit"),
                    fmt=request.get("format", "table"),
                )
            finally:
                view.con.execute("ROLLBACK")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            self._con.close()
        try:
            os.unlink(self.socket_path)
        except OSError:
            pass
        try:
            os.rmdir(self._dir)
        except OSError:
            pass


def ask(socket_path: str, request: Dict[str, Any], timeout: float = 300.0) -> Dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(json.dumps(request).encode() + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                break
    return json.loads(b"".join(chunks))
