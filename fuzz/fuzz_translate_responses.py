"""Fuzz target: OpenAI Responses ⇄ chat completions (`trioswap.protocols.responses_chat`).

Any JSON object as a Responses request translates or raises BadRequest, whose message can be
written out as UTF-8; a translated request is JSON whose every tool message answers a call of
the assistant message its run of tool messages follows. Any sequence of JSON values as chat
chunks never crashes the stream: what it sends is whole server-sent events, each named by its
type, numbered from 0, opened by response.created and in_progress (then maybe the proxy's
loading progress, a reasoning item), each item added once at the next output index and done at
most once, ended by exactly one response.completed, incomplete or failed listing the done items.
Any chunk, answered whole, gives a response object; any upstream error answer, an OpenAI error
body.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import atheris

with atheris.instrument_imports():
    from trioswap.errors import BadRequest
    from trioswap.protocols.responses_chat import (
        ResponseStream,
        chat_error_to_responses,
        request_to_chat,
        response_from_chat,
    )

REQUEST = {
    "model": "m",
    "input": "hi",
    "stream": True,
    "tools": [{"type": "function", "name": "f"}, {"type": "custom", "name": "patch"}],
}
TERMINAL = ("response.completed", "response.incomplete", "response.failed")
# The proxy's loading progress, written through the stream before the model's chunks.
PROGRESS = {"choices": [{"delta": {"reasoning_content": "Loading model m…\n"}}]}


def check_chat(chat: dict[str, Any]) -> None:
    json.dumps(chat)
    answering: set[object] = set()
    for message in chat["messages"]:
        if message["role"] == "tool":
            assert message["tool_call_id"] in answering, message
            assert isinstance(message["content"], str)
            continue
        calls = message.get("tool_calls", ()) if message["role"] == "assistant" else ()
        answering = {call["id"] for call in calls}


def translate_request(data: bytes) -> None:
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return
    if not isinstance(body, dict):
        return
    try:
        chat = request_to_chat(body)
    except BadRequest as error:
        str(error).encode()
        return
    check_chat(chat)


def events(data: bytes) -> list[dict[str, Any]]:
    assert not data or data.endswith(b"\n\n"), data[-200:]
    found = []
    for block in data.decode("ascii").split("\n\n")[:-1]:
        name, payload = block.split("\n")
        event = json.loads(payload.removeprefix("data: "))
        assert name == f"event: {event['type']}", block
        found.append(event)
    return found


def check_stream(sent: list[dict[str, Any]]) -> None:
    assert [e["sequence_number"] for e in sent] == list(range(len(sent)))
    kinds = [e["type"] for e in sent]
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds[:2]
    assert kinds[-1] in TERMINAL and sum(k in TERMINAL for k in kinds) == 1, kinds
    added: dict[int, str] = {}
    done: dict[int, dict[str, Any]] = {}
    for event in sent:
        if event["type"] == "response.output_item.added":
            assert event["output_index"] == len(added)
            added[event["output_index"]] = event["item"]["id"]
        elif event["type"] == "response.output_item.done":
            index = event["output_index"]
            assert added[index] == event["item"]["id"] and index not in done
            done[index] = event["item"]
        elif "item_id" in event:
            index = event["output_index"]
            assert added[index] == event["item_id"] and index not in done, event
    final = sent[-1]["response"]
    assert final["output"] == [done[i] for i in sorted(done)]
    if final["status"] != "failed":
        assert len(done) == len(added)


def chunks(data: bytes) -> list[Any]:
    values = []
    for line in data.split(b"\n"):
        try:
            values.append(json.loads(line))
        except (ValueError, RecursionError):
            continue
    return values


def translate_stream(data: bytes, progress: bool) -> None:
    stream = ResponseStream(REQUEST)
    sent: list[dict[str, Any]] = []
    if progress:
        sent.extend(events(stream.feed(PROGRESS) + stream.end_item()))
    for value in chunks(data):
        if isinstance(value, dict):
            sent.extend(events(stream.feed(value)))
            json.dumps(response_from_chat(value, REQUEST))
    sent.extend(events(stream.close()))
    check_stream(sent)


def translate_error(status: int, body: bytes) -> None:
    got, answer = chat_error_to_responses(status, body)
    assert 400 <= got <= 599, got
    assert set(answer["error"]) == {"message", "type", "code", "param"}
    json.dumps(answer).encode()


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 3:
        status = fdp.ConsumeIntInRange(100, 599)
        translate_error(status, fdp.ConsumeBytes(fdp.remaining_bytes()))
        return
    rest = fdp.ConsumeBytes(fdp.remaining_bytes())
    if mode == 0:
        translate_request(rest)
    else:
        translate_stream(rest, progress=mode == 2)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
