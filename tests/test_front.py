"""The front door's HTTP/1.1 on the wire (web/front.py, http1.py, internal.py), through a real
trioswap and raw sockets: keep-alive and pipelining across inference and control routes, the
control plane relayed, Expect: 100-continue, HTTP/1.0 clients, malformed and oversized heads,
bodies answered before they are read, client disconnects."""

from __future__ import annotations

import json
import signal

import trio

from tests.conftest import RESPONDER, LaunchFn, Trioswap, chat, random_start_port, wait_until
from tests.test_hostile_web import Raw, connect, parse, read_all


def config(flags: str = "") -> str:
    return f"""
startPort: {random_start_port()}
models:
  m:
    cmd: {RESPONDER} --port ${{PORT}} --model-id m {flags}
"""


def post(path: str, body: bytes, *headers: str, version: str = "1.1") -> bytes:
    lines = [f"POST {path} HTTP/{version}", "host: localhost", f"content-length: {len(body)}"]
    lines.extend(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def get(path: str, *headers: str) -> bytes:
    return (
        "\r\n".join([f"GET {path} HTTP/1.1", "host: localhost", *headers]) + "\r\n\r\n"
    ).encode()


class Reader:
    """Responses off one connection, one at a time (Content-Length or chunked)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        assert data, "the server closed the connection"
        self.buffer += data

    async def take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self._fill()
        taken, self.buffer = self.buffer[:size], self.buffer[size:]
        return taken

    async def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            await self._fill()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    async def take_head(self) -> bytes:
        """The head of an answer without a body (to HEAD)."""
        while b"\r\n\r\n" not in self.buffer:
            await self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head

    async def response(self) -> Raw:
        while b"\r\n\r\n" not in self.buffer:
            await self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        raw = parse(head + b"\r\n\r\n")
        if "content-length" in raw.headers:
            raw.body = await self.take(int(raw.headers["content-length"]))
            return raw
        assert raw.headers.get("transfer-encoding") == "chunked", raw.headers
        while size := int((await self.line()).split(b";")[0], 16):
            raw.body += await self.take(size)
            assert await self.line() == b""
        while await self.line():  # trailers, then the blank line
            pass
        return raw


async def started(ts: Trioswap) -> None:
    async with ts.client() as client:
        assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200


async def test_one_connection_carries_inference_and_control_requests(launch: LaunchFn) -> None:
    ts = await launch(config())
    await started(ts)
    body = json.dumps(chat()).encode()
    stream = await connect(ts)
    async with stream:
        reader = Reader(stream)
        for _ in range(3):
            await stream.send_all(post("/v1/chat/completions", body))
            answer = await reader.response()
            assert answer.status == 200 and answer.json()["object"] == "chat.completion"
            await stream.send_all(get("/running"))
            running = await reader.response()
            assert running.status == 200 and "running" in running.json()
            await stream.send_all(get("/health"))
            assert (await reader.response()).body == b"OK"


async def test_pipelined_requests_are_answered_in_order(launch: LaunchFn) -> None:
    ts = await launch(config())
    await started(ts)
    stream = await connect(ts)
    async with stream:
        requests = [
            post("/v1/chat/completions", json.dumps(chat(stream=True)).encode()),
            get("/v1/models"),
            post("/v1/chat/completions", json.dumps(chat()).encode()),
            get("/health"),
        ]
        await stream.send_all(b"".join(requests))
        reader = Reader(stream)
        streamed = await reader.response()
        assert streamed.headers["content-type"].startswith("text/event-stream")
        assert streamed.body.rstrip().endswith(b"data: [DONE]")
        assert (await reader.response()).json()["object"] == "list"
        assert (await reader.response()).json()["object"] == "chat.completion"
        assert (await reader.response()).body == b"OK"


async def test_expect_100_continue_gets_its_interim_answer(launch: LaunchFn) -> None:
    ts = await launch(config())
    await started(ts)
    body = json.dumps(chat()).encode()
    stream = await connect(ts)
    async with stream:
        head = post("/v1/chat/completions", b"", "expect: 100-continue", "connection: close")
        head = head.replace(b"content-length: 0", f"content-length: {len(body)}".encode())
        await stream.send_all(head)
        with trio.fail_after(10):
            interim = await stream.receive_some(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        await stream.send_all(body)
        answer = parse(await read_all(stream))
    assert answer.status == 200 and answer.json()["object"] == "chat.completion"


async def test_expect_100_continue_on_a_control_route(launch: LaunchFn) -> None:
    """Relayed to the control plane, the request still gets one interim answer, then its own."""
    ts = await launch(config())
    body = b'{"policy": "off"}'
    stream = await connect(ts)
    async with stream:
        head = post(
            "/api/model/m/prompt-optimization",
            b"",
            "expect: 100-continue",
            "content-type: application/json",
        ).replace(b"content-length: 0", f"content-length: {len(body)}".encode())
        await stream.send_all(head)
        reader = Reader(stream)
        with trio.fail_after(10):
            while b"\r\n\r\n" not in reader.buffer:
                await reader._fill()
        interim, _, reader.buffer = reader.buffer.partition(b"\r\n\r\n")
        assert interim == b"HTTP/1.1 100 Continue"
        await stream.send_all(body)
        answer = await reader.response()
        assert answer.status == 200, answer
        await stream.send_all(b"HEAD /health HTTP/1.1\r\nhost: localhost\r\n\r\n")
        await stream.send_all(get("/running"))
        assert (await reader.take_head()).startswith(b"HTTP/1.1 200")
        assert (await reader.response()).json()["running"] == []


async def test_an_http10_client_gets_a_stream_ended_by_the_close(launch: LaunchFn) -> None:
    ts = await launch(config())
    await started(ts)
    stream = await connect(ts)
    async with stream:
        body = json.dumps(chat(stream=True)).encode()
        await stream.send_all(post("/v1/chat/completions", body, version="1.0"))
        data = await read_all(stream)
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower() and b"connection: close" in head.lower()
    assert payload.rstrip().endswith(b"data: [DONE]")


async def test_malformed_and_oversized_heads_are_refused(launch: LaunchFn) -> None:
    ts = await launch(config())
    for request, status in (
        (b"GET / HTTP/1.1\r\nhost: localhost\r\nbad header\r\n\r\n", 400),
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (get("/v1/models", "x-big: " + "a" * (200 * 1024)), 431),
    ):
        stream = await connect(ts)
        async with stream:
            try:
                await stream.send_all(request)
            except trio.BrokenResourceError:
                pass
            answer = parse(await read_all(stream))
        assert answer.status == status
        assert "error" in answer.json()


async def test_an_answer_before_the_body_closes_the_connection(launch: LaunchFn) -> None:
    """Refused on its headers (unknown model in the query is not it: no key), a request whose
    body has not all arrived is answered with `Connection: close`."""
    ts = await launch(config() + "apiKeys: [sk-front]\n")
    stream = await connect(ts)
    async with stream:
        await stream.send_all(
            post("/v1/chat/completions", b"").replace(b"length: 0", b"length: 100")
        )
        answer = parse(await read_all(stream))
    assert answer.status == 401
    assert answer.headers["connection"] == "close"


async def test_a_client_gone_mid_stream_cancels_the_exchange(launch: LaunchFn) -> None:
    ts = await launch(config("--tokens-per-second 5"))
    await started(ts)
    stream = await connect(ts)
    body = json.dumps(chat(stream=True)).encode()
    await stream.send_all(post("/v1/chat/completions", body))
    await stream.receive_some(65536)

    async def in_flight() -> int:
        return int((await ts.running())["m"]["in_flight"])  # type: ignore[call-overload]

    assert await in_flight() == 1
    await stream.aclose()
    await wait_until(lambda: _is(in_flight, 0))


async def _is(value: object, expected: int) -> bool:
    return await value() == expected  # type: ignore[operator, no-any-return]


async def test_the_control_plane_streams_through_the_front(launch: LaunchFn) -> None:
    """A control route's endless stream (the live log) arrives as it is written."""
    ts = await launch(config())
    stream = await connect(ts)
    async with stream:
        await stream.send_all(get("/logs/stream"))
        seen = await stream.receive_some(65536)
        assert seen.startswith(b"HTTP/1.1 200")
        await started(ts)
        with trio.fail_after(10):
            while b"model m" not in seen:
                seen += await stream.receive_some(65536)
    assert b"model m" in seen


async def test_shutdown_ends_idle_keep_alive_connections_while_streams_drain(
    launch: LaunchFn,
) -> None:
    ts = await launch(config("--tokens-per-second 5 --response-text '" + "word " * 100 + "'"))
    async with await connect(ts) as streaming, await connect(ts) as idle:
        body = json.dumps(chat(stream=True)).encode()
        await streaming.send_all(post("/v1/chat/completions", body))
        await streaming.receive_some(65536)
        await idle.send_all(get("/health"))
        assert (await Reader(idle).response()).status == 200
        # `idle` waits for its next request, with 75 s of keep-alive ahead; `streaming` gets
        # shutdownTimeout to finish. The idle one is closed at once, not when the drain ends.
        ts.process.send_signal(signal.SIGINT)
        with trio.fail_after(5):
            assert await idle.receive_some(65536) == b""
        assert ts.process.returncode is None
        assert await streaming.receive_some(65536)  # still streaming
    # The stream's client gone, nothing is in flight: trioswap ends.
    with trio.fail_after(10):
        assert await ts.process.wait() == 0
