"""The responder's --ollama mode, a real process on port 0: the shapes of Ollama's listing routes,
the catalogue from a JSON file or generated, and the OpenAI routes serving only its models."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from trioswap.responder.ollama import catalogue

RESPONDER = (sys.executable, "-m", "trioswap.responder", "--port", "0", "--model-id", "ollama")
OLLAMA = (*RESPONDER, "--ollama")
LLAMA = "llama3.2:3b"
QWEN = "qwen2.5-coder:7b"
# RFC 3339 with nanoseconds and a numeric UTC offset, as Ollama writes times.
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}[+-]\d\d:\d\d")
DIGEST = re.compile(r"[0-9a-f]{64}")
DETAILS_KEYS = {
    "parent_model",
    "format",
    "family",
    "families",
    "parameter_size",
    "quantization_level",
}
MESSAGES = [{"role": "user", "content": "hi"}]
# One responder for the options that do not change what the other tests see.
OPTIONS = ("--ollama-version", "0.13.0", "--apis", "chat,anthropic,responses")

Serve = Callable[..., str]


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def serve() -> Iterator[Serve]:
    """`serve(*args)`: the URL of an --ollama responder (a plain one with `ollama=False`) started
    with these arguments, once for the module."""
    started: dict[tuple[str, ...], tuple[subprocess.Popen[str], str]] = {}

    def url(*args: str, ollama: bool = True) -> str:
        args = (*(OLLAMA if ollama else RESPONDER), *args)
        if args not in started:
            process = subprocess.Popen(
                args, stdout=subprocess.PIPE, text=True, start_new_session=True
            )
            assert process.stdout is not None
            line = process.stdout.readline()  # the first line says where it listens
            process.stdout.close()  # the responder shrugs off a closed stdout
            match = re.search(r"listening on (http://\S+)", line)
            assert match, f"responder {args} did not start: {line!r}"
            started[args] = (process, match[1])
        return started[args][1]

    try:
        yield url
    finally:
        for process, _ in started.values():
            kill_group(process.pid)
            process.wait()


@contextlib.asynccontextmanager
async def http(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client


def check_entry(entry: dict[str, Any]) -> None:
    """The fields /api/tags and /api/ps share."""
    assert entry["name"] == entry["model"]
    assert isinstance(entry["size"], int) and entry["size"] > 0
    assert DIGEST.fullmatch(entry["digest"])
    check_details(entry["details"])


def check_details(details: dict[str, Any]) -> None:
    assert set(details) == DETAILS_KEYS
    assert details["format"] == "gguf"
    assert details["families"] == [details["family"]]
    assert re.fullmatch(r"\d+(\.\d+)?[KMBT]", details["parameter_size"])
    assert all(isinstance(details[key], str) for key in DETAILS_KEYS - {"families"})


def parameters(text: str) -> list[tuple[str, str]]:
    return [(line.split(None, 1)[0], line.split(None, 1)[1]) for line in text.splitlines()]


async def show(client: httpx.AsyncClient, name: str, key: str = "model") -> dict[str, Any]:
    response = await client.post("/api/show", json={key: name})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# -- the listing routes -------------------------------------------------------------------------


async def test_version_default_and_chosen(serve: Serve) -> None:
    async with http(serve()) as client:
        assert (await client.get("/api/version")).json() == {"version": "0.12.6"}
    async with http(serve(*OPTIONS)) as client:
        assert (await client.get("/api/version")).json() == {"version": "0.13.0"}


async def test_tags_lists_the_default_catalogue(serve: Serve) -> None:
    async with http(serve()) as client:
        response = await client.get("/api/tags")
    assert response.status_code == 200
    models = response.json()["models"]
    assert [model["name"] for model in models] == [LLAMA, QWEN]
    for model in models:
        assert set(model) == {"name", "model", "modified_at", "size", "digest", "details"}
        check_entry(model)
        assert TIMESTAMP.fullmatch(model["modified_at"])
        datetime.fromisoformat(model["modified_at"][:26] + model["modified_at"][29:])
    assert len({model["digest"] for model in models}) == 2
    assert models[1]["details"]["family"] == "qwen2"


async def test_show_answers_parameters_model_info_and_capabilities(serve: Serve) -> None:
    async with http(serve()) as client:
        llama = await show(client, LLAMA)
        qwen = await show(client, QWEN)
        legacy = await show(client, LLAMA, key="name")
    assert legacy == llama
    assert set(llama) == {
        "modelfile",
        "parameters",
        "template",
        "details",
        "model_info",
        "capabilities",
        "modified_at",
    }
    assert ("num_ctx", "8192") in parameters(llama["parameters"])
    assert ("stop", '"<|im_end|>"') in parameters(llama["parameters"])
    assert "num_ctx" not in dict(parameters(qwen["parameters"]))
    assert "PARAMETER num_ctx 8192" in llama["modelfile"]
    assert isinstance(llama["template"], str)
    check_details(llama["details"])
    assert TIMESTAMP.fullmatch(llama["modified_at"])
    assert "tools" in llama["capabilities"] and "completion" in llama["capabilities"]
    info = llama["model_info"]
    assert info["general.architecture"] == "llama"
    assert info["general.parameter_count"] == 3_200_000_000
    assert info["llama.context_length"] == 131072
    assert info["tokenizer.ggml.model"] == "gpt2"
    assert qwen["model_info"]["qwen2.context_length"] == 32768


async def test_show_refuses_unknown_and_missing_models(serve: Serve) -> None:
    async with http(serve()) as client:
        unknown = await client.post("/api/show", json={"model": "nope:1b"})
        missing = await client.post("/api/show", json={})
        garbled = await client.post("/api/show", content=b"{")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "model 'nope:1b' not found"}
    assert missing.status_code == 400 and missing.json() == {"error": "model is required"}
    assert garbled.status_code == 400 and isinstance(garbled.json()["error"], str)


async def test_ps_lists_models_once_a_request_names_them(serve: Serve) -> None:
    async with http(serve("--ollama-default-ctx", "2048")) as client:
        assert (await client.get("/api/ps")).json() == {"models": []}
        await client.post("/v1/chat/completions", json={"model": QWEN, "messages": MESSAGES})
        await client.post("/v1/embeddings", json={"model": LLAMA, "input": "hi"})
        await client.post("/v1/chat/completions", json={"model": "nope", "messages": MESSAGES})
        models = (await client.get("/api/ps")).json()["models"]
    assert [model["name"] for model in models] == [LLAMA, QWEN]  # most recently used first
    for model in models:
        assert set(model) == {
            "name",
            "model",
            "size",
            "digest",
            "details",
            "expires_at",
            "size_vram",
            "context_length",
        }
        check_entry(model)
        assert model["size_vram"] == model["size"]
        assert TIMESTAMP.fullmatch(model["expires_at"])
        expires = datetime.fromisoformat(model["expires_at"][:26] + model["expires_at"][29:])
        assert expires > datetime.now().astimezone()
    # Its num_ctx parameter, or the default for a model without one.
    assert [model["context_length"] for model in models] == [8192, 2048]


async def test_v1_models_lists_the_catalogue(serve: Serve) -> None:
    async with http(serve()) as client:
        body = (await client.get("/v1/models")).json()
    assert body["object"] == "list"
    assert [model["id"] for model in body["data"]] == [LLAMA, QWEN]
    assert all(isinstance(model["created"], int) for model in body["data"])


# -- the OpenAI routes --------------------------------------------------------------------------


async def test_openai_routes_answer_with_the_requested_model(serve: Serve) -> None:
    async with http(serve()) as client:
        await client.delete("/debug/requests")
        chat = await client.post("/v1/chat/completions", json={"model": QWEN, "messages": MESSAGES})
        text = await client.post("/v1/completions", json={"model": LLAMA, "prompt": "hi"})
        embed = await client.post("/v1/embeddings", json={"model": QWEN, "input": ["a", "b"]})
        recorded = (await client.get("/debug/requests")).json()
    assert chat.status_code == text.status_code == embed.status_code == 200
    assert chat.json()["model"] == QWEN
    assert chat.json()["choices"][0]["message"]["content"]
    assert text.json()["model"] == LLAMA
    assert embed.json()["model"] == QWEN and len(embed.json()["data"]) == 2
    assert [(r["path"], json.loads(r["body"])["model"]) for r in recorded] == [
        ("/v1/chat/completions", QWEN),
        ("/v1/completions", LLAMA),
        ("/v1/embeddings", QWEN),
    ]


async def test_openai_routes_refuse_unknown_models_as_ollama_does(serve: Serve) -> None:
    async with http(serve()) as client:
        await client.delete("/debug/requests")
        unknown = await client.post("/v1/chat/completions", json={"model": "x", "messages": []})
        embed = await client.post("/v1/embeddings", json={"model": "x", "input": "hi"})
        missing = await client.post("/v1/completions", json={"prompt": "hi"})
        recorded = (await client.get("/debug/requests")).json()
    assert unknown.status_code == embed.status_code == 404
    assert unknown.json() == {
        "error": {
            "message": 'model "x" not found, try pulling it first',
            "type": "not_found_error",
            "param": None,
            "code": None,
        }
    }
    assert embed.json() == unknown.json()
    assert missing.status_code == 400
    assert missing.json()["error"]["message"] == "model is required"
    # Refused requests are recorded too: a test can see what the proxy sent.
    assert [r["path"] for r in recorded] == [
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/completions",
    ]


async def test_a_name_without_tag_means_latest(serve: Serve) -> None:
    async with http(serve("--ollama-models", "generate:500")) as client:
        chat = await client.post(
            "/v1/chat/completions", json={"model": "model-0001", "messages": MESSAGES}
        )
        shown = await show(client, "model-0002")
    assert chat.status_code == 200 and chat.json()["model"] == "model-0001"
    assert shown["details"]["family"] == "llama"


async def test_other_families_check_the_model_too(serve: Serve) -> None:
    async with http(serve(*OPTIONS)) as client:
        messages = await client.post(
            "/v1/messages", json={"model": LLAMA, "max_tokens": 5, "messages": MESSAGES}
        )
        responses = await client.post("/v1/responses", json={"model": "x", "input": "hi"})
    assert messages.status_code == 200 and messages.json()["model"] == LLAMA
    assert responses.status_code == 404


async def test_without_ollama_the_routes_are_absent(serve: Serve) -> None:
    async with http(serve(ollama=False)) as client:
        tags = await client.get("/api/tags")
        chat = await client.post("/v1/chat/completions", json={"model": "anything"})
    assert tags.status_code == 404
    assert chat.status_code == 200 and chat.json()["model"] == "anything"


# -- the catalogue ------------------------------------------------------------------------------


async def test_catalogue_from_a_json_file(serve: Serve, tmp_path: Path) -> None:
    path = tmp_path / "models.json"
    entries = [
        {
            "name": "gemma3:4b",
            "family": "gemma3",
            "parameter_size": "4.3B",
            "quantization_level": "Q4_0",
            "size": 3338801804,
            "num_ctx": 16384,
            "context_length": 131072,
            "capabilities": ["completion", "vision"],
        },
        {"name": "smollm2"},
    ]
    path.write_text(json.dumps(entries))
    async with http(serve("--ollama-models", str(path))) as client:
        tags = (await client.get("/api/tags")).json()["models"]
        gemma = await show(client, "gemma3:4b")
        smol = await show(client, "smollm2:latest")
        await client.post("/v1/chat/completions", json={"model": "gemma3:4b", "messages": []})
        ps = (await client.get("/api/ps")).json()["models"]
    assert [model["name"] for model in tags] == ["gemma3:4b", "smollm2:latest"]
    assert tags[0]["size"] == 3338801804
    assert tags[0]["details"]["quantization_level"] == "Q4_0"
    for model in tags:
        check_entry(model)
    assert gemma["capabilities"] == ["completion", "vision"]
    assert gemma["model_info"]["gemma3.context_length"] == 131072
    assert gemma["model_info"]["general.parameter_count"] == 4_300_000_000
    assert ("num_ctx", "16384") in parameters(gemma["parameters"])
    assert "num_ctx" not in dict(parameters(smol["parameters"]))
    assert [(model["name"], model["context_length"]) for model in ps] == [("gemma3:4b", 16384)]


async def test_generated_catalogue_of_500(serve: Serve) -> None:
    async with http(serve("--ollama-models", "generate:500")) as client:
        models = (await client.get("/api/tags")).json()["models"]
        last = await show(client, "model-0499:latest")
    assert len(models) == 500
    assert models[0]["name"] == "model-0000:latest"
    assert models[-1]["name"] == "model-0499:latest"
    assert len({model["digest"] for model in models}) == 500
    for model in models:
        check_entry(model)
    assert last["model_info"]["general.architecture"] == "llama"


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("{", "cannot read the model list"),
        ('{"name": "a"}', "must be a JSON list"),
        ('[{"family": "llama"}]', "non-empty string `name`"),
        ('[{"name": "a", "colour": "red"}]', "unknown key 'colour'"),
        ('[{"name": "a", "num_ctx": "8k"}]', "num_ctx must be a JSON int"),
        ('[{"name": "a", "size": true}]', "size must be a JSON int"),
        ('[{"name": "a", "capabilities": [1]}]', "capabilities must be a list of strings"),
        ('[{"name": "a", "parameter_size": "big"}]', "parameter_size 'big'"),
        ('[{"name": "a"}, {"name": "a:latest"}]', "must be unique"),
    ],
)
def test_bad_catalogues_say_what_is_wrong(tmp_path: Path, content: str, error: str) -> None:
    path = tmp_path / "models.json"
    path.write_text(content)
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(error)):
        catalogue(str(path))


def test_generate_needs_a_count() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="generate:N"):
        catalogue("generate:many")


async def test_a_bad_catalogue_stops_the_responder_at_start(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    result = await trio.run_process(
        [*OLLAMA, "--ollama-models", str(missing)], capture_stderr=True, check=False
    )
    assert result.returncode == 2
    assert f"cannot read the model list {missing}" in result.stderr.decode()
