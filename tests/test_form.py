"""Finding a form's `model` part in its first bytes, however they arrive (`pipeline.form`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trioswap.pipeline.form import ModelScan, multipart_model

BOUNDARY = b"----WebKitFormBoundary7MA4YWxkTrZu0gW"


def part(head: bytes, value: bytes) -> bytes:
    return b"--" + BOUNDARY + b"\r\n" + head + b"\r\n\r\n" + value + b"\r\n"


def field(name: str, value: bytes) -> bytes:
    return part(b'Content-Disposition: form-data; name="' + name.encode() + b'"', value)


def end() -> bytes:
    return b"--" + BOUNDARY + b"--\r\n"


def scan_in_pieces(body: bytes, cuts: list[int]) -> tuple[ModelScan, bytearray]:
    data = bytearray(b"\r\n")
    scan = ModelScan(BOUNDARY)
    start = 0
    for cut in [*sorted(cuts), len(body)]:
        data += body[start:cut]
        start = max(start, cut)
        scan.feed(data)
    return scan, data


values = st.binary(max_size=300).filter(lambda v: b"\r\n--" + BOUNDARY not in b"\r\n" + v)


@given(
    before=st.lists(st.tuples(st.sampled_from(["file", "language", "prompt"]), values)),
    after=st.lists(st.tuples(st.sampled_from(["file", "language"]), values)),
    model=st.text(st.characters(exclude_categories=["Cs"]), max_size=40).map(str.strip),
    cuts=st.lists(st.integers(0, 2000)),
)
def test_the_model_is_found_however_the_bytes_are_cut(
    before: list[tuple[str, bytes]],
    after: list[tuple[str, bytes]],
    model: str,
    cuts: list[int],
) -> None:
    fields = [*before, ("model", model.encode()), *after]
    body = b"preamble\r\n" + b"".join(field(name, value) for name, value in fields) + end()
    scan, data = scan_in_pieces(body, cuts)
    assert scan.done
    assert scan.span is not None
    assert bytes(data[scan.span[0] : scan.span[1]]) == model.encode()
    assert multipart_model(body, b"multipart/form-data; boundary=" + BOUNDARY) == model


def test_the_model_is_found_fed_byte_by_byte() -> None:
    body = field("file", b"\r\n-" + BOUNDARY[:-1]) + field("model", b"m") + end()
    scan, data = scan_in_pieces(body, list(range(len(body))))
    assert scan.span is not None and data[scan.span[0] : scan.span[1]] == b"m"


def test_the_scan_waits_for_the_whole_value() -> None:
    body = field("model", b"a-model-name") + end()
    cut = body.index(b"-name")
    scan, _ = scan_in_pieces(body[:cut], [])
    assert not scan.done
    scan, data = scan_in_pieces(body, [cut, cut + 2])
    assert scan.span is not None and data[scan.span[0] : scan.span[1]] == b"a-model-name"


def test_a_form_without_a_model_ends_at_its_close_delimiter() -> None:
    scan, _ = scan_in_pieces(field("file", b"data") + end(), [5, 50])
    assert scan.done and scan.span is None
    scan, _ = scan_in_pieces(field("file", b"data"), [])
    assert not scan.done  # it may still come


def test_only_a_field_named_model_is_the_model() -> None:
    content_type = b"multipart/form-data; boundary=" + BOUNDARY
    not_model = [
        part(b'Content-Disposition: form-data; name="file"; filename="model"', b"x"),
        part(b'Content-Disposition: form-data; name="models"', b"x"),
        part(b'Content-Disposition: form-data; name="x"\r\nX-Note: name="model"', b"x"),
    ]
    for other in not_model:
        body = other + field("model", b"real") + end()
        assert multipart_model(body, content_type) == "real", other
    for head in (
        b"content-disposition: form-data; NAME=model",
        b'Content-Disposition: form-data; name="model"\r\nContent-Type: text/plain',
        b'Content-Type: text/plain\r\nContent-Disposition: form-data;name="model"',
    ):
        assert multipart_model(part(head, b" m \r\n") + end(), content_type) == "m", head
