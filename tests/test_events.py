"""The event hub (`trioswap.observe.events`): llama-swap's `/api/events` framing, order, bounded
subscribers that lose events and say how many, and publishers that never wait."""

from __future__ import annotations

import json
import re
from contextlib import ExitStack
from itertools import pairwise
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trioswap.observe.events import (
    DROPPED,
    INFLIGHT,
    LOG_DATA,
    MODEL_STATUS,
    EventHub,
    Subscriber,
    sse,
)

FRAME = re.compile(rb"event:message\ndata:([^\n]*)\n\n")


def decode(frame: bytes) -> tuple[str, Any]:
    """One frame as a llama-swap client reads it: the envelope, then its data string."""
    match = FRAME.fullmatch(frame)
    assert match, frame
    envelope = json.loads(match[1])
    assert set(envelope) == {"type", "data"}
    assert isinstance(envelope["data"], str)  # JSON inside JSON, as llama-swap sends it
    return envelope["type"], json.loads(envelope["data"])


async def read(subscriber: Subscriber, count: int) -> list[tuple[str, Any]]:
    return [decode(await anext(subscriber)) for _ in range(count)]


async def read_available(subscriber: Subscriber) -> list[tuple[str, Any]]:
    """Every frame queued now (time is virtual: a second with nothing queued ends it)."""
    out = []
    while True:
        with trio.move_on_after(1):
            try:
                frame = await anext(subscriber)
            except StopAsyncIteration:
                return out
            out.append(decode(frame))
            continue
        return out


def test_the_wire_format_is_llama_swaps() -> None:
    frame = sse(INFLIGHT, {"operation": "remove", "id": "7"})
    assert frame == (
        b'event:message\ndata:{"type":"inflight",'
        b'"data":"{\\"operation\\":\\"remove\\",\\"id\\":\\"7\\"}"}\n\n'
    )


@pytest.mark.parametrize(
    "text", ["two\nlines", "cr\r\nlf", "\u2028separator\u2029", "w\u00f6rld \U0001f600", "\x00"]
)
def test_a_frame_is_one_data_line_whatever_the_payload(text: str) -> None:
    frame = sse(LOG_DATA, {"source": "proxy", "data": text})
    assert frame.count(b"\n") == 3 and frame.isascii()
    assert decode(frame) == (LOG_DATA, {"source": "proxy", "data": text})


async def test_events_arrive_in_order(autojump_clock: trio.abc.Clock) -> None:
    hub = EventHub()
    with hub.subscribe() as subscriber:
        subscriber.offer(sse(MODEL_STATUS, []))  # a first snapshot, for this reader alone
        for i in range(100):
            hub.publish(INFLIGHT if i % 2 else LOG_DATA, i)
        events = await read_available(subscriber)
    assert events[0] == (MODEL_STATUS, [])
    assert [data for _, data in events[1:]] == list(range(100))
    assert [kind for kind, _ in events[1:3]] == [LOG_DATA, INFLIGHT]


async def test_a_full_queue_drops_and_then_says_how_many(autojump_clock: trio.abc.Clock) -> None:
    hub = EventHub()
    with hub.subscribe(buffer=3) as subscriber:
        for i in range(10):
            hub.publish(INFLIGHT, i)
        assert await read(subscriber, 1) == [(INFLIGHT, 0)]
        hub.publish(INFLIGHT, 10)  # room for one again: it follows the gap
        hub.publish(INFLIGHT, 11)  # and this one is lost in a second gap
        events = await read_available(subscriber)
    assert events == [
        (INFLIGHT, 1),
        (INFLIGHT, 2),
        (DROPPED, {"count": 7}),
        (INFLIGHT, 10),
        (DROPPED, {"count": 1}),
    ]


async def test_a_stalled_subscriber_blocks_no_one(autojump_clock: trio.abc.Clock) -> None:
    hub = EventHub()
    received: list[int] = []

    async def keep_up(subscriber: Subscriber) -> None:
        async for frame in subscriber:
            received.append(decode(frame)[1])

    with hub.subscribe(buffer=8) as stalled, hub.subscribe(buffer=8) as live:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_up, live)
            with trio.fail_after(1):
                for i in range(2_000):
                    hub.publish(INFLIGHT, i)
                    if i % 4 == 3:
                        await trio.testing.wait_all_tasks_blocked()
            hub.close()
        assert received == list(range(2_000))
        assert await read_available(stalled) == [
            *((INFLIGHT, i) for i in range(8)),
            (DROPPED, {"count": 2_000 - 8}),
        ]


async def test_many_subscribers_share_one_encoding() -> None:
    hub = EventHub()
    with ExitStack() as stack:
        subscribers = [stack.enter_context(hub.subscribe()) for _ in range(200)]
        assert len(hub) == 200
        hub.publish(MODEL_STATUS, [{"id": "m", "state": "ready"}])
        frames = [await anext(subscriber) for subscriber in subscribers]
        assert all(frame is frames[0] for frame in frames)
        assert decode(frames[0]) == (MODEL_STATUS, [{"id": "m", "state": "ready"}])
    assert len(hub) == 0


def test_publishing_with_no_subscriber_encodes_nothing() -> None:
    # An object JSON cannot encode shows that nothing was encoded.
    EventHub().publish(INFLIGHT, object())


async def test_leaving_unsubscribes_and_events_then_go_nowhere() -> None:
    hub = EventHub()
    with hub.subscribe() as subscriber:
        assert len(hub) == 1
    hub.publish(INFLIGHT, 1)
    assert len(hub) == 0
    subscriber.close()
    assert [frame async for frame in subscriber] == []


async def test_closing_ends_streams_after_what_is_queued() -> None:
    hub = EventHub()
    with hub.subscribe() as subscriber:
        hub.publish(INFLIGHT, 1)
        hub.close()
        hub.publish(INFLIGHT, 2)
        assert [decode(frame) async for frame in subscriber] == [(INFLIGHT, 1)]
    with hub.subscribe() as late:
        assert [frame async for frame in late] == []


async def test_a_waiting_reader_can_be_cancelled_and_wakes_on_publish() -> None:
    hub = EventHub()
    with hub.subscribe() as subscriber:
        with trio.move_on_after(0.01) as scope:
            await anext(subscriber)
        assert scope.cancelled_caught
        got: list[tuple[str, Any]] = []
        async with trio.open_nursery() as nursery:

            async def reader() -> None:
                got.extend(await read(subscriber, 1))

            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            hub.publish(INFLIGHT, "late")
        assert got == [(INFLIGHT, "late")]


def test_a_subscriber_buffers_at_least_one_event() -> None:
    with pytest.raises(ValueError, match="at least one"), EventHub().subscribe(buffer=0):
        pass


# A run: publish this many events, or read at most this many (-n) of those queued.
RUNS = st.lists(st.integers(min_value=-20, max_value=20).filter(bool), max_size=30)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(runs=RUNS, buffer=st.integers(min_value=1, max_value=6))
async def test_what_is_read_accounts_for_every_event(
    runs: list[int], buffer: int, autojump_clock: trio.abc.Clock
) -> None:
    """Whatever the interleaving: frames come in order, each `dropped` notice sits exactly
    where its count of events went missing, and two losses in a row are one notice."""
    hub = EventHub()
    published = 0
    events: list[tuple[str, Any]] = []
    with hub.subscribe(buffer=buffer) as subscriber:
        for run in runs:
            if run > 0:
                for _ in range(run):
                    hub.publish(INFLIGHT, published)
                    published += 1
            else:
                for _ in range(-run):
                    with trio.move_on_after(1):
                        events.append(decode(await anext(subscriber)))
        hub.close()
        events += [decode(frame) async for frame in subscriber]
    expected = 0
    for kind, data in events:
        if kind == DROPPED:
            assert data["count"] > 0
            expected += data["count"]
        else:
            assert data == expected
            expected += 1
    assert expected == published
    kinds = [kind for kind, _ in events]
    assert (DROPPED, DROPPED) not in set(pairwise(kinds)), "two losses in a row are one notice"
