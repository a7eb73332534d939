"""trioswap's HTTP/1.1 client to upstreams: a keep-alive connection pool on trio streams that
hands a response's body over as the bytes that came on the wire (`Response.relay`) as well as
decoded (`Response.aiter_stream`), so a front that frames its response the same way relays them
untouched instead of decoding and encoding every chunk again.

The call surface is httpcore's connection pool's (`pool.stream(method=, url=, headers=,
content=, extensions=)`, with `URL` in place of httpcore's), and failures are the classes of
`transport_errors`, httpcore's names and meanings, which one boundary translates
(`upstream.upstream_errors`). httpcore itself is not imported: its import costs ~50 ms.

How a response is read:
- its head by `httptools` (llhttp: strict, C), found by its blank line (llhttp allows CRLF
  only, so the first CRLFCRLF ends it); interim 1xx heads are skipped;
- a Content-Length body by counting, a close-delimited one until EOF;
- a chunked body by a small scanner here, not by llhttp: relaying `raw` needs to know where in
  a read the body ends, which llhttp's callbacks never say (bytes after that end are a protocol
  error: the response is delivered and the connection dropped, never reused).

A connection goes back to the pool only when its response was read to the end and the server
did not say `Connection: close`; leaving `pool.stream` any other way (client gone, cancelled,
an error) closes it.
"""

from __future__ import annotations

import collections
import math
import re
import socket
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import certifi
import httptools
import trio

from trioswap.deadline_watch import DeadlineWatch
from trioswap.lean_stream import LeanStream
from trioswap.pipeline.transport_errors import (
    ConnectError,
    ConnectTimeout,
    LocalProtocolError,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    TLSHandshakeTimeout,
    UnsupportedProtocol,
    WriteError,
    WriteTimeout,
)

READ_SIZE = 65536
# A streamed request body is sent as it comes; writes smaller than this wait for the next one
# (and the head waits for the body) so that a server sees one segment, not several.
CORK_LIMIT = 65536
# Bounds on what an upstream may send that is not body: one response head, interim heads
# before it, one chunk-size line or trailer line, all trailers.
MAX_HEAD = 65536
MAX_INTERIM = 16
MAX_LINE = 8192
MAX_TRAILERS = 65536
DEFAULT_PORTS = {b"http": 80, b"https": 443}
_NO_BODY_STATUSES = frozenset({204, 304})
_HEX = b"0123456789abcdefABCDEF"
# A chunk's size line as `_chunk_size` reads one: 1-16 hex digits, any extensions, CRLF.
_CHUNK_HEAD = re.compile(rb"([0-9a-fA-F]{1,16})(?:;[^\n]*)?\r\n")
_LAST_CHUNK = b"0\r\n\r\n"
# What h11 refused in a request head: a name that is not a token, a value with CR, LF or NUL.
_BAD_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")
_BAD_VALUE = re.compile(rb"[\r\n\0]")
_NOT_VCHAR = re.compile(rb"[^\x21-\x7e]")

# Where a response is in its body.
_DONE, _LENGTH, _CHUNKED, _CLOSE = range(4)
# Where a chunked body is: a size line, data, the CRLF after data, trailers.
_SIZE, _DATA, _DATA_END, _TRAILER = range(4)

Origin = tuple[bytes, bytes, int]
RequestTimeouts = dict[str, float | None]
# Opens a connection's stream in place of TCP (and TLS): the seam for tests and fuzz targets
# that hand the pool any trio stream, e.g. bytes replayed from memory.
Connect = Callable[[Origin, RequestTimeouts], Awaitable[trio.abc.Stream]]


@dataclass(frozen=True, slots=True)
class URL:
    """Where a request goes: scheme, host and port to connect to (port None: the scheme's
    default), and the request target as sent (path and query). As httpcore's URL."""

    scheme: bytes
    host: bytes
    port: int | None
    target: bytes

    @classmethod
    def parse(cls, url: str) -> URL:
        """A URL from a string as httpcore parses one: the host lowercased and without IPv6
        brackets, the target "/" if there is no path; ValueError if it is not ASCII or its port
        is not a number in 0-65535."""
        parsed = urllib.parse.urlparse(url.encode("ascii"))
        target = parsed.path or b"/"
        if parsed.query:
            target += b"?" + parsed.query
        return cls(parsed.scheme, parsed.hostname or b"", parsed.port, target)


class Connection:
    """One connection to an upstream: its stream (TLS or not) and its TCP stream (None when
    the pool's `connect` made the stream)."""

    __slots__ = (
        "expired",
        "idle_since",
        "origin",
        "read_silence",
        "requests",
        "stream",
        "tcp",
        "watch",
        "write_silence",
    )

    def __init__(
        self, origin: Origin, stream: trio.abc.Stream, tcp: LeanStream | None, watch: DeadlineWatch
    ) -> None:
        self.origin = origin
        self.stream = stream
        self.tcp = tcp
        self.watch = watch
        self.requests = 0
        self.idle_since = 0.0
        # The longest the upstream may take to send something, or to take what is sent (the
        # current request's read and write timeouts; None: no bound).
        self.read_silence: float | None = None
        self.write_silence: float | None = None
        # Closed by the watch: the upstream was silent longer than read_silence or
        # write_silence allowed.
        self.expired = False

    def close(self) -> None:
        """Close at once, without a checkpoint (safe in a `finally` under cancellation)."""
        if self.tcp is not None:
            self.tcp.close()

    def expire(self) -> None:
        """The upstream was silent longer than read_silence or write_silence allowed (told by
        the pool's watch): the read or write waiting on it fails, and says it timed out."""
        self.expired = True
        self.close()

    def stale(self) -> bool:
        """Readable while idle: the server closed it, or sent what nobody asked for."""
        return self.tcp is not None and self.tcp.is_readable()

    async def send(self, data: bytes) -> None:
        silence = self.write_silence
        if silence is None:
            watched = False
        elif self.tcp is None:
            return await self._send_within(silence, data)
        else:
            watched = True
            self.watch.begin(self, silence)
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            if self.expired:
                raise WriteTimeout(f"the upstream took no data for {silence:g} s") from None
            raise WriteError(_reason(exc)) from exc
        finally:
            if watched:
                self.watch.end(self)

    async def _send_within(self, silence: float, data: bytes) -> None:
        """A write bounded by its own cancel scope: for streams the watch cannot close."""
        try:
            with trio.move_on_after(silence):
                await self.stream.send_all(data)
                return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise WriteError(_reason(exc)) from exc
        raise WriteTimeout(f"the upstream took no data for {silence:g} s")

    async def receive(self) -> bytes:
        silence = self.read_silence
        if silence is None:
            watched = False
        elif self.tcp is None:
            return await self._receive_within(silence)
        else:
            watched = True
            self.watch.begin(self, silence)
        try:
            return await self.stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            if self.expired:
                raise ReadTimeout(f"the upstream sent nothing for {silence:g} s") from None
            raise ReadError(_reason(exc)) from exc
        finally:
            if watched:
                self.watch.end(self)

    async def _receive_within(self, silence: float) -> bytes:
        """A read bounded by its own cancel scope: for streams the watch cannot close."""
        try:
            with trio.move_on_after(silence):
                return await self.stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ReadError(_reason(exc)) from exc
        raise ReadTimeout(f"the upstream sent nothing for {silence:g} s")


class _Head:
    """httptools' callbacks for one response head: the headers as received, and the two that
    frame the body."""

    __slots__ = ("chunked", "headers", "length")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.length: int | None = None
        self.chunked: bool | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        # The length test spares a lower() for nearly every header.
        if len(name) == 14 and name.lower() == b"content-length":
            if self.length is None:
                self.length = int(value)
        elif len(name) == 17 and name.lower() == b"transfer-encoding":
            # The final coding decides (RFC 9112, 6.3).
            self.chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"


class Response:
    """An upstream's response once its head is in: `status`, `headers` as received, `chunked`,
    and its body through `relay()` or `aiter_stream()` (read once, by one of them)."""

    __slots__ = (
        "_buffer",
        "_connection",
        "_left",
        "_line",
        "_mode",
        "_phase",
        "_trailers",
        "chunked",
        "headers",
        "keep_alive",
        "status",
    )

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.headers = headers
        self.chunked = False
        # Whether the connection may serve another request once this body is read.
        self.keep_alive = False
        self._connection: Connection | None = None
        self._mode = _DONE
        self._buffer = b""
        self._left = 0
        self._phase = _SIZE
        self._line = b""
        self._trailers = 0

    @classmethod
    def buffered(cls, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> Response:
        """A response already read (e.g. to look at an error before passing it on)."""
        response = cls(status, headers)
        if body:
            response._mode, response._left, response._buffer = _LENGTH, len(body), body
        return response

    @property
    def complete(self) -> bool:
        """The body was read to its end."""
        return self._mode == _DONE

    def aiter_stream(self) -> _Payload:
        """The payload, decoded from its framing, in non-empty pieces."""
        return _Payload(self)

    async def relay(self, write: Callable[[bytes, bytes], Awaitable[object]]) -> None:
        """The body to its end through `write(raw, body)`, one call per read: `raw` the bytes
        as they came (chunk framing and the last chunk included when `chunked`), `body` the
        payload they carry (may be empty). One loop, no iterator's layer per chunk: the
        relay's hot path."""
        next_pair = self._next
        while (pair := await next_pair()) is not None:
            await write(pair[0], pair[1])

    async def aread(self) -> bytes:
        return b"".join([piece async for piece in self.aiter_stream()])

    async def _next(self) -> tuple[bytes, bytes] | None:
        mode = self._mode
        if mode == _DONE:
            return None
        data = self._buffer
        if data:
            self._buffer = b""
        else:
            assert self._connection is not None
            data = await self._connection.receive()
            if not data:
                if mode == _CLOSE:
                    self._mode = _DONE
                    return None
                raise RemoteProtocolError(
                    "the upstream closed the connection before the end of the response body"
                    + (" (incomplete chunked read)" if mode == _CHUNKED else "")
                )
        if mode == _LENGTH:
            left = self._left - len(data)
            if left <= 0:
                if left < 0:
                    data = data[: self._left]
                    self.keep_alive = False
                self._mode = _DONE
            self._left = left
            return data, data
        if mode == _CLOSE:
            return data, data
        return self._dechunk(data)

    def _dechunk(self, data: bytes) -> tuple[bytes, bytes]:
        """One read of a chunked body: the part of it that belongs to the body, its payload."""
        pos, end = 0, len(data)
        # The payload's pieces (joined at the end: one piece is returned as it is, not copied).
        pieces: list[bytes] = []
        phase = self._phase
        if phase == _SIZE and not self._line:
            # Reads of whole data chunks (a model server writes one per event) by one regex
            # match each; anything else (a split, the last chunk, trailers, an error) from
            # where they end, by the scanner below.
            while (head := _CHUNK_HEAD.match(data, pos)) is not None:
                start = head.end()
                size = int(head[1], 16)
                stop = start + size
                if not size or data[stop : stop + 2] != b"\r\n" or start - pos > MAX_LINE:
                    break
                pieces.append(data[start:stop])
                pos = stop + 2
            if pos == end:
                return data, b"".join(pieces)
        while pos < end:
            if phase == _DATA:
                take = min(self._left, end - pos)
                pieces.append(data if take == end else data[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    phase = _DATA_END
                continue
            newline = data.find(b"\n", pos)
            if newline < 0:
                self._line += data[pos:]
                if len(self._line) > MAX_LINE:
                    raise RemoteProtocolError("a chunk line longer than 8 KiB")
                break
            line = data[pos : newline + 1]
            if self._line:
                line, self._line = self._line + line, b""
            pos = newline + 1
            if len(line) > MAX_LINE or line[-2:-1] != b"\r":
                raise RemoteProtocolError(f"a malformed chunk line: {line[:80]!r}")
            if phase == _SIZE:
                self._left = _chunk_size(line)
                phase = _DATA if self._left else _TRAILER
            elif phase == _DATA_END:
                if line != b"\r\n":
                    raise RemoteProtocolError("chunk data longer than its size")
                phase = _SIZE
            elif line == b"\r\n":
                self._mode = _DONE
                if pos < end:
                    data = data[:pos]
                    self.keep_alive = False
                break
            else:
                self._trailers += len(line)
                if b":" not in line or self._trailers > MAX_TRAILERS:
                    raise RemoteProtocolError(f"a malformed trailer: {line[:80]!r}")
        self._phase = phase
        return data, b"".join(pieces)


def _chunk_size(line: bytes) -> int:
    size = line[:-2].partition(b";")[0]
    if not size or len(size) > 16 or size.strip(_HEX):
        raise RemoteProtocolError(f"a malformed chunk size: {line[:80]!r}")
    return int(size, 16)


class _Payload:
    __slots__ = ("_response",)

    def __init__(self, response: Response) -> None:
        self._response = response

    def __aiter__(self) -> _Payload:
        return self

    async def __anext__(self) -> bytes:
        while True:
            pair = await self._response._next()
            if pair is None:
                raise StopAsyncIteration
            if pair[1]:
                return pair[1]


class ConnectionPool:
    """Keep-alive connections to upstreams, by origin. Not capped: each request holds its own
    connection while it runs (see `upstream.IDLE_CONNECTIONS`); at most `max_idle` wait for
    reuse, each for at most `idle_conn` seconds (None: no limit). `keepalive` sets TCP
    keepalive probes (None: off); `tls_handshake` bounds an https upstream's handshake;
    `connect`, if given, opens connections instead of TCP and TLS."""

    def __init__(
        self,
        *,
        idle_conn: float | None = None,
        keepalive: float | None = None,
        tls_handshake: float | None = None,
        max_idle: int = 256,
        ssl_context: ssl.SSLContext | None = None,
        connect: Connect | None = None,
    ) -> None:
        self.idle_conn = idle_conn
        self.keepalive = keepalive
        self.tls_handshake = tls_handshake
        self.max_idle = max_idle
        self._ssl_context = ssl_context
        self._open = connect
        self._idle: dict[Origin, collections.deque[Connection]] = {}
        self._idle_count = 0
        self._closed = False
        self._watch = DeadlineWatch()
        # The watch's task: the pool is a resource that owns it (entered and left with the
        # pool, in the task that uses the pool).
        self._tasks = trio.open_nursery()
        self._nursery: trio.Nursery | None = None

    async def __aenter__(self) -> ConnectionPool:
        self._nursery = await self._tasks.__aenter__()
        self._nursery.start_soon(self._watch.run)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closed = True
        for origin in list(self._idle):
            self._close_idle(origin)
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        # What the body raised goes on as it was (not into the nursery's exception group).
        await self._tasks.__aexit__(None, None, None)

    async def close_idle(self, origin: Origin) -> None:
        """Close the idle connections to one origin (scheme, host, port)."""
        self._close_idle(origin)
        await trio.lowlevel.checkpoint()

    def stream(
        self,
        method: bytes | str,
        url: URL | str,
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
        content: bytes | AsyncIterator[bytes] | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> _Exchange:
        """`async with pool.stream(...) as response:` — the response once its head is in."""
        if isinstance(method, str):
            method = method.encode("ascii")
        if isinstance(url, str):
            url = URL.parse(url)
        timeouts = (extensions or {}).get("timeout", {})
        return _Exchange(self, method, url, headers or [], content, timeouts)

    def _take_idle(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        if self.idle_conn is not None:
            expired = trio.current_time() - self.idle_conn
            while idle and idle[0].idle_since <= expired:
                idle.popleft().close()
                self._idle_count -= 1
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if not connection.stale():
                return connection
            connection.close()
        return None

    def _release(self, connection: Connection) -> None:
        if self._closed or self._idle_count >= self.max_idle:
            connection.close()
            return
        connection.idle_since = trio.current_time()
        idle = self._idle.get(connection.origin)
        if idle is None:
            idle = self._idle[connection.origin] = collections.deque()
        idle.append(connection)
        self._idle_count += 1

    def _close_idle(self, origin: Origin) -> None:
        for connection in self._idle.pop(origin, ()):
            connection.close()
            self._idle_count -= 1

    async def _connect(self, origin: Origin, timeouts: RequestTimeouts) -> Connection:
        if self._open is not None:
            return Connection(origin, await self._open(origin, timeouts), None, self._watch)
        scheme, host, port = origin
        name = host.decode("ascii")
        timeout = timeouts.get("connect")
        opened: trio.SocketStream | None = None
        try:
            # Name lookup included, as in httpcore.
            with trio.move_on_after(_forever(timeout)):
                opened = await trio.open_tcp_stream(name, port)
        except OSError as exc:
            raise ConnectError(_reason(exc)) from exc
        if opened is None:
            raise ConnectTimeout(f"connecting took longer than {timeout:g} s")
        tcp = LeanStream.adopt(opened)
        try:
            if self.keepalive is not None:
                seconds = max(1, round(self.keepalive))
                tcp.socket.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                tcp.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, seconds)
                tcp.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, seconds)
            stream: trio.abc.Stream = tcp
            if scheme == b"https":
                stream = await self._start_tls(tcp, name)
        except BaseException:
            tcp.close()
            raise
        return Connection(origin, stream, tcp, self._watch)

    async def _start_tls(self, tcp: LeanStream, name: str) -> trio.SSLStream[Any]:
        if self._ssl_context is None:
            self._ssl_context = _default_ssl_context()
        tls = trio.SSLStream(tcp, self._ssl_context, server_hostname=name, https_compatible=True)
        try:
            with trio.move_on_after(_forever(self.tls_handshake)):
                await tls.do_handshake()
                return tls
        except (trio.BrokenResourceError, OSError) as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, ssl.SSLError) else exc
            raise ConnectError(_reason(cause)) from exc
        raise TLSHandshakeTimeout(f"the TLS handshake took longer than {self.tls_handshake:g} s")


def origin_of(url: URL) -> Origin:
    """(scheme, host, port) of a URL, the port defaulted; UnsupportedProtocol if not HTTP."""
    port = DEFAULT_PORTS.get(url.scheme)
    if port is None:
        raise UnsupportedProtocol(f"a URL with scheme {url.scheme.decode()!r}")
    return url.scheme, url.host, url.port or port


class _Exchange:
    """One request on a pooled connection, as an async context manager over its response."""

    __slots__ = (
        "_connection",
        "_pool",
        "_response",
        "content",
        "headers",
        "method",
        "timeouts",
        "url",
    )

    def __init__(
        self,
        pool: ConnectionPool,
        method: bytes,
        url: URL,
        headers: list[tuple[bytes, bytes]],
        content: bytes | AsyncIterator[bytes] | None,
        timeouts: RequestTimeouts,
    ) -> None:
        self._pool = pool
        self.method = method
        self.url = url
        self.headers = headers
        self.content = content
        self.timeouts = timeouts
        self._connection: Connection | None = None
        self._response: Response | None = None

    async def __aenter__(self) -> Response:
        origin = origin_of(self.url)
        head, chunked, length = _request_head(self.method, self.url, self.headers, self.content)
        pool = self._pool
        connection = pool._take_idle(origin)
        if connection is None:
            connection = await pool._connect(origin, self.timeouts)
        self._connection = connection
        try:
            try:
                first = await self._send(connection, head, chunked, length)
            except (RemoteProtocolError, ReadError, WriteError):
                # A server may close an idle connection just as it is reused: the request
                # failed before any answer, unseen. It is sent once more on a new connection
                # when its body can be sent again (not a stream passed through), as nginx and
                # Go's HTTP client do.
                connection.close()
                content = self.content
                if connection.requests == 1 or not (content is None or isinstance(content, bytes)):
                    raise
                connection = self._connection = await pool._connect(origin, self.timeouts)
                first = await self._send(connection, head, chunked, length)
            self._response = await _read_head(connection, first, self.method)
        except BaseException:
            self._connection = None
            connection.close()
            raise
        return self._response

    async def __aexit__(self, *exc_info: object) -> None:
        connection, response = self._connection, self._response
        if connection is None:
            return
        self._connection = None
        if response is not None and response.keep_alive and response.complete:
            self._pool._release(connection)
        else:
            connection.close()

    async def _send(
        self, connection: Connection, head: bytes, chunked: bool, length: int | None
    ) -> bytes:
        """Send the request; the first bytes of the answer. RemoteProtocolError if the
        connection closes before any."""
        connection.requests += 1
        connection.read_silence = self.timeouts.get("read")
        connection.write_silence = self.timeouts.get("write")
        content = self.content
        if content is None or isinstance(content, bytes):
            if length is not None and length != len(content or b""):
                raise LocalProtocolError(
                    f"a request body of {len(content or b'')} bytes with Content-Length {length}"
                )
            if chunked:
                content = (
                    b"%x\r\n%b\r\n%b" % (len(content), content, _LAST_CHUNK)
                    if content
                    else _LAST_CHUNK
                )
            # The head and a body in one write: one segment for the server.
            await connection.send(head + content if content else head)
        else:
            await _send_stream(connection, head, content, chunked, length)
        first = await connection.receive()
        if not first:
            raise RemoteProtocolError("Server disconnected without sending a response.")
        return first


def _request_head(
    method: bytes,
    url: URL,
    headers: list[tuple[bytes, bytes]],
    content: bytes | AsyncIterator[bytes] | None,
) -> tuple[bytes, bool, int | None]:
    """The request's head, whether its body goes chunked, and its Content-Length if any. A Host
    header is added unless given, and framing for a body that has none."""
    target = url.target
    if _BAD_NAME.search(method) or _NOT_VCHAR.search(target):
        raise LocalProtocolError(f"a request line HTTP/1.1 cannot carry: {target!r}")
    lines = [method, b" ", target, b" HTTP/1.1\r\n", b""]
    has_host = False
    chunked = False
    length: int | None = None
    for name, value in headers:
        if not name or _BAD_NAME.search(name) or _BAD_VALUE.search(value):
            raise LocalProtocolError(f"a request header HTTP/1.1 cannot carry: {name!r}")
        size = len(name)
        if size == 4 and name.lower() == b"host":
            has_host = True
        elif size == 14 and name.lower() == b"content-length":
            if not value.isdigit():
                raise LocalProtocolError(f"a malformed Content-Length: {value!r}")
            length = int(value)
        elif size == 17 and name.lower() == b"transfer-encoding":
            chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
        lines += (name, b": ", value, b"\r\n")
    if not has_host:
        host = url.host
        if b":" in host:
            host = b"[" + host + b"]"
        if url.port is not None and url.port != DEFAULT_PORTS[url.scheme]:
            host = b"%b:%d" % (host, url.port)
        lines[4] = b"host: " + host + b"\r\n"
    if chunked:
        if length is not None:
            raise LocalProtocolError("a request with Content-Length and chunked")
    elif length is None:
        if isinstance(content, bytes):
            length = len(content)
            lines.append(b"content-length: %d\r\n" % length)
        elif content is not None:
            chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
    lines.append(b"\r\n")
    return b"".join(lines), chunked, length


async def _send_stream(
    connection: Connection,
    head: bytes,
    content: AsyncIterator[bytes],
    chunked: bool,
    length: int | None,
) -> None:
    """A streamed body, framed as declared; small pieces wait for company (`CORK_LIMIT`)."""
    pending = [head]
    size = len(head)
    sent = 0
    async for piece in content:
        if not piece:
            continue
        sent += len(piece)
        if length is not None and sent > length:
            raise LocalProtocolError(f"a request body longer than its {length} bytes")
        if chunked:
            pending += (b"%x\r\n" % len(piece), piece, b"\r\n")
        else:
            pending.append(piece)
        size += len(piece)
        if size >= CORK_LIMIT:
            await connection.send(b"".join(pending))
            pending.clear()
            size = 0
    if length is not None and sent < length:
        raise LocalProtocolError(f"a request body of {sent} of its {length} bytes")
    if chunked:
        pending.append(_LAST_CHUNK)
    if pending:
        await connection.send(b"".join(pending))


async def _read_head(connection: Connection, buffer: bytes, method: bytes) -> Response:
    """The response's head (after any interim 1xx ones), `buffer` being what came so far."""
    for _ in range(MAX_INTERIM + 1):
        end = buffer.find(b"\r\n\r\n")
        while end < 0:
            if len(buffer) > MAX_HEAD:
                raise RemoteProtocolError(f"a response head over {MAX_HEAD} bytes")
            more = await connection.receive()
            if not more:
                raise RemoteProtocolError("Server disconnected in a response head.")
            start = max(0, len(buffer) - 3)
            buffer += more
            end = buffer.find(b"\r\n\r\n", start)
        split = end + 4
        if split > MAX_HEAD:
            raise RemoteProtocolError(f"a response head over {MAX_HEAD} bytes")
        head = _Head()
        parser = httptools.HttpResponseParser(head)
        try:
            parser.feed_data(memoryview(buffer)[:split])
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            raise RemoteProtocolError(f"a malformed response head: {exc}") from None
        buffer = buffer[split:]
        status = parser.get_status_code()
        if status >= 200:
            return _response(connection, parser, head, status, buffer, method)
        if status == 101:
            raise RemoteProtocolError("switched protocols unasked (101)")
    raise RemoteProtocolError(f"more than {MAX_INTERIM} interim (1xx) responses")


def _response(
    connection: Connection,
    parser: httptools.HttpResponseParser,
    head: _Head,
    status: int,
    buffer: bytes,
    method: bytes,
) -> Response:
    response = Response(status, head.headers)
    response._connection = connection
    keep_alive = parser.should_keep_alive()
    if method == b"HEAD" or status in _NO_BODY_STATUSES:
        mode = _DONE
    elif head.chunked:
        mode = _CHUNKED
        response.chunked = True
    elif head.chunked is None and head.length is not None:
        mode = _LENGTH if head.length else _DONE
        response._left = head.length
    else:
        # Neither: the body ends when the connection does.
        mode = _CLOSE
        keep_alive = False
    if mode == _DONE:
        # Bytes after a response with no body: nobody asked for them.
        keep_alive = keep_alive and not buffer
    else:
        response._buffer = buffer
    response._mode = mode
    response.keep_alive = keep_alive
    return response


def _forever(timeout: float | None) -> float:
    return math.inf if timeout is None else timeout


def _default_ssl_context() -> ssl.SSLContext:
    """What httpcore uses: the system's defaults, certifi's roots, HTTP/1.1 by ALPN."""
    context = ssl.create_default_context()
    context.load_verify_locations(certifi.where())
    context.set_alpn_protocols(["http/1.1"])
    return context


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
