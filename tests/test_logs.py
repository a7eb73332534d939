"""The log hub: rings bounded in lines and characters, huge lines cut, subscribers fed."""

from __future__ import annotations

import trio

from trioswap.observe.logs import ALL, PROXY, UPSTREAM, LogHub, bounded_line


def test_bounded_line_keeps_head_and_tail() -> None:
    assert bounded_line("short", 10) == "short"
    line = "START" + "x" * 100 + "END"
    out = bounded_line(line, 20)
    assert out.startswith("STARTxxxxx") and out.endswith("xxxxxxxEND")
    assert "(88 characters cut)" in out


def test_rings_are_bounded_in_lines() -> None:
    hub = LogHub(history_lines=3)
    for i in range(10):
        hub.write_proxy(f"line {i}")
    assert hub.history(PROXY) == ["line 7", "line 8", "line 9"]
    assert hub.tail(PROXY, 2) == ["line 8", "line 9"]
    assert hub.tail(PROXY, 0) == []
    assert hub.history("nothing") == []


def test_rings_are_bounded_in_characters() -> None:
    hub = LogHub(history_chars=1000, line_chars=400)
    for _ in range(100):
        hub.write_model("m", "y" * 5000)
    for source in ("m", UPSTREAM, ALL):
        history = hub.history(source)
        assert history, source
        assert sum(len(line) for line in history) <= 1000
        assert all(len(line) < 500 for line in history)
    # A ring holds as many lines as fit.
    hub.write_model("m", "small")
    assert hub.history("m")[-1] == "small"


async def test_subscribers_get_bounded_lines_and_lose_rather_than_block() -> None:
    hub = LogHub(line_chars=100)
    with hub.subscribe(PROXY) as receive:
        hub.write_proxy("z" * 10_000)
        for i in range(5000):
            hub.write_proxy(f"{i}")
        first = receive.receive_nowait()
        assert len(first) < 200
        received = 1
        while True:
            try:
                receive.receive_nowait()
            except trio.WouldBlock:
                break
            received += 1
    assert received < 5001
