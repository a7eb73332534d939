"""`stream`: send the request to the model's server and stream its response back unbuffered.

Status and headers go to the client as soon as the upstream's arrive, then every body chunk as it
arrives. httpcore's connection pool (httpx's own transport) keeps upstream connections alive
between requests; httpx's client layer is skipped on this path because it costs measurably per
request (see DESIGN.md, "The hot path").
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Iterator
from contextlib import contextmanager

import httpcore

from trioswap.errors import UpstreamError
from trioswap.pipeline.exchange import Exchange, Headers
from trioswap.pipeline.stage import StageContext

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
EVENT_STREAM_HEADERS: Headers = [(b"x-accel-buffering", b"no"), (b"cache-control", b"no-cache")]
_EVENT_STREAM_NAMES = frozenset(name for name, _ in EVENT_STREAM_HEADERS)
_UPSTREAM_ERRORS = (
    httpcore.NetworkError,
    httpcore.TimeoutException,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
)
ERROR_DETAIL_BYTES = 2000
# Connecting to a started server is quick; generating may take as long as it takes.
TIMEOUTS = {"connect": 10.0, "read": None, "write": 60.0, "pool": None}


@contextmanager
def upstream_errors(model: str) -> Iterator[None]:
    """The one place httpcore's exceptions become trioswap's."""
    try:
        yield
    except _UPSTREAM_ERRORS as exc:
        reason = str(exc) or type(exc).__name__
        raise UpstreamError(model, reason) from exc


class Stream:
    def __init__(self, context: StageContext) -> None:
        self._pool = context.upstream_pool
        # Keys configured in trioswap are trioswap's, not the upstream's: don't leak them.
        self._drop = HOP_BY_HOP | CREDENTIALS if context.config.api_keys else HOP_BY_HOP

    async def __call__(self, exchange: Exchange) -> bool:
        server = exchange.server
        assert server is not None and exchange.model_id is not None
        headers = [(k, v) for k, v in exchange.headers if k not in self._drop]
        content: bytes | AsyncIterable[bytes]
        if exchange.body_stream is not None:
            content = exchange.body_stream
            headers.extend(_body_framing(exchange.headers))
        else:
            content = exchange.body
            if exchange.body_changed and exchange.json is not None:
                content = json.dumps(exchange.json).encode()
            if content or exchange.method in ("POST", "PUT", "PATCH"):
                headers.append((b"content-length", str(len(content)).encode()))
        url = server.config.proxy + exchange.upstream_path
        if exchange.query:
            url += "?" + exchange.query.decode("latin-1")
        sink = exchange.sink
        with upstream_errors(exchange.model_id):
            async with self._pool.stream(
                exchange.method,
                url,
                headers=headers,
                content=content,
                extensions={"timeout": TIMEOUTS},
            ) as response:
                if exchange.response_started:
                    await _continue_stream(exchange, response)
                    return True
                out = [(k, v) for k, v in response.headers if k.lower() not in RESPONSE_DROP]
                content_type = _header(response.headers, b"content-type")
                if content_type.startswith(b"text/event-stream"):
                    exchange.event_stream = True
                    out = [(k, v) for k, v in out if k.lower() not in _EVENT_STREAM_NAMES]
                    out.extend(EVENT_STREAM_HEADERS)
                elif length := _header(response.headers, b"content-length"):
                    out.append((b"content-length", length))
                exchange.response_started = True
                await sink.start(response.status, out)
                async for chunk in response.aiter_stream():
                    await sink.body(chunk, True)
        await sink.body(b"", False)
        return True


def _body_framing(client_headers: Headers) -> Headers:
    """How a streamed request body is framed upstream: as the client framed it."""
    for name, value in client_headers:
        if name == b"content-length":
            return [(name, value)]
        if name == b"transfer-encoding" and b"chunked" in value.lower():
            return [(b"transfer-encoding", b"chunked")]
    return []


async def _continue_stream(exchange: Exchange, response: httpcore.Response) -> None:
    """The client already has our status and headers (loading progress was sent): append the
    upstream's body, or turn its failure into an error event."""
    assert exchange.model_id is not None
    if response.status != 200:
        detail = b""
        async for chunk in response.aiter_stream():
            detail += chunk
            if len(detail) > ERROR_DETAIL_BYTES:
                break
        text = detail[:ERROR_DETAIL_BYTES].decode(errors="replace")
        raise UpstreamError(exchange.model_id, f"answered {response.status}: {text}")
    async for chunk in response.aiter_stream():
        await exchange.sink.body(chunk, True)
    await exchange.sink.body(b"", False)


def _header(headers: Headers, name: bytes) -> bytes:
    for key, value in headers:
        if key.lower() == name:
            return value
    return b""
