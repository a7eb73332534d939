"""Deadlines for many short waits, kept by one task instead of a cancel scope each.

A cancel scope per wait costs its setup and teardown (trio's deadline bookkeeping) every time:
per chunk for an upstream read, per request for a client connection waiting for its next one.
Here a wait only notes when it must end (`begin`, `end`: a dict entry), and one task wakes at
the earliest such deadline and tells what waited too long to `expire`; the waiter then fails
or ends as that says. Deadlines of one watch are nearly always added in increasing order, so
the task's own deadline moves only when the watch was empty.
"""

from __future__ import annotations

import math
from typing import Protocol

import trio


class Expirable(Protocol):
    def expire(self) -> None:
        """Its wait went past its deadline: end the wait (close a connection, wake a waiter).
        Called from the watch's task; must not block."""


class DeadlineWatch:
    def __init__(self) -> None:
        self._waiting: dict[Expirable, float] = {}
        self._wake_at = math.inf
        self._sleep: trio.CancelScope | None = None
        # trio's time; once the task runs, read from the run's clock itself (one call per wait
        # on the hot path, not three).
        self._now = trio.current_time

    def begin(self, waiter: Expirable, seconds: float) -> None:
        """`waiter` waits, for at most `seconds` from now."""
        due = self._now() + seconds
        self._waiting[waiter] = due
        if due < self._wake_at:
            self._wake_at = due
            if self._sleep is not None:
                self._sleep.deadline = due

    def end(self, waiter: Expirable) -> None:
        """`waiter`'s wait is over (it may have expired meanwhile)."""
        self._waiting.pop(waiter, None)

    def expire_all(self) -> None:
        """End every wait now (shutdown)."""
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting:
            waiter.expire()

    async def run(self) -> None:
        """The task: until cancelled."""
        self._now = trio.lowlevel.current_clock().current_time
        while True:
            with trio.CancelScope(deadline=self._wake_at) as self._sleep:
                await trio.sleep_forever()
            now = trio.current_time()
            wake = math.inf
            for waiter, due in list(self._waiting.items()):
                if due <= now:
                    del self._waiting[waiter]
                    waiter.expire()
                elif due < wake:
                    wake = due
            self._wake_at = wake
