"""The router, leases and the supervisor in-process: real cheap model servers (`sleep`, `sh`)
under the real watchdog, and virtual time, so ttl, drain, unload and health deadlines are
checked to the exact (virtual) second without waiting for them.

The clock jumps only after a quarter second of real idleness, so a process that exits on
SIGTERM does so before its grace period "passes"; the health deadline test uses
`autojump_clock`, which makes a 120 s deadline pass at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio
from trio.testing import MockClock

from tests.conftest import pid_alive
from trioswap.config import loads
from trioswap.errors import ModelStartError, ShuttingDown
from trioswap.observe.logs import LogHub
from trioswap.supervisor import ModelState, Supervisor

STOPPED = ModelState.STOPPED
READY = ModelState.READY
STARTING = ModelState.STARTING
STOPPING = ModelState.STOPPING
FAILED = ModelState.FAILED
# Started as soon as spawned: no health check.
SLEEPER = "{cmd: sleep 1000, proxy: 'http://127.0.0.1:1', checkEndpoint: none"


def pair(top: str = "", a: str = "", b: str = "") -> str:
    """Two models in the default group (only one runs at a time); `a` has a ttl of 30 s."""
    return f"{top}\nmodels:\n  a: {SLEEPER}, ttl: 30{a}}}\n  b: {SLEEPER}{b}}}\n"


class Supervised:
    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.times: dict[tuple[str, ModelState], list[float]] = {}
        self._changed = trio.Event()
        supervisor.listeners.append(self._record)

    def _record(self, model: str, old: ModelState, new: ModelState) -> None:
        self.times.setdefault((model, new), []).append(trio.current_time())
        self._changed.set()
        self._changed = trio.Event()

    async def reach(self, model: str, state: ModelState) -> None:
        while self.supervisor.state_of(model) is not state:
            await self._changed.wait()

    def at(self, model: str, state: ModelState) -> list[float]:
        """When `model` entered `state`, each time."""
        return self.times.get((model, state), [])


SuperviseFn = Callable[[str], Awaitable[Supervised]]


@pytest.fixture
def clock() -> MockClock:
    return MockClock(autojump_threshold=0.25)


@pytest.fixture
async def supervise() -> AsyncIterator[SuperviseFn]:
    """`await supervise(yaml)` runs a supervisor on that config until the test ends."""
    async with trio.open_nursery() as nursery:

        async def start(config_text: str) -> Supervised:
            supervisor = Supervisor(loads(config_text), LogHub())
            supervised = Supervised(supervisor)
            await nursery.start(supervisor.run)
            return supervised

        yield start
        nursery.cancel_scope.cancel()


async def hold(supervisor: Supervisor, model: str, seconds: float) -> None:
    async with supervisor.lease(model):
        await trio.sleep(seconds)


# -- ttl ----------------------------------------------------------------------------------------


async def test_ttl_stops_an_idle_model_when_it_expires(
    clock: MockClock, supervise: SuperviseFn
) -> None:
    s = await supervise(pair())
    async with s.supervisor.lease("a"):
        pass
    idle_since = trio.current_time()
    await s.reach("a", STOPPED)
    assert s.at("a", STOPPING) == [idle_since + 30]


async def test_ttl_counts_from_the_end_of_the_last_request(
    clock: MockClock, supervise: SuperviseFn
) -> None:
    s = await supervise(pair())
    await hold(s.supervisor, "a", 100)
    released = trio.current_time()
    await s.reach("a", STOPPED)
    assert s.at("a", STOPPING) == [released + 30]


# -- swaps and drainTimeout ----------------------------------------------------------------------


async def test_a_swap_waits_for_the_lease_of_the_model_it_stops(
    clock: MockClock, supervise: SuperviseFn
) -> None:
    s = await supervise(pair())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, s.supervisor, "a", 50)
        await s.reach("a", READY)
        asked = trio.current_time()
        async with s.supervisor.lease("b") as server:
            assert server.config.id == "b"
            granted = trio.current_time()
    assert s.at("a", STOPPING) == [asked + 50]
    assert granted >= s.at("a", STOPPED)[0]


async def test_drain_timeout_cuts_a_lease_that_outlasts_it(
    clock: MockClock, supervise: SuperviseFn
) -> None:
    s = await supervise(pair(top="drainTimeout: 5"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, s.supervisor, "a", 1000)
        await s.reach("a", READY)
        asked = trio.current_time()
        async with s.supervisor.lease("b"):
            assert s.at("a", STOPPING) == [asked + 5]
        nursery.cancel_scope.cancel()
    assert s.supervisor.statuses()["a"].in_flight == 0


# -- unload -------------------------------------------------------------------------------------


async def test_unload_waits_for_leases_and_says_what_it_stopped(
    clock: MockClock, supervise: SuperviseFn
) -> None:
    s = await supervise(pair())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, s.supervisor, "a", 20)
        await s.reach("a", READY)
        asked = trio.current_time()
        result = await s.supervisor.unload()
    assert trio.current_time() >= asked + 20
    assert (result.stopped, result.forced) == (("a",), ())
    assert s.supervisor.state_of("a") is STOPPED


async def test_forced_unload_cuts_leases_at_once(clock: MockClock, supervise: SuperviseFn) -> None:
    s = await supervise(pair(a=", unloadTimeout: 3"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, s.supervisor, "a", 1000)
        await s.reach("a", READY)
        asked = trio.current_time()
        result = await s.supervisor.unload(["a"], force=True)
        assert trio.current_time() - asked < 3  # sleep exits on SIGTERM
        assert (result.stopped, result.forced) == (("a",), ("a",))
        assert s.supervisor.state_of("a") is STOPPED
        nursery.cancel_scope.cancel()
    assert s.supervisor.statuses()["a"].in_flight == 0


# -- starts that fail, servers that die -----------------------------------------------------------


async def test_health_deadline_fails_every_waiter_with_one_error(
    autojump_clock: MockClock, supervise: SuperviseFn
) -> None:
    s = await supervise("models:\n  c: {cmd: sleep 1000, proxy: 'http://127.0.0.1:1'}\n")
    errors: list[BaseException] = []

    async def use() -> None:
        try:
            async with s.supervisor.lease("c"):
                pass
        except ModelStartError as exc:
            errors.append(exc)

    began = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(use)
    assert trio.current_time() - began >= 120
    assert len(errors) == 3 and errors[0] is errors[1] is errors[2]
    assert "not healthy at http://127.0.0.1:1/health after 120s" in str(errors[0])
    status = s.supervisor.statuses()["c"]
    assert status.state is FAILED
    assert status.last_error == str(errors[0])
    assert status.pid is None


async def test_a_ready_model_that_dies_is_failed_with_its_log_tail(
    clock: MockClock, supervise: SuperviseFn
) -> None:
    text = "models:\n  d: {cmd: sh -c 'echo bye; exit 4', proxy: 'http://127.0.0.1:1', "
    s = await supervise(text + "checkEndpoint: none}\n")
    async with s.supervisor.lease("d"):
        pass
    await s.reach("d", FAILED)
    assert s.supervisor.statuses()["d"].last_error == "exited with code 4\nlast log lines:\nbye"


# -- snapshots, leases and shutdown ---------------------------------------------------------------


async def test_statuses_show_the_process_as_started_with_secrets_masked(
    clock: MockClock, supervise: SuperviseFn
) -> None:
    command = "sh -c 'exec sleep 1000' x --api-key sekrit"
    model = f"{{cmd: {command!r}, proxy: 'http://127.0.0.1:9', checkEndpoint: none}}"
    s = await supervise(f"models:\n  e: {model}\n")
    async with s.supervisor.lease("e"):
        status = s.supervisor.statuses()["e"]
    assert status.state is READY and status.in_flight == 1
    assert isinstance(status.pid, int) and pid_alive(status.pid)
    assert status.proxy == "http://127.0.0.1:9"
    assert status.cmd == "sh -c 'exec sleep 1000' x --api-key '***'"


async def test_a_lease_cancelled_while_waiting_leaves_the_model_evictable(
    clock: MockClock, supervise: SuperviseFn
) -> None:
    s = await supervise(pair())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, s.supervisor, "a", 1000)
        await s.reach("a", STARTING)
        nursery.cancel_scope.cancel()
    await s.reach("a", READY)  # the start goes on for nobody
    result = await s.supervisor.unload(["a"])
    assert result.stopped == ("a",)
    assert s.supervisor.statuses()["a"].in_flight == 0


async def test_shutdown_stops_every_server_and_refuses_leases(clock: MockClock) -> None:
    supervisor = Supervisor(loads(pair()), LogHub())
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        async with supervisor.lease("a"):
            pid = supervisor.statuses()["a"].pid
        nursery.cancel_scope.cancel()
    assert isinstance(pid, int) and not pid_alive(pid)
    with pytest.raises(ShuttingDown):
        async with supervisor.lease("b"):
            pass
