"""`filters`: a model's (or a peer's) `filters.stripParams`, `filters.setParams` and
`useModelName`.

Only the named fields change; every other field of the JSON body survives as the client sent it.
When nothing applies the body is forwarded byte for byte.
"""

from __future__ import annotations

from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.stage import StageContext


class Filters:
    def __init__(self, context: StageContext) -> None:
        self._models = context.config.models

    async def __call__(self, exchange: Exchange) -> bool:
        body = exchange.json
        peer = exchange.peer
        if body is None or (peer is None and exchange.model_id is None):
            return False
        # A peer's model: the peer's filters, and the model named as the peer knows it.
        model = self._models[exchange.model_id] if peer is None else peer
        changed = False
        for name in model.filters.strip_params:
            if name in body:
                del body[name]
                changed = True
        for name, value in model.filters.set_params.items():
            body[name] = value
            changed = True
        if model.use_model_name is not None and body.get("model") != model.use_model_name:
            body["model"] = model.use_model_name
            changed = True
        exchange.body_changed |= changed
        return False
