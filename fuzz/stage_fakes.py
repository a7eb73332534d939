"""In-memory ends for driving the `Stream` stage without a network: a model server's connection
that replays bytes, and a client request body that was already read. Shared by
`fuzz_sse_relay.py` (which imports it as `stage_fakes`, from its own directory) and
`tests/test_fuzz_regressions.py` (as `fuzz.stage_fakes`).

trioswap is imported only for type checking, so that a fuzz target importing this module before
`atheris.instrument_imports()` still gets trioswap's modules instrumented.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from trioswap.protocols.errors import Headers


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
    """A model server's connection that answers whatever it was sent with `pieces`, one per
    `receive_some` (cut to `max_bytes`), and then closes (b"")."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = [piece for piece in pieces if piece][::-1]  # b"" would read as closed

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
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
        return piece

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
