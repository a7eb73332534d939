"""`GET /metrics`: Prometheus metrics of requests, tokens, swaps, model states and the machine.

One registry of trioswap's own (not prometheus_client's global one), so two apps in one process
(the tests) never share counters. Per-request calls are cheap: each model's metric children are
bound once and cached, label values are never formatted twice.

Every label value comes from a bounded set: models from the config and discovery (past
`MAX_MODELS` distinct names the rest count as "other"), routes from the pipeline files (any
other path is "other"), status codes 100-599, error kinds and optimizer policies from the
fixed lists below. Model state, in-flight and queued requests are read from the supervisor's
snapshot at scrape time, so nobody pushes changes; swaps are timed from its state transitions
(`transition`, a `TransitionListener`). System and GPU gauges are the latest
`SystemStats` sample, under llama-swap's metric names so its dashboards carry over.

Token speeds are histograms, not summaries: Grafana's usual panels want `histogram_quantile`
over buckets, aggregated across models and instances, which a summary cannot give (and
prometheus_client's summaries carry no quantiles at all).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol, TypeGuard

import trio
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

from trioswap import __version__, errors
from trioswap.config import POLICIES, TRUNCATION_MODES
from trioswap.observe.system import GpuStat, SystemStats
from trioswap.supervisor.scheduler import ModelState

OTHER = "other"
MAX_MODELS = 5000
# Seconds: from a cached one-token answer to a long generation on a slow machine.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
SWAP_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
# Tokens per second: reading a prompt runs from tens (CPU) to tens of thousands (GPU) ...
PREFILL_BUCKETS = (10, 25, 50, 100, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000)
# ... writing from a few to a few hundred.
DECODE_BUCKETS = (1, 2.5, 5, 10, 15, 20, 30, 45, 60, 80, 100, 150, 200, 300, 500)

# What went wrong, for `observe_error`: an exception's kind (`error_kind`), or one of the two
# the proxy names itself.
UPSTREAM_STATUS = "upstream_status"  # the model server answered 4xx/5xx
CLIENT_DISCONNECTED = "client_disconnected"
CANCELLED = "cancelled"  # by POST /api/inflight/<id>/cancel
_ERROR_KINDS: tuple[tuple[type[errors.TrioswapError], str], ...] = (
    # Subclasses before their bases: the first match names the kind.
    (errors.UpstreamConnectError, "upstream_connect"),
    (errors.UpstreamDisconnected, "upstream_disconnected"),
    (errors.UpstreamProtocolError, "upstream_protocol"),
    (errors.UpstreamTimeout, "upstream_timeout"),
    (errors.UpstreamError, "upstream"),
    (errors.ModelNotFound, "model_not_found"),
    (errors.ModelStartError, "model_start"),
    (errors.ModelNotLoaded, "model_not_loaded"),
    (errors.ShuttingDown, "shutting_down"),
    (errors.RouteNotFound, "route_not_found"),
    (errors.MethodNotAllowed, "method_not_allowed"),
    (errors.PayloadTooLarge, "payload_too_large"),
    (errors.RequestTimeout, "request_timeout"),
    (errors.PromptTooLong, "prompt_too_long"),
    (errors.BadRequest, "bad_request"),
    (errors.Unauthorized, "unauthorized"),
    (errors.Forbidden, "forbidden"),
)
ERROR_KINDS = frozenset(
    {kind for _, kind in _ERROR_KINDS}
    | {UPSTREAM_STATUS, CLIENT_DISCONNECTED, CANCELLED, "internal"}
)
_POLICIES = frozenset(POLICIES) | frozenset(TRUNCATION_MODES)
_STATES = tuple(state.value for state in ModelState)

# A `_created` series beside every counter and histogram child doubles what Prometheus stores,
# and no dashboard reads them (prometheus_client's switch is process-wide).
disable_created_metrics()


def error_kind(error: BaseException | type[BaseException]) -> str:
    """The `kind` label of an error (or its class): its place in trioswap's exception tree,
    "internal" else."""
    found = error if isinstance(error, type) else type(error)
    for cls, kind in _ERROR_KINDS:
        if issubclass(found, cls):
            return kind
    return "internal"


class ModelSnapshot(Protocol):
    """What the scrape reads of each model (the supervisor's `ModelStatus` has it)."""

    @property
    def state(self) -> str: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def waiting(self) -> int: ...


def _known(value: float | None) -> TypeGuard[float]:
    """A measurement to record: upstreams say "unknown" with None, -1, 0 or NaN alike."""
    return value is not None and value > 0 and math.isfinite(value)


class _ModelSeries:
    """One model's children of every metric, bound once; those with more labels by key."""

    __slots__ = (
        "cached",
        "decode",
        "duration",
        "errors",
        "generated",
        "model",
        "prefill",
        "prompt",
        "requests",
        "saved",
        "swap_seconds",
        "swaps",
        "ttft",
    )

    def __init__(self, m: Metrics, model: str) -> None:
        self.model = model
        self.duration = m.request_duration.labels(model)
        self.ttft = m.ttft.labels(model)
        self.prompt = m.prompt_tokens.labels(model)
        self.generated = m.generated_tokens.labels(model)
        self.cached = m.cached_tokens.labels(model)
        self.prefill = m.prefill_speed.labels(model)
        self.decode = m.decode_speed.labels(model)
        self.swap_seconds = m.swap_duration.labels(model)
        # Keyed by label values, each from a bounded set.
        self.requests: dict[tuple[str, int], Counter] = {}
        self.errors: dict[tuple[str, str], Counter] = {}
        self.swaps: dict[bool, Counter] = {}
        self.saved: dict[str, Counter] = {}


class Metrics:
    def __init__(
        self,
        statuses: Callable[[], Mapping[str, ModelSnapshot]] = dict,
        system: SystemStats | None = None,
        routes: Iterable[str] = (),
        route_prefixes: Iterable[str] = (),
    ) -> None:
        """`statuses` gives each local model's state and load at scrape time (the supervisor's
        `statuses`); `routes` and `route_prefixes` are the pipelines' paths and prefixes, the
        only `route` label values besides "other"."""
        self.registry = CollectorRegistry()
        r = self.registry
        self._routes = {path: path for path in routes}
        self._route_prefixes = tuple(sorted(route_prefixes, key=len, reverse=True))
        self._series: dict[str, _ModelSeries] = {}
        self._starting: dict[str, float] = {}  # model → when its start began (trio's clock)
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
        self._statuses = statuses
        self._model_collector = _ModelCollector()
        r.register(self._model_collector)
        if system is not None:
            r.register(_SystemCollector(system))
        # trioswap's own CPU time, memory and open files, under the names every dashboard knows.
        ProcessCollector(registry=r)
        # Always present, so a dashboard finds every trioswap instance before its first request.
        Info("trioswap_build", "trioswap's version", registry=r).info({"version": __version__})

    def route(self, path: str) -> str:
        """The `route` label of `path`: a pipeline's path or prefix, or "other"."""
        route = self._routes.get(path)
        if route is not None:
            return route
        for prefix in self._route_prefixes:
            if path.startswith(prefix):
                return prefix
        return OTHER

    def _model(self, model: str | None) -> _ModelSeries:
        name = "" if model is None else model
        series = self._series.get(name)
        if series is None:
            if len(self._series) >= MAX_MODELS:
                name = OTHER
                series = self._series.get(OTHER)
            if series is None:
                series = self._series[name] = _ModelSeries(self, name)
        return series

    def observe_request(
        self,
        model: str | None,
        path: str,
        status: int,
        duration: float,
        ttft: float | None = None,
        *,
        prompt_tokens: int | None = None,
        generated_tokens: int | None = None,
        cached_tokens: int | None = None,
        prefill_tps: float | None = None,
        decode_tps: float | None = None,
    ) -> None:
        """One answered request. `model` is the resolved model's name (None when the request
        failed before it named a known one); what is unknown stays None and is not counted."""
        series = self._model(model)
        key = (self.route(path), status if 100 <= status <= 599 else 0)
        child = series.requests.get(key)
        if child is None:
            status_label = str(key[1]) if key[1] else OTHER
            child = series.requests[key] = self.requests.labels(series.model, key[0], status_label)
        child.inc()
        series.duration.observe(max(duration, 0.0))
        if ttft is not None and ttft >= 0:
            series.ttft.observe(ttft)
        if _known(prompt_tokens):
            series.prompt.inc(prompt_tokens)
        if _known(generated_tokens):
            series.generated.inc(generated_tokens)
        if _known(cached_tokens):
            series.cached.inc(cached_tokens)
        if _known(prefill_tps):
            series.prefill.observe(prefill_tps)
        if _known(decode_tps):
            series.decode.observe(decode_tps)

    def observe_error(self, model: str | None, path: str, kind: str) -> None:
        """A failed request; `kind` is `error_kind(exc)`, UPSTREAM_STATUS or CLIENT_DISCONNECTED."""
        series = self._model(model)
        key = (self.route(path), kind if kind in ERROR_KINDS else OTHER)
        child = series.errors.get(key)
        if child is None:
            child = series.errors[key] = self.errors.labels(series.model, *key)
        child.inc()

    def observe_swap(self, model: str, seconds: float, ok: bool = True) -> None:
        """A model server started on demand (a swap): how long until ready, or that it failed."""
        series = self._model(model)
        child = series.swaps.get(ok)
        if child is None:
            child = series.swaps[ok] = self.swaps.labels(series.model, "ok" if ok else "failed")
        child.inc()
        if ok:
            series.swap_seconds.observe(max(seconds, 0.0))

    def transition(self, model: str, old: str, new: str) -> None:
        """A supervisor `TransitionListener`: times each start, from `starting` to `ready` (a
        swap) or `failed` (a failed one); a start stopped before either is not a swap."""
        if new == ModelState.STARTING:
            self._starting[model] = trio.current_time()
        elif old == ModelState.STARTING:
            began = self._starting.pop(model, None)
            if began is not None and new in (ModelState.READY, ModelState.FAILED):
                self.observe_swap(model, trio.current_time() - began, new == ModelState.READY)

    def optimizer_saved(self, model: str, policy: str, tokens: int) -> None:
        """The optimizer made a prompt `tokens` smaller under `policy`."""
        if tokens <= 0:
            return
        series = self._model(model)
        label = policy if policy in _POLICIES else OTHER
        child = series.saved.get(label)
        if child is None:
            child = series.saved[label] = self.optimizer_saved_tokens.labels(series.model, label)
        child.inc(tokens)

    async def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition for `GET /metrics` and its content type: Prometheus text, or
        OpenMetrics when the scraper's `Accept` header asks for it.

        The supervisor's statuses are read here, on trio's thread; the encoding (tens of
        milliseconds for thousands of series) runs in a worker thread, so that streams keep
        flowing meanwhile. The metrics' values are safe to read from there: prometheus_client
        guards each with a lock."""
        self._model_collector.statuses = dict(self._statuses())
        encode, content_type = choose_encoder(accept)
        return await trio.to_thread.run_sync(encode, self.registry), content_type


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
