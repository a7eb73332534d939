"""Read YAML into plain values while keeping the line of every key, for error messages.

PyYAML's composer gives nodes with marks; we construct scalars with the safe constructor and
walk mappings and sequences ourselves so nothing loses its position. Scalars are read as
llama-swap's yaml.v3 reads them: only true/false are booleans (YAML 1.1's yes/no/on/off are
text, so a model may be called `off`), and in a merge (`<<: [*a, *b]`) the first mapping wins.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml


@dataclass(frozen=True)
class YamlError(Exception):
    line: int | None
    message: str


@dataclass(frozen=True)
class Node:
    """A YAML value with the (1-based) line it starts on; `plain` for an unquoted scalar."""

    value: Any
    line: int
    plain: bool = field(default=False, compare=False)

    def items(self) -> Iterator[tuple[str, Node]]:
        yield from self.value.items()


class Loader(yaml.SafeLoader):
    """The safe loader with YAML 1.2's booleans."""


Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_MERGE = "tag:yaml.org,2002:merge"


def scalar(text: str) -> Any:
    """`text` typed as an unquoted YAML scalar would be (`4096` → 4096, `true` → True)."""
    node = yaml.ScalarNode(Loader.resolve(Loader, yaml.ScalarNode, text, (True, False)), text)
    try:
        return Loader(text).construct_object(node)
    except (yaml.YAMLError, ValueError):
        return text


def parse(text: str) -> Node | None:
    """Parse one YAML document into `Node`s: mappings hold `dict[str, Node]`, sequences
    `list[Node]`, scalars plain Python values. Raises `YamlError` on syntax errors and
    duplicate keys."""
    try:
        loader = Loader(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise YamlError(line, f"unacceptable character #x{exc.character:04x}") from None
    try:
        root = loader.get_single_node()
        return None if root is None else _convert(loader, root, frozenset())
    except RecursionError:
        raise YamlError(None, "the document is nested too deeply") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise YamlError(line, f"{exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise YamlError(None, str(exc)) from None
    finally:
        loader.dispose()


def _convert(loader: Loader, node: yaml.Node, path: frozenset[int]) -> Node:
    line = node.start_mark.line + 1
    if id(node) in path:
        raise YamlError(line, "recursive alias")
    path = path | {id(node)}
    if isinstance(node, yaml.MappingNode):
        merged: dict[str, Node] = {}
        mapping: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                sources = (
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        raise YamlError(line, "a merge key (<<) takes a mapping or a list of them")
                    for key, child in _convert(loader, source, path).value.items():
                        merged.setdefault(key, child)  # the first mapping that has it wins
                continue
            key = loader.construct_object(key_node)
            if not isinstance(key, str):
                key = str(key)
            key_line = key_node.start_mark.line + 1
            if key in mapping:
                raise YamlError(key_line, f"duplicate key {key!r}")
            child = _convert(loader, value_node, path)
            mapping[key] = Node(child.value, key_line, child.plain)
        return Node({**merged, **mapping}, line)
    if isinstance(node, yaml.SequenceNode):
        return Node([_convert(loader, item, path) for item in node.value], line)
    value = loader.construct_object(node)
    if isinstance(value, datetime.date | bytes):
        value = node.value  # keep the text: JSON has no dates
    return Node(value, line, plain=node.style is None)
