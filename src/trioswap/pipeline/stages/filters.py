"""`filters`: a model's `filters.stripParams`, `filters.setParams`, `filters.setParamsByID` and
`useModelName` (for a model a running Ollama serves, its Ollama name: `ollama/x` → `x`).

Only the named fields change; every other field of the JSON body survives as the client sent it.
When nothing applies the body is forwarded byte for byte. As in llama-swap, params are set at the
top level, a value replacing the client's whole value (an object is not merged), and the params
`setParamsByID` has for the name the client asked for are set after `setParams`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trioswap.config import ModelConfig
from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.peers import PeerRoute, peer_routes
from trioswap.pipeline.stage import StageContext


@dataclass(frozen=True)
class _Plan:
    """One model's filters, merged once: what to strip, then what to set for each name."""

    strip: tuple[str, ...]
    set_params: Mapping[str, Any]
    # The requested name → `setParams` updated with that name's `setParamsByID` entry.
    set_by_name: Mapping[str, Mapping[str, Any]]
    use_model_name: str | None


def _plan(model: ModelConfig | PeerRoute) -> _Plan:
    f = model.filters
    return _Plan(
        strip=f.strip_params,
        set_params=f.set_params,
        set_by_name={name: {**f.set_params, **p} for name, p in f.set_params_by_id.items()},
        use_model_name=model.use_model_name,
    )


class Filters:
    def __init__(self, context: StageContext) -> None:
        self._plans = {model.id: _plan(model) for model in context.config.models.values()}
        # Peers' models by `peer/model`, which the config keeps apart from local ids.
        self._plans.update({r.name: _plan(r) for r in peer_routes(context.config).values()})

    async def __call__(self, exchange: Exchange) -> bool:
        body = exchange.json
        if body is None:
            return False
        if exchange.discovered is not None:
            plan = _plan(exchange.discovered.config)
        elif exchange.peer is not None:
            plan = self._plans[exchange.peer.name]
        elif exchange.model_id is not None:
            plan = self._plans[exchange.model_id]
        else:
            return False
        changed = False
        for name in plan.strip:
            if name in body:
                del body[name]
                changed = True
        params = plan.set_by_name.get(exchange.model_name or "", plan.set_params)
        if params:
            body.update(params)
            changed = True
        if plan.use_model_name is not None and body.get("model") != plan.use_model_name:
            body["model"] = plan.use_model_name
            changed = True
        exchange.body_changed |= changed
        return False
