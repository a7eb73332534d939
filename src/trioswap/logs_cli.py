"""`trioswap logs`: a running trioswap's logs in a terminal, through its `/ws/logs` websocket.

Lines go to stdout as they come. When the connection is lost (trioswap restarting, a proxy in
front of it timing out), stderr says so once and the tail reconnects, waiting `FIRST_BACKOFF`
seconds, doubling to `MAX_BACKOFF`, between attempts. It reconnects with `resume=<instance>`, so
trioswap sends history only when it is a new trioswap: the restarted one's early lines are
printed, and a reconnect to the same trioswap repeats nothing (`--no-history` is about the first
connection only).

Ctrl-C (or SIGTERM) ends it with exit code 0. A first connection that fails, a refused
handshake (an API key missing or wrong) and an unknown source end it with one line on stderr and
exit code 2: those are mistakes to fix, not outages to wait out.

The TCP stream is ours, not trio-websocket's: its client leaves the socket open when the server
closes first, which a tail that reconnects for days would pile up.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlencode, urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from trioswap.clip import clip
from trioswap.web.ws_logs import INSTANCE_HEADER, PATH, POLICY_VIOLATION

API_KEY_ENV = "TRIOSWAP_API_KEY"
FIRST_BACKOFF = 0.25
MAX_BACKOFF = 5.0
CONNECT_TIMEOUT = 10.0
USAGE_ERROR = 2
_TLS = {"http": False, "ws": False, "https": True, "wss": True}
_INSTANCE = INSTANCE_HEADER.lower().encode()
E = TypeVar("E", bound=BaseException)


class Lost(Exception):
    """The connection failed or ended; trying again may help."""


class Refused(Exception):
    """trioswap said no (a key, a source): trying again will not help."""


@dataclass(frozen=True)
class Endpoint:
    """Where a trioswap's `/ws/logs` is."""

    tls: bool
    host: str
    port: int
    authority: str  # for the Host header
    path: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """From `http(s)://`, `ws(s)://` or a bare HOST:PORT; a path in `url` is kept as a
        prefix (trioswap behind a proxy at /trioswap). ValueError says what is wrong."""
        parts = urlsplit(url if "://" in url else f"http://{url}")
        tls = _TLS.get(parts.scheme.lower())
        if tls is None:
            raise ValueError(f"scheme {parts.scheme!r}: use http://HOST:PORT or https://HOST")
        host = parts.hostname
        if not host:
            raise ValueError("no host: use http://HOST:PORT")
        port = parts.port  # ValueError for a port that is no number or out of range
        authority = f"[{host}]" if ":" in host else host
        if port is not None:
            authority += f":{port}"
        default_port = 443 if tls else 80
        return cls(tls, host, port or default_port, authority, parts.path.rstrip("/") + PATH)

    def __str__(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.authority}{self.path}"

    def resource(self, source: str, history: bool, resume: str | None) -> str:
        query = {"source": source, "history": "1" if history else "0"}
        if resume is not None:
            query["resume"] = resume
        return f"{self.path}?{urlencode(query)}"

    async def open_stream(self) -> trio.abc.Stream:
        if not self.tls:
            return await trio.open_tcp_stream(self.host, self.port)
        stream = await trio.open_ssl_over_tcp_stream(self.host, self.port, https_compatible=True)
        try:
            # Now, so that a TLS failure is said as one: inside trio-websocket's handshake it
            # is only a handshake that never ends.
            await stream.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return stream


def main(url: str, source: str, api_key: str | None, history: bool) -> int:
    """Tail until Ctrl-C; the exit code."""
    try:
        endpoint = Endpoint.parse(url)
    except ValueError as exc:
        return _fail(f"--url {url}: {exc}")
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    headers = []
    if key:
        if not key.isprintable():
            return _fail("the API key holds control characters")
        headers.append((b"authorization", b"Bearer " + key.encode()))
    error = trio.run(_run, endpoint, source, history, headers)
    return 0 if error is None else _fail(error)


def _fail(message: str) -> int:
    _say(message)
    return USAGE_ERROR


def _say(message: str) -> None:
    print(f"trioswap logs: {message}", file=sys.stderr, flush=True)


async def _run(
    endpoint: Endpoint, source: str, history: bool, headers: list[tuple[bytes, bytes]]
) -> str | None:
    """Tail until a signal or until stdout closes (None), or until it cannot go on (why)."""
    error = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                await anext(signals)
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            error = await follow(endpoint, source, history, headers)
            nursery.cancel_scope.cancel()
    return error


async def follow(
    endpoint: Endpoint, source: str, history: bool, headers: list[tuple[bytes, bytes]]
) -> str | None:
    """Print lines, reconnecting whenever the connection is lost, until stdout closes (None) or
    tailing cannot go on (why, for the user)."""
    instance: str | None = None  # the trioswap last connected to
    lost = False
    delay = FIRST_BACKOFF

    def connected(now: str | None) -> None:
        nonlocal instance, lost, delay
        if lost:
            _say("reconnected" if now == instance else "reconnected to a new trioswap")
        instance, lost, delay = now, False, FIRST_BACKOFF

    while True:
        resource = endpoint.resource(source, history or instance is not None, instance)
        try:
            await connection(endpoint, resource, headers, connected)
            return None
        except Refused as exc:
            return str(exc)
        except Lost as exc:
            if instance is None:
                return f"cannot connect to {endpoint}: {exc}"
            if not lost:
                _say(f"lost the connection to {endpoint} ({exc}); reconnecting")
                lost = True
        await trio.sleep(delay)
        delay = min(delay * 2, MAX_BACKOFF)


async def connection(
    endpoint: Endpoint,
    resource: str,
    headers: list[tuple[bytes, bytes]],
    connected: Callable[[str | None], None],
) -> None:
    """One connection: `connected(its instance id)` once open, then print lines. Returns when
    stdout is gone; raises `Lost` or `Refused` when the connection ends."""
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            stream = await endpoint.open_stream()
    except OSError as exc:
        raise Lost(exc.strerror or str(exc)) from None
    except trio.BrokenResourceError as exc:  # TLS
        raise Lost(str(exc.__cause__ or exc)) from None
    except trio.TooSlowError:
        raise Lost(f"no answer in {CONNECT_TIMEOUT:g} s") from None
    # trio-websocket raises a refused handshake in its reader task: errors come grouped.
    error: Lost | Refused | None = None
    try:
        async with stream, trio.open_nursery() as reader:
            with trio.fail_after(CONNECT_TIMEOUT):
                ws = await wrap_client_stream(
                    reader, stream, endpoint.authority, resource, extra_headers=headers
                )
            connected(_instance_of(ws))
            await _print_lines(ws)
            reader.cancel_scope.cancel()
    except* (HandshakeError, ConnectionClosed, trio.TooSlowError) as group:
        error = _translated(endpoint, _first(group))
    if error is not None:
        raise error


def _first(group: BaseExceptionGroup[E]) -> E:
    error: E | BaseExceptionGroup[E] = group.exceptions[0]
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _translated(endpoint: Endpoint, exc: Exception) -> Lost | Refused:
    if isinstance(exc, ConnectionRejected):
        if exc.status_code >= 500:  # a proxy in front of trioswap: 502 while it is down
            return Lost(f"HTTP {exc.status_code}")
        return Refused(_rejected(endpoint, exc))
    if isinstance(exc, ConnectionClosed):
        reason = exc.reason
        if reason is None:
            return Lost("closed")
        if reason.code == POLICY_VIOLATION:
            return Refused(f"trioswap refused: {reason.reason}")
        return Lost(f"closed: {reason.code} {reason.name}")
    if isinstance(exc, trio.TooSlowError):
        return Lost(f"no handshake in {CONNECT_TIMEOUT:g} s")
    return Lost(str(exc.__cause__ or exc) or type(exc).__name__)


async def _print_lines(ws: WebSocketConnection) -> None:
    """Print messages until the connection closes (raising), or until stdout is gone."""
    while True:
        message = await ws.get_message()
        if isinstance(message, bytes):
            message = message.decode(errors="replace")
        try:
            print(message, flush=True)
        except BrokenPipeError:  # `trioswap logs | head`
            # /dev/null opens at once; kept open until exit, so exit's flush finds no pipe.
            sys.stdout = open(os.devnull, "w")  # noqa: ASYNC230, SIM115
            return


def _instance_of(ws: WebSocketConnection) -> str | None:
    for name, value in ws.handshake_headers:
        if name.lower() == _INSTANCE:
            return value.decode(errors="replace")
    return None


def _rejected(endpoint: Endpoint, exc: ConnectionRejected) -> str:
    message = f"{endpoint} refused the connection: HTTP {exc.status_code}"
    detail = _error_message(exc.body or b"")
    if detail:
        message += f": {detail}"
    if exc.status_code in (401, 403):
        message += f" (is an API key needed? --api-key or ${API_KEY_ENV})"
    return message


def _error_message(body: bytes) -> str:
    """The message of an error body in OpenAI's shape, or the body itself, clipped."""
    try:
        error = json.loads(body)["error"]
        return clip(error["message"] if isinstance(error, dict) else str(error))
    except (ValueError, KeyError, TypeError):
        return clip(body.strip())
