"""`/v1/messages/count_tokens` for a model whose server does not serve it: trioswap answers.

Exactly, where the server can say: the request as the chat request it would become, rendered by
the server's own chat template (llama-server's `/apply-template`) and counted by its own
tokenizer (`/tokenize`). Otherwise an estimate that over-counts rather than under-counts, since
agents use the count to decide when to compact: one token per 3 bytes of the request's UTF-8
JSON (messages, system, tools), which is more than any BPE tokenizer gives for text and code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

from trioswap.pipeline.translated import read_reply
from trioswap.pipeline.upstream import open_response, upstream_url
from trioswap.pipeline.wire import ConnectionPool
from trioswap.protocols import anthropic_chat

BYTES_PER_TOKEN = 3
_JSON = [(b"content-type", b"application/json")]
# What the estimate counts: everything the model would see.
_COUNTED = ("system", "messages", "tools", "tool_choice")


async def count_tokens(
    request: Mapping[str, Any],
    pool: ConnectionPool,
    proxy: str,
    extensions: dict[str, Any],
) -> tuple[int, str]:
    """The request's input tokens, and how they were found ("server" or "estimate")."""
    chat = anthropic_chat.request_to_chat({**request, "max_tokens": 1})
    template = {k: chat[k] for k in ("messages", "tools") if k in chat}
    rendered = await post_json(pool, proxy, b"/apply-template", template, extensions)
    if rendered is not None and isinstance(prompt := rendered.get("prompt"), str):
        counted = await post_json(
            pool, proxy, b"/tokenize", {"content": prompt, "add_special": True}, extensions
        )
        if counted is not None and isinstance(tokens := counted.get("tokens"), list):
            return len(tokens), "server"
    return estimate(request), "estimate"


def estimate(request: Mapping[str, Any]) -> int:
    counted = {k: request[k] for k in _COUNTED if k in request}
    size = len(json.dumps(counted, ensure_ascii=False).encode())
    return max(1, math.ceil(size / BYTES_PER_TOKEN))


async def post_json(
    pool: ConnectionPool,
    proxy: str,
    path: bytes,
    body: Mapping[str, Any],
    extensions: dict[str, Any],
) -> dict[str, Any] | None:
    """The server's JSON answer, or None when it has no such route (or no good answer)."""
    async with AsyncExitStack() as stack:
        response = await open_response(
            stack,
            pool,
            method=b"POST",
            url=upstream_url(proxy, path, b""),
            headers=_JSON,
            content=json.dumps(body).encode(),
            extensions=extensions,
        )
        if response.status != 200:
            return None
        data = await read_reply(response, proxy)
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None
