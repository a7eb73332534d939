"""The `llm_assisted` summaries: the cache, incremental extension, chunking, and the HTTP call to
a real responder process."""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import RESPONDER, kill_group, random_start_port, wait_until
from trioswap.optimizer.summary import (
    EXTEND_INSTRUCTIONS,
    MIN_CHUNK_CHARS,
    NEW_TURNS,
    SUMMARIZE_INSTRUCTIONS,
    TURNS,
    Summaries,
    SummaryFailed,
    Turn,
    open_completer,
    summary_message_text,
)
from trioswap.pipeline.wire import ConnectionPool

SECTIONS = ("## Task", "## Decisions", "## Files touched", "## Errors", "## Open items")
TURN_ID = re.compile(r"turn-\d{4}")
EXTENSIONS = {"timeout": {"connect": 5.0, "read": 10.0, "write": 10.0, "pool": None}}


class Model:
    """A stand-in for the model: records each request's text, answers "summary N"."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.requests: list[str] = []
        self.fail_on = fail_on

    async def __call__(self, messages: list[dict[str, Any]]) -> str:
        [message] = messages
        self.requests.append(message["content"])
        if len(self.requests) == self.fail_on:
            raise SummaryFailed("the model is down")
        return f"summary {len(self.requests)}"

    def shown(self, request: int) -> str:
        """The turns part of one request."""
        content = self.requests[request]
        for header in (NEW_TURNS, TURNS):
            _, found, turns = content.rpartition(f"\n\n{header}\n\n")
            if found:
                return turns
        raise AssertionError(f"no turns in {content!r}")

    def shown_ids(self) -> list[str]:
        return [
            found for n in range(len(self.requests)) for found in TURN_ID.findall(self.shown(n))
        ]


def transcript(count: int, size: int = 20) -> list[Turn]:
    roles = ("user", "assistant", "tool")
    return [Turn(roles[n % 3], f"turn-{n:04d} ".ljust(size, "x")) for n in range(count)]


async def test_an_exact_hit_asks_the_model_nothing() -> None:
    summaries, model = Summaries(), Model()
    turns = transcript(3)
    assert summaries.cached(turns) is None
    assert await summaries.summarize(turns, model, max_chunk_chars=4096) == "summary 1"
    assert await summaries.summarize(list(turns), model, max_chunk_chars=4096) == "summary 1"
    assert summaries.cached(tuple(turns)) == "summary 1"
    assert len(model.requests) == 1
    assert model.requests[0].startswith(SUMMARIZE_INSTRUCTIONS)
    assert model.shown_ids() == ["turn-0000", "turn-0001", "turn-0002"]


async def test_the_longest_cached_prefix_is_extended_with_only_the_new_turns() -> None:
    summaries, model = Summaries(), Model()
    turns = transcript(6)
    await summaries.summarize(turns[:1], model, max_chunk_chars=4096)
    await summaries.summarize(turns[:3], model, max_chunk_chars=4096)
    assert await summaries.summarize(turns, model, max_chunk_chars=4096) == "summary 3"
    # turns[:3] is reused whole: only the three after it are sent, with its summary.
    extension = model.requests[2]
    assert extension.startswith(EXTEND_INSTRUCTIONS)
    assert "\n\nsummary 2\n\n" in extension
    assert TURN_ID.findall(model.shown(2)) == ["turn-0003", "turn-0004", "turn-0005"]


async def test_a_prefix_matches_only_with_the_same_roles_and_texts() -> None:
    summaries, model = Summaries(), Model()
    turns = transcript(2)
    await summaries.summarize(turns, model, max_chunk_chars=4096)
    changed = [Turn("assistant", turns[0].text), turns[1], Turn("user", "turn-0002")]
    assert summaries.cached(changed[:2]) is None
    await summaries.summarize(changed, model, max_chunk_chars=4096)
    assert model.requests[1].startswith(SUMMARIZE_INSTRUCTIONS)
    assert TURN_ID.findall(model.shown(1)) == ["turn-0000", "turn-0001", "turn-0002"]


async def test_turns_go_in_chunks_and_every_step_is_cached() -> None:
    summaries, model = Summaries(), Model()
    # Each turn is 100 characters with its "[tool]\n" header: two fit in 256, three do not.
    turns = [Turn("tool", f"turn-{n:04d} ".ljust(93, "y")) for n in range(5)]
    assert await summaries.summarize(turns, model, max_chunk_chars=256) == "summary 3"
    assert [TURN_ID.findall(model.shown(n)) for n in range(3)] == [
        ["turn-0000", "turn-0001"],
        ["turn-0002", "turn-0003"],
        ["turn-0004"],
    ]
    assert all(len(model.shown(n)) <= 256 for n in range(3))
    assert model.requests[0].startswith(SUMMARIZE_INSTRUCTIONS)
    assert "\n\nsummary 1\n\n" in model.requests[1]
    assert "\n\nsummary 2\n\n" in model.requests[2]
    assert summaries.cached(turns[:2]) == "summary 1"
    assert summaries.cached(turns[:4]) == "summary 2"
    assert summaries.cached(turns[:3]) is None


async def test_an_oversized_turn_loses_its_middle() -> None:
    summaries, model = Summaries(), Model()
    big = Turn("tool", "turn-0001 read_file(a.py): " + "m" * 5000 + " THE END")
    turns = [Turn("user", "turn-0000 go"), big, Turn("assistant", "turn-0002 done")]
    await summaries.summarize(turns, model, max_chunk_chars=300)
    assert len(model.requests) == 3
    cut = model.shown(1)
    assert len(cut) <= 300
    assert cut.startswith("[tool]\nturn-0001 read_file(a.py): mmm")
    assert cut.endswith("mmm THE END")
    assert re.search(r"\[… \d+ characters cut …\]", cut)


async def test_the_cache_keeps_the_most_recently_used() -> None:
    summaries, model = Summaries(capacity=2), Model()
    a, b, c = ([Turn("user", text)] for text in ("a", "b", "c"))
    await summaries.summarize(a, model, max_chunk_chars=4096)
    await summaries.summarize(b, model, max_chunk_chars=4096)
    assert summaries.cached(a) == "summary 1"  # now b is the least recently used
    await summaries.summarize(c, model, max_chunk_chars=4096)
    assert summaries.cached(b) is None
    assert summaries.cached(a) == "summary 1"
    assert summaries.cached(c) == "summary 3"


async def test_a_failed_step_is_not_cached_and_the_next_call_resumes_after_it() -> None:
    summaries, failing = Summaries(), Model(fail_on=2)
    turns = [Turn("user", f"turn-{n:04d} ".ljust(120, "z")) for n in range(6)]
    with pytest.raises(SummaryFailed, match="the model is down"):
        await summaries.summarize(turns, failing, max_chunk_chars=256)
    assert summaries.cached(turns[:2]) == "summary 1"
    assert summaries.cached(turns[:4]) is None
    model = Model()
    await summaries.summarize(turns, model, max_chunk_chars=256)
    assert model.shown_ids() == [f"turn-{n:04d}" for n in range(2, 6)]


async def test_nothing_to_summarize_and_too_small_chunks_are_refused() -> None:
    with pytest.raises(ValueError, match="no turns"):
        await Summaries().summarize([], Model(), max_chunk_chars=4096)
    with pytest.raises(ValueError, match="max_chunk_chars"):
        await Summaries().summarize(transcript(1), Model(), max_chunk_chars=MIN_CHUNK_CHARS - 1)


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=25),
    cuts=st.sets(st.integers(min_value=1, max_value=25)),
    max_chunk_chars=st.integers(min_value=MIN_CHUNK_CHARS, max_value=1500),
)
async def test_growing_prefixes_send_each_turn_once(
    sizes: list[int], cuts: set[int], max_chunk_chars: int
) -> None:
    turns = [Turn("user", f"turn-{n:04d} " + "w" * size) for n, size in enumerate(sizes)]
    ends = sorted({cut for cut in cuts if cut < len(turns)} | {len(turns)})
    summaries, model = Summaries(), Model()
    for end in ends:
        summary = await summaries.summarize(turns[:end], model, max_chunk_chars=max_chunk_chars)
        assert summaries.cached(turns[:end]) == summary
    assert model.shown_ids() == [f"turn-{n:04d}" for n in range(len(turns))]
    assert all(len(model.shown(n)) <= max_chunk_chars for n in range(len(model.requests)))


def test_the_instructions_ask_for_the_sections() -> None:
    for instructions in (SUMMARIZE_INSTRUCTIONS, EXTEND_INSTRUCTIONS):
        assert [line for line in instructions.splitlines() if line.startswith("## ")] == list(
            SECTIONS
        )
        assert '"none"' in instructions


def test_the_inserted_message_says_what_it_replaces() -> None:
    text = summary_message_text("## Task\nfix the build", 7)
    assert "7 earlier turns" in text and "context window" in text
    assert text.endswith("\n\n## Task\nfix the build")
    assert "1 earlier turn " in summary_message_text("s", 1)


# The HTTP call, against the bundled responder as a real process.


@asynccontextmanager
async def responder(*knobs: str) -> AsyncIterator[str]:
    port = random_start_port()
    command = [*shlex.split(RESPONDER), "--port", str(port), "--model-id", "summarizer", *knobs]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"

    async def healthy() -> bool:
        assert process.returncode is None, f"the responder exited with {process.returncode}"
        try:
            async with httpx.AsyncClient(base_url=url) as client:
                return (await client.get("/health")).status_code == 200
        except httpx.TransportError:
            return False

    try:
        await wait_until(healthy)
        yield url
    finally:
        kill_group(process.pid)
        with trio.CancelScope(shield=True):
            await process.wait()


async def last_request(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url) as client:
        body: dict[str, Any] = (await client.get("/debug/last")).json()["/v1/chat/completions"]
    return body


async def test_the_completer_returns_the_model_s_reply() -> None:
    text = "## Task\nfix the build"
    async with responder("--response-text", text) as url, ConnectionPool() as pool:
        complete = open_completer(pool, url, "m", max_tokens=300, extensions=EXTENSIONS)
        summaries = Summaries()
        assert await summaries.summarize(transcript(3), complete, max_chunk_chars=4096) == text
        sent = await last_request(url)
    assert {key: value for key, value in sent.items() if key != "messages"} == {
        "model": "m",
        "max_tokens": 300,
        "temperature": 0,
        "stream": False,
        "cache_prompt": True,
    }
    [message] = sent["messages"]
    assert message["role"] == "user"
    assert message["content"].startswith(SUMMARIZE_INSTRUCTIONS)
    assert TURN_ID.findall(message["content"]) == ["turn-0000", "turn-0001", "turn-0002"]


async def test_an_empty_reply_is_a_failure() -> None:
    async with responder() as url, ConnectionPool() as pool:
        complete = open_completer(pool, url, "m", max_tokens=300, extensions=EXTENSIONS)
        with pytest.raises(SummaryFailed, match="answered no text"):
            await complete([{"role": "user", "content": "[[text:]]"}])


async def test_an_error_status_is_a_failure() -> None:
    # Without the chat family the responder answers 404, as llama-server does for a path it lacks.
    async with responder("--apis", "anthropic") as url, ConnectionPool() as pool:
        complete = open_completer(pool, url, "m", max_tokens=300, extensions=EXTENSIONS)
        with pytest.raises(SummaryFailed, match="answered 404"):
            await Summaries().summarize(transcript(2), complete, max_chunk_chars=4096)


async def test_a_closed_port_is_a_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with ConnectionPool() as pool:
        complete = open_completer(
            pool, f"http://127.0.0.1:{port}", "m", max_tokens=300, extensions=EXTENSIONS
        )
        with pytest.raises(SummaryFailed, match=f"at http://127.0.0.1:{port}"):
            await complete([{"role": "user", "content": "hi"}])


async def test_the_caller_s_cancel_scope_bounds_a_slow_model() -> None:
    # Five words at two per second: the reply would take 2.5 s.
    slow = ("--tokens-per-second", "2", "--response-text", "one two three four five")
    async with responder(*slow) as url, ConnectionPool() as pool:
        complete = open_completer(pool, url, "m", max_tokens=300, extensions=EXTENSIONS)
        summaries = Summaries()
        turns = transcript(2)
        with trio.move_on_after(0.3) as scope:
            await summaries.summarize(turns, complete, max_chunk_chars=4096)
        assert scope.cancelled_caught
        assert summaries.cached(turns) is None
