"""Fuzz target: finding the model in a request body (`body_model`) and a query (`param_model`).

Any body under any content type either names a model (or none) or raises BadRequest, never
another exception; a parsed JSON body's `model` is the name returned, and the name, clipped as
it is for log lines and error bodies, can be written out as UTF-8; and a JSON, multipart or
urlencoded body built here around a known model name gives that name back."""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import urlencode

import atheris

with atheris.instrument_imports():
    from trioswap.clip import clip
    from trioswap.errors import BadRequest
    from trioswap.pipeline.stages.resolve import body_model, param_model

CONTENT_TYPES = (
    b"application/json",
    b"application/json; charset=utf-8",
    b"",
    b"text/plain",
    b"text/plain;charset=UTF-8",
    b"application/x-www-form-urlencoded",
    b"application/octet-stream",
    b"audio/wav",
    b"application/vnd.api+json",
    b"Application/JSON",
)
# RFC 2046 boundary characters (no space: it may not end one, and browsers never use it).
BCHARS = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=?"
BROWSER_BOUNDARIES = (
    b"----WebKitFormBoundary7MA4YWxkTrZu0gW",
    b"---------------------------974767299852498929531610575",
    b"------------------------d74496d66958873e",
)
OTHER_FIELDS = ("file", "language", "prompt", "temperature", "response_format")


def check(body: bytes, content_type: bytes) -> tuple[str | None, dict[str, Any] | None]:
    name, parsed = body_model(body, content_type)
    assert name is None or isinstance(name, str), name
    if name is not None:
        clip(name).encode()
    if parsed is not None:
        assert isinstance(parsed, dict)
        model = parsed.get("model")
        assert model == name, (model, name)
    return name, parsed


def boundary(fdp: atheris.FuzzedDataProvider) -> bytes:
    if fdp.ConsumeBool():
        return BROWSER_BOUNDARIES[fdp.ConsumeIntInRange(0, len(BROWSER_BOUNDARIES) - 1)]
    raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 70))
    chars = bytes(BCHARS[b % len(BCHARS)] for b in raw)
    return chars or b"x"


def multipart_content_type(fdp: atheris.FuzzedDataProvider, bound: bytes) -> bytes:
    media = b"Multipart/Form-Data" if fdp.ConsumeBool() else b"multipart/form-data"
    key = b"BOUNDARY" if fdp.ConsumeBool() else b"boundary"
    value = b'"' + bound + b'"' if fdp.ConsumeBool() else bound
    tail = b"; charset=utf-8" if fdp.ConsumeBool() else b""
    return media + b"; " + key + b"=" + value + tail


def known_multipart(fdp: atheris.FuzzedDataProvider) -> None:
    """A form as a browser or curl sends it, with the model field somewhere among others."""
    bound = boundary(fdp)
    content_type = multipart_content_type(fdp, bound)
    model = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 64))
    delimiter = b"\r\n--" + bound
    fields: list[tuple[str, bytes]] = []
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        fields.append(
            (
                OTHER_FIELDS[fdp.ConsumeIntInRange(0, len(OTHER_FIELDS) - 1)],
                fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)),
            )
        )
    fields.insert(fdp.ConsumeIntInRange(0, len(fields)), ("model", model.encode()))
    # A client picks a boundary that occurs in none of its values, and the value is read
    # stripped of surrounding whitespace.
    if model != model.strip() or any(delimiter in b"\r\n" + value for _, value in fields):
        return
    parts = []
    for field, value in fields:
        filename = b'; filename="audio.wav"' if field == "file" else b""
        head = b'Content-Disposition: form-data; name="' + field.encode() + b'"' + filename
        if field == "file":
            head += b"\r\nContent-Type: audio/wav"
        parts.append(b"--" + bound + b"\r\n" + head + b"\r\n\r\n" + value + b"\r\n")
    body = b"".join(parts) + b"--" + bound + b"--\r\n"
    name, parsed = check(body, content_type)
    assert name == model, (name, model)
    assert parsed is None


def known_json(fdp: atheris.FuzzedDataProvider) -> None:
    model = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 64))
    if fdp.ConsumeBool():  # JSON escapes can carry a lone surrogate (a low one stays lone)
        model += "\udc00"
    document: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
    document["model"] = model
    if fdp.ConsumeBool():
        document["stream"] = True
    ascii_only = fdp.ConsumeBool()
    try:
        body = json.dumps(document, ensure_ascii=ascii_only).encode()
    except UnicodeEncodeError:  # unescaped, a lone surrogate cannot be UTF-8
        return
    if fdp.ConsumeBool():
        body = b" \r\n\t" + body
    content_type = CONTENT_TYPES[fdp.ConsumeIntInRange(0, len(CONTENT_TYPES) - 1)]
    name, parsed = check(body, content_type)
    assert name == model and parsed == document, (name, model)


def known_params(fdp: atheris.FuzzedDataProvider) -> None:
    model = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 64))
    params = [("model", model)]
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        key = fdp.ConsumeUnicodeNoSurrogates(8)
        if key != "model":
            params.insert(fdp.ConsumeIntInRange(0, len(params)), (key, fdp.ConsumeUnicode(8)))
    try:
        encoded = urlencode(params).encode()
    except UnicodeEncodeError:
        return
    assert param_model(encoded) == model
    if encoded.lstrip()[:1] != b"{":
        name, parsed = check(encoded, b"application/x-www-form-urlencoded")
        assert name == model and parsed is None


def anything(fdp: atheris.FuzzedDataProvider) -> None:
    choice = fdp.ConsumeIntInRange(0, 3)
    if choice == 0:
        content_type = CONTENT_TYPES[fdp.ConsumeIntInRange(0, len(CONTENT_TYPES) - 1)]
    elif choice == 1:
        content_type = multipart_content_type(fdp, boundary(fdp))
    elif choice == 2:
        content_type = b"multipart/form-data; boundary=" + fdp.ConsumeBytes(
            fdp.ConsumeIntInRange(0, 80)
        )
    else:
        content_type = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 120))
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        check(body, content_type)
    except BadRequest as exc:
        str(exc).encode()  # the error body and the log line can be written out
    name = param_model(body)
    assert name is None or isinstance(name, str)


MODES = (anything, known_json, known_multipart, known_params)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    MODES[fdp.ConsumeIntInRange(0, len(MODES) - 1)](fdp)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
