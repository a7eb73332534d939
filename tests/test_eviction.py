"""The group rules as a pure function: which running models must stop so a target may start.

llama-swap's rules: in a `swap: true` group only one member runs; starting a member of an
`exclusive` group stops the members of every other group except `persistent` ones; models in no
group form one default group that is both swap and exclusive.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioswap.config import loads
from trioswap.supervisor.eviction import DEFAULT_GROUP, GroupRules, evict_for

# One group per combination of the three flags, two members each, plus two loose models.
#   group      swap   exclusive  persistent
#   sx         yes    yes        no          (the default flags)
#   s          yes    no         no
#   x          no     yes        no
#   n          no     no         no
#   psx        yes    yes        yes
#   pn         no     no         yes
#   (default)  yes    yes        no          d1, d2
CONFIG = """
models:
  sx1: {cmd: echo, proxy: "http://127.0.0.1:1"}
  sx2: {cmd: echo, proxy: "http://127.0.0.1:1"}
  s1: {cmd: echo, proxy: "http://127.0.0.1:1"}
  s2: {cmd: echo, proxy: "http://127.0.0.1:1"}
  x1: {cmd: echo, proxy: "http://127.0.0.1:1"}
  x2: {cmd: echo, proxy: "http://127.0.0.1:1"}
  n1: {cmd: echo, proxy: "http://127.0.0.1:1"}
  n2: {cmd: echo, proxy: "http://127.0.0.1:1"}
  psx1: {cmd: echo, proxy: "http://127.0.0.1:1"}
  psx2: {cmd: echo, proxy: "http://127.0.0.1:1"}
  pn1: {cmd: echo, proxy: "http://127.0.0.1:1"}
  pn2: {cmd: echo, proxy: "http://127.0.0.1:1"}
  d1: {cmd: echo, proxy: "http://127.0.0.1:1"}
  d2: {cmd: echo, proxy: "http://127.0.0.1:1"}
routing:
  router:
    settings:
      groups:
        sx:
          members: [sx1, sx2]
        s:
          swap: true
          exclusive: false
          members: [s1, s2]
        x:
          swap: false
          exclusive: true
          members: [x1, x2]
        n:
          swap: false
          exclusive: false
          members: [n1, n2]
        psx:
          swap: true
          exclusive: true
          persistent: true
          members: [psx1, psx2]
        pn:
          swap: false
          exclusive: false
          persistent: true
          members: [pn1, pn2]
"""

ALL = ("sx1", "sx2", "s1", "s2", "x1", "x2", "n1", "n2", "psx1", "psx2", "pn1", "pn2", "d1", "d2")
PERSISTENT = {"psx1", "psx2", "pn1", "pn2"}


RULES = GroupRules.from_config(loads(CONFIG))


@pytest.fixture
def rules() -> GroupRules:
    return RULES


def members(*groups: str) -> set[str]:
    return {m for m in ALL if m.rstrip("12") in groups}


# -- GroupRules.from_config ---------------------------------------------------------------------


def test_every_model_has_a_group(rules: GroupRules) -> None:
    assert set(rules.group_of) == set(ALL)


@pytest.mark.parametrize(
    ("model", "group", "swap", "exclusive", "persistent"),
    [
        ("sx1", "sx", True, True, False),
        ("s2", "s", True, False, False),
        ("x1", "x", False, True, False),
        ("n2", "n", False, False, False),
        ("psx1", "psx", True, True, True),
        ("pn2", "pn", False, False, True),
        ("d1", DEFAULT_GROUP, True, True, False),
        ("d2", DEFAULT_GROUP, True, True, False),
    ],
)
def test_group_flags(
    rules: GroupRules, model: str, group: str, swap: bool, exclusive: bool, persistent: bool
) -> None:
    g = rules.group_of[model]
    assert (g.id, g.swap, g.exclusive, g.persistent) == (group, swap, exclusive, persistent)
    assert model in g.members


def test_loose_models_share_one_default_group(rules: GroupRules) -> None:
    assert rules.group_of["d1"] is rules.group_of["d2"]
    assert rules.group_of["d1"].members == ("d1", "d2")


def test_no_default_group_when_every_model_is_grouped() -> None:
    config = loads(
        """
models:
  a: {cmd: echo, proxy: "http://127.0.0.1:1"}
  b: {cmd: echo, proxy: "http://127.0.0.1:1"}
routing:
  router:
    settings:
      groups:
        g:
          members: [a, b]
"""
    )
    rules = GroupRules.from_config(config)
    assert {g.id for g in rules.group_of.values()} == {"g"}


def test_models_without_groups_section_are_all_in_the_default_group() -> None:
    config = loads(
        """
models:
  a: {cmd: echo, proxy: "http://127.0.0.1:1"}
  b: {cmd: echo, proxy: "http://127.0.0.1:1"}
  c: {cmd: echo, proxy: "http://127.0.0.1:1"}
"""
    )
    rules = GroupRules.from_config(config)
    assert {g.id for g in rules.group_of.values()} == {DEFAULT_GROUP}
    assert evict_for("a", ["b", "c"], rules) == {"b", "c"}


# -- evict_for: one running model at a time -----------------------------------------------------

# (target, other, evicted?) for one other running model. The table is the spec.
PAIRS = [
    # swap group: the other member goes; the rest by exclusivity.
    ("sx1", "sx2", True),
    ("s1", "s2", True),
    ("psx1", "psx2", True),  # persistent protects only from *other* groups
    ("d1", "d2", True),  # the default group is swap
    # non-swap group: members run together
    ("x1", "x2", False),
    ("n1", "n2", False),
    ("pn1", "pn2", False),
    # exclusive target: every other non-persistent group goes
    ("sx1", "s1", True),
    ("sx1", "x1", True),
    ("sx1", "n1", True),
    ("sx1", "d1", True),
    ("sx1", "psx1", False),
    ("sx1", "pn1", False),
    ("x1", "sx1", True),
    ("x1", "s2", True),
    ("x1", "n1", True),
    ("x1", "d2", True),
    ("x1", "psx2", False),
    ("x1", "pn2", False),
    ("d1", "sx1", True),
    ("d1", "s1", True),
    ("d1", "x1", True),
    ("d1", "n1", True),
    ("d1", "psx1", False),
    ("d1", "pn1", False),
    # an exclusive persistent group still evicts the others (but not other persistent ones)
    ("psx1", "sx1", True),
    ("psx1", "s1", True),
    ("psx1", "x1", True),
    ("psx1", "n1", True),
    ("psx1", "d1", True),
    ("psx1", "pn1", False),
    # non-exclusive target: other groups stay, whatever their flags
    ("s1", "sx1", False),
    ("s1", "x1", False),
    ("s1", "n1", False),
    ("s1", "d1", False),
    ("s1", "psx1", False),
    ("s1", "pn1", False),
    ("n1", "sx1", False),
    ("n1", "s1", False),
    ("n1", "x1", False),
    ("n1", "d1", False),
    ("n1", "psx1", False),
    ("n1", "pn1", False),
    ("pn1", "sx1", False),
    ("pn1", "d1", False),
    ("pn1", "psx1", False),
]


@pytest.mark.parametrize(("target", "other", "evicted"), PAIRS, ids=lambda v: str(v))
def test_pair(rules: GroupRules, target: str, other: str, evicted: bool) -> None:
    assert evict_for(target, [other], rules) == ({other} if evicted else set())


@pytest.mark.parametrize("target", ALL)
def test_target_never_evicts_itself(rules: GroupRules, target: str) -> None:
    assert target not in evict_for(target, [target], rules)
    assert evict_for(target, [target], rules) == set()


@pytest.mark.parametrize("target", ALL)
def test_nothing_running_nothing_to_evict(rules: GroupRules, target: str) -> None:
    assert evict_for(target, [], rules) == set()


# -- evict_for: whole running sets --------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("sx1", set(ALL) - PERSISTENT - {"sx1"}),
        ("x1", set(ALL) - PERSISTENT - {"x1", "x2"}),
        ("d1", set(ALL) - PERSISTENT - {"d1"}),
        ("psx1", set(ALL) - {"pn1", "pn2", "psx1"}),
        ("s1", {"s2"}),
        ("n1", set()),
        ("pn1", set()),
    ],
)
def test_everything_running(rules: GroupRules, target: str, expected: set[str]) -> None:
    assert evict_for(target, ALL, rules) == expected


def test_accepts_any_iterable_and_does_not_mutate(rules: GroupRules) -> None:
    running = {"sx2", "n1", "pn1"}
    before = set(running)
    assert evict_for("sx1", iter(running), rules) == {"sx2", "n1"}
    assert evict_for("sx1", frozenset(running), rules) == {"sx2", "n1"}
    assert evict_for("sx1", sorted(running), rules) == {"sx2", "n1"}
    assert running == before


def test_returns_a_fresh_set(rules: GroupRules) -> None:
    first = evict_for("d1", ["d2"], rules)
    first.add("junk")
    assert evict_for("d1", ["d2"], rules) == {"d2"}


def test_persistent_groups_survive_any_start(rules: GroupRules) -> None:
    for target in ALL:
        evicted = evict_for(target, ALL, rules)
        for p in PERSISTENT:
            if rules.group_of[p].id != rules.group_of[target].id:
                assert p not in evicted, (target, p)


def test_swap_groups_run_one_member(rules: GroupRules) -> None:
    """After starting any target, at most one member of each swap group is left running."""
    for target in ALL:
        left = (set(ALL) - evict_for(target, ALL, rules)) | {target}
        group = rules.group_of[target]
        if group.swap:
            assert left & set(group.members) == {target}


# -- properties over random running sets --------------------------------------------------------

running_sets = st.sets(st.sampled_from(ALL))


@given(target=st.sampled_from(ALL), running=running_sets)
def test_properties(target: str, running: set[str]) -> None:
    rules = RULES
    evicted = evict_for(target, running, rules)
    # only running models, never the target
    assert evicted <= running
    assert target not in evicted
    # decided one model at a time: the answer for a set is the union over its members
    union: set[str] = set()
    for other in running:
        union |= evict_for(target, [other], rules)
    assert evicted == union
    # and agrees with the rule written out directly
    group = rules.group_of[target]
    for other in running - {target}:
        og = rules.group_of[other]
        should = group.swap if og.id == group.id else (group.exclusive and not og.persistent)
        assert (other in evicted) == should, (target, other)


@given(target=st.sampled_from(ALL), small=running_sets, extra=running_sets)
def test_monotone(target: str, small: set[str], extra: set[str]) -> None:
    """More running models never means fewer evictions."""
    rules = RULES
    assert evict_for(target, small, rules) <= evict_for(target, small | extra, rules)


@pytest.mark.parametrize("target", sorted(members("sx", "x", "psx") | {"d1", "d2"}))
def test_exclusive_target_leaves_only_persistent_and_own_group(
    rules: GroupRules, target: str
) -> None:
    own = set(rules.group_of[target].members)
    left = set(ALL) - evict_for(target, ALL, rules)
    assert left <= own | PERSISTENT
