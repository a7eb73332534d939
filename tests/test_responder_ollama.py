"""The responder's --ollama mode, a real process on port 0: the shapes of Ollama's listing routes,
the catalogue from a JSON file or generated, /api/show's tokenizer metadata from a GGUF file, and
the OpenAI routes serving only its models, in the families the Ollama version serves."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import gguf
import httpx
import pytest
import trio
from tokenizers import Tokenizer, models

from tests.conftest import responders
from tests.test_tokens import SPECIALS, write_gguf
from trioswap.responder.ollama import catalogue, families

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
# A vocabulary small enough to compare whole: two merges, one special token.
VOCAB = ["a", "b", "c", "ab", "abc", "<|im_end|>"]
MERGES = [("a", "b"), ("ab", "c")]
TOKENIZER_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")
# Go's router's answer for a path without a route.
GIN_NOT_FOUND = "404 page not found"

Serve = Callable[..., str]


@pytest.fixture(scope="module")
def serve() -> Iterator[Serve]:
    """`serve(*args)`: the URL of an --ollama responder (a plain one with `ollama=False`) started
    with these arguments, once for the module."""
    with responders() as start:

        def url(*args: str, ollama: bool = True) -> str:
            return start(*(OLLAMA if ollama else RESPONDER), *args)

        yield url


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


async def show(
    client: httpx.AsyncClient, name: str, key: str = "model", **extra: object
) -> dict[str, Any]:
    response = await client.post("/api/show", json={key: name, **extra})
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
    assert info["tokenizer.ggml.pre"] == "llama-bpe"
    assert list(info) == sorted(info)  # as Go writes a map
    assert qwen["model_info"]["qwen2.context_length"] == 32768
    assert qwen["model_info"]["tokenizer.ggml.pre"] == "qwen2"


async def test_show_refuses_unknown_and_missing_models(serve: Serve) -> None:
    async with http(serve()) as client:
        unknown = await client.post("/api/show", json={"model": "nope:1b"})
        missing = await client.post("/api/show", json={})
        garbled = await client.post("/api/show", content=b"{")
        verbose = await client.post("/api/show", json={"model": LLAMA, "verbose": "yes"})
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "model 'nope:1b' not found"}
    assert missing.status_code == 400 and missing.json() == {"error": "model is required"}
    assert garbled.status_code == 400 and isinstance(garbled.json()["error"], str)
    assert verbose.status_code == 400 and isinstance(verbose.json()["error"], str)


# -- /api/show's tokenizer metadata -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    vocab = {text: index for index, text in enumerate(VOCAB)}
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_gguf(path, Tokenizer(models.BPE(vocab=vocab, merges=MERGES)), pre="qwen2")
    return path


@pytest.fixture
def gguf_catalogue(tiny_gguf: Path, tmp_path: Path) -> Path:
    """A catalogue of a model with a copy of the tiny GGUF, one with a broken GGUF, one without."""
    shutil.copy(tiny_gguf, tmp_path / "copy.gguf")
    (tmp_path / "broken.gguf").write_bytes(b"not a gguf file")
    entries = [
        {"name": "tiny", "family": "qwen2", "gguf": "copy.gguf"},  # relative to the list
        {"name": "broken", "gguf": str(tmp_path / "broken.gguf")},
        {"name": "plain"},
    ]
    path = tmp_path / "models.json"
    path.write_text(json.dumps(entries))
    return path


async def test_show_reports_a_gguf_files_tokenizer_verbose_in_full(
    serve: Serve, gguf_catalogue: Path
) -> None:
    async with http(serve("--ollama-models", str(gguf_catalogue))) as client:
        brief = (await show(client, "tiny"))["model_info"]
        (gguf_catalogue.parent / "copy.gguf").unlink()  # read once, then kept
        full = (await show(client, "tiny", verbose=True))["model_info"]
        explicit = (await show(client, "tiny", verbose=False))["model_info"]
        plain = (await show(client, "plain"))["model_info"]
        plain_verbose = (await show(client, "plain", verbose=True))["model_info"]
        broken = await client.post("/api/show", json={"model": "broken"})
    assert full["tokenizer.ggml.tokens"] == VOCAB
    assert full["tokenizer.ggml.merges"] == ["a b", "ab c"]
    control, normal = gguf.TokenType.CONTROL, gguf.TokenType.NORMAL
    assert full["tokenizer.ggml.token_type"] == [
        control if text in SPECIALS else normal for text in VOCAB
    ]
    # Without verbose, Ollama elides the arrays: null, the rest as in full.
    assert explicit == brief
    assert {key: brief.pop(key) for key in TOKENIZER_ARRAYS} == dict.fromkeys(TOKENIZER_ARRAYS)
    assert brief == {key: value for key, value in full.items() if key not in TOKENIZER_ARRAYS}
    assert (brief["tokenizer.ggml.model"], brief["tokenizer.ggml.pre"]) == ("gpt2", "qwen2")
    # The rest of model_info is the catalogue's.
    assert (full["general.architecture"], full["qwen2.context_length"]) == ("qwen2", 131072)
    # Without a GGUF file there are no arrays to show, verbose or not.
    assert plain == plain_verbose
    assert {key for key in plain if key.startswith("tokenizer.")} == {
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
    }
    assert broken.status_code == 500 and "broken.gguf" in broken.json()["error"]


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


# -- the families each version serves ------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "served"),
    [
        ("0.12.6", {"chat"}),
        ("0.13.2", {"chat"}),
        ("0.13.3", {"chat", "responses"}),
        ("0.13.10", {"chat", "responses"}),
        ("0.14.0-rc1", {"chat", "responses", "anthropic"}),
        ("1.0.0", {"chat", "responses", "anthropic"}),
        # A build from source, or no version at all: the newest.
        ("0.0.0", {"chat", "responses", "anthropic"}),
        ("unknown", {"chat", "responses", "anthropic"}),
    ],
)
def test_families_follow_the_version(version: str, served: set[str]) -> None:
    assert families(version) == served


async def statuses(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
    responses = await client.post("/v1/responses", json={"model": LLAMA, "input": "hi"})
    messages = await client.post(
        "/v1/messages", json={"model": LLAMA, "max_tokens": 5, "messages": MESSAGES}
    )
    return responses, messages


def assert_gin_404(response: httpx.Response) -> None:
    assert response.status_code == 404
    assert response.text == GIN_NOT_FOUND
    assert response.headers["content-type"] == "text/plain"


@pytest.mark.parametrize(
    ("version", "responses_served", "messages_served"),
    [("0.12.6", False, False), ("0.13.3", True, False), ("0.14.0", True, True)],
)
async def test_the_version_decides_the_families_served(
    serve: Serve, version: str, responses_served: bool, messages_served: bool
) -> None:
    async with http(serve("--ollama-version", version)) as client:
        responses, messages = await statuses(client)
        count = await client.post("/v1/messages/count_tokens", json={"messages": MESSAGES})
        chat = await client.post("/v1/chat/completions", json={"model": LLAMA, "messages": []})
    assert chat.status_code == 200
    for response, served in ((responses, responses_served), (messages, messages_served)):
        if served:
            assert response.status_code == 200 and response.json()["model"] == LLAMA
        else:
            assert_gin_404(response)
    if not messages_served:
        assert_gin_404(count)


async def test_explicit_apis_win_over_the_version(serve: Serve) -> None:
    async with http(serve("--ollama-version", "0.14.0", "--apis", "chat,anthropic")) as client:
        responses, messages = await statuses(client)
    assert messages.status_code == 200
    assert_gin_404(responses)


async def test_explicit_unserved_status_wins_over_ollamas_404(serve: Serve) -> None:
    async with http(serve("--unserved-status", "404")) as client:
        responses, _ = await statuses(client)
        unknown = await client.get("/api/nothing")
    assert responses.status_code == 404
    assert responses.json()["error"]["message"] == "File Not Found"
    assert_gin_404(unknown)  # a path of no family is Ollama's still


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
        ('[{"name": "a", "gguf": 1}]', "gguf must be a JSON str"),
        ('[{"name": "a", "gguf": "missing.gguf"}]', "missing.gguf' is not a file"),
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
