"""Anthropic Messages ⇄ OpenAI chat completions (`trioswap.protocols.anthropic_chat`).

Fixtures under `fixtures/anthropic/` are shaped like real traffic: Claude Code's requests, and
llama-server's and vLLM's answers. The SDKs judge the shapes: every chat request is validated
against the openai SDK's `CompletionCreateParams`, every event and message against the anthropic
SDK's types, and streams are read back by the anthropic SDK's own client over an httpx mock
transport. A grammar checker below holds the event stream to Anthropic's documented order.
Hypothesis generates valid requests and valid chunk streams, and arbitrary chunks.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import anthropic
import httpx
import pytest
from anthropic.types import Message, RawMessageStreamEvent, StopReason
from anthropic.types.shared import ErrorResponse
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat.completion_create_params import CompletionCreateParams
from pydantic import TypeAdapter

from trioswap.errors import BadRequest
from trioswap.protocols.anthropic_chat import (
    MessageStream,
    chat_error_to_anthropic,
    message_from_chat,
    request_to_chat,
)

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
CHAT_REQUEST: TypeAdapter[Any] = TypeAdapter(CompletionCreateParams)
STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
STOP_REASONS = frozenset(get_args(StopReason))
EVENT = re.compile(rb"event: ([a-z_]+)\ndata: ([^\n]*)\n\n")
MADE_UP_TOOL_ID = re.compile(r"toolu_[0-9a-f]{24}")
DELTAS = {
    "text": {"text_delta"},
    "thinking": {"thinking_delta", "signature_delta"},
    "tool_use": {"input_json_delta"},
}


def fixtures(kind: str) -> list[Any]:
    paths = sorted((FIXTURES / kind).glob("*.json"))
    assert paths, kind
    return [pytest.param(json.loads(p.read_text()), id=p.stem) for p in paths]


# --- judges ---------------------------------------------------------------------------------


def drain(value: Any) -> Any:
    """A validated value with pydantic's lazy iterables consumed, which validates them."""
    if isinstance(value, dict):
        return {k: drain(v) for k, v in value.items()}
    if isinstance(value, str | bytes | int | float | bool) or value is None:
        return value
    return [drain(v) for v in value]


def check_chat_request(chat: dict[str, Any]) -> None:
    """Valid for the openai SDK, JSON as sent, and a conversation a chat template can render:
    tool messages only right after the assistant message that made those calls, each call
    answered once before the next turn, no two user or two assistant messages in a row."""
    drain(CHAT_REQUEST.validate_python(chat))
    assert json.loads(json.dumps(chat)) == chat
    unanswered: set[str] = set()
    previous = None
    for message in chat["messages"]:
        role = message["role"]
        if role == "tool":
            assert previous in ("assistant", "tool"), chat["messages"]
            unanswered.remove(message["tool_call_id"])
        else:
            assert not unanswered, f"calls {unanswered} unanswered before a {role} message"
            assert not (role == previous and role in ("user", "assistant")), chat["messages"]
            if role == "assistant":
                ids = [call["id"] for call in message.get("tool_calls", [])]
                assert len(set(ids)) == len(ids)
                unanswered = set(ids)
        previous = role
    assert not unanswered


def parse_events(data: bytes) -> list[dict[str, Any]]:
    """`data` as SSE events, each exactly `event: X\\ndata: {...}\\n\\n` with X its type."""
    events = []
    position = 0
    while position < len(data):
        match = EVENT.match(data, position)
        assert match, data[position : position + 200]
        payload = json.loads(match[2])
        assert payload["type"] == match[1].decode()
        events.append(payload)
        position = match.end()
    return events


def check_grammar(
    events: list[dict[str, Any]], *, started: bool = False, first_index: int = 0
) -> None:
    """Anthropic's event grammar: message_start (unless already sent), content blocks one at a
    time with consecutive indexes, each started once, given only its kind's deltas (a
    signature_delta last) and stopped once, then message_delta and message_stop, nothing after;
    ping anywhere in between. Or, cut short, a start of that and an error event. Every event is
    valid for the anthropic SDK's types."""
    cut = bool(events) and events[-1]["type"] == "error"
    if cut:
        ErrorResponse.model_validate(events[-1])
        events = events[:-1]
    phase = "blocks" if started else "start"
    next_index = first_index
    open_block: tuple[int, str] | None = None
    signed = False
    for event in events:
        kind = event["type"]
        if kind != "ping":
            STREAM_EVENT.validate_python(event)
        if phase == "start":
            assert kind == "message_start", event
            assert event["message"]["content"] == [] and event["message"]["stop_reason"] is None
            phase = "blocks"
        elif kind == "ping":
            assert phase in ("blocks", "delta"), event
        elif phase == "blocks" and kind == "content_block_start":
            assert open_block is None and event["index"] == next_index, event
            open_block = (next_index, event["content_block"]["type"])
            signed = False
            next_index += 1
        elif phase == "blocks" and kind == "content_block_delta":
            assert open_block is not None and event["index"] == open_block[0], event
            assert event["delta"]["type"] in DELTAS[open_block[1]], event
            assert not signed, "a delta after the signature_delta"
            signed = event["delta"]["type"] == "signature_delta"
        elif phase == "blocks" and kind == "content_block_stop":
            assert open_block is not None and event["index"] == open_block[0], event
            open_block = None
        elif phase == "blocks" and kind == "message_delta":
            assert open_block is None, "message_delta with a block open"
            assert event["delta"]["stop_reason"] in STOP_REASONS
            phase = "delta"
        elif phase == "delta" and kind == "message_stop":
            phase = "done"
        else:
            raise AssertionError(f"{kind} in phase {phase}: {event}")
    assert cut or phase == "done", phase


def run_stream(
    request: dict[str, Any], chunks: list[Any], *, started: bool = False, next_index: int = 0
) -> tuple[bytes, list[dict[str, Any]]]:
    stream = MessageStream(request, message_started=started)
    stream.next_index = next_index
    data = b"".join(stream.feed(chunk) for chunk in chunks) + stream.close()
    return data, parse_events(data)


class Replay:
    """An httpx transport answering every request with `body`, recording what was sent."""

    def __init__(self) -> None:
        self.body = b""
        self.content_type = "text/event-stream"
        self.sent: dict[str, Any] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent = json.loads(request.content)
        return httpx.Response(200, headers={"content-type": self.content_type}, content=self.body)


@pytest.fixture(scope="module")
def sdk() -> Iterator[tuple[anthropic.Anthropic, Replay]]:
    replay = Replay()
    http = httpx.Client(transport=httpx.MockTransport(replay))
    client = anthropic.Anthropic(
        api_key="test", base_url="http://trioswap.test", max_retries=0, http_client=http
    )
    with client:
        yield client, replay


def sdk_final_message(sdk: tuple[anthropic.Anthropic, Replay], body: bytes) -> Message:
    """`body` read by the anthropic SDK's streaming client, as its final message."""
    client, replay = sdk
    replay.body = body
    messages: Any = [{"role": "user", "content": "hi"}]
    with client.messages.stream(model="m", max_tokens=10, messages=messages) as stream:
        return stream.get_final_message()


def summary(message: Message) -> dict[str, Any]:
    content = []
    for block in message.content:
        dumped = block.model_dump(exclude_none=True)
        if block.type == "tool_use" and MADE_UP_TOOL_ID.fullmatch(block.id):
            dumped["id"] = "*"
        content.append(dumped)
    return {
        "content": content,
        "stop_reason": message.stop_reason,
        "stop_sequence": message.stop_sequence,
        "usage": message.usage.model_dump(exclude_none=True),
    }


# --- requests --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", fixtures("requests"))
def test_request_fixture(case: dict[str, Any]) -> None:
    chat = request_to_chat(case["anthropic"])
    assert chat == case["chat"]
    check_chat_request(chat)


def test_request_as_the_sdk_sends_it(sdk: tuple[anthropic.Anthropic, Replay]) -> None:
    """The body the anthropic SDK builds from typed parameters translates to the fixture's."""
    case = json.loads((FIXTURES / "requests" / "parallel_tools_thinking.json").read_text())
    client, replay = sdk
    replay.body = b""
    params = {k: v for k, v in case["anthropic"].items() if k != "stream"}
    with client.messages.stream(**params) as stream:
        stream.until_done()
    assert replay.sent == case["anthropic"]
    assert request_to_chat(replay.sent) == case["chat"]


def base(**fields: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
    } | fields


def turns(*content: Any) -> dict[str, Any]:
    """A request whose messages alternate user, assistant, … with these contents."""
    roles = ("user", "assistant")
    return base(messages=[{"role": roles[i % 2], "content": c} for i, c in enumerate(content)])


TOOL_USE = {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
IMAGE_FILE = {"type": "image", "source": {"type": "file", "file_id": "file_1"}}
PDF = {
    "type": "document",
    "source": {"type": "base64", "media_type": "application/pdf", "data": ""},
}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "the request body must be a JSON object, not an array"),
        ({"model": "m"}, "messages: expected an array, got null"),
        (base(messages=[]), "messages: at least one message is required"),
        (base(messages=["hi"]), "messages[0]: expected an object, got a string"),
        (base(messages=[{"role": "tool", "content": "x"}]), "messages[0].role: expected 'user'"),
        (base(messages=[{"role": "user"}]), "messages[0]: no content"),
        (base(messages=[{"role": "user", "content": 3}]), "messages[0].content: expected a str"),
        (turns(["x"]), "messages[0].content[0]: expected an object, got a string"),
        (
            turns("hi", "ok", [{"type": "text", "text": "a"}, {"type": "foo"}]),
            "messages[2].content[1]: unknown block type 'foo'",
        ),
        (turns([{"type": "text", "text": 1}]), "messages[0].content[0].text: expected a string"),
        (turns([TOOL_USE]), "messages[0].content[0]: tool_use blocks cannot be translated in"),
        (
            turns([{"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]),
            "messages[0].content[0]: server_tool_use blocks cannot be translated in a user turn",
        ),
        (
            turns("hi", [{"type": "image", "source": {}}]),
            "messages[1].content[0]: image blocks cannot be translated in an assistant turn",
        ),
        (turns(IMAGE_FILE), "messages[0].content: expected a string or an array"),
        (turns([IMAGE_FILE]), "messages[0].content[0].source: an image from a 'file' source"),
        (turns([PDF]), "messages[0].content[0].source: a 'base64' document cannot be sent"),
        (
            turns([{"type": "tool_result", "tool_use_id": "t1", "content": "x"}]),
            "messages[0].content[0]: tool_result 't1' answers no tool_use of the assistant turn",
        ),
        (
            turns(
                "hi",
                [TOOL_USE],
                [
                    {"type": "tool_result", "tool_use_id": "t1"},
                    {"type": "tool_result", "tool_use_id": "t1"},
                ],
            ),
            "messages[2].content[1]: tool_result 't1' answers no tool_use",
        ),
        (
            turns("hi", [TOOL_USE], [{"type": "tool_result", "tool_use_id": "t1", "is_error": 1}]),
            "messages[2].content[0].is_error: expected a boolean, got a number",
        ),
        (
            turns("hi", [TOOL_USE], [{"type": "tool_result", "tool_use_id": "t1", "content": 5}]),
            "messages[2].content[0].content: expected a string or an array of blocks",
        ),
        (
            turns("hi", [TOOL_USE | {"input": "{}"}]),
            "messages[1].content[0].input: expected an object, got a string",
        ),
        (turns("hi", [TOOL_USE | {"id": 7}]), "messages[1].content[0].id: expected a string"),
        (
            base(system=[{"type": "image"}]),
            "system[0]: image blocks cannot be translated in a system prompt",
        ),
        (base(system=5), "system: expected a string or an array of blocks, got a number"),
        (base(max_tokens="10"), "max_tokens: expected an integer, got a string"),
        (base(max_tokens=True), "max_tokens: expected an integer, got a boolean"),
        (base(temperature="hot"), "temperature: expected a number, got a string"),
        (base(top_k=1.5), "top_k: expected an integer, got a number"),
        (base(stop_sequences="STOP"), "stop_sequences: expected an array, got a string"),
        (base(stop_sequences=["a", 1]), "stop_sequences[1]: expected a string, got a number"),
        (base(metadata={"user_id": 5}), "metadata.user_id: expected a string, got a number"),
        (base(stream="yes"), "stream: expected a boolean, got a string"),
        (base(tools={}), "tools: expected an array, got an object"),
        (
            base(tools=[{"type": "web_search_20250305", "name": "web_search"}]),
            "tools[0]: 'web_search_20250305' is one of Anthropic's own tools",
        ),
        (base(tools=[{"name": "f"}]), "tools[0].input_schema: expected an object, got null"),
        (
            base(tools=[{"name": "f", "input_schema": {}}], tool_choice={"type": "some"}),
            "tool_choice.type: expected 'auto', 'any', 'tool' or 'none', got 'some'",
        ),
        (
            base(tools=[{"name": "f", "input_schema": {}}], tool_choice={"type": "tool"}),
            "tool_choice.name: expected a string, got null",
        ),
        (base(thinking={"type": "on"}), "thinking.type: expected 'enabled', 'adaptive' or"),
        # Types that are no strings, where a string is looked up (found by the fuzz target).
        (turns("hi", [{"type": []}]), "messages[1].content[0]: unknown block type an array"),
        (base(thinking={"type": ["enabled"]}), "thinking.type: expected 'enabled', 'adaptive'"),
        (
            base(tools=[{"name": "f", "input_schema": {}}], tool_choice={"type": {}}),
            "tool_choice.type: expected 'auto', 'any', 'tool' or 'none', got an object",
        ),
        (
            turns("hi", [TOOL_USE], [{"type": "tool_result", "tool_use_id": "t1", "content": {}}]),
            "messages[2].content[0].content: expected a string or an array of blocks, got an obj",
        ),
        (base(thinking={"type": "enabled"}), "thinking.budget_tokens: expected an integer"),
        (base(output_config={"effort": 3}), "output_config.effort: expected a string"),
        (
            base(output_config={"format": {"type": "regex"}}),
            "output_config.format.type: expected 'json_schema', got 'regex'",
        ),
        (
            base(messages=[{"role": "user", "content": [{"type": "x" * 500}]}]),
            "messages[0].content[0]: unknown block type '" + "x" * 200 + "… (300 more characters)'",
        ),
    ],
)
def test_untranslatable_requests_say_what_and_where(body: Any, message: str) -> None:
    with pytest.raises(BadRequest) as raised:
        request_to_chat(body)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize(
    ("fields", "chat"),
    [
        ({"stream": False}, {}),
        ({"stream": True}, {"stream": True, "stream_options": {"include_usage": True}}),
        ({"stop_sequences": []}, {}),
        ({"metadata": {}}, {}),
        ({"temperature": None, "system": None, "tools": None}, {}),
        ({"system": ""}, {}),
        ({"system": []}, {}),
        ({"tools": [], "tool_choice": {"type": "any"}}, {}),
        ({"thinking": {"type": "adaptive"}}, {"chat_template_kwargs": {"enable_thinking": True}}),
        (
            {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "output", "schema": {"type": "object"}},
                }
            },
        ),
        (
            {"tools": [{"name": "f", "input_schema": {}, "type": "custom"}]},
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        ),
        (
            {
                "tools": [{"name": "f", "input_schema": {}}],
                "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
            },
            {
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
                "tool_choice": "auto",
                "parallel_tool_calls": False,
            },
        ),
        (
            {"tools": [{"name": "f", "input_schema": {}}], "tool_choice": {"type": "none"}},
            {
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
                "tool_choice": "none",
            },
        ),
    ],
)
def test_request_fields(fields: dict[str, Any], chat: dict[str, Any]) -> None:
    expected = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    assert request_to_chat(base(**fields)) == expected | chat


@pytest.mark.parametrize(
    ("system", "content"),
    [
        (
            "x-anthropic-billing-header: cc_version=2.1.1; cc_entrypoint=cli; cch=a5145;You are",
            "x-anthropic-billing-header: cc_version=2.1.1; cc_entrypoint=cli; cch=00000;You are",
        ),
        ("You are; cch=a5145;", "You are; cch=a5145;"),
        ("x-anthropic-billing-header: cc_version=2; cc_entrypoint=cli;", None),
    ],
)
def test_billing_header_is_pinned_only_at_the_start(system: str, content: str | None) -> None:
    chat = request_to_chat(base(system=system))
    assert chat["messages"][0]["content"] == (content or system)


def test_tool_result_forms() -> None:
    chat = request_to_chat(
        turns(
            "hi",
            [TOOL_USE, TOOL_USE | {"id": "t2"}, TOOL_USE | {"id": "t3"}],
            [
                {"type": "tool_result", "tool_use_id": "t3"},
                {"type": "tool_result", "tool_use_id": "t1", "content": [], "is_error": True},
                {
                    "type": "tool_result",
                    "tool_use_id": "t2",
                    "content": [
                        {"type": "text", "text": "a"},
                        {"type": "document", "source": {"type": "content", "content": "b"}},
                    ],
                },
            ],
        )
    )
    assert chat["messages"][2:] == [
        {"role": "tool", "tool_call_id": "t3", "content": ""},
        {"role": "tool", "tool_call_id": "t1", "content": "Error: "},
        {"role": "tool", "tool_call_id": "t2", "content": "a\n\nb"},
    ]
    check_chat_request(chat)


def test_a_tool_result_after_another_turn_is_refused() -> None:
    """The results must come in the turn right after the call: a chat tool message must follow
    its assistant message."""
    body = base(
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [TOOL_USE]},
            {"role": "system", "content": "between"},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
        ]
    )
    with pytest.raises(BadRequest, match=r"messages\[3\]\.content\[0\]: tool_result 't1'"):
        request_to_chat(body)


# --- non-streaming replies -------------------------------------------------------------------


@pytest.mark.parametrize("case", fixtures("messages"))
def test_message_fixture(case: dict[str, Any], sdk: tuple[anthropic.Anthropic, Replay]) -> None:
    message = message_from_chat(case["chat"], case["request"])
    assert re.fullmatch(r"msg_[0-9a-f]{24}", message.pop("id"))
    for block in message["content"]:
        if block["type"] == "tool_use" and MADE_UP_TOOL_ID.fullmatch(block["id"]):
            block["id"] = "*"
    assert message == case["message"]
    # Valid for the SDK's Message, and its client reads it as the same message.
    answer = message_from_chat(case["chat"], case["request"])
    Message.model_validate(answer)
    client, replay = sdk
    replay.body = json.dumps(answer).encode()
    replay.content_type = "application/json"
    try:
        read = client.messages.create(model="m", max_tokens=1, messages=[])
    finally:
        replay.content_type = "text/event-stream"
    expected = {k: v for k, v in case["message"].items() if k not in ("type", "role", "model")}
    assert summary(read) == expected


@pytest.mark.parametrize("chat", [{}, {"choices": []}, {"choices": [None]}, {"choices": "x"}, []])
def test_a_reply_with_no_answer_is_an_empty_message(chat: Any) -> None:
    message = message_from_chat(chat, {"model": "m"})
    assert message["content"] == [] and message["stop_reason"] == "end_turn"
    Message.model_validate(message)


@pytest.mark.parametrize(
    ("finish", "tools", "matched", "expected"),
    [
        ("stop", False, None, ("end_turn", None)),
        ("stop", False, "X", ("stop_sequence", "X")),
        ("stop", True, "X", ("tool_use", None)),
        ("tool_calls", True, None, ("tool_use", None)),
        ("function_call", True, None, ("tool_use", None)),
        ("tool_calls", False, None, ("end_turn", None)),
        ("length", True, "X", ("max_tokens", None)),
        ("content_filter", False, None, ("refusal", None)),
        (None, False, "X", ("end_turn", None)),
        ("eos", False, None, ("end_turn", None)),
        (["stop"], False, None, ("end_turn", None)),
    ],
)
def test_stop_reasons(finish: Any, tools: bool, matched: str | None, expected: Any) -> None:
    call = {"id": "c", "function": {"name": "f", "arguments": "{}"}}
    message = {"content": "text", **({"tool_calls": [call]} if tools else {})}
    choice = {"message": message, "finish_reason": finish, "stop_reason": matched}
    reply = message_from_chat({"choices": [choice]}, {"stop_sequences": ["X"]})
    assert (reply["stop_reason"], reply["stop_sequence"]) == expected
    assert expected[0] in STOP_REASONS


@pytest.mark.parametrize(
    ("usage", "timings", "expected"),
    [
        (None, None, {"input_tokens": 0, "output_tokens": 0}),
        ({"prompt_tokens": 10}, None, {"input_tokens": 0, "output_tokens": 0}),
        (
            {"prompt_tokens": 10, "completion_tokens": 2},
            None,
            {"input_tokens": 10, "output_tokens": 2},
        ),
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 2,
                "prompt_tokens_details": {"cached_tokens": 4},
            },
            {"cache_n": 9},
            {"input_tokens": 6, "output_tokens": 2, "cache_read_input_tokens": 4},
        ),
        (
            {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": None},
            {"cache_n": 9},
            {"input_tokens": 1, "output_tokens": 2, "cache_read_input_tokens": 9},
        ),
        (
            {"prompt_tokens": 10, "completion_tokens": 2},
            {"cache_n": 50},
            {"input_tokens": 0, "output_tokens": 2, "cache_read_input_tokens": 10},
        ),
        (
            {"prompt_tokens": True, "completion_tokens": 2},
            None,
            {"input_tokens": 0, "output_tokens": 0},
        ),
        (
            {"prompt_tokens": -1, "completion_tokens": 2},
            None,
            {"input_tokens": 0, "output_tokens": 0},
        ),
    ],
)
def test_usage(usage: Any, timings: Any, expected: dict[str, int]) -> None:
    message = message_from_chat({"usage": usage, "timings": timings}, {})
    assert message["usage"] == expected
    stream = MessageStream({})
    stream.feed({"choices": [], "usage": usage, "timings": timings})
    delta = parse_events(stream.close())[-2]
    reported = expected != {"input_tokens": 0, "output_tokens": 0}
    assert delta["usage"] == (expected if reported else {"output_tokens": 0})


# --- streams ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", fixtures("streams"))
def test_stream_fixture(case: dict[str, Any], sdk: tuple[anthropic.Anthropic, Replay]) -> None:
    data, events = run_stream(case["request"], case["chunks"])
    check_grammar(events)
    assert events[0]["message"]["model"] == case["request"]["model"]
    assert summary(sdk_final_message(sdk, data)) == case["message"]


def test_stream_events_in_order_for_thinking_then_text() -> None:
    """The exact events for a short reply, against the documented example's order."""
    chunks = [
        {"choices": [{"index": 0, "delta": {"reasoning_content": "Hm"}}]},
        {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}},
    ]
    _, events = run_stream({"model": "m"}, chunks)
    assert [(e["type"], e.get("index"), e.get("delta", {}).get("type")) for e in events] == [
        ("message_start", None, None),
        ("content_block_start", 0, None),
        ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "signature_delta"),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, None),
        ("content_block_delta", 1, "text_delta"),
        ("content_block_stop", 1, None),
        ("message_delta", None, None),
        ("message_stop", None, None),
    ]
    assert events[0]["message"]["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert events[-2] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"input_tokens": 7, "output_tokens": 3},
    }


def test_blocks_end_at_the_finish_and_the_message_at_close() -> None:
    """Claude Code sees a block's end with the finish_reason, its usage at the end of stream."""
    stream = MessageStream({"model": "m"})
    stream.feed({"choices": [{"index": 0, "delta": {"content": "a"}}]})
    finished = parse_events(stream.feed({"choices": [{"index": 0, "finish_reason": "stop"}]}))
    assert [e["type"] for e in finished] == ["content_block_stop"]
    assert (
        stream.feed({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}) == b""
    )
    assert [e["type"] for e in parse_events(stream.close())] == ["message_delta", "message_stop"]


def test_message_start_has_usage_when_the_first_chunk_has_it() -> None:
    usage = {
        "prompt_tokens": 20,
        "completion_tokens": 0,
        "prompt_tokens_details": {"cached_tokens": 8},
    }
    _, events = run_stream(
        {"model": "m"}, [{"choices": [{"index": 0, "delta": {}}], "usage": usage}]
    )
    assert events[0]["message"]["usage"] == {
        "input_tokens": 12,
        "output_tokens": 0,
        "cache_read_input_tokens": 8,
    }


@pytest.mark.parametrize("next_index", [0, 1, 3])
def test_after_the_proxys_message_start(
    next_index: int, sdk: tuple[anthropic.Anthropic, Replay]
) -> None:
    """With loading progress sent, the stream neither repeats message_start nor reuses an
    index; what the proxy sent and this continue one valid stream."""
    chunks = [{"choices": [{"index": 0, "delta": {"content": "hi"}}]}]
    data, events = run_stream({"model": "m"}, chunks, started=True, next_index=next_index)
    check_grammar(events, started=True, first_index=next_index)
    assert events[0] == {
        "type": "content_block_start",
        "index": next_index,
        "content_block": {"type": "text", "text": ""},
    }
    head = proxy_head(next_index)
    check_grammar(parse_events(head + data))
    message = sdk_final_message(sdk, head + data)
    assert message.content[-1].model_dump(exclude_none=True) == {"type": "text", "text": "hi"}


def proxy_head(blocks: int) -> bytes:
    """message_start and `blocks` loading progress blocks, as the proxy sends them."""
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_loading",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        },
    }
    head = sse("message_start", start)
    for index in range(blocks):
        block = {"type": "thinking", "thinking": "", "signature": ""}
        delta = {"type": "thinking_delta", "thinking": "Loading model m…\n"}
        head += sse(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": block},
        )
        head += sse(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )
        head += sse("content_block_stop", {"type": "content_block_stop", "index": index})
    return head


def sse(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


def test_an_empty_stream_is_still_a_message(sdk: tuple[anthropic.Anthropic, Replay]) -> None:
    data, events = run_stream({"model": "m"}, [])
    check_grammar(events)
    assert [e["type"] for e in events] == ["message_start", "message_delta", "message_stop"]
    assert sdk_final_message(sdk, data).content == []


def test_text_after_tool_calls_follows_them() -> None:
    chunks = [
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f"}}]},
                }
            ]
        },
        {"choices": [{"index": 0, "delta": {"content": "late", "reasoning_content": "later"}}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]},
                }
            ]
        },
        {"choices": [{"index": 0, "delta": {"content": " text"}, "finish_reason": "tool_calls"}]},
    ]
    _, events = run_stream({"model": "m"}, chunks)
    check_grammar(events)
    starts = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    assert starts == ["tool_use", "thinking", "text"]
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert deltas == [
        {"type": "input_json_delta", "partial_json": "{}"},
        {"type": "thinking_delta", "thinking": "later"},
        {"type": "signature_delta", "signature": ""},
        {"type": "text_delta", "text": "late"},
        {"type": "text_delta", "text": " text"},
    ]
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


def test_only_the_first_choice_is_translated() -> None:
    chunks = [
        {"choices": [{"index": 1, "delta": {"content": "other"}, "finish_reason": "stop"}]},
        {"choices": [{"index": 0, "delta": {"content": "mine"}}]},
    ]
    _, events = run_stream({"model": "m"}, chunks)
    assert [e["delta"]["text"] for e in events if e["type"] == "content_block_delta"] == ["mine"]


def test_error_ends_the_stream(sdk: tuple[anthropic.Anthropic, Replay]) -> None:
    stream = MessageStream({"model": "m"})
    head = stream.feed({"choices": [{"index": 0, "delta": {"content": "par"}}]})
    error = stream.error("overloaded_error", "the model server went away")
    assert parse_events(error) == [
        {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "the model server went away"},
        }
    ]
    ErrorResponse.model_validate(parse_events(error)[0])
    assert stream.feed({"choices": [{"index": 0, "delta": {"content": "x"}}]}) == b""
    assert stream.close() == b""
    assert stream.error("api_error", "again") == b""
    with pytest.raises(anthropic.APIStatusError, match="the model server went away"):
        sdk_final_message(sdk, head + error)


@pytest.mark.parametrize(
    ("chunk", "expected"),
    [
        (
            {"error": {"code": 500, "message": "Failed to decode", "type": "server_error"}},
            {"type": "api_error", "message": "Failed to decode"},
        ),
        (
            {"object": "error", "message": "bad grammar", "type": "BadRequestError", "code": 400},
            {"type": "invalid_request_error", "message": "bad grammar"},
        ),
        ({"error": "out of memory"}, {"type": "api_error", "message": "out of memory"}),
        (
            {"error": {"code": "x"}},
            {"type": "api_error", "message": "the model server failed mid-answer"},
        ),
    ],
)
def test_an_error_chunk_ends_the_stream(
    chunk: dict[str, Any], expected: dict[str, str], sdk: tuple[anthropic.Anthropic, Replay]
) -> None:
    """llama-server reports a failure mid-answer as a chunk with an error, not a delta."""
    stream = MessageStream({"model": "m"})
    data = stream.feed({"choices": [{"index": 0, "delta": {"content": "par"}}]})
    data += stream.feed(chunk)
    events = parse_events(data)
    check_grammar(events)
    assert events[-1] == {"type": "error", "error": expected}
    assert stream.close() == b""
    with pytest.raises(anthropic.APIStatusError, match=expected["message"]):
        sdk_final_message(sdk, data)


def test_an_error_as_the_first_chunk_is_all_the_client_gets() -> None:
    stream = MessageStream({"model": "m"})
    events = parse_events(stream.feed({"error": {"code": 503, "message": "Loading model"}}))
    assert events == [
        {"type": "error", "error": {"type": "overloaded_error", "message": "Loading model"}}
    ]


def test_close_twice_sends_the_end_once() -> None:
    stream = MessageStream({"model": "m"})
    assert stream.close().endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert stream.close() == b""
    assert stream.feed({"choices": [{"index": 0, "delta": {"content": "x"}}]}) == b""


# --- errors ----------------------------------------------------------------------------------

LLAMA_OVERFLOW = (
    b'{"error":{"code":400,"message":"request (13392 tokens) exceeds the available context size'
    b' (8192 tokens), try increasing it","type":"exceed_context_size_error",'
    b'"n_prompt_tokens":13392,"n_ctx":8192}}'
)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            LLAMA_OVERFLOW,
            (
                400,
                "invalid_request_error",
                "prompt is too long: 13392 tokens > 8192 maximum (request (13392 tokens) exceeds "
                "the available context size (8192 tokens), try increasing it)",
            ),
        ),
        (
            400,
            b'{"error":{"code":400,"type":"exceed_context_size_error","message":"too big"}}',
            (400, "invalid_request_error", "too big"),
        ),
        (
            401,
            b'{"error":{"message":"Invalid API Key","type":"authentication_error","code":401}}',
            (401, "authentication_error", "Invalid API Key"),
        ),
        (402, b'{"error":"no credits"}', (402, "billing_error", "no credits")),
        (403, b'{"detail":"Forbidden"}', (403, "permission_error", "Forbidden")),
        (
            404,
            b'{"object":"error","message":"The model `x` does not exist.","type":"NotFoundError",'
            b'"param":null,"code":404}',
            (404, "not_found_error", "The model `x` does not exist."),
        ),
        (413, b"", (413, "request_too_large", "the model server answered 413")),
        (422, b'{"detail":[{"loc":["body"],"msg":"bad"}]}', None),
        (429, b"Too Many Requests\n", (429, "rate_limit_error", "Too Many Requests")),
        (500, b"\xff\xfeboom", (500, "api_error", "\ufffd\ufffdboom")),
        (502, b"[1, 2]", (502, "api_error", "[1, 2]")),
        (
            503,
            b'{"error":{"message":"Loading model","code":503}}',
            (503, "overloaded_error", "Loading model"),
        ),
        (504, b"{}", (504, "timeout_error", "{}")),
        (529, b'{"error":{"message":""}}', (529, "overloaded_error", '{"error":{"message":""}}')),
        (418, b"teapot", (418, "invalid_request_error", "teapot")),
        (200, b"fine?", (502, "api_error", "fine?")),
        (302, b"", (502, "api_error", "the model server answered 502")),
        (
            400,
            b"[" * 100_000,
            (400, "invalid_request_error", "[" * 2000 + "… (98000 more characters)"),
        ),
        (
            400,
            b'{"error":"line\\nbreak\\u001b[31m"}',
            (400, "invalid_request_error", "line\\nbreak\\x1b[31m"),
        ),
    ],
)
def test_chat_errors(status: int, body: bytes, expected: tuple[int, str, str] | None) -> None:
    answer_status, answer = chat_error_to_anthropic(status, body)
    if expected is None:  # a body with no message of its own is quoted whole
        expected = (status, "invalid_request_error", body.decode())
    assert (answer_status, answer["error"]["type"], answer["error"]["message"]) == expected
    assert answer["type"] == "error"
    if answer["error"]["type"] != "request_too_large":  # documented, not in the SDK's literal
        ErrorResponse.model_validate(answer)


# --- properties ------------------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,15}", fullmatch=True)
texts = st.text(max_size=30)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=10,
)
json_objects = st.dictionaries(texts, json_values, max_size=4)
cache = st.sampled_from([{}, {"cache_control": {"type": "ephemeral"}}])
text_blocks = st.builds(lambda t, c: {"type": "text", "text": t, **c}, texts, cache)
media = st.sampled_from(["image/png", "image/jpeg", "image/gif", "image/webp"])
image_blocks = st.one_of(
    st.builds(
        lambda m, d: {"type": "image", "source": {"type": "base64", "media_type": m, "data": d}},
        media,
        st.from_regex(r"[A-Za-z0-9+/]{0,16}={0,2}", fullmatch=True),
    ),
    st.builds(
        lambda u: {"type": "image", "source": {"type": "url", "url": u}},
        st.from_regex(r"https://[a-z]{1,8}\.test/[a-z]{0,8}\.png", fullmatch=True),
    ),
)
user_blocks = text_blocks | image_blocks


@st.composite
def tool_results(draw: st.DrawFn, call_id: str) -> dict[str, Any]:
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    content = draw(st.none() | texts | st.lists(user_blocks, max_size=3))
    if content is not None:
        result["content"] = content
    if draw(st.booleans()):
        result["is_error"] = draw(st.booleans())
    return result


def split(draw: st.DrawFn, role: str, blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One turn as one message, or two in a row (Anthropic reads them as one turn)."""
    if len(blocks) == 1 and blocks[0]["type"] == "text" and draw(st.booleans()):
        return [{"role": role, "content": blocks[0]["text"]}]
    cut = draw(st.integers(0, len(blocks))) if len(blocks) > 1 else len(blocks)
    parts = [blocks[:cut], blocks[cut:]] if 0 < cut < len(blocks) else [blocks]
    return [{"role": role, "content": part} for part in parts]


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    calls: list[str] = []
    fresh = iter(range(1_000_000))
    for turn in range(draw(st.integers(1, 5))):
        results = [draw(tool_results(c)) for c in draw(st.permutations(calls))]
        extra = draw(st.lists(user_blocks, min_size=0 if results else 1, max_size=3))
        messages += split(draw, "user", results + extra)
        if turn and draw(st.integers(0, 4)) == 0:
            return messages
        blocks: list[dict[str, Any]] = []
        if draw(st.booleans()):
            blocks.append({"type": "thinking", "thinking": draw(texts), "signature": "sig"})
        if draw(st.booleans()):
            blocks.append({"type": "redacted_thinking", "data": "opaque"})
        blocks += draw(st.lists(text_blocks, max_size=2))
        calls = [f"toolu_{next(fresh)}" for _ in range(draw(st.integers(0, 3)))]
        blocks += [
            {"type": "tool_use", "id": c, "name": draw(names), "input": draw(json_objects)}
            for c in calls
        ]
        messages += split(draw, "assistant", blocks or [{"type": "text", "text": "ok"}])
    if calls:
        messages += split(draw, "user", [draw(tool_results(c)) for c in calls])
    return messages


@st.composite
def anthropic_requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": draw(names),
        "max_tokens": draw(st.integers(1, 200_000)),
        "messages": draw(conversations()),
    }
    optional = {
        "system": texts | st.lists(text_blocks, max_size=3),
        "stream": st.booleans(),
        "stop_sequences": st.lists(st.text(min_size=1, max_size=8), max_size=4),
        "temperature": st.floats(0, 1),
        "top_p": st.floats(0, 1),
        "top_k": st.integers(1, 100),
        "metadata": st.fixed_dictionaries({}, optional={"user_id": texts}),
        "thinking": st.sampled_from([{"type": "disabled"}, {"type": "adaptive"}])
        | st.builds(lambda b: {"type": "enabled", "budget_tokens": b}, st.integers(1024, 32000)),
        "output_config": st.fixed_dictionaries(
            {}, optional={"effort": st.sampled_from(["low", "medium", "high", "max"])}
        ),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    tool_names = draw(st.lists(names, unique=True, max_size=20))
    if tool_names:
        body["tools"] = [
            {
                "name": n,
                "description": draw(texts),
                "input_schema": {"type": "object", "properties": draw(json_objects)},
            }
            for n in tool_names
        ]
        choices = [
            {"type": "auto"},
            {"type": "any"},
            {"type": "none"},
            {"type": "tool", "name": tool_names[0]},
        ]
        choice = draw(st.none() | st.sampled_from(choices))
        if choice is not None:
            body["tool_choice"] = choice | draw(
                st.fixed_dictionaries({}, optional={"disable_parallel_tool_use": st.booleans()})
            )
    return body


def blocks_of(body: dict[str, Any], role: str, kind: str) -> list[dict[str, Any]]:
    return [
        block
        for message in body["messages"]
        if message["role"] == role and isinstance(message["content"], list)
        for block in message["content"]
        if block["type"] == kind
    ]


@settings(max_examples=150, deadline=None)
@given(anthropic_requests())
def test_any_valid_request_translates_to_a_valid_chat_request(body: dict[str, Any]) -> None:
    chat = request_to_chat(body)
    check_chat_request(chat)
    messages = chat["messages"]
    # Every tool call, with its arguments, in order; every result, marked when an error.
    uses = blocks_of(body, "assistant", "tool_use")
    calls = [call for m in messages if m["role"] == "assistant" for call in m.get("tool_calls", [])]
    assert [(c["id"], c["function"]["name"]) for c in calls] == [(u["id"], u["name"]) for u in uses]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [u["input"] for u in uses]
    results = {r["tool_use_id"]: r for r in blocks_of(body, "user", "tool_result")}
    for message in messages:
        if message["role"] == "tool":
            result = results[message["tool_call_id"]]
            prefix = "Error: " if result.get("is_error") else ""
            assert message["content"].startswith(prefix)
            if not isinstance(result.get("content"), list):
                assert message["content"] == prefix + (result.get("content") or "")
    # Every image, wherever it was.
    images = len(blocks_of(body, "user", "image")) + sum(
        1
        for r in results.values()
        if isinstance(r.get("content"), list)
        for block in r["content"]
        if block["type"] == "image"
    )
    parts = [p for m in messages if isinstance(m["content"], list) for p in m["content"]]
    assert sum(p["type"] == "image_url" for p in parts) == images
    assert chat.get("stream", False) == body.get("stream", False)
    assert ("stream_options" in chat) == chat.get("stream", False)
    assert ("tools" in chat) == bool(body.get("tools"))


@st.composite
def chat_streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A chunk stream as llama-server, vLLM or OpenAI send it, and the message it says."""
    pieces = st.lists(st.text(min_size=1, max_size=12), max_size=4)
    reasoning, text = draw(pieces), draw(pieces)
    calls = draw(st.lists(st.tuples(st.none() | names, names, json_objects), max_size=4))
    deltas: list[dict[str, Any]] = [{"reasoning_content": r} for r in reasoning]
    deltas += [{"content": t} for t in text]
    # Each call: its head (id, name), then its arguments in pieces; calls interleave.
    queues = []
    for index, (call_id, name, arguments) in enumerate(calls):
        encoded = json.dumps(
            arguments, separators=draw(st.sampled_from([(",", ":"), (", ", ": ")]))
        )
        cuts = sorted(draw(st.sets(st.integers(1, max(1, len(encoded) - 1)), max_size=4)))
        args = [encoded[a:b] for a, b in zip([0, *cuts], [*cuts, len(encoded)], strict=True)]
        head: dict[str, Any] = {"index": index, "type": "function", "function": {"name": name}}
        if call_id is not None:
            head["id"] = call_id
        if draw(st.booleans()):
            head["function"]["arguments"] = ""
        queues.append([head] + [{"index": index, "function": {"arguments": a}} for a in args if a])
    started = 0
    while any(queues):
        live = [i for i, q in enumerate(queues[: started + 1]) if q]
        i = draw(st.sampled_from(live))
        started = max(started, i + 1)
        group = [queues[i].pop(0)]
        if draw(st.booleans()) and queues[i]:
            group.append(queues[i].pop(0))
        deltas.append({"tool_calls": group})
    finish = "tool_calls" if calls else draw(st.sampled_from(["stop", "length"]))
    usage = draw(
        st.none()
        | st.tuples(st.integers(0, 10**6), st.integers(0, 10**5), st.none() | st.integers(0, 10**6))
    )
    chunks = [
        {
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": d, "finish_reason": None}],
        }
        for d in deltas
    ]
    if draw(st.booleans()):
        chunks.insert(
            0, {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]}
        )
    end = {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
    if chunks and draw(st.booleans()):
        chunks[-1]["choices"][0]["finish_reason"] = finish
    else:
        chunks.append(end)
    expected_usage = {"input_tokens": 0, "output_tokens": 0}
    if usage is not None:
        prompt, completion, cached = usage
        chat_usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
        expected_usage = {"input_tokens": prompt, "output_tokens": completion}
        if cached is not None:
            chat_usage["prompt_tokens_details"] = {"cached_tokens": cached}
            cached = min(cached, prompt)
            expected_usage = {
                "input_tokens": prompt - cached,
                "output_tokens": completion,
                "cache_read_input_tokens": cached,
            }
        chunks.append({"choices": [], "usage": chat_usage})
    content: list[dict[str, Any]] = []
    if reasoning:
        content.append({"type": "thinking", "thinking": "".join(reasoning), "signature": ""})
    if text:
        content.append({"type": "text", "text": "".join(text)})
    content += [{"type": "tool_use", "id": c or "*", "name": n, "input": a} for c, n, a in calls]
    reason = {"tool_calls": "tool_use", "stop": "end_turn", "length": "max_tokens"}[finish]
    message = {
        "content": content,
        "stop_reason": reason,
        "stop_sequence": None,
        "usage": expected_usage,
    }
    return chunks, message


@settings(max_examples=200, deadline=None)
@given(chat_streams(), st.integers(0, 2), st.booleans())
def test_any_valid_chunk_stream_gives_a_valid_event_stream(
    sdk: tuple[anthropic.Anthropic, Replay],
    stream: tuple[list[dict[str, Any]], dict[str, Any]],
    loading_blocks: int,
    started: bool,
) -> None:
    chunks, message = stream
    loading_blocks = loading_blocks if started else 0
    data, events = run_stream({"model": "m"}, chunks, started=started, next_index=loading_blocks)
    check_grammar(events, started=started, first_index=loading_blocks)
    if started:
        data = proxy_head(loading_blocks) + data
        check_grammar(parse_events(data))
    final = summary(sdk_final_message(sdk, data))
    final["content"] = final["content"][loading_blocks:]
    assert final == message


chunk_keys = (
    st.sampled_from(
        [
            "choices",
            "delta",
            "content",
            "reasoning_content",
            "reasoning",
            "tool_calls",
            "index",
            "id",
            "function",
            "name",
            "arguments",
            "finish_reason",
            "stop_reason",
            "usage",
            "prompt_tokens",
            "completion_tokens",
            "prompt_tokens_details",
            "cached_tokens",
            "timings",
            "cache_n",
            "__verbose",
            "stopping_word",
        ]
    )
    | texts
)
anything = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(chunk_keys, inner, max_size=5),
    max_leaves=25,
)
loose_calls = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "index": st.integers(0, 3) | anything,
            "id": names | anything,
            "function": st.fixed_dictionaries(
                {}, optional={"name": names | anything, "arguments": texts | anything}
            )
            | anything,
        },
    )
    | anything,
    max_size=3,
)
loose_chunks = (
    st.fixed_dictionaries(
        {},
        optional={
            "choices": st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "index": st.sampled_from([0, 0, 1, None]) | anything,
                        "delta": st.fixed_dictionaries(
                            {},
                            optional={
                                "content": texts | anything,
                                "reasoning_content": texts | anything,
                                "reasoning": texts | anything,
                                "tool_calls": loose_calls | anything,
                            },
                        )
                        | anything,
                        "finish_reason": st.sampled_from(["stop", "length", "tool_calls", None])
                        | anything,
                        "stop_reason": texts | anything,
                    },
                )
                | anything,
                max_size=2,
            )
            | anything,
            "usage": anything,
            "timings": anything,
            "__verbose": anything,
            "error": st.fixed_dictionaries({}, optional={"code": anything, "message": anything})
            | anything,
            "object": st.sampled_from(["chat.completion.chunk", "error"]) | anything,
        },
    )
    | anything
)


@settings(max_examples=200, deadline=None)
@given(st.lists(loose_chunks, max_size=8), anything, st.booleans())
def test_any_chunks_give_a_valid_event_stream(chunks: list[Any], request: Any, error: bool) -> None:
    """Whatever a model server streams, the client gets a well-formed event stream."""
    stream = MessageStream(request if isinstance(request, dict) else {})
    data = b"".join(stream.feed(chunk) for chunk in chunks)
    data += stream.error("api_error", "cut") if error else stream.close()
    events = parse_events(data)
    check_grammar(events)
    assert not error or events[-1]["type"] == "error"


@st.composite
def mutated_requests(draw: st.DrawFn) -> Any:
    """A valid request with one value somewhere in it replaced by any JSON."""
    body = copy.deepcopy(draw(anthropic_requests()))  # sampled values are shared objects
    places: list[tuple[Any, Any]] = []

    def walk(value: Any) -> None:
        keys = value.keys() if isinstance(value, dict) else range(len(value))
        for key in keys:
            places.append((value, key))
            if isinstance(value[key], dict | list):
                walk(value[key])

    walk(body)
    container, key = draw(st.sampled_from(places))
    container[key] = draw(anything)
    return body


@settings(max_examples=300, deadline=None)
@given(anything | mutated_requests())
def test_any_json_translates_or_is_refused(body: Any) -> None:
    try:
        chat = request_to_chat(body)
    except BadRequest as refused:
        assert str(refused).isprintable()
        return
    json.dumps(chat)
