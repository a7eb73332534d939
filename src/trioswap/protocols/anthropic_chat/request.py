"""An Anthropic Messages request as an OpenAI chat completions request.

Where the two APIs differ, this is what the translation does:

- Consecutive turns of one role are one turn, as Anthropic reads them.
- `system` (a string or text blocks) and text blocks joined with blank lines become one system
  message; `cache_control` and `citations` are dropped, chat has no such thing.
- Claude Code's `x-anthropic-billing-header` system text carries a `cch=` value that changes on
  every request; it is pinned, else a model server's prompt cache never reaches past it.
- A user turn's `tool_result` blocks become `tool` messages, in order, right after the assistant
  turn that called them; the rest of the turn (text, images) follows as one user message. A
  result must answer a `tool_use` of that assistant turn, once, or the request is refused.
- `is_error` results start with "Error: ". Chat tool messages hold text only, so a result's
  images move to the user message after the tool messages (first, before the user's own text)
  and the tool message says so.
- An assistant turn's text blocks are joined into one string (empty when it has only tool
  calls: chat templates render a null content as "None"), `tool_use` blocks become
  `tool_calls`, `thinking` becomes `reasoning_content` (llama-server and vLLM templates render it
  back), and `redacted_thinking` is dropped: it is opaque.
- `thinking` sets `chat_template_kwargs.enable_thinking` (Qwen-style templates) and, when
  enabled, llama-server's `thinking_budget_tokens`; `output_config.effort` is
  `reasoning_effort`, `output_config.format` a `json_schema` response format.
- `tool_choice` any → "required", tool → the named function, `disable_parallel_tool_use` →
  `parallel_tool_calls: false`; without tools there is nothing to choose, so it is left out.
- Anthropic's server and built-in tools (web search, bash, …), documents other than plain text
  (PDFs) and image sources other than base64 and URLs cannot reach a chat server: 400.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from trioswap.clip import clip
from trioswap.errors import BadRequest

Block = tuple[str, Mapping[str, Any]]  # (where it is in the request, the block)

_JOIN = "\n\n"
_BILLING = "x-anthropic-billing-header:"
_CCH = re.compile(r"cch=[^;]*;")
_MOVED_IMAGE = "[image in the next message]"
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
_THINKING = {"enabled": True, "adaptive": True, "disabled": False}
# Anthropic's content block types: the ones not translated are refused as such, not as unknown.
_BLOCK_TYPES = frozenset(
    {
        "text",
        "image",
        "document",
        "search_result",
        "thinking",
        "redacted_thinking",
        "tool_use",
        "tool_result",
        "tool_reference",
        "server_tool_use",
        "container_upload",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "tool_search_tool_result",
        "mcp_tool_use",
        "mcp_tool_result",
    }
)
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}


def request_to_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request body as a chat completions request body. `model` is kept
    as is (the proxy rewrites it). When `stream` is true, sets stream and
    stream_options.include_usage. Raises BadRequest, saying what and where (e.g.
    "messages[3].content[1]: unknown block type 'foo'"), for what cannot be translated."""
    if not isinstance(body, Mapping):
        raise BadRequest(f"the request body must be a JSON object, not {_kind(body)}")
    chat: dict[str, Any] = {}
    if "model" in body:
        chat["model"] = body["model"]
    # A field set to null counts as absent.
    body = {key: value for key, value in body.items() if value is not None}
    messages: list[dict[str, Any]] = []
    if "system" in body:
        system = _text_of(_blocks(body["system"], "system"), "a system prompt")
        if system:
            messages.append({"role": "system", "content": system})
    _add_turns(messages, _array(body.get("messages"), "messages"))
    chat["messages"] = messages
    _sampling(body, chat)
    if "tools" in body:
        _tools(body, chat)
    if "thinking" in body:
        _thinking(_object(body["thinking"], "thinking"), chat)
    if "output_config" in body:
        _output_config(_object(body["output_config"], "output_config"), chat)
    return chat


def _sampling(body: Mapping[str, Any], chat: dict[str, Any]) -> None:
    if "max_tokens" in body:
        chat["max_tokens"] = _int(body["max_tokens"], "max_tokens")
    for key in ("temperature", "top_p"):
        if key in body:
            chat[key] = _number(body[key], key)
    if "top_k" in body:
        chat["top_k"] = _int(body["top_k"], "top_k")
    if "stop_sequences" in body:
        stops = _array(body["stop_sequences"], "stop_sequences")
        if stops:
            chat["stop"] = [_string(s, f"stop_sequences[{i}]") for i, s in enumerate(stops)]
    if "metadata" in body:
        user = _object(body["metadata"], "metadata").get("user_id")
        if user is not None:
            chat["user"] = _string(user, "metadata.user_id")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest(f"stream: expected a boolean, got {_kind(stream)}")
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}


def _add_turns(out: list[dict[str, Any]], messages: list[Any]) -> None:
    calls: dict[str, None] = {}  # tool_use ids of the last assistant turn not yet answered
    for role, blocks in _turns(messages):
        if role == "assistant":
            message, calls = _assistant(blocks)
            out.append(message)
            continue
        if role == "user":
            out.extend(_user(blocks, calls))
        else:
            out.append({"role": "system", "content": _text_of(blocks, "a system turn")})
        calls = {}


def _turns(messages: list[Any]) -> Iterator[tuple[str, list[Block]]]:
    """Each run of messages of one role, as that role and all their blocks."""
    role: str | None = None
    blocks: list[Block] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        message = _object(message, where)
        this = message.get("role")
        if this not in ("user", "assistant", "system"):
            raise BadRequest(f"{where}.role: expected 'user' or 'assistant', got {_show(this)}")
        if this != role and role is not None:
            yield role, blocks
            blocks = []
        role = this
        if "content" not in message:
            raise BadRequest(f"{where}: no content")
        blocks.extend(_blocks(message["content"], f"{where}.content"))
    if role is not None:
        yield role, blocks


def _blocks(content: Any, where: str) -> list[Block]:
    if isinstance(content, str):
        return [(where, {"type": "text", "text": content})]
    if not isinstance(content, list):
        raise BadRequest(f"{where}: expected a string or an array of blocks, got {_kind(content)}")
    return [(f"{where}[{j}]", _object(block, f"{where}[{j}]")) for j, block in enumerate(content)]


def _assistant(blocks: list[Block]) -> tuple[dict[str, Any], dict[str, None]]:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for where, block in blocks:
        kind = block.get("type")
        if kind == "text":
            texts.append(_string(block.get("text"), f"{where}.text"))
        elif kind == "thinking":
            reasoning.append(_string(block.get("thinking"), f"{where}.thinking"))
        elif kind == "tool_use":
            arguments = _object(block.get("input"), f"{where}.input")
            function = {
                "name": _string(block.get("name"), f"{where}.name"),
                "arguments": json.dumps(arguments, ensure_ascii=False),
            }
            call_id = _string(block.get("id"), f"{where}.id")
            calls.append({"id": call_id, "type": "function", "function": function})
        elif kind != "redacted_thinking":
            raise _unsupported(kind, where, "an assistant turn")
    message: dict[str, Any] = {"role": "assistant", "content": _JOIN.join(texts)}
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = _JOIN.join(reasoning)
    return message, dict.fromkeys(call["id"] for call in calls)


def _user(blocks: list[Block], calls: dict[str, None]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    moved: list[dict[str, Any]] = []  # images of tool results
    parts: list[dict[str, Any]] = []
    for where, block in blocks:
        kind = block.get("type")
        if kind == "tool_result":
            out.append(_tool_result(block, where, calls, moved))
        elif kind == "image":
            parts.append(_image(block, where))
        else:
            parts.append({"type": "text", "text": _text(block, where, "a user turn")})
    parts[:0] = moved
    if parts:
        single = len(parts) == 1 and parts[0]["type"] == "text"
        out.append({"role": "user", "content": parts[0]["text"] if single else parts})
    return out


def _tool_result(
    block: Mapping[str, Any], where: str, calls: dict[str, None], moved: list[dict[str, Any]]
) -> dict[str, Any]:
    call_id = _string(block.get("tool_use_id"), f"{where}.tool_use_id")
    if call_id not in calls:
        raise BadRequest(
            f"{where}: tool_result {clip(call_id)!r} answers no tool_use of the assistant turn "
            "before it (or answers one twice)"
        )
    del calls[call_id]
    texts: list[str] = []
    for inner, part in _blocks(block.get("content") or "", f"{where}.content"):
        if part.get("type") == "image":
            moved.append(_image(part, inner))
            texts.append(_MOVED_IMAGE)
        else:
            texts.append(_text(part, inner, "a tool_result"))
    text = _JOIN.join(texts)
    is_error = block.get("is_error") or False
    if not isinstance(is_error, bool):
        raise BadRequest(f"{where}.is_error: expected a boolean, got {_kind(is_error)}")
    if is_error:
        text = "Error: " + text
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _text(block: Mapping[str, Any], where: str, context: str) -> str:
    """A text block's text, or a plain-text document's."""
    kind = block.get("type")
    if kind == "text":
        return _string(block.get("text"), f"{where}.text")
    if kind == "document":
        source = _object(block.get("source"), f"{where}.source")
        if source.get("type") == "text":
            return _string(source.get("data"), f"{where}.source.data")
        if source.get("type") == "content":
            return _text_of(_blocks(source.get("content"), f"{where}.source.content"), context)
        raise BadRequest(
            f"{where}.source: a {_show(source.get('type'))} document cannot be sent to a chat "
            "completions server, only plain text ones"
        )
    raise _unsupported(kind, where, context)


def _text_of(blocks: list[Block], context: str) -> str:
    texts = [_text(block, where, context) for where, block in blocks]
    return _JOIN.join(_CCH.sub("cch=00000;", t, 1) if t.startswith(_BILLING) else t for t in texts)


def _image(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    source = _object(block.get("source"), f"{where}.source")
    kind = source.get("type")
    if kind == "base64":
        media = _string(source.get("media_type"), f"{where}.source.media_type")
        data = _string(source.get("data"), f"{where}.source.data")
        url = f"data:{media};base64,{data}"
    elif kind == "url":
        url = _string(source.get("url"), f"{where}.source.url")
    else:
        raise BadRequest(
            f"{where}.source: an image from a {_show(kind)} source cannot be sent to a chat "
            "completions server; send it as base64 or a URL"
        )
    return {"type": "image_url", "image_url": {"url": url}}


def _unsupported(kind: Any, where: str, context: str) -> BadRequest:
    if kind in _BLOCK_TYPES:
        return BadRequest(f"{where}: {kind} blocks cannot be translated in {context}")
    return BadRequest(f"{where}: unknown block type {_show(kind)}")


def _tools(body: Mapping[str, Any], chat: dict[str, Any]) -> None:
    tools = []
    for i, tool in enumerate(_array(body["tools"], "tools")):
        where = f"tools[{i}]"
        tool = _object(tool, where)
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise BadRequest(
                f"{where}: {_show(kind)} is one of Anthropic's own tools; a chat completions "
                "server runs only custom tools (name, description, input_schema)"
            )
        function = {"name": _string(tool.get("name"), f"{where}.name")}
        if "description" in tool:
            function["description"] = _string(tool["description"], f"{where}.description")
        function["parameters"] = _object(tool.get("input_schema"), f"{where}.input_schema")
        tools.append({"type": "function", "function": function})
    if not tools:
        return
    chat["tools"] = tools
    if "tool_choice" not in body:
        return
    choice = _object(body["tool_choice"], "tool_choice")
    kind = choice.get("type")
    if kind == "tool":
        name = _string(choice.get("name"), "tool_choice.name")
        chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    elif kind in _TOOL_CHOICES:
        chat["tool_choice"] = _TOOL_CHOICES[kind]
    else:
        raise BadRequest(
            f"tool_choice.type: expected 'auto', 'any', 'tool' or 'none', got {_show(kind)}"
        )
    if choice.get("disable_parallel_tool_use") is True:
        chat["parallel_tool_calls"] = False


def _thinking(thinking: Mapping[str, Any], chat: dict[str, Any]) -> None:
    kind = thinking.get("type")
    if kind not in _THINKING:
        raise BadRequest(
            f"thinking.type: expected 'enabled', 'adaptive' or 'disabled', got {_show(kind)}"
        )
    chat["chat_template_kwargs"] = {"enable_thinking": _THINKING[kind]}
    if kind == "enabled":
        budget = _int(thinking.get("budget_tokens"), "thinking.budget_tokens")
        chat["thinking_budget_tokens"] = budget


def _output_config(config: Mapping[str, Any], chat: dict[str, Any]) -> None:
    if config.get("effort") is not None:
        chat["reasoning_effort"] = _string(config["effort"], "output_config.effort")
    if config.get("format") is not None:
        output = _object(config["format"], "output_config.format")
        kind = output.get("type")
        if kind != "json_schema":
            raise BadRequest(
                f"output_config.format.type: expected 'json_schema', got {_show(kind)}"
            )
        schema = _object(output.get("schema"), "output_config.format.schema")
        json_schema = {"name": "output", "schema": schema}
        chat["response_format"] = {"type": "json_schema", "json_schema": json_schema}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    return repr(clip(value)) if isinstance(value, str) else _kind(value)


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BadRequest(f"{where}: expected an object, got {_kind(value)}")
    return value


def _array(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise BadRequest(f"{where}: expected an array, got {_kind(value)}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{where}: expected a string, got {_kind(value)}")
    return value


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{where}: expected an integer, got {_kind(value)}")
    return value


def _number(value: Any, where: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise BadRequest(f"{where}: expected a number, got {_kind(value)}")
    return value
