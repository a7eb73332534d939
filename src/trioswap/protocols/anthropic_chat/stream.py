"""One streamed reply: chat.completion.chunk objects in, Anthropic's SSE events out.

Anthropic's grammar: `message_start`; each content block in turn as `content_block_start`, its
deltas and `content_block_stop`; then `message_delta` (stop_reason, stop_sequence, usage) and
`message_stop`. Blocks never overlap, which decides the rest:

- Reasoning, text and a tool call each open a new block when the kind changes (thinking after
  text is a new thinking block). A thinking block ends with an empty `signature_delta`, the
  grammar's last delta of every thinking block; there is no signature to give.
- The first tool call streams live. Chat streams may interleave parallel calls' arguments by
  index, so calls that start while it is open are held and follow, whole and in order, when the
  choice finishes; so does text or reasoning that arrives after tool calls began.
- Blocks end at the chunk with a finish_reason; `message_delta` waits for `close`, as the usage
  chunk (stream_options.include_usage) comes after it. Its usage has input_tokens too: Claude
  Code reads them there. `message_start`'s usage is what the first chunk says, zeros unless the
  upstream reports usage on every chunk.
- Only the first choice (index 0) is translated.
- A chunk that reports an error (`{"error": …}`, as llama-server sends when generation fails
  mid-answer, or vLLM's `"object": "error"`) ends the stream with an `error` event.
- A delta is its block's prefix, computed when the block starts, and the piece as a JSON
  string: one string escape per piece. Chunks are parsed JSON, so objects are checked as dicts
  (a tenth of the cost of an ABC check).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii
from typing import Any

from trioswap.protocols.anthropic_chat.errors import stream_error_of
from trioswap.protocols.anthropic_chat.reply import (
    mapping,
    matched_stop,
    model_of,
    new_id,
    reasoning_of,
    stop_reason,
    stop_sequences,
    tool_id,
    tool_name,
    usage,
)

# A string as JSON, escaped to ASCII (a lone surrogate stays writable): what json.dumps does
# for a string, without its per-call overhead on the hot path.
_quote = encode_basestring_ascii
_TAIL = b"}}\n\n"
_PROSE_BLOCKS: dict[str, dict[str, Any]] = {
    "text": {"type": "text", "text": ""},
    "thinking": {"type": "thinking", "thinking": "", "signature": ""},
}
# kind of block → (delta type, the delta's field)
_DELTAS = {
    "text": ("text_delta", "text"),
    "thinking": ("thinking_delta", "thinking"),
    "tool": ("input_json_delta", "partial_json"),
}


def _event(name: str, payload: Mapping[str, Any]) -> bytes:
    data = json.dumps(payload, separators=(",", ":"))
    return f"event: {name}\ndata: {data}\n\n".encode()


_MESSAGE_STOP = _event("message_stop", {"type": "message_stop"})


class _Call:
    """A tool call of the chat stream: its block's start, and arguments while it is held."""

    __slots__ = ("id", "name", "parts")

    def __init__(self, call_id: str, name: str) -> None:
        self.id = call_id
        self.name = name
        self.parts: list[str] = []


class MessageStream:
    """One streamed reply: chat.completion.chunk objects in, Anthropic SSE events out.

    trioswap's loading progress is written through it too (reasoning chunks, then `end_block`),
    so the model's blocks follow with the next indexes. `message_started`: someone else already
    sent `message_start` (and maybe blocks: then they set `next_index`, the index of the next
    content block, before the first feed). After `close` or `error` the stream is over and every
    call returns nothing."""

    def __init__(self, request: Mapping[str, Any], *, message_started: bool = False) -> None:
        self.next_index = 0
        self._model = model_of(request)
        self._stops = stop_sequences(request)
        self._started = message_started
        self._done = False
        self._kind: str | None = None  # of the open block: text, thinking or tool
        self._head = b""  # the open block's delta prefix
        self._calls: dict[int, _Call] = {}  # by chat index, until the choice finishes
        self._live: _Call | None = None
        self._held: list[_Call] = []
        self._late: list[tuple[str, str]] = []  # (kind, text) after tool calls began
        self._tool_use = False
        self._finish: Any = None
        self._matched: str | None = None
        self._usage: Any = None
        self._timings: Any = None

    def feed(self, chunk: Mapping[str, Any]) -> bytes:
        """One parsed chunk as zero or more complete SSE events."""
        if self._done or not isinstance(chunk, dict):
            return b""
        failed = stream_error_of(chunk)
        if failed is not None:
            return self.error(*failed)
        out: list[bytes] = []
        if not self._started:
            self._started = True
            out.append(self._message_start(chunk))
        if chunk.get("usage") is not None:
            self._usage = chunk["usage"]
            self._timings = chunk.get("timings")
        choices = chunk.get("choices")
        choice = mapping(choices[0]) if isinstance(choices, list) and choices else mapping(None)
        if choice.get("index", 0) != 0:
            return b"".join(out)
        delta = choice.get("delta")
        if isinstance(delta, dict):
            self._delta(delta, out)
        finish = choice.get("finish_reason")
        if finish is not None or "__verbose" in chunk:
            self._matched = matched_stop(chunk, choice, self._stops) or self._matched
        if finish is not None:
            self._finish = finish
            self._end_blocks(out)
        return b"".join(out)

    def close(self) -> bytes:
        """The upstream stream ended: the open blocks' ends, `message_delta`, `message_stop`."""
        if self._done:
            return b""
        out: list[bytes] = []
        if not self._started:
            self._started = True
            out.append(self._message_start(mapping(None)))
        self._end_blocks(out)
        self._done = True
        reason, sequence = stop_reason(self._finish, self._tool_use, self._matched)
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": usage(self._usage, self._timings) or {"output_tokens": 0},
        }
        out.append(_event("message_delta", delta))
        out.append(_MESSAGE_STOP)
        return b"".join(out)

    def end_block(self) -> bytes:
        """Ends the open block: what comes next opens a new one (trioswap's loading progress
        is a thinking block of its own before the model's)."""
        out: list[bytes] = []
        self._stop(out)
        return b"".join(out)

    def error(self, error_type: str, message: str) -> bytes:
        """An `error` event in Anthropic's shape, which ends the stream."""
        if self._done:
            return b""
        self._done = True
        return _event("error", {"type": "error", "error": {"type": error_type, "message": message}})

    def _message_start(self, chunk: Mapping[str, Any]) -> bytes:
        message = {
            "id": new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage(chunk.get("usage"), chunk.get("timings"))
            or {"input_tokens": 0, "output_tokens": 0},
        }
        return _event("message_start", {"type": "message_start", "message": message})

    def _delta(self, delta: Mapping[str, Any], out: list[bytes]) -> None:
        reasoning = reasoning_of(delta)
        if reasoning and isinstance(reasoning, str):
            self._prose("thinking", reasoning, out)
        text = delta.get("content")
        if text and isinstance(text, str):
            self._prose("text", text, out)
        calls = delta.get("tool_calls")
        if calls and isinstance(calls, list):
            for position, call in enumerate(calls):
                if isinstance(call, dict):
                    self._tool(call, position, out)

    def _prose(self, kind: str, text: str, out: list[bytes]) -> None:
        if self._calls:
            self._late.append((kind, text))
            return
        if self._kind != kind:
            self._stop(out)
            self._start(kind, _PROSE_BLOCKS[kind], out)
        out.append(self._head + _quote(text).encode() + _TAIL)

    def _tool(self, call: Mapping[str, Any], position: int, out: list[bytes]) -> None:
        index = call.get("index")
        key = index if isinstance(index, int) else position
        function = mapping(call.get("function"))
        state = self._calls.get(key)
        if state is None:
            state = self._calls[key] = _Call(tool_id(call), tool_name(function))
            self._tool_use = True
            if self._live is None:
                self._stop(out)
                self._start_call(state, out)
            else:
                self._held.append(state)
        piece = function.get("arguments")
        if piece and isinstance(piece, str):
            if state is self._live:
                out.append(self._head + _quote(piece).encode() + _TAIL)
            else:
                state.parts.append(piece)

    def _start_call(self, call: _Call, out: list[bytes]) -> None:
        block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        self._start("tool", block, out)
        self._live = call

    def _start(self, kind: str, block: Mapping[str, Any], out: list[bytes]) -> None:
        index = self.next_index
        self.next_index += 1
        self._kind = kind
        start = {"type": "content_block_start", "index": index, "content_block": block}
        out.append(_event("content_block_start", start))
        delta_type, field = _DELTAS[kind]
        self._head = (
            'event: content_block_delta\ndata: {"type":"content_block_delta",'
            f'"index":{index},"delta":{{"type":"{delta_type}","{field}":'
        ).encode()

    def _stop(self, out: list[bytes]) -> None:
        if self._kind is None:
            return
        index = self.next_index - 1
        if self._kind == "thinking":
            signature = {"type": "signature_delta", "signature": ""}
            out.append(
                _event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": signature},
                )
            )
        out.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
        self._kind = None
        self._live = None

    def _end_blocks(self, out: list[bytes]) -> None:
        """Ends the open block, then sends the held tool calls and the late text, each whole."""
        self._stop(out)
        for call in self._held:
            self._start_call(call, out)
            if call.parts:
                out.append(self._head + _quote("".join(call.parts)).encode() + _TAIL)
            self._stop(out)
        late = self._late
        self._calls, self._held, self._late = {}, [], []
        for kind, text in late:
            self._prose(kind, text, out)
        self._stop(out)
