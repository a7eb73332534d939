"""`/metrics`: values after calls, read back through prometheus_client's own parsers; label values
from bounded sets whatever the callers pass; model state read at scrape time; system and GPU
gauges under llama-swap's names; the Grafana dashboard asks only for metrics that exist."""

from __future__ import annotations

import json
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families

from trioswap import errors
from trioswap.observe import metrics as metrics_module
from trioswap.observe.metrics import (
    CLIENT_DISCONNECTED,
    ERROR_KINDS,
    UPSTREAM_STATUS,
    Metrics,
    error_kind,
)
from trioswap.observe.system import NVIDIA_SMI, ROCM_SMI, GpuTool, SystemStats
from trioswap.supervisor.scheduler import ModelState

ROUTES = ("/v1/chat/completions", "/v1/embeddings", "/v1/messages")
PREFIXES = ("/upstream/",)
DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"


@dataclass
class Status:
    state: str
    in_flight: int = 0
    waiting: int = 0


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(m: Metrics) -> Samples:
    """Every sample of the exposition: (name, labels) → value."""
    body, content_type = await m.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(found: Samples, metric: str, /, **labels: str) -> float | None:
    return found.get((metric, frozenset(labels.items())))


def new_metrics(**kwargs: object) -> Metrics:
    return Metrics(routes=ROUTES, route_prefixes=PREFIXES, **kwargs)  # type: ignore[arg-type]


async def test_a_request_is_counted_with_its_timings_and_tokens() -> None:
    m = new_metrics()
    for _ in range(3):
        m.observe_request(
            "qwen",
            "/v1/chat/completions",
            200,
            1.5,
            0.2,
            prompt_tokens=100,
            generated_tokens=50,
            cached_tokens=10,
            prefill_tps=900.0,
            decode_tps=40.0,
        )
    m.observe_request("qwen", "/v1/chat/completions", 503, 0.004)
    found = await scrape(m)
    route = "/v1/chat/completions"
    assert value(found, "trioswap_requests_total", model="qwen", route=route, status="200") == 3
    assert value(found, "trioswap_requests_total", model="qwen", route=route, status="503") == 1
    assert value(found, "trioswap_request_duration_seconds_count", model="qwen") == 4
    assert value(found, "trioswap_request_duration_seconds_sum", model="qwen") == pytest.approx(
        4.504
    )
    assert value(found, "trioswap_request_duration_seconds_bucket", model="qwen", le="0.01") == 1
    assert value(found, "trioswap_request_duration_seconds_bucket", model="qwen", le="2.5") == 4
    assert value(found, "trioswap_time_to_first_token_seconds_count", model="qwen") == 3
    assert value(found, "trioswap_time_to_first_token_seconds_bucket", model="qwen", le="0.25") == 3
    assert value(found, "trioswap_prompt_tokens_total", model="qwen") == 300
    assert value(found, "trioswap_generated_tokens_total", model="qwen") == 150
    assert value(found, "trioswap_cached_tokens_total", model="qwen") == 30
    assert value(found, "trioswap_prefill_tokens_per_second_bucket", model="qwen", le="1000.0") == 3
    assert value(found, "trioswap_prefill_tokens_per_second_bucket", model="qwen", le="500.0") == 0
    assert value(found, "trioswap_decode_tokens_per_second_sum", model="qwen") == 120
    # No `_created` twin beside every series.
    assert not any(name.endswith("_created") for name, _ in found)


async def test_unknown_measurements_are_not_counted() -> None:
    m = new_metrics()
    for unknown in (None, -1, 0, float("nan"), float("inf")):
        m.observe_request(
            "qwen",
            "/v1/embeddings",
            200,
            0.1,
            prompt_tokens=unknown,  # type: ignore[arg-type]
            generated_tokens=unknown,  # type: ignore[arg-type]
            cached_tokens=unknown,  # type: ignore[arg-type]
            prefill_tps=unknown,
            decode_tps=unknown,
        )
    found = await scrape(m)
    assert value(found, "trioswap_request_duration_seconds_count", model="qwen") == 5
    assert value(found, "trioswap_time_to_first_token_seconds_count", model="qwen") == 0
    for name in ("prompt", "generated", "cached"):
        assert value(found, f"trioswap_{name}_tokens_total", model="qwen") == 0
    for name in ("prefill", "decode"):
        assert value(found, f"trioswap_{name}_tokens_per_second_count", model="qwen") == 0


async def test_routes_statuses_and_models_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    m = new_metrics()
    m.observe_request("a", "/upstream/a/v1/models", 200, 0.1)
    m.observe_request("a", "/../../etc/passwd", 200, 0.1)
    m.observe_request("a", "/v1/messages", 999, 0.1)
    m.observe_request(None, "/v1/chat/completions", 401, 0.0)
    found = await scrape(m)
    assert value(found, "trioswap_requests_total", model="a", route="/upstream/", status="200") == 1
    assert value(found, "trioswap_requests_total", model="a", route="other", status="200") == 1
    requests = "trioswap_requests_total"
    assert value(found, requests, model="a", route="/v1/messages", status="other") == 1
    # A request refused before it named a model has an empty model label.
    assert value(found, requests, model="", route="/v1/chat/completions", status="401") == 1

    monkeypatch.setattr(metrics_module, "MAX_MODELS", 4)
    for i in range(10):
        m.observe_request(f"discovered-{i}", "/v1/embeddings", 200, 0.1)
        m.observe_swap(f"discovered-{i}", 3.0)
    found = await scrape(m)
    models = {dict(labels)["model"] for name, labels in found if "model" in dict(labels)}
    assert models == {"a", "", "discovered-0", "discovered-1", "other"}
    assert value(found, "trioswap_swaps_total", model="other", result="ok") == 8


async def test_any_input_gives_label_values_from_fixed_sets() -> None:
    m = new_metrics()

    @given(
        path=st.text(max_size=40),
        status=st.integers(-10, 10_000),
        kind=st.text(max_size=20),
        policy=st.text(max_size=20),
    )
    def observe(path: str, status: int, kind: str, policy: str) -> None:
        m.observe_request("m", path, status, 0.1)
        m.observe_error("m", path, kind)
        m.optimizer_saved("m", policy, 10)

    observe()
    policies = {"off", "limit_only", "always", "llm_assisted", "sliding_window", "strict_error"}
    for _, labels in await scrape(m):
        found = dict(labels)
        assert found.get("route", "other") in {*ROUTES, *PREFIXES, "other"}
        assert found.get("status", "200") in {str(s) for s in range(100, 600)} | {"other"}
        assert found.get("kind", "internal") in ERROR_KINDS | {"other"}
        assert found.get("policy", "off") in policies | {"other"}


async def test_errors_by_kind() -> None:
    assert error_kind(errors.UpstreamConnectError("m", "refused")) == "upstream_connect"
    assert error_kind(errors.UpstreamError("m", "?")) == "upstream"
    assert error_kind(errors.ModelStartError("m", "exit 1")) == "model_start"
    assert error_kind(errors.PayloadTooLarge(1)) == "payload_too_large"
    assert error_kind(errors.RouteNotFound("/x")) == "route_not_found"
    assert error_kind(errors.Unauthorized()) == "unauthorized"
    assert error_kind(errors.InternalError("r1")) == "internal"
    assert error_kind(ValueError()) == "internal"

    m = new_metrics()
    m.observe_error("m", "/v1/messages", error_kind(errors.UpstreamTimeout("m", "slow")))
    m.observe_error("m", "/v1/messages", UPSTREAM_STATUS)
    m.observe_error("m", "/v1/messages", UPSTREAM_STATUS)
    m.observe_error("m", "/v1/messages", CLIENT_DISCONNECTED)
    m.observe_error("m", "/v1/messages", "made up")
    found = await scrape(m)
    route = "/v1/messages"
    errors_total = "trioswap_request_errors_total"
    assert value(found, errors_total, model="m", route=route, kind="upstream_timeout") == 1
    assert value(found, errors_total, model="m", route=route, kind="upstream_status") == 2
    assert value(found, errors_total, model="m", route=route, kind="client_disconnected") == 1
    assert value(found, errors_total, model="m", route=route, kind="other") == 1


async def test_swaps_and_optimizer_savings() -> None:
    m = new_metrics()
    m.observe_swap("big", 42.0)
    m.observe_swap("big", 8.0)
    m.observe_swap("big", 120.0, ok=False)
    m.optimizer_saved("big", "always", 1200)
    m.optimizer_saved("big", "always", 300)
    m.optimizer_saved("big", "limit_only", 0)
    m.optimizer_saved("big", "sliding_window", 7)
    found = await scrape(m)
    assert value(found, "trioswap_swaps_total", model="big", result="ok") == 2
    assert value(found, "trioswap_swaps_total", model="big", result="failed") == 1
    assert value(found, "trioswap_swap_duration_seconds_count", model="big") == 2
    assert value(found, "trioswap_swap_duration_seconds_sum", model="big") == 50
    assert value(found, "trioswap_swap_duration_seconds_bucket", model="big", le="10.0") == 1
    saved = "trioswap_optimizer_saved_tokens_total"
    assert value(found, saved, model="big", policy="always") == 1500
    assert value(found, saved, model="big", policy="sliding_window") == 7
    assert value(found, saved, model="big", policy="limit_only") is None


async def test_transitions_time_swaps(autojump_clock: trio.testing.MockClock) -> None:
    m = new_metrics()
    m.transition("a", ModelState.STOPPED, ModelState.STARTING)
    await trio.sleep(12)
    m.transition("a", ModelState.STARTING, ModelState.READY)
    m.transition("a", ModelState.READY, ModelState.STOPPING)
    m.transition("a", ModelState.STOPPING, ModelState.STOPPED)
    m.transition("a", ModelState.STOPPED, ModelState.STARTING)
    await trio.sleep(3)
    m.transition("a", ModelState.STARTING, ModelState.FAILED)
    m.transition("a", ModelState.FAILED, ModelState.STARTING)
    m.transition("a", ModelState.STARTING, ModelState.STOPPING)  # stopped while starting
    found = await scrape(m)
    assert value(found, "trioswap_swaps_total", model="a", result="ok") == 1
    assert value(found, "trioswap_swaps_total", model="a", result="failed") == 1
    assert value(found, "trioswap_swap_duration_seconds_sum", model="a") == 12


async def test_model_state_and_load_are_read_at_scrape_time() -> None:
    statuses = {"a": Status("stopped"), "b": Status("ready", in_flight=2, waiting=5)}
    m = new_metrics(statuses=lambda: statuses)

    def states(found: Samples, model: str) -> dict[str, float]:
        return {
            dict(labels)["state"]: v
            for (name, labels), v in found.items()
            if name == "trioswap_model_state" and dict(labels)["model"] == model
        }

    found = await scrape(m)
    assert states(found, "a") == {
        "stopped": 1,
        "starting": 0,
        "ready": 0,
        "stopping": 0,
        "failed": 0,
    }
    assert states(found, "b")["ready"] == 1 and sum(states(found, "b").values()) == 1
    assert value(found, "trioswap_requests_in_flight", model="b") == 2
    assert value(found, "trioswap_requests_queued", model="b") == 5

    statuses["a"] = Status("starting", waiting=3)
    statuses["b"] = Status("shutdown")  # a state the list does not have is still shown
    found = await scrape(m)
    assert states(found, "a")["starting"] == 1 and sum(states(found, "a").values()) == 1
    assert value(found, "trioswap_requests_queued", model="a") == 3
    assert states(found, "b")["shutdown"] == 1 and sum(states(found, "b").values()) == 1


NVIDIA_OUTPUT = """\
0, NVIDIA GeForce RTX 4090, GPU-8f1c, 47, 93, 21874, 24564, 41, 312.58
1, NVIDIA A100-SXM4-80GB, GPU-1d2e, 34, 0, 4, 81920, [N/A], 61.27
"""
# rocm-smi's (ROCm 7.1) columns: it also reports the memory's temperature.
ROCM_OUTPUT = """\
device,Device Name,GUID,Temperature (Sensor edge) (C),Temperature (Sensor memory) (C),\
Fan speed (%),Average Graphics Package Power (W),GPU use (%),VRAM Total Memory (B),\
VRAM Total Used Memory (B),Card Series,GFX Version
card0,Radeon RX 9070 XT,23541,51.0,70.0,20,214.0,100,17095983104,15032385536,N/A,gfx1201
"""


def fake_tool(tmp_path: Path, like: GpuTool, output: str) -> GpuTool:
    """A program that prints `output` as the tool `like` would, run in its place."""
    script = tmp_path / like.program
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}EOF\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return GpuTool(str(script), like.args, like.parse)


async def test_system_and_gpu_gauges_use_llama_swaps_names(tmp_path: Path) -> None:
    stats = SystemStats(gpu_tools=[fake_tool(tmp_path, NVIDIA_SMI, NVIDIA_OUTPUT)])
    m = new_metrics(system=stats)
    no_sample = await scrape(m)
    assert not any(name.startswith("llamaswap_") for name, _ in no_sample)
    sample = await stats.sample()
    s = sample.system
    found = await scrape(m)
    for core, percent in enumerate(s.cpu_util_per_core):
        assert found[("llamaswap_cpu_util_percent", frozenset({("core", str(core))}))] == percent
    assert value(found, "llamaswap_memory_total_bytes") == s.mem_total_mb * 1024 * 1024
    assert value(found, "llamaswap_memory_used_bytes") == s.mem_used_mb * 1024 * 1024
    assert value(found, "llamaswap_load_average", interval="5m") == s.load_avg_5
    rtx = {"id": "0", "name": "NVIDIA GeForce RTX 4090", "uuid": "GPU-8f1c"}
    a100 = {"id": "1", "name": "NVIDIA A100-SXM4-80GB", "uuid": "GPU-1d2e"}
    assert value(found, "llamaswap_gpu_util_percent", **rtx) == 93
    assert value(found, "llamaswap_gpu_memory_used_bytes", **rtx) == 21874 * 1024 * 1024
    assert value(found, "llamaswap_gpu_memory_total_bytes", **a100) == 81920 * 1024 * 1024
    assert value(found, "llamaswap_gpu_temperature_celsius", **a100) == 34
    assert value(found, "llamaswap_gpu_power_draw_watts", **rtx) == 312.58
    # Unknown values are left out, not reported as 0.
    assert value(found, "llamaswap_gpu_fan_speed_percent", **rtx) == 41
    assert value(found, "llamaswap_gpu_fan_speed_percent", **a100) is None
    assert not any(name == "llamaswap_gpu_vram_temperature_celsius" for name, _ in found)
    # trioswap's own process, and its version.
    assert found[("process_resident_memory_bytes", frozenset())] > 0
    assert value(found, "trioswap_build_info", version=metrics_module.__version__) == 1


async def test_openmetrics_for_scrapers_that_ask() -> None:
    m = new_metrics()
    m.observe_request("a", "/v1/embeddings", 200, 0.5)
    body, content_type = await m.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    families = {f.name: f for f in openmetrics(body.decode())}
    (request,) = families["trioswap_requests"].samples
    assert request.value == 1 and request.labels["route"] == "/v1/embeddings"


async def test_the_dashboard_asks_only_for_metrics_that_exist(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["schemaVersion"] >= 36
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]

    # Every metric there is, with a value.
    stats = SystemStats(gpu_tools=[fake_tool(tmp_path, ROCM_SMI, ROCM_OUTPUT)])
    assert (await stats.sample()).gpus
    m = new_metrics(statuses=lambda: {"a": Status("ready")}, system=stats)
    m.observe_request("a", "/v1/chat/completions", 200, 1, 0.1, prompt_tokens=1, prefill_tps=9)
    m.observe_request("a", "/v1/chat/completions", 200, 1, generated_tokens=1, cached_tokens=1)
    m.observe_request("a", "/v1/chat/completions", 200, 1, decode_tps=9)
    m.observe_error("a", "/v1/chat/completions", UPSTREAM_STATUS)
    m.observe_swap("a", 1.0)
    m.optimizer_saved("a", "always", 1)
    exposed = {name for name, _ in await scrape(m)}

    exprs: list[str] = []
    for panel in dashboard["panels"]:
        assert panel["type"] == "row" or panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        exprs.extend(target["expr"] for target in panel.get("targets", ()))
    exprs.extend(v["definition"] for v in dashboard["templating"]["list"])
    used = {
        name
        for expr in exprs
        for name in re.findall(r"\b((?:trioswap|llamaswap|process)_[a-z0-9_]+)", expr)
    }
    assert len(exprs) > 30 and len(used) > 25
    assert used - exposed == set()
    # Every trioswap metric has a panel.
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in exposed}
    unused = {f for f in families if f.startswith("trioswap_")} - {
        re.sub(r"_(bucket|sum|count)$", "", name) for name in used
    }
    assert unused == set()
