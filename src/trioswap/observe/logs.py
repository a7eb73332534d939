"""The log hub: ring buffers of recent lines per source, and live subscribers.

Sources: "proxy" (trioswap's own log), "upstream" (every model server's output, each line prefixed
with its model id) and one per model id. "all" is proxy and upstream together. A subscriber that
falls behind loses lines rather than slowing the writers: logs must never back-pressure a model
server's output pipe or the request path.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import trio

HISTORY_LINES = 2000
SUBSCRIBER_BUFFER = 1024
ALL = "all"
PROXY = "proxy"
UPSTREAM = "upstream"


class LogHub:
    def __init__(self, history_lines: int = HISTORY_LINES) -> None:
        self._history_lines = history_lines
        self._history: dict[str, deque[str]] = {}
        self._subscribers: dict[str, set[trio.MemorySendChannel[str]]] = {}

    def write_model(self, model: str, line: str) -> None:
        self._put(model, line)
        tagged = f"[{model}] {line}"
        self._put(UPSTREAM, tagged)
        self._put(ALL, tagged)

    def write_proxy(self, line: str) -> None:
        self._put(PROXY, line)
        self._put(ALL, line)

    def history(self, source: str) -> list[str]:
        return list(self._history.get(source, ()))

    def tail(self, source: str, lines: int) -> list[str]:
        buffer = self._history.get(source, ())
        return list(buffer)[-lines:] if lines else []

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
        buffer = self._history.get(source)
        if buffer is None:
            buffer = self._history[source] = deque(maxlen=self._history_lines)
        buffer.append(line)
        for send in self._subscribers.get(source, ()):
            try:
                send.send_nowait(line)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                pass


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
