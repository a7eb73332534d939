"""An Anthropic Messages request as an OpenAI chat completions request.

Where the two APIs differ, this is what the translation does:

- Consecutive turns of one role are one turn, as Anthropic reads them; a `system` turn in
  `messages` is a system message there. A field set to null counts as absent.
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
  `metadata.user_id` is `user`; top_k (llama-server and vLLM read it) is kept.
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
from trioswap.protocols.anthropic_chat.checks import (
    array,
    integer,
    json_type,
    number,
    obj,
    show,
    string,
)

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


def request_to_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request body as a chat completions request body. `model` is kept
    as is (the proxy rewrites it). When `stream` is true, sets stream and
    stream_options.include_usage. Raises BadRequest, saying what and where (e.g.
    "messages[3].content[1]: unknown block type 'foo'"), for what cannot be translated."""
    if not isinstance(body, Mapping):
        raise BadRequest(f"the request body must be a JSON object, not {json_type(body)}")
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
    turns = array(body.get("messages"), "messages")
    if not turns:
        raise BadRequest("messages: at least one message is required")
    _add_turns(messages, turns)
    chat["messages"] = messages
    _sampling(body, chat)
    if "tools" in body:
        _tools(body, chat)
    if "thinking" in body:
        _thinking(obj(body["thinking"], "thinking"), chat)
    if "output_config" in body:
        _output_config(obj(body["output_config"], "output_config"), chat)
    return chat


def _sampling(body: Mapping[str, Any], chat: dict[str, Any]) -> None:
    if "max_tokens" in body:
        chat["max_tokens"] = integer(body["max_tokens"], "max_tokens")
    for key in ("temperature", "top_p"):
        if key in body:
            chat[key] = number(body[key], key)
    if "top_k" in body:
        chat["top_k"] = integer(body["top_k"], "top_k")
    if "stop_sequences" in body:
        stops = array(body["stop_sequences"], "stop_sequences")
        if stops:
            chat["stop"] = [string(s, f"stop_sequences[{i}]") for i, s in enumerate(stops)]
    if "metadata" in body:
        user = obj(body["metadata"], "metadata").get("user_id")
        if user is not None:
            chat["user"] = string(user, "metadata.user_id")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest(f"stream: expected a boolean, got {json_type(stream)}")
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
        message = obj(message, where)
        this = message.get("role")
        if this not in ("user", "assistant", "system"):
            raise BadRequest(f"{where}.role: expected 'user' or 'assistant', got {show(this)}")
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
        found = json_type(content)
        raise BadRequest(f"{where}: expected a string or an array of blocks, got {found}")
    return [(f"{where}[{j}]", obj(block, f"{where}[{j}]")) for j, block in enumerate(content)]


def _assistant(blocks: list[Block]) -> tuple[dict[str, Any], dict[str, None]]:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for where, block in blocks:
        kind = block.get("type")
        if kind == "text":
            texts.append(string(block.get("text"), f"{where}.text"))
        elif kind == "thinking":
            reasoning.append(string(block.get("thinking"), f"{where}.thinking"))
        elif kind == "tool_use":
            arguments = obj(block.get("input"), f"{where}.input")
            function = {
                "name": string(block.get("name"), f"{where}.name"),
                "arguments": json.dumps(arguments, ensure_ascii=False),
            }
            call_id = string(block.get("id"), f"{where}.id")
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
    call_id = string(block.get("tool_use_id"), f"{where}.tool_use_id")
    if call_id not in calls:
        raise BadRequest(
            f"{where}: tool_result {clip(call_id)!r} answers no tool_use of the assistant turn "
            "before it (or answers one twice)"
        )
    del calls[call_id]
    texts: list[str] = []
    content = block.get("content")
    for inner, part in _blocks("" if content is None else content, f"{where}.content"):
        if part.get("type") == "image":
            moved.append(_image(part, inner))
            texts.append(_MOVED_IMAGE)
        else:
            texts.append(_text(part, inner, "a tool_result"))
    text = _JOIN.join(texts)
    is_error = block.get("is_error") or False
    if not isinstance(is_error, bool):
        raise BadRequest(f"{where}.is_error: expected a boolean, got {json_type(is_error)}")
    if is_error:
        text = "Error: " + text
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _text(block: Mapping[str, Any], where: str, context: str) -> str:
    """A text block's text, or a plain-text document's."""
    kind = block.get("type")
    if kind == "text":
        return string(block.get("text"), f"{where}.text")
    if kind == "document":
        source = obj(block.get("source"), f"{where}.source")
        if source.get("type") == "text":
            return string(source.get("data"), f"{where}.source.data")
        if source.get("type") == "content":
            return _text_of(_blocks(source.get("content"), f"{where}.source.content"), context)
        raise BadRequest(
            f"{where}.source: a {show(source.get('type'))} document cannot be sent to a chat "
            "completions server, only plain text ones"
        )
    raise _unsupported(kind, where, context)


def _text_of(blocks: list[Block], context: str) -> str:
    texts = [_text(block, where, context) for where, block in blocks]
    return _JOIN.join(_CCH.sub("cch=00000;", t, 1) if t.startswith(_BILLING) else t for t in texts)


def _image(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    source = obj(block.get("source"), f"{where}.source")
    kind = source.get("type")
    if kind == "base64":
        media = string(source.get("media_type"), f"{where}.source.media_type")
        data = string(source.get("data"), f"{where}.source.data")
        url = f"data:{media};base64,{data}"
    elif kind == "url":
        url = string(source.get("url"), f"{where}.source.url")
    else:
        raise BadRequest(
            f"{where}.source: an image from a {show(kind)} source cannot be sent to a chat "
            "completions server; send it as base64 or a URL"
        )
    return {"type": "image_url", "image_url": {"url": url}}


def _unsupported(kind: Any, where: str, context: str) -> BadRequest:
    if isinstance(kind, str) and kind in _BLOCK_TYPES:
        return BadRequest(f"{where}: {kind} blocks cannot be translated in {context}")
    return BadRequest(f"{where}: unknown block type {show(kind)}")


def _tools(body: Mapping[str, Any], chat: dict[str, Any]) -> None:
    tools = []
    for i, tool in enumerate(array(body["tools"], "tools")):
        where = f"tools[{i}]"
        tool = obj(tool, where)
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise BadRequest(
                f"{where}: {show(kind)} is one of Anthropic's own tools; a chat completions "
                "server runs only custom tools (name, description, input_schema)"
            )
        function = {"name": string(tool.get("name"), f"{where}.name")}
        if "description" in tool:
            function["description"] = string(tool["description"], f"{where}.description")
        function["parameters"] = obj(tool.get("input_schema"), f"{where}.input_schema")
        tools.append({"type": "function", "function": function})
    if not tools:
        return
    chat["tools"] = tools
    if "tool_choice" not in body:
        return
    choice = obj(body["tool_choice"], "tool_choice")
    kind = choice.get("type")
    if kind == "tool":
        name = string(choice.get("name"), "tool_choice.name")
        chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    elif isinstance(kind, str) and kind in _TOOL_CHOICES:
        chat["tool_choice"] = _TOOL_CHOICES[kind]
    else:
        raise BadRequest(
            f"tool_choice.type: expected 'auto', 'any', 'tool' or 'none', got {show(kind)}"
        )
    if choice.get("disable_parallel_tool_use") is True:
        chat["parallel_tool_calls"] = False


def _thinking(thinking: Mapping[str, Any], chat: dict[str, Any]) -> None:
    kind = thinking.get("type")
    if not isinstance(kind, str) or kind not in _THINKING:
        raise BadRequest(
            f"thinking.type: expected 'enabled', 'adaptive' or 'disabled', got {show(kind)}"
        )
    chat["chat_template_kwargs"] = {"enable_thinking": _THINKING[kind]}
    if kind == "enabled":
        budget = integer(thinking.get("budget_tokens"), "thinking.budget_tokens")
        chat["thinking_budget_tokens"] = budget


def _output_config(config: Mapping[str, Any], chat: dict[str, Any]) -> None:
    if config.get("effort") is not None:
        chat["reasoning_effort"] = string(config["effort"], "output_config.effort")
    if config.get("format") is not None:
        output = obj(config["format"], "output_config.format")
        kind = output.get("type")
        if kind != "json_schema":
            raise BadRequest(f"output_config.format.type: expected 'json_schema', got {show(kind)}")
        schema = obj(output.get("schema"), "output_config.format.schema")
        json_schema = {"name": "output", "schema": schema}
        chat["response_format"] = {"type": "json_schema", "json_schema": json_schema}
