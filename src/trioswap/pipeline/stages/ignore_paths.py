"""`ignore_paths`: an `/upstream/<model>/<path>` whose path matches `upstream.ignorePaths` never
starts its model. Browsers keep asking for a UI's assets (favicon, scripts) long after it was
used; such a request is served while the model is ready and answered 409 otherwise.

The path is matched as llama-swap matches it: percent-decoded, with its leading '/', without the
query, and found anywhere in it unless the pattern is anchored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import unquote_to_bytes

from trioswap.errors import ModelNotLoaded
from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.stage import StageContext
from trioswap.supervisor import ModelState

WHY = "a path that matches upstream.ignorePaths"


def ignored_path(patterns: Sequence[re.Pattern[str]], upstream_path: bytes) -> bool:
    path = unquote_to_bytes(upstream_path).decode(errors="replace")
    return any(pattern.search(path) for pattern in patterns)


class IgnorePaths:
    def __init__(self, context: StageContext) -> None:
        self._supervisor = context.supervisor
        self._patterns = context.config.upstream_ignore_paths

    async def __call__(self, exchange: Exchange) -> bool:
        model_id = exchange.model_id
        # A peer's model (no local id) is never started by us anyway.
        if model_id is None or self._supervisor.state_of(model_id) is ModelState.READY:
            return False
        if ignored_path(self._patterns, exchange.upstream_path):
            raise ModelNotLoaded(model_id, WHY)
        return False
