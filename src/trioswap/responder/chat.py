"""OpenAI chat completions and legacy completions, as llama-server answers them: bodies and
event streams for a planned reply."""

from __future__ import annotations

from collections.abc import Iterator

from trioswap.responder.replies import (
    Meta,
    Reply,
    Turn,
    count_tokens,
    current_turn,
    plain_text,
    prompt_text,
)
from trioswap.responder.wire import JSON, Frame, sse

DONE: Frame = (b"data: [DONE]\n\n", False)


def turn(messages: object) -> Turn:
    current = current_turn(messages, lambda message: message.get("role") == "assistant")
    return Turn(
        "\n".join(plain_text(m.get("content")) for m in current if m.get("role") == "user"),
        [prompt_text(m.get("content")) for m in current if m.get("role") == "tool"],
    )


def prompt_tokens(request: JSON) -> int:
    return count_tokens(request.get("messages"))


def usage(reply: Reply) -> JSON:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.prompt_tokens + reply.output_tokens,
    }


def finish_reason(reply: Reply) -> str:
    if reply.truncated:
        return "length"
    return "tool_calls" if reply.tool_calls else "stop"


def completion(reply: Reply, meta: Meta) -> JSON:
    message: JSON = {"role": "assistant", "content": "".join(reply.text) if reply.text else None}
    if reply.reasoning:
        message["reasoning_content"] = "".join(reply.reasoning)
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": meta.new_id("call_"),
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in reply.tool_calls
        ]
    return {
        "id": meta.new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(reply),
            }
        ],
        "usage": usage(reply),
        "responder": meta.info,
    }


def chunks(reply: Reply, meta: Meta, include_usage: bool) -> Iterator[Frame]:
    """The stream: reasoning deltas, content deltas, then per tool call a delta with its id and
    name (and empty arguments) followed by argument pieces; the finish reason; with
    stream_options.include_usage, `usage: null` on every chunk and a last chunk with no choices
    and the usage, as OpenAI sends them."""
    completion_id = meta.new_id("chatcmpl-")
    extra: JSON = {"usage": None} if include_usage else {}

    def chunk(choices: list[JSON], fields: JSON) -> bytes:
        return sse(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": meta.created,
                "model": meta.model,
                "choices": choices,
                **fields,
                "responder": meta.info,
            }
        )

    def delta(fields: JSON, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": fields, "logprobs": None, "finish_reason": finish}
        return chunk([choice], extra)

    role: JSON = {"role": "assistant"}  # only on the first delta
    for piece in reply.reasoning:
        yield delta({**role, "reasoning_content": piece}), True
        role = {}
    for piece in reply.text:
        yield delta({**role, "content": piece}), True
        role = {}
    for index, call in enumerate(reply.tool_calls):
        start = {
            "index": index,
            "id": meta.new_id("call_"),
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        yield delta({**role, "tool_calls": [start]}), False
        role = {}
        for piece in call.pieces:
            yield delta({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}), True
    yield delta({}, finish_reason(reply)), False
    if include_usage:
        yield chunk([], {"usage": usage(reply)}), False
    yield DONE


def text_completion(reply: Reply, meta: Meta) -> JSON:
    text = "".join(reply.text)
    return _text_completion(
        meta.new_id("cmpl-"), meta, text, finish_reason(reply), usage=usage(reply)
    )


def text_completion_chunks(reply: Reply, meta: Meta, include_usage: bool) -> Iterator[Frame]:
    completion_id = meta.new_id("cmpl-")
    for piece in reply.text:
        yield sse(_text_completion(completion_id, meta, piece, None)), True
    yield sse(_text_completion(completion_id, meta, "", finish_reason(reply))), False
    if include_usage:
        final = _text_completion(completion_id, meta, "", None, usage=usage(reply))
        yield sse({**final, "choices": []}), False
    yield DONE


def _text_completion(
    completion_id: str, meta: Meta, text: str, finish: str | None, **extra: object
) -> JSON:
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
        **extra,
        "responder": meta.info,
    }
