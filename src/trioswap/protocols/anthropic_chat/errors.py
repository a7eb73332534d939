"""A model server's error (an answer in OpenAI's shape or anything, or a failure reported in
its stream) as an Anthropic error.

The status is kept (a status that is no error at all becomes 502) and picks Anthropic's error
type. The message is the upstream's own, found where OpenAI, llama-server, vLLM and FastAPI put
it, else the body's text. llama-server's context overflow (`exceed_context_size_error`, with
`n_prompt_tokens` and `n_ctx`) is said as Anthropic says it, "prompt is too long: N tokens > M
maximum", which is what Claude Code looks for to compact the conversation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from trioswap.clip import clip
from trioswap.errors import UPSTREAM_DETAIL_CHARS
from trioswap.protocols.anthropic_chat.reply import mapping

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def chat_error_to_anthropic(status: int, body: bytes) -> tuple[int, dict[str, Any]]:
    """The status to answer with and an Anthropic error body for an upstream's error answer."""
    if not 400 <= status <= 599:
        status = 502
    try:
        said = message_of(json.loads(body))
    except (ValueError, RecursionError):
        said = None
    message = said or body.decode("utf-8", "replace").strip()
    return status, {"type": "error", "error": _error(status, message)}


def stream_error_of(document: Mapping[str, Any]) -> tuple[str, str] | None:
    """(error type, message) of a chunk that reports a failure instead of carrying a delta, as
    llama-server's and vLLM's streams do mid-answer; None for any other chunk."""
    error = document.get("error")
    if error is None and document.get("object") != "error":
        return None
    code = mapping(error if error is not None else document).get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else 500
    error = _error(status, message_of(document) or "the model server failed mid-answer")
    return error["type"], error["message"]


def _error(status: int, message: str) -> dict[str, str]:
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    text = clip(message or f"the model server answered {status}", UPSTREAM_DETAIL_CHARS)
    return {"type": kind, "message": text}


def message_of(document: Any) -> str | None:
    """The message a JSON error document carries, where OpenAI, llama-server, vLLM or FastAPI
    put it."""
    document = mapping(document)
    error = document.get("error")
    if isinstance(error, str):
        return error
    error = mapping(error)
    said = error.get("message")
    said = said if isinstance(said, str) else ""
    prompt, context = error.get("n_prompt_tokens"), error.get("n_ctx")
    if error.get("type") == "exceed_context_size_error" and _ints(prompt, context):
        return f"prompt is too long: {prompt} tokens > {context} maximum ({said})"
    for found in (said, document.get("message"), document.get("detail")):
        if isinstance(found, str) and found:
            return found
    return None


def _ints(*values: Any) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)
