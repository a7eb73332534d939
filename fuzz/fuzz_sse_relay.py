"""Fuzz target: the response relay, the real `Stream` stage from a model server's HTTP/1.1 bytes
(replayed in memory through `wire.ConnectionPool`'s `connect` seam) to the client's side of a
`Sink`.

Only trioswap's errors escape the stage, an UpstreamError for a response cut short or not HTTP.
A well-formed response (any status, event stream or not, framed by Content-Length, chunked with
any chunk sizes or by closing, arriving in any splits) reaches the client whole: its status, its
body byte for byte and in order, and a complete ending. After a failure, `Sink.fail` answers in
the shape the response is in: a JSON error while nothing was sent, an error event after events.
The same holds when loading progress was already streamed and the model's answer continues it;
then an answer that is no event stream cannot continue it, and ends it with an error event.
What the plain pass-through relays (`Sink.relay_writer`) is the upstream's body bytes untouched, and
when chunked they are a whole chunked encoding of the payload relayed beside them.
"""

from __future__ import annotations

import json
import sys
from contextlib import AsyncExitStack
from dataclasses import dataclass
from itertools import pairwise
from typing import TypeVar

import atheris
import httpx
import trio
from stage_fakes import NoRequestBody, Replay

with atheris.instrument_imports():
    from trioswap.config import loads
    from trioswap.errors import TrioswapError, UpstreamError, UpstreamProtocolError
    from trioswap.observe.logs import LogHub
    from trioswap.pipeline.exchange import Exchange
    from trioswap.pipeline.loading import ChatProgress
    from trioswap.pipeline.sink import (
        BYTES,
        DONE,
        EVENTS,
        PENDING,
        RelayWrite,
        ResponseState,
        Sink,
    )
    from trioswap.pipeline.stage import StageContext
    from trioswap.pipeline.stages.stream import Stream
    from trioswap.pipeline.wire import ConnectionPool, Origin, RequestTimeouts
    from trioswap.protocols.errors import Family, Headers, status_of, stream_error_event
    from trioswap.supervisor import ModelServer, Supervisor
    from trioswap.supervisor.process import ServerContext

CONFIG = loads("models:\n  m:\n    cmd: server --port ${PORT}\n")
LOGS = LogHub()
# A start that is never run: the stage only reads the config it was started with.
SERVER = ModelServer(
    CONFIG.models["m"],
    1,
    ServerContext(LOGS, httpx.AsyncClient(), 1.0, CONFIG.start_port, {}),
    frozenset(),
)
SUPERVISOR = Supervisor(CONFIG, LOGS)
REQUEST_ID = "req_fuzz"
LOADING = b'data: {"choices": [{"delta": {"reasoning_content": "Loading m"}}]}\n\n'

STATUSES = (200, 200, 200, 201, 400, 404, 422, 429, 500, 502, 503)
CONTENT_TYPES = (
    b"text/event-stream",
    b"text/event-stream; charset=utf-8",
    b"Text/Event-Stream",  # media types are case-insensitive
    b"application/json",
    b"application/json; charset=utf-8",
    b"text/plain",
    b"",
)
TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"content-type"})
INFORMATIONAL = (
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
)
HEX = b"0123456789abcdefABCDEF"
HOP_BY_HOP = (b"transfer-encoding", b"connection", b"keep-alive", b"te", b"trailer", b"upgrade")


class Recorder:
    """The Sink's transport: what the client was sent, checked to be one well-ordered response."""

    def __init__(self) -> None:
        self.head: tuple[int, Headers] | None = None
        self.chunks: list[tuple[bytes, bool]] = []
        # What came through `relay`: the bytes as framed upstream, the payload they carry.
        self.raw: list[bytes] = []
        self.relayed: list[bytes] = []
        self.chunked = False

    async def start(self, status: int, headers: Headers) -> None:
        assert self.head is None, "a second response head"
        self.head = (status, headers)

    async def body(self, chunk: bytes, more: bool) -> None:
        assert self.head is not None, "a body chunk before the head"
        assert not self.ended, "a body chunk after the end"
        self.chunks.append((chunk, more))

    def relay_writer(self, chunked: bool, tap: object = None) -> RelayWrite:
        assert tap is None, "no observer here"

        async def write(raw: bytes, body: bytes) -> None:
            assert chunked or raw == body, "unframed bytes relayed unlike their payload"
            assert not self.raw or chunked == self.chunked, "the framing changed mid-response"
            await self.body(body, True)
            self.chunked = chunked
            self.raw.append(raw)
            self.relayed.append(body)

        return write

    def check_framing(self) -> None:
        """After a response relayed to its end: chunked bytes encode what was relayed."""
        if self.chunked:
            assert dechunk(b"".join(self.raw)) == b"".join(self.relayed)

    @property
    def ended(self) -> bool:
        return bool(self.chunks) and not self.chunks[-1][1]

    @property
    def data(self) -> bytes:
        return b"".join(chunk for chunk, _ in self.chunks)


@dataclass(frozen=True)
class Response:
    """An upstream response as sent, and what a client must get of it."""

    wire: bytes
    status: int
    content_type: bytes
    body: bytes  # decoded: without chunked framing
    framing: str  # "length", "chunked" or "close"
    head_end: int  # where the body starts in `wire`


T = TypeVar("T")


def dechunk(raw: bytes) -> bytes:
    """The payload of a whole chunked body (size lines, each chunk's CRLF, the last chunk,
    trailers up to the blank line, nothing after); AssertionError if it is not one."""
    payload = []
    pos = 0
    while True:
        end = raw.find(b"\r\n", pos)
        size = raw[pos:end].partition(b";")[0]
        assert end >= 0 and size and not size.strip(HEX), ("a bad size line", raw[pos:])
        pos = end + 2
        if not int(size, 16):
            break
        end = pos + int(size, 16)
        assert raw[end : end + 2] == b"\r\n", ("chunk data not its size", raw[pos:])
        payload.append(raw[pos:end])
        pos = end + 2
    while (end := raw.find(b"\r\n", pos)) > pos:  # trailers
        pos = end + 2
    assert end == pos == len(raw) - 2, ("no end or bytes after it", raw[pos:])
    return b"".join(payload)


def pick(fdp: atheris.FuzzedDataProvider, options: tuple[T, ...]) -> T:
    return options[fdp.ConsumeIntInRange(0, len(options) - 1)]


def token(fdp: atheris.FuzzedDataProvider, size: int) -> bytes:
    return bytes(TOKEN[b % len(TOKEN)] for b in fdp.ConsumeBytes(size)) or b"x"


def field_value(fdp: atheris.FuzzedDataProvider) -> bytes:
    # Visible ASCII and obs-text, with single spaces inside (h11's field-content).
    raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 24))
    value = bytes(b if 0x21 <= b <= 0x7E or b >= 0x80 else 0x20 for b in raw)
    return b" ".join(value.split())


def event_body(fdp: atheris.FuzzedDataProvider) -> bytes:
    events = []
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        newline = pick(fdp, (b"\n", b"\r\n"))
        text = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
        data = b"data: " + json.dumps({"choices": [{"delta": {"content": text}}]}).encode()
        prefix = pick(fdp, (b"", b"event: message" + newline, b": keep-alive" + newline))
        events.append(prefix + data + newline + newline)
    if fdp.ConsumeBool():
        events.append(b"data: [DONE]\n\n")
    return b"".join(events)


def chunked(fdp: atheris.FuzzedDataProvider, body: bytes) -> bytes:
    out = []
    rest = body
    while rest:
        size = fdp.ConsumeIntInRange(1, len(rest))
        size_line = (b"%X" if fdp.ConsumeBool() else b"%x") % size
        if fdp.ConsumeBool():
            size_line += b";ext=" + token(fdp, 4)
        out.append(size_line + b"\r\n" + rest[:size] + b"\r\n")
        rest = rest[size:]
    trailer = b"x-trailer: " + token(fdp, 8) + b"\r\n" if fdp.ConsumeBool() else b""
    return b"".join(out) + b"0\r\n" + trailer + b"\r\n"


def response(fdp: atheris.FuzzedDataProvider) -> Response:
    status = pick(fdp, STATUSES) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(200, 599)
    if status in (204, 304):  # never have a body
        status = 200
    content_type = pick(fdp, CONTENT_TYPES)
    if content_type.lower().startswith(b"text/event-stream"):
        body = event_body(fdp)
    else:
        body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512))
    headers = [b"Content-Type: " + content_type] if content_type else []
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        name = token(fdp, fdp.ConsumeIntInRange(1, 16))
        if name.lower() not in FRAMING_HEADERS:
            headers.insert(fdp.ConsumeIntInRange(0, len(headers)), name + b": " + field_value(fdp))
    framing = pick(fdp, ("length", "chunked", "close"))
    if framing == "length":
        headers.append(b"Content-Length: %d" % len(body))
        payload = body
    elif framing == "chunked":
        headers.append(b"Transfer-Encoding: " + pick(fdp, (b"chunked", b"Chunked")))
        payload = chunked(fdp, body)
    else:
        payload = body
    informational = (b"", b"", b"", b"", b"", b"", *INFORMATIONAL)[fdp.ConsumeIntInRange(0, 7)]
    reason = pick(fdp, (b"OK", b"", b"Whatever You Like"))
    head = b"\r\n".join([b"HTTP/1.1 %d %s" % (status, reason), *headers, b"", b""])
    head = informational + head
    return Response(head + payload, status, content_type, body, framing, len(head))


def splits(fdp: atheris.FuzzedDataProvider, wire: bytes) -> list[bytes]:
    """The bytes as the network hands them over: in pieces of any size (never empty, which
    would read as the connection closing)."""
    if not wire:
        return []
    cuts = sorted({fdp.ConsumeIntInRange(1, len(wire)) for _ in range(fdp.ConsumeIntInRange(0, 6))})
    return [wire[a:b] for a, b in pairwise([0, *cuts, len(wire)]) if b > a]


async def relay(
    pieces: list[bytes], family: Family, loading: bool
) -> tuple[Recorder, TrioswapError | None, bytes]:
    """What the client got, the error if the stage failed, and the body bytes the client had
    been sent before the failure."""
    transport = Recorder()
    sink = Sink(transport, family)
    progress = None
    if loading:  # the swap stage sent loading progress while the model started
        progress = ChatProgress({"stream": True}, "m")
        sink.stream_error = progress.failed
        await sink.start(200, [(b"content-type", b"text/event-stream")], events=True)
        await sink.send(LOADING)
    exchange = Exchange(
        method="POST",
        path="/v1/chat/completions",
        raw_path=b"/v1/chat/completions",
        query=b"",
        headers=[(b"content-type", b"application/json")],
        sink=sink,
        stack=AsyncExitStack(),
        request_body=NoRequestBody(),
        body=b'{"model": "m", "stream": true}',
        model_name="m",
        model_id="m",
        upstream_path=b"/v1/chat/completions",
        server=SERVER,
        loading=progress,
    )

    async def connect(origin: Origin, timeouts: RequestTimeouts) -> Replay:
        await trio.lowlevel.checkpoint()
        return Replay(pieces)

    async with ConnectionPool(connect=connect) as pool:
        try:
            await Stream(StageContext(CONFIG, SUPERVISOR, lambda _: pool))(exchange)
        except TrioswapError as error:
            assert isinstance(error, UpstreamError), repr(error)
            before = sink.state
            relayed = transport.data
            sent = len(transport.chunks)
            await sink.fail(error, REQUEST_ID)
            check_failure(transport, sink, before, sent, error)
            return transport, error, relayed
    assert sink.state is DONE and transport.ended
    transport.check_framing()
    return transport, None, transport.data


def check_failure(
    transport: Recorder, sink: Sink, before: ResponseState, sent: int, error: TrioswapError
) -> None:
    assert sink.state is DONE
    if before is PENDING:
        assert transport.head is not None and transport.ended
        status, headers = transport.head
        assert status == status_of(error)
        assert (b"content-type", b"application/json") in headers
        assert (b"content-length", b"%d" % len(transport.data)) in headers
        assert json.loads(transport.data)["request_id"] == REQUEST_ID
    elif before is EVENTS:
        assert transport.ended
        assert transport.data.endswith(stream_error_event(sink.family, error, REQUEST_ID))
    else:
        # Bytes already streamed: the transport ends the connection without completing it.
        assert before is BYTES or before is DONE, before
        assert len(transport.chunks) == sent


def check_relayed(transport: Recorder, upstream: Response, body: bytes, raw: bytes) -> None:
    """A complete response, passed on whole; `raw` is its body as it came on the wire, which
    the pass-through relays untouched."""
    assert transport.head is not None and transport.ended
    status, headers = transport.head
    assert status == upstream.status, (status, upstream.status)
    assert transport.data == body
    assert b"".join(transport.raw) == raw, (transport.raw, raw)
    names = {name.lower() for name, _ in headers}
    assert not names.intersection(HOP_BY_HOP), names
    events = upstream.content_type.lower().startswith(b"text/event-stream")
    assert ((b"x-accel-buffering", b"no") in headers) == events, (upstream.content_type, headers)
    length = (b"content-length", b"%d" % len(body))
    assert (length in headers) == (upstream.framing == "length" and not events), headers


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    family = pick(fdp, (Family.OPENAI, Family.ANTHROPIC))
    loading = fdp.ConsumeIntInRange(0, 3) == 0
    if loading:  # progress in chat chunks: the chat completions route, whose family is openai
        family = Family.OPENAI
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 0:  # anything at all from the model server
        wire = fdp.ConsumeBytes(fdp.remaining_bytes())
        trio.run(relay, splits(fdp, wire), family, loading)
        return
    upstream = response(fdp)
    wire = upstream.wire
    complete = True
    if mode == 1 and wire:  # cut short
        wire = wire[: fdp.ConsumeIntInRange(0, len(wire) - 1)]
        complete = upstream.framing == "close" and len(wire) >= upstream.head_end
    transport, error, relayed = trio.run(relay, splits(fdp, wire), family, loading)
    if not complete:
        assert error is not None, "a response cut short was passed on as complete"
        # What got through before the cut is the start of the body, in order.
        before = LOADING if loading else b""
        assert relayed.startswith(before) and upstream.body.startswith(relayed[len(before) :])
        return
    body = upstream.body if len(wire) == len(upstream.wire) else wire[upstream.head_end :]
    if not loading:
        assert error is None, repr(error)
        check_relayed(transport, upstream, body, wire[upstream.head_end :])
    elif upstream.status == 200 and upstream.content_type.lower().startswith(b"text/event-stream"):
        assert error is None, repr(error)
        assert transport.ended and transport.data == LOADING + body
    elif upstream.status == 200:  # not events: nothing of it can continue the event stream
        assert isinstance(error, UpstreamProtocolError), repr(error)
        assert relayed == LOADING
    else:
        assert isinstance(error, UpstreamError) and str(upstream.status) in str(error)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
