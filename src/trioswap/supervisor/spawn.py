"""A model server's process as the operating system sees it: spawn it, watch for its exit, signal
it. Decisions (when to stop, how long to wait) are `process.py`'s.

We fork on the trio thread rather than through `trio.lowlevel.open_process`, which forks from a
worker thread: Linux delivers PR_SET_PDEATHSIG when the *thread* that forked exits, and trio's idle
worker threads exit after ten seconds, which would kill the model server with them.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

import trio

_PR_SET_PDEATHSIG = 1


def _child_setup() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return setup


_CHILD_SETUP = _child_setup()


class Child:
    """A spawned model server, leading its own process group. Close it once it has exited."""

    def __init__(self, popen: subprocess.Popen[bytes], output: int) -> None:
        self._popen = popen
        self._pidfd = os.pidfd_open(popen.pid)
        # Its stdout and stderr, for the log pump; the pump owns (and closes) it.
        self.output = trio.lowlevel.FdStream(output)
        # The model server's own pid: what cmdStop's ${PID} means.
        self.pid = popen.pid

    async def wait(self) -> int:
        """Wait until it has exited; its return code (negative: killed by that signal)."""
        if self._popen.poll() is None:
            await trio.lowlevel.wait_readable(self._pidfd)
        return self._popen.wait()

    @property
    def exited(self) -> bool:
        return self._popen.poll() is not None

    def terminate(self) -> None:
        """The polite stop: SIGTERM to its process group."""
        _signal_group(self._popen.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to its process group: the server and whatever it left behind."""
        _signal_group(self._popen.pid, signal.SIGKILL)

    def close(self) -> None:
        os.close(self._pidfd)


def spawn(cmd: Sequence[str], env: Mapping[str, str]) -> Child:
    """Start `cmd` with `env` added to ours, stdout and stderr into one pipe. Raises OSError."""
    read_fd, write_fd = os.pipe()
    try:
        popen = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            env={**os.environ, **env},
            start_new_session=True,
            preexec_fn=_CHILD_SETUP,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return Child(popen, read_fd)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
