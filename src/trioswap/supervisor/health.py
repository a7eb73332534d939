"""`HealthClient`: the HTTP client of the model servers' health probes, made at the first probe.

httpx takes longer to import than trioswap takes to answer its first request, and a trioswap
whose models never start never needs it. No keep-alive: an idle connection left open to a model
server makes some (llama-server) wait for it when they are stopped.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import httpx


class HealthGetter(Protocol):
    """What a health probe needs: `HealthClient`, or any `httpx.AsyncClient` (the tests')."""

    async def get(self, url: str) -> httpx.Response: ...


class HealthClient:
    """`get(url)` as httpx's client has it; the client is closed with `exits`, which the
    supervisor owns."""

    def __init__(self, exits: AsyncExitStack) -> None:
        self._exits = exits
        self._client: httpx.AsyncClient | None = None

    async def get(self, url: str) -> httpx.Response:
        if self._client is None:
            import httpx  # at the first model start; see the module's docstring

            no_keepalive = httpx.Limits(max_keepalive_connections=0)
            self._client = httpx.AsyncClient(timeout=None, limits=no_keepalive)
            self._exits.push_async_callback(self._client.aclose)
        return await self._client.get(url)
