"""The usage meter: token counts and speeds read from replies as each server shapes them, the
same however the bytes are split, and never a raise or an unbounded buffer on hostile input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioswap.observe import usage
from trioswap.observe.usage import Usage, UsageMeter

CHUNK = {"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1764000000}


def sse(*events: dict[str, object] | str, done: bool = True) -> bytes:
    """An event stream: a dict is a data line; a string starting with `event:` a named event
    whose data follows as the next dict."""
    out = b""
    for event in events:
        if isinstance(event, str):
            out += event.encode() + b"\n"
        else:
            out += b"data: " + json.dumps(event).encode() + b"\n\n"
    return out + (b"data: [DONE]\n\n" if done else b"")


def chat_delta(delta: dict[str, object], finish: str | None = None, **extra: object) -> dict:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {**CHUNK, "model": "qwen3-8b", "choices": [choice], **extra}


LLAMA_TIMINGS = {
    "cache_n": 8,
    "prompt_n": 12,
    "prompt_ms": 35.2,
    "prompt_per_token_ms": 2.93,
    "prompt_per_second": 340.9,
    "predicted_n": 3,
    "predicted_ms": 61.3,
    "predicted_per_token_ms": 20.43,
    "predicted_per_second": 48.94,
}
LLAMA_USAGE = {
    "completion_tokens": 3,
    "prompt_tokens": 20,
    "total_tokens": 23,
    "prompt_tokens_details": {"cached_tokens": 8},
}

# llama-server's chat stream: the role chunk, reasoning and content one token a chunk, then a
# last chunk with finish_reason, usage and timings.
LLAMA_STREAM = sse(
    chat_delta({"role": "assistant", "content": None}),
    chat_delta({"reasoning_content": "Think"}),
    chat_delta({"content": "Hi"}),
    chat_delta({"content": " there"}),
    chat_delta({}, "stop", usage=LLAMA_USAGE, timings=LLAMA_TIMINGS),
)
# OpenAI with stream_options.include_usage: `"usage": null` on every chunk, the report last.
OPENAI_STREAM = sse(
    chat_delta({"role": "assistant", "content": ""}, usage=None),
    chat_delta({"content": "Hello"}, usage=None),
    chat_delta({"content": "!"}, usage=None),
    chat_delta({}, "stop", usage=None),
    {
        **CHUNK,
        "model": "gpt-4o",
        "choices": [],
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": 2,
            "total_tokens": 1202,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    },
)
# vLLM with include_usage: no usage key until the last chunk; reasoning in `reasoning`.
VLLM_STREAM = sse(
    chat_delta({"role": "assistant", "content": ""}),
    chat_delta({"reasoning": "Hmm"}),
    chat_delta({"content": "Yes"}),
    chat_delta({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f"}}]}),
    chat_delta({"content": ""}, "stop"),
    {
        **CHUNK,
        "model": "Qwen/Qwen3-8B",
        "choices": [],
        "usage": {
            "prompt_tokens": 50,
            "total_tokens": 57,
            "completion_tokens": 7,
            "prompt_tokens_details": None,
        },
    },
)
ANTHROPIC_STREAM = sse(
    "event: message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "claude-sonnet-4",
            "stop_reason": None,
            "usage": {
                "input_tokens": 25,
                "cache_creation_input_tokens": 10,
                "cache_read_input_tokens": 1000,
                "output_tokens": 1,
            },
        },
    },
    "event: content_block_start",
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    "event: ping",
    {"type": "ping"},
    "event: content_block_delta",
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    "event: content_block_delta",
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}},
    "event: content_block_stop",
    {"type": "content_block_stop", "index": 0},
    "event: message_delta",
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 15},
    },
    "event: message_stop",
    {"type": "message_stop"},
    done=False,
)
RESPONSE = {"id": "resp_1", "object": "response", "model": "gpt-5", "output": []}
RESPONSES_STREAM = sse(
    "event: response.created",
    {"type": "response.created", "response": {**RESPONSE, "status": "in_progress", "usage": None}},
    "event: response.output_text.delta",
    {"type": "response.output_text.delta", "item_id": "m1", "output_index": 0, "delta": "Hi"},
    "event: response.output_text.delta",
    {"type": "response.output_text.delta", "item_id": "m1", "output_index": 0, "delta": "!"},
    "event: response.output_text.done",
    {"type": "response.output_text.done", "item_id": "m1", "output_index": 0, "text": "Hi!"},
    "event: response.completed",
    {
        "type": "response.completed",
        "response": {
            **RESPONSE,
            "status": "completed",
            "output": [{"type": "message", "content": [{"type": "output_text", "text": "Hi!"}]}],
            "usage": {
                "input_tokens": 300,
                "input_tokens_details": {"cached_tokens": 256},
                "output_tokens": 2,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 302,
            },
        },
    },
    done=False,
)
# A stream that reports nothing: llama-server without usage, or a server that never counts.
UNREPORTED_STREAM = sse(
    chat_delta({"role": "assistant", "content": None}),
    chat_delta({"content": "a"}),
    chat_delta({"content": "b"}),
    chat_delta({"content": "c"}),
    chat_delta({}, "stop"),
)
COMPLETIONS_STREAM = sse(
    {"id": "cmpl-1", "object": "text_completion", "choices": [{"index": 0, "text": "x"}]},
    {"id": "cmpl-1", "object": "text_completion", "choices": [{"index": 0, "text": "y"}]},
    {"id": "cmpl-1", "object": "text_completion", "choices": [{"index": 0, "text": ""}]},
)

STREAMS = {
    "llama": ("chat", LLAMA_STREAM),
    "openai": ("chat", OPENAI_STREAM),
    "vllm": ("chat", VLLM_STREAM),
    "anthropic": ("anthropic", ANTHROPIC_STREAM),
    "responses": ("responses", RESPONSES_STREAM),
    "unreported": ("chat", UNREPORTED_STREAM),
    "completions": ("completions", COMPLETIONS_STREAM),
}


def meter_stream(family: str, chunks: list[bytes], times: list[float] | None = None) -> Usage:
    meter = UsageMeter(family, True, sent_at=0.0)  # type: ignore[arg-type]
    for i, chunk in enumerate(chunks):
        meter.feed(chunk, times[i] if times else 1.0)
    return meter.close(2.0)


def meter_body(family: str, body: bytes, chunk: int = 7) -> Usage:
    meter = UsageMeter(family, False, sent_at=0.0)  # type: ignore[arg-type]
    for at in range(0, len(body), chunk):
        meter.feed(body[at : at + chunk], 1.0)
    return meter.close(2.0)


def events(stream: bytes) -> list[bytes]:
    """The stream split after each line, as servers send it."""
    return [line + b"\n" for line in stream.split(b"\n")[:-1]]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "llama",
            # The whole prompt: 12 evaluated + 8 from the cache; llama-server's own speeds.
            Usage(20, 8, 3, 1.0, 340.9, 48.94, "timings"),
        ),
        # No timings: prefill = (1200 - 1024) / ttft; decode untimed (every chunk at 1.0 s).
        ("openai", Usage(1200, 1024, 2, 1.0, 176.0, None, "usage")),
        ("vllm", Usage(50, None, 7, 1.0, 50.0, None, "usage")),
        # Anthropic counts cache reads and writes apart from input_tokens.
        # Prefill counts what was evaluated: the cache writes too, not the reads.
        ("anthropic", Usage(1035, 1000, 15, 1.0, 35.0, None, "usage")),
        ("responses", Usage(300, 256, 2, 1.0, 44.0, None, "usage")),
        ("unreported", Usage(None, None, 3, 1.0, None, None, "counted")),
        ("completions", Usage(None, None, 2, 1.0, None, None, "counted")),
    ],
)
def test_streams(name: str, expected: Usage) -> None:
    family, stream = STREAMS[name]
    assert meter_stream(family, events(stream)) == expected


def meter_timed(family: str, sent_at: float, timed: list[tuple[float, bytes]]) -> Usage:
    meter = UsageMeter(family, True, sent_at)  # type: ignore[arg-type]
    for now, chunk in timed:
        meter.feed(chunk, now)
    return meter.close(timed[-1][0])


def test_stream_timing_without_a_servers_measure() -> None:
    # Sent at 0; the role chunk at 0.5 s, three tokens at 1, 1.5 and 2 s, the end at 2.5 s.
    role, a, b, c, stop, done = (e + b"\n\n" for e in UNREPORTED_STREAM.split(b"\n\n")[:-1])
    got = meter_timed(
        "chat", 0.0, [(0.5, role), (1.0, a), (1.5, b), (2.0, c), (2.5, stop), (2.5, done)]
    )
    assert got.ttft == 1.0
    assert got.generated_tokens == 3
    assert got.decode_tps == pytest.approx(3.0)  # 3 tokens over the 1 s from first to last
    assert got.prefill_tps is None  # no prompt count to divide


def test_stream_prefill_from_usage_and_ttft() -> None:
    role, hello, bang, stop, report, done = (e + b"\n\n" for e in OPENAI_STREAM.split(b"\n\n")[:-1])
    got = meter_timed(
        "chat",
        10.0,
        [(10.1, role), (10.25, hello), (10.75, bang), (11.0, stop), (11.0, report), (11.0, done)],
    )
    assert got.ttft == 0.25
    assert got.prefill_tps == (1200 - 1024) / 0.25
    assert got.decode_tps == pytest.approx(2 / 0.5)


def test_one_token_gives_no_decode_speed() -> None:
    stream = sse(chat_delta({"content": "a"}))
    meter = UsageMeter("chat", True, sent_at=0.0)
    meter.feed(stream, 1.0)
    assert meter.close(5.0) == Usage(None, None, 1, 1.0, None, None, "counted")


@pytest.mark.parametrize(
    ("family", "body", "expected"),
    [
        (
            "chat",  # llama-server
            {
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}}],
                "usage": LLAMA_USAGE,
                "timings": LLAMA_TIMINGS,
            },
            Usage(20, 8, 3, None, 340.9, 48.94, "timings"),
        ),
        (
            "chat",  # OpenAI: no ttft, so no speeds
            {
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "usage"}}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21},
            },
            Usage(9, None, 12, None, None, None, "usage"),
        ),
        (
            "chat",  # vLLM's per-request metrics
            {
                "choices": [],
                "usage": {"prompt_tokens": 600, "completion_tokens": 40},
                "metrics": {"time_to_first_token_ms": 200.0, "mean_itl_ms": 25.0},
            },
            Usage(600, None, 40, None, 3000.0, 40.0, "usage"),
        ),
        (
            "anthropic",
            {
                "id": "msg_1",
                "type": "message",
                "content": [{"type": "text", "text": "Hi"}],
                "usage": {"input_tokens": 7, "cache_read_input_tokens": 3, "output_tokens": 4},
            },
            Usage(10, 3, 4, None, None, None, "usage"),
        ),
        (
            "responses",
            {
                **RESPONSE,
                "usage": {
                    "input_tokens": 30,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": 5,
                },
            },
            Usage(30, 0, 5, None, None, None, "usage"),
        ),
        (
            "embeddings",
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -0.2]}],
                "usage": {"prompt_tokens": 6, "total_tokens": 6},
            },
            Usage(6, None, None, None, None, None, "usage"),
        ),
        (
            "other",  # llama-server's /infill answers a list; the timings are in its last item
            [
                {"content": "a", "timings": {"prompt_n": 1, "predicted_n": 1}},
                {"content": "b", "timings": {"prompt_n": 5, "cache_n": 2, "predicted_n": 9}},
            ],
            Usage(7, 2, 9, None, None, None, "timings"),
        ),
        ("chat", {"error": {"message": "model not found"}}, Usage()),
    ],
)
def test_bodies(family: str, body: object, expected: Usage) -> None:
    encoded = json.dumps(body, indent=1).encode()
    assert meter_body(family, encoded) == expected
    assert meter_body(family, encoded, chunk=len(encoded)) == expected


def test_a_huge_body_keeps_its_head_and_tail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(usage, "BODY_HEAD", 1000)
    monkeypatch.setattr(usage, "BODY_TAIL", 200)
    vectors = [{"index": i, "embedding": [0.5] * 50} for i in range(100)]
    body = json.dumps({"data": vectors, "usage": {"prompt_tokens": 77}}).encode()
    meter = UsageMeter("embeddings", False, sent_at=0.0)
    for at in range(0, len(body), 64):
        meter.feed(body[at : at + 64], 1.0)
        assert len(meter._body_head) <= 1000 and len(meter._body_tail) <= 400
    assert meter.close(1.0).prompt_tokens == 77


def test_unknown_stays_unknown() -> None:
    # A stream with no content and no report, an empty body, a broken one: never a 0.
    assert meter_stream("chat", events(sse(chat_delta({"role": "assistant"})))) == Usage()
    assert meter_body("chat", b"") == Usage()
    assert meter_body("chat", b'{"usage": {"prompt_tokens": ') == Usage()


@pytest.mark.parametrize(
    "report",
    [
        {"prompt_tokens": -1, "completion_tokens": "12", "prompt_tokens_details": "x"},
        {"prompt_tokens": True, "completion_tokens": 1.5, "total_tokens": 10**400},
        {"prompt_tokens": None, "completion_tokens": [3]},
    ],
)
def test_nonsense_counts_are_unknown(report: dict[str, object]) -> None:
    body = json.dumps({"usage": report, "timings": {"prompt_per_second": -3}})
    got = meter_body("chat", body.replace("-3", "NaN").encode())
    assert got == Usage()


def test_unknown_family_is_a_bug() -> None:
    with pytest.raises(ValueError, match="unknown API family 'chatty'"):
        UsageMeter("chatty", True, 0.0)  # type: ignore[arg-type]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(sorted(STREAMS)),
    crlf=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=30),
)
def test_any_split_gives_the_same_usage(name: str, crlf: bool, cuts: list[int]) -> None:
    family, stream = STREAMS[name]
    if crlf:
        stream = stream.replace(b"\n", b"\r\n")
    assert meter_stream(family, split(stream, cuts)) == meter_stream(family, [stream])


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=20))
def test_any_split_of_a_body_gives_the_same_usage(cuts: list[int]) -> None:
    body = json.dumps({"usage": LLAMA_USAGE, "timings": LLAMA_TIMINGS}).encode()
    meter = UsageMeter("chat", False, sent_at=0.0)
    for chunk in split(body, cuts):
        meter.feed(chunk, 1.0)
    assert meter.close(1.0) == meter_body("chat", body, chunk=len(body))


@settings(max_examples=150, deadline=None)
@given(
    family=st.sampled_from(["chat", "completions", "anthropic", "responses", "other"]),
    stream=st.booleans(),
    chunks=st.lists(
        st.one_of(
            st.binary(max_size=300),
            st.sampled_from(
                [
                    b"data:",
                    b"data: {",
                    b'"usage":{',
                    b'"timings": {"prompt_n": 1e999',
                    b'"content":"',
                    b"\n",
                    b"\r\n\r\n",
                    b"[" * 200,
                    b'{"usage":' * 50,
                    b'"metrics":{"mean_itl_ms":0}',
                ]
            ),
        ),
        max_size=40,
    ),
)
def test_garbage_never_raises(family: str, stream: bool, chunks: list[bytes]) -> None:
    meter = UsageMeter(family, stream, sent_at=5.0)  # type: ignore[arg-type]
    for i, chunk in enumerate(chunks):
        meter.feed(chunk, float(i))
    got = meter.close(100.0)
    for value in (got.prompt_tokens, got.cached_tokens, got.generated_tokens):
        assert value is None or value >= 0
    for speed in (got.prefill_tps, got.decode_tps):
        assert speed is None or 0 < speed <= usage.MAX_RATE


def test_deep_nesting_in_a_report_is_survived() -> None:
    body = b'{"usage": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_000 + b"}"
    assert meter_body("chat", body, chunk=len(body)) == Usage()


def test_a_line_that_never_ends_is_skipped_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(usage, "EVENT_BYTES", 1000)
    meter = UsageMeter("chat", True, sent_at=0.0)
    meter.feed(b'data: {"usage": {"prompt_tokens": 99}, "pad": "', 1.0)
    for _ in range(100):
        meter.feed(b"x" * 100, 1.0)
        assert len(meter._carry) <= 1000
    # The rest of the overlong line is dropped; the line after it is read.
    meter.feed(b'"}\ndata: {"usage": {"prompt_tokens": 5}}\n\n', 1.0)
    assert meter.close(1.0).prompt_tokens == 5


@pytest.mark.parametrize("limit", [16, 17, 18])
def test_the_line_limit_does_not_depend_on_the_split(
    monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    monkeypatch.setattr(usage, "EVENT_BYTES", limit)
    # Lines of 17 and 18 bytes before their newlines.
    stream = b'data:"content":"x\ndata:"content":"x"\n'
    assert meter_stream("chat", [stream]).generated_tokens == {16: None, 17: 1, 18: 2}[limit]
    whole = meter_stream("chat", [stream])
    for cut in range(len(stream) + 1):
        assert meter_stream("chat", [stream[:cut], stream[cut:]]) == whole


def test_a_later_zero_does_not_erase_a_count() -> None:
    # Some servers' message_delta says `"input_tokens": 0` for "not in this event".
    stream = ANTHROPIC_STREAM.replace(
        b'"usage": {"output_tokens": 15}', b'"usage": {"input_tokens": 0, "output_tokens": 15}'
    )
    assert meter_stream("anthropic", events(stream)).prompt_tokens == 1035


def test_data_counts_only_at_the_start_of_a_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(usage, "EVENT_BYTES", 60)
    # A long line that holds `data:` in its middle, then a data line: one token, however split
    # (the skipped line's tail, starting with `data:`, is no line of its own).
    stream = (
        b"id: " + b"x" * 60 + b' data: {"delta": {"content": "a"}}\n'
        b'data: {"delta": {"content": "b"}}\n\n'
    )
    for cut in range(len(stream) + 1):
        assert meter_stream("chat", [stream[:cut], stream[cut:]]).generated_tokens == 1
