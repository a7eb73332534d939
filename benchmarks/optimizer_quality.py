"""The prompt optimizer's quality and speed, on generated agent sessions (benchmarks/sessions.py).

    python benchmarks/optimizer_quality.py --quick      # < 60 s, no llama-server unless asked
    python benchmarks/optimizer_quality.py              # minutes: sizes to 300k, llama-server
    python benchmarks/optimizer_quality.py --llama-server PATH --model GGUF --out FILE.md

Each policy (off, limit_only, always, llm_assisted when it can run) and a naive sliding window
(drop the oldest messages until the body fits, pairs broken) gets every turn of Claude Code,
Codex and chat completions sessions of several sizes, with a budget below the last turn's size.
Per format and size: tokens before and after against the budget, the planted facts kept (and
whether a lost one was in the region dropped on purpose), structural validity as each API
requires it, and the time per request with counts warm (each turn optimized twice, the second
timed).

With llama-server (default: scripts/install-llama-server's, in $TRIOSWAP_CACHE): (a) each
format's last optimized turn, translated to chat completions, sent with max_tokens 1 — accepted
(200) or not; (b) a session replayed turn by turn against llama-server `-c 4096 --parallel 1`
with cache_prompt, reading timings.prompt_n (tokens it processed) and cache_n per turn, next to
the tokens that turn added. SmolLM2 processes prompts at ~100 tokens/s on a small machine, so
these take minutes; `--quick` skips them unless `--llama-server` is given.

Targets are printed next to the numbers, never asserted. The Markdown report goes to `--out`.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
import httpx
import sessions
import trio
from sessions import Body

from trioswap.errors import BadRequest
from trioswap.optimizer import gguf_vocab
from trioswap.optimizer.core import (
    Memory,
    Outcome,
    Settings,
    dropped_turns,
    entry_tokens,
    fixed_tokens,
    optimize,
    with_summary,
)
from trioswap.optimizer.summary import MIN_CHUNK_CHARS, Summaries
from trioswap.optimizer.tokens import (
    DEFAULT_PER_MESSAGE,
    DEFAULT_PER_REQUEST,
    TokenizerCounter,
    estimate_tokens,
)
from trioswap.optimizer.transcript import Transcript
from trioswap.protocols.anthropic_chat.request import request_to_chat as anthropic_to_chat
from trioswap.protocols.responses_chat.request import request_to_chat as responses_to_chat

Count = Callable[[str], int]

POLICIES = ("off", "limit_only", "always", "llm_assisted")
NAIVE = "naive window"
BUDGET_SHARE = 0.5  # of the last turn's size: the later turns must be cut
TARGET_MS = 100.0  # limit_only/always on a 200k-token transcript, counts cached
TARGET_REPROCESS = 1.5  # tokens re-processed per turn / the turn's new tokens, trims aside
SUMMARY_TOKENS = 200  # the longest summary llama-server may write
REPLAY_MAX_TOKENS = 1
REPLAY_MARGIN = 400  # tokens below the window for the chat template and counting errors
NAIVE_TURNS_AFTER_FIRST_DROP = 3  # every later naive turn re-processes everything the same way


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# -- counting, optimizing, the naive window ----------------------------------------------------


def make_count(model: Path) -> tuple[Count, str]:
    """The token counter the optimizer is given, and what it is: llama.cpp's own tokenizer
    rebuilt from the GGUF file when there is one (counts remembered, as trioswap keeps them)."""
    if model.exists():
        tokenizer = gguf_vocab.load_tokenizer(model, harness.CACHE / "tokenizers")
        return TokenizerCounter(tokenizer, "gguf").count, f"{model.name}'s tokenizer (exact)"
    return estimate_tokens, "trioswap's estimate (UTF-8 bytes / 3): no model file"


def measure(kind: str, body: Body, count: Count) -> int:
    """The tokens of a body as the optimizer counts them."""
    transcript = Transcript(body, kind)
    return fixed_tokens(transcript, count, DEFAULT_PER_REQUEST) + sum(
        entry_tokens(item, count, DEFAULT_PER_MESSAGE) for item in transcript.items
    )


def naive_window(kind: str, body: Body, budget: int, count: Count) -> tuple[Body, range]:
    """Drop the oldest transcript entries (chat's leading system messages aside) until the
    body fits, whatever they pair with; returns the body and the indexes dropped."""
    items = sessions.transcript(kind, body)
    first = 0
    while first < len(items) and kind == "chat" and items[first]["role"] == "system":
        first += 1
    total = measure(kind, body, count)
    end = first
    while total > budget and end < len(items) - 1:
        total -= entry_tokens(items[end], count, DEFAULT_PER_MESSAGE)
        end += 1
    key = "input" if kind == "responses" else "messages"
    return {**body, key: items[:first] + items[end:]}, range(first, end)


@dataclass(frozen=True)
class Result:
    body: Body
    before: int
    after: int
    budget: int
    over: bool
    actions: Counter[str]
    dropped: frozenset[int]  # transcript indexes dropped on purpose (summarized ones too)
    trimmed: bool  # a new trim on this request: the prompt's prefix changed on purpose
    edits: dict[int, str] = field(default_factory=dict)  # entry index -> what was done to it


Runner = Callable[[Body], Result]
Summarize = Callable[[str, Body, Outcome], str | None]  # format, body, outcome -> summary


def stand_in_summary(kind: str, body: Body, outcome: Outcome) -> str:
    """Where no model writes the summary: a fixed text in the summary's shape."""
    return "## Task\n(stand-in)\n## Decisions\nnone\n## Files touched\nnone\n## Errors\nnone"


def runner(kind: str, policy: str, budget: int, count: Count, summarize: Summarize) -> Runner:
    """One session's optimizer (or naive window), keeping its memory across turns."""
    if policy == NAIVE:

        def naive(body: Body) -> Result:
            out, dropped = naive_window(kind, body, budget, count)
            after = measure(kind, out, count)
            actions = Counter({"dropped": len(dropped)} if dropped else {})
            before = measure(kind, body, count)
            return Result(
                out,
                before,
                after,
                budget,
                after > budget,
                actions,
                frozenset(dropped),
                bool(dropped),
            )

        return naive
    settings = Settings(policy=policy, truncation="trim", budget=budget)
    memory = Memory()

    def optimized(body: Body) -> Result:
        outcome = optimize(
            body,
            kind,
            settings,
            count,
            memory,
            per_message=DEFAULT_PER_MESSAGE,
            per_request=DEFAULT_PER_REQUEST,
        )
        if policy == "llm_assisted" and outcome.trimmed and outcome.dropped:
            summary = summarize(kind, body, outcome)
            if summary is not None:
                summarized = with_summary(outcome, kind, summary, count, DEFAULT_PER_MESSAGE)
                outcome = summarized or outcome
        return Result(
            dict(outcome.body),
            outcome.before,
            outcome.after,
            outcome.budget,
            outcome.over,
            Counter(action.kind for action in outcome.actions),
            frozenset(outcome.dropped),
            outcome.trimmed,
            {a.index: a.kind for a in outcome.actions if a.kind not in ("noted", "summarized")},
        )

    return optimized


# -- quality and speed ------------------------------------------------------------------------


def fact_indexes(kind: str, body: Body) -> dict[str, int]:
    """Each planted fact and the transcript index holding it (-1: system or instructions)."""
    texts = [json.dumps(item, ensure_ascii=False) for item in sessions.transcript(kind, body)]
    out = {}
    for marker in sessions.facts(body):
        out[marker] = next((i for i, text in enumerate(texts) if marker in text), -1)
    return out


@dataclass
class Cell:
    """One format, size and policy: every turn's numbers."""

    kind: str
    size: int
    policy: str
    budget: int = 0
    before: list[int] = field(default_factory=list)
    after: list[int] = field(default_factory=list)
    over: int = 0
    invalid: list[str] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)
    facts: int = 0
    kept: int = 0
    lost_dropped: int = 0
    lost_outside: Counter[str] = field(default_factory=Counter)  # "place (edit)" -> count
    actions: Counter[str] = field(default_factory=Counter)
    error: str = ""


def run_cell(kind: str, size: int, policy: str, bodies: list[Body], count: Count) -> Cell:
    budget = int(measure(kind, bodies[-1], count) * BUDGET_SHARE)
    cell = Cell(kind, size, policy, budget)
    run = runner(kind, policy, budget, count, stand_in_summary)
    for turn, body in enumerate(bodies):
        run(body)  # counts cold; the memory sees this turn once, as a client's retry would
        began = time.perf_counter()
        result = run(body)
        cell.ms.append((time.perf_counter() - began) * 1000)
        cell.budget = result.budget
        cell.before.append(result.before)
        cell.after.append(result.after)
        cell.over += result.over or result.after > result.budget
        cell.actions.update(result.actions)
        problems = sessions.problems(kind, result.body)
        if problems:
            cell.invalid.append(f"turn {turn}: {problems[0]}")
        text = json.dumps(result.body, ensure_ascii=False)
        places = sessions.facts(body)
        for marker, index in fact_indexes(kind, body).items():
            cell.facts += 1
            if marker in text:
                cell.kept += 1
            elif index in result.dropped or result.edits.get(index) in TRIMMED:
                cell.lost_dropped += 1
            else:
                cell.lost_outside[f"{places[marker]} ({result.edits.get(index, 'kept')})"] += 1
    return cell


# What a trim removes on purpose: an elided output or a cut middle is trimmed like a drop.
TRIMMED = frozenset({"elided", "cut"})


def quality(sizes: Sequence[int], turns: int, policies: Sequence[str], count: Count) -> list[Cell]:
    cells = []
    for kind in sessions.KINDS:
        for size in sizes:
            bodies = sessions.session(kind, size, turns, tokens=size)
            for policy in policies:
                progress(f"{kind} {size // 1000}k: {policy}")
                try:
                    cells.append(run_cell(kind, size, policy, bodies, count))
                except Exception as exc:  # a policy that cannot run here is reported, not fatal
                    cells.append(Cell(kind, size, policy, error=f"{type(exc).__name__}: {exc}"))
    return cells


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def quality_table(cells: list[Cell]) -> list[str]:
    lines = [
        "| format | size | policy | last turn before → after / budget | turns over budget "
        "| turns invalid | facts kept | lost (in dropped) | lost outside dropped | ms median "
        "| ms p95 | ms last | actions |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        if c.error:
            lines.append(f"| {c.kind} | {c.size // 1000}k | {c.policy} | {c.error} |" + " |" * 9)
            continue
        turns = len(c.ms)
        outside = ", ".join(f"{place} {n}" for place, n in c.lost_outside.items()) or "0"
        acts = ", ".join(f"{k} {n}" for k, n in sorted(c.actions.items())) or "-"
        lines.append(
            f"| {c.kind} | {c.size // 1000}k | {c.policy} "
            f"| {c.before[-1]:,} → {c.after[-1]:,} / {c.budget:,} | {c.over}/{turns} "
            f"| {len(c.invalid)}/{turns} | {c.kept}/{c.facts} | {c.lost_dropped} | {outside} "
            f"| {statistics.median(c.ms):.1f} | {percentile(c.ms, 0.95):.1f} | {c.ms[-1]:.1f} "
            f"| {acts} |"
        )
    return lines


def quality_targets(cells: list[Cell]) -> list[str]:
    ok = [c for c in cells if not c.error]
    optimizers = [c for c in ok if c.policy in ("limit_only", "always", "llm_assisted")]
    big = [c for c in optimizers if c.policy in ("limit_only", "always") and c.size >= 200_000]
    lines = [
        _verdict(
            "always within budget (limit_only, always, llm_assisted)",
            all(c.over == 0 for c in optimizers),
            ", ".join(
                f"{c.kind} {c.size // 1000}k {c.policy}: {c.over}" for c in optimizers if c.over
            )
            or "every turn",
        ),
        _verdict(
            "100 % valid (optimizer policies)",
            all(not c.invalid for c in optimizers),
            "; ".join(f"{c.kind} {c.policy}: {c.invalid[0]}" for c in optimizers if c.invalid)
            or "every turn",
        ),
        _verdict(
            "every fact outside the dropped region kept",
            all(not c.lost_outside for c in optimizers),
            "; ".join(
                f"{c.kind} {c.size // 1000}k {c.policy}: {dict(c.lost_outside)}"
                for c in optimizers
                if c.lost_outside
            )
            or "all kept",
        ),
    ]
    if big:
        worst = max(max(c.ms[-1], percentile(c.ms, 0.95)) for c in big)
        lines.append(
            _verdict(
                f"limit_only/always on a ≥200k transcript ≤ {TARGET_MS:.0f} ms, counts cached",
                worst <= TARGET_MS,
                f"worst p95 / last turn {worst:.1f} ms",
            )
        )
    naive = [c for c in ok if c.policy == NAIVE]
    if naive:
        broken = sum(bool(c.invalid) for c in naive)
        lines.append(f"- (baseline) naive window: invalid in {broken}/{len(naive)} sessions")
    return lines


def _verdict(target: str, met: bool, detail: str) -> str:
    return f"- {'MET' if met else 'MISSED'}: {target} — {detail}"


# -- llama-server -----------------------------------------------------------------------------


@contextmanager
def llama_server(binary: Path, model: Path, ctx: int) -> Iterator[httpx.Client]:
    """llama-server on a free port, one slot, killed on the way out whatever happens."""
    with harness.Harness() as h:
        port = harness.free_port()
        argv = [
            str(binary),
            *("--host", harness.LOCALHOST, "--port", str(port), "-m", str(model)),
            *("-c", str(ctx), "--parallel", "1", "-t", str(os.cpu_count() or 1)),
            # Erasing a slot's cache between replays needs a slot folder, though nothing is saved.
            *("--slot-save-path", str(h.workdir)),
        ]
        proc = h.spawn("llama-server", argv)
        url = f"http://{harness.LOCALHOST}:{port}"
        with h.reporting("llama-server"):
            harness.wait_healthy(url, timeout=120, alive=proc.alive)
            with httpx.Client(base_url=url, timeout=600) as client:
                yield client


def llama_summarizer(client: httpx.Client, ctx: int) -> Summarize:
    """Summaries written by the model on llama-server, the way the llm_assisted policy has
    them made: the dropped turns in chunks that fit the model's window."""
    summaries = Summaries()

    async def complete(messages: list[dict[str, Any]]) -> str:
        body = {"messages": messages, "max_tokens": SUMMARY_TOKENS, "temperature": 0}
        reply = await trio.to_thread.run_sync(
            functools.partial(client.post, "/v1/chat/completions", json=body)
        )
        reply.raise_for_status()
        return str(reply.json()["choices"][0]["message"]["content"])

    def summarize(kind: str, body: Body, outcome: Outcome) -> str | None:
        turns = dropped_turns(body, kind, outcome.dropped)
        if not turns:
            return None
        # SmolLM2 reads 2 to 4 characters per token: 2 leaves room for the instructions.
        chars = max(MIN_CHUNK_CHARS, (ctx - SUMMARY_TOKENS - 600) * 2)
        return trio.run(
            functools.partial(summaries.summarize, turns, complete, max_chunk_chars=chars)
        )

    return summarize


def to_chat(kind: str, body: Body) -> Body:
    """The chat completions request llama-server gets (raises BadRequest when the translator
    refuses the body)."""
    if kind == "anthropic":
        chat = anthropic_to_chat(body)
    elif kind == "responses":
        chat = responses_to_chat(body)
    else:
        chat = dict(body)
    for key in ("stream", "stream_options", "model"):
        chat.pop(key, None)
    return {**chat, "max_tokens": REPLAY_MAX_TOKENS, "temperature": 0, "cache_prompt": True}


def send(client: httpx.Client, kind: str, body: Body) -> tuple[str, dict[str, Any]]:
    """`200`, or the status/refusal and why; with llama-server's timings."""
    try:
        chat = to_chat(kind, body)
    except BadRequest as exc:
        return f"refused by translator: {exc}"[:160], {}
    response = client.post("/v1/chat/completions", json=chat)
    if response.status_code != 200:
        return f"{response.status_code}: {response.text[:140]}", {}
    timings: dict[str, Any] = response.json().get("timings", {})
    return "200", timings


def prompt_tokens(client: httpx.Client, kind: str, body: Body) -> int:
    """The tokens of `body`'s whole prompt, as llama-server renders and tokenizes it."""
    chat = to_chat(kind, body)
    template = {
        "messages": chat["messages"],
        **({"tools": chat["tools"]} if "tools" in chat else {}),
    }
    prompt = client.post("/apply-template", json=template).json()["prompt"]
    return len(client.post("/tokenize", json={"content": prompt}).json()["tokens"])


def acceptance(
    client: httpx.Client,
    policies: Sequence[str],
    budget: int,
    turns: int,
    count: Count,
    summarize: Summarize,
) -> list[str]:
    lines = ["| format | policy | tokens counted / budget | llama-server |", "|---|---|---|---|"]
    for kind in sessions.KINDS:
        bodies = sessions.session(kind, 101, turns, tokens=int(budget * 1.6))
        for policy in policies:
            progress(f"accepted? {kind} {policy}")
            run = runner(kind, policy, budget, count, summarize)
            try:
                result = [run(body) for body in bodies][-1]
            except Exception as exc:
                lines.append(f"| {kind} | {policy} | - | not run: {type(exc).__name__}: {exc} |")
                continue
            status, _ = send(client, kind, result.body)
            lines.append(f"| {kind} | {policy} | {result.after:,} / {budget:,} | {status} |")
    return lines


@dataclass
class Replayed:
    policy: str
    turns: list[str] = field(default_factory=list)  # table rows
    ratios: list[float] = field(default_factory=list)  # non-trim turns
    trims: int = 0
    failed: int = 0
    error: str = ""


def replay(
    client: httpx.Client,
    kind: str,
    bodies: list[Body],
    new_tokens: list[int],
    policy: str,
    budget: int,
    count: Count,
    summarize: Summarize,
) -> Replayed:
    out = Replayed(policy)
    client.post("/slots/0?action=erase").raise_for_status()  # each replay starts from nothing
    run = runner(kind, policy, budget, count, summarize)
    previous: list[Any] | None = None
    first_drop: int | None = None
    for turn, (body, new) in enumerate(zip(bodies, new_tokens, strict=True)):
        try:
            result = run(body)
        except Exception as exc:
            out.error = f"turn {turn}: {type(exc).__name__}: {exc}"
            break
        items = sessions.transcript(kind, result.body)
        trimmed = result.trimmed
        rewritten = previous is not None and items[: len(previous)] != previous
        previous = list(items)
        status, timings = send(client, kind, result.body)
        mark = "trim" if trimmed else ("rewrite" if rewritten else "")
        if status != "200":
            out.failed += 1
            out.turns.append(f"| {turn} | {new} | - | - | - | {mark} | {status} |")
            continue
        processed, cached = timings.get("prompt_n", 0), timings.get("cache_n", 0)
        ratio = processed / max(1, new)
        out.trims += bool(mark)
        if turn and not mark:
            out.ratios.append(ratio)
        out.turns.append(
            f"| {turn} | {new} | {processed} | {cached} | {ratio:.2f} | {mark} | 200 |"
        )
        if policy == NAIVE and result.actions and first_drop is None:
            first_drop = turn
        if first_drop is not None and turn - first_drop >= NAIVE_TURNS_AFTER_FIRST_DROP:
            out.turns.append(
                f"| … | naive stopped {NAIVE_TURNS_AFTER_FIRST_DROP} turns after its first drop |"
            )
            break
    return out


def replay_section(
    client: httpx.Client,
    kind: str,
    turns: int,
    tokens: int,
    policies: Sequence[str],
    budget: int,
    count: Count,
    summarize: Summarize,
) -> tuple[list[str], list[str]]:
    bodies = sessions.session(kind, 40, turns, tokens=tokens)
    progress(f"replay: counting each turn's new tokens ({kind}, {turns} turns)")
    totals = [prompt_tokens(client, kind, body) for body in bodies]
    new_tokens = [totals[0], *(b - a for a, b in itertools.pairwise(totals))]
    lines: list[str] = [
        f"{kind} session, {turns} turns, whole transcript {totals[0]:,} → {totals[-1]:,} tokens "
        f"(llama-server's count); budget {budget:,}.",
        "",
    ]
    verdicts = []
    for policy in policies:
        progress(f"replay: {policy}")
        done = replay(client, kind, bodies, new_tokens, policy, budget, count, summarize)
        worst = max(done.ratios, default=0.0)
        over = sum(r > TARGET_REPROCESS for r in done.ratios)
        lines += [
            f"### {policy}",
            "",
            f"{done.trims} trim/rewrite turns, {done.failed} refused; outside trims: worst "
            f"re-processed/new {worst:.2f}, {over} turn(s) above {TARGET_REPROCESS}"
            + (f"; stopped: {done.error}" if done.error else ""),
            "",
            "| turn | new tokens | prompt_n | cache_n | prompt_n / new | trim | status |",
            "|---|---|---|---|---|---|---|",
            *done.turns,
            "",
        ]
        if policy in ("limit_only", "always", "llm_assisted"):
            verdicts.append(
                _verdict(
                    f"{policy}: re-processed ≤ {TARGET_REPROCESS} x new tokens outside trims",
                    over == 0 and not done.failed and not done.error,
                    f"worst {worst:.2f}, {over} over, {done.failed} refused",
                )
            )
    return lines, verdicts


def llama_version(binary: Path) -> str:
    try:
        run = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as exc:
        return f"unknown ({exc})"
    return " ".join(line for line in (run.stdout + run.stderr).splitlines() if line.strip())


# -- the report -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = harness.arg_parser(__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="small sizes, 10 turns, < 60 s")
    parser.add_argument("--llama-server", type=Path, help=f"default: {harness.LLAMA_SERVER}")
    parser.add_argument("--model", type=Path, help=f"GGUF file; default: {harness.SMOLLM2}")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("OPTIMIZER.md"))
    parser.add_argument("--ctx", type=int, default=4096, help="llama-server's -c for the replay")
    parser.add_argument("--replay-kind", choices=sessions.KINDS, default="anthropic")
    parser.add_argument("--replay-turns", type=int, help="default: 40, or 10 with --quick")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    info = harness.machine_info()
    binary = args.llama_server or harness.LLAMA_SERVER
    model = args.model or harness.SMOLLM2
    use_llama = binary.exists() and model.exists() and (not args.quick or args.llama_server)
    count, counter = make_count(model)
    sizes = (20_000, 60_000) if args.quick else (20_000, 60_000, 200_000, 300_000)
    turns = 10 if args.quick else 20
    policies = [*POLICIES, NAIVE]
    report = [
        "# The prompt optimizer: quality and speed",
        "",
        f"`{' '.join(['benchmarks/optimizer_quality.py', *(argv or sys.argv[1:])])}`",
        "",
        "```",
        *harness.machine_lines(info, python=sys.executable),
        f"llama-server: {llama_version(binary) if use_llama else 'not used'}",
        f"counter:   {counter}",
        "```",
        "",
        "## Quality and speed",
        "",
        f"Sessions of {turns} turns; the budget is {BUDGET_SHARE:.0%} of the last turn's size. "
        "Counts are over all turns of a session (facts: planted facts x turns); a fact is kept "
        "when its marker line is still in the body, lost in dropped when the entry holding it "
        "was trimmed on purpose (dropped, its output elided, its middle cut); "
        "a fact lost outside says where it was planted and what was "
        "done to the entry holding it. ms: the second of two runs of each turn (counts warm). "
        "The naive window counts as the optimizer does.",
        "",
    ]
    cells = quality(sizes, turns, policies, count)
    report += quality_table(cells)
    verdicts = quality_targets(cells)
    if use_llama:
        replay_turns = args.replay_turns or (10 if args.quick else 40)
        budget = args.ctx - REPLAY_MAX_TOKENS - REPLAY_MARGIN
        with llama_server(binary, model, args.ctx) as client:
            summarize = llama_summarizer(client, args.ctx)
            report += [
                "",
                "## Accepted by llama-server",
                "",
                f"Each format's last turn of a {turns}-turn session (sized 1.6 times the budget in "
                "UTF-8 bytes / 4), "
                f"optimized for -c {args.ctx} (budget {budget:,}), translated to chat "
                "completions, max_tokens 1.",
                "",
                *acceptance(client, policies, budget, turns, count, summarize),
                "",
                "## Replayed against llama-server",
                "",
                f"`-c {args.ctx} --parallel 1`, cache_prompt on every request. new tokens: what "
                "the turn added to the whole transcript; prompt_n: what llama-server processed; "
                "trim: the optimizer dropped, cut or summarized; rewrite: an earlier entry "
                "changed otherwise.",
                "",
            ]
            lines, replay_verdicts = replay_section(
                client,
                args.replay_kind,
                replay_turns,
                tokens=replay_turns * 150,
                policies=policies,
                budget=budget,
                count=count,
                summarize=summarize,
            )
            report += lines
            verdicts += replay_verdicts
    else:
        why = "--quick without --llama-server" if args.quick else f"missing {binary} or {model}"
        report += ["", f"llama-server sections skipped ({why}).", ""]
    report += [
        "",
        "## Targets (reported, not asserted)",
        "",
        *verdicts,
        "",
        harness.end_line(began),
    ]
    text = "\n".join(report) + "\n"
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    harness.run_main(main)
