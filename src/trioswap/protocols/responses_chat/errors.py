"""A model server's error as the OpenAI error object: `{message, type, code, param}`.

Servers say it in different shapes: `{"error": {...}}` (llama-server, OpenAI), the object at the
top level (older vLLM), `{"error": "text"}` (Ollama), or plain text. A prompt longer than the
context gets code `context_length_exceeded`, which agent CLIs (Codex) act on; `code` is a string
or null, so llama-server's numeric codes are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from trioswap.clip import clip
from trioswap.errors import UPSTREAM_DETAIL_CHARS
from trioswap.protocols.responses_chat.output import Json

_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
# How servers say the prompt did not fit: llama-server's type, and vLLM's and OpenAI's message.
_CONTEXT_TYPE = "exceed_context_size_error"
_CONTEXT_PHRASES = ("maximum context length", "exceeds the available context size")


def _string(error: Mapping[str, Any], key: str) -> str | None:
    value = error.get(key)
    return clip(value) if isinstance(value, str) else None


def openai_error(error: object, status: int, fallback: str) -> Json:
    """The error object for what a server said (`error`: its error object or text)."""
    fields: Mapping[str, Any] = error if isinstance(error, Mapping) else {}
    message = fields.get("message")
    if not isinstance(message, str):
        message = error if isinstance(error, str) else fallback
    kind = _string(fields, "type") or _TYPES.get(
        status, "server_error" if status >= 500 else "invalid_request_error"
    )
    code = _string(fields, "code")
    lowered = message.lower()
    if kind == _CONTEXT_TYPE or any(phrase in lowered for phrase in _CONTEXT_PHRASES):
        code = "context_length_exceeded"
    elif code is None and status == 429:
        code = "rate_limit_exceeded"
    return {
        "message": clip(message, UPSTREAM_DETAIL_CHARS),
        "type": kind,
        "code": code,
        "param": _string(fields, "param"),
    }


def chat_error_to_responses(status: int, body: bytes) -> tuple[int, dict[str, Any]]:
    """An upstream's error answer as the OpenAI error body. A status that is not an error
    (a server answering 2xx or 3xx where it failed) is a 502."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        parsed = None
    error = parsed.get("error", parsed) if isinstance(parsed, Mapping) else None
    if not 400 <= status <= 599:
        status = 502
    text = body.decode("utf-8", "replace").strip()
    fallback = text or f"the model server answered {status} with no body"
    return status, {"error": openai_error(error, status, fallback)}
