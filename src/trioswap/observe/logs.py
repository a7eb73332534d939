"""The log hub: ring buffers of recent lines per source, and live subscribers.

Sources: "proxy" (trioswap's own log), "upstream" (every model server's output, each line prefixed
with its model id) and one per model id. "all" is proxy and upstream together. A subscriber that
falls behind loses lines rather than slowing the writers: logs must never back-pressure a model
server's output pipe or the request path.

Each ring holds at most `HISTORY_LINES` lines and `HISTORY_CHARS` characters, and a line longer
than `LINE_CHARS` keeps only its head and tail, so that neither a chatty model server nor a
client's giant model name echoed in an error can grow trioswap's memory.

`logToStdout` picks what the hub also copies to stdout, as written: trioswap's own lines, the
model servers' (tagged, with no timestamp added: a model server stamps its own), both or none.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import trio

HISTORY_LINES = 2000
HISTORY_CHARS = 1 << 20
LINE_CHARS = 8192
SUBSCRIBER_BUFFER = 1024
ALL = "all"
PROXY = "proxy"
UPSTREAM = "upstream"
# `logToStdout` → the sources copied to stdout.
STDOUT_SOURCES = {
    "proxy": {PROXY},
    "upstream": {UPSTREAM},
    "both": {PROXY, UPSTREAM},
    "none": set(),
}


def bounded_line(line: str, limit: int = LINE_CHARS) -> str:
    """`line`, or its head and tail when it is longer than `limit` (a traceback's end matters)."""
    cut = len(line) - limit
    if cut <= 0:
        return line
    half = limit // 2
    return f"{line[:half]} … ({cut} characters cut) … {line[-half:]}"


class _Ring:
    __slots__ = ("_max_chars", "_max_lines", "chars", "lines")

    def __init__(self, max_lines: int, max_chars: int) -> None:
        self._max_lines = max_lines
        self._max_chars = max_chars
        self.lines: deque[str] = deque()
        self.chars = 0

    def append(self, line: str) -> None:
        self.lines.append(line)
        self.chars += len(line)
        while len(self.lines) > self._max_lines or self.chars > self._max_chars:
            self.chars -= len(self.lines.popleft())


class LogHub:
    def __init__(
        self,
        history_lines: int = HISTORY_LINES,
        history_chars: int = HISTORY_CHARS,
        line_chars: int = LINE_CHARS,
        to_stdout: str = "none",
    ) -> None:
        self._to_stdout = STDOUT_SOURCES[to_stdout]
        self._history_lines = history_lines
        self._history_chars = history_chars
        self._line_chars = line_chars
        self._history: dict[str, _Ring] = {}
        self._subscribers: dict[str, set[trio.MemorySendChannel[str]]] = {}

    def write_model(self, model: str, line: str) -> None:
        line = bounded_line(line, self._line_chars)
        self._put(model, line)
        tagged = f"[{model}] {line}"
        self._put(UPSTREAM, tagged)
        self._put(ALL, tagged)
        if UPSTREAM in self._to_stdout:
            _print(tagged)

    def write_proxy(self, line: str) -> None:
        line = bounded_line(line, self._line_chars)
        self._put(PROXY, line)
        self._put(ALL, line)
        if PROXY in self._to_stdout:
            _print(line)

    def history(self, source: str) -> list[str]:
        ring = self._history.get(source)
        return list(ring.lines) if ring is not None else []

    def tail(self, source: str, lines: int) -> list[str]:
        return self.history(source)[-lines:] if lines else []

    @contextmanager
    def subscribe(self, source: str) -> Iterator[trio.MemoryReceiveChannel[str]]:
        send, receive = trio.open_memory_channel[str](SUBSCRIBER_BUFFER)
        subscribers = self._subscribers.setdefault(source, set())
        subscribers.add(send)
        try:
            yield receive
        finally:
            subscribers.discard(send)
            send.close()

    def _put(self, source: str, line: str) -> None:
        ring = self._history.get(source)
        if ring is None:
            ring = self._history[source] = _Ring(self._history_lines, self._history_chars)
        ring.append(line)
        for send in self._subscribers.get(source, ()):
            try:
                send.send_nowait(line)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                pass


def _print(line: str) -> None:
    # A plain blocking write, as logging's own StreamHandler does: whoever runs trioswap
    # drains its stdout (a terminal, a journal, a pipe that is read).
    try:
        print(line, flush=True)
    except OSError:
        pass  # stdout is gone (a closed pipe): the history and subscribers still get the line


class HubHandler(logging.Handler):
    """Feeds trioswap's own `logging` records into the hub's proxy log."""

    def __init__(self, hub: LogHub) -> None:
        super().__init__()
        self._hub = hub

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._hub.write_proxy(self.format(record))
        except Exception:
            self.handleError(record)
