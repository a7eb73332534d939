"""`${...}` substitution over the YAML tree, as llama-swap does it.

`${name}` is a macro (global, or the model's own, which win), `${env.NAME}` an environment
variable, `${MODEL_ID}` the model's id. A value that is exactly one macro takes the macro's type
(`ttl: ${ttl}` stays a number). `${PORT}` is left in place here: a model has a port only when its
`cmd` uses it, which is known once everything else is expanded (`substitute_port`). `${PID}`
stays for `cmdStop` to fill when it runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from trioswap.config.keys import did_you_mean
from trioswap.config.yamlnodes import Node, scalar

MACRO = re.compile(r"\$\{([^}]*)\}")
_WHOLE_ENV = re.compile(r"\$\{env\.[^}]*\}")
# Keys whose values go anywhere (into request bodies, /v1/models): nothing else types them.
_TYPED_ENV = frozenset({"metadata", "setParams", "setParamsByID"})
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
RESERVED = ("PORT", "MODEL_ID", "PID")
_MAX_DEPTH = 20

Report = Callable[[int | None, str, str], None]


class Expander:
    def __init__(self, environ: Mapping[str, str], report: Report) -> None:
        self.environ = environ
        self.report = report

    def declared(self, node: Node | None, key: str) -> dict[str, Any]:
        """The macros a `macros:` mapping declares, each checked."""
        if node is None or not isinstance(node.value, dict):
            return {}
        macros: dict[str, Any] = {}
        for name, child in node.value.items():
            where = f"{key}.{name}"
            if not _NAME.match(name):
                self.report(child.line, where, "macro names are 1-63 letters, digits, '_' and '-'")
            elif name in RESERVED:
                self.report(child.line, where, f"{name} is reserved and set by trioswap")
            elif isinstance(child.value, dict | list) or child.value is None:
                self.report(child.line, where, "a macro must be a string, number or boolean")
            elif isinstance(child.value, str) and f"${{{name}}}" in child.value:
                self.report(child.line, where, "a macro cannot use itself")
            else:
                macros[name] = child.value
        return macros

    def expand(
        self,
        node: Node,
        macros: Mapping[str, Any],
        key: str,
        allow_pid: bool = False,
        typed: bool = False,
    ) -> Node:
        """`node` with every macro substituted, recursively; lines are kept. Under `typed` (the
        free-form values of `_TYPED_ENV`), an unquoted `${env.X}` takes the type YAML gives X's
        text, as in llama-swap, which puts env values into the text before parsing it."""
        value = node.value
        typed = typed or key.rpartition(".")[2] in _TYPED_ENV
        if isinstance(value, dict):
            out: dict[str, Node] = {}
            for k, v in value.items():
                where = f"{key}.{k}"
                name = self._key(k, v.line, macros, where)
                if name in out:  # only expanded keys can meet: YAML refuses duplicate keys
                    self.report(v.line, where, f"names {name!r}, as another key here does")
                out[name] = self.expand(v, macros, where, allow_pid, typed)
            return Node(out, node.line)
        if isinstance(value, list):
            return Node(
                [
                    self.expand(v, macros, f"{key}[{i}]", allow_pid, typed)
                    for i, v in enumerate(value)
                ],
                node.line,
            )
        result = self.value(value, macros, node.line, key, allow_pid)
        if typed and node.plain and isinstance(result, str) and _WHOLE_ENV.fullmatch(value):
            result = scalar(result)
        return Node(result, node.line)

    def value(
        self, value: Any, macros: Mapping[str, Any], line: int, key: str, allow_pid: bool = False
    ) -> Any:
        if not isinstance(value, str) or "${" not in value:
            return value
        whole = MACRO.fullmatch(value)
        if whole and whole[1] not in ("PID", "PORT"):
            found = self._lookup(whole[1], macros, line, key, allow_pid, 0)
            return value if found is None else found
        return self._text(value, macros, line, key, allow_pid, 0)

    def _key(self, key: str, line: int, macros: Mapping[str, Any], where: str) -> str:
        # Mapping keys are not macro targets, except where llama-swap expands them
        # (setParamsByID's keys); `expand_keys` marks those with a sentinel in `macros`.
        if _EXPAND_KEYS not in macros or "${" not in key:
            return key
        return self._text(key, macros, line, where, False, 0)

    def _text(
        self,
        text: str,
        macros: Mapping[str, Any],
        line: int,
        key: str,
        allow_pid: bool,
        depth: int,
    ) -> str:
        def substitute(match: re.Match[str]) -> str:
            name = match[1]
            if name == "PID":
                if not allow_pid:
                    self.report(line, key, "${PID} is only available in cmdStop")
                return match[0]
            if name == "PORT" and "PORT" not in macros:
                return match[0]
            found = self._lookup(name, macros, line, key, allow_pid, depth)
            return match[0] if found is None else macro_text(found)

        return MACRO.sub(substitute, text)

    def _lookup(
        self,
        name: str,
        macros: Mapping[str, Any],
        line: int,
        key: str,
        allow_pid: bool,
        depth: int,
    ) -> Any:
        if depth > _MAX_DEPTH:
            self.report(line, key, f"macro ${{{name}}} expands recursively without end")
            return None
        if name.startswith("env."):
            var = name[4:]
            if var not in self.environ:
                self.report(
                    line, key, f"environment variable {var!r} is not set (used as ${{{name}}})"
                )
                return None
            return self.environ[var]
        if name not in macros or name == _EXPAND_KEYS:
            known = sorted(m for m in macros if m != _EXPAND_KEYS)
            self.report(line, key, f"unknown macro ${{{name}}}" + did_you_mean(name, known))
            return None
        value = macros[name]
        if isinstance(value, str) and "${" in value:
            return self._text(value, macros, line, key, allow_pid, depth + 1)
        return value


# A key in a macro scope that makes `Expander.expand` substitute mapping keys as well.
_EXPAND_KEYS = "\0keys"


def expand_keys(macros: Mapping[str, Any]) -> dict[str, Any]:
    return {**macros, _EXPAND_KEYS: True}


def substitute_port(node: Node, port: int) -> Node:
    """`node` with `${PORT}` replaced (a value that is exactly `${PORT}` becomes the number)."""
    value = node.value
    if isinstance(value, dict):
        return Node(
            {k.replace("${PORT}", str(port)): substitute_port(v, port) for k, v in value.items()},
            node.line,
        )
    if isinstance(value, list):
        return Node([substitute_port(v, port) for v in value], node.line)
    if isinstance(value, str) and "${PORT}" in value:
        return Node(port if value == "${PORT}" else value.replace("${PORT}", str(port)), node.line)
    return node


def uses_port(node: Node | None) -> bool:
    return node is not None and isinstance(node.value, str) and "${PORT}" in node.value


def leftover_ports(node: Node, key: str) -> list[tuple[int, str]]:
    """Where `${PORT}` remains (in a model that has no port)."""
    value = node.value
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in leftover_ports(v, f"{key}.{k}")]
    if isinstance(value, list):
        return [hit for i, v in enumerate(value) for hit in leftover_ports(v, f"{key}[{i}]")]
    if isinstance(value, str) and "${PORT}" in value:
        return [(node.line, key)]
    return []


def macro_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
