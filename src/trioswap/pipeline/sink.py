"""The one response of an exchange, as a small state machine that owns what an error becomes.

    PENDING ─ start(events=True) ─▶ EVENTS ─ end() ─▶ DONE
       │    ─ start() ────────────▶ BYTES ── end() ─▶ DONE
       └─── respond() ────────────────────────────▶ DONE

`fail(error)` turns an error into what the client can still be told: a whole error response in
its API family while PENDING, an error event while EVENTS, a body cut short while BYTES (headers
are gone and the body is opaque: the transport ends the connection without completing it, the
only honest signal left), and nothing once DONE. Any other move is a bug and raises
`SinkStateError`. Stages that stream (loading progress, the upstream's answer, later translation
and retries) only call these methods; the runner only calls `fail`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from enum import Enum
from functools import partial
from typing import Protocol

from trioswap.errors import TrioswapError
from trioswap.protocols.errors import (
    Family,
    Headers,
    error_bytes,
    error_headers,
    status_of,
    stream_error_event,
)

# Every event stream trioswap starts or passes on: no buffering by proxies, no caching.
EVENT_STREAM_HEADERS: Headers = [(b"x-accel-buffering", b"no"), (b"cache-control", b"no-cache")]


# Sees a response's payload as it passes (observability's meter and capture).
Tap = Callable[[bytes], None]
# Passes one piece of an upstream's body on: (raw, body), see `Transport.relay_writer`.
RelayWrite = Callable[[bytes, bytes], Awaitable[None]]


def payload_writer(
    body: Callable[[bytes, bool], Awaitable[None]], tap: Tap | None = None
) -> RelayWrite:
    """A `RelayWrite` for a transport that frames its response itself: each piece's payload
    goes to `body(payload, True)`, shown to `tap` first."""

    async def write(raw: bytes, payload: bytes) -> None:
        if payload and tap is not None:
            tap(payload)
        await body(payload, True)

    return write


class Transport(Protocol):
    """How bytes reach the client: a status line and headers once, then body chunks."""

    async def start(self, status: int, headers: Headers) -> None: ...
    async def body(self, chunk: bytes, more: bool) -> None: ...
    def relay_writer(self, chunked: bool, tap: Tap | None = None) -> RelayWrite:
        """How an upstream's body passes through as the upstream framed it: the function
        returned is called with each piece as `(raw, body)`, `raw` as it came on the wire and
        `body` the payload it carries (the same bytes unless `chunked`, when `raw` has the
        chunk framing and, over the whole response, ends with the last chunk). A transport
        that frames its response the same way sends `raw` untouched; the response still ends
        with `body(b"", False)`. `tap`, if given, is shown every non-empty payload first.
        One call per chunk, no layers: this is the relay's hot path."""


class ResponseState(Enum):
    PENDING = "pending"
    EVENTS = "events"
    BYTES = "bytes"
    DONE = "done"


PENDING = ResponseState.PENDING
EVENTS = ResponseState.EVENTS
BYTES = ResponseState.BYTES
DONE = ResponseState.DONE


class SinkStateError(RuntimeError):
    """A response was asked to move in a way its state does not allow: a bug in trioswap."""


class Sink:
    __slots__ = ("extra_headers", "family", "state", "stream_error", "transport")

    def __init__(self, transport: Transport, family: Family) -> None:
        self.transport = transport
        self.family = family
        self.state = PENDING
        # How a failed event stream ends when its events are not the family's default ones
        # (a translated stream ends as its translator says).
        self.stream_error: Callable[[TrioswapError, str], bytes] | None = None
        # Headers a stage adds to whatever response goes out (the optimizer's report).
        self.extra_headers: Headers = []

    async def start(self, status: int, headers: Headers, *, events: bool = False) -> None:
        self._move(PENDING, EVENTS if events else BYTES)
        if self.extra_headers:
            headers = [*headers, *self.extra_headers]
        await self.transport.start(status, headers)

    async def send(self, chunk: bytes) -> None:
        state = self.state
        if state is not EVENTS and state is not BYTES:
            raise SinkStateError(f"body chunk sent while {state.value}")
        await self.transport.body(chunk, True)

    def relay_writer(self, chunked: bool) -> RelayWrite:
        """How an upstream's body passes through as it was framed (see
        `Transport.relay_writer`), checked against the state once rather than per chunk: the
        response stays started until `end` or `fail`, which the relaying stage calls after."""
        state = self.state
        if state is not EVENTS and state is not BYTES:
            raise SinkStateError(f"body relayed while {state.value}")
        return self.transport.relay_writer(chunked)

    async def end(self, chunk: bytes = b"") -> None:
        state = self.state
        if state is not EVENTS and state is not BYTES:
            raise SinkStateError(f"response ended while {state.value}")
        # Done before the last send: the transport may report the client gone from inside it,
        # once the response is complete, and that is not a disconnect worth acting on.
        self.state = DONE
        await self.transport.body(chunk, False)

    async def respond(
        self, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        """A whole JSON response at once (errors, requests answered by trioswap itself)."""
        self._move(PENDING, DONE)
        await self.transport.start(
            status,
            [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
                *self.extra_headers,
            ],
        )
        await self.transport.body(body, False)

    async def fail(self, error: TrioswapError, request_id: str) -> None:
        state = self.state
        if state is PENDING:
            body = error_bytes(self.family, error, request_id)
            await self.respond(status_of(error), body, error_headers(error, request_id))
        elif state is EVENTS:
            end = self.stream_error or partial(stream_error_event, self.family)
            await self.send(end(error, request_id))
            await self.end()
        else:
            self.state = DONE

    def _move(self, expected: ResponseState, new: ResponseState) -> None:
        if self.state is not expected:
            raise SinkStateError(f"response moved {self.state.value} -> {new.value}")
        self.state = new
