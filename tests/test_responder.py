"""Tests for the bundled fake upstream, run as a real process as a supervisor would."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

MODEL = "test-model"
TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def command(port: int, *args: str, model_id: str = MODEL) -> list[str]:
    return [
        sys.executable,
        "-m",
        "trioswap.responder",
        "--port",
        str(port),
        "--model-id",
        model_id,
        *args,
    ]


def kill_group(pid: int) -> None:
    # Each responder leads its own process group, so this also gets any grandchild.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


class Lines:
    """The lines of one of a process's output streams, as they arrive."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._changed = trio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def pump(self, stream: trio.abc.ReceiveStream) -> None:
        pending = b""
        async for data in stream:
            *complete, pending = (pending + data).split(b"\n")
            self.lines.extend(line.decode() for line in complete)
            self._notify()
        if pending:
            self.lines.append(pending.decode())
        self.closed = True
        self._notify()

    async def wait_for(self, text: str) -> str:
        while True:
            for line in self.lines:
                if text in line:
                    return line
            if self.closed:
                raise AssertionError(f"{text!r} never appeared in {self.lines}")
            await self._changed.wait()


class Running:
    def __init__(self, process: trio.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.stdout = Lines()
        self.stderr = Lines()

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT)


@contextlib.asynccontextmanager
async def responder(*args: str, wait_ready: bool = True) -> AsyncIterator[Running]:
    port = free_port()
    process = await trio.lowlevel.open_process(
        command(port, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    running = Running(process, port)
    try:
        async with trio.open_nursery() as nursery:
            assert process.stdout is not None
            assert process.stderr is not None
            nursery.start_soon(running.stdout.pump, process.stdout)
            nursery.start_soon(running.stderr.pump, process.stderr)
            if wait_ready:
                with trio.fail_after(TIMEOUT):
                    await running.stdout.wait_for("listening on")
            yield running
            # The pumps only finish at end of output.
            kill_group(process.pid)
    finally:
        kill_group(process.pid)
        with trio.CancelScope(shield=True):
            await process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    await stream.aclose()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One responder for the tests that do not care about process behaviour."""
    port = free_port()
    log_path: Path = tmp_path_factory.mktemp("responder") / "output.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command(port), stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + TIMEOUT
        with httpx.Client(base_url=url) as client:
            while True:
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.02)
        yield url
    finally:
        kill_group(process.pid)
        process.wait()


@pytest.fixture
async def client(shared: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=shared, timeout=TIMEOUT) as client:
        yield client


def expected_text(client: httpx.AsyncClient) -> str:
    return f"Hello from {MODEL} on port {client.base_url.port}."


def sse_data(body: str) -> list[str]:
    """The data payloads of an event stream, checking its framing on the way."""
    assert body.endswith("\n\n")
    payloads = []
    for event in body.removesuffix("\n\n").split("\n\n"):
        assert event.startswith("data: "), event
        payloads.append(event.removeprefix("data: "))
    return payloads


def anthropic_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for event in body.removesuffix("\n\n").split("\n\n"):
        name_line, data_line = event.split("\n")
        name = name_line.removeprefix("event: ")
        data = json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        events.append((name, data))
    return events


CHAT = {
    "model": "asked-for",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "say hello please"}]},
    ],
}


async def test_health_models_props(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert health.headers["x-responder-model"] == MODEL
    assert health.headers["x-responder-port"] == str(client.base_url.port)

    models = (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    [entry] = models["data"]
    assert entry["id"] == MODEL
    assert entry["object"] == "model"
    assert entry["owned_by"] == "responder"
    assert isinstance(entry["created"], int)

    props = (await client.get("/props")).json()
    assert props == {
        "default_generation_settings": {"n_ctx": 4096},
        "model_path": f"{MODEL}.gguf",
        "total_slots": 1,
    }


async def test_chat_completion(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.headers["x-responder-model"] == MODEL
    body = response.json()
    text = expected_text(client)
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["model"] == "asked-for"
    [choice] = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": text}
    assert choice["finish_reason"] == "stop"
    completion_tokens = len(text.split())
    assert body["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": completion_tokens,
        "total_tokens": 5 + completion_tokens,
    }
    assert body["responder"] == {"model_id": MODEL, "port": client.base_url.port}

    without_model = await client.post("/v1/chat/completions", json={"messages": []})
    assert without_model.json()["model"] == MODEL


async def test_chat_streaming(client: httpx.AsyncClient) -> None:
    request = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    response = await client.post("/v1/chat/completions", json=request)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-responder-port"] == str(client.base_url.port)
    *payloads, done = sse_data(response.text)
    assert done == "[DONE]"
    chunks = [json.loads(payload) for payload in payloads]
    *content, final, usage = chunks
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert all(chunk["responder"]["model_id"] == MODEL for chunk in chunks)
    assert content[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in chunk["choices"][0]["delta"] for chunk in content[1:])
    text = "".join(chunk["choices"][0]["delta"]["content"] for chunk in content)
    assert text == expected_text(client)
    assert final["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    ]
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == len(content)
    assert usage["usage"]["prompt_tokens"] == 5


async def test_max_tokens_stops_with_length(client: httpx.AsyncClient) -> None:
    request = {**CHAT, "max_tokens": 2}
    body = (await client.post("/v1/chat/completions", json=request)).json()
    assert body["choices"][0]["message"]["content"] == "Hello from"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2

    streamed = await client.post("/v1/chat/completions", json={**request, "stream": True})
    *payloads, done = sse_data(streamed.text)
    assert done == "[DONE]"
    *content, final = [json.loads(payload) for payload in payloads]
    assert [chunk["choices"][0]["delta"]["content"] for chunk in content] == ["Hello", " from"]
    assert final["choices"][0]["finish_reason"] == "length"

    bad = await client.post("/v1/chat/completions", json={**request, "max_tokens": "2"})
    assert bad.status_code == 400


async def test_completions(client: httpx.AsyncClient) -> None:
    request = {"model": "m", "prompt": "once upon a time"}
    body = (await client.post("/v1/completions", json=request)).json()
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert body["choices"][0]["text"] == expected_text(client)
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == 4
    assert body["responder"]["port"] == client.base_url.port

    streamed = await client.post("/v1/completions", json={**request, "stream": True})
    *payloads, done = sse_data(streamed.text)
    assert done == "[DONE]"
    *content, final = [json.loads(payload) for payload in payloads]
    assert all(chunk["object"] == "text_completion" for chunk in content)
    assert "".join(chunk["choices"][0]["text"] for chunk in content) == expected_text(client)
    assert final["choices"][0]["finish_reason"] == "stop"


async def test_embeddings_are_deterministic(client: httpx.AsyncClient) -> None:
    first = (await client.post("/v1/embeddings", json={"input": ["a cat", "a dog"]})).json()
    assert first["object"] == "list"
    assert [item["index"] for item in first["data"]] == [0, 1]
    vectors = [item["embedding"] for item in first["data"]]
    assert all(len(vector) == 8 for vector in vectors)
    assert all(isinstance(value, float) for vector in vectors for value in vector)
    assert vectors[0] != vectors[1]
    assert first["usage"] == {"prompt_tokens": 4, "total_tokens": 4}

    again = (await client.post("/v1/embeddings", json={"input": "a dog"})).json()
    assert again["data"][0]["embedding"] == vectors[1]

    bad = await client.post("/v1/embeddings", json={"input": 5})
    assert bad.status_code == 400


ANTHROPIC = {
    "model": "claude-ish",
    "max_tokens": 100,
    "system": "be nice",
    "messages": [{"role": "user", "content": "hello there"}],
}


async def test_anthropic_messages(client: httpx.AsyncClient) -> None:
    body = (await client.post("/v1/messages", json=ANTHROPIC)).json()
    text = expected_text(client)
    assert body["id"].startswith("msg_")
    assert body["type"] == "message"
    assert body["role"] == "assistant"
    assert body["model"] == "claude-ish"
    assert body["content"] == [{"type": "text", "text": text}]
    assert body["stop_reason"] == "end_turn"
    assert body["stop_sequence"] is None
    assert body["usage"] == {"input_tokens": 4, "output_tokens": len(text.split())}

    counted = (await client.post("/v1/messages/count_tokens", json=ANTHROPIC)).json()
    assert counted == {"input_tokens": 4}


async def test_anthropic_streaming_events(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/messages", json={**ANTHROPIC, "stream": True})
    assert response.headers["content-type"] == "text/event-stream"
    events = anthropic_events(response.text)
    names = [name for name, _ in events]
    deltas = names.count("content_block_delta")
    assert deltas > 1
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["role"] == "assistant"
    assert start["content"] == []
    assert start["usage"]["input_tokens"] == 4
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == expected_text(client)
    message_delta = events[-2][1]
    assert message_delta["delta"]["stop_reason"] == "end_turn"
    assert message_delta["usage"] == {"output_tokens": deltas}


async def test_tokenize(client: httpx.AsyncClient) -> None:
    tokens = (await client.post("/tokenize", json={"content": "to be or not to be"})).json()
    ids = tokens["tokens"]
    assert len(ids) == 6
    assert all(isinstance(token, int) for token in ids)
    assert ids[0] == ids[4]
    assert ids[1] == ids[5]
    again = (await client.post("/tokenize", json={"content": "not"})).json()
    assert again["tokens"] == [ids[3]]


async def test_multipart_and_json_echo(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/audio/transcriptions",
        data={"model": "whisper-1", "language": "en"},
        files={"file": ("speech.wav", b"\x00\x01" * 500, "audio/wav")},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["text"] == expected_text(client)
    received = body["received"]
    assert received["content_type"].startswith("multipart/form-data; boundary=")
    assert received["bytes"] == int(response.request.headers["content-length"])
    assert received["fields"] == {
        "model": "whisper-1",
        "language": "en",
        "file": {"filename": "speech.wav", "size": 1000},
    }

    speech = await client.post("/v1/audio/speech", json={"input": "hi", "voice": "alloy"})
    assert speech.json()["received"]["fields"] == {"input": "hi", "voice": "alloy"}
    images = await client.post("/v1/images/generations", json={"prompt": "a cat"})
    assert images.json()["received"]["content_type"] == "application/json"


async def test_debug_requests_records_requests(client: httpx.AsyncClient) -> None:
    assert (await client.delete("/debug/requests")).status_code == 200
    await client.post(
        "/v1/chat/completions?trace=1",
        content=b'{"messages": [], "note": "caf\xc3\xa9 \xff"}',
        headers={"X-Test": "yes"},
    )
    await client.get("/health")
    await client.get("/debug/info")
    await client.get("/nowhere")
    recorded = (await client.get("/debug/requests")).json()
    assert [(entry["method"], entry["path"]) for entry in recorded] == [
        ("POST", "/v1/chat/completions"),
        ("GET", "/nowhere"),
    ]
    chat = recorded[0]
    assert chat["query"] == "trace=1"
    assert chat["headers"]["x-test"] == "yes"
    assert chat["body"] == '{"messages": [], "note": "café \ufffd"}'

    assert (await client.delete("/debug/requests")).json() == {"cleared": 2}
    assert (await client.get("/debug/requests")).json() == []


async def test_request_errors(client: httpx.AsyncClient) -> None:
    bad = await client.post("/v1/chat/completions", content=b"{not json")
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"
    assert bad.json()["error"]["code"] == 400
    assert bad.headers["x-responder-model"] == MODEL

    not_an_object = await client.post("/v1/completions", json=["prompt"])
    assert not_an_object.status_code == 400

    # No content-type at all: the body is still parsed as JSON.
    untyped = await client.post("/v1/chat/completions", content=b'{"messages": []}')
    assert untyped.status_code == 200

    missing = await client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == 404
    assert missing.headers["x-responder-port"] == str(client.base_url.port)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_logs_requests_and_exits_cleanly_on_signal(signum: signal.Signals) -> None:
    async with responder() as running:
        assert running.stdout.lines[0] == f"responder {MODEL} listening on {running.url}"
        assert f"pid {running.process.pid}" in await running.stderr.wait_for("pid")
        async with running.client() as client:
            await client.post("/v1/chat/completions", json=CHAT)
        with trio.fail_after(TIMEOUT):
            await running.stdout.wait_for("POST /v1/chat/completions -> 200")
            running.process.send_signal(signum)
            assert await running.process.wait() == 0


async def test_signal_during_startup_delay_exits_cleanly() -> None:
    async with responder("--startup-delay", "30", wait_ready=False) as running:
        with trio.fail_after(TIMEOUT):
            await running.stderr.wait_for("pid")
            running.process.send_signal(signal.SIGTERM)
            assert await running.process.wait() == 0


async def test_port_in_use_is_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(TIMEOUT):
            result = await trio.run_process(
                command(port), capture_stdout=True, capture_stderr=True, check=False
            )
    assert result.returncode == 1
    assert f"error: cannot serve on 127.0.0.1:{port}" in result.stderr.decode()
    assert b"Traceback" not in result.stderr


async def test_startup_and_loading_delays() -> None:
    delays = ["--startup-delay", "0.2", "--loading-delay", "0.4", "--slow-health", "0.05"]
    async with responder(*delays, wait_ready=False) as running, running.client() as client:
        # Running (it has said its pid) but still "loading" before it binds the port.
        with trio.fail_after(TIMEOUT):
            await running.stderr.wait_for("pid")
        with pytest.raises(httpx.ConnectError):
            await client.get("/health")
        with trio.fail_after(TIMEOUT):
            await running.stdout.wait_for("listening on")
        bound = trio.current_time()
        loading = await client.get("/health")
        assert loading.status_code == 503
        assert loading.json() == {
            "error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}
        }
        assert trio.current_time() - bound >= 0.05
        # Each poll takes the --slow-health time, so this loop does not spin.
        with trio.fail_after(TIMEOUT):
            while (await client.get("/health")).status_code != 200:
                pass
        assert trio.current_time() - bound >= 0.3


async def test_tokens_per_second_paces_chunks() -> None:
    async with (
        responder(
            "--tokens-per-second", "50", "--response-text", "one two three four five six"
        ) as running,
        running.client() as client,
    ):
        arrivals = []
        request = {"messages": [], "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json=request) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: {") and '"content"' in line:
                    arrivals.append(trio.current_time())
        assert len(arrivals) == 6
        # Five 20 ms gaps: the first chunk arrived well before the last was produced.
        assert arrivals[-1] - arrivals[0] >= 0.08

        started = trio.current_time()
        await client.post("/v1/chat/completions", json={"messages": []})
        assert trio.current_time() - started >= 0.12


async def test_client_disconnect_abandons_generation() -> None:
    long_text = " ".join(["word"] * 200)
    async with responder("--tokens-per-second", "20", "--response-text", long_text) as running:
        body = b'{"messages": [], "stream": true}'
        request = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: responder\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        # A raw socket, so that hanging up after the first chunk is exactly what happens.
        async with await trio.open_tcp_stream("127.0.0.1", running.port) as stream:
            await stream.send_all(request)
            received = b""
            while b"data: " not in received:
                received += await stream.receive_some()
        # Generating all 200 chunks would take 10 s.
        with trio.fail_after(3):
            await running.stdout.wait_for("POST /v1/chat/completions -> 200")


async def test_crash_after_chunks_kills_process_mid_stream() -> None:
    async with responder("--crash-after-chunks", "2") as running, running.client() as client:
        payloads = []
        request = {"messages": [], "stream": True}
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            async with client.stream("POST", "/v1/chat/completions", json=request) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        payloads.append(line.removeprefix("data: "))
        assert len(payloads) == 2
        assert "[DONE]" not in payloads
        with trio.fail_after(TIMEOUT):
            assert await running.process.wait() == 3
        assert "crashing after 2 chunks" in await running.stderr.wait_for("crashing")


async def test_fail_on_start() -> None:
    port = free_port()
    failing = ["--fail-on-start", "--exit-code", "7", "--startup-delay", "0.05"]
    with trio.fail_after(TIMEOUT):
        result = await trio.run_process(
            command(port, *failing, model_id="broken-model"),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 7
    stderr = result.stderr.decode()
    assert "error: failed to load model 'broken-model'" in stderr
    assert str(port) in stderr
    assert b"listening" not in result.stdout


async def test_ignore_sigterm_needs_sigkill() -> None:
    async with responder("--ignore-sigterm") as running, running.client() as client:
        running.process.send_signal(signal.SIGTERM)
        # An ignored signal is discarded when sent, so the server is still answering.
        assert (await client.get("/health")).status_code == 200
        assert running.process.poll() is None
        running.process.kill()
        with trio.fail_after(TIMEOUT):
            assert await running.process.wait() == -signal.SIGKILL


async def test_spawn_grandchild_in_same_process_group() -> None:
    async with responder("--spawn-grandchild") as running, running.client() as client:
        info = (await client.get("/debug/info")).json()
        assert info["model_id"] == MODEL
        assert info["port"] == running.port
        assert info["pid"] == running.process.pid
        grandchild = info["grandchild_pid"]
        assert isinstance(grandchild, int)
        os.kill(grandchild, 0)
        assert os.getpgid(grandchild) == running.process.pid
        assert str(grandchild) in await running.stderr.wait_for("grandchild pid")
