"""Fuzz target: the prompt optimizer (`trioswap.optimizer.core.optimize`).

Any JSON body (or a JSON list as its transcript), in any family, under any policy, truncation
and budget, is optimized without an exception but `TooLong`, raised only by `strict_error` and
only over the budget; the body given is left as it was, every other field of it goes out as it
came, and the tokens reported are a recount of what goes out. A valid transcript built from the
fuzzer's choices (a task, assistant turns with parallel calls whose results come right away or
after a message, reasoning, user remarks, texts from a few words to thousands of tokens) stays
valid: every call with its result, the user's task first. Each body is sent twice with one
`Memory`, the second time with one more exchange, so that remembered trims are re-applied.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports():
    from trioswap.optimizer.core import Memory, Settings, TooLong, optimize
    from trioswap.optimizer.transcript import Family

# The transcripts and their checks are the tests' own.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.test_optimizer import (
    Step,
    ToolCall,
    count,
    exchange,
    problems,
    render,
)

FAMILIES: tuple[Family, ...] = ("chat", "anthropic", "responses")
POLICIES = ("limit_only", "always", "llm_assisted", "off")
TRUNCATIONS = ("trim", "sliding_window", "strict_error")
LINES = (0, 1, 5, 40, 300)
NAMES = ("bash", "Read", "grep")


def text(fdp: atheris.FuzzedDataProvider, tag: str) -> str:
    lines = LINES[fdp.ConsumeIntInRange(0, len(LINES) - 1)]
    if lines == 0:
        return f"{tag}: {fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))}"
    return "".join(f"{tag} line {i}: some text\n" for i in range(lines))


def steps(fdp: atheris.FuzzedDataProvider) -> list[Step]:
    built = [Step("user", text(fdp, "task"))]
    outputs: list[str] = []
    for turn in range(fdp.ConsumeIntInRange(0, 12)):
        if fdp.ConsumeIntInRange(0, 3) == 0:
            built.append(Step("user", text(fdp, f"remark{turn}")))
            continue
        calls = []
        for i in range(fdp.ConsumeIntInRange(0, 3)):
            again = outputs and fdp.ConsumeIntInRange(0, 3) == 0
            output = outputs[fdp.ConsumeIntInRange(0, len(outputs) - 1)] if again else None
            output = output or text(fdp, f"out{turn}.{i}")
            outputs.append(output)
            name = NAMES[fdp.ConsumeIntInRange(0, len(NAMES) - 1)]
            arguments = {"file_path": f"/r/{fdp.ConsumeIntInRange(0, 2)}.py"}
            calls.append(ToolCall(f"call_{turn}_{i}", name, arguments, output))
        said = text(fdp, f"says{turn}") if not calls or fdp.ConsumeBool() else ""
        thinking = text(fdp, f"thinks{turn}") if fdp.ConsumeBool() else ""
        late = len(calls) >= 2 and fdp.ConsumeBool()
        built.append(Step("assistant", said, tuple(calls), thinking, late))
    return built


def parsed(data: bytes, key: str) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if isinstance(value, list):
        return {"model": "m", key: value}
    return value if isinstance(value, dict) else None


def check(body: dict[str, Any], family: Family, settings: Settings, memory: Memory) -> Any:
    """Optimize `body`; the outcome's body, or None when `strict_error` refused it."""
    original = copy.deepcopy(body)
    before = optimize(body, family, Settings("off"), count).before
    try:
        outcome = optimize(body, family, settings, count, memory)
    except TooLong as refused:
        assert settings.truncation == "strict_error" and settings.policy != "off"
        # `always` points duplicates at their latest copy before it measures.
        assert settings.budget == refused.budget < refused.tokens <= before, refused
        return None
    assert body == original
    assert outcome.before == before, (outcome.before, before)
    assert outcome.after == optimize(outcome.body, family, Settings("off"), count).before
    assert outcome.over == (outcome.after > settings.budget)
    key = "input" if family == "responses" else "messages"
    assert outcome.body.keys() == body.keys()
    assert all(outcome.body[k] is body[k] for k in body if k != key)
    json.dumps(outcome.body)
    return outcome.body


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    family = FAMILIES[fdp.ConsumeIntInRange(0, 2)]
    key = "input" if family == "responses" else "messages"
    settings = Settings(
        POLICIES[fdp.ConsumeIntInRange(0, len(POLICIES) - 1)],
        TRUNCATIONS[fdp.ConsumeIntInRange(0, len(TRUNCATIONS) - 1)],
        fdp.ConsumeIntInRange(0, 20_000),
        fdp.ConsumeIntInRange(1, 100) / 100,
        fdp.ConsumeIntInRange(1, 600),
    )
    built = fdp.ConsumeIntInRange(0, 1) == 1
    if built:
        script = steps(fdp)
        system = "You are a coding agent." if fdp.ConsumeBool() else None
        body = render(family, script, system, merge=fdp.ConsumeBool())
        answered = not any(s.late for s in script)
    else:
        found = parsed(fdp.ConsumeBytes(fdp.remaining_bytes()), key)
        if found is None:
            return
        body = found
    memory = Memory()
    sent = check(body, family, settings, memory)
    items = body.get(key)
    if isinstance(items, list):
        more = render(family, exchange(0), None)[key]
        check({**body, key: [*items, *more]}, family, settings, memory)
    if built and sent is not None:
        assert problems(sent, family, strict=answered) == [], problems(sent, family, answered)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
