"""The Exchange: one client request on its way through a pipeline's stages.

It carries what stages learn (the parsed body, the resolved model, the leased server) and the
`ClientSink` through which exactly one response goes back. It never imports a web framework.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Protocol

from trioswap.protocols.errors import Family
from trioswap.supervisor import ModelServer

Headers = list[tuple[bytes, bytes]]


class ClientSink(Protocol):
    """Where the response goes: a status line and headers once, then body chunks."""

    async def start(self, status: int, headers: Headers) -> None: ...
    async def body(self, chunk: bytes, more: bool) -> None: ...


@dataclass(slots=True, eq=False)
class Exchange:
    method: str
    path: str
    query: bytes
    headers: Headers
    family: Family
    sink: ClientSink
    stack: AsyncExitStack
    body: bytes = b""
    # Set instead of `body` when the pipeline passes the request body on without reading it.
    body_stream: AsyncIterable[bytes] | None = None
    json: dict[str, Any] | None = None
    body_changed: bool = False
    model_name: str | None = None
    model_id: str | None = None
    upstream_path: str = ""
    server: ModelServer | None = None
    response_started: bool = False
    event_stream: bool = False

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def respond(self, status: int, body: bytes, headers: Headers | None = None) -> None:
        """A whole response at once (errors, locally answered requests)."""
        all_headers: Headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if headers:
            all_headers.extend(headers)
        self.response_started = True
        await self.sink.start(status, all_headers)
        await self.sink.body(body, False)
