"""Who may run when: the synchronous heart of the supervisor.

Every method is a plain `def` called by the one router task, so nothing interleaves inside them
and no locks exist. The scheduler acts on the world only through `Effects`; slow work (starting,
stopping) happens elsewhere and comes back as another call.

One *operation* runs at a time: stop the models a target conflicts with (after their in-flight
requests finish), then start the target — or, for an unload, only the stopping. While an operation
waits to stop a model, new requests for that model queue behind it, so a swap is never starved.
An operation whose target nobody waits for any more is dropped. Pending requests are served in
arrival order.

A *forced* unload is no operation: it stops its models at once, in-flight requests or not, even
while an operation waits for them (which is how a hung model is got rid of).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from trioswap.config import ModelConfig
from trioswap.errors import (
    ModelNotFound,
    ModelStartError,
    ShuttingDown,
    TrioswapError,
)
from trioswap.supervisor.eviction import GroupRules, evict_for

RequestId = int
UnloadId = int


class ModelState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    FAILED = "failed"


class Effects(Protocol):
    def grant(self, request: RequestId, model: str) -> None: ...
    def fail(self, request: RequestId, error: TrioswapError) -> None: ...
    def start(self, model: str) -> None: ...
    def stop(self, model: str) -> None: ...
    def unloaded(self, unload: UnloadId, result: UnloadResult) -> None: ...
    def transition(self, model: str, old: ModelState, new: ModelState) -> None: ...


@dataclass
class _Slot:
    config: ModelConfig
    state: ModelState = ModelState.STOPPED
    in_flight: int = 0
    idle_since: float = 0.0
    last_error: str | None = None


@dataclass
class _Pending:
    request: RequestId
    model: str


@dataclass(frozen=True)
class UnloadResult:
    stopped: tuple[str, ...]  # the models it named that ran and are now stopped
    forced: tuple[str, ...]  # those it stopped while they still had requests in flight


@dataclass
class _Unload:
    id: UnloadId
    models: frozenset[str] | None  # None: every running model
    force: bool = False
    waiting: set[str] = field(default_factory=set)  # forced: what must be gone before the answer
    stopped: set[str] = field(default_factory=set)
    forced: set[str] = field(default_factory=set)

    def names(self, model: str) -> bool:
        return self.models is None or model in self.models


@dataclass
class _Operation:
    target: str | None
    evict: set[str]
    starting: bool = False
    # After this, models still serving requests are stopped anyway (drainTimeout).
    drain_deadline: float | None = None
    unload: _Unload | None = None  # the unload this operation carries out, to answer it


@dataclass(frozen=True)
class SlotStatus:
    state: ModelState
    in_flight: int
    waiting: int
    last_error: str | None
    # When its ttl ends if it stays idle (the scheduler's clock); None while it serves
    # requests, has no ttl, or is not ready.
    expires: float | None = None


@dataclass
class Scheduler:
    models: Mapping[str, ModelConfig]
    rules: GroupRules
    effects: Effects
    drain_timeout: float = 0.0  # 0: a swap waits for in-flight requests as long as they take
    _slots: dict[str, _Slot] = field(init=False)
    _queue: deque[_Pending | _Unload] = field(init=False, default_factory=deque)
    _granted: dict[RequestId, str] = field(init=False, default_factory=dict)
    _operation: _Operation | None = field(init=False, default=None)
    _forced: list[_Unload] = field(init=False, default_factory=list)
    _closed: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self._slots = {model_id: _Slot(cfg) for model_id, cfg in self.models.items()}

    # -- events ---------------------------------------------------------------------------

    def on_request(self, request: RequestId, model: str, now: float) -> None:
        if self._closed:
            self.effects.fail(request, ShuttingDown())
            return
        if model not in self._slots:
            self.effects.fail(request, ModelNotFound(model))
            return
        self._queue.append(_Pending(request, model))
        self._advance(now)

    def on_release(self, request: RequestId, now: float) -> None:
        """A request finished, or was cancelled before or after its grant."""
        model = self._granted.pop(request, None)
        if model is None:
            self._drop_pending(request)
        else:
            slot = self._slots[model]
            slot.in_flight -= 1
            if slot.in_flight == 0:
                slot.idle_since = now
        self._advance(now)

    def on_start_done(self, model: str, error: ModelStartError | None, now: float) -> None:
        slot = self._slots[model]
        self._operation = None
        if error is None:
            slot.last_error = None
            slot.idle_since = now
            self._set(model, ModelState.READY)
        else:
            slot.last_error = str(error)
            self._set(model, ModelState.FAILED)
            for item in [p for p in self._queue if isinstance(p, _Pending) and p.model == model]:
                self._queue.remove(item)
                self.effects.fail(item.request, error)
        self._advance(now)

    def on_stop_done(self, model: str, now: float) -> None:
        self._set(model, ModelState.STOPPED)
        if (op := self._operation) is not None and model in op.evict:
            op.evict.discard(model)
            if op.unload is not None:
                op.unload.stopped.add(model)
        self._advance(now)

    def on_exited(self, model: str, reason: str, now: float) -> None:
        """A ready model server died on its own. Its in-flight requests fail on their own
        connections; the next request starts it again."""
        slot = self._slots[model]
        if slot.state is ModelState.READY:
            slot.last_error = reason
            self._set(model, ModelState.FAILED)
            if self._operation is not None:
                self._operation.evict.discard(model)
        self._advance(now)

    def on_unload(
        self, unload: UnloadId, models: Iterable[str] | None, now: float, force: bool = False
    ) -> None:
        """Stop `models` (None: every running one) once their requests are done (at most
        drainTimeout), or at once with `force`; answered by `Effects.unloaded`."""
        item = _Unload(unload, None if models is None else frozenset(models), force)
        if force:
            alive = (ModelState.STARTING, ModelState.READY, ModelState.STOPPING)
            item.waiting = {
                m for m, slot in self._slots.items() if item.names(m) and slot.state in alive
            }
            self._forced.append(item)
        else:
            self._queue.append(item)
        self._advance(now)

    def on_tick(self, now: float) -> None:
        self._advance(now)

    def on_shutdown(self) -> None:
        """trioswap is exiting: refuse new work. The processes are stopped by their owners."""
        self._closed = True
        for item in self._queue:
            if isinstance(item, _Pending):
                self.effects.fail(item.request, ShuttingDown())
        self._queue.clear()
        # Unloads are answered by whoever shuts the scheduler down.
        self._forced.clear()
        if self._operation is not None:
            self._operation.unload = None

    # -- reads ------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When the next ttl expires or a swap stops waiting for requests, if one can act now."""
        if self._closed:
            return None
        if (op := self._operation) is not None:
            draining = any(
                self._slots[m].state is ModelState.READY and self._slots[m].in_flight
                for m in op.evict
            )
            return op.drain_deadline if draining else None
        deadlines = [
            slot.idle_since + slot.config.ttl
            for slot in self._slots.values()
            if slot.state is ModelState.READY and slot.in_flight == 0 and slot.config.ttl > 0
        ]
        return min(deadlines, default=None)

    def state_of(self, model: str) -> ModelState:
        return self._slots[model].state

    def statuses(self) -> dict[str, SlotStatus]:
        waiting: dict[str, int] = {}
        for item in self._queue:
            if isinstance(item, _Pending):
                waiting[item.model] = waiting.get(item.model, 0) + 1
        return {
            model_id: SlotStatus(
                slot.state,
                slot.in_flight,
                waiting.get(model_id, 0),
                slot.last_error,
                slot.idle_since + slot.config.ttl
                if slot.state is ModelState.READY and not slot.in_flight and slot.config.ttl > 0
                else None,
            )
            for model_id, slot in self._slots.items()
        }

    # -- the decision -----------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        # An operation with nothing left to stop and nothing to start ends at once; then the
        # next one may begin.
        while True:
            self._grant_ready()
            self._force_stops()
            if self._operation is None:
                self._operation = self._next_operation(now)
                if self._operation is None:
                    return
            self._progress(self._operation, now)
            if self._operation is not None:
                return

    def _grant_ready(self) -> None:
        evicting = self._operation.evict if self._operation else set()
        kept: deque[_Pending | _Unload] = deque()
        for item in self._queue:
            if isinstance(item, _Pending) and item.model not in evicting:
                slot = self._slots[item.model]
                limit = slot.config.concurrency_limit
                # Over concurrencyLimit a request waits its turn (llama-swap answers 429).
                if slot.state is ModelState.READY and not (limit and slot.in_flight >= limit):
                    slot.in_flight += 1
                    self._granted[item.request] = item.model
                    self.effects.grant(item.request, item.model)
                    continue
            kept.append(item)
        self._queue = kept

    def _force_stops(self) -> None:
        """Stop what forced unloads name as soon as it is ready; answer them once it is gone."""
        for item in list(self._forced):
            for model in sorted(item.waiting):
                slot = self._slots[model]
                if slot.state is ModelState.READY:
                    self._stop(model, item)
                elif slot.state is ModelState.STOPPED:
                    item.waiting.discard(model)
                    item.stopped.add(model)
                elif slot.state is ModelState.FAILED:
                    item.waiting.discard(model)
            if not item.waiting:
                self._forced.remove(item)
                self._answer(item)

    def _running(self) -> set[str]:
        """Models with a process: what a start may conflict with, even while it is stopping."""
        active = (ModelState.READY, ModelState.STARTING, ModelState.STOPPING)
        return {m for m, slot in self._slots.items() if slot.state in active}

    def _next_operation(self, now: float) -> _Operation | None:
        deadline = now + self.drain_timeout if self.drain_timeout > 0 else None
        for item in self._queue:
            if isinstance(item, _Unload):
                self._queue.remove(item)
                running = self._running()
                evict = running if item.models is None else running & item.models
                return _Operation(None, evict, drain_deadline=deadline, unload=item)
            if self._slots[item.model].state in (ModelState.STOPPED, ModelState.FAILED):
                evict = evict_for(item.model, self._running(), self.rules)
                return _Operation(item.model, evict, drain_deadline=deadline)
        expired = {
            m
            for m, slot in self._slots.items()
            if slot.state is ModelState.READY
            and slot.in_flight == 0
            and slot.config.ttl > 0
            and now >= slot.idle_since + slot.config.ttl
        }
        return _Operation(None, expired) if expired else None

    def _progress(self, op: _Operation, now: float) -> None:
        if op.target is not None and not op.starting and not self._awaited(op.target):
            # Everyone who wanted the target left: stop nothing more and start nothing (stops
            # already under way finish).
            op.target = None
            op.evict = {m for m in op.evict if self._slots[m].state is ModelState.STOPPING}
        overdue = op.drain_deadline is not None and now >= op.drain_deadline
        for model in sorted(op.evict):
            slot = self._slots[model]
            if slot.state in (ModelState.STOPPED, ModelState.FAILED):
                op.evict.discard(model)
            elif slot.state is ModelState.READY and (slot.in_flight == 0 or overdue):
                # Overdue, its remaining requests end with an error when the server goes.
                self._stop(model, op.unload)
        if op.evict or op.starting:
            return
        if op.target is None or self._closed:
            self._operation = None
            if op.unload is not None:
                self._answer(op.unload)
            return
        op.starting = True
        self._set(op.target, ModelState.STARTING)
        self.effects.start(op.target)

    def _stop(self, model: str, unload: _Unload | None) -> None:
        if unload is not None:
            unload.stopped.add(model)
            if self._slots[model].in_flight:
                unload.forced.add(model)
        self._set(model, ModelState.STOPPING)
        self.effects.stop(model)

    def _answer(self, unload: _Unload) -> None:
        result = UnloadResult(tuple(sorted(unload.stopped)), tuple(sorted(unload.forced)))
        self.effects.unloaded(unload.id, result)

    def _awaited(self, model: str) -> bool:
        return any(isinstance(p, _Pending) and p.model == model for p in self._queue)

    def _drop_pending(self, request: RequestId) -> None:
        for item in self._queue:
            if isinstance(item, _Pending) and item.request == request:
                self._queue.remove(item)
                return

    def _set(self, model: str, state: ModelState) -> None:
        slot = self._slots[model]
        if slot.state is not state:
            old, slot.state = slot.state, state
            self.effects.transition(model, old, state)
