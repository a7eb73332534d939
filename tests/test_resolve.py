"""Finding the model a request names: in JSON, multipart and urlencoded bodies, `?model=`, and
`/upstream/<model>/…` paths (forwarded byte for byte)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioswap.config import loads
from trioswap.errors import BadRequest, ModelNotFound, TrioswapError
from trioswap.pipeline.stages.resolve import (
    body_model,
    multipart_model,
    param_model,
    upstream_target,
)

CONFIG = loads(
    """
models:
  m:
    cmd: server --port ${PORT}
    aliases: [mini]
  org/model:
    cmd: server --port ${PORT}
"""
)
WEBKIT = b"----WebKitFormBoundary7MA4YWxkTrZu0gW"


def form(boundary: bytes, *fields: tuple[str, bytes]) -> bytes:
    parts = [
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="' + name.encode() + b'"\r\n\r\n' + value + b"\r\n"
        for name, value in fields
    ]
    return b"".join(parts) + b"--" + boundary + b"--\r\n"


def test_multipart_keeps_the_boundary_as_sent() -> None:
    body = form(WEBKIT, ("file", b"RIFF....WAVE"), ("model", b"mini"), ("language", b"en"))
    assert multipart_model(body, b"multipart/form-data; boundary=" + WEBKIT) == "mini"
    assert multipart_model(body, b'Multipart/Form-Data; BOUNDARY="' + WEBKIT + b'"') == "mini"


def test_multipart_without_a_model_field() -> None:
    body = (
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="model"\r\n\r\n'
        b"data\r\n--xyz--\r\n"
    )
    assert multipart_model(body, b"multipart/form-data; boundary=xyz") is None
    assert multipart_model(body, b"multipart/form-data") is None
    assert multipart_model(b"--xyz\r\nbroken", b"multipart/form-data; boundary=xyz") is None


def test_param_model() -> None:
    assert param_model(b"a=1&model=x%20y+z&b=2") == "x y z"
    assert param_model(b"model=caf%C3%A9") == "café"
    assert param_model(b"amodel=x") is None
    assert param_model(b"") is None


@pytest.mark.parametrize(
    ("body", "content_type", "name"),
    [
        (b'{"model": "m"}', b"application/json", "m"),
        (b'  {"model": "m"}', b"", "m"),  # no content type
        (b'{"model": "m"}', b"application/x-www-form-urlencoded", "m"),  # curl -d
        (b'{"model": "m"}', b"text/plain;charset=UTF-8", "m"),
        (b"model=mini&voice=x", b"application/x-www-form-urlencoded", "mini"),
        (b"RIFF\x00\x01WAVE", b"audio/wav", None),  # not parsed: ?model= decides
        (b"", b"application/json", None),
        (b'{"messages": []}', b"application/json", None),
    ],
)
def test_body_model(body: bytes, content_type: bytes, name: str | None) -> None:
    assert body_model(body, content_type)[0] == name


def test_body_model_keeps_the_parsed_json() -> None:
    assert body_model(b'{"model": "m", "stream": true}', b"")[1] == {"model": "m", "stream": True}
    assert body_model(b"model=m", b"application/x-www-form-urlencoded")[1] is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"model": ', "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"model": 5}', "must be a string"),
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b'{"model": "\xff"}', "not valid JSON"),
    ],
)
def test_bad_json_is_a_clear_400(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        body_model(body, b"application/json")


@pytest.mark.parametrize(
    ("raw", "name", "model_id", "rest"),
    [
        (b"/upstream/m/props", "m", "m", b"/props"),
        (b"/upstream/mini/v1/models", "mini", "m", b"/v1/models"),
        (b"/upstream/m", "m", "m", b"/"),
        (b"/upstream/%6D/a%3Fb%23c%2Fd%20e%C3%A9", "m", "m", b"/a%3Fb%23c%2Fd%20e%C3%A9"),
        (b"/upstream/org/model/health", "org/model", "org/model", b"/health"),
        (b"/upstream/org%2Fmodel/health", "org/model", "org/model", b"/health"),
        (b"/upstream/m/caf\xc3\xa9", "m", "m", b"/caf\xc3\xa9"),
    ],
)
def test_upstream_target(raw: bytes, name: str, model_id: str, rest: bytes) -> None:
    assert upstream_target(CONFIG, raw) == (name, model_id, rest)


@pytest.mark.parametrize(
    "raw",
    [
        b"/upstream/m/a%0d%0ab",
        b"/upstream/m/%00",
        b"/upstream/m/%7f",
        b"/upstream/m/\x01",
        b"/upstream/m%1F/x",
    ],
)
def test_control_characters_are_refused(raw: bytes) -> None:
    with pytest.raises(BadRequest, match="control character"):
        upstream_target(CONFIG, raw)


def test_unknown_upstream_model() -> None:
    with pytest.raises(ModelNotFound, match="'nope'"):
        upstream_target(CONFIG, b"/upstream/nope/props")
    with pytest.raises(ModelNotFound) as caught:
        upstream_target(CONFIG, b"/upstream/" + b"n" * 100_000 + b"/x")
    assert len(str(caught.value)) < 400
    with pytest.raises(BadRequest):
        upstream_target(CONFIG, b"/%75pstream/m/x")


@given(st.binary(max_size=60))
def test_any_upstream_path_is_refused_clearly_or_forwarded_intact(tail: bytes) -> None:
    raw = b"/upstream/m/" + tail
    try:
        name, model_id, rest = upstream_target(CONFIG, raw)
    except TrioswapError:
        return
    assert model_id == "m"
    # The part after the model goes on exactly as it came.
    assert raw.endswith(rest.removeprefix(b"/"))
    assert name in ("m", "mini")
