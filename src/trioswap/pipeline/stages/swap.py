"""`swap`: take a lease on the model's server, starting it (and stopping what it conflicts
with) if needed. The lease is held until the exchange ends. A peer's model needs none, nor does
a model a running Ollama serves (Ollama loads and unloads its models itself).

With `sendLoadingState`, a streaming request that has to wait for its model gets an event
stream at once with progress in its API family (`pipeline/loading.py`): how long it has waited
and how many requests for the model are ahead of it. The model's answer then continues the same
response (`stream`).
"""

from __future__ import annotations

import trio

from trioswap.pipeline import loading
from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.sink import EVENT_STREAM_HEADERS
from trioswap.pipeline.stage import StageContext
from trioswap.pipeline.translation import TRANSLATED_HEADER
from trioswap.supervisor import ModelState, Supervisor

# One event per waiting request: often enough that the wait is seen to move.
PROGRESS_INTERVAL = 1.0


class Swap:
    def __init__(self, context: StageContext) -> None:
        self._supervisor = context.supervisor
        self._loading_state = {m.id: m.send_loading_state for m in context.config.models.values()}

    async def __call__(self, exchange: Exchange) -> bool:
        model_id = exchange.model_id
        if model_id is None:
            return False
        lease = self._supervisor.lease(model_id)
        if (
            self._loading_state[model_id]
            and self._supervisor.state_of(model_id) is not ModelState.READY
            and (progress := _progress(exchange, model_id)) is not None
        ):
            exchange.loading = progress
            # A failed start leaves this nursery in an exception group; the runner unwraps it.
            async with trio.open_nursery() as nursery:
                await nursery.start(_report, exchange, progress, self._supervisor, model_id)
                exchange.server = await exchange.stack.enter_async_context(lease)
                nursery.cancel_scope.cancel()
            await _send(exchange, progress.ready())
        else:
            exchange.server = await exchange.stack.enter_async_context(lease)
        return False


def _progress(exchange: Exchange, model_id: str) -> loading.Progress | None:
    translation = exchange.translation
    request = exchange.json if translation is None else translation.request
    if request is None:
        return None
    return loading.progress_for(exchange.path, request, exchange.model_name or model_id)


async def _report(
    exchange: Exchange,
    progress: loading.Progress,
    supervisor: Supervisor,
    model_id: str,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    # Taken before this request joins the queue (the lease is asked for once this task has
    # started): the requests counted are those ahead of it. Later counts include it, and those
    # behind it, so the smaller bound is kept; once none are ahead, none can be.
    ahead = _waiting(supervisor, model_id)
    headers = [(b"content-type", b"text/event-stream"), *EVENT_STREAM_HEADERS]
    if exchange.translation is not None:
        headers.append((TRANSLATED_HEADER, exchange.translation.codec.label))
    exchange.sink.stream_error = progress.failed
    with trio.CancelScope(shield=True):
        await exchange.sink.start(200, headers, events=True)
        await exchange.sink.send(progress.note(loading.first_line(model_id, ahead)))
    task_status.started()
    started = trio.current_time()
    while True:
        await trio.sleep(PROGRESS_INTERVAL)
        if ahead:
            ahead = min(ahead, max(_waiting(supervisor, model_id) - 1, 0))
        loaded = supervisor.state_of(model_id) is ModelState.READY
        line = loading.waiting_line(trio.current_time() - started, ahead, loaded)
        await _send(exchange, progress.note(line))


def _waiting(supervisor: Supervisor, model_id: str) -> int:
    status = supervisor.statuses().get(model_id)
    return 0 if status is None else status.waiting


async def _send(exchange: Exchange, events: bytes) -> None:
    # Shielded: a cancel halfway through a write would corrupt the event stream.
    with trio.CancelScope(shield=True):
        await exchange.sink.send(events)
