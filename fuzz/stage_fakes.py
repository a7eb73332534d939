"""In-memory ends for driving trioswap without a network: a connection that replays bytes (a
model server's for the `Stream` stage, a client's for the front door), a client request body
that was already read, and what a parsed request comes to. Shared by the fuzz targets (which
import it as `stage_fakes`, from their own directory) and the tests (as `fuzz.stage_fakes`).

trioswap is imported only for type checking, so that a fuzz target importing this module before
`atheris.instrument_imports()` still gets trioswap's modules instrumented.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from trioswap.protocols.errors import Headers
    from trioswap.web.http1 import Request


class NoRequestBody:
    """The client's request body, already read (`Exchange.body`), so never received from."""

    def __init__(self) -> None:
        self.present = False
        self.framing: Headers = []

    def check(self) -> None:
        pass

    async def read(self) -> bytes:
        raise AssertionError("the body was read before the stream stage")

    def __aiter__(self) -> AsyncIterator[bytes]:
        raise AssertionError("the body was read before the stream stage")


class Replay(trio.abc.Stream):
    """A connection whose other end sends `pieces`, one per `receive_some` (cut to
    `max_bytes`), and then closes (b""), whatever it is sent; it keeps what it was sent
    (`writes`) and counts what it handed out (`delivered`)."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = [piece for piece in pieces if piece][::-1]  # b"" would read as closed
        self.delivered = 0
        self.writes: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self.writes.append(bytes(data))

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self.pieces:
            return b""
        piece = self.pieces.pop()
        if max_bytes is not None and len(piece) > max_bytes:
            piece, rest = piece[:max_bytes], piece[max_bytes:]
            self.pieces.append(rest)
        self.delivered += len(piece)
        return piece

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


@dataclass(frozen=True)
class Parsed:
    """A request as the front door parsed it, its body read whole."""

    method: str
    target: bytes
    path: str
    raw_path: bytes
    query: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    version: str
    keep_alive: bool

    @classmethod
    def of(cls, request: Request, body: bytes) -> Parsed:
        return cls(
            request.method,
            request.target,
            request.path,
            request.raw_path,
            request.query,
            tuple(request.headers),
            body,
            request.version,
            request.keep_alive,
        )
