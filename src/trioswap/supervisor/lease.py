"""`async with supervisor.lease(model) as server:` — the model is running and will not be stopped
(except by a forced unload or a drainTimeout) until the block exits."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

from trioswap.errors import ShuttingDown
from trioswap.supervisor.process import ModelServer
from trioswap.supervisor.scheduler import RequestId


class Grants(Protocol):
    """Who hands out leases: the router."""

    async def acquire(self, model: str) -> tuple[RequestId, ModelServer]: ...
    async def release(self, request: RequestId) -> None: ...


class Lease:
    __slots__ = ("_grants", "_model", "_request")

    def __init__(self, grants: Grants | None, model: str) -> None:
        self._grants = grants  # None: the supervisor is not running
        self._model = model
        self._request: RequestId | None = None

    async def __aenter__(self) -> ModelServer:
        if self._grants is None:
            raise ShuttingDown()
        self._request, server = await self._grants.acquire(self._model)
        return server

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._grants is not None and self._request is not None:
            await self._grants.release(self._request)
