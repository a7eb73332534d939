"""Checks for the routing engines trioswap parses but does not run yet: the matrix router,
queue priorities, selectors and profiles. Configs that use them load (with a warning from the
key check); what they reference must still exist, as llama-swap requires."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trioswap.config import schema
from trioswap.config.keys import did_you_mean

Report = Callable[[tuple[Any, ...], str], None]


def check_routing(
    f: schema.File,
    models: set[str],
    aliases: set[str],
    peer_models: set[str],
    error: Report,
    warn: Report,
) -> None:
    router = f.routing.router
    if router.use == "matrix" and router.settings.matrix is None and f.matrix is None:
        error(
            ("routing", "router", "use"),
            "is 'matrix' but routing.router.settings.matrix is not set",
        )
    elif router.use == "matrix":
        warn(
            ("routing", "router", "use"),
            "the matrix router is not implemented in trioswap yet: groups decide",
        )
    names = models | aliases
    for model_id in f.routing.scheduler.settings.fifo.priority:
        if model_id not in names:
            error(
                ("routing", "scheduler", "settings", "fifo", "priority", model_id),
                f"unknown model {model_id!r}" + did_you_mean(model_id, sorted(models)),
            )
