"""Which running models must stop so that a target may run: llama-swap's group rules, pure.

- In a `swap: true` group only one member runs at a time.
- Starting a member of an `exclusive` group stops the members of every other group, except groups
  marked `persistent`.
- Models in no group form one default group that is both `swap` and `exclusive`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from trioswap.config import Config, GroupConfig

DEFAULT_GROUP = "(default)"


@dataclass(frozen=True)
class GroupRules:
    """Group membership resolved once from the config."""

    group_of: Mapping[str, GroupConfig]

    @classmethod
    def from_config(cls, config: Config) -> GroupRules:
        group_of: dict[str, GroupConfig] = {}
        for group in config.groups.values():
            for member in group.members:
                group_of[member] = group
        loose = tuple(m for m in config.models if m not in group_of)
        if loose:
            default = GroupConfig(id=DEFAULT_GROUP, members=loose)
            for member in loose:
                group_of[member] = default
        return cls(group_of)


def evict_for(target: str, running: Iterable[str], rules: GroupRules) -> set[str]:
    """The models in `running` that must stop before `target` may start."""
    group = rules.group_of[target]
    evict: set[str] = set()
    for other in running:
        if other == target:
            continue
        other_group = rules.group_of[other]
        if other_group.id == group.id:
            if group.swap:
                evict.add(other)
        elif group.exclusive and not other_group.persistent:
            evict.add(other)
    return evict
