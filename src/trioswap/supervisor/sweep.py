"""Survivors of an earlier trioswap on the same config: found by their marker, and stopped.

Every process trioswap starts carries `TRIOSWAP_INSTANCE=<owner pid>:<owner start time>:<config
hash>` in its environment, and its descendants inherit it. The watchdog normally takes a model
down with trioswap; the sweep, run before a new instance binds its ports, catches what escaped
(a watchdog that was SIGKILLed itself, a process that left its group, a server started by an older
trioswap). A process is a survivor when its marker names our config and an owner that is gone: no
such pid, or a pid whose start time differs (the pid was reused). Another trioswap alive on the
same config keeps its servers.

Only marked processes are ever signalled, each through a pidfd opened after its marker was read
again, so neither an unmarked member of the group nor a recycled pid is hit. Both functions block;
the caller runs them with `trio.to_thread.run_sync`.
"""

from __future__ import annotations

import hashlib
import os
import select
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from trioswap.redact import shown_command

INSTANCE_VAR = "TRIOSWAP_INSTANCE"
_MARKER = INSTANCE_VAR.encode() + b"="
# How long SIGKILLed processes get to vanish (and free their ports) before the sweep moves on.
KILL_WAIT = 5.0


@dataclass(frozen=True)
class Survivor:
    pid: int
    pgid: int
    marker: str
    command: tuple[str, ...]


@dataclass(frozen=True)
class StoppedGroup:
    """What `stop_survivors` did to one process group, for one log line."""

    pid: int  # its leader if that was a survivor, else its first survivor
    command: str  # that process's command line, secrets masked
    pids: tuple[int, ...]  # every process signalled
    killed: tuple[int, ...]  # those still running after the grace period, sent SIGKILL

    def describe(self) -> str:
        others = len(self.pids) - 1
        who = f"pid {self.pid}" + (f" and {others} more of its group" if others else "")
        if not self.killed:
            return f"{who}: {self.command} (stopped with SIGTERM)"
        return f"{who}: {self.command} (SIGKILL: {len(self.killed)} outlived the SIGTERM)"


def instance_env(config_path: str) -> dict[str, str]:
    """The marker to add to the environment of every process this trioswap starts."""
    pid = os.getpid()
    return {INSTANCE_VAR: f"{pid}:{_start_time(pid)}:{_config_key(config_path)}"}


def find_survivors(config_path: str) -> list[Survivor]:
    """Processes left by a trioswap on this config that is no longer running."""
    key = _config_key(config_path)
    gone: dict[str, bool] = {}

    def of_a_gone_owner(marker: str) -> bool:
        owner, _, config = marker.rpartition(":")
        if config != key:
            return False
        if owner not in gone:
            gone[owner] = _owner_gone(owner)
        return gone[owner]

    return list(_scan(of_a_gone_owner))


def stop_survivors(survivors: Sequence[Survivor], grace: float) -> list[StoppedGroup]:
    """SIGTERM each survivor, SIGKILL after `grace` seconds those still running (and what they
    started meanwhile); wait for them to go. One record per process group, in pid order."""
    markers = {survivor.marker for survivor in survivors}
    pidfds = _open(survivors)
    try:
        for fd in pidfds.values():
            signal.pidfd_send_signal(fd, signal.SIGTERM)
        running = _wait_exit(pidfds, grace)
        # Their children started during the grace period carry the same marker.
        newcomers = [s for s in _scan(markers.__contains__) if s.pid not in pidfds]
        later = _open(newcomers)
        pidfds.update(later)
        running |= set(later)
        for pid in running:
            signal.pidfd_send_signal(pidfds[pid], signal.SIGKILL)
        _wait_exit({pid: pidfds[pid] for pid in running}, KILL_WAIT)
    finally:
        for fd in pidfds.values():
            os.close(fd)
    return _report([*survivors, *newcomers], set(pidfds), running)


def _report(
    survivors: Iterable[Survivor], signalled: set[int], killed: set[int]
) -> list[StoppedGroup]:
    groups: dict[int, list[Survivor]] = {}
    for survivor in sorted(survivors, key=lambda s: s.pid):
        if survivor.pid in signalled:
            groups.setdefault(survivor.pgid, []).append(survivor)
    records = []
    for pgid, members in sorted(groups.items()):
        leader = next((s for s in members if s.pid == pgid), members[0])
        records.append(
            StoppedGroup(
                pid=leader.pid,
                command=shown_command(leader.command),
                pids=tuple(s.pid for s in members),
                killed=tuple(s.pid for s in members if s.pid in killed),
            )
        )
    return records


def _open(survivors: Iterable[Survivor]) -> dict[int, int]:
    """pidfds of the survivors still running and still carrying their marker."""
    pidfds: dict[int, int] = {}
    for survivor in survivors:
        try:
            fd = os.pidfd_open(survivor.pid)
        except ProcessLookupError:
            continue
        # Read after the pidfd is held: if the pid was recycled since the scan, this sees it.
        if _read(survivor.pid, survivor.marker.__eq__) is None:
            os.close(fd)
        else:
            pidfds[survivor.pid] = fd
    return pidfds


def _wait_exit(pidfds: dict[int, int], timeout: float) -> set[int]:
    """Wait up to `timeout` for the processes to exit; the pids of those still running."""
    poller = select.poll()
    pid_of = {fd: pid for pid, fd in pidfds.items()}
    for fd in pid_of:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while pid_of and (remaining := deadline - time.monotonic()) > 0:
        for fd, _ in poller.poll(remaining * 1000):
            poller.unregister(fd)
            del pid_of[fd]
    return set(pid_of.values())


def _scan(wanted: Callable[[str], bool]) -> Iterator[Survivor]:
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (survivor := _read(int(entry), wanted)) is not None:
            yield survivor


def _read(pid: int, wanted: Callable[[str], bool]) -> Survivor | None:
    """Process `pid` if it carries a marker `wanted` accepts and is one we may ever signal."""
    if pid in (1, os.getpid()):
        return None
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
        if _MARKER not in environ:
            return None
        marker = next(
            (v[len(_MARKER) :] for v in environ.split(b"\0") if v.startswith(_MARKER)), None
        )
        if marker is None or not wanted(text := marker.decode(errors="replace")):
            return None
        pgid = os.getpgid(pid)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:  # gone, or not ours to read
        return None
    if pgid == os.getpgrp():
        return None
    command = tuple(arg.decode(errors="replace") for arg in cmdline.split(b"\0")[:-1])
    return Survivor(pid=pid, pgid=pgid, marker=text, command=command)


def _owner_gone(owner: str) -> bool:
    pid, _, start = owner.partition(":")
    return not pid.isdigit() or _start_time(int(pid)) != start


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rpartition(b")")[2].split()[19].decode()


def _config_key(config_path: str) -> str:
    return hashlib.sha256(os.fsencode(os.path.realpath(config_path))).hexdigest()[:16]
