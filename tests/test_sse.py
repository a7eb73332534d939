"""The incremental server-sent-events decoder: the same events however the bytes are split."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioswap.errors import UpstreamProtocolError
from trioswap.protocols import sse
from trioswap.protocols.sse import EventDecoder


def decode(chunks: list[bytes]) -> list[bytes]:
    decoder = EventDecoder("m")
    out = [data for chunk in chunks for data in decoder.feed(chunk)]
    return out + decoder.close()


@pytest.mark.parametrize(
    ("stream", "events"),
    [
        (b'data: {"a":1}\n\ndata: [DONE]\n\n', [b'{"a":1}', b"[DONE]"]),
        (b"data:x\r\n\r\ndata: y\r\n\r\n", [b"x", b"y"]),  # CRLF, no space after the colon
        (b"data: a\ndata: b\n\n", [b"a\nb"]),  # several data lines join with newlines
        (b": keep-alive\n\nevent: message\ndata: z\nid: 7\n\n", [b"z"]),  # comments, fields
        (b"data: last", [b"last"]),  # ended without a blank line
        (b"\n\n\n\n", []),
        (b"data: \n\n", [b""]),
        (b"data: a\r\rdata: b\r\r", [b"a", b"b"]),  # bare CR line ends
    ],
)
def test_events(stream: bytes, events: list[bytes]) -> None:
    assert decode([stream]) == events


_event = st.lists(st.binary(max_size=20).filter(lambda b: b"\n" not in b and b"\r" not in b))


@given(
    events=st.lists(_event.filter(bool), max_size=8),
    newline=st.sampled_from([b"\n", b"\r\n"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_any_split_gives_the_same_events(
    events: list[list[bytes]], newline: bytes, cuts: list[int]
) -> None:
    stream = b"".join(
        b"".join(b"data: " + line + newline for line in lines) + newline for lines in events
    )
    points = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    expected = [b"\n".join(lines) for lines in events]
    assert decode(chunks) == expected


def test_an_event_that_never_ends_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "MAX_EVENT_BYTES", 100)
    decoder = EventDecoder("m")
    with pytest.raises(UpstreamProtocolError, match="longer than 100 bytes"):
        for _ in range(20):
            decoder.feed(b"data: " + b"x" * 10)
