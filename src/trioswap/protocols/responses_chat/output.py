"""What a non-streamed and a streamed reply share: ids, output items, usage, the response object.

Both build the same output for the same answer: a reasoning item (the server's
`reasoning_content`, as summary text), a message (its text), then one item per tool call; an
empty message when the answer has none of these. When the answer was cut short, the items still
being written at the cut are `incomplete`: the tool calls if any, else the last item.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

Json = dict[str, Any]

# Chat finish reasons that leave a response incomplete, and the reason Responses gives.
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def outcome(finish_reason: object) -> tuple[str, str | None]:
    """The response status for a chat finish reason, and why it is incomplete."""
    reason = _INCOMPLETE.get(finish_reason) if isinstance(finish_reason, str) else None
    return ("incomplete", reason) if reason else ("completed", None)


def custom_tool_names(request: Mapping[str, Any]) -> frozenset[str]:
    """The request's custom tools: their calls go back as custom_tool_call items."""
    tools = request.get("tools")
    if not isinstance(tools, list):
        return frozenset()
    return frozenset(
        tool["name"]
        for tool in tools
        if isinstance(tool, Mapping)
        and tool.get("type") == "custom"
        and isinstance(tool.get("name"), str)
    )


def output_text(text: str) -> Json:
    return {"type": "output_text", "text": text, "annotations": []}


def message_item(item_id: str, text: str, status: str) -> Json:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [output_text(text)],
    }


def reasoning_item(item_id: str, text: str, status: str) -> Json:
    return {
        "id": item_id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text}],
        "status": status,
    }


def call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str, custom: bool
) -> Json:
    if custom:
        return {
            "id": item_id,
            "type": "custom_tool_call",
            "status": status,
            "call_id": call_id,
            "name": name,
            "input": custom_input(arguments),
        }
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def custom_input(arguments: str) -> str:
    """A custom tool's input from the arguments of the function it was sent as (`{"input":
    ...}`); arguments that are not that shape are the input as they are."""
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        return arguments
    if isinstance(value, dict) and isinstance(value.get("input"), str):
        return value["input"]
    return arguments


def _count(value: object) -> int:
    return value if type(value) is int and value >= 0 else 0


def _detail(usage: Mapping[str, Any], key: str, field: str) -> int:
    details = usage.get(key)
    return _count(details.get(field)) if isinstance(details, Mapping) else 0


def usage_from_chat(usage: object) -> Json | None:
    if not isinstance(usage, Mapping):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    total = usage.get("total_tokens")
    return {
        "input_tokens": prompt,
        # Chat completions does not say how many tokens were written to a cache.
        "input_tokens_details": {
            "cached_tokens": _detail(usage, "prompt_tokens_details", "cached_tokens"),
            "cache_write_tokens": 0,
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": _detail(usage, "completion_tokens_details", "reasoning_tokens")
        },
        "total_tokens": total if type(total) is int and total >= 0 else prompt + completion,
    }


def base_response(request: Mapping[str, Any], response_id: str, created_at: int) -> Json:
    """The response object as it starts, echoing the request's settings. trioswap stores
    nothing, so `store` is false whatever the request said."""
    model = request.get("model")
    parallel = request.get("parallel_tool_calls")
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model if isinstance(model, str) else "",
        "output": [],
        "parallel_tool_calls": parallel if isinstance(parallel, bool) else True,
        "previous_response_id": None,
        "reasoning": request.get("reasoning"),
        "store": False,
        "temperature": request.get("temperature"),
        "text": request.get("text") or {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p"),
        "truncation": "disabled",
        "usage": None,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def finished(
    base: Json, status: str, output: list[Json], usage: Json | None, reason: str | None
) -> Json:
    response = {**base, "status": status, "output": output, "usage": usage}
    if reason is not None:
        response["incomplete_details"] = {"reason": reason}
    return response
