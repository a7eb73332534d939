"""The in-flight registry (`trioswap.observe.inflight`): llama-swap's entry shape, cancelling an
exchange's real cancel scope, and the `inflight` events it publishes."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import trio
import trio.testing

from trioswap.observe.events import INFLIGHT, EventHub, Subscriber
from trioswap.observe.inflight import UPDATE_INTERVAL, InflightEntry, InflightRegistry

T0 = 1_780_000_000.0  # wall-clock seconds
# llama-swap's InflightRequestEntry (internal/swaputil/events.go), metadata being omitempty.
LLAMA_SWAP_FIELDS = {
    "id",
    "timestamp",
    "model",
    "req_path",
    "method",
    "req_headers",
    "remote_ip",
    "resp_headers",
    "resp_bytes",
    "elapsed_ms",
}


def enter(registry: InflightRegistry, scope: trio.CancelScope, **fields: Any) -> InflightEntry:
    values: dict[str, Any] = {
        "request_id": "req-1",
        "model": "qwen",
        "path": "/v1/chat/completions",
        "client": "203.0.113.9",
        "user_agent": "OpenAI/Python 1.99.0",
        "session_id": "s-42",
        "now": T0,
    }
    values.update(fields)
    return registry.enter(scope=scope, **values)


async def exchange(
    registry: InflightRegistry,
    *,
    task_status: trio.TaskStatus[InflightEntry] = trio.TASK_STATUS_IGNORED,
) -> None:
    """What the proxy does: run in a scope, registered, until the reply ends or is cancelled."""
    with trio.CancelScope() as scope:
        entry = enter(registry, scope)
        try:
            task_status.started(entry)
            await trio.sleep_forever()
        finally:
            registry.leave(entry)


def events_of(frames: list[bytes]) -> list[Any]:
    out = []
    for frame in frames:
        envelope = json.loads(frame.removeprefix(b"event:message\ndata:"))
        assert envelope["type"] == INFLIGHT
        out.append(json.loads(envelope["data"]))
    return out


async def available(subscriber: Subscriber) -> list[Any]:
    """The events queued now (time is virtual: a second with nothing queued ends it)."""
    frames = []
    while True:
        with trio.move_on_after(1):
            frames.append(await anext(subscriber))
            continue
        return events_of(frames)


async def test_cancel_cancels_the_exchanges_scope() -> None:
    registry = InflightRegistry(None)
    async with trio.open_nursery() as nursery:
        entry = await nursery.start(exchange, registry)
        other = await nursery.start(exchange, registry)
        assert len(registry) == 2
        assert registry.cancel(entry.id)
        await trio.testing.wait_all_tasks_blocked()
        # That exchange unwound and left; the other runs on.
        assert [item["id"] for item in registry.list(T0)] == [str(other.id)]
        assert entry.cancelled and not other.cancelled
        assert not registry.cancel(entry.id)
        assert not registry.cancel(12345)
        nursery.cancel_scope.cancel()
    assert len(registry) == 0


def test_list_is_llama_swaps_entry_plus_trioswaps_fields() -> None:
    registry = InflightRegistry(None)
    entry = enter(registry, trio.CancelScope(), model=None)
    entry.bytes_out += 100
    entry.bytes_out += 28
    entry.model = "qwen3-coder"
    [view] = registry.list(T0 + 1.5)
    assert set(view) == LLAMA_SWAP_FIELDS | {"request_id", "user_agent", "session_id"}
    assert view == view | {
        "id": str(entry.id),
        "model": "qwen3-coder",
        "req_path": "/v1/chat/completions",
        "method": "POST",
        "req_headers": {"User-Agent": "OpenAI/Python 1.99.0"},
        "remote_ip": "203.0.113.9",
        "resp_headers": {},
        "resp_bytes": 128,
        "elapsed_ms": 1500,
        "request_id": "req-1",
        "user_agent": "OpenAI/Python 1.99.0",
        "session_id": "s-42",
    }
    assert datetime.fromisoformat(view["timestamp"]).timestamp() == T0
    json.dumps(view)


def test_unknown_client_fields_are_empty_as_in_llama_swap() -> None:
    registry = InflightRegistry(None)
    enter(registry, trio.CancelScope(), model=None, client=None, user_agent=None, session_id=None)
    [view] = registry.list(T0 - 5)  # a wall clock stepped back
    assert view["model"] == view["remote_ip"] == ""
    assert view["req_headers"] == {}
    assert view["user_agent"] is view["session_id"] is None
    assert view["elapsed_ms"] == 0


def test_client_strings_are_clipped_before_they_are_kept() -> None:
    registry = InflightRegistry(None)
    huge = "x" * 1_000_000
    entry = enter(
        registry,
        trio.CancelScope(),
        request_id=huge,
        path="/v1/" + huge,
        user_agent="agent\r\nX-Forged: 1",
        session_id=huge,
        method="P" * 1000,
    )
    entry.model = huge
    for value in (entry.request_id, entry.path, entry.session_id, entry.model):
        assert value is not None and len(value) < 300
    assert entry.user_agent == "agent\\r\\nX-Forged: 1"
    assert len(entry.method) < 50


def test_list_is_oldest_first() -> None:
    registry = InflightRegistry(None)
    late = enter(registry, trio.CancelScope(), now=T0 + 2)
    early = enter(registry, trio.CancelScope(), now=T0)
    tie = enter(registry, trio.CancelScope(), now=T0)
    assert [item["id"] for item in registry.list(T0 + 3)] == [
        str(early.id),
        str(tie.id),
        str(late.id),
    ]
    assert registry.snapshot(T0 + 3) == {"operation": "snapshot", "requests": registry.list(T0 + 3)}
    registry.leave(late)
    registry.leave(late)  # leaving twice is harmless
    assert len(registry) == 2


async def test_enter_and_leave_publish_upsert_and_remove(autojump_clock: trio.abc.Clock) -> None:
    hub = EventHub()
    registry = InflightRegistry(hub)
    with hub.subscribe() as subscriber:
        entry = enter(registry, trio.CancelScope())
        [view] = registry.list(T0)
        registry.leave(entry)
        upsert, remove = await available(subscriber)
    assert upsert == {"operation": "upsert", "request": view}
    assert remove == {"operation": "remove", "id": str(entry.id)}


async def test_progress_is_published_at_most_every_interval(
    autojump_clock: trio.abc.Clock,
) -> None:
    hub = EventHub()
    registry = InflightRegistry(hub, clock=lambda: T0 + trio.current_time())
    with hub.subscribe() as subscriber:
        async with trio.open_nursery() as nursery:
            await nursery.start(registry.publish_progress)
            idle = enter(registry, trio.CancelScope())
            busy = enter(registry, trio.CancelScope())
            await available(subscriber)  # the two upserts
            for _ in range(10):  # chunks within one interval: one event
                busy.bytes_out += 10
            await trio.sleep(UPDATE_INTERVAL)
            [update] = await available(subscriber)
            assert update["operation"] == "upsert"
            assert update["request"]["id"] == str(busy.id)
            assert update["request"]["resp_bytes"] == 100
            assert update["request"]["elapsed_ms"] > 0
            # Nothing moved: nothing is published.
            assert await available(subscriber) == []
            idle.model = "resolved-later"
            await trio.sleep(UPDATE_INTERVAL)
            [update] = await available(subscriber)
            assert update["request"]["id"] == str(idle.id)
            assert update["request"]["model"] == "resolved-later"
            assert idle.bytes_out == 0
            nursery.cancel_scope.cancel()


async def test_progress_counted_while_no_one_listens_is_sent_to_the_first(
    autojump_clock: trio.abc.Clock,
) -> None:
    hub = EventHub()
    registry = InflightRegistry(hub)
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.publish_progress)
        entry = enter(registry, trio.CancelScope())
        entry.bytes_out += 5
        await trio.sleep(UPDATE_INTERVAL * 4)
        with hub.subscribe() as subscriber:
            # The bytes counted while no one listened are news to the first subscriber.
            await trio.sleep(UPDATE_INTERVAL)
            [update] = await available(subscriber)
        assert update["request"]["resp_bytes"] == 5
        nursery.cancel_scope.cancel()
