"""SubscribeToShard over HTTP/2: botocore builds, signs and parses the call; httpx carries it.

AWS documents ``SubscribeToShard`` over HTTP/2. botocore's transport (urllib3) speaks HTTP/1.1 only, which KCL's
maintainers call unsupported and liable to break (amazon-kinesis-client#434). So the one thing replaced is the
transport: a handler on botocore's ``before-send`` event (botocore's documented hook for sending a prepared request
another way: a handler that returns a response replaces botocore's own send) sends the already signed request with
httpx (``http2=True``) and hands botocore back an ``AWSResponse`` whose body streams the response as it arrives.
Everything else stays botocore's: endpoint resolution, SigV4 signing with refreshing credentials, the
``initial-response``, the event-stream framing and CRC checks, event parsing with the client's own parsers (so
records have exactly the shape GetRecords gives them), and error responses turned into ``ClientError``s.

Which protocol: ``https://`` endpoints (AWS) negotiate HTTP/2 by ALPN; plain ``http://`` endpoints (emulators, the
project's test servers) use HTTP/1.1, since httpx has no h2c upgrade and emulators speak HTTP/1.1. **Each subscription
has its own connection** (its own httpx client; the TLS settings are built once and shared): ending a subscription
early must end it at Kinesis, and httpcore cannot reset one HTTP/2 stream of a shared connection (closing a response
sends no RST_STREAM, and the frames Kinesis keeps pushing for it would use up the connection's flow-control window
and stall every other subscription on it). So ending one shuts its connection down, from any thread: the read in
progress wakes at once, and Kinesis sees the subscription end. Transport errors come back as botocore's own exception
types, so the one retry policy (``throttling.py``) classifies them as it does for every other call.
"""
from __future__ import annotations

import socket
import ssl
import threading
from typing import Any, Iterator

import botocore.session
import httpx
from botocore.awsrequest import AWSResponse
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
    ResponseStreamingError,
)

SUBSCRIBE_EVENT = "before-send.kinesis.SubscribeToShard"
HANDLER_ID = "source-kinesis-subscribe-over-http2"
# Headers botocore sets that HTTP/2 forbids or httpx computes itself.
DROPPED_HEADERS = {"content-length", "connection", "transfer-encoding", "expect", "host"}


class _StreamingBody:
    """The ``raw`` botocore reads an event stream from (``stream()``, ``close()``): httpx's chunks as they arrive,
    over a connection of its own. ``close()`` may come from any thread (a reader ending its subscription while its
    thread waits for the next event): it shuts the connection's socket down, which wakes that read and ends the
    subscription at the server; the response and its client are closed too once no read is in progress."""

    def __init__(self, response: httpx.Response, client: httpx.Client, url: str) -> None:
        self._response = response
        self._client = client
        self._url = url
        self._lock = threading.Lock()
        self._reading = False
        self._ended = False

    def stream(self, **_: Any) -> Iterator[bytes]:
        chunks = self._response.iter_raw()
        try:
            while True:
                with self._lock:
                    if self._ended:
                        return
                    self._reading = True
                try:
                    chunk = next(chunks, None)
                finally:
                    with self._lock:
                        self._reading = False
                if chunk is None or self._ended:
                    return
                yield chunk
        except httpx.TimeoutException as exc:
            raise ReadTimeoutError(endpoint_url=self._url, error=exc) from None
        except httpx.HTTPError as exc:
            raise ResponseStreamingError(error=exc) from None
        finally:
            self.close()

    def close(self) -> None:
        with self._lock:
            self._ended = True
            reading = self._reading
        self._shutdown()
        if not reading:  # the reading thread closes them when its read returns (stream()'s finally)
            self._response.close()
            self._client.close()

    def _shutdown(self) -> None:
        network = self._response.extensions.get("network_stream")
        sock = network.get_extra_info("socket") if network is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Http2Sender:
    """A ``before-send`` handler sending each SubscribeToShard on a connection of its own (thread-safe)."""

    def __init__(self, *, connect_timeout: float, read_timeout: float, verify: Any = True) -> None:
        self._timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=connect_timeout, pool=connect_timeout)
        self._verify = verify  # an SSLContext (built once: loading a CA bundle takes milliseconds) or True
        self._lock = threading.Lock()
        self.protocols: dict = {}  # http_version -> responses (tests and the benchmark read it)

    def __call__(self, request: Any, **_: Any) -> AWSResponse:
        url = request.url
        headers = {}
        for name, value in request.headers.items():
            if name.lower() in DROPPED_HEADERS:
                continue
            headers[name] = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        body = request.body
        if hasattr(body, "read"):
            body = body.read()
        http = httpx.Client(http2=True, verify=self._verify, timeout=self._timeout)
        try:
            response = http.send(http.build_request(request.method, url, headers=headers, content=body or b""), stream=True)
        except httpx.ConnectTimeout as exc:
            http.close()
            raise ConnectTimeoutError(endpoint_url=url, error=exc) from None
        except httpx.ConnectError as exc:
            http.close()
            raise EndpointConnectionError(endpoint_url=url, error=exc) from None
        except httpx.TimeoutException as exc:
            http.close()
            raise ReadTimeoutError(endpoint_url=url, error=exc) from None
        except httpx.HTTPError:
            http.close()
            raise ConnectionClosedError(endpoint_url=url) from None
        with self._lock:
            self.protocols[response.http_version] = self.protocols.get(response.http_version, 0) + 1
        return AWSResponse(url, response.status_code, dict(response.headers.items()), _StreamingBody(response, http, url))

    def close(self) -> None:
        """Nothing shared to release (each subscription's connection closes with it)."""


def default_verify() -> Any:
    """What botocore would verify TLS with: the ``ca_bundle`` of the environment / profile (AWS_CA_BUNDLE) as an SSL
    context, else True (httpx's default trust store: certifi, as botocore's)."""
    bundle = botocore.session.get_session().get_config_variable("ca_bundle")
    return ssl.create_default_context(cafile=bundle) if bundle else True


def install(client: Any, sender: Http2Sender) -> None:
    """Send ``client``'s SubscribeToShard calls with ``sender`` (idempotent: one handler per client)."""
    client.meta.events.register(SUBSCRIBE_EVENT, sender, unique_id=HANDLER_ID)
