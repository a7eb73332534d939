"""The responder's API families (chat completions, Anthropic Messages, Responses), read by the
official SDKs and checked against their types, with the knobs that make it reason and call tools,
and the 404/405 answers of families it is told not to serve."""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import anthropic
import httpx
import openai
import pydantic
import pytest
import trio
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent

from tests.conftest import responders

RESPONDER = (sys.executable, "-m", "trioswap.responder", "--port", "0")
MODEL = "apis-model"
TEXT = "Hello from the responder."
ALL = ("--apis", "chat,anthropic,responses")
NOT_FOUND = {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}}
ANTHROPIC_EVENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)
RESPONSES_EVENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)

Serve = Callable[..., str]
T = TypeVar("T")


@pytest.fixture(scope="module")
def serve() -> Iterator[Serve]:
    """`serve(*args)`: the URL of a responder started with these arguments, started once for
    the module; it binds port 0 and says where."""
    with responders() as start:
        yield lambda *args: start(*RESPONDER, "--model-id", MODEL, "--response-text", TEXT, *args)


@contextlib.asynccontextmanager
async def http(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client


def anthropic_client(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key="test", max_retries=0)


def openai_client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="test", max_retries=0)


async def in_sync_openai(url: str, call: Callable[[openai.OpenAI], T]) -> T:
    """Run `call` with the synchronous client in a thread: on [DONE] the async client's chat
    stream leaves its inner async generators unfinished, which trio reports as a warning."""

    def run() -> T:
        with openai.OpenAI(base_url=url + "/v1", api_key="test", max_retries=0) as client:
            return call(client)

    return await trio.to_thread.run_sync(run)


def stream_events(body: str) -> list[tuple[str | None, Any]]:
    """(event name, data) per event of an event stream; data is JSON but for `[DONE]`."""
    assert body.endswith("\n\n"), body[-200:]
    events = []
    for block in body.removesuffix("\n\n").split("\n\n"):
        name = None
        lines = block.split("\n")
        if lines[0].startswith("event: "):
            name = lines.pop(0).removeprefix("event: ")
        (data,) = lines
        payload = data.removeprefix("data: ")
        events.append((name, payload if payload == "[DONE]" else json.loads(payload)))
    return events


def knobs(*markers: str) -> str:
    return "please help " + " ".join(markers)


WEATHER = '[[tool:get_weather {"city": "Paris", "units": "metric"}]]'
TIME = "[[tool:get_time]]"
THINK = "[[reasoning: the user wants weather]]"
WEATHER_PIECES = ['{"city":', ' "Paris",', ' "units":', ' "metric"}']


# -- which families are served ------------------------------------------------------------------


async def test_default_serves_chat_and_anthropic_and_not_responses(serve: Serve) -> None:
    async with http(serve()) as client:
        chat = await client.post("/v1/chat/completions", json={"messages": []})
        messages = await client.post("/v1/messages", json={"messages": []})
        responses = await client.post("/v1/responses", json={"input": "hi"})
    assert chat.status_code == messages.status_code == 200
    assert responses.status_code == 404
    assert responses.json() == NOT_FOUND


async def test_families_left_out_answer_404_like_llama_server(serve: Serve) -> None:
    async with http(serve("--apis", "responses")) as client:
        for path in (
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/embeddings",
            "/tokenize",
            "/apply-template",
            "/v1/messages",
            "/v1/messages/count_tokens",
        ):
            response = await client.post(path, json={})
            assert (response.status_code, response.json()) == (404, NOT_FOUND), path
            assert response.headers["content-type"] == "application/json"
        assert (await client.post("/v1/responses", json={"input": "hi"})).status_code == 200
        assert (await client.get("/v1/models")).status_code == 200
        assert (await client.get("/health")).status_code == 200


async def test_families_left_out_can_answer_405(serve: Serve) -> None:
    async with http(serve("--apis", "chat", "--unserved-status", "405")) as client:
        for path in ("/v1/messages", "/v1/messages/count_tokens", "/v1/responses"):
            response = await client.post(path, json={})
            assert response.status_code == 405, path
            assert response.headers["allow"] == ""
            assert response.json()["error"]["code"] == 405
        # Paths of no family are still unknown.
        assert (await client.post("/v1/nothing", json={})).status_code == 404
        assert (await client.post("/v1/chat/completions", json={})).status_code == 200


async def test_wrong_method_on_a_known_path_is_405(serve: Serve) -> None:
    async with http(serve()) as client:
        for method, path, allow in (
            ("GET", "/v1/chat/completions", "POST"),
            ("GET", "/v1/messages", "POST"),
            ("POST", "/health", "GET"),
            ("PUT", "/debug/requests", "GET, DELETE"),
        ):
            response = await client.request(method, path)
            assert response.status_code == 405, (method, path)
            assert response.headers["allow"] == allow
            assert response.json()["error"] == {
                "message": "Method Not Allowed",
                "type": "invalid_request_error",
                "code": 405,
            }
        unknown = await client.get("/v1/unknown")
        assert (unknown.status_code, unknown.json()) == (404, NOT_FOUND)


async def test_apis_must_name_known_families() -> None:
    for value in ("chat,bogus", ","):
        result = await trio.run_process(
            [*RESPONDER, "--model-id", "m", "--apis", value],
            capture_stderr=True,
            check=False,
        )
        assert result.returncode == 2
        assert "name API families among chat, anthropic, responses" in result.stderr.decode()


async def test_trioswap_responder_help_documents_the_knobs() -> None:
    result = await trio.run_process(
        [sys.executable, "-m", "trioswap", "responder", "--help"], capture_stdout=True
    )
    help_text = result.stdout.decode()
    for documented in ("--apis LIST", "--unserved-status", "[[tool:NAME {JSON}]]", "/debug/last"):
        assert documented in help_text


# -- chat completions ---------------------------------------------------------------------------


async def test_chat_plain_with_usage(serve: Serve) -> None:
    url = serve()
    request: dict[str, Any] = {
        "model": "asked",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "say hello please"},
        ],
    }
    async with openai_client(url) as client:
        completion = await client.chat.completions.create(**request)
        assert completion.choices[0].message.content == TEXT
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 4)

    chunks = await in_sync_openai(
        url,
        lambda client: list(
            client.chat.completions.create(
                **request, stream=True, stream_options={"include_usage": True}
            )
        ),
    )
    *content, final = chunks
    assert "".join(c.choices[0].delta.content or "" for c in content) == TEXT
    assert all(chunk.usage is None for chunk in content)
    assert final.choices == []
    assert final.usage is not None
    assert final.usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 5,
        "completion_tokens": 4,
        "total_tokens": 9,
    }

    async with http(url) as raw:
        without = await raw.post("/v1/chat/completions", json={**request, "stream": True})
    events = [data for _, data in stream_events(without.text)]
    assert events[-1] == "[DONE]"
    assert all("usage" not in chunk and chunk["choices"] for chunk in events[:-1])


async def test_chat_reasoning_and_parallel_tool_calls(serve: Serve) -> None:
    url = serve()
    request: dict[str, Any] = {
        "model": "m",
        "messages": [{"role": "user", "content": knobs(THINK, WEATHER, TIME)}],
    }
    async with openai_client(url) as client:
        completion = await client.chat.completions.create(**request)
    ChatCompletion.model_validate(completion.model_dump())
    (choice,) = completion.choices
    assert choice.finish_reason == "tool_calls"
    message = choice.message
    assert message.content == TEXT
    assert message.model_extra == {"reasoning_content": "the user wants weather"}
    assert message.tool_calls is not None
    calls = [
        (call.function.name, json.loads(call.function.arguments)) for call in message.tool_calls
    ]
    assert calls == [("get_weather", {"city": "Paris", "units": "metric"}), ("get_time", {})]
    assert len({call.id for call in message.tool_calls}) == 2
    assert completion.usage is not None
    # 4 reasoning words, 4 text words, 4 argument pieces and the "{}" of get_time.
    assert completion.usage.completion_tokens == 4 + 4 + 4 + 1

    async with http(url) as raw:
        streamed = await raw.post("/v1/chat/completions", json={**request, "stream": True})
    *chunks, done = [data for _, data in stream_events(streamed.text)]
    assert done == "[DONE]"
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    assert deltas[0]["role"] == "assistant"
    assert all("role" not in delta for delta in deltas[1:])
    kinds = [next(key for key in delta if key != "role") for delta in deltas[:-1]]
    assert kinds == ["reasoning_content"] * 4 + ["content"] * 4 + ["tool_calls"] * 7
    assert "".join(d["reasoning_content"] for d in deltas[:4]) == "the user wants weather"
    tool_deltas = [delta["tool_calls"][0] for delta in deltas[8:-1]]
    # Each call opens with its id, type and name and empty arguments, like OpenAI streams it.
    assert tool_deltas[0] == {
        "index": 0,
        "id": tool_deltas[0]["id"],
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert [d["function"]["arguments"] for d in tool_deltas[1:5]] == WEATHER_PIECES
    assert all(d.keys() == {"index", "function"} for d in tool_deltas[1:5])
    assert tool_deltas[5]["function"] == {"name": "get_time", "arguments": ""}
    assert tool_deltas[6] == {"index": 1, "function": {"arguments": "{}"}}
    assert deltas[-1] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    # The SDK's accumulator rebuilds the same message from the stream.
    def accumulate(client: openai.OpenAI) -> ChatCompletion:
        with client.chat.completions.stream(**request) as stream:
            return stream.get_final_completion()

    accumulated = (await in_sync_openai(url, accumulate)).choices[0].message
    assert accumulated.tool_calls is not None
    assert [(c.function.name, c.function.arguments) for c in accumulated.tool_calls] == [
        (c.function.name, c.function.arguments) for c in message.tool_calls
    ]
    assert accumulated.content == TEXT


async def test_chat_tool_result_reaches_the_model_and_ends_the_loop(serve: Serve) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": knobs(TIME)},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    async with openai_client(serve()) as client:
        completion = await client.chat.completions.create(model="m", messages=messages)
    message = completion.choices[0].message
    # The marker belongs to an earlier turn: no new call, an answer about the result.
    assert message.tool_calls is None
    assert message.content == f"got tool result: sunny, 21 C. {TEXT}"
    assert completion.choices[0].finish_reason == "stop"


async def test_chat_text_knob_and_max_tokens(serve: Serve) -> None:
    async with openai_client(serve()) as client:
        silent = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": knobs("[[text:]]", TIME)}]
        )
        assert silent.choices[0].message.content is None
        assert silent.choices[0].message.tool_calls is not None

        cut = await client.chat.completions.create(
            model="m",
            max_tokens=5,
            messages=[{"role": "user", "content": knobs(THINK, TIME)}],
        )
    # Cut short: reasoning and one word of text, and no tool call.
    (choice,) = cut.choices
    assert choice.finish_reason == "length"
    assert choice.message.model_extra == {"reasoning_content": "the user wants weather"}
    assert choice.message.content == "Hello"
    assert choice.message.tool_calls is None


async def test_bad_markers_are_400(serve: Serve) -> None:
    async with http(serve()) as client:
        for content, message in (
            ("[[tool:f {not json}]]", "the arguments are not JSON"),
            ('[[tool:f {"a": 1} extra]]', "takes one JSON object, then ]]"),
            ("[[tool: ]]", "needs a tool name"),
            ("[[reasoning: unterminated", "missing its closing ]]"),
        ):
            request = {"messages": [{"role": "user", "content": content}]}
            response = await client.post("/v1/chat/completions", json=request)
            assert response.status_code == 400, content
            assert message in response.json()["error"]["message"]


# -- Anthropic Messages ---------------------------------------------------------------------------


def anthropic_grammar(events: list[tuple[str | None, Any]]) -> list[tuple[str, str]]:
    """Check the event grammar of a Messages stream and each event against the SDK's types;
    return the blocks as (type, accumulated text)."""
    names = [name for name, _ in events]
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names.count("ping") == 1
    blocks: list[tuple[str, str]] = []
    open_index = None
    for name, data in events:
        assert data["type"] == name
        if name == "ping":
            continue
        ANTHROPIC_EVENT.validate_python(data)
        if name == "content_block_start":
            assert open_index is None and data["index"] == len(blocks)
            open_index = data["index"]
            blocks.append((data["content_block"]["type"], ""))
        elif name == "content_block_delta":
            assert data["index"] == open_index
            kind, text = blocks[-1]
            delta = data["delta"]
            piece = {"text_delta": "text", "thinking_delta": "thinking"}.get(delta["type"])
            if delta["type"] == "input_json_delta":
                piece = "partial_json"
            if piece is not None:
                blocks[-1] = (kind, text + delta[piece])
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    assert open_index is None
    return blocks


async def test_anthropic_plain_through_the_sdk(serve: Serve) -> None:
    url = serve()
    request: dict[str, Any] = {
        "model": "claude-ish",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "be nice"}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
    }
    async with anthropic_client(url) as client:
        message = await client.messages.create(**request)
        async with client.messages.stream(**request) as stream:
            streamed = await stream.get_final_message()
        counted = await client.messages.count_tokens(
            model="claude-ish", system=request["system"], messages=request["messages"]
        )
    Message.model_validate(message.model_dump())
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == TEXT
    assert message.stop_reason == streamed.stop_reason == "end_turn"
    assert message.usage.input_tokens == counted.input_tokens == 4
    assert message.usage.output_tokens == streamed.usage.output_tokens == 4
    assert streamed.content[0].text == TEXT

    async with http(url) as raw:
        response = await raw.post("/v1/messages", json={**request, "stream": True})
    assert anthropic_grammar(stream_events(response.text)) == [("text", TEXT)]


async def test_anthropic_thinking_and_parallel_tool_use(serve: Serve) -> None:
    url = serve()
    request: dict[str, Any] = {
        "model": "claude-ish",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": knobs(THINK, WEATHER, TIME)}],
    }
    async with anthropic_client(url) as client:
        message = await client.messages.create(**request)
        async with client.messages.stream(**request) as stream:
            streamed = await stream.get_final_message()
    for final in (message, streamed):
        Message.model_validate(final.model_dump())
        assert final.stop_reason == "tool_use"
        thinking, text, weather, clock = final.content
        assert thinking.type == "thinking" and thinking.thinking == "the user wants weather"
        assert thinking.signature
        assert text.type == "text" and text.text == TEXT
        assert weather.type == "tool_use" and clock.type == "tool_use"
        assert (weather.name, weather.input) == (
            "get_weather",
            {"city": "Paris", "units": "metric"},
        )
        assert (clock.name, clock.input) == ("get_time", {})
        assert weather.id.startswith("toolu_") and weather.id != clock.id
        assert final.usage.output_tokens == 4 + 4 + 4 + 1
    assert streamed.content[0].signature == message.content[0].signature

    async with http(url) as raw:
        response = await raw.post("/v1/messages", json={**request, "stream": True})
    events = stream_events(response.text)
    assert anthropic_grammar(events) == [
        ("thinking", "the user wants weather"),
        ("text", TEXT),
        ("tool_use", '{"city": "Paris", "units": "metric"}'),
        ("tool_use", "{}"),
    ]
    # A thinking block closes with its signature; a tool_use block opens with empty input.
    kinds = [data["delta"]["type"] for name, data in events if name == "content_block_delta"]
    assert kinds.index("signature_delta") == kinds.index("text_delta") - 1
    starts = [data["content_block"] for name, data in events if name == "content_block_start"]
    assert starts[2] == {
        "type": "tool_use",
        "id": starts[2]["id"],
        "name": "get_weather",
        "input": {},
    }


async def test_anthropic_tool_result_round_trip(serve: Serve) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": knobs(TIME)},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "sunny, 21 C"}],
                },
                {"type": "text", "text": "and now?"},
            ],
        },
    ]
    async with anthropic_client(serve()) as client:
        message = await client.messages.create(model="c", max_tokens=50, messages=messages)
        counted = await client.messages.count_tokens(model="c", messages=messages)
    assert message.stop_reason == "end_turn"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == f"got tool result: sunny, 21 C. {TEXT}"
    # The prompt: "please help [[tool:get_time]]", the result and "and now?".
    assert message.usage.input_tokens == counted.input_tokens == 3 + 3 + 2


async def test_anthropic_without_text_and_cut_short(serve: Serve) -> None:
    url = serve()
    silent: dict[str, Any] = {
        "model": "c",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": knobs("[[text:]]", TIME)}],
    }
    async with anthropic_client(url) as client:
        message = await client.messages.create(**silent)
        cut = await client.messages.create(
            model="c", max_tokens=2, messages=[{"role": "user", "content": knobs(TIME)}]
        )
    assert [block.type for block in message.content] == ["tool_use"]
    assert cut.stop_reason == "max_tokens"
    assert [(block.type, block.text) for block in cut.content] == [("text", "Hello from")]

    async with http(url) as raw:
        response = await raw.post("/v1/messages", json={**silent, "stream": True})
    assert anthropic_grammar(stream_events(response.text)) == [("tool_use", "{}")]


async def test_anthropic_crash_counts_generated_pieces_only(serve: Serve) -> None:
    url = serve("--crash-after-chunks", "3")
    request = {
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": knobs("[[reasoning: one two three]]")}],
    }
    received = ""
    async with http(url) as client:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            async with client.stream("POST", "/v1/messages", json=request) as response:
                async for text in response.aiter_text():
                    received += text
    names = re.findall(r"^event: (\S+)$", received, re.MULTILINE)
    # Three thinking deltas, and nothing after them: not even the block's signature.
    assert names == ["message_start", "content_block_start", "ping", *["content_block_delta"] * 3]
    assert "signature_delta" not in received


# -- Responses ----------------------------------------------------------------------------------


def responses_grammar(events: list[tuple[str | None, Any]]) -> list[dict[str, Any]]:
    """Check a Responses stream: SDK types, consecutive sequence numbers from 0, items opened
    and closed in order with their deltas between; return the items as output_item.done gave."""
    for number, (name, data) in enumerate(events):
        assert data["type"] == name
        assert data["sequence_number"] == number
        RESPONSES_EVENT.validate_python(data)
    names = [name for name, _ in events]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert events[0][1]["response"]["status"] == "in_progress"
    assert events[0][1]["response"]["output"] == []
    items: list[dict[str, Any]] = []
    open_item = None
    for name, data in events[2:-1]:
        if name == "response.output_item.added":
            assert open_item is None and data["output_index"] == len(items)
            open_item = data["item"]
        elif name == "response.output_item.done":
            assert open_item is not None and data["item"]["id"] == open_item["id"]
            items.append(data["item"])
            open_item = None
        else:
            assert open_item is not None, name
            assert data["item_id"] == open_item["id"]
            assert data["output_index"] == len(items)
    assert open_item is None
    assert names[-1] in ("response.completed", "response.incomplete")
    assert events[-1][1]["response"]["output"] == items
    return items


async def test_responses_plain_through_the_sdk(serve: Serve) -> None:
    url = serve(*ALL)
    async with openai_client(url) as client:
        response = await client.responses.create(
            model="gpt-ish", instructions="be brief", input="say hello please"
        )
        async with client.responses.stream(
            model="gpt-ish", instructions="be brief", input="say hello please"
        ) as stream:
            streamed = await stream.get_final_response()
    for final in (response, streamed):
        Response.model_validate(final.model_dump())
        assert final.status == "completed"
        assert final.output_text == TEXT
        assert final.instructions == "be brief"
        assert final.usage is not None
        assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 4)
        assert final.usage.total_tokens == 9

    async with http(url) as raw:
        answer = await raw.post("/v1/responses", json={"input": "hi", "stream": True})
    (message,) = responses_grammar(stream_events(answer.text))
    assert message["type"] == "message" and message["status"] == "completed"
    assert message["content"] == [{"type": "output_text", "text": TEXT, "annotations": []}]


async def test_responses_reasoning_and_parallel_function_calls(serve: Serve) -> None:
    url = serve(*ALL)
    request: dict[str, Any] = {
        "model": "gpt-ish",
        "input": [
            {
                "role": "user",
                "content": [{"type": "input_text", "text": knobs(THINK, WEATHER, TIME)}],
            }
        ],
        "tools": [{"type": "function", "name": "get_weather", "parameters": {}, "strict": False}],
    }
    async with openai_client(url) as client:
        response = await client.responses.create(**request)
        async with client.responses.stream(**request) as stream:
            streamed = await stream.get_final_response()
    for final in (response, streamed):
        Response.model_validate(final.model_dump())
        reasoning, message, weather, clock = final.output
        assert reasoning.type == "reasoning"
        assert [part.text for part in reasoning.summary] == ["the user wants weather"]
        assert message.type == "message" and final.output_text == TEXT
        assert weather.type == "function_call" and clock.type == "function_call"
        assert (weather.name, json.loads(weather.arguments)) == (
            "get_weather",
            {"city": "Paris", "units": "metric"},
        )
        assert (clock.name, clock.arguments) == ("get_time", "{}")
        assert weather.call_id != clock.call_id
        assert final.usage is not None
        assert final.usage.output_tokens == 4 + 4 + 4 + 1
        assert final.usage.output_tokens_details.reasoning_tokens == 4
        assert final.tools[0].type == "function"

    async with http(url) as raw:
        answer = await raw.post("/v1/responses", json={**request, "stream": True})
    events = stream_events(answer.text)
    items = responses_grammar(events)
    assert [item["type"] for item in items] == [
        "reasoning",
        "message",
        "function_call",
        "function_call",
    ]
    names = [name for name, _ in events]
    assert names[2:9] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        *["response.reasoning_summary_text.delta"] * 4,
        "response.reasoning_summary_text.done",
    ]
    arguments = [
        data["delta"]
        for name, data in events
        if name == "response.function_call_arguments.delta" and data["output_index"] == 2
    ]
    assert arguments == WEATHER_PIECES
    done = [data for name, data in events if name == "response.function_call_arguments.done"]
    assert [(d["name"], d["arguments"]) for d in done] == [
        ("get_weather", '{"city": "Paris", "units": "metric"}'),
        ("get_time", "{}"),
    ]


async def test_responses_function_call_output_round_trip(serve: Serve) -> None:
    request: dict[str, Any] = {
        "model": "gpt-ish",
        "input": [
            {"role": "user", "content": knobs(TIME)},
            {"type": "function_call", "call_id": "call_1", "name": "get_time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21 C"},
        ],
    }
    async with openai_client(serve(*ALL)) as client:
        response = await client.responses.create(**request)
    assert [item.type for item in response.output] == ["message"]
    assert response.output_text == f"got tool result: sunny, 21 C. {TEXT}"
    assert response.usage is not None
    assert response.usage.input_tokens == 3 + 3


async def test_responses_cut_short_is_incomplete(serve: Serve) -> None:
    url = serve(*ALL)
    request: dict[str, Any] = {"model": "m", "input": knobs(TIME), "max_output_tokens": 2}
    async with openai_client(url) as client:
        response = await client.responses.create(**request)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "Hello from"
    assert [item.type for item in response.output] == ["message"]

    async with http(url) as raw:
        answer = await raw.post("/v1/responses", json={**request, "stream": True})
    events = stream_events(answer.text)
    (message,) = responses_grammar(events)
    assert message["status"] == "incomplete"
    assert events[-1][0] == "response.incomplete"


# -- token counts and what reached the server ----------------------------------------------------


async def test_token_counts_agree_across_endpoints(serve: Serve) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "you are terse"},
        {"role": "user", "content": [{"type": "text", "text": "what is\nthe weather"}]},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "tool", "tool_call_id": "x", "content": "sunny today"},
    ]
    async with http(serve()) as client:
        chat = (await client.post("/v1/chat/completions", json={"messages": messages})).json()
        template = await client.post("/apply-template", json={"messages": messages})
        prompt = template.json()["prompt"]
        tokens = (await client.post("/tokenize", json={"content": prompt})).json()["tokens"]
        counted = await client.post(
            "/v1/messages/count_tokens",
            json={"system": "you are terse", "messages": [messages[1]]},
        )
        bad = await client.post("/apply-template", json={"messages": "hi"})
    assert prompt == "you are terse\nwhat is\nthe weather\nsunny today"
    assert chat["usage"]["prompt_tokens"] == len(tokens) == 9
    assert counted.json() == {"input_tokens": 7}
    assert bad.status_code == 400


async def test_debug_last_has_each_paths_last_body(serve: Serve) -> None:
    async with http(serve("--apis", "chat")) as client:
        await client.delete("/debug/requests")
        await client.post("/v1/chat/completions", json={"messages": [], "n": 1})
        await client.post("/v1/chat/completions", json={"messages": [], "n": 2})
        await client.post("/v1/messages", json={"refused": True})
        await client.post("/tokenize", content=b"not json")
        last = (await client.get("/debug/last")).json()
    assert last == {
        "/v1/chat/completions": {"messages": [], "n": 2},
        "/v1/messages": {"refused": True},
        "/tokenize": "not json",
    }
