"""What trioswap imports before its first request, without timing anything: a fresh interpreter
reads the demo config and imports `trioswap.app`, as `trioswap` does before it listens, and
says which modules it loaded. Each library below is imported where it is first used (issue 12:
exec → a healthy /health in under 0.25 s); an eager import anywhere brings it back here.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import sys
from trioswap.cli import demo_config_path
from trioswap.config import load
load(demo_config_path())
import trioswap.app
print("\\n".join(sys.modules))
"""

# Module → where it belongs instead.
NOT_AT_STARTUP = {
    "quart": "the control plane, built after the front listens",
    "hypercorn": "the control plane's server, started after the front listens",
    "jinja2": "the UI's templates",
    "prometheus_client": "the first metric or scrape (observe/prometheus.py)",
    "psutil": "the system sampler's worker thread (observe/system.py)",
    "httpx": "the first model start's health probe (supervisor/health.py)",
    "trioswap.web.control": "the control plane",
    "trioswap.web.ui": "the control plane",
    "tokenizers": "the first tokenizer loaded (optimizer/tokens.py, gguf_vocab.py)",
    "httpcore": "httpx's first use (health probes); trioswap's upstream client is pipeline/wire.py",
    "h11": "httpx's first use, through httpcore",
    "h2": "httpx's first use, through httpcore",
    "trioswap.optimizer.core": "the first request the optimizer works on (stages/optimize.py)",
}


@pytest.fixture(scope="module")
def loaded() -> set[str]:
    env = {**os.environ, "TRIOSWAP_SELF": "trioswap"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return set(done.stdout.split())


def imported(module: str, loaded: set[str]) -> bool:
    return module in loaded or any(name.startswith(f"{module}.") for name in loaded)


@pytest.mark.parametrize("module", sorted(NOT_AT_STARTUP))
def test_not_imported_before_the_first_request(module: str, loaded: set[str]) -> None:
    assert not imported(module, loaded), (
        f"{module} is imported at startup; it belongs to {NOT_AT_STARTUP[module]}"
    )


def test_the_probe_sees_what_startup_needs(loaded: set[str]) -> None:
    assert {"trio", "trioswap.app", "trioswap.config"} <= loaded


PLUGIN_PROBE = """
import importlib.metadata, os
scans = []
real = importlib.metadata.entry_points
def counted(*args, **kwargs):
    scans.append(kwargs.get("group"))
    return real(*args, **kwargs)
importlib.metadata.entry_points = counted  # before pydantic takes its own reference
import trioswap.config
print(scans.count("pydantic"), os.environ.get("PYDANTIC_DISABLE_PLUGINS"))
"""


@pytest.mark.parametrize("setting", [None, "some_plugin"])
def test_building_the_config_models_scans_no_plugins_and_leaves_the_environment(
    setting: str | None,
) -> None:
    """pydantic's plugin scan walks every installed distribution (from the zipapp: its whole
    archive); the config's models are built without it, and the environment model servers
    inherit is left as it was."""
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    if setting is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = setting
    done = subprocess.run(
        [sys.executable, "-c", PLUGIN_PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["0", str(setting)]
