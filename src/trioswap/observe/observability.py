"""What trioswap keeps about each inference exchange, put together: the in-flight list, the
activity record with its token counts and speeds, the capture, the metrics and the events.

`Observability.begin` is called when an exchange starts (it enters the in-flight list and, with
`captureBuffer`, starts its capture); `ObservedTransport` sees the response go to the client
(status, headers, every chunk: counted, metered for usage, captured); `finish` runs once the
exchange is over, however it ended, and files the record. Neither waits: `finish` queues the
record, and the store's own task writes it. The usage meter reads what the client
receives, so a translated reply is metered in the client's family.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from trioswap.config import Config
from trioswap.observe.activity import ActivityRecord, ActivityStore
from trioswap.observe.captures import Capture, CaptureRing
from trioswap.observe.events import ACTIVITY, LOG_DATA, MODEL_STATUS, OPTIMIZER, EventHub
from trioswap.observe.inflight import InflightEntry, InflightRegistry
from trioswap.observe.logs import PROXY, UPSTREAM, LogHub
from trioswap.observe.metrics import (
    CANCELLED,
    CLIENT_DISCONNECTED,
    UPSTREAM_STATUS,
    Metrics,
    error_kind,
)
from trioswap.observe.system import SystemStats
from trioswap.observe.usage import UsageMeter
from trioswap.protocols.errors import Headers

if TYPE_CHECKING:
    from trioswap.pipeline.exchange import Exchange
    from trioswap.pipeline.sink import RelayWrite, Tap, Transport
    from trioswap.supervisor import ModelState, Supervisor


OPTIMIZED_HEADER = b"x-trioswap-prompt-optimized"
# The API family of the reply a client gets on each path (the usage meter reads it).
FAMILY_OF_PATH = {
    "/v1/chat/completions": "chat",
    "/v/chat/completions": "chat",
    "/chat/completions": "chat",
    "/v1/completions": "completions",
    "/completions": "completions",
    "/completion": "completions",
    "/v1/messages": "anthropic",
    "/v/messages": "anthropic",
    "/v1/responses": "responses",
    "/v/responses": "responses",
    "/v1/embeddings": "embeddings",
    "/v/embeddings": "embeddings",
    "/embeddings": "embeddings",
}


class Watch:
    """One exchange as observed: what the transport saw, and its in-flight entry."""

    __slots__ = ("capture", "entry", "events", "meter", "record_id", "started", "status")

    def __init__(self, entry: InflightEntry, record_id: int, capture: Capture | None) -> None:
        self.entry = entry
        self.record_id = record_id
        self.capture = capture
        self.started = time.time()
        self.status: int | None = None
        self.meter: UsageMeter | None = None
        self.events = False


class Observability:
    def __init__(
        self,
        config: Config,
        supervisor: Supervisor,
        activity: ActivityStore,
        events: EventHub,
        inflight: InflightRegistry,
        captures: CaptureRing | None,
        metrics: Metrics,
        system: SystemStats,
    ) -> None:
        self._config = config
        self._supervisor = supervisor
        self.activity = activity
        self.events = events
        self.inflight = inflight
        self.captures = captures
        self.metrics = metrics
        self.system = system
        self._session_headers = tuple(h.lower().encode() for h in config.observe.session_headers)
        supervisor.listeners.append(self._transition)
        supervisor.listeners.append(metrics.transition)

    def model_status(self) -> list[dict[str, Any]]:
        """llama-swap's `modelStatus` list: every model with its state now."""
        states = self._supervisor.statuses()
        return [
            {
                "id": model.id,
                "name": model.name or "",
                "description": model.description or "",
                "state": states[model.id].state.value,
                "unlisted": model.unlisted,
                "peerID": "",
                **({"aliases": list(model.aliases)} if model.aliases else {}),
            }
            for model in self._config.models.values()
        ]

    async def run(
        self, logs: LogHub, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The tasks observability needs: the activity writer, the in-flight progress events,
        the system sampler, and log lines passed on as `logData` events."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.activity.run)
            await nursery.start(self.inflight.publish_progress)
            await nursery.start(self.system.run)
            for source in (PROXY, UPSTREAM):
                nursery.start_soon(self._forward_logs, logs, source)
            task_status.started()

    async def _forward_logs(self, logs: LogHub, source: str) -> None:
        with logs.subscribe(source) as lines:
            async for line in lines:
                if len(self.events):
                    self.events.publish(LOG_DATA, {"source": source, "data": line + "\n"})

    def optimized(self, model: str, snapshot: Mapping[str, Any]) -> None:
        """A request's prompt was optimized (`RuntimeState.record_snapshot`)."""
        tokens = snapshot["tokens"]
        saved = tokens["before"] - tokens["after"]
        self.metrics.optimizer_saved(model, snapshot["policy"], saved)
        if len(self.events):
            summary = {"model": model, "policy": snapshot["policy"], "applied": snapshot["applied"]}
            self.events.publish(OPTIMIZER, {**summary, "before": tokens["before"], "saved": saved})

    def _transition(self, model: str, old: ModelState, new: ModelState) -> None:
        if len(self.events):
            self.events.publish(MODEL_STATUS, self.model_status())

    # -- per exchange -------------------------------------------------------------------------

    def begin(self, exchange: Exchange, scope: trio.CancelScope, client: str | None) -> Watch:
        headers = exchange.headers
        entry = self.inflight.enter(
            exchange.request_id,
            None,
            exchange.path,
            client,
            _header(headers, b"user-agent"),
            self._session(headers),
            scope,
            time.time(),
            method=exchange.method,
        )
        record_id = self.activity.reserve_id()
        capture = None
        if self.captures is not None:
            # The body is filed when the exchange ends (it is read, if at all, by a stage).
            capture = self.captures.start(record_id, exchange.method, exchange.path, headers, None)
        exchange.on_model = partial(setattr, entry, "model")
        return Watch(entry, record_id, capture)

    def finish(self, watch: Watch, exchange: Exchange, disconnected: bool) -> None:
        """File the exchange's record (queued: the caller flushes the store when it is
        `backlogged`), count it in the metrics and publish it."""
        now = time.time()
        self.inflight.leave(watch.entry)
        capture = watch.capture
        if capture is not None:
            capture.add_request_body(exchange.body)
            capture.finish()
        usage = watch.meter.close(now) if watch.meter is not None else None
        # What the client named is kept (clipped) in the record; metrics only take names the
        # config or discovery knows, so a client cannot invent label values.
        model = _model_of(exchange)
        named = model or exchange.model_name
        status = watch.status or 499
        duration = now - watch.started
        extra = {k: v for k, v in exchange.sink.extra_headers}
        optimized = extra.get(OPTIMIZED_HEADER)
        translation = exchange.translation.codec.label.decode() if exchange.translation else None
        record = ActivityRecord(
            id=watch.record_id,
            request_id=exchange.request_id,
            timestamp=watch.started,
            model=named or "",
            path=exchange.path,
            status=status,
            duration=duration,
            ttft=usage.ttft if usage else None,
            prompt_tokens=usage.prompt_tokens if usage else None,
            cached_tokens=usage.cached_tokens if usage else None,
            generated_tokens=usage.generated_tokens if usage else None,
            prefill_tps=usage.prefill_tps if usage else None,
            decode_tps=usage.decode_tps if usage else None,
            optimizer=optimized.decode(errors="replace") if optimized else None,
            translation=translation,
            session_id=watch.entry.session_id,
            client=watch.entry.client,
            user_agent=watch.entry.user_agent,
            has_capture=capture is not None,
        )
        stored = self.activity.queue(record)
        self.metrics.observe_request(
            model,
            exchange.path,
            status,
            duration,
            stored.ttft,
            prompt_tokens=stored.prompt_tokens,
            generated_tokens=stored.generated_tokens,
            cached_tokens=stored.cached_tokens,
            prefill_tps=stored.prefill_tps,
            decode_tps=stored.decode_tps,
        )
        if exchange.error is not None:
            self.metrics.observe_error(model, exchange.path, error_kind(exchange.error))
        elif watch.entry.cancelled:
            self.metrics.observe_error(model, exchange.path, CANCELLED)
        elif disconnected:
            self.metrics.observe_error(model, exchange.path, CLIENT_DISCONNECTED)
        elif status >= 400:
            self.metrics.observe_error(model, exchange.path, UPSTREAM_STATUS)
        if len(self.events):
            self.events.publish(ACTIVITY, {"id": stored.id})

    def _session(self, headers: Headers) -> str | None:
        for name in self._session_headers:
            if (value := _header(headers, name)) is not None:
                return value
        return None


class ObservedTransport:
    """Wraps a `Transport` (see `pipeline.sink`): the response as it goes to the client."""

    __slots__ = ("_inner", "_watch")

    def __init__(self, inner: Transport, watch: Watch) -> None:
        self._inner = inner
        self._watch = watch

    async def start(self, status: int, headers: Headers) -> None:
        watch = self._watch
        watch.status = status
        found = dict((k.lower(), v) for k, v in headers)
        streamed = found.get(b"content-type", b"").startswith(b"text/event-stream")
        if found.get(b"content-encoding", b"identity") == b"identity":
            family = FAMILY_OF_PATH.get(watch.entry.path, "other")
            # From the request's arrival: a model's load and the queue are part of the wait.
            watch.meter = UsageMeter(family, streamed, watch.started)
        if watch.capture is not None:
            watch.capture.add_response_head(status, headers)
        await self._inner.start(status, headers)

    async def body(self, chunk: bytes, more: bool) -> None:
        if chunk:
            self._tap(chunk)
        await self._inner.body(chunk, more)

    def relay_writer(self, chunked: bool, tap: Tap | None = None) -> RelayWrite:
        # The inner transport taps each chunk for us: no layer of our own per chunk.
        assert tap is None, "one observer per response"
        return self._inner.relay_writer(chunked, self._tap)

    def _tap(self, chunk: bytes) -> None:
        watch = self._watch
        watch.entry.bytes_out += len(chunk)
        if watch.meter is not None:
            watch.meter.feed(chunk, time.time())
        if watch.capture is not None:
            watch.capture.add_response_chunk(chunk)


def _model_of(exchange: Exchange) -> str | None:
    """The model as the config or discovery names it; None when the request named none of
    theirs."""
    if exchange.model_id is not None:
        return exchange.model_id
    if exchange.discovered is not None:
        return exchange.discovered.id
    if exchange.peer is not None:
        return exchange.peer.name
    return None


def _header(headers: Headers, name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None
