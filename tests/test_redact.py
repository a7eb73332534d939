"""The one redaction rule, both ways: what is secret is masked, what is not stays readable."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioswap.redact import MASK, is_secret_name, redact_args, redact_env, shown_command


@pytest.mark.parametrize(
    "name",
    [
        "--api-key",
        "--hf-token",
        "--api_key",
        "-api-key",
        "--password",
        "--client-secret",
        "--api-keys",
        "OPENAI_API_KEY",
        "HF_TOKEN",
        "CLIENT_SECRET",
        "DB_PASSWORD",
        "db_passwd",
        "api_key",
        "ApiKey",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "--tokens-per-second",
        "--max-tokens",
        "--n-predict",
        "--keyfile-path",
        "--ssl-key-file",
        "--port",
        "-m",
        "CUDA_VISIBLE_DEVICES",
        "HOME",
        "TOKENIZERS_PARALLELISM",
        "--override-kv",
    ],
)
def test_names_that_are_not_secret(name: str) -> None:
    assert not is_secret_name(name)


def test_command_lines() -> None:
    args = [
        "env",
        "HF_TOKEN=hf-1",
        "PATH=/bin",
        "llama-server",
        "--api-key",
        "sk-2",
        "--tokens-per-second",
        "40",
        "--hf-token=hf-3",
        "--port",
        "8080",
        "--max-tokens=5",
    ]
    assert redact_args(args) == [
        "env",
        f"HF_TOKEN={MASK}",
        "PATH=/bin",
        "llama-server",
        "--api-key",
        MASK,
        "--tokens-per-second",
        "40",
        f"--hf-token={MASK}",
        "--port",
        "8080",
        "--max-tokens=5",
    ]
    shown = shown_command(args)
    for secret in ("hf-1", "sk-2", "hf-3"):
        assert secret not in shown
    assert "--tokens-per-second 40" in shown


def test_a_secret_flag_as_last_argument_masks_nothing_after_it() -> None:
    assert redact_args(["srv", "--api-key"]) == ["srv", "--api-key"]


def test_env() -> None:
    assert redact_env({"OPENAI_API_KEY": "sk", "CUDA_VISIBLE_DEVICES": "0"}) == {
        "OPENAI_API_KEY": MASK,
        "CUDA_VISIBLE_DEVICES": "0",
    }


@given(st.lists(st.text(max_size=12), max_size=8), st.text(min_size=1, max_size=12))
def test_a_value_after_a_secret_flag_never_shows(before: list[str], secret: str) -> None:
    args = [*before, "--api-key", secret, "--port", "1"]
    out = redact_args(args)
    assert out[len(before) + 1] == MASK
    assert out[-2:] == ["--port", "1"]
    assert len(out) == len(args)
