"""A non-streamed chat completion as a Responses `response` object."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from trioswap.protocols.responses_chat.output import (
    Json,
    base_response,
    call_item,
    custom_tool_names,
    finished,
    message_item,
    new_id,
    outcome,
    reasoning_item,
    usage_from_chat,
)

_EMPTY: Mapping[str, Any] = {}


def _field(value: object, key: str) -> Mapping[str, Any]:
    """`value[key]` when both are objects, else an empty one: an answer is read leniently."""
    found = value.get(key) if isinstance(value, Mapping) else None
    return found if isinstance(found, Mapping) else _EMPTY


def _text(message: Mapping[str, Any], *keys: str) -> str:
    for key in keys:
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def response_from_chat(chat: Mapping[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
    """A non-streaming chat completion as a Responses `response` object: status completed, or
    incomplete with the reason (max_output_tokens for a length cut)."""
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = _field(choice, "message") if isinstance(choice, Mapping) else _EMPTY
    status, reason = outcome(choice.get("finish_reason") if isinstance(choice, Mapping) else None)
    # vLLM and Ollama name the reasoning `reasoning`; llama-server `reasoning_content`.
    reasoning = _text(message, "reasoning_content", "reasoning")
    content = _text(message, "content")
    custom = custom_tool_names(request)
    output: list[Json] = []
    if reasoning:
        output.append(reasoning_item(new_id("rs"), reasoning, "completed"))
    calls = message.get("tool_calls")
    calls = [call for call in calls if isinstance(call, Mapping)] if isinstance(calls, list) else []
    if content or not (reasoning or calls):
        output.append(message_item(new_id("msg"), content, "completed"))
    for call in calls:
        function = _field(call, "function")
        name = function.get("name")
        name = name if isinstance(name, str) else ""
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = "" if arguments is None else json.dumps(arguments)
        call_id = call.get("id")
        call_id = call_id if isinstance(call_id, str) and call_id else new_id("call")
        is_custom = name in custom
        item_id = new_id("ctc" if is_custom else "fc")
        output.append(call_item(item_id, call_id, name, arguments, "completed", is_custom))
    if reason is not None:
        # What was being written at the cut: the tool calls, else the last item.
        for item in output[-len(calls) :] if calls else output[-1:]:
            item["status"] = "incomplete"
    base = base_response(request, new_id("resp"), int(time.time()))
    return finished(base, status, output, usage_from_chat(chat.get("usage")), reason)
