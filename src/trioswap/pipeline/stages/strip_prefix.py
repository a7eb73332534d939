"""`strip_prefix`: the path goes to the model server without its first segment.

llama-swap serves some routes under a prefix its model servers do not have: the versionless
`/v/chat/completions` (for servers whose API has no `/v1`) reaches the server as
`/chat/completions`, and audio.cpp's `/audioapi/v1/tasks/run` as `/v1/tasks/run`.
"""

from __future__ import annotations

from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.stage import StageContext


class StripPrefix:
    def __init__(self, context: StageContext) -> None:
        pass

    async def __call__(self, exchange: Exchange) -> bool:
        # Runs after `resolve`, which set the path; routes that use it have a second segment.
        path = exchange.upstream_path
        exchange.upstream_path = path[path.index(b"/", 1) :]
        return False
