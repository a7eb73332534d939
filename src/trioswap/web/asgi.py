"""The outermost ASGI app: inference routes go straight into their pipeline with no framework in
between (the hot path); everything else — control API, logs, UI, websockets — goes to Quart."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AsyncExitStack
from typing import Any

import trio

from trioswap.errors import MethodNotAllowed
from trioswap.pipeline.exchange import Exchange, Headers
from trioswap.pipeline.loader import Pipeline, RouteTable
from trioswap.pipeline.runner import deliver_error, run_pipeline

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AsgiSink:
    __slots__ = ("_send", "finished")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.finished = False

    async def start(self, status: int, headers: Headers) -> None:
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, chunk: bytes, more: bool) -> None:
        # Set before sending: hypercorn reports `http.disconnect` from inside the last send,
        # once the response is complete, and that is not the client going away.
        self.finished = not more
        await self._send({"type": "http.response.body", "body": chunk, "more_body": more})


class ProxyApp:
    def __init__(self, routes: RouteTable, control: ASGIApp) -> None:
        self._routes = routes
        self._control = control

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            pipeline = self._routes.match(scope["path"])
            if pipeline is not None:
                await self._serve(pipeline, scope, receive, send)
                return
            await self._control(scope, receive, _shield_last_body(send))
            return
        await self._control(scope, receive, send)

    async def _serve(self, pipeline: Pipeline, scope: Scope, receive: Receive, send: Send) -> None:
        sink = AsgiSink(send)
        exchange = Exchange(
            method=scope["method"],
            path=scope["path"],
            query=scope["query_string"],
            headers=scope["headers"],
            family=pipeline.family,
            sink=sink,
            stack=AsyncExitStack(),
        )
        if exchange.method not in pipeline.methods:
            await deliver_error(exchange, MethodNotAllowed(exchange.method, exchange.path))
            return
        # A client that goes away cancels its exchange: the upstream request is closed and the
        # lease returned. Its disconnect is watched for once the request body is in.
        async with trio.open_nursery() as nursery:

            def watch_disconnect() -> None:
                nursery.start_soon(_cancel_on_disconnect, receive, sink, nursery.cancel_scope)

            if pipeline.reads_body:
                body = await _read_body(receive)
                if body is None:
                    return
                exchange.body = body
                watch_disconnect()
            else:
                exchange.body_stream = RequestBody(receive, nursery.cancel_scope, watch_disconnect)
            await run_pipeline(pipeline, exchange)
            nursery.cancel_scope.cancel()


class RequestBody:
    """The client's request body as it arrives, for a pipeline that passes it on unread."""

    __slots__ = ("_done", "_on_complete", "_receive", "_scope")

    def __init__(self, receive: Receive, scope: trio.CancelScope, on_complete: Callable[[], None]):
        self._receive = receive
        self._scope = scope
        self._on_complete = on_complete
        self._done = False

    def __aiter__(self) -> RequestBody:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self._done = True
            self._scope.cancel()
            raise StopAsyncIteration
        if not message.get("more_body", False):
            self._done = True
            self._on_complete()
        return message.get("body", b"")


def _shield_last_body(send: Send) -> Send:
    """quart-trio cancels a request's tasks when it hears `http.disconnect`, which hypercorn
    sends from inside the final body send once a response is complete; cancelled there,
    hypercorn never closes a `Connection: close` connection. Shield that one send."""

    async def shielded(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            with trio.CancelScope(shield=True):
                await send(message)
        else:
            await send(message)

    return shielded


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _cancel_on_disconnect(receive: Receive, sink: AsgiSink, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    if not sink.finished:
        scope.cancel()
