"""The runtime control API, end to end: /api/model/{model}/prompt-optimization, …/ctxsize (the
model started again with the new size) and …/prompt-optimization/latest, and their state
surviving a restart of trioswap."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import httpx
import trio

from tests.conftest import RESPONDER, LaunchFn, Trioswap, chat, random_start_port, wait_until

WORDS = "one two three four five six seven eight"
JSON = {"content-type": "application/json"}


def config(flags: str = "") -> str:
    return f"""
startPort: {random_start_port()}
peers:
  office:
    proxy: http://127.0.0.1:9
    models: [far]
models:
  m:
    cmd: {RESPONDER} --port ${{PORT}} --model-id m --ctx-size 4096 {flags}
    aliases: [mini]
    promptOptimization: always
    truncationMode: sliding_window
  other:
    cmd: {RESPONDER} --port ${{PORT}} --model-id other
    capabilities:
      context: 32768
"""


async def start(launch: LaunchFn, tmp_path: Path, text: str | None = None) -> Trioswap:
    return await launch(config() if text is None else text, "--state-dir", str(tmp_path / "s"))


async def post(ts: Trioswap, path: str, body: object) -> httpx.Response:
    async with ts.client() as client:
        return await client.post(path, json=body)


async def get(ts: Trioswap, path: str) -> httpx.Response:
    async with ts.client() as client:
        return await client.get(path)


async def served_ctx_size(ts: Trioswap) -> int:
    response = await get(ts, "/upstream/m/props")
    return int(response.json()["default_generation_settings"]["n_ctx"])


async def ready_pid(ts: Trioswap, model: str = "m") -> int | None:
    entry = (await ts.running()).get(model)
    if entry is None or entry["state"] != "ready":
        return None
    return int(str(entry["pid"]))


async def test_policy_get_set_clear(launch: LaunchFn, tmp_path: Path) -> None:
    ts = await start(launch, tmp_path)
    path = "/api/model/mini/prompt-optimization"
    configured = {
        "model": "m",
        "policy": "always",
        "source": "config",
        "configured": "always",
        "truncationMode": "sliding_window",
    }
    assert (await get(ts, path)).json() == configured
    response = await post(ts, path, {"policy": "llm_assisted"})
    assert response.status_code == 200
    assert response.json() == {**configured, "policy": "llm_assisted", "source": "runtime"}
    assert (await get(ts, "/api/model/m/prompt-optimization")).json() == response.json()
    assert (await post(ts, path, {"policy": None})).json() == configured
    other = (await get(ts, "/api/model/other/prompt-optimization")).json()
    assert other["policy"] == "limit_only" and other["truncationMode"] is None


async def test_bad_requests(launch: LaunchFn, tmp_path: Path) -> None:
    ts = await start(launch, tmp_path)
    policy, ctx = "/api/model/m/prompt-optimization", "/api/model/m/ctxsize"
    async with ts.client() as client:
        for body in (b"{nope", b"[1]", b'{"ctxSize": 4096}', b"\xff"):
            response = await client.post(policy, content=body, headers=JSON)
            assert response.status_code == 400, body
            assert response.json()["error"]["type"] == "invalid_request_error"
            assert response.headers["x-request-id"].startswith("req_")
        response = await client.post(policy, json={"policy": "sometimes"})
        assert response.status_code == 400
        assert "off, limit_only, always, llm_assisted" in response.json()["error"]["message"]
        for size in (255, 16_777_217, True, "4096", 4096.5):
            response = await client.post(ctx, json={"ctxSize": size})
            assert response.status_code == 400, size
            assert "an integer from 256 to 16777216" in response.json()["error"]["message"]
        for path in (policy, ctx):
            response = await client.get(path.replace("/m/", "/nope/"))
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "model_not_found"
            response = await client.post(path.replace("/m/", "/far/"), json={})
            assert response.status_code == 400
            assert "peer 'office'" in response.json()["error"]["message"]
    assert (await get(ts, policy)).json()["source"] == "config"
    assert (await get(ts, ctx)).json()["source"] == "cmd"


async def test_latest_snapshot_is_404_until_a_request_is_optimized(
    launch: LaunchFn, tmp_path: Path
) -> None:
    ts = await start(launch, tmp_path)
    response = await get(ts, "/api/model/mini/prompt-optimization/latest")
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert "no request for this model has been optimized since trioswap started" in message
    response = await get(ts, "/api/model/nope/prompt-optimization/latest")
    assert response.json()["error"]["code"] == "model_not_found"


async def test_ctx_size_of_a_model_not_running(launch: LaunchFn, tmp_path: Path) -> None:
    ts = await start(launch, tmp_path)
    assert (await get(ts, "/api/model/other/ctxsize")).json() == {
        "model": "other",
        "ctxSize": 32768,
        "source": "capabilities",
        "configured": 32768,
    }
    response = await post(ts, "/api/model/mini/ctxsize", {"ctxSize": 2048})
    assert response.json() == {
        "model": "m",
        "ctxSize": 2048,
        "source": "runtime",
        "configured": 4096,
        "restart": "not running",
    }
    assert await ts.running() == {}
    # Its next start takes the new size.
    assert (await post(ts, "/v1/chat/completions", chat("m"))).status_code == 200
    assert await served_ctx_size(ts) == 2048
    assert "--ctx-size 2048" in str((await ts.running())["m"]["cmd"])


async def test_idle_model_restarts_with_the_new_size(launch: LaunchFn, tmp_path: Path) -> None:
    ts = await start(launch, tmp_path)
    assert (await post(ts, "/v1/chat/completions", chat("m"))).status_code == 200
    old_pid = await ready_pid(ts)
    assert old_pid is not None and await served_ctx_size(ts) == 4096
    response = await post(ts, "/api/model/m/ctxsize", {"ctxSize": 8192})
    assert response.json()["restart"] == "now"

    async def restarted() -> bool:
        return (await ready_pid(ts)) not in (None, old_pid)

    await wait_until(restarted)
    assert "--ctx-size 8192" in str((await ts.running())["m"]["cmd"])
    assert await served_ctx_size(ts) == 8192
    # Cleared: back to the command's own size, again with a restart.
    new_pid = await ready_pid(ts)
    response = await post(ts, "/api/model/m/ctxsize", {"ctxSize": None})
    assert response.json() == {
        "model": "m",
        "ctxSize": 4096,
        "source": "cmd",
        "configured": 4096,
        "restart": "now",
    }

    async def restarted_again() -> bool:
        return (await ready_pid(ts)) not in (None, new_pid)

    await wait_until(restarted_again)
    assert await served_ctx_size(ts) == 4096


async def test_busy_model_restarts_once_its_request_is_done(
    launch: LaunchFn, tmp_path: Path
) -> None:
    ts = await start(launch, tmp_path, config(f"--tokens-per-second 8 --response-text '{WORDS}'"))
    assert (await post(ts, "/v1/chat/completions", chat("m"))).status_code == 200
    old_pid = await ready_pid(ts)
    text = ""
    async with (
        ts.client() as client,
        client.stream("POST", "/v1/chat/completions", json=chat("m", stream=True)) as stream,
    ):
        chunks = stream.aiter_text()
        text += await anext(chunks)
        response = await client.post("/api/model/m/ctxsize", json={"ctxSize": 1024})
        assert response.json()["restart"] == "when idle"
        running = (await ts.running())["m"]
        assert (running["pid"], running["in_flight"]) == (old_pid, 1)
        async for chunk in chunks:
            text += chunk
    assert text.rstrip().endswith("data: [DONE]")
    deltas = [
        json.loads(line.removeprefix("data: "))["choices"][0]["delta"].get("content") or ""
        for line in text.splitlines()
        if line.startswith("data: {")
    ]
    assert "".join(deltas).split() == WORDS.split()

    async def restarted() -> bool:
        return (await ready_pid(ts)) not in (None, old_pid)

    await wait_until(restarted)
    assert "--ctx-size 1024" in str((await ts.running())["m"]["cmd"])
    assert await served_ctx_size(ts) == 1024


async def test_new_size_and_a_moved_port_both_apply(launch: LaunchFn, tmp_path: Path) -> None:
    ts = await start(launch, tmp_path)
    assert (await post(ts, "/v1/chat/completions", chat("m"))).status_code == 200
    port = httpx.URL(str((await ts.running())["m"]["proxy"])).port
    assert (await post(ts, "/api/models/unload/m", {})).status_code == 200
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        response = await post(ts, "/api/model/m/ctxsize", {"ctxSize": 3072})
        assert response.json()["restart"] == "not running"
        assert (await post(ts, "/v1/chat/completions", chat("m"))).status_code == 200
        running = (await ts.running())["m"]
        assert httpx.URL(str(running["proxy"])).port != port
        assert f"--port {port}" not in str(running["cmd"])
        assert "--ctx-size 3072" in str(running["cmd"])
        assert await served_ctx_size(ts) == 3072


async def test_overrides_survive_a_restart(launch: LaunchFn, tmp_path: Path) -> None:
    first = await start(launch, tmp_path)
    await post(first, "/api/model/m/prompt-optimization", {"policy": "off"})
    await post(first, "/api/model/m/ctxsize", {"ctxSize": 16384})
    state = tmp_path / "s" / f"{first.config_path.stem}.state.json"
    assert json.loads(state.read_text()) == {
        "version": 1,
        "models": {"m": {"promptOptimization": "off", "ctxSize": 16384}},
    }
    first.process.send_signal(signal.SIGTERM)
    await first.process.wait()
    # The same config file and state dir again.
    again = await launch("", "--config", str(first.config_path), "--state-dir", str(tmp_path / "s"))
    policy = (await get(again, "/api/model/m/prompt-optimization")).json()
    assert (policy["policy"], policy["source"]) == ("off", "runtime")
    ctx = (await get(again, "/api/model/m/ctxsize")).json()
    assert (ctx["ctxSize"], ctx["source"]) == (16384, "runtime")
    assert (await post(again, "/v1/chat/completions", chat("m"))).status_code == 200
    assert await served_ctx_size(again) == 16384


async def test_unusable_state_dir_is_one_error(launch: LaunchFn, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    ts = await launch(config(), "--state-dir", str(tmp_path / "file" / "s"), wait=False)
    with trio.fail_after(15):
        assert await ts.process.wait() == 1
    await wait_until(lambda: any("--state-dir" in line for line in ts.stderr))
    (line,) = [line for line in ts.stderr if line.strip()]
    assert line.startswith(f"trioswap: --state-dir {tmp_path / 'file' / 's'} cannot be used")
