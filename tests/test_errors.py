"""Errors: statuses by class (most specific first), bodies in each family's shape with request
ids, and the one boundary where the upstream client's exceptions become trioswap's."""

from __future__ import annotations

import json

import pytest

from trioswap.config import loads
from trioswap.errors import (
    BadRequest,
    Forbidden,
    InternalError,
    MethodNotAllowed,
    ModelNotFound,
    PayloadTooLarge,
    RequestTimeout,
    ShuttingDown,
    TrioswapError,
    Unauthorized,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from trioswap.pipeline.transport_errors import (
    ConnectError,
    ConnectTimeout,
    LocalProtocolError,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    TimeoutException,
    UnsupportedProtocol,
    WriteError,
    WriteTimeout,
)
from trioswap.pipeline.upstream import upstream_errors, upstream_timeouts, upstream_url
from trioswap.protocols.errors import (
    Family,
    error_body,
    error_headers,
    new_request_id,
    status_of,
    stream_error_event,
)

MODEL = loads(
    """
models:
  m:
    cmd: server --port 5800
    proxy: http://127.0.0.1:5800
    timeouts: {connect: 3, responseHeader: 45}
  unbounded:
    cmd: server
    proxy: http://127.0.0.1:5801/base
    timeouts: {connect: 0, responseHeader: 0}
"""
).models


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (BadRequest("x"), 400),
        (MethodNotAllowed("GET", "/v1/chat/completions"), 405),
        (RequestTimeout(60), 408),
        (PayloadTooLarge(1024 * 1024), 413),
        (Unauthorized(), 401),
        (Forbidden("x"), 403),
        (ModelNotFound("x"), 404),
        (UpstreamError("m", "x"), 502),
        (UpstreamConnectError("m", "x"), 502),
        (UpstreamDisconnected("m", "x"), 502),
        (UpstreamProtocolError("m", "x"), 502),
        (UpstreamTimeout("m", "x"), 504),
        (ShuttingDown(), 503),
        (InternalError("req_1"), 500),
        (TrioswapError("x"), 500),
        (RuntimeError("x"), 500),
    ],
)
def test_status_by_class(error: Exception, status: int) -> None:
    assert status_of(error) == status


def test_a_new_subclass_answers_as_its_parent() -> None:
    class UpstreamGone(UpstreamDisconnected):
        pass

    class TooLong(BadRequest):
        pass

    assert status_of(UpstreamGone("m", "x")) == 502
    assert status_of(TooLong("x")) == 400


def test_bodies_in_each_family_carry_the_request_id() -> None:
    request_id = new_request_id()
    openai = error_body(Family.OPENAI, ModelNotFound("nope"), request_id)
    assert openai == {
        "error": {
            "message": "model 'nope' is not in the config (see GET /v1/models)",
            "type": "invalid_request_error",
            "code": "model_not_found",
            "param": "model",
        },
        "request_id": request_id,
    }
    anthropic = error_body(Family.ANTHROPIC, PayloadTooLarge(2 * 1024 * 1024), request_id)
    assert anthropic == {
        "type": "error",
        "error": {
            "type": "request_too_large",
            "message": "the request body is larger than 2 MB (maxRequestBodyMB)",
        },
        "request_id": request_id,
    }
    event = stream_error_event(Family.ANTHROPIC, UpstreamTimeout("m", "x"), request_id)
    assert event.startswith(b"event: error\ndata: ")
    assert json.loads(event.split(b"data: ")[1])["request_id"] == request_id
    assert new_request_id() != request_id


def test_error_headers() -> None:
    assert dict(error_headers(Unauthorized(), "req_1")) == {
        b"x-request-id": b"req_1",
        b"www-authenticate": b'Basic realm="trioswap"',
    }
    # The body was left unread: the connection cannot be reused.
    assert (b"connection", b"close") in error_headers(PayloadTooLarge(1), "req_1")
    assert (b"connection", b"close") in error_headers(RequestTimeout(1), "req_1")
    assert error_headers(ModelNotFound("x"), "req_1") == [(b"x-request-id", b"req_1")]


@pytest.mark.parametrize(
    ("raised", "kind", "words"),
    [
        (ConnectTimeout(""), UpstreamTimeout, ["3 s", "timeouts.connect"]),
        (ReadTimeout(""), UpstreamTimeout, ["45 s", "timeouts.responseHeader"]),
        (WriteTimeout(""), UpstreamTimeout, ["timeouts.responseHeader"]),
        # A timeout with no config key of its own (httpcore's PoolTimeout was one).
        (TimeoutException(""), UpstreamTimeout, ["TimeoutException"]),
        (ConnectError("refused"), UpstreamConnectError, ["cannot connect", "refused"]),
        (ReadError("reset by peer"), UpstreamDisconnected, ["reset by peer"]),
        (WriteError(""), UpstreamDisconnected, ["WriteError"]),
        (RemoteProtocolError("bad status line"), UpstreamProtocolError, ["bad status"]),
        (LocalProtocolError("bad"), UpstreamProtocolError, ["cannot be forwarded"]),
        (UnsupportedProtocol("ftp"), UpstreamConnectError, ["ftp"]),
    ],
)
def test_transport_errors_become_specific_upstream_errors(
    raised: Exception, kind: type[UpstreamError], words: list[str]
) -> None:
    with pytest.raises(kind) as caught, upstream_errors(MODEL["m"]):
        raise raised
    assert type(caught.value) is kind
    assert caught.value.model == "m"
    assert caught.value.__cause__ is raised
    for word in words:
        assert word in str(caught.value)


def test_other_errors_pass_the_boundary_untouched() -> None:
    with pytest.raises(ModelNotFound), upstream_errors(MODEL["m"]):
        raise ModelNotFound("x")


def test_upstream_detail_is_clipped() -> None:
    error = UpstreamProtocolError("m", "line one\nline two" + "x" * 10_000)
    assert "\n" not in str(error)
    assert len(str(error)) < 2200


def test_timeouts_per_model() -> None:
    assert upstream_timeouts(MODEL["m"]) == {
        "connect": 3.0,
        "read": 45.0,
        "write": 45.0,
        "pool": None,
    }
    assert upstream_timeouts(MODEL["unbounded"]) == {
        "connect": None,
        "read": None,
        "write": None,
        "pool": None,
    }


def test_upstream_url_keeps_the_target_as_sent() -> None:
    url = upstream_url("http://127.0.0.1:5800", b"/a%2Fb%20c", b"x=%3F&y=1")
    assert (url.scheme, url.host, url.port) == (b"http", b"127.0.0.1", 5800)
    assert url.target == b"/a%2Fb%20c?x=%3F&y=1"
    assert upstream_url("http://127.0.0.1:5801/base", b"/v1/models", b"").target == (
        b"/base/v1/models"
    )
    # Raw bytes outside ASCII cannot go in an HTTP/1.1 request line: percent-encoded.
    assert upstream_url("http://h:1", b"/caf\xc3\xa9", b"q=\xff").target == b"/caf%C3%A9?q=%FF"
