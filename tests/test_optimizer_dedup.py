"""The `always` policy's text transforms: which tool outputs a newer one supersedes, which calls
read a file, and runs of repeated lines collapsed to one line and a count."""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from trioswap.optimizer.dedup import (
    MARKER,
    Duplicate,
    ToolOutput,
    collapse_repeats,
    duplicates,
    file_read,
)

# ---------------------------------------------------------------------------------------------
# file_read


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        # Claude Code
        ("Read", {"file_path": "/repo/src/a.py"}, ("/repo/src/a.py", "")),
        ("Read", {"file_path": "/repo/./src//a.py"}, ("/repo/src/a.py", "")),
        (
            "Read",
            {"file_path": "/repo/a.py", "offset": 100, "limit": 50},
            ("/repo/a.py", "offset=100 limit=50"),
        ),
        ("Read", {"file_path": "/repo/a.py", "limit": 50}, ("/repo/a.py", "limit=50")),
        ("Read", {"file_path": "/repo/a.py", "offset": None}, ("/repo/a.py", "")),
        ("Read", {"file_path": "/repo/a.py", "offset": "7"}, ("/repo/a.py", "offset=7")),
        ("Bash", {"command": "cat src/a.py", "description": "Show a.py"}, ("src/a.py", "")),
        # Codex
        ("shell", {"command": ["bash", "-lc", "cat foo.py"]}, ("foo.py", "")),
        ("shell", {"command": ["cat", "foo.py"]}, ("foo.py", "")),
        ("shell", {"command": ["/bin/zsh", "-c", "cat foo.py"]}, ("foo.py", "")),
        (
            "shell",
            {"command": ["bash", "-lc", "cat foo.py"], "workdir": "/repo"},
            ("/repo/foo.py", ""),
        ),
        ("shell", {"command": ["cat", "/abs/foo.py"], "workdir": "/repo"}, ("/abs/foo.py", "")),
        ("exec_command", {"cmd": "sed -n '1,200p' src/a.py"}, ("src/a.py", "lines 1-200")),
        ("exec_command", {"cmd": "sed -n 1,200p src/a.py"}, ("src/a.py", "lines 1-200")),
        ("exec_command", {"cmd": 'sed -n "40p" src/a.py'}, ("src/a.py", "lines 40-40")),
        ("exec_command", {"cmd": "sed -n '1,$p' src/a.py"}, ("src/a.py", "")),
        ("exec_command", {"cmd": "sed -n '30,$p' src/a.py"}, ("src/a.py", "lines 30-")),
        ("exec_command", {"cmd": "nl -ba src/a.py"}, ("src/a.py", "")),
        ("exec_command", {"cmd": "cat -n 'my file.py'"}, ("my file.py", "")),
        ("exec_command", {"cmd": "head -n 50 src/a.py"}, ("src/a.py", "lines 1-50")),
        ("exec_command", {"cmd": "head -n50 src/a.py"}, ("src/a.py", "lines 1-50")),
        ("exec_command", {"cmd": "head -50 src/a.py"}, ("src/a.py", "lines 1-50")),
        ("exec_command", {"cmd": "head src/a.py"}, ("src/a.py", "lines 1-10")),
        ("exec_command", {"cmd": "tail -n 20 log.txt"}, ("log.txt", "last 20")),
        ("exec_command", {"cmd": "tail -n +5 log.txt"}, ("log.txt", "lines 5-")),
        ("shell_command", {"command": "bash -lc 'cat foo.py'"}, ("foo.py", "")),
        # Generic tools
        ("read_file", {"path": "docs/x.md"}, ("docs/x.md", "")),
        (
            "read_file",
            {"filePath": "docs/x.md", "startLine": 3, "endLine": 9},
            ("docs/x.md", "lines 3-9"),
        ),
        ("open_file", {"filename": "x.md"}, ("x.md", "")),
        ("view", {"file": "x.md"}, ("x.md", "")),
        ("ReadFile", {"absolute_path": "/x.md"}, ("/x.md", "")),
        (
            "str_replace_based_edit_tool",
            {"command": "view", "path": "/r/a.py", "view_range": [10, 20]},
            ("/r/a.py", "lines 10-20"),
        ),
        (
            "str_replace_editor",
            {"command": "view", "path": "/r/a.py", "view_range": [1, -1]},
            ("/r/a.py", ""),
        ),
        ("str_replace_editor", {"command": "view", "path": "/r/a.py"}, ("/r/a.py", "")),
        ("Read", {"file_path": "/r/doc.pdf", "pages": "1-5"}, ("/r/doc.pdf", "pages 1-5")),
    ],
)
def test_file_reads(tool: str, arguments: Mapping[str, Any], expected: tuple[str, str]) -> None:
    assert file_read(tool, arguments) == expected


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        # More than one simple command, or a redirect
        ("Bash", {"command": "cat a.py | head -n 5"}),
        ("Bash", {"command": "cd src && cat a.py"}),
        ("Bash", {"command": "cat a.py; rm a.py"}),
        ("Bash", {"command": "cat a.py > b.py"}),
        ("Bash", {"command": "cat a.py 2>/dev/null"}),
        ("Bash", {"command": "cat a.py &"}),
        ("Bash", {"command": "cat a.py\nrm a.py"}),
        ("Bash", {"command": "cat $(ls)"}),
        ("Bash", {"command": "cat `ls`"}),
        ("shell", {"command": ["bash", "-lc", "nl -ba a.py | sed -n '1,20p'"]}),
        ("exec_command", {"cmd": "sed -n '1,20p' a.py && echo done"}),
        # Not one file we can name
        ("Bash", {"command": "cat a.py b.py"}),
        ("Bash", {"command": "cat *.py"}),
        ("Bash", {"command": "cat $FILE"}),
        ("Bash", {"command": "cat"}),
        ("Bash", {"command": "cat -"}),
        ("Bash", {"command": "cat 'unbalanced"}),
        ("Bash", {"command": "cat a\\ b.py"}),
        # Not a plain read
        ("Bash", {"command": "sed -i 's/a/b/' a.py"}),
        ("Bash", {"command": "sed -n '/def/p' a.py"}),
        ("Bash", {"command": "tail -f log.txt"}),
        ("Bash", {"command": "head -n -5 a.py"}),
        ("Bash", {"command": "ls -l"}),
        ("Bash", {"command": "pytest -q"}),
        ("Bash", {"command": ""}),
        ("shell", {"command": ["bash", "-x", "cat foo.py"]}),
        ("shell", {"command": ["cat", 3]}),
        # Tools that write, search or list
        ("Write", {"file_path": "/r/a.py", "content": "x = 1\n"}),
        ("Edit", {"file_path": "/r/a.py", "old_string": "a", "new_string": "b"}),
        ("MultiEdit", {"file_path": "/r/a.py", "edits": []}),
        ("apply_patch", {"input": "*** Begin Patch"}),
        ("write_file", {"path": "a.py"}),
        ("str_replace_editor", {"command": "create", "path": "/r/a.py", "file_text": "x"}),
        ("Grep", {"pattern": "def", "path": "/r"}),
        ("LS", {"path": "/r"}),
        # Arguments we do not understand, or no path
        ("read_file", {"path": "a.py", "encoding": "latin-1"}),
        ("read_file", {"path": "a.py", "file": "b.py"}),
        ("read_file", {"path": ""}),
        ("read_file", {"path": 3}),
        ("read_file", {"path": "a.py", "offset": 1.5}),
        ("read_file", {"path": "a.py", "offset": True}),
        ("read_file", {"path": "a.py", "view_range": [1]}),
        ("Read", {}),
        ("", {}),
    ],
)
def test_not_file_reads(tool: str, arguments: Mapping[str, Any]) -> None:
    assert file_read(tool, arguments) is None


@given(st.text(alphabet="ab. /'\"$|;&<>()\\\t-_~", min_size=1))
def test_quoted_paths_read_as_the_shell_reads_them(path: str) -> None:
    assume(not path.startswith("-") and path.strip(" \t"))
    assert file_read("Bash", {"command": f"cat {shlex.quote(path)}"}) == (
        posixpath.normpath(path),
        "",
    )


# ---------------------------------------------------------------------------------------------
# duplicates

CODE = "\n".join(f"line_{n} = compute({n}, 'some value that takes space')" for n in range(30))


def outputs(*specs: tuple[str, Mapping[str, Any], str]) -> list[ToolOutput]:
    return [ToolOutput(key * 10, tool, args, text) for key, (tool, args, text) in enumerate(specs)]


def test_exact_copies_point_at_the_newest_whatever_the_tool() -> None:
    found = duplicates(
        outputs(
            ("Bash", {"command": "pytest"}, CODE),
            ("Bash", {"command": "ls"}, "something else " * 20),
            ("exec_command", {"cmd": "make"}, CODE),
            ("", {}, CODE),
        )
    )
    assert found == {0: Duplicate(30, "exact"), 20: Duplicate(30, "exact")}


def test_an_older_read_of_the_same_file_and_range_is_superseded_even_when_it_changed() -> None:
    path = {"file_path": "/r/a.py"}
    found = duplicates(
        outputs(
            ("Read", path, CODE),
            ("Read", {**path, "offset": 5, "limit": 10}, CODE + "\nx = 1"),
            ("Read", path, CODE.replace("line_", "renamed_")),
            ("Read", {"file_path": "/r/b.py"}, CODE.upper()),
        )
    )
    assert found == {0: Duplicate(20, "file")}


def test_reads_through_different_tools_are_the_same_read() -> None:
    found = duplicates(
        outputs(
            ("Read", {"file_path": "/r/a.py"}, CODE),
            ("shell", {"command": ["bash", "-lc", "cat a.py"], "workdir": "/r"}, CODE.upper()),
        )
    )
    assert found == {0: Duplicate(10, "file")}


def test_the_newest_read_wins_even_when_it_is_short() -> None:
    found = duplicates(outputs(("Read", {"path": "a"}, CODE), ("Read", {"path": "a"}, "x = 1")))
    assert found == {0: Duplicate(10, "file")}


def test_a_test_rerun_with_a_new_timing_line_is_a_near_duplicate() -> None:
    tests = [f"tests/test_{n}.py::test_something_{n} PASSED" for n in range(20)]
    first = "\n".join([*tests, "==== 20 passed in 1.23s ===="])
    second = "\n".join([*tests, "==== 20 passed in 1.31s ===="])
    found = duplicates(outputs(("Bash", {"command": "pytest"}, first), ("Bash", {}, second)))
    assert found == {0: Duplicate(10, "near")}


def test_a_listing_with_one_more_file_is_a_near_duplicate() -> None:
    listing = [f"-rw-r--r-- 1 me me 1234 module_{n}.py" for n in range(12)]
    before = "\n".join(listing)
    after = "\n".join([*listing[:5], "-rw-r--r-- 1 me me 1234 new_module.py", *listing[5:]])
    found = duplicates(outputs(("Bash", {}, before), ("Bash", {}, after)))
    assert found == {0: Duplicate(10, "near")}


def lines_of_equal_length(count: int, tag: str) -> list[str]:
    return [f"{tag}{n:04} padding to give each line the same width" for n in range(count)]


def test_the_similarity_threshold_is_nine_tenths() -> None:
    shared = lines_of_equal_length(9, "s")
    one, two = lines_of_equal_length(2, "d")
    at_threshold = outputs(("", {}, "\n".join(shared)), ("", {}, "\n".join([*shared, one])))
    assert duplicates(at_threshold) == {0: Duplicate(10, "near")}  # 9 shared of 10
    below = outputs(("", {}, "\n".join([*shared, one])), ("", {}, "\n".join([*shared, two])))
    assert duplicates(below) == {}  # 9 shared of 11


def test_near_duplicates_count_repeated_lines() -> None:
    once = ["a shared line that is here once only, padded out", *lines_of_equal_length(7, "s")]
    doubled = [once[0], *once]
    # As sets the two are equal; as multisets 8 of 9 lines are shared.
    found = duplicates(outputs(("", {}, "\n".join(once)), ("", {}, "\n".join(doubled))))
    assert found == {}


def test_one_long_unshared_line_keeps_outputs_apart() -> None:
    shared = lines_of_equal_length(40, "s")
    found = duplicates(
        outputs(
            ("", {}, "\n".join([*shared, "Traceback: " + "x" * 5000])),
            ("", {}, "\n".join([*shared, "all good"])),
        )
    )
    assert found == {}  # 40 of 42 lines shared, but not 9/10 of the text


def test_small_outputs_are_never_near_duplicates() -> None:
    lines = lines_of_equal_length(7, "s")
    found = duplicates(
        outputs(("", {}, "\n".join(lines)), ("", {}, "\n".join(reversed(lines)))), min_chars=10
    )
    assert found == {}


def test_blank_lines_do_not_count() -> None:
    lines = lines_of_equal_length(9, "s")
    found = duplicates(outputs(("", {}, "\n".join(lines)), ("", {}, "\n\n".join(lines) + "\n\n")))
    assert found == {0: Duplicate(10, "near")}


def test_chains_resolve_to_the_newest() -> None:
    other = CODE.replace("line_", "other_")
    found = duplicates(
        outputs(
            ("Read", {"file_path": "a"}, CODE),  # 0: same read as 20
            ("Bash", {}, other),  # 10: same text as 20
            ("Read", {"file_path": "a"}, other),  # 20: near 30
            ("Bash", {}, other + "\nplus one line"),  # 30
        )
    )
    assert found == {0: Duplicate(30, "near"), 10: Duplicate(30, "near"), 20: Duplicate(30, "near")}


def test_outputs_shorter_than_min_chars_are_never_superseded() -> None:
    short = "ok\n" * 20
    found = duplicates(outputs(("", {}, short), ("", {}, short), ("", {}, short)), min_chars=100)
    assert found == {}
    found = duplicates(outputs(("", {}, short), ("", {}, short), ("", {}, short)), min_chars=60)
    assert found == {0: Duplicate(20, "exact"), 10: Duplicate(20, "exact")}


def test_nothing_for_nothing() -> None:
    assert duplicates([]) == {}
    assert duplicates(outputs(("", {}, CODE))) == {}


def test_the_result_does_not_depend_on_the_hash_seed() -> None:
    script = """
import random
from trioswap.optimizer.dedup import ToolOutput, duplicates
rng = random.Random(3)
pool = [f"line {n} " + "x" * rng.randrange(30) for n in range(60)]
texts = []
for key in range(300):
    if texts and rng.random() < 0.5:
        lines = rng.choice(texts)[:]
        lines[rng.randrange(len(lines))] = rng.choice(pool)
        lines.insert(rng.randrange(len(lines)), rng.choice(pool))
    else:
        lines = rng.sample(pool, rng.randrange(8, 30))
    texts.append(lines)
outputs = [ToolOutput(n, "", {}, "\\n".join(lines)) for n, lines in enumerate(texts)]
print(sorted(duplicates(outputs, min_chars=50).items()))
"""
    results = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(results) == 1
    assert "near" in next(iter(results))


# A small world of outputs, so that exact copies, near copies and rereads all happen.
LINES = [f"line {n} " + "·" * (n % 7) for n in range(40)]
READS: list[tuple[str, dict[str, Any]]] = [
    ("Read", {"file_path": "/r/a.py"}),
    ("Read", {"file_path": "/r/a.py", "offset": 10, "limit": 5}),
    ("exec_command", {"cmd": "cat /r/a.py"}),
    ("Read", {"file_path": "/r/b.py"}),
    ("Bash", {"command": "pytest"}),
    ("", {}),
]


@st.composite
def transcripts(draw: st.DrawFn) -> list[ToolOutput]:
    texts: list[list[str]] = []
    for _ in range(draw(st.integers(0, 12))):
        if texts and draw(st.booleans()):
            lines = list(draw(st.sampled_from(texts)))
            for _ in range(draw(st.integers(0, 2))):
                lines[draw(st.integers(0, len(lines) - 1))] = draw(st.sampled_from(LINES))
            lines.extend(draw(st.lists(st.sampled_from([*LINES, ""]), max_size=2)))
        else:
            lines = draw(st.lists(st.sampled_from([*LINES, ""]), min_size=1, max_size=16))
        texts.append(lines)
    calls = [draw(st.sampled_from(READS)) for _ in texts]
    return [
        ToolOutput(key * 3 + 1, tool, args, "\n".join(lines))
        for key, ((tool, args), lines) in enumerate(zip(calls, texts, strict=True))
    ]


def similar(one: str, other: str) -> bool:
    """Near duplicates by the definition, over all pairs."""
    a = Counter(line for line in one.splitlines() if line)
    b = Counter(line for line in other.splitlines() if line)
    if min(a.total(), b.total()) < 8:
        return False
    shared, union = a & b, a | b
    weight = lambda lines: sum(len(line) * count for line, count in lines.items())  # noqa: E731
    return 10 * shared.total() >= 9 * union.total() and 10 * weight(shared) >= 9 * weight(union)


@given(transcripts(), st.sampled_from([0, 40, 100]))
def test_duplicates_point_forward_at_outputs_that_stand(
    transcript: list[ToolOutput], min_chars: int
) -> None:
    found = duplicates(transcript, min_chars)
    order = {output.key: index for index, output in enumerate(transcript)}
    by_key = {output.key: output for output in transcript}
    for key, duplicate in found.items():
        assert order[duplicate.latest] > order[key]
        assert duplicate.latest not in found
        assert len(by_key[key].text) >= min_chars
        old, new = by_key[key], by_key[duplicate.latest]
        assert (duplicate.kind == "exact") == (old.text == new.text)
        if duplicate.kind == "file":
            assert file_read(old.tool, old.arguments) == file_read(new.tool, new.arguments)
    # Superseded exactly when a later output is a copy, a reread or a near copy.
    for index, output in enumerate(transcript):
        read = file_read(output.tool, output.arguments)
        later = [
            newer
            for newer in transcript[index + 1 :]
            if newer.text == output.text
            or (read is not None and read == file_read(newer.tool, newer.arguments))
            or similar(output.text, newer.text)
        ]
        assert (output.key in found) == (bool(later) and len(output.text) >= min_chars)


# ---------------------------------------------------------------------------------------------
# collapse_repeats

MARKER_LINE = re.compile(re.escape(MARKER).replace(r"\{\}", r"(\d+)") + r"(\r?)")


def marker(count: int, ending: str = "") -> str:
    return MARKER.format(count) + ending


def expand(text: str) -> str:
    """Undo collapse_repeats: each marker line becomes that many copies of the line before."""
    lines: list[str] = []
    for line in text.split("\n"):
        match = MARKER_LINE.fullmatch(line)
        lines.extend([lines[-1]] * int(match.group(1)) if match else [line])
    return "\n".join(lines)


def test_a_run_is_kept_once_with_a_count() -> None:
    text = "start\nsame\nsame\nsame\nsame\nsame\nend\n"
    assert collapse_repeats(text) == (f"start\nsame\n{marker(4)}\nend\n", 4)


def test_runs_shorter_than_min_run_stay() -> None:
    text = "a\na\na\nb\nb\nb\n"
    assert collapse_repeats(text) == (text, 0)
    assert collapse_repeats(text, min_run=3) == (f"a\n{marker(2)}\nb\n{marker(2)}\n", 4)


def test_nothing_to_collapse_gives_back_the_same_text() -> None:
    text = "".join(f"line {n}\n" for n in range(100)) + "x\nx\nx\n"
    assert collapse_repeats(text)[0] is text
    assert collapse_repeats("") == ("", 0)


def test_a_run_at_the_very_end() -> None:
    assert collapse_repeats("a\nz\nz\nz\nz") == (f"a\nz\n{marker(3)}", 3)


def test_crlf_lines_keep_their_ending_and_so_does_the_marker() -> None:
    text = "head\r\nrow\r\nrow\r\nrow\r\nrow\r\ntail\r\n"
    assert collapse_repeats(text) == (f"head\r\nrow\r\n{marker(3)}\r\ntail\r\n", 3)


def test_blank_and_whitespace_lines_are_never_collapsed() -> None:
    for text in ("\n" * 10, "a\n\n\n\n\n\nb", "   \n   \n   \n   \n   \n", "\t\r\n" * 6):
        assert collapse_repeats(text)[0] is text


def test_indentation_and_trailing_spaces_are_kept_and_make_lines_differ() -> None:
    text = "    x = 1  \n" * 5 + "    x = 1\n" * 2
    assert collapse_repeats(text) == (f"    x = 1  \n{marker(4)}\n    x = 1\n    x = 1\n", 4)


def test_nothing_inside_a_code_fence_changes() -> None:
    inside = "```python\n" + "pass\n" * 6 + "```\n"
    tilde = "~~~\n" + "pass\n" * 6 + "~~~\n"
    for text in (inside, tilde, "intro\n" + inside + tilde):
        assert collapse_repeats(text)[0] is text
    after = inside + "x\n" * 4
    assert collapse_repeats(after) == (inside + f"x\n{marker(3)}\n", 3)


def test_a_fence_closes_only_with_a_fence_as_long_of_the_same_kind() -> None:
    text = "````\n```\n~~~~\n" + "pass\n" * 6 + "````\n" + "y\n" * 4
    assert collapse_repeats(text) == (text.removesuffix("y\n" * 4) + f"y\n{marker(3)}\n", 3)
    unclosed = "  ```\n" + "pass\n" * 6 + "```python\n"  # an opening line does not close
    assert collapse_repeats(unclosed)[0] is unclosed


def test_fence_lines_are_not_runs() -> None:
    text = "```\n```\n```\n```\n```\n```\n"
    assert collapse_repeats(text)[0] is text


def test_min_run_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="min_run"):
        collapse_repeats("a\na\n", min_run=1)


TEXT_LINES = st.sampled_from(
    ["x", "x ", "  x", "y", "", "   ", "\t", "```", "```py", "~~~", "~~~~", "z\r", "\r", "-" * 20]
)


@st.composite
def texts_with_runs(draw: st.DrawFn) -> str:
    runs = draw(st.lists(st.tuples(TEXT_LINES, st.integers(1, 7)), max_size=12))
    return "\n".join(line for line, count in runs for _ in range(count))


@st.composite
def texts_without_runs(draw: st.DrawFn, min_run: int) -> str:
    """Texts whose runs of identical lines are all shorter than `min_run`."""
    lines = draw(st.lists(TEXT_LINES, max_size=12))
    groups = [line for before, line in zip(["\n", *lines], lines, strict=False) if line != before]
    return "\n".join(line for line in groups for _ in range(draw(st.integers(1, min_run - 1))))


@given(texts_with_runs(), st.integers(2, 6))
def test_markers_read_back_give_the_original(text: str, min_run: int) -> None:
    collapsed, removed = collapse_repeats(text, min_run)
    assert expand(collapsed) == text
    markers = sum(bool(MARKER_LINE.fullmatch(line)) for line in collapsed.split("\n"))
    assert removed == text.count("\n") - collapsed.count("\n") + markers


@given(texts_with_runs(), st.integers(2, 6))
def test_the_distinct_lines_stay_the_same(text: str, min_run: int) -> None:
    collapsed, _ = collapse_repeats(text, min_run)
    kept = {line for line in collapsed.split("\n") if not MARKER_LINE.fullmatch(line)}
    assert kept == set(text.split("\n"))


@given(
    st.integers(2, 6).flatmap(
        lambda min_run: st.tuples(texts_without_runs(min_run), st.just(min_run))
    )
)
def test_without_a_long_enough_run_nothing_changes(case: tuple[str, int]) -> None:
    text, min_run = case
    assert collapse_repeats(text, min_run)[0] is text
    assert collapse_repeats(text, min_run) == (text, 0)


@given(texts_with_runs())
def test_an_unclosed_fence_protects_the_rest(text: str) -> None:
    fenced = "``````\n" + text  # no line of TEXT_LINES closes a fence of six backticks
    assert collapse_repeats(fenced)[0] is fenced
