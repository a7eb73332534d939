"""The connection pool to model servers: httpcore's, on trio, with writes corked until a read;
the URL and timeouts of a request to a model server; and the one boundary where httpcore's
exceptions become trioswap's.

httpcore sends a request's head and body as separate writes, so a model server wakes up twice
per request and sees two TCP segments. Holding writes until the first read sends them as one.
On a 2-core machine the CPU this saves in the model server is CPU trioswap gets back.
"""

from __future__ import annotations

import contextvars
import functools
import re
import ssl
from collections.abc import Iterable, Iterator
from contextlib import AsyncExitStack, contextmanager
from typing import Any

import httpcore

from trioswap.config import ModelConfig
from trioswap.errors import (
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamProtocolError,
    UpstreamTimeout,
)

# Connections to model servers are not capped: each serves one client connection, so the client
# side already bounds them, and a cap only makes streams past it wait without a status line.
IDLE_CONNECTIONS = 256
# Below the 5 s after which llama-server (cpp-httplib) and hypercorn close an idle connection, so
# a pooled connection is rarely reused just as its server closes it.
KEEPALIVE_EXPIRY = 4.0
CORK_LIMIT = 65536
# What HTTP/1.1 does not allow raw in a request target (h11 refuses it).
_NOT_VCHAR = re.compile(rb"[^\x21-\x7e]")


# Whether the request being sent in this task went out on a connection that served one before.
_reused: contextvars.ContextVar[bool] = contextvars.ContextVar("reused", default=False)


class _CorkedStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
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
        return _CorkedStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _CorkedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.TrioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _CorkedStream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(path, timeout, socket_options)
        return _CorkedStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def open_upstream_pool() -> httpcore.AsyncConnectionPool:
    return httpcore.AsyncConnectionPool(
        max_connections=None,
        max_keepalive_connections=IDLE_CONNECTIONS,
        keepalive_expiry=KEEPALIVE_EXPIRY,
        network_backend=_CorkedBackend(),
    )


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


def upstream_timeouts(model: ModelConfig) -> dict[str, float | None]:
    """httpcore's timeouts for a model: `timeouts.connect` for connecting, and
    `timeouts.responseHeader` for any silence of the model server after that (waiting for its
    response head, between body chunks, or for it to take our request), so that a hung server
    cannot hold a request forever. None is no bound."""
    silence = model.timeouts.response_header
    return {"connect": model.timeouts.connect, "read": silence, "write": silence, "pool": None}


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


@contextmanager
def upstream_errors(model: ModelConfig) -> Iterator[None]:
    """The one place httpcore's exceptions become trioswap's, as specific as httpcore's (as
    httpx's `map_httpcore_exceptions` does)."""
    try:
        yield
    except httpcore.ConnectTimeout as exc:
        raise UpstreamTimeout(
            model.id,
            f"connecting to {model.proxy} took longer than {model.timeouts.connect:g} s "
            "(timeouts.connect)",
        ) from exc
    except (httpcore.ReadTimeout, httpcore.WriteTimeout) as exc:
        raise UpstreamTimeout(
            model.id,
            f"the model server was silent for {model.timeouts.response_header:g} s "
            "(timeouts.responseHeader: raise it for a model that needs longer, 0 = no bound)",
        ) from exc
    except httpcore.TimeoutException as exc:
        raise UpstreamTimeout(model.id, _reason(exc)) from exc
    except (httpcore.ConnectError, httpcore.UnsupportedProtocol, httpcore.ProxyError) as exc:
        raise UpstreamConnectError(
            model.id, f"cannot connect to {model.proxy}: {_reason(exc)}"
        ) from exc
    except httpcore.NetworkError as exc:
        raise UpstreamDisconnected(model.id, f"the connection broke: {_reason(exc)}") from exc
    except httpcore.RemoteProtocolError as exc:
        raise UpstreamProtocolError(model.id, _reason(exc)) from exc
    except httpcore.LocalProtocolError as exc:
        raise UpstreamProtocolError(
            model.id, f"the request cannot be forwarded: {_reason(exc)}"
        ) from exc


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
