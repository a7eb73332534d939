"""One start of a model server, owned by one task.

The router creates a `ModelServer` for each start, with a generation number, and runs its `run`
in the supervisor's nursery. That task places it on a free port, spawns it, waits until it is
healthy and keeps it until it exits or is stopped, reporting `Started`, `Healthy` and, always
last, `Exited` to the router with its generation, so a late report is never taken for another
start. Stopping is cancelling the task (`stop()`); it then stops the process in one shielded
function (cmdStop or SIGTERM, `unloadTimeout` of grace, SIGKILL) and reaps it. A failed health
check ends the same way. Cancelling the supervisor's nursery at shutdown stops every model server
like this, in parallel. The processes themselves are `spawn.py`'s: each model runs under a
watchdog, so that none outlives trioswap even when it is SIGKILLed.
"""

from __future__ import annotations

import logging
import signal
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Set
from dataclasses import dataclass

import trio

from trioswap.config import PORT_SPAN, ModelConfig
from trioswap.observe.logs import LogHub
from trioswap.redact import shown_command
from trioswap.supervisor.health import HealthGetter
from trioswap.supervisor.ports import place
from trioswap.supervisor.spawn import Child, spawn

log = logging.getLogger("trioswap.supervisor")

LOG_TAIL_LINES = 15
READ_CHUNK = 65536
FIRST_PROBE_INTERVAL = 0.01
MAX_PROBE_INTERVAL = 0.25
FAST_PROBE_PERIOD = 1.0
PROBE_TIMEOUT = 2.0
LOG_DRAIN_GRACE = 0.5
# After the SIGKILL of a model's group, how long its watchdog may take to clean up and exit.
WATCHDOG_EXIT_GRACE = 5.0


@dataclass(frozen=True)
class Started:
    model: str
    generation: int
    pid: int  # the model server's own pid


@dataclass(frozen=True)
class Healthy:
    model: str
    generation: int


@dataclass(frozen=True)
class Exited:
    """The start is over and its process gone: it was stopped, failed or died."""

    model: str
    generation: int
    reason: str  # "exited with code 3", "not healthy at … after 120s …", "cannot run …"
    log_tail: tuple[str, ...]  # the model's last log lines, when a process ran


ServerEvent = Started | Healthy | Exited
Report = Callable[[ServerEvent], Awaitable[None]]


@dataclass(frozen=True)
class ServerContext:
    """What every start needs, shared by all of them."""

    logs: LogHub
    health_client: HealthGetter
    health_check_timeout: float
    start_port: int
    env: Mapping[str, str]  # added to every model's environment: the instance marker


class ModelServer:
    """One start of a model's server. `config` is the model's config as started: its port (and
    so `config.proxy`) differs from the configured one when that port was taken."""

    def __init__(
        self, config: ModelConfig, generation: int, context: ServerContext, avoid_ports: Set[int]
    ) -> None:
        self.config = config
        self.generation = generation
        self._context = context
        self._avoid_ports = avoid_ports
        self._scope = trio.CancelScope()

    def stop(self) -> None:
        """Stop the server (or the start); `Exited` reports when it is gone."""
        self._scope.cancel()

    async def run(self, report: Report) -> None:
        reason, tail = "was stopped", ()
        try:
            reason, tail = await self._lifetime(report)
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await report(Exited(self.config.id, self.generation, reason, tail))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the router is gone: trioswap is exiting

    async def _lifetime(self, report: Report) -> tuple[str, tuple[str, ...]]:
        """Run the server until it exits or fails its health check; why, and its log tail."""
        model = self.config.id
        placed = place(self.config, self._context.start_port, self._avoid_ports)
        if placed is None:
            return (
                f"port {self.config.port} is in use and so is every other port from startPort "
                f"to startPort+{PORT_SPAN - 1}",
                (),
            )
        if placed is not self.config:
            taken, self.config = self.config.port, placed
            log.warning("model %s: port %s is in use; using %s", model, taken, placed.port)
        env = {**self.config.env, **self._context.env}
        try:
            child = spawn(self.config.cmd, env, self.config.unload_timeout)
        except OSError as exc:
            return f"cannot start its watchdog: {exc.strerror}", ()
        reason = "was stopped"
        # The pump reads on while the process is being stopped, also at shutdown: the model
        # and its watchdog must never write into a closed pipe.
        pump_scope = trio.CancelScope(shield=True)
        logs_done = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump_logs, child.output, pump_scope, logs_done)
                try:
                    with self._scope:
                        reason = await self._serve(child, report)
                finally:
                    with trio.CancelScope(shield=True):
                        await self._terminate(child)
                        with trio.move_on_after(LOG_DRAIN_GRACE):
                            await logs_done.wait()
                    pump_scope.cancel()
        finally:
            child.close()
        return reason, tuple(self._context.logs.tail(model, LOG_TAIL_LINES))

    async def _serve(self, child: Child, report: Report) -> str:
        model = self.config.id
        if not await child.started():
            await child.wait()
            return f"its command could not be run (check models.{model}.cmd)"
        assert child.pid is not None
        log.info("model %s: started pid %d: %s", model, child.pid, shown_command(self.config.cmd))
        await report(Started(model, self.generation, child.pid))
        if self.config.check_endpoint is not None:
            url = self.config.proxy + self.config.check_endpoint
            timeout = self._context.health_check_timeout
            with trio.move_on_after(timeout) as deadline:
                healthy = await self._healthy_unless_exited(url, child)
            if deadline.cancelled_caught:
                return (
                    f"not healthy at {url} after {timeout:g}s (raise healthCheckTimeout if it "
                    "loads slowly)"
                )
            if not healthy:
                return describe_exit(await child.wait())
        await report(Healthy(model, self.generation))
        return describe_exit(await child.wait())

    async def _healthy_unless_exited(self, url: str, child: Child) -> bool:
        healthy = False
        async with trio.open_nursery() as race:

            async def probe() -> None:
                nonlocal healthy
                await self._wait_healthy(url)
                healthy = True
                race.cancel_scope.cancel()

            race.start_soon(probe)
            await child.wait()
            race.cancel_scope.cancel()
        return healthy

    async def _wait_healthy(self, url: str) -> None:
        import httpx  # with the first probe's client (see `health.HealthClient`)

        started = trio.current_time()
        interval = FIRST_PROBE_INTERVAL
        while True:
            with trio.move_on_after(PROBE_TIMEOUT):
                try:
                    response = await self._context.health_client.get(url)
                    if response.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            await trio.sleep(interval)
            if trio.current_time() - started > FAST_PROBE_PERIOD:
                interval = min(interval * 1.5, MAX_PROBE_INTERVAL)

    async def _terminate(self, child: Child) -> None:
        """The one escalation: cmdStop or SIGTERM, `unloadTimeout` of grace, SIGKILL. Called
        shielded."""
        if child.exited:
            return
        model = self.config.id
        grace = self.config.unload_timeout
        stop_cmd = None if child.pid is None else self.config.stop_command(child.pid)
        if stop_cmd is not None:
            log.info("model %s: stopping with %s", model, shown_command(stop_cmd))
            with trio.move_on_after(grace):
                await self._run_stop_command(stop_cmd, child)
        else:
            log.info("model %s: stopping pid %s (SIGTERM)", model, child.pid)
            child.terminate()
        with trio.move_on_after(grace):
            await child.wait()
        if not child.exited:
            child.kill()  # the watchdog does the same about now, unless cmdStop was used
            with trio.move_on_after(WATCHDOG_EXIT_GRACE):
                await child.wait()
            if not child.exited:
                log.error("model %s: its watchdog did not exit; killing it", model)
                child.kill_all()
        if await child.wait() == -signal.SIGKILL:
            log.warning(
                "model %s: pid %s ignored the stop for %gs (unloadTimeout); killed with SIGKILL",
                model,
                child.pid,
                grace,
            )

    async def _run_stop_command(self, stop_cmd: tuple[str, ...], child: Child) -> None:
        model = self.config.id
        try:
            result = await trio.run_process(
                stop_cmd, check=False, capture_stdout=True, stderr=subprocess.STDOUT
            )
        except OSError as exc:
            log.error("model %s: cmdStop failed (%s); sending SIGTERM", model, exc)
            child.terminate()
            return
        for line in result.stdout.decode(errors="replace").splitlines():
            self._context.logs.write_model(model, line)
        if result.returncode != 0:
            log.warning("model %s: cmdStop exited with %d", model, result.returncode)

    async def _pump_logs(
        self, stream: trio.lowlevel.FdStream, scope: trio.CancelScope, done: trio.Event
    ) -> None:
        model = self.config.id
        logs = self._context.logs
        pending = b""
        try:
            with scope:
                async with stream:
                    while chunk := await stream.receive_some(READ_CHUNK):
                        *lines, pending = (pending + chunk).split(b"\n")
                        if len(pending) > READ_CHUNK:
                            # Output with no newline (a progress bar, a binary dump) is written
                            # as lines of at most this much, not held in memory without bound.
                            lines.append(pending)
                            pending = b""
                        for line in lines:
                            logs.write_model(model, line.rstrip(b"\r").decode(errors="replace"))
            if pending:
                logs.write_model(model, pending.decode(errors="replace"))
        finally:
            done.set()


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"
