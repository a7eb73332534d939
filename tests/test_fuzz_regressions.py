"""Inputs the fuzz targets in `fuzz/` found crashing, each asserting the contract it broke."""

from __future__ import annotations

from contextlib import AsyncExitStack

import h11
import httpx
import trio
from fuzz.stage_fakes import NoRequestBody, Replay

from trioswap.clip import clip
from trioswap.config import loads
from trioswap.errors import ModelNotFound
from trioswap.observe.logs import LogHub
from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.sink import RelayWrite, Sink
from trioswap.pipeline.stage import StageContext
from trioswap.pipeline.stages.resolve import body_model
from trioswap.pipeline.stages.stream import Stream
from trioswap.pipeline.upstream import upstream_url
from trioswap.pipeline.wire import ConnectionPool, Origin, RequestTimeouts
from trioswap.protocols.errors import Family, Headers
from trioswap.supervisor import ModelServer, Supervisor
from trioswap.supervisor.process import ServerContext

CONFIG = loads("models:\n  m:\n    cmd: server --port ${PORT}\n")


class Recorder:
    def __init__(self) -> None:
        self.status = 0
        self.headers: Headers = []
        self.data = b""

    async def start(self, status: int, headers: Headers) -> None:
        self.status = status
        self.headers = headers

    async def body(self, chunk: bytes, more: bool) -> None:
        self.data += chunk

    def relay_writer(self, chunked: bool, tap: object = None) -> RelayWrite:
        async def write(raw: bytes, body: bytes) -> None:
            self.data += body

        return write


async def relay(wire: bytes) -> Recorder:
    """`wire`, a model server's answer, through the stream stage as fuzz_sse_relay does."""
    recorder = Recorder()
    logs = LogHub()
    async with httpx.AsyncClient() as client:
        context = ServerContext(logs, client, 1.0, CONFIG.start_port, {})
        exchange = Exchange(
            method="POST",
            path="/v1/chat/completions",
            raw_path=b"/v1/chat/completions",
            query=b"",
            headers=[],
            sink=Sink(recorder, Family.OPENAI),
            stack=AsyncExitStack(),
            request_body=NoRequestBody(),
            body=b'{"model": "m", "stream": true}',
            model_name="m",
            model_id="m",
            upstream_path=b"/v1/chat/completions",
            server=ModelServer(CONFIG.models["m"], 1, context, frozenset()),
        )

        async def connect(origin: Origin, timeouts: RequestTimeouts) -> Replay:
            await trio.lowlevel.checkpoint()
            return Replay([wire])

        async with ConnectionPool(connect=connect) as pool:
            await Stream(StageContext(CONFIG, Supervisor(CONFIG, logs), lambda _: pool))(exchange)
    return recorder


def test_a_query_with_control_characters_can_still_be_sent_upstream() -> None:
    # fuzz_upstream_path: HTTP/2 lets a query (and a path) carry bytes HTTP/1.1 does not allow
    # raw in a request target; h11 refused the URL, so the client got a 502.
    for path, query in [(b"/", b"\x00/\x00/v1/cha"), (b"/a b\t", b"q=\x01 \x7f")]:
        url = upstream_url("http://127.0.0.1:5800", path, query)
        h11.Request(method=b"POST", target=url.target, headers=[(b"host", url.host)])


async def test_an_event_stream_is_one_whatever_the_case_of_its_media_type() -> None:
    # fuzz_sse_relay: `Text/Event-Stream` was relayed as opaque bytes, without the headers that
    # keep proxies from buffering it, and an error mid-stream would cut it without an event.
    events = b"data: 1\n\n"
    recorder = await relay(
        b"HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream\r\nContent-Length: %d\r\n\r\n"
        % len(events)
        + events
    )
    assert recorder.status == 200 and recorder.data == events
    assert (b"x-accel-buffering", b"no") in recorder.headers
    assert b"content-length" not in dict(recorder.headers)


def test_a_model_name_with_a_lone_surrogate_can_be_logged() -> None:
    # fuzz_request_model: JSON lets a client send `"\\udc00"`; the name went unescaped into
    # log lines, and GET /logs/stream, which writes them out as UTF-8, failed on it.
    name, _ = body_model(b'{"model": "x\\udc00\\ud800y"}', b"application/json")
    assert name == "x\udc00\ud800y"
    assert clip(name) == "x\\udc00\\ud800y"
    str(ModelNotFound(name)).encode()
