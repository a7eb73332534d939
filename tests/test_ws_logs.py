"""`/ws/logs` (the log hub over a websocket) and `trioswap logs` (its terminal client), against
real trioswap processes; the per-client backlog that drops rather than blocks, alone."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial

import httpx
import pytest
import trio
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
    wrap_client_stream,
)

from tests.conftest import RESPONDER, LaunchFn, Trioswap, chat, kill_group, random_start_port
from trioswap import logs_cli
from trioswap.logs_cli import Endpoint
from trioswap.observe.logs import PROXY, LogHub
from trioswap.web.ws_logs import INSTANCE_HEADER, Backlog, dropped_line, tail

TIMEOUT = 20.0
KEY = "sk-tail"
SERVED = "POST /v1/chat/completions -> 200"


def two_models(top: str = "") -> str:
    """Models `a` (alias `alpha`) and `b`, which may run together."""
    return f"""
startPort: {random_start_port()}
{top}
models:
  a:
    cmd: {RESPONDER} --port ${{PORT}} --model-id a
    aliases: [alpha]
  b:
    cmd: {RESPONDER} --port ${{PORT}} --model-id b
routing:
  router:
    settings:
      groups:
        both:
          swap: false
          members: [a, b]
"""


def ws_base(ts: Trioswap) -> str:
    return ts.url.replace("http://", "ws://", 1) + "/ws/logs"


async def serve(ts: Trioswap, model: str) -> None:
    async with ts.client(headers={"authorization": f"Bearer {KEY}"}) as client:
        response = await client.post("/v1/chat/completions", json=chat(model))
    assert response.status_code == 200, response.text


async def refusal(ts: Trioswap, query: str) -> Exception:
    """How trioswap refuses a websocket: ConnectionRejected or ConnectionClosed. The stream is
    ours: trio-websocket's client leaves it open when the server ends the connection."""
    url = httpx.URL(ts.url)
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(url.host, url.port)
        error: Exception | None = None
        try:
            async with stream, trio.open_nursery() as reader:
                ws = await wrap_client_stream(
                    reader, stream, f"{url.host}:{url.port}", f"/ws/logs?{query}"
                )
                await ws.get_message()
        except* (ConnectionRejected, ConnectionClosed) as group:
            (error,) = group.exceptions
    assert isinstance(error, ConnectionRejected | ConnectionClosed)
    return error


async def receive_until(ws: WebSocketConnection, done: Callable[[list[str]], bool]) -> list[str]:
    messages: list[str] = []
    with trio.fail_after(TIMEOUT):
        while not done(messages):
            message = await ws.get_message()
            assert isinstance(message, str)
            messages.append(message)
    return messages


def has(text: str, times: int = 1) -> Callable[[list[str]], bool]:
    return lambda messages: sum(text in m for m in messages) >= times


async def test_history_then_live_lines_of_a_source(launch: LaunchFn) -> None:
    ts = await launch(two_models())
    await serve(ts, "a")
    async with open_websocket_url(ws_base(ts)) as ws:  # source=all, history: the defaults
        history = await receive_until(ws, has(f"[a] {SERVED}"))
        assert any("model a: started pid" in line for line in history)
        await serve(ts, "a")
        await receive_until(ws, has(f"[a] {SERVED}"))  # live
    async with open_websocket_url(ws_base(ts) + "?source=alpha&history=1") as ws:
        seen = await receive_until(ws, has(SERVED, times=2))
        assert any(line.startswith("responder a: pid") for line in seen)
        instance = dict(ws.handshake_headers)[INSTANCE_HEADER.lower().encode()].decode()
        await serve(ts, "b")  # b starts and answers: none of its lines may reach a's tail
        await serve(ts, "a")
        seen += await receive_until(ws, has(SERVED))
    assert not any("responder b" in line or "[b]" in line for line in seen), seen
    # Resuming the same trioswap: no history again, so the first line is the next live one;
    # as with history=0, and llama-swap's no-history.
    for query in (f"source=a&resume={instance}", "source=a&history=0", "source=a&no-history"):
        async with open_websocket_url(f"{ws_base(ts)}?{query}") as ws:
            await serve(ts, "a")
            assert await receive_until(ws, lambda messages: bool(messages)) == [SERVED]


async def test_unknown_sources_are_refused(launch: LaunchFn, run_cli: CliFn) -> None:
    ts = await launch(two_models())
    for source in ("nosuch", "x" * 5000, "%E2%80%A8%0Aforged"):
        closed = await refusal(ts, f"source={source}")
        assert isinstance(closed, ConnectionClosed)
        reason = closed.reason
        assert reason is not None and reason.code == 1008
        assert reason.reason is not None and reason.reason.startswith("unknown log source")
        assert len(reason.reason.encode()) <= 123 and "\n" not in reason.reason
    cli = await run_cli("--url", ts.url, "--model", "nosuch")
    assert await cli.exit_code() == 2
    assert cli.stderr == [
        "trioswap logs: trioswap refused: unknown log source 'nosuch': "
        "use all, proxy, upstream or a model"
    ]


async def test_api_keys_guard_the_websocket(launch: LaunchFn, run_cli: CliFn) -> None:
    ts = await launch(two_models(f"apiKeys: [{KEY}]"))
    rejected = await refusal(ts, "source=a")
    assert isinstance(rejected, ConnectionRejected) and rejected.status_code == 403
    await serve(ts, "a")
    headers = [(b"authorization", f"Bearer {KEY}".encode())]
    async with open_websocket_url(ws_base(ts) + "?source=a", extra_headers=headers) as ws:
        await receive_until(ws, has(SERVED))
    # The CLI: without the key one line and exit code 2; with it from the environment, lines.
    cli = await run_cli("--url", ts.url, "--model", "a")
    assert await cli.exit_code() == 2
    assert len(cli.stderr) == 1 and "HTTP 403" in cli.stderr[0] and "--api-key" in cli.stderr[0]
    cli = await run_cli("--url", ts.url, "--model", "a", env={"TRIOSWAP_API_KEY": KEY})
    await cli.wait_for(cli.stdout, SERVED)
    assert KEY not in " ".join(cli.stdout + cli.stderr)


async def test_cli_reconnects_to_a_restarted_trioswap(launch: LaunchFn, run_cli: CliFn) -> None:
    config = two_models()
    first = await launch(config)
    port = httpx.URL(first.url).port
    await serve(first, "a")
    cli = await run_cli("--url", first.url.removeprefix("http://"), "-m", "a")
    await cli.wait_for(cli.stdout, SERVED)  # from the history
    await serve(first, "a")
    await cli.wait_for(cli.stdout, SERVED, times=2)  # live
    old_pid = (await cli.wait_for(cli.stdout, r"^responder a: pid (\d+)$"))[1]
    first.process.send_signal(signal.SIGTERM)
    with trio.fail_after(TIMEOUT):
        await first.process.wait()
    await cli.wait_for(cli.stderr, "lost the connection to ws://127.0.0.1:")
    second = await launch(config, "--listen", f"127.0.0.1:{port}")
    await cli.wait_for(cli.stderr, "reconnected to a new trioswap")
    await serve(second, "a")
    await cli.wait_for(cli.stdout, rf"^responder a: pid (?!{old_pid}$)\d+$")
    await cli.wait_for(cli.stdout, SERVED, times=3)
    cli.process.send_signal(signal.SIGINT)
    assert await cli.exit_code() == 0
    assert len(cli.stderr) == 2, cli.stderr  # lost, reconnected: no traceback
    assert cli.stdout.count(SERVED) == 3  # nothing printed twice


def test_cli_needs_a_trioswap_and_a_url(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as unused:  # bound, not listening: connections are refused
        unused.bind(("127.0.0.1", 0))
        assert logs_cli.main(f"127.0.0.1:{unused.getsockname()[1]}", "all", None, True) == 2
    out, err = capsys.readouterr()
    assert not out and err.startswith("trioswap logs: cannot connect to ws://127.0.0.1:")
    assert err.count("\n") == 1
    assert logs_cli.main("ftp://example.com", "all", None, True) == 2
    assert capsys.readouterr().err == (
        "trioswap logs: --url ftp://example.com: scheme 'ftp': use http://HOST:PORT or "
        "https://HOST\n"
    )


async def test_a_tls_failure_is_said_at_once(nursery: trio.Nursery) -> None:
    async def not_tls(stream: trio.SocketStream) -> None:
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    listeners = await nursery.start(partial(trio.serve_tcp, not_tls, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(TIMEOUT / 4):
        error = await logs_cli.follow(Endpoint.parse(f"https://127.0.0.1:{port}"), "all", True, [])
    assert error is not None and error.startswith(f"cannot connect to wss://127.0.0.1:{port}/")
    assert "SSL" in error


def test_endpoints_from_urls() -> None:
    def url(text: str) -> str:
        return str(Endpoint.parse(text))

    assert url("http://127.0.0.1:8080") == "ws://127.0.0.1:8080/ws/logs"
    assert url("localhost:9000") == "ws://localhost:9000/ws/logs"
    assert url("https://user:pw@gpu.example/trioswap/") == "wss://gpu.example/trioswap/ws/logs"
    assert url("ws://[::1]:80") == "ws://[::1]:80/ws/logs"
    endpoint = Endpoint.parse("https://[::1]")
    assert (endpoint.tls, endpoint.host, endpoint.port) == (True, "::1", 443)
    for bad in ("ftp://x", "http://", "http://x:99999", "http://x:port"):
        with pytest.raises(ValueError):
            Endpoint.parse(bad)
    endpoint = Endpoint.parse("h:1")
    assert endpoint.resource("my model", False, None) == "/ws/logs?source=my+model&history=0"
    assert endpoint.resource("a", True, "ab12") == "/ws/logs?source=a&history=1&resume=ab12"


async def test_backlog_drops_the_oldest_and_says_how_many() -> None:
    backlog = Backlog(max_lines=3, max_chars=1000)
    for i in range(10):
        backlog.put(f"{i}")
    assert [await backlog.get() for _ in range(4)] == [dropped_line(7), "7", "8", "9"]
    backlog = Backlog(max_lines=100, max_chars=10)
    for line in ("aaaa", "bbbb", "cccc"):
        backlog.put(line)
    assert [await backlog.get() for _ in range(3)] == [dropped_line(1), "bbbb", "cccc"]


async def test_a_slow_client_loses_lines_and_never_blocks_the_hub() -> None:
    hub = LogHub()
    for i in range(3):
        hub.write_proxy(f"old {i}")
    sent: list[str] = []
    stalled = trio.Event()
    go_on = trio.Event()

    async def send(line: str) -> None:
        if line == "new 0":  # the client stops reading here
            stalled.set()
            await go_on.wait()
        sent.append(line)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tail, hub, PROXY, True, send, Backlog(max_lines=5, max_chars=1000))
        await trio.testing.wait_all_tasks_blocked()
        hub.write_proxy("new 0")
        await stalled.wait()
        for i in range(1, 50):  # the writer is never held up: each write returns at once
            hub.write_proxy(f"new {i}")
            await trio.testing.wait_all_tasks_blocked()
        go_on.set()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    expected = ["old 0", "old 1", "old 2", "new 0", dropped_line(44)]
    assert sent == expected + [f"new {i}" for i in range(45, 50)]


class Cli:
    """A running `python -m trioswap logs` and what it printed, line by line."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._open_streams = 2
        self._changed = trio.Event()

    async def pump(self, stream: trio.abc.ReceiveStream, lines: list[str]) -> None:
        pending = b""
        async for chunk in stream:
            *complete, pending = (pending + chunk).split(b"\n")
            lines.extend(line.decode(errors="replace") for line in complete)
            self._changed.set()
            self._changed = trio.Event()
        self._open_streams -= 1
        self._changed.set()

    async def wait_for(self, lines: list[str], pattern: str, times: int = 1) -> re.Match[str]:
        regex = re.compile(pattern)
        with trio.fail_after(TIMEOUT):
            while True:
                found = [m for line in lines if (m := regex.search(line))]
                if len(found) >= times:
                    return found[times - 1]
                assert self._open_streams, f"exited without {pattern!r}: {self.stderr}"
                await self._changed.wait()

    async def exit_code(self) -> int:
        with trio.fail_after(TIMEOUT):
            code = await self.process.wait()
            while self._open_streams:  # the last lines are read
                await self._changed.wait()
        return code


CliFn = Callable[..., Awaitable[Cli]]


@pytest.fixture
async def run_cli() -> AsyncIterator[CliFn]:
    """`await run_cli(*args, env=...)` starts `python -m trioswap logs *args`."""
    started: list[Cli] = []
    async with trio.open_nursery() as nursery:

        async def start(*args: str, env: Mapping[str, str] | None = None) -> Cli:
            environment = {k: v for k, v in os.environ.items() if k != "TRIOSWAP_API_KEY"}
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "trioswap", "logs", *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env={**environment, **(env or {})},
            )
            cli = Cli(process)
            started.append(cli)
            assert process.stdout is not None and process.stderr is not None
            nursery.start_soon(cli.pump, process.stdout, cli.stdout)
            nursery.start_soon(cli.pump, process.stderr, cli.stderr)
            return cli

        try:
            yield start
        finally:
            with trio.CancelScope(shield=True):
                for cli in started:
                    kill_group(cli.process.pid)
                    await cli.process.wait()
            nursery.cancel_scope.cancel()
