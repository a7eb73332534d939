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
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, TypeGuard

import trio

from trioswap import __version__, errors
from trioswap.config import POLICIES, TRUNCATION_MODES
from trioswap.supervisor.scheduler import ModelState

if TYPE_CHECKING:
    from prometheus_client import Counter

    from trioswap.observe.prometheus import Families, ModelSnapshot
    from trioswap.observe.system import SystemStats

OTHER = "other"
MAX_MODELS = 5000

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


def error_kind(error: BaseException | type[BaseException]) -> str:
    """The `kind` label of an error (or its class): its place in trioswap's exception tree,
    "internal" else."""
    found = error if isinstance(error, type) else type(error)
    for cls, kind in _ERROR_KINDS:
        if issubclass(found, cls):
            return kind
    return "internal"


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

    def __init__(self, m: Families, model: str) -> None:
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
        self._routes = {path: path for path in routes}
        self._route_prefixes = tuple(sorted(route_prefixes, key=len, reverse=True))
        self._series: dict[str, _ModelSeries] = {}
        self._starting: dict[str, float] = {}  # model → when its start began (trio's clock)
        self._statuses = statuses
        self._system = system
        self._families: Families | None = None

    def families(self) -> Families:
        """The registry and its metrics, made at the first metric or scrape."""
        if self._families is None:
            # Imported here: prometheus_client is not needed before the first request.
            from trioswap.observe.prometheus import Families

            self._families = Families(self._system, __version__)
        return self._families

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
                series = self._series[name] = _ModelSeries(self.families(), name)
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
            child = series.requests[key] = self.families().requests.labels(
                series.model, key[0], status_label
            )
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
            child = series.errors[key] = self.families().errors.labels(series.model, *key)
        child.inc()

    def observe_swap(self, model: str, seconds: float, ok: bool = True) -> None:
        """A model server started on demand (a swap): how long until ready, or that it failed."""
        series = self._model(model)
        child = series.swaps.get(ok)
        if child is None:
            child = series.swaps[ok] = self.families().swaps.labels(
                series.model, "ok" if ok else "failed"
            )
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
            child = series.saved[label] = self.families().optimizer_saved_tokens.labels(
                series.model, label
            )
        child.inc(tokens)

    async def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition for `GET /metrics` and its content type: Prometheus text, or
        OpenMetrics when the scraper's `Accept` header asks for it.

        The supervisor's statuses are read here, on trio's thread; the encoding (tens of
        milliseconds for thousands of series) runs in a worker thread, so that streams keep
        flowing meanwhile. The metrics' values are safe to read from there: prometheus_client
        guards each with a lock."""
        families = self.families()
        families.model_collector.statuses = dict(self._statuses())
        encode, content_type = families.encoder(accept)
        return await trio.to_thread.run_sync(encode, families.registry), content_type
