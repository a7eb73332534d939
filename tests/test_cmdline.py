"""Reading llama-server's flags from a model's command, and rewriting its context size."""

from __future__ import annotations

import pytest

from trioswap.config.cmdline import (
    context_per_request,
    ctx_size,
    model_file,
    with_ctx_size,
)


def words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


@pytest.mark.parametrize(
    ("cmd", "env", "expected"),
    [
        ("llama-server -m /m/a.gguf --port 1", {}, "/m/a.gguf"),
        ("llama-server --model /m/a.gguf", {}, "/m/a.gguf"),
        ("llama-server --model=/m/a.gguf", {}, "/m/a.gguf"),
        ("llama-server -m /m/a.gguf -m /m/b.gguf", {}, "/m/b.gguf"),
        ("llama-server --port 1", {"LLAMA_ARG_MODEL": "/m/e.gguf"}, "/m/e.gguf"),
        ("llama-server -m", {}, None),
        ("python -m trioswap.responder --port 1", {}, None),
        ("llama-server -m /m/A-00001-of-00002.GGUF", {}, "/m/A-00001-of-00002.GGUF"),
        ("vllm serve org/model", {}, None),
    ],
)
def test_model_file(cmd: str, env: dict[str, str], expected: str | None) -> None:
    assert model_file(words(cmd), env) == expected


@pytest.mark.parametrize(
    ("cmd", "env", "expected"),
    [
        ("srv -c 4096", {}, 4096),
        ("srv --ctx-size 8192", {}, 8192),
        ("srv --ctx-size=2048", {}, 2048),
        ("srv -c 0", {}, None),
        ("srv -c lots", {}, None),
        ("srv", {"LLAMA_ARG_CTX_SIZE": "1024"}, 1024),
        ("srv -c 512", {"LLAMA_ARG_CTX_SIZE": "1024"}, 512),
        ("srv", {}, None),
    ],
)
def test_ctx_size(cmd: str, env: dict[str, str], expected: int | None) -> None:
    assert ctx_size(words(cmd), env) == expected


@pytest.mark.parametrize(
    ("cmd", "env", "expected"),
    [
        ("srv", {}, 8192),
        ("srv -np 4", {}, 2048),
        ("srv --parallel=2", {}, 4096),
        ("srv -np -1", {}, 8192),
        ("srv -np 4 -kvu", {}, 8192),
        ("srv -np 4 -kvu --no-kv-unified", {}, 2048),
        ("srv -np 4 --kv-unified-per-slot 1000", {}, 1000),
        ("srv", {"LLAMA_ARG_N_PARALLEL": "2"}, 4096),
    ],
)
def test_context_per_request(cmd: str, env: dict[str, str], expected: int) -> None:
    assert context_per_request(8192, words(cmd), env) == expected


@pytest.mark.parametrize(
    ("cmd", "expected"),
    [
        ("srv -m a.gguf", "srv -m a.gguf --ctx-size 999"),
        ("srv -c 4096 --port 1", "srv -c 999 --port 1"),
        ("srv --ctx-size=4096", "srv --ctx-size=999"),
        ("srv -c 1 --ctx-size 2", "srv -c 999 --ctx-size 999"),
    ],
)
def test_with_ctx_size(cmd: str, expected: str) -> None:
    rewritten = with_ctx_size(words(cmd), 999)
    assert rewritten == words(expected)
    assert ctx_size(rewritten) == 999
