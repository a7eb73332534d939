"""A model's context window: which source wins, the split between slots, the output reserve and
the prompt budget; and the GGUF's context length, read once per file."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import ModelFn
from trioswap.optimizer.window import (
    Window,
    Windows,
    context_window,
    output_reserve,
    prompt_budget,
)

SERVER = "llama-server -m /models/x.gguf --port ${PORT}"
CAPABILITIES = "capabilities:\n  context: 16384\n"


def test_the_runtime_override_wins(model: ModelFn) -> None:
    m = model(f"{SERVER} -c 8192", CAPABILITIES)
    assert context_window(m, 4096, 32768) == Window(4096, 4096, "runtime")


def test_the_command_comes_next(model: ModelFn) -> None:
    m = model(f"{SERVER} --ctx-size 8192", CAPABILITIES)
    assert context_window(m, None, 32768) == Window(8192, 8192, "--ctx-size")
    assert context_window(model(f"{SERVER} -c=2048"), None, None) == Window(
        2048, 2048, "--ctx-size"
    )


def test_the_models_env_counts_as_the_command(model: ModelFn) -> None:
    m = model(SERVER, 'env: ["LLAMA_ARG_CTX_SIZE=6144"]\n' + CAPABILITIES)
    assert context_window(m, None, 32768) == Window(6144, 6144, "--ctx-size")


def test_capabilities_then_the_gguf(model: ModelFn) -> None:
    m = model(SERVER, CAPABILITIES)
    assert context_window(m, None, 32768) == Window(16384, 16384, "capabilities.context")
    # -c 0 means the model's own size: the GGUF's.
    bare = model(f"{SERVER} -c 0")
    assert context_window(bare, None, 32768) == Window(32768, 32768, "gguf")
    assert context_window(bare, 0, None) is None


def test_slots_split_the_window_unless_the_cache_is_unified(model: ModelFn) -> None:
    assert context_window(model(f"{SERVER} -c 8192 -np 4"), None, None) == Window(
        2048, 8192, "--ctx-size"
    )
    assert context_window(model(f"{SERVER} -c 8192 -np 4 -kvu"), None, None) == Window(
        8192, 8192, "--ctx-size"
    )
    # The split applies to every source, the runtime override too.
    assert context_window(model(f"{SERVER} -np 2"), 10000, None) == Window(5000, 10000, "runtime")


def test_the_reserve_is_the_requests_limit_under_the_cap() -> None:
    assert output_reserve({"max_tokens": 500}, 8192, 1024, 0.25) == 500
    assert output_reserve({"max_completion_tokens": 700}, 8192, 1024, 0.25) == 700
    assert output_reserve({"max_output_tokens": 900}, 8192, 1024, 0.25) == 900
    # An agent asking for 32k of output from an 8k model gets the cap.
    assert output_reserve({"max_tokens": 32000}, 8192, 1024, 0.25) == 2048
    # Several limits: the largest.
    assert output_reserve({"max_tokens": 100, "max_completion_tokens": 300}, 8192, 1024, 0.5) == 300


def test_without_a_limit_the_default_under_the_cap() -> None:
    assert output_reserve({}, 8192, 1024, 0.25) == 1024
    assert output_reserve({}, 2048, 1024, 0.25) == 512
    # Not a usable limit: absent.
    for bad in (None, True, "100", 0, -5, 1.5):
        assert output_reserve({"max_tokens": bad}, 8192, 1024, 0.25) == 1024


def test_the_budget_is_the_window_less_reserve_and_margin() -> None:
    window = Window(8192, 8192, "--ctx-size")
    assert prompt_budget(window, 1024, 0.05, 64) == 8192 - 1024 - 409
    # The margin is at least min_margin.
    assert prompt_budget(window, 1024, 0.001, 256) == 8192 - 1024 - 256
    # Never below zero.
    assert prompt_budget(Window(100, 100, "runtime"), 90, 0.05, 64) == 0


@given(
    tokens=st.integers(0, 2**22),
    reserve=st.integers(0, 2**22),
    margin=st.floats(0, 1),
    min_margin=st.integers(0, 2**16),
)
def test_the_budget_is_never_negative_nor_above_the_window(
    tokens: int, reserve: int, margin: float, min_margin: int
) -> None:
    budget = prompt_budget(Window(tokens, tokens, "runtime"), reserve, margin, min_margin)
    assert 0 <= budget <= tokens


@given(
    window=st.integers(1, 2**22),
    limit=st.none() | st.integers(-10, 2**22),
    default=st.integers(0, 2**16),
    share=st.floats(0, 1),
)
def test_the_reserve_never_exceeds_its_share(
    window: int, limit: int | None, default: int, share: float
) -> None:
    body = {} if limit is None else {"max_tokens": limit}
    assert 0 <= output_reserve(body, window, default, share) <= share * window


def write_gguf(path: Path, context: int | None) -> None:
    writer = gguf.GGUFWriter(str(path), "llama")
    if context is not None:
        writer.add_context_length(context)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


async def test_the_gguf_context_is_read_once_per_file(model: ModelFn, tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    write_gguf(path, 32768)
    windows = Windows()
    m = model(f"llama-server -m {path} --port ${{PORT}}")
    assert await windows.gguf_context(m) == 32768
    # Kept: a changed file is not read again.
    write_gguf(path, 4096)
    assert await windows.gguf_context(m) == 32768
    assert await Windows().gguf_context(m) == 4096


async def test_no_gguf_context_without_a_readable_file(
    model: ModelFn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    windows = Windows()
    assert await windows.gguf_context(model("vllm serve org/model --port ${PORT}")) is None
    no_key = tmp_path / "nokey.gguf"
    write_gguf(no_key, None)
    assert await windows.gguf_context(model(f"{SERVER} -m {no_key}")) is None
    not_gguf = tmp_path / "junk.gguf"
    not_gguf.write_bytes(b"not a model at all")
    assert await windows.gguf_context(model(f"{SERVER} -m {not_gguf}")) is None
    assert await windows.gguf_context(model(f"{SERVER} -m {tmp_path}/missing.gguf")) is None
    warnings = [r.getMessage() for r in caplog.records if r.name == "trioswap.optimizer"]
    assert len(warnings) == 2
    assert "not a GGUF file" in warnings[0]
    assert "missing.gguf" in warnings[1]
