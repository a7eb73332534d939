"""The connection pools to upstreams (model servers and peers): httpcore's, on trio, with writes
corked until a read; the URL and timeouts of a request to an upstream; and the one boundary where
httpcore's exceptions become trioswap's.

httpcore sends a request's head and body as separate writes, so a model server wakes up twice
per request and sees two TCP segments. Holding writes until the first read sends them as one.
On a 2-core machine the CPU this saves in the model server is CPU trioswap gets back.

A model's or peer's `timeouts` map onto httpcore and the socket like this:
- `connect`: the TCP connect, name lookup included (httpcore's connect timeout);
- `tlsHandshake`: an https:// upstream's TLS handshake alone, after the connect (Go's
  TLSHandshakeTimeout; httpcore would give the handshake the connect timeout again);
- `responseHeader`: any silence of the upstream once connected (see `upstream_timeouts`);
- `keepalive`: TCP keepalive on upstream sockets: the first probe after that many idle
  seconds, then one every that many; 0 = no probes;
- `idleConn`: how long an idle connection stays in the pool for reuse; 0 = no limit. As in
  llama-swap (Go's http.Transport) it may outlast the server's own keep-alive (llama-server's
  and hypercorn's 5 s): a connection the server has closed is dropped when the pool next
  looks at it (httpcore sees it readable), and a request that meets one being closed just
  then is sent once more (`open_response`);
- `expectContinue`: unused, trioswap never sends `Expect: 100-continue`.
httpcore takes tlsHandshake, keepalive and idleConn per pool rather than per request, so there is
one pool per distinct (idleConn, keepalive, tlsHandshake) in the config, opened at startup:
usually just one.
"""

from __future__ import annotations

import contextvars
import functools
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any, NamedTuple

import httpcore

from trioswap.config import Config, ModelConfig, PeerConfig, Timeouts
from trioswap.errors import (
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from trioswap.pipeline.peers import PeerRoute

# Connections to model servers are not capped: each serves one client connection, so the client
# side already bounds them, and a cap only makes streams past it wait without a status line.
IDLE_CONNECTIONS = 256
CORK_LIMIT = 65536
# What HTTP/1.1 does not allow raw in a request target (h11 refuses it).
_NOT_VCHAR = re.compile(rb"[^\x21-\x7e]")


# Whether the request being sent in this task went out on a connection that served one before.
_reused: contextvars.ContextVar[bool] = contextvars.ContextVar("reused", default=False)


class TLSHandshakeTimeout(httpcore.ConnectTimeout):
    """`timeouts.tlsHandshake` passed (a ConnectTimeout to httpcore, which handles it as one)."""


class _CorkedStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream, tls_timeout: float | None) -> None:
        self._inner = inner
        self._tls_timeout = tls_timeout
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._requests = 0
        self._reading = True  # the next write starts a request

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self._reading:
            self._reading = False
            _reused.set(self._requests > 0)
            self._requests += 1
        if buffer:
            self._pending.append(buffer)
            self._pending_size += len(buffer)
            # A streamed upload goes on as it comes; only small writes wait for company.
            if self._pending_size >= CORK_LIMIT:
                await self._flush(timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._reading = True
        if self._pending:
            await self._flush(timeout)
        return await self._inner.read(max_bytes, timeout)

    async def _flush(self, timeout: float | None) -> None:
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        await self._inner.write(data, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if self._pending:
            await self._flush(timeout)
        # httpcore passes the connect timeout; the handshake has its own.
        try:
            inner = await self._inner.start_tls(ssl_context, server_hostname, self._tls_timeout)
        except httpcore.ConnectTimeout as exc:
            raise TLSHandshakeTimeout() from exc
        return _CorkedStream(inner, self._tls_timeout)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _CorkedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, tls_timeout: float | None) -> None:
        self._inner = httpcore.TrioBackend()
        self._tls_timeout = tls_timeout

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _CorkedStream(stream, self._tls_timeout)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(path, timeout, socket_options)
        return _CorkedStream(stream, self._tls_timeout)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class SocketSettings(NamedTuple):
    """What httpcore sets per pool rather than per request (seconds; None = no bound/off)."""

    idle_conn: float | None
    keepalive: float | None
    tls_handshake: float | None


# The pool that serves an upstream with these timeouts.
PoolFor = Callable[[Timeouts], httpcore.AsyncConnectionPool]


def socket_settings(timeouts: Timeouts) -> SocketSettings:
    return SocketSettings(timeouts.idle_conn, timeouts.keepalive, timeouts.tls_handshake)


def _socket_options(keepalive: float | None) -> list[tuple[int, int, int]]:
    if keepalive is None:
        return []
    seconds = max(1, round(keepalive))
    return [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, seconds),
        (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, seconds),
    ]


def open_upstream_pool(
    idle_conn: float | None = None,
    keepalive: float | None = None,
    tls_handshake: float | None = None,
) -> httpcore.AsyncConnectionPool:
    return httpcore.AsyncConnectionPool(
        max_connections=None,
        max_keepalive_connections=IDLE_CONNECTIONS,
        keepalive_expiry=idle_conn,
        socket_options=_socket_options(keepalive),
        network_backend=_CorkedBackend(tls_handshake),
    )


@asynccontextmanager
async def open_upstream_pools(config: Config) -> AsyncIterator[PoolFor]:
    """A pool for each distinct socket setting among the config's models, peers and Ollama."""
    everyone = [m.timeouts for m in config.models.values()]
    everyone += [p.timeouts for p in config.peers.values()]
    if config.ollama is not None:
        everyone.append(config.ollama.timeouts)
    async with AsyncExitStack() as stack:
        pools: dict[SocketSettings, httpcore.AsyncConnectionPool] = {}
        for timeouts in everyone:
            settings = socket_settings(timeouts)
            if settings not in pools:
                pools[settings] = await stack.enter_async_context(open_upstream_pool(*settings))
        yield lambda timeouts: pools[socket_settings(timeouts)]


async def close_idle_connections(pool: httpcore.AsyncConnectionPool, base_url: str) -> None:
    """Close pooled keep-alive connections to one model server before it is stopped: servers
    such as llama-server wait for open connections (up to their keep-alive timeout) on
    SIGTERM, which would make every swap that much slower."""
    origin = httpcore.URL(base_url).origin
    for connection in pool.connections:
        if connection.is_idle() and connection.can_handle_request(origin):
            await connection.aclose()


async def open_response(
    stack: AsyncExitStack,
    pool: httpcore.AsyncConnectionPool,
    replayable: bool,
    **request: Any,
) -> httpcore.Response:
    """Send a request (`pool.stream`'s arguments) and return its response once the head is in;
    `stack` closes it.

    A server may close an idle keep-alive connection just as the pool hands it to a request; the
    request then fails before any answer, having never been seen. Such a request is sent once
    more on a new connection, as nginx and Go's HTTP client do, when its body can be sent again
    (bytes, not a stream being passed through)."""
    _reused.set(False)
    try:
        return await stack.enter_async_context(pool.stream(**request))
    except (httpcore.RemoteProtocolError, httpcore.ReadError, httpcore.WriteError):
        if not (replayable and _reused.get()):
            raise
        return await stack.enter_async_context(pool.stream(**request))


def upstream_timeouts(upstream: ModelConfig | PeerConfig) -> dict[str, float | None]:
    """httpcore's timeouts for a model server or peer: `timeouts.connect` for connecting, and
    `timeouts.responseHeader` for any silence of the upstream after that (waiting for its
    response head, between body chunks, or for it to take our request), so that a hung server
    cannot hold a request forever. None is no bound."""
    silence = upstream.timeouts.response_header
    return {"connect": upstream.timeouts.connect, "read": silence, "write": silence, "pool": None}


@functools.lru_cache(maxsize=1024)
def _origin(proxy: str) -> tuple[bytes, bytes, int | None, bytes]:
    url = httpcore.URL(proxy)
    return url.scheme, url.host, url.port, url.target.rstrip(b"/")


def _percent_encode(match: re.Match[bytes]) -> bytes:
    return b"%%%02X" % match[0][0]


def upstream_url(proxy: str, path: bytes, query: bytes) -> httpcore.URL:
    """The URL of `path?query` on a model server, the path and query as the client sent them;
    bytes HTTP/1.1 does not allow raw in a target (non-ASCII, space, controls: HTTP/2 clients
    can send them) percent-encoded."""
    scheme, host, port, base = _origin(proxy)
    target = base + path + b"?" + query if query else base + path
    target = _NOT_VCHAR.sub(_percent_encode, target)
    return httpcore.URL(scheme=scheme, host=host, port=port, target=target)


HTTPCORE_ERRORS = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
)
# What may fail on the way to a model server, besides its answer: for trioswap's own requests
# to it (token counts, summaries), which fall back rather than fail the client's.
TRANSPORT_ERRORS = (*HTTPCORE_ERRORS, UpstreamError)


@contextmanager
def upstream_errors(target: ModelConfig | PeerRoute) -> Iterator[None]:
    """The one place httpcore's exceptions become trioswap's, as specific as httpcore's (as
    httpx's `map_httpcore_exceptions` does), naming the model server or peer and the config key
    of a timeout that passed."""
    try:
        yield
    except HTTPCORE_ERRORS as exc:
        raise _translate(target, exc) from exc


def _translate(target: ModelConfig | PeerRoute, exc: Exception) -> UpstreamError:
    model, who, key, timeouts = _describe(target)
    if isinstance(exc, TLSHandshakeTimeout):
        return UpstreamTimeout(
            model,
            f"the TLS handshake with {who} took longer than {timeouts.tls_handshake:g} s "
            f"({key}.tlsHandshake)",
        )
    if isinstance(exc, httpcore.ConnectTimeout):
        return UpstreamTimeout(
            model, f"connecting to {who} took longer than {timeouts.connect:g} s ({key}.connect)"
        )
    if isinstance(exc, (httpcore.ReadTimeout, httpcore.WriteTimeout)):
        return UpstreamTimeout(
            model,
            f"{who} was silent for {timeouts.response_header:g} s ({key}.responseHeader: raise "
            "it if it needs longer, 0 = no bound)",
        )
    if isinstance(exc, httpcore.TimeoutException):
        return UpstreamTimeout(model, _reason(exc))
    if isinstance(exc, (httpcore.ConnectError, httpcore.UnsupportedProtocol, httpcore.ProxyError)):
        return UpstreamConnectError(model, f"cannot connect to {who}: {_cause(exc)}")
    if isinstance(exc, httpcore.NetworkError):
        return UpstreamDisconnected(model, f"the connection to {who} broke: {_reason(exc)}")
    if isinstance(exc, httpcore.RemoteProtocolError):
        return UpstreamProtocolError(model, f"{who}: {_reason(exc)}")
    return UpstreamProtocolError(model, f"the request cannot be forwarded: {_reason(exc)}")


def _describe(target: ModelConfig | PeerRoute) -> tuple[str, str, str, Timeouts]:
    """(the model errors name, how they name the upstream, where its timeouts are set, them)."""
    if isinstance(target, PeerRoute):
        peer = target.peer
        return (
            target.name,
            f"peer {peer.id!r} ({peer.proxy})",
            f"peers.{peer.id}.timeouts",
            peer.timeouts,
        )
    return (
        target.id,
        f"the model server at {target.proxy}",
        f"models.{target.id}.timeouts",
        target.timeouts,
    )


def _cause(exc: Exception) -> str:
    """Why a connect failed, as the OS said it ("connection refused"), found under trio's
    "all attempts to connect … failed"."""
    error: BaseException | None = exc
    while error is not None:
        if isinstance(error, OSError) and error.strerror:
            return error.strerror.lower()
        if isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        else:
            error = error.__cause__ or error.__context__
    return _reason(exc)


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def response_header(response: httpcore.Response, name: bytes) -> bytes:
    """A header of an upstream's response (`name` in lower case), or b""."""
    for key, value in response.headers:
        if key.lower() == name:
            return value
    return b""


def is_event_stream(response: httpcore.Response) -> bool:
    # Media types are case-insensitive (RFC 9110, 8.3.1).
    return response_header(response, b"content-type").lower().startswith(b"text/event-stream")


def require_event_stream(response: httpcore.Response, model: str) -> None:
    """After progress went out as events, only an event stream can continue the response."""
    if not is_event_stream(response):
        shown = response_header(response, b"content-type").decode(errors="replace")
        raise UpstreamProtocolError(model, f"answered a streaming request with {shown!r}")
