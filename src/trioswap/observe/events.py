"""The event hub behind `GET /api/events`: what happens (model states, log lines, activity,
in-flight requests, config reloads, optimizer snapshots) published once, sent to every live
subscriber as server-sent events.

The wire format is llama-swap's, so tools written for its `/api/events` read ours: every event
is an SSE `message` whose data is an envelope, `{"type": KIND, "data": DATA}`, and DATA is the
payload's JSON *as a string* (JSON inside JSON, as llama-swap sends it):

    event:message
    data:{"type":"inflight","data":"{\\"operation\\":\\"remove\\",\\"id\\":\\"7\\"}"}

Publishing never waits and never fails for a slow reader: each subscriber has a bounded queue of
frames. A subscriber whose queue is full loses the events that do not fit, and reads, at the
place where they went missing, one `dropped` event saying how many: `{"count": N}`. A client
that sees it re-reads the state it follows (`/api/inflight`, `/running`). A frame is encoded
once per publish and shared by every subscriber; publishing with no subscriber encodes nothing.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import trio

# llama-swap's message types.
MODEL_STATUS = "modelStatus"
LOG_DATA = "logData"
ACTIVITY = "activity"
INFLIGHT = "inflight"
# trioswap's.
CONFIG_RELOADED = "configReloaded"
OPTIMIZER = "optimizer"
DROPPED = "dropped"

# Frames queued per subscriber, as llama-swap's per-connection send buffer.
SUBSCRIBER_BUFFER = 1024

_COMPACT = (",", ":")


def sse(kind: str, data: object) -> bytes:
    """One event in llama-swap's `/api/events` framing. JSON escapes every line break (and
    writes only ASCII), so the envelope is always a single `data:` line."""
    envelope = {"type": kind, "data": json.dumps(data, separators=_COMPACT)}
    return b"event:message\ndata:" + json.dumps(envelope, separators=_COMPACT).encode() + b"\n\n"


class _Gap:
    """Where a full queue lost events, and how many."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 1


class Subscriber:
    """One reader's queue: `async for frame in subscriber` gives encoded SSE bytes in the order
    they were published, until the hub closes."""

    __slots__ = ("_buffer", "_closed", "_frames", "_lot", "_queue")

    def __init__(self, buffer: int) -> None:
        if buffer < 1:
            raise ValueError(f"a subscriber's buffer holds at least one event, not {buffer}")
        self._buffer = buffer
        # Frames and gaps; a gap only ever follows a frame, so at most `2 * buffer + 1` items.
        self._queue: deque[bytes | _Gap] = deque()
        self._frames = 0
        self._closed = False
        self._lot = trio.lowlevel.ParkingLot()

    def offer(self, frame: bytes) -> None:
        """Queue `frame`, or count it lost when the queue is full. Never waits."""
        if self._closed:
            return
        if self._frames < self._buffer:
            self._queue.append(frame)
            self._frames += 1
        else:
            last = self._queue[-1]
            if isinstance(last, _Gap):
                last.count += 1
            else:
                self._queue.append(_Gap())
        self._lot.unpark_all()

    def close(self) -> None:
        """The reader gets what is queued, then the end of the stream."""
        self._closed = True
        self._lot.unpark_all()

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> bytes:
        await trio.lowlevel.checkpoint()
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            await self._lot.park()
        item = self._queue.popleft()
        if isinstance(item, _Gap):
            return sse(DROPPED, {"count": item.count})
        self._frames -= 1
        return item


class EventHub:
    def __init__(self) -> None:
        self._subscribers: set[Subscriber] = set()
        self._closed = False

    def __len__(self) -> int:
        """How many subscribers are listening."""
        return len(self._subscribers)

    def publish(self, kind: str, data: object) -> None:
        """Send an event to every subscriber; with none, costs one test. Never waits."""
        if not self._subscribers:
            return
        frame = sse(kind, data)
        for subscriber in self._subscribers:
            subscriber.offer(frame)

    @contextmanager
    def subscribe(self, buffer: int = SUBSCRIBER_BUFFER) -> Iterator[Subscriber]:
        """A subscriber receiving every event published while the block runs. Frames for it
        alone (a connection's first snapshot) go in with `offer`, in order with the rest."""
        subscriber = Subscriber(buffer)
        if self._closed:
            subscriber.close()
        self._subscribers.add(subscriber)
        try:
            yield subscriber
        finally:
            self._subscribers.discard(subscriber)

    def close(self) -> None:
        """Shutting down: every subscriber's stream ends once it has read what is queued."""
        self._closed = True
        for subscriber in self._subscribers:
            subscriber.close()
