"""Model servers as child processes, and who may run when.

`Supervisor` is the facade the rest of trioswap uses: `lease(model)` to use a model (starting it
and evicting others as the group rules say), `unload()`, and `statuses()` snapshots.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType

import httpx
import trio

from trioswap.config import Config, ModelConfig
from trioswap.errors import ShuttingDown
from trioswap.observe.logs import LogHub
from trioswap.supervisor.eviction import GroupRules
from trioswap.supervisor.process import ModelServer
from trioswap.supervisor.router import Release, Request, Router, TransitionListener, Unload, Waiter
from trioswap.supervisor.scheduler import ModelState, ModelStatus

__all__ = ["Lease", "ModelServer", "ModelState", "ModelStatus", "Supervisor"]

log = logging.getLogger("trioswap.supervisor")


BeforeStop = Callable[[ModelConfig], Awaitable[None]]


async def _nothing_before_stop(model: ModelConfig) -> None:
    pass


class Supervisor:
    def __init__(
        self, config: Config, logs: LogHub, before_stop: BeforeStop = _nothing_before_stop
    ) -> None:
        self.config = config
        self._logs = logs
        self._before_stop = before_stop
        self._ids = itertools.count()
        self._router: Router | None = None
        self.servers: dict[str, ModelServer] = {}
        self.listeners: list[TransitionListener] = []

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own every model server until cancelled; cancelling stops them all."""
        # No keep-alive for health probes: an idle connection left open to a model server makes
        # some (llama-server) wait for it when they are stopped.
        no_keepalive = httpx.Limits(max_keepalive_connections=0)
        async with (
            httpx.AsyncClient(timeout=None, limits=no_keepalive) as health_client,
            trio.open_nursery() as nursery,
        ):
            self.servers = {
                model_id: ModelServer(
                    model, self._logs, health_client, self.config.health_check_timeout
                )
                for model_id, model in self.config.models.items()
            }
            router = Router(
                self.servers,
                GroupRules.from_config(self.config),
                nursery,
                self.listeners,
                self._before_stop,
                self.config.drain_timeout,
            )
            await nursery.start(router.run)
            self._router = router
            for model in self.config.preload:
                nursery.start_soon(self._preload, model)
            task_status.started()

    def lease(self, model: str) -> Lease:
        return Lease(self, model)

    async def unload(self, models: Iterable[str] | None = None) -> None:
        await self._events().send(Unload(None if models is None else tuple(models)))

    def statuses(self) -> dict[str, ModelStatus]:
        if self._router is None:
            return {}
        return self._router.statuses()

    def state_of(self, model: str) -> ModelState:
        if self._router is None:
            return ModelState.STOPPED
        return self._router.state_of(model)

    def _events(self) -> trio.MemorySendChannel[Request | Release | Unload]:
        if self._router is None:
            raise ShuttingDown()
        return self._router.events  # type: ignore[return-value]

    async def _preload(self, model: str) -> None:
        try:
            async with self.lease(model):
                log.info("model %s: preloaded", model)
        except Exception as exc:
            log.error("preloading model %s failed: %s", model, exc)


class Lease:
    """`async with supervisor.lease(model) as server:` — the model is running and will not be
    stopped until the block exits."""

    __slots__ = ("_granted", "_id", "_model", "_supervisor")

    def __init__(self, supervisor: Supervisor, model: str) -> None:
        self._supervisor = supervisor
        self._model = model
        self._id = next(supervisor._ids)
        self._granted = False

    async def __aenter__(self) -> ModelServer:
        waiter = Waiter()
        try:
            await self._supervisor._events().send(Request(self._id, self._model, waiter))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ShuttingDown() from None
        try:
            await waiter.done.wait()
        except BaseException:
            await self._release()
            raise
        if waiter.error is not None:
            # One failed start answers many waiters with the same error object: drop the
            # traceback each time so it doesn't grow with every raise.
            raise waiter.error.with_traceback(None)
        assert waiter.server is not None
        self._granted = True
        return waiter.server

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._granted:
            await self._release()

    async def _release(self) -> None:
        with trio.CancelScope(shield=True):
            try:
                await self._supervisor._events().send(Release(self._id))
            except (trio.BrokenResourceError, trio.ClosedResourceError, ShuttingDown):
                pass
