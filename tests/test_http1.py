"""The front door's HTTP/1.1 (web/http1.py) on its own, over in-memory trio streams: requests
parsed whatever the splits, pipelining, chunked bodies and trailers, framing conflicts, target
forms, HTTP/1.0 keep-alive, Expect: 100-continue, the reader's backpressure, head and body limits,
stalls and disconnects; and every framing `FrontTransport` writes, byte for byte and read back by
llhttp's response parser. End-to-end behaviour through a real trioswap is in test_front.py."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from itertools import pairwise
from urllib.parse import quote

import httptools
import pytest
import trio
import trio.testing
from fuzz.stage_fakes import Parsed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trioswap.deadline_watch import DeadlineWatch
from trioswap.errors import PayloadTooLarge, RequestTimeout
from trioswap.web.http1 import (
    MAX_HEAD,
    READ_AHEAD,
    READ_SIZE,
    FrontBody,
    FrontTransport,
    Http1Connection,
    MalformedRequest,
    Request,
    write_simple,
)

LIMIT = 1 << 30
TIMEOUT = 10.0
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
DATE = re.compile(rb"date: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT\r\n")


class Wire:
    """The client's end of an in-memory connection. What `send` puts in is one read for the
    reader (it takes it before `send` returns, unless it is holding back); each write the server
    makes is kept apart in `writes`."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.incoming = trio.testing.MemoryReceiveStream()
        self.outgoing = trio.testing.MemorySendStream(send_all_hook=self._record)
        self.stream = trio.StapledStream(self.outgoing, self.incoming)

    async def _record(self) -> None:
        self.writes.append(self.outgoing.get_data_nowait())

    async def send(self, data: bytes) -> None:
        self.incoming.put_data(data)
        await trio.testing.wait_all_tasks_blocked()

    async def eof(self) -> None:
        self.incoming.put_eof()
        await trio.testing.wait_all_tasks_blocked()

    @property
    def received(self) -> bytes:
        return b"".join(self.writes)


def connection(wire: Wire) -> Http1Connection:
    return Http1Connection(wire.stream)  # type: ignore[arg-type]  # any trio stream will do


async def serve(conn: Http1Connection, parsed: list[Parsed], limit: int = LIMIT) -> None:
    """The handler's side: each request in turn, its body read whole."""
    while (request := await conn.next_request()) is not None:
        body = await FrontBody(conn, request, limit, TIMEOUT).read()
        parsed.append(Parsed.of(request, body))
        conn.finished(request)


async def parse(pieces: list[bytes]) -> tuple[list[Parsed], int | None]:
    """The requests parsed from `pieces` (each one read), then the client's end; and the
    status of the MalformedRequest that stopped the connection, if one did."""
    wire = Wire()
    conn = connection(wire)
    parsed: list[Parsed] = []
    status = None

    async def handle() -> None:
        nonlocal status
        try:
            await serve(conn, parsed)
        except MalformedRequest as exc:
            status = exc.status

    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.read_loop)
        nursery.start_soon(handle)
        for piece in pieces:
            await wire.send(piece)
        await wire.eof()
    return parsed, status


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in pairwise(points) if b > a]


def request(
    method: str = "POST",
    version: str = "1.1",
    *,
    keep_alive: bool = True,
    body_done: bool = True,
) -> Request:
    parsed = Request(method, b"/v1/chat/completions", [], version, keep_alive, False)
    parsed.body_done = body_done
    return parsed


def undated(data: bytes) -> bytes:
    """`data` without its one Date line (the time it was written)."""
    found = DATE.findall(data)
    assert len(found) == 1, data
    return data.replace(found[0], b"")


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


def read_response(data: bytes) -> Response:
    """`data` as llhttp reads a response: proof that it is valid HTTP/1.1."""
    response = Response()
    parser = httptools.HttpResponseParser(response)
    parser.feed_data(data)
    response.status = parser.get_status_code()
    return response


async def written(transport: FrontTransport, wire: Wire, *steps: tuple[bytes, bool]) -> bytes:
    for chunk, more in steps:
        await transport.body(chunk, more)
    return wire.received


def transport_on(wire: Wire, parsed: Request | None, **kwargs: object) -> FrontTransport:
    options: dict = {"close_after": False, "on_gone": lambda: None, **kwargs}
    return FrontTransport(wire.stream, parsed, **options)  # type: ignore[arg-type]


# --- parsing ----------------------------------------------------------------------------------

CHAT = b'{"model": "m", "messages": []}'


def post(body: bytes = CHAT, *headers: bytes, path: bytes = b"/v1/chat/completions") -> bytes:
    lines = [b"POST " + path + b" HTTP/1.1", b"Host: localhost", *headers]
    lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def test_a_request_is_parsed_with_its_head_and_body() -> None:
    parsed, status = await parse([post(CHAT, b"X-Custom: a  b", path=b"/v1/x%20y/z?a=1&b=%20")])
    assert status is None
    [one] = parsed
    assert one == Parsed(
        "POST",
        b"/v1/x%20y/z?a=1&b=%20",
        "/v1/x y/z",
        b"/v1/x%20y/z",
        b"a=1&b=%20",
        ((b"host", b"localhost"), (b"x-custom", b"a  b"), (b"content-length", b"%d" % len(CHAT))),
        CHAT,
        "1.1",
        True,
    )


async def test_pipelined_requests_come_one_at_a_time_in_order() -> None:
    wire = b"".join([post(b"one", path=b"/1"), b"GET /2 HTTP/1.1\r\n\r\n", post(b"3", path=b"/3")])
    for pieces in ([wire], [wire[:30], wire[30:]], [bytes([b]) for b in wire]):
        parsed, status = await parse(pieces)
        assert status is None
        assert [(p.method, p.path, p.body) for p in parsed] == [
            ("POST", "/1", b"one"),
            ("GET", "/2", b""),
            ("POST", "/3", b"3"),
        ]


async def test_a_chunked_body_with_extensions_and_trailers() -> None:
    wire = (
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-Before: 1\r\n\r\n"
        b'5;name=value\r\nhello\r\n1;a;b="q"\r\n \r\nA\r\n0123456789\r\n'
        b"0\r\nX-Trailer: secret\r\nContent-Length: 99\r\n\r\n"
        b"GET /next HTTP/1.1\r\n\r\n"
    )
    parsed, status = await parse([wire])
    assert status is None
    first, second = parsed
    assert first.body == b"hello 0123456789"
    # Trailers are not headers: nothing can smuggle a header in after the body.
    assert first.headers == ((b"transfer-encoding", b"chunked"), (b"x-before", b"1"))
    assert first.keep_alive
    assert second.path == "/next"


@pytest.mark.parametrize("order", ["length first", "chunked first"])
async def test_content_length_beside_chunked_the_chunks_count_and_the_connection_ends(
    order: str,
) -> None:
    framing = [b"Content-Length: 3", b"Transfer-Encoding: chunked"]
    if order == "chunked first":
        framing.reverse()
    head = b"\r\n".join([b"POST / HTTP/1.1", *framing]) + b"\r\n\r\n"
    wire = Wire()
    conn = connection(wire)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.read_loop)
        await wire.send(head + b"6\r\nabcdef\r\n0\r\n\r\n")
        one = await conn.next_request()
        assert one is not None
        assert one.framing == [(b"transfer-encoding", b"chunked")]
        assert not one.keep_alive
        body = FrontBody(conn, one, 4, TIMEOUT)
        body.check()  # the Content-Length (3) does not count: the chunks are the body
        with pytest.raises(PayloadTooLarge):
            await body.read()
        conn.finished(one)
        assert not conn.reusable(one)
        nursery.cancel_scope.cancel()


async def test_absolute_form_targets_give_their_path_and_query() -> None:
    parsed, status = await parse(
        [
            b"GET http://example.com:8080/v1/a%2Fb?x=%20 HTTP/1.1\r\n\r\n"
            b"GET http://example.com HTTP/1.1\r\n\r\n"
            b"OPTIONS * HTTP/1.1\r\n\r\n"
        ]
    )
    assert status is None
    assert [(p.path, p.raw_path, p.query) for p in parsed] == [
        ("/v1/a/b", b"/v1/a%2Fb", b"x=%20"),
        ("/", b"/", b""),
        ("*", b"*", b""),
    ]


@pytest.mark.parametrize(
    ("target", "path"),
    [
        (b"/a%20b", "/a b"),
        (b"/%2e%2E/x", "/../x"),  # decoded, never normalized: routing sees what was sent
        (b"/caf%C3%A9", "/café"),
        (b"/bad%FFutf8", "/bad\ufffdutf8"),
        (b"/%zz", "/%zz"),
        (b"/a+b", "/a+b"),
    ],
)
async def test_path_is_percent_decoded_and_raw_path_is_as_sent(target: bytes, path: str) -> None:
    [one], status = await parse([b"GET " + target + b"?q=%41 HTTP/1.1\r\n\r\n"])
    assert status is None
    assert (one.path, one.raw_path, one.query) == (path, target, b"q=%41")


@pytest.mark.parametrize(
    ("version", "headers", "keep_alive"),
    [
        (b"1.0", b"", False),
        (b"1.0", b"Connection: keep-alive\r\n", True),
        (b"1.0", b"Connection: Keep-Alive\r\n", True),
        (b"1.1", b"", True),
        (b"1.1", b"Connection: close\r\n", False),
        (b"1.1", b"Connection: keep-alive\r\n", True),
    ],
)
async def test_keep_alive_by_version_and_connection_header(
    version: bytes, headers: bytes, keep_alive: bool
) -> None:
    [one], status = await parse([b"GET / HTTP/" + version + b"\r\n" + headers + b"\r\n"])
    assert status is None
    assert one.version == version.decode()
    assert one.keep_alive is keep_alive


async def test_http10_answers_say_how_the_connection_goes_on() -> None:
    for keep_alive, close in ((False, True), (True, False)):
        wire = Wire()
        transport = transport_on(wire, request("GET", "1.0", keep_alive=keep_alive))
        await transport.start(200, [(b"content-length", b"2")])
        sent = await written(transport, wire, (b"OK", False))
        assert (b"connection: close\r\n" in sent) is close
        # An HTTP/1.0 client closes unless the answer says the connection goes on.
        assert (b"connection: keep-alive\r\n" in sent) is not close
        assert transport.close_after is close


@pytest.mark.parametrize(
    "garbage",
    [
        b"garbage\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
    ],
)
async def test_garbage_is_a_400(garbage: bytes) -> None:
    parsed, status = await parse([garbage])
    assert (parsed, status) == ([], 400)


async def test_a_request_before_garbage_is_still_answered() -> None:
    parsed, status = await parse([b"GET /ok HTTP/1.1\r\n\r\nNOT HTTP\r\n\r\n"])
    assert [p.path for p in parsed] == ["/ok"]
    assert status == 400


async def test_a_head_that_never_ends_is_a_431() -> None:
    piece = b"X-Long: " + b"a" * 30000 + b"\r\n"
    parsed, status = await parse([b"GET / HTTP/1.1\r\n", piece, piece, piece])
    assert (parsed, status) == ([], 431)
    assert 3 * len(piece) > MAX_HEAD > 2 * len(piece)


async def test_a_head_within_the_limit_passes_in_many_reads() -> None:
    pieces = [b"GET / HTTP/1.1\r\n"] + [b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(60)]
    parsed, status = await parse([*pieces, b"\r\n"])
    assert status is None
    assert len(parsed[0].headers) == 60


async def test_a_small_pipelined_head_after_a_large_body_is_not_a_431() -> None:
    small = b"GET /2 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n"
    template = b"POST /1 HTTP/1.1\r\nContent-Length: %05d\r\n\r\n"
    size = READ_SIZE - len(template % 0) - 10
    wire = template % size + b"b" * size + small
    # One full read ending 10 bytes into the second head, a read of 4 more, then the rest.
    parsed, status = await parse(
        [wire[:READ_SIZE], wire[READ_SIZE : READ_SIZE + 4], wire[READ_SIZE + 4 :]]
    )
    assert [p.path for p in parsed] == ["/1", "/2"]
    assert status is None


async def test_an_idle_wait_ended_by_its_deadline_says_no_request_but_a_request_in_wins(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """How the front ends a keep-alive connection idle too long (or at shutdown): the
    connection's wait for its next request is on a DeadlineWatch."""
    wire = Wire()
    conn = connection(wire)
    watch = DeadlineWatch()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.read_loop)
        nursery.start_soon(watch.run)
        await wire.send(post(b"one", path=b"/1"))
        watch.begin(conn, 75.0)
        first = await conn.next_request()  # already in: the deadline does not matter
        watch.end(conn)
        assert first is not None and first.path == "/1"
        conn.finished(first)
        start = trio.current_time()
        watch.begin(conn, 75.0)
        assert await conn.next_request() is None
        watch.end(conn)
        assert trio.current_time() == start + 75.0
        assert conn.expired and not conn.gone
        nursery.cancel_scope.cancel()


async def test_an_upgrade_hands_over_the_bytes_after_its_head() -> None:
    wire = Wire()
    conn = connection(wire)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.read_loop)
        await wire.send(
            b"GET /logs/stream HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            b"\x81\x05hello"
        )
        upgrade = await conn.next_request()
        assert upgrade is not None and upgrade.upgrade
        assert conn.upgraded == b"\x81\x05hello"
        conn.finished(upgrade)
        assert await conn.next_request() is None
    # The reader has returned: the rest of the connection is the new protocol's.


# --- the property: splits do not matter -------------------------------------------------------

TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
RESERVED = (
    "content-length",
    "transfer-encoding",
    "connection",
    "proxy-connection",
    "expect",
    "upgrade",
)
names = st.text(TOKEN, min_size=1, max_size=10).filter(lambda n: n.lower() not in RESERVED)
values = st.lists(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=6),
    min_size=1,
    max_size=3,
).map(" ".join)


@dataclass(frozen=True)
class Generated:
    wire: bytes
    expected: Parsed


@st.composite
def generated(draw: st.DrawFn, *, last: bool) -> Generated:
    """One request, and what parsing it must give. Only the `last` of a pipeline may end
    the connection (llhttp refuses bytes after that)."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    segments = draw(st.lists(st.text(max_size=5), min_size=1, max_size=3))
    raw_path = ("/" + "/".join(quote(s, safe="") for s in segments)).encode()
    query = quote(draw(st.text(max_size=8)), safe="=&").encode()
    target = raw_path + (b"?" + query if query else b"")
    version = draw(st.sampled_from(["1.1", "1.0"]))
    headers = [
        (n.encode(), v.encode()) for n, v in draw(st.lists(st.tuples(names, values), max_size=4))
    ]
    if version == "1.0":
        connection = draw(st.sampled_from([b"keep-alive"] + ([b"", b"close"] if last else [])))
    else:
        connection = draw(st.sampled_from([b""] + ([b"close", b"keep-alive"] if last else [])))
    if connection:
        headers.append((b"Connection", connection))
    keep_alive = connection == b"keep-alive" or (version == "1.1" and connection != b"close")
    body = draw(st.binary(max_size=200))
    framings = ["none", "length", "chunked"] + (["both"] if last and version == "1.1" else [])
    framing = draw(st.sampled_from(framings)) if body else draw(st.sampled_from(["none", "length"]))
    if framing == "none":
        payload = b""
        body = b""
    elif framing == "length":
        headers.append((b"Content-Length", b"%d" % len(body)))
        payload = body
    else:
        if framing == "both":
            headers.append((b"Content-Length", b"%d" % len(body)))
            keep_alive = False
        headers.append((b"Transfer-Encoding", b"chunked"))
        cuts = draw(st.lists(st.integers(1, len(body)), max_size=4))
        chunks = split(body, cuts)
        sizes = [
            draw(st.sampled_from([b"%x", b"%X", b"%x;ext=1", b"%x;e"])) % len(c) for c in chunks
        ]
        trailer = draw(st.sampled_from([b"", b"X-Trailer: t\r\n"]))
        payload = b"".join(s + b"\r\n" + c + b"\r\n" for s, c in zip(sizes, chunks, strict=True))
        payload += b"0\r\n" + trailer + b"\r\n"
    head = b"%s %s HTTP/%s\r\n" % (method.encode(), target, version.encode())
    head += b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n"
    expected = Parsed(
        method,
        target,
        "/" + "/".join(segments),
        raw_path,
        query,
        tuple((n.lower(), v) for n, v in headers),
        body,
        version,
        keep_alive,
    )
    return Generated(head + payload, expected)


pipelines = st.tuples(st.lists(generated(last=False), max_size=2), generated(last=True)).map(
    lambda t: [*t[0], t[1]]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=pipelines, cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_any_requests_split_anywhere_parse_as_generated(
    requests: list[Generated], cuts: list[int]
) -> None:
    wire = b"".join(r.wire for r in requests)
    expected = [r.expected for r in requests]
    assert trio.run(parse, [wire]) == (expected, None)
    assert trio.run(parse, split(wire, cuts)) == (expected, None)
    assert trio.run(parse, [bytes([b]) for b in wire]) == (expected, None)


STARTS = [
    b"",
    b"GET / HTTP/1.1\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
]


@settings(max_examples=150, deadline=None)
@given(
    start=st.sampled_from(STARTS),
    data=st.binary(max_size=120),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
)
def test_any_bytes_give_the_same_outcome_however_split(
    start: bytes, data: bytes, cuts: list[int]
) -> None:
    wire = start + data
    assert trio.run(parse, split(wire, cuts)) == trio.run(parse, [wire])


# --- Expect: 100-continue ---------------------------------------------------------------------


async def test_continue_is_sent_once_when_the_body_is_read_before_it_arrives() -> None:
    wire = Wire()
    conn = connection(wire)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.read_loop)
        await wire.send(post(b"", b"Expect: 100-continue").replace(b"Length: 0", b"Length: 6"))
        one = await conn.next_request()
        assert one is not None
        assert wire.writes == []  # not before the body is wanted
        body = FrontBody(conn, one, LIMIT, TIMEOUT)
        pieces: list[bytes] = []

        async def read_all() -> None:
            async for piece in body:
                pieces.append(piece)

        nursery.start_soon(read_all)
        await trio.testing.wait_all_tasks_blocked()
        assert wire.writes == [CONTINUE]
        await wire.send(b"abc")
        await wire.send(b"def")
        assert b"".join(pieces) == b"abcdef"
        assert wire.writes == [CONTINUE]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("case", ["arrived", "not read", "empty", "too large"])
async def test_no_continue_when_nothing_waits_for_it(case: str) -> None:
    size = 0 if case == "empty" else 6
    wire = Wire()
    conn = connection(wire)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.read_loop)
        head = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % size
        await wire.send(head + (b"abcdef" if case == "arrived" else b""))
        one = await conn.next_request()
        assert one is not None
        body = FrontBody(conn, one, 5 if case == "too large" else LIMIT, TIMEOUT)
        if case == "too large":
            with pytest.raises(PayloadTooLarge):
                await body.read()  # refused on its declared length, before asking for it
        elif case != "not read":
            assert await body.read() == (b"abcdef" if case == "arrived" else b"")
        await trio.testing.wait_all_tasks_blocked()
        assert wire.writes == []
        nursery.cancel_scope.cancel()


async def test_no_continue_to_an_http10_client() -> None:
    wire = Wire()
    conn = connection(wire)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.read_loop)
        await wire.send(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        one = await conn.next_request()
        assert one is not None
        nursery.start_soon(FrontBody(conn, one, LIMIT, TIMEOUT).read)
        await trio.testing.wait_all_tasks_blocked()
        assert wire.writes == []
        nursery.cancel_scope.cancel()


# --- backpressure -----------------------------------------------------------------------------


async def test_the_reader_holds_back_while_more_than_read_ahead_waits() -> None:
    client, server = trio.testing.lockstep_stream_pair()
    conn = Http1Connection(server)  # type: ignore[arg-type]
    piece = 16384
    size = 8 * piece
    sent = 0

    async def sender() -> None:
        nonlocal sent
        await client.send_all(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // piece):
            # lockstep: returns only once the reader has taken all of it
            await client.send_all(b"x" * piece)
            sent += piece

    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.read_loop)
        nursery.start_soon(sender)
        one = await conn.next_request()
        assert one is not None
        await trio.testing.wait_all_tasks_blocked()
        waiting = sum(len(chunk) for chunk in one.chunks)
        # It took pieces until more than READ_AHEAD waited, and then no more: the sender is
        # blocked in the middle of its body.
        assert READ_AHEAD < waiting <= READ_AHEAD + piece
        assert sent == waiting < size
        body = b""
        async for chunk in FrontBody(conn, one, LIMIT, TIMEOUT):
            body += chunk
            waiting = sum(len(chunk) for chunk in one.chunks)
            assert waiting <= READ_AHEAD + piece
        await trio.testing.wait_all_tasks_blocked()
        assert body == b"x" * size and sent == size
        nursery.cancel_scope.cancel()


async def test_the_reader_holds_back_a_pipeline_two_requests_deep() -> None:
    client, server = trio.testing.lockstep_stream_pair()
    conn = Http1Connection(server)  # type: ignore[arg-type]
    sent = 0

    async def sender() -> None:
        nonlocal sent
        for i in range(5):
            await client.send_all(b"GET /%d HTTP/1.1\r\n\r\n" % i)
            sent += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.read_loop)
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        assert sent == 2
        paths = []
        while len(paths) < 5:
            one = await conn.next_request()
            assert one is not None
            paths.append(one.path)
            conn.finished(one)
            await trio.testing.wait_all_tasks_blocked()
            assert sent <= len(paths) + 2
        assert paths == ["/0", "/1", "/2", "/3", "/4"]
        nursery.cancel_scope.cancel()


async def test_a_request_answered_with_its_body_unread_ends_the_connection() -> None:
    client, server = trio.testing.lockstep_stream_pair()
    conn = Http1Connection(server)  # type: ignore[arg-type]
    size = 4 * READ_AHEAD

    async def sender() -> None:
        await client.send_all(post(b"y" * size) + b"GET /after HTTP/1.1\r\n\r\n")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.read_loop)
        nursery.start_soon(sender)
        one = await conn.next_request()
        assert one is not None
        await trio.testing.wait_all_tasks_blocked()
        assert not one.body_done and conn.unread_body()
        conn.finished(one)  # answered (refused, say) without reading the body
        await trio.testing.wait_all_tasks_blocked()
        # What is left is dropped as it comes, the reader still bounded; the connection cannot
        # go on (the front lingers, draining, and closes).
        assert sum(len(chunk) for chunk in one.chunks) <= READ_AHEAD + READ_SIZE
        assert not conn.reusable(one) and conn.unread_body()
        nursery.cancel_scope.cancel()


# --- FrontBody: limits, stalls, the client going ---------------------------------------------


async def test_a_body_over_the_limit_fails_at_the_piece_that_crosses_it() -> None:
    wire = Wire()
    conn = connection(wire)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.read_loop)
        await wire.send(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n")
        one = await conn.next_request()
        assert one is not None
        body = FrontBody(conn, one, 6, TIMEOUT)
        body.check()  # chunked: no length to refuse in advance
        assert body.present
        assert await body.__anext__() == b"abcd"
        await wire.send(b"4\r\nefgh\r\n")
        with pytest.raises(PayloadTooLarge):
            await body.__anext__()
        nursery.cancel_scope.cancel()


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    wire = Wire()
    conn = connection(wire)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.read_loop)
        await wire.send(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n")
        one = await conn.next_request()
        assert one is not None
        with pytest.raises(PayloadTooLarge):
            FrontBody(conn, one, 10, TIMEOUT).check()
        FrontBody(conn, one, 11, TIMEOUT).check()
        nursery.cancel_scope.cancel()


async def test_no_body_reads_empty() -> None:
    [one], status = await parse([b"GET / HTTP/1.1\r\n\r\n"])
    assert one.body == b"" and status is None
    assert not FrontBody(connection(Wire()), request(body_done=True), LIMIT, 1).present


async def test_a_stalled_body_times_out_but_a_slow_one_does_not(
    autojump_clock: trio.abc.Clock,
) -> None:
    wire = Wire()
    conn = connection(wire)

    async def trickle(gap: float) -> None:
        for piece in (b"ab", b"cd", b"ef"):
            await trio.sleep(gap)
            wire.incoming.put_data(piece)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.read_loop)
        await wire.send(b"POST /a HTTP/1.1\r\nContent-Length: 6\r\n\r\n")
        one = await conn.next_request()
        assert one is not None
        nursery.start_soon(trickle, 0.9 * TIMEOUT)
        assert await FrontBody(conn, one, LIMIT, TIMEOUT).read() == b"abcdef"
        conn.finished(one)

        await wire.send(b"POST /b HTTP/1.1\r\nContent-Length: 6\r\n\r\n")
        two = await conn.next_request()
        assert two is not None
        nursery.start_soon(trickle, 1.1 * TIMEOUT)
        start = trio.current_time()
        with pytest.raises(RequestTimeout):
            await FrontBody(conn, two, LIMIT, TIMEOUT).read()
        assert trio.current_time() - start == pytest.approx(TIMEOUT)
        nursery.cancel_scope.cancel()


async def test_a_client_that_goes_away_is_gone_at_once() -> None:
    wire = Wire()
    conn = connection(wire)
    calls = []
    conn.on_gone = lambda: calls.append("gone")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.read_loop)
        await wire.send(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
        one = await conn.next_request()
        assert one is not None and not conn.gone and conn.unread_body()
        await wire.eof()
        assert conn.gone and calls == ["gone"]
        assert not conn.unread_body() and not conn.reusable(one)
        # In the front, on_gone has cancelled the exchange by now; unaided, the body stops.
        assert await FrontBody(conn, one, LIMIT, TIMEOUT).read() == b"abc"
        conn.finished(one)
        assert await conn.next_request() is None


async def test_a_reset_connection_is_gone_too() -> None:
    left, right = socket.socketpair()
    right.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(left))
    conn = Http1Connection(stream)
    calls = []
    conn.on_gone = lambda: calls.append("gone")
    right.close()
    await conn.read_loop()
    assert conn.gone and calls == ["gone"]
    assert await conn.next_request() is None
    await stream.aclose()


# --- FrontTransport: what goes on the wire ----------------------------------------------------


async def test_a_content_length_response_byte_for_byte() -> None:
    wire = Wire()
    transport = transport_on(wire, request())
    await transport.start(200, [(b"content-type", b"application/json"), (b"content-length", b"7")])
    assert wire.writes == []  # the head waits for the body
    await transport.body(b'{"a"', True)
    await transport.body(b":1}", False)
    assert [undated(wire.writes[0]), wire.writes[1]] == [
        b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{"a"',
        b":1}",
    ]
    response = read_response(wire.received)
    assert (response.status, response.body, response.complete) == (200, b'{"a":1}', True)
    assert not transport.close_after


async def test_a_chunked_response_byte_for_byte() -> None:
    wire = Wire()
    transport = transport_on(wire, request())
    await transport.start(418, [(b"content-type", b"text/plain")])
    sent = await written(transport, wire, (b"hello", True), (b"", True), (b" world!", False))
    assert len(wire.writes) == 2  # an empty piece writes nothing (it would end the body)
    assert undated(sent) == (
        b"HTTP/1.1 418 \r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n7\r\n world!\r\n0\r\n\r\n"
    )
    response = read_response(sent)
    assert (response.status, response.body, response.complete) == (418, b"hello world!", True)


async def test_an_empty_chunked_response_is_the_last_chunk_alone() -> None:
    wire = Wire()
    transport = transport_on(wire, request())
    await transport.start(200, [])
    sent = await written(transport, wire, (b"", False))
    assert undated(sent).endswith(b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n")
    assert read_response(sent).complete


async def test_http10_gets_a_body_delimited_by_the_close() -> None:
    wire = Wire()
    transport = transport_on(wire, request("GET", "1.0", keep_alive=True))
    await transport.start(200, [(b"content-type", b"text/plain")])
    sent = await written(transport, wire, (b"abc", True), (b"def", False))
    assert undated(sent) == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nabcdef"
    )
    assert transport.close_after
    response = read_response(sent)
    assert (response.status, response.body) == (200, b"abcdef")
    assert (b"transfer-encoding", b"chunked") not in response.headers


@pytest.mark.parametrize("headers", [[(b"content-length", b"5")], []])
async def test_head_gets_the_head_only(headers: list[tuple[bytes, bytes]]) -> None:
    wire = Wire()
    transport = transport_on(wire, request("HEAD"))
    await transport.start(200, headers)
    await transport.relay_writer(True)(b"5\r\nhello\r\n", b"hello")
    sent = await written(transport, wire, (b"hello", True), (b"", False))
    assert undated(sent).endswith(b"\r\n\r\n") and b"hello" not in sent
    assert len(wire.writes) == 1
    framing = b"content-length: 5" if headers else b"transfer-encoding: chunked"
    assert framing in sent


@pytest.mark.parametrize("status", [204, 304])
async def test_no_content_and_not_modified_have_no_framing(status: int) -> None:
    wire = Wire()
    transport = transport_on(wire, request())
    await transport.start(status, [(b"etag", b'"x"')])
    sent = await written(transport, wire, (b"", False))
    assert undated(sent) == b'HTTP/1.1 %d %s\r\netag: "x"\r\n\r\n' % (
        status,
        b"No Content" if status == 204 else b"",
    )
    assert read_response(sent).complete


async def test_cors_headers_from_upstream_are_replaced_by_ours() -> None:
    wire = Wire()
    transport = transport_on(wire, request())
    transport.cors = b"https://app.example"
    await transport.start(
        200,
        [
            (b"Access-Control-Allow-Origin", b"*"),
            (b"access-control-allow-credentials", b"true"),
            (b"content-length", b"0"),
            (b"ACCESS-CONTROL-EXPOSE-HEADERS", b"x-secret"),
        ],
    )
    sent = await written(transport, wire, (b"", False))
    assert undated(sent) == (
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n"
        b"access-control-allow-origin: https://app.example\r\n"
        b"access-control-expose-headers: x-request-id, request-id, retry-after\r\n"
        b"vary: Origin\r\n\r\n"
    )


async def test_without_a_trusted_origin_upstream_cors_headers_pass() -> None:
    wire = Wire()
    transport = transport_on(wire, request())
    await transport.start(200, [(b"access-control-allow-origin", b"*"), (b"content-length", b"0")])
    sent = await written(transport, wire, (b"", False))
    assert b"access-control-allow-origin: *\r\n" in sent and b"vary" not in sent


async def test_relayed_chunks_pass_untouched_and_the_end_adds_nothing() -> None:
    wire = Wire()
    transport = transport_on(wire, request())
    await transport.start(200, [(b"content-type", b"application/json")])
    raw = [b"5;ext=x\r\nhello\r\n", b"1\r\n \r\n5\r\nworld\r\n", b"0\r\nx-trailer: t\r\n\r\n"]
    tapped: list[bytes] = []
    write = transport.relay_writer(True, tapped.append)
    for piece, payload in zip(raw, [b"hello", b" world", b""], strict=True):
        await write(piece, payload)
    await transport.body(b"", False)
    assert tapped == [b"hello", b" world"]  # every payload but the empty one
    assert len(wire.writes) == 3  # the head with the first bytes, then as they came
    assert wire.writes[1:] == raw[1:]
    assert undated(wire.writes[0]).endswith(b"transfer-encoding: chunked\r\n\r\n" + raw[0])
    response = read_response(wire.received)
    assert (response.body, response.complete) == (b"hello world", True)


async def test_an_error_event_after_relayed_chunks_is_framed_and_ends_the_body() -> None:
    wire = Wire()
    transport = transport_on(wire, request())
    await transport.start(200, [(b"content-type", b"text/event-stream")])
    event = b'data: {"a":1}\n\n'
    await transport.relay_writer(True)(b"%x\r\n%s\r\n" % (len(event), event), event)
    error = b'data: {"error": {"message": "upstream went away"}}\n\n'
    await transport.body(error, False)
    assert wire.writes[-1] == b"%x\r\n%s\r\n0\r\n\r\n" % (len(error), error)
    response = read_response(wire.received)
    assert (response.body, response.complete) == (event + error, True)


@pytest.mark.parametrize(
    ("version", "headers", "chunked", "body"),
    [
        ("1.1", [(b"content-length", b"5")], True, b"hello"),  # ours is not chunked
        ("1.1", [], False, b"5\r\nhello\r\n0\r\n\r\n"),  # theirs was not: we frame it
        ("1.0", [], True, b"hello"),  # close-delimited: the payload alone
    ],
)
async def test_relay_sends_the_payload_when_framings_differ(
    version: str, headers: list[tuple[bytes, bytes]], chunked: bool, body: bytes
) -> None:
    wire = Wire()
    transport = transport_on(wire, request("POST", version))
    await transport.start(200, headers)
    tapped: list[bytes] = []
    write = transport.relay_writer(chunked, tapped.append)
    await write(b"5\r\nhello\r\n" if chunked else b"hello", b"hello")
    await transport.body(b"", False)
    assert undated(wire.received).split(b"\r\n\r\n", 1)[1] == body
    assert tapped == [b"hello"]


async def test_answering_before_the_body_is_in_closes_the_connection_after() -> None:
    for body_done in (False, True):
        wire = Wire()
        transport = transport_on(wire, request(body_done=body_done))
        await transport.start(403, [(b"content-length", b"0")])
        sent = await written(transport, wire, (b"", False))
        assert transport.close_after is not body_done
        assert (b"connection: close\r\n" in sent) is not body_done


async def test_close_after_is_said_in_the_head() -> None:
    wire = Wire()
    transport = transport_on(wire, request(), close_after=True)
    await transport.start(200, [(b"content-length", b"0")])
    assert b"connection: close\r\n" in await written(transport, wire, (b"", False))


@pytest.mark.parametrize(
    "content_type", [b"text/event-stream", b"Text/Event-Stream; charset=utf-8"]
)
async def test_an_event_stream_head_goes_out_at_once(content_type: bytes) -> None:
    wire = Wire()
    transport = transport_on(wire, request())
    await transport.start(200, [(b"content-type", content_type)])
    assert len(wire.writes) == 1 and wire.writes[0].endswith(b"\r\n\r\n")
    await transport.body(b"data: 1\n\n", True)
    assert wire.writes[1:] == [b"9\r\ndata: 1\n\n\r\n"]


async def test_other_heads_leave_with_the_first_body_bytes() -> None:
    wire = Wire()
    transport = transport_on(wire, request())
    await transport.start(200, [(b"content-type", b"application/json")])
    await trio.testing.wait_all_tasks_blocked()
    assert wire.writes == []
    await transport.body(b"{}", True)
    assert len(wire.writes) == 1 and wire.writes[0].endswith(b"\r\n\r\n2\r\n{}\r\n")


@pytest.mark.parametrize("relayed", [False, True])
async def test_a_write_to_a_gone_client_tells_on_gone(relayed: bool) -> None:
    left, right = trio.socket.socketpair()
    stream = trio.SocketStream(left)
    calls = []
    transport = FrontTransport(
        stream, request(), close_after=False, on_gone=lambda: calls.append("gone")
    )
    await transport.start(200, [(b"content-type", b"application/json")])
    right.close()
    with pytest.raises(trio.BrokenResourceError):
        if relayed:
            await transport.relay_writer(True)(b"2\r\n{}\r\n", b"{}")
        else:
            await transport.body(b"{}", True)
    assert calls == ["gone"] and transport.close_after
    await stream.aclose()


async def test_write_simple_answers_whole_and_closes() -> None:
    wire = Wire()
    await write_simple(wire.stream, 431, b'{"e":1}', [(b"x-request-id", b"r1")])  # type: ignore[arg-type]
    assert len(wire.writes) == 1
    assert undated(wire.received) == (
        b"HTTP/1.1 431 \r\ncontent-type: application/json\r\ncontent-length: 7\r\n"
        b'x-request-id: r1\r\nconnection: close\r\n\r\n{"e":1}'
    )
    response = read_response(wire.received)
    assert (response.status, response.body, response.complete) == (431, b'{"e":1}', True)


async def test_write_simple_to_a_gone_client_raises_nothing() -> None:
    left, right = trio.socket.socketpair()
    right.close()
    stream = trio.SocketStream(left)
    await write_simple(stream, 400, b"{}")
    await stream.aclose()
