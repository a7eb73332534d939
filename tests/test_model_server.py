"""One start of a model server (`ModelServer`) in-process: real cheap processes (`sleep`, `sh`)
under the real watchdog, virtual time for the deadlines, and the reports the router would get.

Most tests use a clock that jumps only after a quarter second of real idleness, so a process
that exits on SIGTERM does so before its grace period "passes"; the health deadline test uses
`autojump_clock`, which makes a 120 s deadline pass at once.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from typing import TypeVar

import httpx
import pytest
import trio
from trio.testing import MockClock

from tests.conftest import pid_alive, random_start_port, wait_until
from trioswap.config import PORT_SPAN, loads
from trioswap.observe.logs import LogHub
from trioswap.supervisor.ports import place
from trioswap.supervisor.process import (
    Exited,
    Healthy,
    ModelServer,
    ServerContext,
    ServerEvent,
    Started,
)

T = TypeVar("T")
CLOSED = "http://127.0.0.1:1"  # nothing listens on port 1: health probes are refused


@pytest.fixture
def clock() -> MockClock:
    return MockClock(autojump_threshold=0.25)


@pytest.fixture
async def health_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0)) as client:
        yield client


class Reports:
    """What a start reports, as the router would receive it."""

    def __init__(self) -> None:
        self.events: list[ServerEvent] = []
        self._changed = trio.Event()

    async def __call__(self, event: ServerEvent) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = trio.Event()

    async def until(self, kind: type[T]) -> T:
        while True:
            for event in self.events:
                if isinstance(event, kind):
                    return event
            await self._changed.wait()

    @property
    def kinds(self) -> list[type]:
        return [type(event) for event in self.events]


def make_server(
    client: httpx.AsyncClient,
    model: str,
    health_check_timeout: float = 120.0,
    start_port: int = 5800,
    avoid: frozenset[int] = frozenset(),
    logs: LogHub | None = None,
) -> ModelServer:
    """A server for model `m` of a one-model config; `model` holds its keys (YAML)."""
    config = loads(f"startPort: {start_port}\nmodels:\n  m:\n    {model}\n")
    context = ServerContext(
        logs or LogHub(), client, health_check_timeout, start_port, {"TRIOSWAP_TEST": "1"}
    )
    return ModelServer(config.models["m"], 7, context, avoid)


async def test_a_start_reports_started_healthy_and_exited_once_stopped(
    clock: MockClock, health_client: httpx.AsyncClient
) -> None:
    server = make_server(
        health_client, f"{{cmd: sleep 1000, proxy: '{CLOSED}', checkEndpoint: none}}"
    )
    reports = Reports()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run, reports)
        started = await reports.until(Started)
        await reports.until(Healthy)
        assert pid_alive(started.pid)
        server.stop()
        exited = await reports.until(Exited)
    assert reports.kinds == [Started, Healthy, Exited]
    assert {(e.model, e.generation) for e in reports.events} == {("m", 7)}
    assert exited.reason == "was stopped"
    assert not pid_alive(started.pid)


async def test_health_deadline_fails_the_start_and_stops_the_process_once(
    autojump_clock: MockClock, health_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trioswap.supervisor")
    server = make_server(health_client, f"{{cmd: sleep 1000, proxy: '{CLOSED}'}}")
    reports = Reports()
    began = trio.current_time()
    await server.run(reports)
    assert trio.current_time() - began >= 120
    assert reports.kinds == [Started, Exited]
    started, exited = reports.events
    assert isinstance(started, Started) and isinstance(exited, Exited)
    assert exited.reason == (
        f"not healthy at {CLOSED}/health after 120s (raise healthCheckTimeout if it loads slowly)"
    )
    assert not pid_alive(started.pid)
    assert caplog.text.count(f"stopping pid {started.pid}") == 1


async def test_exit_during_the_health_check_is_reported_with_its_log_tail(
    clock: MockClock, health_client: httpx.AsyncClient
) -> None:
    script = "echo loading weights; echo out of memory >&2; exit 7"
    server = make_server(health_client, f"{{cmd: sh -c '{script}', proxy: '{CLOSED}'}}")
    reports = Reports()
    began = trio.current_time()
    await server.run(reports)
    assert trio.current_time() - began < 120
    assert reports.kinds == [Started, Exited]
    exited = reports.events[-1]
    assert isinstance(exited, Exited)
    assert exited.reason == "exited with code 7"
    assert exited.log_tail[-2:] == ("loading weights", "out of memory")


async def test_a_command_that_cannot_run_says_so(
    clock: MockClock, health_client: httpx.AsyncClient
) -> None:
    server = make_server(health_client, f"{{cmd: /nonexistent/server, proxy: '{CLOSED}'}}")
    reports = Reports()
    await server.run(reports)
    assert reports.kinds == [Exited]
    exited = reports.events[0]
    assert isinstance(exited, Exited)
    assert exited.reason == "its command could not be run (check models.m.cmd)"
    assert "cannot run '/nonexistent/server'" in exited.log_tail[-1]


async def test_the_environment_has_the_model_env_and_the_instance_marker(
    clock: MockClock, health_client: httpx.AsyncClient
) -> None:
    script = 'echo "$FOO $TRIOSWAP_TEST"'
    model = f"{{cmd: sh -c '{script}', proxy: '{CLOSED}', checkEndpoint: none, env: [FOO=bar]}}"
    reports = Reports()
    await make_server(health_client, model).run(reports)
    exited = reports.events[-1]
    assert isinstance(exited, Exited)
    assert exited.log_tail[-1] == "bar 1"


async def test_a_taken_port_moves_this_start_to_the_next_free_one(
    clock: MockClock, health_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    start_port = random_start_port()
    model = """{cmd: "sh -c 'exec sleep 1000' ${PORT}", checkEndpoint: none}"""
    port = make_server(health_client, model, start_port=start_port).config.port
    assert port is not None
    squatter = socket.socket()
    with squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        next_port = start_port + (port - start_port + 1) % 1000
        # The next port belongs to another model: the one after it is used.
        server = make_server(
            health_client, model, start_port=start_port, avoid=frozenset({next_port})
        )
        moved = start_port + (port - start_port + 2) % 1000
        reports = Reports()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.run, reports)
            await reports.until(Healthy)
            assert server.config.port == moved
            assert server.config.proxy == f"http://127.0.0.1:{moved}"
            server.stop()
    assert f"model m: port {port} is in use; using {moved}" in caplog.text
    assert server.config.cmd[-1] == str(moved)


async def test_a_server_ignoring_sigterm_is_killed_after_unload_timeout(
    clock: MockClock, health_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    script = 'trap "" TERM; echo ready; sleep 1000'
    model = f"{{cmd: sh -c '{script}', proxy: '{CLOSED}', checkEndpoint: none, unloadTimeout: 3}}"
    logs = LogHub()
    server = make_server(health_client, model, logs=logs)
    reports = Reports()
    with logs.subscribe("m") as lines:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.run, reports)
            started = await reports.until(Started)
            async for line in lines:
                if line == "ready":  # the trap is set
                    break
            stopped_at = trio.current_time()
            server.stop()
            await reports.until(Exited)
    assert trio.current_time() - stopped_at >= 3
    assert not pid_alive(started.pid)
    message = f"pid {started.pid} ignored the stop for 3s (unloadTimeout); killed with SIGKILL"
    assert message in caplog.text


def test_placement_wraps_around_the_range_and_gives_up_when_all_is_taken() -> None:
    start_port = random_start_port()
    config = loads(f"startPort: {start_port}\nmodels:\n  m: {{cmd: 'sleep ${{PORT}}'}}\n")
    model = config.models["m"]
    assert model.port is not None
    assert place(model, start_port, frozenset()) is model  # free: as configured
    with socket.socket() as squatter:
        squatter.bind(("0.0.0.0", model.port))
        squatter.listen()
        everything = set(range(start_port, start_port + PORT_SPAN))
        first = start_port if model.port != start_port else start_port + 1
        placed = place(model, start_port, frozenset(everything - {first}))
        assert placed is not None and placed.port == first
        assert placed.cmd == ("sleep", str(first))
        assert place(model, start_port, frozenset(everything)) is None


def test_a_model_without_a_port_of_trioswaps_is_placed_as_it_is() -> None:
    config = loads("models:\n  m: {cmd: sleep 9, proxy: 'http://127.0.0.1:1'}\n")
    model = config.models["m"]
    assert place(model, 5800, frozenset()) is model


async def test_output_without_newlines_reaches_the_log_as_it_comes(
    clock: MockClock, health_client: httpx.AsyncClient
) -> None:
    # A server printing megabytes with no newline (a progress bar, a binary dump) must not be
    # held in trioswap's memory until it prints one.
    script = "head -c 3000000 /dev/zero | tr '\\\\0' x; exec sleep 1000"
    logs = LogHub()
    server = make_server(
        health_client,
        f"{{cmd: sh -c \"{script}\", proxy: '{CLOSED}', checkEndpoint: none}}",
        logs=logs,
    )
    reports = Reports()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run, reports)
        await reports.until(Healthy)
        await wait_until(lambda: bool(logs.tail("m", 1)), timeout=10)
        server.stop()
        await reports.until(Exited)
