"""The request path under hostile or unlucky input, through a real trioswap: huge, slow and
endless bodies, odd paths, giant model names, broken framing, hung model servers, shutdown.

Raw sockets where a client library would hide what happens on the wire.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import trio

from tests.conftest import RESPONDER, LaunchFn, Trioswap, chat, random_start_port, wait_until

MB = 1024 * 1024
KEY = "sk-hostile"
SLOW_40_WORDS = "--tokens-per-second 2 --response-text '" + "w " * 40 + "'"


def config(model_extra: str = "", top: str = "", flags: str = "") -> str:
    return f"""
startPort: {random_start_port()}
{top}
models:
  m:
    cmd: {RESPONDER} --port ${{PORT}} --model-id m {flags}
{model_extra}
"""


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class PeakRss:
    """The highest RSS of a process while a block runs, sampled every few milliseconds."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = rss_mb(pid)
        self.peak = self.before

    @property
    def rise(self) -> float:
        return self.peak - self.before

    async def sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mb(self.pid))
            await trio.sleep(0.005)


@dataclass
class Raw:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        return json.loads(self.body)  # type: ignore[no-any-return]


def parse(data: bytes) -> Raw:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        decoded = b""
        while body:
            size_line, _, rest = body.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            decoded += rest[:size]
            body = rest[size + 2 :]
        body = decoded
    return Raw(status, headers, body)


async def connect(ts: Trioswap) -> trio.SocketStream:
    url = httpx.URL(ts.url)
    return await trio.open_tcp_stream(url.host, url.port)


async def read_all(stream: trio.SocketStream) -> bytes:
    """Everything until the server closes (a reset after a complete answer is a close too)."""
    data = b""
    try:
        while chunk := await stream.receive_some(65536):
            data += chunk
    except trio.BrokenResourceError:
        pass
    return data


async def raw_request(ts: Trioswap, head: bytes, body: bytes = b"", timeout: float = 15) -> Raw:
    with trio.fail_after(timeout):
        stream = await connect(ts)
        async with stream:
            await stream.send_all(head + body)
            return parse(await read_all(stream))


def head(method: str, target: bytes, *headers: str) -> bytes:
    lines = [
        f"{method} ".encode() + target + b" HTTP/1.1",
        b"host: localhost",
        b"connection: close",
    ]
    lines.extend(h.encode() for h in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def send_until_answered(
    stream: trio.SocketStream, chunk: bytes, total: int | None, pause: float = 0
) -> Raw:
    """Send body chunks (forever when `total` is None) while reading; stop at the answer."""
    answer: list[Raw] = []
    async with trio.open_nursery() as nursery:

        async def send() -> None:
            sent = 0
            try:
                while total is None or sent < total:
                    await stream.send_all(chunk)
                    sent += len(chunk)
                    if pause:
                        await trio.sleep(pause)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async def receive() -> None:
            answer.append(parse(await read_all(stream)))
            nursery.cancel_scope.cancel()

        nursery.start_soon(send)
        nursery.start_soon(receive)
    return answer[0]


async def started(ts: Trioswap, key: str | None = None) -> None:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with ts.client(headers=headers) as client:
        response = await client.post("/v1/chat/completions", json=chat(max_tokens=1))
        assert response.status_code == 200


async def upstream_requests(ts: Trioswap) -> list[dict[str, object]]:
    async with ts.client() as client:
        response = await client.get("/upstream/m/debug/requests")
    response.raise_for_status()
    return [r for r in response.json() if r["path"] != "/debug/requests"]


# -- 1. request bodies: auth first, bounded, never held forever ------------------------------


async def test_unauthorized_100mb_body_is_refused_without_reading_it(launch: LaunchFn) -> None:
    ts = await launch(config(top=f"apiKeys: [{KEY}]"))
    await started(ts, KEY)
    # The control plane is built at its first request: its imports are not what is measured.
    async with ts.client(headers={"authorization": f"Bearer {KEY}"}) as client:
        assert (await client.get("/running")).status_code == 200
    for path in (b"/v1/chat/completions", b"/upstream/m/v1/audio/speech", b"/models/unload"):
        rss = PeakRss(ts.process.pid)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rss.sample)
            with trio.fail_after(30):
                stream = await connect(ts)
                async with stream:
                    await stream.send_all(
                        head(
                            "POST",
                            path,
                            f"content-length: {100 * MB}",
                            "content-type: application/json",
                        )
                    )
                    answer = await send_until_answered(stream, b"x" * MB, 100 * MB)
            nursery.cancel_scope.cancel()
        assert answer.status == 401, (path, answer)
        assert rss.rise < 8, (path, f"RSS rose {rss.rise:.0f} MB")


async def test_answers_go_out_whole_while_the_body_waits_unread(launch: LaunchFn) -> None:
    # The body arrives with the head, so hypercorn has queued as much of it as it holds before
    # trioswap answers from the headers: that answer must still go out, and the connection end.
    broken = f"  broken:\n    cmd: {RESPONDER} --port ${{PORT}} --model-id b --fail-on-start"
    ts = await launch(config(broken, top=f"apiKeys: [{KEY}]\nmaxRequestBodyMB: 1"))
    key = f"x-api-key: {KEY}"
    cases = [
        (b"/v1/chat/completions", 3 * MB, 401, ()),
        (b"/models/unload", 3 * MB, 401, ("content-type: application/json",)),
        (b"/v1/messages", 3 * MB, 413, (key,)),
        (b"/upstream/nope/v1/audio/speech", MB - 1, 404, (key,)),
        # Answered only once the start failed: by then hypercorn holds all it will of the body.
        (b"/upstream/broken/v1/audio/speech", MB - 1, 502, (key,)),
    ]
    for path, size, status, extra in cases:
        with trio.fail_after(10):
            stream = await connect(ts)
            async with stream:
                request = head("POST", path, f"content-length: {size}", *extra) + b"x" * size
                answer = await send_until_answered(stream, request, len(request))
        assert answer.status == status, (path, answer)


async def test_a_control_error_waits_for_the_body_and_keeps_the_connection(
    launch: LaunchFn,
) -> None:
    # A client that sends its head and then (a moment later) its body, on a kept-alive
    # connection, gets the answer and can send its next request on the same connection.
    ts = await launch(config())
    body = json.dumps({"policy": "always"}).encode()
    request = (
        b"POST /api/model/nope/prompt-optimization HTTP/1.1\r\nhost: localhost\r\n"
        + f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
    )
    with trio.fail_after(10):
        stream = await connect(ts)
        async with stream:
            await stream.send_all(request)
            with trio.move_on_after(0.5):  # the client's pause: an early answer would come now
                early = await stream.receive_some(65536)
                raise AssertionError(f"answered before the body arrived: {early[:80]!r}")
            await stream.send_all(body + head("GET", b"/health"))
            answers = await read_all(stream)
    assert answers.startswith(b"HTTP/1.1 404"), answers[:200]
    assert b"\r\n\r\nOK" in answers, answers[-200:]


async def test_declared_body_over_the_limit_is_413_at_once(launch: LaunchFn) -> None:
    ts = await launch(config(top="maxRequestBodyMB: 1"))
    for path, family in ((b"/v1/chat/completions", "openai"), (b"/v1/messages", "anthropic")):
        # Only the head is sent: the answer must not wait for a body.
        answer = await raw_request(ts, head("POST", path, f"content-length: {2 * MB}"))
        assert answer.status == 413
        body = answer.json()
        if family == "openai":
            assert "maxRequestBodyMB" in body["error"]["message"]  # type: ignore[index]
        else:
            assert body["type"] == "error"
            assert body["error"]["type"] == "request_too_large"  # type: ignore[index]
    assert await ts.running() == {}


async def test_chunked_body_is_413_as_soon_as_it_passes_the_limit(launch: LaunchFn) -> None:
    ts = await launch(config(top="maxRequestBodyMB: 1"))
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    for path in (b"/v1/chat/completions", b"/upstream/m/v1/audio/speech"):
        with trio.fail_after(20):
            stream = await connect(ts)
            async with stream:
                await stream.send_all(head("POST", path, "transfer-encoding: chunked"))
                answer = await send_until_answered(stream, chunk, None)
        assert answer.status == 413, (path, answer)
        assert "maxRequestBodyMB" in answer.body.decode()


async def test_stalled_body_is_dropped_with_408(launch: LaunchFn) -> None:
    ts = await launch(config(top="requestBodyTimeout: 0.5"))
    for path, family in ((b"/v1/chat/completions", "openai"), (b"/v1/messages", "anthropic")):
        with trio.fail_after(10):
            stream = await connect(ts)
            async with stream:
                await stream.send_all(head("POST", path, "content-length: 100") + b'{"model"')
                answer = parse(await read_all(stream))  # returns only once the server closes
        assert answer.status == 408, answer
        assert "requestBodyTimeout" in answer.body.decode()
        if family == "anthropic":
            assert answer.json()["type"] == "error"


# -- 5. /upstream forwards the path it was given ----------------------------------------------


async def test_upstream_forwards_the_raw_path(launch: LaunchFn) -> None:
    ts = await launch(config())
    await started(ts)
    async with ts.client() as client:
        await client.delete("/upstream/m/debug/requests")
    target = b"/upstream/m/v1/a%3Fb%23c%2Fd%20e%C3%A9?x=1&y=%3F"
    answer = await raw_request(ts, head("GET", target))
    assert answer.status == 404  # the responder has no such route, and says so
    (seen,) = await upstream_requests(ts)
    assert seen["raw_path"] == "/v1/a%3Fb%23c%2Fd%20e%C3%A9"
    assert seen["query"] == "x=1&y=%3F"
    # The model part is matched percent-decoded.
    answer = await raw_request(ts, head("GET", b"/upstream/%6D/v1/models"))
    assert answer.status == 200
    assert answer.json()["data"][0]["id"] == "m"  # type: ignore[index]


async def test_upstream_control_characters_are_400(launch: LaunchFn) -> None:
    ts = await launch(config())
    await started(ts)
    for target in (b"/upstream/m/a%0d%0aforged%20line", b"/upstream/m/a%00", b"/upstream/m/%7F"):
        answer = await raw_request(ts, head("GET", target))
        assert answer.status == 400, (target, answer)
        assert "control character" in answer.json()["error"]["message"]  # type: ignore[index]
    async with ts.client() as client:
        logs = (await client.get("/logs")).text
    assert not any(line.startswith("forged") for line in logs.splitlines())


# -- 6. client strings are clipped before they reach logs and error bodies --------------------


async def test_giant_model_names_do_not_grow_memory(launch: LaunchFn) -> None:
    ts = await launch(config())
    name = "n" * (5 * MB)
    body = json.dumps({"model": name}).encode()
    async with ts.client() as client:
        # The control plane (/logs below) is built at its first request: not what is measured.
        await client.get("/logs")
        before = rss_mb(ts.process.pid)
        for _ in range(20):
            response = await client.post("/v1/chat/completions", content=body)
            assert response.status_code == 404
            message = response.json()["error"]["message"]
            assert len(message) < 1000
            assert "more characters" in message
        logs = (await client.get("/logs")).text
    assert len(logs) < MB
    assert rss_mb(ts.process.pid) - before < 30


# -- 7. the model from multipart, form and query ----------------------------------------------


async def test_model_from_browser_multipart_form_and_query(launch: LaunchFn) -> None:
    ts = await launch(config("    aliases: [mini]"))
    boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
    form = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="model"\r\n\r\n'
        "mini\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
        "RIFF....WAVE\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    async with ts.client() as client:
        response = await client.post(
            "/v1/audio/transcriptions",
            content=form,
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["received"]["fields"]["model"] == "mini"
        response = await client.post(
            "/v1/audio/transcriptions?model=m",
            content=b"RIFF\x00\x01\x02WAVE",
            headers={"content-type": "audio/wav"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["received"]["bytes"] == 11
        response = await client.post("/v1/audio/speech", data={"model": "mini", "voice": "x"})
        assert response.status_code == 200, response.text
        assert response.json()["received"]["fields"] == {"model": "mini", "voice": "x"}
        response = await client.post(
            "/v1/audio/speech?model=m",
            content=b"voice=x",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 200, response.text


# -- 10. no 500s with empty bodies; every unexpected error has a request id ---------------------


async def test_deeply_nested_json_is_a_400(launch: LaunchFn) -> None:
    ts = await launch(config())
    body = b'{"model": "m", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    async with ts.client() as client:
        response = await client.post("/v1/chat/completions", content=body)
    assert response.status_code == 400
    assert "nested" in response.json()["error"]["message"]


async def test_content_length_and_chunked_together_on_upstream(launch: LaunchFn) -> None:
    ts = await launch(config())
    await started(ts)
    answer = await raw_request(
        ts,
        head(
            "POST",
            b"/upstream/m/v1/audio/speech",
            "content-length: 5",
            "transfer-encoding: chunked",
        ),
        b"3\r\nabc\r\n0\r\n\r\n",
    )
    assert answer.status == 200, answer
    assert answer.json()["received"]["bytes"] == 3  # type: ignore[index]


async def test_non_ascii_upstream_path_is_forwarded_encoded(launch: LaunchFn) -> None:
    ts = await launch(config())
    await started(ts)
    answer = await raw_request(ts, head("GET", b"/upstream/m/caf%C3%A9/%E2%9C%93"))
    assert answer.status == 404  # the responder's own answer, not trioswap's
    assert answer.headers["x-responder-model"] == "m"


# -- 11. no body upstream when the client sent none -------------------------------------------


async def test_upstream_requests_without_a_body_stay_without_one(launch: LaunchFn) -> None:
    ts = await launch(config())
    await started(ts)
    async with ts.client() as client:
        await client.delete("/upstream/m/debug/requests")
    for method in ("GET", "HEAD", "DELETE", "OPTIONS"):
        await raw_request(ts, head(method, b"/upstream/m/v1/x"))
    requests = await upstream_requests(ts)
    assert [r["method"] for r in requests] == ["GET", "HEAD", "DELETE", "OPTIONS"]
    for request in requests:
        headers = request["headers"]
        assert isinstance(headers, dict)
        assert "transfer-encoding" not in headers, request
        assert "content-length" not in headers, request


# -- per-model timeouts -----------------------------------------------------------------------


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def model_pid(ts: Trioswap) -> int:
    pid = (await ts.running())["m"]["pid"]
    assert isinstance(pid, int)
    return pid


async def test_hung_model_server_answers_504_after_response_header_timeout(
    launch: LaunchFn,
) -> None:
    ts = await launch(config("    timeouts: {responseHeader: 1}"))
    await started(ts)
    with stopped(await model_pid(ts)):
        async with ts.client() as client:
            with trio.fail_after(10):
                response = await client.post("/v1/chat/completions", json=chat())
                assert response.status_code == 504
                message = response.json()["error"]["message"]
                assert "'m'" in message
                assert "timeouts.responseHeader" in message
                response = await client.post(
                    "/v1/messages", json={"model": "m", "max_tokens": 5, "messages": []}
                )
                assert response.status_code == 504
                assert response.json()["type"] == "error"


async def test_model_server_silent_mid_stream_ends_with_error_event(launch: LaunchFn) -> None:
    ts = await launch(config("    timeouts: {responseHeader: 1}", flags="--tokens-per-second 5"))
    await started(ts)
    pid = await model_pid(ts)
    text = ""
    with trio.fail_after(15):
        async with (
            ts.client() as client,
            client.stream("POST", "/v1/chat/completions", json=chat(stream=True)) as response,
        ):
            async for chunk in response.aiter_text():
                if not text:
                    os.kill(pid, signal.SIGSTOP)
                text += chunk
    os.kill(pid, signal.SIGCONT)
    last = [line for line in text.splitlines() if line.startswith("data: ")][-1]
    error = json.loads(last.removeprefix("data: "))["error"]
    assert "timeouts.responseHeader" in error["message"]


async def test_connect_timeout_names_the_key(launch: LaunchFn) -> None:
    # A listener whose accept queue is full: connecting to it hangs.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    port = blackhole.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        ts = await launch(
            f"""
            models:
              m:
                cmd: {RESPONDER.split()[0]} -c "import time; time.sleep(600)"
                proxy: http://127.0.0.1:{port}
                checkEndpoint: none
                timeouts: {{connect: 1}}
            """
        )
        async with ts.client() as client:
            with trio.fail_after(15):
                response = await client.post("/v1/chat/completions", json=chat())
        assert response.status_code == 504, response.text
        assert "timeouts.connect" in response.json()["error"]["message"]
    finally:
        for filler in fillers:
            filler.close()
        blackhole.close()


# -- 14. shutdown -----------------------------------------------------------------------------


async def stream_through_sigterm(ts: Trioswap, twice: bool = False) -> tuple[str, float]:
    """Start a stream, SIGTERM trioswap once it has begun (twice: again once trioswap said it
    is stopping); the whole text and how long trioswap took to exit after the signal."""
    text = ""
    sent_at = 0.0
    with trio.fail_after(30):
        async with (
            ts.client() as client,
            client.stream("POST", "/v1/chat/completions", json=chat(stream=True)) as response,
        ):
            async for chunk in response.aiter_text():
                if not text:
                    ts.process.send_signal(signal.SIGTERM)
                    if twice:
                        await ts.wait_for_output("received SIGTERM")
                        ts.process.send_signal(signal.SIGTERM)
                    sent_at = trio.current_time()
                text += chunk
        await ts.process.wait()
    return text, trio.current_time() - sent_at


async def test_sigterm_lets_a_stream_in_flight_finish(launch: LaunchFn) -> None:
    ts = await launch(config(flags="--tokens-per-second 10 --response-text 'a b c d e f g h'"))
    await started(ts)
    text, _ = await stream_through_sigterm(ts)
    assert "[DONE]" in text
    assert '"error"' not in text
    assert ts.process.returncode == 0


async def test_sigterm_stops_accepting_at_once(launch: LaunchFn) -> None:
    ts = await launch(config(flags="--tokens-per-second 4 --response-text 'a b c d e f g h'"))
    await started(ts)
    url = httpx.URL(ts.url)
    async with ts.client() as client, trio.open_nursery() as nursery:

        async def long_stream() -> None:
            await client.post("/v1/chat/completions", json=chat(stream=True))

        nursery.start_soon(long_stream)
        await wait_until(lambda: _in_flight(ts))
        ts.process.send_signal(signal.SIGTERM)

        async def refused() -> bool:
            try:
                stream = await trio.open_tcp_stream(url.host, url.port)
            except OSError:
                return True
            await stream.aclose()
            return False

        await wait_until(refused, timeout=5)
        assert ts.process.returncode is None  # still finishing the stream


async def _in_flight(ts: Trioswap) -> bool:
    running = await ts.running()
    return "m" in running and running["m"]["in_flight"] == 1


async def test_shutdown_timeout_ends_streams_with_an_error_event(launch: LaunchFn) -> None:
    ts = await launch(config(top="shutdownTimeout: 0.5", flags=SLOW_40_WORDS))
    await started(ts)
    text, took = await stream_through_sigterm(ts)
    last = [line for line in text.splitlines() if line.startswith("data: ")][-1]
    error = json.loads(last.removeprefix("data: "))["error"]
    assert "shutting down" in error["message"]
    assert took < 5
    assert ts.process.returncode == 0


async def test_shutdown_timeout_answers_a_waiting_request_503(launch: LaunchFn) -> None:
    ts = await launch(config(top="shutdownTimeout: 0.5", flags=SLOW_40_WORDS))
    await started(ts)
    async with ts.client() as client, trio.open_nursery() as nursery:
        answers: list[httpx.Response] = []

        async def slow() -> None:
            answers.append(await client.post("/v1/chat/completions", json=chat()))

        nursery.start_soon(slow)
        await wait_until(lambda: _in_flight(ts))
        ts.process.send_signal(signal.SIGTERM)
    (response,) = answers
    assert response.status_code == 503
    assert "shutting down" in response.json()["error"]["message"]
    with trio.fail_after(10):
        await ts.process.wait()
    assert ts.process.returncode == 0


async def test_second_sigterm_cuts_at_once(launch: LaunchFn) -> None:
    ts = await launch(config(flags=SLOW_40_WORDS))
    await started(ts)
    text, took = await stream_through_sigterm(ts, twice=True)
    assert "shutting down" in text
    assert took < 5  # not the default shutdownTimeout of 10 s
    assert ts.process.returncode == 0
