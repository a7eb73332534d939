"""The `always` policy's text transforms: superseded tool outputs and runs of repeated lines.

Pure functions over text. The caller owns the transcript: which message is a tool output, what a
pointer to the newest copy says, and where the edited text goes.

An output is superseded by a newer one when the newer one is the same text ("exact"), nearly the
same lines ("near"), or a read of the same file and range ("file": the newest read is what the
file holds now, even when the text differs).
"""

from __future__ import annotations

import posixpath
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from heapq import merge
from itertools import repeat
from operator import countOf
from typing import Any

# Near duplicates: Jaccard similarity of the multisets of non-empty lines at least 9/10, both
# counting lines and weighting each line by its length. A listing with one more file passes once
# it has nine lines, a test rerun whose timing line changed (one line out, one in) once it has
# nineteen; outputs that differ in more than a tenth of what they say stay apart, since pointing
# the older at the newer would lose what only the older says. The weighted check keeps one long
# unshared line (a stack trace on one line, a JSON blob) from hiding behind many short shared ones.
_NEAR = (9, 10)
# Below this many lines one changed line is already more than a tenth, so only reorderings could
# qualify; those say little, and small outputs save little.
_NEAR_MIN_LINES = 8

MARKER = "[… previous line repeated {} more times]"


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """One tool call's output, as the model sees it; outputs are given oldest first."""

    key: int  # the caller's id for this output
    tool: str  # the tool's name as the model called it; "" if unknown
    arguments: Mapping[str, Any]  # the call's parsed arguments; {} if unknown or unparsable
    text: str


@dataclass(frozen=True, slots=True)
class Duplicate:
    """How an output relates to the newest output that supersedes it.

    `kind` compares the output with `latest` itself, not with any copy in between: "exact" when
    the texts are equal, "file" when both read the same file and range, otherwise "near".
    """

    latest: int  # key of the newest copy
    kind: str  # "exact", "near" or "file"


def duplicates(outputs: Sequence[ToolOutput], min_chars: int = 200) -> dict[int, Duplicate]:
    """Outputs that a later one supersedes: key → the newest copy.

    Never maps the newest copy itself, never maps to an older output, and chains resolve to the
    newest (a→c, not a→b→c): each output steps to the newest later copy or reread of it, or to
    the next near duplicate, and so on until an output that nothing supersedes. Outputs shorter
    than `min_chars` are never superseded (a pointer would not save anything), though they may
    supersede others.
    """
    texts = [output.text for output in outputs]
    reads = [file_read(output.tool, output.arguments) for output in outputs]
    last_text = {text: index for index, text in enumerate(texts)}
    last_read = {read: index for index, read in enumerate(reads) if read is not None}
    near = _near_successors(last_text, min_chars)
    latest: dict[int, int] = {}
    # Newest first, so a successor's own target is known when an older output points at it.
    for index in reversed(range(len(outputs))):
        text = texts[index]
        if len(text) < min_chars:
            continue
        read = reads[index]
        successor = max(
            last_text[text],
            near.get(text, index),
            index if read is None else last_read[read],
        )
        if successor > index:
            latest[index] = latest.get(successor, successor)
    return {
        outputs[index].key: Duplicate(outputs[newest].key, _kind(texts, reads, index, newest))
        for index, newest in sorted(latest.items())
    }


def _kind(texts: list[str], reads: list[tuple[str, str] | None], old: int, new: int) -> str:
    if texts[old] == texts[new]:
        return "exact"
    if reads[old] is not None and reads[old] == reads[new]:
        return "file"
    return "near"


@dataclass(frozen=True, slots=True)
class _Lines:
    """A distinct text's non-empty lines, for the near-duplicate search."""

    text: str
    position: int  # index of the text's newest copy
    # The lines, the k-th repeat of a line tagged "line\0k": a set that keeps the multiset.
    tokens: set[str]
    tags: dict[str, int]  # tagged repeat → length of its tag, so weights count the line alone
    prefix: list[str]  # its rarest lines: a similar text shares one of them


def _near_successors(last_text: Mapping[str, int], min_chars: int) -> dict[str, int]:
    """Each distinct text → the position of the next near-duplicate text after its newest copy.

    Prefix filtering (as in AllPairs/PPJoin) finds every candidate without comparing all pairs:
    with the lines of all texts in one order, two sets of sizes n and m with Jaccard ≥ t share a
    line among the first n - ceil(t·n) + 1 and m - ceil(t·m) + 1 of each, so only texts sharing
    a line in those prefixes are compared. The result is the same whatever the order; rarest
    first keeps lines common to many texts out of the prefixes, and leaves most texts with only
    lines no other text has there: nothing can be similar to those.
    """
    split = {text: text.splitlines() for text in last_text}
    counts: Counter[str] = Counter()
    for lines in split.values():
        counts.update(lines)
    del counts[""]  # blank lines are not compared: as a missing key they count 0, never 1
    buckets: dict[str, list[_Lines]] = {}  # prefix line → newer texts, newest first
    successors: dict[str, int] = {}
    for text in sorted(split, key=last_text.__getitem__, reverse=True):
        lines = _lines_of(text, last_text[text], split[text], counts)
        if lines is None:
            continue
        if len(text) >= min_chars:
            # Nearest first: similar outputs come in runs (a command rerun after an edit), so
            # the first candidate tried is most often the answer; chains then reach the newest.
            nearest = (reversed(buckets.get(token, ())) for token in lines.prefix)
            tried = None
            for candidate in merge(*nearest, key=_position):
                if candidate is not tried and _similar(lines, candidate):
                    successors[text] = candidate.position
                    break
                tried = candidate
        for token in lines.prefix:
            buckets.setdefault(token, []).append(lines)
    return successors


def _position(lines: _Lines) -> int:
    return lines.position


def _lines_of(text: str, position: int, lines: list[str], counts: Counter[str]) -> _Lines | None:
    """The text's lines and prefix; None when it is too small or no other text may be similar."""
    size = len(lines) - lines.count("")
    numerator, denominator = _NEAR
    length = size - (numerator * size + denominator - 1) // denominator + 1
    # Lines found once in all the texts come first in the order and cannot be shared.
    unique = countOf(map(counts.__getitem__, lines), 1)
    if size < _NEAR_MIN_LINES or unique >= length:
        return None
    tokens = set(lines)
    tokens.discard("")
    tags: dict[str, int] = {}
    if len(tokens) < size:
        repeated = {line: count for line, count in Counter(lines).items() if count > 1 and line}
        for line, count in repeated.items():
            tags.update((f"{line}\0{nth}", len(str(nth)) + 1) for nth in range(1, count))
        tokens.update(tags)

    def rarity(token: str) -> int:  # a tagged repeat is as rare as its line
        return counts[token[: -tags[token]] if token in tags else token]

    # Ties in rarity broken by the line itself: every text must see the same order.
    order = sorted(sorted(tokens), key=rarity if tags else counts.__getitem__)
    return _Lines(text, position, tokens, tags, order[unique:length])


def _similar(one: _Lines, other: _Lines) -> bool:
    numerator, denominator = _NEAR
    # Jaccard is at most the ratio of the sizes: a cheap test before intersecting.
    small, large = sorted((len(one.tokens), len(other.tokens)))
    if denominator * small < numerator * large:
        return False
    shared = one.tokens & other.tokens
    union = len(one.tokens) + len(other.tokens) - len(shared)
    if denominator * len(shared) < numerator * union:
        return False
    shared_weight = _weight(one, shared)
    union_weight = _weight(one, one.tokens) + _weight(other, other.tokens) - shared_weight
    return denominator * shared_weight >= numerator * union_weight


def _weight(lines: _Lines, tokens: set[str]) -> int:
    """The total length of these lines of `lines`."""
    weight = sum(map(len, tokens))
    return weight - sum(map(lines.tags.get, tokens, repeat(0))) if lines.tags else weight


# Argument names are compared lowercased without "_" or "-": file_path, filePath, FILE_PATH …
_PATH_KEYS = frozenset({"path", "filepath", "filename", "file", "absolutepath"})
_RANGE_KEYS = frozenset(
    {"offset", "limit", "startline", "endline", "linestart", "lineend", "viewrange", "pages"}
)
_TOOL_KEYS = _PATH_KEYS | _RANGE_KEYS
_READ_VERBS = frozenset({"read", "view", "open", "cat", "show"})
_WRITE_VERBS = frozenset(
    {"write", "edit", "patch", "create", "replace", "insert", "delete", "remove"}
    | {"move", "rename", "append", "update", "save", "apply"}
)
_NAME_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_SHELLS = frozenset({"sh", "bash", "zsh", "dash"})
_SCRIPT_FLAGS = frozenset({"-c", "-lc", "-cl"})
_READERS = frozenset({"cat", "nl", "sed", "head", "tail"})
_FIRST_WORDS = _READERS | _SHELLS
# Simple shell words, made of bare characters, '…', and "…" without expansions or escapes.
# Unquoted operators (pipes, lists, redirects, subshells), `$`, backslashes and newlines fit no
# piece, so a command holding one is not a single simple command we can read. Regular
# expressions rather than shlex, which reads character by character in Python: ~30 µs a command
# against ~3 µs, on every request, for every shell call of the transcript.
# Possessive repeats: a failed match never retries other splits of the same characters.
_PIECE = r"""'[^']*'|"[^"\\$`]*"|[^\s'"\\$`|&;<>()]++"""
_WORD = re.compile(rf"(?:{_PIECE})++")
_SIMPLE_COMMAND = re.compile(rf"{_WORD.pattern}(?:[ \t]++{_WORD.pattern})*+")
_QUOTED = re.compile(r"""'([^']*)'|"([^"]*)"|([^'"]+)""")
# Glob characters: such a path names no one file we can tell.
_GLOB = re.compile(r"[*?\[{]")
_SED_PRINT = re.compile(r"(\d+)(?:,(\d+|\$))?p")


def file_read(tool: str, arguments: Mapping[str, Any]) -> tuple[str, str] | None:
    """(normalized path, range) when the call reads a file, else None.

    The range is "" for the whole file; "lines A-B" (or "lines A-" to the end) for shell line
    ranges and editor view ranges; "last N" for `tail -n N`; otherwise the tool's own numbers
    ("offset=100 limit=50"), since tools disagree on whether an offset counts from 0 or 1.
    """
    named = {_squash(key): value for key, value in arguments.items()}
    command = named.pop("command", named.pop("cmd", None))
    if command == "view":  # the text-editor tools: {"command": "view", "path": …, "view_range": …}
        return _tool_read(named)
    if command is not None:
        workdir = named.get("workdir", named.get("cwd"))
        return _shell_read(command, workdir if isinstance(workdir, str) else "")
    return _tool_read(named) if _names_a_read(tool) else None


def _squash(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


@lru_cache(maxsize=256)  # a transcript uses a handful of tool names, over and over
def _names_a_read(tool: str) -> bool:
    words = {word.lower() for word in _NAME_WORDS.findall(tool)}
    return bool(words & _READ_VERBS) and not words & _WRITE_VERBS


def _tool_read(named: Mapping[str, Any]) -> tuple[str, str] | None:
    paths = [value for key, value in named.items() if key in _PATH_KEYS]
    if len(paths) != 1 or not isinstance(paths[0], str) or not paths[0]:
        return None
    # An argument we do not know may change what is read (an encoding, a mode, a pattern).
    if not named.keys() <= _TOOL_KEYS:
        return None
    span = _tool_range(named)
    return None if span is None else (posixpath.normpath(paths[0]), span)


def _tool_range(named: Mapping[str, Any]) -> str | None:
    parts = []
    for key in ("offset", "limit"):
        if named.get(key) is not None:
            number = _integer(named[key])
            if number is None:
                return None
            parts.append(f"{key}={number}")
    view = named.get("viewrange")
    if view is not None:
        if not isinstance(view, list | tuple) or len(view) != 2:
            return None
        first, last = view
    else:
        first = named.get("startline", named.get("linestart"))
        last = named.get("endline", named.get("lineend"))
    start = 1 if first is None else _integer(first)
    end = -1 if last is None else _integer(last)  # negative: to the end, as in view_range
    if start is None or end is None:
        return None
    lines = _lines(start, None if end < 0 else end)
    if lines:
        parts.append(lines)
    if named.get("pages") is not None:
        parts.append(f"pages {named['pages']}")
    return " ".join(parts)


def _integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


def _lines(start: int, end: int | None) -> str:
    """Lines start…end counted from 1, end None for the end of the file; "" for all of it."""
    if end is None:
        return "" if start <= 1 else f"lines {start}-"
    return f"lines {max(start, 1)}-{end}"


def _shell_read(command: object, workdir: str) -> tuple[str, str] | None:
    argv = _words(command)
    # Codex runs ["bash", "-lc", script]; the script is the command.
    if argv and len(argv) == 3 and argv[0].rpartition("/")[2] in _SHELLS:
        argv = _words(argv[2]) if argv[1] in _SCRIPT_FLAGS else None
    if not argv:
        return None
    read = _command_read(argv[0].rpartition("/")[2], argv[1:])
    if read is None or _GLOB.search(read[0]):
        return None
    path, span = read
    if workdir and not path.startswith(("/", "~")):
        path = posixpath.join(workdir, path)
    return posixpath.normpath(path), span


def _words(command: object) -> list[str] | None:
    """The words of a simple command (a list is one already); None if it is not one."""
    if isinstance(command, list | tuple):
        return list(command) if all(isinstance(word, str) for word in command) else None
    if not isinstance(command, str):
        return None
    script = command.strip()
    # Most commands are not reads, and their first word says so.
    if (script.split(None, 1)[0] if script else "").rpartition("/")[2] not in _FIRST_WORDS:
        return None
    if not _SIMPLE_COMMAND.fullmatch(script):
        return None
    return [_unquoted(word) for word in _WORD.findall(script)]


def _unquoted(word: str) -> str:
    if "'" not in word and '"' not in word:
        return word
    return "".join(single or double or bare for single, double, bare in _QUOTED.findall(word))


def _command_read(name: str, args: list[str]) -> tuple[str, str] | None:
    if name in ("cat", "nl"):
        # Flags such as `nl -ba` or `cat -n` change the numbering, not what is read.
        operands = [arg for arg in args if not arg.startswith("-") or arg == "-"]
        if len(operands) == 1 and operands[0] != "-":
            return operands[0], ""
        return None
    if name == "sed":
        match = _SED_PRINT.fullmatch(args[1]) if len(args) == 3 and args[0] == "-n" else None
        if match is None:
            return None
        start, end = match.groups()
        return args[2], _lines(int(start), int(end or start) if end != "$" else None)
    if name in ("head", "tail"):
        return _head_tail(name, args)
    return None


def _head_tail(name: str, args: list[str]) -> tuple[str, str] | None:
    count = "10"
    operands = []
    words = iter(args)
    for arg in words:
        if arg in ("-n", "--lines"):
            count = next(words, "")
        elif arg.startswith("--lines="):
            count = arg.removeprefix("--lines=")
        elif arg.startswith("-n"):
            count = arg[2:]
        elif re.fullmatch(r"-\d+", arg):
            count = arg[1:]
        elif arg.startswith("-"):  # -f, -c …: not a plain read of lines
            return None
        else:
            operands.append(arg)
    if len(operands) != 1:
        return None
    if count.isdigit():
        return operands[0], _lines(1, int(count)) if name == "head" else f"last {int(count)}"
    if name == "tail" and count.startswith("+") and count[1:].isdigit():
        return operands[0], _lines(int(count[1:]), None)
    return None


_FENCE = re.compile(r"[ \t]*(`{3,}|~{3,})")


def collapse_repeats(text: str, min_run: int = 4) -> tuple[str, int]:
    """`text` with each run of ≥ `min_run` identical lines kept once, then a marker line.

    The marker says how many more times the line repeated; the count returned is the number of
    lines removed (not counting the markers added). Blank and whitespace-only lines are never
    collapsed; kept lines stay byte for byte, their line endings too (a marker after lines that
    end in \\r\\n ends in \\r\\n); nothing inside a Markdown code fence changes. When nothing
    collapses, `text` itself comes back.
    """
    if min_run < 2:
        raise ValueError(
            f"min_run must be at least 2 (a run of one line is not a repeat): {min_run}"
        )
    lines = text.split("\n")  # a "\r" stays on its line, so kept lines keep their ending
    if not any(map(str.__eq__, lines, lines[1:])):  # the common case, at C speed
        return text, 0
    kept: list[str] = []
    removed = 0
    fence = ""  # the open fence's backticks or tildes while inside a code fence
    index = 0
    while index < len(lines):
        line = lines[index]
        end = index + 1
        if fence:
            fence = "" if _closes(line, fence) else fence
        elif match := _FENCE.match(line):
            fence = match.group(1)
        elif line.strip():
            while end < len(lines) and lines[end] == line:
                end += 1
        kept.append(line)
        if end - index >= min_run:
            kept.append(MARKER.format(end - index - 1) + ("\r" if line.endswith("\r") else ""))
            removed += end - index - 1
        else:
            kept.extend(lines[index + 1 : end])
        index = end
    return ("\n".join(kept), removed) if removed else (text, 0)


def _closes(line: str, fence: str) -> bool:
    match = _FENCE.match(line)
    return (
        match is not None
        and match.group(1)[0] == fence[0]
        and len(match.group(1)) >= len(fence)
        and not line[match.end() :].strip()
    )
