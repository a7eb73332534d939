"""The one task that owns scheduling state.

Everything that could change who runs — requests, releases, finished starts and stops, unexpected
exits, unloads, ttl deadlines — arrives as a frozen event on one memory channel and is handed to the
synchronous `Scheduler`. Slow work runs in tasks of the router's nursery and reports back as events.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import trio

from trioswap.config import ModelConfig
from trioswap.errors import ModelStartError, ShuttingDown, TrioswapError
from trioswap.supervisor.eviction import GroupRules
from trioswap.supervisor.process import ModelServer
from trioswap.supervisor.scheduler import ModelState, ModelStatus, RequestId, Scheduler

log = logging.getLogger("trioswap.supervisor")

# Requests and releases are tiny and the router never blocks, so a short buffer is plenty; a
# full buffer only makes senders wait their turn.
EVENT_BUFFER = 256


class Waiter:
    """A request's one-shot reply: the server it may use, or why not."""

    __slots__ = ("done", "error", "server")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.server: ModelServer | None = None
        self.error: TrioswapError | None = None


@dataclass(frozen=True)
class Request:
    id: RequestId
    model: str
    waiter: Waiter


@dataclass(frozen=True)
class Release:
    id: RequestId


@dataclass(frozen=True)
class StartDone:
    model: str
    error: ModelStartError | None


@dataclass(frozen=True)
class StopDone:
    model: str


@dataclass(frozen=True)
class Exited:
    model: str
    reason: str
    generation: int  # which start of the model this was, so a late event can't hit a restart


@dataclass(frozen=True)
class Unload:
    models: tuple[str, ...] | None


Event = Request | Release | StartDone | StopDone | Exited | Unload
TransitionListener = Callable[[str, ModelState, ModelState], None]


class Router:
    def __init__(
        self,
        servers: Mapping[str, ModelServer],
        rules: GroupRules,
        process_nursery: trio.Nursery,
        listeners: list[TransitionListener],
        before_stop: Callable[[ModelConfig], Awaitable[None]],
        drain_timeout: float,
    ) -> None:
        self._servers = servers
        self._process_nursery = process_nursery
        self._send, self._receive = trio.open_memory_channel[Event](EVENT_BUFFER)
        self._waiters: dict[RequestId, Waiter] = {}
        self._scheduler = Scheduler(
            {m: s.config for m, s in servers.items()}, rules, self, drain_timeout
        )
        self._task_nursery: trio.Nursery
        self._listeners = listeners
        self._before_stop = before_stop

    @property
    def events(self) -> trio.MemorySendChannel[Event]:
        return self._send

    def statuses(self) -> dict[str, ModelStatus]:
        return self._scheduler.statuses()

    def state_of(self, model: str) -> ModelState:
        return self._scheduler.state_of(model)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery, self._receive:
                self._task_nursery = nursery
                task_status.started()
                while True:
                    deadline = self._scheduler.next_deadline()
                    with trio.move_on_at(math.inf if deadline is None else deadline):
                        event = await self._receive.receive()
                        self._dispatch(event)
                        continue
                    self._scheduler.on_tick(trio.current_time())
        finally:
            self._scheduler.on_shutdown()
            for waiter in self._waiters.values():
                waiter.error = ShuttingDown()
                waiter.done.set()
            self._waiters.clear()

    def _dispatch(self, event: Event) -> None:
        now = trio.current_time()
        sched = self._scheduler
        match event:
            case Request(id=rid, model=model, waiter=waiter):
                self._waiters[rid] = waiter
                sched.on_request(rid, model, now)
            case Release(id=rid):
                self._waiters.pop(rid, None)
                sched.on_release(rid, now)
            case StartDone(model=model, error=error):
                sched.on_start_done(model, error, now)
            case StopDone(model=model):
                sched.on_stop_done(model, now)
            case Exited(model=model, reason=reason, generation=generation):
                if generation == self._servers[model].generation:
                    sched.on_exited(model, reason, now)
            case Unload(models=models):
                sched.on_unload(models, now)

    # -- Effects, called by the scheduler --------------------------------------------------

    def grant(self, request: RequestId, model: str) -> None:
        waiter = self._waiters[request]
        waiter.server = self._servers[model]
        waiter.done.set()

    def fail(self, request: RequestId, error: TrioswapError) -> None:
        waiter = self._waiters.pop(request)
        waiter.error = error
        waiter.done.set()

    def start(self, model: str) -> None:
        self._task_nursery.start_soon(self._start, model)

    def stop(self, model: str) -> None:
        self._task_nursery.start_soon(self._stop, model)

    def transition(self, model: str, old: ModelState, new: ModelState) -> None:
        log.info("model %s: %s -> %s", model, old, new)
        for listener in self._listeners:
            listener(model, old, new)

    async def _start(self, model: str) -> None:
        server = self._servers[model]

        generation = server.generation + 1

        def exited(reason: str) -> None:
            # The process task calls this from the supervisor's nursery; the router's own nursery
            # is closed only at shutdown, when nobody needs to hear of the exit.
            with contextlib.suppress(RuntimeError):
                self._task_nursery.start_soon(self._send.send, Exited(model, reason, generation))

        try:
            await server.start(self._process_nursery, exited)
        except ModelStartError as exc:
            log.error("%s", exc)
            await self._send.send(StartDone(model, exc))
        else:
            await self._send.send(StartDone(model, None))

    async def _stop(self, model: str) -> None:
        server = self._servers[model]
        await self._before_stop(server.config)
        await server.stop()
        await self._send.send(StopDone(model))
