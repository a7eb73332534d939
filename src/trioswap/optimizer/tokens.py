"""Token counts as each model counts them, for fitting transcripts into its context window.

Per model, the first source that applies: the `tokenizer:` file in its config (a
tokenizer.json), the GGUF file its command loads (`-m`, see `gguf_vocab`), the running server's
own `/tokenize`, and last an estimate. A counter's `count` is sync and remembers every text it
counted (a bounded LRU), since a transcript is re-counted on every request with only its last
turns new.

Counting a text never seen costs its tokenization: ~0.5 s for 600 kB with a BPE tokenizer,
holding the GIL. So before counting a request's texts the caller awaits
`counter.prepare(texts, pool, proxy, extensions)`, which tokenizes the unseen ones in a worker
thread (tokenizer counters) or with the server's `/tokenize` (the server counter; call it once
the model is ready, as the server must answer). After it, `count` is dict lookups; without it,
`count` still answers: exactly for tokenizer counters, with the estimate for the server counter.

The prompt a model sees is more than its messages' texts: the chat template adds role markers
per message and a fixed part per request (BOS, the assistant prefix). `Counters.calibrate`
measures both on the running server; until then the defaults below over-count them.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import math
import os
import string
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

import trio

from trioswap.config import cmdline
from trioswap.config.resolved import ModelConfig
from trioswap.pipeline.count_tokens import post_json
from trioswap.pipeline.upstream import TRANSPORT_ERRORS
from trioswap.pipeline.wire import ConnectionPool

if TYPE_CHECKING:  # imported where a tokenizer is loaded: a start without one never pays
    from tokenizers import Tokenizer

log = logging.getLogger("trioswap.optimizer")

# The estimate's bytes that come several to a token: ASCII letters and the space.
LETTERS_PER_TOKEN = 3
_WORD = (" " + string.ascii_letters).encode()
_NOT_WORD = bytes(b for b in range(256) if b not in _WORD)
# Uncalibrated template overheads, chosen above the real ones: ChatML adds 5 tokens per message
# (<|im_start|>role\n … <|im_end|>\n) and Llama 3 7, both under 8; the fixed part (BOS and
# the assistant prefix) is 3 to 7 tokens.
DEFAULT_PER_MESSAGE = 8
DEFAULT_PER_REQUEST = 16
# The remembered texts, by total characters (a 200k-token transcript is ~800k characters).
CACHE_CHARS = 64 * 2**20
# Unseen texts up to this many characters are tokenized inline: cheaper than a thread hop.
INLINE_CHARS = 16 * 1024
# How many /tokenize requests one prepare sends at once.
TOKENIZE_CONCURRENCY = 4


def estimate_tokens(text: str) -> int:
    """A count that errs high: a token per 3 ASCII letters or spaces, and one per other byte.

    Prose and code average 4 letters per token. Every other byte is counted as a token, as
    small BPE vocabularies make them: SmolLM2 and Qwen give each digit its own token, JSON's
    punctuation comes in 1-2 byte tokens, and text in other scripts takes 1.3 to 2.3 bytes per
    token in a 49k vocabulary. Measured on SmolLM2 this over-counts prose (x1.4), code (x1.5),
    JSON (x1.3) and non-ASCII text (x1.4 to x2.2); one token per 3 bytes of everything
    (`count_tokens.BYTES_PER_TOKEN`) under-counts JSON and non-ASCII text by a third to a half.
    It still under-counts random strings (hashes, base64: x0.6 to x0.9), which the prompt
    budget's margin is for."""
    data = text.encode()
    words = len(data.translate(None, _NOT_WORD))
    return math.ceil(words / LETTERS_PER_TOKEN) + len(data) - words


class Counter(Protocol):
    # "tokenizer" (tokenizer.json from config), "gguf", "vocabulary" (Ollama's), "server",
    # "estimate"
    source: str
    per_message: int  # template overhead per message (role markers etc.)
    per_request: int  # fixed overhead per request (BOS, assistant prefix)

    def count(self, text: str) -> int:
        """Tokens of `text`, no special tokens added (special tokens in it are parsed)."""
        ...

    async def prepare(
        self,
        texts: Sequence[str],
        pool: ConnectionPool,
        proxy: str,
        extensions: dict[str, Any],
    ) -> None:
        """Count the texts not seen yet, off the event loop, so that `count` only looks up."""
        ...


@dataclass(frozen=True)
class CacheStatistics:
    hits: int
    misses: int
    entries: int
    chars: int


class _Counts:
    """Token counts by text, least recently used dropped first beyond `max_chars`."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._chars = 0
        self.hits = 0
        self.misses = 0

    def get(self, text: str) -> int | None:
        found = self._counts.get(text)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._counts.move_to_end(text)
        return found

    def __contains__(self, text: str) -> bool:
        return text in self._counts

    def put(self, text: str, count: int) -> None:
        if len(text) > self.max_chars or text in self._counts:
            return
        self._counts[text] = count
        self._chars += len(text)
        while self._chars > self.max_chars:
            dropped, _ = self._counts.popitem(last=False)
            self._chars -= len(dropped)

    def statistics(self) -> CacheStatistics:
        return CacheStatistics(self.hits, self.misses, len(self._counts), self._chars)


class TokenizerCounter:
    """Counts with a HuggingFace tokenizer: one from a tokenizer.json, or built from a GGUF."""

    def __init__(self, tokenizer: Tokenizer, source: str, max_chars: int = CACHE_CHARS) -> None:
        self.source = source
        self.per_message = DEFAULT_PER_MESSAGE
        self.per_request = DEFAULT_PER_REQUEST
        self._tokenizer = tokenizer
        self._counts = _Counts(max_chars)

    def count(self, text: str) -> int:
        found = self._counts.get(text)
        if found is None:
            found = len(self._tokenizer.encode(text, add_special_tokens=False))
            self._counts.put(text, found)
        return found

    async def prepare(
        self,
        texts: Sequence[str],
        pool: ConnectionPool,
        proxy: str,
        extensions: dict[str, Any],
    ) -> None:
        unseen = list(dict.fromkeys(t for t in texts if t not in self._counts))
        if sum(map(len, unseen)) <= INLINE_CHARS:
            for text in unseen:
                self.count(text)
            return
        # encode_batch releases the GIL while it works (encode does not).
        encodings = await trio.to_thread.run_sync(self._tokenizer.encode_batch_fast, unseen, False)
        for text, encoding in zip(unseen, encodings, strict=True):
            self._counts.put(text, len(encoding))

    def statistics(self) -> CacheStatistics:
        return self._counts.statistics()


class ServerCounter:
    """Counts with the model server's `/tokenize` (llama-server's, vLLM's …), for models with
    no tokenizer here. `count` only looks up what `prepare` asked the server, and estimates the
    rest; a server without the route makes this counter an estimate for good."""

    def __init__(self, model_id: str, max_chars: int = CACHE_CHARS) -> None:
        self.source = "server"
        self.per_message = DEFAULT_PER_MESSAGE
        self.per_request = DEFAULT_PER_REQUEST
        self.model_id = model_id
        self._counts = _Counts(max_chars)

    def count(self, text: str) -> int:
        found = self._counts.get(text)
        return estimate_tokens(text) if found is None else found

    async def prepare(
        self,
        texts: Sequence[str],
        pool: ConnectionPool,
        proxy: str,
        extensions: dict[str, Any],
    ) -> None:
        """Ask the server to count the texts not seen yet; what fails stays estimated."""
        if self.source != "server":
            return
        unseen = list(dict.fromkeys(t for t in texts if t and t not in self._counts))
        limiter = trio.CapacityLimiter(TOKENIZE_CONCURRENCY)
        async with trio.open_nursery() as nursery:
            for text in unseen:
                nursery.start_soon(self._tokenize, text, limiter, pool, proxy, extensions)

    async def _tokenize(
        self,
        text: str,
        limiter: trio.CapacityLimiter,
        pool: ConnectionPool,
        proxy: str,
        extensions: dict[str, Any],
    ) -> None:
        async with limiter:
            if self.source != "server":
                return
            try:
                tokens = await tokenize(pool, proxy, text, False, extensions)
            except TRANSPORT_ERRORS as exc:
                log.debug("model %s: /tokenize failed: %s", self.model_id, exc)
                return
        if tokens is None:
            if self.source == "server":
                log.info("model %s: its server has no /tokenize: estimating", self.model_id)
            self.source = "estimate"
        else:
            self._counts.put(text, tokens)

    def statistics(self) -> CacheStatistics:
        return self._counts.statistics()


async def tokenize(
    pool: ConnectionPool,
    proxy: str,
    text: str,
    add_special: bool,
    extensions: dict[str, Any],
) -> int | None:
    """The server's count of `text` (llama-server's `/tokenize`), or None when it has none."""
    reply = await post_json(
        pool, proxy, b"/tokenize", {"content": text, "add_special": add_special}, extensions
    )
    tokens = reply.get("tokens") if reply is not None else None
    return len(tokens) if isinstance(tokens, list) else None


# The probe conversations calibration renders: the longer one adds an assistant and a user
# message (templates that require alternating roles accept both).
_SHORT = ({"role": "system", "content": "Alpha"}, {"role": "user", "content": "Bravo"})
_LONG = (*_SHORT, {"role": "assistant", "content": "Charlie"}, {"role": "user", "content": "Delta"})


async def measure_overhead(
    pool: ConnectionPool, proxy: str, extensions: dict[str, Any]
) -> tuple[int, int] | None:
    """(per message, per request) tokens the server's chat template adds, or None when the
    server cannot render (`/apply-template`) or count (`/tokenize`). The contents are counted by
    the server too, so the difference is the template's alone."""
    rendered: list[int] = []
    for conversation in (_SHORT, _LONG):
        reply = await post_json(
            pool, proxy, b"/apply-template", {"messages": conversation}, extensions
        )
        prompt = reply.get("prompt") if reply is not None else None
        if not isinstance(prompt, str):
            return None
        counted = await tokenize(pool, proxy, prompt, True, extensions)
        if counted is None:
            return None
        rendered.append(counted)
    contents: list[int] = []
    for message in _LONG:
        counted = await tokenize(pool, proxy, message["content"], False, extensions)
        if counted is None:
            return None
        contents.append(counted)
    added = rendered[1] - rendered[0] - contents[2] - contents[3]
    per_message = max(0, math.ceil(added / 2))
    per_request = max(0, rendered[0] - 2 * per_message - contents[0] - contents[1])
    return per_message, per_request


# A model's counter is for its id, `tokenizer:` file and model file.
_Key = tuple[str, str | None, str | None]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trioswap" / "tokenizers"


class Counters:
    """Per model: the first counter that applies — `tokenizer:` in its config (a
    tokenizer.json), its GGUF (`-m` in cmd), the running server's `/tokenize`, the estimate.
    Built lazily, off the event loop, once per model; a failure is logged once (which model,
    why) and falls back to the next. Built tokenizers are cached in `cache_dir`."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self._counters: dict[_Key, Counter] = {}
        self._building: dict[_Key, trio.Event] = {}
        self._calibrated: set[tuple[str, str]] = set()

    async def counter(self, model: ModelConfig) -> Counter:
        # A config reload may give the model another tokenizer or file: a new counter then.
        key = (
            model.id,
            getattr(model, "tokenizer", None),
            cmdline.model_file(model.cmd, model.env),
        )
        return await self._get(key, partial(trio.to_thread.run_sync, self._build, model, key))

    async def vocabulary_counter(
        self,
        model_id: str,
        digest: str,
        vocabulary: Callable[[], Awaitable[dict[str, Any] | None]],
    ) -> Counter:
        """The counter of a model whose server hands out its vocabulary (Ollama's verbose
        /api/show, GGUF metadata keys) rather than counting: a tokenizer built from it, cached
        on disk by the model's digest, else the estimate."""
        key = (model_id, None, f"vocabulary:{digest}")
        return await self._get(key, partial(self._from_vocabulary, model_id, digest, vocabulary))

    async def _get(self, key: _Key, build: Callable[[], Awaitable[Counter]]) -> Counter:
        while key not in self._counters:
            building = self._building.get(key)
            if building is not None:
                await building.wait()  # then found, or its builder was cancelled: try again
                continue
            done = self._building[key] = trio.Event()
            try:
                self._counters[key] = await build()
            finally:
                del self._building[key]
                done.set()
        return self._counters[key]

    async def _from_vocabulary(
        self,
        model_id: str,
        digest: str,
        vocabulary: Callable[[], Awaitable[dict[str, Any] | None]],
    ) -> Counter:
        name = hashlib.sha256(f"{model_id}\0{digest}".encode()).hexdigest()[:32]
        cached = self.cache_dir / f"{name}.vocabulary.json"
        try:
            found = await trio.to_thread.run_sync(_tokenizer_from_file, str(cached))
            return TokenizerCounter(found, "vocabulary")
        except Exception:  # tokenizers raises plain Exceptions: not cached yet, or unreadable
            pass
        meta = await vocabulary()
        if meta is not None:
            try:
                built = await trio.to_thread.run_sync(_from_vocabulary_file, model_id, meta, cached)
                return TokenizerCounter(built, "vocabulary")
            except ValueError as exc:
                log.info("model %s: no tokenizer from its vocabulary: %s", model_id, exc)
        log.info("model %s: no vocabulary to count with: estimating", model_id)
        estimate = ServerCounter(model_id)
        estimate.source = "estimate"
        return estimate

    def server_counter(self, model_id: str) -> ServerCounter | None:
        """The model's server counter, when that is the source it counts with."""
        for (found_id, _, _), counter in self._counters.items():
            if found_id == model_id and isinstance(counter, ServerCounter):
                return counter
        return None

    async def calibrate(
        self,
        model: ModelConfig,
        pool: ConnectionPool,
        proxy: str,
        extensions: dict[str, Any],
    ) -> None:
        """Once per model (per distinct proxy), when its server runs: measure the chat
        template's overhead with the server's /apply-template and /tokenize and set per_message
        and per_request of the model's counter; servers without those routes keep the
        defaults. Never raises for an upstream failure (a later call tries again)."""
        key = (model.id, proxy)
        if key in self._calibrated:
            return
        self._calibrated.add(key)
        counter = await self.counter(model)
        try:
            overhead = await measure_overhead(pool, proxy, extensions)
        except TRANSPORT_ERRORS as exc:
            self._calibrated.discard(key)
            log.debug("model %s: calibration failed: %s", model.id, exc)
            return
        if overhead is None:
            log.info("model %s: its server cannot render templates: default overheads", model.id)
            return
        counter.per_message, counter.per_request = overhead
        log.info(
            "model %s: template overhead %d tokens per message, %d per request",
            model.id,
            *overhead,
        )

    def _build(self, model: ModelConfig, key: _Key) -> Counter:
        """Runs in a worker thread."""
        _, tokenizer_file, model_file = key
        if tokenizer_file is not None:
            try:
                return TokenizerCounter(_tokenizer_from_file(tokenizer_file), "tokenizer")
            except Exception as exc:  # tokenizers raises plain Exceptions for bad files
                log.warning(
                    "model %s: cannot use tokenizer %s: %s; trying the next source",
                    model.id,
                    tokenizer_file,
                    exc,
                )
        if model_file is not None:
            try:
                return TokenizerCounter(
                    _gguf_vocab().load_tokenizer(model_file, self.cache_dir), "gguf"
                )
            except (OSError, ValueError) as exc:
                log.warning(
                    "model %s: no tokenizer from %s: %s; counting with its server's /tokenize "
                    "or estimating",
                    model.id,
                    model_file,
                    exc,
                )
        return ServerCounter(model.id)


def _tokenizer_from_file(path: str) -> Tokenizer:
    """Runs in a worker thread."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def _from_vocabulary_file(model_id: str, meta: dict[str, Any], cached: Path) -> Tokenizer:
    """Runs in a worker thread."""
    vocab = _gguf_vocab()
    tokenizer: Tokenizer = vocab.build_tokenizer(meta)
    try:
        vocab.save_tokenizer(tokenizer, cached)
    except OSError as exc:
        log.info("model %s: cannot cache its tokenizer: %s", model_id, exc)
    return tokenizer


def _gguf_vocab() -> ModuleType:
    """`gguf_vocab`, imported when first needed (in a worker thread): the `gguf` package
    imports numpy, which would add a fifth of a second to trioswap's start."""
    return importlib.import_module("trioswap.optimizer.gguf_vocab")
