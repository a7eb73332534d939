"""`clip`: outside text bounded and escaped before it reaches a log line or an error body."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trioswap.clip import CLIP_CHARS, clip


def test_short_printable_text_is_unchanged() -> None:
    assert clip("llama-3.1-8b:Q4_K_M") == "llama-3.1-8b:Q4_K_M"
    assert clip("héllo ✓ 模型") == "héllo ✓ 模型"


def test_long_text_is_cut_and_says_how_much() -> None:
    assert clip("x" * (CLIP_CHARS + 5)) == "x" * CLIP_CHARS + "… (5 more characters)"
    assert clip("abcdef", limit=2) == "ab… (4 more characters)"


def test_control_characters_are_escaped() -> None:
    assert clip("a\r\nforged line") == "a\\r\\nforged line"
    assert clip("\x00\x1b[31m\x7f\x85\u2028") == "\\x00\\x1b[31m\\x7f\\x85\\u2028"


def test_bytes_are_read_as_utf8() -> None:
    assert clip(b"caf\xc3\xa9\n") == "café\\n"
    assert clip(b"\xff") == "\ufffd"


@given(st.text(), st.integers(min_value=1, max_value=300))
def test_any_text_comes_out_one_bounded_line(text: str, limit: int) -> None:
    out = clip(text, limit)
    assert out.splitlines() == [out] or out == ""
    assert "\r" not in out and "\x00" not in out
    # Each kept character becomes at most a 6-character escape, plus the marker.
    assert len(out) <= 6 * limit + 40
    if len(text) <= limit and text.isprintable():
        assert out == text
