"""The outermost ASGI app: inference routes go straight into their pipeline with no framework in
between (the hot path); everything else — control API, logs, UI, websockets — goes to Quart."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import trio

from trioswap.errors import (
    MethodNotAllowed,
    PayloadTooLarge,
    RequestCancelled,
    RequestTimeout,
    ShuttingDown,
    TrioswapError,
)
from trioswap.observe.observability import Observability, ObservedTransport, Watch
from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.loader import Pipeline, RouteTable
from trioswap.pipeline.runner import deliver_error, run_pipeline
from trioswap.pipeline.sink import DONE, Sink
from trioswap.protocols.errors import Family, Headers, new_request_id
from trioswap.web.inflight import InFlight

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_CHUNKED: Headers = [(b"transfer-encoding", b"chunked")]


def _nothing() -> None:
    pass


class AsgiTransport:
    """A `Sink`'s way to the client: ASGI response messages.

    `before_end` runs before the last one. hypercorn, once a response is complete, queues
    `http.disconnect` for the app behind any request body the app did not read, and waits for
    room: unless someone takes those messages (see `AsgiBody.release`), that wait is forever."""

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

    async def relay(self, raw: bytes, body: bytes, chunked: bool) -> None:
        # hypercorn frames the response itself.
        if body:
            await self._send({"type": "http.response.body", "body": body, "more_body": True})


class AsgiBody:
    """The client's request body as hypercorn delivers it (see `pipeline.exchange.RequestBody`).

    Nothing is received until a stage asks, so a request refused on its headers never has its
    body read. hypercorn holds at most a few chunks ahead of us, so what a client sends is
    bounded by what we take."""

    __slots__ = (
        "_client_gone",
        "_declared",
        "_done",
        "_limit",
        "_receive",
        "_received",
        "_timeout",
        "_watch",
        "_watching",
        "framing",
        "present",
    )

    def __init__(
        self,
        receive: Receive,
        headers: Headers,
        limit: int,
        timeout: float,
        watch: Callable[[], None],
        client_gone: Callable[[], None],
    ) -> None:
        self._receive = receive
        self._limit = limit
        self._timeout = timeout
        self._watch = watch
        self._watching = False
        self._client_gone = client_gone
        self._received = 0
        self._declared: int | None = None
        self.framing: Headers = []
        for name, value in headers:
            # h11 has checked both: a Content-Length is digits, a Transfer-Encoding is chunked.
            if name == b"transfer-encoding":
                # Chunked framing wins over a Content-Length sent with it (RFC 9112, 6.3).
                self.framing = _CHUNKED
                self._declared = None
                break
            if name == b"content-length":
                self._declared = int(value)
                self.framing = [(name, value)]
        self.present = bool(self.framing)
        self._done = False
        if not self.present:
            self.release()

    def release(self) -> None:
        """No more of the body will be read: from now on the ASGI messages go to `watch`, which
        waits for the client to disconnect (and throws away what is left of the body)."""
        if not self._watching:
            self._watching = True
            self._done = True
            self._watch()

    def check(self) -> None:
        if self._declared is not None and self._declared > self._limit:
            raise PayloadTooLarge(self._limit)

    async def read(self) -> bytes:
        self.check()
        if self._done:
            return b""
        first = await self.__anext__()
        if self._done:  # usually: the whole body came in one message
            return first
        chunks = [first]
        async for chunk in self:
            chunks.append(chunk)
        return b"".join(chunks)

    def __aiter__(self) -> AsgiBody:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        with trio.move_on_after(self._timeout):
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._done = True
                # The exchange is cancelled now, and this checkpoint raises that.
                self._client_gone()
                await trio.lowlevel.checkpoint()
                raise StopAsyncIteration
            body: bytes = message.get("body", b"")
            self._received += len(body)
            if self._received > self._limit:
                self._done = True
                raise PayloadTooLarge(self._limit)
            if not message.get("more_body", False):
                self.release()
            return body
        self._done = True
        raise RequestTimeout(self._timeout)


class ProxyApp:
    def __init__(
        self,
        routes: RouteTable,
        control: ASGIApp,
        *,
        body_limit: int,
        body_timeout: float,
        observability: Observability | None = None,
    ) -> None:
        self._routes = routes
        self._control = control
        self._body_limit = body_limit
        self._body_timeout = body_timeout
        self._observability = observability
        self.in_flight = InFlight()

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
        transport = AsgiTransport(send)
        sink = Sink(transport, pipeline.family)
        in_flight = self.in_flight
        observability = self._observability
        watch: Watch | None = None
        exchange: Exchange | None = None
        # A client that goes away cancels its exchange (the upstream request is closed and the
        # lease returned); so does shutdown, for an exchange that outlives shutdownTimeout.
        cut: trio.CancelScope | None = None
        try:
            async with trio.open_nursery() as nursery:
                cut = nursery.cancel_scope
                in_flight.enter(cut)
                exchange = self._exchange(scope, receive, transport, sink, nursery)
                if observability is not None:
                    client = scope.get("client")
                    watch = observability.begin(exchange, cut, client[0] if client else None)
                    sink.transport = ObservedTransport(transport, watch)
                if exchange.method not in pipeline.methods:
                    error = MethodNotAllowed(exchange.method, exchange.path, pipeline.methods)
                    await deliver_error(exchange, error)
                elif in_flight.closing:
                    await deliver_error(exchange, ShuttingDown())
                else:
                    await run_pipeline(pipeline, exchange)
                nursery.cancel_scope.cancel()
            cancelled = watch is not None and watch.entry.cancelled
            if (in_flight.cutting or cancelled) and sink.state is not DONE:
                # The exchange's nursery is gone, and with it whoever took the ASGI messages.
                assert exchange is not None
                error = RequestCancelled(watch.entry.id) if cancelled and watch else ShuttingDown()
                async with trio.open_nursery() as nursery:
                    transport.before_end = watcher(receive, sink, nursery)
                    await deliver_error(exchange, error)
                    nursery.cancel_scope.cancel()
        finally:
            if cut is not None:
                in_flight.leave(cut)
            if watch is not None and exchange is not None:
                assert observability is not None
                with trio.CancelScope(shield=True):
                    await observability.finish(watch, exchange, sink.state is not DONE)

    def _exchange(
        self,
        scope: Scope,
        receive: Receive,
        transport: AsgiTransport,
        sink: Sink,
        nursery: trio.Nursery,
    ) -> Exchange:
        # The disconnect is watched for once the request body is in or given up on: both read
        # the same ASGI messages.
        body = AsgiBody(
            receive,
            scope["headers"],
            self._body_limit,
            self._body_timeout,
            watcher(receive, sink, nursery),
            nursery.cancel_scope.cancel,
        )
        transport.before_end = body.release
        return Exchange(
            request_id=new_request_id(),
            method=scope["method"],
            path=scope["path"],
            raw_path=scope["raw_path"],
            query=scope["query_string"],
            headers=scope["headers"],
            sink=sink,
            stack=AsyncExitStack(),
            request_body=body,
        )


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
