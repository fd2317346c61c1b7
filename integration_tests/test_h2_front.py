"""Tests of ``h2_front.H2Front``: an HTTP/2 (TLS, ALPN h2) front relaying to a plain HTTP/1.1 test server."""
from __future__ import annotations

import hashlib
import json
import os
import random
import select
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator, List, Tuple
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from integration_tests.fault_proxy import FaultProxy
from integration_tests.h2_front import H2Front
from integration_tests.replay import ReplayData, ReplayStream

pytestmark = pytest.mark.timeout(20)

TIMEOUT = httpx.Timeout(10.0)


def _big_body(size: int) -> bytes:
    return random.Random(size).randbytes(size)


class _Backend(BaseHTTPRequestHandler):
    """A tiny HTTP/1.1 backend with one behaviour per path."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: "_BackendServer"

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _head(self, status: int = 200, length: int | None = None, content_type: str = "application/octet-stream") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        route = parts.path
        if route == "/echo":
            payload = json.dumps({"method": self.command, "path": self.path, "headers": list(self.headers.items()),
                                  "length": len(body), "sha256": hashlib.sha256(body).hexdigest()}).encode()
            self._head(length=len(payload), content_type="application/json")
            self.wfile.write(payload)
        elif route == "/stream":  # a chunk every 100 ms for 1 s, then the end
            self._head()
            for i in range(10):
                self._chunk(f"chunk-{i};".encode())
                time.sleep(0.1)
            self.wfile.write(b"0\r\n\r\n")
        elif route == "/big":
            data = _big_body(int(query["size"]))
            self._head(length=len(data))
            for start in range(0, len(data), 1 << 16):
                self.wfile.write(data[start:start + (1 << 16)])
        elif route == "/slow":
            time.sleep(0.5)
            payload = query["i"].encode()
            self._head(length=len(payload), content_type="text/plain")
            self.wfile.write(payload)
        elif route == "/drop":  # part of the body, then the connection is closed
            if query["mode"] == "length":
                self._head(length=100_000)
                self.wfile.write(b"x" * 1000)
            else:
                self._head()
                self._chunk(b"x" * 1000)
                self.wfile.write(b"5\r\nxy")  # a chunk cut short
            time.sleep(0.2)  # let the relay forward what it got before the close
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        elif route == "/hang":  # one chunk, then nothing until the test releases it
            self._head()
            self._chunk(b"first;")
            self.server.release.wait(15)
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._head(404, length=0)

    do_GET = do_POST = _serve


class _BackendServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Backend)
        self.release = threading.Event()

    def handle_error(self, request, client_address) -> None:  # clients hanging up are expected here
        pass

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def backend() -> Iterator[_BackendServer]:
    server = _BackendServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def front(backend: _BackendServer) -> Iterator[H2Front]:
    with H2Front(backend.url, max_lifetime_seconds=60) as f:
        yield f
        assert f.backend_errors == []


def _client(front: H2Front, http2: bool = True) -> httpx.Client:
    return httpx.Client(http2=http2, verify=ssl.create_default_context(cafile=front.ca_file), timeout=TIMEOUT)


def _front_threads(front: H2Front) -> List[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(f"h2-front-{front.port}-")]


def _wait_for(predicate, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# ----------------------------------------------------------------------------------------------------------- (a)
def test_kinesis_json_request_reaches_the_replay_server_over_http2() -> None:
    data = ReplayData([ReplayStream("s", shards=2, records_per_shard=100)])
    with FaultProxy.replay(data) as proxy, H2Front(proxy.endpoint_url, max_lifetime_seconds=60) as front:
        assert front.endpoint_url == f"https://localhost:{front.port}"
        with _client(front) as client:
            response = client.post(front.endpoint_url, content=json.dumps({"StreamName": "s"}).encode(),
                                   headers={"X-Amz-Target": "Kinesis_20131202.ListShards",
                                            "Content-Type": "application/x-amz-json-1.1"})
        assert response.http_version == "HTTP/2"
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/x-amz-json-1.1"
        assert [s["ShardId"] for s in response.json()["Shards"]] == ["shardId-000000000000", "shardId-000000000001"]
        assert front.requests_by_protocol == {"HTTP/2": 1}
        assert front.connections_by_protocol == {"h2": 1}
        assert proxy.snapshot()["requests"] == {"ListShards": 1}
        assert front.backend_errors == []


def test_request_headers_and_a_large_request_body_are_forwarded(front: H2Front) -> None:
    body = _big_body(300_000)  # larger than the 64 KiB window the front grants: its WINDOW_UPDATEs must flow
    with _client(front) as client:
        response = client.post(f"{front.endpoint_url}/echo?x=1", content=body, headers={"X-Test": "yes"})
    assert response.http_version == "HTTP/2"
    echo = response.json()
    headers = {name.lower(): value for name, value in echo["headers"]}
    assert (echo["method"], echo["path"]) == ("POST", "/echo?x=1")
    assert (echo["length"], echo["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    assert headers["host"] == f"localhost:{front.port}"
    assert headers["x-test"] == "yes"
    assert headers["content-length"] == str(len(body))
    assert not any(name.startswith(":") for name in headers)
    assert "connection" not in headers or headers["connection"] != "upgrade"


# ----------------------------------------------------------------------------------------------------------- (b)
def test_a_chunked_body_is_relayed_as_it_arrives(front: H2Front) -> None:
    arrivals: List[Tuple[float, bytes]] = []
    with _client(front) as client:
        start = time.monotonic()
        with client.stream("GET", f"{front.endpoint_url}/stream") as response:
            assert response.http_version == "HTTP/2"
            for piece in response.iter_raw():
                arrivals.append((time.monotonic() - start, piece))
        ended = time.monotonic() - start
    assert b"".join(p for _, p in arrivals) == b"".join(f"chunk-{i};".encode() for i in range(10))
    first_at = arrivals[0][0]
    assert arrivals[0][1].startswith(b"chunk-0;")
    assert ended >= 0.9
    assert first_at < 0.5, f"first chunk after {first_at:.3f} s: the body was buffered"
    assert len(arrivals) >= 5  # pieces arrive spread out, not in one lump at the end
    assert arrivals[-1][0] - first_at >= 0.7


# ----------------------------------------------------------------------------------------------------------- (c)
def test_a_body_larger_than_the_flow_control_window_arrives_intact(front: H2Front) -> None:
    size = 5_000_000
    with _client(front) as client:
        response = client.get(f"{front.endpoint_url}/big?size={size}")
    assert response.http_version == "HTTP/2"
    assert response.headers["content-length"] == str(size)
    assert hashlib.sha256(response.content).digest() == hashlib.sha256(_big_body(size)).digest()


def _raw_h2_get(front: H2Front, path: str) -> Tuple[int, bytes]:
    """A bare h2 client keeping the default 64 KiB windows (httpx raises its own to 16 MiB). It reads nothing for
    0.3 s after its request, so the front exhausts them, and then feeds ``h2`` everything readable at once before it
    acknowledges any of it: a front that sent past a window would make ``receive_data`` raise ``FlowControlError``
    (acknowledging frame by frame, as one TLS record per ``recv`` would, could never notice)."""
    context = front.ssl_context()
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", front.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            assert sock.selected_alpn_protocol() == "h2"
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
            conn.initiate_connection()
            stream_id = conn.get_next_available_stream_id()
            conn.send_headers(stream_id, [(":method", "GET"), (":path", path), (":scheme", "https"),
                                          (":authority", f"localhost:{front.port}")], end_stream=True)
            sock.sendall(conn.data_to_send())
            time.sleep(0.3)
            status, body = 0, bytearray()
            while True:
                data = sock.recv(65536)
                assert data, "the front closed the connection"
                while sock.pending() or select.select([sock], [], [], 0)[0]:
                    more = sock.recv(65536)
                    if not more:
                        break
                    data += more
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = int(dict(event.headers)[":status"])
                    elif isinstance(event, h2.events.DataReceived):
                        body += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                    elif isinstance(event, h2.events.StreamReset):
                        raise AssertionError(f"stream reset: {event}")
                    elif isinstance(event, h2.events.StreamEnded):
                        return status, bytes(body)
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)


def test_flow_control_windows_are_respected(front: H2Front) -> None:
    size = 5_000_000
    status, body = _raw_h2_get(front, f"/big?size={size}")
    assert status == 200
    assert hashlib.sha256(body).digest() == hashlib.sha256(_big_body(size)).digest()
    assert front.flow_control_waits > 0  # the front did stop at exhausted windows and resumed on WINDOW_UPDATE


# ----------------------------------------------------------------------------------------------------------- (d)
def test_concurrent_streams_share_one_connection(front: H2Front) -> None:
    with _client(front) as client:
        assert client.get(f"{front.endpoint_url}/echo").http_version == "HTTP/2"  # the connection is up first
        start = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda i: client.get(f"{front.endpoint_url}/slow?i={i}"), range(8)))
        elapsed = time.monotonic() - start
    assert [r.text for r in responses] == [str(i) for i in range(8)]
    assert all(r.http_version == "HTTP/2" for r in responses)
    assert elapsed < 2.0, f"8 streams of 0.5 s took {elapsed:.2f} s: not concurrent"
    assert front.connections_by_protocol == {"h2": 1}
    assert front.requests_by_protocol == {"HTTP/2": 9}


# ----------------------------------------------------------------------------------------------------------- (e)
@pytest.mark.parametrize("mode", ["length", "chunked"])
def test_a_backend_dropping_mid_body_resets_the_stream(front: H2Front, mode: str) -> None:
    with _client(front) as client:
        with client.stream("GET", f"{front.endpoint_url}/drop?mode={mode}") as response:
            assert response.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                response.read()
        assert front.streams_reset == 1
        # only the stream was reset: the connection goes on serving
        assert client.get(f"{front.endpoint_url}/echo").status_code == 200
    assert front.connections_by_protocol == {"h2": 1}


# ----------------------------------------------------------------------------------------------------------- (f)
def test_stop_returns_promptly_with_a_stream_open(backend: _BackendServer) -> None:
    front = H2Front(backend.url, max_lifetime_seconds=60).start()
    ca_file = front.ca_file
    try:
        with _client(front) as client:
            with client.stream("GET", f"{front.endpoint_url}/hang") as response:
                pieces = response.iter_raw()
                assert next(pieces) == b"first;"
                start = time.monotonic()
                front.stop()
                took = time.monotonic() - start
                with pytest.raises(httpx.TransportError):
                    for _ in pieces:
                        pass
    finally:
        front.stop()
    assert took < 2.0, f"stop() took {took:.2f} s"
    assert front.stuck_threads == []
    assert _wait_for(lambda: _front_threads(front) == []), _front_threads(front)
    assert not os.path.exists(ca_file)


def test_the_lifetime_timer_stops_it(backend: _BackendServer) -> None:
    with H2Front(backend.url, max_lifetime_seconds=0.3) as front:
        assert _wait_for(lambda: front.stop_reason == "max lifetime reached")
        assert _wait_for(lambda: _front_threads(front) == [])
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"https://localhost:{front.port}/echo", verify=front.ssl_context(), timeout=TIMEOUT)


# --------------------------------------------------------------------------------------------- protocols and errors
def test_http1_clients_are_refused_unless_http1_is_enabled(front: H2Front, backend: _BackendServer) -> None:
    with _client(front, http2=False) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(f"{front.endpoint_url}/echo")
    assert _wait_for(lambda: front.connections_by_protocol == {"refused": 1})
    assert front.requests_by_protocol == {}

    with H2Front(backend.url, http1=True, max_lifetime_seconds=60) as both:
        with _client(both, http2=False) as client:
            streamed = client.get(f"{both.endpoint_url}/stream")
            big = client.get(f"{both.endpoint_url}/big?size=300000")
            with client.stream("GET", f"{both.endpoint_url}/drop?mode=length") as response:
                with pytest.raises(httpx.RemoteProtocolError):
                    response.read()
        with _client(both) as client:
            assert client.get(f"{both.endpoint_url}/echo").http_version == "HTTP/2"
        assert streamed.http_version == big.http_version == "HTTP/1.1"
        assert streamed.content == b"".join(f"chunk-{i};".encode() for i in range(10))
        assert big.content == _big_body(300_000)
        assert both.requests_by_protocol == {"HTTP/1.1": 3, "HTTP/2": 1}
        assert both.connections_by_protocol["h2"] == 1


def test_a_client_not_trusting_the_ca_fails_the_handshake(front: H2Front) -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{front.endpoint_url}/echo", verify=ssl.create_default_context(), timeout=TIMEOUT)
    assert _wait_for(lambda: front.connections_by_protocol == {"tls-failed": 1})


def test_an_unreachable_backend_is_answered_502() -> None:
    with socket.socket() as placeholder:  # a loopback port with nobody listening
        placeholder.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{placeholder.getsockname()[1]}"
    with H2Front(url, max_lifetime_seconds=60) as front, _client(front) as client:
        response = client.get(f"{front.endpoint_url}/anything")
    assert response.status_code == 502
    assert response.http_version == "HTTP/2"
    assert len(front.backend_errors) == 1 and "ConnectionRefusedError" in front.backend_errors[0]


def test_only_loopback_http_backends_are_accepted() -> None:
    for url in ("https://127.0.0.1:1", "http://example.com:80"):
        with pytest.raises(ValueError):
            H2Front(url)
