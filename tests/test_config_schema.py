"""The JSON Schema editors use (config-schema.json, `trioswap schema`) against what the reader
accepts: the copy at the repo root is current, every resolved document validates and reads back
as itself, every valid case config is described, and the command line agrees."""

from __future__ import annotations

import json
import string
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_config_cases import CASES, REAL, REAL_DIR, run_cli, split_case
from trioswap.config import json_schema, loads

SCHEMA_FILE = Path(__file__).parent.parent / "config-schema.json"
REGENERATE = ".venv/bin/python -m trioswap schema > config-schema.json"


@cache
def validator() -> jsonschema.Draft202012Validator:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(document: Any) -> list[str]:
    errors = validator().iter_errors(json.loads(json.dumps(document)))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


# -- the copy at the repo root ----------------------------------------------------------------


def test_the_copy_is_current() -> None:
    copy = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert copy == json.loads(json.dumps(json_schema())), (
        f"config-schema.json differs from trioswap.config.json_schema(); run: {REGENERATE}"
    )


def test_schema_command_prints_the_copy() -> None:
    done = run_cli("schema")
    assert done.returncode == 0, done.stderr
    assert done.stdout == SCHEMA_FILE.read_text(encoding="utf-8"), f"run: {REGENERATE}"


# -- generated configs ------------------------------------------------------------------------

WORD = st.text(string.ascii_lowercase + string.digits + "-_", min_size=1, max_size=8)
TEXT = st.text(string.ascii_letters + string.digits + " -_./:,", max_size=20)
SECONDS = st.integers(0, 3600) | st.floats(0, 3600, allow_nan=False).map(lambda x: round(x, 3))
JSON_SCALAR = st.none() | st.booleans() | st.integers(-1000, 1000) | TEXT
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(WORD, inner, max_size=3),
    max_leaves=6,
)
PARAMS = st.dictionaries(WORD.filter(lambda w: w != "model"), JSON_VALUE, max_size=3)


def optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A mapping holding any subset of `fields`."""
    return st.fixed_dictionaries({}, optional=fields)


def filters(by_id: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    strip = st.lists(WORD, max_size=3)
    by_id_params = {"setParamsByID": st.fixed_dictionaries(dict.fromkeys(by_id, PARAMS))}
    return optional(
        stripParams=strip.map(", ".join) | strip,
        setParams=PARAMS,
        **(by_id_params if by_id else {}),
    )


TIMEOUTS = optional(
    **dict.fromkeys(
        ("connect", "keepalive", "responseHeader", "tlsHandshake", "expectContinue", "idleConn"),
        SECONDS,
    )
)
CAPABILITIES = optional(
    **{
        "in": st.lists(st.sampled_from(["text", "audio", "image"]), unique=True),
        "out": st.lists(st.sampled_from(["text", "audio", "image"]), unique=True),
    },
    tools=st.booleans(),
    reranker=st.booleans(),
    context=st.integers(0, 1 << 20),
)


@st.composite
def model(draw: st.DrawFn, model_id: str) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if draw(st.booleans()):
        entry["cmd"] = f"llama-server --port ${{PORT}} -m ${{dir}}/{model_id}.gguf"
    else:
        port = draw(st.integers(1024, 65535))
        entry["cmd"] = f"llama-server --port {port}"
        entry["proxy"] = f"http://127.0.0.1:{port}"
    n_aliases = draw(st.integers(0, 2))
    by_id = draw(st.lists(st.sampled_from([model_id, f"{model_id}:low", f"{model_id}:high"])))
    entry.update(
        draw(
            optional(
                cmdStop=st.sampled_from(["docker stop ${MODEL_ID}", "kill -INT ${PID}"]),
                ttl=st.just(-1) | SECONDS | st.just("${ttl}"),
                unloadTimeout=SECONDS,
                aliases=st.just([f"alias-{model_id}-{i}" for i in range(n_aliases)]),
                env=st.lists(st.from_regex(r"[A-Z_][A-Z0-9_]{0,5}=[a-z0-9,]{0,5}", fullmatch=True)),
                checkEndpoint=st.sampled_from(["/health", "none", "/v1/models"]),
                unlisted=st.booleans(),
                useModelName=TEXT,
                name=TEXT,
                description=TEXT,
                metadata=st.dictionaries(WORD, JSON_VALUE, max_size=3),
                filters=filters(sorted(set(by_id))),
                concurrencyLimit=st.integers(0, 16),
                sendLoadingState=st.booleans(),
                timeouts=TIMEOUTS,
                compat=optional(ignoreWebsockets=st.booleans()),
                capabilities=CAPABILITIES,
            )
        )
    )
    return entry


@st.composite
def config(draw: st.DrawFn) -> dict[str, Any]:
    ids = draw(st.lists(WORD.map(lambda w: f"m{w}"), min_size=1, max_size=4, unique=True))
    out: dict[str, Any] = {
        "macros": {"ttl": draw(SECONDS), "dir": "/models"},
        "models": {model_id: draw(model(model_id)) for model_id in ids},
    }
    grouped = draw(st.permutations(ids).map(lambda p: p[: len(p) // 2 + 1]))
    if draw(st.booleans()):
        flags = optional(swap=st.booleans(), exclusive=st.booleans(), persistent=st.booleans())
        out["routing"] = {
            "router": {"settings": {"groups": {"g": {**draw(flags), "members": grouped}}}}
        }
    peers = st.dictionaries(
        st.sampled_from(["lan", "cloud"]),
        st.fixed_dictionaries(
            {
                "proxy": st.sampled_from(["http://192.168.1.5:8080", "https://openrouter.ai/api"]),
                "models": st.lists(WORD | WORD.map(lambda w: f"org/{w}"), min_size=1, max_size=3),
            },
            optional={"apiKey": TEXT, "filters": filters([]), "timeouts": TIMEOUTS},
        ),
        max_size=2,
    )
    out.update(
        draw(
            optional(
                healthCheckTimeout=st.integers(15, 600),
                globalTTL=SECONDS,
                unloadTimeout=SECONDS,
                logLevel=st.sampled_from(["debug", "info", "warn", "error"]),
                logToStdout=st.sampled_from(["proxy", "upstream", "both", "none"]),
                logTimeFormat=st.sampled_from(["", "rfc3339", "kitchen", "stampmilli"]),
                startPort=st.integers(1, 64535),
                sendLoadingState=st.booleans(),
                includeAliasesInList=st.booleans(),
                apiKeys=st.lists(st.from_regex(r"sk-[a-z0-9]{4,12}", fullmatch=True), max_size=2),
                peers=peers,
                hooks=st.just({"on_startup": {"preload": ids[:1]}}),
                upstream=optional(ignorePaths=st.lists(st.sampled_from([r"^/ws$", r"\.png$"]))),
            )
        )
    )
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config())
def test_a_resolved_document_fits_the_schema_and_reads_back_as_itself(raw: dict[str, Any]) -> None:
    text = yaml.safe_dump(raw, sort_keys=False)
    assert schema_errors(raw) == [], text
    loaded = loads(text, "generated.yaml", environ={})
    assert loaded.warnings == (), text
    document = dict(loaded.document)
    assert schema_errors(document) == []
    again = loads(yaml.safe_dump(document, sort_keys=False), "document.yaml", environ={})
    assert dict(again.document) == document


# -- the case configs -------------------------------------------------------------------------


def described(path: Path) -> bool:
    """A case whose config loads and holds no unknown key or other leniency on purpose."""
    text, expect = split_case(path)
    unknown = any("unknown key" in w for w in expect.get("warnings", []))
    lenient = expect.get("errors") or expect.get("known_bug") or expect.get("outside_schema")
    return not (unknown or lenient) and plain_yaml(text)


def plain_yaml(text: str) -> bool:
    """False for `[${env.KEY}]`: trioswap reads it (as llama-swap does), an editor cannot."""
    try:
        yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return True


DESCRIBED = [p for p in CASES if described(p)]


def test_most_cases_are_described() -> None:
    assert len(DESCRIBED) > 50


@pytest.mark.parametrize("path", DESCRIBED, ids=[p.stem for p in DESCRIBED])
def test_a_valid_case_config_fits_the_schema(path: Path) -> None:
    assert schema_errors(yaml.safe_load(split_case(path)[0])) == []


SHIPPED = sorted((Path(__file__).parent.parent / "config").glob("*.yaml"))
WHOLE = [*SHIPPED, *(REAL_DIR / name for name in sorted(REAL))]


@pytest.mark.parametrize("path", WHOLE, ids=[f"{p.parent.name}/{p.name}" for p in WHOLE])
def test_a_whole_config_fits_the_schema(path: Path) -> None:
    """The shipped configs (example.yaml: every key) and the real-format ones, as an editor
    sees them."""
    assert schema_errors(yaml.safe_load(path.read_text(encoding="utf-8"))) == []


# -- the command line -------------------------------------------------------------------------


def test_validate_strict_fails_on_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "warns.yaml"
    path.write_text("models:\n  a:\n    cmd: srv --port ${PORT}\n    tl: 5\n")
    loose = run_cli("validate", str(path))
    assert loose.returncode == 0, loose.stderr
    assert loose.stdout == "OK: 1 model, 1 warning\n"
    assert "models.a.tl: unknown key, ignored (did you mean 'ttl'?)" in loose.stderr
    strict = run_cli("validate", "--strict", str(path))
    assert strict.returncode == 1
    assert strict.stdout == ""
    assert f"{path}:4: models.a.tl: unknown key" in strict.stderr


@pytest.mark.parametrize("name", sorted(REAL))
def test_validate_json_fits_the_schema(name: str) -> None:
    env = REAL[name].env
    done = run_cli("validate", "--json", str(REAL_DIR / name), env=env)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert schema_errors(document) == []
    for var, secret in env.items():
        assert var.endswith("KEY") or secret in done.stdout
        assert not var.endswith("KEY") or secret not in done.stdout
