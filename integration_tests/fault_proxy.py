"""A loopback HTTP server that speaks Kinesis to boto3: a fault-injecting proxy, or a GetRecords replay server.

One server class (``FaultProxy``), two backends (request-handling strategies):

* ``UpstreamBackend`` forwards every request to an emulator on 127.0.0.1 (kinesis-mock) over one keep-alive
  upstream connection per client connection: the **fault proxy** of the reliability suite.
* ``replay.ReplayBackend`` answers ``ListShards``/``DescribeStream``/``GetShardIterator``/``GetRecords`` from
  pre-encoded records in memory, ``PutRecord``/``PutRecords`` onto live, growing shards, consumers and
  ``SubscribeToShard`` (enhanced fan-out, a streamed response) and resharding, with no upstream: the **replay
  server** (an in-memory Kinesis) of the benchmark.

Between the client and either backend, the server injects faults per operation at configurable rates with a seeded
RNG, and counts exactly what it injected per kind and per operation (thread-safe), so a test can compare the
connector's logged counts with the truth::

    with FaultProxy.to_upstream(mock.endpoint_url, faults={"GetRecords": {"throughput_exceeded": 0.3}}, seed=7) as proxy:
        config["endpoint_url"] = proxy.endpoint_url
        ...
        assert logged_throttles == proxy.throttles()

    with FaultProxy.replay(ReplayData([ReplayStream("bench", shards=8, records_per_shard=100_000)]),
                           latency_seconds=0.030) as server:
        ...

Fault kinds (``FAULTS``): ``throughput_exceeded`` / ``limit_exceeded`` / ``kms_throttling`` (HTTP 400 with that
``__type``; the three ``THROTTLES``), ``http_500`` (``InternalFailure``), ``http_503`` (``ServiceUnavailable``),
``reset`` (the connection is closed with a TCP RST and no response), ``disconnect`` (closed with a FIN and no
response), ``truncate`` (the backend's real response is sent with its full ``Content-Length`` but only part of the
body, then the connection is closed) and ``latency`` (``fault_latency_seconds`` added, then the real response).
Error faults and resets never reach the backend; ``truncate`` and ``latency`` do. At most one fault per request.
``latency_seconds`` (a number, or ``{operation: seconds}``) is added to *every* request, fault or not. Faults are
decided and injected before the response starts, for every operation alike (``SubscribeToShard`` included).

Streaming responses: a ``Response`` whose ``body`` is an iterator of byte chunks (not ``bytes``) is sent with
``Transfer-Encoding: chunked`` as the chunks are produced, each written (and so flushed: the socket is unbuffered)
at once, then the final 0-chunk when the iterator ends; the connection stays usable (keep-alive). An empty chunk
(``b""``) sends nothing: it is the iterator's idle tick, on which the server checks whether the client hung up or
the server is stopping, and if so closes the iterator (``close()``: its ``finally`` blocks run) and the connection.
If the iterator raises ``DropConnection(rst)`` the connection is closed at once (an RST, or a FIN) without the
final chunk. The iterator's ``close()`` is always called when the response ends, however it ends. ``truncate`` on
a streamed response sends the head and the first chunk, then closes with a FIN. ``stop()`` does not wait for open
streams beyond a short grace: it shuts their sockets down and they end at their next chunk or tick.

Wire protocol: botocore 1.44 speaks AWS JSON 1.1 to Kinesis (``protocols: ["json"]`` in its service model; the
operation is named by ``X-Amz-Target: Kinesis_20131202.<Operation>``, bodies are ``application/x-amz-json-1.1``;
blobs are base64 strings and timestamps epoch seconds). Injected errors are JSON 1.1 error bodies. Should a future
botocore switch Kinesis to CBOR (``application/x-amz-cbor-1.1`` / Smithy RPCv2 ``/service/Kinesis/operation/<Op>``),
forwarding still works byte for byte and operations are still recognised, but injected error bodies would be JSON,
and the replay backend refuses CBOR requests with a clear 400 rather than answering garbage.

Why the standard library and not a proxy library: mitmproxy and friends bring TLS interception, an event loop and
dozens of dependencies for what is ~300 lines here, and none of them can inject *transport* faults (an RST after a
request, a body cut short under a full Content-Length) without reaching into their internals. ``http.server``'s
``ThreadingHTTPServer`` gives HTTP/1.1 keep-alive, one thread per connection (so added latency overlaps across
shards, as real round trips do) and direct access to the socket for resets and truncation.

Safety: it listens on 127.0.0.1 only (port 0: a free port), refuses any upstream that is not a loopback address,
never connects anywhere else, and stops itself after ``max_lifetime_seconds`` or ``max_requests`` (``stop_reason``
says which; tests assert it stayed ``None`` until they stopped it).
"""
from __future__ import annotations

import http.client
import json
import random
import select
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

THROTTLES = ("throughput_exceeded", "limit_exceeded", "kms_throttling")
ERROR_FAULTS: Dict[str, Tuple[int, str, str]] = {
    "throughput_exceeded": (400, "ProvisionedThroughputExceededException", "Rate exceeded for shard in stream under account 000000000000."),
    "limit_exceeded": (400, "LimitExceededException", "Rate exceeded for stream under account 000000000000."),
    "kms_throttling": (400, "KMSThrottlingException", "The request was denied due to request throttling by KMS."),
    "http_500": (500, "InternalFailure", "Internal service failure."),
    "http_503": (503, "ServiceUnavailable", "Service unavailable."),
}
TRANSPORT_FAULTS = ("reset", "disconnect", "truncate")
FAULTS = tuple(ERROR_FAULTS) + TRANSPORT_FAULTS + ("latency",)
JSON_11 = "application/x-amz-json-1.1"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade", "content-length"}


# ------------------------------------------------------------------------------------------- request/response
@dataclass
class Request:
    operation: str  # "GetRecords", ... ("" when the request names none)
    method: str
    path: str
    headers: List[Tuple[str, str]]
    body: bytes

    @property
    def content_type(self) -> str:
        for name, value in self.headers:
            if name.lower() == "content-type":
                return value
        return ""

    def json(self) -> Dict[str, Any]:
        return json.loads(self.body or b"{}")


class DropConnection(Exception):
    """Raised by a streamed response's iterator: close the connection now, mid-body, with an RST (``rst=True``)
    or a FIN, and without the final chunk."""

    def __init__(self, rst: bool = True) -> None:
        super().__init__("reset" if rst else "disconnect")
        self.rst = rst


@dataclass
class Response:
    status: int
    body: Union[bytes, Iterator[bytes]] = b""  # an iterator of chunks: a streamed (chunked) response
    headers: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def streaming(self) -> bool:
        return not isinstance(self.body, (bytes, bytearray))

    @classmethod
    def json(cls, payload: Any, status: int = 200) -> "Response":
        return cls.raw_json(json.dumps(payload, separators=(",", ":")).encode(), status)

    @classmethod
    def raw_json(cls, body: bytes, status: int = 200) -> "Response":
        return cls(status, body, [("Content-Type", JSON_11), ("x-amzn-RequestId", str(uuid.uuid4()))])

    @classmethod
    def error(cls, status: int, error_type: str, message: str) -> "Response":
        return cls.json({"__type": error_type, "message": message}, status)

    def encode(self, reason: str = "") -> Tuple[bytes, bytes]:
        """(head, body) as they go on the wire; Content-Length is always the full body's."""
        if not isinstance(self.body, (bytes, bytearray)):
            raise TypeError("a streamed response has no Content-Length: use encode_head()")
        return self.encode_head(reason), bytes(self.body)

    def encode_head(self, reason: str = "") -> bytes:
        """The status line and headers: ``Content-Length`` for a bytes body, ``Transfer-Encoding: chunked`` for a
        streamed one."""
        reason = reason or http.client.responses.get(self.status, "")
        lines = [f"HTTP/1.1 {self.status} {reason}"]
        lines += [f"{k}: {v}" for k, v in self.headers if k.lower() not in HOP_BY_HOP]
        if isinstance(self.body, (bytes, bytearray)):
            lines.append(f"Content-Length: {len(self.body)}")
        else:
            lines.append("Transfer-Encoding: chunked")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def operation_of(path: str, headers: Mapping[str, str]) -> str:
    target = headers.get("X-Amz-Target") or headers.get("x-amz-target") or ""
    if target:
        return target.rsplit(".", 1)[-1]
    if "/operation/" in path:  # Smithy RPCv2 CBOR
        return path.rstrip("/").rsplit("/", 1)[-1]
    return ""


# ------------------------------------------------------------------------------------------------- backends
class Backend:
    """A request-handling strategy. ``respond`` runs on the connection's thread; ``session`` is a dict private to
    one client connection (for an upstream connection, say) and ``close_session`` is called when it ends."""

    def respond(self, request: Request, session: Dict[str, Any]) -> Response:  # pragma: no cover - interface
        raise NotImplementedError

    def close_session(self, session: Dict[str, Any]) -> None:
        pass


def loopback_only(url: str) -> Tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS or not parts.port:
        raise ValueError(f"upstream must be http://127.0.0.1:<port> (loopback only), got {url!r}")
    return ("127.0.0.1" if parts.hostname == "localhost" else parts.hostname), parts.port


class UpstreamBackend(Backend):
    """Forward to one emulator on loopback, keep-alive, one upstream connection per client connection."""

    def __init__(self, upstream_url: str, timeout: float = 30.0) -> None:
        self.host, self.port = loopback_only(upstream_url)
        self.timeout = timeout

    def respond(self, request: Request, session: Dict[str, Any]) -> Response:
        headers = {k: v for k, v in request.headers if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
        headers["Host"] = f"{self.host}:{self.port}"
        for attempt in (1, 2):
            conn = session.get("upstream")
            if conn is None:
                conn = session["upstream"] = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                conn.request(request.method, request.path, body=request.body, headers=headers)
                upstream = conn.getresponse()
                body = upstream.read()
            except (http.client.HTTPException, OSError):
                # The emulator closed an idle keep-alive connection: reconnect once, then give up (→ 502).
                conn.close()
                session.pop("upstream", None)
                if attempt == 2:
                    raise
                continue
            if upstream.will_close:
                conn.close()
                session.pop("upstream", None)
            return Response(upstream.status, body, [(k, v) for k, v in upstream.getheaders() if k.lower() not in HOP_BY_HOP])
        raise AssertionError("unreachable")

    def close_session(self, session: Dict[str, Any]) -> None:
        conn = session.pop("upstream", None)
        if conn is not None:
            conn.close()


# ------------------------------------------------------------------------------------------------- the server
FaultRates = Mapping[str, Mapping[str, float]]  # operation ("*" = any) -> {fault kind: probability}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False
    owner: "FaultProxy"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-response (botocore after a timeout, a test ending) is not an error of ours.
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return
        with self.owner._lock:
            self.owner.backend_errors.append(f"handler: {type(exc).__name__}: {exc}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: botocore's pool reuses connections
    disable_nagle_algorithm = True  # head and body leave at once; no 40 ms delayed-ACK stalls
    timeout = 60  # an idle keep-alive connection is dropped after this
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.session: Dict[str, Any] = {}
        self.server.owner._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.owner.backend.close_session(self.session)
            self.server.owner._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output clean
        pass

    def _serve(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(operation_of(self.path, self.headers), self.command, self.path, list(self.headers.items()), body)
        owner._dispatch(self, request)

    do_POST = _serve
    do_GET = _serve

    # -- writing, used by FaultProxy._dispatch
    def send(self, response: Response, truncate_to: Optional[int] = None) -> None:
        if response.streaming:
            self.send_stream(response, truncate=truncate_to is not None)
            return
        head, body = response.encode()
        if truncate_to is None:
            self.wfile.write(head + body)
            return
        self.wfile.write(head + body[:truncate_to])
        self.drop(rst=False)

    def send_stream(self, response: Response, truncate: bool = False) -> None:
        """A streamed response, chunk by chunk as the iterator yields them (see the module docstring)."""
        owner = self.server.owner
        body = response.body
        assert not isinstance(body, (bytes, bytearray))
        owner._stream_started()
        try:
            self.wfile.write(response.encode_head())
            for chunk in body:
                if not chunk:  # an idle tick: is anyone still listening?
                    if owner.stopping or self._client_gone():
                        self.drop(rst=False)
                        return
                    continue
                self.wfile.write(b"%X\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
                if truncate:
                    self.drop(rst=False)
                    return
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except DropConnection as drop:
            self.drop(rst=drop.rst)
        except OSError:  # the client hung up, or stop() shut the socket down
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - the iterator failed mid-body: reported to the test, connection closed
            with owner._lock:
                owner.backend_errors.append(f"stream: {type(exc).__name__}: {exc}")
            self.drop(rst=False)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:  # noqa: BLE001 - reported to the test
                    with owner._lock:
                        owner.backend_errors.append(f"stream close: {type(exc).__name__}: {exc}")
            owner._stream_ended()

    def _client_gone(self) -> bool:
        """True when the client closed (FIN or RST) its side; the request was read in full, so a readable socket
        means end of file or an error (a client sending more is taken as still there)."""
        try:
            poller = select.poll()  # not select.select: no FD_SETSIZE limit in a busy process
            poller.register(self.connection, select.POLLIN | select.POLLPRI)
            if not poller.poll(0):  # nothing to read: still there
                return False
            # readable: end of file (b""), an error (raises), or bytes sent early (still there); never blocks now
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):  # reset, or closed by stop()
            return True

    def drop(self, rst: bool) -> None:
        """Close the connection now: with an RST (SO_LINGER 0) or a plain FIN; nothing more is read or sent."""
        self.close_connection = True
        try:
            if rst:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.connection.close()


class FaultProxy:
    """A Kinesis endpoint on 127.0.0.1 that forwards to (or replays for) boto3 and injects faults.

    Args:
        backend: an ``UpstreamBackend``, a ``replay.ReplayBackend``, or an upstream URL (``http://127.0.0.1:N``).
        faults: ``{operation or "*": {fault kind: rate}}``; rates of one operation add up to at most 1.
        seed: the RNG seed for fault decisions (one draw per request that has rules).
        latency_seconds: added to every request (number, or ``{operation or "*": seconds}``).
        fault_latency_seconds: what the ``latency`` fault adds.
        max_lifetime_seconds / max_requests: the server stops itself past either (``stop_reason`` says which).
        decide: optional ``(operation, request_number) -> fault kind | None`` replacing the random draw (for
            deterministic schedules, e.g. "throttle the first 3 GetRecords").
    """

    def __init__(
        self,
        backend: Union[Backend, str],
        *,
        faults: Optional[FaultRates] = None,
        seed: int = 0,
        latency_seconds: Union[float, Mapping[str, float]] = 0.0,
        fault_latency_seconds: float = 0.25,
        max_lifetime_seconds: float = 300.0,
        max_requests: int = 100_000,
        decide: Optional[Callable[[str, int], Optional[str]]] = None,
    ) -> None:
        self.backend = UpstreamBackend(backend) if isinstance(backend, str) else backend
        self.fault_latency_seconds = fault_latency_seconds
        self.max_lifetime_seconds = max_lifetime_seconds
        self.max_requests = max_requests
        self.decide = decide
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._faults: Dict[str, Dict[str, float]] = {}
        self._latency: Dict[str, float] = {}
        self.set_faults(faults or {})
        self.set_latency(latency_seconds)
        self.requests: Counter = Counter()  # operation -> requests received
        self.injected: Counter = Counter()  # (fault kind, operation) -> faults injected
        self.backend_errors: List[str] = []  # backend failures (answered 502): tests assert there are none
        self.stop_reason: Optional[str] = None
        self._connections: set = set()
        self._streams_open = 0  # streamed responses being sent
        self._streams_done = threading.Condition(self._lock)
        self.stopping = False  # set by stop(): open streams end at their next chunk or idle tick
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._timer: Optional[threading.Timer] = None

    # -- construction helpers
    @classmethod
    def to_upstream(cls, upstream_url: str, **kwargs: Any) -> "FaultProxy":
        return cls(UpstreamBackend(upstream_url), **kwargs)

    @classmethod
    def replay(cls, data: Any, **kwargs: Any) -> "FaultProxy":
        from integration_tests.replay import ReplayBackend

        return cls(ReplayBackend(data), **kwargs)

    # -- configuration (may change while running)
    def set_faults(self, faults: FaultRates) -> None:
        checked: Dict[str, Dict[str, float]] = {}
        for operation, rates in faults.items():
            unknown = set(rates) - set(FAULTS)
            if unknown:
                raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULTS}")
            if any(r < 0 for r in rates.values()) or sum(rates.values()) > 1.0 + 1e-9:
                raise ValueError(f"fault rates for {operation} must be >= 0 and add up to at most 1: {dict(rates)}")
            checked[operation] = dict(rates)
        with self._lock:
            self._faults = checked

    def set_latency(self, latency: Union[float, Mapping[str, float]]) -> None:
        with self._lock:
            self._latency = {"*": float(latency)} if isinstance(latency, (int, float)) else {k: float(v) for k, v in latency.items()}

    # -- lifecycle
    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return self._server.server_address[1]

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FaultProxy":
        self.stopping = False
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"fault-proxy-{self.port}", daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.max_lifetime_seconds, self._stop_soon, args=("max lifetime reached",))
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        server, self._server = self._server, None
        if server is None:
            return
        self.stopping = True
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # wake handler threads blocked on idle keep-alive connections
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:  # streams end at their next chunk or idle tick; never wait long for one that does not
            self._streams_done.wait_for(lambda: self._streams_open == 0, timeout=2.0)

    @property
    def streams_open(self) -> int:
        """Streamed responses being sent right now."""
        with self._lock:
            return self._streams_open

    def _stream_started(self) -> None:
        with self._lock:
            self._streams_open += 1

    def _stream_ended(self) -> None:
        with self._lock:
            self._streams_open -= 1
            self._streams_done.notify_all()

    def _stop_soon(self, reason: str) -> None:
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason
        threading.Thread(target=self.stop, daemon=True).start()  # never shut down from a handler's own thread

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- counters
    def count(self, kind: Optional[str] = None, operation: Optional[str] = None) -> int:
        with self._lock:
            return sum(n for (k, op), n in self.injected.items() if kind in (None, k) and operation in (None, op))

    def throttles(self, operation: Optional[str] = None) -> int:
        return sum(self.count(kind, operation) for kind in THROTTLES)

    def failures(self, operation: Optional[str] = None) -> int:
        """Injected faults that fail the request (everything but ``latency``)."""
        return sum(self.count(kind, operation) for kind in FAULTS if kind != "latency")

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "injected": {f"{k}/{op}": n for (k, op), n in sorted(self.injected.items())},
                "stop_reason": self.stop_reason,
            }

    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()
            self.injected.clear()

    # -- the request path (runs on the connection's thread)
    def _choose(self, operation: str) -> Tuple[Optional[str], float, bool]:
        """(fault kind or None, added latency, over the request limit?) for one request, under the lock."""
        with self._lock:
            self.requests[operation] += 1
            total = sum(self.requests.values())
            if total > self.max_requests:
                return None, 0.0, True
            latency = self._latency.get(operation, self._latency.get("*", 0.0))
            kind: Optional[str] = None
            if self.decide is not None:
                kind = self.decide(operation, self.requests[operation])
            else:
                rates = self._faults.get(operation) or self._faults.get("*")
                if rates:
                    draw, cumulative = self._rng.random(), 0.0
                    for candidate, rate in rates.items():
                        cumulative += rate
                        if draw < cumulative:
                            kind = candidate
                            break
            if kind is not None:
                if kind not in FAULTS:
                    raise ValueError(f"decide() returned unknown fault kind {kind!r}")
                self.injected[(kind, operation)] += 1
            return kind, latency, False

    def _dispatch(self, handler: _Handler, request: Request) -> None:
        kind, latency, exhausted = self._choose(request.operation)
        if exhausted:
            self._stop_soon(f"max requests ({self.max_requests}) reached")
            handler.drop(rst=True)
            return
        if kind == "latency":
            latency += self.fault_latency_seconds
        if latency > 0:
            time.sleep(latency)
        if kind in ERROR_FAULTS:
            status, error_type, message = ERROR_FAULTS[kind]
            handler.send(Response.error(status, error_type, message))
            return
        if kind in ("reset", "disconnect"):
            handler.drop(rst=kind == "reset")
            return
        try:
            response = self.backend.respond(request, handler.session)
        except Exception as exc:  # noqa: BLE001 - reported to the test, answered as a gateway error
            with self._lock:
                self.backend_errors.append(f"{request.operation}: {type(exc).__name__}: {exc}")
            response = Response.error(502, "BadGateway", f"backend failed: {type(exc).__name__}")
        if kind == "truncate":
            if response.streaming:  # the head and the first chunk, then a FIN
                handler.send(response, truncate_to=0)
                return
            # Full Content-Length, then at most half the body (at least one byte short), then close.
            body = response.body
            assert isinstance(body, (bytes, bytearray))
            handler.send(response, truncate_to=min(len(body) // 2, max(len(body) - 1, 0)))
            return
        handler.send(response)


# ------------------------------------------------------------------------------------------ hostile endpoints
HOSTILE_KINDS = ("drip", "silent", "endless_next_token", "repeated_next_token", "garbage_json", "scripted")
# A scripted endpoint's answer to one request: a Response, raw bytes sent as they are (then the connection is
# closed), or None (never answer: wait until the endpoint stops).
Script = Callable[[str, Dict[str, Any], int], Union[Response, bytes, None]]


class HostileEndpoint:
    """A loopback "Kinesis" endpoint that misbehaves in one way, for the deadline and pagination tests:

    * ``drip``: answers every request one byte every ``drip_seconds`` (status line, headers, then an endless body),
      so no socket read ever times out but no response ever completes;
    * ``silent``: accepts connections and reads requests, never answers;
    * ``endless_next_token`` / ``repeated_next_token``: a valid ``DescribeStream``; ``ListShards`` pages of one new
      shard with a fresh ``NextToken`` each time (or always the same token);
    * ``garbage_json``: every request answered 200 with a body that is not JSON;
    * ``scripted``: every request answered by ``script(operation, request JSON, request number of that operation)``:
      a ``Response``; raw ``bytes`` written as they are, after which the connection is closed (a lying
      ``Content-Length``, a close after the headers, an endless chunked body as a generator of chunks via
      ``script`` returning an iterator of bytes); or ``None`` (never answered).

    Listens on 127.0.0.1 only (port 0), answers no one else, and stops itself after ``max_lifetime_seconds``.
    ``requests`` counts requests per operation.
    """

    def __init__(self, kind: str, *, drip_seconds: float = 2.0, max_lifetime_seconds: float = 120.0, script: Optional[Script] = None) -> None:
        if kind not in HOSTILE_KINDS:
            raise ValueError(f"unknown hostile kind {kind!r}; known: {HOSTILE_KINDS}")
        if (kind == "scripted") != (script is not None):
            raise ValueError("a script is given with kind 'scripted', and only then")
        self.kind = kind
        self.script = script
        self.drip_seconds = drip_seconds
        self.max_lifetime_seconds = max_lifetime_seconds
        self.requests: Counter = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: Optional[socket.socket] = None
        self._port: Optional[int] = None
        self._threads: List[threading.Thread] = []
        self._local = threading.local()

    @property
    def endpoint_url(self) -> str:
        assert self._port is not None, "not started"
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> "HostileEndpoint":
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._port = self._listener.getsockname()[1]
        self._listener.settimeout(0.2)
        self._spawn(self._accept)
        timer = threading.Timer(self.max_lifetime_seconds, self._stop.set)
        timer.daemon = True
        timer.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(timeout=2)
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> "HostileEndpoint":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name=f"hostile-{self.kind}")
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._spawn(self._serve, conn)

    def _read_request(self, conn: socket.socket, buffer: bytes) -> Tuple[Optional[str], bytes]:
        """(operation, leftover bytes) of the next request, or (None, b"") when the client is gone or we stop.
        The request's JSON body is kept in ``self._last_body`` (per connection thread) for scripts."""
        while b"\r\n\r\n" not in buffer:
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                if self._stop.is_set():
                    return None, b""
                continue
            except OSError:
                return None, b""
            if not chunk:
                return None, b""
            buffer += chunk
        head, rest = buffer.split(b"\r\n\r\n", 1)
        headers = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        while len(rest) < length and not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return None, b""
            if not chunk:
                return None, b""
            rest += chunk
        operation = headers.get("x-amz-target", "").rsplit(".", 1)[-1]
        try:
            self._local.body = json.loads(rest[:length] or b"{}")
        except ValueError:
            self._local.body = {}
        with self._lock:
            self.requests[operation] += 1
            self._local.number = self.requests[operation]
        return operation, rest[length:]

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        buffer = b""
        pages = 0
        try:
            while not self._stop.is_set():
                operation, buffer = self._read_request(conn, buffer)
                if operation is None:
                    return
                if self.kind == "silent":
                    self._stop.wait()
                    return
                if self.kind == "scripted":
                    assert self.script is not None
                    answer = self.script(operation, self._local.body, self._local.number)
                    if answer is None:
                        self._stop.wait()
                        return
                    if isinstance(answer, Response):
                        head, body = answer.encode()
                        conn.sendall(head + body)
                        continue
                    for chunk in ([answer] if isinstance(answer, bytes) else answer):
                        if self._stop.is_set():
                            return
                        conn.sendall(chunk)
                    return
                if self.kind == "drip":
                    wire = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 1000000\r\n\r\n{" + b" " * 999_999
                    for i in range(len(wire)):
                        conn.sendall(wire[i:i + 1])
                        if self._stop.wait(self.drip_seconds):
                            return
                    return
                if self.kind == "garbage_json":
                    response = Response.raw_json(b"<html>\xff not json {{{")
                elif operation == "DescribeStream":
                    response = Response.json({"StreamDescription": {
                        "StreamName": "hostile", "StreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/hostile",
                        "StreamStatus": "ACTIVE", "StreamCreationTimestamp": 1_700_000_000, "Shards": [], "HasMoreShards": True,
                        "RetentionPeriodHours": 24, "EnhancedMonitoring": [], "EncryptionType": "NONE"}})
                elif operation == "ListShards":
                    pages += 1
                    token = "same-token" if self.kind == "repeated_next_token" else f"token-{pages}-{uuid.uuid4()}"
                    response = Response.json({"Shards": [{"ShardId": f"shardId-{pages:012d}",
                                                          "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "1"},
                                                          "SequenceNumberRange": {"StartingSequenceNumber": "1"}}],
                                              "NextToken": token})
                else:
                    response = Response.error(400, "InvalidArgumentException", f"{operation} is not served here.")
                head, body = response.encode()
                conn.sendall(head + body)
        except OSError:
            return
        finally:
            conn.close()
