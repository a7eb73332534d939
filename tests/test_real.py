"""Against a real llama.cpp llama-server with a small real model (SmolLM2-135M).

`scripts/install-llama-server` puts both into $TRIOSWAP_CACHE (default ~/.cache/trioswap); CI
runs it before the tests. These tests use the shipped `config/smollm2.yaml` as it is, with only
the cache folder and startPort pointed at this run's.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import LaunchFn, Trioswap, pid_alive, random_start_port, wait_until
from trioswap.assets import data_folder

pytestmark = pytest.mark.real

CACHE = Path(os.environ.get("TRIOSWAP_CACHE", Path.home() / ".cache" / "trioswap"))
LLAMA_SERVER = CACHE / "bin" / "llama-server"
MODEL = CACHE / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture
def smollm2_config() -> str:
    if not (LLAMA_SERVER.exists() and MODEL.exists()):
        pytest.fail(
            f"llama-server or the model is missing in {CACHE}: run scripts/install-llama-server"
        )
    text = (data_folder("config") / "smollm2.yaml").read_text()
    text = text.replace("cache: ${env.HOME}/.cache/trioswap", f"cache: {CACHE}")
    return re.sub(r"(?m)^startPort: \d+", f"startPort: {random_start_port()}", text)


def chat(model: str, **extra: object) -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Name a color."}],
        "max_tokens": 8,
        "temperature": 0,
        **extra,
    }


async def direct_url(ts: Trioswap, model: str) -> str:
    return str((await ts.running())[model]["proxy"])


def sse_events(text: str) -> list[str]:
    assert text.endswith("\n\n"), "an event stream ends with a blank line"
    events = [line.removeprefix("data: ") for line in text.splitlines() if line]
    assert all(not line.startswith(("event:", "data:")) for line in events)
    return events


async def test_chat_through_trioswap_matches_direct(launch: LaunchFn, smollm2_config: str) -> None:
    ts = await launch(smollm2_config)
    async with ts.client() as client:
        proxied = await client.post("/v1/chat/completions", json=chat("smol"))
        assert proxied.status_code == 200, proxied.text
        async with httpx.AsyncClient(base_url=await direct_url(ts, "smollm2")) as direct_client:
            direct = await direct_client.post("/v1/chat/completions", json=chat("smol"))
    p, d = proxied.json(), direct.json()
    assert set(p) == set(d)
    assert p["object"] == "chat.completion"
    assert set(p["choices"][0]["message"]) == set(d["choices"][0]["message"])
    assert p["choices"][0]["message"]["content"]
    assert p["usage"]["completion_tokens"] > 0
    assert proxied.headers["content-type"] == direct.headers["content-type"]


async def test_streaming_through_trioswap_matches_direct(
    launch: LaunchFn, smollm2_config: str
) -> None:
    ts = await launch(smollm2_config)
    body = chat("smollm2", stream=True, stream_options={"include_usage": True})
    async with ts.client() as client:
        proxied = await client.post("/v1/chat/completions", json=body)
        async with httpx.AsyncClient(base_url=await direct_url(ts, "smollm2")) as direct_client:
            direct = await direct_client.post("/v1/chat/completions", json=body)
    assert proxied.headers["content-type"].startswith("text/event-stream")
    assert proxied.headers["x-accel-buffering"] == "no"
    shapes: list[list[str]] = []
    for response in (proxied, direct):
        events = sse_events(response.text)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        usage = [c["usage"] for c in chunks if c.get("usage")]
        assert usage and usage[-1]["completion_tokens"] > 0
        text = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
        assert text
        finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
        assert finish[-1] in ("stop", "length")
        shapes.append(sorted({key for c in chunks for key in c}))
    assert shapes[0] == shapes[1]


async def test_swap_between_real_models(launch: LaunchFn, smollm2_config: str) -> None:
    ts = await launch(smollm2_config)
    async with ts.client() as client:
        for model, ctx in (("smollm2", 2048), ("smollm2-8k", 8192), ("smol", 2048)):
            response = await client.post("/v1/chat/completions", json=chat(model))
            assert response.status_code == 200, response.text
            running = await ts.running()
            assert len(running) == 1
            (entry,) = running.values()
            assert entry["state"] == "ready"
            props = (await client.get(f"/upstream/{model}/props")).json()
            assert props["default_generation_settings"]["n_ctx"] == ctx


async def test_requests_wait_for_llama_server_health(launch: LaunchFn, smollm2_config: str) -> None:
    # llama-server answers /health with 503 while it loads; every request sent while it starts
    # must wait for 200 rather than see a 503.
    ts = await launch(smollm2_config)
    statuses: list[int] = []
    async with ts.client() as client:

        async def one() -> None:
            statuses.append(
                (await client.post("/v1/chat/completions", json=chat("smol"))).status_code
            )

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(one)
    assert statuses == [200, 200, 200]
    assert ts.count_output(r"model smollm2: started pid") == 1


async def test_upstream_passthrough_and_models(launch: LaunchFn, smollm2_config: str) -> None:
    ts = await launch(smollm2_config)
    async with ts.client() as client:
        upstream_models = (await client.get("/upstream/smollm2/v1/models")).json()
        assert upstream_models["data"][0]["id"] == "smollm2"
        ours = (await client.get("/v1/models")).json()
        assert [m["id"] for m in ours["data"]] == ["smollm2", "smollm2-8k"]
        tokens = (
            await client.post("/upstream/smol/tokenize", json={"content": "hello world"})
        ).json()
        assert len(tokens["tokens"]) >= 2


async def test_sigterm_leaves_no_llama_server(launch: LaunchFn, smollm2_config: str) -> None:
    ts = await launch(smollm2_config)
    async with ts.client() as client:
        assert (await client.post("/v1/chat/completions", json=chat("smol"))).status_code == 200
    pid = (await ts.running())["smollm2"]["pid"]
    assert isinstance(pid, int) and pid_alive(pid)
    ts.process.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        assert await ts.process.wait() == 0
    await wait_until(lambda: not pid_alive(pid), timeout=5)


def short_trims(config: str, *keys: str) -> str:
    """The config with a trim cutting to 30 % of the budget: what llama-server then reads on one
    core takes seconds, not a quarter of a minute."""
    top = "\n".join((*keys, "optimizer: {target: 0.3}", "healthCheckTimeout: 60"))
    return config.replace("healthCheckTimeout: 60", top)


def long_session(units: int) -> list[dict[str, object]]:
    """A coding agent's transcript: the task, `units` tool calls with long outputs, a question."""
    messages: list[dict[str, object]] = [
        {"role": "system", "content": "You are a coding agent. Answer in one short sentence."},
        {"role": "user", "content": "Fix the failing test in src/app.py."},
    ]
    for i in range(units):
        call = {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": "read_file", "arguments": json.dumps({"path": f"src/m{i}.py"})},
        }
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        code = "\n".join(f"def f{i}_{j}(x):\n    return x * {j}\n" for j in range(60))
        messages.append({"role": "tool", "tool_call_id": f"call_{i}", "content": code})
    messages.append({"role": "user", "content": "What is the task? Answer briefly."})
    return messages


@pytest.mark.parametrize("policy", ["always", "off"])
async def test_a_transcript_five_times_the_context_gets_an_answer(
    launch: LaunchFn, smollm2_config: str, policy: str
) -> None:
    ts = await launch(short_trims(smollm2_config, f"promptOptimization: '{policy}'"))
    body = {"model": "smollm2", "messages": long_session(14), "max_tokens": 16, "temperature": 0}
    async with ts.client() as client:
        response = await client.post("/v1/chat/completions", json=body)
    if policy == "off":
        # What every request got before the optimizer: llama-server refuses it.
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["type"] == "exceed_context_size_error"
        assert error["n_prompt_tokens"] > 5 * error["n_ctx"] == 5 * 2048
        return
    assert response.status_code == 200, response.text
    report = response.headers["x-trioswap-prompt-optimized"]
    before, after = map(int, report.split("; ")[1].removesuffix(" tokens").split("->"))
    assert before > 5 * 2048 > 5 * after
    usage = response.json()["usage"]
    assert usage["prompt_tokens"] < 2048
    assert response.json()["choices"][0]["message"]["content"]


async def test_anthropic_messages_five_times_the_context_get_an_answer(
    launch: LaunchFn, smollm2_config: str
) -> None:
    ts = await launch(short_trims(smollm2_config))
    messages: list[dict[str, object]] = [{"role": "user", "content": "Fix the failing test."}]
    for i in range(14):
        use = {
            "type": "tool_use",
            "id": f"toolu_{i}",
            "name": "Read",
            "input": {"file_path": f"m{i}.py"},
        }
        code = "\n".join(f"def f{i}_{j}(x):\n    return x * {j}\n" for j in range(60))
        result = {"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": code}
        messages += [{"role": "assistant", "content": [use]}, {"role": "user", "content": [result]}]
    messages.append({"role": "assistant", "content": "I read them all."})
    messages.append({"role": "user", "content": "What is the task?"})
    body = {"model": "smollm2", "max_tokens": 32000, "system": "Be brief.", "messages": messages}
    async with ts.client() as client:
        response = await client.post("/v1/messages", json={**body, "max_tokens": 16})
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "message"
    assert response.headers["x-trioswap-prompt-optimized"].startswith("limit_only; ")
