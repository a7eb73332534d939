"""A multipart form read only as far as its `model` field; the rest streams on as it arrives.

`read_body` reads a `multipart/form-data` body up to the end of its `model` part, so an upload
of any size passes through in chunks instead of being held whole. `resolve` takes the model from
it and may rename it (`useModelName`, a peer's own id for the model); the bytes read go upstream
with that one value replaced, then the rest of the body byte for byte, with the Content-Length
recomputed when the client sent one.

Clients send fields before files (the openai Python SDK, httpx, requests) or in the order they
were given (curl -F, the openai Node SDK). A model field that comes after more than
`FORM_HEAD_LIMIT` bytes is not waited for: such a request names its model in `?model=`, and the
form then goes on unchanged.

Only part boundaries are parsed here (the delimiter is CRLF "--" boundary, RFC 2046), and only
the Content-Disposition of each part: a full multipart parser (werkzeug's is installed) re-frames
the data and gives no byte offsets, while everything but the model's value must pass untouched.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from trioswap.pipeline.exchange import RequestBody

MIB = 1024 * 1024
# How much of a form is held, at most, to find its model field.
FORM_HEAD_LIMIT = 8 * MIB
LATE_MODEL = (
    f"the form's 'model' field does not come within its first {FORM_HEAD_LIMIT // MIB} MB: send "
    "it before the file, or name the model in the URL (?model=...)"
)
_CRLF = b"\r\n"
_BOUNDARY = re.compile(rb'boundary="?([^";]+)"?', re.IGNORECASE)
_MODEL_PART = re.compile(
    rb'^content-disposition:[^\r\n]*[;\s]name=(?:"model"|model(?=[;\s]|$))',
    re.IGNORECASE | re.MULTILINE,
)


class ModelScan:
    """Finds the `model` part in the first bytes of a form as they grow.

    The bytes fed start with a CRLF of the caller's, so that the first delimiter looks like
    every other one. `done` is set once the model's value is found (`span`) or the form ended
    without one; each byte is searched about once however the bytes arrive."""

    __slots__ = ("_at", "_delimiter", "_head_at", "_is_model", "_value", "done", "span")

    def __init__(self, boundary: bytes) -> None:
        self._delimiter = b"\r\n--" + boundary
        # Where the next delimiter may start, and where the end of a part's headers may.
        self._at = 0
        self._head_at = 0
        # Where the current part's value starts, once its headers are in.
        self._value: int | None = None
        self._is_model = False
        self.span: tuple[int, int] | None = None
        self.done = False

    def feed(self, data: bytes | bytearray) -> None:
        """Look through what is new in `data`, which holds what it held before and more."""
        delimiter = self._delimiter
        while not self.done:
            if self._value is None:
                start = data.find(delimiter, self._at)
                if start == -1:
                    self._at = max(self._at, len(data) - len(delimiter) + 1)
                    return
                # Found again next time if the part's headers are not all in yet.
                if start != self._at:
                    self._at = self._head_at = start
                after = start + len(delimiter)
                if data[after : after + 2] == b"--":  # the close delimiter
                    self.done = True
                    return
                line_end = data.find(_CRLF, after)
                head_end = (
                    -1 if line_end == -1 else data.find(b"\r\n\r\n", max(line_end, self._head_at))
                )
                if head_end == -1:
                    self._head_at = max(self._head_at, len(data) - 3)
                    return
                self._is_model = _MODEL_PART.search(data, line_end + 2, head_end) is not None
                self._value = self._at = head_end + 4
            end = data.find(delimiter, self._at)
            if end == -1:
                self._at = max(self._at, len(data) - len(delimiter) + 1)
                return
            if self._is_model:
                self.span = (self._value, end)
                self.done = True
                return
            self._value = None
            self._at = self._head_at = end


def form_boundary(content_type: bytes) -> bytes | None:
    match = _BOUNDARY.search(content_type)
    return None if match is None else match[1]


def model_value(data: bytes | bytearray, span: tuple[int, int]) -> str:
    return bytes(data[span[0] : span[1]]).decode(errors="replace").strip()


def multipart_model(body: bytes, content_type: bytes) -> str | None:
    """The `model` field of a whole form."""
    boundary = form_boundary(content_type)
    if boundary is None:
        return None
    data = _CRLF + body
    scan = ModelScan(boundary)
    scan.feed(data)
    return None if scan.span is None else model_value(data, scan.span)


class FormBody:
    """A form's request body (see `pipeline.exchange.RequestBody`): the bytes read to find its
    model, that value renamed if `rename` was called, then the rest as it arrives."""

    __slots__ = (
        "_body",
        "_head",
        "_length",
        "_rest",
        "_span",
        "framing",
        "model",
        "model_late",
        "present",
    )

    def __init__(
        self,
        body: RequestBody,
        rest: AsyncIterator[bytes],
        head: bytearray,
        span: tuple[int, int] | None = None,
        model_late: bool = False,
    ) -> None:
        self._body = body
        self._rest = rest
        # Starts with the CRLF the scan needed, which is not sent.
        self._head: bytearray | None = head
        self._span = span
        self.model = None if span is None else model_value(head, span)
        # Whether the form may name its model after the bytes that were read.
        self.model_late = model_late
        self.present = body.present
        self.framing = body.framing
        self._length: int | None = None
        for name, value in body.framing:
            if name == b"content-length":
                self._length = int(value)

    def rename(self, name: str) -> None:
        """Send `name` as the form's model field (if it has one among the bytes read)."""
        head, span = self._head, self._span
        if head is None or span is None:
            return
        value = name.encode()
        head[span[0] : span[1]] = value
        self._span = (span[0], span[0] + len(value))
        if self._length is not None:
            self._length += len(value) - (span[1] - span[0])
            self.framing = [(b"content-length", str(self._length).encode())]

    def check(self) -> None:
        self._body.check()

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self])

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        head = self._head
        if head is None:
            return await self._rest.__anext__()
        self._head = None
        return bytes(memoryview(head)[len(_CRLF) :])


async def read_form(body: RequestBody, content_type: bytes) -> FormBody:
    """The form `body`, read as far as its model field (at most about `FORM_HEAD_LIMIT`)."""
    body.check()
    head = bytearray(_CRLF)
    rest = aiter(body)
    boundary = form_boundary(content_type)
    if boundary is None:
        return FormBody(body, rest, head)
    scan = ModelScan(boundary)
    async for chunk in rest:
        head += chunk
        scan.feed(head)
        if scan.done or len(head) > FORM_HEAD_LIMIT:
            break
    return FormBody(body, rest, head, scan.span, not scan.done and len(head) > FORM_HEAD_LIMIT)
