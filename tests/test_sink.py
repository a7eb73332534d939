"""The response state machine: what each move sends, what an error becomes in each state, and
that illegal moves raise."""

from __future__ import annotations

import json

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from trioswap.errors import ModelNotFound, PayloadTooLarge, Unauthorized, UpstreamTimeout
from trioswap.pipeline.sink import (
    BYTES,
    DONE,
    EVENTS,
    PENDING,
    RelayWrite,
    Sink,
    SinkStateError,
)
from trioswap.protocols.errors import Family, Headers


class Recorder:
    """A transport that keeps what it was asked to send."""

    def __init__(self) -> None:
        self.head: tuple[int, dict[bytes, bytes]] | None = None
        self.chunks: list[tuple[bytes, bool]] = []

    async def start(self, status: int, headers: Headers) -> None:
        assert self.head is None
        self.head = (status, dict(headers))

    async def body(self, chunk: bytes, more: bool) -> None:
        assert self.head is not None and (not self.chunks or self.chunks[-1][1])
        self.chunks.append((chunk, more))

    def relay_writer(self, chunked: bool, tap: object = None) -> RelayWrite:
        async def write(raw: bytes, body: bytes) -> None:
            await self.body(body, True)

        return write

    @property
    def text(self) -> bytes:
        return b"".join(chunk for chunk, _ in self.chunks)


def sink(family: Family = Family.OPENAI) -> tuple[Sink, Recorder]:
    recorder = Recorder()
    return Sink(recorder, family), recorder


async def test_event_stream() -> None:
    s, sent = sink()
    await s.start(200, [(b"content-type", b"text/event-stream")], events=True)
    assert s.state is EVENTS
    await s.send(b"data: 1\n\n")
    await s.end()
    assert s.state is DONE
    assert sent.chunks == [(b"data: 1\n\n", True), (b"", False)]


async def test_whole_response() -> None:
    s, sent = sink()
    await s.respond(200, b'{"ok": true}', [(b"x-a", b"1")])
    assert s.state is DONE
    assert sent.head == (
        200,
        {b"content-type": b"application/json", b"content-length": b"12", b"x-a": b"1"},
    )
    assert sent.chunks == [(b'{"ok": true}', False)]


async def test_an_error_before_anything_was_sent_is_a_whole_error_response() -> None:
    s, sent = sink(Family.ANTHROPIC)
    await s.fail(ModelNotFound("nope"), "req_1")
    assert s.state is DONE
    assert sent.head is not None
    status, headers = sent.head
    assert status == 404
    assert headers[b"x-request-id"] == b"req_1"
    body = json.loads(sent.text)
    assert body["type"] == "error" and body["request_id"] == "req_1"

    s, sent = sink()
    await s.fail(Unauthorized(), "req_2")
    assert sent.head is not None and b"www-authenticate" in sent.head[1]
    s, sent = sink()
    await s.fail(PayloadTooLarge(1), "req_3")
    assert sent.head is not None and sent.head[1][b"connection"] == b"close"


async def test_an_error_mid_event_stream_is_an_error_event() -> None:
    s, sent = sink()
    await s.start(200, [], events=True)
    await s.send(b"data: 1\n\n")
    await s.fail(UpstreamTimeout("m", "silent"), "req_1")
    assert s.state is DONE
    assert sent.chunks[-1] == (b"", False)
    event = sent.chunks[-2][0]
    assert event.startswith(b"data: ")
    assert json.loads(event.removeprefix(b"data: "))["error"]["code"] == 504


async def test_an_error_mid_opaque_body_cuts_it_short() -> None:
    s, sent = sink()
    await s.start(200, [(b"content-length", b"100")])
    assert s.state is BYTES
    await s.send(b"partial")
    await s.fail(UpstreamTimeout("m", "silent"), "req_1")
    assert s.state is DONE
    # Nothing more, not even the end: the transport closes the connection unfinished.
    assert sent.chunks == [(b"partial", True)]


async def test_an_error_after_the_response_is_complete_changes_nothing() -> None:
    s, sent = sink()
    await s.respond(200, b"{}")
    await s.fail(UpstreamTimeout("m", "x"), "req_1")
    assert sent.chunks == [(b"{}", False)]


async def test_illegal_moves_raise() -> None:
    s, _ = sink()
    with pytest.raises(SinkStateError):
        await s.send(b"x")
    with pytest.raises(SinkStateError):
        await s.end()
    await s.start(200, [])
    with pytest.raises(SinkStateError):
        await s.start(200, [])
    with pytest.raises(SinkStateError):
        await s.respond(500, b"{}")
    await s.end()
    for move in (s.send(b"x"), s.end(), s.start(200, []), s.respond(200, b"")):
        with pytest.raises(SinkStateError):
            await move


async def test_a_body_is_relayed_only_while_the_response_is_open() -> None:
    s, sent = sink()
    with pytest.raises(SinkStateError):
        s.relay_writer(False)  # nothing started
    await s.start(200, [])
    await s.relay_writer(False)(b"raw", b"raw")
    await s.end()
    assert sent.chunks == [(b"raw", True), (b"", False)]
    with pytest.raises(SinkStateError):
        s.relay_writer(False)  # ended


MOVES = st.lists(
    st.sampled_from(["start", "start_events", "send", "end", "respond", "fail"]), max_size=8
)


@given(MOVES)
def test_any_sequence_is_legal_or_refused_and_the_wire_stays_well_formed(moves: list[str]) -> None:
    async def run() -> None:
        s, sent = sink()
        for move in moves:
            before = s.state
            try:
                match move:
                    case "start":
                        await s.start(200, [])
                    case "start_events":
                        await s.start(200, [], events=True)
                    case "send":
                        await s.send(b"x")
                    case "end":
                        await s.end()
                    case "respond":
                        await s.respond(200, b"{}")
                    case "fail":
                        await s.fail(UpstreamTimeout("m", "x"), "req_1")
            except SinkStateError:
                assert s.state is before  # a refused move changes nothing
        # The recorder asserted one start before any body and nothing after the last chunk.
        if s.state is PENDING:
            assert sent.head is None
        if sent.chunks and not sent.chunks[-1][1]:
            assert s.state is DONE

    trio.run(run)
