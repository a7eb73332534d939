"""A translated exchange's reply: the server's chat completions answer, turned back into the
client's family as it arrives.

An event stream is decoded event by event and each chat chunk handed to the family's stream
translator, whose events go out at once; a JSON answer (or an error) is read whole — it is one
bounded object — and translated in one piece. Every translated reply says so in
`X-Trioswap-Translated`.
"""

from __future__ import annotations

import json

import httpcore

from trioswap.errors import TrioswapError, UpstreamProtocolError
from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.translation import ANTHROPIC, TRANSLATED_HEADER, StreamTranslator
from trioswap.protocols.errors import kind_of
from trioswap.protocols.sse import EventDecoder

# A non-streamed chat completion larger than this is not one.
MAX_REPLY_BYTES = 64 * 1024 * 1024
_EVENT_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"x-accel-buffering", b"no"),
    (b"cache-control", b"no-cache"),
]


async def translated_reply(exchange: Exchange, response: httpcore.Response, model: str) -> None:
    translation = exchange.translation
    assert translation is not None
    codec, sink = translation.codec, exchange.sink
    label = [(TRANSLATED_HEADER, codec.label)]
    content_type = _content_type(response)
    if response.status != 200:
        status, body = codec.error(response.status, await read_reply(response, model))
        await sink.respond(status, json.dumps(body).encode(), label)
        return
    if not content_type.startswith(b"text/event-stream"):
        reply = codec.reply(_parse(await read_reply(response, model), model), translation.request)
        await sink.respond(200, json.dumps(reply).encode(), label)
        return
    stream = codec.stream(translation.request)

    def stream_error(error: TrioswapError, request_id: str) -> bytes:
        kind = kind_of(error)
        name = kind.anthropic_type if codec.family == ANTHROPIC else kind.openai_type
        return stream.error(name, f"{error} (request {request_id})")

    sink.stream_error = stream_error
    await sink.start(200, [*_EVENT_HEADERS, *label], events=True)
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
    return stream.feed(_parse(data, model))


def _parse(data: bytes, model: str) -> dict[str, object]:
    try:
        parsed = json.loads(data)
    except ValueError:
        raise UpstreamProtocolError(
            model, f"sent something that is not JSON: {data[:200]!r}"
        ) from None
    if not isinstance(parsed, dict):
        raise UpstreamProtocolError(model, "sent JSON that is not an object")
    return parsed


async def read_reply(response: httpcore.Response, model: str) -> bytes:
    """A whole reply that is one JSON object, bounded."""
    body = bytearray()
    async for chunk in response.aiter_stream():
        body += chunk
        if len(body) > MAX_REPLY_BYTES:
            raise UpstreamProtocolError(model, f"answered more than {MAX_REPLY_BYTES} bytes")
    return bytes(body)


def _content_type(response: httpcore.Response) -> bytes:
    for key, value in response.headers:
        if key.lower() == b"content-type":
            return value.lower()
    return b""
