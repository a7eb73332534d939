"""`auth`: when `apiKeys` are set, a request must carry one of them (see `trioswap.auth`)."""

from __future__ import annotations

from trioswap.auth import ApiKeys
from trioswap.errors import Unauthorized
from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.stage import StageContext


class Auth:
    def __init__(self, context: StageContext) -> None:
        self._keys = ApiKeys(context.config.api_keys)

    async def __call__(self, exchange: Exchange) -> bool:
        if not self._keys.allows(exchange.headers):
            raise Unauthorized()
        return False
