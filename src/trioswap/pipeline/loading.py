"""Loading progress in the client's API family (`sendLoadingState`).

A streaming request that has to wait for its model gets an event stream at once, so clients
don't time out and users see why they wait: a progress part, then the model's answer in the same
response. One writer per family, picked by the route:
- chat completions: chunks with `reasoning_content` deltas and no `role` (the openai SDK adds up
  every string of a delta, and the server's first chunk brings the role);
- Anthropic Messages: `message_start` and a thinking block (index 0), signed empty and stopped
  once the model is ready;
- Responses: `response.created`, `.in_progress` and a reasoning item whose summary text is the
  progress, done once the model is ready.
The two translated families' progress is a reasoning chunk fed to the family's own translator,
which then goes on with the answer when the request is translated (`translator`): one message id
or response id, block indexes, output indexes and sequence numbers going on. A native answer is
rewritten to follow (`relay`). A load that fails ends the response with the family's error event
(`failed`): an error chunk, `event: error`, `response.failed`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from trioswap.errors import TrioswapError
from trioswap.pipeline.relay import ChatRelay, MessagesRelay, Relay, ResponsesRelay
from trioswap.pipeline.translated import stream_failure
from trioswap.pipeline.translation import (
    ANTHROPIC,
    COUNT_PATHS,
    FAMILY_OF_PATH,
    RESPONSES,
    StreamTranslator,
)
from trioswap.protocols.anthropic_chat import MessageStream
from trioswap.protocols.errors import Family, stream_error_event
from trioswap.protocols.responses_chat import ResponseStream

READY = "Model loaded.\n"


class Progress(Protocol):
    # What goes on with a translated answer; None for chat completions, never translated.
    translator: StreamTranslator | None

    def note(self, text: str) -> bytes:
        """A line of progress."""

    def ready(self) -> bytes:
        """The model is ready: the last line, and the end of the progress part."""

    def failed(self, error: TrioswapError, request_id: str) -> bytes:
        """The event that ends the response when the load (or anything before the answer)
        fails."""

    def relay(self, model: str) -> Relay:
        """What rewrites the model server's own stream to continue this response."""


def progress_for(path: str, request: Mapping[str, Any], model: str) -> Progress | None:
    """The progress writer for a streaming request on `path`; None when the route has none or
    the request does not stream. `model`: as the client named it."""
    writer = _WRITERS.get(path)
    if writer is None or request.get("stream") is not True:
        return None
    return writer(request, model)


def first_line(model: str, ahead: int) -> str:
    return f"Loading model {model}…{f' ({_requests(ahead)} ahead)' if ahead else ''}\n"


def waiting_line(waited: float, ahead: int, loaded: bool) -> str:
    """`loaded`: the model is ready, and the request waits for a free slot."""
    what = "waiting for a free slot" if loaded else "still loading"
    return f"{what} ({waited:.0f}s{f', {_requests(ahead)} ahead' if ahead else ''})\n"


def _requests(count: int) -> str:
    return f"{count} request{'' if count == 1 else 's'}"


def _reasoning(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"reasoning_content": text}, "finish_reason": None}]}


class ChatProgress:
    translator: StreamTranslator | None = None

    def __init__(self, request: Mapping[str, Any], model: str) -> None:
        self._model = model
        self._created = int(time.time())

    def note(self, text: str) -> bytes:
        chunk = {
            "id": "trioswap-loading",
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            **_reasoning(text),
        }
        return f"data: {json.dumps(chunk)}\n\n".encode()

    def ready(self) -> bytes:
        # A blank line: the model's own reasoning goes on in the same field.
        return self.note(READY + "\n")

    def failed(self, error: TrioswapError, request_id: str) -> bytes:
        return stream_error_event(Family.OPENAI, error, request_id)

    def relay(self, model: str) -> Relay:
        return ChatRelay()


class AnthropicProgress:
    def __init__(self, request: Mapping[str, Any], model: str) -> None:
        self._stream = MessageStream(request)
        self.translator: StreamTranslator | None = self._stream
        self.failed = stream_failure(ANTHROPIC, self._stream)

    def note(self, text: str) -> bytes:
        return self._stream.feed(_reasoning(text))

    def ready(self) -> bytes:
        return self.note(READY) + self._stream.end_block()

    def relay(self, model: str) -> Relay:
        return MessagesRelay(model, self._stream.next_index)


class ResponsesProgress:
    def __init__(self, request: Mapping[str, Any], model: str) -> None:
        self._stream = ResponseStream(request)
        self.translator: StreamTranslator | None = self._stream
        self.failed = stream_failure(RESPONSES, self._stream)

    def note(self, text: str) -> bytes:
        return self._stream.feed(_reasoning(text))

    def ready(self) -> bytes:
        return self.note(READY) + self._stream.end_item()

    def relay(self, model: str) -> Relay:
        return ResponsesRelay(model, self._stream.hand_over())


_FAMILIES: dict[str, Callable[[Mapping[str, Any], str], Progress]] = {
    ANTHROPIC: AnthropicProgress,
    RESPONSES: ResponsesProgress,
}
# llama-swap's versionless `/v/…` routes too. count_tokens is answered at once: no progress.
_WRITERS = {
    "/v1/chat/completions": ChatProgress,
    "/v/chat/completions": ChatProgress,
    **{p: _FAMILIES[f] for p, f in FAMILY_OF_PATH.items() if p not in COUNT_PATHS},
}
