"""The `llm_assisted` policy's summaries of dropped turns, made by the model itself.

A transcript grows at its end, so the region the optimizer drops grows too: each time it is the
region dropped last time plus a few more turns. The summary of a region is therefore built by
extending the summary of its longest summarized prefix with only the turns after it, and each
summary is cached under a chain hash of the turns it covers, so a prefix is found in one pass.
Turns go to the model in chunks of a bounded size, each chunk extending the summary so far, so
that a summary request always fits the model's own context.

The caller bounds the time a summary may take (a cancel scope) and falls back without one.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from trioswap.clip import clip
from trioswap.errors import TrioswapError
from trioswap.pipeline.translated import read_reply
from trioswap.pipeline.upstream import TRANSPORT_ERRORS, open_response, upstream_url
from trioswap.pipeline.wire import URL, ConnectionPool

_RULES = """\
Write the summary in Markdown with exactly these sections, in this order:

## Task
## Decisions
## Files touched
## Errors
## Open items

Write "none" under a section that has nothing. Keep concrete facts: names, file paths, commands, \
numbers, error messages and values decided. Be brief: short bullet points, no preamble, nothing \
outside the sections."""

SUMMARIZE_INSTRUCTIONS = f"""\
Below are turns from the start of a conversation between a user and an AI agent that uses tools. \
They are being dropped to fit the agent's context window, and your summary will replace them, so \
the agent can go on without them.

{_RULES}"""

EXTEND_INSTRUCTIONS = f"""\
Below are a summary of the earlier turns of a conversation between a user and an AI agent that \
uses tools, and the turns that came after them. Write the updated summary: the same sections, \
with the new turns' facts merged in; keep what still matters from the summary and drop what the \
new turns made obsolete.

{_RULES}"""

SUMMARY_SO_FAR = "Summary so far:"
NEW_TURNS = "New turns:"
TURNS = "Turns:"
# Shown where an oversized turn's middle was cut.
CUT_MARKER = "\n[… {cut} characters cut …]\n"
# Room for a turn's header and the cut marker, with some of the turn around it.
MIN_CHUNK_CHARS = 256
_TURN_SEPARATOR = "\n\n"
_HASH_BYTES = 16
_JSON = [(b"content-type", b"application/json")]


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn of a transcript, as the summarizer shows it to the model."""

    role: str  # "user", "assistant", "tool" (a tool result)
    # The turn as text: tool calls as `name(args)`, tool results with their tool's name.
    text: str


# Chat messages → the assistant's reply text; raises on failure.
Complete = Callable[[list[dict[str, Any]]], Awaitable[str]]


class SummaryFailed(TrioswapError):
    """The model server gave no summary: `reason` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Summaries:
    """Summaries of dropped regions, cached by what they cover; bounded: the least recently
    used of more than `capacity` entries goes."""

    def __init__(self, capacity: int = 256) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self._capacity = capacity
        self._cache: OrderedDict[bytes, str] = OrderedDict()

    def cached(self, covered: Sequence[Turn]) -> str | None:
        """The summary of exactly `covered`, if one was made."""
        return self._get(_chain(covered)[-1])

    async def summarize(
        self, covered: Sequence[Turn], complete: Complete, *, max_chunk_chars: int
    ) -> str:
        """A summary of `covered`: from the cache; or by extending the cached summary of the
        longest cached prefix of `covered` with only the turns after it; or from scratch.

        Turns are sent to the model in chunks of at most `max_chunk_chars` characters (a chunk
        holds whole turns; one turn longer than that is cut in its middle with a marker), each
        chunk extending the summary so far, and every intermediate summary is cached too.
        Raises what `complete` raises."""
        if not covered:
            raise ValueError("there are no turns to summarize")
        if max_chunk_chars < MIN_CHUNK_CHARS:
            raise ValueError(f"max_chunk_chars must be at least {MIN_CHUNK_CHARS}")
        hashes = _chain(covered)
        done, summary = 0, None
        for end in range(len(covered), 0, -1):
            if (summary := self._get(hashes[end])) is not None:
                done = end
                break
        for size, text in _chunks(covered[done:], max_chunk_chars):
            summary = await complete(_messages(summary, text))
            done += size
            self._put(hashes[done], summary)
        assert summary is not None
        return summary

    def _get(self, key: bytes) -> str | None:
        summary = self._cache.get(key)
        if summary is not None:
            self._cache.move_to_end(key)
        return summary

    def _put(self, key: bytes, summary: str) -> None:
        self._cache[key] = summary
        self._cache.move_to_end(key)
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)


def summary_message_text(summary: str, turns: int) -> str:
    """What gets inserted into the transcript: a short header saying it summarizes N earlier
    turns dropped to fit the context window, then the summary."""
    noun = "turn" if turns == 1 else "turns"
    return (
        f"[Summary of {turns} earlier {noun} of this conversation, dropped to fit the context "
        f"window]\n\n{summary}"
    )


def _chain(turns: Sequence[Turn]) -> list[bytes]:
    """hashes[i] identifies turns[:i]: each hash covers the one before it and its turn."""
    hashes = [b""]
    for turn in turns:
        role = turn.role.encode()
        digest = hashlib.blake2b(hashes[-1], digest_size=_HASH_BYTES)
        # The role's length keeps (role, text) pairs apart whose concatenations are equal.
        digest.update(len(role).to_bytes(4, "big"))
        digest.update(role)
        digest.update(turn.text.encode("utf-8", "surrogatepass"))
        hashes.append(digest.digest())
    return hashes


def _render(turn: Turn, limit: int) -> str:
    """The turn as the model reads it, at most `limit` characters: a longer one loses its
    middle, since a turn's start says what it is and its end how it came out."""
    header = f"[{turn.role}]\n"
    text = turn.text
    if len(header) + len(text) > limit:
        # The marker is sized for the largest cut possible, so the result always fits.
        keep = max(0, limit - len(header) - len(CUT_MARKER.format(cut=len(text))))
        head = keep - keep // 2
        tail = text[len(text) - keep // 2 :]
        text = text[:head] + CUT_MARKER.format(cut=len(text) - keep) + tail
    return header + text


def _chunks(turns: Sequence[Turn], limit: int) -> list[tuple[int, str]]:
    """The turns as (how many turns, their text) chunks of at most `limit` characters."""
    chunks: list[tuple[int, str]] = []
    pieces: list[str] = []
    size = 0
    for turn in turns:
        piece = _render(turn, limit)
        if pieces and size + len(_TURN_SEPARATOR) + len(piece) > limit:
            chunks.append((len(pieces), _TURN_SEPARATOR.join(pieces)))
            pieces, size = [], 0
        size += len(piece) + (len(_TURN_SEPARATOR) if pieces else 0)
        pieces.append(piece)
    if pieces:
        chunks.append((len(pieces), _TURN_SEPARATOR.join(pieces)))
    return chunks


def _messages(summary: str | None, turns: str) -> list[dict[str, Any]]:
    # One user message: every chat template takes it, where some refuse a system message, and
    # the instructions come first so that the server's prompt cache keeps them.
    if summary is None:
        content = f"{SUMMARIZE_INSTRUCTIONS}\n\n{TURNS}\n\n{turns}"
    else:
        content = (
            f"{EXTEND_INSTRUCTIONS}\n\n{SUMMARY_SO_FAR}\n\n{summary}\n\n{NEW_TURNS}\n\n{turns}"
        )
    return [{"role": "user", "content": content}]


def open_completer(
    pool: ConnectionPool,
    proxy: str,
    model_name: str,
    *,
    max_tokens: int,
    extensions: dict[str, Any],
) -> Complete:
    """A `Complete` that asks the model server at `proxy` for a non-streamed chat completion
    and returns its text; raises `SummaryFailed` when there is none."""
    url = upstream_url(proxy, b"/v1/chat/completions", b"")

    async def complete(messages: list[dict[str, Any]]) -> str:
        body = {
            "model": model_name,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": False,
            "cache_prompt": True,
        }
        try:
            status, data = await _post(pool, url, json.dumps(body).encode(), extensions, model_name)
        except TRANSPORT_ERRORS as exc:
            raise SummaryFailed(f"{model_name} at {proxy}: {clip(str(exc) or repr(exc))}") from exc
        if status != 200:
            raise SummaryFailed(f"{model_name} at {proxy} answered {status}: {clip(data)}")
        return _reply_text(data, f"{model_name} at {proxy}")

    return complete


async def _post(
    pool: ConnectionPool,
    url: URL,
    content: bytes,
    extensions: dict[str, Any],
    model_name: str,
) -> tuple[int, bytes]:
    async with AsyncExitStack() as stack:
        response = await open_response(
            stack,
            pool,
            method=b"POST",
            url=url,
            headers=_JSON,
            content=content,
            extensions=extensions,
        )
        return response.status, await read_reply(response, model_name)


def _reply_text(data: bytes, who: str) -> str:
    try:
        reply = json.loads(data)
    except ValueError:
        raise SummaryFailed(f"{who} answered with no JSON: {clip(data)}") from None
    try:
        text = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        text = None
    if not isinstance(text, str) or not text.strip():
        raise SummaryFailed(f"{who} answered no text: {clip(data)}")
    return text.strip()
