"""The inference exchanges in flight, as `GET /api/inflight` lists them and
`POST /api/inflight/{id}/cancel` ends one.

Entries are shaped as llama-swap's (internal/swaputil/events.go `InflightRequestEntry`) — `id` a
string, `timestamp` RFC 3339, `req_path`, `method`, `req_headers` (the User-Agent llama-swap's UI
reads there), `remote_ip`, `resp_headers`, `resp_bytes`, `elapsed_ms` — plus trioswap's
`request_id`, `user_agent` and `session_id`. `resp_headers` stays empty: the registry sees no
response head.

Its `inflight` events are llama-swap's too: `{"operation": "upsert", "request": ENTRY}` when an
exchange enters, `{"operation": "remove", "id": ID}` when it leaves, and `snapshot()` (the whole
list) for a new subscriber. The proxy counts reply bytes with a bare attribute increment, so
nothing is published per chunk: `publish_progress`, a task of its own, sends an upsert for each
entry whose byte count (or model, once resolved) changed, at most every `UPDATE_INTERVAL`
(llama-swap's 250 ms per request).

Cancelling only cancels the exchange's scope; the exchange then closes its upstream request,
returns its lease and leaves the registry by unwinding, as it would for a client that went away.
`web/inflight.py` is a different thing: shutdown's count of exchanges to wait for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import trio

from trioswap.clip import clip
from trioswap.observe.events import INFLIGHT, EventHub
from trioswap.observe.timeformat import LAYOUTS

UPDATE_INTERVAL = 0.25
# A method name a client invented can be long; a real one is short.
METHOD_CHARS = 16
_RFC3339NANO = LAYOUTS["rfc3339nano"]


class InflightEntry:
    """One exchange in flight. The proxy bumps `bytes_out` per reply chunk (an increment, no
    call) and sets `model` once the request names it."""

    __slots__ = (
        "_model",
        "_published",
        "_scope",
        "bytes_out",
        "cancelled",
        "client",
        "id",
        "method",
        "path",
        "request_id",
        "session_id",
        "started",
        "user_agent",
    )

    def __init__(
        self,
        entry_id: int,
        request_id: str,
        model: str | None,
        path: str,
        method: str,
        client: str | None,
        user_agent: str | None,
        session_id: str | None,
        scope: trio.CancelScope,
        started: float,
    ) -> None:
        self.id = entry_id
        self.request_id = clip(request_id)
        self.model = model
        self.path = clip(path)
        self.method = clip(method, METHOD_CHARS)
        self.client = None if client is None else clip(client)
        self.user_agent = None if user_agent is None else clip(user_agent)
        self.session_id = None if session_id is None else clip(session_id)
        self._scope = scope
        self.started = started
        self.bytes_out = 0
        # What the last event said (bytes, model), for `publish_progress`.
        self._published: tuple[int, str | None] = (0, self._model)
        # Set when `cancel` ended it, so the exchange can tell that from a client gone away.
        self.cancelled = False

    @property
    def model(self) -> str | None:
        return self._model

    @model.setter
    def model(self, name: str | None) -> None:
        self._model = None if name is None else clip(name)

    def view(self, now: float) -> dict[str, Any]:
        """llama-swap's `InflightRequestEntry` plus trioswap's fields; `now` is wall-clock
        seconds, as `started` is."""
        headers = {} if self.user_agent is None else {"User-Agent": self.user_agent}
        return {
            "id": str(self.id),
            "timestamp": _RFC3339NANO(datetime.fromtimestamp(self.started).astimezone()),
            "model": self._model or "",
            "req_path": self.path,
            "method": self.method,
            "req_headers": headers,
            "remote_ip": self.client or "",
            "resp_headers": {},
            "resp_bytes": self.bytes_out,
            # A wall clock can step back; llama-swap clamps too.
            "elapsed_ms": max(0, int((now - self.started) * 1000)),
            "request_id": self.request_id,
            "user_agent": self.user_agent,
            "session_id": self.session_id,
        }


class InflightRegistry:
    def __init__(self, events: EventHub | None, clock: Callable[[], float] = time.time) -> None:
        self._events = events
        # Wall-clock seconds, for `publish_progress`'s elapsed times.
        self._clock = clock
        self._entries: dict[int, InflightEntry] = {}
        self._next_id = 1

    def __len__(self) -> int:
        return len(self._entries)

    def enter(
        self,
        request_id: str,
        model: str | None,
        path: str,
        client: str | None,
        user_agent: str | None,
        session_id: str | None,
        scope: trio.CancelScope,
        now: float,
        *,
        method: str = "POST",
    ) -> InflightEntry:
        """Register an exchange running in `scope`, started at `now` (wall-clock seconds).
        Every string is clipped before it is kept."""
        entry = InflightEntry(
            self._next_id,
            request_id,
            model,
            path,
            method,
            client,
            user_agent,
            session_id,
            scope,
            now,
        )
        self._next_id += 1
        self._entries[entry.id] = entry
        if self._events is not None and len(self._events):
            self._events.publish(INFLIGHT, {"operation": "upsert", "request": entry.view(now)})
        return entry

    def leave(self, entry: InflightEntry) -> None:
        if self._entries.pop(entry.id, None) is None:
            return
        if self._events is not None:
            self._events.publish(INFLIGHT, {"operation": "remove", "id": str(entry.id)})

    def list(self, now: float) -> list[dict[str, Any]]:
        """Every entry, oldest first (ids break ties), as `GET /api/inflight` shows them."""
        entries = sorted(self._entries.values(), key=lambda entry: (entry.started, entry.id))
        return [entry.view(now) for entry in entries]

    def snapshot(self, now: float) -> dict[str, Any]:
        """llama-swap's `snapshot` event: the whole list, for a subscriber's first frame."""
        return {"operation": "snapshot", "requests": self.list(now)}

    def cancel(self, entry_id: int) -> bool:
        """Cancel that exchange's scope; False when no exchange has that id (any more)."""
        entry = self._entries.get(entry_id)
        if entry is None:
            return False
        entry.cancelled = True
        entry._scope.cancel()
        return True

    async def publish_progress(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Runs until cancelled (returns at once with no hub): every `UPDATE_INTERVAL`, an
        upsert for each entry whose `bytes_out` or `model` changed since its last event (none
        while no one subscribes)."""
        task_status.started()
        if self._events is None:
            return
        events = self._events
        while True:
            await trio.sleep(UPDATE_INTERVAL)
            if not len(events):
                continue
            now = self._clock()
            for entry in self._entries.values():
                news = (entry.bytes_out, entry._model)
                if news != entry._published:
                    entry._published = news
                    events.publish(INFLIGHT, {"operation": "upsert", "request": entry.view(now)})
