"""What `trioswap validate` and `trioswap schema` print: the resolved config with secrets
masked, its one-line summary, and the JSON Schema editors use."""

from __future__ import annotations

import copy
import shlex
from typing import Any

from trioswap.config.keys import fields_by_key, planned_note
from trioswap.config.resolved import Config
from trioswap.config.schema import File, Section
from trioswap.redact import MASK, redact_args, redact_env

_MACRO = {
    "type": "string",
    "pattern": r"^\$\{[^}]+\}$",
    "description": "a macro (${name}, ${env.NAME}) that stands for the whole value",
}
_MACRO_REF = {"$ref": "#/$defs/Macro"}
_ANNOTATIONS = ("title", "description", "default", "deprecated")


def redacted(config: Config) -> dict[str, Any]:
    """The resolved config in the file's keys, with secrets masked (`validate --json`)."""
    doc = copy.deepcopy(dict(config.document))
    doc["apiKeys"] = [MASK] * len(doc.get("apiKeys", []))
    for peer in doc.get("peers", {}).values():
        if peer.get("apiKey"):
            peer["apiKey"] = MASK
    for model_id, entry in doc.get("models", {}).items():
        model = config.models[model_id]
        entry["cmd"] = shlex.join(redact_args(model.cmd))
        if model.cmd_stop:
            entry["cmdStop"] = shlex.join(redact_args(model.cmd_stop))
        entry["env"] = [f"{k}={v}" for k, v in redact_env(model.env).items()]
    return doc


def summary(config: Config) -> str:
    """`OK: 3 models, 1 group, 2 warnings`."""
    counts = [
        _count(len(config.models), "model"),
        _count(len(config.groups), "group"),
        _count(len(config.peers), "peer"),
        _count(len(config.warnings), "warning"),
    ]
    return "OK: " + ", ".join(c for c in counts if c[0] != "0" or "model" in c or "warning" in c)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def json_schema() -> dict[str, Any]:
    """The config file's JSON Schema, from `schema.File`."""
    out = File.model_json_schema(by_alias=True, mode="validation")
    out = {"$schema": "https://json-schema.org/draft/2020-12/schema", **out}
    # Top-level keys that only hold YAML anchors are allowed (trioswap warns about them).
    out.pop("additionalProperties", None)
    defs = out.setdefault("$defs", {})
    _mark_planned(out, File, defs)
    _add_old_spellings(defs)
    _allow_macros(out)
    defs["Macro"] = _MACRO
    return out


def _mark_planned(node: dict[str, Any], cls: type[Section], defs: dict[str, Any]) -> None:
    props = node.get("properties", {})
    for key, (info, annotation) in fields_by_key(cls).items():
        what = planned_note(info, annotation)
        if what is not None and key in props:
            props[key]["description"] = f"Not implemented in trioswap yet ({what}); accepted."
    for name, sub in defs.items():
        klass = _section(name)
        if klass is not None and klass is not cls and not sub.get("_marked"):
            sub["_marked"] = True
            _mark_planned(sub, klass, {})
            del sub["_marked"]


def _add_old_spellings(defs: dict[str, Any]) -> None:
    """Old spellings llama-swap still reads are valid, and marked deprecated for editors."""
    for name, sub in defs.items():
        klass = _section(name)
        props = sub.get("properties", {})
        for old, new in (klass.deprecated_keys if klass else {}).items():
            old_schema = copy.deepcopy(props[new])
            props[old] = {**old_schema, "deprecated": True, "description": f"old spelling of {new}"}


def _allow_macros(node: dict[str, Any]) -> None:
    """A value that is exactly one macro takes the macro's type (`ttl: ${ttl}`), so wherever the
    file wants a number, a boolean or a duration, a `${...}` string is valid too. A choice of
    words stays a plain enum, the list editors offer."""
    if "anyOf" in node:
        if any(_typed(branch) for branch in node["anyOf"]) and not any(
            _any_string(branch) for branch in node["anyOf"]
        ):
            node["anyOf"].append(_MACRO_REF)
        branches = [b for b in node["anyOf"] if not _typed(b)]
    elif _typed(node):
        notes = {k: node.pop(k) for k in _ANNOTATIONS if k in node}
        constraint = dict(node)
        node.clear()
        node.update(notes, anyOf=[constraint, _MACRO_REF])
        return
    else:
        branches = [
            *node.get("$defs", {}).values(),
            *node.get("properties", {}).values(),
            *(node[k] for k in ("items", "additionalProperties") if isinstance(node.get(k), dict)),
        ]
    for branch in branches:
        _allow_macros(branch)


def _typed(node: dict[str, Any]) -> bool:
    return node.get("type") in ("number", "integer", "boolean") or "pattern" in node


def _any_string(node: dict[str, Any]) -> bool:
    return node.get("type") == "string" and not ({"enum", "const", "pattern"} & node.keys())


def _section(name: str) -> type[Section] | None:
    from trioswap.config import schema

    klass = getattr(schema, name, None)
    return klass if isinstance(klass, type) and issubclass(klass, Section) else None
