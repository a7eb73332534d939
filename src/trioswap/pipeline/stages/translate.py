"""`translate`: decide whether an Anthropic Messages or Responses request goes to the model's
server as it is or as a chat completions request (see `pipeline/translation.py`).

It runs after `filters`, so filters act on the body the client sent; keys a translator does not
know (llama-server's `cache_prompt`, a setParams' `chat_template_kwargs`) go on to the chat
request as they are. Peers get every request as the client sent it. A model a running Ollama
serves goes native when its Ollama version serves the family, else translated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.stage import StageContext
from trioswap.pipeline.translation import (
    CHAT_PATH,
    CODECS,
    COUNT_PATHS,
    FAMILY_OF_PATH,
    VERSIONLESS_CHAT_PATH,
    Codec,
    Fallback,
    Translation,
)

# Keys of each family's request that its translator reads; any other key is passed on.
_KNOWN = {
    "anthropic": frozenset(
        {
            "model",
            "messages",
            "system",
            "max_tokens",
            "metadata",
            "stop_sequences",
            "stream",
            "temperature",
            "top_k",
            "top_p",
            "tools",
            "tool_choice",
            "thinking",
            "service_tier",
            "container",
            "mcp_servers",
            "context_management",
            "output_config",
        }
    ),
    "responses": frozenset(
        {
            "model",
            "input",
            "instructions",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "text",
            "max_output_tokens",
            "temperature",
            "top_p",
            "user",
            "metadata",
            "store",
            "stream",
            "include",
            "reasoning",
            "previous_response_id",
            "prompt_cache_key",
            "truncation",
            "service_tier",
            "background",
            "safety_identifier",
            "top_logprobs",
            "max_tool_calls",
            "client_metadata",
            "prompt",
            "conversation",
            "stream_options",
        }
    ),
}


class Translate:
    def __init__(self, context: StageContext) -> None:
        self._modes = {m.id: m.apis for m in context.config.models.values()}

    async def __call__(self, exchange: Exchange) -> bool:
        family = FAMILY_OF_PATH.get(exchange.path)
        body = exchange.json
        if family is None or body is None:
            return False
        codec = CODECS[family]
        if exchange.discovered is not None:
            # By Ollama's version (`discovery.ollama.api_modes`); count_tokens is trioswap's.
            mode = exchange.discovered.config.apis[family]
            if exchange.path in COUNT_PATHS:
                mode = "translate"
        elif exchange.model_id is not None:
            mode = self._modes[exchange.model_id][family]
        else:
            return False
        if mode == "translate":
            translate(exchange, codec)
        elif mode == "auto":
            exchange.fallback = Fallback(family, lambda: translate(exchange, codec))
        return False


def translate(exchange: Exchange, codec: Codec) -> None:
    """Make `exchange` a chat completions request whose reply goes back in `codec`'s family
    (or, for count_tokens, one that trioswap answers)."""
    original: Mapping[str, Any] = exchange.json or {}
    exchange.fallback = None
    if exchange.path in COUNT_PATHS:
        exchange.translation = Translation(codec, original, count=True)
        return
    chat = codec.request(original)
    known = _KNOWN[codec.family]
    chat.update({k: v for k, v in original.items() if k not in known and k not in chat})
    exchange.translation = Translation(codec, original)
    exchange.json = chat
    exchange.body_changed = True
    versionless = exchange.path.startswith("/v/")
    exchange.upstream_path = VERSIONLESS_CHAT_PATH if versionless else CHAT_PATH
