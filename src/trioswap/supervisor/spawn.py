"""A model server's processes as the operating system sees them: spawn, watch, signal. Decisions
(when to stop, how long to wait) are `process.py`'s.

Each model server runs under the watchdog (`watchdog.py`): trioswap's direct child, leading a
session of its own, with PR_SET_PDEATHSIG. It runs the model's command in a process group of its
own and reports the model's pid on a pipe. The polite stop is SIGTERM to the watchdog, which
forwards it once to the model's group and SIGKILLs the group after `unloadTimeout`; when trioswap
dies, the kernel sends the watchdog the same SIGTERM. The watchdog exits as the model did.

We fork on the trio thread rather than through `trio.lowlevel.open_process`, which forks from a
worker thread: Linux delivers PR_SET_PDEATHSIG when the *thread* that forked exits, and trio's idle
worker threads exit after ten seconds, which would take the watchdog and the model with them.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

import trio

from trioswap.supervisor.watchdog import watchdog_command

PID_REPORT_BYTES = 64


class Child:
    """A model server under its watchdog. Close it once it has exited."""

    def __init__(self, watchdog: subprocess.Popen[bytes], output: int, pid_pipe: int) -> None:
        self._watchdog = watchdog
        self._pidfd = os.pidfd_open(watchdog.pid)
        self._pid_pipe = trio.lowlevel.FdStream(pid_pipe)
        # Its stdout and stderr (and the watchdog's), for the log pump, which closes it.
        self.output = trio.lowlevel.FdStream(output)
        # The model server's own pid, once the watchdog reports it: what cmdStop's ${PID} means.
        self.pid: int | None = None
        self._model_pidfd: int | None = None

    async def started(self) -> bool:
        """Wait for the model's pid; False if its command could not be run (the watchdog then
        says why in the model's log and exits with 127 or 126, as a shell does)."""
        report = b""
        async with self._pid_pipe:
            while chunk := await self._pid_pipe.receive_some(PID_REPORT_BYTES):
                report += chunk
        if report.strip().isdigit():
            self.pid = int(report)
            try:
                self._model_pidfd = os.pidfd_open(self.pid)
            except ProcessLookupError:
                pass  # it has already exited and been reaped by the watchdog
        return self.pid is not None

    async def wait(self) -> int:
        """Wait until the watchdog and the model have exited; the model's return code (negative:
        killed by that signal)."""
        if self._watchdog.poll() is None:
            await trio.lowlevel.wait_readable(self._pidfd)
        if self._model_pidfd is not None:
            # The watchdog reaps the model before it exits, so this is instant unless the
            # watchdog itself was SIGKILLed: then the model, SIGKILLed too, can outlive it by a
            # moment, and "stopped" must not be said of a process that still holds its port.
            await trio.lowlevel.wait_readable(self._model_pidfd)
        return self._watchdog.wait()

    @property
    def exited(self) -> bool:
        return self._watchdog.poll() is not None

    def terminate(self) -> None:
        """The polite stop: SIGTERM to the watchdog, which forwards it once."""
        self._watchdog.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the model's process group (the watchdog then cleans up and exits)."""
        if self.pid is not None:
            _signal_group(self.pid, signal.SIGKILL)

    def kill_all(self) -> None:
        """SIGKILL to the model's group and to the watchdog's, for a watchdog that is stuck."""
        self.kill()
        _signal_group(self._watchdog.pid, signal.SIGKILL)

    def close(self) -> None:
        self._pid_pipe.close()
        os.close(self._pidfd)
        if self._model_pidfd is not None:
            os.close(self._model_pidfd)


def spawn(cmd: Sequence[str], env: Mapping[str, str], grace: float) -> Child:
    """Start `cmd` under the watchdog, with `env` added to ours and stdout and stderr into one
    pipe; the watchdog SIGKILLs the model `grace` seconds after a stop. Raises OSError."""
    output_read, output_write = os.pipe()
    pid_read, pid_write = os.pipe()
    try:
        watchdog = subprocess.Popen(
            watchdog_command(cmd, grace, pid_write),
            stdin=subprocess.DEVNULL,
            stdout=output_write,
            stderr=output_write,
            env={**os.environ, **env},
            start_new_session=True,
            pass_fds=(pid_write,),
        )
    except BaseException:
        os.close(output_read)
        os.close(pid_read)
        raise
    finally:
        os.close(output_write)
        os.close(pid_write)
    return Child(watchdog, output_read, pid_read)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
