"""The runtime state file: where it lives, reading it back, atomic serialized writes, and what a
bad file or a stale entry does."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import RESPONDER
from trioswap.config import POLICIES, loads
from trioswap.config.cmdline import ctx_size
from trioswap.runtime import (
    MAX_CTX_SIZE,
    MIN_CTX_SIZE,
    RuntimeState,
    StateWriteError,
    check_ctx_size,
    check_policy,
    make_state_dir,
    state_path,
    with_ctx,
)

MODELS = ("a", "b", "c")


def state_text(models: dict[str, object], version: object = 1) -> str:
    return json.dumps({"version": version, "models": models})


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_state_path() -> None:
    config = Path("/etc/trioswap/models.yaml")
    assert state_path(config, None, {}) == Path("/etc/trioswap/models.state.json")
    assert state_path(config, Path("/var/s"), {}) == Path("/var/s/models.state.json")
    demo = state_path(None, None, {"XDG_STATE_HOME": "/x"})
    assert demo == Path("/x/trioswap/demo.state.json")
    assert state_path(None, None, {}) == Path.home() / ".local/state/trioswap/demo.state.json"


def test_make_state_dir(tmp_path: Path) -> None:
    make_state_dir(tmp_path / "new" / "dir")
    assert (tmp_path / "new" / "dir").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        make_state_dir(tmp_path / "file" / "dir")


@pytest.mark.parametrize("value", [True, False, 255, MAX_CTX_SIZE + 1, 4096.0, "4096", [4096]])
def test_bad_ctx_sizes(value: object) -> None:
    with pytest.raises(ValueError, match=f"integer from {MIN_CTX_SIZE} to {MAX_CTX_SIZE}"):
        check_ctx_size(value)


def test_checks_accept_the_valid_values() -> None:
    assert check_ctx_size(MIN_CTX_SIZE) == MIN_CTX_SIZE
    assert check_ctx_size(MAX_CTX_SIZE) == MAX_CTX_SIZE
    assert check_ctx_size(None) is None
    assert [check_policy(p) for p in POLICIES] == list(POLICIES)
    assert check_policy(None) is None
    with pytest.raises(ValueError, match="use one of off, limit_only, always, llm_assisted"):
        check_policy("sometimes")


async def test_missing_file_is_empty_and_is_created_on_change(tmp_path: Path) -> None:
    path = tmp_path / "state" / "c.state.json"
    state = await RuntimeState.load(path, MODELS)
    assert state.policy("a") is None and state.ctx_size("a") is None
    assert not path.exists()
    await state.set_policy("a", "always")
    await state.set_ctx_size("b", 8192)
    assert json.loads(path.read_text()) == {
        "version": 1,
        "models": {"a": {"promptOptimization": "always"}, "b": {"ctxSize": 8192}},
    }
    assert (state.policy("a"), state.ctx_size("b")) == ("always", 8192)


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(MODELS),
        st.tuples(st.none() | st.sampled_from(POLICIES), st.none() | st.integers(256, 1 << 24)),
    )
)
async def test_round_trip(overrides: dict[str, tuple[str | None, int | None]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.state.json"
        state = await RuntimeState.load(path, MODELS)
        # Set everything, then clear what the example leaves unset.
        for model in MODELS:
            await state.set_policy(model, "off")
            await state.set_ctx_size(model, 1024)
        for model in MODELS:
            policy, size = overrides.get(model, (None, None))
            await state.set_policy(model, policy)
            await state.set_ctx_size(model, size)
        again = await RuntimeState.load(path, MODELS)
        for model in MODELS:
            expected = overrides.get(model, (None, None))
            assert (again.policy(model), again.ctx_size(model)) == expected
        assert names(Path(folder)) == ["c.state.json"]


async def test_concurrent_changes_are_all_saved(tmp_path: Path) -> None:
    path = tmp_path / "c.state.json"
    models = [f"m{i}" for i in range(30)]
    state = await RuntimeState.load(path, models)
    async with trio.open_nursery() as nursery:
        for i, model in enumerate(models):
            nursery.start_soon(state.set_ctx_size, model, 1000 + i)
            nursery.start_soon(state.set_policy, model, POLICIES[i % len(POLICIES)])
    saved = json.loads(path.read_text())["models"]
    assert saved == {
        m: {"ctxSize": 1000 + i, "promptOptimization": POLICIES[i % len(POLICIES)]}
        for i, m in enumerate(models)
    }
    assert names(tmp_path) == ["c.state.json"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not JSON"),
        (state_text({"a": {"ctxSize": 4096}}, version=2), "not a version 1 state file"),
        ('{"version": 1, "models": {"a": 5}}', '"models" is not an object of objects'),
        (b"\xff\xfe", "utf-8"),
    ],
)
async def test_unusable_file_is_kept_until_the_first_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str | bytes, problem: str
) -> None:
    path = tmp_path / "c.state.json"
    original = text.encode() if isinstance(text, str) else text
    path.write_bytes(original)
    with caplog.at_level(logging.WARNING, "trioswap.runtime"):
        state = await RuntimeState.load(path, MODELS)
    assert str(path) in caplog.text and problem in caplog.text
    assert state.ctx_size("a") is None
    assert path.read_bytes() == original
    await state.set_ctx_size("b", 2048)
    assert (tmp_path / "c.state.json.bad").read_bytes() == original
    assert json.loads(path.read_text())["models"] == {"b": {"ctxSize": 2048}}
    # Only the first write moves a bad file aside.
    await state.set_ctx_size("c", 2048)
    assert (tmp_path / "c.state.json.bad").read_bytes() == original


async def test_unknown_models_and_bad_values_are_ignored_but_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.state.json"
    path.write_text(
        state_text(
            {
                "gone": {"ctxSize": 4096},
                "old": {"promptOptimization": "always"},
                "a": {"promptOptimization": "sometimes", "ctxSize": 8192},
                "b": {"ctxSize": True},
            }
        )
    )
    with caplog.at_level(logging.WARNING, "trioswap.runtime"):
        state = await RuntimeState.load(path, MODELS)
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("'gone' is not in the config" in w for w in warnings) == 1
    assert sum("'old' is not in the config" in w for w in warnings) == 1
    assert any("'a'" in w and "'sometimes' is not a policy" in w for w in warnings)
    assert any("'b'" in w and "True is not a context size" in w for w in warnings)
    assert (state.policy("a"), state.ctx_size("a"), state.ctx_size("b")) == (None, 8192, None)
    assert state.policy("old") is None and state.ctx_size("gone") is None
    await state.set_ctx_size("c", 1024)
    saved = json.loads(path.read_text())["models"]
    assert saved["gone"] == {"ctxSize": 4096} and saved["old"] == {"promptOptimization": "always"}
    assert saved["c"] == {"ctxSize": 1024}


async def test_discovered_models_overrides_are_used_when_discovery_is_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.state.json"
    path.write_text(state_text({"ollama/llama3.2:3b": {"promptOptimization": "always"}}))
    with caplog.at_level(logging.WARNING, "trioswap.runtime"):
        state = await RuntimeState.load(path, MODELS, "ollama/")
    assert state.policy("ollama/llama3.2:3b") == "always"
    assert not caplog.records
    # With discovery off, the entry is an unknown model's: kept in the file, unused.
    state = await RuntimeState.load(path, MODELS)
    assert state.policy("ollama/llama3.2:3b") is None


async def test_a_failed_write_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    state = await RuntimeState.load(tmp_path / "file" / "c.state.json", MODELS)
    with pytest.raises(StateWriteError, match="cannot save the runtime state"):
        await state.set_policy("a", "always")
    assert state.policy("a") is None


async def test_snapshots_are_kept_in_memory_only(tmp_path: Path) -> None:
    state = await RuntimeState.load(tmp_path / "c.state.json", MODELS)
    assert state.snapshot("a") is None
    snapshot = {"policy": "always", "tokensBefore": 900, "tokensAfter": 300}
    state.record_snapshot("a", snapshot)
    assert state.snapshot("a") is snapshot
    assert not (tmp_path / "c.state.json").exists()


def test_ctx_size_survives_moving_to_another_port() -> None:
    config = loads(
        f"""
models:
  a:
    cmd: {RESPONDER} --port ${{PORT}} --model-id a -c 4096
"""
    )
    model = with_ctx(config.models["a"], 8192)
    assert ctx_size(model.cmd) == 8192
    assert model.with_port is not None
    moved = model.with_port(29999)
    assert ctx_size(moved.cmd) == 8192 and "29999" in moved.cmd and moved.port == 29999


async def test_launch_applies_the_override(tmp_path: Path) -> None:
    config = loads(f"models:\n  a:\n    cmd: {RESPONDER} --port ${{PORT}} --model-id a\n")
    state = await RuntimeState.load(tmp_path / "c.state.json", ["a"])
    model = config.models["a"]
    assert state.launch(model) is model
    await state.set_ctx_size("a", 512)
    assert state.launch(model).cmd[-2:] == ("--ctx-size", "512")
