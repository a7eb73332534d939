"""One streamed reply: chat.completion.chunk objects in, Responses server-sent events out.

Events come in the order Codex and the openai SDK read them: `response.created` and
`response.in_progress`; per item `response.output_item.added`, its deltas, its `.done` events and
`response.output_item.done`; then `response.completed` (or `response.incomplete` after a length
cut, `response.failed` after an error). Each event has a `sequence_number` counting from 0.

A reasoning or message item stays open while its kind of text keeps coming and is done when
another item starts. Tool calls are items of their own, one per chunk `index` (parallel calls
may interleave); each stays open, its argument deltas routed by index, until the answer ends.
A call's item is added once its name is known. Custom tool calls (sent to the server as
functions with one `input` argument) are decoded when whole, so their input comes in one delta.

Events are JSON with non-ASCII escaped: a server's text may hold a lone surrogate, which could
not be written as UTF-8. A delta event, one per chunk, is its item's prefix (made when the item
opens), the piece as a JSON string, and the sequence number: one `json.dumps` of a string.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from trioswap.protocols.responses_chat.errors import openai_error
from trioswap.protocols.responses_chat.output import (
    Json,
    base_response,
    call_item,
    custom_tool_names,
    finished,
    message_item,
    new_id,
    outcome,
    output_text,
    reasoning_item,
    usage_from_chat,
)

MESSAGE = "message"
REASONING = "reasoning"
_EMPTY: Mapping[str, Any] = {}
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
# The codes a failed response carries: documented ones that can happen here, and
# context_length_exceeded, which OpenAI sends and Codex acts on. Any other is a server_error.
_FAILED_CODES = frozenset(
    {"server_error", "rate_limit_exceeded", "invalid_prompt", "context_length_exceeded"}
)


def _delta_head(kind: str, item_id: str, index: int, **fields: object) -> str:
    """A delta event up to its delta's value."""
    event = _ENCODE({"type": kind, "item_id": item_id, "output_index": index, **fields})
    return f'event: {kind}\ndata: {event[:-1]},"delta":'


class _Text:
    """The open reasoning or message item."""

    __slots__ = ("delta_head", "index", "item_id", "kind", "parts")

    def __init__(self, kind: str, index: int, item_id: str) -> None:
        self.kind = kind
        self.index = index
        self.item_id = item_id
        self.parts: list[str] = []
        if kind == MESSAGE:
            self.delta_head = _delta_head(
                "response.output_text.delta", item_id, index, content_index=0, logprobs=[]
            )
        else:
            self.delta_head = _delta_head(
                "response.reasoning_summary_text.delta", item_id, index, summary_index=0
            )


class _Call:
    """A tool call; `index` is its output index once its item is added, else -1."""

    __slots__ = ("arguments", "call_id", "custom", "delta_head", "index", "item_id", "name")

    def __init__(self) -> None:
        self.call_id = ""
        self.name = ""
        self.arguments: list[str] = []
        self.index = -1
        self.item_id = ""
        self.custom = False
        self.delta_head = ""


class Continuation(NamedTuple):
    """What a stream continued by someone else needs: the response as it was opened, the next
    sequence number, and the items done so far."""

    response: Json
    sequence_number: int
    output: list[Json]


class ResponseStream:
    """One streamed reply: chat.completion.chunk objects in, Responses SSE events out.

    trioswap's loading progress is written through it too (reasoning chunks, then `end_item`),
    so the model's answer continues the same response: one id, sequence numbers and output
    indexes going on. A server's own Responses stream continues it from `hand_over()`."""

    __slots__ = (
        "_base",
        "_calls",
        "_custom",
        "_ended",
        "_finish",
        "_out",
        "_output",
        "_seq",
        "_started",
        "_text",
        "_usage",
    )

    def __init__(self, request: Mapping[str, Any]) -> None:
        self._custom = custom_tool_names(request)
        self._base = base_response(request, new_id("resp"), int(time.time()))
        self._seq = 0
        self._started = False
        self._ended = False
        self._out: list[bytes] = []
        self._output: list[Json | None] = []  # each item once done, by output index
        self._text: _Text | None = None
        self._calls: dict[int, _Call] = {}  # by the chunks' tool call index
        self._usage: object = None
        self._finish: object = None

    def feed(self, chunk: Mapping[str, Any]) -> bytes:
        """One parsed chunk → zero or more complete events."""
        if self._ended:
            return b""
        self._begin()
        error = chunk.get("error")
        if error:
            detail = openai_error(error, 500, "the model server failed")
            return self.error(detail["code"] or "", detail["message"])
        usage = chunk.get("usage")
        if usage is not None:
            self._usage = usage
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        if isinstance(choice, Mapping):
            delta = choice.get("delta")
            if isinstance(delta, Mapping):
                self._delta(delta)
            finish = choice.get("finish_reason")
            if finish is not None:
                self._finish = finish
        return self._flush()

    def close(self) -> bytes:
        """The upstream ended: finish what is open, then response.completed (or
        response.incomplete) with the usage."""
        if self._ended:
            return b""
        self._begin()
        status, reason = outcome(self._finish)
        self._close_text(status)
        for call in self._calls.values():
            if call.index < 0:  # never named
                self._add_call(call)
            self._close_call(call, status)
        if not self._output:
            self._text = self._add_text(MESSAGE)
            self._close_text(status)
        output = [item for item in self._output if item is not None]
        response = finished(self._base, status, output, usage_from_chat(self._usage), reason)
        self._emit(f"response.{status}", {"response": response})
        self._ended = True
        return self._flush()

    def error(self, code: str, message: str) -> bytes:
        """response.failed, ending the stream. Items still open are left so: a tool call cut
        short is never handed over as done. `code` is kept if a failed response may carry it
        (server_error, rate_limit_exceeded, context_length_exceeded...), else server_error."""
        if self._ended:
            return b""
        self._begin()
        output = [item for item in self._output if item is not None]
        response = finished(self._base, "failed", output, usage_from_chat(self._usage), None)
        response["error"] = {
            "code": code if code in _FAILED_CODES else "server_error",
            "message": message,
        }
        self._emit("response.failed", {"response": response})
        self._ended = True
        return self._flush()

    def end_item(self) -> bytes:
        """Ends the open reasoning or message item: what comes next opens a new one."""
        self._close_text("completed")
        return self._flush()

    def hand_over(self) -> Continuation:
        """Ends this stream without a last event: someone else continues the response."""
        self._ended = True
        return Continuation(
            self._base, self._seq, [item for item in self._output if item is not None]
        )

    def _emit(self, kind: str, fields: Json) -> None:
        data = _ENCODE({"type": kind, **fields, "sequence_number": self._seq})
        self._seq += 1
        self._out.append(f"event: {kind}\ndata: {data}\n\n".encode("ascii"))

    def _emit_delta(self, head: str, delta: str) -> None:
        event = f'{head}{json.dumps(delta)},"sequence_number":{self._seq}}}\n\n'
        self._seq += 1
        self._out.append(event.encode("ascii"))

    def _flush(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _begin(self) -> None:
        if not self._started:
            self._started = True
            self._emit("response.created", {"response": self._base})
            self._emit("response.in_progress", {"response": self._base})

    def _delta(self, delta: Mapping[str, Any]) -> None:
        # vLLM and Ollama name the reasoning `reasoning`; llama-server `reasoning_content`.
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self._write(REASONING, reasoning)
        content = delta.get("content")
        if isinstance(content, str) and content:
            self._write(MESSAGE, content)
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, Mapping):
                    self._tool_call(call)

    def _write(self, kind: str, delta: str) -> None:
        text = self._text
        if text is None or text.kind != kind:
            self._close_text("completed")
            text = self._text = self._add_text(kind)
        text.parts.append(delta)
        self._emit_delta(text.delta_head, delta)

    def _add_text(self, kind: str) -> _Text:
        index = len(self._output)
        self._output.append(None)
        if kind == MESSAGE:
            text = _Text(kind, index, new_id("msg"))
            item = {**message_item(text.item_id, "", "in_progress"), "content": []}
            self._emit("response.output_item.added", {"output_index": index, "item": item})
            self._emit(
                "response.content_part.added",
                {
                    "item_id": text.item_id,
                    "output_index": index,
                    "content_index": 0,
                    "part": output_text(""),
                },
            )
        else:
            text = _Text(kind, index, new_id("rs"))
            item = {**reasoning_item(text.item_id, "", "in_progress"), "summary": []}
            self._emit("response.output_item.added", {"output_index": index, "item": item})
            self._emit(
                "response.reasoning_summary_part.added",
                {
                    "item_id": text.item_id,
                    "output_index": index,
                    "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""},
                },
            )
        return text

    def _close_text(self, status: str) -> None:
        text = self._text
        if text is None:
            return
        self._text = None
        whole = "".join(text.parts)
        where = {"item_id": text.item_id, "output_index": text.index}
        if text.kind == MESSAGE:
            self._emit(
                "response.output_text.done",
                {**where, "content_index": 0, "text": whole, "logprobs": []},
            )
            self._emit(
                "response.content_part.done",
                {**where, "content_index": 0, "part": output_text(whole)},
            )
            item = message_item(text.item_id, whole, status)
        else:
            self._emit(
                "response.reasoning_summary_text.done", {**where, "summary_index": 0, "text": whole}
            )
            self._emit(
                "response.reasoning_summary_part.done",
                {**where, "summary_index": 0, "part": {"type": "summary_text", "text": whole}},
            )
            item = reasoning_item(text.item_id, whole, status)
        self._output[text.index] = item
        self._emit("response.output_item.done", {"output_index": text.index, "item": item})

    def _tool_call(self, delta: Mapping[str, Any]) -> None:
        function = delta.get("function")
        if not isinstance(function, Mapping):
            function = _EMPTY
        name = function.get("name")
        key = delta.get("index")
        if type(key) is not int:
            # A server that sends each call whole, without an index: a name starts a new one.
            named = isinstance(name, str) and bool(name)
            key = len(self._calls) if named or not self._calls else next(reversed(self._calls))
        call = self._calls.get(key)
        if call is None:
            call = self._calls[key] = _Call()
        if call.index < 0:
            call_id = delta.get("id")
            if not call.call_id and isinstance(call_id, str):
                call.call_id = call_id
            if not call.name and isinstance(name, str):
                call.name = name
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            call.arguments.append(arguments)
            if call.index >= 0 and not call.custom:
                self._emit_delta(call.delta_head, arguments)
        if call.index < 0 and call.name:
            self._add_call(call)

    def _add_call(self, call: _Call) -> None:
        self._close_text("completed")
        call.index = len(self._output)
        self._output.append(None)
        call.custom = call.name in self._custom
        call.item_id = new_id("ctc" if call.custom else "fc")
        call.call_id = call.call_id or new_id("call")
        call.delta_head = _delta_head(
            "response.function_call_arguments.delta", call.item_id, call.index
        )
        item = call_item(call.item_id, call.call_id, call.name, "", "in_progress", call.custom)
        self._emit("response.output_item.added", {"output_index": call.index, "item": item})
        if call.arguments and not call.custom:
            self._emit_delta(call.delta_head, "".join(call.arguments))

    def _close_call(self, call: _Call, status: str) -> None:
        arguments = "".join(call.arguments)
        item = call_item(call.item_id, call.call_id, call.name, arguments, status, call.custom)
        where = {"item_id": call.item_id, "output_index": call.index}
        if call.custom:
            if item["input"]:
                self._emit(
                    "response.custom_tool_call_input.delta", {**where, "delta": item["input"]}
                )
            self._emit("response.custom_tool_call_input.done", {**where, "input": item["input"]})
        else:
            self._emit(
                "response.function_call_arguments.done",
                {**where, "name": call.name, "arguments": arguments},
            )
        self._output[call.index] = item
        self._emit("response.output_item.done", {"output_index": call.index, "item": item})
