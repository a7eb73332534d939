"""The front door: trioswap's one listener, HTTP/1.1 on trio streams (`http1.py`).

Inference routes run their pipeline right here, with the response written as bytes and an
upstream's body passed on as it was framed when no stage transforms it. `/health` is answered
here too. Everything else (control API, UI, websockets, `/upstream` upgrades) goes to the
control plane behind it (`internal.py`), relayed as bytes. The browser guard's rules apply to
both: here for the inference routes, in the control plane for its own.

Each connection is one task (its handler) plus its reader; each request on it runs in a cancel
scope that a client going away, a cancel from the UI or shutdown cancels.
"""

from __future__ import annotations

import errno
import logging
import socket
from contextlib import AsyncExitStack

import trio

from trioswap.clip import clip
from trioswap.deadline_watch import DeadlineWatch
from trioswap.errors import (
    Forbidden,
    MethodNotAllowed,
    RequestCancelled,
    ShuttingDown,
    TrioswapError,
)
from trioswap.lean_stream import LeanStream
from trioswap.observe.observability import Observability, ObservedTransport, Watch
from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.loader import Pipeline, RouteTable
from trioswap.pipeline.runner import deliver_error, run_pipeline
from trioswap.pipeline.sink import DONE, Sink
from trioswap.protocols.errors import Family, error_bytes, new_request_id
from trioswap.web.guard import PREFLIGHT, Guard, preflight_headers
from trioswap.web.http1 import (
    READ_SIZE,
    FrontBody,
    FrontTransport,
    Http1Connection,
    MalformedRequest,
    Request,
    write_simple,
)
from trioswap.web.inflight import InFlight
from trioswap.web.internal import Internal, relay

log = logging.getLogger("trioswap.http")
KEEP_ALIVE_TIMEOUT = 75.0
LINGER_SECONDS = 1.0
LINGER_BYTES = 16 * 1024 * 1024
HEALTH_PATH = "/health"
# accept() errors that are about one connection (gone before it was taken, refused by a
# firewall rule), not about the listener: trio's SocketListener ignores the same.
_ACCEPT_TRANSIENT = frozenset({errno.ECONNABORTED, errno.EPERM, errno.EPROTO})


class Front:
    def __init__(
        self,
        routes: RouteTable,
        guard: Guard,
        internal: Internal,
        *,
        body_limit: int,
        body_timeout: float,
        observability: Observability | None = None,
    ) -> None:
        self._routes = routes
        self._guard = guard
        self._internal = internal
        self._body_limit = body_limit
        self._body_timeout = body_timeout
        self._observability = observability
        self.in_flight = InFlight()
        # Connections waiting for their next request: ended after KEEP_ALIVE_TIMEOUT, or when
        # shutdown begins.
        self._idle = DeadlineWatch()
        self._closing = False

    async def serve(
        self,
        listener: socket.socket,
        stop_accepting: trio.Event,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections until `stop_accepting`, then close the idle ones; return once
        every connection has ended."""
        listener.setblocking(False)
        host, port = listener.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        async with trio.open_nursery() as watching:
            watching.start_soon(self._idle.run)
            async with trio.open_nursery() as connections:
                async with trio.open_nursery() as accepting:
                    accepting.start_soon(self._accept, listener, connections)
                    task_status.started([f"http://{shown}:{port}"])
                    await stop_accepting.wait()
                    accepting.cancel_scope.cancel()
                listener.close()
                self._closing = True
                self.in_flight.close()
                self._idle.expire_all()
            watching.cancel_scope.cancel()

    async def _accept(self, listener: socket.socket, connections: trio.Nursery) -> None:
        while True:
            await trio.lowlevel.wait_readable(listener)
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno in _ACCEPT_TRANSIENT:
                    continue
                # Out of file descriptors (or memory): wait for some to be freed, as
                # trio.serve_listeners does, rather than stop serving.
                log.error("accept failed (%s); trying again in 0.1 s", exc)
                await trio.sleep(0.1)
                continue
            connections.start_soon(self._connection, LeanStream(sock))

    async def _connection(self, stream: LeanStream) -> None:
        conn = Http1Connection(stream)
        try:
            peer = stream.socket.getpeername()
            client = peer[0] if isinstance(peer, tuple) else None
        except OSError:
            client = None
        pool: list[trio.SocketStream] = []
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.read_loop)
                while await self._one_request(conn, client, pool):
                    pass
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                for upstream in pool:
                    await upstream.aclose()
                if conn.unread_body():
                    await _linger(stream)
                await stream.aclose()

    async def _one_request(
        self, conn: Http1Connection, client: str | None, pool: list[trio.SocketStream]
    ) -> bool:
        """Answer the connection's next request; whether the connection goes on."""
        if self._closing and conn.served:
            return False
        self._idle.begin(conn, KEEP_ALIVE_TIMEOUT)
        try:
            request = await conn.next_request()
        except MalformedRequest as exc:
            body = error_bytes(Family.OPENAI, exc, new_request_id())
            await write_simple(conn.stream, exc.status, body)
            return False
        finally:
            self._idle.end(conn)
        if request is None:
            return False
        try:
            return await self._answer(conn, client, pool, request)
        finally:
            conn.finished(request)

    async def _answer(
        self,
        conn: Http1Connection,
        client: str | None,
        pool: list[trio.SocketStream],
        request: Request,
    ) -> bool:
        path = request.path
        pipeline = None if request.upgrade else self._routes.match(path)
        health = path == HEALTH_PATH and request.method in ("GET", "HEAD")
        if pipeline is None and not health:
            return await relay(
                self._internal, conn, request, pool, self._body_limit, self._body_timeout
            )
        headers = dict(request.headers)
        verdict, refusal, allow = self._guard.verdict(request.method, path, headers)
        transport = FrontTransport(
            conn.stream, request, close_after=self._closing, on_gone=_nothing
        )
        transport.cors = allow
        if verdict is PREFLIGHT:
            assert allow is not None
            transport.cors = None
            await transport.start(204, preflight_headers(allow, headers))
            await transport.body(b"", False)
        elif refusal is not None:
            await self._refuse(transport, pipeline, request, refusal)
        elif pipeline is None:
            await _health(transport)
        else:
            await self._exchange(conn, client, request, pipeline, transport)
        return not transport.close_after and conn.reusable(request)

    async def _refuse(
        self, transport: FrontTransport, pipeline: Pipeline | None, request: Request, why: str
    ) -> None:
        """A refusal on the headers: the body is never read, so the connection closes after."""
        request_id = new_request_id()
        log.info("%s refused %s %s: %s", request_id, clip(request.method), clip(request.path), why)
        transport.close_after = True
        sink = Sink(transport, pipeline.family if pipeline is not None else Family.OPENAI)
        await sink.fail(Forbidden(why), request_id)

    async def _exchange(
        self,
        conn: Http1Connection,
        client: str | None,
        request: Request,
        pipeline: Pipeline,
        transport: FrontTransport,
    ) -> None:
        sink = Sink(transport, pipeline.family)
        in_flight = self.in_flight
        observability = self._observability
        watch: Watch | None = None
        exchange = Exchange(
            request_id=new_request_id(),
            method=request.method,
            path=request.path,
            raw_path=request.raw_path,
            query=request.query,
            headers=request.headers,
            sink=sink,
            stack=AsyncExitStack(),
            request_body=FrontBody(conn, request, self._body_limit, self._body_timeout),
        )
        # A client that goes away cancels its exchange (the upstream request is closed and the
        # lease returned); so does shutdown, for an exchange that outlives shutdownTimeout, and
        # a cancel from the UI.
        with trio.CancelScope() as cut:

            def gone() -> None:
                if sink.state is not DONE:
                    cut.cancel()

            conn.on_gone = transport.on_gone = gone
            in_flight.enter(cut)
            try:
                if conn.gone:
                    gone()
                if observability is not None:
                    watch = observability.begin(exchange, cut, client)
                    sink.transport = ObservedTransport(transport, watch)
                if exchange.method not in pipeline.methods:
                    error = MethodNotAllowed(exchange.method, exchange.path, pipeline.methods)
                    await deliver_error(exchange, error)
                elif in_flight.closing:
                    transport.close_after = True
                    await deliver_error(exchange, ShuttingDown())
                else:
                    await run_pipeline(pipeline, exchange)
            finally:
                conn.on_gone = None
                in_flight.leave(cut)
        try:
            cancelled = watch is not None and watch.entry.cancelled
            if (in_flight.cutting or cancelled) and sink.state is not DONE and not conn.gone:
                assert exchange is not None
                error: TrioswapError = (
                    RequestCancelled(watch.entry.id) if cancelled and watch else ShuttingDown()
                )
                transport.close_after = True
                await deliver_error(exchange, error)
            elif sink.state is not DONE:
                transport.close_after = True  # a body cut short: only the close says so
        finally:
            # `gone` holds the sink, which holds this transport: no cycle may keep the
            # exchange's body alive until the garbage collector runs.
            transport.on_gone = _nothing
            if watch is not None:
                assert observability is not None
                observability.finish(watch, exchange, sink.state is not DONE)
                if observability.activity.backlogged:
                    with trio.CancelScope(shield=True):
                        await observability.activity.flush()


async def _linger(stream: LeanStream) -> None:
    """Close gently after an answer to a request whose body is still coming: closed at once
    with bytes unread, the socket would reset and the client could lose the answer. So: our
    side ends, and what the client still sends is read and dropped, for a moment."""
    with trio.move_on_after(LINGER_SECONDS):
        try:
            await stream.send_eof()
            drained = 0
            while drained < LINGER_BYTES and (data := await stream.receive_some(READ_SIZE)):
                drained += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def _health(transport: FrontTransport) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"2")]
    await transport.start(200, headers)
    await transport.body(b"OK", False)


def _nothing() -> None:
    pass
