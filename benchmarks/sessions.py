"""Agent sessions for the prompt optimizer's benchmark, in the three wire formats agents send.

`session(kind, seed, turns, tokens=...)` is the request body of every turn of one coding session,
as the client re-sends it: turn k's body is turn k-1's with the model's reply and the next tool
results (and now and then a word from the user) appended. One seed gives the same session in
each format:

- "anthropic": Claude Code's Messages requests (system text blocks with cache_control, tools
  with input_schema, thinking and parallel tool_use blocks, tool_result blocks holding a string
  or text blocks, some with is_error);
- "responses": Codex's Responses requests (instructions; message, reasoning, function_call and
  function_call_output items);
- "chat": chat completions (system, user, assistant tool_calls, tool messages).

What the tools return is what fills real transcripts: the same files read again and again (some
edited between reads), test runs, build logs with long runs of identical lines, listings, search
hits. The last body weighs about `tokens` (counted as UTF-8 bytes / 4).

Facts are planted where an optimizer must keep them — the system prompt, the task, a decision the
model states mid-session, and one tool result (or user word) per turn — as marker lines such as
`FACT-R3-1f0a: the flaky test is test_retry_backoff.`; `facts(body)` finds them and says where
each was planted. `problems(kind, body)` checks a body against its API's structural rules.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

Body = dict[str, Any]

KINDS = ("anthropic", "responses", "chat")
PLACES = ("system", "task", "decision", "early result", "older result", "recent")
ROOT = "/home/dev/shipyard"


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_FACT = re.compile(r"FACT-(S|U|D|[RI]\d+)-[0-9a-f]{4}: [a-z0-9 _./-]+\.")
_NOUNS = _words(
    "config retry backoff request session cache token ledger queue worker shard lease "
    "route buffer parser schema record batch client server socket deadline budget "
    "window slot"
)
_VERBS = _words("load parse build send merge check render flush reset apply fetch store split")
_WORDS = _words(
    "the a model request file test value every when then only before after keeps "
    "returns reads writes fails passes which that with without from into over under "
    "each one"
)


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(_WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def _ident(rng: random.Random) -> str:
    return f"{rng.choice(_VERBS)}_{rng.choice(_NOUNS)}"


def _fact(rng: random.Random, tag: str) -> str:
    subject = rng.choice(
        (
            f"the deploy port is {rng.randrange(20000, 60000)}",
            f"the flaky test is test_{_ident(rng)}",
            f"the release branch is release/{rng.randrange(1, 9)}.{rng.randrange(0, 20)}",
            f"the api key lives in vault path kv/{rng.choice(_NOUNS)}/{rng.randrange(100, 999)}",
            f"the retry limit stays at {rng.randrange(3, 12)}",
        )
    )
    return f"FACT-{tag}-{rng.getrandbits(16):04x}: {subject}."


# -- the session, format-neutral -------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One tool call and what it returned. `tool` is read, bash, edit or grep."""

    id: str
    tool: str
    args: dict[str, str]
    result: str
    is_error: bool
    as_blocks: bool  # Anthropic: a list of text blocks rather than a string


@dataclass(frozen=True)
class Reply:
    """One turn of the model, and what the client sends back after it."""

    id: str
    thinking: str
    text: str
    calls: tuple[Call, ...]
    interjection: str  # the user's own words sent with the results, or ""


@dataclass(frozen=True)
class Script:
    system: str
    task: str
    replies: tuple[Reply, ...]


class _Repo:
    """The files the agent works on: generated on first read, changed by edits."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.files: dict[str, list[str]] = {}

    def new_path(self) -> str:
        package = self.rng.choice(("core", "net", "store", "cli"))
        return f"src/shipyard/{package}/{self.rng.choice(_NOUNS)}_{len(self.files)}.py"

    def create(self, path: str, size: int) -> list[str]:
        rng = self.rng
        lines = [f'"""{_sentence(rng, 12)}"""', "", "from __future__ import annotations", ""]
        lines += [f"import {m}" for m in rng.sample(("os", "re", "json", "time", "typing"), 3)]
        while True:  # at least one function, so that an edit finds a line to change
            lines += ["", "", f"def {_ident(rng)}(value: int, limit: int = 8) -> int:"]
            lines.append(f'    """{_sentence(rng, 10)}"""')
            for _ in range(rng.randrange(2, 6)):
                lines.append(f"    {rng.choice(_NOUNS)} = value * {rng.randrange(2, 99)}")
                lines.append(f"    if {rng.choice(_NOUNS)} > limit:")
                lines.append(f"        for item in range({rng.randrange(2, 30)}):")
                lines.append(f"            value += {_ident(rng)}(item)")
                lines.append("")
            lines.append("    return value")
            if sum(len(line) + 8 for line in lines) >= size:
                break
        self.files[path] = lines
        return lines

    def edit(self, path: str) -> tuple[str, str]:
        lines = self.files[path]
        candidates = [i for i, line in enumerate(lines) if line.startswith("    ") and "=" in line]
        i = self.rng.choice(candidates)
        old = lines[i]
        lines[i] = f"{old} + {self.rng.randrange(1, 9)}  # {_sentence(self.rng, 5)}"
        return old.strip(), lines[i].strip()


def _numbered(lines: list[str]) -> str:
    return "\n".join(f"{n:>6}\t{line}" for n, line in enumerate(lines, 1))


def _test_run(rng: random.Random, size: int, failing: bool) -> str:
    count = max(4, size // 80)
    out = [
        "=" * 29 + " test session starts " + "=" * 30,
        "platform linux -- Python 3.12.3, pytest-8.3.2, pluggy-1.5.0",
        f"rootdir: {ROOT}",
        f"collected {count} items",
        "",
    ]
    names = [f"tests/test_{rng.choice(_NOUNS)}.py::test_{_ident(rng)}" for _ in range(count)]
    for n, name in enumerate(names, 1):
        out.append(f"{name} PASSED{' ' * max(1, 70 - len(name))}[{100 * n // count:>3}%]")
    summary = f"{count} passed in {rng.uniform(1, 40):.2f}s"
    if failing:
        failed = names[rng.randrange(count)]
        out[5 + names.index(failed)] = out[5 + names.index(failed)].replace("PASSED", "FAILED")
        out += ["", "=" * 35 + " FAILURES " + "=" * 35, f"____ {failed.split('::')[1]} ____", ""]
        out += [f"    def {_ident(rng)}():", f">       assert {_ident(rng)}(3) == {7}"]
        out += ["E       assert 6 == 7", "", f"{failed.split('::')[0]}:{rng.randrange(9, 300)}"]
        out += [f"FAILED {failed} - assert 6 == 7"]
        summary = f"1 failed, {count - 1} passed in {rng.uniform(1, 40):.2f}s"
    out.append("=" * 25 + f" {summary} " + "=" * 25)
    return "\n".join(out)


def _build_log(rng: random.Random, size: int) -> str:
    out = [f"$ make build -j2 (in {ROOT})"]
    per_run = max(3, size // 3 // 70)
    for _ in range(max(1, size // 3 // 40)):
        out.append(
            f"   Compiling {rng.choice(_NOUNS)}-{rng.choice(_NOUNS)} v0.{rng.randrange(30)}.0"
        )
    warning = f"warning: unused import: `{rng.choice(_NOUNS)}::{rng.choice(_NOUNS)}` [-Wunused]"
    out += [warning] * per_run
    out += ["Waiting for file lock on build directory"] * per_run
    out.append(f"    Finished release [optimized] target(s) in {rng.uniform(10, 200):.2f}s")
    return "\n".join(out)


def _listing(rng: random.Random, size: int) -> str:
    out = ["total 4120"]
    for _ in range(max(2, size // 62)):
        name = f"{rng.choice(_NOUNS)}_{rng.randrange(1000)}.{rng.choice(('py', 'md', 'json'))}"
        out.append(
            f"-rw-r--r--  1 dev dev {rng.randrange(100, 90000):>6} Nov {rng.randrange(1, 29):>2}"
            f" 10:{rng.randrange(60):02d} {name}"
        )
    return "\n".join(out)


def _grep(rng: random.Random, repo: _Repo, size: int, pattern: str) -> str:
    paths = list(repo.files) or [repo.new_path()]
    out = []
    while sum(len(line) + 1 for line in out) < size:
        path = rng.choice(paths)
        out.append(f"{path}:{rng.randrange(1, 400)}:    {pattern} = {_ident(rng)}(value)")
    return "\n".join(out)


def _with_fact(rng: random.Random, text: str, fact: str) -> str:
    lines = text.split("\n")
    lines.insert(rng.randrange(len(lines) + 1), f"note: {fact}")
    return "\n".join(lines)


class _Writer:
    """Writes a script turn by turn, each turn's tool results weighing about `per_turn` bytes."""

    def __init__(self, seed: int, turns: int, tokens: int) -> None:
        self.rng = random.Random(seed)
        self.repo = _Repo(self.rng)
        self.turns = turns
        self.system_size = min(16_000, max(1_200, tokens * 4 // 25))
        self.per_turn = max(300, (tokens * 4 - self.system_size - 3_000) // max(1, turns - 1))
        self.read: list[str] = []
        self.edited: set[str] = set()

    def script(self) -> Script:
        rng = self.rng
        guidance = [_sentence(rng, rng.randrange(10, 25)) for _ in range(self.system_size // 90)]
        guidance.insert(len(guidance) // 2, _fact(rng, "S"))
        system = "You are a coding agent working in a git checkout.\n\n" + "\n".join(guidance)
        task = (
            f"The nightly build of {ROOT} fails since yesterday's merge. Find out why, fix it "
            f"and make the test suite pass. Keep in mind: {_fact(rng, 'U')} "
            f"{_sentence(rng, 20)}"
        )
        decision_turn = max(1, self.turns // 2)
        replies = tuple(self.reply(k, k == decision_turn) for k in range(1, self.turns))
        return Script(system, task, replies)

    def reply(self, turn: int, decision: bool) -> Reply:
        rng = self.rng
        count = rng.choice((1, 1, 2, 2, 3, 4))
        calls = [self.call(self.per_turn // count) for _ in range(count)]
        first = calls[0]
        fact = _fact(rng, f"R{turn}")
        calls[0] = Call(**{**first.__dict__, "result": _with_fact(rng, first.result, fact)})
        text = f"I'll look at {count} thing{'s' * (count > 1)} at once. {_sentence(rng, 8)}"
        if decision:
            text = f"Decision: {_fact(rng, 'D')} I will keep it that way from here on."
        interjection = ""
        if rng.random() < 0.15:
            interjection = f"Please also keep this in mind: {_fact(rng, f'I{turn}')}"
        return Reply(
            id=f"{rng.getrandbits(64):016x}",
            thinking=" ".join(_sentence(rng, rng.randrange(8, 30)) for _ in range(3)),
            text=text,
            calls=tuple(calls),
            interjection=interjection,
        )

    def call(self, size: int) -> Call:
        rng = self.rng
        size = max(120, int(size * rng.uniform(0.6, 1.4)))
        roll = rng.random()
        is_error = False
        if roll < 0.4:
            if self.read and rng.random() < 0.6:
                path = rng.choice(self.read)
                lines = self.repo.files[path]
            else:
                path = self.repo.new_path()
                lines = self.repo.create(path, size)
                self.read.append(path)
            tool, args, result = "read", {"path": path}, _numbered(lines)
        elif roll < 0.55 and self.read:
            path = rng.choice(self.read)
            old, new = self.repo.edit(path)
            tool, args = "edit", {"path": path, "old": old, "new": new}
            result = f"The file {path} has been updated."
        elif roll < 0.7:
            is_error = rng.random() < 0.3
            args = {"command": "python -m pytest -q tests"}
            tool, result = "bash", _test_run(rng, size, is_error)
        elif roll < 0.8:
            tool, args, result = "bash", {"command": "make build"}, _build_log(rng, size)
        elif roll < 0.9:
            tool, args = "bash", {"command": f"ls -la {ROOT}/src/shipyard"}
            result = _listing(rng, size)
        else:
            pattern = rng.choice(_NOUNS)
            tool, args, result = "grep", {"pattern": pattern}, _grep(rng, self.repo, size, pattern)
        return Call(
            id=f"{rng.getrandbits(96):024x}",
            tool=tool,
            args=args,
            result=result,
            is_error=is_error,
            as_blocks=rng.random() < 0.3,
        )


def script(seed: int, turns: int, tokens: int) -> Script:
    """The session, format-neutral: `turns` requests whose last weighs about `tokens`."""
    return _Writer(seed, turns, tokens).script()


# -- the three formats -------------------------------------------------------------------------

_TOOLS = {
    # neutral tool -> (anthropic, responses, chat) name, with the neutral args renamed
    "read": ("Read", "shell_command", "read_file"),
    "edit": ("Edit", "apply_patch", "edit_file"),
    "bash": ("Bash", "shell_command", "run_command"),
    "grep": ("Grep", "shell_command", "search"),
}
_SCHEMAS: dict[str, dict[str, str]] = {
    "Read": {"file_path": "The absolute path to the file to read"},
    "Edit": {
        "file_path": "The absolute path to the file to modify",
        "old_string": "The text to replace",
        "new_string": "The text to replace it with",
    },
    "Bash": {"command": "The command to execute", "description": "What it does, in 5-10 words"},
    "Grep": {"pattern": "The regular expression to search for", "path": "Where to search"},
    "shell_command": {
        "command": "The shell script to execute in the user's default shell",
        "workdir": "The working directory to execute the command in",
    },
    "apply_patch": {"input": "The entire contents of the apply_patch command"},
    "read_file": {"path": "Path of the file, relative to the repository"},
    "edit_file": {"path": "Path of the file", "old": "Exact text to replace", "new": "New text"},
    "run_command": {"command": "A shell command to run in the repository"},
    "search": {"pattern": "A regular expression to look for in the repository"},
}


def _schema(name: str) -> dict[str, Any]:
    properties = {
        key: {"type": "string", "description": text} for key, text in _SCHEMAS[name].items()
    }
    return {"type": "object", "properties": properties, "required": [next(iter(properties))]}


def _description(name: str) -> str:
    return f"{name}: " + " ".join(f"Takes {key}: {text}." for key, text in _SCHEMAS[name].items())


def _arguments(kind: str, call: Call) -> tuple[str, dict[str, str]]:
    """The tool's name and arguments as `kind`'s agent calls it."""
    name = _TOOLS[call.tool][KINDS.index(kind)]
    a = call.args
    if kind == "chat":
        return name, dict(a)
    if kind == "anthropic":
        if call.tool == "bash":
            return name, {"command": a["command"], "description": "Run it"}
        if call.tool == "grep":
            return name, {"pattern": a["pattern"], "path": ROOT}
        args = {"file_path": f"{ROOT}/{a['path']}"}
        if call.tool == "edit":
            args |= {"old_string": a["old"], "new_string": a["new"]}
        return name, args
    if call.tool == "edit":
        patch = f"*** Begin Patch\n*** Update File: {a['path']}\n-{a['old']}\n+{a['new']}\n"
        return name, {"input": patch + "*** End Patch"}
    command = {"read": f"cat -n {a.get('path')}", "grep": f"rg -n {a.get('pattern')}"}
    return name, {"command": command.get(call.tool, a.get("command", "")), "workdir": ROOT}


def _anthropic(script: Script) -> Iterator[Body]:
    names = ("Read", "Edit", "Bash", "Grep")
    base: Body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 32000,
        "stream": True,
        "system": [
            {
                "type": "text",
                "text": "You are Claude Code, Anthropic's official CLI for Claude.",
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "text", "text": script.system, "cache_control": {"type": "ephemeral"}},
        ],
        "tools": [
            {"name": n, "description": _description(n), "input_schema": _schema(n)} for n in names
        ],
        "metadata": {"user_id": "user_0f3a_account_7c1e_session_b2926df2"},
    }
    reminder = "<system-reminder>\nThe working directory is a git checkout.\n</system-reminder>"
    task = {"type": "text", "text": script.task, "cache_control": {"type": "ephemeral"}}
    messages: list[Body] = [{"role": "user", "content": [{"type": "text", "text": reminder}, task]}]
    yield {**base, "messages": list(messages)}
    for reply in script.replies:
        content: list[Body] = [
            {"type": "thinking", "thinking": reply.thinking, "signature": f"sig{reply.id}"},
            {"type": "text", "text": reply.text},
        ]
        results: list[Body] = []
        for call in reply.calls:
            name, args = _arguments("anthropic", call)
            tool_id = f"toolu_01{call.id[:22]}"
            content.append({"type": "tool_use", "id": tool_id, "name": name, "input": args})
            result: Body = {
                "type": "tool_result",
                "tool_use_id": tool_id,
                "content": [{"type": "text", "text": call.result}]
                if call.as_blocks
                else call.result,
            }
            if call.is_error:
                result["is_error"] = True
            results.append(result)
        if reply.interjection:
            results.append({"type": "text", "text": reply.interjection})
        messages += [
            {"role": "assistant", "content": content},
            {"role": "user", "content": results},
        ]
        yield {**base, "messages": list(messages)}


def _responses(script: Script) -> Iterator[Body]:
    base: Body = {
        "model": "gpt-5-codex",
        "instructions": script.system,
        "tools": [
            {
                "type": "function",
                "name": n,
                "description": _description(n),
                "strict": False,
                "parameters": _schema(n),
            }
            for n in ("shell_command", "apply_patch")
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "store": False,
        "stream": True,
        "prompt_cache_key": "0199f3c2-5f0e-7a31-b1d2-3c4d5e6f7a8b",
    }
    environment = f"<environment_context>\n  <cwd>{ROOT}</cwd>\n  <shell>bash</shell>\n"
    items: list[Body] = [
        _message("user", environment + "</environment_context>"),
        _message("user", script.task),
    ]
    yield {**base, "input": list(items)}
    for reply in script.replies:
        summary = [{"type": "summary_text", "text": reply.thinking}]
        items.append({"type": "reasoning", "id": f"rs_{reply.id}", "summary": summary})
        items.append(_message("assistant", reply.text))
        outputs = []
        for call in reply.calls:
            name, args = _arguments("responses", call)
            call_id = f"call_{call.id}"
            arguments = json.dumps(args)
            items.append(
                {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}
            )
            text = f"Exit code: 1\nOutput:\n{call.result}" if call.is_error else call.result
            outputs.append({"type": "function_call_output", "call_id": call_id, "output": text})
        items += outputs
        if reply.interjection:
            items.append(_message("user", reply.interjection))
        yield {**base, "input": list(items)}


def _message(role: str, text: str) -> Body:
    part = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": part, "text": text}]}


def _chat(script: Script) -> Iterator[Body]:
    base: Body = {
        "model": "qwen3-coder-30b",
        "stream": True,
        "max_tokens": 4096,
        "tools": [
            {
                "type": "function",
                "function": {"name": n, "description": _description(n), "parameters": _schema(n)},
            }
            for n in ("read_file", "edit_file", "run_command", "search")
        ],
    }
    messages: list[Body] = [
        {"role": "system", "content": script.system},
        {"role": "user", "content": script.task},
    ]
    yield {**base, "messages": list(messages)}
    for reply in script.replies:
        calls = []
        results: list[Body] = []
        for call in reply.calls:
            name, args = _arguments("chat", call)
            call_id = f"call_{call.id}"
            function = {"name": name, "arguments": json.dumps(args)}
            calls.append({"id": call_id, "type": "function", "function": function})
            text = f"Error: {call.result}" if call.is_error else call.result
            results.append({"role": "tool", "tool_call_id": call_id, "content": text})
        messages.append({"role": "assistant", "content": reply.text, "tool_calls": calls})
        messages += results
        if reply.interjection:
            messages.append({"role": "user", "content": reply.interjection})
        yield {**base, "messages": list(messages)}


_RENDER = {"anthropic": _anthropic, "responses": _responses, "chat": _chat}


def session(kind: str, seed: int, turns: int, *, tokens: int = 60_000) -> list[Body]:
    """The request body of each of `turns` turns of one session in format `kind` (see KINDS);
    the last weighs about `tokens`. Bodies share their message objects, as a client's re-sent
    transcript shares its history: treat them as read-only."""
    return list(_RENDER[kind](script(seed, turns, tokens)))


def transcript(kind: str, body: Body) -> list[Body]:
    """The list a body's history is in: `messages`, or Responses' `input`."""
    items: list[Body] = body["input" if kind == "responses" else "messages"]
    return items


def size(body: Body) -> int:
    """The benchmark's sizing measure: UTF-8 bytes of the JSON body / 4."""
    return len(json.dumps(body, ensure_ascii=False).encode()) // 4


# -- planted facts -----------------------------------------------------------------------------


def facts(body: Body) -> dict[str, str]:
    """Every planted fact in `body` (its whole marker line) and where it was planted: one of
    PLACES. "recent" is a tool result or user word of the last two turns."""
    found = {m.group(0): m.group(1) for m in _FACT.finditer(json.dumps(body, ensure_ascii=False))}
    turns = [int(tag[1:]) for tag in found.values() if tag[0] in "RI"]
    last = max(turns, default=0)
    named = {"S": "system", "U": "task", "D": "decision"}
    out = {}
    for marker, tag in found.items():
        if tag in named:
            out[marker] = named[tag]
        elif int(tag[1:]) >= last - 1:
            out[marker] = "recent"
        else:
            out[marker] = "early result" if tag == "R1" else "older result"
    return out


# -- structural validity -----------------------------------------------------------------------


def problems(kind: str, body: Body) -> list[str]:
    """What makes `body` a request its API would refuse or misread (empty when none): every
    tool call answered and every answer matching a call, roles where the API wants them, the
    first non-system message the user's."""
    try:
        return _CHECKS[kind](body)
    except (KeyError, TypeError, AttributeError) as exc:
        return [f"malformed: {exc!r}"]


def _blocks(content: Any) -> list[Body]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _anthropic_problems(body: Body) -> list[str]:
    out = []
    system = body.get("system", [])
    if not isinstance(system, str) and any(b.get("type") != "text" for b in system):
        out.append("system: only text blocks")
    # The API reads consecutive messages of one role as one turn.
    turns: list[tuple[str, list[Body]]] = []
    for i, message in enumerate(body["messages"]):
        role = message["role"]
        if role not in ("user", "assistant"):
            out.append(f"messages[{i}]: role {role!r}")
        blocks = _blocks(message["content"])
        if not blocks:
            out.append(f"messages[{i}]: no content")
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    if not turns or turns[0][0] != "user":
        out.append("the first message must be the user's")
    calls: set[str] = set()  # tool_use ids of the assistant turn before
    seen: Counter[str] = Counter()
    for n, (role, blocks) in enumerate(turns):
        results = [b["tool_use_id"] for b in blocks if b.get("type") == "tool_result"]
        if role == "assistant":
            if results:
                out.append(f"turn {n}: tool_result in an assistant turn")
            calls = {b["id"] for b in blocks if b.get("type") == "tool_use"}
            seen.update(calls)
            continue
        is_result = [b.get("type") == "tool_result" for b in blocks]
        if is_result != sorted(is_result, reverse=True):
            out.append(f"turn {n}: tool_result blocks must come first")
        if set(results) != calls or len(results) != len(set(results)):
            out.append(f"turn {n}: results {sorted(results)} do not match calls {sorted(calls)}")
        calls = set()
    if calls:
        out.append("the last assistant turn's tool calls have no results")
    out += [f"tool_use id {key!r} used twice" for key, n in seen.items() if n > 1]
    return out


def _chat_problems(body: Body) -> list[str]:
    out = []
    messages = body["messages"]
    rest = [m for m in messages if m["role"] != "system"]
    if not rest or rest[0]["role"] != "user":
        out.append("the first non-system message must be the user's")
    if any(m["role"] == "system" for m in messages[len(messages) - len(rest) :]):
        out.append("a system message after the conversation began")
    open_calls: set[str] = set()
    for i, message in enumerate(messages):
        role = message["role"]
        if role == "tool":
            if message["tool_call_id"] not in open_calls:
                out.append(f"messages[{i}]: tool message answers no open call")
            open_calls.discard(message["tool_call_id"])
            continue
        if open_calls:
            out.append(f"messages[{i}]: calls {sorted(open_calls)} have no tool message")
        open_calls = set()
        if role == "assistant":
            calls = message.get("tool_calls") or []
            open_calls = {call["id"] for call in calls}
            if not calls and message.get("content") is None:
                out.append(f"messages[{i}]: an assistant message with neither content nor calls")
        elif role not in ("system", "user"):
            out.append(f"messages[{i}]: role {role!r}")
    if open_calls:
        out.append(f"calls {sorted(open_calls)} have no tool message")
    return out


def _responses_problems(body: Body) -> list[str]:
    out = []
    items = body["input"]
    if not isinstance(body.get("instructions", ""), str):
        out.append("instructions: not a string")
    first = next(
        (it for it in items if it.get("role") not in ("system", "developer")),
        None,
    )
    if first is None or first.get("type", "message") != "message" or first["role"] != "user":
        out.append("the first non-system item must be a user message")
    calls: set[str] = set()
    answered: set[str] = set()
    for i, item in enumerate(items):
        kind = item.get("type", "message")
        if kind == "function_call":
            if item["call_id"] in calls:
                out.append(f"input[{i}]: call_id used twice")
            calls.add(item["call_id"])
            json.loads(item["arguments"])
        elif kind == "function_call_output":
            if item["call_id"] not in calls or item["call_id"] in answered:
                out.append(f"input[{i}]: output answers no earlier call (or one twice)")
            answered.add(item["call_id"])
        elif kind == "reasoning":
            after = items[i + 1].get("type", "message") if i + 1 < len(items) else None
            if after not in ("message", "function_call"):
                out.append(f"input[{i}]: reasoning not followed by its message or call")
        elif kind != "message" or item["role"] not in ("user", "assistant", "system", "developer"):
            out.append(f"input[{i}]: item {kind!r}")
    if calls - answered:
        out.append(f"calls {sorted(calls - answered)} have no output")
    return out


_CHECKS = {
    "anthropic": _anthropic_problems,
    "responses": _responses_problems,
    "chat": _chat_problems,
}
