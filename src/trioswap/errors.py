"""The exception tree of trioswap, written down once.

    TrioswapError
    ├── ConfigError          the config is invalid; every problem with file:line and key
    ├── ModelNotFound        a request named a model the config does not know
    ├── ModelStartError      a model server exited or never became healthy; has its last log lines
    ├── ModelNotLoaded       a request that may not start its model found it not running
    ├── UpstreamError        talking to a running model server failed
    │   ├── UpstreamConnectError   could not connect (refused, unreachable)
    │   ├── UpstreamDisconnected   the connection broke (reset, closed)
    │   ├── UpstreamProtocolError  not valid HTTP (or a request that cannot be forwarded)
    │   └── UpstreamTimeout        timeouts.connect or timeouts.responseHeader passed
    ├── ShuttingDown         trioswap is stopping and takes no new work
    ├── RequestCancelled     ended by POST /api/inflight/<id>/cancel
    ├── SummaryFailed        the model gave no summary of dropped turns (the optimizer falls back)
    ├── ActivityStoreError   store.path is in use, another program's, or of a newer trioswap
    ├── BadRequest           the client's request cannot be understood
    │   ├── RouteNotFound    no route has the path
    │   ├── MethodNotAllowed
    │   ├── PayloadTooLarge  the body is over maxRequestBodyMB
    │   ├── RequestTimeout   the body stalled for requestBodyTimeout
    │   └── PromptTooLong    over the model's context budget, and truncationMode is strict_error
    ├── Unauthorized         apiKeys are set and the request carries none of them
    ├── Forbidden            a browser request from a site that may not call trioswap
    └── InternalError        a bug: an unexpected exception, logged with its request id

Foreign errors (the upstream client's `pipeline.transport_errors`, yaml, OSError from
spawning) are translated into these at one boundary each. Text from outside (model names,
paths, upstream answers) is clipped where it enters a message (`trioswap.clip`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from trioswap.clip import clip

# An upstream's own error text is worth more room than a client's model name.
UPSTREAM_DETAIL_CHARS = 2000


class TrioswapError(Exception):
    """Base of every error trioswap raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(TrioswapError):
    """`problems` made the config invalid; `warnings` were found beside them."""

    def __init__(
        self, problems: list[ConfigProblem], warnings: list[ConfigProblem] | None = None
    ) -> None:
        self.problems = problems
        self.warnings = warnings or []
        super().__init__("\n".join(str(p) for p in problems))


class ModelNotFound(TrioswapError):
    def __init__(self, model: str, where: str = "the config") -> None:
        self.model = clip(model)
        super().__init__(f"model '{self.model}' is not in {where} (see GET /v1/models)")


class ModelStartError(TrioswapError):
    def __init__(self, model: str, reason: str, log_tail: list[str] | None = None) -> None:
        self.model = model
        self.reason = reason
        self.log_tail = log_tail or []
        text = f"model {model!r} failed to start: {reason}"
        if self.log_tail:
            text += "\nlast log lines:\n" + "\n".join(self.log_tail)
        super().__init__(text)


class ModelNotLoaded(TrioswapError):
    def __init__(self, model: str, why: str) -> None:
        self.model = model
        super().__init__(
            f"model {model!r} is not loaded, and {why} never loads it: load it with another "
            "request first"
        )


class UpstreamError(TrioswapError):
    def __init__(self, model: str, reason: str) -> None:
        self.model = model
        self.reason = clip(reason, UPSTREAM_DETAIL_CHARS)
        super().__init__(f"upstream of model {model!r}: {self.reason}")


class UpstreamConnectError(UpstreamError):
    pass


class UpstreamDisconnected(UpstreamError):
    pass


class UpstreamProtocolError(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    pass


class ShuttingDown(TrioswapError):
    def __init__(self) -> None:
        super().__init__("trioswap is shutting down")


class RequestCancelled(TrioswapError):
    """Ended by `POST /api/inflight/<id>/cancel` (the web UI's Cancel)."""

    def __init__(self, entry_id: int) -> None:
        super().__init__(f"the request was cancelled (POST /api/inflight/{entry_id}/cancel)")


class BadRequest(TrioswapError):
    """The client's request cannot be understood (malformed JSON, no model named)."""


class PromptTooLong(BadRequest):
    def __init__(self, model: str, tokens: int, budget: int, window: int) -> None:
        super().__init__(
            f"prompt is too long: {tokens} tokens > {budget} maximum (model {clip(model)}: "
            f"a {window}-token context, less room for the reply); its truncationMode is "
            "strict_error"
        )
        self.tokens = tokens
        self.budget = budget


class RouteNotFound(BadRequest):
    def __init__(self, path: str) -> None:
        super().__init__(f"route not found: {clip(path)}")


class MethodNotAllowed(BadRequest):
    def __init__(self, method: str, path: str, allowed: Iterable[str] = ()) -> None:
        # Sorted, for an Allow header that reads the same every time.
        self.allowed = sorted(allowed)
        super().__init__(f"{clip(method)} is not allowed on {clip(path)}")


class PayloadTooLarge(BadRequest):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the request body is larger than {limit / (1024 * 1024):g} MB (maxRequestBodyMB)"
        )


class RequestTimeout(BadRequest):
    def __init__(self, timeout: float) -> None:
        super().__init__(
            f"the request body stalled: nothing arrived for {timeout:g} s (requestBodyTimeout)"
        )


class Forbidden(TrioswapError):
    """A cross-site browser request, or a Host header trioswap does not answer to."""


class Unauthorized(TrioswapError):
    def __init__(self) -> None:
        super().__init__(
            "missing or invalid API key: send 'Authorization: Bearer <key>', 'x-api-key: <key>' "
            "or HTTP Basic auth with the key as password"
        )


class InternalError(TrioswapError):
    def __init__(self, request_id: str) -> None:
        super().__init__(
            f"trioswap failed unexpectedly (a bug); its log has the details under request id "
            f"{request_id}"
        )
