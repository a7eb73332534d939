"""JSON, server-sent events and request errors, as every API family of the responder writes them."""

from __future__ import annotations

import json
from typing import Any

JSON = dict[str, Any]
# One event-stream frame, and whether it carries a generated piece: those are paced by
# --tokens-per-second and counted by --crash-after-chunks.
Frame = tuple[bytes, bool]

_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(value: object) -> bytes:
    return _encode_json(value).encode()


def sse(value: object) -> bytes:
    return b"data: " + dumps(value) + b"\n\n"


def named_sse(event: str, value: object) -> bytes:
    """An event with a name line, as the Anthropic and Responses APIs stream them."""
    return b"event: " + event.encode() + b"\ndata: " + dumps(value) + b"\n\n"


class RequestError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        error_type: str = "invalid_request_error",
        extra: JSON | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        # More fields of the error object (llama-server's n_prompt_tokens, n_ctx).
        self.extra = extra or {}


def error_body(status: int, message: str, error_type: str, extra: JSON | None = None) -> bytes:
    return dumps(
        {"error": {"message": message, "type": error_type, "code": status, **(extra or {})}}
    )


def parse_json(body: bytes) -> JSON:
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise RequestError(400, f"invalid JSON body: {exc}") from None
    if not isinstance(value, dict):
        raise RequestError(400, "request body must be a JSON object")
    return value


def max_tokens_of(request: JSON, *keys: str) -> int | None:
    """The first of `keys` the request sets: the output limit, which must be a positive integer."""
    for key in keys:
        value = request.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(400, f"{key} must be a positive integer")
        return value
    return None
