"""`swap`: take a lease on the model's server, starting it (and stopping what it conflicts
with) if needed. The lease is held until the exchange ends. A peer's model needs none.

With `sendLoadingState`, a streaming chat request that has to wait for a model to load gets an
event stream at once, with progress as `reasoning_content` deltas, so clients don't time out
and users see why they wait; the model's own stream then continues the same response.
"""

from __future__ import annotations

import json
import time

import trio

from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.stage import StageContext
from trioswap.pipeline.stages.stream import EVENT_STREAM_HEADERS
from trioswap.supervisor import ModelState

LOADING_PATH = "/v1/chat/completions"
PROGRESS_INTERVAL = 2.0


class Swap:
    def __init__(self, context: StageContext) -> None:
        self._supervisor = context.supervisor
        self._loading_state = {m.id: m.send_loading_state for m in context.config.models.values()}

    async def __call__(self, exchange: Exchange) -> bool:
        model_id = exchange.model_id
        if model_id is None:
            assert exchange.peer is not None
            return False
        lease = self._supervisor.lease(model_id)
        if (
            self._loading_state[model_id]
            and exchange.path == LOADING_PATH
            and exchange.json is not None
            and exchange.json.get("stream") is True
            and self._supervisor.state_of(model_id) is not ModelState.READY
        ):
            # A failed start leaves this nursery in an exception group; the runner unwraps it.
            async with trio.open_nursery() as nursery:
                await nursery.start(_report_loading, exchange, model_id)
                exchange.server = await exchange.stack.enter_async_context(lease)
                nursery.cancel_scope.cancel()
            await _send_reasoning(exchange, model_id, "Model loaded.\n\n")
        else:
            exchange.server = await exchange.stack.enter_async_context(lease)
        return False


async def _report_loading(
    exchange: Exchange, model_id: str, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    headers = [(b"content-type", b"text/event-stream"), *EVENT_STREAM_HEADERS]
    with trio.CancelScope(shield=True):
        await exchange.sink.start(200, headers, events=True)
        await _send_reasoning(exchange, model_id, f"Loading model {model_id}…\n")
    task_status.started()
    started = trio.current_time()
    while True:
        await trio.sleep(PROGRESS_INTERVAL)
        waited = trio.current_time() - started
        await _send_reasoning(exchange, model_id, f"still loading ({waited:.0f}s)\n")


async def _send_reasoning(exchange: Exchange, model_id: str, text: str) -> None:
    chunk = {
        "id": "trioswap-loading",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": exchange.model_name or model_id,
        "choices": [{"index": 0, "delta": {"reasoning_content": text}, "finish_reason": None}],
    }
    # Shielded: a cancel halfway through a write would corrupt the event stream.
    with trio.CancelScope(shield=True):
        await exchange.sink.send(f"data: {json.dumps(chunk)}\n\n".encode())
