"""ASGI pieces of the control plane (the Quart app behind the front door, see `internal.py`):
the message types, an answer to a request refused before its body is read, and the shield that
lets hypercorn finish a response quart-trio would cancel."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any

import trio

from trioswap.errors import TrioswapError
from trioswap.pipeline.sink import DONE, RelayWrite, Sink, Tap, payload_writer
from trioswap.protocols.errors import Family, Headers

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _nothing() -> None:
    pass


class AsgiTransport:
    """A `Sink`'s way to the client: ASGI response messages.

    `before_end` runs before the last one. hypercorn, once a response is complete, queues
    `http.disconnect` for the app behind any request body the app did not read, and waits for
    room: unless someone takes those messages (see `watcher`), that wait is forever."""

    __slots__ = ("_send", "before_end")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.before_end: Callable[[], None] = _nothing

    async def start(self, status: int, headers: Headers) -> None:
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, chunk: bytes, more: bool) -> None:
        if not more:
            self.before_end()
        await self._send({"type": "http.response.body", "body": chunk, "more_body": more})

    def relay_writer(self, chunked: bool, tap: Tap | None = None) -> RelayWrite:
        # hypercorn frames the response itself.
        return payload_writer(self.body, tap)


def shield_last_body(app: ASGIApp) -> ASGIApp:
    """quart-trio cancels a request's tasks when it hears `http.disconnect`, which hypercorn
    sends from inside the final body send once a response is complete; cancelled there,
    hypercorn never closes a `Connection: close` connection. Shield that one send."""

    async def shielded_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def shielded(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True):
                    await send(message)
            else:
                await send(message)

        await app(scope, receive, shielded)

    return shielded_app


async def answer_unread(
    receive: Receive, send: Send, family: Family, error: TrioswapError, request_id: str
) -> None:
    """Answer `error` to a request whose body is never read (refused on its headers): the
    watcher takes the body while the answer goes out (see `AsgiTransport`), and the connection
    closes after it, so the client doesn't send its next request down a connection that still
    holds this one's unread body."""

    async def closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message["headers"], (b"connection", b"close")]
        await send(message)

    async with trio.open_nursery() as nursery:
        transport = AsgiTransport(closing)
        sink = Sink(transport, family)
        transport.before_end = watcher(receive, sink, nursery)
        await sink.fail(error, request_id)
        nursery.cancel_scope.cancel()


def watcher(receive: Receive, sink: Sink, nursery: trio.Nursery) -> Callable[[], None]:
    """What starts the task that takes every ASGI message until the client disconnects, and
    then cancels `nursery` unless the response was complete."""
    return partial(nursery.start_soon, _cancel_on_disconnect, receive, sink, nursery.cancel_scope)


async def _cancel_on_disconnect(receive: Receive, sink: Sink, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    if sink.state is not DONE:
        scope.cancel()
