"""Error bodies in each API family's own shape, and the status each error maps to.

An error maps by its class, most specific first (the first class of its MRO with a row), so a new
subclass of `UpstreamError` answers as an upstream error until it gets a row of its own; anything
that is not a `TrioswapError` at all is a 500.
"""

from __future__ import annotations

import json
import random
from enum import StrEnum
from typing import NamedTuple

from trioswap.auth import CHALLENGE
from trioswap.errors import (
    BadRequest,
    Forbidden,
    InternalError,
    MethodNotAllowed,
    ModelNotFound,
    ModelNotLoaded,
    ModelStartError,
    PayloadTooLarge,
    RequestCancelled,
    RequestTimeout,
    RouteNotFound,
    ShuttingDown,
    TrioswapError,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
)

Headers = list[tuple[bytes, bytes]]


class Family(StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class Kind(NamedTuple):
    status: int
    openai_type: str
    anthropic_type: str


_INTERNAL = Kind(500, "server_error", "api_error")
_KINDS: dict[type[BaseException], Kind] = {
    BadRequest: Kind(400, "invalid_request_error", "invalid_request_error"),
    RouteNotFound: Kind(404, "invalid_request_error", "not_found_error"),
    MethodNotAllowed: Kind(405, "invalid_request_error", "invalid_request_error"),
    RequestTimeout: Kind(408, "invalid_request_error", "invalid_request_error"),
    PayloadTooLarge: Kind(413, "invalid_request_error", "request_too_large"),
    Unauthorized: Kind(401, "authentication_error", "authentication_error"),
    Forbidden: Kind(403, "permission_error", "permission_error"),
    ModelNotFound: Kind(404, "invalid_request_error", "not_found_error"),
    ModelNotLoaded: Kind(409, "invalid_request_error", "invalid_request_error"),
    ModelStartError: Kind(502, "upstream_error", "api_error"),
    UpstreamError: Kind(502, "upstream_error", "api_error"),
    UpstreamTimeout: Kind(504, "upstream_error", "api_error"),
    ShuttingDown: Kind(503, "unavailable_error", "overloaded_error"),
    RequestCancelled: Kind(503, "unavailable_error", "api_error"),
    InternalError: _INTERNAL,
}
# The client should not reuse a connection whose request body was left unread.
_CLOSES = (PayloadTooLarge, RequestTimeout)


def kind_of(error: BaseException) -> Kind:
    for cls in type(error).__mro__:
        kind = _KINDS.get(cls)
        if kind is not None:
            return kind
    return _INTERNAL


def status_of(error: BaseException) -> int:
    return kind_of(error).status


_random_bits = random.getrandbits


def new_request_id() -> str:
    """An id that ties an error the client saw to trioswap's log line about it. Not a secret
    (it grants nothing), so Python's seeded generator rather than a syscall per request."""
    return f"req_{_random_bits(64):016x}"


def error_body(
    family: Family, error: TrioswapError, request_id: str | None = None
) -> dict[str, object]:
    kind = kind_of(error)
    body: dict[str, object]
    if family is Family.ANTHROPIC:
        body = {"type": "error", "error": {"type": kind.anthropic_type, "message": str(error)}}
    else:
        detail: dict[str, object] = {
            "message": str(error),
            "type": kind.openai_type,
            "code": kind.status,
        }
        if isinstance(error, ModelNotFound):
            detail["code"] = "model_not_found"
            detail["param"] = "model"
        body = {"error": detail}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def error_bytes(family: Family, error: TrioswapError, request_id: str | None = None) -> bytes:
    return json.dumps(error_body(family, error, request_id)).encode()


def error_headers(error: TrioswapError, request_id: str) -> Headers:
    """The headers an error response carries besides its content type and length."""
    headers: Headers = [(b"x-request-id", request_id.encode())]
    if isinstance(error, Unauthorized):
        headers.extend(CHALLENGE)
    elif isinstance(error, _CLOSES):
        headers.append((b"connection", b"close"))
    elif isinstance(error, MethodNotAllowed):
        headers.append((b"allow", ", ".join(error.allowed).encode()))
    return headers


def stream_error_event(family: Family, error: TrioswapError, request_id: str) -> bytes:
    """An SSE event that tells a streaming client its stream ended in an error."""
    body = json.dumps(error_body(family, error, request_id))
    if family is Family.ANTHROPIC:
        return f"event: error\ndata: {body}\n\n".encode()
    return f"data: {body}\n\n".encode()
