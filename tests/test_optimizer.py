"""The optimizer's pure core (`optimizer/core.py`), rule by rule, in the three API families:
what is kept verbatim, units never split, the order of elisions, drops and cuts, the prefix kept
stable between turns, the truncation modes, `always`'s pointers, the note and its summary, and
how tokens are counted.

The transcripts are written once as steps (`Step`, `ToolCall`) and rendered in each family by
`render`; `problems` checks what a server would refuse (a call without its result, a result
without its call, a transcript that does not start with the user's task)."""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from trioswap.optimizer.core import (
    Memory,
    Outcome,
    Settings,
    TooLong,
    dropped_turns,
    optimize,
    with_summary,
)
from trioswap.optimizer.summary import summary_message_text
from trioswap.optimizer.transcript import IMAGE_TOKENS, Family

FAMILIES: tuple[Family, ...] = ("chat", "anthropic", "responses")
CUT = re.compile(r"\[… trioswap: about \d+ tokens cut here to fit the context window …\]\n")
Body = dict[str, Any]


def count(text: str) -> int:
    return len(text) // 4 + 1


# ---------------------------------------------------------------------------------------------
# Transcripts, written once and rendered in each family


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: Mapping[str, Any]
    output: str
    is_error: bool = False


@dataclass(frozen=True)
class Step:
    """A user turn (`text`), or an assistant turn: thinking, text, then parallel tool calls,
    whose results follow right after it (`late`: the last result after a message "Waiting.")."""

    role: str
    text: str = ""
    calls: tuple[ToolCall, ...] = ()
    thinking: str = ""
    late: bool = False


def user(text: str) -> Step:
    return Step("user", text)


def assistant(text: str = "", *calls: ToolCall, thinking: str = "", late: bool = False) -> Step:
    return Step("assistant", text, calls, thinking, late)


def call(id: str, output: str, name: str = "bash", **arguments: Any) -> ToolCall:
    return ToolCall(id, name, arguments or {"command": f"run {id}"}, output)


WAITING = "Waiting."


def render(
    family: Family,
    steps: Sequence[Step],
    system: str | None = "You are a coding agent.",
    merge: bool = False,
) -> Body:
    """A request body of `family` holding `steps`; the model's name and `max_tokens`/`stream`
    besides, as clients send them. `merge`: Anthropic user words right after tool results go
    in the results' message, as Claude Code sends them."""
    body: Body = {"model": "m", "stream": True}
    if family == "chat":
        items = [{"role": "system", "content": system}] if system is not None else []
        items += [item for step in steps for item in _chat(step)]
        return {**body, "messages": items}
    if family == "anthropic":
        if system is not None:
            body["system"] = system
        return {**body, "max_tokens": 1024, "messages": _anthropic_items(steps, merge)}
    if system is not None:
        body["instructions"] = system
    return {**body, "input": [item for step in steps for item in _responses(step)]}


def _split(step: Step) -> tuple[tuple[ToolCall, ...], tuple[ToolCall, ...]]:
    """The calls whose results come right after the turn, and the one that comes late."""
    return (step.calls[:-1], step.calls[-1:]) if step.late else (step.calls, ())


def _chat(step: Step) -> list[Body]:
    if step.role == "user":
        return [{"role": "user", "content": step.text}]
    message: Body = {"role": "assistant", "content": step.text or None}
    if step.thinking:
        message["reasoning_content"] = step.thinking
    if step.calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in step.calls
        ]
    now, late = _split(step)
    items = [message, *map(_chat_result, now)]
    if late:
        items += [{"role": "assistant", "content": WAITING}, *map(_chat_result, late)]
    return items


def _chat_result(c: ToolCall) -> Body:
    return {"role": "tool", "tool_call_id": c.id, "name": c.name, "content": c.output}


def _anthropic_items(steps: Sequence[Step], merge: bool) -> list[Body]:
    items: list[Body] = []
    for step in steps:
        if step.role == "user":
            last = items[-1] if items else {}
            if merge and last.get("role") == "user" and isinstance(last["content"], list):
                last["content"].append({"type": "text", "text": step.text})
            else:
                items.append({"role": "user", "content": step.text})
            continue
        blocks: list[Body] = []
        if step.thinking:
            blocks.append({"type": "thinking", "thinking": step.thinking, "signature": "c2ln"})
        if step.text:
            blocks.append({"type": "text", "text": step.text})
        blocks += [
            {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
            for c in step.calls
        ]
        items.append({"role": "assistant", "content": blocks})
        now, late = _split(step)
        if now:
            items.append({"role": "user", "content": [_tool_result(c) for c in now]})
        if late:
            items.append({"role": "assistant", "content": [{"type": "text", "text": WAITING}]})
            items.append({"role": "user", "content": [_tool_result(c) for c in late]})
    return items


def _tool_result(c: ToolCall) -> Body:
    block: Body = {"type": "tool_result", "tool_use_id": c.id, "content": c.output}
    if c.is_error:
        block["is_error"] = True
    return block


def _responses(step: Step) -> list[Body]:
    if step.role == "user":
        return [
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": step.text}],
            }
        ]
    items: list[Body] = []
    if step.thinking:
        items.append(
            {
                "type": "reasoning",
                "id": f"rs_{len(step.thinking)}",
                "summary": [{"type": "summary_text", "text": step.thinking}],
                "encrypted_content": "ZW5j",
            }
        )
    if step.text:
        items.append(_responses_text(step.text))
    items += [
        {
            "type": "function_call",
            "call_id": c.id,
            "name": c.name,
            "arguments": json.dumps(c.arguments),
        }
        for c in step.calls
    ]
    now, late = _split(step)
    items += map(_responses_result, now)
    if late:
        items += [_responses_text(WAITING), *map(_responses_result, late)]
    return items


def _responses_text(text: str) -> Body:
    return {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text}],
    }


def _responses_result(c: ToolCall) -> Body:
    return {"type": "function_call_output", "call_id": c.id, "output": c.output}


# ---------------------------------------------------------------------------------------------
# What a server would refuse


@dataclass(frozen=True)
class Item:
    """One transcript entry as a server reads it."""

    role: str  # "system", "user" (the user's own words), "assistant", "results"
    words: str
    calls: tuple[str, ...] = ()
    results: tuple[str, ...] = ()


def items_of(body: Mapping[str, Any], family: Family) -> list[Item]:
    raw = body["input" if family == "responses" else "messages"]
    return [_item(family, entry) for entry in raw]


def _texts(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content or () if isinstance(part.get("text"), str))


def _item(family: Family, entry: Mapping[str, Any]) -> Item:
    role = entry.get("role")
    if family == "chat":
        if role in ("system", "developer"):
            return Item("system", "")
        if role == "tool":
            return Item("results", "", results=(entry["tool_call_id"],))
        if role == "assistant":
            calls = tuple(c["id"] for c in entry.get("tool_calls") or ())
            return Item("assistant", "", calls)
        return Item("user", _texts(entry["content"]))
    if family == "anthropic":
        content = entry["content"]
        if isinstance(content, str):
            return Item(role, content if role == "user" else "")
        calls = tuple(b["id"] for b in content if b["type"] == "tool_use")
        results = tuple(b["tool_use_id"] for b in content if b["type"] == "tool_result")
        words = _texts([b for b in content if b["type"] == "text"])
        if role == "assistant":
            return Item("assistant", "", calls)
        return Item("user" if words or not results else "results", words, results=results)
    kind = entry.get("type", "message")
    if kind == "function_call":
        return Item("assistant", "", (entry["call_id"],))
    if kind == "function_call_output":
        return Item("results", "", results=(entry["call_id"],))
    if kind == "message" and role in ("system", "developer"):
        return Item("system", "")
    if kind == "message" and role == "user":
        return Item("user", _texts(entry["content"]))
    return Item("assistant", "")


def problems(body: Mapping[str, Any], family: Family, strict: bool = True) -> list[str]:
    """What is wrong with `body`'s transcript: calls and results unpaired or (`strict`) apart, a
    first entry that is not the user's."""
    found: list[str] = []
    items = items_of(body, family)
    called: dict[str, int] = {}
    answered: dict[str, int] = {}
    for position, item in enumerate(items):
        for id in item.calls:
            if id in called:
                found.append(f"call {id} made twice")
            called[id] = position
        for id in item.results:
            if id not in called:
                found.append(f"result {id} at {position} without its call before it")
            elif id in answered:
                found.append(f"call {id} answered twice")
            answered[id] = position
    found += [f"call {id} without its result" for id in called.keys() - answered.keys()]
    if strict:
        for id, at in answered.items():
            between = items[called.get(id, at) + 1 : at]
            if any(i.role == "user" or (i.role == "assistant" and not i.calls) for i in between):
                found.append(f"call {id} and its result apart")
    first = next((i for i in items if i.role != "system"), None)
    if first is None or first.role != "user":
        found.append(f"the first entry after the system prompt is {first}")
    return found


def run(
    body: Mapping[str, Any],
    family: Family,
    budget: int,
    policy: str = "limit_only",
    truncation: str = "trim",
    memory: Memory | None = None,
    **settings: Any,
) -> Outcome:
    """`optimize`, checking that the body it was given is left as it was."""
    original = copy.deepcopy(body)
    outcome = optimize(
        body, family, Settings(policy, truncation, budget, **settings), count, memory
    )
    assert body == original
    assert outcome.after == optimize(outcome.body, family, Settings("off"), count).before
    assert outcome.over == (outcome.after > budget)
    return outcome


def output(lines: int, tag: str) -> str:
    """A tool output of `lines` distinct lines (about 6 tokens each)."""
    return "".join(f"{tag} line {i}: some output text\n" for i in range(lines))


def session(turns: int, lines: int = 100) -> list[Step]:
    """A task, then `turns` assistant turns each calling a tool, a user remark every third."""
    steps = [user("Fix the failing test in the parser module, then run the whole suite.")]
    for turn in range(turns):
        steps.append(assistant(f"Step {turn}.", call(f"call_{turn}", output(lines, f"o{turn}"))))
        if turn % 3 == 2:
            steps.append(user(f"Remark {turn}: keep going."))
    steps.append(assistant("All done."))
    return steps


def transcript(body: Mapping[str, Any], family: Family) -> list[Any]:
    return list(body["input" if family == "responses" else "messages"])


def kinds(outcome: Outcome) -> set[str]:
    return {action.kind for action in outcome.actions}


def texts(body: Mapping[str, Any], family: Family) -> str:
    return json.dumps(transcript(body, family), ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# off, and within the budget


@pytest.mark.parametrize("family", FAMILIES)
def test_off_gives_back_the_body_itself(family: Family) -> None:
    body = render(family, session(10))
    outcome = run(body, family, 100, "off")
    assert outcome.body is body
    assert outcome.actions == () and not outcome.changed and not outcome.trimmed
    assert outcome.over and outcome.before == outcome.after > 100


@pytest.mark.parametrize("truncation", ["trim", "sliding_window", "strict_error"])
@pytest.mark.parametrize("policy", ["limit_only", "always", "llm_assisted"])
@pytest.mark.parametrize("family", FAMILIES)
def test_within_the_budget_the_body_itself_goes_out(
    family: Family, policy: str, truncation: str
) -> None:
    body = render(family, session(10))
    budget = optimize(body, family, Settings("off"), count).before
    outcome = run(body, family, budget, policy, truncation, Memory())
    assert outcome.body is body
    assert outcome.actions == () and not outcome.over and not outcome.trimmed
    assert outcome.before == outcome.after == budget


TOOLS = {
    "chat": [
        {
            "type": "function",
            "function": {
                "name": "bash",
                "description": "Run a command.",
                "parameters": {"type": "object", "properties": {"command": {"type": "string"}}},
            },
        }
    ],
    "anthropic": [
        {
            "name": "bash",
            "description": "Run a command.",
            "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
            "cache_control": {"type": "ephemeral"},
        }
    ],
    "responses": [
        {
            "type": "function",
            "name": "bash",
            "description": "Run a command.",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}}},
        }
    ],
}


def with_extras(family: Family, body: Body) -> Body:
    """`body` with every other field a client may send, each of them filled."""
    extras: Body = {
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["\nUser:"],
        "tools": TOOLS[family],
        "tool_choice": "auto",
        "metadata": {"user_id": "u-1"},
        "x_unknown": {"nested": [1, "two", None]},
    }
    if family == "chat":
        extras["response_format"] = {"type": "json_object"}
    elif family == "anthropic":
        extras["system"] = [
            {"type": "text", "text": "You are a coding agent."},
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
        ]
        extras["tool_choice"] = {"type": "auto"}
        extras["thinking"] = {"type": "enabled", "budget_tokens": 2048}
    else:
        extras["instructions"] = "You are a coding agent. Be brief."
        extras["text"] = {"format": {"type": "json_object"}}
        extras["reasoning"] = {"effort": "low"}
    return {**body, **extras}


@pytest.mark.parametrize("policy", ["limit_only", "always", "llm_assisted"])
@pytest.mark.parametrize("truncation", ["trim", "sliding_window"])
@pytest.mark.parametrize("family", FAMILIES)
def test_only_the_transcript_changes(family: Family, policy: str, truncation: str) -> None:
    body = with_extras(family, render(family, session(12)))
    outcome = run(body, family, 1500, policy, truncation, Memory())
    assert outcome.trimmed and outcome.changed and not outcome.over
    key = "input" if family == "responses" else "messages"
    assert outcome.body.keys() == body.keys()
    for name, value in body.items():
        if name != key:
            assert outcome.body[name] is value, name
    assert outcome.body[key] != body[key]


# ---------------------------------------------------------------------------------------------
# Kept verbatim


def last_items(family: Family, steps: Sequence[Step], n: int) -> list[Any]:
    """The transcript entries of the last `n` steps."""
    whole = transcript(render(family, steps), family)
    return whole[len(transcript(render(family, steps[:-n]), family)) :]


def size(family: Family, steps: Sequence[Step]) -> int:
    return optimize(render(family, steps), family, Settings("off"), count).before


def task_text(body: Mapping[str, Any], family: Family) -> str:
    return next(i.words for i in items_of(body, family) if i.role == "user")


@pytest.mark.parametrize("family", FAMILIES)
def test_the_task_the_last_user_turn_and_the_newest_unit_are_kept_verbatim(
    family: Family,
) -> None:
    steps = session(21)
    steps[-1] = assistant("Here is the summary.", call("last", output(80, "newest")))
    task, last_user = steps[0], steps[-2]
    assert last_user.role == "user"
    protected = size(family, [task, last_user, steps[-1]])
    for budget in (3 * protected // 2, 2 * protected, 4 * protected):
        outcome = run(render(family, steps), family, budget)
        assert outcome.trimmed and not outcome.over
        assert task_text(outcome.body, family).startswith(task.text)
        sent = transcript(outcome.body, family)
        assert sent[-len(last_items(family, steps, 2)) :] == last_items(family, steps, 2)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_unit_before_a_newest_user_turn_is_kept_verbatim(family: Family) -> None:
    steps = [*session(20)[:-1], assistant("Ran it.", call("prev", output(80, "p"))), user("Next?")]
    protected = size(family, [steps[0], steps[-2], steps[-1]])
    outcome = run(render(family, steps), family, 2 * protected)
    assert outcome.trimmed and not outcome.over
    kept = last_items(family, steps, 2)
    assert transcript(outcome.body, family)[-len(kept) :] == kept


def test_chat_system_and_developer_messages_are_kept_verbatim() -> None:
    body = render("chat", session(20))
    developer = {"role": "developer", "content": "Prefer small diffs."}
    later = {"role": "system", "content": "The user switched to plan mode."}
    messages = body["messages"]
    body["messages"] = [messages[0], developer, *messages[1:20], later, *messages[20:]]
    outcome = run(body, "chat", 1500)
    assert outcome.trimmed and "dropped" in kinds(outcome)
    sent = outcome.body["messages"]
    assert sent[:2] == [messages[0], developer]
    assert later in sent


@pytest.mark.parametrize("family", FAMILIES)
def test_a_lone_huge_task_is_cut_in_its_middle_not_deleted(family: Family) -> None:
    task = "".join(f"Requirement {i}: the parser must accept input {i}.\n" for i in range(3000))
    body = render(family, [user(task)])
    outcome = run(body, family, 4000)
    assert outcome.trimmed and kinds(outcome) == {"cut"} and not outcome.over
    assert outcome.after <= 4000 * 0.7
    [sent] = [i.words for i in items_of(outcome.body, family) if i.role == "user"]
    head, tail = CUT.split(sent)
    assert task.startswith(head) and task.endswith(tail)
    assert len(head) > 200 and len(tail) > 200


# ---------------------------------------------------------------------------------------------
# Units never split


def tangled() -> list[Step]:
    """A session of parallel calls (three in a turn), results after an assistant message, user
    remarks, and outputs of every size."""
    steps = [user("Refactor the parser.")]
    for turn in range(8):
        parallel = [
            call(f"p{turn}_{i}", output(3 + 40 * ((turn + i) % 3), f"p{turn}_{i}"))
            for i in range(3)
        ]
        late = [call(f"l{turn}_{i}", output(5 + 30 * (turn % 2), f"l{turn}_{i}")) for i in "ab"]
        steps += [
            assistant(f"Turn {turn}.", *parallel),
            assistant("", *late, late=True),
            user(f"Remark {turn}."),
        ]
    return [*steps, assistant("Done.")]


@pytest.mark.parametrize("truncation", ["trim", "sliding_window"])
@pytest.mark.parametrize("family", FAMILIES)
def test_calls_and_results_are_never_parted(family: Family, truncation: str) -> None:
    body = render(family, tangled())
    assert problems(body, family, strict=False) == []
    assert problems(body, family) != []  # results after an assistant message
    whole = optimize(body, family, Settings("off"), count).before
    dropped = 0
    for budget in range(200, whole, 97):
        outcome = run(body, family, budget, truncation=truncation)
        assert problems(outcome.body, family, strict=False) == [], budget
        dropped += "dropped" in kinds(outcome)
    assert dropped > 10


# ---------------------------------------------------------------------------------------------
# Ids, names, reasoning, cache hints and images survive; elided outputs keep their ids

NOTE = re.compile(
    r"(\n\n)?\[trioswap: \d+ earlier transcript entries \(\d+ tokens\) after this message "
    r"were removed to fit the model's context window\]"
)
IMAGE = "data:image/png;base64,iVBORw0KGgo="
STUB = re.compile(
    r"\[trioswap: output of (\w+) elided to fit the context window: (\d+) tokens, "
    r"(\d+) characters\]"
)


def rich(family: Family) -> Body:
    """Images, reasoning, cache hints, named tool results and an error result, in a session
    whose outputs are large."""
    big = [output(120, f"big{i}") for i in range(4)]
    if family == "chat":
        messages: list[Body] = [
            {"role": "system", "content": "You are a coding agent."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this screenshot?"},
                    {"type": "image_url", "image_url": {"url": IMAGE}},
                ],
            },
        ]
        for i, text in enumerate(big):
            messages.append(
                {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": f"I should read file {i}.",
                    "tool_calls": [
                        {
                            "id": f"c{i}",
                            "type": "function",
                            "function": {"name": "read_file", "arguments": f'{{"path": "{i}"}}'},
                        }
                    ],
                }
            )
            messages.append(
                {"role": "tool", "tool_call_id": f"c{i}", "name": "read_file", "content": text}
            )
        messages += [
            {"role": "user", "content": "Thanks."},
            {"role": "assistant", "content": "Ok."},
        ]
        return {"model": "m", "messages": messages}
    if family == "anthropic":
        messages = [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": IMAGE},
                    },
                    {
                        "type": "text",
                        "text": "What is in this screenshot?",
                        "cache_control": {"type": "ephemeral"},
                    },
                ],
            }
        ]
        for i, text in enumerate(big):
            messages.append(
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": f"Read file {i}.", "signature": "c2ln"},
                        {"type": "redacted_thinking", "data": "cmVk"},
                        {"type": "tool_use", "id": f"t{i}", "name": "Read", "input": {"i": i}},
                    ],
                }
            )
            messages.append(
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": f"t{i}",
                            "is_error": i == 1,
                            "content": [
                                {"type": "text", "text": text},
                                {
                                    "type": "image",
                                    "source": {
                                        "type": "base64",
                                        "media_type": "image/png",
                                        "data": IMAGE,
                                    },
                                },
                            ],
                            "cache_control": {"type": "ephemeral"},
                        }
                    ],
                }
            )
        messages += [
            {"role": "user", "content": "Thanks."},
            {"role": "assistant", "content": "Ok."},
        ]
        return {"model": "m", "max_tokens": 100, "messages": messages}
    items: list[Body] = [
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is in this screenshot?"},
                {"type": "input_image", "image_url": IMAGE, "detail": "auto"},
            ],
        }
    ]
    for i, text in enumerate(big):
        items += [
            {
                "type": "reasoning",
                "id": f"rs_{i}",
                "summary": [{"type": "summary_text", "text": f"Read file {i}."}],
                "encrypted_content": "ZW5j",
            },
            {
                "type": "function_call",
                "id": f"fc_{i}",
                "call_id": f"call_{i}",
                "name": "shell",
                "arguments": json.dumps({"command": ["cat", f"{i}.py"]}),
            },
            {"type": "function_call_output", "call_id": f"call_{i}", "output": text},
        ]
    items += [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Thanks."}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Ok."}],
        },
    ]
    return {"model": "m", "input": items}


def without_note(item: Any) -> Any:
    """A user message without the note on removed entries appended to it."""
    content = item.get("content")
    if isinstance(content, list) and content and NOTE.fullmatch(content[-1].get("text", "")):
        return {**item, "content": content[:-1]}
    if isinstance(content, str):
        return {**item, "content": NOTE.sub("", content)}
    return item


def differences(old: Any, new: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Where `new` differs from `old`: the paths to the strings that changed (a change of any
    other kind is a path ending in "!")."""
    if isinstance(old, str) and isinstance(new, str):
        return [] if old == new else [path]
    if isinstance(old, dict) and isinstance(new, dict):
        if old.keys() != new.keys():
            return [(*path, "!")]
        return [d for k in old for d in differences(old[k], new[k], (*path, k))]
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [(*path, "!")]
        return [
            d
            for i, (o, n) in enumerate(zip(old, new, strict=True))
            for d in differences(o, n, (*path, i))
        ]
    return [] if old == new else [(*path, "!")]


def at(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


@pytest.mark.parametrize("family", FAMILIES)
def test_elided_outputs_keep_everything_but_their_text(family: Family) -> None:
    body = rich(family)
    names = {"chat": "read_file", "anthropic": "Read", "responses": "shell"}
    before = optimize(body, family, Settings("off"), count).before
    one = count(output(120, "big0"))
    outcome = run(body, family, before - 3 * one // 2, target=1.0)  # the two oldest outputs go
    assert kinds(outcome) == {"elided"} and len(outcome.actions) == 2
    changed = differences(transcript(body, family), transcript(outcome.body, family))
    assert len(changed) == 2
    for path in changed:
        old, new = at(transcript(body, family), path), at(transcript(outcome.body, family), path)
        stub = STUB.fullmatch(new)
        assert stub is not None, new
        assert stub.groups() == (names[family], str(count(old)), str(len(old)))


@pytest.mark.parametrize("family", FAMILIES)
def test_kept_entries_keep_their_ids_names_reasoning_cache_hints_and_images(
    family: Family,
) -> None:
    body = rich(family)
    sent = transcript(body, family)
    for budget in range(500, 4000, 250):
        outcome = run(body, family, budget)
        assert problems(outcome.body, family) == []
        for item in map(without_note, transcript(outcome.body, family)):
            # Each entry sent is one the client sent, its texts aside.
            assert any(
                all(p[-1] in ("content", "text", "output") for p in differences(original, item))
                for original in sent
            ), item


# ---------------------------------------------------------------------------------------------
# limit_only: elisions, then drops, then cuts, down to target x budget


def staged(last: str = "Continue.") -> list[Step]:
    return [
        user("Fix the parser."),
        assistant("Reading.", call("c0", output(100, "c0"))),
        assistant("Small.", call("c1", output(20, "c1"))),
        assistant("Again.", call("c2", output(100, "c2"))),
        assistant("More.", call("c3", output(100, "c3"))),
        user(last),
        assistant("Done."),
    ]


def elided(outcome: Outcome, family: Family) -> list[str]:
    """The ids of the calls whose outputs were elided, oldest first."""
    entries = transcript(outcome.body, family)
    return [
        id
        for entry, item in zip(entries, items_of(outcome.body, family), strict=True)
        if STUB.search(json.dumps(entry))
        for id in item.results
    ]


def called(body: Mapping[str, Any], family: Family) -> list[str]:
    return [id for item in items_of(body, family) for id in item.calls]


@pytest.mark.parametrize("family", FAMILIES)
def test_limit_only_elides_old_large_outputs_first_then_drops_then_cuts(family: Family) -> None:
    body = render(family, staged())
    before = optimize(body, family, Settings("off"), count).before
    big = count(output(100, "c0"))
    assert count(output(20, "c1")) < 256 < big

    def trim(goal: int, target: float, steps: list[Step] | None = None) -> Outcome:
        """A trim down to `goal` tokens (under 1, room in the budget for the note)."""
        budget = -(-goal * 4 // int(target * 4))
        outcome = run(render(family, steps or staged()), family, budget, target=target)
        assert outcome.trimmed and not outcome.over and problems(outcome.body, family) == []
        return outcome

    # The oldest large output first; the small one never.
    outcome = trim(before - big // 2, 1.0)
    assert kinds(outcome) == {"elided"} and elided(outcome, family) == ["c0"]
    outcome = trim(before - 5 * big // 2, 1.0)
    assert kinds(outcome) == {"elided"} and elided(outcome, family) == ["c0", "c2", "c3"]
    # Then the oldest units: the elisions in them are gone with them.
    all_elided = outcome.after
    outcome = trim(all_elided - 1, 0.75)
    assert kinds(outcome) == {"elided", "dropped", "noted"}
    assert called(outcome.body, family) == ["c1", "c2", "c3"]
    assert elided(outcome, family) == ["c2", "c3"]
    outcome = trim(all_elided - 150, 0.75)
    assert called(outcome.body, family) == ["c2", "c3"]
    # Then cuts, when what may not be dropped is still too much.
    huge = "".join(f"Also consider case {i}.\n" for i in range(2000))
    outcome = trim(before, 0.75, staged(huge))
    assert kinds(outcome) == {"dropped", "noted", "cut"}
    assert called(outcome.body, family) == []


@pytest.mark.parametrize("family", FAMILIES)
def test_a_trim_goes_down_to_target_times_the_budget(family: Family) -> None:
    body = render(family, session(30))
    before = optimize(body, family, Settings("off"), count).before
    for share in (0.2, 0.5, 0.9):
        for target in (0.5, 0.7, 0.9):
            budget = int(before * share)
            outcome = run(body, family, budget, target=target)
            assert outcome.trimmed and outcome.after <= budget * target, (share, target)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_note_does_not_push_a_trim_over_the_budget(family: Family) -> None:
    # A trim drops units until the total is within target x budget, then adds the note on the
    # removed entries (about 35 tokens): with `target: 1` (the schema allows it) or a small
    # budget, the note alone took the prompt over a budget it could have kept to.
    steps = session(10)
    note = 40
    fits = size(family, [steps[0], steps[-3], steps[-1]]) + note
    body = render(family, steps)
    over = [
        budget
        for budget in range(fits, size(family, steps), 13)
        if run(body, family, budget, target=1.0).over
    ]
    assert over == []


# ---------------------------------------------------------------------------------------------
# The prefix stays the same between turns


def exchange(turn: int) -> list[Step]:
    """A small exchange: the user asks, the model calls a tool and answers."""
    return [
        user(f"Question {turn}?"),
        assistant(f"Checking {turn}.", call(f"next_{turn}", output(3, f"n{turn}"))),
        assistant(f"Answer {turn}."),
    ]


@pytest.mark.parametrize("truncation", ["trim", "sliding_window"])
@pytest.mark.parametrize("family", FAMILIES)
def test_the_prefix_stays_the_same_until_the_transcript_outgrows_the_budget(
    family: Family, truncation: str
) -> None:
    memory = Memory()
    steps = session(12)
    budget = size(family, steps) // 2
    first = run(
        with_extras(family, render(family, steps)),
        family,
        budget,
        truncation=truncation,
        memory=memory,
    )
    assert first.trimmed and not first.over
    sent = transcript(first.body, family)
    turn = 0
    while True:
        steps += exchange(turn)
        turn += 1
        outcome = run(
            with_extras(family, render(family, steps)),
            family,
            budget,
            truncation=truncation,
            memory=memory,
        )
        assert not outcome.over and problems(outcome.body, family) == []
        if outcome.trimmed:
            break
        assert transcript(outcome.body, family)[: len(sent)] == sent
        assert outcome.dropped == first.dropped
    assert turn > 3
    # A new trim, remembered in its turn.
    sent = transcript(outcome.body, family)
    steps += exchange(turn)
    again = run(
        with_extras(family, render(family, steps)),
        family,
        budget,
        truncation=truncation,
        memory=memory,
    )
    assert not again.trimmed and transcript(again.body, family)[: len(sent)] == sent


@pytest.mark.parametrize("family", FAMILIES)
def test_a_changed_transcript_is_trimmed_anew(family: Family) -> None:
    memory = Memory()
    steps = session(12)
    budget = size(family, steps) // 2
    assert run(render(family, steps), family, budget, memory=memory).trimmed
    steps[3] = assistant("Edited by the client.", call("edited", "short"))
    outcome = run(render(family, steps), family, budget, memory=memory)
    assert outcome.trimmed
    assert outcome.body == run(render(family, steps), family, budget, memory=Memory()).body


@pytest.mark.parametrize("family", FAMILIES)
def test_two_sessions_that_start_alike_keep_their_own_prefixes(family: Family) -> None:
    # Two agents given the same task (two terminals, a benchmark's runs) send the same system
    # prompt and first messages. Plans are remembered per session key, and the key is those
    # first two entries, so each session's trim replaced the other's: every turn of both was
    # trimmed anew and neither prefix stayed the same.
    memory = Memory()
    one, two = session(12), session(12)
    two[2:] = [
        assistant(s.text + " (other)", *s.calls) if s.role == "assistant" else s for s in two[2:]
    ]
    budget = size(family, one) // 2
    sent = [
        transcript(run(render(family, s), family, budget, memory=memory).body, family)
        for s in (one, two)
    ]
    for steps, before in zip((one, two), sent, strict=True):
        steps += exchange(0)
        outcome = run(render(family, steps), family, budget, memory=memory)
        assert not outcome.trimmed
        assert transcript(outcome.body, family)[: len(before)] == before


# ---------------------------------------------------------------------------------------------
# sliding_window and strict_error


@pytest.mark.parametrize("family", FAMILIES)
def test_sliding_window_only_drops_whole_units(family: Family) -> None:
    body = rich(family)
    sent = transcript(body, family)
    for budget in range(500, 6000, 500):
        outcome = run(body, family, budget, truncation="sliding_window")
        assert kinds(outcome) <= {"dropped"}
        assert problems(outcome.body, family) == []
        kept = transcript(outcome.body, family)
        # Entries as the client sent them, in order, none of them edited.
        assert [sent[i] for i in range(len(sent)) if i not in outcome.dropped] == kept
        assert not NOTE.search(texts(outcome.body, family))


@pytest.mark.parametrize("family", FAMILIES)
def test_strict_error_refuses_only_over_the_budget(family: Family) -> None:
    body = render(family, session(10))
    before = size(family, session(10))
    with pytest.raises(TooLong) as refused:
        run(body, family, before - 1, truncation="strict_error", memory=Memory())
    assert (refused.value.tokens, refused.value.budget) == (before, before - 1)
    assert f"{before} tokens" in str(refused.value) and f"{before - 1}" in str(refused.value)
    outcome = run(body, family, before, truncation="strict_error", memory=Memory())
    assert outcome.body is body and not outcome.over


# ---------------------------------------------------------------------------------------------
# always: duplicates point at their latest copy; repeated lines collapse


def result_texts(body: Mapping[str, Any], family: Family) -> dict[str, str]:
    """Each call id → the text of its result."""
    found = {}
    for entry, item in zip(transcript(body, family), items_of(body, family), strict=True):
        if family == "anthropic":
            for block in entry["content"] if item.results else ():
                if block["type"] == "tool_result":
                    found[block["tool_use_id"]] = block["content"]
        elif item.results:
            found[item.results[0]] = entry["content" if family == "chat" else "output"]
    return found


def calls_with_arguments(body: Mapping[str, Any], family: Family) -> list[Any]:
    found: list[Any] = []
    for entry in transcript(body, family):
        if family == "chat":
            found += entry.get("tool_calls", [])
        elif family == "anthropic" and isinstance(entry["content"], list):
            found += [b for b in entry["content"] if b["type"] == "tool_use"]
        elif entry.get("type") == "function_call":
            found.append(entry)
    return found


@pytest.mark.parametrize("family", FAMILIES)
def test_always_points_duplicate_outputs_and_old_file_reads_at_the_latest_copy(
    family: Family,
) -> None:
    tests, listing = output(20, "test"), output(20, "ls")
    steps = [
        user("Make the tests pass."),
        assistant("", call("t1", tests, command="pytest -q")),
        assistant("", call("r1", output(20, "v") + "old line\n", "Read", file_path="/r/a.py")),
        assistant("", call("l1", listing, command="ls")),
        assistant("", call("t2", tests, command="pytest -q")),
        assistant("", call("r2", output(20, "v") + "new line\n", "Read", file_path="/r/./a.py")),
        assistant("", call("t3", tests, command="pytest -q -x")),
        user("Thanks."),
        assistant("Done."),
    ]
    body = render(family, steps)
    outcome = run(body, family, 10**6, "always")
    assert kinds(outcome) == {"deduplicated"} and not outcome.trimmed
    results = result_texts(outcome.body, family)
    # An older read of a file points at the newest, with the lines only it had.
    read = "[trioswap: an older read of the same file as the output of call r2, further below]"
    assert results.pop("r1") == read + "; lines only in this copy:\nold line"
    expected = result_texts(body, family)
    del expected["r1"]
    pointer = "[trioswap: the same as the output of call t3, further below]"
    assert results == {**expected, "t1": pointer, "t2": pointer}
    # Every call stays as it was: only outputs are replaced.
    assert calls_with_arguments(outcome.body, family) == calls_with_arguments(body, family)


@pytest.mark.parametrize("family", FAMILIES)
def test_always_keeps_distinct_calls_of_the_same_tool(family: Family) -> None:
    steps = [
        user("Look around."),
        *(
            assistant(f"Run {i}.", call(f"b{i}", output(20, f"b{i}"), command=f"grep -n x f{i}"))
            for i in range(6)
        ),
        assistant("", call("same", output(20, "same"), command="grep -n x f0")),
        assistant("Done."),
    ]
    body = render(family, steps)
    outcome = run(body, family, 10**6, "always")
    assert outcome.body is body and outcome.actions == ()


CODE = """def parse(text: str) -> list[str]:
    result = []


    for line in text.splitlines():
        if line:
            result.append(line)
\t\tresult.append("\\t")




    return result
"""


@pytest.mark.parametrize("family", FAMILIES)
def test_always_collapses_runs_of_repeated_lines_and_leaves_code_alone(family: Family) -> None:
    log = "start\n" + "WARNING: retrying\n" * 12 + "done\n"
    steps = [
        user("Build it."),
        assistant("", call("log", log, command="make")),
        assistant("", call("code", CODE, "Read", file_path="/r/parse.py")),
        assistant("Done."),
    ]
    body = render(family, steps)
    outcome = run(body, family, 10**6, "always")
    assert kinds(outcome) == {"collapsed"}
    results = result_texts(outcome.body, family)
    assert results["log"] == (
        "start\nWARNING: retrying\n[… previous line repeated 11 more times]\ndone\n"
    )
    assert results["code"] == CODE


# ---------------------------------------------------------------------------------------------
# The dropped region, the note, and its summary


def remarks() -> list[Step]:
    return [
        user("Fix the parser."),
        assistant("Listing.", call("c0", output(30, "c0"), command="ls")),
        user("Remark 1."),
        assistant("Reading.", call("c1", output(20, "c1"))),
        user("Remark 2."),
        assistant("Done."),
    ]


def words(body: Mapping[str, Any], family: Family) -> list[str]:
    """The user turns with words, as they follow each other (other entries as "")."""
    return [i.words for i in items_of(body, family) if i.role != "system"]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_drop_leaves_no_two_user_turns_in_a_row_when_it_can(family: Family) -> None:
    steps = remarks()
    body = render(family, steps)
    # Dropping the first assistant unit is enough, but "Remark 1." would follow the task.
    assert count(output(30, "c0")) < 256  # not elided
    outcome = run(body, family, size(family, steps) - 1)
    assert not outcome.over and "Remark 1." not in words(outcome.body, family)
    assert called(outcome.body, family) == ["c1"]
    for budget in range(100, size(family, steps), 11):
        sent = words(run(body, family, budget).body, family)
        for first, second in itertools.pairwise(sent):
            # Only the last user turn, which is never dropped, may follow another.
            assert not (first and second) or second == "Remark 2.", (budget, sent)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_task_carries_the_note_on_removed_entries(family: Family) -> None:
    steps = session(12, lines=30)
    body = render(family, steps)
    outcome = run(body, family, size(family, steps) // 3)
    assert kinds(outcome) == {"dropped", "noted"}
    at = next(i for i, item in enumerate(items_of(body, family)) if item.role == "user")
    task, original = transcript(outcome.body, family)[at], transcript(body, family)[at]
    note = (
        f"[trioswap: {len(outcome.dropped)} earlier transcript entries "
        f"({sum(a.saved for a in outcome.actions if a.kind == 'dropped')} tokens) after this "
        "message were removed to fit the model's context window]"
    )
    if family == "responses":
        assert task["content"] == [*original["content"], {"type": "input_text", "text": note}]
    else:
        assert task["content"] == f"{steps[0].text}\n\n{note}"
    assert len(NOTE.findall(texts(outcome.body, family))) == 1
    window = run(body, family, size(family, steps) // 3, truncation="sliding_window")
    assert window.dropped and not NOTE.search(texts(window.body, family))


@pytest.mark.parametrize("family", FAMILIES)
def test_dropped_turns_show_calls_and_results_with_their_tool(family: Family) -> None:
    steps = remarks()
    steps[1] = assistant("Listing.", call("c0", "a.py\nb.py\n", "Bash", command="ls -a"))
    steps[3] = assistant("Reading.", call("c1", output(60, "c1")))
    body = render(family, steps)
    outcome = run(body, family, 60, truncation="sliding_window")
    turns = [(t.role, t.text) for t in dropped_turns(body, family, outcome.dropped)]
    said = [text for _, text in turns]
    assert "\n".join(said).count('Bash({"command": "ls -a"})') == 1
    assert "result of Bash: a.py\nb.py\n" in said
    assert ("user", "Remark 1.") in turns
    assert [role for role, text in turns if "Listing." in text] == ["assistant"]


def test_dropped_turns_name_a_tool_result_a_tool_turn_in_anthropic_too() -> None:
    # A `tool_result` comes in a user message: the summarizer was shown "[user]\nresult of …",
    # as if the user had said it, where chat and Responses give the tool's role (`Turn.role`:
    # "tool" for a tool result).
    body = render("anthropic", [user("Go."), assistant("", call("c", "out", "Bash")), user("Ok.")])
    turns = dropped_turns(body, "anthropic", [2])
    assert [(t.role, t.text) for t in turns] == [("tool", "result of Bash: out")]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_summary_replaces_the_note_now_and_on_the_next_turns(family: Family) -> None:
    memory = Memory()
    steps = session(12, lines=30)
    body = render(family, steps)
    budget = size(family, steps) // 3
    outcome = run(body, family, budget, memory=memory)
    summary = with_summary(outcome, family, "The user wants the parser fixed.", count)
    assert summary is not None
    text = summary_message_text("The user wants the parser fixed.", len(outcome.dropped))
    sent = transcript(summary.body, family)
    assert text in json.dumps(sent, ensure_ascii=False).replace("\\n", "\n")
    assert not NOTE.search(texts(summary.body, family))
    assert "summarized" in kinds(summary) and "noted" not in kinds(summary)
    assert summary.after == run(summary.body, family, budget).before
    # Only the task changed.
    changed = [
        i
        for i, (a, b) in enumerate(zip(sent, transcript(outcome.body, family), strict=True))
        if a != b
    ]
    assert changed == [
        next(i for i, item in enumerate(items_of(body, family)) if item.role == "user")
    ]
    assert summary.body.keys() == body.keys()
    steps += exchange(0)
    following = run(render(family, steps), family, budget, memory=memory)
    assert not following.trimmed
    assert transcript(following.body, family)[: len(sent)] == sent
    assert "summarized" in kinds(following)
    window = run(body, family, budget, truncation="sliding_window")
    assert with_summary(window, family, "S.", count) is None


# ---------------------------------------------------------------------------------------------
# Counting


def test_the_count_is_the_texts_and_the_overheads() -> None:
    tools = TOOLS["chat"]
    body = {
        "model": "m",
        "temperature": 0.5,
        "tools": tools,
        "messages": [
            {"role": "system", "content": "abcdefgh"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hello world!"},
                    {"type": "image_url", "image_url": {"url": IMAGE}},
                ],
            },
            {
                "role": "assistant",
                "content": "ok",
                "tool_calls": [
                    {"id": "x", "type": "function", "function": {"name": "ls", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "x", "content": "a.py"},
        ],
    }
    tools_json = json.dumps(tools, ensure_ascii=False)
    by_hand = (
        16 + count(tools_json)
        + 8 + count("abcdefgh")
        + 8 + count("hello world!") + IMAGE_TOKENS
        + 8 + count("ok") + count("ls") + count("{}")
        + 8 + count("a.py")
    )  # fmt: skip
    outcome = optimize(body, "chat", Settings("off"), count)
    assert outcome.before == outcome.after == by_hand
    other = optimize(body, "chat", Settings("off"), count, per_message=3, per_request=5)
    assert other.before == by_hand - 11 - 4 * 5


@pytest.mark.parametrize("family", ["anthropic", "responses"])
def test_the_system_prompt_and_images_count_in_anthropic_and_responses(family: Family) -> None:
    system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    image: Body = (
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": IMAGE}}
        if family == "anthropic"
        else {"type": "input_image", "image_url": IMAGE}
    )
    kind = "text" if family == "anthropic" else "input_text"
    body: Body = {
        "model": "m",
        "system" if family == "anthropic" else "instructions": system,
        "messages" if family == "anthropic" else "input": [
            {"role": "user", "content": [{"type": kind, "text": "look"}, image, image]}
        ],
    }
    by_hand = 16 + count(json.dumps(system)) + 8 + count("look") + 2 * IMAGE_TOKENS
    assert optimize(body, family, Settings("off"), count).before == by_hand


# ---------------------------------------------------------------------------------------------
# Found by fuzz/fuzz_optimizer.py

BIG = "word " * 3000


@pytest.mark.parametrize(
    ("family", "policy", "entries"),
    [
        # A transcript entry that is no object: it was taken for the task, and the note on
        # dropped entries was added to it as to a message (`with_note`: str has no .get).
        pytest.param(
            "chat",
            "limit_only",
            [
                "Hello.",
                *transcript(
                    render("chat", [assistant(BIG), user("More."), assistant("Ok.")], None), "chat"
                ),
            ],
            id="chat-entry-no-object",
        ),
        pytest.param(
            "responses",
            "limit_only",
            [
                "Hello.",
                *transcript(
                    render("responses", [assistant(BIG), user("More."), assistant("Ok.")], None),
                    "responses",
                ),
            ],
            id="responses-entry-no-object",
        ),
        # A chat tool call whose `function` is no object (`_chat_entry`: str has no .get).
        pytest.param(
            "chat",
            "limit_only",
            [
                {"role": "user", "content": "Go."},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "a", "function": "f"}],
                },
                {"role": "tool", "tool_call_id": "a", "content": "ok"},
            ],
            id="chat-function-no-object",
        ),
        # An Anthropic text block without its text: its slot was listed, and a cut looked it up
        # (`_current_text`: KeyError 'text').
        pytest.param(
            "anthropic",
            "limit_only",
            [{"role": "user", "content": [{"type": "text"}, {"type": "text", "text": BIG}]}],
            id="anthropic-text-block-without-text",
        ),
        # An Anthropic tool_use whose `input` is no object, under `always` (`dedup.file_read`:
        # str has no .items).
        pytest.param(
            "anthropic",
            "always",
            [
                {"role": "user", "content": "Go."},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "a", "name": "Read", "input": "a.py"}],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "a", "content": "x"}],
                },
            ],
            id="anthropic-input-no-object",
        ),
    ],
)
def test_a_malformed_transcript_does_not_crash_the_optimizer(
    family: Family, policy: str, entries: list[Any]
) -> None:
    # The optimizer runs before translation and before the model server sees the body: a body
    # it cannot read is left to them to refuse (a 400), not turned into an internal error.
    key = "input" if family == "responses" else "messages"
    run({"model": "m", key: entries}, family, 500, policy, memory=Memory())


@pytest.mark.parametrize("family", FAMILIES)
def test_always_never_makes_an_output_longer(family: Family) -> None:
    # `always` rewrites outputs on every request, whatever the budget: a rewrite that saves
    # nothing should not be made. A run of short repeated lines took more room as one line and
    # a marker, and an older read of a file that the latest read shares no line with took more
    # room as a pointer followed by all its lines ("lines only in this copy").
    steps = [
        user("Go."),
        assistant("", call("a", "a\n" * 6 + "b\n" * 6, command="yes")),
        assistant("", call("r1", output(20, "old"), "Read", file_path="/r/a.py")),
        assistant("", call("r2", output(5, "new"), "Read", file_path="/r/a.py")),
        assistant("Done."),
    ]
    outcome = run(render(family, steps), family, 10**6, "always")
    assert [a for a in outcome.actions if a.saved <= 0] == []
    assert outcome.after <= outcome.before
