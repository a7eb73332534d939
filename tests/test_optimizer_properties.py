"""Properties of the optimizer over generated transcripts in the three families: the output is
a valid transcript that keeps the task and fits the budget whenever what may not be dropped
fits, only the transcript changes, the prefix stays the same between turns, and the same input
gives the same output.

Transcripts are steps (`tests.test_optimizer.Step`): a task, then assistant turns with up to
three parallel calls (results right after them, or the last one after a message), reasoning,
user remarks, texts from a few words to thousands of tokens, some outputs repeated."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_optimizer import (
    CUT,
    FAMILIES,
    Step,
    ToolCall,
    assistant,
    count,
    exchange,
    items_of,
    problems,
    render,
    transcript,
    user,
)
from trioswap.optimizer.core import Memory, Outcome, Settings, TooLong, entry_tokens, optimize
from trioswap.optimizer.transcript import Family, Transcript

POLICIES = ("limit_only", "always", "llm_assisted")
NOTE = re.compile(
    r"(\n\n)?\[trioswap: \d+ earlier transcript entries \(\d+ tokens\) after this message were "
    r"removed to fit the model's context window\]$"
)
# What the note on removed entries may cost, at most.
NOTE_ROOM = 60
FAST = settings(max_examples=60, deadline=None)


@st.composite
def texts(draw: st.DrawFn, tag: str) -> str:
    """A few words, or lines of output: a short one, a page, or thousands of tokens."""
    lines = draw(st.sampled_from([0, 0, 1, 5, 30, 60, 300]))
    if lines == 0:
        return f"{tag}: " + " ".join(["word"] * draw(st.integers(1, 12)))
    return "".join(f"{tag} line {i}: some text\n" for i in range(lines))


@st.composite
def conversations(draw: st.DrawFn) -> list[Step]:
    steps = [user(draw(texts("task")))]
    outputs: list[str] = []
    for turn in range(draw(st.integers(0, 10))):
        if draw(st.integers(0, 3)) == 0:
            steps.append(user(draw(texts(f"remark{turn}"))))
            continue
        calls = []
        for i in range(draw(st.integers(0, 3))):
            # Now and then the same output again (a test rerun), for `always`.
            again = outputs and draw(st.integers(0, 4)) == 0
            text = draw(st.sampled_from(outputs)) if again else draw(texts(f"out{turn}.{i}"))
            outputs.append(text)
            name = draw(st.sampled_from(["bash", "grep", "Read"]))
            calls.append(ToolCall(f"call_{turn}_{i}", name, {"arg": f"{turn}.{i}"}, text))
        text = draw(texts(f"says{turn}")) if not calls or draw(st.booleans()) else ""
        thinking = draw(texts(f"thinks{turn}")) if draw(st.booleans()) else ""
        late = len(calls) >= 2 and draw(st.integers(0, 3)) == 0
        steps.append(assistant(text, *calls, thinking=thinking, late=late))
    if draw(st.booleans()):
        steps.append(user(draw(texts("last"))))
    return steps


@st.composite
def cases(draw: st.DrawFn) -> tuple[Family, dict[str, Any], bool, int]:
    """A family, a body, whether its calls are answered right away, and a budget."""
    family = draw(st.sampled_from(FAMILIES))
    steps = draw(conversations())
    system = draw(st.sampled_from([None, "You are a coding agent."]))
    body = render(family, steps, system, merge=draw(st.booleans()))
    whole = optimize(body, family, Settings("off"), count).before
    budget = int(whole * draw(st.floats(0.02, 1.2)))
    return family, body, not any(s.late for s in steps), budget


def protected(body: Mapping[str, Any], family: Family) -> int:
    """What the units a trim may not drop cost, with the fixed parts: system units, the first
    and the last with the user's words, the newest (and the one before it when that is the
    user's)."""
    script = Transcript(body, family)
    units, entries = script.units, script.entries
    keep = {i for i, u in enumerate(units) if u.role == "system"}
    words = [i for i, u in enumerate(units) if any(entries[e].user_words for e in u.indices)]
    keep |= {words[0], words[-1]} if words else set()
    keep |= {len(units) - 1} | ({len(units) - 2} if units[-1].role == "user" else set())
    kept = [script.items[e] for i in keep if 0 <= i < len(units) for e in units[i].indices]
    fixed = optimize({**body, script.key: []}, family, Settings("off"), count).before
    return fixed + sum(entry_tokens(item, count, 8) for item in kept)


def sent(outcome: Outcome, family: Family) -> list[Any]:
    return transcript(outcome.body, family)


def role(entry: Any, family: Family) -> str:
    return items_of({"input": [entry], "messages": [entry]}, family)[0].role


def without_note(entry: Mapping[str, Any]) -> str:
    """A user message's words, without the note on removed entries."""
    content = entry["content"]
    if isinstance(content, str):
        return NOTE.sub("", content)
    return "\n".join(p["text"] for p in content if "text" in p and not NOTE.fullmatch(p["text"]))


@FAST
@given(cases(), st.sampled_from(POLICIES), st.sampled_from(["trim", "sliding_window"]))
def test_the_output_is_valid_keeps_the_task_and_fits_when_it_can(
    case: tuple[Family, dict[str, Any], bool, int], policy: str, truncation: str
) -> None:
    family, body, answered, budget = case
    assert problems(body, family, strict=answered) == []
    outcome = optimize(body, family, Settings(policy, truncation, budget), count, Memory())
    assert problems(outcome.body, family, strict=answered) == []
    recount = optimize(outcome.body, family, Settings("off"), count).before
    assert outcome.after == recount
    assert outcome.over == (recount > budget)
    if protected(body, family) + NOTE_ROOM <= budget:
        assert not outcome.over
    task = next(i.words for i in items_of(body, family) if i.role == "user")
    now = without_note(next(e for e in sent(outcome, family) if role(e, family) != "system"))
    if truncation == "sliding_window":
        assert now == task
    else:
        head, *tail = CUT.split(now)
        assert task.startswith(head) and task.endswith(tail[0] if tail else head)


@FAST
@given(cases(), st.sampled_from(POLICIES), st.sampled_from(["trim", "sliding_window"]))
def test_only_the_transcript_changes(
    case: tuple[Family, dict[str, Any], bool, int], policy: str, truncation: str
) -> None:
    family, body, _, budget = case
    body = {**body, "temperature": 0.1, "tools": [{"name": "bash"}], "x_other": {"a": [1]}}
    original = json.loads(json.dumps(body))
    outcome = optimize(body, family, Settings(policy, truncation, budget), count, Memory())
    assert body == original
    assert outcome.body.keys() == body.keys()
    key = "input" if family == "responses" else "messages"
    assert all(outcome.body[k] is body[k] for k in body if k != key)
    if not outcome.actions:
        assert outcome.body is body


@FAST
@given(cases(), st.sampled_from(POLICIES), st.sampled_from(["trim", "sliding_window"]))
def test_the_prefix_stays_the_same_without_a_new_trim(
    case: tuple[Family, dict[str, Any], bool, int], policy: str, truncation: str
) -> None:
    family, body, _, budget = case
    memory = Memory()
    first = optimize(body, family, Settings(policy, truncation, budget), count, memory)
    key = "input" if family == "responses" else "messages"
    more = transcript(render(family, exchange(99), None), family)
    second = optimize(
        {**body, key: [*body[key], *more]},
        family,
        Settings(policy, truncation, budget),
        count,
        memory,
    )
    if first.trimmed and not second.trimmed:
        assert sent(second, family)[: len(sent(first, family))] == sent(first, family)


@FAST
@given(cases(), st.sampled_from(POLICIES), st.sampled_from(["trim", "sliding_window"]))
def test_the_same_input_gives_the_same_output(
    case: tuple[Family, dict[str, Any], bool, int], policy: str, truncation: str
) -> None:
    family, body, _, budget = case
    runs = [
        optimize(body, family, Settings(policy, truncation, budget), count, memory)
        for memory in (Memory(), Memory(), None)
    ]
    assert runs[0] == runs[1] == runs[2]


@FAST
@given(cases())
def test_strict_error_refuses_exactly_what_is_over(
    case: tuple[Family, dict[str, Any], bool, int],
) -> None:
    family, body, _, budget = case
    before = optimize(body, family, Settings("off"), count).before
    try:
        outcome = optimize(body, family, Settings("limit_only", "strict_error", budget), count)
    except TooLong as refused:
        assert (refused.tokens, refused.budget) == (before, budget) and before > budget
    else:
        assert outcome.body is body and before <= budget
