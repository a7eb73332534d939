"""The matrix router's set expressions (llama-swap's grammar), parsed, checked and expanded.

    expr := and ('|' and)*        alternatives: one of them runs
    and  := atom ('&' atom)*      every part runs together
    atom := NAME | '+' NAME | '(' expr ')'

A NAME (letters, digits, '_', '-', '.') is a var or a model id; `+name` inlines another set.
`&` binds tighter than `|`. An expression stands for a family of concrete model sets:
`(a | b) & c` for {a, c} and {b, c}. Positions in messages count characters from 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from trioswap.config.keys import did_you_mean

_ATOM = "a model, var, +set or '('"


@dataclass(frozen=True)
class Leaf:
    name: str
    at: int


@dataclass(frozen=True)
class Ref:
    name: str
    at: int


@dataclass(frozen=True)
class And:
    parts: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Expr, ...]


Expr = Leaf | Ref | And | Or
Family = tuple[frozenset[str], ...]


class ExprError(ValueError):
    """A syntax error; the message says where."""


@dataclass(frozen=True)
class Problem:
    set: str
    message: str


class MatrixError(ValueError):
    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{p.set}: {p.message}" for p in self.problems))


# -- syntax ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # 'name', 'ref', one of '&|()', or 'end'
    text: str
    at: int


def _is_name_char(ch: str) -> bool:
    return ch.isalpha() or ch.isdecimal() or ch in "_-."


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "&|()":
            tokens.append(_Token(ch, ch, i + 1))
            i += 1
        elif ch == "+" or _is_name_char(ch):
            start = i + 1 if ch == "+" else i
            end = start
            while end < len(text) and _is_name_char(text[end]):
                end += 1
            if end == start:
                raise ExprError(f"'+' at character {i + 1} must be followed by a set name")
            kind = "ref" if ch == "+" else "name"
            tokens.append(_Token(kind, text[i:end], i + 1))
            i = end
        else:
            raise ExprError(f"unexpected {ch!r} at character {i + 1}")
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


def parse(text: str) -> Expr:
    if not text.strip():
        raise ExprError("the expression is empty")
    return _Parser(_tokenize(text)).whole()


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        if token.kind != "end":
            self.pos += 1
        return token

    def whole(self) -> Expr:
        expr = self.alternatives()
        token = self.peek()
        if token.kind == ")":
            raise ExprError(f"unexpected ')' at character {token.at}: no '(' to close")
        if token.kind != "end":
            raise ExprError(f"unexpected {token.text!r} at character {token.at}: expected & or |")
        return expr

    def alternatives(self) -> Expr:
        parts = [self.conjunction()]
        while self.peek().kind == "|":
            self.take()
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def conjunction(self) -> Expr:
        parts = [self.atom()]
        while self.peek().kind == "&":
            self.take()
            parts.append(self.atom())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def atom(self) -> Expr:
        token = self.take()
        if token.kind == "name":
            return Leaf(token.text, token.at)
        if token.kind == "ref":
            return Ref(token.text[1:], token.at)
        if token.kind == "(":
            inner = self.alternatives()
            close = self.take()
            if close.kind == "end":
                raise ExprError(f"'(' at character {token.at} is never closed")
            if close.kind != ")":
                raise ExprError(
                    f"unexpected {close.text!r} at character {close.at}: expected &, | or ')' "
                    f"to close '(' at character {token.at}"
                )
            return inner
        if token.kind == "end":
            before = self.tokens[self.pos - 1]
            raise ExprError(
                f"the expression ends after {before.text!r} at character {before.at}: "
                f"{_ATOM} must follow"
            )
        raise ExprError(f"unexpected {token.text!r} at character {token.at}: expected {_ATOM}")


def _walk(expr: Expr) -> Iterable[Leaf | Ref]:
    """The names and references of `expr`, left to right."""
    if isinstance(expr, Leaf | Ref):
        yield expr
    else:
        for part in expr.parts:
            yield from _walk(part)


# -- a set of named expressions -------------------------------------------------------------


@dataclass(frozen=True)
class Program:
    """Named expressions, in definition order, their names resolved to model ids."""

    sets: Mapping[str, Expr]

    def expand(self, name: str, within: frozenset[str] | None = None) -> Family:
        """The concrete model sets that set `name` stands for, each once, left to right (the
        order llama-swap breaks ties in). The family grows with the product of the
        alternatives; `within` projects every set onto those models first, which bounds it by
        2**len(within) — how to ask about a few models of a large matrix."""
        memo: dict[str, Family] = {}

        def family(expr: Expr) -> Family:
            if isinstance(expr, Leaf):
                return (frozenset({expr.name} if within is None or expr.name in within else ()),)
            if isinstance(expr, Ref):
                if expr.name not in memo:
                    memo[expr.name] = family(self.sets[expr.name])
                return memo[expr.name]
            if isinstance(expr, Or):
                return _unique(s for part in expr.parts for s in family(part))
            product: Family = (frozenset(),)
            for part in expr.parts:
                product = _unique(a | b for a in product for b in family(part))
            return product

        return family(self.sets[name])

    def can_contain_all(self, models: Iterable[str]) -> bool:
        """Whether one concrete set of one named set holds every model."""
        wanted = frozenset(models)
        return any(wanted <= s for name in self.sets for s in self.expand(name, within=wanted))


def _unique(sets: Iterable[frozenset[str]]) -> Family:
    return tuple(dict.fromkeys(sets))


def compile_sets(sources: Mapping[str, str], names: Mapping[str, str]) -> Program:
    """Parse every set, resolve each NAME through `names` (var or model id → model id) and
    check the references. Raises `MatrixError` with one problem per fault."""
    problems: list[Problem] = []
    parsed: dict[str, Expr] = {}
    for set_name, text in sources.items():
        try:
            parsed[set_name] = parse(text)
        except ExprError as exc:
            problems.append(Problem(set_name, str(exc)))
    refs: dict[str, dict[str, int]] = {}
    for set_name, expr in parsed.items():
        refs[set_name] = {}
        for item in _walk(expr):
            if isinstance(item, Leaf) and item.name not in names:
                problems.append(
                    Problem(
                        set_name,
                        f"unknown var or model {item.name!r} at character {item.at}"
                        + did_you_mean(item.name, list(names)),
                    )
                )
            elif isinstance(item, Ref) and item.name not in sources:
                problems.append(
                    Problem(
                        set_name,
                        f"+{item.name} at character {item.at}: no set is named {item.name!r}"
                        + did_you_mean(item.name, list(sources)),
                    )
                )
            elif isinstance(item, Ref) and item.name in parsed:
                refs[set_name].setdefault(item.name, item.at)
    problems.extend(_cycles(refs))
    if problems:
        raise MatrixError(problems)
    return Program({name: _resolved(expr, names) for name, expr in parsed.items()})


def _cycles(refs: Mapping[str, Mapping[str, int]]) -> list[Problem]:
    """One problem per reference that closes a cycle, at that reference."""
    problems: list[Problem] = []
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> None:
        path.append(name)
        for target, at in refs[name].items():
            if target in path:
                loop = " → ".join([*path[path.index(target) :], target])
                problems.append(Problem(name, f"+{target} at character {at} makes a cycle: {loop}"))
            elif target not in done:
                visit(target)
        path.pop()
        done.add(name)

    for name in refs:
        if name not in done:
            visit(name)
    return problems


def _resolved(expr: Expr, names: Mapping[str, str]) -> Expr:
    if isinstance(expr, Leaf):
        return Leaf(names[expr.name], expr.at)
    if isinstance(expr, Ref):
        return expr
    return type(expr)(tuple(_resolved(part, names) for part in expr.parts))
