"""The resolved config: what the running proxy reads, computed once at load.

`schema.py` declares the file format (keys, types, defaults); these frozen objects hold what a
file means after macros, ports, defaults and inheritance (`ttl: -1` → globalTTL, …) are applied,
in the shape the request path wants (split commands, compiled patterns, alias maps).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from trioswap.errors import ConfigProblem


@dataclass(frozen=True)
class Filters:
    strip_params: tuple[str, ...] = ()
    set_params: Mapping[str, Any] = field(default_factory=dict)
    # The requested name (model id, alias) → params set after `set_params`.
    set_params_by_id: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Timeouts:
    """Seconds; None = no bound (a 0 in the file)."""

    connect: float | None
    response_header: float | None
    keepalive: float | None
    tls_handshake: float | None
    idle_conn: float | None


@dataclass(frozen=True)
class Capabilities:
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    tools: bool
    reranker: bool
    context: int


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
    unlisted: bool
    use_model_name: str | None
    name: str | None
    description: str | None
    metadata: Mapping[str, Any]
    filters: Filters
    concurrency_limit: int
    # The prompt optimizer's policy, and what it does over budget (None: trim as the policy
    # says; "sliding_window"; "strict_error").
    prompt_optimization: str
    truncation_mode: str | None
    tokenizer: str | None
    send_loading_state: bool
    timeouts: Timeouts
    capabilities: Capabilities | None
    ignore_websockets: bool
    # API family ("anthropic", "responses") → "auto", "native" or "translate".
    apis: Mapping[str, str]
    # The same model with `${PORT}` set to another port (for a start whose port is taken).
    with_port: Callable[[int], ModelConfig] | None = field(default=None, compare=False, repr=False)

    def stop_command(self, pid: int) -> tuple[str, ...] | None:
        if self.cmd_stop is None:
            return None
        return tuple(part.replace("${PID}", str(pid)) for part in self.cmd_stop)


@dataclass(frozen=True)
class ObserveSettings:
    """What is kept about requests and the machine (llama-swap's keys of the same meaning)."""

    # metricsMaxInMemory: activity records kept when there is no store file.
    max_in_memory: int = 1000
    # store.path: the activity database file (relative to the config's folder), or None.
    store_path: str | None = None
    # captureBuffer, in bytes (0: no captures).
    capture_bytes: int = 5 * 1024 * 1024
    # ui.activity.session_id: the request headers that name a client's session.
    session_headers: tuple[str, ...] = ("X-Session-ID", "X-Litellm-Session-Id")
    # performance: system and GPU sampling.
    performance_disabled: bool = False
    performance_every: float = 5.0


@dataclass(frozen=True)
class OptimizerSettings:
    output_reserve: int = 1024
    max_output_share: float = 0.25
    safety_margin: float = 0.05
    target: float = 0.7
    elide_over: int = 256
    summary_timeout: float = 60
    summary_max_tokens: int = 600


@dataclass(frozen=True)
class GroupConfig:
    id: str
    members: tuple[str, ...]
    swap: bool = True
    exclusive: bool = True
    persistent: bool = False


@dataclass(frozen=True)
class PeerConfig:
    id: str
    proxy: str
    api_key: str
    models: tuple[str, ...]
    filters: Filters
    timeouts: Timeouts


@dataclass(frozen=True)
class PeerTarget:
    peer: PeerConfig
    model: str


@dataclass(frozen=True)
class OllamaSettings:
    """Discovery of a running Ollama's models (`ollama/<name>`)."""

    endpoint: str  # base URL, no trailing slash: http://127.0.0.1:11434
    refresh: float  # seconds between reads of its model list
    source: str  # where the endpoint came from: "config", "OLLAMA_HOST" or "default"
    timeouts: Timeouts


@dataclass(frozen=True)
class Config:
    path: str
    models: Mapping[str, ModelConfig]
    groups: Mapping[str, GroupConfig]
    aliases: Mapping[str, str]
    peers: Mapping[str, PeerConfig]
    # `peer/model` for every peer model, plus a bare `model` that exactly one peer lists and no
    # local model or alias has.
    peer_models: Mapping[str, PeerTarget]
    health_check_timeout: float
    start_port: int
    log_level: str
    log_time_format: str
    log_to_stdout: str
    global_ttl: float
    unload_timeout: float
    drain_timeout: float
    include_aliases_in_list: bool
    api_keys: tuple[str, ...]
    preload: tuple[str, ...]
    send_loading_state: bool
    max_request_body: int
    request_body_timeout: float
    shutdown_timeout: float
    listen_backlog: int
    cors_origins: tuple[str, ...]
    allowed_hosts: tuple[str, ...]
    # `/upstream/<model>/<rest>`: a `rest` any of these finds never starts the model.
    upstream_ignore_paths: tuple[re.Pattern[str], ...]
    optimizer: OptimizerSettings = OptimizerSettings()
    observe: ObserveSettings = ObserveSettings()
    # The global policy (schema's default); discovered models, which have no entry, use it.
    prompt_optimization: str = "limit_only"
    ollama: OllamaSettings | None = None  # None: discovery is off
    warnings: tuple[ConfigProblem, ...] = ()
    # The validated file, in the file's own key names: the source of `validate --json`.
    document: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def resolve(self, name: str) -> str | None:
        """The local model id a request's `model` names (an id or an alias), or None."""
        if name in self.models:
            return name
        return self.aliases.get(name)

    def peer_target(self, name: str) -> PeerTarget | None:
        """The peer and its model id a request's `model` names, when no local model has it."""
        return self.peer_models.get(name)
