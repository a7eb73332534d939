"""Read YAML into plain values while keeping the line of every key, for error messages.

PyYAML's composer gives nodes with marks; we construct scalars with the safe constructor and
walk mappings and sequences ourselves so nothing loses its position.
"""

from __future__ import annotations

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
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        return None if root is None else _convert(loader, root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise YamlError(line, f"{exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise YamlError(None, str(exc)) from None
    finally:
        loader.dispose()


def _convert(loader: yaml.SafeLoader, node: yaml.Node) -> Node:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        mapping: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node)
            if not isinstance(key, str):
                key = str(key)
            if key in mapping:
                raise YamlError(key_node.start_mark.line + 1, f"duplicate key {key!r}")
            mapping[key] = _convert(loader, value_node)
        return Node(mapping, line)
    if isinstance(node, yaml.SequenceNode):
        return Node([_convert(loader, item) for item in node.value], line)
    return Node(loader.construct_object(node), line)
