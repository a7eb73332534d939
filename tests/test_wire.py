"""trioswap's upstream HTTP/1.1 client (`pipeline.wire`): responses as the bytes that came on
the wire and as payload, keep-alive reuse and when a connection is not reused, request framing,
timeouts, and `transport_errors`' classes (httpcore's names) for every failure. Servers are
small trio servers in the test that send exact bytes on real sockets; the property test
replays bytes from memory."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import responders
from trioswap.pipeline.transport_errors import (
    ConnectError,
    ConnectTimeout,
    LocalProtocolError,
    ReadTimeout,
    RemoteProtocolError,
    TLSHandshakeTimeout,
    UnsupportedProtocol,
    WriteTimeout,
)
from trioswap.pipeline.wire import ConnectionPool, Origin, RequestTimeouts

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class Upstream:
    """Answers the requests on each connection with the next of `answers` (whatever they
    asked), in order; `close` ends a connection after each answer. Keeps what it was sent."""

    def __init__(self, answers: list[bytes], close: bool = False) -> None:
        self.answers = answers
        self.close = close
        self.connections = 0
        self.requests: list[bytes] = []
        # How many reads each request took to arrive whole.
        self.reads: list[int] = []

    async def serve(self, listener: trio.SocketListener, task_status: trio.TaskStatus) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                nursery.start_soon(self.one, await listener.accept())

    async def one(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        async with stream:
            while self.answers:
                if not await self.receive_request(stream):
                    return
                await stream.send_all(self.answers.pop(0))
                if self.close:
                    return

    async def receive_request(self, stream: trio.SocketStream) -> bool:
        data, reads = b"", 0
        while not _whole(data):
            more = await stream.receive_some(65536)
            if not more:
                return False
            data += more
            reads += 1
        self.requests.append(data)
        self.reads.append(reads)
        return True


def _whole(request: bytes) -> bool:
    head, found, body = request.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
        if line.startswith(b"transfer-encoding:"):
            return body.endswith(b"0\r\n\r\n")
    return True


@asynccontextmanager
async def serving(upstream: Upstream) -> AsyncIterator[str]:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener, trio.open_nursery() as nursery:
        await nursery.start(upstream.serve, listener)
        yield f"http://127.0.0.1:{listener.socket.getsockname()[1]}"
        nursery.cancel_scope.cancel()


async def get_raw(
    pool: ConnectionPool, url: str, method: bytes = b"GET", path: str = "/x", **request: object
) -> tuple[int, bytes, bytes, bool]:
    """(status, raw body, payload, chunked) of one request, read by `relay`."""
    async with pool.stream(method, url + path, **request) as response:  # type: ignore[arg-type]
        raw = body = b""

        async def write(wire: bytes, payload: bytes) -> None:
            nonlocal raw, body
            raw += wire
            body += payload

        await response.relay(write)
        return response.status, raw, body, response.chunked


CHUNKED_BODY = b"3;ext=1\r\nabc\r\n0A\r\n0123456789\r\n0\r\nx-trailer: yes\r\n\r\n"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED_BODY


async def test_chunked_with_extensions_and_trailers_relayed_as_sent_and_reused() -> None:
    upstream = Upstream([CHUNKED, CHUNKED])
    async with serving(upstream) as url, ConnectionPool() as pool:
        for _ in range(2):
            status, raw, body, chunked = await get_raw(pool, url)
            assert (status, raw, body, chunked) == (200, CHUNKED_BODY, b"abc0123456789", True)
    assert upstream.connections == 1


async def test_headers_as_received_and_payload_through_aiter_stream() -> None:
    answer = b"HTTP/1.1 201 Created\r\nX-Case: Kept\r\nContent-Length: 5\r\n\r\nhello"
    async with (
        serving(Upstream([answer])) as url,
        ConnectionPool() as pool,
        pool.stream(b"GET", url + "/") as response,
    ):
        assert response.status == 201
        assert response.headers == [(b"X-Case", b"Kept"), (b"Content-Length", b"5")]
        assert [chunk async for chunk in response.aiter_stream()] == [b"hello"]
        assert not response.chunked


async def test_a_close_delimited_body_is_read_to_the_end_and_not_reused() -> None:
    answer = b"HTTP/1.1 200 OK\r\n\r\nall of it"
    upstream = Upstream([answer, answer], close=True)
    async with serving(upstream) as url, ConnectionPool() as pool:
        for _ in range(2):
            assert await get_raw(pool, url) == (200, b"all of it", b"all of it", False)
    assert upstream.connections == 2


async def test_connection_close_is_not_reused() -> None:
    answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    upstream = Upstream([answer, answer])
    async with serving(upstream) as url, ConnectionPool() as pool:
        for _ in range(2):
            assert (await get_raw(pool, url))[2] == b"ok"
    assert upstream.connections == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ],
)
async def test_a_body_cut_short_is_a_remote_protocol_error(answer: bytes) -> None:
    async with serving(Upstream([answer], close=True)) as url, ConnectionPool() as pool:
        with pytest.raises(RemoteProtocolError):
            await get_raw(pool, url)


async def test_a_server_gone_before_answering_is_a_remote_protocol_error() -> None:
    async with serving(Upstream([b""], close=True)) as url, ConnectionPool() as pool:
        with pytest.raises(RemoteProtocolError, match="without sending a response"):
            await get_raw(pool, url)


@pytest.mark.parametrize("answer", [b"HTTP/1.1 2OO OK\r\n\r\n", b"HTTP/1.1 200 OK\nx: y\n\n"])
async def test_a_malformed_head_is_a_remote_protocol_error(answer: bytes) -> None:
    async with serving(Upstream([answer], close=True)) as url, ConnectionPool() as pool:
        with pytest.raises(RemoteProtocolError):
            await get_raw(pool, url)


@pytest.mark.parametrize(
    "answer",
    [OK + b"HTTP/1.1 200 OK\r\n\r\n", CHUNKED + b"junk", OK.replace(b"2\r\n\r\nok", b"0\r\n\r\n!")],
)
async def test_bytes_after_the_end_are_not_relayed_and_drop_the_connection(answer: bytes) -> None:
    upstream = Upstream([answer, OK])
    async with serving(upstream) as url, ConnectionPool() as pool:
        status, raw, _, _ = await get_raw(pool, url)
        head_end = answer.index(b"\r\n\r\n") + 4
        expected = CHUNKED_BODY if answer.startswith(CHUNKED) else answer[head_end:][: len(raw)]
        assert status == 200 and raw == expected and not raw.endswith((b"junk", b"!"))
        assert await get_raw(pool, url) == (200, b"ok", b"ok", False)
    assert upstream.connections == 2


async def test_interim_responses_are_skipped() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK
    upstream = Upstream([answer, OK])
    async with serving(upstream) as url, ConnectionPool() as pool:
        assert await get_raw(pool, url) == (200, b"ok", b"ok", False)
        assert await get_raw(pool, url) == (200, b"ok", b"ok", False)
    assert upstream.connections == 1


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
        (b"HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        (b"GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        (b"GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n"),
    ],
)
async def test_responses_without_a_body(method: bytes, answer: bytes) -> None:
    upstream = Upstream([answer, OK])
    async with serving(upstream) as url, ConnectionPool() as pool:
        _, raw, body, chunked = await get_raw(pool, url, method)
        assert (raw, body, chunked) == (b"", b"", False)
        assert await get_raw(pool, url) == (200, b"ok", b"ok", False)
    assert upstream.connections == 1


async def test_leaving_early_closes_the_connection() -> None:
    upstream = Upstream([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", OK])
    async with serving(upstream) as url, ConnectionPool() as pool:
        async with pool.stream(b"GET", url + "/") as response:
            async for _ in response.aiter_stream():
                break
        assert await get_raw(pool, url) == (200, b"ok", b"ok", False)
    assert upstream.connections == 2


async def test_an_idle_connection_the_server_closed_is_not_used() -> None:
    upstream = Upstream([OK, OK], close=True)
    async with serving(upstream) as url, ConnectionPool() as pool:
        assert (await get_raw(pool, url))[2] == b"ok"
        await trio.testing.wait_all_tasks_blocked()
        assert (await get_raw(pool, url))[2] == b"ok"
    assert upstream.connections == 2


async def test_head_and_small_body_go_in_one_write_with_host_and_length() -> None:
    upstream = Upstream([OK])
    async with serving(upstream) as url, ConnectionPool() as pool:
        await get_raw(pool, url, b"POST", headers=[(b"x-a", b"1")], content=b"{}" * 1000)
    port = url.rsplit(":", 1)[1]
    assert upstream.requests == [
        b"POST /x HTTP/1.1\r\nhost: 127.0.0.1:%s\r\nx-a: 1\r\ncontent-length: 2000\r\n\r\n"
        % port.encode()
        + b"{}" * 1000
    ]
    assert upstream.reads == [1]


class Pieces:
    """A request body streamed in these pieces, then, if `endless`, in more forever."""

    def __init__(self, *chunks: bytes, endless: bool = False) -> None:
        self.chunks = list(chunks)
        self.endless = endless

    def __aiter__(self) -> Pieces:
        return self

    async def __anext__(self) -> bytes:
        await trio.lowlevel.checkpoint()
        if self.endless:
            return b"x" * 1_000_000
        if not self.chunks:
            raise StopAsyncIteration
        return self.chunks.pop(0)


async def test_a_streamed_body_goes_as_the_client_framed_it() -> None:
    upstream = Upstream([OK, OK])
    async with serving(upstream) as url, ConnectionPool() as pool:
        chunked = [(b"transfer-encoding", b"chunked")]
        await get_raw(pool, url, b"POST", headers=chunked, content=Pieces(b"ab", b"", b"c"))
        length = [(b"content-length", b"3")]
        await get_raw(pool, url, b"POST", headers=length, content=Pieces(b"ab", b"c"))
    assert upstream.requests[0].endswith(b"\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n")
    assert upstream.requests[1].endswith(b"content-length: 3\r\n\r\nabc")


@pytest.mark.parametrize("body", [(b"abcd",), (b"a",)])
async def test_a_streamed_body_that_breaks_its_content_length_is_refused(
    body: tuple[bytes, ...],
) -> None:
    async with serving(Upstream([OK])) as url, ConnectionPool() as pool:
        with pytest.raises(LocalProtocolError):
            headers = [(b"content-length", b"3")]
            await get_raw(pool, url, b"POST", headers=headers, content=Pieces(*body))


async def test_a_header_that_would_split_the_head_is_refused() -> None:
    async with ConnectionPool() as pool:
        with pytest.raises(LocalProtocolError):
            await get_raw(pool, "http://127.0.0.1:9", headers=[(b"x", b"a\r\nb: c")])


async def test_connect_refused_and_unsupported_scheme() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    async with ConnectionPool() as pool:
        with pytest.raises(ConnectError):
            await get_raw(pool, f"http://127.0.0.1:{port}")
        with pytest.raises(UnsupportedProtocol):
            await get_raw(pool, "ftp://127.0.0.1:21")


TIMEOUTS = {"timeout": {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": None}}


async def test_a_silent_server_is_a_read_timeout(autojump_clock: trio.testing.MockClock) -> None:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener, ConnectionPool() as pool:
        url = f"http://127.0.0.1:{listener.socket.getsockname()[1]}"
        with pytest.raises(ReadTimeout):
            await get_raw(pool, url, extensions=TIMEOUTS)


def timeouts(read: float) -> dict[str, RequestTimeouts]:
    return {"timeout": {"connect": 5.0, "read": read, "write": 5.0, "pool": None}}


async def test_silence_mid_body_is_a_read_timeout(autojump_clock: trio.testing.MockClock) -> None:
    # One chunk, then nothing (the upstream waits for a next request): the read after it times
    # out, counted from when it began.
    partial = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n"
    async with (
        serving(Upstream([partial, b""])) as url,
        ConnectionPool() as pool,
        pool.stream(b"GET", url + "/x", extensions=timeouts(5.0)) as response,
    ):
        began: list[float] = []

        async def write(raw: bytes, body: bytes) -> None:
            assert body == b"abc" and not began
            await trio.sleep(100)  # the consumer's own pace is not the upstream's silence
            began.append(trio.current_time())

        with pytest.raises(ReadTimeout, match="sent nothing for 5 s"):
            await response.relay(write)
        assert trio.current_time() - began[0] == pytest.approx(5.0, abs=0.01)


async def test_a_slow_reader_is_not_a_silent_upstream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    body = bytes(400_000)
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
    received = b""
    async with (
        serving(Upstream([answer])) as url,
        ConnectionPool() as pool,
        pool.stream(b"GET", url + "/x", extensions=timeouts(1.0)) as response,
    ):
        async for piece in response.aiter_stream():
            received += piece
            await trio.sleep(10)
    assert received == body


async def test_a_short_silence_ends_on_time_while_a_long_one_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ended: dict[str, float] = {}

    async def silent_read(name: str, url: str, read: float) -> None:
        with pytest.raises(ReadTimeout):
            await get_raw(pool, url, extensions=timeouts(read))
        ended[name] = trio.current_time()

    (first,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    (second,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with first, second, ConnectionPool() as pool, trio.open_nursery() as nursery:
        start = trio.current_time()
        for name, listener, read in [("long", first, 100.0), ("short", second, 5.0)]:
            nursery.start_soon(
                silent_read, name, f"http://127.0.0.1:{listener.socket.getsockname()[1]}", read
            )
            await trio.sleep(1)
    assert ended["short"] - start == pytest.approx(6.0, abs=0.01)
    assert ended["long"] - start == pytest.approx(100.0, abs=0.01)


async def test_a_server_that_takes_nothing_is_a_write_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener, ConnectionPool() as pool:
        url = f"http://127.0.0.1:{listener.socket.getsockname()[1]}"
        with pytest.raises(WriteTimeout):
            await get_raw(pool, url, b"POST", content=Pieces(endless=True), extensions=TIMEOUTS)


async def test_a_full_backlog_is_a_connect_timeout(autojump_clock: trio.testing.MockClock) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname())
    with listener, filler:
        async with ConnectionPool() as pool:
            with pytest.raises(ConnectTimeout):
                url = f"http://127.0.0.1:{listener.getsockname()[1]}"
                await get_raw(pool, url, extensions=TIMEOUTS)


async def test_a_silent_tls_peer_is_a_tls_handshake_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener, ConnectionPool(tls_handshake=3) as pool:
        url = f"https://127.0.0.1:{listener.socket.getsockname()[1]}"
        with pytest.raises(TLSHandshakeTimeout):
            await get_raw(pool, url, extensions=TIMEOUTS)


async def test_idle_conn_expires_idle_connections(autojump_clock: trio.testing.MockClock) -> None:
    upstream = Upstream([OK, OK, OK])
    async with serving(upstream) as url, ConnectionPool(idle_conn=10) as pool:
        await get_raw(pool, url)
        await trio.sleep(5)
        await get_raw(pool, url)
        assert upstream.connections == 1
        await trio.sleep(11)
        await get_raw(pool, url)
        assert upstream.connections == 2


async def test_close_idle_closes_an_origins_idle_connections() -> None:
    upstream = Upstream([OK, OK])
    async with serving(upstream) as url, ConnectionPool() as pool:
        await get_raw(pool, url)
        await pool.close_idle((b"http", b"127.0.0.1", int(url.rsplit(":", 1)[1])))
        await get_raw(pool, url)
    assert upstream.connections == 2


async def test_keepalive_sets_tcp_keepalive_on_the_socket() -> None:
    async with serving(Upstream([OK])) as url, ConnectionPool(keepalive=7) as pool:
        await get_raw(pool, url)
        (idle,) = pool._idle.values()
        tcp = idle[0].tcp
        assert tcp is not None
        sock = tcp.socket
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7


async def test_the_responder_streams_and_answers_on_one_connection() -> None:
    chat = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    body = json.dumps(chat).encode()
    with responders() as start:
        url = start(sys.executable, "-m", "trioswap.responder", "--port", "0", "--model-id", "r")
        async with ConnectionPool() as pool:
            for _ in range(3):
                status, raw, payload, chunked = await get_raw(
                    pool, url.rstrip("/"), b"POST", "/v1/chat/completions", content=body
                )
                assert status == 200 and chunked and raw.endswith(b"0\r\n\r\n")
                assert payload.endswith(b"data: [DONE]\n\n")
            assert sum(len(idle) for idle in pool._idle.values()) == 1


class Replay(trio.abc.Stream):
    """A connection whose server's bytes arrive in the given reads, whatever it was sent."""

    def __init__(self, reads: list[bytes]) -> None:
        self.reads = reads

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.reads.pop(0) if self.reads else b""

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


@st.composite
def chunked_wire(draw: st.DrawFn) -> tuple[bytes, bytes, list[bytes]]:
    """(the body as sent, its payload, the reads the whole response arrives in)."""
    payload = draw(st.binary(max_size=600))
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=8)))
    sent = b""
    for start, end in zip([0, *cuts], [*cuts, len(payload)], strict=True):
        if end > start:
            extension = draw(st.sampled_from([b"", b";a=b", b';q="x y"']))
            size = draw(st.sampled_from([b"%x", b"%X", b"%04x"])) % (end - start)
            sent += size + extension + b"\r\n" + payload[start:end] + b"\r\n"
    trailers = draw(st.sampled_from([b"", b"x-t: 1\r\n", b"a: b\r\nc: d\r\n"]))
    sent += b"0\r\n" + trailers + b"\r\n"
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + sent
    splits = sorted(set(draw(st.lists(st.integers(1, len(wire) - 1), max_size=10))))
    reads = [wire[a:b] for a, b in zip([0, *splits], [*splits, len(wire)], strict=True)]
    return sent, payload, reads


@settings(max_examples=120, deadline=None)
@given(chunked_wire())
def test_raw_is_the_body_as_sent_and_body_its_payload(case: tuple[bytes, bytes, list]) -> None:
    sent, payload, reads = case

    async def connect(origin: Origin, timeouts: RequestTimeouts) -> Replay:
        await trio.lowlevel.checkpoint()
        return Replay(list(reads))

    async def relay() -> tuple[bytes, bytes, bool]:
        async with ConnectionPool(connect=connect) as pool:
            _, raw, body, _ = await get_raw(pool, "http://upstream")
            async with pool.stream(b"GET", "http://upstream/") as response:
                streamed = b"".join([chunk async for chunk in response.aiter_stream()])
            return raw, body, streamed == payload

    assert trio.run(relay) == (sent, payload, True)


@st.composite
def chunk_lines(draw: st.DrawFn) -> bytes:
    """A chunked body of well-formed and hostile pieces: sizes with leading zeros past 16
    digits, spaces, bare LF, sizes that do not match their data, extensions, the last chunk."""
    pieces = []
    for _ in range(draw(st.integers(1, 6))):
        data = draw(st.binary(max_size=40))
        size = draw(
            st.sampled_from(
                [b"%x", b"%X", b"%016x", b"%017x", b" %x", b"%x ", b"x%x", b"%x;e=1", b"%x;\r"]
            )
        ) % (len(data) + draw(st.sampled_from([0, 0, 0, 1, -1])))
        end = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n"]))
        pieces.append(size + end + data + draw(st.sampled_from([b"\r\n", b"\r\n", b"", b"\n"])))
    return b"".join(pieces) + draw(st.sampled_from([b"0\r\n\r\n", b"0\r\nt: 1\r\n\r\n", b""]))


@settings(max_examples=300, deadline=None)
@given(chunk_lines())
def test_any_chunked_body_reads_the_same_whole_or_byte_by_byte(body: bytes) -> None:
    """Whole chunks in one read take a fast path; split ones the scanner. Both say the same:
    the same bytes relayed, or the same error."""
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body

    def outcome(reads: list[bytes]) -> object:
        async def connect(origin: Origin, timeouts: RequestTimeouts) -> Replay:
            await trio.lowlevel.checkpoint()
            return Replay(list(reads))

        async def relay() -> object:
            async with ConnectionPool(connect=connect) as pool:
                try:
                    return await get_raw(pool, "http://upstream")
                except RemoteProtocolError as exc:
                    return str(exc)

        return trio.run(relay)

    head_end = wire.index(b"\r\n\r\n") + 4
    whole = outcome([wire])
    split = outcome([wire[:head_end], *(bytes([b]) for b in wire[head_end:])])
    assert whole == split
