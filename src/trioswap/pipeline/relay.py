"""A model server's own event stream, continuing a response that trioswap began with loading
progress (`loading.py`).

The client already has the response's opening and a progress part; the server's stream must
follow as the same response, so each family's events are rewritten to fit:
- chat completions: as they are (a chunk says nothing about what came before it);
- Anthropic Messages: `message_start` dropped (the client has one) but its usage kept for
  `message_delta` (where the real API gives only output_tokens, and clients read input_tokens
  from either), every block's `index` moved past the progress block;
- Responses: `response.created`, `.queued` and `.in_progress` dropped, `output_index` moved past
  the progress item, sequence numbers going on from trioswap's, and the response object of the
  last event (`response.completed`, `.incomplete`, `.failed`) given trioswap's id and creation
  time, the progress item first in its `output`.

Events are decoded whole and written again named by their `type`. Only the answers of requests
that waited for a load come this way, so clarity wins over the hot path's byte splicing.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from trioswap.errors import TrioswapError, UpstreamProtocolError
from trioswap.pipeline.translated import parse_object
from trioswap.protocols.errors import Family, stream_error_event
from trioswap.protocols.responses_chat.output import finished
from trioswap.protocols.responses_chat.stream import Continuation
from trioswap.protocols.sse import EventDecoder

_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
_DONE = b"data: [DONE]\n\n"
# A Responses stream's opening, which the client already has from trioswap.
_OPENING = frozenset({"response.created", "response.queued", "response.in_progress"})


class Relay(Protocol):
    def feed(self, chunk: bytes) -> bytes:
        """The server's bytes as they arrive → what the client gets (whole events)."""

    def close(self) -> bytes:
        """The server's stream ended."""

    def failed(self, error: TrioswapError, request_id: str) -> bytes:
        """The event that ends the response when trioswap fails it."""


class ChatRelay:
    __slots__ = ()

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def close(self) -> bytes:
        return b""

    def failed(self, error: TrioswapError, request_id: str) -> bytes:
        return stream_error_event(Family.OPENAI, error, request_id)


class _Events:
    """Decodes the server's events; `_rewrite` changes each in place, or drops it."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._decoder = EventDecoder(model)

    def feed(self, chunk: bytes) -> bytes:
        return b"".join(self._event(data) for data in self._decoder.feed(chunk))

    def close(self) -> bytes:
        return b"".join(self._event(data) for data in self._decoder.close())

    def _event(self, data: bytes) -> bytes:
        if data == b"[DONE]":
            return _DONE
        event = parse_object(data, self._model)
        kind = event.get("type")
        if not isinstance(kind, str):
            detail = f"sent an event without a type: {data[:200]!r}"
            raise UpstreamProtocolError(self._model, detail)
        if not self._rewrite(kind, event):
            return b""
        return f"event: {kind}\ndata: {_ENCODE(event)}\n\n".encode()

    def _rewrite(self, kind: str, event: dict[str, Any]) -> bool:
        raise NotImplementedError


class MessagesRelay(_Events):
    """`offset`: how many blocks trioswap's progress took."""

    def __init__(self, model: str, offset: int) -> None:
        super().__init__(model)
        self._offset = offset
        self._usage: dict[str, Any] = {}  # message_start's

    def _rewrite(self, kind: str, event: dict[str, Any]) -> bool:
        if kind == "message_start":
            message = event.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
            self._usage = usage if isinstance(usage, dict) else {}
            return False
        if kind == "message_delta" and isinstance(usage := event.get("usage"), dict):
            event["usage"] = {**self._usage, **usage}
        index = event.get("index")
        if type(index) is int:
            event["index"] = index + self._offset
        return True

    def failed(self, error: TrioswapError, request_id: str) -> bytes:
        return stream_error_event(Family.ANTHROPIC, error, request_id)


class ResponsesRelay(_Events):
    """`begun`: the response as trioswap opened it, its next sequence number and the progress
    items."""

    def __init__(self, model: str, begun: Continuation) -> None:
        super().__init__(model)
        self._response = begun.response
        self._sequence = begun.sequence_number
        self._before = begun.output
        self._done: list[Any] = []  # the server's items, once done

    def _rewrite(self, kind: str, event: dict[str, Any]) -> bool:
        if kind in _OPENING:
            return False
        index = event.get("output_index")
        if type(index) is int:
            event["output_index"] = index + len(self._before)
        if kind == "response.output_item.done":
            self._done.append(event.get("item"))
        response = event.get("response")
        if isinstance(response, dict):
            output = response.get("output")
            response["id"] = self._response["id"]
            response["created_at"] = self._response["created_at"]
            response["output"] = [*self._before, *(output if isinstance(output, list) else ())]
        event["sequence_number"] = self._next()
        return True

    def failed(self, error: TrioswapError, request_id: str) -> bytes:
        response = finished(self._response, "failed", [*self._before, *self._done], None, None)
        response["error"] = {"code": "server_error", "message": f"{error} (request {request_id})"}
        event = {"type": "response.failed", "response": response, "sequence_number": self._next()}
        return f"event: response.failed\ndata: {_ENCODE(event)}\n\n".encode()

    def _next(self) -> int:
        self._sequence += 1
        return self._sequence - 1
