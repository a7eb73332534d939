"""Fuzz target: the front door's HTTP/1.1 parser (`web/http1.py`), client bytes split into reads
of any size through an `Http1Connection`, with a handler that takes each request and reads its
body (`FrontBody`) as the front does, then the client's end.

Whatever the bytes, only a `MalformedRequest` (400 or 431) escapes, no request's body is longer
than what was sent, and the reader never holds more than READ_AHEAD unconsumed body bytes plus
one read. Requests built from the input (methods, percent-encoded paths and queries, origin and
absolute form, HTTP/1.0 and 1.1, keep-alive, headers, bodies by Content-Length or chunked with
extensions and trailers, Content-Length beside chunked, Expect: 100-continue, bodies past
READ_AHEAD, pipelined) parse to exactly what was built, and the reader's hold on unconsumed bytes
is bounded against the wire itself; the only bytes written are 100 Continue, at most once for
each request that expected it.

Seeds (fuzz/corpus/front_http1/): raw client bytes end with `[7, 40, 3, 255, 255, 1]` (cuts, the
length, then 1: any bytes); any bytes ending in 0 build requests from what comes before.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from itertools import pairwise
from typing import TypeVar
from urllib.parse import quote

import atheris
import trio
import trio.testing
from stage_fakes import Parsed, Replay

with atheris.instrument_imports():
    from trioswap.web.http1 import (
        READ_AHEAD,
        READ_SIZE,
        FrontBody,
        Http1Connection,
        MalformedRequest,
    )

LIMIT = 1 << 30
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD")
HOST = b"abcdefghijklmnopqrstuvwxyz0123456789-."
TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Headers whose meaning the builder sets itself.
RESERVED = frozenset(
    {b"content-length", b"transfer-encoding", b"connection", b"proxy-connection", b"expect"}
    | {b"upgrade"}
)
T = TypeVar("T")


@dataclass(frozen=True)
class Built:
    wire: bytes
    expected: Parsed
    expects_continue: bool


async def serve(client: Replay, overhead: int | None) -> tuple[list[Parsed], int | None]:
    """The requests as the handler got them, and the status of a MalformedRequest. `overhead`:
    the wire's bytes that are not body (heads, chunk framing), when known."""
    conn = Http1Connection(client)  # type: ignore[arg-type]  # any trio stream will do
    parsed: list[Parsed] = []
    taken = 0  # body bytes the handler has consumed

    async def bounded() -> None:
        # Let the reader run as far ahead as it will, then see how far that is.
        await trio.testing.wait_all_tasks_blocked()
        waiting = client.delivered - taken
        if overhead is not None:
            assert waiting <= overhead + READ_AHEAD + READ_SIZE, (waiting, overhead)
        held = conn._buffered  # the reader's own count of unconsumed body bytes
        assert 0 <= held <= READ_AHEAD + READ_SIZE, held

    status = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.read_loop)
        try:
            while (request := await conn.next_request()) is not None:
                await bounded()
                pieces = []
                async for piece in FrontBody(conn, request, LIMIT, 30.0):
                    pieces.append(piece)
                    taken += len(piece)
                    await bounded()
                body = b"".join(pieces)
                assert len(body) <= client.delivered
                parsed.append(Parsed.of(request, body))
                conn.finished(request)
        except MalformedRequest as exc:
            assert exc.status in (400, 431), exc.status
            status = exc.status
        nursery.cancel_scope.cancel()
    return parsed, status


def run(pieces: list[bytes], overhead: int | None) -> tuple[Replay, list[Parsed], int | None]:
    client = Replay(pieces)
    # A virtual clock: a body that stalls (it never should: the client ends) times out at once.
    clock = trio.testing.MockClock(autojump_threshold=0)
    parsed, status = trio.run(serve, client, overhead, clock=clock)
    return client, parsed, status


def pick(fdp: atheris.FuzzedDataProvider, options: tuple[T, ...]) -> T:
    return options[fdp.ConsumeIntInRange(0, len(options) - 1)]


def token(fdp: atheris.FuzzedDataProvider, size: int) -> bytes:
    return bytes(TOKEN[b % len(TOKEN)] for b in fdp.ConsumeBytes(size)) or b"x"


def field_value(fdp: atheris.FuzzedDataProvider) -> bytes:
    raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 16))
    value = bytes(b if 0x21 <= b <= 0x7E else 0x20 for b in raw)
    return b" ".join(value.split())


def splits(fdp: atheris.FuzzedDataProvider, wire: bytes) -> list[bytes]:
    if not wire:
        return []
    count = fdp.ConsumeIntInRange(0, 8)
    cuts = sorted({fdp.ConsumeIntInRange(1, len(wire)) for _ in range(count)})
    return [wire[a:b] for a, b in pairwise([0, *cuts, len(wire)]) if b > a]


def chunked(fdp: atheris.FuzzedDataProvider, body: bytes) -> bytes:
    out = []
    rest = body
    while rest:
        # At most a few chunks: a large body in one-byte chunks is slow and finds nothing new.
        size = fdp.ConsumeIntInRange(1, len(rest)) if len(out) < 8 else len(rest)
        line = (b"%X" if fdp.ConsumeBool() else b"%x") % size
        if fdp.ConsumeBool():
            line += b";" + token(fdp, 4) + (b"=" + token(fdp, 4) if fdp.ConsumeBool() else b"")
        out.append(line + b"\r\n" + rest[:size] + b"\r\n")
        rest = rest[size:]
    trailer = b"X-Trailer: " + token(fdp, 6) + b"\r\n" if fdp.ConsumeBool() else b""
    return b"".join(out) + b"0\r\n" + trailer + b"\r\n"


def built(fdp: atheris.FuzzedDataProvider, last: bool) -> Built:
    """One request and what it must parse to; only the `last` may end the connection."""
    method = pick(fdp, METHODS)
    segments = [fdp.ConsumeUnicodeNoSurrogates(6) for _ in range(fdp.ConsumeIntInRange(1, 3))]
    raw_path = ("/" + "/".join(quote(s, safe="") for s in segments)).encode()
    query = quote(fdp.ConsumeUnicodeNoSurrogates(8), safe="=&").encode()
    target = raw_path + (b"?" + query if query else b"")
    if fdp.ConsumeIntInRange(0, 3) == 0:
        host = bytes(HOST[b % len(HOST)] for b in fdp.ConsumeBytes(8))
        target = b"http://" + host + b"example:8080" + target
    version = pick(fdp, ("1.1", "1.0"))
    headers = []
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        name = token(fdp, fdp.ConsumeIntInRange(1, 12))
        if name.lower() not in RESERVED:
            headers.append((name, field_value(fdp)))
    if version == "1.0":
        connection = pick(fdp, (b"keep-alive", b"Keep-Alive") + ((b"", b"close") if last else ()))
    else:
        connection = pick(fdp, (b"", b"keep-alive") + ((b"close",) if last else ()))
    if connection:
        headers.append((b"Connection", connection))
    keep_alive = connection.lower() == b"keep-alive" or (version == "1.1" and not connection)
    expects_continue = version == "1.1" and fdp.ConsumeIntInRange(0, 3) == 0
    if expects_continue:
        headers.append((b"Expect", b"100-continue"))
    body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256))
    if body and fdp.ConsumeIntInRange(0, 7) == 0:  # past what the reader holds
        body = (body * (3 * READ_AHEAD // len(body) + 1))[
            : fdp.ConsumeIntInRange(1, 3 * READ_AHEAD)
        ]
    framing = pick(fdp, ("none", "length", "chunked", "both") if body else ("none", "length"))
    if framing == "both" and not (last and version == "1.1"):
        framing = "chunked"
    if framing == "none":
        body = payload = b""
    elif framing == "length":
        headers.append((b"Content-Length", b"%d" % len(body)))
        payload = body
    else:
        if framing == "both":  # the chunks count, and the connection ends after
            headers.append((b"Content-Length", b"%d" % fdp.ConsumeIntInRange(0, 99)))
            keep_alive = False
        headers.append((b"Transfer-Encoding", pick(fdp, (b"chunked", b"Chunked"))))
        payload = chunked(fdp, body)
    head = b"%s %s HTTP/%s\r\n" % (method.encode(), target, version.encode())
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n"
    expected = Parsed(
        method,
        target,
        "/" + "/".join(segments),
        raw_path,
        query,
        tuple((name.lower(), value) for name, value in headers),
        body,
        version,
        keep_alive,
    )
    return Built(head + payload, expected, expects_continue)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():  # anything at all from the client
        wire = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, len(data)))
        client, parsed, _ = run(splits(fdp, wire), None)
        assert client.delivered <= len(wire)
        assert sum(len(request.body) for request in parsed) <= len(wire)
        assert all(write == CONTINUE for write in client.writes), client.writes
        return
    count = fdp.ConsumeIntInRange(1, 4)
    requests = [built(fdp, last=i == count - 1) for i in range(count)]
    wire = b"".join(request.wire for request in requests)
    overhead = len(wire) - sum(len(request.expected.body) for request in requests)
    client, parsed, status = run(splits(fdp, wire), overhead)
    assert status is None, (status, wire[:400])
    assert parsed == [request.expected for request in requests], (parsed, requests)
    assert all(write == CONTINUE for write in client.writes), client.writes
    assert len(client.writes) <= sum(request.expects_continue for request in requests)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
