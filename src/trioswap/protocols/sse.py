"""Server-sent events, read incrementally: bytes as they arrive in, each event's data out.

Only what a translated stream needs: `data:` lines (joined with newlines when an event has
several), events ended by a blank line, `\\r\\n` or `\\n` line ends, comments and other fields
ignored. A bounded buffer keeps a server that never ends an event from growing it forever.
"""

from __future__ import annotations

import re

from trioswap.errors import UpstreamProtocolError

# An event's data longer than this is not a chat chunk.
MAX_EVENT_BYTES = 16 * 1024 * 1024
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE = re.compile(rb"\r\n|\n|\r")


class EventDecoder:
    __slots__ = ("_buffer", "_model")

    def __init__(self, model: str) -> None:
        self._buffer = b""
        self._model = model  # for the error message

    def feed(self, chunk: bytes) -> list[bytes]:
        """The data of every event `chunk` completes."""
        buffer = self._buffer + chunk if self._buffer else chunk
        out: list[bytes] = []
        start = 0
        for end in _EVENT_END.finditer(buffer):
            data = _data(buffer[start : end.start()])
            if data is not None:
                out.append(data)
            start = end.end()
        self._buffer = buffer[start:]
        if len(self._buffer) > MAX_EVENT_BYTES:
            raise UpstreamProtocolError(
                self._model, f"sent a server-sent event longer than {MAX_EVENT_BYTES} bytes"
            )
        return out

    def close(self) -> list[bytes]:
        """The data of a last event the stream ended without a blank line after."""
        data = _data(self._buffer)
        self._buffer = b""
        return [] if data is None else [data]


def _data(event: bytes) -> bytes | None:
    lines = [
        line[5:].removeprefix(b" ") for line in _LINE.split(event) if line.startswith(b"data:")
    ]
    return b"\n".join(lines) if lines else None
