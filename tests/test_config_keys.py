"""The did-you-mean of config messages: a suggestion only when one is close."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioswap.config.keys import did_you_mean, fields_by_key
from trioswap.config.schema import File, Model

MODEL_KEYS = list(fields_by_key(Model))
TOP_KEYS = list(fields_by_key(File))


@pytest.mark.parametrize(
    ("word", "choices", "suggestion"),
    [
        ("tll", MODEL_KEYS, "ttl"),  # one letter wrong
        ("ttll", MODEL_KEYS, "ttl"),  # one extra
        ("cmdStpo", MODEL_KEYS, "cmdStop"),  # neighbours swapped
        ("cdm", MODEL_KEYS, "cmd"),
        ("aliasses", MODEL_KEYS, "aliases"),
        ("CheckEndpoint", MODEL_KEYS, "checkEndpoint"),  # case only
        ("healthcheckTimeout", TOP_KEYS, "healthCheckTimeout"),
        ("logLevels", TOP_KEYS, "logLevel"),
        ("warning", ["debug", "info", "warn", "error"], "warn"),  # begins with a choice
        ("concurrencylimit", MODEL_KEYS, "concurrencyLimit"),
    ],
)
def test_close_words_get_a_suggestion(word: str, choices: list[str], suggestion: str) -> None:
    assert did_you_mean(word, choices) == f" (did you mean {suggestion!r}?)"


@pytest.mark.parametrize(
    ("word", "choices"),
    [
        ("foo", MODEL_KEYS),
        ("x-defaults", TOP_KEYS),  # a key that only holds anchors
        ("gpu", MODEL_KEYS),
        ("zz", ["ttl"]),
        ("ab", ["ba"]),  # too short for a swap to mean anything
        ("", MODEL_KEYS),
        ("ttl", []),
    ],
)
def test_far_words_get_none(word: str, choices: list[str]) -> None:
    assert did_you_mean(word, choices) == ""


@given(
    choice=st.sampled_from(MODEL_KEYS + TOP_KEYS).filter(lambda k: len(k) >= 4),
    edit=st.sampled_from(["drop", "add", "swap", "change"]),
    at=st.integers(min_value=0),
    letter=st.sampled_from(string.ascii_lowercase),
)
def test_any_one_edit_of_a_key_is_recognised(choice: str, edit: str, at: int, letter: str) -> None:
    i = at % (len(choice) - 1)
    word = {
        "drop": choice[:i] + choice[i + 1 :],
        "add": choice[:i] + letter + choice[i:],
        "swap": choice[:i] + choice[i + 1] + choice[i] + choice[i + 2 :],
        "change": choice[:i] + letter + choice[i + 1 :],
    }[edit]
    keys = MODEL_KEYS + TOP_KEYS
    if word in keys:
        return  # the edit made another real key
    assert did_you_mean(word, keys) != ""
