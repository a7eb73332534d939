"""Captures (`captureBuffer`, in MB; 0 is off): the request and reply of recent inference
requests, headers and bodies, kept in a ring of bounded size for `GET /api/captures/{id}`.

- `get(id)` is llama-swap's `ReqRespCapture` (internal/server/captures.go): `id`, `req_path`,
  `req_headers`, `req_body`, `resp_headers`, `resp_body`, headers as one value per
  canonically-spelt name (the first, as Go's `Header.Get`), bodies base64 (Go's `[]byte`), so
  its capture viewer reads ours. trioswap adds `method`, `resp_status`, `req_text` and
  `resp_text` (the body as text when it is UTF-8, else null), `req_truncated`, `resp_truncated`
  and `complete` (false while the reply still streams).
- As llama-swap's `captureFieldsByPath`, audio and image routes keep no binary bodies.
- Credentials never enter the ring: Authorization, Proxy-Authorization, Cookie, Set-Cookie,
  X-Api-Key and every header whose name `redact.is_secret_name` calls secret are masked.
- Bounded: a capture keeps at most `capture_bytes` of each body (a reply chunk that does not fit
  is dropped whole and the capture marked truncated: chunks are kept as they come and joined
  only when viewed), and the ring at most `max_bytes` altogether, evicting the oldest finished
  captures. Captures still streaming are not evicted; a chunk that fits nowhere is not kept.
- A compressed reply (gzip, deflate) is viewed decompressed, to at most `capture_bytes`, and
  then without its Content-Encoding, as llama-swap does.

`rebuild(capture)` reads a reply — a stream or a whole answer, in the chat completions,
Anthropic Messages or Responses format — back into `{"text", "reasoning", "tool_calls"}`.
"""

from __future__ import annotations

import base64
import codecs
import functools
import json
import zlib
from collections import deque
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from trioswap.clip import clip
from trioswap.errors import UpstreamProtocolError
from trioswap.protocols.sse import EventDecoder
from trioswap.redact import MASK, is_secret_name

HeaderPairs = Iterable[tuple[bytes, bytes]]

MiB = 1 << 20
# What a capture is counted beyond its bodies and headers (the objects holding them), so that
# a ring of tiny captures is bounded in number too.
OVERHEAD = 512
METHOD_CHARS = 16
_REQ_HEADERS, _REQ_BODY, _RESP_HEADERS, _RESP_BODY = 1, 2, 4, 8
_ALL = _REQ_HEADERS | _REQ_BODY | _RESP_HEADERS | _RESP_BODY
# llama-swap's captureFieldsByPath: routes whose bodies are large binary keep less.
_FIELDS_BY_PATH = {
    "/v1/audio/speech": _REQ_HEADERS | _REQ_BODY | _RESP_HEADERS,
    "/v1/audio/voices": _REQ_HEADERS | _RESP_HEADERS | _RESP_BODY,
    "/v1/audio/transcriptions": _REQ_HEADERS | _RESP_HEADERS | _RESP_BODY,
    "/v1/images/generations": _REQ_HEADERS | _REQ_BODY | _RESP_HEADERS,
    "/v1/images/edits": _REQ_HEADERS | _RESP_HEADERS,
    "/sdapi/v1/txt2img": _REQ_HEADERS | _REQ_BODY | _RESP_HEADERS,
    "/sdapi/v1/img2img": _REQ_HEADERS | _RESP_HEADERS,
}
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)
# Content-Encoding → zlib's window bits (gzip or zlib framing detected; deflate as raw too).
_ENCODINGS = {"gzip": (47,), "x-gzip": (47,), "deflate": (47, -15)}


def header_map(headers: HeaderPairs) -> dict[str, str]:
    """Headers as llama-swap shows them: `Content-Type` spelling, the first value of a repeated
    name, credentials masked."""
    out: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name, secret = _shown_name(raw_name)
        if name not in out:
            out[name] = MASK if secret else raw_value.decode("latin-1")
    return out


@functools.lru_cache(maxsize=1024)
def _shown_name(raw_name: bytes) -> tuple[str, bool]:
    """A header name as shown, and whether its value is a credential: worked out once per name
    (clients send the same few names on every request)."""
    name = "-".join(part.capitalize() for part in raw_name.decode("latin-1").split("-"))
    return name, name.lower() in _SECRET_HEADERS or is_secret_name(name)


def _headers_size(headers: dict[str, str]) -> int:
    return sum(len(name) + len(value) for name, value in headers.items())


class Capture:
    """One request and its reply, as they pass. Use it as a context manager or call `finish`
    when the exchange ends, however it ends: an unfinished capture is never evicted."""

    __slots__ = (
        "_chunks",
        "_fields",
        "_keeping",
        "_ring",
        "_room",
        "complete",
        "id",
        "method",
        "path",
        "request_body",
        "request_headers",
        "request_truncated",
        "response_headers",
        "response_truncated",
        "size",
        "status",
    )

    def __init__(self, ring: CaptureRing, capture_id: int, method: str, path: str) -> None:
        self._ring = ring
        self.id = capture_id
        self.method = clip(method, METHOD_CHARS)
        self.path = clip(path)
        self._fields = _FIELDS_BY_PATH.get(path, _ALL)
        self.request_headers: dict[str, str] = {}
        self.request_body: bytes | None = None
        self.request_truncated = False
        self.status: int | None = None
        self.response_headers: dict[str, str] = {}
        self._chunks: list[bytes] = []
        self._keeping = bool(self._fields & _RESP_BODY)
        self._room = ring.capture_bytes  # of reply body still kept
        self.response_truncated = False
        self.complete = False
        self.size = 0

    def add_request_body(self, body: bytes | None) -> None:
        """The request's body, once read (the proxy reads it after the capture starts)."""
        if body is None or not self._fields & _REQ_BODY or self.request_body is not None:
            return
        if len(body) > self._ring.capture_bytes:
            body = body[: self._ring.capture_bytes]
            self.request_truncated = True
        if self._ring._reserve(self, len(body)):
            self.request_body = body
        else:
            self.request_truncated = True

    def add_response_head(self, status: int, headers: HeaderPairs) -> None:
        self.status = status
        if self._fields & _RESP_HEADERS:
            kept = header_map(headers)
            if self._ring._reserve(self, _headers_size(kept)):
                self.response_headers = kept

    def add_response_chunk(self, chunk: bytes) -> None:
        """Keep `chunk` itself (it is not copied) while the capture and the ring have room."""
        if not self._keeping:
            return
        size = len(chunk)
        if size > self._room or not self._ring._reserve(self, size):
            self._keeping = False
            self.response_truncated = True
            return
        self._room -= size
        self._chunks.append(chunk)

    def finish(self) -> None:
        """The reply has ended (or never will): the capture may now be evicted."""
        if not self.complete:
            self.complete = True
            self._keeping = False
            self._ring._finished(self)

    def __enter__(self) -> Capture:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.finish()

    def response_body(self) -> tuple[bytes | None, bool]:
        """The reply body as kept, decompressed when it came compressed, and whether it was."""
        if not self._fields & _RESP_BODY:
            return None, False
        body = b"".join(self._chunks)
        encoding = self.response_headers.get("Content-Encoding", "").strip().lower()
        for bits in _ENCODINGS.get(encoding, ()):
            try:
                return zlib.decompressobj(bits).decompress(body, self._ring.capture_bytes), True
            except zlib.error:
                continue
        return body, False

    def view(self) -> dict[str, Any]:
        """llama-swap's `ReqRespCapture` plus trioswap's fields."""
        body, decoded = self.response_body()
        headers = self.response_headers
        truncated = self.response_truncated
        if decoded:
            headers = {name: v for name, v in headers.items() if name != "Content-Encoding"}
            truncated = truncated or len(body or b"") >= self._ring.capture_bytes
        return {
            "id": self.id,
            "req_path": self.path,
            "req_headers": self.request_headers,
            "req_body": _base64(self.request_body),
            "resp_headers": headers,
            "resp_body": _base64(body),
            "method": self.method,
            "resp_status": self.status,
            "req_text": _text(self.request_body, self.request_truncated),
            "resp_text": _text(body, truncated),
            "req_truncated": self.request_truncated,
            "resp_truncated": truncated,
            "complete": self.complete,
        }


def _base64(body: bytes | None) -> str | None:
    return None if body is None else base64.b64encode(body).decode("ascii")


def _text(body: bytes | None, truncated: bool) -> str | None:
    """`body` as text when it is UTF-8; a character that truncation cut in two is left out
    rather than making the whole body binary."""
    if body is None:
        return None
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(body, final=not truncated)
    except UnicodeDecodeError:
        return None


class CaptureRing:
    def __init__(self, max_bytes: int, capture_bytes: int | None = None) -> None:
        """At most `max_bytes` in all (`captureBuffer` MiB; a ring is only made when it is
        not 0), and `capture_bytes` of each body (a quarter of the ring unless given)."""
        if max_bytes <= 0:
            raise ValueError(f"a capture ring holds some bytes, not {max_bytes}")
        self.max_bytes = max_bytes
        self.capture_bytes = max_bytes // 4 if capture_bytes is None else capture_bytes
        self.size = 0
        self._captures: dict[int, Capture] = {}
        self._finished_order: deque[Capture] = deque()

    def __contains__(self, capture_id: object) -> bool:
        return capture_id in self._captures

    def __len__(self) -> int:
        return len(self._captures)

    def start(
        self,
        capture_id: int,
        method: str,
        path: str,
        request_headers: HeaderPairs,
        request_body: bytes | None,
    ) -> Capture:
        """A capture for the request with this id (the activity record's), replacing an
        older capture of that id."""
        old = self._captures.pop(capture_id, None)
        if old is not None:
            self.size -= old.size
            if old.complete:
                self._finished_order.remove(old)
        capture = Capture(self, capture_id, method, path)
        self._captures[capture_id] = capture
        if not self._reserve(capture, OVERHEAD):  # the ring is all captures still streaming
            del self._captures[capture_id]
            capture.finish()
            return capture
        if capture._fields & _REQ_HEADERS:
            headers = header_map(request_headers)
            if self._reserve(capture, _headers_size(headers)):
                capture.request_headers = headers
        capture.add_request_body(request_body)
        return capture

    def get(self, capture_id: int) -> dict[str, Any] | None:
        """The capture's JSON view, None when there is none (never taken, or evicted)."""
        capture = self._captures.get(capture_id)
        return None if capture is None else capture.view()

    def capture(self, capture_id: int) -> Capture | None:
        return self._captures.get(capture_id)

    def _reserve(self, capture: Capture, size: int) -> bool:
        """Count `size` more bytes for `capture`, evicting finished captures as needed; False,
        counting nothing, when even that leaves no room, or `capture` is finished (it never
        grows then) or no longer kept."""
        if capture.complete or self._captures.get(capture.id) is not capture:
            return False
        while self.size + size > self.max_bytes and self._finished_order:
            self._evict(self._finished_order.popleft())
        if self.size + size > self.max_bytes:
            return False
        self.size += size
        capture.size += size
        return True

    def _evict(self, capture: Capture) -> None:
        if self._captures.get(capture.id) is capture:
            del self._captures[capture.id]
            self.size -= capture.size

    def _finished(self, capture: Capture) -> None:
        if self._captures.get(capture.id) is capture:
            self._finished_order.append(capture)


def rebuild(capture: Capture) -> dict[str, Any]:
    """The reply read back as `{"text", "reasoning", "tool_calls": [{"id", "name",
    "arguments"}]}`, from a stream (chat completion chunks, Anthropic's events, Responses'
    events) or a whole answer in any of the three formats. What is unreadable is skipped."""
    body, _ = capture.response_body()
    reply = _Reply()
    if not body:
        return reply.result()
    content_type = capture.response_headers.get("Content-Type", "").lower()
    if "text/event-stream" in content_type or body.lstrip().startswith((b"data:", b"event:")):
        decoder = EventDecoder(f"capture {capture.id}")
        try:
            events = decoder.feed(body) + decoder.close()
        except UpstreamProtocolError:
            events = []
        for data in events:
            try:
                event = json.loads(data)
            except ValueError:  # [DONE], or an event cut short
                continue
            reply.event(event)
    else:
        try:
            answer = json.loads(body)
        except ValueError:
            return reply.result()
        reply.answer(answer)
    return reply.result()


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


class _Reply:
    """What the events (or a whole answer) add up to. Tool calls are keyed by where each format
    says a piece belongs: a chat delta's index, an Anthropic content block's index, a Responses
    item's id."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[object, dict[str, str]] = {}

    def result(self) -> dict[str, Any]:
        return {
            "text": "".join(self.text),
            "reasoning": "".join(self.reasoning),
            "tool_calls": list(self.calls.values()),
        }

    def call(self, key: object, call_id: object = None, name: object = None) -> dict[str, str]:
        call = self.calls.setdefault(key, {"id": "", "name": "", "arguments": ""})
        if not call["id"]:
            call["id"] = _str(call_id)
        if not call["name"]:
            call["name"] = _str(name)
        return call

    def event(self, event: object) -> None:
        if not isinstance(event, dict):
            return
        choices = event.get("choices")
        if isinstance(choices, list):
            self.chat_chunk(choices)
            return
        kind = event.get("type")
        if not isinstance(kind, str):
            return
        if kind.startswith("response."):
            self.responses_event(kind, event)
        else:
            self.anthropic_event(kind, event)

    def chat_chunk(self, choices: list[Any]) -> None:
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self.chat_message(delta)

    def chat_message(self, message: dict[str, Any]) -> None:
        """A delta, or a whole answer's message: content, reasoning, tool calls."""
        content = message.get("content")
        if isinstance(content, list):  # content parts
            content = "".join(_str(part.get("text")) for part in content if isinstance(part, dict))
        self.text.append(_str(content))
        self.reasoning.append(_str(message.get("reasoning_content")))
        self.reasoning.append(_str(message.get("reasoning")))
        calls = message.get("tool_calls")
        if not isinstance(calls, list):
            return
        for position, piece in enumerate(calls):
            if not isinstance(piece, dict):
                continue
            index = piece.get("index", position)
            function = piece.get("function")
            function = function if isinstance(function, dict) else {}
            call = self.call(("chat", index), piece.get("id"), function.get("name"))
            call["arguments"] += _str(function.get("arguments"))

    def anthropic_event(self, kind: str, event: dict[str, Any]) -> None:
        key = ("block", event.get("index"))
        if kind == "content_block_start":
            block = event.get("content_block")
            if isinstance(block, dict):
                self.anthropic_block(key, block, whole=False)
        elif kind == "content_block_delta":
            delta = event.get("delta")
            if not isinstance(delta, dict):
                return
            delta_kind = delta.get("type")
            if delta_kind == "text_delta":
                self.text.append(_str(delta.get("text")))
            elif delta_kind == "thinking_delta":
                self.reasoning.append(_str(delta.get("thinking")))
            elif delta_kind == "input_json_delta" and key in self.calls:
                self.calls[key]["arguments"] += _str(delta.get("partial_json"))

    def anthropic_block(self, key: object, block: dict[str, Any], *, whole: bool) -> None:
        kind = block.get("type")
        if kind == "text":
            self.text.append(_str(block.get("text")))
        elif kind == "thinking":
            self.reasoning.append(_str(block.get("thinking")))
        elif kind in ("tool_use", "server_tool_use"):
            call = self.call(key, block.get("id"), block.get("name"))
            tool_input = block.get("input")
            # A stream's block starts with `{}` and its input follows in deltas.
            if tool_input is not None and (whole or tool_input != {}):
                call["arguments"] = json.dumps(tool_input)

    def responses_event(self, kind: str, event: dict[str, Any]) -> None:
        if kind == "response.output_text.delta":
            self.text.append(_str(event.get("delta")))
        elif kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
            self.reasoning.append(_str(event.get("delta")))
        elif kind == "response.output_item.added":
            item = event.get("item")
            if isinstance(item, dict):
                self.responses_call(item, event.get("output_index"), whole=False)
        elif kind in (
            "response.function_call_arguments.delta",
            "response.custom_tool_call_input.delta",
        ):
            key = ("item", event.get("item_id") or event.get("output_index"))
            if key in self.calls:
                self.calls[key]["arguments"] += _str(event.get("delta"))
        elif kind in ("response.function_call_arguments.done", "response.output_item.done"):
            item = event.get("item", event)
            if isinstance(item, dict) and item.get("type", "function_call") in _CALL_ITEMS:
                key = ("item", item.get("item_id") or item.get("id") or event.get("output_index"))
                if key in self.calls and not self.calls[key]["arguments"]:
                    self.calls[key]["arguments"] = _str(_call_input(item))

    def responses_call(self, item: dict[str, Any], output_index: object, *, whole: bool) -> None:
        if item.get("type") not in _CALL_ITEMS:
            return
        key = ("item", item.get("id") or output_index)
        call = self.call(key, item.get("call_id") or item.get("id"), item.get("name"))
        if whole:
            call["arguments"] = _str(_call_input(item))

    def answer(self, answer: object) -> None:
        """A whole (not streamed) answer."""
        if not isinstance(answer, dict):
            return
        choices = answer.get("choices")
        output = answer.get("output")
        content = answer.get("content")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict) and choice.get("index", 0) == 0:
                    message = choice.get("message")
                    if isinstance(message, dict):
                        self.chat_message(message)
        elif isinstance(output, list):
            for index, item in enumerate(output):
                if not isinstance(item, dict):
                    continue
                if item.get("type") == "message":
                    self.text.extend(_part_texts(item.get("content")))
                elif item.get("type") == "reasoning":
                    self.reasoning.extend(_part_texts(item.get("content")))
                    self.reasoning.extend(_part_texts(item.get("summary")))
                else:
                    self.responses_call(item, index, whole=True)
        elif isinstance(content, list):
            for index, block in enumerate(content):
                if isinstance(block, dict):
                    self.anthropic_block(("block", index), block, whole=True)


# Responses items that are tool calls, and where each keeps its input.
_CALL_ITEMS = ("function_call", "custom_tool_call")


def _call_input(item: dict[str, Any]) -> object:
    return item.get("arguments", item.get("input"))


def _part_texts(parts: object) -> list[str]:
    if not isinstance(parts, list):
        return []
    return [_str(part.get("text")) for part in parts if isinstance(part, dict)]
