"""A chat completion's answer as an Anthropic message: what the whole reply and the stream share
(ids, stop reasons, usage), and the non-streaming `message`.

- Ids are new `msg_…`; tool call ids are the upstream's, or a new `toolu_…` when it sent none.
- `model` is the one the client asked for (the proxy rewrites the upstream's).
- finish_reason: length → max_tokens; tool calls present → tool_use; stop → stop_sequence when
  the upstream says which of the request's stop sequences matched (vLLM's `stop_reason`,
  llama-server's `__verbose.stopping_word` when it runs verbose), else end_turn (a stop sequence
  leaves no trace in the text); content_filter → refusal; anything else → end_turn.
- Usage: prompt_tokens count cached tokens too, Anthropic's input_tokens do not, so
  input_tokens = prompt_tokens - cached and cache_read_input_tokens = cached (from
  prompt_tokens_details.cached_tokens, else llama-server's timings.cache_n). Zero only when the
  upstream reports no usage at all.
- Reasoning (`reasoning_content` of llama-server and vLLM, or `reasoning`) is a `thinking`
  block before the text, with an empty signature: there is none to give.
- Tool arguments that are not a JSON object give `input: {}`, as llama-server's own Anthropic
  endpoint does; the client's schema check then tells the model.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

_FINISH = {"length": "max_tokens", "content_filter": "refusal"}
_EMPTY: Mapping[str, Any] = {}


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def mapping(value: Any) -> Mapping[str, Any]:
    """`value` when it is a JSON object (parsed: a dict), else an empty one: upstream answers
    are not trusted."""
    return value if isinstance(value, dict) else _EMPTY


def model_of(request: Mapping[str, Any]) -> str:
    model = request.get("model")
    return model if isinstance(model, str) else ""


def stop_sequences(request: Mapping[str, Any]) -> frozenset[str]:
    stops = request.get("stop_sequences")
    if not isinstance(stops, list):
        return frozenset()
    return frozenset(s for s in stops if isinstance(s, str))


def matched_stop(
    chat: Mapping[str, Any], choice: Mapping[str, Any], stops: frozenset[str]
) -> str | None:
    """Which of the request's stop sequences ended the text, when the upstream says."""
    for said in (choice.get("stop_reason"), mapping(chat.get("__verbose")).get("stopping_word")):
        if isinstance(said, str) and said in stops:
            return said
    return None


def stop_reason(finish: Any, tool_use: bool, matched: str | None) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for a chat finish_reason."""
    if finish == "length":
        return "max_tokens", None
    if tool_use:
        return "tool_use", None
    if matched is not None and finish == "stop":
        return "stop_sequence", matched
    return (_FINISH.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"), None


def usage(chat_usage: Any, timings: Any) -> dict[str, int] | None:
    """Anthropic usage from a chat `usage` (and llama-server's `timings`), or None when the
    upstream reported none."""
    chat_usage = mapping(chat_usage)
    prompt = chat_usage.get("prompt_tokens")
    completion = chat_usage.get("completion_tokens")
    if not _count(prompt) or not _count(completion):
        return None
    cached = mapping(chat_usage.get("prompt_tokens_details")).get("cached_tokens")
    if not _count(cached):
        cached = mapping(timings).get("cache_n")
    result = {"input_tokens": prompt, "output_tokens": completion}
    if _count(cached):
        cached = min(cached, prompt)
        result["input_tokens"] = prompt - cached
        result["cache_read_input_tokens"] = cached
    return result


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def reasoning_of(delta: Mapping[str, Any]) -> Any:
    return delta.get("reasoning_content") or delta.get("reasoning")


def tool_id(call: Mapping[str, Any]) -> str:
    given = call.get("id")
    return given if isinstance(given, str) and given else new_id("toolu_")


def tool_name(function: Mapping[str, Any]) -> str:
    name = function.get("name")
    return name if isinstance(name, str) else ""


def message_from_chat(chat: Mapping[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
    """A non-streaming chat completion as an Anthropic `message` object."""
    chat = mapping(chat)
    choices = chat.get("choices")
    choice = mapping(choices[0]) if isinstance(choices, list) and choices else _EMPTY
    message = mapping(choice.get("message"))
    content: list[dict[str, Any]] = []
    reasoning = reasoning_of(message)
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        call = mapping(call)
        function = mapping(call.get("function"))
        content.append(
            {
                "type": "tool_use",
                "id": tool_id(call),
                "name": tool_name(function),
                "input": _arguments(function.get("arguments")),
            }
        )
    tool_use = bool(content) and content[-1]["type"] == "tool_use"
    matched = matched_stop(chat, choice, stop_sequences(request))
    reason, sequence = stop_reason(choice.get("finish_reason"), tool_use, matched)
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model_of(request),
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage(chat.get("usage"), chat.get("timings"))
        or {"input_tokens": 0, "output_tokens": 0},
    }


def _arguments(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else None
    except (ValueError, RecursionError):
        return {}
    return parsed if isinstance(parsed, dict) else {}
