"""The config file format, declared once.

Every key a config file may hold is a field here, with its type, default, bounds and the text
editors show. From these classes come validation (after macros are expanded), the JSON Schema
(`trioswap schema`), the key check that turns unknown keys into warnings (`keys.py`) and the
resolved view `trioswap validate --json` prints. What a value *means* at run time (inheritance,
ports, aliases) is computed from the validated document in `resolve.py`.

Keys are llama-swap's (camelCase, `on_startup`, `session_id`, `evict_costs`); a field's alias is
its key. `Planned` marks keys llama-swap has and trioswap reads but does not act on yet.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

# pydantic looks for plugins (the entry points of every installed distribution) as it builds each
# model class: ~0.1 s of a start from the zipapp, whose archive the scan walks, for plugins that
# have no business in trioswap's config. Off while this module builds its models; put back at its
# end, as the model servers trioswap starts inherit its environment.
_NO_PLUGINS = "PYDANTIC_DISABLE_PLUGINS"
_plugins_setting = os.environ.get(_NO_PLUGINS)
os.environ[_NO_PLUGINS] = "__all__"

from pydantic import (  # noqa: E402 - after the switch above
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    model_validator,
)

MIB = 1024 * 1024
LOG_LEVELS = ("debug", "info", "warn", "error")
LOG_TO_STDOUT = ("proxy", "upstream", "both", "none")
POLICIES = ("off", "limit_only", "always", "llm_assisted")
TRUNCATION_MODES = ("sliding_window", "strict_error")
MODALITIES = ("text", "audio", "image")
DEFAULT_PROXY = "http://127.0.0.1:${PORT}"
DEFAULT_IGNORE_PATHS = (r".*\.(js|json|css|png|gif|jpg|jpeg|ico|txt)$",)
DEFAULT_SESSION_HEADERS = ("X-Session-ID", "X-Litellm-Session-Id")
# Go's time.ParseDuration units, which llama-swap's duration values use.
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Planned:
    """A llama-swap key trioswap accepts and checks but does not act on yet."""

    what: str


def parse_duration(value: Any) -> Any:
    """`90s`, `1h30m`, `250ms` (Go's syntax) or a number of seconds → seconds."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text or _DURATION_PART.sub("", text) not in ("", "-", "+"):
        raise ValueError(f"not a duration like 30s, 5m or 1h30m: {value!r}")
    seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
    return -seconds if text.startswith("-") else seconds


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from None
    return pattern


def _http_url(url: str) -> str:
    if not re.match(r"^https?://[^/\s]+", url):
        raise ValueError(f"must be an http:// or https:// URL, not {url!r}")
    return url


Seconds = Annotated[float, Field(ge=0)]
Policy = Literal["off", "limit_only", "always", "llm_assisted"]
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\s*([0-9.]+(ns|us|µs|ms|s|m|h))+\s*$"},
                {"type": "number", "minimum": 0},
            ],
            "description": "a duration: 30s, 5m, 1h30m, or a number of seconds",
        }
    ),
]
Pattern = Annotated[str, AfterValidator(_compiles)]
Url = Annotated[str, AfterValidator(_http_url)]
# A string that may also be written as a list of strings (stripParams). Only the form the value
# has is validated, so a wrong value gets one error, not one per form.
CommaList = Annotated[
    Annotated[str, Tag("str")] | Annotated[list[str], Tag("list")],
    Discriminator(lambda value: "list" if isinstance(value, list | dict) else "str"),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
            "description": "comma separated names, or a list",
        }
    ),
]
Scalar = str | int | float | bool


class Section(BaseModel):
    """Base of every mapping in the file: keys are aliases; unknown keys were already reported
    and dropped by `keys.py`, so anything left over is a bug."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        coerce_numbers_to_str=True,
        frozen=True,
        validate_default=False,
    )
    # Old spellings llama-swap still reads → the key they mean now.
    deprecated_keys: ClassVar[dict[str, str]] = {}
    # Keys whose presence alone turns a feature on: written with no value they stay, as an empty
    # section, where other null keys are dropped.
    switches: ClassVar[frozenset[str]] = frozenset()


class Timeouts(Section):
    connect: Seconds = Field(30, description="seconds to connect to the server (0: no bound)")
    keepalive: Seconds = Field(30, description="TCP keepalive idle seconds (0: off)")
    response_header: Seconds = Field(
        600,
        alias="responseHeader",
        description="seconds to wait for the response headers, and at most between body reads "
        "(0: no bound; llama-swap's default is 0)",
    )
    tls_handshake: Seconds = Field(
        10, alias="tlsHandshake", description="seconds for an https:// proxy's TLS handshake"
    )
    expect_continue: Seconds = Field(
        1,
        alias="expectContinue",
        description="accepted for llama-swap; trioswap never sends 'Expect: 100-continue'",
    )
    idle_conn: Seconds = Field(
        90, alias="idleConn", description="seconds an idle kept-alive connection stays open"
    )


class PeerTimeouts(Timeouts):
    response_header: Seconds = Field(
        60, alias="responseHeader", description="seconds to wait for the peer's response headers"
    )


class Filters(Section):
    deprecated_keys: ClassVar[dict[str, str]] = {"strip_params": "stripParams"}

    strip_params: CommaList = Field(
        "",
        alias="stripParams",
        description="request parameters to remove (comma separated); 'model' is never removed",
    )
    set_params: dict[str, Any] = Field(
        default_factory=dict,
        alias="setParams",
        description="request parameters to set or override; 'model' cannot be set",
    )


class ModelFilters(Filters):
    set_params_by_id: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        alias="setParamsByID",
        description="requested model name → parameters set after setParams; each key becomes an "
        "alias of this model",
    )


class Compat(Section):
    ignore_websockets: bool = Field(
        False,
        alias="ignoreWebsockets",
        description="websocket connections through /upstream never start this model, nor count "
        "as activity for its ttl",
    )


class Capabilities(Section):
    inputs: list[Literal["text", "audio", "image"]] = Field(
        default_factory=list, alias="in", description="modalities the model reads"
    )
    outputs: list[Literal["text", "audio", "image"]] = Field(
        default_factory=list, alias="out", description="modalities the model writes"
    )
    tools: bool = Field(False, description="the model supports function calling")
    reranker: bool = Field(False, description="the model serves /v1/rerank")
    context: int = Field(0, ge=0, description="the context window in tokens (0: unknown)")


ApiMode = Literal["auto", "native", "translate"]


class Apis(Section):
    """How requests in an API family other than chat completions reach the server."""

    anthropic: ApiMode = Field(
        "auto",
        description="/v1/messages: native (passed on), translate (to chat completions and "
        "back), auto (native; translated from the server's first 404/405 until it restarts)",
    )
    responses: ApiMode = Field(
        "auto", description="/v1/responses: native, translate or auto, as for anthropic"
    )


class Model(Section):
    deprecated_keys: ClassVar[dict[str, str]] = {"cmd_stop": "cmdStop"}

    cmd: str = Field(
        description="the command that starts the model's server; one argument per word, "
        "'#' lines are comments, ${PORT} is the port trioswap picks",
        min_length=1,
    )
    cmd_stop: str | None = Field(
        None,
        alias="cmdStop",
        description="a command that stops the server (${PID} is its pid); default: SIGTERM",
    )
    proxy: Url = Field(DEFAULT_PROXY, description="the URL requests for this model go to")
    check_endpoint: str = Field(
        "/health",
        alias="checkEndpoint",
        description="the path that answers 200 once the server is ready; 'none' skips the check",
    )
    ttl: float = Field(
        -1, ge=-1, description="seconds idle before the model is unloaded; 0 never, -1 globalTTL"
    )
    unload_timeout: Seconds = Field(
        0, alias="unloadTimeout", description="seconds a stop may take before SIGKILL; 0: global"
    )
    aliases: list[str] = Field(default_factory=list, description="other names for this model")
    env: list[str] = Field(default_factory=list, description="KEY=value for the server's env")
    unlisted: bool = Field(False, description="hidden from /v1/models; still usable")
    use_model_name: str | None = Field(
        None, alias="useModelName", description="the model name sent to the server"
    )
    name: str | None = Field(None, description="display name in /v1/models")
    description: str | None = Field(None, description="description in /v1/models")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="any values, shown in /v1/models"
    )
    macros: dict[str, Scalar] = Field(
        default_factory=dict, description="this model's macros; they override global ones"
    )
    filters: ModelFilters = Field(default_factory=ModelFilters)
    concurrency_limit: int = Field(
        0,
        ge=0,
        alias="concurrencyLimit",
        description="requests the server gets at once; more wait in a queue (0: no limit)",
    )
    send_loading_state: bool | None = Field(
        None, alias="sendLoadingState", description="overrides the global sendLoadingState"
    )
    timeouts: Timeouts = Field(default_factory=Timeouts)
    compat: Compat = Field(default_factory=Compat)
    capabilities: Capabilities = Field(default_factory=Capabilities)
    apis: Apis = Field(default_factory=Apis)
    prompt_optimization: Policy | None = Field(
        None,
        alias="promptOptimization",
        description="the prompt optimizer's policy for this model (default: the global one)",
    )
    # The policy names are accepted too (with a warning): trioswap read them here before
    # promptOptimization existed.
    truncation_mode: Literal["sliding_window", "strict_error", Policy] | None = Field(
        None,
        alias="truncationMode",
        description="over the context budget: unset trims as the policy says; sliding_window "
        "drops the oldest turns only; strict_error answers 400 'prompt is too long'",
    )
    tokenizer: str | None = Field(
        None,
        description="a tokenizer.json giving the model's exact token counts (default: read "
        "from the model's GGUF file, else its server's /tokenize, else an estimate)",
    )


class Group(Section):
    swap: bool = Field(True, description="only one member runs at a time")
    exclusive: bool = Field(True, description="starting a member stops other groups")
    persistent: bool = Field(False, description="other groups never stop this group's members")
    members: list[str] = Field(description="the model ids in this group")


class Matrix(Section):
    vars: dict[str, str] = Field(default_factory=dict, description="short name → model id")
    evict_costs: dict[str, int] = Field(
        default_factory=dict, description="model or var → cost of stopping it (default 1)"
    )
    sets: dict[str, str] = Field(
        default_factory=dict, description="name → expression of models that may run together"
    )


class RouterSettings(Section):
    groups: dict[str, Group] = Field(default_factory=dict)
    matrix: Annotated[Matrix | None, Planned("the matrix router")] = None


class Router(Section):
    use: Literal["group", "matrix"] = Field("group", description="which swap engine decides")
    settings: RouterSettings = Field(default_factory=RouterSettings)


class Fifo(Section):
    priority: Annotated[dict[str, int], Planned("priority scheduling")] = Field(
        default_factory=dict, description="model id → priority (higher is served first)"
    )


class SchedulerSettings(Section):
    fifo: Fifo = Field(default_factory=Fifo)


class Scheduler(Section):
    use: Literal["fifo"] = "fifo"
    settings: SchedulerSettings = Field(default_factory=SchedulerSettings)


class Routing(Section):
    router: Router = Field(default_factory=Router)
    scheduler: Scheduler = Field(default_factory=Scheduler)


class SelectorSettings(Section):
    spillover: int = Field(
        1, ge=0, description="requests per target before the next starts (spillover strategy)"
    )


class Selector(Section):
    strategy: Literal["warm", "pin", "spillover"]
    targets: list[str] = Field(min_length=1)
    settings: SelectorSettings = Field(default_factory=SelectorSettings)
    name: str | None = None
    description: str | None = None
    unlisted: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)


class Profile(Section):
    @model_validator(mode="before")
    @classmethod
    def _not_a_list(cls, value: Any) -> Any:
        if isinstance(value, list):
            raise ValueError(
                "a profile is a mapping with description and pins; llama-swap's old list form "
                "is no longer read"
            )
        return value

    description: str = ""
    pins: dict[str, str | None] = Field(
        description="model id → the id it stands for while the profile is active (null: off)"
    )


class Peer(Section):
    proxy: Url = Field(description="the peer's base URL; the request path is appended")
    api_key: str = Field(
        "", alias="apiKey", description="sent as 'Authorization: Bearer' and 'x-api-key'"
    )
    models: list[str] = Field(min_length=1, description="the model ids the peer serves")
    filters: Filters = Field(default_factory=Filters)
    timeouts: PeerTimeouts = Field(default_factory=PeerTimeouts)


class OnStartup(Section):
    preload: list[str] = Field(default_factory=list, description="models started at startup")


class Hooks(Section):
    on_startup: OnStartup = Field(default_factory=OnStartup)


class Optimizer(Section):
    """How the prompt optimizer sizes its budget and trims."""

    output_reserve: int = Field(
        1024,
        ge=0,
        alias="outputReserve",
        description="tokens kept free for the reply when a request gives no max_tokens",
    )
    max_output_share: float = Field(
        0.25,
        gt=0,
        lt=1,
        alias="maxOutputShare",
        description="the most of the window a request's max_tokens may reserve (agents ask "
        "for 32k of output from an 8k model)",
    )
    safety_margin: float = Field(
        0.05,
        ge=0,
        lt=1,
        alias="safetyMargin",
        description="share of the window left unused for counting errors",
    )
    target: float = Field(
        0.7,
        gt=0,
        le=1,
        description="a trim cuts the prompt to this share of the budget, so the next turns "
        "fit without another trim (and the model's prompt cache keeps hitting)",
    )
    elide_over: int = Field(
        256,
        ge=1,
        alias="elideOver",
        description="old tool outputs longer than this many tokens are elided first",
    )
    summary_timeout: Duration = Field(
        60,
        ge=0,
        alias="summaryTimeout",
        description="llm_assisted: seconds a summary may take before limit_only is used",
    )
    summary_max_tokens: int = Field(
        600, ge=16, alias="summaryMaxTokens", description="llm_assisted: a summary's length"
    )


class Upstream(Section):
    ignore_paths: list[Pattern] = Field(
        default_factory=lambda: list(DEFAULT_IGNORE_PATHS),
        alias="ignorePaths",
        description="regular expressions; an /upstream/<model>/<path> whose path matches one "
        "never starts the model",
    )


class Store(Section):
    path: str


class Activity(Section):
    session_id: list[str] = Field(default_factory=lambda: list(DEFAULT_SESSION_HEADERS))


class UI(Section):
    activity: Activity = Field(default_factory=Activity)


class Performance(Section):
    disabled: bool = False
    every: Duration = Field(5.0, ge=5)


class Cors(Section):
    origins: list[str] = Field(
        default_factory=list, description="web origins allowed to call trioswap from a browser"
    )


class Ollama(Section):
    """Discovery of a running Ollama's models, listed and routed as `ollama/<name>`."""

    endpoint: str | None = Field(
        None,
        min_length=1,
        description="Ollama's address in OLLAMA_HOST's forms: host, host:port, :port or an "
        "http(s) URL (default: OLLAMA_HOST, else http://127.0.0.1:11434)",
    )
    enabled: bool = Field(True, description="false turns discovery off, even with OLLAMA_HOST set")
    refresh: Duration = Field(
        30, ge=1, description="how often Ollama's model list is read again (at least 1s)"
    )


class File(Section):
    """A trioswap (and llama-swap) config file."""

    switches: ClassVar[frozenset[str]] = frozenset({"ollama"})

    strict: bool = Field(False, description="treat every warning as an error")
    health_check_timeout: float = Field(
        120,
        ge=0,
        alias="healthCheckTimeout",
        description="seconds a starting model has to become healthy (at least 15)",
    )
    log_level: Literal["debug", "info", "warn", "error"] = Field("info", alias="logLevel")
    log_time_format: Literal[
        "",
        "ansic",
        "unixdate",
        "rubydate",
        "rfc822",
        "rfc822z",
        "rfc850",
        "rfc1123",
        "rfc1123z",
        "rfc3339",
        "rfc3339nano",
        "kitchen",
        "stamp",
        "stampmilli",
        "stampmicro",
        "stampnano",
    ] = Field(
        "",
        alias="logTimeFormat",
        description="timestamp on trioswap's log lines: '' (none) or a Go layout name "
        "(https://pkg.go.dev/time#pkg-constants)",
    )
    log_to_stdout: Literal["proxy", "upstream", "both", "none"] = Field(
        "proxy",
        alias="logToStdout",
        description="what goes to stdout: trioswap's log, the model servers' output, both, none",
    )
    log_requests: Annotated[bool, Planned("request logging")] = Field(False, alias="logRequests")
    metrics_max_in_memory: int = Field(
        1000,
        ge=0,
        alias="metricsMaxInMemory",
        description="activity records kept in memory when there is no store.path",
    )
    capture_buffer: float = Field(
        5,
        ge=0,
        alias="captureBuffer",
        description="MB of recent request and response bodies kept for /api/captures (0: off)",
    )
    store: Store | None = Field(
        None, description="keep the activity in a SQLite file (path: beside the config)"
    )
    ui: UI = Field(default_factory=UI)
    performance: Performance = Field(default_factory=Performance)
    start_port: int = Field(
        5800,
        ge=1,
        le=64535,
        alias="startPort",
        description="the first port ${PORT} may be (models get startPort..startPort+999)",
    )
    send_loading_state: bool = Field(
        False, alias="sendLoadingState", description="stream loading progress as reasoning"
    )
    prompt_optimization: Policy = Field(
        "limit_only",
        alias="promptOptimization",
        description="the prompt optimizer's policy: off, limit_only (trim only over the "
        "context budget), always (also remove duplicates every request), llm_assisted "
        "(summarize what is trimmed)",
    )
    optimizer: Optimizer = Field(default_factory=Optimizer)
    include_aliases_in_list: bool = Field(
        False, alias="includeAliasesInList", description="list aliases in /v1/models"
    )
    global_ttl: Seconds = Field(0, alias="globalTTL", description="default ttl (0: never)")
    unload_timeout: Seconds = Field(
        10, alias="unloadTimeout", description="default seconds a stop may take before SIGKILL"
    )
    drain_timeout: Seconds = Field(
        0,
        alias="drainTimeout",
        description="seconds a swap waits for the running model's requests (0: no bound)",
    )
    macros: dict[str, Scalar] = Field(
        default_factory=dict, description="${name} substitutions usable in every value"
    )
    api_keys: list[str] = Field(
        default_factory=list, alias="apiKeys", description="keys a request must present"
    )
    models: dict[str, Model] = Field(default_factory=dict, description="model id → its server")
    profiles: Annotated[dict[str, Profile], Planned("profile switching")] = Field(
        default_factory=dict
    )
    selectors: Annotated[dict[str, Selector], Planned("selector routing")] = Field(
        default_factory=dict
    )
    routing: Routing = Field(default_factory=Routing)
    groups: dict[str, Group] = Field(
        default_factory=dict,
        description="deprecated: write routing.router.settings.groups",
        json_schema_extra={"deprecated": True},
    )
    matrix: Annotated[Matrix | None, Planned("the matrix router")] = Field(
        None,
        description="deprecated: write routing.router.settings.matrix",
        json_schema_extra={"deprecated": True},
    )
    hooks: Hooks = Field(default_factory=Hooks)
    peers: dict[str, Peer] = Field(
        default_factory=dict, description="other servers whose models are routed to them"
    )
    upstream: Upstream = Field(default_factory=Upstream)
    max_request_body_mb: float = Field(
        256, gt=0, alias="maxRequestBodyMB", description="largest request body, in MiB"
    )
    request_body_timeout: float = Field(
        60, gt=0, alias="requestBodyTimeout", description="seconds a request body may stall"
    )
    shutdown_timeout: Seconds = Field(
        10, alias="shutdownTimeout", description="seconds requests get to finish at shutdown"
    )
    listen_backlog: int = Field(1024, ge=1, alias="listenBacklog")
    cors: Cors = Field(default_factory=Cors)
    ollama: Ollama | None = Field(
        None,
        description="find a running Ollama's models; on when this key is present (even empty) "
        "or OLLAMA_HOST is set",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        alias="allowedHosts",
        description="Host header values accepted besides loopback names and the listen address",
    )


if _plugins_setting is None:
    del os.environ[_NO_PLUGINS]
else:
    os.environ[_NO_PLUGINS] = _plugins_setting
