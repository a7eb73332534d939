"""The synchronous scheduler, driven directly with a recording fake `Effects` and a plain clock.

No trio, no event loop: every case is a handful of plain calls. The first part pins down one
behaviour per test; the last part drives random traffic through a fake world (starts and stops
finish when the test says so) and checks the invariants after every step.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from trioswap.config import ModelConfig, loads
from trioswap.errors import (
    ModelNotFound,
    ModelStartError,
    ShuttingDown,
    TrioswapError,
)
from trioswap.supervisor.eviction import GroupRules, evict_for
from trioswap.supervisor.scheduler import (
    ModelState,
    RequestId,
    Scheduler,
    SlotStatus,
    UnloadId,
    UnloadResult,
)

STOPPED = ModelState.STOPPED
STARTING = ModelState.STARTING
READY = ModelState.READY
STOPPING = ModelState.STOPPING
FAILED = ModelState.FAILED

# -- config helpers -----------------------------------------------------------------------------


def _flow(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return str(value)


def config_yaml(
    models: Iterable[str] | Mapping[str, Mapping[str, Any]],
    groups: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """A small config: every model runs `echo` behind a fixed proxy URL (so it needs no port).
    `models` is a list of ids, or ids mapped to extra keys (`ttl`, `concurrencyLimit`, ...)."""
    spec = dict(models) if isinstance(models, Mapping) else {m: {} for m in models}
    lines = ["models:"]
    for model_id, extra in spec.items():
        keys = {"cmd": "echo", "proxy": '"http://127.0.0.1:1"', **extra}
        lines.append(f"  {model_id}: {{{', '.join(f'{k}: {_flow(v)}' for k, v in keys.items())}}}")
    if groups:
        lines.append("routing:\n  router:\n    settings:\n      groups:")
        for group_id, keys in groups.items():
            inner = ", ".join(f"{k}: {_flow(v)}" for k, v in keys.items())
            lines.append(f"        {group_id}: {{{inner}}}")
    return "\n".join(lines) + "\n"


# -- the recording fake -------------------------------------------------------------------------


class Recorder:
    """Records every effect. `take()` hands back (and forgets) the grant/fail/start/stop calls
    since the last `take()`; fails appear as ("fail", request, error type). Answers to unloads
    are kept apart, in `answers`."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.transitions: list[tuple[str, ModelState, ModelState]] = []
        self.errors: dict[RequestId, TrioswapError] = {}
        self.answers: dict[UnloadId, UnloadResult] = {}

    def grant(self, request: RequestId, model: str) -> None:
        self.calls.append(("grant", request, model))

    def fail(self, request: RequestId, error: TrioswapError) -> None:
        self.errors[request] = error
        self.calls.append(("fail", request, type(error)))

    def start(self, model: str) -> None:
        self.calls.append(("start", model))

    def stop(self, model: str) -> None:
        self.calls.append(("stop", model))

    def unloaded(self, unload: UnloadId, result: UnloadResult) -> None:
        assert unload not in self.answers, f"unload {unload} answered twice"
        self.answers[unload] = result

    def transition(self, model: str, old: ModelState, new: ModelState) -> None:
        self.transitions.append((model, old, new))

    def take(self) -> list[tuple[Any, ...]]:
        calls, self.calls = self.calls, []
        return calls


class Harness:
    """A scheduler, its recorder, a clock and request ids."""

    def __init__(
        self,
        models: Iterable[str] | Mapping[str, Mapping[str, Any]],
        groups: Mapping[str, Mapping[str, Any]] | None = None,
        drain_timeout: float = 0.0,
    ) -> None:
        config = loads(config_yaml(models, groups), strict=True)
        self.rules = GroupRules.from_config(config)
        self.fx = Recorder()
        self.sched = Scheduler(config.models, self.rules, self.fx, drain_timeout)
        self.now = 0.0
        self._ids = itertools.count(1)

    def _at(self, at: float | None) -> float:
        if at is not None:
            assert at >= self.now, "the clock never goes back"
            self.now = at
        return self.now

    # events
    def req(self, model: str, at: float | None = None) -> RequestId:
        rid = next(self._ids)
        self.sched.on_request(rid, model, self._at(at))
        return rid

    def release(self, rid: RequestId, at: float | None = None) -> None:
        self.sched.on_release(rid, self._at(at))

    def started(
        self, model: str, error: ModelStartError | None = None, at: float | None = None
    ) -> None:
        self.sched.on_start_done(model, error, self._at(at))

    def stopped(self, model: str, at: float | None = None) -> None:
        self.sched.on_stop_done(model, self._at(at))

    def exited(
        self, model: str, reason: str = "exited with code 1", at: float | None = None
    ) -> None:
        self.sched.on_exited(model, reason, self._at(at))

    def unload(
        self, models: Iterable[str] | None = None, at: float | None = None, force: bool = False
    ) -> UnloadId:
        uid = next(self._ids)
        self.sched.on_unload(uid, models, self._at(at), force)
        return uid

    def answer(self, unload: UnloadId) -> tuple[list[str], list[str]] | None:
        """What the unload stopped and cut, once it is answered."""
        result = self.fx.answers.get(unload)
        return None if result is None else (list(result.stopped), list(result.forced))

    def tick(self, at: float) -> None:
        self.sched.on_tick(self._at(at))

    # reads
    def status(self, model: str) -> SlotStatus:
        return self.sched.statuses()[model]

    def state(self, model: str) -> ModelState:
        return self.status(model).state

    def take(self) -> list[tuple[Any, ...]]:
        return self.fx.take()

    # shortcuts
    def bring_up(self, model: str, at: float | None = None) -> None:
        """Start `model` with one request, and leave it ready and idle (stopping whatever it
        evicts, all of which must be idle)."""
        rid = self.req(model, at)
        while True:
            calls = self.take()
            stops = [c[1] for c in calls if c[0] == "stop"]
            for m in stops:
                self.stopped(m)
            if ("start", model) in calls:
                break
            assert stops, f"{model} did not start: {calls}"
        self.started(model)
        assert self.take() == [("grant", rid, model)]
        self.release(rid)
        assert self.state(model) is READY
        assert self.status(model).in_flight == 0


def started_error(model: str, reason: str = "not healthy") -> ModelStartError:
    return ModelStartError(model, reason, ["last line"])


# Three loose models: one default group, swap + exclusive.
ABC = ["a", "b", "c"]

# -- one request, one model ---------------------------------------------------------------------


def test_request_for_a_stopped_model_starts_it() -> None:
    h = Harness(ABC)
    rid = h.req("a")
    assert h.take() == [("start", "a")]
    assert h.status("a") == SlotStatus(STARTING, in_flight=0, waiting=1, last_error=None)
    assert h.fx.transitions == [("a", STOPPED, STARTING)]
    h.started("a")
    assert h.take() == [("grant", rid, "a")]
    assert h.status("a") == SlotStatus(READY, in_flight=1, waiting=0, last_error=None)
    assert h.fx.transitions[-1] == ("a", STARTING, READY)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_requests_for_a_ready_model_are_granted_at_once(n: int) -> None:
    h = Harness(ABC)
    h.bring_up("a")
    rids = [h.req("a") for _ in range(n)]
    assert h.take() == [("grant", r, "a") for r in rids]
    assert h.status("a") == SlotStatus(READY, in_flight=n, waiting=0, last_error=None)


@pytest.mark.parametrize("n", [1, 2, 5, 50])
def test_one_start_for_many_concurrent_requests(n: int) -> None:
    h = Harness(ABC)
    rids = [h.req("a") for _ in range(n)]
    assert h.take() == [("start", "a")]
    assert h.status("a").waiting == n
    h.started("a")
    assert h.take() == [("grant", r, "a") for r in rids]  # in arrival order
    assert h.status("a").in_flight == n
    assert h.status("a").waiting == 0


def test_requests_while_starting_join_the_start() -> None:
    h = Harness(ABC)
    first = h.req("a")
    assert h.take() == [("start", "a")]
    later = [h.req("a") for _ in range(3)]
    assert h.take() == []  # no second start
    h.started("a")
    assert h.take() == [("grant", r, "a") for r in [first, *later]]


def test_transitions_of_a_full_lifecycle() -> None:
    h = Harness(ABC)
    h.bring_up("a")
    h.bring_up("b")
    assert h.fx.transitions == [
        ("a", STOPPED, STARTING),
        ("a", STARTING, READY),
        ("a", READY, STOPPING),
        ("a", STOPPING, STOPPED),
        ("b", STOPPED, STARTING),
        ("b", STARTING, READY),
    ]


def test_no_transition_without_a_change_of_state() -> None:
    h = Harness(ABC)
    h.bring_up("a")
    h.exited("b")  # not running: nothing happens
    h.unload(["b"])
    h.tick(1000.0)
    assert all(old is not new for _, old, new in h.fx.transitions)
    assert h.take() == []


# -- failed starts ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3])
def test_failed_start_fails_every_waiter_with_the_same_error(n: int) -> None:
    h = Harness(ABC)
    rids = [h.req("a") for _ in range(n)]
    h.take()
    error = started_error("a")
    h.started("a", error)
    assert h.take() == [("fail", r, ModelStartError) for r in rids]
    assert all(h.fx.errors[r] is error for r in rids)
    assert h.status("a") == SlotStatus(FAILED, in_flight=0, waiting=0, last_error=str(error))
    assert h.fx.transitions[-1] == ("a", STARTING, FAILED)


def test_failure_is_not_sticky_the_next_request_retries() -> None:
    h = Harness(ABC)
    h.req("a")
    h.take()
    h.started("a", started_error("a"))
    h.take()
    rid = h.req("a")
    assert h.take() == [("start", "a")]
    assert h.fx.transitions[-1] == ("a", FAILED, STARTING)
    h.started("a")
    assert h.take() == [("grant", rid, "a")]
    assert h.status("a").last_error is None


def test_failed_start_spares_waiters_of_other_models() -> None:
    h = Harness(ABC)
    ra = h.req("a")
    rb = h.req("b")
    assert h.take() == [("start", "a")]
    h.started("a", started_error("a"))
    # a's waiter fails; b's op starts straight away (a is not running, nothing to stop)
    assert h.take() == [("fail", ra, ModelStartError), ("start", "b")]
    h.started("b")
    assert h.take() == [("grant", rb, "b")]


def test_repeated_failures_each_retry_once() -> None:
    h = Harness(ABC)
    for attempt in range(3):
        rid = h.req("a")
        assert h.take() == [("start", "a")], attempt
        h.started("a", started_error("a", f"attempt {attempt}"))
        assert h.take() == [("fail", rid, ModelStartError)]
        assert h.status("a").last_error is not None
        assert f"attempt {attempt}" in h.status("a").last_error


# -- swapping -----------------------------------------------------------------------------------


@pytest.mark.parametrize("holders", [0, 1, 3])
def test_swap_stops_the_old_model_only_after_its_requests_are_released(holders: int) -> None:
    h = Harness(ABC)
    h.bring_up("a")
    held = [h.req("a") for _ in range(holders)]
    h.take()
    rb = h.req("b")
    for rid in held:
        assert h.take() == []
        assert h.state("a") is READY
        assert h.state("b") is STOPPED
        h.release(rid)
    assert h.take() == [("stop", "a")]
    assert h.state("a") is STOPPING
    assert h.state("b") is STOPPED  # not started while a is still stopping
    h.stopped("a")
    assert h.take() == [("start", "b")]
    h.started("b")
    assert h.take() == [("grant", rb, "b")]
    assert h.state("a") is STOPPED


def test_exclusive_start_stops_every_running_model_of_other_groups() -> None:
    groups = {
        "g1": {"swap": False, "exclusive": False, "members": ["a", "b"]},
        "g2": {"swap": True, "exclusive": True, "members": ["c"]},
    }
    h = Harness(["a", "b", "c"], groups)
    h.bring_up("a")
    h.bring_up("b")
    assert (h.state("a"), h.state("b")) == (READY, READY)  # non-swap: together
    rc = h.req("c")
    calls = h.take()
    assert sorted(calls) == [("stop", "a"), ("stop", "b")]
    h.stopped("b")
    assert h.take() == []  # a is still stopping
    h.stopped("a")
    assert h.take() == [("start", "c")]
    h.started("c")
    assert h.take() == [("grant", rc, "c")]


def test_persistent_group_is_not_stopped_by_an_exclusive_start() -> None:
    groups = {
        "keep": {"persistent": True, "exclusive": False, "members": ["p"]},
        "main": {"members": ["a", "b"]},
    }
    h = Harness(["p", "a", "b"], groups)
    h.bring_up("p")
    h.bring_up("a")
    h.bring_up("b")
    assert [h.state(m) for m in ("p", "a", "b")] == [READY, STOPPED, READY]
    assert ("p", READY, STOPPING) not in h.fx.transitions


def test_non_exclusive_group_does_not_evict_other_groups() -> None:
    groups = {
        "x": {"exclusive": False, "members": ["a", "b"]},
        "y": {"exclusive": False, "members": ["c"]},
    }
    h = Harness(["a", "b", "c"], groups)
    h.bring_up("a")
    h.bring_up("c")
    assert (h.state("a"), h.state("c")) == (READY, READY)
    h.bring_up("b")  # swaps a out, leaves c
    assert [h.state(m) for m in ("a", "b", "c")] == [STOPPED, READY, READY]


GROUPED_MODELS = ["a1", "a2", "s1", "s2", "n1", "n2", "p1", "p2", "d1"]
GROUPED = {
    "a": {"members": ["a1", "a2"]},  # swap + exclusive
    "s": {"swap": True, "exclusive": False, "members": ["s1", "s2"]},
    "n": {"swap": False, "exclusive": False, "members": ["n1", "n2"]},
    "p": {"swap": True, "exclusive": False, "persistent": True, "members": ["p1", "p2"]},
    # d1: the default group
}


@pytest.mark.parametrize(
    ("up", "target", "stops"),
    [
        (["n1", "n2"], "s1", set()),
        (["n1", "n2"], "a1", {"n1", "n2"}),
        (["n1"], "n2", set()),
        (["s1"], "s2", {"s1"}),
        (["s1", "n1", "p1"], "a1", {"s1", "n1"}),
        (["s1", "n1", "p1"], "d1", {"s1", "n1"}),
        (["s1", "n1", "p1"], "p2", {"p1"}),
        (["a1"], "n1", set()),
        (["a1"], "a2", {"a1"}),
        (["p1", "a1"], "d1", {"a1"}),
        (["d1"], "a1", {"d1"}),
        (["d1", "p2"], "s2", set()),
    ],
)
def test_scheduler_evicts_by_the_group_rules(up: list[str], target: str, stops: set[str]) -> None:
    h = Harness(GROUPED_MODELS, GROUPED)
    for m in up:
        h.bring_up(m)
    assert {m for m in up if h.state(m) is READY} == set(up)
    rid = h.req(target)
    calls = h.take()
    assert {c[1] for c in calls if c[0] == "stop"} == stops
    if stops:
        assert ("start", target) not in calls
        for m in sorted(stops):
            h.stopped(m)
        calls = h.take()
    assert calls[-1:] == [("start", target)]
    h.started(target)
    assert h.take() == [("grant", rid, target)]
    running = {m for m in GROUPED_MODELS if h.state(m) is READY}
    assert running == (set(up) - stops) | {target}


def test_ready_unrelated_model_is_served_during_a_swap() -> None:
    groups = {
        "x": {"exclusive": False, "members": ["a", "b"]},
        "y": {"exclusive": False, "members": ["c"]},
    }
    h = Harness(["a", "b", "c"], groups)
    h.bring_up("a")
    h.bring_up("c")
    held = h.req("a")
    rb = h.req("b")  # waits for `held`
    h.take()
    rc = h.req("c")
    assert h.take() == [("grant", rc, "c")]
    h.release(held)
    assert h.take() == [("stop", "a")]
    h.stopped("a")
    h.started("b")
    assert h.take() == [("start", "b"), ("grant", rb, "b")]


def test_requests_for_the_model_being_swapped_out_queue_behind_the_swap() -> None:
    """No starvation: once a swap waits to stop a, new requests for a do not keep it alive."""
    h = Harness(ABC)
    h.bring_up("a")
    held = h.req("a")
    rb = h.req("b")
    late = [h.req("a") for _ in range(3)]
    assert h.take() == [("grant", held, "a")]  # the late ones wait though a is ready
    assert h.status("a") == SlotStatus(READY, in_flight=1, waiting=3, last_error=None)
    h.release(held)
    assert h.take() == [("stop", "a")]
    h.stopped("a")
    assert h.take() == [("start", "b")]
    h.started("b")
    # b's waiter first; then the next operation (restart a) waits for b's request
    assert h.take() == [("grant", rb, "b")]
    assert h.status("a").waiting == 3
    h.release(rb)
    assert h.take() == [("stop", "b")]
    h.stopped("b")
    assert h.take() == [("start", "a")]
    h.started("a")
    assert h.take() == [("grant", r, "a") for r in late]  # in arrival order


def test_stopped_models_are_started_in_arrival_order() -> None:
    h = Harness(ABC)
    order = ["c", "a", "b"]
    rids = {m: h.req(m) for m in order}
    for i, m in enumerate(order):
        assert h.take()[-1] == ("start", m)
        h.started(m)
        assert h.take() == [("grant", rids[m], m)]
        h.release(rids[m])
        if i + 1 < len(order):
            assert h.take() == [("stop", m)]
            h.stopped(m)
    assert h.take() == []


def test_requests_arriving_during_a_stop_restart_the_model_afterwards() -> None:
    h = Harness(ABC)
    h.bring_up("a")
    h.unload(["a"])
    assert h.take() == [("stop", "a")]
    rid = h.req("a")
    assert h.take() == []
    assert h.status("a") == SlotStatus(STOPPING, in_flight=0, waiting=1, last_error=None)
    h.stopped("a")
    assert h.take() == [("start", "a")]
    h.started("a")
    assert h.take() == [("grant", rid, "a")]


# -- release and cancellation -------------------------------------------------------------------


def test_release_after_grant_decrements_in_flight() -> None:
    h = Harness(ABC)
    h.bring_up("a")
    r1, r2 = h.req("a"), h.req("a")
    assert h.status("a").in_flight == 2
    h.release(r1)
    assert h.status("a").in_flight == 1
    h.release(r2)
    assert h.status("a").in_flight == 0


@pytest.mark.parametrize("extra", ["twice", "unknown", "after_fail"])
def test_spurious_releases_change_nothing(extra: str) -> None:
    groups = {"ga": {"exclusive": False, "members": ["a"]}, "gb": {"members": ["b"]}}
    h = Harness({"a": {"concurrencyLimit": 1}, "b": {}}, groups)
    h.bring_up("a")
    keep = h.req("a")
    if extra == "twice":
        other = h.req("b")  # b is starting: never granted yet
        h.release(other)
        h.release(other)
        h.started("b")
    elif extra == "unknown":
        h.release(12345)
    else:
        queued = h.req("a")  # over the limit: waits
        h.release(queued)
    h.take()
    assert h.status("a") == SlotStatus(READY, in_flight=1, waiting=0, last_error=None)
    h.release(keep)
    h.release(keep)
    assert h.status("a").in_flight == 0
    assert h.take() == []


def test_cancel_before_grant_removes_the_request_but_the_start_goes_on() -> None:
    h = Harness(ABC)
    r1, r2 = h.req("a"), h.req("a")
    assert h.take() == [("start", "a")]
    h.release(r1)
    assert h.status("a").waiting == 1
    h.started("a")
    assert h.take() == [("grant", r2, "a")]
    assert h.status("a").in_flight == 1


def test_cancel_of_the_only_waiter_still_finishes_the_start() -> None:
    h = Harness(ABC)
    rid = h.req("a")
    h.take()
    h.release(rid)
    assert h.status("a") == SlotStatus(STARTING, in_flight=0, waiting=0, last_error=None)
    h.started("a")
    assert h.take() == []
    assert h.status("a") == SlotStatus(READY, in_flight=0, waiting=0, last_error=None)


def test_cancelled_request_for_a_queued_model_does_not_start_it() -> None:
    h = Harness(ABC)
    ra = h.req("a")
    rb = h.req("b")
    h.take()
    h.release(rb)
    h.started("a")
    assert h.take() == [("grant", ra, "a")]
    h.release(ra)
    assert h.take() == []
    assert h.state("b") is STOPPED
    assert h.state("a") is READY


def test_swap_whose_only_waiter_left_is_dropped_before_it_stops_anything() -> None:
    """b's requester gave up while a still served: a is not stopped, b not started."""
    h = Harness(ABC)
    h.bring_up("a")
    held = h.req("a")
    rb = h.req("b")
    late = h.req("a")  # queued behind the swap
    assert h.take() == [("grant", held, "a")]
    h.release(rb)
    assert h.take() == [("grant", late, "a")]  # with the swap gone, a serves again
    h.release(held)
    h.release(late)
    assert h.take() == []
    assert [h.state(m) for m in ABC] == [READY, STOPPED, STOPPED]
    assert h.sched.next_deadline() is None


def test_swap_whose_only_waiter_left_with_drain_timeout_stops_nothing() -> None:
    h = Harness(ABC, drain_timeout=2.0)
    h.bring_up("a")
    h.req("a")
    rb = h.req("b", at=1.0)
    h.take()
    h.release(rb, at=1.5)
    h.tick(at=10.0)
    assert h.take() == []
    assert h.state("a") is READY


def test_swap_whose_waiters_left_after_its_stop_began_does_not_start_the_target() -> None:
    h = Harness(ABC)
    h.bring_up("a")
    rb = h.req("b")
    assert h.take() == [("stop", "a")]
    h.release(rb)
    h.stopped("a")
    assert h.take() == []
    assert [h.state(m) for m in ABC] == [STOPPED] * 3


def test_swap_keeps_going_while_one_of_its_waiters_is_left() -> None:
    h = Harness(ABC)
    h.bring_up("a")
    held = h.req("a")
    r1, r2 = h.req("b"), h.req("b")
    h.take()
    h.release(r1)
    h.release(held)
    assert h.take() == [("stop", "a")]
    h.stopped("a")
    h.started("b")
    assert h.take() == [("start", "b"), ("grant", r2, "b")]


def test_cancelled_request_held_behind_a_swap_is_not_served() -> None:
    h = Harness(ABC)
    h.bring_up("a")
    held = h.req("a")
    rb = h.req("b")
    late = h.req("a")
    h.take()
    h.release(late)
    assert h.status("a").waiting == 0
    h.release(held)
    h.stopped("a")
    h.started("b")
    assert h.take() == [("stop", "a"), ("start", "b"), ("grant", rb, "b")]
    assert h.state("a") is STOPPED  # nobody left waiting for a: it is not restarted


# -- unexpected exits ---------------------------------------------------------------------------


def test_exit_of_a_ready_model_marks_it_failed_and_the_next_request_restarts_it() -> None:
    h = Harness(ABC)
    h.bring_up("a")
    h.exited("a", "exited with code 139")
    assert h.status("a") == SlotStatus(FAILED, 0, 0, "exited with code 139")
    assert h.fx.transitions[-1] == ("a", READY, FAILED)
    assert h.take() == []  # nothing is started until asked
    rid = h.req("a")
    assert h.take() == [("start", "a")]
    h.started("a")
    assert h.take() == [("grant", rid, "a")]
    assert h.status("a").last_error is None


def test_in_flight_requests_of_a_dead_model_release_cleanly() -> None:
    h = Harness(ABC)
    h.bring_up("a")
    r1, r2 = h.req("a"), h.req("a")
    h.exited("a")
    assert h.status("a").in_flight == 2
    h.release(r1)
    h.release(r2)
    assert h.status("a") == SlotStatus(FAILED, 0, 0, "exited with code 1")
    assert h.take() == [("grant", r1, "a"), ("grant", r2, "a")]


def test_exit_of_a_model_the_swap_waits_for_lets_the_swap_go_on() -> None:
    h = Harness(ABC)
    h.bring_up("a")
    held = h.req("a")
    rb = h.req("b")
    h.take()
    h.exited("a")
    assert h.take() == [("start", "b")]  # no stop of a dead model
    h.started("b")
    assert h.take() == [("grant", rb, "b")]
    h.release(held)
    assert h.status("a").in_flight == 0
    assert h.take() == []


def test_exit_of_a_non_ready_model_is_ignored() -> None:
    h = Harness(ABC)
    h.exited("a")  # stopped
    assert h.state("a") is STOPPED
    rid = h.req("a")
    h.exited("a")  # starting: its start reports the failure itself
    assert h.state("a") is STARTING
    h.started("a")
    h.release(rid)
    h.unload(["a"], at=1.0)
    h.exited("a")  # stopping
    assert h.state("a") is STOPPING
    assert h.take() == [("start", "a"), ("grant", rid, "a"), ("stop", "a")]
    h.stopped("a")
    assert h.state("a") is STOPPED
    assert all(new is not FAILED for _, _, new in h.fx.transitions)


def test_restart_after_exit_evicts_like_any_start() -> None:
    groups = {"x": {"exclusive": False, "members": ["a", "b"]}}
    h = Harness(["a", "b"], groups)
    h.bring_up("a")
    h.exited("a")
    h.bring_up("b")
    rid = h.req("a")
    assert h.take() == [("stop", "b")]
    h.stopped("b")
    h.started("a")
    assert h.take() == [("start", "a"), ("grant", rid, "a")]


def test_exit_of_a_model_an_unload_waits_for_ends_the_unload() -> None:
    h = Harness(ABC)
    h.bring_up("a")
    held = h.req("a")
    h.unload()
    assert h.take() == [("grant", held, "a")]
    h.exited("a")
    assert h.take() == []
    rid = h.req("a")  # the unload is over: this starts a again
    assert h.take() == [("start", "a")]
    h.started("a")
    assert h.take() == [("grant", rid, "a")]


def test_a_failed_model_has_no_ttl_deadline() -> None:
    h = Harness({"a": {"ttl": 5}, "b": {}})
    h.bring_up("a", at=0.0)
    h.exited("a", at=1.0)
    assert h.sched.next_deadline() is None
    h.tick(100.0)
    assert h.take() == []


# -- unload -------------------------------------------------------------------------------------

TOGETHER = {"all": {"swap": False, "members": ["a", "b", "c"]}}


def test_unload_all_stops_every_running_model() -> None:
    h = Harness(ABC, TOGETHER)
    h.bring_up("a")
    h.bring_up("b")
    h.unload()
    assert sorted(h.take()) == [("stop", "a"), ("stop", "b")]
    h.stopped("a")
    h.stopped("b")
    assert [h.state(m) for m in ABC] == [STOPPED] * 3
    assert h.take() == []


def test_unload_all_waits_for_in_flight_requests() -> None:
    h = Harness(ABC, TOGETHER)
    h.bring_up("a")
    h.bring_up("b")
    held = h.req("a")
    h.take()
    h.unload()
    assert h.take() == [("stop", "b")]
    late = h.req("a")  # queues behind the unload
    assert h.take() == []
    h.release(held)
    assert h.take() == [("stop", "a")]
    h.stopped("a")
    h.stopped("b")
    assert h.take() == [("start", "a")]  # restarted for the request that waited
    h.started("a")
    assert h.take() == [("grant", late, "a")]
    assert h.state("b") is STOPPED


def test_unload_one_model_stops_only_that_model() -> None:
    h = Harness(ABC, TOGETHER)
    for m in ABC:
        h.bring_up(m)
    h.unload(["b"])
    assert h.take() == [("stop", "b")]
    h.stopped("b")
    assert [h.state(m) for m in ABC] == [READY, STOPPED, READY]
    rid = h.req("a")
    assert h.take() == [("grant", rid, "a")]


@pytest.mark.parametrize("models", [["b"], ["a"], [], None])
def test_unload_with_nothing_running_to_stop(models: list[str] | None) -> None:
    h = Harness(ABC)
    h.unload(models)
    assert h.take() == []
    rid = h.req("a")  # the scheduler is not stuck
    assert h.take() == [("start", "a")]
    h.started("a")
    assert h.take() == [("grant", rid, "a")]
    h.unload(["b"])  # not running
    assert h.take() == []
    assert h.state("a") is READY


def test_unload_during_a_start_stops_the_model_after_its_waiters() -> None:
    h = Harness(ABC)
    rid = h.req("a")
    h.take()
    h.unload()
    h.started("a")
    assert h.take() == [("grant", rid, "a")]  # the waiters are served first
    h.release(rid)
    assert h.take() == [("stop", "a")]
    h.stopped("a")
    assert h.state("a") is STOPPED


def test_unload_leaves_failed_models_alone() -> None:
    h = Harness(ABC)
    h.bring_up("a")
    h.exited("a")
    h.unload()
    assert h.take() == []
    assert h.state("a") is FAILED


def test_unload_is_answered_when_its_models_are_stopped() -> None:
    h = Harness(ABC, TOGETHER)
    h.bring_up("a")
    h.bring_up("b")
    uid = h.unload()
    h.stopped("a")
    assert h.answer(uid) is None
    h.stopped("b")
    assert h.answer(uid) == (["a", "b"], [])


@pytest.mark.parametrize("models", [["b"], None])
def test_unload_with_nothing_to_stop_is_answered_at_once(models: list[str] | None) -> None:
    h = Harness(ABC)
    assert h.answer(h.unload(models)) == ([], [])
    assert h.answer(h.unload(models, force=True)) == ([], [])


def test_unload_cut_by_drain_timeout_says_which_models_it_forced() -> None:
    h = Harness(ABC, TOGETHER, drain_timeout=1.0)
    h.bring_up("a")
    h.bring_up("b")
    h.req("a")
    uid = h.unload(at=0.5)
    h.tick(at=1.5)
    h.stopped("a")
    h.stopped("b")
    assert h.answer(uid) == (["a", "b"], ["a"])


# -- forced unload ------------------------------------------------------------------------------


def test_forced_unload_stops_a_busy_model_at_once() -> None:
    h = Harness(ABC)
    h.bring_up("a")
    held = h.req("a")
    h.take()
    uid = h.unload(["a"], force=True)
    assert h.take() == [("stop", "a")]
    assert h.answer(uid) is None
    h.stopped("a")
    assert h.answer(uid) == (["a"], ["a"])
    h.release(held)  # the cut request still hands its lease back
    assert h.status("a") == SlotStatus(STOPPED, 0, 0, None)
    assert h.take() == []


def test_forced_unload_frees_a_swap_stuck_behind_a_hung_model() -> None:
    """a hangs with a request in flight; b waits behind it, and so does a plain unload."""
    h = Harness(ABC)
    h.bring_up("a")
    h.req("a")
    rb = h.req("b")
    plain = h.unload(["a"])
    h.take()
    h.tick(at=1000.0)
    assert h.take() == []
    forced = h.unload(["a"], force=True)
    assert h.take() == [("stop", "a")]
    h.stopped("a")
    assert h.answer(forced) == (["a"], ["a"])
    assert h.take() == [("start", "b")]
    h.started("b")
    assert h.take() == [("grant", rb, "b")]
    assert h.answer(plain) == ([], [])  # a was no longer running when its turn came


def test_forced_unload_ends_a_plain_unload_waiting_for_the_same_model() -> None:
    h = Harness(ABC)
    h.bring_up("a")
    h.req("a")
    plain = h.unload()
    forced = h.unload(force=True)
    h.stopped("a")
    assert h.answer(forced) == (["a"], ["a"])
    assert h.answer(plain) == (["a"], [])


def test_forced_unload_of_a_starting_model_stops_it_once_ready() -> None:
    h = Harness(ABC)
    rid = h.req("a")
    uid = h.unload(force=True)
    assert h.take() == [("start", "a")]
    h.started("a")
    assert h.take() == [("grant", rid, "a"), ("stop", "a")]
    h.stopped("a")
    assert h.answer(uid) == (["a"], ["a"])


def test_forced_unload_leaves_models_it_does_not_name() -> None:
    h = Harness(ABC, TOGETHER)
    h.bring_up("a")
    h.bring_up("b")
    h.req("b")
    h.take()
    h.unload(["a"], force=True)
    assert h.take() == [("stop", "a")]
    assert h.state("b") is READY


def test_start_waits_for_a_forced_stop_of_a_model_it_conflicts_with() -> None:
    h = Harness(ABC)
    h.bring_up("a")
    h.unload(["a"], force=True)
    assert h.take() == [("stop", "a")]
    rb = h.req("b")
    assert h.take() == []  # a is still alive
    h.stopped("a")
    h.started("b")
    assert h.take() == [("start", "b"), ("grant", rb, "b")]


def test_requests_during_a_forced_stop_restart_the_model_afterwards() -> None:
    h = Harness(ABC)
    h.bring_up("a")
    h.unload(force=True)
    rid = h.req("a")
    h.stopped("a")
    h.started("a")
    assert h.take() == [("stop", "a"), ("start", "a"), ("grant", rid, "a")]


# -- ttl ----------------------------------------------------------------------------------------

TTL_MODELS = {"a": {"ttl": 10}, "b": {"ttl": 4}, "c": {}}
SEPARATE = {
    "ga": {"exclusive": False, "members": ["a"]},
    "gb": {"exclusive": False, "members": ["b"]},
    "gc": {"exclusive": False, "members": ["c"]},
}


def test_no_deadline_when_nothing_runs() -> None:
    h = Harness(TTL_MODELS, SEPARATE)
    assert h.sched.next_deadline() is None


def test_deadline_is_idle_since_plus_ttl() -> None:
    h = Harness(TTL_MODELS, SEPARATE)
    rid = h.req("a", at=1.0)
    h.started("a", at=3.0)
    assert h.sched.next_deadline() is None  # in flight
    h.release(rid, at=7.5)
    assert h.sched.next_deadline() == 17.5


def test_deadline_counts_from_ready_when_the_waiter_already_left() -> None:
    h = Harness(TTL_MODELS, SEPARATE)
    rid = h.req("a", at=1.0)
    h.release(rid, at=2.0)
    h.started("a", at=3.0)
    assert h.sched.next_deadline() == 13.0


def test_no_deadline_without_ttl() -> None:
    h = Harness(TTL_MODELS, SEPARATE)
    h.bring_up("c", at=1.0)
    assert h.sched.next_deadline() is None
    h.tick(1e9)
    assert h.state("c") is READY


def test_deadline_is_the_earliest_of_several() -> None:
    h = Harness(TTL_MODELS, SEPARATE)
    h.bring_up("a", at=1.0)  # 11
    h.bring_up("b", at=2.0)  # 6
    assert h.sched.next_deadline() == 6.0
    rid = h.req("b", at=3.0)
    assert h.sched.next_deadline() == 11.0  # b busy: only a's
    h.release(rid, at=8.0)
    assert h.sched.next_deadline() == 11.0  # b's is now 12
    h.tick(11.0)
    assert h.take() == [("grant", rid, "b"), ("stop", "a")]
    h.stopped("a", at=11.5)
    assert h.sched.next_deadline() == 12.0


def test_no_deadline_while_an_operation_runs() -> None:
    h = Harness(TTL_MODELS, SEPARATE)
    h.bring_up("a", at=1.0)
    assert h.sched.next_deadline() == 11.0
    h.req("c", at=2.0)
    assert h.take() == [("start", "c")]
    assert h.sched.next_deadline() is None
    h.started("c", at=3.0)
    assert h.sched.next_deadline() == 11.0


@pytest.mark.parametrize(("tick", "stops"), [(10.999, False), (11.0, True), (500.0, True)])
def test_tick_past_the_deadline_stops_the_model(tick: float, stops: bool) -> None:
    h = Harness(TTL_MODELS, SEPARATE)
    h.bring_up("a", at=1.0)
    h.tick(tick)
    assert h.take() == ([("stop", "a")] if stops else [])
    assert h.state("a") is (STOPPING if stops else READY)


def test_ttl_never_stops_a_busy_model() -> None:
    h = Harness(TTL_MODELS, SEPARATE)
    h.bring_up("a", at=1.0)
    rid = h.req("a", at=2.0)
    h.take()
    h.tick(1000.0)
    assert h.take() == []
    h.release(rid, at=1001.0)
    assert h.sched.next_deadline() == 1011.0
    assert h.take() == []


def test_request_after_the_deadline_but_before_the_tick_wins() -> None:
    h = Harness(TTL_MODELS, SEPARATE)
    h.bring_up("a", at=1.0)
    rid = h.req("a", at=50.0)
    assert h.take() == [("grant", rid, "a")]
    h.tick(51.0)
    assert h.take() == []
    h.release(rid, at=52.0)
    assert h.sched.next_deadline() == 62.0


def test_any_event_past_the_deadline_stops_the_expired_model() -> None:
    h = Harness(TTL_MODELS, SEPARATE)
    h.bring_up("a", at=1.0)
    h.release(999, at=20.0)  # an unrelated event
    assert h.take() == [("stop", "a")]


def test_request_during_ttl_stop_restarts_the_model() -> None:
    h = Harness(TTL_MODELS, SEPARATE)
    h.bring_up("a", at=1.0)
    h.tick(11.0)
    assert h.take() == [("stop", "a")]
    rid = h.req("a", at=11.5)
    assert h.take() == []
    h.stopped("a", at=12.0)
    assert h.take() == [("start", "a")]
    h.started("a", at=13.0)
    assert h.take() == [("grant", rid, "a")]
    h.release(rid, at=14.0)
    assert h.sched.next_deadline() == 24.0


def test_ttl_stop_of_several_models_at_once() -> None:
    h = Harness(TTL_MODELS, SEPARATE)
    h.bring_up("a", at=0.0)
    h.bring_up("b", at=0.0)
    h.tick(100.0)
    assert sorted(h.take()) == [("stop", "a"), ("stop", "b")]


# -- concurrencyLimit ---------------------------------------------------------------------------


def test_request_beyond_the_limit_waits_for_a_release() -> None:
    h = Harness({"a": {"concurrencyLimit": 2}, "b": {}})
    h.bring_up("a")
    r1, r2, r3, r4 = h.req("a"), h.req("a"), h.req("a"), h.req("a")
    assert h.take() == [("grant", r1, "a"), ("grant", r2, "a")]
    assert h.status("a") == SlotStatus(READY, in_flight=2, waiting=2, last_error=None)
    h.release(r1)
    assert h.take() == [("grant", r3, "a")]  # first come, first served
    r5 = h.req("a")
    h.release(r2)
    assert h.take() == [("grant", r4, "a")]
    assert h.status("a").waiting == 1
    h.release(r3)
    assert h.take() == [("grant", r5, "a")]


def test_limit_applies_to_the_waiters_of_a_start() -> None:
    h = Harness({"a": {"concurrencyLimit": 2}, "b": {}})
    rids = [h.req("a") for _ in range(4)]
    h.take()
    h.started("a")
    assert h.take() == [("grant", rids[0], "a"), ("grant", rids[1], "a")]
    assert h.status("a").waiting == 2


def test_a_waiter_over_the_limit_that_leaves_is_never_granted() -> None:
    h = Harness({"a": {"concurrencyLimit": 1}, "b": {}})
    h.bring_up("a")
    r1, r2, r3 = h.req("a"), h.req("a"), h.req("a")
    h.release(r2)
    h.release(r1)
    assert h.take() == [("grant", r1, "a"), ("grant", r3, "a")]


def test_waiters_over_the_limit_queue_behind_a_swap_like_any_request() -> None:
    h = Harness({"a": {"concurrencyLimit": 1}, "b": {}})
    h.bring_up("a")
    r1, r2 = h.req("a"), h.req("a")
    rb = h.req("b")
    h.take()
    h.release(r1)
    # The swap to b was decided while r2 waited: r2 waits for a's next start, as a request
    # that arrives during a swap does.
    assert h.take() == [("stop", "a")]
    h.stopped("a")
    assert h.take() == [("start", "b")]
    h.started("b")
    assert h.take() == [("grant", rb, "b")]
    h.release(rb)
    assert h.take() == [("stop", "b")]
    h.stopped("b")
    h.started("a")
    assert h.take() == [("start", "a"), ("grant", r2, "a")]


def test_no_limit_by_default() -> None:
    h = Harness(ABC)
    h.bring_up("a")
    for _ in range(200):
        h.req("a")
    assert h.status("a").in_flight == 200
    assert all(c[0] == "grant" for c in h.take())


# -- shutdown -----------------------------------------------------------------------------------


def test_shutdown_fails_pending_requests_and_refuses_new_ones() -> None:
    h = Harness(ABC)
    h.bring_up("a")
    held = h.req("a")
    waiting = [h.req("b"), h.req("a"), h.req("c")]
    h.take()
    h.sched.on_shutdown()
    assert h.take() == [("fail", r, ShuttingDown) for r in waiting]
    late = h.req("a")
    assert h.take() == [("fail", late, ShuttingDown)]
    assert all(s.waiting == 0 for s in h.sched.statuses().values())
    h.release(held)  # a granted request still releases
    assert h.status("a").in_flight == 0


def test_shutdown_while_starting_fails_the_waiters() -> None:
    h = Harness(ABC)
    rid = h.req("a")
    h.take()
    h.sched.on_shutdown()
    assert h.take() == [("fail", rid, ShuttingDown)]
    h.started("a")
    assert h.take() == []


def test_no_deadline_after_shutdown() -> None:
    h = Harness(TTL_MODELS, SEPARATE)
    h.bring_up("a", at=1.0)
    h.sched.on_shutdown()
    assert h.sched.next_deadline() is None


def test_shutdown_does_not_start_a_model_nobody_waits_for() -> None:
    """A swap that was still waiting for a's request at shutdown must not go on to start b:
    b's waiter has been failed, and trioswap is exiting. (Stopping a is fine.)"""
    h = Harness(ABC)
    h.bring_up("a")
    held = h.req("a")
    rb = h.req("b")
    h.take()
    h.sched.on_shutdown()
    assert h.take() == [("fail", rb, ShuttingDown)]
    h.release(held)
    assert h.take() in ([], [("stop", "a")])
    h.stopped("a")
    assert h.take() == []
    assert h.state("b") is STOPPED


def test_shutdown_during_a_pure_stop_lets_it_finish() -> None:
    h = Harness(ABC)
    h.bring_up("a")
    h.unload()
    h.sched.on_shutdown()
    assert h.take() == [("stop", "a")]
    h.stopped("a")
    assert h.state("a") is STOPPED
    assert h.take() == []


# -- robustness ---------------------------------------------------------------------------------


def test_request_for_an_unknown_model_fails_without_poisoning_the_queue() -> None:
    """The scheduler is the router's only state: one bad request must not make every later
    event raise (the item would stay queued and `_grant_ready` would hit it each time)."""
    h = Harness(ABC)
    try:
        bad = h.req("nope")
    except KeyError:
        bad = None  # raising is tolerable; breaking the next events is not
    if bad is not None:
        assert h.take() == [("fail", bad, ModelNotFound)]
    rid = h.req("a")
    assert h.take() == [("start", "a")]
    h.started("a")
    assert h.take() == [("grant", rid, "a")]
    assert "nope" not in h.sched.statuses()


# -- statuses -----------------------------------------------------------------------------------


def test_statuses_cover_every_model() -> None:
    h = Harness(ABC)
    assert h.sched.statuses() == {m: SlotStatus(STOPPED, 0, 0, None) for m in ABC}
    h.req("a")
    h.req("b")
    h.req("b")
    assert {m: s.waiting for m, s in h.sched.statuses().items()} == {"a": 1, "b": 2, "c": 0}


# -- random traffic against a fake world --------------------------------------------------------

CONFIGS = {
    # one default group: swap + exclusive
    "default": ({"a": {"ttl": 5}, "b": {"concurrencyLimit": 2}, "c": {}}, None),
    # every kind of group at once
    "mixed": (
        {
            "a": {},
            "b": {"ttl": 4},
            "c": {"concurrencyLimit": 1},
            "d": {"ttl": 6},
            "p": {},
            "q": {"ttl": 3},
            "z": {},
        },
        {
            "swapx": {"members": ["a", "b"]},
            "free": {"swap": False, "exclusive": False, "members": ["c", "d"]},
            "keep": {"persistent": True, "exclusive": False, "members": ["p", "q"]},
        },
    ),
    # swap groups that leave each other alone, and one exclusive non-swap group
    "shared": (
        {"a": {"ttl": 2}, "b": {}, "c": {}, "d": {"concurrencyLimit": 3}, "e": {}, "f": {}},
        {
            "g1": {"exclusive": False, "members": ["a", "b"]},
            "g2": {"exclusive": False, "members": ["c", "d"]},
            "g3": {"swap": False, "exclusive": True, "members": ["e", "f"]},
        },
    ),
}

ALLOWED = {
    (STOPPED, STARTING),
    (FAILED, STARTING),
    (STARTING, READY),
    (STARTING, FAILED),
    (READY, STOPPING),
    (READY, FAILED),
    (STOPPING, STOPPED),
}


class World:
    """The fake world behind `Effects`: it checks each effect against what it knows when the
    scheduler asks for it, and finishes starts and stops only when the driver says so."""

    def __init__(
        self, models: Mapping[str, ModelConfig], rules: GroupRules, drain_timeout: float = 0.0
    ) -> None:
        self.configs = models
        self.rules = rules
        self.drain_timeout = drain_timeout
        self.forced_stops = 0
        self.alive: set[str] = set()  # a process exists (starting, ready or stopping)
        self.starting: set[str] = set()
        self.stopping: set[str] = set()
        self.started_seq: dict[str, int] = {}  # start order, to check pairs of alive models
        self.starts = 0
        self._seq = itertools.count()
        self.state = dict.fromkeys(models, STOPPED)
        self.model_of: dict[RequestId, str] = {}
        self.outcomes: dict[RequestId, list[Any]] = {}
        self.released: set[RequestId] = set()
        self.released_early: set[RequestId] = set()  # cancelled before any outcome
        self.holding: dict[RequestId, str] = {}  # granted, not yet released
        self.idle_since: dict[str, float] = {}
        self.start_error: ModelStartError | None = None
        self.closed = False
        # Models a forced unload may stop with requests in flight, until they are stopped.
        self.force_named: set[str] = set()
        self.unloads: dict[UnloadId, frozenset[str] | None] = {}  # asked for, not yet answered
        self.unload_seq: dict[UnloadId, int] = {}  # when each was asked for
        self.answers: dict[UnloadId, UnloadResult] = {}

    @property
    def ready(self) -> set[str]:
        return self.alive - self.starting - self.stopping

    def in_flight(self, model: str) -> int:
        return sum(1 for m in self.holding.values() if m == model)

    def _outcome(self, request: RequestId, what: Any) -> None:
        assert request in self.model_of, f"outcome for unknown request {request}"
        assert request not in self.released, f"outcome for released request {request}"
        assert self.outcomes[request] == [], f"second outcome for {request}: {what}"
        self.outcomes[request].append(what)

    # -- Effects ------------------------------------------------------------------------------

    def grant(self, request: RequestId, model: str) -> None:
        self._outcome(request, ("grant", model))
        assert self.model_of[request] == model
        assert model in self.ready, f"granted {model} which is not ready"
        limit = self.configs[model].concurrency_limit
        assert not limit or self.in_flight(model) < limit
        self.holding[request] = model

    def fail(self, request: RequestId, error: TrioswapError) -> None:
        self._outcome(request, ("fail", error))
        model = self.model_of[request]
        if isinstance(error, ShuttingDown):
            assert self.closed
        else:
            assert isinstance(error, ModelStartError)
            assert error is self.start_error
            assert error.model == model

    def start(self, model: str) -> None:
        assert model not in self.alive, f"start of {model} which is alive"
        in_the_way = evict_for(model, self.alive, self.rules)
        assert not in_the_way, f"start of {model} while {in_the_way} still alive"
        self.alive.add(model)
        self.starting.add(model)
        self.started_seq[model] = next(self._seq)
        self.starts += 1

    def stop(self, model: str) -> None:
        assert model in self.ready, f"stop of {model} which is not ready"
        # Only a bounded drain or a forced unload may stop a model that still serves requests.
        if self.in_flight(model):
            assert self.drain_timeout > 0 or model in self.force_named, (
                f"stop of {model} with requests in flight"
            )
            self.forced_stops += 1
        self.stopping.add(model)

    def unloaded(self, unload: UnloadId, result: UnloadResult) -> None:
        assert unload in self.unloads, f"answer to unknown or answered unload {unload}"
        named = self.unloads.pop(unload)
        self.answers[unload] = result
        assert set(result.forced) <= set(result.stopped)
        for model in result.stopped:
            assert named is None or model in named, (unload, named, result)
            # A request that came after the unload may have started it again since.
            restarted = self.started_seq.get(model, -1) > self.unload_seq[unload]
            assert model not in self.alive or restarted, (
                f"unload {unload} answered before {model} stopped"
            )

    def gone(self, model: str) -> None:
        """`model` has no process any more."""
        self.alive.discard(model)
        self.force_named.discard(model)

    def transition(self, model: str, old: ModelState, new: ModelState) -> None:
        assert self.state[model] is old, (model, self.state[model], old, new)
        assert (old, new) in ALLOWED, (model, old, new)
        self.state[model] = new


class Driver:
    """Feeds events to a scheduler backed by a `World`, keeping the world's books, and checks
    the invariants. Used by both the Hypothesis machine and the seeded random walks."""

    def __init__(self, config_name: str, drain_timeout: float = 0.0) -> None:
        models, groups = CONFIGS[config_name]
        config = loads(config_yaml(models, groups), strict=True)
        self.model_ids = sorted(config.models)
        self.ttl = {m: c.ttl for m, c in config.models.items()}
        self.rules = GroupRules.from_config(config)
        self.drain_timeout = drain_timeout
        self.world = World(config.models, self.rules, drain_timeout)
        self.sched = Scheduler(config.models, self.rules, self.world, drain_timeout)
        self.now = 0.0
        self._ids = itertools.count(1)

    def _time(self, dt: float) -> float:
        self.now += dt
        return self.now

    # -- events -------------------------------------------------------------------------------

    def request(self, model: str, dt: float = 0.0) -> None:
        rid = next(self._ids)
        self.world.model_of[rid] = model
        self.world.outcomes[rid] = []
        self.sched.on_request(rid, model, self._time(dt))

    def release(self, rid: RequestId, dt: float = 0.0) -> None:
        """A request finishes, or its client goes away (before or after its grant); a second
        release of the same request must be harmless."""
        w = self.world
        now = self._time(dt)
        if rid not in w.released and not w.outcomes[rid]:
            w.released_early.add(rid)
        w.released.add(rid)
        model = w.holding.pop(rid, None)
        if model is not None and w.in_flight(model) == 0:
            w.idle_since[model] = now
        self.sched.on_release(rid, now)

    def finish_start(self, model: str, ok: bool, dt: float = 0.0) -> None:
        w = self.world
        now = self._time(dt)
        w.starting.remove(model)
        if ok:
            w.start_error = None
            w.idle_since[model] = now
        else:
            w.gone(model)
            w.start_error = ModelStartError(model, "not healthy")
        self.sched.on_start_done(model, w.start_error, now)
        status = self.sched.statuses()[model]
        # every waiter has its answer, granted on success (but those over concurrencyLimit,
        # who wait their turn) or failed otherwise
        limit = w.configs[model].concurrency_limit
        assert status.waiting == 0 or (ok and limit and status.in_flight >= limit), (
            model,
            status,
        )
        # (a queued unload may stop a model at once if none of its waiters is left)
        assert status.state in ((READY, STOPPING) if ok else (FAILED,)), (model, status)

    def finish_stop(self, model: str, dt: float = 0.0) -> None:
        self.world.stopping.remove(model)
        self.world.gone(model)
        self.sched.on_stop_done(model, self._time(dt))

    def crash(self, model: str) -> None:
        assert model in self.world.ready
        self.world.gone(model)
        self.sched.on_exited(model, "killed by signal 9", self.now)
        # failed, or already starting again for a request that was waiting on it
        assert self.sched.statuses()[model].state in (FAILED, STARTING)

    def unload(self, models: Iterable[str] | None, force: bool = False) -> None:
        w = self.world
        uid = next(self._ids)
        named = None if models is None else frozenset(models)
        w.unloads[uid] = named
        w.unload_seq[uid] = next(w._seq)
        if force:
            w.force_named |= w.alive if named is None else w.alive & named
        self.sched.on_unload(uid, models, self.now, force)

    def tick(self, dt: float) -> None:
        self.sched.on_tick(self._time(dt))

    def shutdown(self) -> None:
        self.world.closed = True
        self.world.unloads.clear()  # the router answers them: trioswap is shutting down
        self.sched.on_shutdown()
        assert all(s.waiting == 0 for s in self.sched.statuses().values())

    # -- the world settles --------------------------------------------------------------------

    def settle(self) -> None:
        """Finish every start and stop and release every granted request until nothing moves;
        then every request not cancelled first has had exactly one answer: no deadlock, no
        lost request."""
        w = self.world
        for _ in range(10_000):
            if w.starting:
                self.finish_start(min(w.starting), True)
            elif w.stopping:
                self.finish_stop(min(w.stopping))
            elif w.holding:
                self.release(min(w.holding))
            else:
                break
            self.check()
        else:
            raise AssertionError("the world never settled")
        for rid, outcome in w.outcomes.items():
            if rid in w.released_early:
                assert outcome == [], rid
            else:
                assert len(outcome) == 1, f"request {rid} for {w.model_of[rid]} was lost"
        assert not w.unloads, f"unloads never answered: {w.unloads}"
        statuses = self.sched.statuses()
        assert all(s.waiting == 0 for s in statuses.values()), statuses
        assert all(s.in_flight == 0 for s in statuses.values()), statuses
        assert all(s.state in (READY, STOPPED, FAILED) for s in statuses.values()), statuses

    # -- after every step ---------------------------------------------------------------------

    def check(self) -> None:
        w = self.world
        statuses = self.sched.statuses()
        for model, s in statuses.items():
            assert s.in_flight >= 0, (model, s)
            assert s.in_flight == w.in_flight(model), (model, s)
            assert s.state is w.state[model], (model, s, w.state[model])
            assert (s.state is STARTING) == (model in w.starting), (model, s)
            assert (s.state is STOPPING) == (model in w.stopping), (model, s)
            assert (s.state is READY) == (model in w.ready), (model, s)
        # of two alive models, the later one did not have to evict the earlier
        for x in w.alive:
            for y in w.alive:
                if w.started_seq[x] > w.started_seq[y]:
                    assert not evict_for(x, [y], self.rules), (x, y)
        # a request is queued exactly when it has no answer yet and was not released
        pending = Counter(
            w.model_of[r] for r, o in w.outcomes.items() if not o and r not in w.released
        )
        assert {m: s.waiting for m, s in statuses.items() if s.waiting} == dict(pending)
        # ttl: no deadline while an operation runs; never one already past (any event past a
        # deadline stops that model); otherwise exactly the earliest idle_since + ttl. With a
        # drainTimeout, a draining operation has its own deadline, at most that far ahead.
        deadline = self.sched.next_deadline()
        draining = self.drain_timeout > 0
        if w.closed:
            assert deadline is None
        # A forced unload is no operation: other models' ttls run on while it stops its own.
        if w.starting or w.stopping - w.force_named:
            assert deadline is None or draining
        if deadline is not None:
            assert deadline > self.now, "an expired model or drain was left waiting"
            idle = [
                w.idle_since[m] + self.ttl[m]
                for m in w.ready
                if self.ttl[m] > 0 and w.in_flight(m) == 0
            ]
            if not draining or (idle and deadline == min(idle)):
                assert deadline == min(idle)
            else:
                assert any(w.in_flight(m) for m in w.ready)
                assert deadline <= self.now + self.drain_timeout


class SchedulerMachine(RuleBasedStateMachine):
    """Hypothesis explores orders of events (and shrinks a failure to a short story)."""

    driver: Driver

    @initialize(name=st.sampled_from(sorted(CONFIGS)))
    def setup(self, name: str) -> None:
        self.driver = Driver(name)

    @property
    def world(self) -> World:
        return self.driver.world

    @rule(data=st.data(), dt=st.sampled_from([0.0, 0.5, 1.0, 3.0]))
    def request(self, data: st.DataObject, dt: float) -> None:
        model = data.draw(st.sampled_from(self.driver.model_ids), label="model")
        self.driver.request(model, dt)

    @precondition(lambda self: self.world.model_of)
    @rule(data=st.data(), dt=st.sampled_from([0.0, 0.5, 2.0]))
    def release(self, data: st.DataObject, dt: float) -> None:
        w = self.world
        live = sorted(set(w.model_of) - w.released)
        pool = live if live and data.draw(st.integers(0, 4), label="fresh") else None
        rid = data.draw(st.sampled_from(pool or sorted(w.model_of)), label="request")
        self.driver.release(rid, dt)

    @precondition(lambda self: self.world.starting)
    @rule(data=st.data(), ok=st.booleans(), dt=st.sampled_from([0.0, 1.0]))
    def finish_start(self, data: st.DataObject, ok: bool, dt: float) -> None:
        model = data.draw(st.sampled_from(sorted(self.world.starting)), label="model")
        self.driver.finish_start(model, ok, dt)

    @precondition(lambda self: self.world.stopping)
    @rule(data=st.data(), dt=st.sampled_from([0.0, 1.0]))
    def finish_stop(self, data: st.DataObject, dt: float) -> None:
        model = data.draw(st.sampled_from(sorted(self.world.stopping)), label="model")
        self.driver.finish_stop(model, dt)

    @precondition(lambda self: self.world.ready)
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        self.driver.crash(data.draw(st.sampled_from(sorted(self.world.ready)), label="model"))

    @rule(data=st.data(), everything=st.booleans(), force=st.booleans())
    def unload(self, data: st.DataObject, everything: bool, force: bool) -> None:
        some = st.sets(st.sampled_from(self.driver.model_ids), max_size=2)
        self.driver.unload(None if everything else data.draw(some, label="models"), force)

    @rule(dt=st.sampled_from([0.5, 2.0, 7.0]))
    def tick(self, dt: float) -> None:
        self.driver.tick(dt)

    @precondition(lambda self: not self.world.closed and len(self.world.model_of) >= 8)
    @rule()
    def shutdown(self) -> None:
        self.driver.shutdown()

    @rule()
    def settle(self) -> None:
        self.driver.settle()

    @invariant()
    def check(self) -> None:
        self.driver.check()

    def teardown(self) -> None:
        if hasattr(self, "driver"):
            self.driver.settle()


SchedulerMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSchedulerMachine = SchedulerMachine.TestCase


# Seeded random walks: long, dense traffic (hundreds of overlapping requests per run), which the
# Hypothesis machine's short runs rarely reach.
EVENTS = ["request", "release", "finish_start", "finish_stop", "crash", "unload", "tick"]
WEIGHTS = [30, 24, 12, 12, 2, 3, 6]


def random_walk(driver: Driver, rng: random.Random, steps: int, shutdown_at: int | None) -> None:
    w = driver.world
    for step in range(steps):
        if step == shutdown_at:
            driver.shutdown()
        elif step % 97 == 96:
            driver.settle()
        event = rng.choices(EVENTS, WEIGHTS)[0]
        dt = rng.choice([0.0, 0.0, 0.25, 1.0, 3.0])
        if event == "request":
            # bursts: several requests for one model at once
            model = rng.choice(driver.model_ids)
            for _ in range(rng.choice([1, 1, 1, 2, 4])):
                driver.request(model, dt)
        elif event == "release" and w.model_of:
            holding, waiting = sorted(w.holding), sorted(set(w.model_of) - w.released)
            roll = rng.random()
            if holding and roll < 0.75:
                driver.release(rng.choice(holding), dt)  # finished
            elif waiting and roll < 0.95:
                driver.release(rng.choice(waiting), dt)  # cancelled, maybe before its grant
            else:
                driver.release(rng.choice(sorted(w.model_of)), dt)  # maybe a second time
        elif event == "finish_start" and w.starting:
            driver.finish_start(rng.choice(sorted(w.starting)), rng.random() < 0.8, dt)
        elif event == "finish_stop" and w.stopping:
            driver.finish_stop(rng.choice(sorted(w.stopping)), dt)
        elif event == "crash" and w.ready:
            driver.crash(rng.choice(sorted(w.ready)))
        elif event == "unload":
            everything = rng.random() < 0.4
            models = None if everything else rng.sample(driver.model_ids, rng.randint(1, 2))
            driver.unload(models, force=rng.random() < 0.3)
        elif event == "tick":
            driver.tick(dt or 1.0)
        driver.check()
    driver.settle()


def test_a_forced_stop_leaves_other_models_ttls_running() -> None:
    """Found by SchedulerMachine: while a forced unload stops `a`, `d` (ready, idle) still has
    its ttl deadline, since a forced stop is no operation."""
    driver = Driver("mixed")
    driver.request("a", 0.0)
    driver.settle()
    driver.request("d", 0.0)
    driver.settle()
    driver.unload({"a"}, force=True)
    driver.check()
    assert driver.world.stopping == {"a"}
    assert driver.sched.next_deadline() is not None
    driver.settle()


@pytest.mark.parametrize("drain_timeout", [0.0, 2.0])
@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_random_walk(config_name: str, seed: int, drain_timeout: float) -> None:
    rng = random.Random(f"{config_name}-{seed}")
    driver = Driver(config_name, drain_timeout)
    random_walk(driver, rng, steps=400, shutdown_at=350 if seed % 4 == 3 else None)
    # the walk did real work: many requests, several starts and answers of every kind
    assert len(driver.world.model_of) > 150
    assert driver.world.starts > 5


def test_random_walks_with_drain_timeout_do_cut_drains() -> None:
    """The walks with a drainTimeout exercise what it is for: stopping busy models."""
    forced = 0
    for config_name in sorted(CONFIGS):
        for seed in range(4):
            driver = Driver(config_name, drain_timeout=2.0)
            random_walk(driver, random.Random(f"{config_name}-{seed}"), steps=400, shutdown_at=None)
            forced += driver.world.forced_stops
    assert forced > 0


# -- drainTimeout: a bounded wait for the requests of the models a swap stops -------------------


def test_without_drain_timeout_a_swap_waits_as_long_as_requests_last() -> None:
    h = Harness(ABC)
    h.bring_up("a")
    held = h.req("a")
    h.take()
    h.req("b", at=1.0)
    assert h.take() == []
    assert h.sched.next_deadline() is None
    h.tick(at=10_000.0)
    assert h.take() == []
    assert h.state("a") is READY
    h.release(held)
    assert h.take() == [("stop", "a")]


def test_drain_timeout_stops_a_model_whose_requests_outlast_it() -> None:
    h = Harness(ABC, drain_timeout=5.0)
    h.bring_up("a")
    held = h.req("a")
    h.take()
    b_request = h.req("b", at=1.0)
    assert h.take() == []
    assert h.sched.next_deadline() == 6.0
    h.tick(at=5.9)
    assert h.take() == []
    h.tick(at=6.0)
    assert h.take() == [("stop", "a")]
    assert h.state("a") is STOPPING
    assert h.sched.next_deadline() is None
    h.stopped("a")
    assert h.take() == [("start", "b")]
    h.started("b")
    assert h.take() == [("grant", b_request, "b")]
    # The cut-off request still releases its lease; nothing goes negative.
    h.release(held)
    assert h.status("a").in_flight == 0


def test_drain_timeout_is_not_needed_when_requests_finish_in_time() -> None:
    h = Harness(ABC, drain_timeout=5.0)
    h.bring_up("a")
    held = h.req("a")
    h.take()
    h.req("b", at=1.0)
    h.release(held, at=2.0)
    assert h.take() == [("stop", "a")]
    assert h.sched.next_deadline() is None


def test_drain_timeout_bounds_an_unload_too() -> None:
    h = Harness(ABC, drain_timeout=1.0)
    h.bring_up("a")
    h.req("a")
    h.take()
    h.unload(at=0.5)
    assert h.take() == []
    h.tick(at=1.5)
    assert h.take() == [("stop", "a")]
