"""The optimizer: a request body in, the body to send out, and what was done — pure and sync.

Kept verbatim always: system prompt(s) and tool definitions, the first user turn (the task),
the last user turn, the newest unit (see `transcript.py` for units). Over the budget, a trim
cuts to `target` x budget, so the turns that follow fit without another trim:

1. (`trim`) old tool outputs over `elide_over` tokens become a stub naming the tool and size;
2. the oldest middle units are dropped (the first user turn then carries a one-line note);
3. (`trim`) the oldest kept message that is still too big is cut in its middle.

`sliding_window` does only step 2 (no stubs, cuts or note); `strict_error` refuses (`TooLong`).
A trim is remembered per session (`Memory`): the next turns re-apply the very same edits to the
same prefix, so the prompt the model server sees starts with the same tokens turn after turn and
its prompt cache keeps hitting, until the transcript outgrows the budget again.

`always` also, on every request, points duplicate tool outputs and file reads at their latest
copy and collapses long runs of repeated lines (`dedup.py`).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from hashlib import blake2b
from typing import Any

from trioswap.optimizer import dedup
from trioswap.optimizer.summary import Turn, summary_message_text
from trioswap.optimizer.transcript import (
    IMAGE_TOKENS,
    Entry,
    Family,
    TextRef,
    Transcript,
    Unit,
    strings,
    with_note,
    with_text,
)

POLICIES = ("off", "limit_only", "always", "llm_assisted")
TRUNCATIONS = ("trim", "sliding_window", "strict_error")
# A cut keeps at least this many characters at each end of a text.
_CUT_KEEP = 400
_MARK = "trioswap"


@dataclass(frozen=True, slots=True)
class Settings:
    policy: str
    truncation: str = "trim"
    budget: int = 0
    target: float = 0.7
    elide_over: int = 256


@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # elided, deduplicated, collapsed, dropped, cut, summarized
    index: int  # the entry's position in the transcript as the client sent it
    detail: str
    saved: int  # tokens


@dataclass(frozen=True)
class Outcome:
    body: Mapping[str, Any]
    before: int
    after: int
    budget: int
    actions: tuple[Action, ...] = ()
    # Still over the budget after everything the policy may do.
    over: bool = False
    # A new trim was made on this request (not a remembered one re-applied).
    trimmed: bool = False
    dropped: tuple[int, ...] = ()
    # The trim applied (made or remembered), for `with_summary`.
    plan: _Plan | None = field(default=None, repr=False, compare=False)

    @property
    def changed(self) -> bool:
        return bool(self.actions)


class TooLong(Exception):
    """`strict_error`: the prompt does not fit."""

    def __init__(self, tokens: int, budget: int) -> None:
        super().__init__(
            f"prompt is too long: {tokens} tokens, more than the {budget} this model's context "
            "leaves for a prompt"
        )
        self.tokens = tokens
        self.budget = budget


@dataclass
class _Plan:
    """A trim, as re-applied to the following turns of its session."""

    upto: int
    fingerprint: bytes
    edits: dict[int, Any]
    dropped: frozenset[int]
    actions: tuple[Action, ...]
    note_index: int | None = None
    note_base: Any = None


@dataclass
class Memory:
    """The trims of recent sessions (one Memory per model), least recently used dropped first.
    Sessions are keyed by how they start; sessions that start alike (one task, two terminals)
    keep a plan each under one key."""

    capacity: int = 512
    plans_per_key: int = 8
    _plans: OrderedDict[bytes, list[_Plan]] = field(default_factory=OrderedDict)

    def get(self, key: bytes) -> list[_Plan]:
        plans = self._plans.get(key)
        if plans is None:
            return []
        self._plans.move_to_end(key)
        return plans

    def put(self, key: bytes, plan: _Plan, items: Sequence[Any]) -> None:
        """Remember `plan`, made for `items`, in place of the plans of its own session."""
        kept = [p for p in self._plans.get(key, ()) if not _applies(p, items)]
        self._plans[key] = [plan, *kept][: self.plans_per_key]
        self._plans.move_to_end(key)
        while len(self._plans) > self.capacity:
            self._plans.popitem(last=False)


class _Work:
    """The transcript being edited, with each entry's token count and the total kept current."""

    def __init__(
        self, transcript: Transcript, count: Callable[[str], int], per_message: int, fixed: int
    ) -> None:
        self.transcript = transcript
        self.count = count
        self.per_message = per_message
        self.items = list(transcript.items)
        self.counts = [entry_tokens(item, count, per_message) for item in self.items]
        # As the client sent them: what a dropped entry saved, whatever was elided in it first.
        self.original = list(self.counts)
        self.kept = [True] * len(self.items)
        self.total = fixed + sum(self.counts)
        self.actions: list[Action] = []

    def set(self, index: int, item: Any) -> int:
        """Replace entry `index`; the tokens saved."""
        old = self.counts[index]
        self.items[index] = item
        self.counts[index] = entry_tokens(item, self.count, self.per_message)
        if self.kept[index]:
            self.total += self.counts[index] - old
        return old - self.counts[index]

    def keep(self, index: int, kept: bool) -> None:
        if self.kept[index] != kept:
            self.kept[index] = kept
            self.total += self.counts[index] if kept else -self.counts[index]


def entry_tokens(item: Any, count: Callable[[str], int], per_message: int) -> int:
    texts: list[str] = []
    images = strings(item, texts)
    return per_message + images * IMAGE_TOKENS + sum(count(t) for t in texts)


def fixed_tokens(transcript: Transcript, count: Callable[[str], int], per_request: int) -> int:
    total = per_request
    for value in transcript.fixed():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        total += count(text)
    return total


def optimize(
    body: Mapping[str, Any],
    family: Family,
    settings: Settings,
    count: Callable[[str], int],
    memory: Memory | None = None,
    *,
    per_message: int = 8,
    per_request: int = 16,
) -> Outcome:
    """`body` fitted into `settings.budget` tokens as `settings.policy` says (see the module's
    docstring). Raises `TooLong` for `strict_error` over the budget."""
    transcript = Transcript(body, family)
    work = _Work(transcript, count, per_message, fixed_tokens(transcript, count, per_request))
    before = work.total
    budget = settings.budget
    if settings.policy == "off" or not work.items:
        return Outcome(body, before, before, budget, over=before > budget)
    if settings.policy == "always":
        _deduplicate(work)
    key = _session_key(transcript)
    plans = memory.get(key) if memory is not None else []
    plan = next((p for p in plans if _applies(p, transcript.items)), None)
    if plan is not None:
        undo = _apply(work, plan)
        if work.total <= budget:
            return _outcome(work, before, budget, plan, trimmed=False)
        _undo(work, plan, undo)
    if work.total <= budget:
        return _outcome(work, before, budget, None, trimmed=False)
    if settings.truncation == "strict_error":
        raise TooLong(work.total, budget)
    plan = _trim(work, settings)
    if memory is not None:
        memory.put(key, plan, transcript.items)
    return _outcome(work, before, budget, plan, trimmed=True)


def dropped_turns(body: Mapping[str, Any], family: Family, dropped: Sequence[int]) -> list[Turn]:
    """The dropped entries as text turns, for a summary."""
    transcript = Transcript(body, family)
    names = {c.id: c.name for c in transcript.calls_by_id().values()}
    turns: list[Turn] = []
    for index in dropped:
        entry = transcript.entries[index]
        parts = [t.text for t in entry.texts if t.output_of is None]
        parts += [f"{c.name}({json.dumps(c.arguments, ensure_ascii=False)})" for c in entry.calls]
        parts += [
            f"result of {names.get(t.output_of, 'a tool')}: {t.text}"
            for t in entry.texts
            if t.output_of is not None
        ]
        if parts:
            # An Anthropic user turn that only carries tool results is a tool turn.
            role = "tool" if entry.answers and not entry.user_words else entry.role
            turns.append(Turn(role, "\n".join(parts)))
    return turns


def with_summary(
    outcome: Outcome,
    family: Family,
    summary: str,
    count: Callable[[str], int],
    per_message: int = 8,
) -> Outcome | None:
    """`outcome` with its note on dropped entries replaced by `summary`, and its session's trim
    remembered with it (the next turns re-apply the summary); None if there is no note to
    replace, the note's message was cut since, or the summary would not fit the budget."""
    plan = outcome.plan
    if plan is None or plan.note_index is None or not outcome.dropped:
        return None
    note_at = plan.note_index
    if any(a.kind == "cut" and a.index == note_at for a in plan.actions):
        return None
    key = "input" if family == "responses" else "messages"
    sent = outcome.body.get(key)
    if not isinstance(sent, list):
        return None
    dropped = set(plan.dropped)
    position = sum(1 for i in range(note_at) if i not in dropped)
    items = list(sent)
    summarized = with_note(family, plan.note_base, summary_message_text(summary, len(dropped)))
    grows = entry_tokens(summarized, count, per_message) - entry_tokens(
        items[position], count, per_message
    )
    if outcome.after + grows > outcome.budget:
        return None
    items[position] = summarized
    plan.edits[note_at] = summarized
    plan.actions = (
        *(a for a in plan.actions if a.kind != "noted"),
        Action("summarized", note_at, f"{len(dropped)} dropped entries summarized", 0),
    )
    actions = (*(a for a in outcome.actions if a.kind != "noted"), plan.actions[-1])
    return replace(
        outcome, body={**outcome.body, key: items}, after=outcome.after + grows, actions=actions
    )


def _outcome(work: _Work, before: int, budget: int, plan: _Plan | None, trimmed: bool) -> Outcome:
    if not work.actions:
        return Outcome(work.transcript.body, before, before, budget, over=before > budget)
    kept = [item for item, k in zip(work.items, work.kept, strict=True) if k]
    after = work.total
    return Outcome(
        work.transcript.with_items(kept),
        before,
        after,
        budget,
        tuple(
            sorted(
                (a for a in work.actions if a.kind == "dropped" or work.kept[a.index]),
                key=lambda a: (a.index, a.kind),
            )
        ),
        after > budget,
        trimmed,
        tuple(sorted(plan.dropped)) if plan else (),
        plan,
    )


def _session_key(transcript: Transcript) -> bytes:
    head = [transcript.family, transcript.body.get("system"), transcript.body.get("instructions")]
    head += transcript.items[:2]
    return blake2b(json.dumps(head, default=str).encode(), digest_size=16).digest()


def _fingerprint(items: Sequence[Any], upto: int) -> bytes:
    digest = blake2b(digest_size=16)
    for item in items[:upto]:
        digest.update(json.dumps(item, default=str).encode())
        digest.update(b"\x00")
    return digest.digest()


def _applies(plan: _Plan, items: Sequence[Any]) -> bool:
    return len(items) >= plan.upto and _fingerprint(items, plan.upto) == plan.fingerprint


def _apply(work: _Work, plan: _Plan) -> dict[int, Any]:
    """Re-apply `plan`; what `_undo` needs to take it back."""
    undo = {index: work.items[index] for index in plan.edits}
    for index, item in plan.edits.items():
        work.set(index, item)
    for index in plan.dropped:
        work.keep(index, False)
    work.actions.extend(plan.actions)
    return undo


def _undo(work: _Work, plan: _Plan, undo: dict[int, Any]) -> None:
    for index, item in undo.items():
        work.set(index, item)
    for index in plan.dropped:
        work.keep(index, True)
    del work.actions[len(work.actions) - len(plan.actions) :]


def _protected(entries: Sequence[Entry], units: Sequence[Unit]) -> set[int]:
    """Units never dropped: system ones, the first and last user turns, the newest unit (and
    the one before it when the newest is a user turn)."""
    keep = {i for i, u in enumerate(units) if u.role == "system"}
    with_words = [i for i, u in enumerate(units) if any(entries[e].user_words for e in u.indices)]
    if with_words:
        keep.update((with_words[0], with_words[-1]))
    if units:
        keep.add(len(units) - 1)
        if units[-1].role == "user" and len(units) > 1:
            keep.add(len(units) - 2)
    return keep


def _task_index(entries: Sequence[Entry]) -> int | None:
    """The entry that carries the note on dropped turns: the first user turn's words."""
    for entry in entries:
        if entry.user_words:
            return entry.index
    return None


def _trim(work: _Work, settings: Settings) -> _Plan:
    transcript = work.transcript
    entries, units = transcript.entries, transcript.units
    goal = int(settings.budget * settings.target)
    protected = _protected(entries, units)
    droppable = [u for i, u in enumerate(units) if i not in protected]
    trim = settings.truncation == "trim"
    before_trim = list(work.items)
    note_index = _task_index(entries) if trim else None
    # Room for the note on dropped entries, so that adding it keeps the trim within its goal.
    room = work.count(_note_text(10**6, 10**9)) + work.per_message if note_index is not None else 0
    if trim:
        _elide(work, droppable, settings.elide_over, goal - room)
    dropped = _drop(work, units, protected, goal - room)
    note_base = None
    if note_index is not None and dropped and work.kept[note_index]:
        note_base = work.items[note_index]
        _note(work, note_index, dropped)
    else:
        note_index = None
    if trim and work.total > goal:
        _cut(work, units, protected, settings.elide_over, goal)
    # What the trim changed in kept entries; dedup's own edits (`always`) are redone per request.
    edits = {
        i: item for i, item in enumerate(work.items) if work.kept[i] and item is not before_trim[i]
    }
    return _Plan(
        upto=len(transcript.items),
        fingerprint=_fingerprint(transcript.items, len(transcript.items)),
        edits=edits,
        dropped=frozenset(dropped),
        actions=tuple(
            a
            for a in work.actions
            if a.kind not in ("deduplicated", "collapsed")
            and (a.kind == "dropped" or work.kept[a.index])
        ),
        note_index=note_index,
        note_base=note_base,
    )


def _elide(work: _Work, droppable: Sequence[Unit], over: int, goal: int) -> None:
    names = {c.id: c.name for c in work.transcript.calls_by_id().values()}
    for unit in droppable:
        for index in unit.indices:
            for ref in work.transcript.entries[index].texts:
                if work.total <= goal:
                    return
                if ref.output_of is None:
                    continue
                current = _current_text(work.items[index], ref)
                tokens = work.count(current)
                if tokens <= over or current.startswith(f"[{_MARK}:"):
                    continue
                tool = names.get(ref.output_of, "a tool")
                stub = (
                    f"[{_MARK}: output of {tool} elided to fit the context window: "
                    f"{tokens} tokens, {len(current)} characters]"
                )
                saved = work.set(index, with_text(work.items[index], ref.slot, stub))
                work.actions.append(Action("elided", index, f"output of {tool}", saved))


def _drop(work: _Work, units: Sequence[Unit], protected: set[int], goal: int) -> list[int]:
    dropped: list[int] = []
    position = 0
    while position < len(units) and work.total > goal:
        unit = units[position]
        position += 1
        if position - 1 in protected:
            continue
        _drop_unit(work, unit, dropped)
    # A user turn left right after the task would make two user turns in a row, which strict
    # chat templates refuse: drop it too when it may be dropped.
    if (
        dropped
        and position < len(units)
        and position not in protected
        and units[position].role == "user"
        and units[position - 1].first in dropped
    ):
        _drop_unit(work, units[position], dropped)
    return dropped


def _drop_unit(work: _Work, unit: Unit, dropped: list[int]) -> None:
    saved = 0
    for index in unit.indices:
        work.keep(index, False)
        saved += work.original[index]
        dropped.append(index)
    work.actions.append(
        Action("dropped", unit.first, f"entries {unit.first}-{unit.last} ({unit.role})", saved)
    )


def _note_text(entries: int, tokens: int) -> str:
    return (
        f"[{_MARK}: {entries} earlier transcript entries ({tokens} tokens) after this "
        "message were removed to fit the model's context window]"
    )


def _note(work: _Work, index: int, dropped: Sequence[int]) -> None:
    note = _note_text(len(dropped), sum(work.original[i] for i in dropped))
    saved = work.set(index, with_note(work.transcript.family, work.items[index], note))
    work.actions.append(Action("noted", index, "note on the removed entries", saved))


def _cut(work: _Work, units: Sequence[Unit], protected: set[int], over: int, goal: int) -> None:
    order = [u for i, u in enumerate(units) if i not in protected] + [
        u for i, u in enumerate(units) if i in protected and u.role != "system"
    ]
    for unit in order:
        for index in unit.indices:
            if not work.kept[index]:
                continue
            for ref in work.transcript.entries[index].texts:
                excess = work.total - goal
                if excess <= 0:
                    return
                current = _current_text(work.items[index], ref)
                tokens = work.count(current)
                if tokens <= over:
                    continue
                cut = _cut_middle(current, tokens, excess)
                if cut is None:
                    continue
                saved = work.set(index, with_text(work.items[index], ref.slot, cut))
                work.actions.append(Action("cut", index, "middle of a long text cut", saved))


def _cut_middle(text: str, tokens: int, excess: int) -> str | None:
    """`text` without enough of its middle to save `excess` tokens (at most all but its ends),
    cut at line breaks where there are some."""
    chars_per_token = len(text) / max(tokens, 1)
    remove = int((excess + 16) * chars_per_token * 1.1)
    keep = max(_CUT_KEEP, (len(text) - remove) // 2)
    if 2 * keep >= len(text):
        return None
    head_end = text.rfind("\n", 0, keep) + 1 or keep
    tail_start = text.find("\n", len(text) - keep)
    tail_start = len(text) - keep if tail_start < 0 else tail_start + 1
    if tail_start <= head_end:
        return None
    cut_tokens = int((tail_start - head_end) / chars_per_token)
    return (
        f"{text[:head_end]}[… {_MARK}: about {cut_tokens} tokens cut here to fit the context "
        f"window …]\n{text[tail_start:]}"
    )


def _current_text(item: Any, ref: TextRef) -> str:
    value = item
    for step in ref.slot:
        value = value[step]
    return value if isinstance(value, str) else ref.text


# A near duplicate's pointer keeps at most this many lines the latest copy does not have.
_ONLY_HERE_LINES = 40


def _only_here(older: str, latest: str) -> str:
    """The lines of a near duplicate or an older read of a file that the latest copy lacks (a
    changed timing, one more failure, a line since edited): a pointer would lose them, so they
    stay, in order, marked as this copy's."""
    newer = set(latest.splitlines())
    lines = [line for line in older.splitlines() if line.strip() and line not in newer]
    if not lines:
        return ""
    shown = "\n".join(lines[:_ONLY_HERE_LINES])
    more = len(lines) - _ONLY_HERE_LINES
    tail = f"\n[… {more} more lines]" if more > 0 else ""
    return f"; lines only in this copy:\n{shown}{tail}"


def _deduplicate(work: _Work) -> None:
    """`always`: duplicate outputs become pointers to their latest copy; repeated lines are
    collapsed."""
    calls = work.transcript.calls_by_id()
    outputs: list[dedup.ToolOutput] = []
    refs: list[tuple[int, TextRef]] = []
    for entry in work.transcript.entries:
        for ref in entry.texts:
            if ref.output_of is None:
                continue
            call = calls.get(ref.output_of)
            key = len(refs)
            refs.append((entry.index, ref))
            outputs.append(
                dedup.ToolOutput(
                    key, call.name if call else "", call.arguments if call else {}, ref.text
                )
            )
    found = dedup.duplicates(outputs)
    for key, (index, ref) in enumerate(refs):
        duplicate = found.get(key)
        if duplicate is not None:
            latest = refs[duplicate.latest][1].output_of
            what = {"exact": "the same as", "near": "nearly the same as"}.get(
                duplicate.kind, "an older read of the same file as"
            )
            pointer = f"[{_MARK}: {what} the output of call {latest}, further below]"
            if duplicate.kind != "exact":
                pointer += _only_here(ref.text, refs[duplicate.latest][1].text)
            if saved := _rewrite(work, index, ref, pointer):
                detail = f"{duplicate.kind} of {latest}"
                work.actions.append(Action("deduplicated", index, detail, saved))
                continue
        collapsed, removed = dedup.collapse_repeats(ref.text)
        if removed and (saved := _rewrite(work, index, ref, collapsed)):
            work.actions.append(Action("collapsed", index, f"{removed} repeated lines", saved))


def _rewrite(work: _Work, index: int, ref: TextRef, text: str) -> int:
    """Put `text` at `ref` if that makes the entry smaller (a pointer with the lines only its
    copy had, or a collapsed run of short lines, may not); the tokens saved, 0 if not put."""
    before = work.items[index]
    saved = work.set(index, with_text(before, ref.slot, text))
    if saved <= 0:
        work.set(index, before)
        return 0
    return saved
