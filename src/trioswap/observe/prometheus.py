"""The Prometheus side of `metrics.py`: the registry, its metric families and the collectors
read at scrape time. Imported at the first metric or scrape, not at startup: prometheus_client
takes longer to import than trioswap takes to answer its first request."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from trioswap.observe.system import GpuStat, SystemStats
from trioswap.supervisor.scheduler import ModelState

# Seconds: from a cached one-token answer to a long generation on a slow machine.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
SWAP_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
# Tokens per second: reading a prompt runs from tens (CPU) to tens of thousands (GPU) ...
PREFILL_BUCKETS = (10, 25, 50, 100, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000)
# ... writing from a few to a few hundred.
DECODE_BUCKETS = (1, 2.5, 5, 10, 15, 20, 30, 45, 60, 80, 100, 150, 200, 300, 500)
_STATES = tuple(state.value for state in ModelState)

# A `_created` series beside every counter and histogram child doubles what Prometheus stores,
# and no dashboard reads them (prometheus_client's switch is process-wide).
disable_created_metrics()


class ModelSnapshot(Protocol):
    """What the scrape reads of each model (the supervisor's `ModelStatus` has it)."""

    @property
    def state(self) -> str: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def waiting(self) -> int: ...


class Families:
    """trioswap's own registry (not prometheus_client's global one, so two apps in one process,
    as in the tests, never share counters) and every metric in it."""

    encoder = staticmethod(choose_encoder)

    def __init__(self, system: SystemStats | None, version: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "trioswap_requests",
            "Inference requests answered, by model, route and HTTP status",
            ("model", "route", "status"),
            registry=r,
        )
        self.errors = Counter(
            "trioswap_request_errors",
            "Inference requests that failed, by model, route and kind of failure",
            ("model", "route", "kind"),
            registry=r,
        )
        self.request_duration = Histogram(
            "trioswap_request_duration_seconds",
            "Time from a request's arrival to the end of its response",
            ("model",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "trioswap_time_to_first_token_seconds",
            "Time from a request's arrival to the first generated token",
            ("model",),
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "trioswap_prompt_tokens", "Prompt tokens the models read", ("model",), registry=r
        )
        self.generated_tokens = Counter(
            "trioswap_generated_tokens", "Tokens the models generated", ("model",), registry=r
        )
        self.cached_tokens = Counter(
            "trioswap_cached_tokens",
            "Prompt tokens served from the model server's cache",
            ("model",),
            registry=r,
        )
        self.prefill_speed = Histogram(
            "trioswap_prefill_tokens_per_second",
            "Prompt processing speed per request",
            ("model",),
            buckets=PREFILL_BUCKETS,
            registry=r,
        )
        self.decode_speed = Histogram(
            "trioswap_decode_tokens_per_second",
            "Generation speed per request",
            ("model",),
            buckets=DECODE_BUCKETS,
            registry=r,
        )
        self.swaps = Counter(
            "trioswap_swaps",
            "Model server starts on demand, by model and result (ok, failed)",
            ("model", "result"),
            registry=r,
        )
        self.swap_duration = Histogram(
            "trioswap_swap_duration_seconds",
            "Time from a swap's start to its model being ready (successful swaps)",
            ("model",),
            buckets=SWAP_BUCKETS,
            registry=r,
        )
        self.optimizer_saved_tokens = Counter(
            "trioswap_optimizer_saved_tokens",
            "Prompt tokens the optimizer removed, by model and policy",
            ("model", "policy"),
            registry=r,
        )
        self.model_collector = _ModelCollector()
        r.register(self.model_collector)
        if system is not None:
            r.register(_SystemCollector(system))
        # trioswap's own CPU time, memory and open files, under the names every dashboard knows.
        ProcessCollector(registry=r)
        # Always present, so a dashboard finds every trioswap instance before its first request.
        Info("trioswap_build", "trioswap's version", registry=r).info({"version": version})


class _ModelCollector(Collector):
    """Each model's state (a gauge per state, 1 for the current one) and load, from the
    statuses `render` read as the scrape began."""

    def __init__(self) -> None:
        self.statuses: Mapping[str, ModelSnapshot] = {}

    def describe(self) -> Iterator[Metric]:
        return self._families({})

    def collect(self) -> Iterator[Metric]:
        return self._families(self.statuses)

    @staticmethod
    def _families(statuses: Mapping[str, ModelSnapshot]) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "trioswap_model_state",
            "1 for the model server's current state (stopped, starting, ready, stopping, failed)",
            labels=("model", "state"),
        )
        in_flight = GaugeMetricFamily(
            "trioswap_requests_in_flight",
            "Requests a model is serving now",
            labels=("model",),
        )
        queued = GaugeMetricFamily(
            "trioswap_requests_queued",
            "Requests waiting for a model (to start, or for a free slot)",
            labels=("model",),
        )
        for model, status in statuses.items():
            current = str(status.state)
            for name in _STATES if current in _STATES else (*_STATES, current):
                state.add_metric((model, name), 1.0 if name == current else 0.0)
            in_flight.add_metric((model,), status.in_flight)
            queued.add_metric((model,), status.waiting)
        yield state
        yield in_flight
        yield queued


_GPU_GAUGES: tuple[tuple[str, str, Callable[[GpuStat], float | None]], ...] = (
    ("llamaswap_gpu_temperature_celsius", "GPU temperature in Celsius", lambda g: g.temp_c),
    (
        "llamaswap_gpu_vram_temperature_celsius",
        "GPU memory temperature in Celsius",
        lambda g: g.vram_temp_c,
    ),
    ("llamaswap_gpu_util_percent", "GPU utilization percent (0-100)", lambda g: g.gpu_util_pct),
    (
        "llamaswap_gpu_memory_util_percent",
        "GPU memory used, percent of its total (0-100)",
        lambda g: g.mem_util_pct,
    ),
    (
        "llamaswap_gpu_memory_used_bytes",
        "GPU memory used in bytes",
        lambda g: None if g.mem_used_mb is None else g.mem_used_mb * 1024 * 1024,
    ),
    (
        "llamaswap_gpu_memory_total_bytes",
        "GPU memory in bytes",
        lambda g: None if g.mem_total_mb is None else g.mem_total_mb * 1024 * 1024,
    ),
    ("llamaswap_gpu_fan_speed_percent", "GPU fan speed percent (0-100)", lambda g: g.fan_speed_pct),
    ("llamaswap_gpu_power_draw_watts", "GPU power draw in watts", lambda g: g.power_draw_w),
)


class _SystemCollector(Collector):
    """The latest system sample under llama-swap's names; nothing before the first sample."""

    def __init__(self, stats: SystemStats) -> None:
        self._stats = stats

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        sample = self._stats.latest()
        if sample is None:
            return
        s = sample.system
        cpu = GaugeMetricFamily(
            "llamaswap_cpu_util_percent", "CPU utilization per core (0-100)", labels=("core",)
        )
        for core, percent in enumerate(s.cpu_util_per_core):
            cpu.add_metric((str(core),), percent)
        yield cpu
        mib = 1024 * 1024
        for name, help_text, value in (
            ("llamaswap_memory_total_bytes", "Total memory in bytes", s.mem_total_mb),
            ("llamaswap_memory_used_bytes", "Used memory in bytes", s.mem_used_mb),
            ("llamaswap_memory_free_bytes", "Free memory in bytes", s.mem_free_mb),
            ("llamaswap_swap_total_bytes", "Total swap in bytes", s.swap_total_mb),
            ("llamaswap_swap_used_bytes", "Used swap in bytes", s.swap_used_mb),
        ):
            yield GaugeMetricFamily(name, help_text, value=value * mib)
        load = GaugeMetricFamily("llamaswap_load_average", "Load average", labels=("interval",))
        load.add_metric(("1m",), s.load_avg_1)
        load.add_metric(("5m",), s.load_avg_5)
        load.add_metric(("15m",), s.load_avg_15)
        yield load
        if s.net_io:
            net = CounterMetricFamily(
                "llamaswap_network_bytes",
                "Total network bytes transferred",
                labels=("interface", "direction"),
            )
            for io in s.net_io:
                net.add_metric((io.name, "recv"), io.bytes_recv)
                net.add_metric((io.name, "sent"), io.bytes_sent)
            yield net
        if sample.gpus:
            for name, help_text, read in _GPU_GAUGES:
                family = GaugeMetricFamily(name, help_text, labels=("id", "name", "uuid"))
                for gpu in sample.gpus:
                    value = read(gpu)
                    if value is not None:
                        family.add_metric((str(gpu.id), gpu.name, gpu.uuid), value)
                if family.samples:
                    yield family
