"""SubscribeToShard over HTTP/2: botocore builds, signs and parses the call; httpx carries it.

AWS documents ``SubscribeToShard`` over HTTP/2. botocore's transport (urllib3) speaks HTTP/1.1 only, which KCL's
maintainers call unsupported and liable to break (amazon-kinesis-client#434). So the one thing replaced is the
transport: a handler on botocore's ``before-send`` event (botocore's documented hook for sending a prepared request
another way: a handler that returns a response replaces botocore's own send) sends the already signed request with
httpx (``http2=True``) and hands botocore back an ``AWSResponse`` whose body streams the response as it arrives.
Everything else stays botocore's: endpoint resolution, SigV4 signing with refreshing credentials, the
``initial-response``, the event-stream framing and CRC checks, event parsing with the client's own parsers (so
records have exactly the shape GetRecords gives them), and error responses turned into ``ClientError``s.

Which protocol: ``https://`` endpoints (AWS) negotiate HTTP/2 by ALPN, every subscription of the process multiplexed
as a stream of one connection per endpoint; plain ``http://`` endpoints (emulators, the project's test servers) use
HTTP/1.1, since httpx has no h2c upgrade and emulators speak HTTP/1.1. Transport errors come back as botocore's own
exception types, so the one retry policy (``throttling.py``) classifies them as it does for every other call.
"""
from __future__ import annotations

import socket
import ssl
import threading
from typing import Any, Iterator, Optional

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
    """The ``raw`` botocore reads an event stream from (``stream()``, ``close()``): httpx's chunks as they arrive.

    ``close()`` may come from another thread than the one reading (a reader ending its subscription): over HTTP/1.1
    the connection is one subscription's, so it is shut down, which wakes the blocked read at once and tells the
    server the subscription ended; over HTTP/2 the connection is shared by every subscription and httpcore cannot
    reset one stream, so the reading thread is only told to stop, and closes the stream at its next chunk (Kinesis
    sends an event at least every few seconds, and a new subscription of the same consumer takes the shard over).
    """

    def __init__(self, response: httpx.Response, url: str) -> None:
        self._response = response
        self._url = url
        self._reader: Optional[int] = None  # the thread iterating stream(), while it does
        self._abandoned = False

    def stream(self, **_: Any) -> Iterator[bytes]:
        self._reader = threading.get_ident()
        try:
            for chunk in self._response.iter_raw():
                if self._abandoned:
                    return
                yield chunk
        except httpx.TimeoutException as exc:
            raise ReadTimeoutError(endpoint_url=self._url, error=exc) from None
        except httpx.HTTPError as exc:
            raise ResponseStreamingError(error=exc) from None
        finally:
            self._reader = None
            self._response.close()

    def close(self) -> None:
        reader = self._reader
        if reader is None or reader == threading.get_ident():
            self._response.close()
            return
        self._abandoned = True
        if self._response.http_version == "HTTP/1.1":
            network = self._response.extensions.get("network_stream")
            sock = network.get_extra_info("socket") if network is not None else None
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class Http2Sender:
    """A ``before-send`` handler sending SubscribeToShard through one shared httpx client (thread-safe)."""

    def __init__(self, *, connect_timeout: float, read_timeout: float, verify: Any = True) -> None:
        self._timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=connect_timeout, pool=connect_timeout)
        self._verify = verify
        self._client: Optional[httpx.Client] = None
        self._lock = threading.Lock()
        self.protocols: dict = {}  # http_version -> responses (tests and the benchmark read it)

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(http2=True, verify=self._verify, timeout=self._timeout)
            return self._client

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
        http = self._http()
        try:
            response = http.send(http.build_request(request.method, url, headers=headers, content=body or b""), stream=True)
        except httpx.ConnectTimeout as exc:
            raise ConnectTimeoutError(endpoint_url=url, error=exc) from None
        except httpx.ConnectError as exc:
            raise EndpointConnectionError(endpoint_url=url, error=exc) from None
        except httpx.TimeoutException as exc:
            raise ReadTimeoutError(endpoint_url=url, error=exc) from None
        except httpx.HTTPError:
            raise ConnectionClosedError(endpoint_url=url) from None
        with self._lock:
            self.protocols[response.http_version] = self.protocols.get(response.http_version, 0) + 1
        return AWSResponse(url, response.status_code, dict(response.headers.items()), _StreamingBody(response, url))

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def default_verify() -> Any:
    """What botocore would verify TLS with: the ``ca_bundle`` of the environment / profile (AWS_CA_BUNDLE) as an SSL
    context, else True (httpx's default trust store: certifi, as botocore's)."""
    bundle = botocore.session.get_session().get_config_variable("ca_bundle")
    return ssl.create_default_context(cafile=bundle) if bundle else True


def install(client: Any, sender: Http2Sender) -> None:
    """Send ``client``'s SubscribeToShard calls with ``sender`` (idempotent: one handler per client)."""
    client.meta.events.register(SUBSCRIBE_EVENT, sender, unique_id=HANDLER_ID)
