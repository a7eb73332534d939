"""The connection pools to upstreams (model servers and peers: trioswap's own client,
`wire.ConnectionPool`); the URL and timeouts of a request to an upstream; and the one boundary
where the pool's exceptions (`transport_errors`) become trioswap's.

A model's or peer's `timeouts` map onto the pool and the socket like this:
- `connect`: the TCP connect, name lookup included;
- `tlsHandshake`: an https:// upstream's TLS handshake alone, after the connect (Go's
  TLSHandshakeTimeout);
- `responseHeader`: any silence of the upstream once connected (see `upstream_timeouts`);
- `keepalive`: TCP keepalive on upstream sockets: the first probe after that many idle
  seconds, then one every that many; 0 = no probes;
- `idleConn`: how long an idle connection stays in the pool for reuse; 0 = no limit. As in
  llama-swap (Go's http.Transport) it may outlast the server's own keep-alive (llama-server's
  and hypercorn's 5 s): a connection the server has closed is dropped when the pool next
  looks at it (it is readable), and a request that meets one being closed just then is sent
  once more when its body can be (see `wire`);
- `expectContinue`: unused, trioswap never sends `Expect: 100-continue`.
tlsHandshake, keepalive and idleConn are the pool's rather than the request's, so there is one
pool per distinct (idleConn, keepalive, tlsHandshake) in the config, opened at startup: usually
just one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any, NamedTuple

from trioswap.config import Config, ModelConfig, PeerConfig, Timeouts
from trioswap.errors import (
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from trioswap.pipeline.peers import PeerRoute
from trioswap.pipeline.transport_errors import (
    ConnectError,
    ConnectTimeout,
    NetworkError,
    ReadTimeout,
    RemoteProtocolError,
    TimeoutException,
    TLSHandshakeTimeout,
    TransportError,
    UnsupportedProtocol,
    WriteTimeout,
)
from trioswap.pipeline.wire import URL, ConnectionPool, Response, origin_of

# Connections to model servers are not capped: each serves one client connection, so the client
# side already bounds them, and a cap only makes streams past it wait without a status line.
IDLE_CONNECTIONS = 256
# What HTTP/1.1 does not allow raw in a request target (h11 refuses it).
_NOT_VCHAR = re.compile(rb"[^\x21-\x7e]")


class SocketSettings(NamedTuple):
    """What is set per pool rather than per request (seconds; None = no bound/off)."""

    idle_conn: float | None
    keepalive: float | None
    tls_handshake: float | None


# The pool that serves an upstream with these timeouts.
PoolFor = Callable[[Timeouts], ConnectionPool]


def socket_settings(timeouts: Timeouts) -> SocketSettings:
    return SocketSettings(timeouts.idle_conn, timeouts.keepalive, timeouts.tls_handshake)


def open_upstream_pool(
    idle_conn: float | None = None,
    keepalive: float | None = None,
    tls_handshake: float | None = None,
) -> ConnectionPool:
    return ConnectionPool(
        idle_conn=idle_conn,
        keepalive=keepalive,
        tls_handshake=tls_handshake,
        max_idle=IDLE_CONNECTIONS,
    )


@asynccontextmanager
async def open_upstream_pools(config: Config) -> AsyncIterator[PoolFor]:
    """A pool for each distinct socket setting among the config's models, peers and Ollama."""
    everyone = [m.timeouts for m in config.models.values()]
    everyone += [p.timeouts for p in config.peers.values()]
    if config.ollama is not None:
        everyone.append(config.ollama.timeouts)
    async with AsyncExitStack() as stack:
        pools: dict[SocketSettings, ConnectionPool] = {}
        for timeouts in everyone:
            settings = socket_settings(timeouts)
            if settings not in pools:
                pools[settings] = await stack.enter_async_context(open_upstream_pool(*settings))
        yield lambda timeouts: pools[socket_settings(timeouts)]


async def close_idle_connections(pool: ConnectionPool, base_url: str) -> None:
    """Close pooled keep-alive connections to one model server before it is stopped: servers
    such as llama-server wait for open connections (up to their keep-alive timeout) on
    SIGTERM, which would make every swap that much slower."""
    await pool.close_idle(origin_of(URL.parse(base_url)))


async def open_response(stack: AsyncExitStack, pool: ConnectionPool, **request: Any) -> Response:
    """Send a request (`pool.stream`'s arguments) and return its response once the head is in;
    `stack` closes it."""
    return await stack.enter_async_context(pool.stream(**request))


def upstream_timeouts(upstream: ModelConfig | PeerConfig) -> dict[str, float | None]:
    """The pool's timeouts for a model server or peer: `timeouts.connect` for connecting, and
    `timeouts.responseHeader` for any silence of the upstream after that (waiting for its
    response head, between body chunks, or for it to take our request), so that a hung server
    cannot hold a request forever. None is no bound."""
    silence = upstream.timeouts.response_header
    return {"connect": upstream.timeouts.connect, "read": silence, "write": silence, "pool": None}


@functools.lru_cache(maxsize=1024)
def _origin(proxy: str) -> tuple[bytes, bytes, int | None, bytes]:
    url = URL.parse(proxy)
    return url.scheme, url.host, url.port, url.target.rstrip(b"/")


def _percent_encode(match: re.Match[bytes]) -> bytes:
    return b"%%%02X" % match[0][0]


def upstream_url(proxy: str, path: bytes, query: bytes) -> URL:
    """The URL of `path?query` on a model server, the path and query as the client sent them;
    bytes HTTP/1.1 does not allow raw in a target (non-ASCII, space, controls: HTTP/2 clients
    can send them) percent-encoded."""
    scheme, host, port, base = _origin(proxy)
    target = base + path + b"?" + query if query else base + path
    target = _NOT_VCHAR.sub(_percent_encode, target)
    return URL(scheme, host, port, target)


# What may fail on the way to a model server, besides its answer: for trioswap's own requests
# to it (token counts, summaries), which fall back rather than fail the client's.
TRANSPORT_ERRORS = (TransportError, UpstreamError)


@contextmanager
def upstream_errors(target: ModelConfig | PeerRoute) -> Iterator[None]:
    """The one place the pool's exceptions (`transport_errors`) become trioswap's, as specific
    as they are (as httpx's `map_httpcore_exceptions` does), naming the model server or peer and
    the config key of a timeout that passed."""
    try:
        yield
    except TransportError as exc:
        raise _translate(target, exc) from exc


def _translate(target: ModelConfig | PeerRoute, exc: TransportError) -> UpstreamError:
    model, who, key, timeouts = _describe(target)
    if isinstance(exc, TLSHandshakeTimeout):
        return UpstreamTimeout(
            model,
            f"the TLS handshake with {who} took longer than {timeouts.tls_handshake:g} s "
            f"({key}.tlsHandshake)",
        )
    if isinstance(exc, ConnectTimeout):
        return UpstreamTimeout(
            model, f"connecting to {who} took longer than {timeouts.connect:g} s ({key}.connect)"
        )
    if isinstance(exc, (ReadTimeout, WriteTimeout)):
        return UpstreamTimeout(
            model,
            f"{who} was silent for {timeouts.response_header:g} s ({key}.responseHeader: raise "
            "it if it needs longer, 0 = no bound)",
        )
    if isinstance(exc, TimeoutException):
        return UpstreamTimeout(model, _reason(exc))
    if isinstance(exc, (ConnectError, UnsupportedProtocol)):
        return UpstreamConnectError(model, f"cannot connect to {who}: {_cause(exc)}")
    if isinstance(exc, NetworkError):
        return UpstreamDisconnected(model, f"the connection to {who} broke: {_reason(exc)}")
    if isinstance(exc, RemoteProtocolError):
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


def response_header(response: Response, name: bytes) -> bytes:
    """A header of an upstream's response (`name` in lower case), or b""."""
    for key, value in response.headers:
        if key.lower() == name:
            return value
    return b""


def is_event_stream(response: Response) -> bool:
    # Media types are case-insensitive (RFC 9110, 8.3.1).
    return response_header(response, b"content-type").lower().startswith(b"text/event-stream")


def require_event_stream(response: Response, model: str) -> None:
    """After progress went out as events, only an event stream can continue the response."""
    if not is_event_stream(response):
        shown = response_header(response, b"content-type").decode(errors="replace")
        raise UpstreamProtocolError(model, f"answered a streaming request with {shown!r}")
