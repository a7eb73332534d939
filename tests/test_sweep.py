"""The startup sweep (supervisor/sweep.py): real processes carrying real markers, no mocks.

Each "server" is `sh` with a `sleep` child in a session of its own, started with a marker naming
an owner: a pid that has exited, a live pid with another start time (a recycled pid), or this test
process itself (a live trioswap on the same config).
"""

from __future__ import annotations

import os
import shlex
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio

from tests.conftest import pid_alive, wait_until
from trioswap.supervisor.sweep import (
    INSTANCE_VAR,
    StoppedGroup,
    Survivor,
    find_survivors,
    instance_env,
    stop_survivors,
)

SERVER = 'sleep 1000 & echo $! > "$1"; wait'
STUBBORN = 'trap "" TERM; sleep 1000 & echo $! > "$1"; wait'
UNMARKED_CHILD = f'env -u {INSTANCE_VAR} sleep 1000 & echo $! > "$1"; wait'


class Server:
    def __init__(self, process: trio.Process, child: int) -> None:
        self.process = process
        self.child = child
        self.pids = {process.pid, child}

    def alive(self) -> bool:
        return any(map(pid_alive, self.pids))


SpawnFn = Callable[..., Awaitable[Server]]


def read_pid(path: Path) -> int | None:
    text = path.read_text() if path.exists() else ""
    return int(text) if text.strip() else None


def runs_sleep(pid: int) -> bool:
    """Whether `pid` has exec'd `sleep` (and has the environment it was given for it)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep\0")
    except OSError:
        return False


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[SpawnFn]:
    """`await spawn(marker, script, *args)`: `sh -c script sh PIDFILE args` with the marker in its
    environment, once its `sleep` child runs. Every process group it made is killed at teardown."""
    servers: list[Server] = []

    async def spawn(marker: str, script: str = SERVER, *args: str) -> Server:
        pid_file = tmp_path / f"child-{len(servers)}"
        process = await trio.lowlevel.open_process(
            ["sh", "-c", script, "sh", str(pid_file), *args],
            env={**os.environ, INSTANCE_VAR: marker},
            start_new_session=True,
        )
        await wait_until(lambda: read_pid(pid_file) is not None)
        child = read_pid(pid_file)
        assert child is not None
        await wait_until(lambda: runs_sleep(child))
        servers.append(Server(process, child))
        return servers[-1]

    try:
        yield spawn
    finally:
        with trio.CancelScope(shield=True):
            for server in servers:
                try:
                    os.killpg(server.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                await server.process.wait()
            await wait_until(lambda: not any(server.alive() for server in servers))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text("models: {}\n")
    return path


async def exited_pid() -> int:
    process = await trio.lowlevel.open_process(["true"])
    await process.wait()
    return process.pid


def marker(owner: str, config: Path) -> str:
    """A marker naming `owner` ("pid:start time") and `config`."""
    config_key = instance_env(str(config))[INSTANCE_VAR].rsplit(":", 1)[1]
    return f"{owner}:{config_key}"


def survivor_pids(config: Path) -> set[int]:
    return {survivor.pid for survivor in find_survivors(str(config))}


def test_instance_env_names_this_process_and_the_resolved_config(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("")
    (tmp_path / "link.yaml").symlink_to(tmp_path / "a.yaml")
    pid, start, key = instance_env(str(tmp_path / "a.yaml"))[INSTANCE_VAR].split(":")
    assert int(pid) == os.getpid()
    assert start == Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19]
    assert instance_env(str(tmp_path / "link.yaml"))[INSTANCE_VAR].endswith(f":{key}")
    assert not instance_env(str(tmp_path / "b.yaml"))[INSTANCE_VAR].endswith(f":{key}")


async def test_survivors_of_a_gone_owner_are_found_and_stopped(
    spawn: SpawnFn, config: Path, tmp_path: Path
) -> None:
    dead_owner = await spawn(marker(f"{await exited_pid()}:1", config), SERVER, "--api-key", "pw1")
    recycled_pid = await spawn(marker(f"{os.getpid()}:1", config))
    live_owner = await spawn(instance_env(str(config))[INSTANCE_VAR])
    other_config = await spawn(marker(f"{await exited_pid()}:1", tmp_path / "other.yaml"))

    survivors = await trio.to_thread.run_sync(find_survivors, str(config))
    assert {s.pid for s in survivors} == dead_owner.pids | recycled_pid.pids
    stopped = await trio.to_thread.run_sync(stop_survivors, survivors, 5.0)

    assert not dead_owner.alive() and not recycled_pid.alive()
    assert live_owner.alive() and other_config.alive()
    leader = dead_owner.process.pid
    assert stopped == [
        StoppedGroup(
            pid=leader,
            command=shlex.join(
                ["sh", "-c", SERVER, "sh", str(tmp_path / "child-0"), "--api-key", "***"]
            ),
            pids=(leader, dead_owner.child),
            killed=(),
        ),
        StoppedGroup(
            pid=recycled_pid.process.pid,
            command=shlex.join(["sh", "-c", SERVER, "sh", str(tmp_path / "child-1")]),
            pids=(recycled_pid.process.pid, recycled_pid.child),
            killed=(),
        ),
    ]
    assert stopped[0].describe() == (
        f"pid {leader} and 1 more of its group: {stopped[0].command} (stopped with SIGTERM)"
    )
    assert survivor_pids(config) == set()


async def test_a_group_ignoring_sigterm_is_killed_after_grace(spawn: SpawnFn, config: Path) -> None:
    stubborn = await spawn(marker(f"{await exited_pid()}:1", config), STUBBORN)
    survivors = await trio.to_thread.run_sync(find_survivors, str(config))
    began = trio.current_time()
    stopped = await trio.to_thread.run_sync(stop_survivors, survivors, 0.3)
    assert trio.current_time() - began >= 0.3
    assert not stubborn.alive()
    assert [group.killed for group in stopped] == [(stubborn.process.pid, stubborn.child)]
    assert stopped[0].describe().endswith("(SIGKILL: 2 outlived the SIGTERM)")


async def test_a_process_without_the_marker_is_never_signalled(
    spawn: SpawnFn, config: Path
) -> None:
    mixed = await spawn(marker(f"{await exited_pid()}:1", config), UNMARKED_CHILD)
    assert survivor_pids(config) == {mixed.process.pid}
    survivors = await trio.to_thread.run_sync(find_survivors, str(config))
    await trio.to_thread.run_sync(stop_survivors, survivors, 5.0)
    assert not pid_alive(mixed.process.pid)
    assert pid_alive(mixed.child)  # in the survivor's group, but unmarked


async def test_a_pid_no_longer_carrying_its_marker_is_not_signalled(
    spawn: SpawnFn, config: Path
) -> None:
    """As when a survivor exits after the scan and its pid goes to another process: the marker is
    read again once the pid is held, and the newcomer is left alone."""
    newcomer = await spawn(instance_env(str(config))[INSTANCE_VAR])
    pid = newcomer.process.pid
    stale = Survivor(pid, pid, marker(f"{await exited_pid()}:1", config), ("sh",))
    assert await trio.to_thread.run_sync(stop_survivors, [stale], 0.3) == []
    assert newcomer.alive()
