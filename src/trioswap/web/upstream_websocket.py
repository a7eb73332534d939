"""Websockets through `/upstream/<model>/<path>`: relayed to the model server message by message.

A websocket is a request like any other: it takes a lease for as long as it is open, so it starts
the model, counts toward `concurrencyLimit` and keeps the model from being swapped out (until
`drainTimeout`). A model with `compat.ignoreWebsockets` opts its websockets out of all that, as
llama-swap does: they never start it (409 while it is not ready) and hold no lease, so a UI's
status socket neither keeps the model loaded nor delays a swap; when the model stops, they end.
`upstream.ignorePaths` applies to a websocket's path as to any other. Websockets to a peer's
model are refused (400): peers are for inference requests.

Refusals before the handshake completes are HTTP answers (ASGI's websocket.http.response), as
JSON errors; a model server's own refusal of the handshake is passed on as it answered.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from typing import TypeVar

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    wrap_client_stream,
)

from trioswap.clip import clip
from trioswap.config import Config, ModelConfig
from trioswap.errors import (
    BadRequest,
    ModelNotLoaded,
    TrioswapError,
    UpstreamConnectError,
    UpstreamTimeout,
)
from trioswap.pipeline.stages.ignore_paths import WHY as IGNORED_PATH
from trioswap.pipeline.stages.ignore_paths import ignored_path
from trioswap.pipeline.stages.resolve import upstream_target
from trioswap.pipeline.stages.stream import CREDENTIALS, HOP_BY_HOP, RESPONSE_DROP
from trioswap.pipeline.upstream import upstream_url
from trioswap.protocols.errors import (
    Family,
    Headers,
    error_bytes,
    error_headers,
    new_request_id,
    status_of,
)
from trioswap.supervisor import ModelState, Supervisor
from trioswap.web.asgi import ASGIApp, Receive, Scope, Send

PREFIX = "/upstream/"
IGNORED_WEBSOCKET = "a websocket (compat.ignoreWebsockets)"
# hypercorn's own limit on what a client may send in one message; the same for the other way.
MAX_MESSAGE = 16 * 1024 * 1024
# How long a model server gets to answer our closing handshake.
CLOSE_TIMEOUT = 5.0
# The handshake is trio-websocket's to make, from the client's subprotocols.
_HANDSHAKE = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
    }
)
# Close codes that say why no close frame came; they may not be sent in one.
_NO_STATUS = 1005
_ABNORMAL = 1006
_INTERNAL_ERROR = 1011

log = logging.getLogger("trioswap.proxy")
E = TypeVar("E", bound=BaseException)


class UpstreamWebsockets:
    """ASGI: websockets to `/upstream/…` are relayed here; everything else goes on to `app`."""

    def __init__(self, app: ASGIApp, config: Config, supervisor: Supervisor) -> None:
        self._app = app
        self._config = config
        self._supervisor = supervisor
        drop = _HANDSHAKE | HOP_BY_HOP
        # Keys configured in trioswap are trioswap's, not the upstream's: don't leak them.
        self._drop = drop | CREDENTIALS if config.api_keys else drop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or not scope["path"].startswith(PREFIX):
            await self._app(scope, receive, send)
            return
        await receive()  # websocket.connect
        # The handshake runs in a nursery (trio-websocket's reader task): its errors come grouped.
        try:
            async with AsyncExitStack() as stack:
                name, model_id, rest = upstream_target(self._config, scope["raw_path"])
                if model_id is None:
                    raise BadRequest(
                        f"websockets to a peer's model ({clip(name)}) are not relayed: connect "
                        "to the peer itself"
                    )
                model = self._config.models[model_id]
                proxy = await self._server(stack, model, rest)
                upstream = await self._open(stack, model, proxy, rest, scope)
                await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
                await _relay(receive, send, upstream)
        except* TrioswapError as group:
            await _refuse(scope, send, _first(group))
        except* ConnectionRejected as group:
            rejected = _first(group)
            headers = [(k, v) for k, v in rejected.headers if k.lower() not in RESPONSE_DROP]
            await _answer(send, rejected.status_code, headers, rejected.body or b"")

    async def _server(self, stack: AsyncExitStack, model: ModelConfig, rest: bytes) -> str:
        """Where the model is served: leased (started if need be), or, for websockets that may
        not start it, only if it is ready now."""
        if model.ignore_websockets:
            status = self._supervisor.statuses().get(model.id)
            if status is None or status.state is not ModelState.READY:
                raise ModelNotLoaded(model.id, IGNORED_WEBSOCKET)
            return status.proxy
        if self._supervisor.state_of(model.id) is not ModelState.READY and ignored_path(
            self._config.upstream_ignore_paths, rest
        ):
            raise ModelNotLoaded(model.id, IGNORED_PATH)
        server = await stack.enter_async_context(self._supervisor.lease(model.id))
        return server.config.proxy

    async def _open(
        self, stack: AsyncExitStack, model: ModelConfig, proxy: str, rest: bytes, scope: Scope
    ) -> WebSocketConnection:
        """A websocket to the model server, closed when `stack` exits. The TCP stream is ours:
        trio-websocket leaves a client's open when the server closes first or refuses."""
        url = upstream_url(proxy, rest, scope["query_string"])
        host = url.host.decode("ascii")
        tls = url.scheme == b"https"
        port = url.port or (443 if tls else 80)
        authority = f"[{host}]" if ":" in host else host
        if url.port is not None:
            authority += f":{port}"
        timeouts = model.timeouts
        with _opening(model, proxy, timeouts.connect, "connect"):
            if tls:
                stream: trio.abc.Stream = await trio.open_ssl_over_tcp_stream(
                    host, port, https_compatible=True
                )
            else:
                stream = await trio.open_tcp_stream(host, port)
        stack.push_async_callback(stream.aclose)
        nursery = await stack.enter_async_context(trio.open_nursery())
        with _opening(model, proxy, timeouts.response_header, "responseHeader"):
            upstream = await wrap_client_stream(
                nursery,
                stream,
                authority,
                url.target.decode("ascii"),
                subprotocols=scope.get("subprotocols") or None,
                extra_headers=[(k, v) for k, v in scope["headers"] if k not in self._drop],
                max_message_size=MAX_MESSAGE,
            )
        stack.push_async_callback(_close, upstream, nursery.cancel_scope)
        return upstream


@contextmanager
def _opening(model: ModelConfig, proxy: str, seconds: float | None, key: str) -> Iterator[None]:
    """A step of opening a websocket to a model server, bounded by `timeouts.<key>`; its
    failures as trioswap's errors."""
    try:
        with trio.fail_after(math.inf if seconds is None else seconds):
            yield
    except trio.TooSlowError:
        raise UpstreamTimeout(
            model.id,
            f"opening a websocket to {proxy} took longer than {seconds:g} s (timeouts.{key})",
        ) from None
    except OSError as exc:
        raise UpstreamConnectError(model.id, f"websocket to {proxy}: {exc}") from exc


async def _close(upstream: WebSocketConnection, reader: trio.CancelScope) -> None:
    with trio.move_on_after(CLOSE_TIMEOUT):
        await upstream.aclose()
    reader.cancel()


def _first(group: BaseExceptionGroup[E]) -> E:
    error: E | BaseExceptionGroup[E] = group.exceptions[0]
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def _relay(receive: Receive, send: Send, upstream: WebSocketConnection) -> None:
    """Until either side closes; the upstream's close goes on to the client."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_to_upstream, receive, upstream, nursery.cancel_scope)
        await _to_client(upstream, send)
        nursery.cancel_scope.cancel()


async def _to_upstream(
    receive: Receive, upstream: WebSocketConnection, done: trio.CancelScope
) -> None:
    while (message := await receive())["type"] == "websocket.receive":
        text = message.get("text")
        try:
            await upstream.send_message(text if text is not None else message["bytes"])
        except ConnectionClosed:
            return  # `_to_client` tells the client
    # The client left; leaving `open_websocket` closes the upstream side.
    done.cancel()


async def _to_client(upstream: WebSocketConnection, send: Send) -> None:
    try:
        while True:
            message = await upstream.get_message()
            kind = "text" if isinstance(message, str) else "bytes"
            await send({"type": "websocket.send", kind: message})
    except ConnectionClosed as closed:
        code = closed.reason.code
        if code == _NO_STATUS:
            code = 1000
        elif code == _ABNORMAL:
            code = _INTERNAL_ERROR
        await send({"type": "websocket.close", "code": code, "reason": closed.reason.reason})


async def _refuse(scope: Scope, send: Send, error: TrioswapError) -> None:
    request_id = new_request_id()
    status = status_of(error)
    level = logging.WARNING if status >= 500 else logging.INFO
    log.log(level, "%s websocket %s -> %d: %s", request_id, clip(scope["path"]), status, error)
    body = error_bytes(Family.OPENAI, error, request_id)
    headers = [(b"content-type", b"application/json"), *error_headers(error, request_id)]
    await _answer(send, status, headers, body)


async def _answer(send: Send, status: int, headers: Headers, body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})
