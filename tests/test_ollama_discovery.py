"""Ollama discovery through trioswap, against the responder's --ollama mode as a real process:
listing, context sources, routing with the name rewritten, API families by Ollama's version, the
optimizer's window and tokenizer, Ollama going away and coming back, OLLAMA_HOST, 500 models,
on-demand reads, local models winning, and the control routes of Ollama's models."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Collection, Mapping, Sized
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import trio
from tokenizers import Tokenizer

from tests import test_responder_ollama, test_tokens
from tests.conftest import RESPONDER, LaunchFn, Trioswap, kill_group, random_start_port, wait_until
from tests.test_responder_ollama import Serve
from tests.test_tokens import write_gguf

# Their module-scoped fixtures: fake Ollamas shared by the tests here that leave them as they
# found them, and a trained byte-level BPE tokenizer.
serve = test_responder_ollama.serve
trained = test_tokens.trained

FAKE = (sys.executable, "-m", "trioswap.responder", "--model-id", "ollama", "--ollama")
LLAMA = "llama3.2:3b"
QWEN = "qwen2.5-coder:7b"
OPTIMIZED = "x-trioswap-prompt-optimized"
TRANSLATED = "x-trioswap-translated"
MESSAGES = [{"role": "user", "content": "hi"}]
NOT_REACHABLE = "ollama at {} is not reachable"
SHADOWED = "is also a model or alias in the config"


@dataclass(frozen=True)
class Fake:
    """A fake Ollama (the responder's --ollama mode) and what it received."""

    url: str

    @property
    def port(self) -> int:
        port = httpx.URL(self.url).port
        assert port is not None
        return port

    async def requests(self, path: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            recorded: list[dict[str, Any]] = (await client.get("/debug/requests")).json()
        return [request for request in recorded if request["path"] == path]

    async def models(self, path: str) -> list[str]:
        """The `model` of each request it received on `path`."""
        return [json.loads(request["body"])["model"] for request in await self.requests(path)]

    async def clear(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            (await client.delete("/debug/requests")).raise_for_status()


@asynccontextmanager
async def fake_ollama(*args: str, port: int = 0) -> AsyncIterator[Fake]:
    """A fake Ollama of this test alone, killed with its process group on leaving."""
    process = await trio.lowlevel.open_process(
        [*FAKE, "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert process.stdout is not None
    try:
        async with trio.open_nursery() as nursery:
            # test_tokens' reader: the URL the responder reports, then its output drained.
            url = await nursery.start(test_tokens._listening, process.stdout)
            yield Fake(url)
            nursery.cancel_scope.cancel()
    finally:
        kill_group(process.pid)
        with trio.CancelScope(shield=True):
            await process.wait()


def shared(serve: Serve, *args: str) -> Fake:
    return Fake(serve(*args))


def config(endpoint: str | None, refresh: str = "1", models: str = "", top: str = "") -> str:
    """A config reading Ollama at `endpoint` (None: no `ollama` key) every `refresh`, with these
    `models` (none by default: Ollama's alone make a config)."""
    key = "" if endpoint is None else f"ollama:\n  endpoint: {endpoint}\n  refresh: {refresh}\n"
    return f"startPort: {random_start_port()}\n{top}{key}{models}"


async def start(
    launch: LaunchFn, tmp_path: Path, text: str, env: Mapping[str, str] | None = None
) -> Trioswap:
    """trioswap on `text`, with no Ollama variables but `env`'s and a tokenizer cache of its own."""
    base = {"OLLAMA_HOST": "", "OLLAMA_CONTEXT_LENGTH": "", "XDG_CACHE_HOME": str(tmp_path)}
    return await launch(text, env={**base, **(env or {})})


async def listing(trioswap: Trioswap) -> dict[str, dict[str, Any]]:
    """trioswap's /v1/models entries by id."""
    async with trioswap.client() as client:
        response = await client.get("/v1/models")
    response.raise_for_status()
    return {entry["id"]: entry for entry in response.json()["data"]}


async def ollama_ids(trioswap: Trioswap) -> set[str]:
    return {model for model in await listing(trioswap) if model.startswith("ollama/")}


async def source_of(trioswap: Trioswap, model: str) -> str | None:
    entry = (await listing(trioswap)).get(model)
    return None if entry is None else str(entry["meta"]["trioswap"]["contextSource"])


async def chat(trioswap: Trioswap, model: str, **extra: Any) -> httpx.Response:
    async with trioswap.client() as client:
        return await client.post(
            "/v1/chat/completions", json={"model": model, "messages": MESSAGES}, **extra
        )


async def snapshot(trioswap: Trioswap, model: str) -> dict[str, Any]:
    async with trioswap.client() as client:
        response = await client.get(f"/api/model/{model}/prompt-optimization/latest")
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()["tokens"]
    return tokens


# Conditions for wait_until, on what an awaitable gives.


async def _is(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def _contains(found: Awaitable[Collection[object]], item: object) -> bool:
    return item in await found


async def _at_least(found: Awaitable[Sized], size: int) -> bool:
    return len(await found) >= size


async def _status_code(response: Awaitable[httpx.Response], code: int) -> bool:
    return (await response).status_code == code


async def _status(trioswap: Trioswap, model: str) -> str:
    return str((await listing(trioswap))[model]["status"]["value"])


def long_chat(model: str, chars: int = 60_000) -> dict[str, Any]:
    """A chat of distinct turns, `chars` characters in all: far over an 8k-token window."""
    messages: list[dict[str, str]] = [{"role": "system", "content": "be brief"}]
    turn = 0
    while sum(len(message["content"]) for message in messages) < chars:
        role = "user" if turn % 2 == 0 else "assistant"
        text = " ".join(f"t{turn}w{i}" for i in range(100))
        messages.append({"role": role, "content": text})
        turn += 1
    messages.append({"role": "user", "content": "LAST-TURN now answer"})
    return {"model": model, "messages": messages}


# -- discovery and listing ----------------------------------------------------------------------


async def test_models_are_listed_with_their_context_and_status(
    launch: LaunchFn, tmp_path: Path
) -> None:
    async with fake_ollama() as fake:
        trioswap = await start(launch, tmp_path, config(fake.url))
        llama, qwen = f"ollama/{LLAMA}", f"ollama/{QWEN}"
        # The context of num_ctx once /api/show is read, in the background after the listing.
        await wait_until(lambda: _is(source_of(trioswap, llama), "ollama num_ctx"))
        models = await listing(trioswap)
        entry = models[llama]
        assert {key: entry[key] for key in ("owned_by", "name", "context_length")} == {
            "owned_by": "ollama",
            "name": LLAMA,
            "context_length": 8192,
        }
        assert entry["meta"]["n_ctx"] == 8192
        assert entry["status"] == {"value": "unloaded"}
        internal = entry["meta"]["trioswap"]
        assert {key: internal[key] for key in internal if key not in ("digest", "modifiedAt")} == {
            "type": "ollama",
            "external": True,
            "readOnly": True,
            "ollamaName": LLAMA,
            "size": 2019393189,
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameterSize": "3.2B",
            "quantization": "Q4_K_M",
            "contextSource": "ollama num_ctx",
        }
        assert len(internal["digest"]) == 64 and internal["modifiedAt"]
        assert models[qwen]["context_length"] == models[qwen]["meta"]["n_ctx"] == 4096
        assert models[qwen]["meta"]["trioswap"]["contextSource"] == "ollama default"
        assert models[qwen]["meta"]["trioswap"]["family"] == "qwen2"
        assert await trioswap.running() == {}

        assert (await chat(trioswap, llama)).status_code == 200
        # Loaded from the next read of /api/ps on.
        await wait_until(lambda: _is(_status(trioswap, llama), "loaded"), timeout=10)
        assert (await listing(trioswap))[qwen]["status"] == {"value": "unloaded"}
        running = await trioswap.running()
        assert list(running) == [llama]
        assert {
            key: running[llama][key] for key in ("state", "external", "ctxSize", "ctxSource")
        } == {
            "state": "ready",
            "external": "ollama",
            "ctxSize": 8192,
            "ctxSource": "ollama num_ctx",
        }


# -- routing -------------------------------------------------------------------------------------


async def test_requests_reach_ollama_with_its_name(
    launch: LaunchFn, tmp_path: Path, serve: Serve
) -> None:
    fake = shared(serve)
    trioswap = await start(launch, tmp_path, config(fake.url))
    model = f"ollama/{LLAMA}"
    await fake.clear()
    async with trioswap.client() as client:
        plain = await client.post(
            "/v1/chat/completions", json={"model": model, "messages": MESSAGES}
        )
        async with client.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": model, "messages": MESSAGES, "stream": True},
        ) as streamed:
            events = [line async for line in streamed.aiter_lines() if line.startswith("data:")]
        text = await client.post("/v1/completions", json={"model": model, "prompt": "hi"})
        embed = await client.post("/v1/embeddings", json={"model": model, "input": "hi"})
    assert plain.status_code == streamed.status_code == text.status_code == embed.status_code == 200
    assert plain.json()["choices"][0]["message"]["content"]
    assert events[-1] == "data: [DONE]" and len(events) > 2
    assert len(embed.json()["data"]) == 1
    assert await fake.models("/v1/chat/completions") == [LLAMA, LLAMA]
    assert await fake.models("/v1/completions") == [LLAMA]
    assert await fake.models("/v1/embeddings") == [LLAMA]
    # A name Ollama does not serve: a 404 that says where trioswap looked.
    unknown = await chat(trioswap, "ollama/nope")
    assert unknown.status_code == 404
    assert fake.url in unknown.json()["error"]["message"]


@pytest.fixture(scope="module")
def catalogue(trained: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalogue of a model named without a tag (so `:latest`) and one with a GGUF's
    tokenizer (test_tokens' trained one), which verbose /api/show hands out."""
    folder = tmp_path_factory.mktemp("catalogue")
    write_gguf(folder / "vocab.gguf", trained)
    path = folder / "models.json"
    entries = [{"name": "smollm2"}, {"name": "vocab:1b", "family": "qwen2", "gguf": "vocab.gguf"}]
    path.write_text(json.dumps(entries))
    return path


async def test_a_name_without_tag_means_latest(
    launch: LaunchFn, tmp_path: Path, serve: Serve, catalogue: Path
) -> None:
    fake = shared(serve, "--ollama-models", str(catalogue))
    trioswap = await start(launch, tmp_path, config(fake.url))
    await wait_until(lambda: _contains(ollama_ids(trioswap), "ollama/smollm2:latest"))
    await fake.clear()
    response = await chat(trioswap, "ollama/smollm2")
    assert response.status_code == 200, response.text
    assert await fake.models("/v1/chat/completions") == ["smollm2:latest"]


# -- API families by Ollama's version ------------------------------------------------------------


@pytest.mark.parametrize(("version", "native"), [("0.12.6", False), ("0.14.0", True)])
async def test_messages_and_responses_go_native_from_their_version(
    launch: LaunchFn, tmp_path: Path, serve: Serve, version: str, native: bool
) -> None:
    fake = shared(serve, "--ollama-version", version)
    trioswap = await start(launch, tmp_path, config(fake.url))
    model = f"ollama/{LLAMA}"
    await fake.clear()
    async with trioswap.client() as client:
        messages = await client.post(
            "/v1/messages", json={"model": model, "max_tokens": 16, "messages": MESSAGES}
        )
        responses = await client.post("/v1/responses", json={"model": model, "input": "hi"})
        count = await client.post(
            "/v1/messages/count_tokens", json={"model": model, "messages": MESSAGES}
        )
    assert messages.status_code == responses.status_code == count.status_code == 200
    assert messages.json()["type"] == "message" and messages.json()["content"]
    assert responses.json()["object"] == "response" and responses.json()["output"]
    assert count.json()["input_tokens"] > 0
    if native:
        assert TRANSLATED not in messages.headers and TRANSLATED not in responses.headers
        assert await fake.models("/v1/messages") == [LLAMA]
        assert await fake.models("/v1/responses") == [LLAMA]
        assert await fake.models("/v1/chat/completions") == []
    else:
        assert messages.headers[TRANSLATED] == "anthropic->chat"
        assert responses.headers[TRANSLATED].startswith("responses->")
        assert await fake.models("/v1/chat/completions") == [LLAMA, LLAMA]
        assert await fake.requests("/v1/messages") == await fake.requests("/v1/responses") == []
    assert await fake.requests("/v1/messages/count_tokens") == []
    # The official SDKs, natively or translated.
    async with openai.AsyncOpenAI(base_url=f"{trioswap.url}/v1", api_key="unused") as client:
        completion = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}]
        )
    assert completion.choices[0].message.content
    async with anthropic.AsyncAnthropic(base_url=trioswap.url, api_key="unused") as client:
        message = await client.messages.create(
            model=model, max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    assert message.content and message.content[0].type == "text" and message.content[0].text


# -- the optimizer -------------------------------------------------------------------------------


async def test_a_long_chat_is_trimmed_to_num_ctx_unless_the_policy_is_off(
    launch: LaunchFn, tmp_path: Path, serve: Serve
) -> None:
    fake = shared(serve)
    trioswap = await start(launch, tmp_path, config(fake.url))
    body = long_chat(f"ollama/{LLAMA}")
    await fake.clear()
    async with trioswap.client() as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert OPTIMIZED in response.headers
    tokens = await snapshot(trioswap, f"ollama/{LLAMA}")
    assert (tokens["window"], tokens["windowSource"], tokens["counter"]) == (
        8192,
        "ollama num_ctx",
        "estimate",
    )
    assert tokens["after"] <= tokens["budget"] < 8192 < tokens["before"]
    [received] = await fake.requests("/v1/chat/completions")
    assert len(received["body"]) < len(json.dumps(body)) // 2
    sent = json.loads(received["body"])
    assert sent["model"] == LLAMA and sent["messages"][-1]["content"] == "LAST-TURN now answer"

    # The policy is settable for Ollama's models too: turned off, the next one is sent whole.
    path = f"/api/model/ollama/{LLAMA}/prompt-optimization"
    async with trioswap.client() as client:
        assert (await client.get(path)).json()["policy"] == "limit_only"
        turned = await client.post(path, json={"policy": "off"})
        await fake.clear()
        response = await client.post("/v1/chat/completions", json=body)
    assert turned.status_code == 200 and turned.json()["policy"] == "off"
    assert response.status_code == 200 and OPTIMIZED not in response.headers
    [received] = await fake.requests("/v1/chat/completions")
    assert json.loads(received["body"])["messages"] == body["messages"]


async def test_the_window_is_ollama_context_length_then_what_api_ps_says(
    launch: LaunchFn, tmp_path: Path
) -> None:
    model = f"ollama/{QWEN}"
    async with fake_ollama("--ollama-default-ctx", "6144") as fake:
        env = {"OLLAMA_CONTEXT_LENGTH": "16384"}
        trioswap = await start(launch, tmp_path, config(fake.url), env=env)
        await wait_until(lambda: _is(source_of(trioswap, model), "OLLAMA_CONTEXT_LENGTH"))
        assert (await chat(trioswap, model)).status_code == 200
        tokens = await snapshot(trioswap, model)
        assert (tokens["window"], tokens["windowSource"]) == (16384, "OLLAMA_CONTEXT_LENGTH")
        # The request loaded it; the next read of /api/ps says with what context.
        await wait_until(lambda: _is(source_of(trioswap, model), "ollama /api/ps"), timeout=10)
        assert (await chat(trioswap, model)).status_code == 200
        tokens = await snapshot(trioswap, model)
        assert (tokens["window"], tokens["windowSource"]) == (6144, "ollama /api/ps")
        assert (await listing(trioswap))[model]["context_length"] == 6144


async def test_the_tokenizer_comes_from_ollamas_metadata(
    launch: LaunchFn, tmp_path: Path, serve: Serve, catalogue: Path
) -> None:
    fake = shared(serve, "--ollama-models", str(catalogue))
    trioswap = await start(launch, tmp_path, config(fake.url))
    response = await chat(trioswap, "ollama/vocab:1b")
    assert response.status_code == 200, response.text
    tokens = await snapshot(trioswap, "ollama/vocab:1b")
    assert (tokens["counter"], tokens["window"], tokens["windowSource"]) == (
        "vocabulary",
        4096,
        "ollama default",
    )
    # The vocabulary came from a verbose /api/show.
    shows = [json.loads(request["body"]) for request in await fake.requests("/api/show")]
    assert {"model": "vocab:1b", "verbose": True} in shows


# -- Ollama going away and coming back ----------------------------------------------------------


@asynccontextmanager
async def dropping(port: int) -> AsyncIterator[list[int]]:
    """A listener on `port` that closes each connection at once, as a dying server may: the
    list counts the connections, so the reads trioswap tried."""
    connections: list[int] = []
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")

    async def drop(stream: trio.SocketStream) -> None:
        connections.append(1)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, drop, listeners)
        yield connections
        nursery.cancel_scope.cancel()


async def test_ollama_going_away_and_coming_back(launch: LaunchFn, tmp_path: Path) -> None:
    model = f"ollama/{LLAMA}"
    async with fake_ollama() as fake:
        port, url = fake.port, fake.url
        trioswap = await start(launch, tmp_path, config(url))
        await wait_until(lambda: _contains(ollama_ids(trioswap), model))
    up = f"ollama 0.12.6 at {url}: 2 models"
    await trioswap.wait_for_output(up)
    # Gone: its models leave the listing, and requests for them get a 502 that says why.
    await wait_until(lambda: _is(ollama_ids(trioswap), set()), timeout=10)
    await trioswap.wait_for_output(NOT_REACHABLE.format(url))
    response = await chat(trioswap, model)
    assert response.status_code == 502
    assert f"Ollama at {url} is not reachable" in response.text
    # Several reads later (connections to a port that drops them), still one warning.
    async with dropping(port) as connections:
        await wait_until(lambda: len(connections) >= 2, timeout=10)
    assert trioswap.count_output(NOT_REACHABLE.format(url)) == 1
    assert (await chat(trioswap, model)).status_code == 502
    # Back on the same port: listed again, logged once more, served.
    async with fake_ollama(port=port):
        await wait_until(lambda: _contains(ollama_ids(trioswap), model), timeout=10)
        assert (await chat(trioswap, model)).status_code == 200
        await wait_until(lambda: trioswap.count_output(up) == 2)
    assert trioswap.count_output(up) == 2
    assert trioswap.count_output(NOT_REACHABLE.format(url)) == 1


# -- where Ollama is -----------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["127.0.0.1:{port}", ":{port}", "http://127.0.0.1:{port}"])
async def test_ollama_host_alone_turns_discovery_on(
    launch: LaunchFn, tmp_path: Path, serve: Serve, form: str
) -> None:
    fake = shared(serve)
    host = form.format(port=fake.port)
    trioswap = await start(launch, tmp_path, config(None), env={"OLLAMA_HOST": host})
    await wait_until(
        lambda: _is(ollama_ids(trioswap), {f"ollama/{LLAMA}", f"ollama/{QWEN}"}), timeout=10
    )
    assert (await chat(trioswap, f"ollama/{LLAMA}")).status_code == 200


async def test_a_config_of_ollama_alone_serves_its_models(
    launch: LaunchFn, tmp_path: Path, serve: Serve
) -> None:
    fake = shared(serve)
    trioswap = await start(launch, tmp_path, config(fake.url))
    await wait_until(lambda: _contains(ollama_ids(trioswap), f"ollama/{LLAMA}"))
    assert (await chat(trioswap, f"ollama/{LLAMA}")).status_code == 200


async def test_enabled_false_wins_over_ollama_host(
    launch: LaunchFn, tmp_path: Path, serve: Serve
) -> None:
    fake = shared(serve)
    # Discovery off, so the config needs a model of its own.
    local = f"models:\n  local:\n    cmd: {RESPONDER} --port ${{PORT}} --model-id local\n"
    text = config(None, top="ollama:\n  enabled: false\n", models=local)
    trioswap = await start(launch, tmp_path, text, env={"OLLAMA_HOST": fake.url})
    assert await ollama_ids(trioswap) == set()
    assert (await chat(trioswap, f"ollama/{LLAMA}")).status_code == 404
    assert trioswap.count_output("discovering models") == 0


# -- many models, and reads on demand ------------------------------------------------------------


async def test_five_hundred_models(launch: LaunchFn, tmp_path: Path) -> None:
    async with fake_ollama("--ollama-models", "generate:500") as fake:
        trioswap = await start(launch, tmp_path, config(fake.url))
        await wait_until(lambda: _at_least(ollama_ids(trioswap), 500), timeout=10)
        ids = await ollama_ids(trioswap)
        assert ids == {f"ollama/model-{i:04d}:latest" for i in range(500)}
        response = await chat(trioswap, "ollama/model-0250:latest")
        assert response.status_code == 200, response.text
        assert (await fake.models("/v1/chat/completions")) == ["model-0250:latest"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_an_unknown_id_reads_ollama_at_once(launch: LaunchFn, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    trioswap = await start(launch, tmp_path, config(url, refresh="1h"))
    await trioswap.wait_for_output(NOT_REACHABLE.format(url))
    async with fake_ollama(port=port) as fake:
        # Reads on demand are at most a second apart: the first request may come too early.
        await wait_until(lambda: _status_code(chat(trioswap, f"ollama/{LLAMA}"), 200), timeout=5)
        # Unknown ids read again, but not more than once a second.
        tags = len(await fake.requests("/api/tags"))
        started = trio.current_time()
        for _ in range(10):
            assert (await chat(trioswap, "ollama/nope")).status_code == 404
        elapsed = trio.current_time() - started
        assert len(await fake.requests("/api/tags")) - tags <= elapsed + 1


# -- local models win ----------------------------------------------------------------------------


async def test_a_local_model_named_like_ollamas_wins(
    launch: LaunchFn, tmp_path: Path, serve: Serve
) -> None:
    fake = shared(serve)
    local = f"""models:
  ollama/{LLAMA}:
    cmd: {RESPONDER} --port ${{PORT}} --model-id local
    aliases: [ollama/{QWEN}]
"""
    await fake.clear()
    trioswap = await start(launch, tmp_path, config(fake.url, models=local))
    for model in (LLAMA, QWEN):
        response = await chat(trioswap, f"ollama/{model}")
        assert response.status_code == 200, response.text
        assert "Hello from local" in response.json()["choices"][0]["message"]["content"]
    assert await fake.requests("/v1/chat/completions") == []
    # Warned once per name, however many reads later; listed once, as the config's.
    await wait_until(lambda: _at_least(fake.requests("/api/tags"), 3), timeout=10)
    assert await ollama_ids(trioswap) == {f"ollama/{LLAMA}"}
    assert (await listing(trioswap))[f"ollama/{LLAMA}"]["owned_by"] != "ollama"
    assert trioswap.count_output(SHADOWED) == 2
    assert trioswap.count_output(f"ollama/{LLAMA} {SHADOWED}") == 1


# -- control routes ------------------------------------------------------------------------------


async def test_ctxsize_is_read_only(launch: LaunchFn, tmp_path: Path, serve: Serve) -> None:
    fake = shared(serve)
    trioswap = await start(launch, tmp_path, config(fake.url))
    path = f"/api/model/ollama/{LLAMA}/ctxsize"
    await wait_until(lambda: _is(source_of(trioswap, f"ollama/{LLAMA}"), "ollama num_ctx"))
    async with trioswap.client() as client:
        read = await client.get(path)
        write = await client.post(path, json={"ctxSize": 16384})
        after = await client.get(path)
    assert read.status_code == 200
    assert {key: read.json()[key] for key in ("ctxSize", "source", "readOnly")} == {
        "ctxSize": 8192,
        "source": "ollama num_ctx",
        "readOnly": True,
    }
    assert write.status_code == 400 and "num_ctx" in write.text
    assert after.json() == read.json()


async def test_credentials_are_not_sent_to_ollama(
    launch: LaunchFn, tmp_path: Path, serve: Serve
) -> None:
    fake = shared(serve)
    trioswap = await start(launch, tmp_path, config(fake.url, top="apiKeys: [sekrit]\n"))
    await fake.clear()
    assert (await chat(trioswap, f"ollama/{LLAMA}")).status_code == 401
    for header in ({"authorization": "Bearer sekrit"}, {"x-api-key": "sekrit"}):
        assert (await chat(trioswap, f"ollama/{LLAMA}", headers=header)).status_code == 200
    received = await fake.requests("/v1/chat/completions")
    assert len(received) == 2
    for request in received:
        assert not {"authorization", "x-api-key"} & set(request["headers"])
