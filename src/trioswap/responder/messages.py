"""Anthropic Messages (/v1/messages): the message and its event stream for a planned reply."""

from __future__ import annotations

import hashlib
import json
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
from trioswap.responder.wire import JSON, Frame, named_sse

PING: Frame = (named_sse("ping", {"type": "ping"}), False)


def turn(messages: object) -> Turn:
    texts: list[str] = []
    results: list[str] = []
    for message in current_turn(messages, lambda message: message.get("role") == "assistant"):
        content = message.get("content")
        if message.get("role") != "user":
            continue
        texts.append(plain_text(content))
        if isinstance(content, list):
            results.extend(
                prompt_text(block.get("content"))
                for block in content
                if isinstance(block, dict) and block.get("type") == "tool_result"
            )
    return Turn("\n".join(texts), results)


def prompt_tokens(request: JSON) -> int:
    return count_tokens(request.get("system"), request.get("messages"))


def stop_reason(reply: Reply) -> str:
    if reply.truncated:
        return "max_tokens"
    return "tool_use" if reply.tool_calls else "end_turn"


def signature(thinking: str) -> str:
    """Stands in for the opaque signature Anthropic puts on a thinking block."""
    return hashlib.sha256(thinking.encode()).hexdigest()


def message(reply: Reply, meta: Meta) -> JSON:
    content: list[JSON] = []
    if reply.reasoning:
        thinking = "".join(reply.reasoning)
        content.append({"type": "thinking", "thinking": thinking, "signature": signature(thinking)})
    if reply.text:
        content.append({"type": "text", "text": "".join(reply.text)})
    content.extend(
        {
            "type": "tool_use",
            "id": meta.new_id("toolu_"),
            "name": call.name,
            "input": json.loads(call.arguments),
        }
        for call in reply.tool_calls
    )
    return {
        "id": meta.new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": meta.model,
        "content": content,
        "stop_reason": stop_reason(reply),
        "stop_sequence": None,
        "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": reply.output_tokens},
        "responder": meta.info,
    }


def events(reply: Reply, meta: Meta) -> Iterator[Frame]:
    """message_start; per content block content_block_start, its deltas (a thinking block ends
    with a signature_delta) and content_block_stop, with a ping after the first start;
    message_delta with the stop reason and output tokens; message_stop."""
    start = {
        "type": "message_start",
        "message": {
            "id": meta.new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": meta.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": 1},
            "responder": meta.info,
        },
    }
    yield named_sse("message_start", start), False

    # Each block: how it starts, its delta type, the delta's field, the pieces.
    blocks: list[tuple[JSON, str, str, list[str]]] = []
    if reply.reasoning:
        blocks.append(
            (
                {"type": "thinking", "thinking": "", "signature": ""},
                "thinking_delta",
                "thinking",
                list(reply.reasoning),
            )
        )
    if reply.text:
        blocks.append(({"type": "text", "text": ""}, "text_delta", "text", list(reply.text)))
    for call in reply.tool_calls:
        tool_use = {"type": "tool_use", "id": meta.new_id("toolu_"), "name": call.name, "input": {}}
        blocks.append((tool_use, "input_json_delta", "partial_json", list(call.pieces)))

    for index, (block, delta_type, field, pieces) in enumerate(blocks):
        yield _event("content_block_start", index=index, content_block=block), False
        if index == 0:
            yield PING
        for piece in pieces:
            delta = {"type": delta_type, field: piece}
            yield _event("content_block_delta", index=index, delta=delta), True
        if block["type"] == "thinking":
            delta = {"type": "signature_delta", "signature": signature("".join(pieces))}
            yield _event("content_block_delta", index=index, delta=delta), False
        yield _event("content_block_stop", index=index), False
    if not blocks:
        yield PING
    yield (
        _event(
            "message_delta",
            delta={"stop_reason": stop_reason(reply), "stop_sequence": None},
            usage={"output_tokens": reply.output_tokens},
        ),
        False,
    )
    yield _event("message_stop"), False


def _event(kind: str, /, **fields: object) -> bytes:
    return named_sse(kind, {"type": kind, **fields})
