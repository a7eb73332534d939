"""count_tokens' estimate, for servers that cannot count: it must over-count, since agents
compact when the count nears the window."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trioswap.pipeline.count_tokens import BYTES_PER_TOKEN, estimate

_text = st.text(min_size=1, max_size=400)


@given(texts=st.lists(_text, min_size=1, max_size=6), system=st.none() | _text)
def test_the_estimate_is_at_least_every_byte_over_three(
    texts: list[str], system: str | None
) -> None:
    request: dict[str, object] = {
        "messages": [{"role": "user", "content": text} for text in texts],
    }
    if system is not None:
        request["system"] = system
    counted = estimate(request)
    text_bytes = sum(len(t.encode()) for t in texts) + len((system or "").encode())
    # No tokenizer makes a token of fewer than 1 byte; BPE tokens average ~4 bytes of English.
    assert counted * BYTES_PER_TOKEN >= text_bytes
    assert counted >= sum(len(t.split()) for t in texts)


def test_tools_and_system_count_and_other_fields_do_not() -> None:
    base = {"messages": [{"role": "user", "content": "hi"}]}
    tool = {"name": "t", "description": "d" * 300, "input_schema": {"type": "object"}}
    assert estimate({**base, "tools": [tool]}) > estimate(base) + 100
    assert estimate({**base, "system": "s" * 300}) > estimate(base) + 90
    assert estimate({**base, "model": "x" * 300, "max_tokens": 5}) == estimate(base)
