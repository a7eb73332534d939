"""HTTP/1.1 on a trio stream, server side, for the front door (`front.py`): requests parsed by
llhttp (`httptools`), responses written as bytes.

One `Http1Connection` per client connection. Its reader task feeds what arrives to the parser,
which queues request heads and their body pieces; the connection's handler takes one request
at a time. Reading goes on while a response is written, so a client that goes away is heard at
once (`on_gone`), and stops while more than `READ_AHEAD` bytes wait unconsumed: a client sends
only as much as trioswap takes. A pipelined request waits its turn.

`FrontBody` is a request's body (`pipeline.exchange.RequestBody`); `FrontTransport` writes one
response (`pipeline.sink.Transport`): a Content-Length body as it comes, otherwise chunked (or,
to an HTTP/1.0 client, delimited by the connection's close); a body the upstream framed in chunks
passes untouched (`relay`). The head waits for the first body bytes, so that both leave in one
write, except for an event stream, whose head goes out at once.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from typing import TYPE_CHECKING
from urllib.parse import unquote

import httptools
import trio

from trioswap.errors import BadRequest, PayloadTooLarge, RequestTimeout
from trioswap.pipeline.sink import payload_writer
from trioswap.protocols.errors import Headers

if TYPE_CHECKING:
    from trioswap.pipeline.sink import RelayWrite, Tap

READ_SIZE = 65536
# Unconsumed body bytes (or a pipelined request) after which the reader waits.
READ_AHEAD = 65536
# A request head larger than this is refused (431; checked after each read, so a head may pass
# it by up to one read), as hypercorn's h11 did at 16 KiB; agent CLIs send long cookies and
# auth tokens, so a little more room.
MAX_HEAD = 64 * 1024
_CHUNKED: Headers = [(b"transfer-encoding", b"chunked")]
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
# The reason phrase is optional (RFC 9112 4) and clients ignore it: the common ones are given,
# the rest go without, as hypercorn sent every status (importing `http` costs 20 ms at startup).
_REASONS = {
    200: b"OK",
    204: b"No Content",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    413: b"Content Too Large",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


class MalformedRequest(BadRequest):
    """The client sent what is not HTTP/1.1; answered with `status` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Request:
    """One request as parsed: its head, and its body as the reader delivers it."""

    __slots__ = (
        "body_done",
        "chunks",
        "continue_expected",
        "framing",
        "headers",
        "keep_alive",
        "method",
        "path",
        "query",
        "raw_path",
        "target",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        headers: Headers,
        version: str,
        keep_alive: bool,
        upgrade: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.version = version
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        raw_path, _, query = target.partition(b"?")
        if raw_path[:1] != b"/":
            raw_path, query = _absolute_form(target)
        self.raw_path = raw_path
        self.query = query
        self.path = unquote(raw_path.decode("latin-1"))
        self.chunks: deque[bytes] = deque()
        self.body_done = False
        self.framing: Headers = []
        self.continue_expected = False
        for name, value in headers:
            if name == b"transfer-encoding":
                if self.framing:  # a Content-Length came first: smuggling or a broken client
                    self.keep_alive = False
                self.framing = _CHUNKED
            elif name == b"content-length":
                if self.framing:
                    self.keep_alive = False
                else:
                    self.framing = [(name, value)]
            elif name == b"expect" and value.lower() == b"100-continue":
                # An HTTP/1.0 client's expectation is ignored (RFC 9110 10.1.1).
                self.continue_expected = version != "1.0"


def _absolute_form(target: bytes) -> tuple[bytes, bytes]:
    """The path and query of `http://host/path?query` (a request to a proxy, RFC 9112 3.2.2)."""
    try:
        url = httptools.parse_url(target)
    except httptools.HttpParserInvalidURLError:
        raise MalformedRequest(400, "the request target is not a path or an absolute URL") from None
    return url.path or b"/", url.query or b""


class Http1Connection:
    """The parser's side of one client connection (see the module docstring)."""

    def __init__(self, stream: trio.abc.HalfCloseableStream) -> None:
        self.stream = stream
        self._parser = httptools.HttpRequestParser(self)
        # Content-Length beside chunked framing: the chunks count (RFC 9112 6.3), as h11 did,
        # and the connection closes after (see `Request`).
        self._parser.set_dangerous_leniencies(lenient_chunked_length=True)
        self._requests: deque[Request] = deque()
        # The request whose head or body the parser is in.
        self._parsing: Request | None = None
        self._target = b""
        self._headers: Headers = []
        self._in_head = False
        self._head_began = False
        self._head_bytes = 0
        self._buffered = 0
        self._changed = trio.Event()
        self._room = trio.Event()
        self.gone = False
        # Waited too long for its next request, or shutdown ended the wait (see `expire`).
        self.expired = False
        self.error: MalformedRequest | None = None
        # After an upgrade request: the bytes that came after its head (the new protocol's).
        self.upgraded: bytes | None = None
        # Called when the client goes away (the request being answered is cancelled).
        self.on_gone: Callable[[], None] | None = None
        self.served = 0

    # -- the reader ------------------------------------------------------------------------

    async def read_loop(self) -> None:
        """Read and parse until the client goes, sends garbage or upgrades."""
        stream, parser = self.stream, self._parser
        while True:
            while self._buffered > READ_AHEAD or len(self._requests) > 1:
                self._room = trio.Event()
                await self._room.wait()
            try:
                data = await stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self._went_away()
                return
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                self.upgraded = data[upgrade.args[0] :]
                self._wake()
                return
            except httptools.HttpParserError as exc:
                self.error = MalformedRequest(400, f"malformed HTTP request: {exc}")
            except MalformedRequest as exc:
                self.error = exc
            if self.error is None and self._in_head:
                # The read a head began in may hold the previous request's body: from the next
                # read on, all of a read is head (bounded at MAX_HEAD + READ_SIZE).
                if self._head_began:
                    self._head_began = False
                else:
                    self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD:
                    self.error = MalformedRequest(431, f"request head over {MAX_HEAD} bytes")
            if self.error is not None:
                self._wake()
                return
            self._wake()

    def _went_away(self) -> None:
        self.gone = True
        self._wake()
        if self.on_gone is not None:
            self.on_gone()

    def _wake(self) -> None:
        self._changed.set()

    async def changed(self) -> None:
        """Wait until the reader has something new (a request, body bytes, an end)."""
        if self._changed.is_set():
            self._changed = trio.Event()
        await self._changed.wait()

    def expire(self) -> None:
        """End the wait for the next request: `next_request` says None unless one is in."""
        self.expired = True
        self._wake()

    def consumed(self, size: int) -> None:
        self._buffered -= size
        self._room.set()

    # -- the parser's callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._target = b""
        self._headers = []
        self._in_head = True
        self._head_began = True
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:  # else a trailer, which nothing here reads
            self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        request = Request(
            parser.get_method().decode("ascii", "replace"),
            self._target,
            self._headers,
            parser.get_http_version(),
            parser.should_keep_alive(),
            parser.should_upgrade(),
        )
        self._parsing = request
        self._requests.append(request)

    def on_body(self, body: bytes) -> None:
        request = self._parsing
        assert request is not None
        request.chunks.append(body)
        self._buffered += len(body)

    def on_message_complete(self) -> None:
        request = self._parsing
        assert request is not None
        request.body_done = True
        self._parsing = None

    # -- the handler's side ------------------------------------------------------------------

    async def next_request(self) -> Request | None:
        """The next request's head; None once the client has gone (or upgraded), or the wait
        was ended (`expire`)."""
        while not self._requests:
            if self.error is not None:
                raise self.error
            if self.gone or self.expired or self.upgraded is not None:
                return None
            await self.changed()
        return self._requests[0]

    def finished(self, request: Request) -> None:
        """`request` has been answered: drop what is left of its body."""
        self._requests.popleft()
        if request.chunks:
            self.consumed(sum(len(chunk) for chunk in request.chunks))
            request.chunks.clear()
        self._room.set()
        self.served += 1

    def unread_body(self) -> bool:
        """Whether the client may still be sending a body nobody will read."""
        return self._parsing is not None and not self.gone and self.error is None

    def reusable(self, request: Request) -> bool:
        """Whether another request may follow `request` on this connection."""
        return request.keep_alive and request.body_done and self.error is None and not self.gone


class FrontBody:
    """A request's body as the reader delivers it (see `pipeline.exchange.RequestBody`): at most
    `limit` bytes, each piece within `timeout` of the one before."""

    __slots__ = ("_conn", "_declared", "_limit", "_received", "_request", "_timeout", "present")

    def __init__(self, conn: Http1Connection, request: Request, limit: int, timeout: float) -> None:
        self._conn = conn
        self._request = request
        self._limit = limit
        self._timeout = timeout
        self._received = 0
        self.present = bool(request.framing)
        self._declared: int | None = None
        if self.present and request.framing[0][0] == b"content-length":
            self._declared = int(request.framing[0][1])

    @property
    def framing(self) -> Headers:
        return self._request.framing

    def check(self) -> None:
        if self._declared is not None and self._declared > self._limit:
            raise PayloadTooLarge(self._limit)

    async def read(self) -> bytes:
        self.check()
        chunks = [chunk async for chunk in self]
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def __aiter__(self) -> FrontBody:
        return self

    async def __anext__(self) -> bytes:
        request, conn = self._request, self._conn
        if request.continue_expected:
            request.continue_expected = False
            if not request.body_done and not request.chunks:
                await conn.stream.send_all(_CONTINUE)
        if not request.chunks:
            if request.body_done:
                raise StopAsyncIteration
            with trio.move_on_after(self._timeout):
                while not request.chunks and not request.body_done:
                    if conn.gone:
                        # The exchange is cancelled now, and this checkpoint raises that.
                        await trio.lowlevel.checkpoint()
                        raise StopAsyncIteration
                    if conn.error is not None:
                        raise conn.error
                    await conn.changed()
            if not request.chunks and not request.body_done:
                raise RequestTimeout(self._timeout)
            if not request.chunks:
                raise StopAsyncIteration
        chunk = request.chunks.popleft()
        conn.consumed(len(chunk))
        self._received += len(chunk)
        if self._received > self._limit:
            raise PayloadTooLarge(self._limit)
        return chunk


class _Date:
    """The Date header, formatted once a second."""

    second = -1
    value = b""

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.second = second
            cls.value = formatdate(second, usegmt=True).encode()
        return cls.value


LENGTH, CHUNKED, CLOSE = 0, 1, 2


class FrontTransport:
    """One response on a client connection (see `pipeline.sink.Transport`).

    `on_gone` is told when the client cannot be written to: the exchange is cancelled then."""

    __slots__ = (
        "_head",
        "_raw",
        "_request",
        "_stream",
        "close_after",
        "cors",
        "framing",
        "head_only",
        "http10",
        "on_gone",
    )

    def __init__(
        self,
        stream: trio.abc.HalfCloseableStream,
        request: Request | None,
        *,
        close_after: bool,
        on_gone: Callable[[], None],
    ) -> None:
        self._stream = stream
        self._request = request
        self.http10 = request is not None and request.version == "1.0"
        self.head_only = request is not None and request.method == "HEAD"
        # Whether the connection closes after this response (said in its head).
        self.close_after = close_after or request is None or not request.keep_alive
        self.on_gone = on_gone
        # The Access-Control-Allow-Origin to set, for a trusted browser origin (see guard.py).
        self.cors: bytes | None = None
        self._head = b""
        self._raw = False
        self.framing = LENGTH

    async def start(self, status: int, headers: Headers) -> None:
        if self._request is not None and not self._request.body_done:
            # Answered before its body is in (refused on its headers, or the upstream answers
            # first): what is left of the body is not read, so the connection cannot go on.
            self.close_after = True
        framing = CHUNKED
        events = False
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))]
        cors = self.cors
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                framing = LENGTH
            elif lower == b"content-type" and value[:17].lower() == b"text/event-stream":
                events = True
            elif cors is not None and lower.startswith(b"access-control-"):
                continue
            lines += (name, b": ", value, b"\r\n")
        if cors is not None:
            lines.append(
                b"access-control-allow-origin: %s\r\naccess-control-expose-headers: "
                b"x-request-id, request-id, retry-after\r\nvary: Origin\r\n" % cors
            )
        if status < 200 or status in (204, 304):
            framing = LENGTH
        elif framing == CHUNKED and self.http10:
            framing = CLOSE
            self.close_after = True
        if framing == CHUNKED:
            lines.append(b"transfer-encoding: chunked\r\n")
        if self.close_after:
            lines.append(b"connection: close\r\n")
        elif self.http10:
            lines.append(b"connection: keep-alive\r\n")  # 1.0 closes unless told otherwise
        lines += (b"date: ", _Date.now(), b"\r\n\r\n")
        self.framing = framing
        self._head = b"".join(lines)
        if events:
            await self._write(b"")

    async def body(self, chunk: bytes, more: bool) -> None:
        if self.head_only:
            chunk = b""
        elif self.framing == CHUNKED:
            if chunk and self._raw:
                # Our own bytes after relayed ones (an error event after an upstream cut): the
                # relayed chunks ended at a chunk's end (servers write whole chunks), so ours
                # are framed from here on, last chunk included.
                self._raw = False
            if chunk:
                chunk = b"%x\r\n%b\r\n" % (len(chunk), chunk)
            if not more and not self._raw:
                chunk += _LAST_CHUNK
        if chunk or self._head:
            await self._write(chunk)

    def relay_writer(self, chunked: bool, tap: Tap | None = None) -> RelayWrite:
        if not (self.framing == CHUNKED and chunked and not self.head_only):
            return payload_writer(self.body, tap)
        send_all = self._stream.send_all

        # `_write`, inlined: one frame per chunk between the upstream's read and the send.
        async def passed(raw: bytes, body: bytes) -> None:
            if body and tap is not None:
                tap(body)
            self._raw = True
            if self._head:
                raw = self._head + raw
                self._head = b""
            try:
                await send_all(raw)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self._gone()
                raise

        return passed

    async def _write(self, data: bytes) -> None:
        if self._head:
            data = self._head + data
            self._head = b""
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self._gone()
            raise

    async def _gone(self) -> None:
        """The client cannot be written to: the exchange is cancelled (the caller raises)."""
        self.close_after = True
        self.on_gone()
        # The exchange is cancelled now, and this checkpoint raises that.
        await trio.lowlevel.checkpoint()


async def write_simple(
    stream: trio.abc.HalfCloseableStream, status: int, body: bytes, headers: Headers = ()
) -> None:
    """A whole response outside any exchange (a request that is not HTTP), closing."""
    transport = FrontTransport(stream, None, close_after=True, on_gone=_ignore)
    await transport.start(
        status,
        [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
    )
    try:
        await transport.body(body, False)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


def _ignore() -> None:
    pass
