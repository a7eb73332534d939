"""Token counters without a real model: a small byte-level BPE tokenizer trained here, the same
vocabulary written as a GGUF file (which gguf_vocab must read back into identical ids), the
estimate, the count cache, the fallbacks between sources, and the server counter and calibration
against a real responder process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import gguf
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tests.conftest import ModelFn, kill_group
from trioswap.config.resolved import ModelConfig
from trioswap.optimizer import gguf_vocab
from trioswap.optimizer.tokens import (
    DEFAULT_PER_MESSAGE,
    DEFAULT_PER_REQUEST,
    INLINE_CHARS,
    CacheStatistics,
    Counters,
    ServerCounter,
    TokenizerCounter,
    estimate_tokens,
)
from trioswap.pipeline.wire import ConnectionPool

EXTENSIONS = {"timeout": {"connect": 5.0, "read": 10.0, "write": 10.0, "pool": None}}
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

PROSE = (
    "The proxy starts the model a request names, and stops another one when both do not fit. "
    "It's simple: we'll keep what they've asked for, and the rest waits its turn."
)
CODE = textwrap.dedent(
    """\
    def fit(messages: list[dict[str, str]], budget: int) -> list[dict[str, str]]:
        kept = []
        for message in reversed(messages):
            if budget <= 0:
                break
            budget -= len(message["content"]) // 4
            kept.append(message)
        return kept[::-1]
    """
)
DATA = json.dumps(
    {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 128},
    indent=2,
)
NON_ASCII = "Grüße aus München! Ça va très bien. Привет, мир. 你好\uff0c世界。こんにちは 😀👍"
SAMPLES = {"prose": PROSE, "code": CODE, "json": DATA, "non-ascii": NON_ASCII}


@pytest.fixture(scope="module")
def trained() -> Tokenizer:
    """A GPT-2 style tokenizer (byte-level, GPT-2's regex) with a small vocabulary."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([*SAMPLES.values()] * 20, trainer)
    return tokenizer


def write_gguf(path: Path, tokenizer: Tokenizer, pre: str = "gpt-2") -> None:
    """The tokenizer as a GGUF file's metadata, as convert_hf_to_gguf.py writes it."""
    model = json.loads(tokenizer.to_str())["model"]
    vocab = sorted(model["vocab"].items(), key=lambda item: item[1])
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(8192)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list([text for text, _ in vocab])
    writer.add_token_types(
        [gguf.TokenType.CONTROL if text in SPECIALS else gguf.TokenType.NORMAL for text, _ in vocab]
    )
    writer.add_token_merges([" ".join(pair) for pair in model["merges"]])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def model_file(trained: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny.gguf"
    write_gguf(path, trained)
    return path


@pytest.fixture(scope="module")
def from_gguf(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return gguf_vocab.load_tokenizer(model_file, tmp_path_factory.mktemp("cache"))


def ids(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


def test_the_gguf_tokenizer_gives_the_original_ids(
    trained: Tokenizer, from_gguf: Tokenizer
) -> None:
    chat = "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n"
    for text in [*SAMPLES.values(), chat, "  spaced   out\n\n\tend  ", "x<|im_end|>y"]:
        assert ids(from_gguf, text) == ids(trained, text), text
    assert ids(from_gguf, chat).count(trained.token_to_id("<|im_start|>")) == 2


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60) | st.text(alphabet=" \n\t'sl0123456789aZé😀.,", max_size=60))
def test_the_gguf_tokenizer_agrees_on_any_text(
    trained: Tokenizer, from_gguf: Tokenizer, text: str
) -> None:
    assert ids(from_gguf, text) == ids(trained, text)


def test_the_gguf_context_length(model_file: Path) -> None:
    assert gguf_vocab.context_length(model_file) == 8192


def test_unsupported_vocabularies_say_why(trained: Tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "odd.gguf"
    write_gguf(path, trained, pre="some-future-pre")
    with pytest.raises(gguf_vocab.UnsupportedVocab, match="some-future-pre"):
        gguf_vocab.load_tokenizer(path, tmp_path / "cache")
    meta = gguf_vocab.read_metadata(path)
    assert gguf.Keys.Tokenizer.LIST not in meta  # arrays are read only when asked for
    with pytest.raises(gguf_vocab.UnsupportedVocab, match="'llama'"):
        gguf_vocab.build_tokenizer({**meta, gguf.Keys.Tokenizer.MODEL: "llama"})


def test_a_built_tokenizer_is_cached_by_file_identity(model_file: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    gguf_vocab.load_tokenizer(model_file, cache)
    cached = gguf_vocab.cached_tokenizer_path(model_file, cache)
    assert list(cache.iterdir()) == [cached]
    written = cached.stat().st_mtime_ns
    gguf_vocab.load_tokenizer(model_file, cache)
    assert cached.stat().st_mtime_ns == written
    # A corrupt cache entry is rebuilt.
    cached.write_text("{")
    assert len(ids(gguf_vocab.load_tokenizer(model_file, cache), PROSE)) > 10
    assert json.loads(cached.read_text())["model"]["type"] == "BPE"


@pytest.mark.parametrize("text", SAMPLES.values())
def test_the_estimate_over_counts(trained: Tokenizer, text: str) -> None:
    # On text its vocabulary covers, as a real one covers real text (the toy vocabulary has few
    # merges beyond its samples; test_tokens_real checks SmolLM2's on text it was not built on).
    assert estimate_tokens(text) >= len(ids(trained, text))


def test_the_estimate_of_nothing_is_nothing() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abc") == 1
    assert estimate_tokens("123") == 3


def test_a_text_counted_twice_is_tokenized_once(trained: Tokenizer) -> None:
    counter = TokenizerCounter(trained, "tokenizer")
    assert counter.count(CODE) == len(ids(trained, CODE))
    assert counter.count(CODE) == len(ids(trained, CODE))
    assert counter.statistics() == CacheStatistics(hits=1, misses=1, entries=1, chars=len(CODE))


def test_the_cache_is_bounded_by_characters(trained: Tokenizer) -> None:
    counter = TokenizerCounter(trained, "tokenizer", max_chars=250)
    for n in range(10):
        counter.count(f"{n} " + "x" * 98)
    stats = counter.statistics()
    assert stats.entries == 2 and stats.chars == 200
    counter.count("9 " + "x" * 98)  # the most recent is kept
    assert counter.statistics().hits == 1
    counter.count("x" * 300)  # larger than the whole cache: counted, not kept
    assert counter.statistics().entries == 2


async def test_prepare_counts_large_texts_off_the_loop(trained: Tokenizer) -> None:
    counter = TokenizerCounter(trained, "tokenizer")
    texts = [f"{n}: {PROSE}" * 40 for n in range(8)]
    assert sum(map(len, texts)) > INLINE_CHARS
    async with ConnectionPool() as pool:
        await counter.prepare([*texts, texts[0], "small"], pool, "http://unused", EXTENSIONS)
    assert counter.statistics().entries == 9
    assert [counter.count(t) for t in texts] == [len(ids(trained, t)) for t in texts]
    assert counter.statistics().misses == 0


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "trioswap.optimizer" and r.levelname == "WARNING"
    ]


async def test_the_configured_tokenizer_comes_first(
    model: ModelFn, model_file: Path, trained: Tokenizer, tmp_path: Path
) -> None:
    tokenizer_json = tmp_path / "tokenizer.json"
    trained.save(str(tokenizer_json))
    m = model(f"llama-server -m {model_file} --port ${{PORT}}", f"tokenizer: {tokenizer_json}")
    counters = Counters(tmp_path / "cache")
    counter = await counters.counter(m)
    assert counter.source == "tokenizer"
    assert (counter.per_message, counter.per_request) == (DEFAULT_PER_MESSAGE, DEFAULT_PER_REQUEST)
    assert counter.count(PROSE) == len(ids(trained, PROSE))
    assert counters.server_counter("m") is None


async def test_a_bad_tokenizer_falls_back_to_the_gguf_logged_once(
    model: ModelFn,
    model_file: Path,
    trained: Tokenizer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = model(f"llama-server -m {model_file} --port ${{PORT}}", f"tokenizer: {tmp_path}/none.json")
    counters = Counters(tmp_path / "cache")
    found: list[object] = []
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(_collect, counters, m, found)
    assert len({id(c) for c in found}) == 1
    counter = await counters.counter(m)
    assert counter is found[0]
    assert counter.source == "gguf"
    assert counter.count(CODE) == len(ids(trained, CODE))
    [warning] = warnings_of(caplog)
    assert "model m" in warning and "none.json" in warning


async def _collect(counters: Counters, m: ModelConfig, found: list[object]) -> None:
    found.append(await counters.counter(m))


async def test_then_the_server_then_the_estimate(
    model: ModelFn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF but not really")
    m = model(f"llama-server -m {junk} --port ${{PORT}}", f"tokenizer: {tmp_path}/none.json")
    counters = Counters(tmp_path / "cache")
    counter = await counters.counter(m)
    assert isinstance(counter, ServerCounter)
    assert counters.server_counter("m") is counter
    assert counter.source == "server"
    # Not prepared: the estimate.
    assert counter.count(NON_ASCII) == estimate_tokens(NON_ASCII)
    await counters.counter(m)
    first, second = warnings_of(caplog)
    assert "none.json" in first
    assert "junk.gguf" in second and "malformed GGUF" in second


@asynccontextmanager
async def responder() -> AsyncIterator[str]:
    """The bundled responder on a port the system picked; its URL."""
    command = [sys.executable, "-m", "trioswap.responder", "--port", "0", "--model-id", "r"]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    assert process.stdout is not None
    try:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(_listening, process.stdout)
            yield url
            nursery.cancel_scope.cancel()
    finally:
        kill_group(process.pid)
        with trio.CancelScope(shield=True):
            await process.wait()


async def _listening(
    stdout: trio.abc.ReceiveStream, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Reports the URL the responder listens on, then keeps its output drained."""
    seen = b""
    with trio.fail_after(15):
        while (found := re.search(rb"listening on (http://\S+)", seen)) is None:
            chunk = await stdout.receive_some()
            assert chunk, "the responder exited before listening"
            seen += chunk
    task_status.started(found.group(1).decode())
    async for _ in stdout:
        pass


async def test_the_server_counter_asks_the_server(tmp_path: Path) -> None:
    counter = ServerCounter("r")
    texts = ["one two three", "four five", "", "one two three"]
    async with responder() as url, ConnectionPool() as pool:
        await counter.prepare(texts, pool, url, EXTENSIONS)
        # The responder's /tokenize makes a token of each word.
        assert [counter.count(t) for t in texts] == [3, 2, 0, 3]
        assert counter.statistics().entries == 2
        await counter.prepare(texts, pool, url, EXTENSIONS)
        assert counter.statistics().entries == 2
    assert counter.source == "server"


async def test_a_server_without_tokenize_leaves_the_estimate() -> None:
    counter = ServerCounter("r")
    async with responder() as url, ConnectionPool() as pool:
        # Under a path prefix every route answers 404, as a server without /tokenize does.
        await counter.prepare([PROSE, CODE], pool, f"{url}/elsewhere", EXTENSIONS)
    assert counter.source == "estimate"
    assert counter.count(PROSE) == estimate_tokens(PROSE)
    assert counter.statistics().entries == 0


async def test_an_unreachable_server_leaves_the_estimate_for_now() -> None:
    counter = ServerCounter("r")
    async with ConnectionPool() as pool:
        await counter.prepare([PROSE], pool, "http://127.0.0.1:9", EXTENSIONS)
    assert counter.source == "server"
    assert counter.count(PROSE) == estimate_tokens(PROSE)


async def test_calibration_measures_the_template(model: ModelFn, tmp_path: Path) -> None:
    m = model("python3 -m trioswap.responder --port ${PORT} --model-id r")
    counters = Counters(tmp_path / "cache")
    async with responder() as url, ConnectionPool() as pool:
        # Unreachable: no error, the defaults stay, and a later call tries again.
        await counters.calibrate(m, pool, "http://127.0.0.1:9", EXTENSIONS)
        counter = await counters.counter(m)
        assert (counter.per_message, counter.per_request) == (
            DEFAULT_PER_MESSAGE,
            DEFAULT_PER_REQUEST,
        )
        await counters.calibrate(m, pool, f"{url}/elsewhere", EXTENSIONS)
        assert counter.per_message == DEFAULT_PER_MESSAGE
        # The responder's template is the messages' text, one per line: no overhead.
        await counters.calibrate(m, pool, url, EXTENSIONS)
        assert (counter.per_message, counter.per_request) == (0, 0)
