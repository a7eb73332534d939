"""A model's or peer's `timeouts` on its upstream connections: connect, tlsHandshake,
responseHeader, idleConn (how long a pooled connection is reused) and keepalive (TCP probes)."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import trio

from tests.conftest import RESPONDER, LaunchFn, chat, random_start_port, wait_until

ANSWER = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]}'
SLEEPER = f'{sys.executable} -c "import time; time.sleep(600)"'


class Upstream:
    """A keep-alive HTTP server in the test that answers every request with ANSWER, never
    closes a connection itself, and remembers each connection's client address."""

    def __init__(self, listener: trio.SocketListener) -> None:
        self.listener = listener
        self.port: int = listener.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.clients: list[tuple[str, int]] = []

    async def serve(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await self.listener.accept()
                self.clients.append(stream.socket.getpeername())
                nursery.start_soon(self.answer, stream)

    async def answer(self, stream: trio.SocketStream) -> None:
        head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(ANSWER)
        )
        buffer = b""
        async with stream:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buffer += chunk
                header, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in header.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(buffer) < length:
                    buffer += await stream.receive_some(65536)
                buffer = buffer[length:]
                await stream.send_all(head + ANSWER)


@asynccontextmanager
async def upstreams(count: int) -> AsyncIterator[list[Upstream]]:
    async with AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        servers = []
        for _ in range(count):
            (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
            await stack.enter_async_context(listener)
            server = Upstream(listener)
            await nursery.start(server.serve)
            servers.append(server)
        yield servers
        nursery.cancel_scope.cancel()


def tcp_timer(local_port: int, remote_port: int) -> tuple[int, int] | None:
    """(timer kind, clock ticks until it fires) of a loopback TCP socket, from /proc/net/tcp:
    kind 2 is the keepalive timer, 0 no timer."""
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local, remote = fields[1].split(":")[1], fields[2].split(":")[1]
            if int(local, 16) == local_port and int(remote, 16) == remote_port:
                kind, when = fields[5].split(":")
                return int(kind, 16), int(when, 16)
    return None


async def test_idle_conn_bounds_how_long_a_connection_is_reused(launch: LaunchFn) -> None:
    idle = 2
    async with upstreams(2) as (short, long):
        front = await launch(
            f"""
models:
  short:
    cmd: {SLEEPER}
    proxy: {short.url}
    checkEndpoint: none
    timeouts: {{idleConn: {idle}}}
peers:
  far:
    proxy: {long.url}
    models: [long]
"""
        )
        async with front.client() as client:

            async def ask_both() -> None:
                for model in ("short", "long"):
                    response = await client.post("/v1/chat/completions", json=chat(model))
                    assert response.status_code == 200, response.text

            await ask_both()
            await ask_both()
            assert (len(short.clients), len(long.clients)) == (1, 1)
            # Not a wait for readiness: the idle time itself is what is tested.
            await trio.sleep(idle + 1)
            await ask_both()
            # `short`'s connection expired; `far` keeps its own for idleConn's default, 90 s.
            assert (len(short.clients), len(long.clients)) == (2, 1)


async def test_keepalive_sets_tcp_keepalive_probes_or_none(launch: LaunchFn) -> None:
    async with upstreams(2) as (probed, quiet):
        front = await launch(
            f"""
models:
  probed:
    cmd: {SLEEPER}
    proxy: {probed.url}
    checkEndpoint: none
    timeouts: {{keepalive: 7}}
peers:
  quiet:
    proxy: {quiet.url}
    models: [quiet]
    timeouts: {{keepalive: 0}}
"""
        )
        async with front.client() as client:
            for model in ("probed", "quiet"):
                response = await client.post("/v1/chat/completions", json=chat(model))
                assert response.status_code == 200, response.text
        ticks = os.sysconf("SC_CLK_TCK")

        def probes_due_within_7_s() -> bool:
            timer = tcp_timer(probed.clients[0][1], probed.port)
            return timer is not None and timer[0] == 2 and 0 < timer[1] <= 7 * ticks

        await wait_until(probes_due_within_7_s)
        await wait_until(lambda: tcp_timer(quiet.clients[0][1], quiet.port) == (0, 0))


def full_backlog_listener() -> tuple[socket.socket, socket.socket]:
    """A listener whose accept queue is full: a connect to it hangs until it times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname())
    return listener, filler


async def test_connect_timeout(launch: LaunchFn) -> None:
    listener, filler = full_backlog_listener()
    with listener, filler:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        front = await launch(
            f"""
models:
  stuck:
    cmd: {SLEEPER}
    proxy: {url}
    checkEndpoint: none
    timeouts: {{connect: 1}}
peers:
  away:
    proxy: {url}
    models: [remote]
    timeouts: {{connect: 1}}
"""
        )
        async with front.client() as client:
            for model, key in [
                ("stuck", "models.stuck.timeouts.connect"),
                ("remote", "peers.away.timeouts.connect"),
            ]:
                response = await client.post("/v1/chat/completions", json=chat(model))
                assert response.status_code == 504
                message = response.json()["error"]["message"]
                assert "took longer than 1 s" in message and key in message


async def test_tls_handshake_timeout(launch: LaunchFn) -> None:
    # A peer that accepts the connection and never answers the TLS hello.
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        port = listener.socket.getsockname()[1]
        front = await launch(
            f"""
peers:
  silent:
    proxy: https://127.0.0.1:{port}
    models: [remote]
    timeouts: {{tlsHandshake: 1}}
"""
        )
        async with front.client() as client:
            response = await client.post("/v1/chat/completions", json=chat("remote"))
        assert response.status_code == 504
        message = response.json()["error"]["message"]
        assert "TLS handshake" in message and "peers.silent.timeouts.tlsHandshake" in message


async def test_response_header_timeout_of_a_model_and_of_a_peer(launch: LaunchFn) -> None:
    # Two seconds per token: the answer's head comes two seconds after the request.
    slow = f"{RESPONDER} --port ${{PORT}} --model-id slow --tokens-per-second 0.5"
    peer = await launch(
        f"""
startPort: {random_start_port()}
models:
  slow:
    cmd: {slow}
"""
    )
    front = await launch(
        f"""
startPort: {random_start_port()}
models:
  slow:
    cmd: {slow}
    timeouts: {{responseHeader: 1}}
peers:
  hasty:
    proxy: {peer.url}
    models: [slow]
    timeouts: {{responseHeader: 1}}
  patient:
    proxy: {peer.url}
    models: [slow]
"""
    )
    async with front.client() as client:
        for model, key in [
            ("slow", "models.slow.timeouts.responseHeader"),
            ("hasty/slow", "peers.hasty.timeouts.responseHeader"),
        ]:
            response = await client.post("/v1/chat/completions", json=chat(model, max_tokens=1))
            assert response.status_code == 504
            message = response.json()["error"]["message"]
            assert "silent for 1 s" in message and key in message
        # A peer's default (60 s) waits for it.
        response = await client.post(
            "/v1/chat/completions", json=chat("patient/slow", max_tokens=1)
        )
        assert response.status_code == 200, response.text
