"""A Responses conversation (`instructions`, then `input`) as chat messages.

- `instructions` and the system and developer messages before the first other message make one
  system message (many chat templates take a single system message, and only first); a later
  system or developer message stays a system message where it is.
- `function_call` and `custom_tool_call` items become tool calls of one assistant message: of the
  assistant message just before them, or of a new one; calls in a row are one message (parallel
  calls). Their outputs become tool messages right after that message, wherever in `input` they
  came. Images an output holds follow its tool messages as a user message: chat tool messages
  carry text only.
- `reasoning` items become the `reasoning_content` of the assistant message that follows them
  (llama-server and vLLM give it to templates that render earlier reasoning); reasoning no
  assistant message follows is dropped, and so is encrypted content, which only OpenAI can read.
- Items recording what OpenAI's hosted tools did (`web_search_call`, ...) are dropped: the model's
  messages about it stay.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from trioswap.protocols.responses_chat.checks import (
    STATELESS,
    array,
    fail,
    kind_of,
    obj,
    show,
    string,
)
from trioswap.protocols.responses_chat.output import Json

HOSTED_CALLS = frozenset(
    {
        "web_search_call",
        "file_search_call",
        "code_interpreter_call",
        "image_generation_call",
        "mcp_call",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
    }
)
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_TEXT_PARTS = frozenset({"input_text", "output_text"})
_DETAILS = frozenset({"low", "high", "auto"})


def _reasoning_text(item: Mapping[str, Any]) -> str:
    """The raw reasoning an item holds, else its summary."""
    for key in ("content", "summary"):
        parts = item.get(key)
        if isinstance(parts, list):
            texts = [
                part["text"]
                for part in parts
                if isinstance(part, Mapping) and isinstance(part.get("text"), str) and part["text"]
            ]
            if texts:
                return "\n\n".join(texts)
    return ""


class Conversation:
    """Chat messages, built item by item."""

    __slots__ = ("_images", "_leading", "_messages", "_owners", "_reasoning", "_replies")

    def __init__(self) -> None:
        self._messages: list[Json] = []
        # By index of an assistant message with tool calls: the tool messages answering them,
        # and the images those answers held.
        self._replies: dict[int, list[Json]] = {}
        self._images: dict[int, list[Json]] = {}
        self._owners: dict[str, int] = {}  # call id → its assistant message
        self._reasoning: list[str] = []  # for the next assistant message
        self._leading = True  # only system messages so far

    def messages(self) -> list[Json]:
        if not self._replies:
            return self._messages
        out: list[Json] = []
        for i, message in enumerate(self._messages):
            out.append(message)
            out.extend(self._replies.get(i, ()))
            images = self._images.get(i)
            if images:
                out.append({"role": "user", "content": images})
        return out

    def system(self, text: str) -> None:
        if self._leading and self._messages:
            self._messages[0]["content"] += "\n\n" + text
        else:
            self._messages.append({"role": "system", "content": text})

    def add(self, value: object) -> None:
        if value is None:
            return
        if isinstance(value, str):
            self._append({"role": "user", "content": value})
            return
        for i, item in enumerate(array(value, "input")):
            where = f"input[{i}]"
            kind = kind_of(obj(item, where), where)
            if kind is None or kind == "message":
                self._message(item, where)
            elif kind == "function_call":
                self._call(item, string(item.get("arguments"), f"{where}.arguments"), where)
            elif kind == "custom_tool_call":
                arguments = json.dumps({"input": string(item.get("input"), f"{where}.input")})
                self._call(item, arguments, where)
            elif kind in ("function_call_output", "custom_tool_call_output"):
                self._output(item, where)
            elif kind == "reasoning":
                text = _reasoning_text(item)
                if text:
                    self._reasoning.append(text)
            elif kind == "item_reference":
                fail(where, f"{STATELESS}, so it has no item to refer to: send the item itself")
            elif kind not in HOSTED_CALLS:
                fail(
                    where,
                    f"item type {show(kind)} cannot be translated to chat completions: "
                    "trioswap translates messages, function and custom tool calls and their "
                    "outputs, and reasoning",
                )

    def _append(self, message: Json) -> None:
        self._messages.append(message)
        self._leading = False
        self._reasoning.clear()

    def _message(self, item: Mapping[str, Any], where: str) -> None:
        given = item.get("role")
        role = _ROLES.get(given) if isinstance(given, str) else None
        if role is None:
            fail(
                f"{where}.role",
                f"expected user, assistant, system or developer, got {show(given)}",
            )
        content = _content(item.get("content"), role, f"{where}.content")
        if role == "system":
            assert isinstance(content, str)
            self.system(content)
        elif role == "assistant":
            message = {"role": "assistant", "content": content}
            self._take_reasoning(message)
            self._append(message)
        else:
            self._append({"role": "user", "content": content})

    def _take_reasoning(self, message: Json) -> None:
        if self._reasoning:
            text = "\n\n".join(self._reasoning)
            self._reasoning.clear()
            earlier = message.get("reasoning_content")
            message["reasoning_content"] = f"{earlier}\n\n{text}" if earlier else text

    def _call(self, item: Mapping[str, Any], arguments: str, where: str) -> None:
        call_id = string(item.get("call_id"), f"{where}.call_id")
        name = string(item.get("name"), f"{where}.name")
        index = len(self._messages) - 1
        if index < 0 or self._messages[index]["role"] != "assistant" or index in self._replies:
            self._messages.append({"role": "assistant", "content": None})
            self._leading = False
            index += 1
        message = self._messages[index]
        self._take_reasoning(message)
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        message.setdefault("tool_calls", []).append(call)
        self._owners[call_id] = index

    def _output(self, item: Mapping[str, Any], where: str) -> None:
        call_id = string(item.get("call_id"), f"{where}.call_id")
        owner = self._owners.get(call_id)
        if owner is None:
            fail(
                f"{where}.call_id",
                f"{show(call_id)} answers no call earlier in input; {STATELESS}, so send the "
                "call along with its output: the whole conversation",
            )
        output = item.get("output")
        images: list[Json] = []
        if isinstance(output, str):
            text = output
        elif isinstance(output, Mapping) and isinstance(output.get("content"), str):
            text = output["content"]  # older Codex sends a failed call's output as this object
        else:
            texts = []
            for j, part in enumerate(array(output, f"{where}.output")):
                at = f"{where}.output[{j}]"
                kind = kind_of(obj(part, at), at)
                if kind in _TEXT_PARTS:
                    texts.append(string(part.get("text"), f"{at}.text"))
                elif kind == "input_image":
                    images.append(_image(part, at))
                else:
                    fail(
                        at,
                        f"a tool output part of type {show(kind)} cannot be translated: "
                        "send text or images",
                    )
            text = "\n".join(texts)
        self._replies.setdefault(owner, []).append(
            {"role": "tool", "tool_call_id": call_id, "content": text}
        )
        if images:
            self._images.setdefault(owner, []).extend(images)


def _content(value: object, role: str, where: str) -> str | list[Json]:
    """A message's content: text as one string (parts joined by newlines, as vLLM joins them),
    or the parts when a user message holds images."""
    if isinstance(value, str):
        return value
    parts: list[Json] = []
    media = False
    for j, part in enumerate(array(value, where)):
        at = f"{where}[{j}]"
        kind = kind_of(obj(part, at), at)
        if kind in _TEXT_PARTS:
            parts.append({"type": "text", "text": string(part.get("text"), f"{at}.text")})
        elif kind == "refusal" and role == "assistant":
            parts.append({"type": "text", "text": string(part.get("refusal"), f"{at}.refusal")})
        elif kind == "input_image" and role == "user":
            parts.append(_image(part, at))
            media = True
        elif kind == "input_file":
            fail(
                at,
                "chat completions on a local model server take no files: send the file's "
                "text as input_text, or an image as input_image",
            )
        else:
            fail(at, f"content of type {show(kind)} cannot be in a {role} message")
    return parts if media else "\n".join(part["text"] for part in parts)


def _image(part: Mapping[str, Any], where: str) -> Json:
    url = part.get("image_url")
    if url is None:
        if part.get("file_id") is not None:
            fail(
                where,
                "an image by file_id is in OpenAI's Files API, which a local model "
                "server does not have: send it as a data: URL in image_url",
            )
        fail(where, "an input_image needs image_url")
    image: Json = {"url": string(url, f"{where}.image_url")}
    detail = part.get("detail")
    if isinstance(detail, str) and detail in _DETAILS:
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}
