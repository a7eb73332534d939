"""Checks for the routing engines trioswap parses but does not run yet: the matrix router,
queue priorities, selectors and profiles. Configs that use them load (with a warning from the
key check); what they reference must still exist, as llama-swap's loader requires. Each
problem is reported once, at its key, and the checks go on past it."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from trioswap.config import schema
from trioswap.config.keys import did_you_mean
from trioswap.config.matrix_expr import MatrixError, Program, compile_sets
from trioswap.config.resolved import GroupConfig, PeerTarget

Report = Callable[[tuple[Any, ...], str], None]

_ROUTER = ("routing", "router")
_VAR_NAME = re.compile(r"[A-Za-z0-9.-]{1,32}")


def check_routing(
    f: schema.File,
    models: Collection[str],
    aliases: Mapping[str, str],
    peer_models: Mapping[str, PeerTarget],
    groups: Mapping[str, GroupConfig],
    error: Report,
    warn: Report,
) -> None:
    _Check(f, models, aliases, peer_models, groups, error, warn).run()


class _Check:
    def __init__(
        self,
        f: schema.File,
        models: Collection[str],
        aliases: Mapping[str, str],
        peer_models: Mapping[str, PeerTarget],
        groups: Mapping[str, GroupConfig],
        error: Report,
        warn: Report,
    ) -> None:
        self.f = f
        self.models = models
        self.aliases = aliases
        self.peer_models = peer_models
        self.groups = groups
        self.error = error
        self.warn = warn
        # `peer/model` names are reserved for peers, whatever else they might mean.
        self.qualified = {
            f"{peer_id}/{model}": peer_id for peer_id, p in f.peers.items() for model in p.models
        }

    def run(self) -> None:
        matrix_active, program = self.matrix()
        self.priority()
        self.selectors(matrix_active, program)
        self.profiles()

    def local(self, name: str) -> str | None:
        """The model id a local model id or alias names (llama-swap's RealModelName)."""
        return name if name in self.models else self.aliases.get(name)

    # -- the matrix router ----------------------------------------------------------------

    def matrix(self) -> tuple[bool, Program | None]:
        """Whether the matrix router is the one llama-swap runs, and its sets if they compile."""
        f, router = self.f, self.f.routing.router
        if f.matrix is not None:
            if f.groups and "router" not in f.routing.model_fields_set:
                self.error(
                    ("matrix",),
                    "the top-level groups and matrix are both set, but only one router runs: "
                    "keep one",
                )
            return True, self.check_matrix(f.matrix, ("matrix",))
        if router.use != "matrix":
            return False, None  # a matrix under settings waits, unchecked, for use: matrix
        if router.settings.matrix is None:
            self.error(
                (*_ROUTER, "use"), "is 'matrix' but routing.router.settings.matrix is not set"
            )
            return True, None
        self.warn(
            (*_ROUTER, "use"),
            "the matrix router is not implemented in trioswap yet: groups decide",
        )
        return True, self.check_matrix(router.settings.matrix, (*_ROUTER, "settings", "matrix"))

    def check_matrix(self, m: schema.Matrix, base: tuple[str, ...]) -> Program | None:
        for var, model in m.vars.items():
            where = (*base, "vars", var)
            if not _VAR_NAME.fullmatch(var):
                self.error(
                    where,
                    f"var name {var!r} must be 1-32 characters: letters, digits, '-' or '.'",
                )
            if model in self.models:
                continue
            if model in self.aliases:
                self.error(
                    where,
                    f"{model!r} is an alias of {self.aliases[model]!r}: a var names a model id",
                )
            else:
                self.error(where, f"unknown model {model!r}" + did_you_mean(model, [*self.models]))
        # Vars win over model ids of the same name.
        names = {model: model for model in self.models} | dict(m.vars)
        for key, cost in m.evict_costs.items():
            where = (*base, "evict_costs", key)
            if key not in names:
                self.error(where, f"unknown var or model {key!r}" + did_you_mean(key, [*names]))
            if cost <= 0:
                self.error(where, f"an eviction cost is a positive integer, not {cost}")
        if not m.sets:
            self.error((*base, "sets"), "at least one set is required")
            return None
        try:
            return compile_sets(m.sets, names)
        except MatrixError as exc:
            for problem in exc.problems:
                self.error((*base, "sets", problem.set), problem.message)
            return None

    # -- the scheduler ----------------------------------------------------------------------

    def priority(self) -> None:
        for name in self.f.routing.scheduler.settings.fifo.priority:
            if self.local(name) is None:
                self.error(
                    ("routing", "scheduler", "settings", "fifo", "priority", name),
                    f"unknown model {name!r}" + did_you_mean(name, [*self.models, *self.aliases]),
                )

    # -- selectors ----------------------------------------------------------------------------

    def selectors(self, matrix_active: bool, program: Program | None) -> None:
        for selector_id, selector in self.f.selectors.items():
            base = ("selectors", selector_id)
            self.selector_id(selector_id, base)
            local = self.targets(selector, base)
            settings = selector.settings.model_fields_set
            if selector.strategy != "spillover" and "spillover" in settings:
                self.warn(
                    (*base, "settings", "spillover"),
                    f"ignored: only strategy 'spillover' reads it, not {selector.strategy!r}",
                )
            if selector.strategy == "spillover" and selector.settings.spillover < 1:
                self.error(
                    (*base, "settings", "spillover"),
                    f"must be at least 1 for spillover, not {selector.settings.spillover}",
                )
            elif selector.strategy == "spillover" and len(local) > 1:
                self.together((*base, "targets"), local, matrix_active, program)

    def selector_id(self, selector_id: str, base: tuple[str, ...]) -> None:
        if not selector_id.strip():
            self.error(base, "a selector id must not be empty")
        elif selector_id in self.models:
            self.error(base, f"{selector_id!r} is also a model id")
        elif selector_id in self.aliases:
            self.error(base, f"{selector_id!r} is also an alias of {self.aliases[selector_id]!r}")
        elif selector_id in self.qualified:
            self.error(
                base,
                f"{selector_id!r} is the name of peer {self.qualified[selector_id]!r}'s model",
            )

    def targets(self, selector: schema.Selector, base: tuple[str, ...]) -> list[str]:
        """Reports the targets that cannot be used; returns spillover's local model ids."""
        seen: dict[str, int] = {}
        local: list[str] = []
        for i, target in enumerate(selector.targets):
            where = (*base, "targets", i)
            model = self.local(target)
            peer = self.peer_models.get(target)
            if target in self.f.selectors:
                self.error(where, f"{target!r} is a selector: a selector cannot target another")
                continue
            if model is not None:
                resolved = model
            elif peer is not None:
                resolved = f"{peer.peer.id}/{peer.model}"
            else:
                choices = [*self.models, *self.aliases, *self.peer_models]
                self.error(where, f"unknown model {target!r}" + did_you_mean(target, choices))
                continue
            if selector.strategy == "warm" and model is None:
                self.error(where, f"{target!r} is a peer's model: strategy 'warm' needs local ones")
            if selector.strategy != "spillover":
                continue
            if resolved in seen:
                also = "" if resolved == target else f" ({target!r} names it)"
                self.error(where, f"{resolved!r} is already targets[{seen[resolved]}]{also}")
                continue
            seen[resolved] = i
            if model is not None:
                local.append(model)
        return local

    def together(
        self,
        where: tuple[str, ...],
        targets: list[str],
        matrix_active: bool,
        program: Program | None,
    ) -> None:
        """Spillover runs its local targets side by side: the router must allow that."""
        listed = ", ".join(targets)
        if matrix_active:
            if program is not None and not program.can_contain_all(targets):
                self.error(where, f"no matrix set lets {listed} run together, as spillover needs")
            return
        group_of = {m: g.id for g in self.groups.values() for m in g.members}
        found = {group_of.get(t) for t in targets}
        if len(found) > 1:
            placed = ", ".join(f"{t} in {group_of.get(t) or 'no group'}" for t in targets)
            self.error(
                where,
                f"spillover targets must share one group with swap: false; they are {placed}",
            )
            return
        (group_id,) = found
        if group_id is None:
            self.error(
                where,
                f"spillover targets must share one group with swap: false; {listed} are in none",
            )
        elif self.groups[group_id].swap:
            self.error(
                where,
                f"spillover targets are in group {group_id!r}, which swaps them: "
                "set its swap: false",
            )

    # -- profiles -----------------------------------------------------------------------------

    def profiles(self) -> None:
        choices = [*self.models, *self.aliases, *self.peer_models, *self.f.selectors]
        for name, profile in self.f.profiles.items():
            base = ("profiles", name)
            if not name.strip():
                self.error(base, "a profile name must not be empty")
            if not profile.pins:
                self.error((*base, "pins"), "at least one pin is required")
            for pin, target in profile.pins.items():
                where = (*base, "pins", pin)
                if not pin.strip():
                    self.error(where, "a pinned model id must not be empty")
                elif pin in self.qualified:
                    self.error(
                        where,
                        f"{pin!r} is the name of peer {self.qualified[pin]!r}'s model: "
                        "it cannot be pinned",
                    )
                if target and target not in choices:
                    self.error(
                        where,
                        f"unknown model or selector {target!r}" + did_you_mean(target, choices),
                    )
