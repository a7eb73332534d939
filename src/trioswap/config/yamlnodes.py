"""Read YAML into plain values while keeping the line of every key, for error messages.

PyYAML's composer gives nodes with marks; we construct scalars with the safe constructor and
walk mappings and sequences ourselves so nothing loses its position.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml


@dataclass(frozen=True)
class YamlError(Exception):
    line: int | None
    message: str


@dataclass(frozen=True)
class Node:
    """A YAML value with the (1-based) line it starts on."""

    value: Any
    line: int

    def items(self) -> Iterator[tuple[str, Node]]:
        yield from self.value.items()


def parse(text: str) -> Node | None:
    """Parse one YAML document into `Node`s: mappings hold `dict[str, Node]`, sequences
    `list[Node]`, scalars plain Python values. Raises `YamlError` on syntax errors and
    duplicate keys."""
    try:
        loader = yaml.SafeLoader(text)
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


def _convert(loader: yaml.SafeLoader, node: yaml.Node, path: frozenset[int]) -> Node:
    line = node.start_mark.line + 1
    if id(node) in path:
        raise YamlError(line, "recursive alias")
    path = path | {id(node)}
    if isinstance(node, yaml.MappingNode):
        explicit = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
        loader.flatten_mapping(node)
        merged = len(node.value) - explicit  # flatten_mapping puts merged pairs first
        mapping: dict[str, Node] = {}
        seen: set[str] = set()
        for i, (key_node, value_node) in enumerate(node.value):
            key = loader.construct_object(key_node)
            if not isinstance(key, str):
                key = str(key)
            key_line = key_node.start_mark.line + 1
            if i >= merged:
                if key in seen:
                    raise YamlError(key_line, f"duplicate key {key!r}")
                seen.add(key)
            mapping[key] = Node(_convert(loader, value_node, path).value, key_line)
        return Node(mapping, line)
    if isinstance(node, yaml.SequenceNode):
        return Node([_convert(loader, item, path) for item in node.value], line)
    value = loader.construct_object(node)
    if isinstance(value, datetime.date | bytes):
        value = node.value  # keep the text: JSON has no dates
    return Node(value, line)
