"""Captures (`trioswap.observe.captures`): llama-swap's `ReqRespCapture` shape, credentials
masked, every body and the ring bounded, and replies rebuilt from real-shaped streams and answers
in the three API formats.

Streams come two ways: written out as the vendors' documentation shows them (Anthropic's
extended thinking with a tool call, OpenAI's Responses with a reasoning summary and a function
call, llama-server's and vLLM's chat chunks), and made from the chunk fixtures under
`fixtures/anthropic` and `fixtures/responses` by trioswap's translators, whose output the
official SDKs read in test_translate_*.
"""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioswap.observe.captures import OVERHEAD, Capture, CaptureRing, header_map, rebuild
from trioswap.protocols.anthropic_chat import MessageStream
from trioswap.protocols.responses_chat import ResponseStream
from trioswap.redact import MASK

FIXTURES = Path(__file__).parent / "fixtures"
CHAT = "/v1/chat/completions"
SSE = [(b"content-type", b"text/event-stream")]
JSON = [(b"content-type", b"application/json")]
# llama-swap's ReqRespCapture (internal/server/captures.go).
LLAMA_SWAP_FIELDS = {"id", "req_path", "req_headers", "req_body", "resp_headers", "resp_body"}
TRIOSWAP_FIELDS = {
    "method",
    "resp_status",
    "req_text",
    "resp_text",
    "req_truncated",
    "resp_truncated",
    "complete",
}


def captured(
    reply: bytes | list[bytes],
    headers: list[tuple[bytes, bytes]] = SSE,
    *,
    ring: CaptureRing | None = None,
    capture_id: int = 1,
    path: str = CHAT,
    request: bytes | None = b'{"model":"m","stream":true}',
    request_headers: list[tuple[bytes, bytes]] = JSON,
) -> Capture:
    """A capture as the proxy makes one: request, head, chunks, end."""
    ring = CaptureRing(1 << 20) if ring is None else ring
    with ring.start(capture_id, "POST", path, request_headers, request) as capture:
        capture.add_response_head(200, headers)
        for chunk in [reply] if isinstance(reply, bytes) else reply:
            capture.add_response_chunk(chunk)
    return capture


def result(
    text: str = "", reasoning: str = "", tool_calls: Sequence[tuple[str, str, str]] = ()
) -> dict[str, Any]:
    return {
        "text": text,
        "reasoning": reasoning,
        "tool_calls": [{"id": i, "name": n, "arguments": a} for i, n, a in tool_calls],
    }


def sse_events(*events: tuple[str | None, dict[str, Any]]) -> bytes:
    out = b""
    for name, data in events:
        if name is not None:
            out += f"event: {name}\n".encode()
        out += f"data: {json.dumps(data)}\n\n".encode()
    return out


# --- the JSON view ------------------------------------------------------------------------


def test_the_view_is_llama_swaps_capture_plus_trioswaps_fields() -> None:
    ring = CaptureRing(1 << 20)
    request = b'{"model":"qwen","messages":[{"role":"user","content":"h\xc3\xa9"}]}'
    with ring.start(
        7, "POST", CHAT, [(b"content-type", b"application/json"), (b"x-session-id", b"s1")], request
    ) as capture:
        assert 7 in ring
        capture.add_response_head(200, [(b"content-type", b"application/json")])
        capture.add_response_chunk(b'{"choices":')
        capture.add_response_chunk(b"[]}")
        assert capture.view()["complete"] is False  # viewable while it streams
    view = ring.get(7)
    assert view is not None and set(view) == LLAMA_SWAP_FIELDS | TRIOSWAP_FIELDS
    assert view == {
        "id": 7,
        "req_path": CHAT,
        "req_headers": {"Content-Type": "application/json", "X-Session-Id": "s1"},
        "req_body": base64.b64encode(request).decode(),
        "resp_headers": {"Content-Type": "application/json"},
        "resp_body": base64.b64encode(b'{"choices":[]}').decode(),
        "method": "POST",
        "resp_status": 200,
        "req_text": request.decode(),
        "resp_text": '{"choices":[]}',
        "req_truncated": False,
        "resp_truncated": False,
        "complete": True,
    }
    json.dumps(view)
    assert ring.get(8) is None and 8 not in ring


def test_a_binary_body_is_base64_only() -> None:
    body = bytes(range(256))
    view = captured(body, [(b"content-type", b"application/octet-stream")], request=None).view()
    assert view["req_body"] is view["req_text"] is None
    assert view["resp_text"] is None
    assert base64.b64decode(view["resp_body"]) == body
    # Whole, a body ending inside a character is not text either.
    assert captured(b"abc\xc3").view()["resp_text"] is None


@pytest.mark.parametrize(
    "name",
    [
        b"authorization",
        b"Proxy-Authorization",
        b"x-api-key",
        b"cookie",
        b"x-goog-api-key",
        b"x-auth-token",
        b"x-client-secret",
        b"openai-api-key",
    ],
)
def test_credentials_are_masked_before_they_are_kept(name: bytes) -> None:
    secret = b"sk-live-123456"
    ring = CaptureRing(1 << 20)
    with ring.start(1, "POST", CHAT, [(name, secret), (b"user-agent", b"curl/8")], None) as c:
        c.add_response_head(200, [(b"set-cookie", b"session=" + secret), (name, secret)])
    view = ring.get(1)
    assert view is not None
    assert secret.decode() not in json.dumps(view)
    assert MASK in view["req_headers"].values() and view["req_headers"]["User-Agent"] == "curl/8"
    assert view["resp_headers"]["Set-Cookie"] == MASK


def test_headers_are_spelt_as_go_does_and_the_first_value_wins() -> None:
    headers = [(b"x-request-id", b"a"), (b"X-REQUEST-ID", b"b"), (b"accept", b"*/*")]
    assert header_map(headers) == {"X-Request-Id": "a", "Accept": "*/*"}


@pytest.mark.parametrize(
    ("path", "request_body", "response_body"),
    [
        ("/v1/audio/speech", True, False),
        ("/v1/audio/transcriptions", False, True),
        ("/v1/images/generations", True, False),
        ("/v1/images/edits", False, False),
        (CHAT, True, True),
    ],
)
def test_binary_routes_keep_what_llama_swap_keeps(
    path: str, request_body: bool, response_body: bool
) -> None:
    view = captured(b"RIFF...", [(b"content-type", b"audio/wav")], path=path).view()
    assert (view["req_body"] is not None) == request_body
    assert (view["resp_body"] is not None) == response_body
    assert view["resp_headers"] == {"Content-Type": "audio/wav"}


def test_bodies_are_kept_to_the_capture_limit() -> None:
    ring = CaptureRing(1 << 20, capture_bytes=100)
    chunks = [b"a" * 40, b"b" * 40, b"c" * 40, b"d" * 10]
    capture = captured(chunks, ring=ring, request=b"x" * 150)
    view = capture.view()
    assert base64.b64decode(view["req_body"]) == b"x" * 100 and view["req_truncated"]
    # The chunk that does not fit is dropped whole, and nothing after it is kept.
    assert view["resp_text"] == "a" * 40 + "b" * 40 and view["resp_truncated"]


def test_a_character_cut_by_the_limit_leaves_the_body_text() -> None:
    ring = CaptureRing(1 << 20, capture_bytes=5)
    view = captured(b"", ring=ring, request="abcdé".encode() + b"zz").view()
    assert view["req_truncated"] and view["req_text"] == "abcd"


def test_the_oldest_finished_captures_go_first_and_streaming_ones_stay() -> None:
    ring = CaptureRing(4 * OVERHEAD + 3000, capture_bytes=1000)
    streaming = ring.start(1, "POST", CHAT, [], b"s" * 1000)
    for capture_id in (2, 3, 4):
        captured(b"r" * 500, [], ring=ring, capture_id=capture_id, request=None, request_headers=[])
    assert [i for i in range(1, 5) if i in ring] == [1, 2, 3, 4]
    captured(b"r" * 900, [], ring=ring, capture_id=5, request=None, request_headers=[])
    assert [i for i in range(1, 6) if i in ring] == [1, 3, 4, 5]
    assert ring.size <= ring.max_bytes
    streaming.add_response_chunk(b"t" * 1000)  # finished captures make room for it
    assert [i for i in range(1, 6) if i in ring] == [1, 4, 5]
    assert not streaming.response_truncated
    streaming.add_response_chunk(b"t")  # past its own limit
    assert streaming.response_truncated
    assert ring.size <= ring.max_bytes


def test_a_chunk_with_no_room_anywhere_is_not_kept() -> None:
    ring = CaptureRing(2 * OVERHEAD + 1000, capture_bytes=800)
    first = ring.start(1, "POST", CHAT, [], None)
    second = ring.start(2, "POST", CHAT, [], None)
    first.add_response_chunk(b"1" * 700)
    second.add_response_chunk(b"2" * 700)  # both still stream: nothing to evict
    assert second.response_truncated and not first.response_truncated
    assert ring.size <= ring.max_bytes
    third = ring.start(3, "POST", CHAT, [], None)  # not even its own bookkeeping fits
    assert 3 not in ring and third.complete
    third.add_response_chunk(b"3")
    assert ring.get(3) is None


def test_a_new_capture_of_an_id_replaces_the_old() -> None:
    ring = CaptureRing(1 << 20)
    captured(b"old", ring=ring)
    captured(b"new", ring=ring)
    view, capture = ring.get(1), ring.capture(1)
    assert len(ring) == 1 and view is not None and view["resp_text"] == "new"
    assert capture is not None and ring.size == capture.size


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        (b"gzip", gzip.compress),
        (b"deflate", zlib.compress),
        (b"deflate", lambda data: zlib.compress(data, wbits=-15)),
    ],
)
def test_a_compressed_reply_is_viewed_decompressed(encoding: bytes, compress: Any) -> None:
    body = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    compressed = compress(body)
    capture = captured([compressed[:10], compressed[10:]], [*SSE, (b"content-encoding", encoding)])
    view = capture.view()
    assert view["resp_text"] == body.decode()
    assert view["resp_headers"] == {"Content-Type": "text/event-stream"}
    assert rebuild(capture) == result("hi")


def test_a_ring_holds_some_bytes() -> None:
    with pytest.raises(ValueError):
        CaptureRing(0)


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["start", "chunk", "finish"]),
        st.integers(min_value=1, max_value=6),
        st.integers(min_value=0, max_value=3000),
    ),
    max_size=60,
)


@settings(max_examples=100, deadline=None)
@given(operations=OPERATIONS)
def test_the_ring_never_outgrows_its_bytes(operations: list[tuple[str, int, int]]) -> None:
    ring = CaptureRing(8000, capture_bytes=2500)
    open_captures: dict[int, Capture] = {}
    for operation, capture_id, size in operations:
        if operation == "start":
            open_captures[capture_id] = ring.start(capture_id, "POST", CHAT, JSON, b"q" * size)
        elif capture_id in open_captures:
            capture = open_captures[capture_id]
            if operation == "chunk":
                capture.add_response_chunk(b"r" * size)
            else:
                capture.finish()
                del open_captures[capture_id]
        kept = [ring.capture(i) for i in range(1, 7) if i in ring]
        assert ring.size == sum(capture.size for capture in kept if capture) <= ring.max_bytes
        # A capture still streaming is never evicted (unless a new one took its id).
        for capture_id, capture in open_captures.items():
            assert ring.capture(capture_id) is capture or capture.complete


# --- rebuilding replies -------------------------------------------------------------------

# Anthropic's documented stream of extended thinking then a tool call: event lines, a ping, a
# signature delta, the tool input in pieces (the first one empty).
ANTHROPIC_THINKING_TOOL = sse_events(
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_01ABC",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-sonnet-4-5",
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 472, "output_tokens": 2},
            },
        },
    ),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
    ),
    ("ping", {"type": "ping"}),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "The user wants the weather"},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": " in San Francisco."},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "text_delta", "text": "Okay, let's check the weather"},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "text_delta", "text": " for San Francisco, CA:"},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "name": "get_weather",
                "input": {},
            },
        },
    ),
    *(
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 2,
                "delta": {"type": "input_json_delta", "partial_json": piece},
            },
        )
        for piece in ["", '{"location":', ' "San Fra', 'ncisco, CA"', ', "unit": "fah', 'renheit"}']
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 2}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 89},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
)

# OpenAI's documented Responses events: a reasoning summary, text, then a function call.
RESPONSES_REASONING_TEXT_CALL = sse_events(
    *(
        (event["type"], event)
        for event in [
            {"type": "response.created", "sequence_number": 0, "response": {"id": "resp_6"}},
            {
                "type": "response.output_item.added",
                "sequence_number": 1,
                "output_index": 0,
                "item": {"id": "rs_6", "type": "reasoning", "summary": []},
            },
            {
                "type": "response.reasoning_summary_part.added",
                "sequence_number": 2,
                "item_id": "rs_6",
                "output_index": 0,
                "summary_index": 0,
                "part": {"type": "summary_text", "text": ""},
            },
            {
                "type": "response.reasoning_summary_text.delta",
                "sequence_number": 3,
                "item_id": "rs_6",
                "output_index": 0,
                "summary_index": 0,
                "delta": "**Checking the weather**",
            },
            {
                "type": "response.reasoning_summary_text.done",
                "sequence_number": 4,
                "item_id": "rs_6",
                "output_index": 0,
                "summary_index": 0,
                "text": "**Checking the weather**",
            },
            {
                "type": "response.output_item.added",
                "sequence_number": 5,
                "output_index": 1,
                "item": {
                    "id": "msg_6",
                    "type": "message",
                    "status": "in_progress",
                    "content": [],
                    "role": "assistant",
                },
            },
            {
                "type": "response.output_text.delta",
                "sequence_number": 6,
                "item_id": "msg_6",
                "output_index": 1,
                "content_index": 0,
                "delta": "Let me look",
                "logprobs": [],
            },
            {
                "type": "response.output_text.delta",
                "sequence_number": 7,
                "item_id": "msg_6",
                "output_index": 1,
                "content_index": 0,
                "delta": " that up.",
                "logprobs": [],
            },
            {
                "type": "response.output_item.added",
                "sequence_number": 8,
                "output_index": 2,
                "item": {
                    "type": "function_call",
                    "id": "fc_1234xyz",
                    "call_id": "call_1234xyz",
                    "name": "get_weather",
                    "arguments": "",
                },
            },
            *(
                {
                    "type": "response.function_call_arguments.delta",
                    "sequence_number": 9 + n,
                    "item_id": "fc_1234xyz",
                    "output_index": 2,
                    "delta": piece,
                }
                for n, piece in enumerate(['{"', 'location":"', "Paris, France", '"}'])
            ),
            {
                "type": "response.function_call_arguments.done",
                "sequence_number": 13,
                "item_id": "fc_1234xyz",
                "output_index": 2,
                "arguments": '{"location":"Paris, France"}',
            },
            {"type": "response.completed", "sequence_number": 14, "response": {"id": "resp_6"}},
        ]
    )
)


def chat_stream(*chunks: dict[str, Any]) -> bytes:
    return sse_events(*((None, chunk) for chunk in chunks)) + b"data: [DONE]\n\n"


def chunk(delta: dict[str, Any], finish: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1760000000,
        "model": "qwen3-8b",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **fields,
    }


# llama-server: reasoning_content, parallel tool calls by index, timings on the last chunk.
LLAMA_SERVER_TOOLS = chat_stream(
    chunk({"role": "assistant", "content": None}),
    chunk({"reasoning_content": "Two files"}),
    chunk({"reasoning_content": " to read."}),
    chunk({"content": "Reading both."}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "read", "arguments": ""},
                }
            ]
        }
    ),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "read", "arguments": '{"path":'},
                }
            ]
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"path":"a.txt"}'}}]}),
    chunk({"tool_calls": [{"index": 1, "function": {"arguments": '"b.txt"}'}}]}),
    chunk({}, "tool_calls", timings={"prompt_n": 20, "predicted_n": 30}),
)

# vLLM: the reasoning in `reasoning`, a usage chunk with no choices at the end.
VLLM_REASONING = chat_stream(
    chunk({"role": "assistant", "content": ""}),
    chunk({"reasoning": "Greeting."}),
    chunk({"content": "Hi"}),
    chunk({"content": "!"}, "stop"),
    {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": {}},
)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            ANTHROPIC_THINKING_TOOL,
            result(
                "Okay, let's check the weather for San Francisco, CA:",
                "The user wants the weather in San Francisco.",
                [
                    (
                        "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                        "get_weather",
                        '{"location": "San Francisco, CA", "unit": "fahrenheit"}',
                    )
                ],
            ),
            id="anthropic",
        ),
        pytest.param(
            RESPONSES_REASONING_TEXT_CALL,
            result(
                "Let me look that up.",
                "**Checking the weather**",
                [("call_1234xyz", "get_weather", '{"location":"Paris, France"}')],
            ),
            id="responses",
        ),
        pytest.param(
            LLAMA_SERVER_TOOLS,
            result(
                "Reading both.",
                "Two files to read.",
                [
                    ("call_a", "read", '{"path":"a.txt"}'),
                    ("call_b", "read", '{"path":"b.txt"}'),
                ],
            ),
            id="llama-server",
        ),
        pytest.param(VLLM_REASONING, result("Hi!", "Greeting."), id="vllm"),
    ],
)
def test_documented_streams_are_rebuilt(body: bytes, expected: dict[str, Any]) -> None:
    assert rebuild(captured(body)) == expected
    # However the bytes were chunked on the way.
    assert rebuild(captured([body[i : i + 7] for i in range(0, len(body), 7)])) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": "Reading.",
                            "reasoning_content": "One file.",
                            "tool_calls": [
                                {
                                    "id": "call_a",
                                    "type": "function",
                                    "function": {"name": "read", "arguments": '{"path":"a"}'},
                                }
                            ],
                        },
                        "finish_reason": "tool_calls",
                    }
                ],
            },
            result("Reading.", "One file.", [("call_a", "read", '{"path":"a"}')]),
            id="chat",
        ),
        pytest.param(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "One file.", "signature": "sig"},
                    {"type": "text", "text": "Reading."},
                    {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {}},
                ],
                "stop_reason": "tool_use",
            },
            result("Reading.", "One file.", [("toolu_1", "read", "{}")]),
            id="anthropic",
        ),
        pytest.param(
            {
                "id": "resp_1",
                "object": "response",
                "output": [
                    {
                        "type": "reasoning",
                        "id": "rs_1",
                        "summary": [{"type": "summary_text", "text": "One file."}],
                    },
                    {
                        "type": "message",
                        "id": "msg_1",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": "Reading.", "annotations": []}],
                    },
                    {
                        "type": "function_call",
                        "id": "fc_1",
                        "call_id": "call_1",
                        "name": "read",
                        "arguments": '{"path":"a"}',
                    },
                ],
            },
            result("Reading.", "One file.", [("call_1", "read", '{"path":"a"}')]),
            id="responses",
        ),
    ],
)
def test_whole_answers_are_rebuilt(answer: dict[str, Any], expected: dict[str, Any]) -> None:
    assert rebuild(captured(json.dumps(answer).encode(), JSON)) == expected


def parsed(arguments: str) -> object:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments  # cut short


def calls(rebuilt: dict[str, Any]) -> list[tuple[str, object]]:
    return [(call["name"], parsed(call["arguments"])) for call in rebuilt["tool_calls"]]


def fixtures(kind: str) -> list[Any]:
    paths = sorted((FIXTURES / kind / "streams").glob("*.json"))
    assert paths
    return [pytest.param(json.loads(path.read_text()), id=path.stem) for path in paths]


@pytest.mark.parametrize("case", fixtures("anthropic"))
def test_anthropic_streams_from_the_fixtures_are_rebuilt(case: dict[str, Any]) -> None:
    stream = MessageStream(case["request"])
    body = b"".join(stream.feed(chunk) for chunk in case["chunks"]) + stream.close()
    rebuilt = rebuild(captured(body))
    blocks = case["message"]["content"]
    assert rebuilt["text"] == "".join(b["text"] for b in blocks if b["type"] == "text")
    assert rebuilt["reasoning"] == "".join(b["thinking"] for b in blocks if b["type"] == "thinking")
    uses = [b for b in blocks if b["type"] == "tool_use"]
    assert calls(rebuilt) == [(b["name"], b["input"]) for b in uses]
    for call, use in zip(rebuilt["tool_calls"], uses, strict=True):
        assert call["id"] == use["id"] or use["id"] == "*"  # "*": an id trioswap made up


@pytest.mark.parametrize("case", fixtures("responses"))
def test_responses_and_chat_streams_from_the_fixtures_are_rebuilt(case: dict[str, Any]) -> None:
    output = case["expect"]["output"]
    text = "".join(item["text"] for item in output if item["type"] == "message")
    reasoning = "".join(item["text"] for item in output if item["type"] == "reasoning")
    tool_calls = [item for item in output if item["type"] in ("function_call", "custom_tool_call")]

    stream = ResponseStream(case["request"])
    body = b"".join(stream.feed(chunk) for chunk in case["chunks"]) + stream.close()
    rebuilt = rebuild(captured(body, request=None, path="/v1/responses"))
    assert (rebuilt["text"], rebuilt["reasoning"]) == (text, reasoning)
    assert rebuilt["tool_calls"] == [
        {"id": item["call_id"], "name": item["name"], "arguments": item.get("arguments", "")}
        if item["type"] == "function_call"
        else {"id": item["call_id"], "name": item["name"], "arguments": item["input"]}
        for item in tool_calls
    ]

    # The model server's own chat stream, as the capture of a chat request holds it.
    rebuilt = rebuild(captured(chat_stream(*case["chunks"])))
    assert (rebuilt["text"], rebuilt["reasoning"]) == (text, reasoning)
    assert calls(rebuilt) == [
        (item["name"], parsed(item["arguments"]))
        if item["type"] == "function_call"
        else (item["name"], {"input": item["input"]})  # a custom tool's input, as chat sends it
        for item in tool_calls
    ]


def test_nothing_to_rebuild() -> None:
    assert rebuild(captured(b"")) == result()
    assert rebuild(captured(b"<html>502 Bad Gateway</html>", [])) == result()
    assert rebuild(captured(b"data: [DONE]\n\ndata: {not json\n\n")) == result()
    audio = captured(b"RIFF", [(b"content-type", b"audio/wav")], path="/v1/audio/speech")
    assert rebuild(audio) == result()


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=400)
    | st.builds(lambda b: ANTHROPIC_THINKING_TOOL[:b], st.integers(0, 3000))
)
def test_rebuild_takes_any_bytes(body: bytes) -> None:
    for headers in (SSE, JSON):
        rebuilt = rebuild(captured(body, headers))
        assert set(rebuilt) == {"text", "reasoning", "tool_calls"}
        json.dumps(rebuilt)
