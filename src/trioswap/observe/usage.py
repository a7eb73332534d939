"""How many tokens an inference exchange read and wrote, and how fast: read from the reply as it
streams through the proxy.

One `UsageMeter` per exchange, fed every chunk of the upstream's reply body (decoded: no
Content-Encoding) and closed when the reply ends. Where the numbers come from, best first:

- `timings`, llama-server's own measures: `prompt_n` prompt tokens evaluated, `cache_n` read
  from the KV cache, `predicted_n` generated, and `prompt_per_second` / `predicted_per_second`.
- `usage`, the API's report: OpenAI's `prompt_tokens` / `completion_tokens` /
  `prompt_tokens_details.cached_tokens` (vLLM sends it in a stream's last chunk when asked with
  `stream_options.include_usage`), Anthropic's `input_tokens` / `output_tokens` /
  `cache_read_input_tokens` (in `message_start` and `message_delta`), the Responses API's
  `response.usage` in `response.completed`; vLLM's per-request `metrics` give the speeds.
- `counted`: a chat or completions stream that reports nothing: one token per content, reasoning
  or tool-call chunk, as llama-server streams them.

The meanings are the ones llama-swap shows. `prompt_tokens` is the whole prompt, cached part
included (OpenAI's meaning: llama-server's `prompt_n + cache_n`; Anthropic's `input_tokens`
plus the cache reads and writes it counts apart). `prefill_tps` is the prompt tokens *evaluated*
(the cached ones are not) per second of prefill; `decode_tps` the generated tokens per second
of generation. Without a server's own measure they are timed here: `ttft` from the request sent
to the first chunk of generated content, prefill = (prompt - cached) / ttft, decode =
generated / (last content chunk - first), with at least two tokens. Unknown stays `None`, never 0.

This runs on the hot path, so a chunk costs less than parsing it would: events are found by
their `data:` lines, a line is searched for a few quoted keys (generated content, a report), and
JSON is parsed only at `close`, of the first and last lines that hold a `usage`, `timings` or
`metrics` object (a stream's reports are cumulative: Anthropic's `message_start` has the input,
its last `message_delta` the output). A non-streamed reply is kept, up to `BODY_HEAD` bytes and
its last `BODY_TAIL`, and its report objects found by key at `close`. Every buffer is bounded,
the work is linear in the bytes, and nothing an upstream sends makes the meter raise.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

Family = Literal["chat", "completions", "anthropic", "responses", "embeddings", "other"]
Source = Literal["timings", "usage", "counted"]

# An event's line longer than this holds no report worth reading (a Responses
# `response.completed` repeats the whole answer, so it is generous); its bytes are skipped.
EVENT_BYTES = 4 << 20
# What a non-streamed reply keeps: its head, and beyond that its tail, where `usage` is when the
# body is huge (embeddings of many inputs).
BODY_HEAD = 4 << 20
BODY_TAIL = 64 << 10
# The most a report object (`usage`, `timings`, `metrics`) is read for, and how many places
# naming one are tried before giving up.
OBJECT_BYTES = 64 << 10
OBJECT_TRIES = 16
# Counts and rates past these are not measures.
MAX_COUNT = 10**12
MAX_RATE = 1e9

# Generated content, by API family: a key and what its value must start with (None: the key is
# enough). Empty strings do not count: a chat stream's first chunk has `"content":null` or `""`.
# A quoted key never matches inside a string, where its quotes would be escaped.
_NON_EMPTY_STRING = re.compile(rb'\s*:\s*"(?!")')
_OBJECTS = re.compile(rb"\s*:\s*\[\s*\{")
_CHAT = (
    (b'"content"', _NON_EMPTY_STRING),
    (b'"reasoning_content"', _NON_EMPTY_STRING),
    (b'"reasoning"', _NON_EMPTY_STRING),
    (b'"tool_calls"', _OBJECTS),
)
# llama-server's native /completion streams `content`, OpenAI's /v1/completions `text`.
_TEXT = ((b'"text"', _NON_EMPTY_STRING), (b'"content"', _NON_EMPTY_STRING))
_Matchers = tuple[tuple[bytes, re.Pattern[bytes] | None], ...]
_CONTENT: dict[str, _Matchers] = {
    "chat": _CHAT,
    "completions": _TEXT,
    "anthropic": ((b'"content_block_delta"', None),),
    # response.output_text.delta, response.function_call_arguments.delta, ...
    "responses": ((b'.delta"', None),),
    "embeddings": (),
    "other": _CHAT + _TEXT[:1],
}
# A report key opening an object.
_OPENS_OBJECT = re.compile(rb"\s*:\s*\{")
_REPORTS: _Matchers = tuple(
    (key, _OPENS_OBJECT) for key in (b'"usage"', b'"timings"', b'"metrics"')
)
# How many places naming a key one line is searched at.
KEY_TRIES = 4
_DECODER = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class Usage:
    """What one exchange read and wrote; `ttft` in seconds, speeds in tokens per second.
    `source` says where the token counts came from; `None` everywhere means nothing did."""

    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    generated_tokens: int | None = None
    ttft: float | None = None
    prefill_tps: float | None = None
    decode_tps: float | None = None
    source: Source | None = None


class UsageMeter:
    """Reads one reply. `family` is the API the reply speaks, `stream` whether it is an event
    stream (Content-Type `text/event-stream`), `sent_at` when the request went upstream; every
    time is in seconds of one clock (the caller's)."""

    __slots__ = (
        "_body_head",
        "_body_tail",
        "_carry",
        "_content",
        "_counted",
        "_family",
        "_first_at",
        "_first_report",
        "_last_at",
        "_last_report",
        "_sent_at",
        "_skipping",
        "_stream",
    )

    def __init__(self, family: Family, stream: bool, sent_at: float) -> None:
        if family not in _CONTENT:
            raise ValueError(f"unknown API family {family!r}: one of {', '.join(_CONTENT)}")
        self._family = family
        self._content = _CONTENT[family]
        self._stream = stream
        self._sent_at = sent_at
        # Streams: the line not yet ended, and whether it grew past EVENT_BYTES (then the
        # rest of it is skipped up to its end).
        self._carry = bytearray()
        self._skipping = False
        self._first_report: bytes | None = None
        self._last_report: bytes | None = None
        self._first_at: float | None = None
        self._last_at: float | None = None
        self._counted = 0
        # Non-streamed replies.
        self._body_head = bytearray()
        self._body_tail = bytearray()

    def feed(self, chunk: bytes, now: float) -> None:
        """One chunk of the reply body, received at `now`."""
        if self._stream:
            self._feed_stream(chunk, now)
        else:
            self._feed_body(chunk)

    def close(self, now: float) -> Usage:
        """What the reply said, once it has ended (or broke off) at `now`."""
        if self._stream:
            if self._carry and not self._skipping:
                self._line(bytes(self._carry), now)
            self._carry.clear()
            reports: list[bytes | bytearray] = []
            if self._first_report is not None:
                reports.append(self._first_report)
            if self._last_report is not self._first_report and self._last_report is not None:
                reports.append(self._last_report)
        else:
            reports = [self._body_head]
            if self._body_tail:
                reports.append(self._body_tail[-BODY_TAIL:])
        return self._usage(reports)

    # --- streams ---

    def _feed_stream(self, chunk: bytes, now: float) -> None:
        last_end = chunk.rfind(b"\n")
        if last_end < 0:
            self._hold(chunk)
            return
        start = 0
        if self._carry or self._skipping:
            # The first line of this chunk ends the one held back.
            first_end = chunk.find(b"\n")
            if not self._skipping and len(self._carry) + first_end <= EVENT_BYTES:
                self._carry += chunk[:first_end]
                self._line(bytes(self._carry), now)
            self._carry.clear()
            self._skipping = False
            start = first_end + 1
        # Each line of the chunk that starts with `data:`, found by C-speed searches.
        at = chunk.find(b"data:", start, last_end)
        while at >= 0:
            end = chunk.find(b"\n", at)
            if (at == start or chunk[at - 1] == 0x0A) and end - at <= EVENT_BYTES:
                self._event(chunk[at + 5 : end], now)
            at = chunk.find(b"data:", end + 1, last_end)
        if last_end + 1 < len(chunk):
            self._hold(chunk[last_end + 1 :])

    def _hold(self, part: bytes) -> None:
        if self._skipping or not part:
            return
        if len(self._carry) + len(part) > EVENT_BYTES:
            self._carry.clear()
            self._skipping = True
        else:
            self._carry += part

    def _line(self, line: bytes, now: float) -> None:
        if line.startswith(b"data:"):
            self._event(line[5:], now)

    def _event(self, data: bytes, now: float) -> None:
        if _holds(data, self._content):
            if self._first_at is None:
                self._first_at = now
            self._last_at = now
            self._counted += 1
        # The `in` tests spare most chunks the call.
        if (b'"usage"' in data or b'"timings"' in data or b'"metrics"' in data) and _holds(
            data, _REPORTS
        ):
            if self._first_report is None:
                self._first_report = data
            self._last_report = data

    # --- non-streamed replies ---

    def _feed_body(self, chunk: bytes) -> None:
        room = BODY_HEAD - len(self._body_head)
        if room > 0:
            if len(chunk) <= room:
                self._body_head += chunk
                return
            self._body_head += chunk[:room]
            chunk = chunk[room:]
        self._body_tail += chunk
        if len(self._body_tail) > 2 * BODY_TAIL:
            del self._body_tail[:-BODY_TAIL]

    # --- the numbers ---

    def _usage(self, reports: list[bytes | bytearray]) -> Usage:
        report = _Report()
        for data in reports:
            report.read(data)

        timings = report.timings or {}
        evaluated = _count(timings.get("prompt_n"))
        cache_n = _count(timings.get("cache_n"))
        predicted = _count(timings.get("predicted_n"))

        cached = cache_n if cache_n is not None else report.cached
        if evaluated is not None and cache_n is not None:
            prompt, prompt_source = evaluated + cache_n, "timings"
        elif report.input is not None:
            prompt, prompt_source = report.input, "usage"
            if self._family == "anthropic":
                # Anthropic counts the cached part of the prompt apart from input_tokens.
                prompt += (report.cached or 0) + (report.cache_written or 0)
        elif evaluated is not None:
            prompt, prompt_source = evaluated, "timings"
        else:
            prompt, prompt_source = None, None

        if predicted is not None:
            generated, source = predicted, "timings"
        elif report.output is not None:
            generated, source = report.output, "usage"
        elif self._counted and self._stream:
            generated, source = self._counted, "counted"
        else:
            generated, source = None, prompt_source

        ttft = None
        if self._first_at is not None and self._first_at >= self._sent_at:
            ttft = self._first_at - self._sent_at

        prefill = _rate(timings.get("prompt_per_second")) or _per_second(
            evaluated, timings.get("prompt_ms")
        )
        decode = _rate(timings.get("predicted_per_second")) or _per_second(
            predicted, timings.get("predicted_ms")
        )
        metrics = report.metrics or {}
        evaluated_prompt = None if prompt is None else prompt - (cached or 0)
        if prefill is None:
            prefill = _per_second(evaluated_prompt, metrics.get("time_to_first_token_ms"))
            if prefill is None and ttft is not None:
                prefill = _per_second(evaluated_prompt, ttft * 1000)
        if decode is None:
            decode = _per_second(1, metrics.get("mean_itl_ms"))
            if decode is None and generated is not None and generated >= 2:
                decode = self._timed_decode(generated)

        return Usage(
            prompt_tokens=prompt,
            cached_tokens=cached,
            generated_tokens=generated,
            ttft=ttft,
            prefill_tps=prefill,
            decode_tps=decode,
            source=source,
        )

    def _timed_decode(self, generated: int) -> float | None:
        if self._first_at is None or self._last_at is None:
            return None
        return _per_second(generated, (self._last_at - self._first_at) * 1000)


class _Report:
    """The report objects of a reply, merged in order: a later count replaces an earlier one
    unless it is a zero standing for "not in this event"; timings and metrics are replaced."""

    __slots__ = ("cache_written", "cached", "input", "metrics", "output", "timings")

    def __init__(self) -> None:
        self.input: int | None = None
        self.output: int | None = None
        self.cached: int | None = None
        self.cache_written: int | None = None
        self.timings: dict[str, Any] | None = None
        self.metrics: dict[str, Any] | None = None

    def read(self, data: bytes | bytearray) -> None:
        usage = _last_object(data, b'"usage"')
        if usage is not None:
            self.input = _merge(self.input, _first_count(usage, "prompt_tokens", "input_tokens"))
            self.output = _merge(
                self.output, _first_count(usage, "completion_tokens", "output_tokens")
            )
            cached = _first_count(usage, "cache_read_input_tokens")
            if cached is None:
                details = usage.get("input_tokens_details") or usage.get("prompt_tokens_details")
                if isinstance(details, dict):
                    cached = _count(details.get("cached_tokens"))
            self.cached = _merge(self.cached, cached)
            written = _first_count(usage, "cache_creation_input_tokens")
            self.cache_written = _merge(self.cache_written, written)
        timings = _last_object(data, b'"timings"')
        if timings is not None:
            self.timings = timings
        metrics = _last_object(data, b'"metrics"')
        if metrics is not None:
            self.metrics = metrics


def _holds(data: bytes, matchers: _Matchers) -> bool:
    """Whether one of `matchers`' keys is in `data` with the value it wants."""
    for key, value in matchers:
        at = data.find(key)
        tries = KEY_TRIES
        while at >= 0 and tries:
            at += len(key)
            if value is None or value.match(data, at) is not None:
                return True
            at = data.find(key, at)
            tries -= 1
    return False


def _merge(known: int | None, new: int | None) -> int | None:
    if new is None or (new == 0 and known is not None):
        return known
    return new


def _last_object(data: bytes | bytearray, key: bytes) -> dict[str, Any] | None:
    """The JSON object after the last `key:` in `data` that holds one, or None."""
    end = len(data)
    for _ in range(OBJECT_TRIES):
        at = data.rfind(key, 0, end)
        if at < 0:
            return None
        opens = _OPENS_OBJECT.match(data, at + len(key))
        if opens is not None:
            start = opens.end() - 1
            text = data[start : start + OBJECT_BYTES].decode("utf-8", "replace")
            try:
                value, _ = _DECODER.raw_decode(text)
            except (ValueError, RecursionError):
                pass
            else:
                if isinstance(value, dict):
                    return value
        end = at
    return None


def _count(value: object) -> int | None:
    """A token count, or None for anything that is not one (bools, negatives, strings)."""
    if type(value) is int:
        return value if 0 <= value <= MAX_COUNT else None
    if type(value) is float and value.is_integer() and 0 <= value <= MAX_COUNT:
        return int(value)
    return None


def _first_count(usage: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        count = _count(usage.get(key))
        if count is not None:
            return count
    return None


def _rate(value: object) -> float | None:
    """A speed: a finite positive number, or None."""
    if type(value) is int:
        return float(value) if 0 < value <= MAX_RATE else None
    if type(value) is float:
        return value if 0 < value <= MAX_RATE else None  # NaN compares false
    return None


def _per_second(count: int | None, milliseconds: object) -> float | None:
    """`count` per second of `milliseconds`, when both are known and positive."""
    if count is None or count <= 0:
        return None
    ms = _rate(milliseconds)
    return None if ms is None else _rate(count * 1000 / ms)
