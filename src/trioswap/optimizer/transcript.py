"""A request's transcript, the same way for chat completions, Anthropic Messages and Responses.

The optimizer never rewrites a body through a model of its own: it reads each entry of the
transcript list (`messages`, or Responses' `input`) for what it needs — its role, the tool calls
it makes and answers, the texts it holds and where they are — and edits an entry only by copying
it along the path to one text. Every other field, of the body and of the entry, survives as the
client sent it.

Units are the pieces the optimizer keeps or drops whole: an assistant turn (all its consecutive
items: reasoning, text, tool calls) with every result of its calls, or a user turn. A result that
answers a call of an earlier unit merges everything in between into one unit, so a dropped unit
never leaves a call without its result or a result without its call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Family = Literal["chat", "anthropic", "responses"]
Slot = tuple[str | int, ...]

# Keys whose values the model never reads as text: ids, types, cache hints, signatures.
_NOT_TEXT = frozenset(
    {
        "type",
        "id",
        "call_id",
        "tool_call_id",
        "tool_use_id",
        "role",
        "cache_control",
        "signature",
        "status",
        "encrypted_content",
        "citations",
        "is_error",
    }
)
# An image is counted as this many tokens (more than llama.cpp's mtmd projectors give a
# 768x768 image); its base64 data is not text the model reads.
IMAGE_TOKENS = 1024
_IMAGE_TYPES = frozenset({"image", "image_url", "input_image", "document", "input_file"})
_CALL_TYPES = frozenset(
    {"function_call", "custom_tool_call", "local_shell_call", "computer_call", "mcp_call"}
)
_OUTPUT_TYPES = frozenset(
    {
        "function_call_output",
        "custom_tool_call_output",
        "local_shell_call_output",
        "computer_call_output",
    }
)


@dataclass(frozen=True, slots=True)
class Call:
    id: str
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class TextRef:
    """One editable text of an entry: where it is, and whether it is a tool's output."""

    slot: Slot
    text: str
    output_of: str | None = None  # the call id whose result this text is


@dataclass(slots=True)
class Entry:
    index: int
    role: str  # "system", "user", "assistant", "tool"
    calls: tuple[Call, ...]
    answers: tuple[str, ...]  # call ids whose results it carries
    # A user turn with the user's own words (not only tool results).
    user_words: bool
    texts: list[TextRef] = field(default_factory=list)


@dataclass(slots=True)
class Unit:
    first: int  # index of its first entry
    last: int  # index of its last entry (inclusive)
    role: str  # the role of its first entry

    @property
    def indices(self) -> range:
        return range(self.first, self.last + 1)


class Transcript:
    """A body's transcript list and what the optimizer needs to know of each entry."""

    def __init__(self, body: Mapping[str, Any], family: Family) -> None:
        self.body = body
        self.family = family
        key = "input" if family == "responses" else "messages"
        raw = body.get(key)
        self.key = key
        self.items: list[Any] = raw if isinstance(raw, list) else []
        self.entries = [describe(family, i, item) for i, item in enumerate(self.items)]
        self.units = units_of(self.entries)

    def fixed(self) -> list[Any]:
        """What the model sees besides the transcript, never edited: system prompt,
        instructions, tool definitions."""
        keys = ("system", "tools") if self.family == "anthropic" else ("instructions", "tools")
        if self.family == "chat":
            keys = ("tools",)
        return [self.body[k] for k in keys if k in self.body]

    def with_items(self, items: list[Any]) -> dict[str, Any]:
        return {**self.body, self.key: items}

    def calls_by_id(self) -> dict[str, Call]:
        return {call.id: call for entry in self.entries for call in entry.calls}


def describe(family: Family, index: int, item: Any) -> Entry:
    if not isinstance(item, Mapping):
        # Not an entry any API has: kept as it is, for the server to refuse.
        return Entry(index, "user", (), (), False)
    if family == "chat":
        return _chat_entry(index, item)
    if family == "anthropic":
        return _anthropic_entry(index, item)
    return _responses_entry(index, item)


def units_of(entries: Sequence[Entry]) -> list[Unit]:
    units: list[Unit] = []
    opened_in: dict[str, int] = {}  # call id → the unit that made the call
    previous_role = ""
    for entry in entries:
        pending = [opened_in[a] for a in entry.answers if a in opened_in]
        starts = (
            not units
            or entry.role == "system"
            or previous_role == "system"
            or (entry.role == "user" and not entry.answers)
            or (entry.role == "assistant" and previous_role != "assistant")
        )
        if starts:
            units.append(Unit(entry.index, entry.index, entry.role))
        else:
            units[-1].last = entry.index
        if pending and min(pending) < len(units) - 1:
            # A result answering an earlier unit's call: everything from that unit on is one.
            merged = units[min(pending)]
            merged.last = entry.index
            del units[min(pending) + 1 :]
            for call_id, owner in opened_in.items():
                if owner > min(pending):
                    opened_in[call_id] = min(pending)
        for call in entry.calls:
            opened_in[call.id] = len(units) - 1
        previous_role = entry.role
    return units


def strings(value: Any, out: list[str]) -> int:
    """Append the texts the model reads in `value` to `out`; return how many images it holds."""
    images = 0
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, Mapping):
        kind = value.get("type")
        if kind in _IMAGE_TYPES or "image_url" in value:
            return 1
        for key, inner in value.items():
            if key not in _NOT_TEXT:
                images += strings(inner, out)
    elif isinstance(value, list):
        for inner in value:
            images += strings(inner, out)
    return images


def texts_of(body: Mapping[str, Any], family: Family) -> list[str]:
    """Every text of `body` the optimizer counts (as `core` counts them)."""
    transcript = Transcript(body, family)
    texts: list[str] = []
    strings(transcript.items, texts)
    for value in transcript.fixed():
        texts.append(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    return texts


def with_text(item: Any, slot: Slot, text: str) -> Any:
    """A copy of `item` with the text at `slot` replaced; only the containers on the way are
    copied."""
    if not slot:
        return text
    head, rest = slot[0], slot[1:]
    if isinstance(item, list):
        copy = list(item)
        copy[head] = with_text(item[head], rest, text)  # type: ignore[index]
        return copy
    return {**item, head: with_text(item[head], rest, text)}


def with_note(family: Family, item: Any, note: str) -> Any:
    """`item` (a user message) with `note` added after its own content, which stays as it was."""
    key = "content"
    if not isinstance(item, Mapping):
        return item
    content = item.get(key)
    if isinstance(content, str):
        return {**item, key: f"{content}\n\n{note}"}
    if isinstance(content, list):
        kind = "input_text" if family == "responses" else "text"
        return {**item, key: [*content, {"type": kind, "text": note}]}
    return item


def arguments_of(raw: Any) -> Mapping[str, Any]:
    if isinstance(raw, Mapping):
        return raw
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, Mapping) else {}
    return {}


def _content_texts(content: Any, base: Slot, output_of: str | None = None) -> Iterator[TextRef]:
    if isinstance(content, str):
        yield TextRef(base, content, output_of)
    elif isinstance(content, list):
        for i, part in enumerate(content):
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                yield TextRef((*base, i, "text"), part["text"], output_of)


def _chat_entry(index: int, item: Mapping[str, Any]) -> Entry:
    role = str(item.get("role", "user"))
    role = "system" if role == "developer" else role
    if role == "function":
        role = "tool"
    calls: list[Call] = []
    for call in item.get("tool_calls") or ():
        if isinstance(call, Mapping):
            function = call.get("function")
            function = function if isinstance(function, Mapping) else {}
            calls.append(
                Call(
                    str(call.get("id", "")),
                    str(function.get("name", "")),
                    arguments_of(function.get("arguments")),
                )
            )
    answers: tuple[str, ...] = ()
    if role == "tool" and item.get("tool_call_id") is not None:
        answers = (str(item["tool_call_id"]),)
    output_of = answers[0] if answers else None
    texts = list(_content_texts(item.get("content"), ("content",), output_of))
    return Entry(index, role, tuple(calls), answers, role == "user", texts)


def _anthropic_entry(index: int, item: Mapping[str, Any]) -> Entry:
    role = str(item.get("role", "user"))
    content = item.get("content")
    if isinstance(content, str):
        return Entry(index, role, (), (), role == "user", [TextRef(("content",), content)])
    calls: list[Call] = []
    answers: list[str] = []
    texts: list[TextRef] = []
    words = False
    for i, block in enumerate(content if isinstance(content, list) else ()):
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind in ("tool_use", "server_tool_use"):
            calls.append(
                Call(
                    str(block.get("id", "")),
                    str(block.get("name", "")),
                    arguments_of(block.get("input")),
                )
            )
        elif kind == "tool_result":
            call_id = str(block.get("tool_use_id", ""))
            answers.append(call_id)
            texts.extend(_content_texts(block.get("content"), ("content", i, "content"), call_id))
        elif kind == "text":
            words = True
            if isinstance(block.get("text"), str):
                texts.append(TextRef(("content", i, "text"), block["text"]))
        elif kind in _IMAGE_TYPES:
            words = True
    return Entry(index, role, tuple(calls), tuple(answers), role == "user" and words, texts)


def _responses_entry(index: int, item: Mapping[str, Any]) -> Entry:
    kind = item.get("type", "message")
    if kind == "message":
        role = str(item.get("role", "user"))
        role = "system" if role == "developer" else role
        texts = list(_content_texts(item.get("content"), ("content",)))
        return Entry(index, role, (), (), role == "user", texts)
    if kind in _CALL_TYPES:
        name = str(item.get("name", kind))
        raw = item.get("arguments", item.get("input", item.get("action")))
        call = Call(str(item.get("call_id", item.get("id", ""))), name, arguments_of(raw))
        return Entry(index, "assistant", (call,), (), False)
    if kind in _OUTPUT_TYPES:
        call_id = str(item.get("call_id", ""))
        texts = list(_content_texts(item.get("output"), ("output",), call_id))
        return Entry(index, "tool", (), (call_id,), False, texts)
    # reasoning, item_reference and the like: part of the assistant's turn.
    return Entry(index, "assistant", (), (), False)
