"""Tests for the config loader: llama-swap's YAML read into frozen dataclasses.

Everything goes through `loads(text, filename, environ=...)` with an explicit environment, or
through a real `python -m trioswap` process for the command line. Configs that should load
cleanly are read with `strict=True`, so a warning nobody expected fails the test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from trioswap.cli import demo_config_path
from trioswap.config import (
    LOG_LEVELS,
    POLICIES,
    PORT_SPAN,
    TRUNCATION_MODES,
    Config,
    Filters,
    GroupConfig,
    ModelConfig,
    Timeouts,
    load,
    loads,
    redacted,
)
from trioswap.errors import ConfigError, ConfigProblem

FILE = "cfg.yaml"
CLI_TIMEOUT = 30.0
# A model whose server is not started by trioswap on a port of its choosing.
REMOTE = "proxy: http://127.0.0.1:9999"

Problem = tuple[int | None, str, str]


# -- helpers ----------------------------------------------------------------------------------


def cfg(text: str) -> str:
    return textwrap.dedent(text)


def load_text(text: str, environ: dict[str, str] | None = None) -> Config:
    return loads(cfg(text), FILE, environ={} if environ is None else environ, strict=True)


def problems_of(
    text: str, environ: dict[str, str] | None = None, *, strict: bool = False
) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        loads(cfg(text), FILE, environ={} if environ is None else environ, strict=strict)
    for p in info.value.problems:
        assert isinstance(p, ConfigProblem)
        assert p.file == FILE
    return [(p.line, p.key, p.message) for p in info.value.problems]


def warnings_of(text: str, environ: dict[str, str] | None = None) -> list[Problem]:
    """The warnings of a config that loads, in line order; under strict they are its errors."""
    config = loads(cfg(text), FILE, environ={} if environ is None else environ)
    assert all(p.file == FILE for p in config.warnings)
    found = sorted(((p.line, p.key, p.message) for p in config.warnings), key=_line_order)
    assert problems_of(text, environ, strict=True) == found
    return found


def _line_order(problem: Problem) -> tuple[int, str]:
    return problem[0] or 0, problem[1]


def model_yaml(body: str, *, top: str = "", model_id: str = "m") -> str:
    """A config with one model whose keys are `body` (unindented YAML)."""
    return cfg(top) + f"models:\n  {model_id}:\n" + textwrap.indent(cfg(body), "    ")


def one_model(body: str, *, top: str = "", environ: dict[str, str] | None = None) -> ModelConfig:
    return load_text(model_yaml(body, top=top), environ).models["m"]


def remote_model(body: str, *, top: str = "", environ: dict[str, str] | None = None) -> ModelConfig:
    """`one_model` with a fixed proxy, for a `cmd` that does not use ${PORT}."""
    return one_model(cfg(body).rstrip("\n") + "\n" + REMOTE, top=top, environ=environ)


def ports_of(model_ids: list[str], start_port: int = 5800) -> dict[str, int | None]:
    text = f"startPort: {start_port}\nmodels:\n" + "".join(
        f"  {mid}:\n    cmd: srv --port ${{PORT}}\n" for mid in model_ids
    )
    config = loads(text, FILE, environ={})
    return {mid: m.port for mid, m in config.models.items()}


def run_trioswap(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trioswap", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        cwd=cwd,
        check=False,
    )


MINIMAL = """\
models:
  m:
    cmd: srv --port ${PORT}
"""


# -- defaults ---------------------------------------------------------------------------------


def test_top_level_defaults() -> None:
    config = load_text(MINIMAL)
    assert config.path == FILE
    assert config.health_check_timeout == 120.0
    assert config.start_port == 5800
    assert config.log_level == "info"
    assert config.global_ttl == 0.0
    assert config.unload_timeout == 10.0
    assert config.drain_timeout == 0.0
    assert config.include_aliases_in_list is False
    assert config.api_keys == ()
    assert config.preload == ()
    assert config.send_loading_state is False
    assert dict(config.groups) == {}
    assert dict(config.aliases) == {}
    assert dict(config.peers) == {}
    assert dict(config.peer_models) == {}
    assert list(config.models) == ["m"]
    assert config.warnings == ()


def test_model_defaults() -> None:
    m = load_text(MINIMAL).models["m"]
    assert m.id == "m"
    assert m.port is not None
    assert 5800 <= m.port < 5800 + PORT_SPAN
    assert m.cmd == ("srv", "--port", str(m.port))
    assert m.cmd_stop is None
    assert m.stop_command(123) is None
    assert m.proxy == f"http://127.0.0.1:{m.port}"
    assert m.check_endpoint == "/health"
    assert m.ttl == 0.0
    assert m.unload_timeout == 10.0
    assert m.aliases == ()
    assert dict(m.env) == {}
    assert m.unlisted is False
    assert m.use_model_name is None
    assert m.name is None
    assert m.description is None
    assert dict(m.metadata) == {}
    assert m.filters == Filters()
    assert m.filters.strip_params == ()
    assert dict(m.filters.set_params) == {}
    assert dict(m.filters.set_params_by_id) == {}
    assert m.concurrency_limit == 0
    assert m.truncation_mode is None
    assert m.send_loading_state is False
    assert m.timeouts == Timeouts(
        connect=30.0, response_header=600.0, keepalive=30.0, tls_handshake=10.0, idle_conn=90.0
    )
    assert m.capabilities is None
    assert m.ignore_websockets is False


def test_group_defaults() -> None:
    config = load_text(
        """\
        models:
          a:
            cmd: srv --port ${PORT}
        routing:
          router:
            settings:
              groups:
                g:
                  members: [a]
        """
    )
    assert config.groups["g"] == GroupConfig(
        id="g", members=("a",), swap=True, exclusive=True, persistent=False
    )


def test_config_objects_are_frozen() -> None:
    config = load_text(MINIMAL)
    with pytest.raises(AttributeError):
        config.start_port = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        config.models["m"].ttl = 1  # type: ignore[misc]


# -- every top-level key ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("top", "attr", "expected"),
    [
        ("healthCheckTimeout: 30", "health_check_timeout", 30.0),
        ("healthCheckTimeout: 15", "health_check_timeout", 15.0),
        ("healthCheckTimeout: 15.5", "health_check_timeout", 15.5),
        ("startPort: 9000", "start_port", 9000),
        ("startPort: 1", "start_port", 1),
        ("startPort: 64535", "start_port", 64535),
        *[(f"logLevel: {level}", "log_level", level) for level in LOG_LEVELS],
        ("globalTTL: 60", "global_ttl", 60.0),
        ("globalTTL: 0", "global_ttl", 0.0),
        ("unloadTimeout: 3.5", "unload_timeout", 3.5),
        ("unloadTimeout: 0", "unload_timeout", 0.0),
        ("drainTimeout: 2.5", "drain_timeout", 2.5),
        ("includeAliasesInList: true", "include_aliases_in_list", True),
        ("includeAliasesInList: false", "include_aliases_in_list", False),
        ("apiKeys: [sk-one, sk-two]", "api_keys", ("sk-one", "sk-two")),
        ("apiKeys: []", "api_keys", ()),
        ("sendLoadingState: true", "send_loading_state", True),
        ("hooks:\n  on_startup:\n    preload: [m]", "preload", ("m",)),
        ("hooks: {}", "preload", ()),
        ("routing:\n  router:\n    settings:\n      groups: {}", "groups", {}),
        ("groups: {}", "groups", {}),
        ("macros: {}", "start_port", 5800),
    ],
)
def test_top_level_key(top: str, attr: str, expected: Any) -> None:
    config = loads(top + "\n" + MINIMAL, FILE, environ={}, strict=True)
    value = getattr(config, attr)
    assert (dict(value) if attr == "groups" else value) == expected
    assert type(value if attr != "groups" else dict(value)) is type(expected)


def test_null_values_take_defaults() -> None:
    # llama-swap reads a key with no value as unset; a `macros:` whose entries are all
    # commented out is the common case.
    config = load_text(
        """\
        healthCheckTimeout:
        startPort:
        logLevel:
        macros:
          # ctx: 4096
        apiKeys:
        groups:
        routing:
        hooks:
        models:
          m:
            cmd: srv --port ${PORT}
            ttl:
            aliases:
            filters:
            macros:
        """
    )
    assert config.health_check_timeout == 120.0
    assert config.start_port == 5800
    assert config.log_level == "info"
    assert config.api_keys == ()
    assert dict(config.groups) == {}
    assert config.models["m"].ttl == 0.0
    assert config.models["m"].aliases == ()
    assert config.models["m"].filters == Filters()


@pytest.mark.parametrize(("value", "shown"), [("0", "0"), ("2.5", "2.5"), ("14.9", "14.9")])
def test_health_check_timeout_below_15_is_raised_with_a_warning(value: str, shown: str) -> None:
    text = f"healthCheckTimeout: {value}\n" + MINIMAL
    assert warnings_of(text) == [
        (1, "healthCheckTimeout", f"{shown} is raised to 15 (llama-swap's minimum)")
    ]
    assert loads(text, FILE, environ={}).health_check_timeout == 15.0


def test_preload_accepts_aliases_and_resolves_them() -> None:
    config = load_text(
        """\
        models:
          a:
            cmd: srv --port ${PORT}
            aliases: [first]
          b:
            cmd: srv --port ${PORT}
        hooks:
          on_startup:
            preload: [first, b, a]
        """
    )
    assert config.preload == ("a", "b")


def test_api_keys_expand_macros_and_env() -> None:
    config = load_text(
        """\
        macros:
          prefix: sk
        apiKeys:
          - ${prefix}-literal
          - ${env.TRIOSWAP_KEY}
        models:
          m:
            cmd: srv --port ${PORT}
        """,
        environ={"TRIOSWAP_KEY": "from-env"},
    )
    assert config.api_keys == ("sk-literal", "from-env")


GROUPS = """\
chat:
  swap: true
  members: [a, b]
tools:
  swap: false
  exclusive: false
  persistent: true
  members:
    - c
"""
GROUP_MODELS = """\
models:
  a:
    cmd: srv --port ${PORT}
  b:
    cmd: srv --port ${PORT}
  c:
    cmd: srv --port ${PORT}
"""
EXPECTED_GROUPS = {
    "chat": GroupConfig("chat", ("a", "b"), swap=True, exclusive=True, persistent=False),
    "tools": GroupConfig("tools", ("c",), swap=False, exclusive=False, persistent=True),
}


def test_groups_all_keys() -> None:
    text = GROUP_MODELS + "routing:\n  router:\n    settings:\n      groups:\n"
    config = load_text(text + textwrap.indent(GROUPS, " " * 8))
    assert config.groups == EXPECTED_GROUPS


def test_top_level_groups_still_work_with_a_deprecation_warning() -> None:
    text = GROUP_MODELS + "groups:\n" + textwrap.indent(GROUPS, "  ")
    assert warnings_of(text) == [(8, "groups", "deprecated: write routing.router.settings.groups")]
    assert loads(text, FILE, environ={}).groups == EXPECTED_GROUPS


def test_top_level_groups_and_routing_groups_together_are_an_error() -> None:
    text = (
        GROUP_MODELS
        + "groups:\n  g: {members: [a]}\n"
        + "routing:\n  router:\n    settings:\n      groups:\n        h: {members: [b]}\n"
    )
    [(line, key, message)] = problems_of(text)
    assert (line, key) == (8, "groups")
    assert "move the top-level one under routing.router.settings" in message


# -- every model key --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "attr", "expected"),
    [
        ("cmdStop: kill -TERM ${PID}", "cmd_stop", ("kill", "-TERM", "${PID}")),
        ("cmdStop: ''", "cmd_stop", None),
        ("proxy: http://10.0.0.5:9000", "proxy", "http://10.0.0.5:9000"),
        ("proxy: http://10.0.0.5:9000/", "proxy", "http://10.0.0.5:9000"),
        ("proxy: https://gpu-box:8443/v1/", "proxy", "https://gpu-box:8443/v1"),
        ("proxy: http://[::1]:9000", "proxy", "http://[::1]:9000"),
        ("checkEndpoint: /v1/models", "check_endpoint", "/v1/models"),
        ("checkEndpoint: health", "check_endpoint", "/health"),
        ("checkEndpoint: none", "check_endpoint", None),
        ("checkEndpoint: None", "check_endpoint", None),
        ("checkEndpoint: NONE", "check_endpoint", None),
        ("checkEndpoint: ' none '", "check_endpoint", None),
        ("ttl: 300", "ttl", 300.0),
        ("ttl: 0.5", "ttl", 0.5),
        ("ttl: 0", "ttl", 0.0),
        ("ttl: -1", "ttl", 0.0),  # globalTTL
        ("ttl: '5'", "ttl", 5.0),  # lax: a string from ${env.X} fills a number
        ("unloadTimeout: 2", "unload_timeout", 2.0),
        ("unloadTimeout: 0", "unload_timeout", 10.0),  # the global unloadTimeout
        ("aliases: [gpt-4o, gpt-4o-mini]", "aliases", ("gpt-4o", "gpt-4o-mini")),
        ("aliases:\n  - one\n  - two", "aliases", ("one", "two")),
        ("aliases: []", "aliases", ()),
        ("env: [A=1, B=x=y, EMPTY=]", "env", {"A": "1", "B": "x=y", "EMPTY": ""}),
        ("env:\n  - CUDA_VISIBLE_DEVICES=0,1", "env", {"CUDA_VISIBLE_DEVICES": "0,1"}),
        ("unlisted: true", "unlisted", True),
        ("unlisted: false", "unlisted", False),
        ("useModelName: org/model-7b", "use_model_name", "org/model-7b"),
        ("name: Friendly Name", "name", "Friendly Name"),
        ("description: A model. It answers.", "description", "A model. It answers."),
        (
            "metadata:\n  family: llama\n  size: 8\n  tags: [chat, tools]\n"
            "  extra: {vision: false}",
            "metadata",
            {"family": "llama", "size": 8, "tags": ["chat", "tools"], "extra": {"vision": False}},
        ),
        ("metadata: {}", "metadata", {}),
        ("concurrencyLimit: 4", "concurrency_limit", 4),
        ("concurrencyLimit: 0", "concurrency_limit", 0),
        *[(f"truncationMode: '{mode}'", "truncation_mode", mode) for mode in TRUNCATION_MODES],
        *[(f"truncationMode: {mode}", "truncation_mode", mode) for mode in TRUNCATION_MODES],
        *[(f"promptOptimization: {p}", "prompt_optimization", p) for p in POLICIES],
        ("tokenizer: /m/tokenizer.json", "tokenizer", "/m/tokenizer.json"),
        ("sendLoadingState: true", "send_loading_state", True),
    ],
)
def test_model_key(body: str, attr: str, expected: Any) -> None:
    m = one_model("cmd: srv --port ${PORT}\n" + body)
    value = getattr(m, attr)
    if isinstance(expected, dict):
        value = dict(value)
    assert value == expected


@pytest.mark.parametrize(
    ("filters", "strip", "set_params"),
    [
        ("stripParams: temperature, top_p", ("temperature", "top_p"), {}),
        ("stripParams: 'temperature,top_p,,  top_k ,'", ("temperature", "top_k", "top_p"), {}),
        ("stripParams: [temperature, top_k]", ("temperature", "top_k"), {}),
        ("stripParams:\n  - temperature\n  - top_k", ("temperature", "top_k"), {}),
        ("stripParams: model, temperature", ("temperature",), {}),
        ("stripParams: [model, temperature, model]", ("temperature",), {}),
        ("stripParams: model", (), {}),
        ("stripParams: ''", (), {}),
        (
            "setParams:\n  temperature: 0.7\n  stop: ['</s>']\n  cache_prompt: true",
            (),
            {"temperature": 0.7, "stop": ["</s>"], "cache_prompt": True},
        ),
        (
            "stripParams: top_p\nsetParams: {top_p: 0.9, n: 1}",
            ("top_p",),
            {"top_p": 0.9, "n": 1},
        ),
    ],
)
def test_model_filters(filters: str, strip: tuple[str, ...], set_params: dict[str, Any]) -> None:
    m = one_model("cmd: srv --port ${PORT}\nfilters:\n" + textwrap.indent(filters, "  "))
    assert m.filters.strip_params == strip
    assert dict(m.filters.set_params) == set_params


def test_strip_params_string_expands_macros() -> None:
    m = one_model(
        "cmd: srv --port ${PORT}\nfilters:\n  stripParams: '${sampling}, model, seed'",
        top="macros:\n  sampling: 'temperature, top_p'\n",
    )
    assert m.filters.strip_params == ("seed", "temperature", "top_p")


@pytest.mark.parametrize(
    ("top", "body", "attr", "expected"),
    [
        ("globalTTL: 60\n", "", "ttl", 60.0),
        ("globalTTL: 60\n", "ttl: -1", "ttl", 60.0),
        ("globalTTL: 60\n", "ttl: 5", "ttl", 5.0),
        ("globalTTL: 60\n", "ttl: 0", "ttl", 0.0),
        ("unloadTimeout: 30\n", "", "unload_timeout", 30.0),
        ("unloadTimeout: 30\n", "unloadTimeout: 0", "unload_timeout", 30.0),
        ("unloadTimeout: 30\n", "unloadTimeout: 1", "unload_timeout", 1.0),
        ("sendLoadingState: true\n", "", "send_loading_state", True),
        ("sendLoadingState: true\n", "sendLoadingState: false", "send_loading_state", False),
        ("sendLoadingState: false\n", "sendLoadingState: true", "send_loading_state", True),
    ],
)
def test_top_level_values_are_model_defaults(top: str, body: str, attr: str, expected: Any) -> None:
    m = one_model("cmd: srv --port ${PORT}\n" + body, top=top)
    assert getattr(m, attr) == expected


def test_global_ttl_applies_to_every_model_without_its_own() -> None:
    config = load_text(
        """\
        globalTTL: 120
        models:
          a:
            cmd: srv --port ${PORT}
          b:
            cmd: srv --port ${PORT}
            ttl: 7
        """
    )
    assert config.global_ttl == 120.0
    assert config.models["a"].ttl == 120.0
    assert config.models["b"].ttl == 7.0


def test_numeric_model_ids_become_strings() -> None:
    config = load_text("models:\n  7:\n    cmd: srv ${MODEL_ID} --port ${PORT}\n")
    assert list(config.models) == ["7"]
    assert config.models["7"].cmd[:2] == ("srv", "7")


# -- cmd --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmd_yaml", "expected"),
    [
        ("cmd: llama-server -m model.gguf", ("llama-server", "-m", "model.gguf")),
        ("cmd: '  llama-server   -m   x  '", ("llama-server", "-m", "x")),
        (
            "cmd: llama-server --alias \"my model\" --chat-template '{{ x }}'",
            ("llama-server", "--alias", "my model", "--chat-template", "{{ x }}"),
        ),
        (
            "cmd: |\n"
            "  llama-server \\\n"
            "    --model '/models/My Model Q4.gguf' \\\n"
            "    # a comment line, dropped\n"
            "    --ctx-size 4096 \\\n"
            "  #another comment\n"
            '    --alias "two words"\n',
            (
                "llama-server",
                "--model",
                "/models/My Model Q4.gguf",
                "--ctx-size",
                "4096",
                "--alias",
                "two words",
            ),
        ),
        (
            "cmd: >\n  llama-server\n  -m x.gguf\n\n  --port 1\n",
            ("llama-server", "-m", "x.gguf", "--port", "1"),
        ),
        (
            "cmd: |\n  # leading comment\n  srv\n  -a\n\n  -b\n  # trailing comment\n",
            ("srv", "-a", "-b"),
        ),
        ("cmd: |\n  srv \\\n  -a\\\n  -b\n", ("srv", "-a", "-b")),
        ("cmd: srv 'it''s' \"a\\\"b\"", ("srv", "its", 'a"b')),
    ],
)
def test_cmd_parsing(cmd_yaml: str, expected: tuple[str, ...]) -> None:
    assert remote_model(cmd_yaml).cmd == expected


@pytest.mark.parametrize(
    ("cmd", "literal"),
    [
        ("srv a | grep b", ("srv", "a", "|", "grep", "b")),
        ("srv && rm -rf /tmp/x", ("srv", "&&", "rm", "-rf", "/tmp/x")),
        ("srv $HOME `id` $(id)", ("srv", "$HOME", "`id`", "$(id)")),
        ("srv > out.txt 2>&1", ("srv", ">", "out.txt", "2>&1")),
        ("srv '*.gguf' ~", ("srv", "*.gguf", "~")),
    ],
)
def test_cmd_is_never_a_shell(cmd: str, literal: tuple[str, ...]) -> None:
    # Shell syntax is passed through as plain arguments: no pipes, expansion or globbing.
    m = remote_model(f"cmd: {json.dumps(cmd)}")
    assert m.cmd == literal


def test_cmd_stop_multiline_and_quoting() -> None:
    m = one_model(
        "cmd: srv --port ${PORT}\n"
        'cmdStop: |\n  docker stop \\\n    # comment\n    "my container" ${PID}\n'
    )
    assert m.cmd_stop == ("docker", "stop", "my container", "${PID}")
    assert m.stop_command(4242) == ("docker", "stop", "my container", "4242")


def test_quoted_macro_value_stays_one_argument() -> None:
    m = remote_model(
        "cmd: llama-server -m ${model}",
        top="macros:\n  model: '\"/models/my model.gguf\"'\n",
    )
    assert m.cmd == ("llama-server", "-m", "/models/my model.gguf")


def test_env_value_is_not_reexpanded() -> None:
    # A value from the environment is text: `${...}` in it is not a macro reference.
    m = remote_model("cmd: srv ${env.ARG}", environ={"ARG": "${nope}"})
    assert m.cmd == ("srv", "${nope}")


# -- macros -----------------------------------------------------------------------------------


def test_global_macro() -> None:
    m = remote_model("cmd: ${server} -m x", top="macros:\n  server: /opt/llama-server\n")
    assert m.cmd == ("/opt/llama-server", "-m", "x")


def test_model_macro_wins_over_global() -> None:
    config = load_text(
        """\
        macros:
          ctx: 4096
        models:
          a:
            cmd: srv --ctx ${ctx} --port ${PORT}
            macros:
              ctx: 32768
          b:
            cmd: srv --ctx ${ctx} --port ${PORT}
        """
    )
    assert config.models["a"].cmd[:3] == ("srv", "--ctx", "32768")
    assert config.models["b"].cmd[:3] == ("srv", "--ctx", "4096")


def test_macro_referencing_macros() -> None:
    config = load_text(
        """\
        macros:
          bin: /opt/llama
          server: ${bin}/llama-server --port ${PORT}
          default-args: ${server} -ngl 99
        models:
          a:
            macros:
              model-args: ${default-args} --ctx 8192
            cmd: ${model-args} -m /models/${MODEL_ID}.gguf
        """
    )
    m = config.models["a"]
    assert m.cmd == (
        "/opt/llama/llama-server",
        "--port",
        str(m.port),
        "-ngl",
        "99",
        "--ctx",
        "8192",
        "-m",
        "/models/a.gguf",
    )


def test_global_macro_sees_model_macro_and_model_id() -> None:
    # Macros expand where they are used, so a global macro sees the model's own values.
    config = load_text(
        """\
        macros:
          args: --model /models/${file} --alias ${MODEL_ID}
        models:
          a:
            macros:
              file: a.gguf
            cmd: srv ${args}
            proxy: http://127.0.0.1:9999
        """
    )
    assert config.models["a"].cmd == ("srv", "--model", "/models/a.gguf", "--alias", "a")


@pytest.mark.parametrize(
    ("where", "get"),
    [
        ("cmd: srv ${MODEL_ID} --port ${PORT}", lambda m: m.cmd[1]),
        ("cmd: srv\nproxy: http://host/${MODEL_ID}", lambda m: m.proxy.rsplit("/", 1)[1]),
        (
            "cmd: srv --port ${PORT}\ncheckEndpoint: /ready/${MODEL_ID}",
            lambda m: m.check_endpoint[7:],
        ),
        ("cmd: srv --port ${PORT}\nenv: ['NAME=${MODEL_ID}']", lambda m: m.env["NAME"]),
        ("cmd: srv --port ${PORT}\nmetadata: {id: '${MODEL_ID}'}", lambda m: m.metadata["id"]),
        (
            "cmd: srv --port ${PORT}\nfilters: {setParams: {tag: '${MODEL_ID}'}}",
            lambda m: m.filters.set_params["tag"],
        ),
        ("cmd: srv --port ${PORT}\ncmdStop: stop ${MODEL_ID}", lambda m: m.cmd_stop[1]),
        ("cmd: srv --port ${PORT}\nname: 'Model ${MODEL_ID}'", lambda m: m.name[6:]),
        ("cmd: srv --port ${PORT}\naliases: ['${MODEL_ID}-alias']", lambda m: m.aliases[0][:1]),
    ],
)
def test_model_id_macro_everywhere(where: str, get: Any) -> None:
    assert get(one_model(where)) == "m"


def test_port_macro_everywhere() -> None:
    m = one_model(
        """\
        cmd: srv --port ${PORT}
        cmdStop: stop ${PORT} ${PID}
        checkEndpoint: /health?port=${PORT}
        env: ['PORT=${PORT}']
        metadata: {port: '${PORT}', url: 'http://x:${PORT}'}
        """
    )
    assert m.port is not None
    p = str(m.port)
    assert m.cmd == ("srv", "--port", p)
    assert m.cmd_stop == ("stop", p, "${PID}")
    assert m.proxy == f"http://127.0.0.1:{p}"
    assert m.check_endpoint == f"/health?port={p}"
    assert dict(m.env) == {"PORT": p}
    assert dict(m.metadata) == {"port": m.port, "url": f"http://x:{p}"}


@pytest.mark.parametrize(
    "body",
    [
        "cmd: srv --port ${PORT} --token ${env.SECRET_TOKEN}",
        "cmd: srv --port ${PORT}\nenv: ['TOKEN=${env.SECRET_TOKEN}']",
        "cmd: srv\nproxy: 'http://${env.SECRET_TOKEN}:1'",
        "cmd: srv --port ${PORT}\nmetadata: {t: '${env.SECRET_TOKEN}'}",
    ],
)
def test_env_macro(body: str) -> None:
    m = one_model(body, environ={"SECRET_TOKEN": "abc123"})
    text = repr((m.cmd, dict(m.env), m.proxy, dict(m.metadata)))
    assert "abc123" in text
    assert "${env." not in text


def test_env_macro_in_global_macro_and_empty_value() -> None:
    m = remote_model(
        "cmd: ${self} responder --x '${env.EMPTY}'",
        top="macros:\n  self: ${env.TRIOSWAP_SELF}\n",
        environ={"TRIOSWAP_SELF": "python -m trioswap", "EMPTY": ""},
    )
    assert m.cmd == ("python", "-m", "trioswap", "responder", "--x", "")


def test_pid_kept_in_cmd_stop_and_stop_command_substitutes_it() -> None:
    m = one_model("cmd: srv --port ${PORT}\ncmdStop: kill -TERM ${PID} --pidfile=/run/${PID}.pid")
    assert m.cmd_stop == ("kill", "-TERM", "${PID}", "--pidfile=/run/${PID}.pid")
    assert m.stop_command(31337) == ("kill", "-TERM", "31337", "--pidfile=/run/31337.pid")
    # stop_command does not mutate the stored command
    assert m.cmd_stop == ("kill", "-TERM", "${PID}", "--pidfile=/run/${PID}.pid")


@pytest.mark.parametrize(
    ("macro_yaml", "expected"),
    [
        ("8192", 8192),
        ("-3", -3),
        ("0.7", 0.7),
        ("1e-3", "1e-3"),  # YAML 1.1: without a dot this is a string
        ("1.0e-3", 0.001),
        ("true", True),
        ("false", False),
        ("'8192'", "8192"),
        ("text", "text"),
    ],
)
def test_whole_scalar_macro_keeps_its_type(macro_yaml: str, expected: Any) -> None:
    m = one_model(
        "cmd: srv --port ${PORT}\n"
        "metadata: {v: '${x}', nested: {list: ['${x}']}}\n"
        "filters:\n  setParams: {v: '${x}', nested: {list: ['${x}']}}",
        top=f"macros:\n  x: {macro_yaml}\n",
    )
    for container in (m.metadata, m.filters.set_params):
        assert container["v"] == expected
        assert type(container["v"]) is type(expected)
        assert container["nested"] == {"list": [expected]}


@pytest.mark.parametrize(
    ("macro_yaml", "text"),
    [("8192", "8192"), ("0.7", "0.7"), ("true", "true"), ("false", "false"), ("abc", "abc")],
)
def test_macro_inside_longer_string_becomes_text(macro_yaml: str, text: str) -> None:
    m = one_model(
        "cmd: srv --flag=${x} --port ${PORT}\n"
        "metadata: {v: 'value ${x}', w: '${x}${x}'}\n"
        "filters:\n  setParams: {v: '<${x}>'}",
        top=f"macros:\n  x: {macro_yaml}\n",
    )
    assert m.cmd[:2] == ("srv", f"--flag={text}")
    assert m.metadata["v"] == f"value {text}"
    assert m.metadata["w"] == text + text
    assert m.filters.set_params["v"] == f"<{text}>"


def test_metadata_without_macros_keeps_yaml_types() -> None:
    m = one_model(
        "cmd: srv --port ${PORT}\nmetadata: {a: 1, b: 1.5, c: true, d: null, e: '$ {x}', f: '$x'}"
    )
    assert dict(m.metadata) == {"a": 1, "b": 1.5, "c": True, "d": None, "e": "$ {x}", "f": "$x"}


# -- ports ------------------------------------------------------------------------------------


PORT_CONFIGS = [
    ["llama-3-8b", "qwen2.5-coder-7b", "mistral-7b"],
    ["llama-3-8b", "qwen2.5-coder-7b", "mistral-7b", "phi-3-mini", "gemma-2-9b"],
    ["qwen2.5-coder-7b", "gemma-2-9b"],
    ["gemma-2-9b", "mistral-7b", "nomic-embed", "llama-3-8b", "deepseek-r1", "whisper-large"],
    ["deepseek-r1"],
    ["whisper-large", "reranker", "qwen3-30b", "phi-3-mini", "llama-3-8b"],
    [
        "llama-3-8b",
        "qwen2.5-coder-7b",
        "mistral-7b",
        "phi-3-mini",
        "gemma-2-9b",
        "nomic-embed",
        "deepseek-r1",
        "whisper-large",
        "qwen3-30b",
        "reranker",
    ],
]


@pytest.mark.parametrize("model_ids", PORT_CONFIGS)
@pytest.mark.parametrize("start_port", [5800, 20000, 1, 64535])
def test_ports_in_range_and_distinct(model_ids: list[str], start_port: int) -> None:
    ports = ports_of(model_ids, start_port)
    assert set(ports) == set(model_ids)
    values = [p for p in ports.values() if p is not None]
    assert len(values) == len(model_ids)
    assert len(set(values)) == len(values)
    assert all(start_port <= p < start_port + PORT_SPAN for p in values)


def test_models_keep_their_port_when_others_are_added_or_removed() -> None:
    seen: dict[str, int] = {}
    for model_ids in PORT_CONFIGS:
        for order in (model_ids, list(reversed(model_ids))):
            for mid, port in ports_of(order).items():
                assert port is not None
                assert seen.setdefault(mid, port) == port, f"{mid} moved in {order}"
    assert len(seen) == 10


def test_port_offset_is_independent_of_start_port() -> None:
    ids = PORT_CONFIGS[-1]
    low, high = ports_of(ids, 5800), ports_of(ids, 30000)
    for mid in ids:
        assert high[mid] - 30000 == low[mid] - 5800  # type: ignore[operator]


def test_models_without_port_do_not_disturb_the_others() -> None:
    plain = ports_of(["llama-3-8b", "mistral-7b"])
    config = load_text(
        """\
        models:
          remote-a:
            cmd: ssh gpu-box run-a
            proxy: http://gpu-box:9000
          llama-3-8b:
            cmd: srv --port ${PORT}
          remote-b:
            cmd: ssh gpu-box run-b
            proxy: https://gpu-box:9001/v1
          mistral-7b:
            cmd: srv --port ${PORT}
        """
    )
    assert config.models["remote-a"].port is None
    assert config.models["remote-b"].port is None
    assert config.models["remote-a"].proxy == "http://gpu-box:9000"
    assert config.models["llama-3-8b"].port == plain["llama-3-8b"]
    assert config.models["mistral-7b"].port == plain["mistral-7b"]


@pytest.mark.parametrize(
    ("body", "has_port"),
    [
        ("cmd: srv --port ${PORT}", True),
        ("cmd: srv\nproxy: http://127.0.0.1:9999", False),
        ("cmd: srv --port 9999\nproxy: http://127.0.0.1:9999", False),
        ("cmd: srv --port ${PORT}\nproxy: http://127.0.0.1:${PORT}/v1", True),
        ("cmd: srv --port ${PORT}\nproxy: http://127.0.0.1:9999", True),
        ("cmd: srv --port ${PORT}\ncmdStop: stop ${PORT}", True),
        ("cmd: srv --port ${PORT}\ncheckEndpoint: /h/${PORT}", True),
    ],
)
def test_which_models_get_a_port(body: str, has_port: bool) -> None:
    # llama-swap's rule: a model has a port exactly when its cmd uses ${PORT}.
    m = one_model(body)
    assert (m.port is not None) == has_port
    if has_port:
        assert m.port is not None
        assert 5800 <= m.port < 5800 + PORT_SPAN


DEFAULT_PROXY_NEEDS_PORT = (
    "not set, and the default http://127.0.0.1:${PORT} needs ${PORT} in models.m.cmd: "
    "set proxy to the URL the server listens on, or pass --port ${PORT} in cmd"
)
PORT_WITHOUT_CMD = "uses ${PORT}, which exists only when models.m.cmd uses it"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("cmd: srv", [(2, "models.m.proxy", DEFAULT_PROXY_NEEDS_PORT)]),
        ("cmd: srv --port 8080", [(2, "models.m.proxy", DEFAULT_PROXY_NEEDS_PORT)]),
        (
            "cmd: srv\nproxy: http://127.0.0.1:${PORT}/v1",
            [
                (
                    4,
                    "models.m.proxy",
                    "uses ${PORT} but models.m.cmd does not, so the server would not listen there",
                )
            ],
        ),
        (
            "cmd: srv\nproxy: http://h:1\ncmdStop: stop ${PORT}",
            [(5, "models.m.cmdStop", PORT_WITHOUT_CMD)],
        ),
        (
            "cmd: srv\nproxy: http://h:1\ncheckEndpoint: /h/${PORT}",
            [(5, "models.m.checkEndpoint", PORT_WITHOUT_CMD)],
        ),
        (
            "cmd: srv\nproxy: http://h:1\nmetadata:\n  port: ${PORT}",
            [(6, "models.m.metadata.port", PORT_WITHOUT_CMD)],
        ),
        (
            "cmd: srv\nproxy: http://h:1\nenv: ['P=${PORT}']",
            [(5, "models.m.env[0]", PORT_WITHOUT_CMD)],
        ),
    ],
)
def test_port_exists_only_where_cmd_uses_it(body: str, expected: list[Problem]) -> None:
    assert problems_of(model_yaml(body)) == expected


def test_port_outside_a_model_is_an_error() -> None:
    assert problems_of("apiKeys: ['${PORT}']\n" + MINIMAL) == [
        (1, "apiKeys[0]", "${PORT} is only available inside a model")
    ]


def test_explicit_proxy_with_port_macro_is_substituted() -> None:
    m = one_model("cmd: srv --port ${PORT}\nproxy: http://127.0.0.1:${PORT}/v1/")
    assert m.proxy == f"http://127.0.0.1:{m.port}/v1"


def test_port_reached_through_a_macro_gets_a_port() -> None:
    # Whether cmd uses ${PORT} is decided after the other macros are expanded.
    config = load_text(
        """\
        macros:
          upstream: http://127.0.0.1:${PORT}
          serve: llama-server --port ${PORT}
        models:
          a:
            cmd: ${serve} -m a.gguf
            proxy: ${upstream}
        """
    )
    m = config.models["a"]
    assert m.port is not None
    assert m.proxy == f"http://127.0.0.1:{m.port}"
    assert m.cmd == ("llama-server", "--port", str(m.port), "-m", "a.gguf")


def test_more_models_than_ports_is_a_config_error() -> None:
    fits = "models:\n" + "".join(
        f"  m{i}:\n    cmd: srv --port ${{PORT}}\n" for i in range(PORT_SPAN)
    )
    assert len(loads(fits, FILE, environ={}).models) == PORT_SPAN
    too_many = fits + f"  m{PORT_SPAN}:\n    cmd: srv --port ${{PORT}}\n"
    assert problems_of(too_many) == [
        (1, "models", f"{PORT_SPAN + 1} models use ${{PORT}}, but startPort gives only 1000 ports")
    ]


# -- resolve ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("alpha", "alpha"),
        ("beta", "beta"),
        ("gpt-4o", "alpha"),
        ("gpt-4o-mini", "alpha"),
        ("coder", "beta"),
        ("gamma", None),
        ("", None),
        ("ALPHA", None),
        ("gpt-4o ", None),
    ],
)
def test_resolve(name: str, expected: str | None) -> None:
    config = load_text(
        """\
        models:
          alpha:
            cmd: srv --port ${PORT}
            aliases: [gpt-4o, gpt-4o-mini]
          beta:
            cmd: srv --port ${PORT}
            aliases:
              - coder
        """
    )
    assert config.resolve(name) == expected
    assert dict(config.aliases) == {"gpt-4o": "alpha", "gpt-4o-mini": "alpha", "coder": "beta"}


# -- bad configs ------------------------------------------------------------------------------

EMPTY_FILE = "the file is empty; it needs at least a 'models:' section"
NOT_A_MAPPING = "the top level must be a mapping of keys"
# Three lines: model `a`, started on a port of trioswap's choosing.
A = "models:\n  a:\n    cmd: x --port ${PORT}\n"

BAD_CONFIGS: list[Any] = [
    pytest.param(
        "models:\n  a: [unclosed\n",
        [(3, "", "invalid YAML: expected ',' or ']', but got '<stream end>'")],
        id="yaml-unclosed-flow",
    ),
    pytest.param(
        "models:\n  a:\n    cmd: x\n   bad: y\n",
        [(4, "", "invalid YAML: expected <block end>, but found '<block mapping start>'")],
        id="yaml-bad-indent",
    ),
    pytest.param(
        "models:\n\ta: 1\n",
        [(2, "", "invalid YAML: found character '\\t' that cannot start any token")],
        id="yaml-tab",
    ),
    pytest.param(
        "models:\n  a:\n    cmd: !foo x\n",
        [(3, "", "invalid YAML: could not determine a constructor for the tag '!foo'")],
        id="yaml-unknown-tag",
    ),
    pytest.param("", [(None, "", EMPTY_FILE)], id="empty-file"),
    pytest.param("# just a comment\n\n", [(None, "", EMPTY_FILE)], id="comments-only"),
    pytest.param(
        A + "    cmd: y\n",
        [(4, "", "invalid YAML: duplicate key 'cmd'")],
        id="duplicate-key",
    ),
    pytest.param(
        A + "  b:\n    cmd: y\n  a:\n    cmd: z\n",
        [(6, "", "invalid YAML: duplicate key 'a'")],
        id="duplicate-model-id",
    ),
    pytest.param(
        "healthCheckTimeout: soon\n" + A,
        [(1, "healthCheckTimeout", "must be a number, not the string 'soon'")],
        id="string-for-number",
    ),
    pytest.param(
        A + "    ttl: '5 minutes'\n",
        [(4, "models.a.ttl", "must be a number, not the string '5 minutes'")],
        id="quoted-non-number",
    ),
    pytest.param(
        "startPort: 5800.5\n" + A,
        [(1, "startPort", "must be an integer, not the number 5800.5")],
        id="float-for-integer",
    ),
    pytest.param(
        A + "    concurrencyLimit: [2]\n",
        [(4, "models.a.concurrencyLimit", "must be an integer, not a list")],
        id="list-for-integer",
    ),
    pytest.param(
        A + "    unlisted: maybe\n",
        [(4, "models.a.unlisted", "must be true or false, not the string 'maybe'")],
        id="string-for-bool",
    ),
    pytest.param(
        A + "    metadata: [1, 2]\n",
        [(4, "models.a.metadata", "must be a mapping, not a list")],
        id="list-for-mapping",
    ),
    pytest.param(
        "macros: [a, b]\n" + A,
        [(1, "macros", "must be a mapping, not a list")],
        id="macros-list",
    ),
    pytest.param(
        "models: [a, b]\n",
        [(1, "models", "must be a mapping, not a list")],
        id="models-list",
    ),
    pytest.param(
        "models:\n  a: srv --port 1\n",
        [(2, "models.a", "must be a mapping, not the string 'srv --port 1'")],
        id="model-is-a-string",
    ),
    pytest.param("- models\n", [(1, "", NOT_A_MAPPING)], id="root-is-a-list"),
    pytest.param("hello\n", [(1, "", NOT_A_MAPPING)], id="root-is-a-string"),
    pytest.param(
        A + "    aliases: b\n",
        [(4, "models.a.aliases", "must be a list, not the string 'b'")],
        id="string-for-list",
    ),
    pytest.param(
        A + "    env: {A: b}\n",
        [(4, "models.a.env", "must be a list, not a mapping")],
        id="mapping-for-list",
    ),
    pytest.param(
        A + "    aliases:\n      - ok\n      - {b: 1}\n      - true\n",
        [
            (6, "models.a.aliases[1]", "must be a string, not a mapping"),
            (7, "models.a.aliases[2]", "must be a string, not the boolean true"),
        ],
        id="bad-list-items",
    ),
    pytest.param("models:\n  a: {ttl: 5}\n", [(2, "models.a.cmd", "required")], id="missing-cmd"),
    pytest.param(
        "models:\n  a:\n    cmd: ''\n", [(3, "models.a.cmd", "must not be empty")], id="empty-cmd"
    ),
    pytest.param(
        "models:\n  a:\n    cmd: [srv, -m, x]\n",
        [(3, "models.a.cmd", "must be a string, not a list")],
        id="cmd-not-a-string",
    ),
    pytest.param(
        "models:\n  a:\n    cmd: |\n      # only a comment\n",
        [(3, "models.a.cmd", "must not be empty")],
        id="cmd-only-comments",
    ),
    pytest.param(
        "models:\n  a:\n    cmd: ' '\n",
        [(3, "models.a.cmd", "the command is empty")],
        id="cmd-blank",
    ),
    pytest.param(
        "models:\n  a:\n    cmd: srv --port ${PORT} 'unterminated\n",
        [(3, "models.a.cmd", "cannot split into arguments: No closing quotation")],
        id="cmd-unbalanced-quote",
    ),
    pytest.param(
        A + "    cmdStop: ' '\n",
        [(4, "models.a.cmdStop", "the command is empty")],
        id="blank-cmd-stop",
    ),
    pytest.param(
        "macros:\n  model_path: /m\nmodels:\n  a:\n    cmd: srv ${model_pth} --port ${PORT}\n",
        [(5, "models.a.cmd", "unknown macro ${model_pth} (did you mean 'model_path'?)")],
        id="unknown-macro-did-you-mean",
    ),
    pytest.param(
        A + "    metadata:\n      k: ${nope}\n",
        [(5, "models.a.metadata.k", "unknown macro ${nope}")],
        id="unknown-macro-in-metadata",
    ),
    pytest.param(
        A + "    filters:\n      setParams: {t: '${nope}'}\n",
        [(5, "models.a.filters.setParams.t", "unknown macro ${nope}")],
        id="unknown-macro-in-set-params",
    ),
    pytest.param(
        "models:\n  a:\n    cmd: srv ${} --port ${PORT}\n",
        [(3, "models.a.cmd", "unknown macro ${}")],
        id="empty-macro-name",
    ),
    pytest.param(
        "models:\n  a:\n    cmd: srv --key ${env.HF_TOKEN} --port ${PORT}\n",
        [
            (
                3,
                "models.a.cmd",
                "environment variable 'HF_TOKEN' is not set (used as ${env.HF_TOKEN})",
            )
        ],
        id="unset-env-var",
    ),
    pytest.param(
        "macros:\n  tok: ${env.HF_TOKEN}\nmodels:\n  a:\n    cmd: x --port ${PORT}\n"
        "    env: ['T=${tok}']\n",
        [
            (
                6,
                "models.a.env[0]",
                "environment variable 'HF_TOKEN' is not set (used as ${env.HF_TOKEN})",
            )
        ],
        id="unset-env-var-through-macro",
    ),
    pytest.param(
        "models:\n  a:\n    cmd: srv --pid ${PID} --port ${PORT}\n",
        [(3, "models.a.cmd", "${PID} is only available in cmdStop")],
        id="pid-in-cmd",
    ),
    pytest.param(
        "models:\n  a:\n    cmd: x\n    proxy: http://h:1/${PID}\n",
        [(4, "models.a.proxy", "${PID} is only available in cmdStop")],
        id="pid-in-proxy",
    ),
    pytest.param(
        A + "    checkEndpoint: ${PID}\n",
        [(4, "models.a.checkEndpoint", "${PID} is only available in cmdStop")],
        id="pid-in-check-endpoint",
    ),
    pytest.param(
        A + "    env: ['P=${PID}']\n",
        [(4, "models.a.env[0]", "${PID} is only available in cmdStop")],
        id="pid-in-env",
    ),
    pytest.param(
        A + "    metadata: {p: '${PID}'}\n",
        [(4, "models.a.metadata.p", "${PID} is only available in cmdStop")],
        id="pid-in-metadata",
    ),
    pytest.param(
        "macros:\n  a: x ${b}\n  b: y ${a}\nmodels:\n  m:\n    cmd: srv ${a} --port ${PORT}\n",
        [(6, "models.m.cmd", "macro ${b} expands recursively without end")],
        id="recursive-macro",
    ),
    pytest.param(
        A + "    aliases: [shared]\n  b:\n    cmd: y --port ${PORT}\n    aliases: [shared]\n",
        [(7, "models.b.aliases[0]", "alias 'shared' is also an alias of 'a'")],
        id="duplicate-alias",
    ),
    pytest.param(
        A + "    aliases: [b]\n  b:\n    cmd: y --port ${PORT}\n",
        [(4, "models.a.aliases[0]", "alias 'b' is already a model id")],
        id="alias-is-a-model-id",
    ),
    pytest.param(
        A + "    aliases: [a]\n",
        [(4, "models.a.aliases[0]", "alias 'a' is already a model id")],
        id="alias-is-own-id",
    ),
    pytest.param(
        A + "routing:\n  router:\n    settings:\n      groups:\n"
        "        g1:\n          members: [a]\n        g2:\n          members:\n            - a\n",
        [
            (
                12,
                "routing.router.settings.groups.g2.members[0]",
                "model 'a' is already in group 'g1'",
            )
        ],
        id="model-in-two-groups",
    ),
    pytest.param(
        A + "routing:\n  router:\n    settings:\n      groups:\n        g:\n"
        "          members: [a, a]\n",
        [(9, "routing.router.settings.groups.g.members[1]", "model 'a' is listed twice")],
        id="model-twice-in-a-group",
    ),
    pytest.param(
        A + "routing:\n  router:\n    settings:\n      groups:\n        g: {swap: false}\n",
        [(8, "routing.router.settings.groups.g.members", "required")],
        id="group-without-members",
    ),
    pytest.param(
        A + "routing:\n  router:\n    settings:\n      groups:\n        g:\n"
        "          members: [a]\n          swap: maybe\n",
        [
            (
                10,
                "routing.router.settings.groups.g.swap",
                "must be true or false, not the string 'maybe'",
            )
        ],
        id="group-bad-bool",
    ),
    pytest.param(
        A + "routing:\n  router:\n    settings:\n      groups: [a]\n",
        [(7, "routing.router.settings.groups", "must be a mapping, not a list")],
        id="groups-list",
    ),
    pytest.param(
        A + "hooks:\n  on_startup:\n    preload: a\n",
        [(6, "hooks.on_startup.preload", "must be a list, not the string 'a'")],
        id="preload-not-a-list",
    ),
    pytest.param(
        "logLevel: warning\n" + A,
        [
            (
                1,
                "logLevel",
                "must be one of debug, info, warn, error, not the string 'warning'"
                " (did you mean 'warn'?)",
            )
        ],
        id="bad-log-level",
    ),
    pytest.param(
        "logLevel: verbose\n" + A,
        [(1, "logLevel", "must be one of debug, info, warn, error, not the string 'verbose'")],
        id="bad-log-level-no-suggestion",
    ),
    pytest.param(
        A + "    promptOptimization: alway\n",
        [
            (
                4,
                "models.a.promptOptimization",
                "must be one of off, limit_only, always, llm_assisted, not the string 'alway'"
                " (did you mean 'always'?)",
            )
        ],
        id="bad-truncation-mode",
    ),
    pytest.param(
        "models:\n  a:\n    cmd: x\n    proxy: ftp://host:21\n",
        [(4, "models.a.proxy", "must be an http:// or https:// URL, not 'ftp://host:21'")],
        id="bad-proxy-scheme",
    ),
    pytest.param(
        "models:\n  a:\n    cmd: x\n    proxy: localhost:8080\n",
        [(4, "models.a.proxy", "must be an http:// or https:// URL, not 'localhost:8080'")],
        id="bad-proxy-no-scheme",
    ),
    pytest.param(
        "models:\n  a:\n    cmd: x\n    proxy: 'http://'\n",
        [(4, "models.a.proxy", "must be an http:// or https:// URL, not 'http://'")],
        id="bad-proxy-no-host",
    ),
    pytest.param(
        "macros:\n  up: gpu-box:9000\nmodels:\n  a:\n    cmd: x\n    proxy: ${up}\n",
        [(6, "models.a.proxy", "must be an http:// or https:// URL, not 'gpu-box:9000'")],
        id="bad-proxy-after-macro",
    ),
    pytest.param(
        A + "    ttl: -2\n",
        [(4, "models.a.ttl", "must be at least -1, not -2")],
        id="ttl-below-minus-one",
    ),
    pytest.param(
        "globalTTL: -5\n" + A,
        [(1, "globalTTL", "must be at least 0, not -5")],
        id="negative-global-ttl",
    ),
    pytest.param(
        A + "    unloadTimeout: -0.5\n",
        [(4, "models.a.unloadTimeout", "must be at least 0, not -0.5")],
        id="negative-unload-timeout",
    ),
    pytest.param(
        "healthCheckTimeout: -1\n" + A,
        [(1, "healthCheckTimeout", "must be at least 0, not -1")],
        id="negative-health-check-timeout",
    ),
    pytest.param(
        A + "    concurrencyLimit: -1\n",
        [(4, "models.a.concurrencyLimit", "must be at least 0, not -1")],
        id="negative-concurrency-limit",
    ),
    pytest.param(
        "startPort: 0\n" + A,
        [(1, "startPort", "must be at least 1, not 0")],
        id="start-port-zero",
    ),
    pytest.param(
        "startPort: 65000\n" + A,
        [(1, "startPort", "must be at most 64535, not 65000")],
        id="start-port-too-high",
    ),
    pytest.param(
        "macros:\n  PORT: 8080\n" + A,
        [(2, "macros.PORT", "PORT is reserved and set by trioswap")],
        id="reserved-macro-port",
    ),
    pytest.param(
        "macros:\n  MODEL_ID: x\n" + A,
        [(2, "macros.MODEL_ID", "MODEL_ID is reserved and set by trioswap")],
        id="reserved-macro-model-id",
    ),
    pytest.param(
        A + "    macros:\n      PID: 1\n",
        [(5, "models.a.macros.PID", "PID is reserved and set by trioswap")],
        id="reserved-macro-pid-in-model",
    ),
    pytest.param(
        "macros:\n  'bad name': 1\n  'a.b': 2\n" + A,
        [
            (2, "macros.bad name", "macro names are 1-63 letters, digits, '_' and '-'"),
            (3, "macros.a.b", "macro names are 1-63 letters, digits, '_' and '-'"),
        ],
        id="bad-macro-names",
    ),
    pytest.param(
        "macros:\n  l: [1, 2]\n  m: {a: 1}\n  n:\n" + A,
        [
            (2, "macros.l", "a macro must be a string, number or boolean"),
            (3, "macros.m", "a macro must be a string, number or boolean"),
            (4, "macros.n", "a macro must be a string, number or boolean"),
        ],
        id="bad-macro-values",
    ),
    pytest.param(
        A + "    filters:\n      stripParams: {a: 1}\n",
        [(5, "models.a.filters.stripParams", "must be a list, not a mapping")],
        id="strip-params-mapping",
    ),
    pytest.param(
        A + "    filters:\n      stripParams:\n        - a\n        - {b: 1}\n",
        [(7, "models.a.filters.stripParams[1]", "must be a string, not a mapping")],
        id="strip-params-bad-item",
    ),
    pytest.param(
        "apiKeys: ['', '  ']\n" + A,
        [
            (1, "apiKeys[0]", "an API key must not be empty"),
            (1, "apiKeys[1]", "an API key must not be empty"),
        ],
        id="empty-api-keys",
    ),
    pytest.param(
        "apiKeys: sk-1\n" + A,
        [(1, "apiKeys", "must be a list, not the string 'sk-1'")],
        id="api-keys-not-a-list",
    ),
    pytest.param(
        "logLevel: info\n",
        [(1, "models", "at least one model (or peer, or ollama:) is required")],
        id="no-models",
    ),
    pytest.param(
        "models: {}\n",
        [(1, "models", "at least one model (or peer, or ollama:) is required")],
        id="empty-models",
    ),
    pytest.param(
        "models:\n  '':\n    cmd: x --port ${PORT}\n",
        [(2, "models.", "a model id must not be empty")],
        id="empty-model-id",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS)
def test_bad_config(text: str, expected: list[Problem]) -> None:
    assert problems_of(text) == expected


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS)
def test_bad_config_message_format(text: str, expected: list[Problem]) -> None:
    with pytest.raises(ConfigError) as info:
        loads(text, FILE, environ={})
    lines = str(info.value).splitlines()
    assert len(lines) == len(expected)
    for line, (lineno, key, message) in zip(lines, expected, strict=True):
        where = FILE if lineno is None else f"{FILE}:{lineno}"
        assert line == (f"{where}: {key}: {message}" if key else f"{where}: {message}")


# What llama-swap accepts (or ignores) trioswap accepts too, and says so; `strict` makes each of
# these an error (`warnings_of` checks that).
WARNING_CONFIGS: list[Any] = [
    pytest.param(
        "healthCheckTimout: 5\n" + A,
        [(1, "healthCheckTimout", "unknown key, ignored (did you mean 'healthCheckTimeout'?)")],
        id="unknown-top-key",
    ),
    pytest.param(
        A + "globalttl: 5\n",
        [(4, "globalttl", "unknown key, ignored (did you mean 'globalTTL'?)")],
        id="unknown-top-key-case",
    ),
    pytest.param(
        "frobnicate: 1\n" + A,
        [(1, "frobnicate", "unknown key, ignored")],
        id="unknown-top-key-no-suggestion",
    ),
    pytest.param(
        "modles:\n  b:\n    cmd: y\n" + A,
        [(1, "modles", "unknown key, ignored (did you mean 'models'?)")],
        id="unknown-key-with-a-block-value",
    ),
    pytest.param(
        A + "    ttll: 5\n",
        [(4, "models.a.ttll", "unknown key, ignored (did you mean 'ttl'?)")],
        id="unknown-model-key",
    ),
    pytest.param(
        A + "    check_endpoint: /h\n",
        [(4, "models.a.check_endpoint", "unknown key, ignored (did you mean 'checkEndpoint'?)")],
        id="unknown-model-key-snake-case",
    ),
    pytest.param(
        A + "    filters: {stripparams: a}\n",
        [
            (
                4,
                "models.a.filters.stripparams",
                "unknown key, ignored (did you mean 'stripParams'?)",
            )
        ],
        id="unknown-filters-key",
    ),
    pytest.param(
        A + "    timeouts:\n      responseHeadr: 5\n",
        [
            (
                5,
                "models.a.timeouts.responseHeadr",
                "unknown key, ignored (did you mean 'responseHeader'?)",
            )
        ],
        id="unknown-timeouts-key",
    ),
    pytest.param(
        A + "routing:\n  router:\n    settings:\n      groups:\n        g:\n"
        "          members: [a]\n          swp: false\n",
        [
            (
                10,
                "routing.router.settings.groups.g.swp",
                "unknown key, ignored (did you mean 'swap'?)",
            )
        ],
        id="unknown-group-key",
    ),
    pytest.param(
        A + "hooks:\n  on_start: {preload: [a]}\n",
        [(5, "hooks.on_start", "unknown key, ignored (did you mean 'on_startup'?)")],
        id="unknown-hooks-key",
    ),
    pytest.param(
        "cors: {origin: ['*']}\n" + A,
        [(1, "cors.origin", "unknown key, ignored (did you mean 'origins'?)")],
        id="unknown-cors-key",
    ),
    pytest.param(
        "models:\n  alpha:\n    cmd: x --port ${PORT}\nrouting:\n  router:\n    settings:\n"
        "      groups:\n        g:\n          members: [alpah]\n",
        [
            (
                9,
                "routing.router.settings.groups.g.members[0]",
                "unknown model 'alpah', ignored (did you mean 'alpha'?)",
            )
        ],
        id="group-member-unknown",
    ),
    pytest.param(
        "models:\n  alpha:\n    cmd: x --port ${PORT}\nhooks:\n  on_startup:\n"
        "    preload: [alpha, alpah]\n",
        [
            (
                6,
                "hooks.on_startup.preload[1]",
                "unknown model 'alpah', not preloaded (did you mean 'alpha'?)",
            )
        ],
        id="preload-unknown-model",
    ),
    pytest.param(
        A + "    env:\n      - NOEQUALS\n      - 1A=b\n      - A B=c\n      - =v\n",
        [
            (5, "models.a.env[0]", "not KEY=value, ignored: 'NOEQUALS'"),
            (6, "models.a.env[1]", "not KEY=value, ignored: '1A=b'"),
            (7, "models.a.env[2]", "not KEY=value, ignored: 'A B=c'"),
            (8, "models.a.env[3]", "not KEY=value, ignored: '=v'"),
        ],
        id="bad-env-entries",
    ),
    pytest.param(
        A + "    filters:\n      setParams: {model: other}\n",
        [
            (
                5,
                "models.a.filters.setParams.model",
                "ignored: the model name is set with useModelName",
            )
        ],
        id="set-params-model",
    ),
]


@pytest.mark.parametrize(("text", "expected"), WARNING_CONFIGS)
def test_warning(text: str, expected: list[Problem]) -> None:
    assert warnings_of(text) == expected


def test_ignored_values_are_not_used() -> None:
    config = loads(
        A
        + "    ttll: 5\n    env: [NOEQUALS, A=1]\n    filters:\n      setParams: {model: o, n: 1}\n"
        "hooks:\n  on_startup:\n    preload: [a, nope]\n",
        FILE,
        environ={},
    )
    a = config.models["a"]
    assert a.ttl == 0.0
    assert dict(a.env) == {"A": "1"}
    assert dict(a.filters.set_params) == {"n": 1}
    assert config.preload == ("a",)


def test_strict_in_the_file_makes_warnings_errors() -> None:
    text = "strict: true\n" + A + "    ttll: 5\n"
    assert problems_of(text) == [(5, "models.a.ttll", "unknown key, ignored (did you mean 'ttl'?)")]
    assert load_text("strict: false\n" + A).warnings == ()


@pytest.mark.parametrize("text", ["---\n", "null\n", "~\n", "--- # nothing\n...\n"])
def test_null_document_is_reported_as_empty(text: str) -> None:
    assert problems_of(text) == [(None, "", EMPTY_FILE)]


def test_two_documents_are_rejected() -> None:
    [(line, key, message)] = problems_of(A + "---\nmodels: {}\n")
    assert (line, key) == (4, "")
    assert message.startswith("invalid YAML:")
    assert "document" in message


def test_several_errors_reported_together_in_line_order() -> None:
    text = """\
        logLevel: loud
        models:
          a:
            cmd: srv ${nope} --port ${PORT}
            ttl: -2
            colour: red
          b:
            cmd: srv --port ${PORT}
            proxy: ftp://x
        startPort: 0
        """
    problems = problems_of(text)
    assert problems == [
        (1, "logLevel", "must be one of debug, info, warn, error, not the string 'loud'"),
        (4, "models.a.cmd", "unknown macro ${nope}"),
        (5, "models.a.ttl", "must be at least -1, not -2"),
        (9, "models.b.proxy", "must be an http:// or https:// URL, not 'ftp://x'"),
        (10, "startPort", "must be at least 1, not 0"),
    ]
    lines = [p[0] for p in problems]
    assert lines == sorted(lines)  # type: ignore[type-var]


def test_problem_str_format() -> None:
    assert str(ConfigProblem("f.yaml", 3, "models.a.ttl", "bad")) == "f.yaml:3: models.a.ttl: bad"
    assert str(ConfigProblem("f.yaml", None, "models", "bad")) == "f.yaml: models: bad"
    assert str(ConfigProblem("f.yaml", 7, "", "bad")) == "f.yaml:7: bad"
    assert str(ConfigProblem("f.yaml", None, "", "bad")) == "f.yaml: bad"
    error = ConfigError([ConfigProblem("f", 1, "a", "x"), ConfigProblem("f", 2, "b", "y")])
    assert str(error) == "f:1: a: x\nf:2: b: y"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "models:\n  a:\n    ttl: 5\n",
            (2, "models.a.cmd", "required"),
            id="missing-cmd",
        ),
        pytest.param(
            A + "routing:\n  router:\n    settings:\n      groups:\n        g:\n"
            "          swap: false\n",
            (8, "routing.router.settings.groups.g.members", "required"),
            id="group-without-members",
        ),
        pytest.param(
            A + "    metadata:\n      - 1\n",
            (4, "models.a.metadata", "must be a mapping, not a list"),
            id="wrong-type",
        ),
    ],
)
def test_problem_line_is_the_key_line_when_the_value_is_a_block(
    text: str, expected: Problem
) -> None:
    # A Node's line is where its *value* starts; for a block mapping/sequence the problem must
    # still point at the key, not at the key's first child.
    assert expected in problems_of(text)


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        pytest.param(
            A + "    metadata:\n      ok: 1\n      bad: ${nope}\n",
            "models.a.metadata.bad",
            6,
            id="metadata-entry",
        ),
        pytest.param(
            A + "    filters:\n      setParams:\n        ok: 1\n        bad: ${nope}\n",
            "models.a.filters.setParams.bad",
            7,
            id="set-params-entry",
        ),
        pytest.param(
            A + "    aliases: [x]\n  b:\n    cmd: y --port ${PORT}\n    aliases:\n"
            "      - z\n      - x\n",
            "models.b.aliases[1]",
            9,
            id="alias-entry",
        ),
        pytest.param(
            "apiKeys:\n  - good\n  - ''\n" + A,
            "apiKeys[1]",
            3,
            id="api-key-entry",
        ),
    ],
)
def test_problem_line_is_the_offending_entry(text: str, key: str, line: int) -> None:
    [problem] = problems_of(text)
    assert problem[1] == key
    assert problem[0] == line, problem


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f", "\x9f", "\ufffe"])
def test_unprintable_characters_are_a_config_error(char: str) -> None:
    # PyYAML checks printable characters when its loader is built, outside its parse errors.
    text = f"models:\n  a:\n    cmd: srv{char} --port ${{PORT}}\n"
    with pytest.raises(ConfigError) as info:
        loads(text, FILE, environ={})
    [problem] = info.value.problems
    assert problem.key == ""
    assert problem.message.startswith("invalid YAML:")
    assert problem.line == 3


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(A + "    metadata: &loop\n      self: *loop\n", id="map-alias"),
        pytest.param(A + "    metadata: {l: &l [*l]}\n", id="list-alias"),
        pytest.param(
            A + "    metadata: {k: " + "[" * 800 + "]" * 800 + "}\n",
            id="deep-nesting",
        ),
    ],
)
def test_recursive_or_too_deep_yaml_is_a_config_error(text: str) -> None:
    # Recursive aliases would be followed forever, and deep nesting overflows PyYAML's composer.
    with pytest.raises(ConfigError) as info:
        loads(text, FILE, environ={})
    assert all(p.message.startswith("invalid YAML:") for p in info.value.problems)


def test_yaml_merge_keys_let_explicit_keys_override() -> None:
    config = load_text(
        """\
        models:
          a: &base
            cmd: srv --port ${PORT}
            ttl: 5
            unlisted: true
          b:
            <<: *base
            ttl: 10
        """
    )
    assert config.models["b"].ttl == 10.0
    assert config.models["b"].unlisted is True
    assert config.models["b"].cmd == ("srv", "--port", str(config.models["b"].port))
    assert config.models["a"].ttl == 5.0


def test_yaml_merge_keys_without_override() -> None:
    config = load_text(
        """\
        models:
          a: &base
            cmd: srv
            proxy: http://127.0.0.1:9999
            ttl: 5
          b:
            <<: *base
            aliases: [bee]
        """
    )
    assert config.models["b"].ttl == 5.0
    assert config.models["b"].cmd == ("srv",)
    assert config.resolve("bee") == "b"


def test_policy_off_unquoted() -> None:
    # YAML 1.1 reads a bare `off` as the boolean false; `promptOptimization: off` still means off.
    model = one_model("cmd: srv --port ${PORT}\npromptOptimization: off")
    assert model.prompt_optimization == "off"


def test_policy_default_is_global_then_limit_only() -> None:
    assert one_model("cmd: srv --port ${PORT}").prompt_optimization == "limit_only"
    config = loads(
        "promptOptimization: always\nmodels:\n  a:\n    cmd: srv --port ${PORT}\n"
        "  b:\n    cmd: srv --port ${PORT}\n    promptOptimization: 'off'\n"
    )
    assert config.models["a"].prompt_optimization == "always"
    assert config.models["b"].prompt_optimization == "off"


@pytest.mark.parametrize("policy", POLICIES)
def test_policy_written_as_truncation_mode_is_taken_with_a_warning(policy: str) -> None:
    config = loads(f"models:\n  a:\n    cmd: srv --port ${{PORT}}\n    truncationMode: {policy}\n")
    model = config.models["a"]
    assert (model.prompt_optimization, model.truncation_mode) == (policy, None)
    [warning] = config.warnings
    assert (warning.line, warning.key) == (4, "models.a.truncationMode")
    assert f"write promptOptimization: {policy}" in warning.message


def test_pid_through_a_macro_in_cmd_stop() -> None:
    config = load_text(
        """\
        macros:
          graceful-stop: kill -INT ${PID}
        models:
          a:
            cmd: srv --port ${PORT}
            cmdStop: ${graceful-stop}
        """
    )
    m = config.models["a"]
    assert m.cmd_stop == ("kill", "-INT", "${PID}")
    assert m.stop_command(42) == ("kill", "-INT", "42")


def test_pid_through_a_macro_in_cmd_is_still_an_error() -> None:
    problems = problems_of(
        """\
        macros:
          graceful-stop: kill -INT ${PID}
        models:
          a:
            cmd: srv ${graceful-stop} --port ${PORT}
        """
    )
    assert problems == [(5, "models.a.cmd", "${PID} is only available in cmdStop")]


# -- load() from a file -----------------------------------------------------------------------


def test_load_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(cfg(MINIMAL), encoding="utf-8")
    config = load(path)
    assert config.path == str(path)
    assert list(config.models) == ["m"]


def test_load_problems_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(A + "    ttl: -2\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert str(info.value) == f"{path}:4: models.a.ttl: must be at least -1, not -2"


def test_load_warnings_name_the_file_and_strict_makes_them_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(A + "    ttll: 5\n", encoding="utf-8")
    expected = f"{path}:4: models.a.ttll: unknown key, ignored (did you mean 'ttl'?)"
    assert [str(w) for w in load(path).warnings] == [expected]
    with pytest.raises(ConfigError) as info:
        load(path, strict=True)
    assert str(info.value) == expected


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        load(path)
    [problem] = info.value.problems
    assert (problem.file, problem.line, problem.key) == (str(path), None, "")
    assert problem.message == "cannot read: No such file or directory"


def test_load_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"models:\n  caf\xe9:\n    cmd: x\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert [(p.line, p.message) for p in info.value.problems] == [(None, "not UTF-8 text")]


# -- redacted ---------------------------------------------------------------------------------


REDACT_CONFIG = """\
    apiKeys: [sk-top-secret-1, '${env.PROXY_KEY}']
    models:
      a:
        cmd: srv --port ${PORT} --alias "two words"
        cmdStop: kill ${PID}
        checkEndpoint: none
        aliases: [first]
        env:
          - OPENAI_API_KEY=sk-env-secret-2
          - HF_TOKEN=hf-secret-3
          - CLIENT_SECRET=secret-4
          - DB_PASSWORD=secret-5
          - api_key=secret-6
          - CUDA_VISIBLE_DEVICES=0
          - HOME=/home/me
        metadata: {family: llama}
        filters:
          stripParams: top_p
          setParams: {temperature: 0.5}
      remote:
        cmd: ssh gpu run
        proxy: http://gpu:9000
        ttl: -1
    routing:
      router:
        settings:
          groups:
            g:
              members: [a, remote]
    hooks:
      on_startup:
        preload: [first]
    """


def redacted_config() -> tuple[Config, dict[str, Any]]:
    config = load_text(REDACT_CONFIG, environ={"PROXY_KEY": "sk-from-env-7"})
    return config, redacted(config)


def redacted_env(data: dict[str, Any], model: str) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in data["models"][model]["env"])


def test_redacted_hides_api_keys() -> None:
    config, data = redacted_config()
    assert config.api_keys == ("sk-top-secret-1", "sk-from-env-7")
    assert data["apiKeys"] == ["***", "***"]


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("OPENAI_API_KEY", False),
        ("HF_TOKEN", False),
        ("CLIENT_SECRET", False),
        ("DB_PASSWORD", False),
        ("api_key", False),
        ("CUDA_VISIBLE_DEVICES", True),
        ("HOME", True),
    ],
)
def test_redacted_hides_secret_env_values(name: str, shown: bool) -> None:
    config, data = redacted_config()
    value = config.models["a"].env[name]
    assert redacted_env(data, "a")[name] == (value if shown else "***")


def test_redacted_leaks_no_secret_anywhere() -> None:
    _, data = redacted_config()
    text = json.dumps(data)
    for secret in (
        "sk-top-secret-1",
        "sk-env-secret-2",
        "hf-secret-3",
        "secret-4",
        "secret-5",
        "secret-6",
        "sk-from-env-7",
    ):
        assert secret not in text


def test_redacted_shape() -> None:
    # The config as trioswap understands it, in the file's keys: defaults filled in, macros and
    # ports substituted, inherited values resolved.
    config, data = redacted_config()
    a = config.models["a"]
    assert json.loads(json.dumps(data)) == data
    assert data["healthCheckTimeout"] == 120.0
    assert data["startPort"] == 5800
    assert data["logLevel"] == "info"
    assert data["hooks"] == {"on_startup": {"preload": ["first"]}}
    assert data["routing"]["router"]["settings"]["groups"] == {
        "g": {"swap": True, "exclusive": True, "persistent": False, "members": ["a", "remote"]}
    }
    assert "groups" not in data
    model = data["models"]["a"]
    assert model["cmd"] == f"srv --port {a.port} --alias 'two words'"
    assert model["cmdStop"] == "kill '${PID}'"
    assert model["checkEndpoint"] == "none"
    assert model["proxy"] == a.proxy == f"http://127.0.0.1:{a.port}"
    assert model["aliases"] == ["first"]
    assert model["metadata"] == {"family": "llama"}
    assert model["filters"]["stripParams"] == "top_p"
    assert model["filters"]["setParams"] == {"temperature": 0.5}
    remote = data["models"]["remote"]
    assert remote["cmd"] == "ssh gpu run"
    assert remote["proxy"] == "http://gpu:9000"
    assert remote["checkEndpoint"] == "/health"
    assert remote["ttl"] == 0.0  # -1 in the file: globalTTL
    assert remote["unloadTimeout"] == 10.0
    assert remote["timeouts"]["connect"] == 30.0
    assert remote["timeouts"]["responseHeader"] == 600.0


def test_redacted_is_json_serializable_with_yaml_timestamps() -> None:
    # YAML turns `2024-05-01` into a datetime.date, which json.dumps (as `trioswap validate
    # --json` uses it) cannot write.
    config = load_text(
        A + "    metadata: {released: 2024-05-01}\n"
        "    filters: {setParams: {since: 2024-05-01 10:00:00}}\n"
    )
    data = json.loads(json.dumps(redacted(config)))
    assert data["models"]["a"]["metadata"] == {"released": "2024-05-01"}


def test_redacted_hides_secret_command_line_arguments() -> None:
    config = load_text(
        "models:\n  m:\n    cmd: srv --api-key sk-1 --port 1 --hf-token=abc -m x\n"
        "    proxy: http://127.0.0.1:1\n"
    )
    assert redacted(config)["models"]["m"]["cmd"] == (
        "srv --api-key '***' --port 1 '--hf-token=***' -m x"
    )


# -- command line -----------------------------------------------------------------------------


GOOD_CLI_CONFIG = """\
apiKeys: [sk-cli-secret]
models:
  a:
    cmd: srv --port ${PORT}
    env: [HF_TOKEN=hf-cli-secret]
    aliases: [alpha]
"""

WARNING_CLI_CONFIG = """\
models:
  a:
    cmd: srv --port ${PORT}
    ttl: 5
    colour: red
"""

BAD_CLI_CONFIG = """\
models:
  a:
    cmd: srv --port ${PORT}
    ttl: -2
    colour: red
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_cli_validate_good_file(tmp_path: Path) -> None:
    path = write(tmp_path, "good.yaml", GOOD_CLI_CONFIG)
    result = run_trioswap("validate", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "OK: 1 model, 0 warnings\n"
    assert result.stderr == ""


def test_cli_validate_json(tmp_path: Path) -> None:
    path = write(tmp_path, "good.yaml", GOOD_CLI_CONFIG)
    result = run_trioswap("validate", "--json", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["apiKeys"] == ["***"]
    assert data["models"]["a"]["env"] == ["HF_TOKEN=***"]
    assert data["models"]["a"]["aliases"] == ["alpha"]
    cmd = data["models"]["a"]["cmd"].split()
    assert cmd[:2] == ["srv", "--port"]
    assert 5800 <= int(cmd[2]) < 5800 + PORT_SPAN
    assert data["models"]["a"]["proxy"] == f"http://127.0.0.1:{cmd[2]}"
    assert "sk-cli-secret" not in result.stdout
    assert "hf-cli-secret" not in result.stdout


def test_cli_validate_prints_warnings_on_stderr(tmp_path: Path) -> None:
    path = write(tmp_path, "warn.yaml", WARNING_CLI_CONFIG)
    result = run_trioswap("validate", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "OK: 1 model, 1 warning\n"
    assert result.stderr.splitlines() == [
        f"warning: {path}:5: models.a.colour: unknown key, ignored"
    ]


def test_cli_validate_strict_makes_warnings_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "warn.yaml", WARNING_CLI_CONFIG)
    result = run_trioswap("validate", "--strict", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}:5: models.a.colour: unknown key, ignored",
        "invalid: 1 problem",
    ]


def test_cli_validate_bad_file(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", BAD_CLI_CONFIG)
    result = run_trioswap("validate", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"warning: {path}:5: models.a.colour: unknown key, ignored",
        f"{path}:4: models.a.ttl: must be at least -1, not -2",
        "invalid: 1 problem",
    ]


def test_cli_validate_shows_warnings_beside_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "both.yaml", "modles: 1\n" + BAD_CLI_CONFIG)
    for args, prefix in ((("validate",), "warning: "), (("--config",), "trioswap: warning: ")):
        result = run_trioswap(*args, str(path), cwd=tmp_path)
        assert result.returncode == 1
        assert (
            f"{prefix}{path}:1: modles: unknown key, ignored (did you mean 'models'?)"
            in result.stderr.splitlines()
        )
        assert f"{path}:5: models.a.ttl: must be at least -1, not -2" in result.stderr


def test_cli_validate_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    result = run_trioswap("validate", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{path}: cannot read: No such file or directory" in result.stderr


def test_cli_config_bad_file(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", BAD_CLI_CONFIG)
    result = run_trioswap("--config", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "trioswap: invalid config" in result.stderr
    assert f"{path}:4: models.a.ttl: must be at least -1, not -2" in result.stderr


def test_cli_config_strict_refuses_a_config_with_warnings(tmp_path: Path) -> None:
    path = write(tmp_path, "warn.yaml", WARNING_CLI_CONFIG)
    result = run_trioswap("--config", str(path), "--strict", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        "trioswap: invalid config",
        f"{path}:5: models.a.colour: unknown key, ignored",
    ]


def test_cli_validate_yaml_timestamp_has_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "dated.yaml", A + "    metadata: {released: 2024-05-01}\n")
    result = run_trioswap("validate", "--json", str(path), cwd=tmp_path)
    assert "Traceback" not in result.stderr
    assert result.returncode == 0
    assert json.loads(result.stdout)["models"]["a"]["metadata"] == {"released": "2024-05-01"}


# -- bundled demo -----------------------------------------------------------------------------


def test_demo_config_loads() -> None:
    path = demo_config_path()
    config = loads(
        path.read_text(encoding="utf-8"),
        str(path),
        environ={"TRIOSWAP_SELF": "python -m trioswap"},
        strict=True,
    )
    assert list(config.models) == ["alpha", "beta", "embedder"]
    assert config.health_check_timeout == 30.0
    assert config.start_port == 5800
    for mid, m in config.models.items():
        assert m.port is not None
        assert m.cmd[:8] == (
            "python",
            "-m",
            "trioswap",
            "responder",
            "--port",
            str(m.port),
            "--model-id",
            mid,
        )
        assert m.proxy == f"http://127.0.0.1:{m.port}"
    assert config.models["alpha"].ttl == 300.0
    assert config.models["embedder"].unlisted is True
    assert config.resolve("gpt-4o-mini") == "alpha"
    assert config.groups["chat"].members == ("alpha", "beta")
    assert config.groups["tools"] == GroupConfig(
        "tools", ("embedder",), swap=False, exclusive=False, persistent=True
    )
    assert len({m.port for m in config.models.values()}) == 3


def test_demo_config_needs_trioswap_self() -> None:
    path = demo_config_path()
    with pytest.raises(ConfigError) as info:
        loads(path.read_text(encoding="utf-8"), str(path), environ={})
    assert {p.message for p in info.value.problems} == {
        "environment variable 'TRIOSWAP_SELF' is not set (used as ${env.TRIOSWAP_SELF})"
    }


# -- never anything but ConfigError -----------------------------------------------------------

_KEYS = [
    "models",
    "cmd",
    "cmdStop",
    "proxy",
    "macros",
    "ttl",
    "aliases",
    "env",
    "groups",
    "members",
    "hooks",
    "on_startup",
    "preload",
    "filters",
    "stripParams",
    "setParams",
    "metadata",
    "apiKeys",
    "startPort",
    "checkEndpoint",
    "logLevel",
    "routing",
    "router",
    "settings",
    "peers",
    "timeouts",
    "strict",
    "a",
    "b",
    "<<",
    "? x",
]
_VALUES = [
    "x",
    "${PORT}",
    "${PID}",
    "${env.X}",
    "${a}",
    "${MODEL_ID}",
    "${",
    "${}",
    "1",
    "-1",
    "1.5",
    "true",
    "null",
    "[a, b]",
    "{a: 1}",
    "&a",
    "*a",
    "&a x",
    "|",
    ">",
    "'q",
    '"s"',
    "http://h:1",
    "none",
    "2024-01-01",
    "!!binary aGk=",
    "!foo x",
    "A=b",
    "[",
    "{",
    "- x",
    "#c",
    "\\",
    "~",
    ".nan",
    "0x1F",
    "\t",
    "\x00",
    "\x07",
    "\ufeff",
]
_LINE = st.one_of(
    st.builds(
        lambda ind, k, v: " " * ind + k + ": " + v,
        st.integers(0, 8),
        st.sampled_from(_KEYS),
        st.sampled_from(_VALUES),
    ),
    st.builds(lambda ind, v: " " * ind + "- " + v, st.integers(0, 8), st.sampled_from(_VALUES)),
    st.text(max_size=20),
)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@example("models:\n  a:\n    cmd: srv\x00\n")
@example("models:\n  a:\n    cmd: x\n    metadata: &l [*l]\n")
@given(st.lists(_LINE, max_size=12).map("\n".join))
def test_yamlish_text_raises_only_config_error(text: str) -> None:
    try:
        config = loads(text, FILE, environ={"X": "1"})
    except ConfigError as exc:
        assert exc.problems
        for p in exc.problems:
            assert p.file == FILE
            assert isinstance(p.message, str) and p.message
    else:
        assert all(p.file == FILE for p in config.warnings)
        json.dumps(redacted(config))


_SCHEMA_KEYS = [
    "healthCheckTimeout",
    "startPort",
    "logLevel",
    "globalTTL",
    "unloadTimeout",
    "includeAliasesInList",
    "macros",
    "apiKeys",
    "groups",
    "hooks",
    "sendLoadingState",
    "cmd",
    "cmdStop",
    "proxy",
    "checkEndpoint",
    "ttl",
    "aliases",
    "env",
    "unlisted",
    "useModelName",
    "name",
    "description",
    "metadata",
    "filters",
    "concurrencyLimit",
    "truncationMode",
    "members",
    "swap",
    "on_startup",
    "preload",
    "stripParams",
    "setParams",
    "routing",
    "router",
    "settings",
    "peers",
    "models",
    "timeouts",
    "connect",
    "setParamsByID",
    "capabilities",
    "compat",
    "a",
    "m",
    "PORT",
]
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 70000),
    st.floats(),
    st.sampled_from(
        [
            "x",
            "${PORT}",
            "${PID}",
            "${a}",
            "${env.X}",
            "${MODEL_ID}",
            "none",
            "http://h:1",
            "A=b",
            "m",
            "a",
            "debug",
            "always",
            "srv --port ${PORT}",
            "'",
            "${",
            "model",
            "a,b,model",
        ]
    ),
)
_VALUE = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(_SCHEMA_KEYS), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.dictionaries(st.sampled_from(_SCHEMA_KEYS), _VALUE, max_size=6),
    st.dictionaries(
        st.sampled_from(["m", "a", "b"]),
        st.dictionaries(st.sampled_from(_SCHEMA_KEYS), _VALUE, max_size=6),
        max_size=3,
    ),
)
def test_schema_shaped_yaml_raises_only_config_error(
    top: dict[str, Any], models: dict[str, Any]
) -> None:
    text = yaml.safe_dump({**top, "models": models})
    try:
        config = loads(text, FILE, environ={"X": "1"})
    except ConfigError as exc:
        assert exc.problems
    else:
        json.dumps(redacted(config))


# -- hardening keys ---------------------------------------------------------------------------


def test_hardening_defaults() -> None:
    config = load_text(MINIMAL)
    assert config.max_request_body == 256 * 1024 * 1024
    assert config.request_body_timeout == 60.0
    assert config.shutdown_timeout == 10.0
    assert config.listen_backlog == 1024
    assert config.cors_origins == ()
    assert config.allowed_hosts == ()
    model = config.models["m"]
    assert model.timeouts.connect == 30.0
    assert model.timeouts.response_header == 600.0


def test_hardening_keys_are_read() -> None:
    config = load_text(
        "maxRequestBodyMB: 0.5\nrequestBodyTimeout: 5\nshutdownTimeout: 0\nlistenBacklog: 4096\n"
        "cors:\n  origins: ['http://localhost:3000/', '*']\nallowedHosts: [My.Host]\n"
        "models:\n  m:\n    cmd: srv\n    proxy: http://127.0.0.1:1\n"
        "    timeouts: {connect: 0, responseHeader: 5, keepalive: 30, idleConn: 90}\n"
    )
    assert config.max_request_body == 512 * 1024
    assert config.request_body_timeout == 5.0
    assert config.shutdown_timeout == 0.0
    assert config.listen_backlog == 4096
    assert config.cors_origins == ("http://localhost:3000", "*")
    assert config.allowed_hosts == ("my.host",)
    timeouts = config.models["m"].timeouts
    assert timeouts.connect is None  # 0: no bound
    assert timeouts.response_header == 5.0
    shown = redacted(config)["models"]["m"]["timeouts"]
    assert (shown["connect"], shown["responseHeader"]) == (0, 5.0)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("maxRequestBodyMB: 0\n", "maxRequestBodyMB"),
        ("listenBacklog: 0\n", "listenBacklog"),
        ("shutdownTimeout: -1\n", "shutdownTimeout"),
        ("requestBodyTimeout: 0\n", "requestBodyTimeout"),
        ("allowedHosts: host\n", "allowedHosts"),
        ("cors: {origins: '*'}\n", "cors.origins"),
    ],
)
def test_hardening_keys_are_checked(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as caught:
        loads(text + "models:\n  m:\n    cmd: srv\n    proxy: http://127.0.0.1:1\n")
    assert [p.key for p in caught.value.problems] == [where]
    assert caught.value.problems[0].line == 1


def test_model_timeouts_are_checked() -> None:
    assert problems_of(A + "    timeouts:\n      responseHeader: -5\n") == [
        (5, "models.a.timeouts.responseHeader", "must be at least 0, not -5")
    ]


def test_with_port_rebuilds_the_model_for_another_port() -> None:
    config = load_text(
        "macros:\n  p: '--port ${PORT}'\n"
        "models:\n  m:\n    cmd: srv ${p}\n    env: ['MY_PORT=${PORT}']\n"
        "    checkEndpoint: /health?p=${PORT}\n"
    )
    model = config.models["m"]
    assert model.with_port is not None and model.port is not None
    other = model.with_port(model.port + 7)
    assert other.port == model.port + 7
    assert other.cmd == ("srv", "--port", str(model.port + 7))
    assert other.proxy == f"http://127.0.0.1:{model.port + 7}"
    assert other.env["MY_PORT"] == str(model.port + 7)
    assert other.check_endpoint == f"/health?p={model.port + 7}"
    assert other.aliases == model.aliases and other.ttl == model.ttl


def test_a_model_without_port_has_no_with_port() -> None:
    config = load_text("models:\n  m:\n    cmd: srv\n    proxy: http://127.0.0.1:9\n")
    assert config.models["m"].with_port is None
