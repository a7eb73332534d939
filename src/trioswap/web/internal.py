"""The control plane behind the front door: the Quart app (control API, UI, websockets, the
`/upstream` websocket relay) served by hypercorn on an abstract Unix socket (a random name, no
file: nothing is left behind when trioswap is killed), and the relay that passes a client's
request to it and its response back, bytes as they come.

The app is built, and hypercorn started, when the first request for the control plane comes, so
that inference requests and `/health` are answered while Quart and the UI are not even imported;
that request waits for it (`connect`).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import httptools
import trio

from trioswap.errors import TrioswapError
from trioswap.protocols.errors import Family, error_bytes, new_request_id, status_of
from trioswap.web.http1 import READ_SIZE, FrontBody, Http1Connection, Request, write_simple

if TYPE_CHECKING:
    from trioswap.web.asgi import ASGIApp

log = logging.getLogger("trioswap.http")


class Internal:
    def __init__(self, build_app: Callable[[], ASGIApp], graceful_timeout: float) -> None:
        self._build_app = build_app
        self._graceful_timeout = graceful_timeout
        self._wanted = trio.Event()
        self._ready = trio.Event()
        self._address = b""

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the control plane until cancelled. It is built when the first request for it
        comes (`connect`), its modules imported in a worker thread: importing Quart and the UI
        takes a few hundred milliseconds that the event loop, serving inference, cannot give."""
        task_status.started()
        await self._wanted.wait()
        await trio.to_thread.run_sync(_import_control_plane)
        from hypercorn.config import Config as HypercornConfig
        from hypercorn.trio import serve

        app = self._build_app()
        address = f"\0trioswap-{os.getpid()}-{secrets.token_hex(8)}".encode()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(address)
        config = HypercornConfig()
        config.bind = [f"fd://{listener.detach()}"]
        config.accesslog = None
        config.errorlog = log
        config.keep_alive_timeout = 75
        config.include_server_header = False
        config.graceful_timeout = self._graceful_timeout
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, app, config)
            self._address = address
            self._ready.set()

    async def connect(self) -> trio.SocketStream:
        self._wanted.set()
        await self._ready.wait()
        return await trio.open_unix_socket(self._address)


def _import_control_plane() -> None:
    import hypercorn.trio  # noqa: F401
    import quart_trio  # noqa: F401

    import trioswap.web.control
    import trioswap.web.ui
    import trioswap.web.upstream_websocket  # noqa: F401


def _head(request: Request) -> bytes:
    lines = [
        b"%s %s HTTP/%s\r\n" % (request.method.encode(), request.target, request.version.encode())
    ]
    for name, value in request.headers:
        # The front answers `Expect: 100-continue` itself, when the relay first reads the body.
        if name != b"expect":
            lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


class _ResponseEnd:
    """Finds where the control plane's response ends, for a kept-alive connection to it."""

    __slots__ = ("complete", "keep_alive", "parser")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.complete = False
        self.keep_alive = False

    def on_message_complete(self) -> None:
        if 100 <= self.parser.get_status_code() < 200:
            return  # an interim answer (the upgrades' 101 never comes here): the answer follows
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()


async def relay(
    internal: Internal,
    conn: Http1Connection,
    request: Request,
    pool: list[trio.SocketStream],
    body_limit: int,
    body_timeout: float,
) -> bool:
    """Pass `request` to the control plane and its response back; whether the client's
    connection may carry another request. `pool` holds this client connection's one kept-alive
    connection to the control plane."""
    upstream = pool.pop() if pool else await internal.connect()
    head = _head(request)
    client = conn.stream
    reusable = False
    answered = False
    try:
        async with trio.open_nursery() as nursery:
            conn.on_gone = nursery.cancel_scope.cancel
            if request.upgrade:
                await _pipe(nursery, conn, upstream, head + (conn.upgraded or b""))
                return False
            nursery.start_soon(_send_body, upstream, conn, request, head, body_limit, body_timeout)
            end = _ResponseEnd()
            head_only = request.method == "HEAD"
            seen = b""  # of an answer to HEAD, which has no body: the end of its head
            while not end.complete:
                data = await upstream.receive_some(READ_SIZE)
                if not data:
                    break  # a response delimited by the close of the connection
                if head_only:
                    seen = seen[-3:] + data
                    end.complete = b"\r\n\r\n" in seen
                else:
                    end.parser.feed_data(data)
                answered = True
                await client.send_all(data)
            reusable = end.complete and end.keep_alive and not head_only
            nursery.cancel_scope.cancel()
    except* (trio.BrokenResourceError, trio.ClosedResourceError, httptools.HttpParserError):
        reusable = False
    except* TrioswapError as group:
        # The body was refused (too large, stalled, malformed) before the control plane answered.
        reusable = False
        if not answered:
            error = group.exceptions[0]
            request_id = new_request_id()
            body = error_bytes(Family.OPENAI, error, request_id)  # type: ignore[arg-type]
            await write_simple(client, status_of(error), body)
    finally:
        conn.on_gone = None
        if reusable and request.body_done:
            pool.append(upstream)
        else:
            with trio.CancelScope(shield=True):
                await upstream.aclose()
    return reusable and conn.reusable(request)


async def _send_body(
    upstream: trio.SocketStream,
    conn: Http1Connection,
    request: Request,
    head: bytes,
    limit: int,
    body_timeout: float,
) -> None:
    if not request.framing:
        await upstream.send_all(head)
        return
    chunked = request.framing[0][0] == b"transfer-encoding"
    pending = head
    async for piece in FrontBody(conn, request, limit, body_timeout):
        await upstream.send_all(
            pending + (b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
        )
        pending = b""
    await upstream.send_all(pending + (b"0\r\n\r\n" if chunked else b""))


async def _pipe(
    nursery: trio.Nursery, conn: Http1Connection, upstream: trio.SocketStream, first: bytes
) -> None:
    """An upgraded connection (a websocket): bytes both ways until either side ends."""
    await upstream.send_all(first)

    async def copy(source: trio.SocketStream, target: trio.SocketStream) -> None:
        try:
            while data := await source.receive_some(READ_SIZE):
                await target.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        nursery.cancel_scope.cancel()

    nursery.start_soon(copy, conn.stream, upstream)
    nursery.start_soon(copy, upstream, conn.stream)
