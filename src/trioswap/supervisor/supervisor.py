"""`Supervisor`: the facade the rest of trioswap uses. `lease(model)` to use a model (starting it
and evicting others as the group rules say), `unload()`, `restart()` (to start a model again with
its new launch command), and `statuses()` snapshots."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import AsyncExitStack
from typing import Literal

import trio

from trioswap.config import Config, ModelConfig
from trioswap.errors import ShuttingDown, TrioswapError
from trioswap.observe.logs import LogHub
from trioswap.supervisor.health import HealthClient
from trioswap.supervisor.lease import Lease
from trioswap.supervisor.process import ServerContext
from trioswap.supervisor.router import BeforeStop, Launch, ModelStatus, Router, TransitionListener
from trioswap.supervisor.scheduler import ModelState, UnloadResult
from trioswap.supervisor.sweep import find_survivors, instance_env, stop_survivors

log = logging.getLogger("trioswap.supervisor")

# When a restart stops the model: at once, after its requests in flight, or not at all.
RestartWhen = Literal["now", "when idle", "not running"]


async def _nothing_before_stop(model: ModelConfig) -> None:
    pass


def _as_configured(model: ModelConfig) -> ModelConfig:
    return model


class Supervisor:
    def __init__(
        self,
        config: Config,
        logs: LogHub,
        before_stop: BeforeStop = _nothing_before_stop,
        launch: Launch = _as_configured,
    ) -> None:
        self.config = config
        self._logs = logs
        self._before_stop = before_stop
        self._launch = launch
        self._router: Router | None = None
        self._nursery: trio.Nursery | None = None
        # Models a restart is about to stop: another restart of one of them adds nothing.
        self._restarting: set[str] = set()
        self.listeners: list[TransitionListener] = []

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own every model server until cancelled; cancelling stops them all. First, stop what
        an earlier trioswap on this config left running: it would hold the models' ports."""
        await self._sweep()
        async with AsyncExitStack() as exits, trio.open_nursery() as nursery:
            context = ServerContext(
                self._logs,
                HealthClient(exits),
                self.config.health_check_timeout,
                self.config.start_port,
                instance_env(self.config.path),
            )
            router = Router(
                self.config, context, nursery, self.listeners, self._before_stop, self._launch
            )
            await nursery.start(router.run)
            self._router = router
            self._nursery = nursery
            for model in self.config.preload:
                nursery.start_soon(self._preload, model)
            task_status.started()

    def lease(self, model: str) -> Lease:
        return Lease(self._router, model)

    async def unload(
        self, models: Iterable[str] | None = None, force: bool = False
    ) -> UnloadResult:
        """Stop `models` (None: all) after their in-flight requests (at most drainTimeout), or
        at once with `force`; returns when they are stopped."""
        if self._router is None:
            raise ShuttingDown()
        return await self._router.unload(models, force)

    def restart(self, model: str) -> RestartWhen:
        """Stop `model`, if it runs, and start it again (with what `launch` now gives), in the
        background: an idle one now, a busy one once its requests in flight are done (the same
        drain as an unload's). Says when the stop happens."""
        status = self.statuses().get(model)
        if status is None or status.state not in (ModelState.STARTING, ModelState.READY):
            return "not running"
        idle = status.state is ModelState.READY and status.in_flight == 0
        if model not in self._restarting and self._nursery is not None:
            self._restarting.add(model)
            self._nursery.start_soon(self._restart, model)
        return "now" if idle else "when idle"

    async def _restart(self, model: str) -> None:
        try:
            try:
                result = await self.unload([model])
            finally:
                self._restarting.discard(model)
            # Stopped by something else meanwhile (a swap, its ttl): it stays as that left it.
            if model not in result.stopped:
                return
            log.info("model %s: restarting with its new launch command", model)
            async with self.lease(model):
                pass
        except TrioswapError as exc:
            log.error("model %s: restarting failed: %s", model, exc)

    def statuses(self) -> dict[str, ModelStatus]:
        return {} if self._router is None else self._router.statuses()

    def state_of(self, model: str) -> ModelState:
        return ModelState.STOPPED if self._router is None else self._router.state_of(model)

    async def _sweep(self) -> None:
        path, grace = self.config.path, self.config.unload_timeout
        survivors = await trio.to_thread.run_sync(find_survivors, path)
        if survivors:
            for group in await trio.to_thread.run_sync(stop_survivors, survivors, grace):
                log.warning("stopped what an earlier trioswap left running: %s", group.describe())

    async def _preload(self, model: str) -> None:
        try:
            async with self.lease(model):
                log.info("model %s: preloaded", model)
        except Exception as exc:
            log.error("preloading model %s failed: %s", model, exc)
