"""The key check: walks the YAML against `schema.py` before anything is validated.

llama-swap ignores keys it does not know; trioswap accepts them too, but says so: an unknown
key is a warning with its line and, when one is close, the key that was probably meant. Old
spellings are renamed with a deprecation warning, and keys trioswap reads but does not act on
yet (`Planned`) get one warning each. The result is the document with unknown keys removed,
ready for macros and validation.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Callable, Iterator
from functools import cache
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from trioswap.config.schema import Planned, Section
from trioswap.config.yamlnodes import Node

Report = Callable[[int | None, str, str], None]


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """' (did you mean 'x'?)' when one choice is close to `word` or begins it, else ''."""
    lowered = {c.lower(): c for c in choices}
    close = [lowered[word.lower()]] if word.lower() in lowered else []
    close = close or [c for c in choices if _one_edit(word, c)]
    close = close or difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    close = close or [c for c in choices if len(c) > 2 and word.lower().startswith(c.lower())]
    return f" (did you mean {close[0]!r}?)" if close else ""


def _one_edit(word: str, choice: str) -> bool:
    """`word` is `choice` with one letter wrong, missing, extra, or two neighbours swapped
    (tll → ttl, cmdStpo → cmdStop); only for words long enough to make that meaningful."""
    if min(len(word), len(choice)) < 3 or word == choice:
        return False
    if len(word) == len(choice):
        diff = [i for i, (a, b) in enumerate(zip(word, choice, strict=True)) if a != b]
        if len(diff) == 1:
            return True
        i = diff[0]
        return (
            len(diff) == 2
            and diff[1] == i + 1
            and (word[i], word[i + 1]) == (choice[i + 1], choice[i])
        )
    short, long = sorted((word, choice), key=len)
    if len(long) - len(short) != 1:
        return False
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


# A key written with no value, or an empty list or mapping: the default.
EMPTY: tuple[object, ...] = (None, [], {})


@cache
def fields_by_key(cls: type[Section]) -> dict[str, tuple[FieldInfo, Any]]:
    """The keys a section may hold → (field, annotation with its `Annotated` metadata)."""
    hints = _annotations(cls)
    return {info.alias or name: (info, hints[name]) for name, info in cls.model_fields.items()}


def planned_note(info: FieldInfo, annotation: Any) -> str | None:
    for item in [*info.metadata, *_metadata(annotation)]:
        if isinstance(item, Planned):
            return item.what
    return None


def check(node: Node, cls: type[Section], path: str, warn: Report) -> Node:
    """`node` (a mapping for `cls`) with unknown keys dropped and old spellings renamed. A key
    with no value (null) is dropped too: it takes its default, as in llama-swap (a switch is
    kept, as an empty section)."""
    if not isinstance(node.value, dict):
        return node  # validation reports the wrong type
    known = fields_by_key(cls)
    kept: dict[str, Node] = {}
    for key, child in node.value.items():
        where = f"{path}.{key}" if path else key
        if key in cls.deprecated_keys:
            new = cls.deprecated_keys[key]
            if new in node.value:  # llama-swap, too, reads only the new spelling then
                warn(child.line, where, f"ignored: the old spelling of {new!r}, which is set too")
                continue
            warn(child.line, where, f"deprecated: write {new!r} (llama-swap reads both)")
            key, where = new, f"{path}.{new}" if path else new
        if key not in known:
            # `x-…` keys hold YAML anchors (Compose's convention), so they are no typo.
            hint = "" if key.startswith("x-") else did_you_mean(key, list(known))
            warn(child.line, where, "unknown key, ignored" + hint)
            continue
        if child.value is None:
            if key not in cls.switches:
                continue
            child = Node({}, child.line)
        info, annotation = known[key]
        # An empty value is the default, which asks nothing of the feature.
        if (what := planned_note(info, annotation)) is not None and child.value not in EMPTY:
            warn(child.line, where, f"accepted, but {what} is not implemented in trioswap yet")
        kept[key] = _check_value(child, annotation, where, warn)
    return Node(kept, node.line)


def _check_value(node: Node, annotation: Any, path: str, warn: Report) -> Node:
    shape, cls = _shape(annotation)
    if cls is None:
        return node
    if shape == "section":
        return check(node, cls, path, warn)
    if shape == "map" and isinstance(node.value, dict):
        return Node(
            {k: check(v, cls, f"{path}.{k}", warn) for k, v in node.value.items()},
            node.line,
        )
    return node


def _shape(annotation: Any) -> tuple[str, type[Section] | None]:
    """('section', cls) for a nested section, ('map', cls) for `dict[str, cls]`."""
    annotation = _strip(annotation)
    if _is_section(annotation):
        return "section", annotation
    if get_origin(annotation) is dict:
        value = _strip(get_args(annotation)[1])
        if _is_section(value):
            return "map", value
    return "leaf", None


def _strip(annotation: Any) -> Any:
    """Without `Annotated` and `| None`."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in (Union, types.UnionType):
            rest = [a for a in get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def _metadata(annotation: Any) -> Iterator[Any]:
    if get_origin(annotation) is Annotated:
        yield from get_args(annotation)[1:]


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _annotations(cls: type[Section]) -> dict[str, Any]:
    """Field annotations with `Annotated` metadata kept (pydantic moves it into `metadata` for
    most, but not for `Annotated[X | None, ...]`)."""
    import typing

    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if issubclass(klass, BaseModel):
            hints.update(typing.get_type_hints(klass, include_extras=True))
    return hints
