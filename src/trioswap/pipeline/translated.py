"""A translated exchange's reply: the server's chat completions answer, turned back into the
client's family as it arrives.

An event stream is decoded event by event and each chat chunk handed to the family's stream
translator, whose events go out at once; a JSON answer (or an error) is read whole — it is one
bounded object — and translated in one piece. Every translated reply says so in
`X-Trioswap-Translated`.

After loading progress (`loading.py`) the response has begun: the translator that wrote the
progress goes on with the answer, and an upstream error becomes its error event.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from trioswap.errors import TrioswapError, UpstreamProtocolError
from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.sink import EVENT_STREAM_HEADERS
from trioswap.pipeline.translation import ANTHROPIC, TRANSLATED_HEADER, StreamTranslator
from trioswap.pipeline.upstream import is_event_stream, require_event_stream
from trioswap.pipeline.wire import Response
from trioswap.protocols.errors import kind_of
from trioswap.protocols.sse import EventDecoder

# A non-streamed chat completion larger than this is not one.
MAX_REPLY_BYTES = 64 * 1024 * 1024
_EVENT_HEADERS = [(b"content-type", b"text/event-stream"), *EVENT_STREAM_HEADERS]


async def translated_reply(exchange: Exchange, response: Response, model: str) -> None:
    translation = exchange.translation
    assert translation is not None
    codec, sink = translation.codec, exchange.sink
    if exchange.loading is not None:
        stream = exchange.loading.translator
        assert stream is not None
        await _continue(exchange, response, model, stream)
        return
    label = [(TRANSLATED_HEADER, codec.label)]
    if response.status != 200:
        status, body = codec.error(response.status, await read_reply(response, model))
        await sink.respond(status, json.dumps(body).encode(), label)
        return
    if not is_event_stream(response):
        answer = parse_object(await read_reply(response, model), model)
        reply = codec.reply(answer, translation.request)
        await sink.respond(200, json.dumps(reply).encode(), label)
        return
    stream = codec.stream(translation.request)
    sink.stream_error = stream_failure(codec.family, stream)
    await sink.start(200, [*_EVENT_HEADERS, *label], events=True)
    await _stream(exchange, response, model, stream)


def stream_failure(family: str, stream: StreamTranslator) -> Callable[[TrioswapError, str], bytes]:
    """How a translated stream ends when trioswap fails it: the translator's error event."""

    def failed(error: TrioswapError, request_id: str) -> bytes:
        kind = kind_of(error)
        name = kind.anthropic_type if family == ANTHROPIC else kind.openai_type
        return stream.error(name, f"{error} (request {request_id})")

    return failed


async def _continue(
    exchange: Exchange, response: Response, model: str, stream: StreamTranslator
) -> None:
    """The answer after loading progress, through the translator that wrote the progress."""
    assert exchange.translation is not None
    codec = exchange.translation.codec
    if response.status != 200:
        _, body = codec.error(response.status, await read_reply(response, model))
        error = body["error"]
        if codec.family == ANTHROPIC:
            event = stream.error(error["type"], error["message"])
        else:
            event = stream.error(error["code"] or "", error["message"])
        await exchange.sink.end(event)
        return
    require_event_stream(response, model)
    await _stream(exchange, response, model, stream)


async def _stream(
    exchange: Exchange, response: Response, model: str, stream: StreamTranslator
) -> None:
    sink = exchange.sink
    decoder = EventDecoder(model)
    async for chunk in response.aiter_stream():
        for data in decoder.feed(chunk):
            if events := _translate(stream, data, model):
                await sink.send(events)
    tail = b"".join(_translate(stream, data, model) for data in decoder.close())
    await sink.end(tail + stream.close())


def _translate(stream: StreamTranslator, data: bytes, model: str) -> bytes:
    if data == b"[DONE]":
        return b""
    return stream.feed(parse_object(data, model))


def parse_object(data: bytes, model: str) -> dict[str, object]:
    try:
        parsed = json.loads(data)
    except ValueError:
        raise UpstreamProtocolError(
            model, f"sent something that is not JSON: {data[:200]!r}"
        ) from None
    if not isinstance(parsed, dict):
        raise UpstreamProtocolError(model, "sent JSON that is not an object")
    return parsed


async def read_reply(response: Response, model: str) -> bytes:
    """A whole reply that is one JSON object, bounded."""
    body = bytearray()
    async for chunk in response.aiter_stream():
        body += chunk
        if len(body) > MAX_REPLY_BYTES:
            raise UpstreamProtocolError(model, f"answered more than {MAX_REPLY_BYTES} bytes")
    return bytes(body)
