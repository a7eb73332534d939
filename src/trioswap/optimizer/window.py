"""A model's context window, and how much of it a request's prompt may use.

The window is the first of: a runtime override (set from the UI or API), the context size the
command asks for (`--ctx-size`/`-c`, or `LLAMA_ARG_CTX_SIZE` in the model's env), the config's
`capabilities.context`, and the context length the GGUF file was trained for (llama-server's
own default when no size is asked for). llama-server splits it between `--parallel` slots, so
one request gets its share (`cmdline.context_per_request`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import trio

from trioswap.config import cmdline
from trioswap.config.resolved import ModelConfig

log = logging.getLogger("trioswap.optimizer")

# Every API family's name for the output limit: chat, legacy chat, Responses.
OUTPUT_LIMIT_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


@dataclass(frozen=True)
class Window:
    tokens: int  # what one request may use (after the split between slots)
    configured: int  # the context size before the split
    source: str  # "runtime", "--ctx-size", "capabilities.context", "gguf"


def context_window(
    model: ModelConfig, runtime_ctx: int | None, gguf_context: int | None
) -> Window | None:
    """The model's window, or None when nothing says how large it is."""
    capabilities = model.capabilities.context if model.capabilities is not None else 0
    candidates = (
        (runtime_ctx, "runtime"),
        (cmdline.ctx_size(model.cmd, model.env), "--ctx-size"),
        (capabilities, "capabilities.context"),
        (gguf_context, "gguf"),
    )
    for size, source in candidates:
        if size is not None and size > 0:
            per_request = cmdline.context_per_request(size, model.cmd, model.env)
            return Window(tokens=per_request, configured=size, source=source)
    return None


def output_reserve(
    body: Mapping[str, Any], window: int, default_reserve: int, max_share: float
) -> int:
    """Tokens kept free for the answer: the request's own output limit, capped at `max_share`
    of the window, since agents ask for 32k of output from an 8k model and llama-server stops
    at the context's end anyway; without a limit, `default_reserve` under the same cap."""
    cap = int(max_share * window)
    asked = [
        value
        for key in OUTPUT_LIMIT_KEYS
        if isinstance(value := body.get(key), int) and not isinstance(value, bool) and value > 0
    ]
    return min(max(asked) if asked else default_reserve, cap)


def prompt_budget(window: Window, reserve: int, margin: float, min_margin: int) -> int:
    """The tokens the prompt may take: the window less the output reserve and a safety margin
    (`margin` of the window, at least `min_margin`) for counting errors; never below 0."""
    safety = max(min_margin, int(margin * window.tokens))
    return max(0, window.tokens - reserve - safety)


class Windows:
    """The context length of each model file, read off the event loop and kept."""

    def __init__(self) -> None:
        self._by_file: dict[str, int | None] = {}

    async def gguf_context(self, model: ModelConfig) -> int | None:
        path = cmdline.model_file(model.cmd, model.env)
        if path is None:
            return None
        if path not in self._by_file:
            self._by_file[path] = await trio.to_thread.run_sync(_read_context, model.id, path)
        return self._by_file[path]


def _read_context(model_id: str, path: str) -> int | None:
    try:
        # Imported here, in a worker thread: see `tokens._gguf_vocab`.
        from trioswap.optimizer import gguf_vocab

        return gguf_vocab.context_length(path)
    except (OSError, ValueError) as exc:
        log.warning("model %s: no context length from %s: %s", model_id, path, exc)
        return None
