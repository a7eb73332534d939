"""The optimizer benchmark's session generator (benchmarks/sessions.py): its transcripts are
valid requests in each format, grow as a client re-sends them, and hold the planted facts where
they were planted; its validators catch a broken pair."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from benchmarks import sessions
from hypothesis import given, settings
from hypothesis import strategies as st

from trioswap.protocols.anthropic_chat.request import request_to_chat as anthropic_to_chat
from trioswap.protocols.responses_chat.request import request_to_chat as responses_to_chat

TURNS = 8
TOKENS = 8_000


def where(kind: str, body: dict[str, Any], marker: str) -> str:
    """Which part of `body` holds `marker`: system, task, assistant, result or user."""
    if marker in json.dumps(body.get("system", "")) or marker in body.get("instructions", ""):
        return "system"
    items = sessions.transcript(kind, body)
    # The task is what the user says before anything else happens.
    opening = next(i for i, m in enumerate(items) if m.get("role") not in ("system", "user"))
    for i, item in enumerate(items):
        text = json.dumps(item)
        if marker not in text:
            continue
        role = item.get("role")
        if role == "system":
            return "system"
        if i < opening:
            return "task"
        if role == "tool" or item.get("type") == "function_call_output":
            return "result"
        if role == "assistant":
            return "assistant"
        blocks = item["content"] if isinstance(item.get("content"), list) else []
        results = [b for b in blocks if b.get("type") == "tool_result"]
        return "result" if marker in json.dumps(results) else "user"
    raise AssertionError(f"{marker} not found")


@pytest.mark.parametrize("kind", sessions.KINDS)
def test_every_turn_is_valid_and_grows_from_the_last(kind: str) -> None:
    bodies = sessions.session(kind, 7, TURNS, tokens=TOKENS)
    assert len(bodies) == TURNS
    for body in bodies:
        assert sessions.problems(kind, body) == []
    for before, after in itertools.pairwise(bodies):
        old, new = sessions.transcript(kind, before), sessions.transcript(kind, after)
        assert len(new) > len(old)
        assert new[: len(old)] == old
        assert {k: v for k, v in before.items() if k not in ("messages", "input")} == {
            k: v for k, v in after.items() if k not in ("messages", "input")
        }
    assert 0.6 * TOKENS < sessions.size(bodies[-1]) < 1.4 * TOKENS


@pytest.mark.parametrize("kind", sessions.KINDS)
def test_facts_are_where_they_were_planted(kind: str) -> None:
    body = sessions.session(kind, 3, TURNS, tokens=TOKENS)[-1]
    planted = sessions.facts(body)
    assert set(planted.values()) == set(sessions.PLACES)
    expected = {
        "system": {"system"},
        "task": {"task"},
        "decision": {"assistant"},
        "early result": {"result"},
        "older result": {"result", "user"},
        "recent": {"result", "user"},
    }
    for marker, place in planted.items():
        assert where(kind, body, marker) in expected[place], (marker, place)
    last_results = json.dumps(sessions.transcript(kind, body)[-3:])
    assert any(m in last_results for m, place in planted.items() if place == "recent")


def test_one_seed_is_one_session_in_every_format() -> None:
    found = [
        set(sessions.facts(sessions.session(k, 5, 6, tokens=5_000)[-1])) for k in sessions.KINDS
    ]
    assert found[0] == found[1] == found[2]
    assert sessions.session("chat", 5, 6, tokens=5_000) == sessions.session(
        "chat", 5, 6, tokens=5_000
    )


def test_the_translators_take_every_format() -> None:
    for kind, translate in (("anthropic", anthropic_to_chat), ("responses", responses_to_chat)):
        chat = translate(sessions.session(kind, 11, TURNS, tokens=TOKENS)[-1])
        assert sessions.problems("chat", chat) == []


def paired(kind: str, item: dict[str, Any]) -> bool:
    """Whether removing `item` alone must break a tool call's pairing."""
    if kind == "chat":
        return item["role"] == "tool" or bool(item.get("tool_calls"))
    if kind == "responses":
        return item.get("type") in ("function_call", "function_call_output")
    blocks = item["content"] if isinstance(item["content"], list) else []
    return any(b.get("type") in ("tool_use", "tool_result") for b in blocks)


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(sessions.KINDS), seed=st.integers(0, 2**32), pick=st.randoms())
def test_validators_catch_a_broken_pair(kind: str, seed: int, pick: Any) -> None:
    body = sessions.session(kind, seed, 4, tokens=3_000)[-1]
    assert sessions.problems(kind, body) == []
    items = sessions.transcript(kind, body)
    index = pick.choice([i for i, item in enumerate(items) if paired(kind, item)])
    key = "input" if kind == "responses" else "messages"
    broken = {**body, key: items[:index] + items[index + 1 :]}
    assert sessions.problems(kind, broken)
