"""Fuzz target: the Anthropic Messages ⇄ chat completions translator (`protocols.anthropic_chat`).

Four modes, picked by the input's last byte:

0. A JSON document as an Anthropic request: `request_to_chat` translates it or raises
   BadRequest with a printable message; a translation can be sent as JSON, and its tool messages
   come right after the assistant message that made those calls.
1. JSON lines as chat chunks, through a `MessageStream` (optionally after the proxy's
   `message_start` and loading blocks, optionally ended by `error`): nothing raises, and the
   output is well-framed SSE events in Anthropic's grammar (an error chunk ends it early).
2. A JSON document as a non-streaming chat completion: `message_from_chat` gives a message with
   a known stop reason that can be sent as JSON.
3. Any bytes as a model server's error answer: `chat_error_to_anthropic` gives an error status
   and a message that can be written out as UTF-8 on one line.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any, get_args

import atheris
from anthropic.types import StopReason

with atheris.instrument_imports():
    from trioswap.errors import BadRequest
    from trioswap.protocols.anthropic_chat import (
        MessageStream,
        chat_error_to_anthropic,
        message_from_chat,
        request_to_chat,
    )

EVENT = re.compile(rb"event: ([a-z_]+)\ndata: ([^\n]*)\n\n")
STOP_REASONS = frozenset(get_args(StopReason))
DELTAS = {
    "text": {"text_delta"},
    "thinking": {"thinking_delta", "signature_delta"},
    "tool_use": {"input_json_delta"},
}
STATUSES = (400, 401, 402, 403, 404, 413, 422, 429, 500, 502, 503, 504, 529, 200, 302, 0)


def parse(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def request(fdp: atheris.FuzzedDataProvider) -> None:
    body = parse(fdp.ConsumeBytes(fdp.remaining_bytes()))
    try:
        chat = request_to_chat(body)
    except BadRequest as refused:
        assert str(refused).isprintable(), str(refused)
        return
    json.dumps(chat)
    calls: set[str] = set()
    previous = None
    for message in chat["messages"]:
        if message["role"] == "tool":
            assert previous in ("assistant", "tool"), chat["messages"]
            calls.remove(message["tool_call_id"])
        elif message["role"] == "assistant":
            calls = {call["id"] for call in message.get("tool_calls", [])}
        previous = message["role"]


def stream(fdp: atheris.FuzzedDataProvider) -> None:
    # Choices come from the input's end (ConsumeBool would take the body's first byte).
    started = fdp.ConsumeIntInRange(0, 1) == 1
    loading = fdp.ConsumeIntInRange(0, 3)  # blocks of the proxy's loading progress
    error = fdp.ConsumeIntInRange(0, 1) == 1
    first = loading if started else 0
    lines = fdp.ConsumeBytes(fdp.remaining_bytes()).split(b"\n")
    request = parse(lines[0])  # the client's: an object, once request_to_chat accepted it
    if not isinstance(request, dict):
        request = {}
    translator = MessageStream(request, message_started=started)
    translator.next_index = first
    out = b"".join(translator.feed(parse(line)) for line in lines[1:])
    out += translator.error("api_error", "cut") if error else translator.close()
    assert translator.close() == b"" and translator.feed({}) == b""
    check_grammar(out, started, first, error)


def check_grammar(out: bytes, started: bool, first: int, error: bool) -> None:
    """Framing, then Anthropic's order: message_start (unless the proxy sent it), blocks one at a
    time with consecutive indexes and their kind's deltas, message_delta, message_stop; or, cut
    short by `error` or an error chunk, a start of that and the error event."""
    events = []
    position = 0
    while position < len(out):
        match = EVENT.match(out, position)
        assert match, out[position : position + 200]
        event = json.loads(match[2])
        assert event["type"] == match[1].decode(), event
        events.append(event)
        position = match.end()
    cut = bool(events) and events[-1]["type"] == "error"  # by `error`, or an error chunk
    assert cut or not error, events
    if cut:
        events.pop()
    phase = "blocks" if started else "start"
    index, kind = first, None
    for event in events:
        name = event["type"]
        if phase == "start" and name == "message_start":
            phase = "blocks"
        elif phase == "blocks" and name == "content_block_start" and kind is None:
            assert event["index"] == index, (event, index)
            kind = event["content_block"]["type"]
        elif phase == "blocks" and name == "content_block_delta" and kind is not None:
            assert event["index"] == index and event["delta"]["type"] in DELTAS[kind], event
        elif phase == "blocks" and name == "content_block_stop" and kind is not None:
            assert event["index"] == index, event
            index, kind = index + 1, None
        elif phase == "blocks" and name == "message_delta" and kind is None:
            assert event["delta"]["stop_reason"] in STOP_REASONS, event
            phase = "delta"
        elif phase == "delta" and name == "message_stop":
            phase = "done"
        else:
            raise AssertionError(f"{name} in phase {phase}: {events}")
    assert cut or phase == "done", events


def reply(fdp: atheris.FuzzedDataProvider) -> None:
    message = message_from_chat(parse(fdp.ConsumeBytes(fdp.remaining_bytes())), {"model": "m"})
    assert message["stop_reason"] in STOP_REASONS, message
    assert isinstance(message["content"], list)
    json.dumps(message)


def upstream_error(fdp: atheris.FuzzedDataProvider) -> None:
    status = STATUSES[fdp.ConsumeIntInRange(0, len(STATUSES) - 1)]
    answer_status, body = chat_error_to_anthropic(status, fdp.ConsumeBytes(fdp.remaining_bytes()))
    assert 400 <= answer_status <= 599 and body["type"] == "error", (answer_status, body)
    message = body["error"]["message"]
    assert message and "\n" not in message, message
    message.encode()


MODES = (request, stream, reply, upstream_error)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    MODES[fdp.ConsumeIntInRange(0, len(MODES) - 1)](fdp)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
