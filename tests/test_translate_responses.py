"""OpenAI Responses ⇄ chat completions (`trioswap.protocols.responses_chat`).

Requests shaped like Codex CLI's traffic (tests/fixtures/responses/requests) must become the chat
requests written beside them; chat chunk streams shaped like llama-server's and vLLM's
(tests/fixtures/responses/streams) must become event streams that a strict checker and the openai
SDK accept, ending in the output written beside them — and the same chunks, answered whole, the
same output. Properties over generated requests and chunk sequences cover the rest.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai import omit
from openai.lib.streaming.responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from trioswap.errors import BadRequest
from trioswap.protocols.responses_chat import (
    ResponseStream,
    chat_error_to_responses,
    request_to_chat,
    response_from_chat,
)

FIXTURES = Path(__file__).parent / "fixtures" / "responses"
REQUESTS = sorted((FIXTURES / "requests").glob("*.json"))
STREAMS = sorted((FIXTURES / "streams").glob("*.json"))
EVENT = TypeAdapter(ResponseStreamEvent)
TERMINAL = ("response.completed", "response.incomplete", "response.failed")
REQUEST = {"model": "m", "input": "hi", "stream": True}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


# --- what a chat request and an event stream must be -------------------------------------------


def check_chat(chat: dict[str, Any]) -> None:
    """A chat request a server can take: roles and content shapes right, and every tool message
    in the run of tool messages right after the assistant message that made its call."""
    json.dumps(chat)
    answering: set[str] | None = None  # the calls the current run of tool messages answers
    for message in chat["messages"]:
        role, content = message["role"], message["content"]
        if role == "tool":
            assert answering is not None and message["tool_call_id"] in answering, message
            assert isinstance(content, str)
            continue
        answering = None
        if role == "assistant":
            calls = message.get("tool_calls")
            assert isinstance(content, str) or (content is None and calls), message
            if calls:
                answering = {call["id"] for call in calls}
                assert len(answering) == len(calls)
                for call in calls:
                    assert call["type"] == "function"
                    assert isinstance(call["function"]["name"], str)
                    assert isinstance(call["function"]["arguments"], str)
        elif role == "system":
            assert isinstance(content, str)
        else:
            assert role == "user", message
            assert isinstance(content, str) or all(
                part["type"] in ("text", "image_url") for part in content
            )
    for tool in chat.get("tools", ()):
        assert tool["type"] == "function"
        assert isinstance(tool["function"]["name"], str)
        assert isinstance(tool["function"]["parameters"], dict)
    if "tool_choice" in chat or "parallel_tool_calls" in chat:
        assert chat["tools"]


def parse_events(data: bytes) -> list[dict[str, Any]]:
    """Complete server-sent events, each `event: <type>` and one `data:` line of that type."""
    assert not data or data.endswith(b"\n\n"), data[-200:]
    events = []
    for block in data.decode("ascii").split("\n\n")[:-1]:
        name, payload = block.split("\n")
        assert name.startswith("event: ") and payload.startswith("data: "), block
        event = json.loads(payload.removeprefix("data: "))
        assert event["type"] == name.removeprefix("event: ")
        events.append(event)
    return events


# Each item's events, in order (event types without the `response.` prefix).
_GRAMMARS = {
    "message": "output_item.added content_part.added( output_text.delta)* output_text.done "
    "content_part.done output_item.done",
    "reasoning": "output_item.added reasoning_summary_part.added( reasoning_summary_text.delta)* "
    "reasoning_summary_text.done reasoning_summary_part.done output_item.done",
    "function_call": "output_item.added( function_call_arguments.delta)* "
    "function_call_arguments.done output_item.done",
    "custom_tool_call": "output_item.added( custom_tool_call_input.delta)? "
    "custom_tool_call_input.done output_item.done",
}
# Where each item type's whole text is, in a done item and in its `.done` events.
_WHOLE = {
    "message": lambda item: item["content"][0]["text"],
    "reasoning": lambda item: item["summary"][0]["text"],
    "function_call": lambda item: item["arguments"],
    "custom_tool_call": lambda item: item["input"],
}
_DONE_TEXT = {
    "output_text.done": "text",
    "reasoning_summary_text.done": "text",
    "function_call_arguments.done": "arguments",
    "custom_tool_call_input.done": "input",
}


@dataclass
class Item:
    added: dict[str, Any]
    kinds: list[str] = field(default_factory=list)
    deltas: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # from .done events and parts
    done: dict[str, Any] | None = None


def check_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    """A well-formed Responses event stream; its final response object.

    Sequence numbers count up from 0; created and in_progress open it,
    one completed, incomplete or failed ends it; every item is added once at the next output
    index and its events follow its grammar, addressed by its id and index, deltas adding up to
    its done text; the final output is the done items (all of them unless it failed). Every
    event parses as the openai SDK's ResponseStreamEvent."""
    for n, event in enumerate(events):
        assert event["sequence_number"] == n, (n, event)
        EVENT.validate_python(sdk_view(event))
    kinds = [event["type"] for event in events]
    opening = ["response.created", "response.in_progress"]
    assert kinds[: len(opening)] == opening, kinds[:3]
    assert kinds[-1] in TERMINAL and sum(kind in TERMINAL for kind in kinds) == 1, kinds
    responses = [event["response"] for event in events if "response" in event]
    assert len({response["id"] for response in responses}) == 1
    items: list[Item] = []
    for event in events[len(opening) : -1]:
        kind = event["type"].removeprefix("response.")
        assert kind not in ("created", "in_progress"), kind
        if kind == "output_item.added":
            assert event["output_index"] == len(items)
            assert event["item"]["id"] not in {item.added["id"] for item in items}
            items.append(Item(event["item"]))
        item = items[event["output_index"]]
        assert item.done is None, f"{kind} after the item was done"
        item.kinds.append(kind)
        if "item_id" in event:
            assert event["item_id"] == item.added["id"]
        if "delta" in event:
            item.deltas.append(event["delta"])
        if kind in _DONE_TEXT:
            item.texts.append(event[_DONE_TEXT[kind]])
        if kind.endswith("part.done"):
            item.texts.append(event["part"]["text"])
        if kind == "function_call_arguments.done":
            assert event["name"] == item.added["name"]
        if kind == "output_item.done":
            item.done = event["item"]
    final = events[-1]["response"]
    for item in items:
        kind = item.added["type"]
        if item.done is None:
            assert events[-1]["type"] == "response.failed", f"{kind} never done"
            continue
        assert re.fullmatch(_GRAMMARS[kind], " ".join(item.kinds)), item.kinds
        for key in ("id", "type", "call_id", "name"):
            assert item.done.get(key) == item.added.get(key), key
        whole = _WHOLE[kind](item.done)
        assert all(text == whole for text in item.texts), (item.texts, whole)
        if kind != "custom_tool_call":  # its input is decoded whole
            assert "".join(item.deltas) == whole
        assert item.done["status"] in ("completed", "incomplete")
    assert final["output"] == [item.done for item in items if item.done is not None]
    assert final["status"] == events[-1]["type"].removeprefix("response.")
    Response.model_validate(sdk_view(events[-1])["response"])
    return final


def sdk_view(event: dict[str, Any]) -> dict[str, Any]:
    """The event as the openai SDK can check it: its list of failure codes lacks
    context_length_exceeded, which the API sends and Codex acts on."""
    error = event.get("response", {}).get("error")
    if error and error["code"] == "context_length_exceeded":
        return {
            **event,
            "response": {**event["response"], "error": {**error, "code": "server_error"}},
        }
    return event


def stream(request: dict[str, Any], chunks: list[Any]) -> list[bytes]:
    """What a ResponseStream sends for `chunks`: one piece per chunk, and the close."""
    translator = ResponseStream(request)
    return [translator.feed(chunk) for chunk in chunks] + [translator.close()]


def events_of(pieces: list[bytes]) -> list[dict[str, Any]]:
    # Each piece holds whole events: a piece can be sent as soon as it is made.
    return [event for piece in pieces for event in parse_events(piece)]


def aggregate(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The non-streamed chat completion a server would answer for the same chunks."""
    content, reasoning, calls = [], [], {}
    finish = usage = None
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content.append(delta.get("content") or "")
            reasoning.append(delta.get("reasoning_content") or delta.get("reasoning") or "")
            for call in delta.get("tool_calls", ()):
                into = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                into["id"] = into["id"] or call.get("id", "")
                into["name"] = into["name"] or call["function"].get("name", "")
                into["arguments"] += call["function"].get("arguments", "")
            finish = choice["finish_reason"] or finish
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content) or None}
    if "".join(reasoning):
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for _, c in sorted(calls.items())
        ]
    completion = {"object": "chat.completion", "model": "m"}
    completion["choices"] = [{"index": 0, "message": message, "finish_reason": finish}]
    if usage is not None:
        completion["usage"] = usage
    return completion


def without_ids(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if k != "id"} for item in output]


def expected_output(item: dict[str, Any]) -> dict[str, Any]:
    """An item as a fixture writes it: its type, status and whole text."""
    kind = item["type"]
    found = {"type": kind, "status": item["status"]}
    if kind in ("message", "reasoning"):
        found["text"] = _WHOLE[kind](item)
    else:
        found.update({k: item[k] for k in ("call_id", "name", "arguments", "input") if k in item})
    return found


def check_expected(response: dict[str, Any], expect: dict[str, Any]) -> None:
    assert response["status"] == expect["status"]
    reason = expect.get("reason")
    assert response["incomplete_details"] == (reason and {"reason": reason})
    assert [expected_output(item) for item in response["output"]] == expect["output"]
    assert response["usage"] == expect["usage"]


# --- requests -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", REQUESTS, ids=lambda p: p.stem)
def test_codex_shaped_requests_translate(path: Path) -> None:
    case = load(path)
    chat = request_to_chat(case["request"])
    assert chat == case["chat"]
    check_chat(chat)


def test_the_fixtures_cover_codex_traffic() -> None:
    # What the issue names, so that thinning the fixtures fails here.
    multi = load(FIXTURES / "requests" / "codex_multi_turn.json")["request"]
    kinds = [item["type"] for item in multi["input"]]
    assert {"reasoning", "function_call", "function_call_output", "web_search_call"} <= set(kinds)
    assert "function_call\nfunction_call" in "\n".join(kinds)  # parallel calls
    assert sum(tool["type"] == "function" for tool in multi["tools"]) >= 10
    assert len(multi["instructions"]) > 1000 and multi["input"][0]["role"] == "developer"
    images = load(FIXTURES / "requests" / "images.json")["request"]
    assert "input_image" in json.dumps(images["input"])
    text = load(FIXTURES / "requests" / "structured_output.json")["request"]["text"]
    assert text["format"]["type"] == "json_schema"


def test_instructions_alone_and_empty_input() -> None:
    assert request_to_chat({"model": "m", "instructions": "x"})["messages"] == [
        {"role": "system", "content": "x"}
    ]
    assert request_to_chat({"model": "m", "instructions": "", "input": []})["messages"] == []
    assert "model" not in request_to_chat({"input": "hi"})


def test_streaming_asks_for_usage_and_not_streaming_asks_nothing() -> None:
    chat = request_to_chat({"model": "m", "input": "hi", "stream": True})
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert "stream" not in request_to_chat({"model": "m", "input": "hi", "stream": False})


@pytest.mark.parametrize(
    ("effort", "chat_effort"),
    [
        ("minimal", "low"),
        ("low", "low"),
        ("medium", "medium"),
        ("high", "high"),
        ("xhigh", "high"),
        ("max", "high"),
        ("none", None),
        (None, None),
    ],
)
def test_reasoning_effort(effort: str | None, chat_effort: str | None) -> None:
    chat = request_to_chat({"model": "m", "input": "hi", "reasoning": {"effort": effort}})
    assert chat.get("reasoning_effort") == chat_effort


def test_function_tool_without_parameters_gets_an_empty_object() -> None:
    tool = {"type": "function", "name": "now", "strict": None, "description": None}
    chat = request_to_chat({"model": "m", "input": "hi", "tools": [tool]})
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {"name": "now", "parameters": {"type": "object", "properties": {}}},
        }
    ]


def test_only_hosted_tools_send_no_tools_and_no_choice() -> None:
    body = {
        "input": "hi",
        "tools": [{"type": "web_search"}],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }
    chat = request_to_chat(body)
    assert {"tools", "tool_choice", "parallel_tool_calls"}.isdisjoint(chat)


def test_codex_namespace_of_tools_is_left_out_as_llama_server_does() -> None:
    namespace = {
        "type": "namespace",
        "name": "multi_agent_v1",
        "description": "Tools for spawning and managing sub-agents.",
        "tools": [{"type": "function", "name": "spawn_agent", "parameters": {}}],
    }
    function = {"type": "function", "name": "shell", "parameters": {"type": "object"}}
    chat = request_to_chat({"input": "hi", "tools": [function, namespace]})
    assert [t["function"]["name"] for t in chat["tools"]] == ["shell"]


def test_reasoning_goes_to_the_assistant_message_after_it() -> None:
    body = {
        "input": [
            {"role": "user", "content": "q"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "a"}]},
            {
                "type": "reasoning",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": "b"}],
            },
            {"role": "assistant", "content": "answer"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "c"}]},
            {"type": "function_call", "call_id": "1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "1", "output": "r"},
        ]
    }
    messages = request_to_chat(body)["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": "answer",
        "reasoning_content": "a\n\nb\n\nc",
        "tool_calls": [
            {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }
    assert messages[2] == {"role": "tool", "tool_call_id": "1", "content": "r"}


def test_a_failed_call_output_as_older_codex_sends_it() -> None:
    body = {
        "input": [
            {"type": "function_call", "call_id": "1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "1",
             "output": {"content": "exit 1", "success": False}},
        ]
    }  # fmt: skip
    assert request_to_chat(body)["messages"][1] == {
        "role": "tool",
        "tool_call_id": "1",
        "content": "exit 1",
    }


def test_calls_after_tool_results_are_a_new_assistant_message() -> None:
    call = {"type": "function_call", "name": "f", "arguments": "{}"}
    body = {
        "input": [
            {"role": "user", "content": "q"},
            {**call, "call_id": "1"},
            {"type": "function_call_output", "call_id": "1", "output": "r1"},
            {**call, "call_id": "2"},
            {"role": "user", "content": "meanwhile"},  # the output comes after this
            {"type": "function_call_output", "call_id": "2", "output": "r2"},
        ]
    }
    messages = request_to_chat(body)["messages"]
    assert [(m["role"], m.get("tool_call_id")) for m in messages] == [
        ("user", None),
        ("assistant", None),
        ("tool", "1"),
        ("assistant", None),
        ("tool", "2"),
        ("user", None),
    ]
    check_chat(request_to_chat(body))


@pytest.mark.parametrize(
    ("body", "where", "says"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id", "stateless"),
        ({"previous_response_id": "resp_1"}, "previous_response_id", "store: false"),
        ({"conversation": "conv_1"}, "conversation", "stateless"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt", "instructions"),
        ({"background": True}, "background", "stateless"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]", "item itself"),
        ({"tools": [{"type": "local_shell"}]}, "tools[0]", "'local_shell'"),
        ({"tools": [{"type": "computer_use_preview"}]}, "tools[0]", "function tool"),
        ({"tools": [{"type": ["function"]}]}, "tools[0].type", "expected a string"),
        ({"tools": {"type": "function"}}, "tools", "expected an array"),
        ({"tools": [{"type": "function"}]}, "tools[0].name", "expected a string"),
        (
            {"tools": [{"type": "function", "name": "f", "parameters": []}]},
            "tools[0].parameters",
            "object",
        ),
        (
            {"tools": [{"type": "function", "name": "f", "strict": "yes"}]},
            "tools[0].strict",
            "true or false",
        ),
        (
            {"tools": [{"type": "custom", "name": "c", "format": {"type": "grammar"}}]},
            "tools[0].format.syntax",
            "string",
        ),
        ({"tool_choice": {"type": "file_search"}}, "tool_choice", "'file_search'"),
        ({"tool_choice": "required"}, "tool_choice", "no tool"),
        ({"tool_choice": {"type": "function", "name": "f"}}, "tool_choice", "no tool"),
        (
            {"tool_choice": {"type": "allowed_tools", "mode": "none", "tools": []}},
            "tool_choice.mode",
            "'none'",
        ),
        ({"tool_choice": 7}, "tool_choice", "object"),
        ({"input": 5}, "input", "expected an array"),
        ({"input": ["hi"]}, "input[0]", "expected an object"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role", "'tool'"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0]",
            "no files",
        ),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}
                ]
            },
            "input[0].content[0]",
            "data: URL",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image"}]}]},
            "input[0].content[0]",
            "image_url",
        ),
        (
            {"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "u"}]}]},
            "input[0].content[0]",
            "system message",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
            "input[0].content[0].text",
            "string",
        ),
        ({"input": [{"role": "user", "content": None}]}, "input[0].content", "array"),
        (
            {"input": [{"type": "function_call_output", "call_id": "c9", "output": "x"}]},
            "input[0].call_id",
            "whole conversation",
        ),
        (
            {"input": [{"type": "function_call", "call_id": "c", "name": "f"}]},
            "input[0].arguments",
            "string",
        ),
        (
            {
                "input": [
                    {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_file"}],
                    },
                ]
            },
            "input[1].output[0]",
            "text or images",
        ),
        (
            {"input": [{"type": "local_shell_call", "call_id": "c"}]},
            "input[0]",
            "'local_shell_call'",
        ),
        ({"instructions": ["x"]}, "instructions", "string"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format.type", "'yaml'"),
        (
            {"text": {"format": {"type": "json_schema", "name": "n"}}},
            "text.format.schema",
            "object",
        ),
        ({"max_output_tokens": 1.5}, "max_output_tokens", "integer"),
        ({"temperature": True}, "temperature", "number"),
        (
            {"parallel_tool_calls": "yes", "tools": [{"type": "function", "name": "f"}]},
            "parallel_tool_calls",
            "true or false",
        ),
        ({"stream": "yes"}, "stream", "true or false"),
        ({"user": 3}, "user", "string"),
        ({"reasoning": "high"}, "reasoning", "object"),
    ],
)
def test_what_cannot_be_translated_is_refused_saying_where(
    body: dict[str, Any], where: str, says: str
) -> None:
    with pytest.raises(BadRequest) as raised:
        request_to_chat({"model": "m", **body})
    message = str(raised.value)
    assert message.startswith(f"{where}: "), message
    assert says in message


def test_a_huge_value_is_clipped_in_the_message() -> None:
    with pytest.raises(BadRequest) as raised:
        request_to_chat({"previous_response_id": "r" * 100_000})
    assert len(str(raised.value)) < 1000


# --- answers --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.stem)
def test_streams_translate(path: Path) -> None:
    case = load(path)
    events = events_of(stream(case["request"], case["chunks"]))
    response = check_events(events)
    check_expected(response, case["expect"])
    assert response["model"] == case["request"]["model"] and response["store"] is False
    # The openai SDK's own stream reader follows it to the same text and calls.
    state = ResponseStreamState(input_tools=omit, text_format=omit)
    for event in events:
        state.handle_event(EVENT.validate_python(event))
    snapshot = state.accumulate_event(EVENT.validate_python(events[-1]))
    for mine, theirs in zip(response["output"], snapshot.output, strict=True):
        if mine["type"] == "message":
            assert theirs.content[0].text == mine["content"][0]["text"]
        if mine["type"] == "function_call":
            assert theirs.arguments == mine["arguments"]


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.stem)
def test_the_same_answers_whole_translate_alike(path: Path) -> None:
    case = load(path)
    response = response_from_chat(aggregate(case["chunks"]), case["request"])
    Response.model_validate(response)
    check_expected(response, case["expect"])
    assert response["object"] == "response" and response["id"].startswith("resp_")


def test_a_response_echoes_the_request() -> None:
    request = load(FIXTURES / "requests" / "structured_output.json")["request"]
    response = response_from_chat({"choices": [{"message": {"content": "{}"}}]}, request)
    Response.model_validate(response)
    assert response["metadata"] == {"ticket": "T-1"} and response["store"] is False
    assert response["text"] == request["text"] and response["max_output_tokens"] == 512
    assert (response["temperature"], response["top_p"], response["user"]) == (0.2, 0.9, "dev-42")


@pytest.mark.parametrize(
    "chat",
    [
        {},
        {"choices": []},
        {"choices": [None]},
        {"choices": [{"message": "x"}]},
        {"choices": [{"message": {"content": None, "tool_calls": "x"}}], "usage": "x"},
    ],
)
def test_an_answer_that_is_not_a_chat_completion_is_an_empty_message(chat: dict[str, Any]) -> None:
    response = response_from_chat(chat, REQUEST)
    Response.model_validate(response)
    assert without_ids(response["output"]) == [
        {
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "", "annotations": []}],
        }
    ]
    assert response["usage"] is None


def test_tool_call_arguments_as_an_object_and_ids_missing() -> None:
    call = {"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}
    response = response_from_chat({"choices": [{"message": {"tool_calls": [call]}}]}, REQUEST)
    (item,) = response["output"]
    assert item["arguments"] == '{"a": 1}' and item["call_id"].startswith("call_")
    assert item["id"].startswith("fc_")


def test_a_custom_tool_call_whose_arguments_are_not_json_is_the_input_as_it_is() -> None:
    request = {"model": "m", "tools": [{"type": "custom", "name": "patch"}]}
    for arguments, given_input in [
        ("*** Begin", "*** Begin"),
        ('{"input": 3}', '{"input": 3}'),
        ('{"input": "x"}', "x"),
        ("[" * 100_000, "[" * 100_000),
    ]:
        call = {"id": "c", "function": {"name": "patch", "arguments": arguments}}
        chat = {"choices": [{"message": {"tool_calls": [call]}, "finish_reason": "tool_calls"}]}
        (item,) = response_from_chat(chat, request)["output"]
        assert item["type"] == "custom_tool_call" and item["input"] == given_input


def test_usage_details_and_a_missing_total() -> None:
    usage = {
        "prompt_tokens": 5,
        "completion_tokens": 2,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 1},
    }
    response = response_from_chat(
        {"choices": [{"message": {"content": "x"}}], "usage": usage}, REQUEST
    )
    assert response["usage"] == {
        "input_tokens": 5,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 1},
        "total_tokens": 7,
    }


def test_content_filter_is_incomplete() -> None:
    chat = {"choices": [{"message": {"content": "x"}, "finish_reason": "content_filter"}]}
    response = response_from_chat(chat, REQUEST)
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "content_filter"}


# --- stream endings -------------------------------------------------------------------------


def text_chunk(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


def test_an_error_fails_the_response_and_leaves_open_items_open() -> None:
    translator = ResponseStream(REQUEST)
    call = {"index": 0, "id": "c1", "function": {"name": "shell", "arguments": '{"cmd": "rm'}}
    pieces = [
        translator.feed(text_chunk("Let me")),
        translator.feed({"choices": [{"delta": {"tool_calls": [call]}}]}),
        translator.error("server_error", "upstream of model 'm': the connection broke"),
    ]
    assert translator.feed(text_chunk("more")) == translator.close() == b""
    assert translator.error("server_error", "again") == b""
    events = events_of(pieces)
    final = check_events(events)
    assert final["status"] == "failed"
    assert final["error"] == {
        "code": "server_error",
        "message": "upstream of model 'm': the connection broke",
    }
    # The message was done when the call started; the call cut short is never done.
    assert [item["type"] for item in final["output"]] == ["message"]
    assert not any(
        e["type"] == "response.output_item.done" and e["item"]["type"] == "function_call"
        for e in events
    )


def test_an_error_before_anything_still_opens_the_response() -> None:
    events = events_of([ResponseStream(REQUEST).error("upstream_error", "boom")])
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.failed",
    ]
    check_events(events)


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (
            {
                "code": 400,
                "message": "the request exceeds the available context size, try increasing it",
                "type": "exceed_context_size_error",
            },
            "context_length_exceeded",
            "exceeds the available",
        ),
        (
            {"message": "bad", "type": "server_error", "code": "rate_limit_exceeded"},
            "rate_limit_exceeded",
            "bad",
        ),
        ({"message": "bad", "type": "server_error", "code": "overloaded"}, "server_error", "bad"),
        ("out of memory", "server_error", "out of memory"),
        ([1], "server_error", "the model server failed"),
    ],
)
def test_an_error_inside_the_stream_fails_the_response(
    error: object, code: str, message: str
) -> None:
    translator = ResponseStream(REQUEST)
    pieces = [
        translator.feed(text_chunk("Hi")),
        translator.feed({"error": error}),
        translator.close(),
    ]
    final = check_events(events_of(pieces[:2]))
    assert final["error"]["code"] == code and message in final["error"]["message"]
    assert pieces[2] == b""


def test_loading_progress_then_the_answer_is_one_response() -> None:
    """trioswap's progress is a reasoning item of the same stream; the answer's reasoning
    opens an item of its own after it."""
    translator = ResponseStream(REQUEST)
    progress = {"choices": [{"delta": {"reasoning_content": "Loading model m…\n"}}]}
    reasoning = {"choices": [{"delta": {"reasoning_content": "hmm"}}]}
    pieces = [translator.feed(progress), translator.end_item(), translator.end_item()]
    pieces += [translator.feed(reasoning), translator.feed(text_chunk("Hi")), translator.close()]
    final = check_events(events_of(pieces))
    assert [item["summary"][0]["text"] for item in final["output"][:2]] == [
        "Loading model m…\n",
        "hmm",
    ]
    assert final["output"][2]["content"][0]["text"] == "Hi"
    assert pieces[2] == b""


def test_handed_over_after_the_progress() -> None:
    translator = ResponseStream(REQUEST)
    translator.feed({"choices": [{"delta": {"reasoning_content": "Loading…"}}]})
    done = events_of([translator.end_item()])
    response, sequence, output = translator.hand_over()
    assert sequence == done[-1]["sequence_number"] + 1 and output == [done[-1]["item"]]
    assert response["id"].startswith("resp_") and response["status"] == "in_progress"
    assert translator.feed(text_chunk("Hi")) == b"" and translator.close() == b""


def test_a_call_named_late_is_added_then_with_what_came_before() -> None:
    chunks = [
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}}]},
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "c", "function": {"name": "f", "arguments": ": 1}"}}
                        ]
                    }
                }
            ]
        },
    ]
    events = events_of(stream(REQUEST, chunks))
    final = check_events(events)
    (item,) = final["output"]
    assert (item["name"], item["arguments"], item["call_id"]) == ("f", '{"a": 1}', "c")
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert deltas == ['{"a": 1}']


def test_calls_without_an_index_each_whole_in_one_chunk() -> None:
    def whole(name: str) -> dict[str, Any]:
        call = {"id": f"id_{name}", "function": {"name": name, "arguments": "{}"}}
        return {"choices": [{"delta": {"tool_calls": [call]}}]}

    final = check_events(events_of(stream(REQUEST, [whole("a"), whole("b")])))
    assert [(i["call_id"], i["name"], i["arguments"]) for i in final["output"]] == [
        ("id_a", "a", "{}"),
        ("id_b", "b", "{}"),
    ]


def test_a_call_never_named_is_still_handed_over() -> None:
    chunk = {
        "choices": [{"delta": {"tool_calls": [{"index": 3, "function": {"arguments": "{}"}}]}}]
    }
    final = check_events(events_of(stream(REQUEST, [chunk])))
    (item,) = final["output"]
    assert (item["type"], item["name"], item["arguments"]) == ("function_call", "", "{}")


def test_events_escape_what_utf8_cannot_hold() -> None:
    pieces = stream(REQUEST, [text_chunk("caf\u00e9 \ud800 \U0001f600")])
    final = check_events(events_of(pieces))
    assert final["output"][0]["content"][0]["text"] == "caf\u00e9 \ud800 \U0001f600"


# --- upstream errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            b'{"error":{"code":400,"message":"the request exceeds the available context size,'
            b' try increasing it","type":"exceed_context_size_error","n_prompt_tokens":9000,'
            b'"n_ctx":8192}}',
            (400, "exceed_context_size_error", "context_length_exceeded", None),
        ),
        (
            400,
            b'{"object":"error","message":"This model\'s maximum context length is 4096 tokens.'
            b' However, you requested 5000 tokens.","type":"BadRequestError","param":null,'
            b'"code":400}',
            (400, "BadRequestError", "context_length_exceeded", None),
        ),
        (
            400,
            b'{"error":{"message":"bad tool","type":"invalid_request_error","param":"tools",'
            b'"code":"invalid_value"}}',
            (400, "invalid_request_error", "invalid_value", "tools"),
        ),
        (
            404,
            b'{"error":"model \\"x\\" not found, try pulling it first"}',
            (404, "invalid_request_error", None, None),
        ),
        (429, b"", (429, "rate_limit_error", "rate_limit_exceeded", None)),
        (401, b"no", (401, "authentication_error", None, None)),
        (503, b"<html>Loading model</html>", (503, "server_error", None, None)),
        (200, b"{}", (502, "server_error", None, None)),
        (500, b"\xff\xfe not utf-8", (500, "server_error", None, None)),
        (500, b"[" * 100_000, (500, "server_error", None, None)),
    ],
)
def test_upstream_errors_take_the_openai_shape(
    status: int, body: bytes, expected: tuple[int, str, str | None, str | None]
) -> None:
    got_status, answer = chat_error_to_responses(status, body)
    error = answer["error"]
    assert (got_status, error["type"], error["code"], error["param"]) == expected
    assert set(error) == {"message", "type", "code", "param"} and error["message"]
    assert len(error["message"]) < 2100


def test_an_upstream_message_keeps_its_words() -> None:
    _, answer = chat_error_to_responses(404, b'{"error":"model \\"x\\" not found"}')
    assert answer["error"]["message"] == 'model "x" not found'
    _, answer = chat_error_to_responses(503, b"")
    assert answer["error"]["message"] == "the model server answered 503 with no body"


# --- properties -----------------------------------------------------------------------------

_names = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
_text = st.text(max_size=12)
_image = st.builds(
    lambda url, detail: {"type": "input_image", "image_url": url, "detail": detail},
    st.sampled_from(["data:image/png;base64,AA==", "https://example.com/a.png"]),
    st.sampled_from(["low", "high", "auto", "original"]),
)


def _parts(kind: str, media: bool) -> st.SearchStrategy[Any]:
    text = st.builds(lambda t: {"type": kind, "text": t}, _text)
    return _text | st.lists(text | _image if media else text, max_size=3)


_CONTENT = {
    "user": _parts("input_text", media=True),
    "system": _parts("input_text", media=False),
    "developer": _parts("input_text", media=False),
    "assistant": _parts("output_text", media=False),
}


@st.composite
def responses_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A valid Responses request: messages of every role, rounds of (parallel) function and
    custom tool calls whose outputs come back in any order and after other items, reasoning,
    hosted tools' records; function, custom and hosted tools; a tool choice that fits."""
    ids = itertools.count()
    items: list[dict[str, Any]] = []

    def message() -> dict[str, Any]:
        role = draw(st.sampled_from(sorted(_CONTENT)))
        item = {"role": role, "content": draw(_CONTENT[role])}
        return {"type": "message", **item} if draw(st.booleans()) else item

    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["message", "round", "reasoning", "hosted"]))
        if kind == "message":
            items.append(message())
        elif kind == "reasoning":
            items.append(
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": draw(_text)}]}
            )
        elif kind == "hosted":
            items.append({"type": "web_search_call", "id": "ws", "status": "completed"})
        else:
            calls = [f"call_{next(ids)}" for _ in range(draw(st.integers(1, 3)))]
            for call_id in calls:
                if draw(st.booleans()):
                    items.append(
                        {
                            "type": "function_call",
                            "call_id": call_id,
                            "name": draw(_names),
                            "arguments": "{}",
                        }
                    )
                else:
                    items.append(
                        {
                            "type": "custom_tool_call",
                            "call_id": call_id,
                            "name": draw(_names),
                            "input": draw(_text),
                        }
                    )
            for call_id in draw(st.permutations(calls)):
                if draw(st.booleans()):
                    items.append(message())
                output = draw(
                    _text
                    | st.lists(
                        st.builds(lambda t: {"type": "input_text", "text": t}, _text) | _image,
                        max_size=2,
                    )
                )
                kind = draw(st.sampled_from(["function_call_output", "custom_tool_call_output"]))
                items.append({"type": kind, "call_id": call_id, "output": output})
    names = draw(st.lists(_names, unique=True, max_size=4))
    tools: list[dict[str, Any]] = [
        {"type": draw(st.sampled_from(["function", "custom"])), "name": name} for name in names
    ]
    tools += draw(
        st.lists(st.sampled_from([{"type": "web_search"}, {"type": "file_search"}]), max_size=1)
    )
    choices: list[Any] = [None, "auto", "none"]
    if names:
        choices += [
            "required",
            {"type": "function", "name": names[0]},
            {
                "type": "allowed_tools",
                "mode": "auto",
                "tools": [{"type": "function", "name": names[-1]}],
            },
        ]
    body: dict[str, Any] = {"model": "m", "input": items, "tools": tools}
    body["tool_choice"] = draw(st.sampled_from(choices))
    body["instructions"] = draw(st.none() | _text)
    body["stream"] = draw(st.booleans())
    return body


@given(responses_requests())
@settings(max_examples=300)
def test_any_valid_request_translates_to_a_valid_chat_request(body: dict[str, Any]) -> None:
    chat = request_to_chat(body)
    check_chat(chat)
    kinds = ("function_call", "custom_tool_call")
    calls = [item["call_id"] for item in body["input"] if item.get("type") in kinds]
    made = [c["id"] for m in chat["messages"] for c in m.get("tool_calls", ())]
    answered = [m["tool_call_id"] for m in chat["messages"] if m["role"] == "tool"]
    assert made == calls and sorted(answered) == sorted(calls)


_piece = st.text(min_size=1, max_size=6)


@st.composite
def chunk_sequences(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Chunks as a server streams them: reasoning, then text, then tool calls whose argument
    pieces interleave (each call named in index order), a finish reason, maybe usage at the end."""
    deltas: list[dict[str, Any]] = [
        {"role": "assistant", "content": draw(st.sampled_from([None, ""]))}
    ]
    key = draw(st.sampled_from(["reasoning_content", "reasoning"]))
    deltas += [{key: p} for p in draw(st.lists(_piece, max_size=4))]
    deltas += [{"content": p} for p in draw(st.lists(_piece, max_size=4))]
    pending = []
    for index in range(draw(st.integers(0, 3))):
        head = {
            "index": index,
            "id": f"call_{index}",
            "type": "function",
            "function": {"name": draw(_names), "arguments": ""},
        }
        pieces = [
            {"index": index, "function": {"arguments": p}}
            for p in draw(st.lists(_piece, max_size=3))
        ]
        pending.append([head, *pieces])
    while any(pending):
        # Any call may go on, but a call starts only after the ones before it have.
        started = [not p or "name" not in p[0]["function"] for p in pending]
        ready = [c for i, c in enumerate(pending) if c and all(started[:i])]
        call = draw(st.sampled_from(ready))
        deltas.append({"tool_calls": [call.pop(0)]})
    chunks = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    finish = draw(st.sampled_from(["stop", "length", "tool_calls", "content_filter", None]))
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if draw(st.booleans()):
        usage = {
            "prompt_tokens": draw(st.integers(0, 99)),
            "completion_tokens": draw(st.integers(0, 99)),
        }
        chunks.append({"choices": [], "usage": usage})
    return chunks


@given(chunk_sequences())
@settings(max_examples=300)
def test_a_stream_gives_what_the_whole_answer_gives(chunks: list[dict[str, Any]]) -> None:
    streamed = check_events(events_of(stream(REQUEST, chunks)))
    whole = response_from_chat(aggregate(chunks), REQUEST)
    assert without_ids(streamed["output"]) == without_ids(whole["output"])
    assert (streamed["status"], streamed["usage"]) == (whole["status"], whole["usage"])
    assert streamed["incomplete_details"] == whole["incomplete_details"]


@given(chunk_sequences().flatmap(st.permutations))
@settings(max_examples=300)
def test_chunks_in_any_order_give_a_valid_event_stream(chunks: list[dict[str, Any]]) -> None:
    check_events(events_of(stream(REQUEST, chunks)))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
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
                    "usage",
                    "prompt_tokens",
                    "error",
                    "message",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@given(
    st.lists(
        st.dictionaries(st.sampled_from(["choices", "usage", "error", "id"]), _json), max_size=6
    )
)
def test_any_chunks_give_a_valid_event_stream(chunks: list[dict[str, Any]]) -> None:
    check_events(events_of(stream(REQUEST, chunks)))
