"""What the responder answers, whichever API asks: one plan of reasoning, text and tool calls,
read from the knobs in the request's current turn, and the token counts every API reports.

A token is a whitespace-separated word, both in prompts and in generated text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from trioswap.responder.wire import JSON, RequestError

KNOBS = """\
replies: every API family (chat completions, Anthropic Messages, Responses) answers the same plan,
read from the user text of the current turn (the user messages after the last assistant message):
  [[reasoning: TEXT]]   reason first: chat `reasoning_content` (like llama-server's
                        --reasoning-format deepseek), an Anthropic `thinking` block, a Responses
                        `reasoning` item with a summary
  [[text: TEXT]]        answer TEXT instead of --response-text; [[text:]] answers no text
  [[tool:NAME {JSON}]]  then call tool NAME with these arguments (an object, default {}); several
                        markers make parallel calls, and the reply stops for tool calls
Tool results in the current turn (chat `tool` messages, Anthropic `tool_result` blocks, Responses
`*_call_output` items) are acknowledged first: "got tool result: RESULT."
Tokens are whitespace-separated words: usage, /v1/messages/count_tokens, /tokenize and
/apply-template all count them the same way. max_tokens (max_completion_tokens,
max_output_tokens) cuts reasoning and text short and then makes no tool calls.
GET /debug/requests lists the requests received; GET /debug/last maps each path to the last
body it received (parsed when it is JSON).
"""

_MARKER = re.compile(r"\[\[(tool|reasoning|text):")
_TOOL_NAME = re.compile(r"\s*([\w.-]+)\s*")
_CLOSE = re.compile(r"\s*\]\]")
_decode_json = json.JSONDecoder().raw_decode
# What a prompt's text is made of: message content, content-part text and tool output.
_TEXT_KEYS = ("content", "text", "output")


def split_words(text: str) -> list[str]:
    """Split into word chunks, each carrying its leading whitespace like real tokens do,
    so that joining the chunks gives back the exact text."""
    chunks = re.findall(r"\s*\S+", text)
    if not chunks:
        return [text] if text else []
    chunks[-1] += text[len("".join(chunks)) :]
    return chunks


def prompt_text(value: object) -> str:
    """The text a prompt gives the model, one part per line: a string, a list, or a message or
    content part (its content, text or tool output)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(text for item in value if (text := prompt_text(item)))
    if isinstance(value, dict):
        return "\n".join(text for key in _TEXT_KEYS if (text := prompt_text(value.get(key))))
    return ""


def count_tokens(*values: object) -> int:
    return sum(len(prompt_text(value).split()) for value in values)


def plain_text(content: object) -> str:
    """What a user wrote: a string, or the text parts of a content list (not the tool results
    in it, so that a tool echoing a knob cannot trigger it again)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def current_turn(items: object, by_assistant: Callable[[JSON], bool]) -> list[JSON]:
    """The items after the last one the assistant produced: what this reply answers."""
    if not isinstance(items, list):
        return []
    start = 0
    for index, item in enumerate(items):
        if isinstance(item, dict) and by_assistant(item):
            start = index + 1
    return [item for item in items[start:] if isinstance(item, dict)]


@dataclass(frozen=True)
class Meta:
    """What an answer says besides the reply: the model, when, who, and fresh ids."""

    model: str
    created: int
    info: JSON  # the responder's own `responder` field
    new_id: Callable[[str], str]


@dataclass(frozen=True)
class Turn:
    """The user text and the tool results that this reply answers."""

    text: str
    tool_results: Sequence[str] = ()


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as a model writes it
    pieces: Sequence[str]  # how it streams


@dataclass(frozen=True)
class Reply:
    reasoning: Sequence[str]
    text: Sequence[str]
    tool_calls: Sequence[ToolCall]
    truncated: bool
    prompt_tokens: int

    @property
    def output_tokens(self) -> int:
        return (
            len(self.reasoning) + len(self.text) + sum(len(call.pieces) for call in self.tool_calls)
        )


def plan(turn: Turn, default: Sequence[str], prompt_tokens: int, max_tokens: int | None) -> Reply:
    """The reply to `turn`; `default` is --response-text in word pieces."""
    reasoning: Sequence[str] = ()
    text = default
    calls: list[ToolCall] = []
    if "[[" in turn.text or turn.tool_results:
        thought, answer, calls = read_knobs(turn.text)
        reasoning = split_words(thought or "")
        said = [f"got tool result: {result}." for result in turn.tool_results]
        said.append("".join(default) if answer is None else answer)
        text = split_words(" ".join(part for part in said if part))
    reply = Reply(reasoning, text, calls, False, prompt_tokens)
    if max_tokens is None or reply.output_tokens <= max_tokens:
        return reply
    # A model cut short stops mid-thought and never gets to its tool calls.
    reasoning = reasoning[:max_tokens]
    text = text[: max_tokens - len(reasoning)]
    return Reply(reasoning, text, (), True, prompt_tokens)


def read_knobs(text: str) -> tuple[str | None, str | None, list[ToolCall]]:
    """The [[reasoning: …]] and [[text: …]] values (the last of each wins) and the tool calls."""
    reasoning = answer = None
    calls = []
    position = 0
    while match := _MARKER.search(text, position):
        kind = match[1]
        if kind == "tool":
            call, position = read_tool_call(text, match.end())
            calls.append(call)
            continue
        end = text.find("]]", match.end())
        if end < 0:
            raise RequestError(400, f"[[{kind}: …]] is missing its closing ]]")
        value = text[match.end() : end].strip()
        position = end + 2
        if kind == "reasoning":
            reasoning = value
        else:
            answer = value
    return reasoning, answer, calls


def read_tool_call(text: str, start: int) -> tuple[ToolCall, int]:
    name_match = _TOOL_NAME.match(text, start)
    if name_match is None:
        raise RequestError(400, "[[tool:NAME {…}]] needs a tool name after 'tool:'")
    name = name_match[1]
    position = name_match.end()
    arguments = "{}"
    if text.startswith("{", position):
        try:
            _, end = _decode_json(text, position)
        except ValueError as exc:
            message = f"[[tool:{name} …]]: the arguments are not JSON: {exc}"
            raise RequestError(400, message) from None
        arguments = text[position:end]
        position = end
    close = _CLOSE.match(text, position)
    if close is None:
        seen = text[start : position + 20]
        raise RequestError(400, f"[[tool:{name} …]] takes one JSON object, then ]]: {seen!r}")
    return ToolCall(name, arguments, split_words(arguments)), close.end()
