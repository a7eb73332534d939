"""The routing engines trioswap reads but does not run yet: the matrix router's set expressions
(`matrix_expr`), and what matrix, selectors, profiles and queue priorities may reference
(`routing.check_routing`), checked as llama-swap's loader checks them."""

from __future__ import annotations

import itertools
import textwrap
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioswap.config import loads
from trioswap.config.matrix_expr import (
    And,
    ExprError,
    Leaf,
    MatrixError,
    Or,
    Program,
    Ref,
    compile_sets,
    parse,
)
from trioswap.errors import ConfigError

FILE = "cfg.yaml"
NOT_IMPLEMENTED = "is not implemented in trioswap yet"

# -- matrix expressions: syntax --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("a", Leaf("a", 1)),
        ("  model-name.v2_x ", Leaf("model-name.v2_x", 3)),
        ("modèle9", Leaf("modèle9", 1)),
        ("+base", Ref("base", 1)),
        ("a & b", And((Leaf("a", 1), Leaf("b", 5)))),
        ("a|b|c", Or((Leaf("a", 1), Leaf("b", 3), Leaf("c", 5)))),
        ("a | b & c", Or((Leaf("a", 1), And((Leaf("b", 5), Leaf("c", 9)))))),
        ("a & b | c", Or((And((Leaf("a", 1), Leaf("b", 5))), Leaf("c", 9)))),
        (
            "(a | +s) & b",
            And((Or((Leaf("a", 2), Ref("s", 6))), Leaf("b", 12))),
        ),
        ("((a))", Leaf("a", 3)),
        ("(a & b) & c", And((And((Leaf("a", 2), Leaf("b", 6))), Leaf("c", 11)))),
        ("a\t&\nb", And((Leaf("a", 1), Leaf("b", 5)))),
    ],
)
def test_parse(text: str, tree: Any) -> None:
    assert parse(text) == tree


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the expression is empty"),
        (" \t ", "the expression is empty"),
        ("a @ b", "unexpected '@' at character 3"),
        ("a & +", "'+' at character 5 must be followed by a set name"),
        ("+ a", "'+' at character 1 must be followed by a set name"),
        ("(a | b", "'(' at character 1 is never closed"),
        ("(a | (b)", "'(' at character 1 is never closed"),
        (
            "(a b)",
            "unexpected 'b' at character 4: expected &, | or ')' to close '(' at character 1",
        ),
        ("a)", "unexpected ')' at character 2: no '(' to close"),
        ("a b", "unexpected 'b' at character 3: expected & or |"),
        ("+s t", "unexpected 't' at character 4: expected & or |"),
        ("()", "unexpected ')' at character 2: expected a model, var, +set or '('"),
        ("a & | b", "unexpected '|' at character 5: expected a model, var, +set or '('"),
        ("| a", "unexpected '|' at character 1: expected a model, var, +set or '('"),
        ("a &", "the expression ends after '&' at character 3: a model, var, +set or '('"),
        ("(", "the expression ends after '(' at character 1: a model, var, +set or '('"),
    ],
)
def test_parse_errors_say_where(text: str, message: str) -> None:
    with pytest.raises(ExprError) as info:
        parse(text)
    assert str(info.value).startswith(message)


# -- matrix expressions: expansion -----------------------------------------------------------

IDENTITY = {m: m for m in ("a", "b", "c", "d", "e", "g", "q", "m", "v")}


def sets(*members: str) -> tuple[frozenset[str], ...]:
    return tuple(frozenset(m.split()) for m in members)


@pytest.mark.parametrize(
    ("sources", "name", "family"),
    [
        ({"s": "a"}, "s", sets("a")),
        ({"s": "a & b"}, "s", sets("a b")),
        ({"s": "a | b | c"}, "s", sets("a", "b", "c")),
        ({"s": "(a | b) & (c | d)"}, "s", sets("a c", "a d", "b c", "b d")),
        ({"s": "a | b & c"}, "s", sets("a", "b c")),
        ({"s": "a & a"}, "s", sets("a")),
        ({"s": "a | a & a | (a)"}, "s", sets("a")),
        ({"s": "(a | b) & (b | a)"}, "s", sets("a b", "a", "b")),
        ({"s": "a & (a | b)"}, "s", sets("a", "a b")),
        (
            {"llms": "g | q | m", "tts": "+llms & v", "mega": "+tts & e"},
            "mega",
            sets("g v e", "q v e", "m v e"),
        ),
        ({"base": "a & b", "more": "c & +base & b"}, "more", sets("a b c")),
        ({"x": "a | b", "y": "+x & +x"}, "y", sets("a", "a b", "b")),
        # A later set may be referenced before it is defined.
        ({"y": "+x & c", "x": "a | b"}, "y", sets("a c", "b c")),
    ],
)
def test_expand(sources: dict[str, str], name: str, family: tuple[frozenset[str], ...]) -> None:
    assert compile_sets(sources, IDENTITY).expand(name) == family


def test_names_resolve_through_vars_which_win_over_model_ids() -> None:
    names = {"gemma": "gemma", "qwen": "qwen", "g": "gemma", "qwen-v": "qwen", "x": "qwen"}
    names["gemma"] = "qwen"  # a var named like a model id
    program = compile_sets({"s": "g & gemma | qwen-v & x"}, names)
    assert program.expand("s") == sets("gemma qwen", "qwen")


def test_within_projects_each_set() -> None:
    program = compile_sets({"s": "(a | b) & (c | d) & e"}, IDENTITY)
    assert program.expand("s", within=frozenset({"a", "e"})) == sets("a e", "e")
    assert program.expand("s", within=frozenset()) == (frozenset(),)


def test_a_large_product_is_checked_without_expanding_it() -> None:
    dims = [[f"m{d}-{c}" for c in range(12)] for d in range(6)]
    text = "target & " + " & ".join("(" + " | ".join(d) + ")" for d in dims)
    names = {m: m for m in ["target", *itertools.chain(*dims)]}
    program = compile_sets({"large": text}, names)
    assert program.can_contain_all(["target", "m0-0", "m5-11"])
    assert not program.can_contain_all(["m0-0", "m0-1"])


@pytest.mark.parametrize(
    ("sources", "models", "together"),
    [
        ({"s": "a & b"}, ["a", "b"], True),
        ({"s": "a | b"}, ["a", "b"], False),
        ({"s": "a | b", "t": "b & c"}, ["b", "c"], True),
        ({"s": "a & b", "t": "b & c"}, ["a", "c"], False),
        ({"s": "(a | b) & c"}, ["b", "c"], True),
        ({"s": "a & b"}, ["a", "z"], False),
    ],
)
def test_can_contain_all(sources: dict[str, str], models: list[str], together: bool) -> None:
    assert compile_sets(sources, IDENTITY | {"z": "z"}).can_contain_all(models) is together


@pytest.mark.parametrize(
    ("sources", "problems"),
    [
        ({"s": "a & nope"}, [("s", "unknown var or model 'nope' at character 5")]),
        ({"s": "a & bb"}, [("s", "unknown var or model 'bb' at character 5")]),
        ({"s": "a | B"}, [("s", "'B' at character 5 (did you mean 'b'?)")]),
        ({"s": "+missing"}, [("s", "+missing at character 1: no set is named 'missing'")]),
        ({"llms": "a", "s": "+llm"}, [("s", "no set is named 'llm' (did you mean 'llms'?)")]),
        ({"s": "a | +s"}, [("s", "+s at character 5 makes a cycle: s → s")]),
        ({"x": "+y", "y": "+x & a"}, [("y", "+x at character 1 makes a cycle: x → y → x")]),
        (
            {"x": "+y", "y": "+z", "z": "a | +x | +y"},
            [
                ("z", "+x at character 5 makes a cycle: x → y → z → x"),
                ("z", "+y at character 10 makes a cycle: y → z → y"),
            ],
        ),
        # Every fault once; a set that fails to parse adds no further problems.
        (
            {"p": "(a", "q": "+p & nope", "r": "+gone", "s": "+s"},
            [
                ("p", "'(' at character 1 is never closed"),
                ("q", "unknown var or model 'nope'"),
                ("r", "no set is named 'gone'"),
                ("s", "makes a cycle: s → s"),
            ],
        ),
    ],
)
def test_compile_problems(sources: dict[str, str], problems: list[tuple[str, str]]) -> None:
    with pytest.raises(MatrixError) as info:
        compile_sets(sources, IDENTITY)
    got = info.value.problems
    assert [p.set for p in got] == [s for s, _ in problems]
    for problem, (_, message) in zip(got, problems, strict=True):
        assert message in problem.message


# Random expressions, rendered to text, against a brute-force evaluator: a set S is in the
# family of `a & b` when S is A | B for some A in a's family and B in b's, tried over every
# subset of the (small) universe.

NAMES = {"a": "a", "b": "b", "c": "c", "m-1.x": "m-1.x", "V": "a"}
UNIVERSE = sorted(set(NAMES.values()))
Tree = tuple[Any, ...]


# A ref holds a number, made to name an earlier set by `earlier` (or a model in the first set).
TREES: st.SearchStrategy[Tree] = st.recursive(
    st.sampled_from(list(NAMES)).map(lambda n: ("leaf", n))
    | st.integers(0, 2).map(lambda k: ("ref", k)),
    lambda kids: st.tuples(st.sampled_from("&|"), st.lists(kids, min_size=2, max_size=3)).map(
        lambda t: (t[0], tuple(t[1]))
    ),
    max_leaves=6,
)


def earlier(tree: Tree, index: int) -> Tree:
    kind, body = tree
    if kind == "ref":
        return ("ref", f"s{body % index}") if index else ("leaf", "b")
    if kind == "leaf":
        return tree
    return (kind, tuple(earlier(child, index) for child in body))


def render(tree: Tree, spaced: bool) -> str:
    kind, body = tree
    if kind == "leaf":
        return body
    if kind == "ref":
        return "+" + body
    parts = []
    for child in body:
        text = render(child, spaced)
        parts.append(f"({text})" if kind == "&" and child[0] == "|" else text)
    return (f" {kind} " if spaced else kind).join(parts)


@cache
def subsets(items: frozenset[str]) -> tuple[frozenset[str], ...]:
    return tuple(
        frozenset(c) for n in range(len(items) + 1) for c in itertools.combinations(items, n)
    )


def brute_families(named: dict[str, Tree]) -> dict[str, set[frozenset[str]]]:
    @cache
    def member(tree: Tree, s: frozenset[str]) -> bool:
        kind, body = tree
        if kind == "leaf":
            return s == {NAMES[body]}
        if kind == "ref":
            return member(named[body], s)
        if kind == "|":
            return any(member(child, s) for child in body)
        first, rest = body[0], body[1:]
        tail: Tree = rest[0] if len(rest) == 1 else ("&", rest)
        return any(
            member(first, a) and member(tail, b)
            for a in subsets(s)
            for b in subsets(s)
            if a | b == s
        )

    every = subsets(frozenset(UNIVERSE))
    return {name: {s for s in every if member(tree, s)} for name, tree in named.items()}


@st.composite
def programs(draw: st.DrawFn) -> tuple[dict[str, Tree], dict[str, str]]:
    named: dict[str, Tree] = {}
    for i in range(draw(st.integers(1, 3))):
        named[f"s{i}"] = earlier(draw(TREES), i)
    spaced = draw(st.booleans())
    return named, {n: render(t, spaced) for n, t in named.items()}


@settings(max_examples=300, deadline=None)
@given(programs(), st.sets(st.sampled_from(UNIVERSE)))
def test_expansion_matches_brute_force(
    program: tuple[dict[str, Tree], dict[str, str]], within: set[str]
) -> None:
    named, sources = program
    compiled = compile_sets(sources, NAMES)
    brute = brute_families(named)
    for name in named:
        family = compiled.expand(name)
        assert len(set(family)) == len(family)
        assert set(family) == brute[name]
        projected = tuple(dict.fromkeys(s & within for s in family))
        assert compiled.expand(name, within=frozenset(within)) == projected
    expected = any(within <= s for family in brute.values() for s in family)
    assert compiled.can_contain_all(within) is expected


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab &|()+ ", max_size=12))
def test_any_text_parses_or_raises_expr_error(text: str) -> None:
    try:
        tree = parse(text)
    except ExprError:
        return
    assert isinstance(tree, Leaf | Ref | And | Or)


def test_program_sets_are_resolved_in_definition_order() -> None:
    program = compile_sets({"z": "V", "a": "+z"}, NAMES)
    assert program == Program({"z": Leaf("a", 1), "a": Ref("z", 1)})


# -- the config checks -----------------------------------------------------------------------

BASE = textwrap.dedent(
    """\
    models:
      gemma:
        cmd: x --port ${PORT}
        aliases: [gem]
        filters:
          setParamsByID:
            gemma-think: {temperature: 0}
      qwen:
        cmd: x --port ${PORT}
      voxtral:
        cmd: x --port ${PORT}
    peers:
      remote:
        proxy: http://example.com
        models: [remote-model, shared]
      other:
        proxy: http://example.org
        models: [shared]
    """
)
BASE_LINES = BASE.count("\n")

Expected = list[tuple[int, str, str]]


def outcome(snippet: str) -> tuple[list[tuple[int | None, str, str]], list[Any]]:
    """(errors, warnings other than 'not implemented'), each as (line, key, message)."""
    try:
        config = loads(BASE + textwrap.dedent(snippet), FILE, environ={})
    except ConfigError as exc:
        return [(p.line, p.key, p.message) for p in exc.problems], []
    return [], [
        (w.line, w.key, w.message) for w in config.warnings if NOT_IMPLEMENTED not in w.message
    ]


def matches(got: list[tuple[int | None, str, str]], expected: Expected) -> None:
    """Each expected (line in the snippet, key, part of the message) is one problem, and
    there are no others."""
    left = list(got)
    for line, key, part in expected:
        found = [g for g in left if g[0] == BASE_LINES + line and g[1] == key and part in g[2]]
        assert found, f"no {(line, key, part)} in {got}"
        left.remove(found[0])
    assert not left, f"unexpected: {left}"


MATRIX = "routing.router.settings.matrix"
CASES: list[tuple[str, str, Expected, Expected]] = [
    (
        "a valid matrix",
        """\
        routing:
          router:
            use: matrix
            settings:
              matrix:
                vars: {g: gemma, q: qwen, v: voxtral, gemma: qwen}
                evict_costs: {v: 50, qwen: 3, gemma: 1}
                sets:
                  speech: "(g | q) & v"
                  both: "+speech | gemma & voxtral"
        """,
        [],
        [],
    ),
    (
        "var names",
        """\
        routing:
          router:
            use: matrix
            settings:
              matrix:
                vars:
                  a_b: gemma
                  abcdefghijklmnopqrstuvwxyzABCDEFG: qwen
                  abcdefghijklmnopqrstuvwxyzABCDEF: qwen
                  ok-1.2: voxtral
                sets: {s: "ok-1.2 & abcdefghijklmnopqrstuvwxyzABCDEF"}
        """,
        [
            (7, f"{MATRIX}.vars.a_b", "var name 'a_b' must be 1-32 characters: letters, digits"),
            (8, f"{MATRIX}.vars.abcdefghijklmnopqrstuvwxyzABCDEFG", "1-32 characters"),
        ],
        [],
    ),
    (
        "vars name model ids",
        """\
        routing:
          router:
            use: matrix
            settings:
              matrix:
                vars: {g: gem, q: qwne, r: remote-model}
                sets: {s: "g | q | r"}
        """,
        [
            (6, f"{MATRIX}.vars.g", "'gem' is an alias of 'gemma': a var names a model id"),
            (6, f"{MATRIX}.vars.q", "unknown model 'qwne' (did you mean 'qwen'?)"),
            (6, f"{MATRIX}.vars.r", "unknown model 'remote-model'"),
        ],
        [],
    ),
    (
        "evict costs",
        """\
        routing:
          router:
            use: matrix
            settings:
              matrix:
                vars: {v: voxtral}
                evict_costs:
                  v: 0
                  qwen: -2
                  gem: 3
                  voxtrl: 0
                sets: {s: "v & qwen"}
        """,
        [
            (8, f"{MATRIX}.evict_costs.v", "a positive integer, not 0"),
            (9, f"{MATRIX}.evict_costs.qwen", "a positive integer, not -2"),
            (10, f"{MATRIX}.evict_costs.gem", "unknown var or model 'gem'"),
            (11, f"{MATRIX}.evict_costs.voxtrl", "unknown var or model 'voxtrl' (did you mean"),
            (11, f"{MATRIX}.evict_costs.voxtrl", "a positive integer, not 0"),
        ],
        [],
    ),
    (
        "no sets",
        """\
        routing:
          router:
            use: matrix
            settings:
              matrix:
                vars: {g: gemma}
        """,
        [(5, f"{MATRIX}.sets", "at least one set is required")],
        [],
    ),
    (
        "set expressions",
        """\
        routing:
          router:
            use: matrix
            settings:
              matrix:
                vars: {g: gemma}
                sets:
                  open: "(g | qwen"
                  alias: "g & gem"
                  typo: "g & qwne"
                  ref: "+opn & voxtral"
                  loop: "+loop2 | g"
                  loop2: "qwen & +loop"
                  fine: "+typo | g"
        """,
        [
            (8, f"{MATRIX}.sets.open", "'(' at character 1 is never closed"),
            (9, f"{MATRIX}.sets.alias", "unknown var or model 'gem' at character 5"),
            (10, f"{MATRIX}.sets.typo", "'qwne' at character 5 (did you mean 'qwen'?)"),
            (11, f"{MATRIX}.sets.ref", "+opn at character 1: no set is named 'opn' (did you"),
            (13, f"{MATRIX}.sets.loop2", "+loop at character 8 makes a cycle: loop → loop2"),
        ],
        [],
    ),
    (
        "use: matrix without a matrix",
        """\
        routing:
          router:
            use: matrix
            settings:
              groups: {g: {members: [gemma]}}
        """,
        [(3, "routing.router.use", "routing.router.settings.matrix is not set")],
        [],
    ),
    (
        "a matrix beside use: group waits, unchecked, as in llama-swap",
        """\
        routing:
          router:
            use: group
            settings:
              matrix:
                vars: {x: nope}
                sets: {s: "(("}
        """,
        [],
        [],
    ),
    (
        "the top-level matrix is the one that runs",
        """\
        matrix:
          vars: {g: gemma}
          sets: {s: "g & nope"}
        """,
        [(3, "matrix.sets.s", "unknown var or model 'nope'")],
        [],
    ),
    (
        "the top-level matrix, deprecated",
        """\
        matrix:
          sets: {s: "gemma & qwen"}
        """,
        [],
        [(1, "matrix", "deprecated: write routing.router.settings.matrix")],
    ),
    (
        "top-level groups and matrix",
        """\
        groups:
          g: {members: [gemma]}
        matrix:
          sets: {s: "gemma"}
        """,
        [(3, "matrix", "the top-level groups and matrix are both set")],
        [],
    ),
    (
        "priorities name local models or aliases",
        """\
        routing:
          scheduler:
            settings:
              fifo:
                priority: {gemma: 3, gem: 2, gemma-think: 1, qwne: 1, remote-model: 5}
        """,
        [
            (
                5,
                "routing.scheduler.settings.fifo.priority.qwne",
                "unknown model 'qwne' (did you mean 'qwen'?)",
            ),
            (5, "routing.scheduler.settings.fifo.priority.remote-model", "unknown model"),
        ],
        [],
    ),
    (
        "selector ids",
        """\
        selectors:
          " ": {strategy: pin, targets: [gemma]}
          qwen: {strategy: pin, targets: [gemma]}
          gem: {strategy: pin, targets: [gemma]}
          gemma-think: {strategy: pin, targets: [gemma]}
          other/shared: {strategy: pin, targets: [gemma]}
          remote-model: {strategy: pin, targets: [remote/remote-model]}
        """,
        [
            (2, "selectors. ", "a selector id must not be empty"),
            (3, "selectors.qwen", "'qwen' is also a model id"),
            (4, "selectors.gem", "'gem' is also an alias of 'gemma'"),
            (5, "selectors.gemma-think", "'gemma-think' is also an alias of 'gemma'"),
            (6, "selectors.other/shared", "is the name of peer 'other''s model"),
        ],
        [],
    ),
    (
        "selector targets",
        """\
        selectors:
          first: {strategy: pin, targets: [gemma, remote/shared, remote-model, gem]}
          second: {strategy: pin, targets: [first, qwne, shared, other/shared]}
          warm:
            strategy: warm
            targets: [gemma-think, remote-model, voxtral]
        """,
        [
            (3, "selectors.second.targets[0]", "'first' is a selector"),
            (3, "selectors.second.targets[1]", "unknown model 'qwne' (did you mean 'qwen'?)"),
            # Two peers serve 'shared': only their qualified names reach it.
            (3, "selectors.second.targets[2]", "unknown model 'shared'"),
            (6, "selectors.warm.targets[1]", "'remote-model' is a peer's model: strategy 'warm'"),
        ],
        [],
    ),
    (
        "spillover targets resolve to distinct models",
        """\
        routing:
          router:
            settings:
              groups:
                pool: {swap: false, members: [gemma, qwen]}
        selectors:
          s:
            strategy: spillover
            targets: [gemma, gem, remote-model, remote/remote-model, qwen, qwen]
        """,
        [
            (9, "selectors.s.targets[1]", "'gemma' is already targets[0] ('gem' names it)"),
            (9, "selectors.s.targets[3]", "'remote/remote-model' is already targets[2]"),
            (9, "selectors.s.targets[5]", "'qwen' is already targets[4]"),
        ],
        [],
    ),
    (
        "spillover targets in no group",
        """\
        selectors:
          s: {strategy: spillover, targets: [gemma, qwen, remote-model]}
        """,
        [(2, "selectors.s.targets", "share one group with swap: false; gemma, qwen are in none")],
        [],
    ),
    (
        "spillover targets in a group that swaps",
        """\
        routing:
          router:
            settings:
              groups:
                pool: {members: [gemma, qwen]}
        selectors:
          s: {strategy: spillover, targets: [gemma, qwen]}
        """,
        [(7, "selectors.s.targets", "in group 'pool', which swaps them: set its swap: false")],
        [],
    ),
    (
        "spillover targets in different groups",
        """\
        routing:
          router:
            settings:
              groups:
                one: {swap: false, members: [gemma]}
                two: {swap: false, members: [qwen]}
        selectors:
          s: {strategy: spillover, targets: [gem, qwen, voxtral]}
        """,
        [(8, "selectors.s.targets", "they are gemma in one, qwen in two, voxtral in no group")],
        [],
    ),
    (
        "spillover targets that run together, one local",
        """\
        routing:
          router:
            settings:
              groups:
                pool: {swap: false, members: [gemma, qwen]}
        selectors:
          s: {strategy: spillover, targets: [gemma, qwen], settings: {spillover: 4}}
          t: {strategy: spillover, targets: [voxtral, remote-model, other/shared]}
        """,
        [],
        [],
    ),
    (
        "spillover below 1 with strategy spillover",
        """\
        selectors:
          s: {strategy: spillover, targets: [gemma], settings: {spillover: 0}}
        """,
        [(2, "selectors.s.settings.spillover", "must be at least 1 for spillover, not 0")],
        [],
    ),
    (
        "spillover 0 with another strategy is ignored, as llama-swap does",
        """\
        selectors:
          w: {strategy: warm, targets: [gemma], settings: {spillover: 0}}
        """,
        [],
        [(2, "selectors.w.settings.spillover", "ignored: only strategy 'spillover'")],
    ),
    (
        "a profile in llama-swap's old list form",
        """\
        profiles:
          coding: [gemma, qwen]
        """,
        [(2, "profiles.coding", "old list form is no longer read")],
        [],
    ),
    (
        "spillover targets never in one matrix set",
        """\
        routing:
          router:
            use: matrix
            settings:
              groups:
                pool: {swap: false, members: [gemma, qwen]}
              matrix:
                sets: {s: "gemma | qwen", t: "qwen & voxtral"}
        selectors:
          bad: {strategy: spillover, targets: [gemma, qwen]}
          good: {strategy: spillover, targets: [voxtral, qwen]}
        """,
        [(10, "selectors.bad.targets", "no matrix set lets gemma, qwen run together")],
        [],
    ),
    (
        "spillover is not checked against a matrix that does not compile",
        """\
        matrix:
          sets: {s: "gemma | nope"}
        selectors:
          s: {strategy: spillover, targets: [gemma, qwen]}
        """,
        [(2, "matrix.sets.s", "unknown var or model 'nope'")],
        [],
    ),
    (
        "the spillover setting belongs to strategy spillover",
        """\
        selectors:
          s: {strategy: warm, targets: [gemma], settings: {spillover: 2}}
        """,
        [],
        [(2, "selectors.s.settings.spillover", "ignored: only strategy 'spillover' reads it")],
    ),
    (
        "profiles",
        """\
        selectors:
          coder: {strategy: pin, targets: [qwen]}
        profiles:
          ok:
            description: every kind of target
            pins:
              a: gemma
              b: gem
              c: gemma-think
              d: remote-model
              e: other/shared
              f: coder
              g: ""
              h: ~
              gemma: qwen
          bad:
            pins:
              " ": gemma
              remote/shared: gemma
              x: codr
              y: a
              z: shared
          " ":
            pins: {a: gemma}
          empty:
            pins: {}
        """,
        [
            (18, "profiles.bad.pins. ", "a pinned model id must not be empty"),
            (19, "profiles.bad.pins.remote/shared", "is the name of peer 'remote''s model"),
            (20, "profiles.bad.pins.x", "unknown model or selector 'codr' (did you mean 'coder'"),
            # Pins do not chain, and 'shared' is ambiguous between two peers.
            (21, "profiles.bad.pins.y", "unknown model or selector 'a'"),
            (22, "profiles.bad.pins.z", "unknown model or selector 'shared'"),
            (23, "profiles. ", "a profile name must not be empty"),
            (26, "profiles.empty.pins", "at least one pin is required"),
        ],
        [],
    ),
]


@pytest.mark.parametrize(
    ("snippet", "errors", "warnings"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_routing_checks(snippet: str, errors: Expected, warnings: Expected) -> None:
    got_errors, got_warnings = outcome(snippet)
    matches(got_errors, errors)
    matches(got_warnings, warnings)


# A config shaped like llama-swap's config.example.yaml: profiles, selectors of every strategy,
# groups, a matrix and queue priorities, and a peer.
EXAMPLE = """\
models:
  llama: {cmd: "x --port ${PORT}"}
  qwen-unlisted: {cmd: "x --port ${PORT}", unlisted: true}
  docker-llama: {cmd: "x --port ${PORT}"}
  modelA: {cmd: "x --port ${PORT}"}
  modelB: {cmd: "x --port ${PORT}"}
  keep-1: {cmd: "x --port ${PORT}"}
  keep-2: {cmd: "x --port ${PORT}"}
  gpt-oss-120b: {cmd: "x --port ${PORT}", aliases: [big-coder]}
  gemma-model: {cmd: "x --port ${PORT}"}
  qwen-model: {cmd: "x --port ${PORT}"}
  mistral-model: {cmd: "x --port ${PORT}"}
  voxtral-model: {cmd: "x --port ${PORT}"}
  reranker-model: {cmd: "x --port ${PORT}"}
  stable-diffusion: {cmd: "x --port ${PORT}"}
  llama-70B: {cmd: "x --port ${PORT}"}
profiles:
  writing:
    description: routing for prose
    pins:
      llm-write: big-coder
      llm-outline: outline
      image-gen: ~
selectors:
  writer:
    strategy: warm
    targets: [gpt-oss-120b, qwen-unlisted]
    name: Writer
    description: whichever writer is loaded
    metadata: {purpose: writing}
  outline:
    strategy: pin
    targets: [gpt-oss-120b, openrouter/z-ai/glm-4.7]
  workers:
    strategy: spillover
    targets: [docker-llama, modelA, modelB]
    settings: {spillover: 4}
routing:
  router:
    use: group
    settings:
      groups:
        one-at-a-time: {members: [llama, qwen-unlisted]}
        side-by-side: {swap: false, exclusive: false, members: [docker-llama, modelA, modelB]}
        resident:
          persistent: true
          swap: false
          exclusive: false
          members: [keep-1, keep-2]
      matrix:
        vars: {g: gemma-model, q: qwen-model, m: mistral-model, v: voxtral-model, e: reranker-model}
        evict_costs: {v: 50, llama-70B: 30}
        sets:
          speech: "(g | qwen-model | m) & v"
          ranked: "(g | q) & v & e"
          pictures: "(g | q) & stable-diffusion"
          alone: llama-70B
          workers: "docker-llama & modelA & modelB"
  scheduler:
    use: fifo
    settings:
      fifo:
        priority: {llama: 10, modelA: 5, modelB: 5, big-coder: 1}
peers:
  openrouter:
    proxy: https://openrouter.ai/api
    models: [z-ai/glm-4.7, deepseek/deepseek-v3.2]
"""


@pytest.mark.parametrize(
    ("router", "planned"),
    [
        ("group", set()),
        ("matrix", {"routing.router.use"}),
    ],
)
def test_the_example_shape_loads_with_only_not_implemented_warnings(
    router: str, planned: set[str]
) -> None:
    config = loads(EXAMPLE.replace("use: group", f"use: {router}"), FILE, environ={})
    assert {(w.key, NOT_IMPLEMENTED in w.message) for w in config.warnings} == {
        (key, True)
        for key in {
            "profiles",
            "selectors",
            "routing.router.settings.matrix",
            "routing.scheduler.settings.fifo.priority",
            *planned,
        }
    }
