"""The Exchange: one client request on its way through a pipeline's stages.

It carries what stages learn (the body once read, the resolved model and the leased server, or
the peer that serves the model), the request body as it arrives, and the `Sink` through which
exactly one response goes back. It never imports a web framework.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from trioswap.pipeline.peers import PeerRoute
from trioswap.pipeline.sink import Sink
from trioswap.pipeline.translation import Fallback, Translation
from trioswap.protocols.errors import Headers
from trioswap.supervisor import ModelServer

if TYPE_CHECKING:
    from trioswap.discovery.ollama import Discovered
    from trioswap.pipeline.loading import Progress


class RequestBody(Protocol):
    """The client's request body as it arrives, at most `maxRequestBodyMB` of it, and dropped
    when it stalls for `requestBodyTimeout` (PayloadTooLarge, RequestTimeout)."""

    # Whether the client sent a body at all (a Content-Length or a Transfer-Encoding).
    present: bool
    # How the body is framed when passed on as it comes: as the client framed it.
    framing: Headers

    def check(self) -> None:
        """Refuse a body whose Content-Length declares more than the limit, unread."""

    async def read(self) -> bytes:
        """The whole body."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...


@dataclass(slots=True, eq=False)
class Exchange:
    method: str
    # The path as routed (percent-decoded), and as the client sent it.
    path: str
    raw_path: bytes
    query: bytes
    headers: Headers
    sink: Sink
    stack: AsyncExitStack
    request_body: RequestBody
    # Ties the exchange's activity record, error answer and log lines together.
    request_id: str = ""
    # Told the model's name once `resolve` knows it (the in-flight list shows it).
    on_model: Callable[[str], None] | None = None
    # The class of the error the exchange ended with, if it did (counted in /metrics). Not the
    # error itself: its traceback's frames hold the exchange, a cycle that would keep the
    # request body alive until the garbage collector runs.
    error: type[Exception] | None = None
    # Set by `read_body`; None while the body is still unread (and then passed on as it comes).
    body: bytes | None = None
    json: dict[str, Any] | None = None
    body_changed: bool = False
    model_name: str | None = None
    # The local model's id; None for a peer's model (then `peer` is set) or a model a running
    # Ollama serves (then `discovered` is).
    model_id: str | None = None
    peer: PeerRoute | None = None
    discovered: Discovered | None = None
    # The path sent to the model server (bytes as they will go on the wire, before the query).
    upstream_path: bytes = b""
    server: ModelServer | None = None
    # Set by `translate`: the reply is translated back to the client's API family.
    translation: Translation | None = None
    # Set by `translate` in auto mode: turns the exchange into a translated one, for a server
    # that turns out not to serve the family natively (`stream` calls it at most once).
    fallback: Fallback | None = None
    # Set by `swap` when it streamed loading progress: the response has begun, and the model's
    # answer continues it in its family's grammar through this.
    loading: Progress | None = None
    # Set by `optimize`: asked by `stream`, once, for a smaller prompt when the server refuses
    # this one for its size (its prompt tokens, its context); False when it cannot shrink.
    shrink: Callable[[int, int], bool] | None = None

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None
