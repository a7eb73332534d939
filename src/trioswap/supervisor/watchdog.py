"""The watchdog each model server runs under, so that no descendant outlives trioswap.

PR_SET_PDEATHSIG reaches only a direct child, and nothing in trioswap's own process runs after a
SIGKILL. So trioswap starts this script (its direct child, leading a new session) and the script
starts the model server in a process group of its own. When trioswap dies, the kernel sends the
watchdog SIGTERM; trioswap sends the same to stop the model. Either way the watchdog sends SIGTERM
once to the model's group (llama-server takes a second one as "exit now"), waits up to `--grace`
seconds for the model, then SIGKILLs the group and every orphan that escaped it. When the model
exits on its own, the watchdog kills what it left and exits as the model did (same code, or killed
by the same signal), so trioswap's "exited with code N" stays true.

Run as `python -I -S watchdog.py --parent-pid P --grace S --pid-fd N -- CMD...` (see
`watchdog_command`). It writes the model's pid and a newline to fd N and closes it; if CMD cannot
be executed it says why on stderr (the model's log) and exits 127 or 126, as a shell does.
Standard library only, never trioswap: it must start in milliseconds, also from the zipapp, which
extracts the package to disk.
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # importing collections.abc at run time would cost 3 ms per model start
    from collections.abc import Callable, Sequence
    from typing import NoReturn

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
_WAITED = _STOP_SIGNALS | {signal.SIGCHLD}
# Python ignores these; the model gets them back at their default, as `subprocess` would do.
_RESTORED = (signal.SIGPIPE, signal.SIGXFSZ)
_USAGE = "usage: watchdog.py --parent-pid PID --grace SECONDS --pid-fd FD -- COMMAND [ARG...]"


def watchdog_command(cmd: Sequence[str], grace: float, pid_fd: int) -> list[str]:
    """The argv that runs `cmd` under the watchdog, for a child of this process.

    Start it with `start_new_session=True`, `pass_fds=(pid_fd,)`, and fork on a thread that lives
    as long as trioswap: Linux sends PDEATHSIG when the forking *thread* exits."""
    return [
        sys.executable,
        "-I",
        "-S",
        os.path.abspath(__file__),
        "--parent-pid",
        str(os.getpid()),
        "--grace",
        repr(float(grace)),
        "--pid-fd",
        str(pid_fd),
        "--",
        *cmd,
    ]


def main(argv: list[str]) -> int:
    try:
        parent, grace, pid_fd, cmd = _parse(argv)
    except (ValueError, KeyError):
        _say(_USAGE)
        return 2
    try:
        os.set_inheritable(pid_fd, False)  # the model must not hold the pid pipe open
    except OSError:
        _say(f"--pid-fd {pid_fd} is not an open file descriptor")
        return 2
    # Blocked signals wait for `sigwaitinfo` below; none is lost before we get there.
    signal.pthread_sigmask(signal.SIG_BLOCK, _WAITED)
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        return 1  # trioswap died before the line above: nobody wants the model any more
    # Orphans of the model's descendants become our children, so we can reap and kill them.
    prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        model = os.posix_spawnp(
            cmd[0], cmd, os.environ, setpgroup=0, setsigmask=(), setsigdef=_RESTORED
        )
    except OSError as exc:
        os.close(pid_fd)
        _say(f"cannot run {cmd[0]!r}: {exc.strerror}")
        return 127 if isinstance(exc, FileNotFoundError | NotADirectoryError) else 126
    try:
        os.write(pid_fd, f"{model}\n".encode())
    except OSError:
        pass  # trioswap is gone or stopped listening; PDEATHSIG or its SIGTERM follows
    os.close(pid_fd)
    status = _supervise(model, grace)
    _clean_up(model)
    _exit_like(status, prctl)


def _parse(argv: list[str]) -> tuple[int, float, int, list[str]]:
    end = argv.index("--")
    options = dict(zip(argv[0:end:2], argv[1:end:2], strict=True))
    parent = int(options.pop("--parent-pid"))
    grace = float(options.pop("--grace"))
    pid_fd = int(options.pop("--pid-fd"))
    cmd = argv[end + 1 :]
    if options or not cmd or not math.isfinite(grace) or grace < 0:
        raise ValueError(argv)
    return parent, grace, pid_fd, cmd


def _supervise(model: int, grace: float) -> int:
    """Wait until the model exits, stopping it on the first stop signal; its wait status."""
    kill_at: float | None = None  # set by the first stop signal
    while (status := _reap(model)) is None:
        if kill_at is None:
            if signal.sigwaitinfo(_WAITED).si_signo in _STOP_SIGNALS:
                _signal_group(model, signal.SIGTERM)
                kill_at = time.monotonic() + grace
        elif signal.sigtimedwait(_WAITED, max(kill_at - time.monotonic(), 0.0)) is None:
            _say(f"pid {model} did not exit {grace:g}s after SIGTERM; sending SIGKILL")
            _signal_group(model, signal.SIGKILL)
            return os.waitpid(model, 0)[1]
    return status


def _reap(model: int) -> int | None:
    """Reap every child that exited (orphans included); the model's wait status if it did."""
    while True:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return None
        if pid == model:
            return status


def _clean_up(model: int) -> None:
    """Kill what the model left: its process group, then orphans that escaped the group (they
    were reparented to us), until we have no child left."""
    _signal_group(model, signal.SIGKILL)
    while True:
        listed = _kill_children()
        try:
            pid, _ = os.waitpid(-1, 0 if listed else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return  # without /proc's children list we cannot kill them; we only reap


def _kill_children() -> bool:
    try:
        with open(f"/proc/self/task/{os.getpid()}/children", "rb") as f:
            children = f.read().split()
    except OSError:
        return False
    for pid in children:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _exit_like(status: int, prctl: Callable[..., int]) -> NoReturn:
    """Exit with the model's code, or die by the signal that killed it."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # the model's crash is not ours: no core file
        if sig != signal.SIGKILL:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # only reached for a signal that does not terminate
    os._exit(os.WEXITSTATUS(status))


def _say(message: str) -> None:
    # stderr is the model's log pipe; once trioswap is gone nobody reads it, and a failed write
    # must not stop the watchdog from killing the group.
    try:
        os.write(2, f"trioswap watchdog: {message}\n".encode(errors="replace"))
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
