"""The observability endpoints end to end: a real trioswap, real responder model servers, and
what `/api/metrics/activity`, `/api/metrics/stats`, `/api/captures/<id>`, `/api/inflight`,
`/api/events`, `/metrics` and `/api/performance` say about the requests it served.

Most tests share one trioswap (started once for the module, with `apiKeys`, `captureBuffer` and
`performance`), and look only at the activity records after the newest id they saw first, so
they do not depend on each other's order. Settings that need a config of their own
(`captureBuffer: 0`, a configured session header, performance off, `metricsMaxInMemory`) get
trioswaps of their own, started with the shared one; the restart of `store.path` uses `launch`.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import h11
import httpx
import pytest
import trio
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    LISTEN_LINE,
    READY_TIMEOUT,
    RESPONDER,
    LaunchFn,
    chat,
    kill_group,
    random_start_port,
    wait_until,
)
from trioswap.redact import MASK

KEY = "observe-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXT = "one two three four"  # what `m` answers: 4 tokens
TR_TEXT = "alpha beta gamma"  # what `tr` answers: 3 tokens
SLOW_TEXT = " ".join(f"word{i}" for i in range(40))  # 8 s at 5 tokens a second
LATE_DELAY = 0.5
SHARED_MODELS = ("m", "slow", "tr", "broken", "ev", "late", "held")
FRAME = re.compile(rb"event:message\ndata:([^\n]*)")


def shared_config() -> str:
    """Models that run side by side (one group, no swapping): `m` answers TEXT at 50 tokens a
    second (streams are timed), `slow` streams at 5, `tr` speaks only chat completions and gets
    /v1/messages translated, `broken` fails to start, `ev` is started only by the events test,
    `late` only by the TTFT test, and `held` (never ready) by the cancel-while-loading test."""
    return f"""
healthCheckTimeout: 20
startPort: {random_start_port()}
apiKeys: [{KEY}]
captureBuffer: 1
performance: {{every: 5s}}
models:
  m:
    cmd: {RESPONDER} --port ${{PORT}} --model-id m --tokens-per-second 50 --response-text "{TEXT}"
  slow:
    cmd: {RESPONDER} --port ${{PORT}} --model-id slow --tokens-per-second 5 --response-text
      "{SLOW_TEXT}"
  tr:
    cmd: {RESPONDER} --port ${{PORT}} --model-id tr --apis chat --response-text "{TR_TEXT}"
    apis: {{anthropic: translate}}
  broken:
    cmd: {RESPONDER} --port ${{PORT}} --model-id broken --fail-on-start
  ev:
    cmd: {RESPONDER} --port ${{PORT}} --model-id ev
  late:
    cmd: {RESPONDER} --port ${{PORT}} --model-id late --startup-delay {LATE_DELAY}
  held:
    cmd: {RESPONDER} --port ${{PORT}} --model-id held --startup-delay 600
routing:
  router:
    settings:
      groups:
        all:
          swap: false
          members: [{", ".join(SHARED_MODELS)}]
"""


def single_model_config(top: str) -> str:
    return f"""
startPort: {random_start_port()}
{top}
models:
  m:
    cmd: {RESPONDER} --port ${{PORT}} --model-id m --response-text "{TEXT}"
"""


def module_configs() -> dict[str, str]:
    """The trioswaps the module starts at once: the shared one, and those whose settings the
    shared one cannot have."""
    return {
        "shared": shared_config(),
        "settings": single_model_config(
            "captureBuffer: 0\n"
            "performance: {disabled: true}\n"
            "ui: {activity: {session_id: [X-Conversation]}}"
        ),
        "keep 2": single_model_config("metricsMaxInMemory: 2"),
        "keep 0": single_model_config("metricsMaxInMemory: 0"),
    }


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The module's trioswaps, started side by side (each spends a second or two importing)
    and stopped at its end, by name: their URLs. Plain processes: pytest-trio runs each test
    in its own event loop, so an async fixture cannot outlive a test."""
    folder = tmp_path_factory.mktemp("observe")
    started: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    try:
        for name, text in module_configs().items():
            config = folder / f"{name.replace(' ', '-')}.yaml"
            config.write_text(textwrap.dedent(text))
            output = config.with_suffix(".log")
            command = [sys.executable, "-m", "trioswap", "--config", str(config)]
            with output.open("wb") as log:
                process = subprocess.Popen(
                    [*command, "--listen", "127.0.0.1:0"],
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            started[name] = (process, output)
        urls: dict[str, str] = {}
        deadline = time.monotonic() + READY_TIMEOUT
        for name, (process, output) in started.items():
            while (match := LISTEN_LINE.search(output.read_text(errors="replace"))) is None:
                assert process.poll() is None, output.read_text(errors="replace")
                assert time.monotonic() < deadline, output.read_text(errors="replace")
                time.sleep(0.02)
            urls[name] = match[1]
        yield urls
    finally:
        for process, _ in started.values():
            process.send_signal(signal.SIGTERM)
        for process, _ in started.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                pass
            kill_group(process.pid)
            process.wait()


@pytest.fixture
def shared(servers: dict[str, str]) -> str:
    return servers["shared"]


@pytest.fixture
async def client(shared: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=shared, headers=AUTH, timeout=30.0) as client:
        yield client


# --- helpers ------------------------------------------------------------------------------------


async def activity(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get("/api/metrics/activity", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def quiet(client: httpx.AsyncClient) -> None:
    """Wait until no exchange is in flight: an exchange leaves the list, files its record and
    is counted in /metrics in one step, so every reply a test has had is then on record."""

    async def idle() -> bool:
        response = await client.get("/api/inflight")
        assert response.status_code == 200, response.text
        return response.json() == []

    await wait_until(idle)


async def newest_id(client: httpx.AsyncClient) -> int:
    """The newest activity record's id (0 with none): a test's records are those after it."""
    await quiet(client)
    data = (await activity(client, limit=1))["data"]
    return data[0]["id"] if data else 0


async def records_after(client: httpx.AsyncClient, after: int, count: int) -> list[dict[str, Any]]:
    """The records with ids after `after`, oldest first, once there are `count` of them (a
    record is filed once its exchange is over, just after the client has the reply)."""
    found: list[dict[str, Any]] = []

    async def arrived() -> bool:
        nonlocal found
        found = (await activity(client, min_id=after + 1, order="asc", limit=999))["data"]
        return len(found) >= count

    await wait_until(arrived)
    assert len(found) == count, found
    return found


def streamed_text(body: str) -> str:
    """The text of a chat completions event stream, delta by delta."""
    text = ""
    for line in body.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line.removeprefix("data: "))["choices"]:
                text += choice["delta"].get("content") or ""
    return text


def samples(text: str, parse: Callable[[str], Any] = text_string_to_metric_families) -> dict:
    """A metrics exposition as {(sample name, frozenset of labels): value}."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in parse(text)
        for sample in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> dict:
    await quiet(client)
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


class Raw:
    """One HTTP/1.1 exchange on its own socket, read with h11, for responses a test reads part
    of and then leaves (an httpx stream left early leaves async generators unfinished, which
    pytest reports). `async with Raw(...) as raw:` sends the request and reads the head."""

    def __init__(
        self, base_url: str, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> None:
        self._url = httpx.URL(base_url)
        self._method = method
        self._path = path
        self._headers = headers
        self._body = body
        self._connection = h11.Connection(h11.CLIENT)
        self.status = 0
        self.headers: dict[str, str] = {}

    async def __aenter__(self) -> Raw:
        assert self._url.host and self._url.port
        self._stream = await trio.open_tcp_stream(self._url.host, self._url.port)
        try:
            await self._start()
        except BaseException:
            await self._stream.aclose()
            raise
        return self

    async def _start(self) -> None:
        headers = [("host", "localhost"), *self._headers.items()]
        if self._body:
            headers.append(("content-length", str(len(self._body))))
        out = self._connection.send(
            h11.Request(method=self._method, target=self._path, headers=headers)
        )
        if self._body:
            out += self._connection.send(h11.Data(data=self._body))
        out += self._connection.send(h11.EndOfMessage())
        await self._stream.send_all(out)
        head = await self._next()
        assert isinstance(head, h11.Response), head
        self.status = head.status_code
        self.headers = {name.decode(): v.decode() for name, v in head.headers}

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._stream.aclose()

    async def _next(self) -> Any:
        while (event := self._connection.next_event()) is h11.NEED_DATA:
            self._connection.receive_data(await self._stream.receive_some(65536))
        return event

    async def chunk(self) -> bytes | None:
        """The next piece of the body; None at its end. A connection closed before the end
        raises h11.RemoteProtocolError."""
        event = await self._next()
        if isinstance(event, h11.Data):
            return bytes(event.data)
        assert isinstance(event, h11.EndOfMessage), event
        return None


class Events:
    """`/api/events` read as llama-swap's clients read it: each frame is `event:message` and a
    `data:` line holding an envelope whose `data` is JSON in a string."""

    def __init__(self, raw: Raw) -> None:
        self._raw = raw
        self._buffer = b""

    async def next(self) -> tuple[str, Any]:
        while b"\n\n" not in self._buffer:
            chunk = await self._raw.chunk()
            assert chunk is not None, "the event stream ended"
            self._buffer += chunk
        frame, self._buffer = self._buffer.split(b"\n\n", 1)
        match = FRAME.fullmatch(frame)
        assert match, frame
        envelope = json.loads(match[1])
        assert set(envelope) == {"type", "data"} and isinstance(envelope["data"], str)
        return envelope["type"], json.loads(envelope["data"])


def json_body(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


# --- 1. the activity list -----------------------------------------------------------------------


async def test_one_record_per_request_with_filters_paging_and_sort(
    client: httpx.AsyncClient,
) -> None:
    before = await newest_id(client)
    plain = await client.post("/v1/chat/completions", json=chat("m"))
    streamed = await client.post("/v1/chat/completions", json=chat("m", stream=True))
    messages = await client.post(
        "/v1/messages",
        json={"model": "tr", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]},
    )
    middle = time.time()
    embeddings = await client.post("/v1/embeddings", json={"model": "m", "input": "hi there"})
    unknown = await client.post("/v1/chat/completions", json=chat("no-such-model"))
    broken = await client.post("/v1/chat/completions", json=chat("broken"))
    assert [r.status_code for r in (plain, streamed, messages, embeddings)] == [200] * 4
    assert streamed_text(streamed.text) == TEXT
    assert messages.headers["x-trioswap-translated"] == "anthropic->chat"
    assert (unknown.status_code, broken.status_code) == (404, 502)

    records = await records_after(client, before, 6)
    ids = [r["id"] for r in records]
    assert ids == list(range(before + 1, before + 7))
    expected = [
        ("m", "/v1/chat/completions", 200),
        ("m", "/v1/chat/completions", 200),
        ("tr", "/v1/messages", 200),
        ("m", "/v1/embeddings", 200),
        ("no-such-model", "/v1/chat/completions", 404),
        ("broken", "/v1/chat/completions", 502),
    ]
    assert [(r["model"], r["req_path"], r["resp_status_code"]) for r in records] == expected
    for record in records:
        assert record["duration_ms"] >= 0 and record["client"] == "127.0.0.1"
        assert record["user_agent"].startswith("python-httpx/")
        assert record["request_id"].startswith("req_") and record["has_capture"] is True
        datetime.fromisoformat(record["timestamp"])
    # Those that reached a model server took time (the 404 may take under a millisecond).
    assert all(r["duration_ms"] > 0 for r in records[:4] + records[5:])
    tokens = [
        (r["tokens"]["input_tokens"], r["tokens"]["output_tokens"], r["tokens"]["cache_tokens"])
        for r in records
    ]
    # Reported usage where the responder sends it; a plain stream reports none, so its prompt
    # is unknown (null, never 0) and its output counted from the chunks.
    assert (
        tokens
        == [(1, 4, None), (None, 4, None), (1, 3, None), (2, None, None)] + [(None, None, None)] * 2
    )
    ttfts = [r["ttft_ms"] for r in records]
    assert ttfts[1] is not None and 0 <= ttfts[1] <= records[1]["duration_ms"]
    assert ttfts[:1] + ttfts[2:] == [None] * 5
    # Timed from the chunks, 20 ms apart (all four could arrive together under load: unknown).
    assert records[1]["tokens"]["tokens_per_second"] != 0
    assert [r["translation"] for r in records] == [None, None, "anthropic->chat", None, None, None]
    assert [r["request_id"] for r in records[4:]] == [
        unknown.json()["request_id"],
        broken.json()["request_id"],
    ]
    assert unknown.headers["x-request-id"] == records[4]["request_id"]

    async def listed(**params: Any) -> list[int]:
        params.setdefault("min_id", before + 1)
        return [r["id"] for r in (await activity(client, **params))["data"]]

    # Filters: model (repeatable), start/end (RFC 3339 or Unix seconds), min_id/max_id.
    assert await listed(model="tr") == [ids[2]]
    assert await listed(model=["tr", "broken"]) == [ids[5], ids[2]]
    assert await listed(start=datetime.fromtimestamp(middle, UTC).isoformat()) == ids[:2:-1]
    assert await listed(end=f"{middle:.6f}") == ids[2::-1]
    assert await listed(min_id=ids[1], max_id=ids[2]) == [ids[2], ids[1]]
    # Paging: newest first, `limit` a page.
    page = await activity(client, min_id=before + 1, limit=4, page=2)
    assert (page["page"], page["limit"], page["total"], page["total_pages"]) == (2, 4, 6, 2)
    assert [r["id"] for r in page["data"]] == [ids[1], ids[0]]
    assert (await activity(client, min_id=before + 1, page=3, limit=4))["data"] == []
    # Sorting: ascending ids; generated tokens with the unknown ones last either way.
    assert await listed(sort="id", order="asc") == ids
    by_output = (await activity(client, min_id=before + 1, sort="generated", order="desc"))["data"]
    outputs = [r["tokens"]["output_tokens"] for r in by_output]
    assert outputs == [4, 4, 3, None, None, None]
    by_output = (await activity(client, min_id=before + 1, sort="generated", order="asc"))["data"]
    assert [r["tokens"]["output_tokens"] for r in by_output] == [3, 4, 4, None, None, None]
    durations = await activity(client, min_id=before + 1, sort="duration", order="desc")
    values = [r["duration_ms"] for r in durations["data"]]
    assert values == sorted(values, reverse=True)


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1000",
        "limit=ten",
        "page=0",
        "sort=bogus",
        "order=sideways",
        "start=yesterday",
        "start=2026-01-01T00:00:00",  # no zone
        "end=2000-01-01T00:00:00Z&start=2001-01-01T00:00:00Z",
        "min_id=0",
        "min_id=x",
        "min_id=5&max_id=4",
        "errors=maybe",
        "model=" + "&model=".join(["m"] * 101),
    ],
)
async def test_a_bad_parameter_is_a_400_json_error(client: httpx.AsyncClient, query: str) -> None:
    for path in ("/api/metrics/activity", "/api/metrics/stats"):
        if path.endswith("stats") and query.split("=")[0] in ("limit", "page", "sort", "order"):
            continue  # the stats have no paging or order
        response = await client.get(f"{path}?{query}")
        assert response.status_code == 400, (path, query, response.text)
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"]["message"]


# --- 2. sessions, clients, user agents ----------------------------------------------------------


async def test_session_ids_clients_and_user_agents(client: httpx.AsyncClient) -> None:
    before = await newest_id(client)
    session_a, session_b = f"a-{uuid.uuid4()}", f"b-{uuid.uuid4()}"
    agent = "observe-test/1.0 (a client)"
    long_agent = "u" * 10_000
    for headers in (
        {"X-Session-ID": session_a, "User-Agent": agent},
        {"X-Litellm-Session-Id": session_b},
        {"User-Agent": long_agent},
    ):
        response = await client.post("/v1/chat/completions", json=chat("m"), headers=headers)
        assert response.status_code == 200, response.text
    first, second, third = await records_after(client, before, 3)
    assert (first["session_id"], second["session_id"], third["session_id"]) == (
        session_a,
        session_b,
        None,
    )
    assert first["user_agent"] == agent and first["client"] == "127.0.0.1"
    assert second["user_agent"].startswith("python-httpx/")
    # Clipped to a few hundred characters, saying how much was cut.
    assert third["user_agent"].startswith("u" * 100) and len(third["user_agent"]) < 600
    assert "more characters" in third["user_agent"]
    only_a = await activity(client, session_id=session_a)
    assert [r["id"] for r in only_a["data"]] == [first["id"]]
    both = await activity(client, session_id=[session_a, session_b])
    assert [r["id"] for r in both["data"]] == [second["id"], first["id"]]


# --- 3. stats -----------------------------------------------------------------------------------


async def test_stats_totals_and_percentiles(client: httpx.AsyncClient) -> None:
    await client.post("/v1/chat/completions", json=chat("m"))  # m is running before we count
    before = await newest_id(client)
    for _ in range(3):
        response = await client.post("/v1/chat/completions", json=chat("m", stream=True))
        assert streamed_text(response.text) == TEXT
    assert (await client.post("/v1/chat/completions", json=chat("m"))).status_code == 200
    assert (await client.post("/v1/chat/completions", json=chat("no-such"))).status_code == 404
    await records_after(client, before, 5)

    response = await client.get("/api/metrics/stats", params={"min_id": before + 1})
    assert response.status_code == 200, response.text
    stats = response.json()
    totals = {name: stats[name] for name in stats if name.startswith("total_")}
    assert totals == {
        "total_requests": 5,
        "total_errors": 1,
        "total_input_tokens": 1,  # only the plain reply reports its prompt
        "total_output_tokens": 16,
        "total_cache_tokens": 0,
    }
    percentiles = stats["percentiles"]
    assert set(percentiles) == {"decode_tps", "prefill_tps", "ttft_ms", "duration_ms"}
    for name, count in (("duration_ms", 5), ("ttft_ms", 3)):
        assert percentiles[name]["count"] == count, percentiles
        assert 0 <= percentiles[name]["p50"] <= percentiles[name]["p90"] <= percentiles[name]["p99"]
    # Each stream's decode speed is timed from its chunks (20 ms apart: two could, under load,
    # arrive together, and then that stream has no speed).
    decode = percentiles["decode_tps"]
    assert 1 <= decode["count"] <= 3 and 0 < decode["p50"] <= decode["p90"] <= decode["p99"]
    assert percentiles["prefill_tps"] is None and stats["prompt_histogram"] is None
    histogram = stats["gen_histogram"]
    assert sum(histogram["bins"]) == decode["count"]
    assert histogram["min"] <= histogram["p50"] <= histogram["max"]
    # Filtered by model: the failed request named no model that exists.
    only_m = await client.get("/api/metrics/stats", params={"min_id": before + 1, "model": "m"})
    assert only_m.json()["total_requests"] == 4 and only_m.json()["total_errors"] == 0


# --- 4. captures --------------------------------------------------------------------------------


async def test_captures_mask_credentials_and_rebuild_streams(client: httpx.AsyncClient) -> None:
    before = await newest_id(client)
    body = chat("m", max_tokens=50)
    headers = {"x-api-key": KEY, "Cookie": "session=secret", "X-Custom": "kept"}
    plain = await client.post("/v1/chat/completions", json=body, headers=headers)
    streamed = await client.post("/v1/chat/completions", json=chat("m", stream=True))
    assert plain.status_code == streamed.status_code == 200
    first, second = await records_after(client, before, 2)
    assert first["has_capture"] is second["has_capture"] is True

    response = await client.get(f"/api/captures/{first['id']}")
    assert response.status_code == 200, response.text
    capture = response.json()
    assert capture["id"] == first["id"] and capture["req_path"] == "/v1/chat/completions"
    assert capture["method"] == "POST" and capture["resp_status"] == 200
    assert capture["complete"] is True
    request_headers = capture["req_headers"]
    assert request_headers["Authorization"] == request_headers["X-Api-Key"] == MASK
    assert request_headers["Cookie"] == MASK and request_headers["X-Custom"] == "kept"
    assert KEY not in json.dumps(capture)
    assert json.loads(capture["req_text"]) == body
    assert base64.b64decode(capture["req_body"]).decode() == capture["req_text"]
    assert capture["req_truncated"] is capture["resp_truncated"] is False
    assert json.loads(capture["resp_text"]) == plain.json()
    assert base64.b64decode(capture["resp_body"]) == plain.content
    assert capture["resp_headers"]["Content-Type"].startswith("application/json")
    assert capture["rebuilt"] == {"text": TEXT, "reasoning": "", "tool_calls": []}

    response = await client.get(f"/api/captures/{second['id']}")
    assert response.status_code == 200, response.text
    capture = response.json()
    assert capture["resp_headers"]["Content-Type"].startswith("text/event-stream")
    assert capture["resp_text"] == streamed.text
    assert capture["rebuilt"]["text"] == streamed_text(streamed.text) == TEXT

    for bad in ("abc", "-1", "1.5", "%20"):
        response = await client.get(f"/api/captures/{bad}")
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["error"]["message"]
    response = await client.get("/api/captures/999999999")
    assert response.status_code == 404 and response.json()["error"]["message"]


async def test_has_capture_says_whether_the_capture_is_still_there(
    client: httpx.AsyncClient,
) -> None:
    before = await newest_id(client)
    # captureBuffer: 1 keeps a quarter of a MiB of each body and a MiB in all: six requests of
    # 200 kB push the oldest out.
    big = chat("m", messages=[{"role": "user", "content": "word " * 40_000}])
    for _ in range(6):
        assert (await client.post("/v1/chat/completions", json=big)).status_code == 200
    records = await records_after(client, before, 6)
    present = [
        (await client.get(f"/api/captures/{record['id']}")).status_code == 200 for record in records
    ]
    assert not all(present)  # the ring did evict
    assert [record["has_capture"] for record in records] == present


# --- 5. in flight -------------------------------------------------------------------------------


async def test_inflight_lists_a_stream_and_cancel_ends_it(
    shared: str, client: httpx.AsyncClient
) -> None:
    session = f"s-{uuid.uuid4()}"
    headers = {
        **AUTH,
        "content-type": "application/json",
        "user-agent": "inflight-test",
        "x-session-id": session,
    }
    body = json_body(chat("slow", stream=True))
    async with Raw(shared, "POST", "/v1/chat/completions", headers, body) as stream:
        assert stream.status == 200
        entries: list[dict[str, Any]] = []

        async def listed() -> bool:
            nonlocal entries
            response = await client.get("/api/inflight")
            assert response.status_code == 200
            entries = [e for e in response.json() if e["session_id"] == session]
            return bool(entries) and entries[0]["resp_bytes"] > 0

        await wait_until(listed)
        (entry,) = entries
        assert entry["model"] == "slow" and entry["req_path"] == "/v1/chat/completions"
        assert entry["method"] == "POST" and entry["remote_ip"] == "127.0.0.1"
        assert entry["user_agent"] == "inflight-test"
        assert entry["req_headers"] == {"User-Agent": "inflight-test"}
        assert entry["request_id"].startswith("req_") and entry["elapsed_ms"] >= 0
        datetime.fromisoformat(entry["timestamp"])
        first_bytes = entry["resp_bytes"]

        async def grew() -> bool:
            await listed()
            return entries[0]["resp_bytes"] > first_bytes

        await wait_until(grew)
        slow = {e["model"]: e for e in (await client.get("/running")).json()["running"]}["slow"]
        assert slow["in_flight"] == 1

        response = await client.post(f"/api/inflight/{entry['id']}/cancel")
        assert response.status_code == 200, response.text
        assert response.json() == {"msg": "ok"}
        # The stream ends now, long before its 8 s of words.
        received = b""
        with trio.fail_after(3):
            try:
                while (chunk := await stream.chunk()) is not None:
                    received += chunk
            except h11.RemoteProtocolError:
                pass
        assert b"[DONE]" not in received and b"word39" not in received
        # It ends with an error event saying why.
        assert b"was cancelled (POST /api/inflight/" in received

    async def released() -> bool:
        running = {e["model"]: e for e in (await client.get("/running")).json()["running"]}
        return running["slow"]["in_flight"] == 0

    await wait_until(released)
    response = await client.get("/api/inflight")
    assert all(e["id"] != entry["id"] for e in response.json())
    records = (await activity(client, session_id=session))["data"]
    assert [(r["request_id"], r["model"]) for r in records] == [(entry["request_id"], "slow")]

    for unknown in (entry["id"], "999999", "abc"):
        response = await client.post(f"/api/inflight/{unknown}/cancel")
        assert response.status_code == 404, response.text
        assert response.json()["error"]["message"]


async def test_a_request_cancelled_while_its_model_loads_gets_an_error(
    shared: str, client: httpx.AsyncClient
) -> None:
    session = f"s-{uuid.uuid4()}"
    answers: list[httpx.Response] = []

    async def ask() -> None:
        headers = {**AUTH, "x-session-id": session}
        answer = await client.post("/v1/chat/completions", json=chat("held"), headers=headers)
        answers.append(answer)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        entries: list[dict[str, Any]] = []

        async def listed() -> bool:
            nonlocal entries
            response = await client.get("/api/inflight")
            entries = [e for e in response.json() if e["session_id"] == session]
            return bool(entries)

        await wait_until(listed)
        response = await client.post(f"/api/inflight/{entries[0]['id']}/cancel")
        assert response.status_code == 200
    # Its start goes on (the scheduler runs one start at a time): stop it for the next tests.
    response = await client.post("/api/models/unload/held?force=true", headers=AUTH)
    assert response.status_code == 200, response.text
    (answer,) = answers
    assert answer.status_code == 503, answer.text
    assert "was cancelled (POST /api/inflight/" in answer.json()["error"]["message"]
    assert answer.json()["request_id"] == entries[0]["request_id"]


# --- 6. events ----------------------------------------------------------------------------------


async def test_events_stream_llama_swap_messages(shared: str, client: httpx.AsyncClient) -> None:
    async with Raw(shared, "GET", "/api/events", AUTH) as raw:
        assert raw.status == 200
        assert raw.headers["content-type"].startswith("text/event-stream")
        assert raw.headers["x-accel-buffering"] == "no"
        events = Events(raw)
        with trio.fail_after(10):
            first = [await events.next() for _ in range(4)]
        assert [kind for kind, _ in first] == ["logData", "logData", "modelStatus", "inflight"]
        assert [data["source"] for _, data in first[:2]] == ["proxy", "upstream"]
        assert first[0][1]["data"] and isinstance(first[1][1]["data"], str)
        statuses = {model["id"]: model for model in first[2][1]}
        assert set(statuses) == set(SHARED_MODELS)
        assert statuses["ev"] == {
            "id": "ev",
            "name": "",
            "description": "",
            "state": "stopped",
            "unlisted": False,
            "peerID": "",
        }
        assert first[3][1] == {"operation": "snapshot", "requests": []}

        seen: list[tuple[str, Any]] = []
        async with trio.open_nursery() as nursery:
            replies: list[httpx.Response] = []

            async def ask() -> None:
                replies.append(await client.post("/v1/chat/completions", json=chat("ev")))

            nursery.start_soon(ask)
            with trio.fail_after(15):
                while not seen or seen[-1][0] != "activity":
                    seen.append(await events.next())
        assert replies[0].status_code == 200

    inflight = [data for kind, data in seen if kind == "inflight"]
    assert inflight[0]["operation"] == "upsert"
    request = inflight[0]["request"]
    assert request["req_path"] == "/v1/chat/completions" and request["method"] == "POST"
    assert inflight[-1] == {"operation": "remove", "id": request["id"]}
    assert all(e["request"]["id"] == request["id"] for e in inflight[1:-1])
    ev_states = [
        {m["id"]: m["state"] for m in data}["ev"] for kind, data in seen if kind == "modelStatus"
    ]
    assert "starting" in ev_states and ev_states[-1] == "ready"
    assert ev_states.index("starting") < ev_states.index("ready")
    logs = [data for kind, data in seen if kind == "logData"]
    assert any(log["source"] == "upstream" and "[ev]" in log["data"] for log in logs)
    kinds = [kind for kind, _ in seen]
    assert kinds.index("inflight") < kinds.index("modelStatus") < len(kinds) - 1
    record_id = seen[-1][1]["id"]
    assert seen[-1][1] == {"id": record_id}
    (record,) = (await activity(client, min_id=record_id, max_id=record_id))["data"]
    assert (record["model"], record["resp_status_code"]) == ("ev", 200)


# --- 7. /metrics --------------------------------------------------------------------------------


async def test_prometheus_metrics_count_requests_tokens_swaps_and_states(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/v1/chat/completions", json=chat("m"))  # m is running before we count
    before = await scrape(client)
    assert (await client.post("/v1/chat/completions", json=chat("m"))).status_code == 200
    assert (await client.post("/v1/chat/completions", json=chat("no-such"))).status_code == 404
    assert (await client.post("/v1/chat/completions", json=chat("broken"))).status_code == 502
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = "/v1/chat/completions"
    assert delta("trioswap_requests_total", model="m", route=route, status="200") == 1
    assert delta("trioswap_requests_total", model="broken", route=route, status="502") == 1
    not_found = [
        count - before.get(key, 0.0)
        for key, count in after.items()
        if key[0] == "trioswap_requests_total" and ("status", "404") in key[1]
    ]
    assert sum(not_found) == 1
    assert delta("trioswap_prompt_tokens_total", model="m") == 1
    assert delta("trioswap_generated_tokens_total", model="m") == 4
    assert delta("trioswap_request_duration_seconds_count", model="m") == 1
    # m was started by a swap that succeeded; broken's start failed again.
    assert value(after, "trioswap_swaps_total", model="m", result="ok") >= 1
    assert delta("trioswap_swaps_total", model="broken", result="failed") == 1
    assert value(after, "trioswap_swap_duration_seconds_count", model="m") >= 1
    assert value(after, "trioswap_model_state", model="m", state="ready") == 1
    assert value(after, "trioswap_model_state", model="m", state="stopped") == 0
    assert value(after, "trioswap_model_state", model="broken", state="failed") == 1
    assert value(after, "trioswap_requests_in_flight", model="m") == 0
    assert any(key[0] == "trioswap_build_info" for key in after)

    response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    open_metrics = samples(response.text, openmetrics_families)
    assert value(open_metrics, "trioswap_requests_total", model="m", route=route, status="200") >= 1


async def test_errors_are_counted_by_their_kind(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    assert (await client.post("/v1/chat/completions", json=chat("no-such"))).status_code == 404
    assert (await client.post("/v1/chat/completions", json=chat("broken"))).status_code == 502
    after = await scrape(client)

    def errors(kind: str) -> float:
        return sum(
            count - before.get(key, 0.0)
            for key, count in after.items()
            if key[0] == "trioswap_request_errors_total" and ("kind", kind) in key[1]
        )

    assert errors("model_not_found") == 1
    assert errors("model_start") == 1
    assert errors("upstream_status") == 0


async def test_an_unknown_model_name_is_not_a_metrics_label(client: httpx.AsyncClient) -> None:
    name = f"made-up-{uuid.uuid4()}-" + "x" * 5000
    assert (await client.post("/v1/chat/completions", json=chat(name))).status_code == 404
    await quiet(client)
    text = (await client.get("/metrics")).text
    assert name[:44] not in text
    assert max(len(line) for line in text.splitlines()) < 2000


# --- 8. /api/performance ------------------------------------------------------------------------


async def test_performance_samples_the_system(client: httpx.AsyncClient) -> None:
    found: dict[str, Any] = {}

    async def sampled() -> bool:
        nonlocal found
        response = await client.get("/api/performance")
        assert response.status_code == 200, response.text
        found = response.json()
        return bool(found["sys_stats"])

    await wait_until(sampled, timeout=7)  # every: 5s
    assert found["enabled"] is True and found["gpu_stats"] == []
    sample = found["sys_stats"][-1]
    assert sample["mem_total_mb"] > 0 and sample["cpu_util_per_core"]
    assert {"timestamp", "mem_used_mb", "swap_total_mb", "load_avg_1", "net_io"} <= set(sample)
    later = await client.get("/api/performance", params={"after": sample["timestamp"]})
    assert later.status_code == 200 and later.json()["sys_stats"] == []
    future = await client.get("/api/performance", params={"after": "2999-01-01T00:00:00Z"})
    assert future.json() == {"enabled": True, "sys_stats": [], "gpu_stats": []}
    bad = await client.get("/api/performance", params={"after": "yesterday"})
    assert bad.status_code == 400 and "RFC3339" in bad.json()["error"]["message"]


# --- 10. every endpoint needs the key -----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/metrics/activity"),
        ("GET", "/api/metrics/stats"),
        ("GET", "/api/captures/1"),
        ("GET", "/api/inflight"),
        ("POST", "/api/inflight/1/cancel"),
        ("GET", "/api/events"),
        ("GET", "/api/performance"),
        ("GET", "/metrics"),
    ],
)
async def test_every_endpoint_needs_the_key(shared: str, method: str, path: str) -> None:
    async with httpx.AsyncClient(base_url=shared, timeout=30.0) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"x-api-key": "wrong"}):
            response = await client.request(method, path, headers=headers)
            assert response.status_code == 401, (path, headers, response.text)
            assert response.json()["error"]["type"] == "authentication_error"


# --- TTFT ---------------------------------------------------------------------------------------


async def test_ttft_counts_from_the_request_s_arrival(client: httpx.AsyncClient) -> None:
    before = await newest_id(client)
    response = await client.post("/v1/chat/completions", json=chat("late", stream=True))
    assert response.status_code == 200
    (record,) = await records_after(client, before, 1)
    assert record["duration_ms"] >= LATE_DELAY * 1000
    assert record["ttft_ms"] >= LATE_DELAY * 1000


# --- settings of their own: captureBuffer 0, a session header, performance off, the store -------


async def test_no_captures_a_configured_session_header_and_no_performance(
    servers: dict[str, str],
) -> None:
    async with httpx.AsyncClient(base_url=servers["settings"], timeout=30.0) as client:
        for headers in (
            {"X-Conversation": "talk-1", "X-Session-ID": "other"},
            {"X-Session-ID": "x"},
        ):
            response = await client.post("/v1/chat/completions", json=chat("m"), headers=headers)
            assert response.status_code == 200
        first, second = await records_after(client, 0, 2)
        # The configured header replaces the default ones, as in llama-swap.
        assert (first["session_id"], second["session_id"]) == ("talk-1", None)
        assert first["has_capture"] is second["has_capture"] is False
        response = await client.get(f"/api/captures/{first['id']}")
        assert response.status_code == 404 and response.json()["error"]["message"]
        response = await client.get("/api/performance")
        assert response.status_code == 503 and response.json() == {"enabled": False}


@pytest.mark.parametrize("kept", [2, 0])
async def test_metrics_max_in_memory_keeps_the_newest(servers: dict[str, str], kept: int) -> None:
    async with httpx.AsyncClient(base_url=servers[f"keep {kept}"], timeout=30.0) as client:
        for _ in range(3):
            assert (await client.post("/v1/chat/completions", json=chat("m"))).status_code == 200
        # Counted in /metrics, so filed (or not) in the store.
        found = await scrape(client)
        route = "/v1/chat/completions"
        assert value(found, "trioswap_requests_total", model="m", route=route, status="200") == 3
        listed = await activity(client)
        assert [r["id"] for r in listed["data"]] == [3, 2][:kept]
        assert listed["total"] == kept
        stats = (await client.get("/api/metrics/stats")).json()
        assert stats["total_requests"] == kept


async def test_the_store_survives_a_restart(launch: LaunchFn, tmp_path: Path) -> None:
    config = single_model_config("store: {path: activity.sqlite}")
    first = await launch(config)
    async with first.client() as client:
        assert (await client.post("/v1/chat/completions", json=chat("m"))).status_code == 200
        (old,) = await records_after(client, 0, 1)
    first.process.send_signal(signal.SIGTERM)
    with trio.fail_after(15):
        await first.process.wait()
    assert first.process.returncode == 0
    assert (tmp_path / "activity.sqlite").is_file()  # beside the config

    second = await launch(config)
    async with second.client() as client:
        (kept,) = (await activity(client))["data"]
        # Captures live in memory: this one is gone (and has_capture says otherwise, see
        # test_has_capture_says_whether_the_capture_is_still_there).
        assert (await client.get(f"/api/captures/{old['id']}")).status_code == 404
        assert {**kept, "has_capture": None} == {**old, "has_capture": None}
        # A request for a model that does not exist is on record too, and needs no model start.
        assert (await client.post("/v1/chat/completions", json=chat("nope"))).status_code == 404
        (new,) = await records_after(client, old["id"], 1)
        assert new["id"] == old["id"] + 1 and new["request_id"] != old["request_id"]
        assert [r["id"] for r in (await activity(client))["data"]] == [new["id"], old["id"]]
