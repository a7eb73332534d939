"""Peers: other servers (another trioswap, llama-swap, a hosted API) that serve some model ids.

A request for a peer's model runs the same pipeline as a local one, minus the swap: `resolve`
finds its `PeerRoute` (a local model or alias of the same name wins), `filters` applies the peer's
filters and names the model as the peer knows it, and `stream` sends it to the peer's URL with
the peer's `apiKey` in place of the client's credentials. Nothing is started, leased or listed in
/running for a peer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from trioswap.config import Config, Filters, PeerConfig


@dataclass(frozen=True, slots=True)
class PeerRoute:
    """A model id a peer serves. `filters` and `use_model_name` are what the `filters` stage
    reads off a local model too: the peer's filters, and the peer's own id for the model."""

    # `peer/model`: how errors name it, whichever name the client used.
    name: str
    peer: PeerConfig
    filters: Filters
    use_model_name: str


def peer_routes(config: Config) -> Mapping[str, PeerRoute]:
    """Every name a request may use for a peer's model, computed once at startup."""
    return {
        name: PeerRoute(f"{t.peer.id}/{t.model}", t.peer, t.peer.filters, t.model)
        for name, t in config.peer_models.items()
    }
