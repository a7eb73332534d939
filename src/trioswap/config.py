"""The config file: llama-swap's YAML format read into frozen dataclasses.

Everything per model that a request needs (resolved command, proxy URL, filters, aliases) is
computed here once, so the request path never re-parses or substitutes anything. Every problem is
collected with file, line and key path, and reported together in one `ConfigError`.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trioswap.errors import ConfigError, ConfigProblem
from trioswap.redact import MASK, redact_env, shown_command
from trioswap.yamlnodes import Node, YamlError, parse

PORT_SPAN = 1000
MIB = 1024 * 1024
LOG_LEVELS = ("debug", "info", "warn", "error")
TRUNCATION_MODES = ("off", "limit_only", "always", "llm_assisted")
SECRET_KEYS = ("apiKeys",)
_MACRO = re.compile(r"\$\{([^}]*)\}")
_MACRO_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_RESERVED_MACROS = ("PORT", "MODEL_ID", "PID")


@dataclass(frozen=True)
class Filters:
    strip_params: tuple[str, ...] = ()
    set_params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    id: str
    cmd: tuple[str, ...]
    cmd_stop: tuple[str, ...] | None
    proxy: str
    check_endpoint: str | None
    ttl: float
    unload_timeout: float
    aliases: tuple[str, ...]
    env: Mapping[str, str]
    port: int | None
    unlisted: bool = False
    use_model_name: str | None = None
    name: str | None = None
    description: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    filters: Filters = field(default_factory=Filters)
    concurrency_limit: int = 0
    truncation_mode: str | None = None
    send_loading_state: bool = False
    # timeouts.connect / timeouts.responseHeader, in seconds; None = no bound.
    connect_timeout: float | None = 30.0
    response_header_timeout: float | None = 600.0
    # The same model with `${PORT}` set to another port (for a start whose port is taken).
    with_port: Callable[[int], ModelConfig] | None = field(default=None, compare=False, repr=False)

    def stop_command(self, pid: int) -> tuple[str, ...] | None:
        if self.cmd_stop is None:
            return None
        return tuple(part.replace("${PID}", str(pid)) for part in self.cmd_stop)


@dataclass(frozen=True)
class GroupConfig:
    id: str
    members: tuple[str, ...]
    swap: bool = True
    exclusive: bool = True
    persistent: bool = False


@dataclass(frozen=True)
class Config:
    path: str
    models: Mapping[str, ModelConfig]
    groups: Mapping[str, GroupConfig]
    aliases: Mapping[str, str]
    health_check_timeout: float = 120.0
    start_port: int = 5800
    log_level: str = "info"
    global_ttl: float = 0.0
    unload_timeout: float = 10.0
    drain_timeout: float = 0.0
    include_aliases_in_list: bool = False
    api_keys: tuple[str, ...] = ()
    preload: tuple[str, ...] = ()
    send_loading_state: bool = False
    max_request_body: int = 256 * MIB
    request_body_timeout: float = 60.0
    shutdown_timeout: float = 10.0
    listen_backlog: int = 1024
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def resolve(self, name: str) -> str | None:
        """The model id a request's `model` names (an id or an alias), or None."""
        if name in self.models:
            return name
        return self.aliases.get(name)


def load(path: str | Path) -> Config:
    """Read and validate a config file. Raises `ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem(str(path), None, "", f"cannot read: {exc.strerror}")]
        ) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigProblem(str(path), None, "", "not UTF-8 text")]) from None
    return loads(text, str(path))


def loads(
    text: str, filename: str = "<config>", environ: Mapping[str, str] | None = None
) -> Config:
    try:
        root = parse(text)
    except YamlError as exc:
        raise ConfigError(
            [ConfigProblem(filename, exc.line, "", f"invalid YAML: {exc.message}")]
        ) from None
    reader = _Reader(filename, os.environ if environ is None else environ)
    config = reader.read_config(root)
    if reader.problems or config is None:
        raise ConfigError(sorted(reader.problems, key=lambda p: (p.line or 0, p.key)))
    return config


def redacted(config: Config) -> dict[str, Any]:
    """The resolved config as plain data, with secrets replaced, for `trioswap validate`."""
    return {
        "healthCheckTimeout": config.health_check_timeout,
        "startPort": config.start_port,
        "logLevel": config.log_level,
        "globalTTL": config.global_ttl,
        "unloadTimeout": config.unload_timeout,
        "drainTimeout": config.drain_timeout,
        "includeAliasesInList": config.include_aliases_in_list,
        "sendLoadingState": config.send_loading_state,
        "apiKeys": [MASK] * len(config.api_keys),
        "maxRequestBodyMB": config.max_request_body / MIB,
        "requestBodyTimeout": config.request_body_timeout,
        "shutdownTimeout": config.shutdown_timeout,
        "listenBacklog": config.listen_backlog,
        "cors": {"origins": list(config.cors_origins)},
        "allowedHosts": list(config.allowed_hosts),
        "hooks": {"on_startup": {"preload": list(config.preload)}},
        "groups": {
            g.id: {
                "swap": g.swap,
                "exclusive": g.exclusive,
                "persistent": g.persistent,
                "members": list(g.members),
            }
            for g in config.groups.values()
        },
        "models": {m.id: _model_data(m) for m in config.models.values()},
    }


def _model_data(m: ModelConfig) -> dict[str, Any]:
    data: dict[str, Any] = {
        "cmd": shown_command(m.cmd),
        "proxy": m.proxy,
        "checkEndpoint": m.check_endpoint or "none",
        "ttl": m.ttl,
        "unloadTimeout": m.unload_timeout,
        "timeouts": {
            "connect": m.connect_timeout or 0,
            "responseHeader": m.response_header_timeout or 0,
        },
    }
    optional: dict[str, Any] = {
        "port": m.port,
        "cmdStop": shown_command(m.cmd_stop) if m.cmd_stop else None,
        "aliases": list(m.aliases),
        "env": redact_env(m.env),
        "unlisted": m.unlisted,
        "useModelName": m.use_model_name,
        "name": m.name,
        "description": m.description,
        "metadata": dict(m.metadata),
        "filters": {
            k: v
            for k, v in (
                ("stripParams", list(m.filters.strip_params)),
                ("setParams", dict(m.filters.set_params)),
            )
            if v
        },
        "concurrencyLimit": m.concurrency_limit,
        "truncationMode": m.truncation_mode,
        "sendLoadingState": m.send_loading_state,
    }
    data.update({k: v for k, v in optional.items() if v})
    return data


_TOP_KEYS = (
    "healthCheckTimeout",
    "startPort",
    "logLevel",
    "globalTTL",
    "unloadTimeout",
    "drainTimeout",
    "includeAliasesInList",
    "macros",
    "apiKeys",
    "groups",
    "hooks",
    "sendLoadingState",
    "maxRequestBodyMB",
    "requestBodyTimeout",
    "shutdownTimeout",
    "listenBacklog",
    "cors",
    "allowedHosts",
    "models",
)
_MODEL_KEYS = (
    "cmd",
    "cmdStop",
    "proxy",
    "checkEndpoint",
    "ttl",
    "unloadTimeout",
    "aliases",
    "env",
    "unlisted",
    "useModelName",
    "name",
    "description",
    "metadata",
    "macros",
    "filters",
    "concurrencyLimit",
    "truncationMode",
    "sendLoadingState",
    "timeouts",
)
# connect and responseHeader are used; llama-swap's other three are accepted and validated.
_TIMEOUT_KEYS = ("connect", "responseHeader", "keepalive", "tlsHandshake", "idleConn")
_GROUP_KEYS = ("swap", "exclusive", "persistent", "members")


def _did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in choices}
        if word.lower() in lowered:
            close = [lowered[word.lower()]]
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Reader:
    """Walks the YAML nodes, collecting problems instead of stopping at the first."""

    def __init__(self, filename: str, environ: Mapping[str, str]) -> None:
        self.filename = filename
        self.environ = environ
        self.problems: list[ConfigProblem] = []
        self.alias_lines: dict[tuple[str, str], int] = {}

    def problem(self, line: int | None, key: str, message: str) -> None:
        self.problems.append(ConfigProblem(self.filename, line, key, message))

    # -- typed access ---------------------------------------------------------------------

    def mapping(
        self, node: Node | None, key: str, allowed: tuple[str, ...] | None
    ) -> dict[str, Node]:
        if node is None or node.value is None:
            return {}
        if not isinstance(node.value, dict):
            self.problem(node.line, key, f"must be a mapping, not {_kind(node.value)}")
            return {}
        if allowed is not None:
            for name, child in node.items():
                if name not in allowed:
                    where = f"{key}.{name}" if key else name
                    self.problem(child.line, where, "unknown key" + _did_you_mean(name, allowed))
        return dict(node.value)

    def scalar(
        self,
        m: dict[str, Node],
        name: str,
        key: str,
        kinds: tuple[type, ...],
        default: Any,
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        node = m.get(name)
        if node is None or node.value is None:
            return default
        value = node.value
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            expected = " or ".join(_TYPE_NAMES[k] for k in kinds)
            self.problem(node.line, key, f"must be {expected}, not {_kind(value)}")
            return default
        if check is not None and (message := check(value)):
            self.problem(node.line, key, message)
            return default
        return value

    def string_list(self, m: dict[str, Node], name: str, key: str) -> list[tuple[str, int]]:
        node = m.get(name)
        if node is None or node.value is None:
            return []
        items = node.value if isinstance(node.value, list) else None
        if items is None:
            self.problem(node.line, key, f"must be a list of strings, not {_kind(node.value)}")
            return []
        out: list[tuple[str, int]] = []
        for i, item in enumerate(items):
            if isinstance(item.value, str | int | float) and not isinstance(item.value, bool):
                out.append((str(item.value), item.line))
            else:
                self.problem(item.line, f"{key}[{i}]", f"must be a string, not {_kind(item.value)}")
        return out

    # -- macros -----------------------------------------------------------------------------

    def read_macros(self, node: Node | None, key: str) -> dict[str, Any]:
        macros: dict[str, Any] = {}
        for name, child in self.mapping(node, key, None).items():
            where = f"{key}.{name}"
            if not _MACRO_NAME.match(name):
                self.problem(child.line, where, "macro names use letters, digits, '_' and '-'")
            elif name in _RESERVED_MACROS:
                self.problem(child.line, where, f"{name} is reserved and set by trioswap")
            elif isinstance(child.value, dict | list) or child.value is None:
                self.problem(child.line, where, "a macro must be a string, number or boolean")
            else:
                macros[name] = child.value
        return macros

    def expand(
        self, value: Any, macros: Mapping[str, Any], line: int, key: str, allow_pid: bool = False
    ) -> Any:
        """Substitute `${...}` in strings (recursively in lists and mappings). A string that is
        exactly one macro takes the macro's own type."""
        if isinstance(value, dict):
            return {
                k: self.expand(v, macros, line, f"{key}.{k}", allow_pid) for k, v in value.items()
            }
        if isinstance(value, list):
            return [
                self.expand(v, macros, line, f"{key}[{i}]", allow_pid) for i, v in enumerate(value)
            ]
        if not isinstance(value, str) or "${" not in value:
            return value
        whole = _MACRO.fullmatch(value)
        if whole and whole.group(1) != "PID":
            found = self._lookup(whole.group(1), macros, line, key, depth=0)
            return found if found is not None else value
        return self._expand_text(value, macros, line, key, allow_pid, depth=0)

    def expand_node(self, node: Node, macros: Mapping[str, Any], key: str) -> Any:
        """Like `expand`, but each entry reports problems at its own line."""
        if isinstance(node.value, dict):
            return {k: self.expand_node(v, macros, f"{key}.{k}") for k, v in node.value.items()}
        if isinstance(node.value, list):
            return [self.expand_node(v, macros, f"{key}[{i}]") for i, v in enumerate(node.value)]
        return self.expand(node.value, macros, node.line, key)

    def _expand_text(
        self, text: str, macros: Mapping[str, Any], line: int, key: str, allow_pid: bool, depth: int
    ) -> str:
        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name == "PID":
                if not allow_pid:
                    self.problem(line, key, "${PID} is only available in cmdStop")
                return match.group(0)
            found = self._lookup(name, macros, line, key, depth, allow_pid)
            return match.group(0) if found is None else _macro_text(found)

        return _MACRO.sub(substitute, text)

    def _lookup(
        self,
        name: str,
        macros: Mapping[str, Any],
        line: int,
        key: str,
        depth: int,
        allow_pid: bool = False,
    ) -> Any:
        if depth > 20:
            self.problem(line, key, f"macro ${{{name}}} expands recursively without end")
            return None
        if name.startswith("env."):
            var = name[4:]
            if var not in self.environ:
                self.problem(
                    line, key, f"environment variable {var!r} is not set (used as ${{{name}}})"
                )
                return None
            return self.environ[var]
        if name not in macros:
            self.problem(
                line, key, f"unknown macro ${{{name}}}" + _did_you_mean(name, sorted(macros))
            )
            return None
        value = macros[name]
        if isinstance(value, str) and "${" in value:
            return self._expand_text(value, macros, line, key, allow_pid, depth + 1)
        return value

    # -- the file -----------------------------------------------------------------------------

    def read_config(self, root: Node | None) -> Config | None:
        if root is None or root.value is None:
            self.problem(None, "", "the file is empty; it needs at least a 'models:' section")
            return None
        top = self.mapping(root, "", _TOP_KEYS)
        if not isinstance(root.value, dict):
            return None
        positive = _at_least(0.001)
        hc_timeout = self.scalar(
            top, "healthCheckTimeout", "healthCheckTimeout", (float,), 120.0, positive
        )
        start_port = self.scalar(top, "startPort", "startPort", (int,), 5800, _port_range_check)
        log_level = self.scalar(top, "logLevel", "logLevel", (str,), "info", _one_of(LOG_LEVELS))
        global_ttl = self.scalar(top, "globalTTL", "globalTTL", (float,), 0.0, _at_least(0))
        unload_timeout = self.scalar(
            top, "unloadTimeout", "unloadTimeout", (float,), 10.0, _at_least(0)
        )
        drain_timeout = self.scalar(
            top, "drainTimeout", "drainTimeout", (float,), 0.0, _at_least(0)
        )
        include_aliases = self.scalar(
            top, "includeAliasesInList", "includeAliasesInList", (bool,), False
        )
        send_loading = self.scalar(top, "sendLoadingState", "sendLoadingState", (bool,), False)
        max_body_mb = self.scalar(
            top, "maxRequestBodyMB", "maxRequestBodyMB", (float,), 256.0, _at_least(0.001)
        )
        body_timeout = self.scalar(
            top, "requestBodyTimeout", "requestBodyTimeout", (float,), 60.0, positive
        )
        shutdown_timeout = self.scalar(
            top, "shutdownTimeout", "shutdownTimeout", (float,), 10.0, _at_least(0)
        )
        backlog = self.scalar(top, "listenBacklog", "listenBacklog", (int,), 1024, _at_least(1))
        cors = self.mapping(top.get("cors"), "cors", ("origins",))
        cors_origins = tuple(
            origin.rstrip("/") for origin, _ in self.string_list(cors, "origins", "cors.origins")
        )
        allowed_hosts = tuple(
            host.lower() for host, _ in self.string_list(top, "allowedHosts", "allowedHosts")
        )
        global_macros = self.read_macros(top.get("macros"), "macros")
        key_entries = self.string_list(top, "apiKeys", "apiKeys")
        api_keys = tuple(
            str(self.expand(k, global_macros, line, f"apiKeys[{i}]"))
            for i, (k, line) in enumerate(key_entries)
        )
        for i, k in enumerate(api_keys):
            if not k.strip():
                self.problem(key_entries[i][1], f"apiKeys[{i}]", "an API key must not be empty")

        models_node = top.get("models")
        if models_node is None or not models_node.value:
            self.problem(root.line, "models", "at least one model is required")
        model_nodes = self.mapping(models_node, "models", None)
        port_of = _allocate_ports(
            [mid for mid, n in model_nodes.items() if _uses_port(n, global_macros)], start_port
        )
        models: dict[str, ModelConfig] = {}
        for model_id, node in model_nodes.items():
            model = self.read_model(
                model_id,
                node,
                global_macros,
                port_of.get(model_id),
                unload_timeout,
                global_ttl,
                send_loading,
            )
            if model is not None:
                models[model_id] = model

        aliases = self.check_aliases(models, model_nodes)
        groups = self.read_groups(top.get("groups"), model_nodes)
        preload = self.read_preload(top.get("hooks"), models, aliases)
        return Config(
            path=self.filename,
            models=models,
            groups=groups,
            aliases=aliases,
            health_check_timeout=hc_timeout,
            start_port=start_port,
            log_level=log_level,
            global_ttl=global_ttl,
            unload_timeout=unload_timeout,
            drain_timeout=drain_timeout,
            include_aliases_in_list=include_aliases,
            api_keys=api_keys,
            preload=preload,
            send_loading_state=send_loading,
            max_request_body=int(max_body_mb * MIB),
            request_body_timeout=body_timeout,
            shutdown_timeout=shutdown_timeout,
            listen_backlog=backlog,
            cors_origins=cors_origins,
            allowed_hosts=allowed_hosts,
        )

    def read_model(
        self,
        model_id: str,
        node: Node,
        global_macros: Mapping[str, Any],
        port: int | None,
        default_unload_timeout: float,
        global_ttl: float,
        default_send_loading: bool,
    ) -> ModelConfig | None:
        key = f"models.{model_id}"
        if not model_id.strip():
            self.problem(node.line, key, "a model id must not be empty")
        m = self.mapping(node, key, _MODEL_KEYS)
        if not isinstance(node.value, dict):
            return None
        macros = dict(global_macros)
        macros.update(self.read_macros(m.get("macros"), f"{key}.macros"))
        macros["MODEL_ID"] = model_id
        if port is not None:
            macros["PORT"] = port

        cmd_node = m.get("cmd")
        if cmd_node is None or not isinstance(cmd_node.value, str) or not cmd_node.value.strip():
            line = cmd_node.line if cmd_node else node.line
            self.problem(
                line, f"{key}.cmd", "required: the command that starts this model's server"
            )
            cmd: tuple[str, ...] = ()
        else:
            cmd = self.command(cmd_node, macros, f"{key}.cmd", allow_pid=False)
        cmd_stop = None
        if (stop_node := m.get("cmdStop")) is not None:
            if isinstance(stop_node.value, str) and stop_node.value.strip():
                cmd_stop = self.command(stop_node, macros, f"{key}.cmdStop", allow_pid=True)
            else:
                self.problem(stop_node.line, f"{key}.cmdStop", "must be a non-empty command")

        proxy_raw = self.scalar(m, "proxy", f"{key}.proxy", (str,), "http://127.0.0.1:${PORT}")
        proxy_line = m["proxy"].line if "proxy" in m else node.line
        proxy = str(self.expand(proxy_raw, macros, proxy_line, f"{key}.proxy")).rstrip("/")
        if not re.match(r"^https?://[^/\s]+", proxy):
            self.problem(
                proxy_line, f"{key}.proxy", f"must be an http:// or https:// URL, not {proxy!r}"
            )

        check = self.scalar(m, "checkEndpoint", f"{key}.checkEndpoint", (str,), "/health")
        check = str(
            self.expand(check, macros, _line(m, "checkEndpoint", node), f"{key}.checkEndpoint")
        )
        check_endpoint = None if check.strip().lower() == "none" else "/" + check.lstrip("/")

        ttl = self.scalar(m, "ttl", f"{key}.ttl", (float,), global_ttl, _at_least(0))
        unload_timeout = self.scalar(
            m,
            "unloadTimeout",
            f"{key}.unloadTimeout",
            (float,),
            default_unload_timeout,
            _at_least(0),
        )
        alias_entries = self.string_list(m, "aliases", f"{key}.aliases")
        aliases = tuple(a for a, _ in alias_entries)
        self.alias_lines.update({(model_id, a): line for a, line in alias_entries})
        env: dict[str, str] = {}
        for i, (entry, line) in enumerate(self.string_list(m, "env", f"{key}.env")):
            name, sep, value = entry.partition("=")
            if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                self.problem(line, f"{key}.env[{i}]", f"must look like KEY=value, not {entry!r}")
                continue
            env[name] = str(self.expand(value, macros, line, f"{key}.env[{i}]"))

        metadata_node = m.get("metadata")
        metadata = self.mapping(metadata_node, f"{key}.metadata", None)
        metadata_values = {
            k: self.expand_node(v, macros, f"{key}.metadata.{k}") for k, v in metadata.items()
        }
        filters = self.read_filters(m.get("filters"), macros, f"{key}.filters")
        timeouts = self.mapping(m.get("timeouts"), f"{key}.timeouts", _TIMEOUT_KEYS)
        limits = {
            name: self.scalar(
                timeouts, name, f"{key}.timeouts.{name}", (float,), default, _at_least(0)
            )
            for name, default in (("connect", 30.0), ("responseHeader", 600.0))
        }
        for name in _TIMEOUT_KEYS[2:]:
            self.scalar(timeouts, name, f"{key}.timeouts.{name}", (float,), 0.0, _at_least(0))
        with_port = None
        if port is not None:
            again = (model_id, node, global_macros)
            rest = (default_unload_timeout, global_ttl, default_send_loading)
            filename, environ = self.filename, self.environ

            def with_port(other: int) -> ModelConfig:
                model = _Reader(filename, environ).read_model(*again, other, *rest)
                assert model is not None  # it was read without problems with another port
                return model

        truncation = m.get("truncationMode")
        if truncation is not None and truncation.value is False:
            m["truncationMode"] = Node("off", truncation.line)  # YAML 1.1 reads a bare off as false
        return ModelConfig(
            id=model_id,
            cmd=cmd,
            cmd_stop=cmd_stop,
            proxy=proxy,
            check_endpoint=check_endpoint,
            ttl=ttl,
            unload_timeout=unload_timeout,
            aliases=aliases,
            env=env,
            port=port,
            unlisted=self.scalar(m, "unlisted", f"{key}.unlisted", (bool,), False),
            use_model_name=self.scalar(m, "useModelName", f"{key}.useModelName", (str,), None),
            name=self.scalar(m, "name", f"{key}.name", (str,), None),
            description=self.scalar(m, "description", f"{key}.description", (str,), None),
            metadata=metadata_values,
            filters=filters,
            concurrency_limit=self.scalar(
                m, "concurrencyLimit", f"{key}.concurrencyLimit", (int,), 0, _at_least(0)
            ),
            truncation_mode=self.scalar(
                m,
                "truncationMode",
                f"{key}.truncationMode",
                (str,),
                None,
                _one_of(TRUNCATION_MODES),
            ),
            send_loading_state=self.scalar(
                m, "sendLoadingState", f"{key}.sendLoadingState", (bool,), default_send_loading
            ),
            # 0 means no bound, as in llama-swap.
            connect_timeout=limits["connect"] or None,
            response_header_timeout=limits["responseHeader"] or None,
            with_port=with_port,
        )

    def command(
        self, node: Node, macros: Mapping[str, Any], key: str, allow_pid: bool
    ) -> tuple[str, ...]:
        lines = []
        for raw in str(node.value).splitlines():
            stripped = raw.strip()
            if not stripped or stripped.startswith("#"):
                continue
            lines.append(stripped[:-1] if stripped.endswith("\\") else stripped)
        text = self._expand_text(" ".join(lines), macros, node.line, key, allow_pid, depth=0)
        try:
            parts = tuple(shlex.split(text))
        except ValueError as exc:
            self.problem(node.line, key, f"cannot split into arguments: {exc}")
            return ()
        if not parts:
            self.problem(node.line, key, "the command is empty")
        return parts

    def read_filters(self, node: Node | None, macros: Mapping[str, Any], key: str) -> Filters:
        f = self.mapping(node, key, ("stripParams", "setParams"))
        strip: list[str] = []
        if (strip_node := f.get("stripParams")) is not None and strip_node.value is not None:
            if isinstance(strip_node.value, str):
                text = str(
                    self.expand(strip_node.value, macros, strip_node.line, f"{key}.stripParams")
                )
                strip = [p.strip() for p in text.split(",") if p.strip()]
            else:
                strip = [s for s, _ in self.string_list(f, "stripParams", f"{key}.stripParams")]
        # The model name is how requests are routed; it can't be stripped.
        strip = [p for p in strip if p != "model"]
        set_params_node = f.get("setParams")
        set_params = {
            k: self.expand_node(v, macros, f"{key}.setParams.{k}")
            for k, v in self.mapping(set_params_node, f"{key}.setParams", None).items()
        }
        if "model" in set_params:
            self.problem(
                set_params_node.line if set_params_node else None,
                f"{key}.setParams.model",
                "use useModelName to change the model name sent upstream",
            )
            set_params.pop("model")
        return Filters(strip_params=tuple(strip), set_params=set_params)

    def check_aliases(
        self, models: Mapping[str, ModelConfig], nodes: Mapping[str, Node]
    ) -> dict[str, str]:
        aliases: dict[str, str] = {}
        for model in models.values():
            for alias in model.aliases:
                line = self.alias_lines[(model.id, alias)]
                key = f"models.{model.id}.aliases"
                if alias in models:
                    self.problem(line, key, f"alias {alias!r} is already a model id")
                elif alias in aliases:
                    self.problem(
                        line, key, f"alias {alias!r} is also an alias of {aliases[alias]!r}"
                    )
                else:
                    aliases[alias] = model.id
        return aliases

    def read_groups(
        self, node: Node | None, model_nodes: Mapping[str, Node]
    ) -> dict[str, GroupConfig]:
        groups: dict[str, GroupConfig] = {}
        owner: dict[str, str] = {}
        for group_id, gnode in self.mapping(node, "groups", None).items():
            key = f"groups.{group_id}"
            g = self.mapping(gnode, key, _GROUP_KEYS)
            members = []
            for i, (member, line) in enumerate(self.string_list(g, "members", f"{key}.members")):
                where = f"{key}.members[{i}]"
                if member not in model_nodes:
                    self.problem(
                        line,
                        where,
                        f"unknown model {member!r}" + _did_you_mean(member, list(model_nodes)),
                    )
                elif member in owner:
                    self.problem(
                        line, where, f"model {member!r} is already in group {owner[member]!r}"
                    )
                else:
                    owner[member] = group_id
                    members.append(member)
            if "members" not in g:
                self.problem(gnode.line, f"{key}.members", "required: the model ids in this group")
            groups[group_id] = GroupConfig(
                id=group_id,
                members=tuple(members),
                swap=self.scalar(g, "swap", f"{key}.swap", (bool,), True),
                exclusive=self.scalar(g, "exclusive", f"{key}.exclusive", (bool,), True),
                persistent=self.scalar(g, "persistent", f"{key}.persistent", (bool,), False),
            )
        return groups

    def read_preload(
        self, node: Node | None, models: Mapping[str, ModelConfig], aliases: Mapping[str, str]
    ) -> tuple[str, ...]:
        hooks = self.mapping(node, "hooks", ("on_startup",))
        startup = self.mapping(hooks.get("on_startup"), "hooks.on_startup", ("preload",))
        out = []
        for i, (name, line) in enumerate(
            self.string_list(startup, "preload", "hooks.on_startup.preload")
        ):
            target = name if name in models else aliases.get(name)
            if target is None:
                self.problem(
                    line,
                    f"hooks.on_startup.preload[{i}]",
                    f"unknown model {name!r}" + _did_you_mean(name, list(models)),
                )
            else:
                out.append(target)
        return tuple(out)


_TYPE_NAMES = {float: "a number", int: "an integer", str: "a string", bool: "true or false"}


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


def _macro_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _line(m: Mapping[str, Node], name: str, fallback: Node) -> int:
    return m[name].line if name in m else fallback.line


def _at_least(minimum: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= minimum else f"must be at least {minimum}, not {v}"


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if v in choices:
            return None
        return f"must be one of {', '.join(choices)}, not {v!r}" + _did_you_mean(v, choices)

    return check


def _port_range_check(v: int) -> str | None:
    if 1 <= v <= 65535 - PORT_SPAN:
        return None
    highest = 65535 - PORT_SPAN
    return f"must be between 1 and {highest} (models get ports up to startPort+{PORT_SPAN - 1})"


def _uses_port(node: Node, global_macros: Mapping[str, Any]) -> bool:
    """Whether a model needs ${PORT}: it names it (directly or through macros), or relies on
    the default proxy URL."""
    if not isinstance(node.value, dict):
        return False
    if "proxy" not in node.value:
        return True
    macros = dict(global_macros)
    own = node.value.get("macros")
    if own is not None and isinstance(own.value, dict):
        macros.update({k: v.value for k, v in own.value.items()})

    def names_port(text: Any, depth: int = 0) -> bool:
        if not isinstance(text, str) or depth > 20:
            return False
        return any(
            name == "PORT" or names_port(macros.get(name), depth + 1)
            for name in _MACRO.findall(text)
        )

    return any(
        names_port(child.value)
        for name, child in node.value.items()
        if name in ("cmd", "cmdStop", "proxy", "checkEndpoint")
    )


def _allocate_ports(model_ids: list[str], start_port: int) -> dict[str, int]:
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
