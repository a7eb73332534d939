"""`/ws/logs`: the log hub over a websocket, one text message per log line.

Query parameters: `source` — `all` (the default: proxy and upstream together, as llama-swap's
`/logs/stream`), `proxy`, `upstream`, or a model's id or alias; `history` — the source's ring
first (the default, as `/logs/stream`; `history=0` or llama-swap's `no-history` skip it);
`resume` — the instance id a client saw on an earlier connection (see below).

An unknown source is accepted and then closed with 1008 and a reason naming it: a browser's
WebSocket API shows a close reason, never the body of a refused handshake.

Every connection's handshake answer carries `X-Trioswap-Instance`, an id that changes when
trioswap restarts. A client reconnecting with `resume=<that id>` gets no history while trioswap
is the same (it saw those lines already) and the new trioswap's history when it restarted (lines
it has not seen), so a reconnecting tail neither repeats nor misses lines.

A client that reads more slowly than lines come loses the oldest of the lines it has not been
sent yet, never slowing the hub: at most `BACKLOG_LINES` lines and `BACKLOG_CHARS` characters
wait per client, and where lines were lost it gets one line saying how many.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from trioswap.clip import clip
from trioswap.observe.logs import ALL, PROXY, UPSTREAM, LogHub

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from trioswap.config import Config

PATH = "/ws/logs"
INSTANCE_HEADER = "X-Trioswap-Instance"
BACKLOG_LINES = 1024
BACKLOG_CHARS = 1 << 20
POLICY_VIOLATION = 1008
# RFC 6455: a close frame's reason is at most 123 bytes of UTF-8.
CLOSE_REASON_BYTES = 123
_NAMED_SOURCES = frozenset({ALL, PROXY, UPSTREAM})
_NO = frozenset({"0", "false", "no"})


def dropped_line(count: int) -> str:
    return f"[trioswap] {count} log lines dropped here: this client read them too slowly"


class Backlog:
    """Lines waiting for one client, bounded: past `max_lines` or `max_chars` the oldest go,
    counted, and `get` hands out a `dropped_line` in their place."""

    def __init__(self, max_lines: int = BACKLOG_LINES, max_chars: int = BACKLOG_CHARS) -> None:
        self._max_lines = max_lines
        self._max_chars = max_chars
        self._lines: deque[str] = deque()
        self._chars = 0
        self._dropped = 0
        self._more = trio.Event()

    def put(self, line: str) -> None:
        self._lines.append(line)
        self._chars += len(line)
        while len(self._lines) > self._max_lines or self._chars > self._max_chars:
            self._chars -= len(self._lines.popleft())
            self._dropped += 1
        self._more.set()

    async def get(self) -> str:
        """The next line to send, waiting for one (one consumer at a time)."""
        while not self._lines:
            self._more = trio.Event()
            await self._more.wait()
        if self._dropped:
            count, self._dropped = self._dropped, 0
            return dropped_line(count)
        line = self._lines.popleft()
        self._chars -= len(line)
        return line


async def tail(
    logs: LogHub,
    source: str,
    with_history: bool,
    send: Callable[[str], Awaitable[None]],
    backlog: Backlog,
) -> None:
    """Send `source`'s history (when asked), then its live lines, until cancelled."""
    with logs.subscribe(source) as receive:
        # Subscribed and read with no checkpoint between: no line is missed or sent twice.
        history = logs.history(source) if with_history else []

        async def pump() -> None:
            # Only moves lines in memory, so it keeps the hub's channel empty however slowly
            # `send` goes; what is lost is lost in `backlog`, which counts it.
            async for line in receive:
                backlog.put(line)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            for line in history:
                await send(line)
            while True:
                await send(await backlog.get())


def source_of(name: str, config: Config) -> str | None:
    """The hub source a `source` parameter names (a model by id or alias), or None."""
    if name in _NAMED_SOURCES:
        return name
    return config.resolve(name)


def close_reason(text: str) -> str:
    return text.encode()[:CLOSE_REASON_BYTES].decode(errors="ignore")


def register_ws_logs(app: QuartTrio, config: Config, logs: LogHub) -> None:
    """Adds the `/ws/logs` route to `app`."""
    # Imported here: `trioswap logs` shares this module's constants, not the web stack.
    from quart import websocket

    instance = secrets.token_hex(8)

    @app.websocket(PATH)
    async def ws_logs() -> None:
        args = websocket.args
        name = args.get("source", ALL)
        source = source_of(name, config)
        await websocket.accept(headers={INSTANCE_HEADER: instance})
        if source is None:
            reason = f"unknown log source {clip(name, 40)!r}: use all, proxy, upstream or a model"
            await websocket.close(POLICY_VIOLATION, close_reason(reason))
            return
        with_history = (
            args.get("history", "1").lower() not in _NO
            and "no-history" not in args
            and args.get("resume") != instance
        )
        async with trio.open_nursery() as nursery:

            async def ignore_messages() -> None:
                # A tail takes no input; reading on lets a client's close be seen.
                while True:
                    await websocket.receive()

            nursery.start_soon(ignore_messages)
            await tail(logs, source, with_history, websocket.send, Backlog())
