"""The router: the one owner of scheduling state, the synchronous `Scheduler`.

Requests, releases and unloads are handed to the scheduler by the task that makes them, at
once: the scheduler never blocks and trio runs one task at a time, so no event can come between
(and a request costs no round trip through another task, which was a twentieth of the proxy's
CPU per request). The router's task keeps the rest: the ttl and drain deadlines, and what the
owner task of each model server start reports (`Started`, `Healthy`, `Exited`), which arrives as
a frozen event on one memory channel. Slow work (a start's owner task, a stop's before-stop
hook) runs in tasks and reports back as events.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import trio

from trioswap.config import Config, ModelConfig
from trioswap.errors import ModelStartError, ShuttingDown, TrioswapError
from trioswap.redact import shown_command
from trioswap.supervisor.eviction import GroupRules
from trioswap.supervisor.process import (
    Exited,
    Healthy,
    ModelServer,
    ServerContext,
    ServerEvent,
    Started,
)
from trioswap.supervisor.scheduler import (
    ModelState,
    RequestId,
    Scheduler,
    UnloadId,
    UnloadResult,
)

log = logging.getLogger("trioswap.supervisor")

# Server events are few (three per start) and the router never blocks, so a short buffer is
# plenty; a full buffer only makes senders wait their turn.
EVENT_BUFFER = 256

TransitionListener = Callable[[str, ModelState, ModelState], None]
BeforeStop = Callable[[ModelConfig], Awaitable[None]]
# A model's config as it is to be started now (runtime overrides applied).
Launch = Callable[[ModelConfig], ModelConfig]


class Waiter:
    """A request's one-shot reply: the server it may use, or why not."""

    __slots__ = ("done", "error", "server")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.server: ModelServer | None = None
        self.error: TrioswapError | None = None


class UnloadReply:
    """An unload's one-shot reply: what it did, or why it did not finish."""

    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: UnloadResult | None = None
        self.error: TrioswapError | None = None


@dataclass(frozen=True)
class ModelStatus:
    """A snapshot of one model, for `/running`, the UI and tests."""

    state: ModelState
    in_flight: int
    waiting: int
    last_error: str | None
    pid: int | None  # the model server's, while it has one
    proxy: str  # where it is (or would be) served: the port actually used
    cmd: str  # its command line as started, shell-quoted, secrets masked
    generation: int | None = None  # which start of the model's server, while it has one
    ready_since: float | None = None  # Unix time it became healthy, while it runs
    ttl_left: float | None = None  # seconds until its ttl stops it, if it stays idle


@dataclass
class _Run:
    """The router's record of a model's current start, from `start` until `Exited`."""

    server: ModelServer
    pid: int | None = None
    healthy: bool = False
    stopping: bool = False
    ready_since: float | None = None


class Router:
    def __init__(
        self,
        config: Config,
        context: ServerContext,
        process_nursery: trio.Nursery,
        listeners: list[TransitionListener],
        before_stop: BeforeStop,
        launch: Launch,
    ) -> None:
        self._configs = config.models
        self._launch = launch
        self._context = context
        self._process_nursery = process_nursery
        self._listeners = listeners
        self._before_stop = before_stop
        self._send, self._receive = trio.open_memory_channel[ServerEvent](EVENT_BUFFER)
        self._scheduler = Scheduler(
            config.models, GroupRules.from_config(config), self, config.drain_timeout
        )
        self._allocated = {m: c.port for m, c in config.models.items() if c.port is not None}
        self._ids = itertools.count(1)
        self._generations = itertools.count(1)
        self._runs: dict[str, _Run] = {}
        self._waiters: dict[RequestId, Waiter] = {}
        self._unloads: dict[UnloadId, UnloadReply] = {}
        self._task_nursery: trio.Nursery
        # Requests are taken while the router runs; its wait for the next deadline, moved by
        # what the scheduler is handed in between.
        self._open = False
        self._tick = trio.CancelScope()

    # -- the public seam --------------------------------------------------------------------

    async def acquire(self, model: str) -> tuple[RequestId, ModelServer]:
        """Wait until `model` runs and may take one more request; release the id after."""
        if not self._open:
            raise ShuttingDown()
        request = next(self._ids)
        waiter = self._waiters[request] = Waiter()
        self._scheduler.on_request(request, model, trio.current_time())
        self._rearm()
        if not waiter.done.is_set():
            try:
                await waiter.done.wait()
            except BaseException:
                # Cancelled: hand back the grant if it came, so the model stays evictable.
                self._release(request)
                raise
        if waiter.error is not None:
            # One failed start answers many waiters with the same error object: drop the
            # traceback each time so it doesn't grow with every raise.
            raise waiter.error.with_traceback(None)
        assert waiter.server is not None
        return request, waiter.server

    async def release(self, request: RequestId) -> None:
        self._release(request)

    def _release(self, request: RequestId) -> None:
        if self._open:
            self._waiters.pop(request, None)
            self._scheduler.on_release(request, trio.current_time())
            self._rearm()

    async def unload(self, models: Iterable[str] | None, force: bool) -> UnloadResult:
        if not self._open:
            raise ShuttingDown()
        unload = next(self._ids)
        reply = self._unloads[unload] = UnloadReply()
        names = None if models is None else tuple(models)
        self._scheduler.on_unload(unload, names, trio.current_time(), force)
        self._rearm()
        await reply.done.wait()
        if reply.error is not None:
            raise reply.error
        assert reply.result is not None
        return reply.result

    def statuses(self) -> dict[str, ModelStatus]:
        out: dict[str, ModelStatus] = {}
        now = trio.current_time()
        for model, slot in self._scheduler.statuses().items():
            run = self._runs.get(model)
            # Running: the command it was started with; else the one it would start with.
            config = self._launch(self._configs[model]) if run is None else run.server.config
            out[model] = ModelStatus(
                slot.state,
                slot.in_flight,
                slot.waiting,
                slot.last_error,
                None if run is None else run.pid,
                config.proxy,
                shown_command(config.cmd),
                None if run is None else run.server.generation,
                None if run is None else run.ready_since,
                None if slot.expires is None else max(0.0, slot.expires - now),
            )
        return out

    def state_of(self, model: str) -> ModelState:
        return self._scheduler.state_of(model)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery, self._receive:
                self._task_nursery = nursery
                self._open = True
                task_status.started()
                while True:
                    with trio.CancelScope(deadline=self._next_deadline()) as self._tick:
                        self._dispatch(await self._receive.receive())
                        continue
                    self._scheduler.on_tick(trio.current_time())
        finally:
            self._open = False
            self._scheduler.on_shutdown()
            for reply in [*self._waiters.values(), *self._unloads.values()]:
                reply.error = ShuttingDown()
                reply.done.set()
            self._waiters.clear()
            self._unloads.clear()

    def _next_deadline(self) -> float:
        deadline = self._scheduler.next_deadline()
        return math.inf if deadline is None else deadline

    def _rearm(self) -> None:
        """The scheduler was handed something: its next deadline may have moved (setting a
        scope's deadline costs a trip through trio's deadline heap, so only when it did)."""
        deadline = self._next_deadline()
        if deadline != self._tick.deadline:
            self._tick.deadline = deadline

    def _dispatch(self, event: ServerEvent) -> None:
        now = trio.current_time()
        sched = self._scheduler
        match event:
            case Started(model=model, generation=generation, pid=pid):
                if (run := self._current(model, generation)) is not None:
                    run.pid = pid
            case Healthy(model=model, generation=generation):
                if (run := self._current(model, generation)) is not None:
                    run.healthy = True
                    run.ready_since = time.time()
                    sched.on_start_done(model, None, now)
            case Exited(model=model, generation=generation, reason=reason, log_tail=tail):
                if (run := self._current(model, generation)) is not None:
                    del self._runs[model]
                    self._on_exited(run, reason, tail, now)

    def _current(self, model: str, generation: int) -> _Run | None:
        run = self._runs.get(model)
        return run if run is not None and run.server.generation == generation else None

    def _on_exited(self, run: _Run, reason: str, tail: tuple[str, ...], now: float) -> None:
        model = run.server.config.id
        if run.stopping:
            self._scheduler.on_stop_done(model, now)
        elif not run.healthy:
            error = ModelStartError(model, reason, list(tail))
            log.error("%s", error)
            self._scheduler.on_start_done(model, error, now)
        else:
            log.warning("model %s: server %s", model, reason)
            self._scheduler.on_exited(model, with_log_tail(reason, tail), now)

    # -- Effects, called by the scheduler --------------------------------------------------

    def grant(self, request: RequestId, model: str) -> None:
        waiter = self._waiters[request]
        waiter.server = self._runs[model].server
        waiter.done.set()

    def fail(self, request: RequestId, error: TrioswapError) -> None:
        waiter = self._waiters.pop(request)
        waiter.error = error
        waiter.done.set()

    def start(self, model: str) -> None:
        # Not the ports of other models, nor those other servers were moved to.
        avoid = {port for m, port in self._allocated.items() if m != model}
        avoid.update(r.server.config.port for r in self._runs.values() if r.server.config.port)
        config = self._launch(self._configs[model])
        server = ModelServer(config, next(self._generations), self._context, avoid)
        self._runs[model] = _Run(server)
        self._process_nursery.start_soon(server.run, self._send.send)

    def stop(self, model: str) -> None:
        run = self._runs[model]
        run.stopping = True
        self._task_nursery.start_soon(self._stop, run.server)

    def unloaded(self, unload: UnloadId, result: UnloadResult) -> None:
        reply = self._unloads.pop(unload)
        reply.result = result
        reply.done.set()

    def transition(self, model: str, old: ModelState, new: ModelState) -> None:
        log.info("model %s: %s -> %s", model, old, new)
        for listener in self._listeners:
            listener(model, old, new)

    async def _stop(self, server: ModelServer) -> None:
        await self._before_stop(server.config)
        server.stop()


def with_log_tail(reason: str, tail: Iterable[str]) -> str:
    lines = list(tail)
    return reason + ("\nlast log lines:\n" + "\n".join(lines) if lines else "")
