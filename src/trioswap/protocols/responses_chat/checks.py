"""Reading a client's JSON: a value of the expected type, or a BadRequest that says where
(`input[3].content[1].image_url`) and what was found instead."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from trioswap.clip import clip
from trioswap.errors import BadRequest

STATELESS = (
    "trioswap keeps no responses (it is stateless, and answers every request as with store: false)"
)


def fail(where: str, message: str) -> NoReturn:
    raise BadRequest(f"{where}: {message}")


def show(value: object) -> str:
    return repr(clip(value)) if isinstance(value, str) else f"of type {type(value).__name__}"


def obj(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        fail(where, f"expected an object, got {show(value)}")
    return value


def array(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        fail(where, f"expected an array, got {show(value)}")
    return value


def kind_of(value: Mapping[str, Any], where: str) -> str | None:
    kind = value.get("type")
    if kind is not None and not isinstance(kind, str):
        fail(f"{where}.type", f"expected a string, got {show(kind)}")
    return kind


def string(value: object, where: str) -> str:
    if not isinstance(value, str):
        fail(where, f"expected a string, got {show(value)}")
    return value
