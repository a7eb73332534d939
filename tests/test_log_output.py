"""What reaches stdout (`logToStdout`), and the timestamps on trioswap's lines (`logTimeFormat`)."""

from __future__ import annotations

import re
import signal
from datetime import UTC, datetime, timedelta, timezone

import pytest
import trio
import trio.testing

from tests.conftest import (
    LISTEN_LINE,
    RESPONDER,
    LaunchFn,
    Trioswap,
    chat,
    random_start_port,
    wait_until,
)
from trioswap.config import json_schema, loads
from trioswap.errors import ConfigError
from trioswap.observe.timeformat import LAYOUTS

LEVEL = "(DEBUG|INFO|WARNING|ERROR|CRITICAL) "
PROXY_LINE = re.compile(f"^{LEVEL}")
STARTED = "INFO model m: started pid"
SERVED = "[m] POST /v1/chat/completions -> 200"
MINIMAL = "models: {m: {cmd: 'server --port ${PORT}'}}\n"


def one_model(top: str = "") -> str:
    return f"""
startPort: {random_start_port()}
{top}
models:
  m:
    cmd: {RESPONDER} --port ${{PORT}} --model-id m
"""


async def serve_one(ts: Trioswap) -> None:
    """One request, then wait until the hub has the lines it causes, from trioswap and from m."""
    async with ts.client() as client:
        response = await client.post("/v1/chat/completions", json=chat())
        assert response.status_code == 200, response.text

        async def logged() -> bool:
            history = (await client.get("/logs")).text
            return "model m: started pid" in history and SERVED in history

        await wait_until(logged)


async def stdout_at_exit(ts: Trioswap) -> list[str]:
    """Everything trioswap printed on stdout: stop it, then let the fixture read the rest."""
    ts.process.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        await ts.process.wait()
    # The pipe holds all it will: once no task can run, the fixture has read it.
    await trio.testing.wait_all_tasks_blocked()
    assert any(LISTEN_LINE.search(line) for line in ts.stdout)
    return [line for line in ts.stdout if not LISTEN_LINE.search(line)]


async def test_proxy_puts_only_trioswaps_own_lines_on_stdout(launch: LaunchFn) -> None:
    ts = await launch(one_model())  # logToStdout defaults to proxy
    await serve_one(ts)
    lines = await stdout_at_exit(ts)
    assert any(line.startswith(STARTED) for line in lines), lines
    # No logTimeFormat: no timestamp, as in llama-swap.
    assert all(PROXY_LINE.match(line) for line in lines), lines


async def test_upstream_puts_only_model_output_on_stdout(launch: LaunchFn) -> None:
    ts = await launch(one_model("logToStdout: upstream"))
    await serve_one(ts)
    lines = await stdout_at_exit(ts)
    assert SERVED in lines
    assert any(line.startswith("[m] responder m listening on") for line in lines)
    assert all(line.startswith("[m] ") for line in lines), lines


async def test_both_interleaves_trioswap_and_model_output(launch: LaunchFn) -> None:
    ts = await launch(one_model("logToStdout: both"))
    await serve_one(ts)
    lines = await stdout_at_exit(ts)
    assert all(PROXY_LINE.match(line) or line.startswith("[m] ") for line in lines), lines
    # In the order they were written: m is started before it serves.
    started = next(i for i, line in enumerate(lines) if line.startswith(STARTED))
    assert started < lines.index(SERVED)


async def test_none_puts_nothing_but_the_listen_line_on_stdout(launch: LaunchFn) -> None:
    ts = await launch(one_model("logToStdout: none"))
    await serve_one(ts)  # the hub, and so /logs, still has everything
    assert await stdout_at_exit(ts) == []


@pytest.mark.parametrize(
    ("time_format", "stamp"),
    [
        ("rfc3339", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d) "),
        ("kitchen", r"(1[0-2]|[1-9]):[0-5]\d(AM|PM) "),
        ('""', ""),
    ],
)
async def test_log_time_format_stamps_trioswaps_lines_only(
    launch: LaunchFn, time_format: str, stamp: str
) -> None:
    ts = await launch(one_model(f"logToStdout: both\nlogTimeFormat: {time_format}"))
    await serve_one(ts)
    lines = await stdout_at_exit(ts)
    own = re.compile(f"^{stamp}{LEVEL}")
    assert any(re.match(f"^{stamp}{re.escape(STARTED)}", line) for line in lines), lines
    # Model output is copied as the model wrote it, as llama-swap does.
    assert all(own.match(line) or line.startswith("[m] ") for line in lines), lines


async def test_log_level_flag_overrides_the_config(launch: LaunchFn) -> None:
    ts = await launch(one_model("logLevel: error"), "--log-level", "info")
    await serve_one(ts)
    assert any(line.startswith(STARTED) for line in await stdout_at_exit(ts))


def test_accepted_names_are_the_layouts_and_empty() -> None:
    accepted = json_schema()["properties"]["logTimeFormat"]["enum"]
    assert sorted(accepted) == sorted(["", *LAYOUTS])
    for name in accepted:
        assert loads(f"logTimeFormat: '{name}'\n{MINIMAL}").log_time_format == name
    with pytest.raises(ConfigError, match="logTimeFormat"):
        loads(f"logTimeFormat: rfc3339x\n{MINIMAL}")


CET = timezone(timedelta(hours=1), "CET")
AFTERNOON = datetime(2026, 3, 7, 15, 4, 5, 123450, tzinfo=CET)
UTC_MIDNIGHT = datetime(2026, 3, 17, 0, 30, 0, tzinfo=UTC)
PACIFIC_NOON = datetime(2026, 11, 2, 12, 0, 9, 7, tzinfo=timezone(timedelta(hours=-7), "PDT"))


@pytest.mark.parametrize(
    ("name", "afternoon", "utc_midnight", "pacific_noon"),
    [
        (
            "ansic",
            "Sat Mar  7 15:04:05 2026",
            "Tue Mar 17 00:30:00 2026",
            "Mon Nov  2 12:00:09 2026",
        ),
        (
            "unixdate",
            "Sat Mar  7 15:04:05 CET 2026",
            "Tue Mar 17 00:30:00 UTC 2026",
            "Mon Nov  2 12:00:09 PDT 2026",
        ),
        (
            "rubydate",
            "Sat Mar 07 15:04:05 +0100 2026",
            "Tue Mar 17 00:30:00 +0000 2026",
            "Mon Nov 02 12:00:09 -0700 2026",
        ),
        ("rfc822", "07 Mar 26 15:04 CET", "17 Mar 26 00:30 UTC", "02 Nov 26 12:00 PDT"),
        ("rfc822z", "07 Mar 26 15:04 +0100", "17 Mar 26 00:30 +0000", "02 Nov 26 12:00 -0700"),
        (
            "rfc850",
            "Saturday, 07-Mar-26 15:04:05 CET",
            "Tuesday, 17-Mar-26 00:30:00 UTC",
            "Monday, 02-Nov-26 12:00:09 PDT",
        ),
        (
            "rfc1123",
            "Sat, 07 Mar 2026 15:04:05 CET",
            "Tue, 17 Mar 2026 00:30:00 UTC",
            "Mon, 02 Nov 2026 12:00:09 PDT",
        ),
        (
            "rfc1123z",
            "Sat, 07 Mar 2026 15:04:05 +0100",
            "Tue, 17 Mar 2026 00:30:00 +0000",
            "Mon, 02 Nov 2026 12:00:09 -0700",
        ),
        (
            "rfc3339",
            "2026-03-07T15:04:05+01:00",
            "2026-03-17T00:30:00Z",
            "2026-11-02T12:00:09-07:00",
        ),
        (
            "rfc3339nano",
            "2026-03-07T15:04:05.12345+01:00",
            "2026-03-17T00:30:00Z",
            "2026-11-02T12:00:09.000007-07:00",
        ),
        ("kitchen", "3:04PM", "12:30AM", "12:00PM"),
        ("stamp", "Mar  7 15:04:05", "Mar 17 00:30:00", "Nov  2 12:00:09"),
        ("stampmilli", "Mar  7 15:04:05.123", "Mar 17 00:30:00.000", "Nov  2 12:00:09.000"),
        (
            "stampmicro",
            "Mar  7 15:04:05.123450",
            "Mar 17 00:30:00.000000",
            "Nov  2 12:00:09.000007",
        ),
        (
            "stampnano",
            "Mar  7 15:04:05.123450000",
            "Mar 17 00:30:00.000000000",
            "Nov  2 12:00:09.000007000",
        ),
    ],
)
def test_layouts_format_as_go_does(
    name: str, afternoon: str, utc_midnight: str, pacific_noon: str
) -> None:
    layout = LAYOUTS[name]
    assert layout(AFTERNOON) == afternoon
    assert layout(UTC_MIDNIGHT) == utc_midnight
    assert layout(PACIFIC_NOON) == pacific_noon
