"""Reading a config: YAML → key check → macros and ports → validation → the resolved `Config`.

Every problem is collected with file, line and key path and reported together: errors in one
`ConfigError`, warnings on `Config.warnings` (errors too under `strict`). `--config-dir` files
are merged the way llama-swap merges them; each keeps its own name in messages.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trioswap.config import keys, macros
from trioswap.config.resolve import Resolver
from trioswap.config.resolved import Config, ModelConfig
from trioswap.config.schema import DEFAULT_PROXY, File, Model
from trioswap.config.yamlnodes import Node, YamlError, parse
from trioswap.errors import ConfigError, ConfigProblem

PORT_SPAN = 1000
# Maps whose keys name things (a model, a peer): the same key in two merged files is an error.
_IDENTITY_MAPS = frozenset(
    {
        "models",
        "groups",
        "profiles",
        "selectors",
        "peers",
        "routing.router.settings.groups",
        "matrix",
        "routing.router.settings.matrix",
    }
)


class Sources:
    """Where each line came from. Files merged by `--config-dir` are numbered as if they were
    concatenated, so a `Node`'s line alone locates it."""

    def __init__(self) -> None:
        self._files: list[tuple[int, str]] = []  # (first global line, file name)
        self._next = 0

    def add(self, name: str, text: str) -> int:
        self._files.append((self._next, name))
        offset = self._next
        self._next += text.count("\n") + 1
        return offset

    def where(self, line: int | None) -> tuple[str, int | None]:
        if line is None:
            return self._files[0][1], None
        for first, name in reversed(self._files):
            if line > first:
                return name, line - first
        return self._files[0][1], line

    @property
    def names(self) -> list[str]:
        return [name for _, name in self._files]


class Problems:
    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self.errors: list[ConfigProblem] = []
        self.warnings: list[ConfigProblem] = []

    def _problem(self, line: int | None, key: str, message: str) -> ConfigProblem:
        file, local = self.sources.where(line)
        return ConfigProblem(file, local, key, message)

    def error(self, line: int | None, key: str, message: str) -> None:
        self.errors.append(self._problem(line, key, message))

    def warn(self, line: int | None, key: str, message: str) -> None:
        self.warnings.append(self._problem(line, key, message))


def load(path: str | Path, *, strict: bool = False) -> Config:
    """Read and validate a config file. Raises `ConfigError`."""
    return load_sources([Path(path)], strict=strict)


def load_dir(config: str | Path | None, directory: str | Path, *, strict: bool = False) -> Config:
    """`--config FILE --config-dir DIR`: FILE (if any), then DIR's *.yaml/*.yml by name."""
    folder = Path(directory)
    try:
        found = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem(str(folder), None, "", f"cannot read: {exc.strerror}")]
        ) from None
    paths = ([Path(config)] if config else []) + found
    if config and any(p.resolve() == Path(config).resolve() for p in found):
        raise ConfigError(
            [ConfigProblem(str(config), None, "", f"is also in --config-dir {folder}")]
        )
    if not paths:
        raise ConfigError([ConfigProblem(str(folder), None, "", "has no *.yaml files")])
    return load_sources(paths, strict=strict)


def load_sources(paths: list[Path], *, strict: bool = False) -> Config:
    texts = []
    for path in paths:
        try:
            texts.append((str(path), path.read_text(encoding="utf-8")))
        except OSError as exc:
            raise ConfigError(
                [ConfigProblem(str(path), None, "", f"cannot read: {exc.strerror}")]
            ) from None
        except UnicodeDecodeError:
            raise ConfigError([ConfigProblem(str(path), None, "", "not UTF-8 text")]) from None
    return read(texts, os.environ, strict=strict)


def loads(
    text: str,
    filename: str = "<config>",
    environ: Mapping[str, str] | None = None,
    *,
    strict: bool = False,
) -> Config:
    return read([(filename, text)], os.environ if environ is None else environ, strict=strict)


def read(texts: list[tuple[str, str]], environ: Mapping[str, str], *, strict: bool) -> Config:
    sources = Sources()
    problems = Problems(sources)
    root: Node | None = None
    for name, text in texts:
        offset = sources.add(name, text)
        try:
            parsed = parse(macros.MACRO.sub(_hide_braces, text))
        except YamlError as exc:
            message = f"invalid YAML: {exc.message.translate(_UNHIDE)}"
            raise ConfigError([ConfigProblem(name, exc.line, "", message)]) from None
        if parsed is None or parsed.value is None:
            continue
        node = _shift(_unhide_braces(parsed), offset)
        if root is None:
            root = node
        elif isinstance(node.value, dict) and isinstance(root.value, dict):
            root = _merge(root, node, "", problems)
        else:
            problems.error(node.line, "", "the top level must be a mapping of keys")
    config = _read_root(root, sources, problems, environ, strict)
    warnings = problems.warnings
    if config is not None and (strict or config.document.get("strict")) and warnings:
        problems.errors.extend(warnings)
        config, warnings = None, []
    if problems.errors or config is None:
        raise ConfigError(_in_order(problems.errors), _in_order(warnings))
    return config


def _in_order(found: list[ConfigProblem]) -> list[ConfigProblem]:
    return sorted(found, key=lambda p: (p.file, p.line or 0, p.key))


def _read_root(
    root: Node | None,
    sources: Sources,
    problems: Problems,
    environ: Mapping[str, str],
    strict: bool,
) -> Config | None:
    if root is None:
        problems.error(None, "", "the file is empty; it needs at least a 'models:' section")
        return None
    if not isinstance(root.value, dict):
        problems.error(root.line, "", "the top level must be a mapping of keys")
        return None
    checked = keys.check(root, File, "", problems.warn)
    expander = macros.Expander(environ, problems.error)
    top: dict[str, Node] = checked.value
    global_macros = expander.declared(top.get("macros"), "macros")
    expanded: dict[str, Node] = {}
    for key, node in top.items():
        if key in ("macros", "models"):
            expanded[key] = node
        else:
            expanded[key] = expander.expand(node, global_macros, key)
            for line, where in macros.leftover_ports(expanded[key], key):
                problems.error(line, where, "${PORT} is only available inside a model")

    pre_port: dict[str, Node] = {}
    models_node = top.get("models")
    if models_node is not None and isinstance(models_node.value, dict):
        for model_id, node in models_node.value.items():
            pre_port[model_id] = _expand_model(model_id, node, global_macros, expander)
        start = expanded.get("startPort")
        start_port = start.value if start is not None and _is_int(start.value) else 5800
        users = [m for m, n in pre_port.items() if _cmd_uses_port(n)]
        if len(users) > PORT_SPAN:
            problems.error(
                models_node.line,
                "models",
                f"{len(users)} models use ${{PORT}}, but startPort gives only {PORT_SPAN} ports",
            )
            return None
        ports = allocate_ports(users, start_port)
        final = {}
        for model_id, node in pre_port.items():
            final[model_id] = _place_port(model_id, node, ports.get(model_id), problems)
        expanded["models"] = Node(final, models_node.line)
    else:
        ports = {}

    document = Node(expanded, root.line)
    validated = validate(File, document, problems)
    if validated is None:
        return None
    resolver = Resolver(validated, document, problems, sources.names[0], environ)

    def model_with_port(model_id: str, port: int) -> ModelConfig:
        node = macros.substitute_port(pre_port[model_id], port)
        again = Problems(sources)
        entry = validate(Model, node, again)
        assert entry is not None and not again.errors, "read once without problems"
        return Resolver(validated, document, again, sources.names[0], environ).model(
            model_id, entry, port, model_with_port
        )

    return resolver.config(ports, model_with_port)


def _expand_model(
    model_id: str, node: Node, global_macros: Mapping[str, Any], expander: macros.Expander
) -> Node:
    """A model with every macro but `${PORT}` expanded, and comment lines gone from commands."""
    if not isinstance(node.value, dict):
        return node
    key = f"models.{model_id}"
    own = expander.declared(node.value.get("macros"), f"{key}.macros")
    scope = {**global_macros, **own, "MODEL_ID": model_id}
    out: dict[str, Node] = {}
    for name, child in node.value.items():
        where = f"{key}.{name}"
        if name == "macros":
            out[name] = child
        elif name in ("cmd", "cmdStop") and isinstance(child.value, str):
            text = _strip_comments(child.value)
            allow_pid = name == "cmdStop"
            out[name] = Node(expander.value(text, scope, child.line, where, allow_pid), child.line)
        elif name == "filters" and isinstance(child.value, dict):
            out[name] = Node(
                {
                    k: expander.expand(
                        v,
                        macros.expand_keys(scope) if k == "setParamsByID" else scope,
                        f"{where}.{k}",
                    )
                    for k, v in child.value.items()
                },
                child.line,
            )
        else:
            out[name] = expander.expand(child, scope, where)
    if "proxy" not in out:
        out["proxy"] = Node(DEFAULT_PROXY, node.line)
    return Node(out, node.line)


def _place_port(model_id: str, node: Node, port: int | None, problems: Problems) -> Node:
    if not _is_dict(node):
        return node
    if port is not None:
        return macros.substitute_port(node, port)
    cmd = node.value.get("cmd")
    if cmd is None or not isinstance(cmd.value, str | int | float) or not str(cmd.value).strip():
        return node  # no command that could use ${PORT}: validation reports cmd
    key = f"models.{model_id}"
    proxy = node.value["proxy"]
    if macros.uses_port(proxy):
        if proxy.value == DEFAULT_PROXY and proxy.line == node.line:
            problems.error(
                node.line,
                f"{key}.proxy",
                f"not set, and the default {DEFAULT_PROXY} needs ${{PORT}} in {key}.cmd: "
                "set proxy to the URL the server listens on, or pass --port ${PORT} in cmd",
            )
        else:
            problems.error(
                proxy.line,
                f"{key}.proxy",
                f"uses ${{PORT}} but {key}.cmd does not, so the server would not listen there",
            )
    for line, where in macros.leftover_ports(node, key):
        if where != f"{key}.proxy":
            problems.error(line, where, f"uses ${{PORT}}, which exists only when {key}.cmd uses it")
    return node


def validate(cls: type[Any], node: Node, problems: Problems) -> Any:
    """`cls` validated from `node`; each pydantic error becomes a problem at its line. Lines
    that already have a problem (a bad macro) are not reported twice."""
    try:
        return cls.model_validate(plain(node))
    except ValidationError as exc:
        seen = {(p.file, p.line) for p in problems.errors}
        for error in exc.errors(include_url=False):
            line, key = locate(node, error["loc"], missing=error["type"] == "missing")
            file, local = problems.sources.where(line)
            if (file, local) not in seen:
                problems.error(line, key, describe(error))
        return None


def plain(node: Node) -> Any:
    if isinstance(node.value, dict):
        return {k: plain(v) for k, v in node.value.items()}
    if isinstance(node.value, list):
        return [plain(v) for v in node.value]
    return node.value


def locate(node: Node, loc: tuple[Any, ...], missing: bool = True) -> tuple[int, str]:
    """The line and key path of a pydantic error location, as deep as the YAML goes. A key the
    YAML lacks is named when `missing` (the error is about that key); otherwise it is one of
    pydantic's union member tags ('str', 'list')."""
    line, parts = node.line, []
    for part in loc:
        value = node.value
        if isinstance(value, dict) and isinstance(part, str) and part in value:
            node = value[part]
            parts.append(part)
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            node = value[part]
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
        elif missing and isinstance(part, str) and isinstance(value, dict):
            parts.append(part)  # a missing key: name it, at its parent's line
            break
        else:
            continue  # a union member tag
        line = node.line
    return line, ".".join(parts)


def describe(error: Any) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "missing":
        return "required"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        shown = ", ".join(c or '""' for c in choices)
        return f"must be one of {shown}, not {_kind(value)}" + keys.did_you_mean(
            str(value), choices
        )
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = next(iter(ctx.values()))
        words = {
            "greater_than_equal": "at least",
            "greater_than": "more than",
            "less_than_equal": "at most",
            "less_than": "less than",
        }
        return f"must be {words[kind]} {_number(bound)}, not {_number(value)}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    expected = {
        "float_type": "a number",
        "float_parsing": "a number",
        "int_type": "an integer",
        "int_parsing": "an integer",
        "int_from_float": "an integer",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "string_type": "a string",
        "dict_type": "a mapping",
        "list_type": "a list",
        "model_type": "a mapping",
        "model_attributes_type": "a mapping",
    }.get(kind)
    if expected:
        return f"must be {expected}, not {_kind(value)}"
    if kind in ("too_short", "string_too_short"):
        return "must not be empty" if ctx.get("min_length") == 1 else error["msg"].lower()
    return str(error["msg"])[:1].lower() + str(error["msg"])[1:]


def _number(value: Any) -> str:
    # A bound of a float field is a float: 'at least 0', not 'at least 0.0'.
    return f"{value:g}" if isinstance(value, float) else str(value)


def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float):
        return f"the number {value}"
    return f"the string {str(value)!r}"


def allocate_ports(model_ids: list[str], start_port: int) -> dict[str, int]:
    """Give each model a port from a hash of its id, so adding or removing other models does
    not move it (only a hash collision, resolved in id order, can)."""
    taken: set[int] = set()
    ports: dict[str, int] = {}
    if len(model_ids) > PORT_SPAN:
        return ports
    for model_id in sorted(model_ids, key=lambda m: (zlib.crc32(m.encode()) % PORT_SPAN, m)):
        slot = zlib.crc32(model_id.encode()) % PORT_SPAN
        while slot in taken:
            slot = (slot + 1) % PORT_SPAN
        taken.add(slot)
        ports[model_id] = start_port + slot
    return ports


# llama-swap puts env values into the text before parsing, so `apiKeys: [${env.KEY}]` is valid
# there, though YAML ends a plain scalar in a flow collection at `{`. Macro braces are hidden
# from the parser behind private-use characters and put back in every parsed string.
_HIDDEN_OPEN, _HIDDEN_CLOSE = "\ue000", "\ue001"
_UNHIDE = str.maketrans({_HIDDEN_OPEN: "{", _HIDDEN_CLOSE: "}"})


def _hide_braces(match: re.Match[str]) -> str:
    return f"${_HIDDEN_OPEN}{match[1]}{_HIDDEN_CLOSE}"


def _unhide_braces(node: Node) -> Node:
    value = node.value
    if isinstance(value, dict):
        value = {k.translate(_UNHIDE): _unhide_braces(v) for k, v in value.items()}
    elif isinstance(value, list):
        value = [_unhide_braces(v) for v in value]
    elif isinstance(value, str):
        value = value.translate(_UNHIDE)
    return Node(value, node.line, node.plain)


def _strip_comments(command: str) -> str:
    return "\n".join(line for line in command.splitlines() if not line.strip().startswith("#"))


def _shift(node: Node, offset: int) -> Node:
    if offset == 0:
        return node
    value = node.value
    if isinstance(value, dict):
        value = {k: _shift(v, offset) for k, v in value.items()}
    elif isinstance(value, list):
        value = [_shift(v, offset) for v in value]
    return Node(value, node.line + offset, node.plain)


def _merge(into: Node, other: Node, path: str, problems: Problems) -> Node:
    """llama-swap's merge: mappings merge, lists concatenate, equal scalars agree, a null yields;
    a model (peer, group, …) defined twice is an error."""
    merged = dict(into.value)
    for key, node in other.value.items():
        where = f"{path}.{key}" if path else key
        if key not in merged:
            merged[key] = node
            continue
        mine = merged[key]
        if where in _IDENTITY_MAPS and _is_dict(mine) and _is_dict(node):
            both = set(mine.value) & set(node.value)
            for dup in sorted(both):
                first, _ = problems.sources.where(mine.value[dup].line)
                problems.error(
                    node.value[dup].line, f"{where}.{dup}", f"is already defined in {first}"
                )
            merged[key] = Node({**mine.value, **node.value}, mine.line)
        elif _is_dict(mine) and _is_dict(node):
            merged[key] = _merge(mine, node, where, problems)
        elif isinstance(mine.value, list) and isinstance(node.value, list):
            merged[key] = Node(mine.value + node.value, mine.line)
        elif node.value is None or node.value == mine.value:
            pass
        elif mine.value is None:
            merged[key] = node
        else:
            first, first_line = problems.sources.where(mine.line)
            problems.error(node.line, where, f"conflicts with the value at {first}:{first_line}")
    return Node(merged, into.line)


def _cmd_uses_port(node: Node) -> bool:
    return _is_dict(node) and macros.uses_port(node.value.get("cmd"))


def _is_dict(node: Node) -> bool:
    return isinstance(node.value, dict)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
