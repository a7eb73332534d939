"""The connection pool to model servers: httpcore's, on trio, with writes corked until a read.

httpcore sends a request's head and body as separate writes, so a model server wakes up twice
per request and sees two TCP segments. Holding writes until the first read sends them as one.
On a 2-core machine the CPU this saves in the model server is CPU trioswap gets back.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

import httpcore

UPSTREAM_CONNECTIONS = 256
KEEPALIVE_EXPIRY = 30.0
CORK_LIMIT = 65536


class _CorkedStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._pending: list[bytes] = []
        self._pending_size = 0

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self._pending.append(buffer)
            self._pending_size += len(buffer)
            # A streamed upload goes on as it comes; only small writes wait for company.
            if self._pending_size >= CORK_LIMIT:
                await self._flush(timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
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
        max_connections=UPSTREAM_CONNECTIONS,
        max_keepalive_connections=UPSTREAM_CONNECTIONS,
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
