"""What a stage is, and what stages are built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from trioswap.config import Config
from trioswap.optimizer.tokens import Counters, default_cache_dir
from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.translation import LearnedApis
from trioswap.pipeline.upstream import PoolFor
from trioswap.runtime import RuntimeState
from trioswap.supervisor import Supervisor

if TYPE_CHECKING:
    from trioswap.discovery.ollama import Ollama


class Stage(Protocol):
    async def __call__(self, exchange: Exchange) -> bool:
        """Do this stage's part; return True when the response has been sent and the
        pipeline is done."""
        ...


@dataclass(frozen=True)
class StageContext:
    """The dependencies a stage may take at construction."""

    config: Config
    supervisor: Supervisor
    # The connection pool for an upstream's timeouts (see `upstream.open_upstream_pools`).
    upstream_pools: PoolFor
    # What `auto` learned about which servers need translation (shown in /running).
    learned_apis: LearnedApis = field(default_factory=LearnedApis)
    # The runtime overrides (policy, ctx size) and the latest optimization snapshots.
    runtime: RuntimeState = field(default_factory=RuntimeState)
    # Each model's token counter, shared by every pipeline that optimizes (one tokenizer and
    # one count cache per model, whichever API family asks).
    counters: Counters = field(default_factory=lambda: Counters(default_cache_dir()))
    # A running Ollama's models (`ollama:` in the config, or OLLAMA_HOST), else None.
    ollama: Ollama | None = None
