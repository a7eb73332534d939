"""The supervisor against a hostile world: squatted ports, hung servers, secrets on command lines,
model servers that fork, and trioswap itself being killed."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from tests.conftest import (
    RESPONDER,
    LaunchFn,
    Trioswap,
    chat,
    kill_group,
    pair_config,
    pid_alive,
    random_start_port,
    wait_until,
)
from trioswap.config import loads


def allocated_port(config_text: str, model: str) -> int:
    port = loads(textwrap.dedent(config_text)).models[model].port
    assert port is not None
    return port


async def running(ts: Trioswap) -> dict[str, dict[str, object]]:
    return await ts.running()


@pytest.fixture
async def foreign() -> AsyncIterator[list[trio.Process]]:
    """Servers that are not trioswap's, killed at teardown."""
    processes: list[trio.Process] = []
    try:
        yield processes
    finally:
        with trio.CancelScope(shield=True):
            for process in processes:
                kill_group(process.pid)
                await process.wait()


async def start_foreign(processes: list[trio.Process], host: str, port: int) -> trio.Process:
    process = await trio.lowlevel.open_process(
        [*RESPONDER.split(), "--host", host, "--port", str(port), "--model-id", "foreign"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    processes.append(process)

    async def answers() -> bool:
        async with httpx.AsyncClient() as client:
            try:
                return (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200
            except httpx.HTTPError:
                return False

    await wait_until(answers)
    return process


# -- defect 3: a foreign server on a model's port -------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
async def test_a_taken_port_moves_the_start_to_a_free_one(
    launch: LaunchFn, foreign: list[trio.Process], host: str
) -> None:
    config = pair_config()
    port = allocated_port(config, "a")
    squatter = await start_foreign(foreign, host, port)
    ts = await launch(config)
    async with ts.client() as client:
        response = await client.post("/v1/chat/completions", json=chat("a"))
        assert response.status_code == 200
        assert response.headers["x-responder-model"] == "a"
        proxy = str((await running(ts))["a"]["proxy"])
        moved = httpx.URL(proxy).port
        assert moved != port
        start_port = loads(textwrap.dedent(config)).start_port
        assert start_port <= moved < start_port + 1000
        assert moved != allocated_port(config, "b")
        assert ts.count_output(rf"WARNING model a: port {port} is in use; using {moved}") == 1
        # The next start, with the port free again, uses the model's own port.
        kill_group(squatter.pid)
        await squatter.wait()
        assert (await client.post("/models/unload")).status_code == 200
        assert (await client.post("/v1/chat/completions", json=chat("a"))).status_code == 200
        assert (await running(ts))["a"]["proxy"] == f"http://127.0.0.1:{port}"


async def test_exit_of_a_ready_model_leaves_its_log_tail_in_last_error(launch: LaunchFn) -> None:
    ts = await launch(pair_config("--crash-after-chunks 2"))
    async with ts.client() as client:
        await client.post("/v1/chat/completions", json=chat("a", stream=True))
    await wait_until(lambda: _state_is(ts, "a", "failed"))
    error = str((await running(ts))["a"]["last_error"])
    assert "exited with code 3" in error
    assert "responder: crashing after 2 chunks" in error


async def _state_is(ts: Trioswap, model: str, state: str) -> bool:
    return (await ts.states()).get(model) == state


# -- defect 9: a hung model can be unloaded --------------------------------------------------------


async def _stream_into(client: httpx.AsyncClient, model: str, out: list[str]) -> None:
    async with client.stream("POST", "/v1/chat/completions", json=chat(model, stream=True)) as r:
        async for line in r.aiter_lines():
            out.append(line)


async def _in_flight(ts: Trioswap, model: str) -> bool:
    entry = (await running(ts)).get(model)
    return entry is not None and entry["in_flight"] == 1


@pytest.mark.parametrize("path", ["/models/unload/a?force=true", "/models/unload?force=true"])
async def test_forced_unload_stops_a_hung_model_and_cuts_its_request(
    launch: LaunchFn, path: str
) -> None:
    ts = await launch(pair_config("--tokens-per-second 5", top="unloadTimeout: 0.5"))
    lines: list[str] = []
    async with ts.client() as client, trio.open_nursery() as nursery:
        nursery.start_soon(_stream_into, client, "a", lines)
        await wait_until(lambda: any(line.startswith("data: ") for line in lines))
        pid = (await running(ts))["a"]["pid"]
        assert isinstance(pid, int)
        os.kill(pid, signal.SIGSTOP)
        try:
            # A request for b waits for a's request to finish, which never happens by itself.
            b_status: list[int] = []

            async def ask_b() -> None:
                response = await client.post("/v1/chat/completions", json=chat("b"))
                b_status.append(response.status_code)

            nursery.start_soon(ask_b)
            await wait_until(lambda: _waiting(ts, "b"))
            response = await client.post(path)
            assert response.status_code == 200
            assert response.json() == {"status": "ok", "stopped": ["a"], "forced": ["a"]}
            assert not pid_alive(pid)  # the answer came when the unload was done
        finally:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: bool(b_status))
    assert b_status == [200]
    assert "[DONE]" not in "\n".join(lines)
    assert '"error"' in [line for line in lines if line.startswith("data: ")][-1]


async def _waiting(ts: Trioswap, model: str) -> bool:
    entry = (await running(ts)).get(model)
    return entry is not None and entry["waiting"] == 1


async def test_unload_without_force_waits_for_drain_timeout(launch: LaunchFn) -> None:
    ts = await launch(pair_config("--tokens-per-second 2", top="drainTimeout: 0.5"))
    lines: list[str] = []
    async with ts.client() as client, trio.open_nursery() as nursery:
        nursery.start_soon(_stream_into, client, "a", lines)
        await wait_until(lambda: _in_flight(ts, "a"))
        started = trio.current_time()
        response = await client.post("/models/unload/a")
        assert trio.current_time() - started >= 0.4
        assert response.json() == {"status": "ok", "stopped": ["a"], "forced": ["a"]}
    assert await running(ts) == {}


async def test_unload_of_idle_models_says_what_it_stopped(launch: LaunchFn) -> None:
    ts = await launch(pair_config())
    async with ts.client() as client:
        assert (await client.post("/v1/chat/completions", json=chat("a"))).status_code == 200
        response = await client.post("/models/unload")
        assert response.json() == {"status": "ok", "stopped": ["a"], "forced": []}
        assert await running(ts) == {}
        response = await client.post("/models/unload/b")
        assert response.json() == {"status": "ok", "stopped": [], "forced": []}


# -- defect 13: secrets on a model's command line --------------------------------------------------


async def test_running_and_logs_do_not_show_secrets_of_the_command_line(launch: LaunchFn) -> None:
    config = f"""
startPort: {random_start_port()}
models:
  m:
    cmd: >-
      sh -c 'exec {RESPONDER} --port "$0" --model-id m' ${{PORT}}
      --api-key sekrit-value --tokens-per-second 7
"""
    ts = await launch(config)
    async with ts.client() as client:
        assert (await client.post("/v1/chat/completions", json=chat("m"))).status_code == 200
        cmd = str((await running(ts))["m"]["cmd"])
        logs = (await client.get("/logs")).text
    assert "sekrit-value" not in cmd
    assert "--api-key '***' --tokens-per-second 7" in cmd
    assert "sekrit-value" not in logs
    assert "--api-key '***'" in logs


async def test_two_trioswaps_on_one_config_each_run_their_own_server(launch: LaunchFn) -> None:
    config = pair_config()
    first = await launch(config)
    second = await launch(config, "--config", str(first.config_path))
    ports = []
    for ts in (first, second):
        async with ts.client() as client:
            response = await client.post("/v1/chat/completions", json=chat("a"))
        assert response.status_code == 200
        ports.append(response.json()["responder"]["port"])
    assert ports[0] == allocated_port(config, "a")
    assert ports[1] != ports[0]


# -- defect 4: no descendant outlives trioswap -----------------------------------------------------

WRAPPERS = {
    # the model server is a grandchild of trioswap, in the wrapper's process group
    "forking-shell": (
        "sh -c '{responder} --port $0 --model-id m --spawn-grandchild & wait' ${{PORT}}"
    ),
    # ... or in a session of its own, out of every group trioswap could know of
    "setsid-escapee": "sh -c 'setsid {responder} --port $0 --model-id m & wait' ${{PORT}}",
}


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


async def model_pids(ts: Trioswap, model: str) -> list[int]:
    """The model's process (the wrapper), the server it runs and the server's own child."""
    async with ts.client() as client:
        assert (await client.post("/v1/chat/completions", json=chat(model))).status_code == 200
        info = (await client.get(f"/upstream/{model}/debug/info")).json()
    pids = [(await running(ts))[model]["pid"], info["pid"], info["grandchild_pid"]]
    return [pid for pid in pids if isinstance(pid, int)]


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
async def test_sigkill_of_trioswap_leaves_no_descendant(launch: LaunchFn, wrapper: str) -> None:
    config = f"""
startPort: {random_start_port()}
models:
  m:
    cmd: {WRAPPERS[wrapper].format(responder=RESPONDER)}
"""
    ts = await launch(config)
    pids = await model_pids(ts, "m")
    assert len(pids) >= 2 and all(pid_alive(pid) for pid in pids)
    try:
        ts.process.send_signal(signal.SIGKILL)
        await ts.process.wait()
        await wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=10)
    finally:
        kill_all(pids)


async def test_a_new_trioswap_stops_what_an_earlier_one_left_on_its_config(
    launch: LaunchFn,
) -> None:
    config = pair_config()
    first = await launch(config)
    pids = await model_pids(first, "a")
    try:
        # Its watchdog gone first, nothing takes the model server down with trioswap.
        os.kill(parent_of(pids[0]), signal.SIGKILL)
        first.process.send_signal(signal.SIGKILL)
        await first.process.wait()
        assert all(pid_alive(pid) for pid in pids)
        second = await launch(config, "--config", str(first.config_path))
        await wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=10)
        assert second.count_output(rf"WARNING .*earlier trioswap.* pid {pids[0]}\b") == 1
        async with second.client() as client:
            response = await client.post("/v1/chat/completions", json=chat("a"))
        assert response.json()["responder"]["port"] == allocated_port(config, "a")
    finally:
        kill_all(pids)


async def test_sigkill_of_trioswap_kills_a_model_that_ignores_sigterm(launch: LaunchFn) -> None:
    config = f"""
startPort: {random_start_port()}
models:
  m:
    cmd: {RESPONDER} --port ${{PORT}} --model-id m --ignore-sigterm --spawn-grandchild
    unloadTimeout: 0.5
"""
    ts = await launch(config)
    pids = await model_pids(ts, "m")
    try:
        ts.process.send_signal(signal.SIGKILL)
        await ts.process.wait()
        await wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=10)
    finally:
        kill_all(pids)
