"""DeadlineWatch (deadline_watch.py): many waits' deadlines kept by one task, on trio's
virtual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

from trioswap.deadline_watch import DeadlineWatch


@asynccontextmanager
async def running(watch: DeadlineWatch) -> AsyncIterator[None]:
    """`watch`'s task, for the block's length."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch.run)
        yield
        nursery.cancel_scope.cancel()


class Waiter:
    def __init__(self) -> None:
        self.expired_at: float | None = None

    def expire(self) -> None:
        assert self.expired_at is None, "expired twice"
        self.expired_at = trio.current_time()


async def test_a_wait_past_its_deadline_expires_then_and_not_before(
    autojump_clock: trio.testing.MockClock,
) -> None:
    watch = DeadlineWatch()
    async with running(watch):
        start = trio.current_time()
        waiter = Waiter()
        watch.begin(waiter, 5.0)
        await trio.sleep(4.9)
        assert waiter.expired_at is None
        await trio.sleep(1.0)
        assert waiter.expired_at == start + 5.0


async def test_a_wait_that_ends_in_time_never_expires(
    autojump_clock: trio.testing.MockClock,
) -> None:
    watch = DeadlineWatch()
    async with running(watch):
        waiter = Waiter()
        for _ in range(3):  # the same waiter, waiting again and again
            watch.begin(waiter, 5.0)
            await trio.sleep(4.0)
            watch.end(waiter)
        await trio.sleep(100.0)
        assert waiter.expired_at is None


async def test_a_short_wait_begun_while_a_long_one_waits_expires_on_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    watch = DeadlineWatch()
    async with running(watch):
        long, short = Waiter(), Waiter()
        watch.begin(long, 100.0)
        await trio.sleep(1.0)  # the task now sleeps until the long wait's deadline
        start = trio.current_time()
        watch.begin(short, 5.0)
        await trio.sleep(10.0)
        assert short.expired_at == start + 5.0
        assert long.expired_at is None
        await trio.sleep(100.0)
        assert long.expired_at == start - 1.0 + 100.0


async def test_waits_begun_before_the_task_runs_are_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    watch = DeadlineWatch()
    start = trio.current_time()
    waiters = [Waiter() for _ in range(5)]
    for seconds, waiter in enumerate(waiters, start=1):
        watch.begin(waiter, float(seconds))
    async with running(watch):
        await trio.sleep(10.0)
        assert [w.expired_at for w in waiters] == [start + s for s in range(1, 6)]


async def test_expire_all_ends_every_wait_now_and_forgets_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    watch = DeadlineWatch()
    async with running(watch):
        waiters = [Waiter() for _ in range(3)]
        for waiter in waiters:
            watch.begin(waiter, 60.0)
        await trio.sleep(1.0)
        watch.expire_all()
        assert all(w.expired_at == trio.current_time() for w in waiters)
        for waiter in waiters:
            watch.end(waiter)  # a waiter ending its expired wait is no error
        await trio.sleep(120.0)  # and none is told twice (Waiter.expire asserts it)
