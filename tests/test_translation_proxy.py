"""Anthropic Messages and Responses requests through trioswap, native or translated to chat
completions, as the official SDKs see them (issue 8: `apis`, `auto`'s fallback, the
X-Trioswap-Translated header, count_tokens, errors in the client's family)."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from tests.conftest import RESPONDER, LaunchFn, Trioswap, random_start_port

TRANSLATED = "x-trioswap-translated"


def config(apis: str = "", served: str = "chat", top: str = "") -> str:
    """Model `m`: a responder serving the API families in `served`, with `apis` keys."""
    return f"""
startPort: {random_start_port()}
{top}
models:
  m:
    cmd: {RESPONDER} --port ${{PORT}} --model-id m --apis {served}
    {f"apis: {{{apis}}}" if apis else ""}
"""


def claude(ts: Trioswap) -> anthropic.AsyncAnthropic:
    """An SDK client; use it in `async with`, which closes its connections."""
    return anthropic.AsyncAnthropic(base_url=ts.url, api_key="unused", max_retries=0)


def gpt(ts: Trioswap) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=ts.url + "/v1", api_key="unused", max_retries=0)


HELLO = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("apis", "served", "translated"),
    [
        ("anthropic: translate", "chat,anthropic", True),
        ("anthropic: native", "chat,anthropic", False),
        ("", "chat,anthropic", False),  # auto, and the server has the route
        ("", "chat", True),  # auto, and it has not: translated
    ],
)
async def test_messages(launch: LaunchFn, apis: str, served: str, translated: bool) -> None:
    ts = await launch(config(apis, served))
    async with claude(ts) as client:
        await _messages(client, translated)


async def _messages(client: anthropic.AsyncAnthropic, translated: bool) -> None:
    raw = await client.messages.with_raw_response.create(
        model="m",
        max_tokens=50,
        messages=HELLO,  # type: ignore[arg-type]
    )
    message = raw.parse()
    assert message.role == "assistant"
    assert message.content[0].type == "text" and "m" in message.content[0].text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert raw.headers.get(TRANSLATED) == ("anthropic->chat" if translated else None)

    text = []
    async with client.messages.stream(model="m", max_tokens=50, messages=HELLO) as stream:  # type: ignore[arg-type]
        async for event in stream:
            if event.type == "text":
                text.append(event.text)
        final = await stream.get_final_message()
    assert "".join(text) == final.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0


@pytest.mark.parametrize(
    ("apis", "served", "translated"),
    [
        ("responses: translate", "chat,responses", True),
        ("responses: native", "chat,responses", False),
        ("", "chat,responses", False),
        ("", "chat", True),
    ],
)
async def test_responses(launch: LaunchFn, apis: str, served: str, translated: bool) -> None:
    ts = await launch(config(apis, served))
    async with gpt(ts) as client:
        await _responses(client, translated)


async def _responses(client: openai.AsyncOpenAI, translated: bool) -> None:
    raw = await client.responses.with_raw_response.create(model="m", input="hi")
    response = raw.parse()
    assert response.status == "completed"
    assert "m" in response.output_text
    assert response.usage is not None and response.usage.input_tokens > 0
    assert raw.headers.get(TRANSLATED) == ("responses->chat" if translated else None)

    deltas = []
    stream = await client.responses.create(model="m", input="hi", stream=True)
    kinds = []
    async for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        if event.type == "response.completed":
            assert "".join(deltas) == event.response.output_text
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"


async def test_auto_remembers_until_the_server_restarts(launch: LaunchFn) -> None:
    ts = await launch(config(served="chat"))
    async with claude(ts) as client, ts.client() as http:
        for _ in range(2):
            await client.messages.create(model="m", max_tokens=5, messages=HELLO)  # type: ignore[arg-type]
        assert ts.count_output(r"answered /v1/messages 404: translating anthropic") == 1
        assert ts.count_output(r"POST /v1/messages: model m, anthropic->chat") == 2
        running = (await ts.running())["m"]
        assert running["apis"] == {"anthropic": "auto: translate", "responses": "auto"}
        assert (await http.post("/models/unload/m")).status_code == 200
        await client.messages.create(model="m", max_tokens=5, messages=HELLO)  # type: ignore[arg-type]
        assert ts.count_output(r"answered /v1/messages 404: translating anthropic") == 2


async def test_errors_come_back_in_the_clients_family(launch: LaunchFn) -> None:
    ts = await launch(config("anthropic: translate, responses: translate"))
    bad_marker = [{"role": "user", "content": "[[tool:broken"}]  # the responder answers 400
    async with claude(ts) as client:
        with pytest.raises(anthropic.BadRequestError) as upstream:
            await client.messages.create(model="m", max_tokens=5, messages=bad_marker)  # type: ignore[arg-type]
        with pytest.raises(anthropic.BadRequestError) as untranslatable:
            await client.messages.create(
                model="m",
                max_tokens=5,
                messages=[{"role": "user", "content": [{"type": "hologram"}]}],  # type: ignore[list-item]
            )
    for error in (upstream.value, untranslatable.value):
        assert error.body["type"] == "error"  # type: ignore[index]
        assert error.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    async with gpt(ts) as client:
        with pytest.raises(openai.BadRequestError) as responses_error:
            await client.responses.create(model="m", input="[[tool:broken")
    assert responses_error.value.body["type"] == "invalid_request_error"  # type: ignore[index]


async def test_count_tokens_native_translated_and_estimated(launch: LaunchFn) -> None:
    ts = await launch(config("anthropic: translate"))
    async with ts.client() as http:
        response = await http.post(
            "/v1/messages/count_tokens", json={"model": "m", "messages": HELLO}
        )
    assert response.status_code == 200
    assert response.headers[TRANSLATED] == "count_tokens:server"
    assert response.json()["input_tokens"] > 0


WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
ASK = 'Weather? [[tool:get_weather {"city": "Paris"}]] [[tool:get_weather {"city": "Oslo"}]]'


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_tool_round_trip_through_translation_anthropic(
    launch: LaunchFn, streamed: bool
) -> None:
    ts = await launch(config("anthropic: translate"))
    question = [{"role": "user", "content": ASK}]
    async with claude(ts) as client:
        request = {"model": "m", "max_tokens": 200, "tools": [WEATHER_TOOL], "messages": question}
        if streamed:
            async with client.messages.stream(**request) as stream:  # type: ignore[arg-type]
                first = await stream.get_final_message()
        else:
            first = await client.messages.create(**request)  # type: ignore[arg-type]
        assert first.stop_reason == "tool_use"
        calls = [block for block in first.content if block.type == "tool_use"]
        assert [c.input for c in calls] == [{"city": "Paris"}, {"city": "Oslo"}]  # parallel
        assert len({c.id for c in calls}) == 2
        results = [
            {"type": "tool_result", "tool_use_id": c.id, "content": f"sunny{i}"}
            for i, c in enumerate(calls)
        ]
        second = await client.messages.create(
            model="m",
            max_tokens=200,
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
            messages=[
                *question,
                {"role": "assistant", "content": first.content},
                {"role": "user", "content": results},
            ],  # type: ignore[list-item]
        )
    text = second.content[0].text  # type: ignore[union-attr]
    assert "got tool result: sunny0" in text and "sunny1" in text
    assert second.stop_reason == "end_turn"


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_tool_round_trip_through_translation_responses(
    launch: LaunchFn, streamed: bool
) -> None:
    ts = await launch(config("responses: translate"))
    tool = {
        "type": "function",
        "name": WEATHER_TOOL["name"],
        "description": WEATHER_TOOL["description"],
        "parameters": WEATHER_TOOL["input_schema"],
    }
    async with gpt(ts) as client:
        if streamed:
            stream = await client.responses.create(
                model="m",
                input=ASK,
                tools=[tool],
                stream=True,  # type: ignore[list-item]
            )
            first = None
            async for event in stream:
                if event.type == "response.completed":
                    first = event.response
            assert first is not None
        else:
            first = await client.responses.create(model="m", input=ASK, tools=[tool])  # type: ignore[list-item]
        calls = [item for item in first.output if item.type == "function_call"]
        assert [json.loads(c.arguments) for c in calls] == [{"city": "Paris"}, {"city": "Oslo"}]
        second = await client.responses.create(
            model="m",
            tools=[tool],  # type: ignore[list-item]
            input=[
                {"role": "user", "content": ASK},
                *[c.model_dump(exclude_none=True) for c in calls],
                *[
                    {"type": "function_call_output", "call_id": c.call_id, "output": f"rain{i}"}
                    for i, c in enumerate(calls)
                ],
            ],  # type: ignore[list-item]
        )
    assert "got tool result: rain0" in second.output_text and "rain1" in second.output_text


@pytest.mark.parametrize(
    ("path", "apis", "upstream_path"),
    [
        ("/v/messages", "anthropic: native", "/messages"),
        ("/v/messages", "anthropic: translate", "/chat/completions"),
        ("/v/responses", "responses: native", "/responses"),
        ("/v/responses", "responses: translate", "/chat/completions"),
    ],
)
async def test_versionless_routes_keep_their_form_when_translated(
    launch: LaunchFn, path: str, apis: str, upstream_path: str
) -> None:
    # llama-swap's /v/… routes are for servers without /v1: translated, they get /chat/completions.
    ts = await launch(config(apis))
    body = {"model": "m", "max_tokens": 5, "messages": HELLO, "input": "hi"}
    async with ts.client() as client:
        await client.post(path, json=body)
        response = await client.get("/upstream/m/debug/requests")
    seen = [r["raw_path"] for r in response.json() if r["path"] != "/debug/requests"]
    assert seen == [upstream_path]
