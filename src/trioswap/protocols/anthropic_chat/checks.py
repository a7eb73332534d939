"""Reading a client's JSON: a value of the expected type, or a BadRequest that says where
(`messages[3].content[1].source`) and what it found instead."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trioswap.clip import clip
from trioswap.errors import BadRequest

_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def show(value: Any) -> str:
    return repr(clip(value)) if isinstance(value, str) else json_type(value)


def obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BadRequest(f"{where}: expected an object, got {json_type(value)}")
    return value


def array(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise BadRequest(f"{where}: expected an array, got {json_type(value)}")
    return value


def string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{where}: expected a string, got {json_type(value)}")
    return value


def integer(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{where}: expected an integer, got {json_type(value)}")
    return value


def number(value: Any, where: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise BadRequest(f"{where}: expected a number, got {json_type(value)}")
    return value
