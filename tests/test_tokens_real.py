"""Against a real llama.cpp llama-server with SmolLM2-135M: the tokenizer built from the GGUF
gives llama-server's own token ids, calibration measures its chat template, and the estimate
over-counts its tokenizer on the text it is meant for."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import kill_group, wait_until
from trioswap.config.reader import load
from trioswap.optimizer import gguf_vocab
from trioswap.optimizer.tokens import Counters, TokenizerCounter, estimate_tokens
from trioswap.pipeline.wire import ConnectionPool

pytestmark = pytest.mark.real

CACHE = Path(os.environ.get("TRIOSWAP_CACHE", Path.home() / ".cache" / "trioswap"))
LLAMA_SERVER = CACHE / "bin" / "llama-server"
MODEL = CACHE / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
EXTENSIONS = {"timeout": {"connect": 5.0, "read": 30.0, "write": 30.0, "pool": None}}

PROSE = (
    "Hello, world! It's a test; we'll see what they've done. The quick brown fox jumps over "
    "the lazy dog, doesn't it?"
)
CODE = (
    "class Queue:\n    def __init__(self) -> None:\n        self.items: list[int] = []\n\n"
    "    def push(self, x: int) -> None:\n\tif x  >= 0:\n            self.items.append(x)\n"
)
DATA = json.dumps({"id": "call_1", "args": {"path": "/tmp/a b.txt", "n": [1, 22, 333]}}, indent=2)
NON_ASCII = "Grüße, naïve café! Привет мир. 你好世界 こんにちは 안녕하세요 😀👍🏽🎉 Ωμέγα"
CORPUS = [
    PROSE,
    CODE,
    DATA,
    NON_ASCII,
    json.dumps({"k": [1.5, -2, True, None]}, separators=(",", ":")),
    "Numbers: 1234567, 3.14159, 1,000,000, -42 and 2026-11-26T15:09:13Z",
    "    four spaces\n\n\n\ttab\r\nCRLF   trailing   \n \n",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    "<|im_start|>assistant\n",
    "x<|im_end|>y <|endoftext|>",
    "Ⅻ ½ ١٢٣ \u00a0nbsp\u2003em\u200bzero-width e\u0301 \u3000ideographic",
    "'s 'S 'll 'LL don't I'M you're",
    "",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def llama_server() -> AsyncIterator[str]:
    if not (LLAMA_SERVER.exists() and MODEL.exists()):
        pytest.fail(
            f"llama-server or the model is missing in {CACHE}: run scripts/install-llama-server"
        )
    port = free_port()
    process = await trio.lowlevel.open_process(
        [str(LLAMA_SERVER), "-m", str(MODEL), "-c", "2048", "--port", str(port), "-t", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    async def healthy() -> bool:
        assert process.returncode is None, f"llama-server exited with {process.returncode}"
        try:
            async with httpx.AsyncClient(base_url=url) as client:
                return (await client.get("/health")).status_code == 200
        except httpx.TransportError:
            return False

    try:
        await wait_until(healthy, timeout=60)
        yield url
    finally:
        kill_group(process.pid)
        with trio.CancelScope(shield=True):
            await process.wait()


async def server_ids(client: httpx.AsyncClient, text: str) -> list[int]:
    response = await client.post("/tokenize", json={"content": text, "add_special": False})
    response.raise_for_status()
    tokens: list[int] = response.json()["tokens"]
    return tokens


async def test_the_gguf_tokenizer_matches_llama_server(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    started = time.perf_counter()
    tokenizer = await trio.to_thread.run_sync(gguf_vocab.load_tokenizer, MODEL, cache)
    built_in = time.perf_counter() - started
    cached = gguf_vocab.cached_tokenizer_path(MODEL, cache)
    assert cached.exists()
    written = cached.stat().st_mtime_ns
    async with llama_server() as url, httpx.AsyncClient(base_url=url) as client:
        for text in CORPUS:
            expected = await server_ids(client, text)
            assert tokenizer.encode(text, add_special_tokens=False).ids == expected, text
    # The second start loads the cached tokenizer.json instead of building again.
    started = time.perf_counter()
    again = gguf_vocab.load_tokenizer(MODEL, cache)
    assert time.perf_counter() - started < max(built_in, 1.0)
    assert cached.stat().st_mtime_ns == written
    assert (
        again.encode(CODE, add_special_tokens=False).ids
        == tokenizer.encode(CODE, add_special_tokens=False).ids
    )
    assert gguf_vocab.context_length(MODEL) == 8192


async def test_calibration_measures_smollm2s_chat_template(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"models:\n  smol:\n    cmd: {LLAMA_SERVER} -m {MODEL} --port ${{PORT}}\n")
    model = load(config).models["smol"]
    counters = Counters(tmp_path / "cache")
    counter = await counters.counter(model)
    assert isinstance(counter, TokenizerCounter) and counter.source == "gguf"
    async with llama_server() as url, ConnectionPool() as pool:
        await counters.calibrate(model, pool, url, EXTENSIONS)
        # ChatML: <|im_start|>role\n … <|im_end|>\n is 5 or 6 tokens as the role is 1 or 2; the
        # request adds <|im_start|>assistant\n (no BOS for SmolLM2).
        assert 5 <= counter.per_message <= 6
        assert 0 <= counter.per_request <= 4
        # Counted as calibrated, a conversation's count is the server's within a token a message.
        messages = [
            {"role": "system", "content": PROSE},
            {"role": "user", "content": CODE},
            {"role": "assistant", "content": DATA},
            {"role": "user", "content": NON_ASCII},
        ]
        async with httpx.AsyncClient(base_url=url) as client:
            prompt = (await client.post("/apply-template", json={"messages": messages})).json()
            exact = len(await server_ids(client, prompt["prompt"]))
    counted = counter.per_request + sum(
        counter.per_message + counter.count(m["content"]) for m in messages
    )
    assert exact <= counted <= exact + len(messages)


def test_the_estimate_over_counts_smollm2(tmp_path: Path) -> None:
    tokenizer = gguf_vocab.load_tokenizer(MODEL, tmp_path / "cache")
    for text in (PROSE, CODE, DATA, NON_ASCII):
        assert estimate_tokens(text) >= len(tokenizer.encode(text, add_special_tokens=False))
