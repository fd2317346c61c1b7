"""A loopback HTTPS front that speaks HTTP/2 (ALPN ``h2``) and relays every request to a plain HTTP/1.1 test server.

The Kinesis source calls ``SubscribeToShard`` over HTTP/2 (httpx, ``http2=True``) for ``https://`` endpoints, while the
test servers (``fault_proxy.FaultProxy``, ``HostileEndpoint``, kinesis-mock) speak HTTP/1.1 over plain TCP. This
front sits between them::

    with FaultProxy.replay(ReplayData([ReplayStream("s", shards=2)])) as backend, H2Front(backend.endpoint_url) as front:
        client = httpx.Client(http2=True, verify=front.ssl_context())   # or ssl.create_default_context(cafile=front.ca_file)
        client.post(front.endpoint_url, ...)                              # https://localhost:PORT
        assert front.requests_by_protocol == {"HTTP/2": 1}

What it does: it listens on 127.0.0.1 (port 0: a free port) with TLS, using a certificate from
``tls_material.TestCA`` that names ``DNS:localhost`` only (hence ``https://localhost:PORT``), and offers ALPN
``["h2"]`` (``["h2", "http/1.1"]`` with ``http1=True``, and then serves HTTP/1.1 too). Every request stream is
forwarded to the backend over a fresh ``http.client`` connection (method, path, headers without HTTP/2 pseudo-headers
and hop-by-hop headers, ``Host`` = the request's ``:authority``, body), and the response is relayed back **as it
arrives**: each ``read1`` from the backend (one chunk of a chunked body, or whatever one ``recv`` gave) becomes DATA
frames at once, never buffering the body, so long-lived event streams flow through. Sends respect HTTP/2 flow control
(a send waits for WINDOW_UPDATE when the stream or connection window is exhausted; ``flow_control_waits`` counts
those waits). When the backend ends its body cleanly the stream is ended (END_STREAM); when the backend connection
breaks mid-body (closed short of its ``Content-Length``, a chunked body cut before its last chunk, a reset) the stream
is reset with RST_STREAM ``INTERNAL_ERROR`` so the client sees an error, never a clean but short body
(``streams_reset`` counts them). A backend that cannot be reached at all is answered ``502``. Many streams are
multiplexed on one connection (one per shard, as the Kinesis source does).

Counters (thread-safe, read them any time): ``requests_by_protocol`` (``{"HTTP/2": n, "HTTP/1.1": m}``),
``connections_by_protocol`` (``"h2"``, ``"http/1.1"``, ``"refused"`` = TLS was fine but no protocol we serve was
negotiated, ``"tls-failed"`` = the handshake failed, e.g. the client does not trust the CA), ``streams_reset``,
``flow_control_waits``, ``backend_errors`` (502s, as text), ``stop_reason`` (``"max lifetime reached"`` when the
lifetime timer stopped it).

Stopping: ``stop()`` (or leaving the ``with``) closes the listening socket, shuts down every client connection and
every backend connection still in use (so no thread stays blocked in a ``recv``/``send``), joins all its threads
(``stuck_threads`` names any still alive after the join budget: tests assert it is empty) and deletes ``ca_file``.
Open streams are cut, not drained: their clients see a connection error. ``max_lifetime_seconds`` stops it by itself.

Why hand-written on the ``h2`` state machine: there is no maintained *synchronous* HTTP/2 server library for Python
(hyper-h2 is a sans-I/O protocol library; its examples are the usual starting point). Hypercorn is maintained but is
an asyncio/trio ASGI server: it would need an event loop thread, an ASGI app that re-implements the relay on an async
HTTP client, and a new test dependency, for no fewer moving parts than the ~300 lines of relay here. Threads match the
other test servers of this package (one thread per connection, stopped by shutting sockets down).

Threading design, per HTTP/2 connection: the connection thread reads the socket and feeds ``h2``; a writer thread
sends the ciphertext queue to the socket (so a client that is slow to read never blocks the reader, which must keep
reading its WINDOW_UPDATEs); one relay thread per request stream talks to the backend. TLS is done with
``ssl.MemoryBIO`` + ``SSLObject`` rather than an ``SSLSocket``, because an OpenSSL connection must not be read and
written by two threads at once; one lock guards the ``SSLObject``, the ``H2Connection`` and the stream table, and a
condition on that lock wakes relay threads waiting for flow-control window. Ciphertext is queued under that lock, so
it leaves in the order it was produced. Only the raw socket ``recv`` (reader) and ``sendall`` (writer) block, outside
the lock.

Limitations: request bodies are read whole before forwarding (fine for Kinesis' small JSON requests); no request
trailers, no server push, no HTTP/2 priority; at most 100 concurrent streams per connection (h2's default
``MAX_CONCURRENT_STREAMS``); a GOAWAY from the client ends the connection at once (httpx sends one only when it
closes); HTTP/1.1 request bodies need a ``Content-Length`` (no chunked uploads); the backend must
be a plain ``http://`` loopback address (like ``FaultProxy``, it refuses anything else).
"""
from __future__ import annotations

import http.client
import io
import os
import queue
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from h2.errors import ErrorCodes

from integration_tests.tls_material import SERVER_HOSTNAME, TestCA

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
# Connection-specific headers (RFC 9113 8.2.2 / RFC 9110 7.6.1): never forwarded in either direction. "host" is set by
# the front; "content-length" of a request is recomputed from the body actually read.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
                        "http2-settings"})
REQUEST_DROP = HOP_BY_HOP | {"host", "content-length"}
READ_SIZE = 65536
JOIN_BUDGET_SECONDS = 5.0


def _shutdown(sock: Optional[socket.socket]) -> None:
    """Wake any thread blocked on ``sock`` (recv/send/accept fail at once); the owner closes it."""
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _backend_address(url: str) -> Tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS:
        raise ValueError(f"the backend must be a plain http:// loopback URL, not {url!r}")
    return parts.hostname, parts.port or 80


class _BackendBroken(Exception):
    """The backend's response body ended before it was complete."""


class _TLS:
    """Server-side TLS over a raw socket through memory BIOs: the caller decides which thread touches the socket."""

    def __init__(self, context: ssl.SSLContext, raw: socket.socket) -> None:
        self.raw = raw
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.peer_closed = False  # close_notify received

    def handshake(self, timeout: float) -> None:
        """Blocking handshake, before any other thread uses the connection."""
        self.raw.settimeout(timeout)
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = self.outgoing.read()
                if pending:
                    self.raw.sendall(pending)
                data = self.raw.recv(READ_SIZE)
                if not data:
                    raise ConnectionError("the client closed the connection during the TLS handshake")
                self.incoming.write(data)
        pending = self.outgoing.read()
        if pending:
            self.raw.sendall(pending)
        self.raw.settimeout(None)

    def feed(self, ciphertext: bytes) -> bytes:
        """Decrypt what ``ciphertext`` (and anything buffered) completes; may return b""."""
        if ciphertext:
            self.incoming.write(ciphertext)
        chunks = []
        while True:
            try:
                chunk = self.obj.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.peer_closed = True
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def encrypt(self, plaintext: bytes) -> None:
        view = memoryview(plaintext)
        while view:
            written = self.obj.write(view)
            view = view[written:]

    def ciphertext(self) -> bytes:
        return self.outgoing.read()


class _Stream:
    def __init__(self, stream_id: int, headers: List[Tuple[str, str]]) -> None:
        self.id = stream_id
        self.headers = headers
        self.body: List[bytes] = []
        self.reset = False  # reset by the client (or cut by a connection close)
        self.backend_sock: Optional[socket.socket] = None

    def abort_backend(self) -> None:
        _shutdown(self.backend_sock)


class _Connection:
    """One accepted client connection: TLS handshake, then HTTP/2 (or HTTP/1.1 when allowed)."""

    def __init__(self, front: "H2Front", raw: socket.socket, number: int) -> None:
        self.front = front
        self.raw = raw
        self.name = f"h2-front-{front.port}-c{number}"
        self.lock = threading.Lock()
        self.window = threading.Condition(self.lock)  # notified on WINDOW_UPDATE, settings, resets, close
        self.closed = False
        self.terminated = False  # GOAWAY received
        self.streams: Dict[int, _Stream] = {}
        self.out: "queue.SimpleQueue[Optional[bytes]]" = queue.SimpleQueue()  # ciphertext for the writer; None ends
        self.threads: List[threading.Thread] = []
        self.tls: Optional[_TLS] = None
        self.h2: Optional[h2.connection.H2Connection] = None
        self.backend_socks: set = set()  # HTTP/1.1 path
        self.thread = threading.Thread(target=self.run, name=self.name, daemon=True)

    # ------------------------------------------------------------------------------------------------ lifecycle
    def run(self) -> None:
        try:
            assert self.front._context is not None
            self.tls = _TLS(self.front._context, self.raw)
            try:
                self.tls.handshake(self.front.handshake_timeout)
            except (OSError, ssl.SSLError, ConnectionError):
                self.front._count_connection("tls-failed")
                return
            protocol = self.tls.obj.selected_alpn_protocol()
            if protocol == "h2":
                self.front._count_connection("h2")
                self._serve_h2()
            elif self.front.http1:
                self.front._count_connection("http/1.1")
                self._serve_http1()
            else:
                self.front._count_connection("refused")
        except Exception as exc:  # pragma: no cover - a bug of ours: make it visible to the tests
            self.front._error(f"connection: {type(exc).__name__}: {exc}")
        finally:
            self.kill(graceful=True)
            self._spawned_join()
            try:
                self.raw.close()
            except OSError:
                pass
            self.front._forget(self)

    def kill(self, graceful: bool = False) -> None:
        """Stop serving: cut every stream and its backend connection, and (unless ``graceful``, which lets the
        writer drain what is queued, e.g. a GOAWAY) shut the socket down at once. Safe from any thread, repeatedly."""
        with self.lock:
            self.closed = True
            for stream in self.streams.values():
                stream.abort_backend()
            for sock in list(self.backend_socks):
                _shutdown(sock)
            self.window.notify_all()
        self.out.put(None)
        if not graceful:
            _shutdown(self.raw)

    def _spawned_join(self) -> None:
        deadline = time.monotonic() + JOIN_BUDGET_SECONDS
        for thread in list(self.threads):
            if thread.name.endswith("-writer"):
                thread.join(timeout=max(0.0, min(2.0, deadline - time.monotonic())))
                break
        _shutdown(self.raw)  # now that the writer has drained (or given up): wakes it if it is still blocked
        for thread in list(self.threads):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _spawn(self, target: Any, suffix: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=f"{self.name}-{suffix}", daemon=True)
        self.threads.append(thread)
        thread.start()

    # ---------------------------------------------------------------------------------------------- HTTP/2 side
    def _serve_h2(self) -> None:
        assert self.tls is not None
        self._spawn(self._write_loop, "writer")
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        with self.lock:
            self.h2 = h2.connection.H2Connection(config=config)
            self.h2.initiate_connection()
            self._flush_locked()
        data = b""  # the first round decrypts what arrived with the handshake's last flight
        while True:
            with self.lock:
                if self.closed:
                    return
                try:
                    plaintext = self.tls.feed(data)
                    events = self.h2.receive_data(plaintext) if plaintext else []
                except (h2.exceptions.ProtocolError, ssl.SSLError):
                    self._flush_locked()  # h2 queued a GOAWAY for a protocol error
                    return
                for event in events:
                    self._on_event(event)
                self._flush_locked()
                self.window.notify_all()
                if self.terminated or self.tls.peer_closed:
                    return
            try:
                data = self.raw.recv(READ_SIZE)
            except OSError:
                return
            if not data:
                return

    def _on_event(self, event: Any) -> None:  # under the lock
        assert self.h2 is not None
        if isinstance(event, h2.events.RequestReceived):
            self.streams[event.stream_id] = _Stream(event.stream_id, list(event.headers))
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.body.append(event.data)
            try:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            except h2.exceptions.StreamClosedError:
                pass
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                self._spawn(self._relay, f"s{event.stream_id}", stream)
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                stream.reset = True
                stream.abort_backend()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.terminated = True
        # WindowUpdated / RemoteSettingsChanged (a new initial window): the caller notifies the waiting relays.

    def _flush_locked(self) -> None:
        assert self.tls is not None
        if self.h2 is not None:
            data = self.h2.data_to_send()
            if data:
                self.tls.encrypt(data)
        ciphertext = self.tls.ciphertext()
        if ciphertext:
            self.out.put(ciphertext)

    def _write_loop(self) -> None:
        while True:
            item = self.out.get()
            if item is None:
                return
            try:
                self.raw.sendall(item)
            except OSError:
                self.kill()
                return

    def _gone(self, stream: _Stream) -> bool:  # under the lock
        return self.closed or self.terminated or stream.reset

    def _send_headers(self, stream: _Stream, headers: List[Tuple[str, str]], end_stream: bool = False) -> bool:
        assert self.h2 is not None
        with self.lock:
            if self._gone(stream):
                return False
            try:
                self.h2.send_headers(stream.id, headers, end_stream=end_stream)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                return False
            self._flush_locked()
            return True

    def _send_data(self, stream: _Stream, data: bytes) -> bool:
        """Send ``data`` on the stream as the windows allow, waiting for WINDOW_UPDATEs; False if the stream or the
        connection went away meanwhile."""
        assert self.h2 is not None
        view = memoryview(data)
        while view:
            with self.window:
                waited = False
                while True:
                    if self._gone(stream):
                        return False
                    try:
                        window = self.h2.local_flow_control_window(stream.id)
                    except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                        return False
                    if window > 0:
                        break
                    if not waited:
                        waited = True
                        self.front._count("flow_control_waits")
                    self.window.wait(1.0)
                size = min(len(view), window, self.h2.max_outbound_frame_size)
                try:
                    self.h2.send_data(stream.id, bytes(view[:size]))
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    return False
                self._flush_locked()
            view = view[size:]
        return True

    def _end(self, stream: _Stream, reset: bool) -> None:
        assert self.h2 is not None
        with self.lock:
            self.streams.pop(stream.id, None)
            if self._gone(stream):
                return
            try:
                if reset:
                    self.h2.reset_stream(stream.id, error_code=ErrorCodes.INTERNAL_ERROR)
                else:
                    self.h2.end_stream(stream.id)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                return
            self._flush_locked()
        if reset:
            self.front._count("streams_reset")

    def _relay(self, stream: _Stream) -> None:
        """One request stream: forward it to the backend and relay the response back as it arrives."""
        self.front._count_request("HTTP/2")
        pseudo = {name: value for name, value in stream.headers if name.startswith(":")}
        regular = [(n, v) for n, v in stream.headers if not n.startswith(":") and n.lower() not in REQUEST_DROP]
        cookies = [v for n, v in regular if n == "cookie"]
        if len(cookies) > 1:  # HTTP/2 may split cookies into several fields; HTTP/1.1 wants one
            regular = [(n, v) for n, v in regular if n != "cookie"] + [("cookie", "; ".join(cookies))]
        host = pseudo.get(":authority") or next((v for n, v in stream.headers if n == "host"), "")
        body = b"".join(stream.body)
        backend = self.front._backend_connection()
        try:
            try:
                backend.connect()
                with self.lock:
                    if self._gone(stream):
                        return
                    stream.backend_sock = backend.sock
                response = _forward(backend, pseudo.get(":method", "GET"), pseudo.get(":path", "/"), host, regular, body)
            except (OSError, http.client.HTTPException) as exc:
                with self.lock:
                    if self._gone(stream):
                        return
                message = f"backend request failed: {type(exc).__name__}: {exc}"
                self.front._error(message)
                payload = message.encode()
                if self._send_headers(stream, [(":status", "502"), ("content-type", "text/plain; charset=utf-8"),
                                               ("content-length", str(len(payload)))]):
                    if self._send_data(stream, payload):
                        self._end(stream, reset=False)
                return
            headers = [(":status", str(response.status))]
            headers += [(n.lower(), v) for n, v in response.getheaders() if n.lower() not in HOP_BY_HOP]
            if not self._send_headers(stream, headers):
                return
            try:
                for chunk in _body_chunks(response):
                    if not self._send_data(stream, chunk):
                        return
            except (OSError, http.client.HTTPException, _BackendBroken):
                self._end(stream, reset=True)
                return
            self._end(stream, reset=False)
        finally:
            with self.lock:
                self.streams.pop(stream.id, None)
                stream.backend_sock = None
            backend.close()

    # -------------------------------------------------------------------------------------------- HTTP/1.1 side
    def _serve_http1(self) -> None:
        _Http1Handler(self)


def _forward(backend: http.client.HTTPConnection, method: str, path: str, host: str, headers: List[Tuple[str, str]],
             body: bytes) -> http.client.HTTPResponse:
    backend.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    backend.putheader("Host", host or f"{backend.host}:{backend.port}")
    for name, value in headers:
        backend.putheader(name, value)
    if body or method in ("POST", "PUT", "PATCH"):
        backend.putheader("Content-Length", str(len(body)))
    backend.endheaders(body or None)
    return backend.getresponse()


def _body_chunks(response: http.client.HTTPResponse):
    """The backend's body, each piece as soon as one read returns it; ``_BackendBroken`` if it ends short (closed
    before its ``Content-Length``; a chunked body cut off raises ``http.client.IncompleteRead`` itself)."""
    while True:
        chunk = response.read1(READ_SIZE)
        if not chunk:
            if response.length:  # Content-Length not reached: the backend hung up mid-body
                raise _BackendBroken(f"{response.length} bytes of the body missing")
            return
        yield chunk


class _TLSReader(io.RawIOBase):
    """Plaintext reads over the connection's TLS (HTTP/1.1 path: one thread does everything)."""

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection
        self.pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        tls = self.connection.tls
        assert tls is not None
        data = b""
        while not self.pending:
            with self.connection.lock:
                if self.connection.closed:
                    return 0
                self.pending = tls.feed(data)
                ciphertext = tls.ciphertext()
            if ciphertext:
                self.connection.raw.sendall(ciphertext)
            if self.pending:
                break
            if tls.peer_closed:
                return 0
            data = self.connection.raw.recv(READ_SIZE)
            if not data:
                return 0
        size = min(len(buffer), len(self.pending))
        buffer[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size


class _TLSWriter(io.RawIOBase):
    def __init__(self, connection: _Connection) -> None:
        self.connection = connection

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        tls = self.connection.tls
        assert tls is not None
        with self.connection.lock:
            if self.connection.closed:
                raise ConnectionError("the front is stopping")
            tls.encrypt(bytes(data))
            ciphertext = tls.ciphertext()
        self.connection.raw.sendall(ciphertext)
        return len(data)


class _Http1Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 over the front's TLS, keep-alive; bodies of unknown length are relayed chunked, chunk by chunk."""

    protocol_version = "HTTP/1.1"

    def __init__(self, connection: _Connection) -> None:
        self.connection_ = connection
        super().__init__(connection.raw, ("127.0.0.1", 0), connection.front)

    def setup(self) -> None:
        self.rfile = io.BufferedReader(_TLSReader(self.connection_))
        self.wfile = _TLSWriter(self.connection_)

    def finish(self) -> None:
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (OSError, ConnectionError):
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output clean
        pass

    def _relay(self) -> None:
        connection, front = self.connection_, self.connection_.front
        front._count_request("HTTP/1.1")
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.send_error(411, "chunked request bodies are not supported by the test front")
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = [(n, v) for n, v in self.headers.items() if n.lower() not in REQUEST_DROP]
        backend = front._backend_connection()
        try:
            try:
                backend.connect()
                with connection.lock:
                    if connection.closed:
                        self.close_connection = True
                        return
                    connection.backend_socks.add(backend.sock)
                response = _forward(backend, self.command, self.path, self.headers.get("Host", ""), headers, body)
            except (OSError, http.client.HTTPException) as exc:
                if connection.closed:
                    self.close_connection = True
                    return
                front._error(f"backend request failed: {type(exc).__name__}: {exc}")
                self.send_error(502, f"backend request failed: {type(exc).__name__}")
                return
            no_body = self.command == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200
            chunked = not no_body and response.getheader("Content-Length") is None
            self.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in HOP_BY_HOP:
                    self.send_header(name, value)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if no_body:
                return
            try:
                for chunk in _body_chunks(response):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            except (OSError, http.client.HTTPException, _BackendBroken):
                front._count("streams_reset")  # HTTP/1.1 has no stream reset: cut the connection short instead
                self.close_connection = True
                _shutdown(connection.raw)
                return
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        finally:
            with connection.lock:
                connection.backend_socks.discard(backend.sock)
            backend.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _relay


class H2Front:
    """An HTTPS (HTTP/2) endpoint on 127.0.0.1 relaying to ``backend_url`` (plain HTTP/1.1 on loopback).

    Args:
        backend_url: ``http://127.0.0.1:N`` (e.g. ``FaultProxy.endpoint_url``).
        max_lifetime_seconds: stops itself after this (``stop_reason`` says so).
        http1: also offer ALPN ``http/1.1`` and serve HTTP/1.1 (counted apart); default: ``h2`` only, and a client
            that negotiates nothing else is dropped after the handshake (``connections_by_protocol["refused"]``).
        ca: the ``TestCA`` to take the server certificate from (default: a fresh one).
        backend_timeout: socket timeout of backend connections (default none: relays of long-lived streams wait as
            long as the backend; ``stop()`` unblocks them).
        handshake_timeout: seconds a client gets to finish the TLS handshake.
    """

    def __init__(self, backend_url: str, *, max_lifetime_seconds: float = 300.0, http1: bool = False,
                 ca: Optional[TestCA] = None, backend_timeout: Optional[float] = None,
                 handshake_timeout: float = 10.0) -> None:
        self.backend_url = backend_url
        self.backend_host, self.backend_port = _backend_address(backend_url)
        self.max_lifetime_seconds = max_lifetime_seconds
        self.http1 = http1
        self.ca = ca or TestCA.create()
        self.backend_timeout = backend_timeout
        self.handshake_timeout = handshake_timeout
        self.requests_by_protocol: Counter = Counter()
        self.connections_by_protocol: Counter = Counter()
        self.streams_reset = 0
        self.flow_control_waits = 0
        self.backend_errors: List[str] = []
        self.stop_reason: Optional[str] = None
        self.stuck_threads: List[str] = []
        self._lock = threading.Lock()
        self._connections: set = set()
        self._numbers = 0
        self._listener: Optional[socket.socket] = None
        self._port: Optional[int] = None
        self._accept_thread: Optional[threading.Thread] = None
        self._timer: Optional[threading.Timer] = None
        self._stopping = False
        self._dir: Optional[str] = None
        self._ca_file: Optional[str] = None
        self._context: Optional[ssl.SSLContext] = None

    # ------------------------------------------------------------------------------------------------ public API
    @property
    def port(self) -> int:
        assert self._port is not None, "not started"
        return self._port

    @property
    def endpoint_url(self) -> str:
        return f"https://{SERVER_HOSTNAME}:{self.port}"

    @property
    def ca_file(self) -> str:
        """A PEM file with the CA certificate (written by ``start()``, deleted by ``stop()``)."""
        assert self._ca_file is not None, "not started, or stopped"
        return self._ca_file

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting this front's CA (httpx 0.28+ deprecates ``verify=<path>``)."""
        return ssl.create_default_context(cadata=self.ca.ca_pem)

    def start(self) -> "H2Front":
        self._context = self._server_context()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self._port = self._listener.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, name=f"h2-front-{self._port}-accept",
                                               daemon=True)
        self._accept_thread.start()
        self._timer = threading.Timer(self.max_lifetime_seconds, self._stop_soon, args=("max lifetime reached",))
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            already, self._stopping = self._stopping, True
        if not already:
            deadline = time.monotonic() + JOIN_BUDGET_SECONDS
            if self._accept_thread is not None and self._accept_thread is not threading.current_thread():
                self._accept_thread.join(timeout=JOIN_BUDGET_SECONDS)  # it polls: gone within 0.1 s
            if self._listener is not None:
                self._listener.close()
            with self._lock:  # the accept loop adds no connection once _stopping is set
                connections = list(self._connections)
            for connection in connections:
                connection.kill()
            for connection in connections:
                connection.thread.join(timeout=max(0.0, deadline - time.monotonic()))
            threads = [self._accept_thread] + [c.thread for c in connections]
            threads += [t for c in connections for t in c.threads]
            with self._lock:
                self.stuck_threads = [t.name for t in threads if t is not None and t.is_alive()]
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = self._ca_file = None

    def __enter__(self) -> "H2Front":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            return {"requests_by_protocol": dict(self.requests_by_protocol),
                    "connections_by_protocol": dict(self.connections_by_protocol),
                    "streams_reset": self.streams_reset, "flow_control_waits": self.flow_control_waits,
                    "backend_errors": list(self.backend_errors), "stop_reason": self.stop_reason}

    # ------------------------------------------------------------------------------------------------ internals
    def _server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2  # HTTP/2 requires TLS 1.2+ (RFC 9113 9.2)
        context.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
        context.set_alpn_protocols(["h2", "http/1.1"] if self.http1 else ["h2"])
        self._dir = tempfile.mkdtemp(prefix="h2-front-")
        key_file = os.path.join(self._dir, "server.pem")
        with open(os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(self.ca.server_cert_pem + self.ca.server_key_pem)
        try:
            context.load_cert_chain(key_file)
        finally:
            os.unlink(key_file)  # the key is in the context now; only the CA stays on disk
        self._ca_file = os.path.join(self._dir, "ca.pem")
        with open(self._ca_file, "w") as handle:
            handle.write(self.ca.ca_pem)
        return context

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while True:
            with self._lock:
                if self._stopping:
                    return
            try:
                raw, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            raw.settimeout(None)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._stopping:
                    raw.close()
                    return
                self._numbers += 1
                connection = _Connection(self, raw, self._numbers)
                self._connections.add(connection)
            connection.thread.start()

    def _forget(self, connection: _Connection) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _stop_soon(self, reason: str) -> None:
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason
        threading.Thread(target=self.stop, name=f"h2-front-{self._port}-stopper", daemon=True).start()

    def _backend_connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.backend_host, self.backend_port, timeout=self.backend_timeout)

    def _count_request(self, protocol: str) -> None:
        with self._lock:
            self.requests_by_protocol[protocol] += 1

    def _count_connection(self, protocol: str) -> None:
        with self._lock:
            self.connections_by_protocol[protocol] += 1

    def _count(self, attribute: str) -> None:
        with self._lock:
            setattr(self, attribute, getattr(self, attribute) + 1)

    def _error(self, message: str) -> None:
        with self._lock:
            self.backend_errors.append(message)
