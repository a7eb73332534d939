"""One model server as a child process: spawn, health check, log capture, stop.

The process is owned by one task (`_own`) in the supervisor's nursery: the process lives exactly
as long as that task. Stopping is cancelling it; the task then terminates the process group in a
shielded scope (cmdStop or SIGTERM, `unloadTimeout` of grace, SIGKILL) and reaps it. Cancelling
the supervisor's nursery at shutdown therefore stops every model server, in parallel.

We fork on the trio thread rather than through `trio.lowlevel.open_process`, which forks from a
worker thread: Linux delivers PR_SET_PDEATHSIG when the *thread* that forked exits, and trio's idle
worker threads exit after ten seconds, which would kill the model server with them.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable

import httpx
import trio

from trioswap.config import ModelConfig
from trioswap.errors import ModelStartError
from trioswap.observe.logs import LogHub

log = logging.getLogger("trioswap.supervisor")

LOG_TAIL_LINES = 15
READ_CHUNK = 65536
FIRST_PROBE_INTERVAL = 0.01
MAX_PROBE_INTERVAL = 0.25
FAST_PROBE_PERIOD = 1.0
PROBE_TIMEOUT = 2.0
LOG_DRAIN_GRACE = 0.5
_PR_SET_PDEATHSIG = 1


def _child_setup() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return setup


_CHILD_SETUP = _child_setup()


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class ModelServer:
    """A model's server process. `start` and `stop` are called by the router only."""

    def __init__(
        self,
        config: ModelConfig,
        logs: LogHub,
        health_client: httpx.AsyncClient,
        health_check_timeout: float,
    ) -> None:
        self.config = config
        self.pid: int | None = None
        self._logs = logs
        self._health_client = health_client
        self._health_check_timeout = health_check_timeout
        self._health_url = (
            None if config.check_endpoint is None else config.proxy + config.check_endpoint
        )
        self._stop_scope: trio.CancelScope | None = None
        self._start_scope: trio.CancelScope | None = None
        self._starting = False
        self.generation = 0
        self._gone: trio.Event = trio.Event()
        self._exit_reason = ""
        self._on_unexpected_exit: Callable[[str], None] = lambda reason: None

    async def start(self, nursery: trio.Nursery, on_unexpected_exit: Callable[[str], None]) -> None:
        """Spawn the server into `nursery` and wait until it is healthy. On failure the
        process is gone when this raises `ModelStartError`."""
        self._on_unexpected_exit = on_unexpected_exit
        self.generation += 1
        self._gone = trio.Event()
        read_fd, write_fd = os.pipe()
        try:
            popen = subprocess.Popen(  # noqa: ASYNC220 - forked on this thread on purpose, see top
                self.config.cmd,
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                env={**os.environ, **self.config.env},
                start_new_session=True,
                preexec_fn=_CHILD_SETUP,
            )
        except OSError as exc:
            os.close(read_fd)
            raise ModelStartError(
                self.config.id,
                f"cannot run {self.config.cmd[0]!r}: {exc.strerror} "
                f"(check models.{self.config.id}.cmd)",
            ) from None
        finally:
            os.close(write_fd)
        self.pid = popen.pid
        log.info(
            "model %s: started pid %d: %s", self.config.id, popen.pid, " ".join(self.config.cmd)
        )
        self._starting = True
        try:
            await nursery.start(self._own, popen, read_fd)
            with trio.CancelScope() as self._start_scope:
                if self._health_url is not None and not self._gone.is_set():
                    with trio.move_on_after(self._health_check_timeout) as deadline:
                        await self._wait_healthy(self._health_url)
                    if deadline.cancelled_caught:
                        await self.stop()
                        raise ModelStartError(
                            self.config.id,
                            f"not healthy at {self._health_url} after "
                            f"{self._health_check_timeout:g}s (raise healthCheckTimeout if it "
                            "loads slowly)",
                            self._logs.tail(self.config.id, LOG_TAIL_LINES),
                        )
        except BaseException:
            await self.stop()
            raise
        finally:
            self._starting = False
            self._start_scope = None
        if self._gone.is_set():
            raise ModelStartError(
                self.config.id, self._exit_reason, self._logs.tail(self.config.id, LOG_TAIL_LINES)
            )

    async def stop(self) -> None:
        """Stop the server and wait until its process group is gone."""
        if self._stop_scope is not None:
            self._stop_scope.cancel()
        with trio.CancelScope(shield=True):
            await self._gone.wait()

    async def _wait_healthy(self, url: str) -> None:
        started = trio.current_time()
        interval = FIRST_PROBE_INTERVAL
        while True:
            with trio.move_on_after(PROBE_TIMEOUT):
                try:
                    response = await self._health_client.get(url)
                    if response.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            await trio.sleep(interval)
            if trio.current_time() - started > FAST_PROBE_PERIOD:
                interval = min(interval * 1.5, MAX_PROBE_INTERVAL)

    async def _own(
        self,
        popen: subprocess.Popen[bytes],
        read_fd: int,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        pidfd = os.pidfd_open(popen.pid)
        exited_on_its_own = False
        logs_done = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump_logs, trio.lowlevel.FdStream(read_fd), logs_done)
                task_status.started()
                try:
                    # Cancelled by `stop()` (this scope) or by shutdown (the supervisor's nursery).
                    with trio.CancelScope() as self._stop_scope:
                        await trio.lowlevel.wait_readable(pidfd)
                        exited_on_its_own = True
                finally:
                    self._stop_scope = None
                    with trio.CancelScope(shield=True):
                        await self._terminate(popen, pidfd)
                    with trio.move_on_after(LOG_DRAIN_GRACE):
                        await logs_done.wait()
                    nursery.cancel_scope.cancel()
        finally:
            os.close(pidfd)
            self.pid = None
            self._exit_reason = _describe_exit(popen.returncode)
            self._gone.set()
            if self._starting:
                if self._start_scope is not None:
                    self._start_scope.cancel()
            elif exited_on_its_own:
                log.warning("model %s: server %s", self.config.id, self._exit_reason)
                self._on_unexpected_exit(self._exit_reason)

    async def _terminate(self, popen: subprocess.Popen[bytes], pidfd: int) -> None:
        model = self.config.id
        if popen.poll() is None:
            grace = self.config.unload_timeout
            stop_cmd = self.config.stop_command(popen.pid)
            if stop_cmd is not None:
                log.info("model %s: stopping with %s", model, " ".join(stop_cmd))
                with trio.move_on_after(grace):
                    await self._run_stop_command(stop_cmd, popen.pid)
            else:
                log.info("model %s: stopping pid %d (SIGTERM)", model, popen.pid)
                _kill_group(popen.pid, signal.SIGTERM)
            with trio.move_on_after(grace):
                await trio.lowlevel.wait_readable(pidfd)
            if popen.poll() is None:
                log.warning(
                    "model %s: pid %d ignored the stop for %gs (unloadTimeout); sending SIGKILL",
                    model,
                    popen.pid,
                    grace,
                )
                _kill_group(popen.pid, signal.SIGKILL)
                await trio.lowlevel.wait_readable(pidfd)
        popen.wait()
        # The leader is gone; anything it left in its process group goes too.
        _kill_group(popen.pid, signal.SIGKILL)

    async def _run_stop_command(self, stop_cmd: tuple[str, ...], pid: int) -> None:
        try:
            result = await trio.run_process(
                stop_cmd, check=False, capture_stdout=True, stderr=subprocess.STDOUT
            )
        except OSError as exc:
            log.error("model %s: cmdStop failed (%s); sending SIGTERM", self.config.id, exc)
            _kill_group(pid, signal.SIGTERM)
            return
        for line in result.stdout.decode(errors="replace").splitlines():
            self._logs.write_model(self.config.id, line)
        if result.returncode != 0:
            log.warning("model %s: cmdStop exited with %d", self.config.id, result.returncode)

    async def _pump_logs(self, stream: trio.lowlevel.FdStream, done: trio.Event) -> None:
        model = self.config.id
        pending = b""
        try:
            async with stream:
                while chunk := await stream.receive_some(READ_CHUNK):
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        self._logs.write_model(model, line.rstrip(b"\r").decode(errors="replace"))
            if pending:
                self._logs.write_model(model, pending.decode(errors="replace"))
        finally:
            done.set()


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "did not exit"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"
