"""The `ollama:` key and OLLAMA_HOST: whether discovery is on, and where Ollama is.

These read the process environment as trioswap does (`loads` without `environ`), set per test
with monkeypatch; the key's own values are cases in configs/cases/ollama*.yaml.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trioswap.config import POLICIES, Config, load, loads, redacted
from trioswap.errors import ConfigError

FILE = "cfg.yaml"
MODELS = "models:\n  a:\n    cmd: srv --port ${PORT}\n"
DEFAULT = "http://127.0.0.1:11434"


@pytest.fixture(autouse=True)
def no_ollama_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)


def read(top: str = "", *, strict: bool = True) -> Config:
    return loads(top + MODELS, FILE, strict=strict)


def test_no_key_and_no_ollama_host_is_off() -> None:
    config = read()
    assert config.ollama is None
    # `validate --json` must not print `ollama: null`: read back, that would turn discovery on.
    assert "ollama" not in config.document


def test_an_empty_ollama_host_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", " ")
    assert read().ollama is None


def test_ollama_host_alone_turns_discovery_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box:11500")
    config = read()
    assert config.ollama is not None
    assert (config.ollama.endpoint, config.ollama.source) == ("http://gpu-box:11500", "OLLAMA_HOST")
    assert config.ollama.refresh == 30.0
    assert redacted(config)["ollama"] == {
        "endpoint": "http://gpu-box:11500",
        "enabled": True,
        "refresh": 30.0,
    }


def test_a_config_file_reads_ollama_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OLLAMA_HOST", ":9999")
    path = tmp_path / "config.yaml"
    path.write_text(MODELS)
    ollama = load(path).ollama
    assert ollama is not None and ollama.endpoint == "http://127.0.0.1:9999"


@pytest.mark.parametrize(
    ("host", "endpoint"),
    [
        ("example:1234", "http://example:1234"),
        (":9999", "http://127.0.0.1:9999"),
        ("https://h", "https://h:443"),
        ("example", "http://example:11434"),
        ("0.0.0.0", DEFAULT),
    ],
)
def test_ollama_host_forms(monkeypatch: pytest.MonkeyPatch, host: str, endpoint: str) -> None:
    monkeypatch.setenv("OLLAMA_HOST", host)
    ollama = read().ollama
    assert ollama is not None and ollama.endpoint == endpoint


def test_the_keys_endpoint_beats_ollama_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "elsewhere:1234")
    ollama = read("ollama:\n  endpoint: http://gpu-box:11500/\n").ollama
    assert ollama is not None
    assert (ollama.endpoint, ollama.source) == ("http://gpu-box:11500", "config")


def test_the_key_without_endpoint_takes_ollama_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "elsewhere:1234")
    ollama = read("ollama:\n  refresh: 10s\n").ollama
    assert ollama is not None
    assert (ollama.endpoint, ollama.source, ollama.refresh) == (
        "http://elsewhere:1234",
        "OLLAMA_HOST",
        10.0,
    )


def test_enabled_false_beats_ollama_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box")
    assert read("ollama:\n  enabled: false\n").ollama is None


def test_a_bad_ollama_host_warns_and_the_default_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box:99999")
    config = read(strict=False)
    assert config.ollama is not None
    assert (config.ollama.endpoint, config.ollama.source) == (DEFAULT, "default")
    (warning,) = config.warnings
    assert (warning.file, warning.line, warning.key) == (FILE, None, "")
    assert "OLLAMA_HOST='gpu-box:99999'" in warning.message
    assert f"the default {DEFAULT} is used" in warning.message
    with pytest.raises(ConfigError):
        read(strict=True)


def test_a_bad_ollama_host_not_used_is_not_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box:99999")
    ollama = read("ollama:\n  endpoint: gpu-box:11500\n").ollama
    assert ollama is not None and ollama.source == "config"
    assert read("ollama:\n  enabled: false\n").ollama is None


def test_ollama_gets_a_model_servers_default_timeouts() -> None:
    # Ollama loads a model before it answers, as a model server starts: not a peer's 60 s.
    config = read("ollama: {}\n")
    assert config.ollama is not None
    assert config.ollama.timeouts == next(iter(config.models.values())).timeouts


@pytest.mark.parametrize("policy", POLICIES)
def test_prompt_optimization_follows_the_global_key(policy: str) -> None:
    assert read(f"promptOptimization: {policy}\n").prompt_optimization == policy


def test_prompt_optimization_defaults_to_limit_only() -> None:
    assert read().prompt_optimization == "limit_only"
