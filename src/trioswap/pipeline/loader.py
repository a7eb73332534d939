"""Pipelines: which stages each route runs, read from the shipped `pipelines/*.yaml`.

A route is an exact path or a path prefix, with its methods, API family and stage list. Adding a
stage is one module and one line in a pipeline file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from trioswap.assets import data_folder
from trioswap.pipeline.stage import Stage, StageContext
from trioswap.pipeline.stages.auth import Auth
from trioswap.pipeline.stages.body import LimitBody, ReadBody
from trioswap.pipeline.stages.filters import Filters
from trioswap.pipeline.stages.ignore_paths import IgnorePaths
from trioswap.pipeline.stages.optimize import Optimize
from trioswap.pipeline.stages.resolve import Resolve, ResolvePath
from trioswap.pipeline.stages.stream import Stream
from trioswap.pipeline.stages.strip_prefix import StripPrefix
from trioswap.pipeline.stages.swap import Swap
from trioswap.pipeline.stages.translate import Translate
from trioswap.protocols.errors import Family

STAGES: dict[str, Callable[[StageContext], Stage]] = {
    "auth": Auth,
    "read_body": ReadBody,
    "limit_body": LimitBody,
    "resolve": Resolve,
    "resolve_path": ResolvePath,
    "ignore_paths": IgnorePaths,
    "filters": Filters,
    "optimize": Optimize,
    "strip_prefix": StripPrefix,
    "swap": Swap,
    "translate": Translate,
    "stream": Stream,
}


@dataclass(frozen=True)
class Pipeline:
    name: str
    family: Family
    methods: frozenset[str]
    stages: tuple[Stage, ...]


@dataclass(frozen=True)
class RouteTable:
    exact: dict[str, Pipeline]
    prefixes: tuple[tuple[str, Pipeline], ...]

    def match(self, path: str) -> Pipeline | None:
        pipeline = self.exact.get(path)
        if pipeline is not None:
            return pipeline
        for prefix, candidate in self.prefixes:
            if path.startswith(prefix):
                return candidate
        return None


def load_routes(context: StageContext) -> RouteTable:
    exact: dict[str, Pipeline] = {}
    prefixes: list[tuple[str, Pipeline]] = []
    folder = data_folder("pipelines")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        spec = yaml.safe_load(entry.read_text(encoding="utf-8"))
        for route in spec["routes"]:
            pipeline = _build(route, context)
            for path in route.get("paths", ()):
                exact[path] = pipeline
            for prefix in route.get("prefixes", ()):
                prefixes.append((prefix, pipeline))
    return RouteTable(exact, tuple(sorted(prefixes, key=lambda p: -len(p[0]))))


def _build(route: dict[str, Any], context: StageContext) -> Pipeline:
    unknown = [s for s in route["stages"] if s not in STAGES]
    if unknown:
        raise ValueError(f"pipeline {route['name']!r}: unknown stages {unknown}")
    return Pipeline(
        name=route["name"],
        family=Family(route.get("family", "openai")),
        methods=frozenset(route.get("methods", ("POST",))),
        stages=tuple(STAGES[s](context) for s in route["stages"]),
    )
