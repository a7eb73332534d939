"""`stream`: send the request to the model's server, or to the peer or Ollama that serves the
model, and stream the response back unbuffered.

Status and headers go to the client as soon as the upstream's arrive, then every body chunk as it
arrives: when nothing transforms the answer, as the upstream framed it (`Sink.relay_writer`),
so a front that frames its response the same way passes the bytes on untouched. trioswap's own
pool (`wire.ConnectionPool`) keeps upstream connections alive between requests (see DESIGN.md,
"The hot path").
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from trioswap.config import ModelConfig, PeerConfig
from trioswap.errors import UpstreamError
from trioswap.pipeline.count_tokens import count_tokens
from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.peers import PeerRoute
from trioswap.pipeline.sink import EVENT_STREAM_HEADERS
from trioswap.pipeline.stage import StageContext
from trioswap.pipeline.translated import translated_reply
from trioswap.pipeline.translation import TRANSLATED_HEADER
from trioswap.pipeline.upstream import (
    PoolFor,
    is_event_stream,
    open_response,
    require_event_stream,
    response_header,
    upstream_errors,
    upstream_timeouts,
    upstream_url,
)
from trioswap.pipeline.wire import ConnectionPool, Response
from trioswap.protocols.errors import Headers

log = logging.getLogger("trioswap.proxy")
# What a server without a route answers: llama-server 404, some servers 405.
FALLBACK_STATUSES = frozenset({404, 405})

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
# hypercorn dates every response itself.
RESPONSE_DROP = HOP_BY_HOP | {b"date"}
CREDENTIALS = frozenset({b"authorization", b"x-api-key"})
_EVENT_STREAM_NAMES = frozenset(name for name, _ in EVENT_STREAM_HEADERS)
ERROR_DETAIL_BYTES = 2000


@dataclass(frozen=True, slots=True)
class _Route:
    """How requests reach one model server or peer, computed once at startup."""

    pool: ConnectionPool
    extensions: dict[str, Any]
    # Request headers not passed on, and headers added.
    drop: frozenset[bytes]
    credentials: Headers


def _route(
    upstream: ModelConfig | PeerConfig, pools: PoolFor, drop: frozenset[bytes], credentials: Headers
) -> _Route:
    extensions = {"timeout": upstream_timeouts(upstream)}
    return _Route(pools(upstream.timeouts), extensions, drop, credentials)


def _credentials(api_key: str) -> Headers:
    """A peer's apiKey, in both ways servers look for one."""
    if not api_key:
        return []
    return [(b"authorization", b"Bearer " + api_key.encode()), (b"x-api-key", api_key.encode())]


class Stream:
    def __init__(self, context: StageContext) -> None:
        config, pools = context.config, context.upstream_pools
        # Keys configured in trioswap are trioswap's, not the upstream's: don't leak them. A
        # client's own key is not a peer's business either: the peer gets its apiKey, or none.
        drop = HOP_BY_HOP | CREDENTIALS if config.api_keys else HOP_BY_HOP
        self._models = {m.id: _route(m, pools, drop, []) for m in config.models.values()}
        self._peers = {
            p.id: _route(p, pools, HOP_BY_HOP | CREDENTIALS, _credentials(p.api_key))
            for p in config.peers.values()
        }
        # Ollama gets no credentials: the client's are for trioswap, and Ollama takes none.
        self._ollama = (
            None
            if context.ollama is None
            else _route(context.ollama.template, pools, HOP_BY_HOP | CREDENTIALS, [])
        )
        self._learned = context.learned_apis

    async def __call__(self, exchange: Exchange) -> bool:
        peer = exchange.peer
        target: ModelConfig | PeerRoute
        if exchange.discovered is not None:
            assert self._ollama is not None
            target = exchange.discovered.config
            proxy = target.proxy
            route = self._ollama
        elif peer is None:
            assert exchange.server is not None and exchange.model_id is not None
            target = exchange.server.config
            proxy = target.proxy
            route = self._models[exchange.model_id]
            fallback = exchange.fallback
            generation = exchange.server.generation
            if fallback and self._learned.translated(target.id, generation, fallback.family):
                fallback.apply()
        else:
            target = peer
            proxy = peer.peer.proxy
            route = self._peers[peer.peer.id]
        sink = exchange.sink
        with upstream_errors(target):
            if exchange.translation is not None and exchange.translation.count:
                await _answer_count(exchange, route, proxy)
                return True
            async with AsyncExitStack() as stack:
                response = await _open(stack, exchange, route, proxy)
                fallback = exchange.fallback
                if fallback is not None and response.status in FALLBACK_STATUSES:
                    # `auto`: the server has no such route; translate from now on.
                    assert exchange.server is not None
                    self._learned.learn(target.id, exchange.server.generation, fallback.family)
                    log.info(
                        "model %s answered %s %d: translating %s requests to chat completions "
                        "until it restarts",
                        target.id,
                        exchange.path,
                        response.status,
                        fallback.family,
                    )
                    await stack.aclose()
                    fallback.apply()
                    if exchange.translation is not None and exchange.translation.count:
                        await _answer_count(exchange, route, proxy)
                        return True
                    response = await _open(stack, exchange, route, proxy)
                if response.status == 400 and exchange.shrink is not None:
                    response = await _retry_smaller(stack, exchange, route, proxy, response)
                if exchange.translation is not None:
                    log.info(
                        "%s %s: model %s, %s",
                        exchange.method,
                        exchange.path,
                        target.id,
                        exchange.translation.codec.label.decode(),
                    )
                    await translated_reply(exchange, response, target.id)
                    return True
                if exchange.loading is not None:
                    await _continue_stream(exchange, response)
                    return True
                out = [(k, v) for k, v in response.headers if k.lower() not in RESPONSE_DROP]
                events = is_event_stream(response)
                if events:
                    out = [(k, v) for k, v in out if k.lower() not in _EVENT_STREAM_NAMES]
                    out.extend(EVENT_STREAM_HEADERS)
                elif length := response_header(response, b"content-length"):
                    out.append((b"content-length", length))
                await sink.start(response.status, out, events=events)
                await response.relay(sink.relay_writer(response.chunked))
        await sink.end()
        return True


async def _open(stack: AsyncExitStack, exchange: Exchange, route: _Route, proxy: str) -> Response:
    """Send the exchange's request (as it is now: `translate` may change it between tries)."""
    headers = [(k, v) for k, v in exchange.headers if k not in route.drop]
    headers.extend(route.credentials)
    content: bytes | AsyncIterator[bytes] | None = exchange.body
    if content is not None:
        if exchange.body_changed and exchange.json is not None:
            content = json.dumps(exchange.json).encode()
    elif exchange.request_body.present:
        content = aiter(exchange.request_body)
        headers.extend(exchange.request_body.framing)
    if exchange.translation is not None:
        # The reply is parsed: it must come as it is, not compressed.
        headers = [(k, v) for k, v in headers if k != b"accept-encoding"]
    url = upstream_url(proxy, exchange.upstream_path, exchange.query)
    return await open_response(
        stack,
        route.pool,
        method=exchange.method,
        url=url,
        headers=headers,
        content=content,
        extensions=route.extensions,
    )


async def _retry_smaller(
    stack: AsyncExitStack,
    exchange: Exchange,
    route: _Route,
    proxy: str,
    response: Response,
) -> Response:
    """A 400 to an optimized request: if the server refused the prompt for its size, send it
    once more, made smaller by the optimizer; else the same answer, read."""
    assert exchange.shrink is not None
    detail = await _read_bounded(response, ERROR_DETAIL_BYTES * 4)
    await stack.aclose()
    sizes = context_overflow(detail)
    if sizes is not None and exchange.shrink(*sizes):
        return await _open(stack, exchange, route, proxy)
    return Response.buffered(response.status, response.headers, detail)


def context_overflow(detail: bytes) -> tuple[int, int] | None:
    """(prompt tokens, context size) from llama-server's `exceed_context_size_error`."""
    try:
        error = json.loads(detail).get("error")
        if error.get("type") == "exceed_context_size_error":
            return int(error["n_prompt_tokens"]), int(error["n_ctx"])
    except (ValueError, AttributeError, KeyError, TypeError):
        pass
    return None


async def _read_bounded(response: Response, limit: int) -> bytes:
    detail = b""
    async for chunk in response.aiter_stream():
        detail += chunk
        if len(detail) > limit:
            break
    return detail[:limit]


async def _answer_count(exchange: Exchange, route: _Route, proxy: str) -> None:
    assert exchange.translation is not None
    tokens, how = await count_tokens(
        exchange.translation.request, route.pool, proxy, route.extensions
    )
    body = json.dumps({"input_tokens": tokens}).encode()
    headers = [(TRANSLATED_HEADER, b"count_tokens:" + how.encode())]
    await exchange.sink.respond(200, body, headers)


async def _continue_stream(exchange: Exchange, response: Response) -> None:
    """The client already has our status, headers and loading progress: the server's stream
    continues that response, rewritten to follow it, or its failure becomes an error event."""
    assert exchange.model_id is not None and exchange.loading is not None
    model = exchange.model_id
    if response.status != 200:
        detail = await _read_bounded(response, ERROR_DETAIL_BYTES)
        text = detail.decode(errors="replace")
        raise UpstreamError(model, f"answered {response.status}: {text}")
    require_event_stream(response, model)
    sink = exchange.sink
    relay = exchange.loading.relay(model)
    sink.stream_error = relay.failed
    async for chunk in response.aiter_stream():
        if events := relay.feed(chunk):
            await sink.send(events)
    await sink.end(relay.close())
