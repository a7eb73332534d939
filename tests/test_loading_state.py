"""`sendLoadingState` in every API family (issue 8, item 6): a streaming request that waits for
its model gets progress at once in its own family's events, then the model's answer in the same
response, native or translated; as the official SDKs' stream helpers read it."""

from __future__ import annotations

import json
import re
from typing import Any

import anthropic
import openai
import pytest
import trio

from tests.conftest import RESPONDER, LaunchFn, Trioswap, random_start_port, wait_until
from trioswap.errors import UpstreamError, UpstreamProtocolError
from trioswap.pipeline.relay import MessagesRelay, Relay, ResponsesRelay
from trioswap.protocols.responses_chat.stream import Continuation

# Slower than one progress interval (1 s), so the elapsed time is reported at least once.
SLOW = "--startup-delay 1.2"
# The model reasons, then answers: its own blocks or items follow the progress one.
ASK = "[[reasoning: let me think]] hi"
ANSWER = "Hello from m on port"
TRANSLATED = "x-trioswap-translated"
HELLO = [{"role": "user", "content": "hi"}]


def config(
    apis: str = "", served: str = "chat", flags: str = SLOW, loading: str = "true", top: str = ""
) -> str:
    """Model `m`: a responder serving the API families in `served`, slow to load."""
    return f"""
startPort: {random_start_port()}
sendLoadingState: {loading}
{top}
models:
  m:
    cmd: {RESPONDER} --port ${{PORT}} --model-id m --apis {served} {flags}
    {f"apis: {{{apis}}}" if apis else ""}
"""


def claude(ts: Trioswap) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=ts.url, api_key="x", max_retries=0)


def gpt(ts: Trioswap) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=ts.url + "/v1", api_key="x", max_retries=0)


def check_progress(text: str) -> None:
    assert text.startswith("Loading model m…\n"), text
    assert re.search(r"\nstill loading \(\d+s\)\n", text), text
    assert text.endswith("Model loaded.\n"), text


# Per family: the `apis` key, the families the server serves, whether the answer is translated.
MODES = {
    "native": ("native", "chat,{family}", False),
    "translate": ("translate", "chat", True),
    "auto, served": ("", "chat,{family}", False),
    "auto, translated": ("", "chat", True),
}


def mode_config(family: str, mode: str) -> tuple[str, bool]:
    """The config for `family` in `mode`, and whether the answer will be translated."""
    apis, served, translated = MODES[mode]
    keys = f"{family}: {apis}" if apis else ""
    return config(keys, served.format(family=family)), translated


# -- chat completions ------------------------------------------------------------------------


async def chat_stream(ts: Trioswap) -> Any:
    """A streamed chat completion as the openai SDK's stream helper adds it up. The synchronous
    client, in a thread: on [DONE] the async client's chat stream leaves its inner async
    generators unfinished, which trio reports as a warning."""

    def run() -> Any:
        messages = [{"role": "user", "content": ASK}]
        with (
            openai.OpenAI(base_url=ts.url + "/v1", api_key="x", max_retries=0) as client,
            client.chat.completions.stream(model="m", messages=messages) as stream,  # type: ignore[arg-type]
        ):
            for _ in stream:
                pass
            return stream.get_final_completion()

    return await trio.to_thread.run_sync(run)


async def test_chat_completions(launch: LaunchFn) -> None:
    ts = await launch(config())
    final = await chat_stream(ts)
    message = final.choices[0].message
    assert message.role == "assistant"
    assert message.content.startswith(ANSWER)
    reasoning = message.model_extra["reasoning_content"]
    check_progress(reasoning.removesuffix("\nlet me think"))
    assert reasoning.endswith("Model loaded.\n\nlet me think")
    assert final.choices[0].finish_reason == "stop"
    # Loaded: the next answer is the model's alone.
    again = await chat_stream(ts)
    assert again.choices[0].message.model_extra["reasoning_content"] == "let me think"


async def test_chat_queue_position(launch: LaunchFn) -> None:
    """A request that arrives while another waits for the same model is told it is behind it."""
    ts = await launch(config())
    answers: dict[str, Any] = {}

    async def ask(name: str) -> None:
        answers[name] = await chat_stream(ts)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, "first")
        await wait_until(lambda: _waiting(ts))
        nursery.start_soon(ask, "second")
    first, second = (answers[n].choices[0].message for n in ("first", "second"))
    assert "ahead" not in first.model_extra["reasoning_content"]
    assert second.model_extra["reasoning_content"].startswith(
        "Loading model m… (1 request ahead)\n"
    )
    assert first.content.startswith(ANSWER) and second.content.startswith(ANSWER)


async def _waiting(ts: Trioswap) -> bool:
    # A stopped model nobody waits for is not listed.
    return (await ts.running()).get("m", {}).get("waiting") == 1


# -- Anthropic Messages ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
async def test_anthropic(launch: LaunchFn, mode: str) -> None:
    text, translated = mode_config("anthropic", mode)
    ts = await launch(text)
    kinds = []
    async with claude(ts) as client:
        messages = [{"role": "user", "content": ASK}]
        async with client.messages.stream(model="m", max_tokens=100, messages=messages) as stream:  # type: ignore[arg-type]
            async for event in stream:
                kinds.append(event.type)
            final = await stream.get_final_message()
            header = stream.response.headers.get(TRANSLATED)
    assert kinds.count("message_start") == 1 and kinds[-1] == "message_stop"
    loading, thinking, answer = final.content
    assert loading.type == "thinking" and thinking.type == "thinking" and answer.type == "text"
    check_progress(loading.thinking)
    assert thinking.thinking == "let me think"
    assert answer.text.startswith(ANSWER)
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0
    assert header == ("anthropic->chat" if mode == "translate" else None)
    assert ts.count_output(r"POST /v1/messages: model m, anthropic->chat") == translated


# -- Responses -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
async def test_responses(launch: LaunchFn, mode: str) -> None:
    text, translated = mode_config("responses", mode)
    ts = await launch(text)
    events = []
    async with gpt(ts) as client, client.responses.stream(model="m", input=ASK) as stream:
        async for event in stream:
            events.append(event)
        final = await stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds.count("response.created") == 1 and kinds[-1] == "response.completed"
    assert events[0].response.id == final.id  # type: ignore[union-attr]
    assert [item.type for item in final.output] == ["reasoning", "reasoning", "message"]
    loading, thinking, _ = final.output
    check_progress(loading.summary[0].text)  # type: ignore[union-attr]
    assert thinking.summary[0].text == "let me think"  # type: ignore[union-attr]
    assert final.output_text.startswith(ANSWER)
    assert final.status == "completed"
    assert ts.count_output(r"POST /v1/responses: model m, responses->chat") == translated


# -- failures --------------------------------------------------------------------------------

# The model's server exits before it is healthy, or never becomes healthy (slow: the stop
# after a health timeout takes seconds); either ends the load with the same error.
NEVER_READY = {
    "exits": ("--fail-on-start", ""),
    "never healthy": ("--loading-delay 30", "healthCheckTimeout: 1"),
}


@pytest.mark.parametrize("why", list(NEVER_READY))
async def test_a_failed_load_chat(launch: LaunchFn, why: str) -> None:
    flags, top = NEVER_READY[why]
    ts = await launch(config(flags=flags, top=top))
    with pytest.raises(openai.APIError, match="failed to start"):
        await chat_stream(ts)


@pytest.mark.parametrize("mode", ["native", "translate"])
async def test_a_failed_load_anthropic(launch: LaunchFn, mode: str) -> None:
    ts = await launch(config(f"anthropic: {mode}", "chat,anthropic", "--fail-on-start"))
    kinds = []
    async with claude(ts) as client:
        messages = [{"role": "user", "content": ASK}]
        with pytest.raises(anthropic.APIStatusError) as failed:
            async with client.messages.stream(
                model="m",
                max_tokens=100,
                messages=messages,  # type: ignore[arg-type]
            ) as stream:
                async for event in stream:
                    kinds.append(event.type)
    assert kinds[:3] == ["message_start", "content_block_start", "content_block_delta"]
    error = failed.value.body["error"]  # type: ignore[index]
    assert error["type"] == "api_error" and "failed to start" in error["message"]


@pytest.mark.parametrize("mode", ["native", "translate"])
async def test_a_failed_load_responses(launch: LaunchFn, mode: str) -> None:
    ts = await launch(config(f"responses: {mode}", "chat,responses", "--fail-on-start"))
    async with gpt(ts) as client:
        events = [
            event
            async for event in await client.responses.create(model="m", input=ASK, stream=True)
        ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.failed"
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.id == events[0].response.id  # type: ignore[union-attr]
    assert failed.error is not None and "failed to start" in failed.error.message
    assert failed.error.code == "server_error"


@pytest.mark.parametrize("mode", ["native", "translate"])
async def test_a_crash_mid_answer_after_the_load_anthropic(launch: LaunchFn, mode: str) -> None:
    ts = await launch(
        config(f"anthropic: {mode}", "chat,anthropic", f"{SLOW} --crash-after-chunks 2")
    )
    kinds = []
    async with claude(ts) as client:
        with pytest.raises(anthropic.APIStatusError) as failed:
            async with client.messages.stream(
                model="m",
                max_tokens=100,
                messages=[{"role": "user", "content": "hi"}],
            ) as stream:
                async for event in stream:
                    kinds.append(event.type)
    assert kinds.count("message_start") == 1 and "text" in kinds
    assert failed.value.body["error"]["type"] == "api_error"  # type: ignore[index]


@pytest.mark.parametrize("mode", ["native", "translate"])
async def test_a_crash_mid_answer_after_the_load_responses(launch: LaunchFn, mode: str) -> None:
    ts = await launch(
        config(f"responses: {mode}", "chat,responses", f"{SLOW} --crash-after-chunks 2")
    )
    async with gpt(ts) as client:
        events = [
            event
            async for event in await client.responses.create(model="m", input="hi", stream=True)
        ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "response.output_text.delta" in [e.type for e in events]
    assert events[-1].type == "response.failed"
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.id == events[0].response.id  # type: ignore[union-attr]
    assert failed.output[0].type == "reasoning"  # the progress item, done


async def test_an_upstream_error_after_the_load_keeps_its_kind(launch: LaunchFn) -> None:
    """Translated, a server's error answer after the progress is the family's error event, of
    the kind the server said (the responder refuses a broken marker with a 400). Both requests
    arrive while the model loads."""
    ts = await launch(config("anthropic: translate, responses: translate"))
    broken = "[[tool:broken"
    got: dict[str, Any] = {}
    async with claude(ts) as claude_client, gpt(ts) as gpt_client:

        async def anthropic_message() -> None:
            with pytest.raises(anthropic.APIStatusError) as refused:
                async with claude_client.messages.stream(
                    model="m",
                    max_tokens=100,
                    messages=[{"role": "user", "content": broken}],
                ) as stream:
                    async for _ in stream:
                        pass
            got["anthropic"] = refused.value.body["error"]  # type: ignore[index]

        async def response() -> None:
            stream = await gpt_client.responses.create(model="m", input=broken, stream=True)
            got["responses"] = [event async for event in stream]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(anthropic_message)
            nursery.start_soon(response)
    error = got["anthropic"]
    assert error["type"] == "invalid_request_error" and "JSON object" in error["message"]
    events = got["responses"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == "response.failed"
    failed = events[-1].response
    assert failed.error is not None and "JSON object" in failed.error.message
    assert [item.type for item in failed.output] == ["reasoning"]


# -- no progress -----------------------------------------------------------------------------


@pytest.mark.parametrize("loading", ["true", "false"])
async def test_no_progress_unless_streamed_and_configured(launch: LaunchFn, loading: str) -> None:
    """Requests that do not stream get the answer alone; so do streaming ones when the model
    has no sendLoadingState. All of them arrive while the model loads."""
    ts = await launch(config("anthropic: translate", loading=loading))
    streamed = loading == "false"
    messages: Any = [{"role": "user", "content": ASK}]
    got: dict[str, Any] = {}
    async with claude(ts) as claude_client, gpt(ts) as gpt_client:

        async def anthropic_message() -> None:
            if streamed:
                async with claude_client.messages.stream(
                    model="m", max_tokens=100, messages=messages
                ) as stream:
                    got["anthropic"] = await stream.get_final_message()
            else:
                got["anthropic"] = await claude_client.messages.create(
                    model="m", max_tokens=100, messages=messages
                )

        async def response() -> None:
            if streamed:
                async with gpt_client.responses.stream(model="m", input=ASK) as stream:
                    got["responses"] = await stream.get_final_response()
            else:
                got["responses"] = await gpt_client.responses.create(model="m", input=ASK)

        async def chat() -> None:
            if streamed:
                got["chat"] = await chat_stream(ts)
            else:
                got["chat"] = await gpt_client.chat.completions.create(model="m", messages=messages)

        async with trio.open_nursery() as nursery:
            for ask in (anthropic_message, response, chat):
                nursery.start_soon(ask)
    assert (await ts.states())["m"] == "ready"
    assert [block.type for block in got["anthropic"].content] == ["thinking", "text"]
    assert [item.type for item in got["responses"].output] == ["reasoning", "message"]
    assert got["chat"].choices[0].message.model_extra["reasoning_content"] == "let me think"


@pytest.mark.parametrize(
    ("path", "opening", "ending"),
    [
        ("/v/chat/completions", b'data: {"id": "trioswap-loading"', b'data: {"error": '),
        ("/v/messages", b"event: message_start\n", b"event: error\n"),
        ("/v/responses", b"event: response.created\n", b"event: response.failed\n"),
    ],
)
async def test_versionless_routes_get_progress_too(
    launch: LaunchFn, path: str, opening: bytes, ending: bytes
) -> None:
    """llama-swap's /v/… routes: the same progress. The responder has no versionless routes:
    its 404 ends each response with the family's error event."""
    ts = await launch(config("anthropic: translate, responses: translate"))
    body = {"model": "m", "stream": True, "max_tokens": 5, "messages": HELLO, "input": "hi"}
    async with ts.client() as client:
        response = await client.post(path, json=body)
    assert response.status_code == 200
    assert response.content.startswith(opening)
    assert "Loading model m" in response.text
    last = response.content.split(b"\n\n")[-2]
    assert last.startswith(ending) and b"File Not Found" in last


# -- relays: a native stream continuing the response, without processes ---------------------


def sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def relayed(relay: Relay, data: bytes) -> list[dict[str, Any]]:
    """What `relay` sends for `data` arriving a few bytes at a time."""
    out = b"".join(relay.feed(data[i : i + 7]) for i in range(0, len(data), 7)) + relay.close()
    events = []
    for block in out.decode().split("\n\n")[:-1]:
        name, line = block.split("\n")
        event = json.loads(line.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        events.append(event)
    return events


def test_messages_relay_shifts_blocks_and_keeps_the_input_tokens() -> None:
    start = {"type": "message_start", "message": {"usage": {"input_tokens": 7, "output_tokens": 1}}}
    block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta"}}
    ping = {"type": "ping"}
    stop = {"type": "content_block_stop", "index": 0}
    end = {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 3}}
    events = relayed(
        MessagesRelay("m", 1), sse([start, block, ping, delta, stop, end, {"type": "message_stop"}])
    )
    assert [e["type"] for e in events] == [
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert [e.get("index") for e in events] == [1, None, 1, 1, None, None]
    assert events[4]["usage"] == {"input_tokens": 7, "output_tokens": 3}


def test_responses_relay_continues_the_response() -> None:
    ours = {"id": "resp_ours", "created_at": 1, "status": "in_progress", "output": []}
    progress = {"id": "rs_1", "type": "reasoning", "summary": []}
    theirs = {"id": "resp_theirs", "created_at": 2, "status": "in_progress", "output": []}
    item = {"id": "msg_1", "type": "message"}
    native = [
        {"type": "response.created", "response": theirs, "sequence_number": 0},
        {"type": "response.in_progress", "response": theirs, "sequence_number": 1},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": {**theirs, "output": [item]}},
    ]
    relay = ResponsesRelay("m", Continuation(ours, 5, [progress]))
    events = relayed(relay, sse(native))
    assert relay.feed(b"data: [DONE]\n\n") == b"data: [DONE]\n\n"  # as some servers end
    assert [(e["type"], e["sequence_number"]) for e in events] == [
        ("response.output_item.added", 5),
        ("response.output_item.done", 6),
        ("response.completed", 7),
    ]
    assert [e.get("output_index") for e in events] == [1, 1, None]
    completed = events[-1]["response"]
    assert (completed["id"], completed["created_at"]) == ("resp_ours", 1)
    assert completed["output"] == [progress, item]
    # After a cut, the response fails with what was done, numbered on.
    failed = json.loads(relay.failed(UpstreamError("m", "gone"), "req_1").split(b"data: ")[1])
    assert failed["sequence_number"] == 8 and failed["response"]["id"] == "resp_ours"
    assert failed["response"]["output"] == [progress, item]
    assert "gone (request req_1)" in failed["response"]["error"]["message"]


def test_relays_refuse_an_event_without_a_type() -> None:
    with pytest.raises(UpstreamProtocolError, match="without a type"):
        MessagesRelay("m", 1).feed(b'data: {"index": 0}\n\n')
    with pytest.raises(UpstreamProtocolError, match="not JSON"):
        MessagesRelay("m", 1).feed(b"data: {\n\n")
