"""The config format, case by case: every file in configs/cases is a small config, a `---` line,
then what loading it must give:

    expect:
      env: {NAME: value}          # the environment the config is read with (nothing else is set)
      strict: true                # read as `trioswap validate --strict` does
      errors:   ["LINE KEY: part of the message", ...]     # all of them, in any order;
      warnings: ["LINE KEY: part of the message", ...]     # LINE '-' is none, '=message' all
      resolved: {PATH: value}     # attribute paths on the loaded `Config`, e.g. models.a.ttl,
                                  # document.models.a.ttl, upstream_ignore_paths[0]; a [key] may
                                  # hold dots and slashes: peer_models[p/m.1].model;
                                  # a mapping's @keys is its keys, sorted
      known_bug: what is wrong    # expected to fail until fixed (then the marker must go)
      outside_schema: why         # the file loads, but config-schema.json does not describe it

configs/dirs/NAME/ is one `--config-dir` case: config.d/ is the folder, config.yaml (if there is
one) the `--config` file, and expect.yml the expectation, whose problems all name their file:
`config.d/10-a.yaml:3 models.a: is already defined`.

configs/real/ holds whole configs in the style of llama-swap's docs; each is loaded here and by
`trioswap validate` with the environment and warnings listed in REAL.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from trioswap.config import Config, json_schema, load, load_dir, loads, summary
from trioswap.errors import ConfigError, ConfigProblem

CONFIGS = Path(__file__).parent / "configs"
CASES = sorted((CONFIGS / "cases").glob("*.yaml"))
DIRS = sorted(p for p in (CONFIGS / "dirs").iterdir() if p.is_dir())
REAL_DIR = CONFIGS / "real"
CLI_TIMEOUT = 60.0

EXPECT_KEYS = {"env", "strict", "errors", "warnings", "resolved", "known_bug", "outside_schema"}
PROBLEM = re.compile(r"(?:(?P<file>[^\s:]+):)?(?P<line>\d+|-) (?P<key>\S*): (?P<message>.+)")
PATH_PART = re.compile(r"\[([^\]]*)\]|([^.\[\]]+)")


@dataclasses.dataclass(frozen=True)
class Real:
    summary: str  # what `trioswap validate` prints
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    warnings: tuple[str, ...] = ()


REAL = {
    "docker.yaml": Real("OK: 3 models, 0 warnings"),
    "multi-gpu.yaml": Real("OK: 4 models, 3 groups, 0 warnings"),
    "embeddings-rerank-whisper.yaml": Real("OK: 5 models, 2 groups, 0 warnings"),
    "peers.yaml": Real(
        "OK: 1 model, 2 peers, 0 warnings",
        {"OPENROUTER_API_KEY": "sk-or-test", "LAN_KEY": "lan-secret"},
    ),
    "anchors.yaml": Real(
        "OK: 2 models, 2 warnings",
        {"MODELS": "/srv/models"},
        ("1 x-defaults: =unknown key, ignored", "7 x-sampling: =unknown key, ignored"),
    ),
}


# -- reading a case ---------------------------------------------------------------------------


def split_case(path: Path) -> tuple[str, dict[str, Any]]:
    """The config text (lines kept as in the file) and its expectation."""
    config, sep, expect = path.read_text(encoding="utf-8").partition("\n---\n")
    assert sep, f"{path.name}: no '---' line between the config and its expectation"
    return config, read_expect(yaml.safe_load(expect), path.name)


def read_expect(document: Any, name: str) -> dict[str, Any]:
    assert isinstance(document, dict) and set(document) == {"expect"}, f"{name}: want 'expect:'"
    expect = document["expect"] or {}
    assert set(expect) <= EXPECT_KEYS, f"{name}: unknown keys {set(expect) - EXPECT_KEYS}"
    # Every case must be able to fail on something besides "it loads".
    assert expect.get("errors") or expect.get("resolved"), f"{name}: expects nothing"
    if expect.get("errors"):
        assert not expect.get("warnings") and not expect.get("resolved"), (
            f"{name}: a config with errors has no warnings or values to check"
        )
    return expect


def problem_spec(spec: str) -> tuple[str | None, int | None, str, str]:
    match = PROBLEM.fullmatch(spec)
    assert match, f"not 'LINE KEY: message' (or 'FILE:LINE KEY: message'): {spec!r}"
    line = None if match["line"] == "-" else int(match["line"])
    return match["file"], line, match["key"], match["message"]


def check_problems(
    kind: str, actual: list[ConfigProblem], specs: list[str], default_file: str | None, base: Path
) -> None:
    """Each spec matches exactly one problem and each problem one spec."""
    left = list(actual)

    def file_of(problem: ConfigProblem) -> str:
        path = Path(problem.file)
        return str(path.relative_to(base)) if path.is_absolute() else problem.file

    missing = []
    for spec in specs:
        file, line, key, message = problem_spec(spec)
        for problem in left:
            if (
                file_of(problem) == (file or default_file)
                and problem.line == line
                and problem.key == key
                and (
                    problem.message == message[1:]
                    if message.startswith("=")
                    else message in problem.message
                )
            ):
                left.remove(problem)
                break
        else:
            missing.append(spec)
    shown = "\n  ".join(f"{file_of(p)}:{p.line} {p.key}: {p.message}" for p in actual) or "none"
    assert not missing and not left, (
        f"{kind} expected but not found: {missing}\n"
        f"{kind} not expected: {[str(p) for p in left]}\n"
        f"all {kind}:\n  {shown}"
    )


# -- comparing resolved values ----------------------------------------------------------------


def lookup(config: Config, path: str) -> Any:
    value: Any = config
    parts = PATH_PART.findall(path)
    assert "".join(f"[{b}]" if b else f".{p}" for b, p in parts).lstrip(".") == path, path
    for bracketed, plain in parts:
        part = bracketed or plain
        if isinstance(value, Mapping) and part == "@keys" and not bracketed:
            value = sorted(value)
        elif isinstance(value, Mapping):
            assert part in value, f"{path}: no {part!r} in {sorted(value)}"
            value = value[part]
        elif isinstance(value, list | tuple):
            value = value[int(part)]
        else:
            assert hasattr(value, part), f"{path}: {type(value).__name__} has no {part!r}"
            value = getattr(value, part)
    return plain_value(value)


def plain_value(value: Any) -> Any:
    """The value as YAML writes it: mappings, tuples, patterns and dataclasses made plain."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: plain_value(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.compare
        }
    if isinstance(value, Mapping):
        return {k: plain_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_value(v) for v in value]
    if isinstance(value, re.Pattern):
        return value.pattern
    return value


def same(actual: Any, expected: Any) -> bool:
    """Equal, with a boolean never equal to a number (True == 1 in Python)."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(actual, dict) and isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(
            same(actual[k], expected[k]) for k in actual
        )
    if isinstance(actual, list) and isinstance(expected, list):
        return len(actual) == len(expected) and all(map(same, actual, expected))
    numbers = isinstance(actual, int | float) and isinstance(expected, int | float)
    return (numbers or type(actual) is type(expected)) and actual == expected


def check_resolved(config: Config, resolved: dict[str, Any]) -> None:
    wrong = {}
    for path, expected in resolved.items():
        actual = lookup(config, path)
        if not same(actual, expected):
            wrong[path] = f"{actual!r}, expected {expected!r}"
    assert not wrong, "\n".join(f"{p}: {w}" for p, w in wrong.items())


def check_outcome(
    read: Any, expect: dict[str, Any], default_file: str | None, base: Path
) -> Config | None:
    """Run `read()` and compare what it gives (a Config or a ConfigError) with `expect`."""
    try:
        config = read()
    except ConfigError as exc:
        assert expect.get("errors"), f"errors, none expected:\n{exc}"
        check_problems("errors", exc.problems, expect["errors"], default_file, base)
        return None
    assert not expect.get("errors"), f"loaded, but errors were expected: {expect['errors']}"
    check_problems(
        "warnings", list(config.warnings), expect.get("warnings", []), default_file, base
    )
    check_resolved(config, expect.get("resolved", {}))
    return config


# -- the cases --------------------------------------------------------------------------------


def case_param(path: Path) -> Any:
    bug = split_case(path)[1].get("known_bug")
    marks = [pytest.mark.xfail(reason=bug, strict=True)] if bug else []
    return pytest.param(path, id=path.stem, marks=marks)


@pytest.mark.parametrize("path", [case_param(p) for p in CASES])
def test_case(path: Path) -> None:
    text, expect = split_case(path)
    env = {k: str(v) for k, v in (expect.get("env") or {}).items()}

    def read() -> Config:
        return loads(text, path.name, environ=env, strict=bool(expect.get("strict")))

    check_outcome(read, expect, path.name, CASES[0].parent)


@pytest.mark.parametrize("case", DIRS, ids=[p.name for p in DIRS])
def test_dir_case(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expect = read_expect(yaml.safe_load((case / "expect.yml").read_text()), case.name)
    for name, value in (expect.get("env") or {}).items():
        monkeypatch.setenv(name, str(value))
    main = case / "config.yaml"

    def read() -> Config:
        return load_dir(
            main if main.exists() else None, case / "config.d", strict=bool(expect.get("strict"))
        )

    check_outcome(read, expect, None, case)


def test_cases_exist() -> None:
    assert len(CASES) > 50 and DIRS


# -- every key of the format has a case -------------------------------------------------------


def _objects(node: dict[str, Any], defs: dict[str, Any]) -> list[dict[str, Any]]:
    """The object schemas `node` allows, through $ref and anyOf."""
    if "$ref" in node:
        return _objects(defs[node["$ref"].rsplit("/", 1)[1]], defs)
    if "anyOf" in node:
        return [o for sub in node["anyOf"] for o in _objects(sub, defs)]
    return [node] if node.get("type") == "object" else []


def schema_keys(node: dict[str, Any], defs: dict[str, Any], path: str = "") -> set[str]:
    """Every key path the schema declares: models.*.timeouts.connect, …"""
    keys = set()
    for obj in _objects(node, defs):
        for key, sub in obj.get("properties", {}).items():
            where = f"{path}.{key}" if path else key
            keys |= {where} | schema_keys(sub, defs, where)
        if isinstance(obj.get("additionalProperties"), dict):
            keys |= schema_keys(obj["additionalProperties"], defs, f"{path}.*" if path else "*")
    return keys


def used_keys(value: Any, node: dict[str, Any], defs: dict[str, Any], path: str = "") -> set[str]:
    """The declared key paths a YAML document uses."""
    if not isinstance(value, dict):
        return set()
    keys = set()
    for obj in _objects(node, defs):
        props, extra = obj.get("properties", {}), obj.get("additionalProperties")
        for key, child in value.items():
            if key in props:
                where = f"{path}.{key}" if path else key
                keys |= {where} | used_keys(child, props[key], defs, where)
            elif isinstance(extra, dict):
                keys |= used_keys(child, extra, defs, f"{path}.*" if path else "*")
    return keys


def test_every_key_has_a_case() -> None:
    schema = json_schema()
    defs = schema["$defs"]
    used: set[str] = set()
    for path in CASES:
        try:
            document = yaml.safe_load(split_case(path)[0])
        except yaml.YAMLError:
            continue
        used |= used_keys(document, schema, defs)
    missing = sorted(schema_keys(schema, defs) - used)
    assert not missing, f"keys no case in configs/cases uses: {missing}"


# -- real configs -----------------------------------------------------------------------------


def test_real_configs_are_listed() -> None:
    assert sorted(p.name for p in REAL_DIR.glob("*.yaml")) == sorted(REAL)


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_config_loads(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real = REAL[name]
    for var, value in real.env.items():
        monkeypatch.setenv(var, value)
    config = load(REAL_DIR / name)
    check_problems("warnings", list(config.warnings), list(real.warnings), name, REAL_DIR)
    assert summary(config) == real.summary


def run_cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trioswap", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_config_validates_on_the_command_line(name: str) -> None:
    real = REAL[name]
    done = run_cli("validate", str(REAL_DIR / name), env=real.env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == real.summary + "\n"
    assert done.stderr.count("warning: ") == len(real.warnings), done.stderr


def test_config_dir_on_the_command_line() -> None:
    case = CONFIGS / "dirs" / "merge"
    done = run_cli(
        "--config", str(case / "config.yaml"), "--config-dir", str(case / "config.d"), "validate"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "OK: 2 models, 1 group, 2 warnings\n"
    assert f"warning: {case / 'config.d' / '10-embeddings.yaml'}:6: models.embed.tl:" in done.stderr
