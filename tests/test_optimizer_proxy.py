"""The prompt optimizer through trioswap: long transcripts in the three API families reach a
responder with a small context (`--ctx-size 2048 --enforce-ctx`, which refuses prompts over it as
llama-server does), and what it was sent (`/debug/requests`) is checked."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import RESPONDER, LaunchFn, random_start_port

OPTIMIZED = "x-trioswap-prompt-optimized"
SUMMARY = "SUMMARY-OF-THE-DROPPED-TURNS"


def config(model: str = "", top: str = "", served: str = "chat", ctx: int = 2048) -> str:
    return f"""
startPort: {random_start_port()}
{top}
models:
  m:
    cmd: >-
      {RESPONDER} --port ${{PORT}} --model-id m --ctx-size {ctx} --enforce-ctx
      --apis {served} --response-text "{SUMMARY} done"
{model}
"""


def words(tag: str, n: int) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def chat_transcript(units: int, size: int = 300) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "SYSTEM-PROMPT be brief"},
        {"role": "user", "content": "THE-TASK fix the bug"},
    ]
    for i in range(units):
        call = {"id": f"call{i}", "type": "function", "function": {"name": "Bash"}}
        call["function"]["arguments"] = json.dumps({"command": f"run {i}"})
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append(
            {"role": "tool", "tool_call_id": f"call{i}", "content": words(f"o{i}_", size)}
        )
    messages.append({"role": "user", "content": "LAST-TURN now finish"})
    return messages


def anthropic_transcript(units: int, size: int = 300) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "THE-TASK fix the bug"}]
    for i in range(units):
        use = {
            "type": "tool_use",
            "id": f"toolu_{i}",
            "name": "Read",
            "input": {"file_path": f"/f{i}"},
        }
        messages.append({"role": "assistant", "content": [use]})
        result = {
            "type": "tool_result",
            "tool_use_id": f"toolu_{i}",
            "content": words(f"o{i}_", size),
        }
        messages.append({"role": "user", "content": [result]})
    messages.append({"role": "assistant", "content": [{"type": "text", "text": "looked"}]})
    messages.append({"role": "user", "content": "LAST-TURN now finish"})
    return messages


def responses_input(units: int, size: int = 300) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [{"role": "user", "content": "THE-TASK fix the bug"}]
    for i in range(units):
        items.append(
            {
                "type": "function_call",
                "call_id": f"fc_{i}",
                "name": "shell",
                "arguments": json.dumps({"command": ["ls", f"d{i}"]}),
            }
        )
        items.append(
            {"type": "function_call_output", "call_id": f"fc_{i}", "output": words(f"o{i}_", size)}
        )
    items.append({"role": "user", "content": "LAST-TURN now finish"})
    return items


async def forwarded(client: httpx.AsyncClient) -> dict[str, Any]:
    requests = (await client.get("/upstream/m/debug/requests")).json()
    posts = [r for r in requests if r["path"] != "/debug/requests"]
    return json.loads(posts[-1]["body"])


def chat_pairs_ok(messages: list[dict[str, Any]]) -> bool:
    calls = {c["id"] for m in messages for c in m.get("tool_calls") or ()}
    results = {m["tool_call_id"] for m in messages if m["role"] == "tool"}
    return calls == results


async def test_a_chat_transcript_five_times_too_long_is_answered(launch: LaunchFn) -> None:
    ts = await launch(config())
    body = {
        "model": "m",
        "messages": chat_transcript(40),
        "max_tokens": 20,
        "top_p": 0.25,
        "stop": ["STOP"],
        "response_format": {"type": "text"},
        "cache_prompt": True,
    }
    async with ts.client() as client:
        response = await client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        report = response.headers[OPTIMIZED]
        assert report.startswith("limit_only; ")
        before, after = map(int, report.split("; ")[1].removesuffix(" tokens").split("->"))
        assert after < before
        sent = await forwarded(client)
    assert {k: v for k, v in sent.items() if k != "messages"} == {
        k: v for k, v in body.items() if k != "messages"
    }
    messages = sent["messages"]
    assert messages[0] == body["messages"][0]
    assert messages[1]["content"].startswith("THE-TASK fix the bug")
    assert messages[-1] == body["messages"][-1]
    assert chat_pairs_ok(messages)
    # The newest unit is kept whole (its output at most cut in its middle).
    assert messages[-3]["tool_calls"][0]["id"] == "call39"
    assert response.json()["usage"]["prompt_tokens"] < 2048
    # What it saved is counted in /metrics, and the activity record says what was done.
    async with ts.client() as client:
        metrics = (await client.get("/metrics")).text
        activity = (await client.get("/api/metrics/activity")).json()["data"]
    saved = 'trioswap_optimizer_saved_tokens_total{model="m",policy="limit_only"} '
    assert f"{saved}{float(before - after)}" in metrics
    chats = [a for a in activity if a["req_path"] == "/v1/chat/completions"]
    assert [a["optimizer"] for a in chats] == [report]


async def test_the_kept_prefix_is_the_same_on_the_next_turn(launch: LaunchFn) -> None:
    ts = await launch(config())
    messages = chat_transcript(40)
    sent: list[list[dict[str, Any]]] = []
    async with ts.client() as client:
        for turn in range(3):
            response = await client.post(
                "/v1/chat/completions", json={"model": "m", "messages": messages, "max_tokens": 20}
            )
            assert response.status_code == 200, response.text
            sent.append((await forwarded(client))["messages"])
            messages = [
                *messages,
                {"role": "assistant", "content": f"answer {turn}"},
                {"role": "user", "content": f"follow-up {turn}"},
            ]
    # Each turn's prompt starts with exactly the previous one: the server's cache keeps hitting.
    assert sent[1][: len(sent[0])] == sent[0]
    assert sent[2][: len(sent[1])] == sent[1]


async def test_anthropic_native_and_translated_are_optimized(launch: LaunchFn) -> None:
    for served, apis in (("chat,anthropic", "native"), ("chat", "translate")):
        ts = await launch(config(model=f"    apis: {{anthropic: {apis}}}", served=served))
        system = [{"type": "text", "text": "SYSTEM-PROMPT", "cache_control": {"type": "ephemeral"}}]
        body = {
            "model": "m",
            "max_tokens": 32000,
            "system": system,
            "messages": anthropic_transcript(30),
            "temperature": 0.5,
        }
        async with ts.client() as client:
            response = await client.post("/v1/messages", json=body)
            assert response.status_code == 200, response.text
            assert response.headers[OPTIMIZED].startswith("limit_only; ")
            sent = await forwarded(client)
        if apis == "native":
            assert sent["system"] == system
            assert sent["temperature"] == 0.5
            blocks = [
                b for m in sent["messages"] if isinstance(m["content"], list) for b in m["content"]
            ]
            uses = {b["id"] for b in blocks if b["type"] == "tool_use"}
            results = {b["tool_use_id"] for b in blocks if b["type"] == "tool_result"}
            assert uses == results and "toolu_29" in uses
            assert sent["messages"][-1] == body["messages"][-1]
        else:
            assert sent["messages"][0] == {"role": "system", "content": "SYSTEM-PROMPT"}
            assert chat_pairs_ok(sent["messages"])
            assert sent["messages"][-1] == {"role": "user", "content": "LAST-TURN now finish"}


async def test_responses_requests_are_optimized(launch: LaunchFn) -> None:
    ts = await launch(config(model="    apis: {responses: translate}"))
    body = {
        "model": "m",
        "instructions": "SYSTEM-PROMPT",
        "input": responses_input(30),
        "max_output_tokens": 50,
    }
    async with ts.client() as client:
        response = await client.post("/v1/responses", json=body)
        assert response.status_code == 200, response.text
        assert response.headers[OPTIMIZED].startswith("limit_only; ")
        sent = await forwarded(client)
    assert sent["messages"][0] == {"role": "system", "content": "SYSTEM-PROMPT"}
    assert chat_pairs_ok(sent["messages"])
    assert "fc_29" in {c["id"] for m in sent["messages"] for c in m.get("tool_calls") or ()}


async def test_strict_error_refuses_in_the_clients_family(launch: LaunchFn) -> None:
    ts = await launch(config(model="    truncationMode: strict_error"))
    async with ts.client() as client:
        response = await client.post(
            "/v1/messages",
            json={"model": "m", "max_tokens": 10, "messages": anthropic_transcript(30)},
        )
        assert response.status_code == 400
        error = response.json()
        assert error["type"] == "error"
        assert error["error"]["type"] == "invalid_request_error"
        assert error["error"]["message"].startswith("prompt is too long: ")
        small = await client.post(
            "/v1/messages",
            json={"model": "m", "max_tokens": 10, "messages": anthropic_transcript(1, 10)},
        )
        assert small.status_code == 200, small.text
        assert OPTIMIZED not in small.headers


async def test_policy_off_and_changed_at_runtime(launch: LaunchFn, tmp_path: Any) -> None:
    ts = await launch(config(top="promptOptimization: 'off'"), "--state-dir", str(tmp_path))
    body = {"model": "m", "messages": chat_transcript(40), "max_tokens": 20}
    async with ts.client() as client:
        response = await client.post("/v1/chat/completions", json=body)
        # Untouched: the responder refuses it for its size, as llama-server would.
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "exceed_context_size_error"
        assert OPTIMIZED not in response.headers
        changed = await client.post("/api/model/m/prompt-optimization", json={"policy": "always"})
        assert changed.status_code == 200, changed.text
        response = await client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        assert response.headers[OPTIMIZED].startswith("always; ")
        latest = (await client.get("/api/model/m/prompt-optimization/latest")).json()
    assert latest["policy"] == "always"
    assert latest["applied"] is True
    assert latest["tokens"]["window"] == 2048
    assert latest["tokens"]["windowSource"] == "--ctx-size"
    assert latest["tokens"]["after"] <= latest["tokens"]["budget"] < latest["tokens"]["before"]
    assert {a["kind"] for a in latest["actions"]} >= {"dropped"}
    assert latest["request"]["messages"] == body["messages"]
    assert len(latest["optimized"]["messages"]) < len(body["messages"])


async def test_a_server_that_counts_more_gets_a_smaller_prompt_once(launch: LaunchFn) -> None:
    # One-letter words: trioswap's estimate (3 bytes a token) counts 2 characters a token, the
    # responder one word (2 characters) a token... so "x x x" is counted 1.5x by the server.
    ts = await launch(config())
    messages = [{"role": "user", "content": "THE-TASK fix the bug"}]
    for i in range(8):
        call = {"id": f"c{i}", "type": "function", "function": {"name": "Bash", "arguments": "{}"}}
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": f"c{i}", "content": "x " * 300})
    messages.append({"role": "user", "content": "LAST-TURN now finish"})
    async with ts.client() as client:
        response = await client.post(
            "/v1/chat/completions", json={"model": "m", "messages": messages, "max_tokens": 20}
        )
        assert response.status_code == 200, response.text
        assert OPTIMIZED in response.headers
        requests = (await client.get("/upstream/m/debug/requests")).json()
    sent = [json.loads(r["body"]) for r in requests if r["path"] == "/v1/chat/completions"]
    assert len(sent) == 2
    assert len(sent[1]["messages"]) < len(sent[0]["messages"]) == len(messages)
    await ts.wait_for_output(r"its server counted \d+ prompt tokens for a 2048-token context")


async def test_llm_assisted_summarizes_with_the_running_model(launch: LaunchFn) -> None:
    ts = await launch(config(top="promptOptimization: llm_assisted"))
    async with ts.client() as client:
        # The model is not running yet: no summary (it is never started for one).
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": chat_transcript(40), "max_tokens": 20},
        )
        assert response.status_code == 200, response.text
        first = await forwarded(client)
        assert SUMMARY not in json.dumps(first)
        # Running now: a new session's trim is summarized by it, once.
        messages = chat_transcript(41)
        messages[1] = {"role": "user", "content": "ANOTHER-TASK"}
        response = await client.post(
            "/v1/chat/completions", json={"model": "m", "messages": messages, "max_tokens": 20}
        )
        assert response.status_code == 200, response.text
        requests = (await client.get("/upstream/m/debug/requests")).json()
    bodies = [json.loads(r["body"]) for r in requests if r["path"] == "/v1/chat/completions"]
    summary_requests = [b for b in bodies if b.get("max_tokens") == 600]
    assert summary_requests, "the model was asked for a summary"
    task = bodies[-1]["messages"][1]["content"]
    assert task.startswith("ANOTHER-TASK") and SUMMARY in task


@pytest.mark.parametrize("path", ["/v1/embeddings", "/v1/completions"])
async def test_other_routes_pass_untouched(launch: LaunchFn, path: str) -> None:
    ts = await launch(config())
    body = {"model": "m", "input": "hello", "prompt": "hello", "max_tokens": 2}
    async with ts.client() as client:
        response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    assert OPTIMIZED not in response.headers
