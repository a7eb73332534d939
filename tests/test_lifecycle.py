"""Model servers that fail, die, ignore signals, and trioswap itself being stopped or killed."""

from __future__ import annotations

import json
import os
import signal

import httpx
import trio

from tests.conftest import RESPONDER, LaunchFn, chat, pid_alive, random_start_port, wait_until


def one_model(flags: str = "", top: str = "healthCheckTimeout: 20", model: str = "") -> str:
    return f"""
startPort: {random_start_port()}
{top}
models:
  m:
    cmd: {RESPONDER} --port ${{PORT}} --model-id m {flags}
{model}
"""


async def test_failed_start_is_502_with_log_lines_and_next_request_retries(
    launch: LaunchFn,
) -> None:
    ts = await launch(one_model("--fail-on-start --exit-code 7"))
    async with ts.client() as client:
        response = await client.post("/v1/chat/completions", json=chat())
        assert response.status_code == 502
        error = response.json()["error"]
        assert "'m'" in error["message"]
        assert "exited with code 7" in error["message"]
        assert "failed to load model" in error["message"]  # the responder's own stderr line
        assert (await ts.states())["m"] == "failed"
        response = await client.post("/v1/chat/completions", json=chat())
        assert response.status_code == 502
    assert ts.count_output(r"model m: started pid") == 2


async def test_missing_executable_is_a_clear_502(launch: LaunchFn) -> None:
    config = f"""
startPort: {random_start_port()}
models:
  m:
    cmd: /nonexistent/llama-server --port ${{PORT}}
"""
    ts = await launch(config)
    async with ts.client() as client:
        response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert "cannot run '/nonexistent/llama-server'" in message
    assert "models.m.cmd" in message


async def test_health_timeout_fails_start_and_stops_process(launch: LaunchFn) -> None:
    ts = await launch(one_model("--loading-delay 30", top="healthCheckTimeout: 0.5"))
    async with ts.client() as client:
        response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 502
    assert "not healthy" in response.json()["error"]["message"]
    assert "healthCheckTimeout" in response.json()["error"]["message"]
    assert (await ts.states())["m"] == "failed"
    assert (await ts.running())["m"]["pid"] is None


async def test_upstream_dying_mid_stream_ends_stream_with_error_and_recovers(
    launch: LaunchFn,
) -> None:
    ts = await launch(one_model("--crash-after-chunks 2 --tokens-per-second 50"))
    async with ts.client() as client:
        async with client.stream("POST", "/v1/chat/completions", json=chat(stream=True)) as resp:
            assert resp.status_code == 200
            events = [line async for line in resp.aiter_lines() if line.startswith("data: ")]
        assert len(events) == 3
        error = json.loads(events[-1].removeprefix("data: "))
        assert error["error"]["type"] == "upstream_error"
        assert "[DONE]" not in events[-1]
        await wait_until(lambda: _state(ts, "m", "failed"))
        # Recovers: a non-streaming request does not hit the crash knob.
        response = await client.post("/v1/chat/completions", json=chat())
        assert response.status_code == 200
    assert ts.count_output(r"model m: started pid") == 2


async def _state(ts: object, model: str, state: str) -> bool:
    return (await ts.states()).get(model) == state  # type: ignore[attr-defined]


async def test_model_ignoring_sigterm_is_killed_after_unload_timeout(launch: LaunchFn) -> None:
    ts = await launch(one_model("--ignore-sigterm", model="    unloadTimeout: 0.5"))
    async with ts.client() as client:
        assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200
        pid = (await ts.running())["m"]["pid"]
        assert isinstance(pid, int) and pid_alive(pid)
        await client.post("/models/unload")
    await wait_until(lambda: not pid_alive(pid), timeout=10)
    await wait_until(lambda: ts.count_output(r"ignored the stop for 0.5s .*SIGKILL") == 1)


async def test_cmd_stop_is_used(launch: LaunchFn, tmp_path: object) -> None:
    marker = f"{tmp_path}/stopped"
    model = f"    cmdStop: sh -c 'echo ${{PID}} > {marker}; kill -TERM ${{PID}}'"
    ts = await launch(one_model(model=model))
    async with ts.client() as client:
        await client.post("/v1/chat/completions", json=chat())
        pid = (await ts.running())["m"]["pid"]
        await client.post("/models/unload")
    await wait_until(lambda: not pid_alive(pid))
    with open(marker) as f:
        assert f.read().strip() == str(pid)


def two_models_with_grandchildren() -> str:
    return f"""
startPort: {random_start_port()}
models:
  a:
    cmd: {RESPONDER} --port ${{PORT}} --model-id a --spawn-grandchild
  b:
    cmd: {RESPONDER} --port ${{PORT}} --model-id b --spawn-grandchild
routing:
  router:
    settings:
      groups:
        free:
          swap: false
          exclusive: false
          members: [a, b]
"""


async def _start_both(ts: object) -> list[int]:
    pids: list[int] = []
    async with ts.client() as client:  # type: ignore[attr-defined]
        for model in ("a", "b"):
            assert (await client.post("/v1/chat/completions", json=chat(model))).status_code == 200
            info = (await client.get(f"/upstream/{model}/debug/info")).json()
            pids += [info["pid"], info["grandchild_pid"]]
    assert all(pid_alive(p) for p in pids)
    return pids


async def test_sigterm_stops_every_child_and_grandchild_and_exits_0(launch: LaunchFn) -> None:
    ts = await launch(two_models_with_grandchildren())
    pids = await _start_both(ts)
    ts.process.send_signal(signal.SIGTERM)
    with trio.fail_after(15):
        assert await ts.process.wait() == 0
    await wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=5)


async def test_ctrl_c_stops_everything_and_exits_0(launch: LaunchFn) -> None:
    ts = await launch(two_models_with_grandchildren())
    pids = await _start_both(ts)
    ts.process.send_signal(signal.SIGINT)
    with trio.fail_after(15):
        assert await ts.process.wait() == 0
    await wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=5)


async def test_sigkill_of_trioswap_leaves_no_model_server(launch: LaunchFn) -> None:
    ts = await launch(two_models_with_grandchildren())
    pids = await _start_both(ts)
    ts.process.send_signal(signal.SIGKILL)
    await ts.process.wait()
    # Each model's watchdog takes its whole process group down with trioswap.
    try:
        await wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=5)
    finally:
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


async def test_client_disconnect_releases_the_lease(launch: LaunchFn) -> None:
    ts = await launch(one_model("--tokens-per-second 5"))
    url = httpx.URL(ts.url)
    body = json.dumps(chat(stream=True)).encode()
    # A raw socket, so the test decides exactly when the client goes away.
    stream = await trio.open_tcp_stream(url.host, url.port)
    async with stream:
        await stream.send_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\n"
            b"content-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while b"data: " not in received:
            received += await stream.receive_some(65536)
    await wait_until(lambda: _in_flight_is(ts, "m", 0))
    # No lease was left behind: the model can be unloaded at once.
    async with ts.client() as client:
        await client.post("/models/unload")
    await wait_until(lambda: _nothing_running(ts))


async def _in_flight_is(ts: object, model: str, count: int) -> bool:
    return (await ts.running())[model]["in_flight"] == count  # type: ignore[attr-defined]


async def _nothing_running(ts: object) -> bool:
    return await ts.running() == {}  # type: ignore[attr-defined]


async def test_bad_config_exits_1_with_message(launch: LaunchFn) -> None:
    ts = await launch("models:\n  m:\n    cmd: x --port ${PORT}\n    ttl: soon\n", wait=False)
    with trio.fail_after(15):
        assert await ts.process.wait() == 1
    await wait_until(lambda: bool(ts.stderr))
    text = "\n".join(ts.stderr)
    assert "config-0.yaml:4: models.m.ttl: must be a number, not the string 'soon'" in text
    assert "Traceback" not in text


async def test_listen_address_in_use_is_a_clear_error(launch: LaunchFn) -> None:
    ts = await launch(one_model())
    port = httpx.URL(ts.url).port
    # A later --listen wins over the fixture's own.
    clash = await launch(one_model(), "--listen", f"127.0.0.1:{port}", wait=False)
    with trio.fail_after(15):
        assert await clash.process.wait() == 1
    await wait_until(lambda: any("cannot listen" in line for line in clash.stderr))
    assert not any("Traceback" in line for line in clash.stderr)


async def test_model_env_reaches_the_server(launch: LaunchFn) -> None:
    config = f"""
startPort: {random_start_port()}
models:
  m:
    cmd: >-
      sh -c 'echo "FOO is $FOO"; exec {RESPONDER} --port "$0" --model-id m' ${{PORT}}
    env: ["FOO=bar baz"]
"""
    ts = await launch(config)
    async with ts.client() as client:
        assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200
        logs = (await client.get("/logs")).text
    assert "[m] FOO is bar baz" in logs
