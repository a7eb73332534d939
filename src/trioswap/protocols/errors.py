"""Error bodies in each API family's own shape, and the status each trioswap error maps to."""

from __future__ import annotations

import json
from enum import StrEnum

from trioswap.errors import (
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    ModelNotFound,
    ModelStartError,
    PayloadTooLarge,
    ShuttingDown,
    TooManyRequests,
    TrioswapError,
    Unauthorized,
    UpstreamError,
)


class Family(StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


# status, OpenAI error type, Anthropic error type
_MAPPING: dict[type[TrioswapError], tuple[int, str, str]] = {
    BadRequest: (400, "invalid_request_error", "invalid_request_error"),
    MethodNotAllowed: (405, "invalid_request_error", "invalid_request_error"),
    PayloadTooLarge: (413, "invalid_request_error", "request_too_large"),
    Forbidden: (403, "permission_error", "permission_error"),
    Unauthorized: (401, "authentication_error", "authentication_error"),
    ModelNotFound: (404, "invalid_request_error", "not_found_error"),
    TooManyRequests: (429, "rate_limit_error", "rate_limit_error"),
    ModelStartError: (502, "upstream_error", "api_error"),
    UpstreamError: (502, "upstream_error", "api_error"),
    ShuttingDown: (503, "unavailable_error", "overloaded_error"),
}


def status_of(error: TrioswapError) -> int:
    return _MAPPING.get(type(error), (500, "", ""))[0]


def error_body(family: Family, error: TrioswapError) -> dict[str, object]:
    status, openai_type, anthropic_type = _MAPPING.get(
        type(error), (500, "server_error", "api_error")
    )
    if family is Family.ANTHROPIC:
        return {"type": "error", "error": {"type": anthropic_type, "message": str(error)}}
    detail: dict[str, object] = {"message": str(error), "type": openai_type, "code": status}
    if isinstance(error, ModelNotFound):
        detail["code"] = "model_not_found"
        detail["param"] = "model"
    return {"error": detail}


def error_bytes(family: Family, error: TrioswapError) -> bytes:
    return json.dumps(error_body(family, error)).encode()


def stream_error_event(family: Family, error: TrioswapError) -> bytes:
    """An SSE event that tells a streaming client its stream ended in an error."""
    body = json.dumps(error_body(family, error))
    if family is Family.ANTHROPIC:
        return f"event: error\ndata: {body}\n\n".encode()
    return f"data: {body}\n\n".encode()
