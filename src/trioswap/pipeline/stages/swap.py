"""`swap`: take a lease on the model's server, starting it (and stopping what it conflicts
with) if needed. The lease is held until the exchange ends."""

from __future__ import annotations

from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.stage import StageContext


class Swap:
    def __init__(self, context: StageContext) -> None:
        self._supervisor = context.supervisor

    async def __call__(self, exchange: Exchange) -> bool:
        assert exchange.model_id is not None
        lease = self._supervisor.lease(exchange.model_id)
        exchange.server = await exchange.stack.enter_async_context(lease)
        return False
