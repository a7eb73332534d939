"""Routes: llama-swap's inference and control paths, forms streamed with their model renamed,
and JSON answers for paths and methods trioswap does not serve."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

import httpx
import pytest
import trio

from tests.conftest import (
    RESPONDER,
    LaunchFn,
    Trioswap,
    chat,
    pair_config,
    random_start_port,
    wait_until,
)

MB = 1024 * 1024
BOUNDARY = "routes-test-boundary-7MA4YWxkTrZu0gW"
FORM_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def config(model_extra: str = "", top: str = "") -> str:
    return f"""
startPort: {random_start_port()}
{top}
models:
  m:
    cmd: {RESPONDER} --port ${{PORT}} --model-id m
    aliases: [mini]
{model_extra}
"""


async def upstream_requests(ts: Trioswap) -> list[dict[str, str]]:
    async with ts.client() as client:
        response = await client.get("/upstream/m/debug/requests")
    response.raise_for_status()
    return [r for r in response.json() if r["path"] != "/debug/requests"]


async def nothing_running(ts: Trioswap) -> bool:
    return await ts.running() == {}


# -- llama-swap's inference paths ------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/rerank",
        "/v1/reranking",
        "/rerank",
        "/reranking",
        "/v1/audio/voices",
        "/sdapi/v1/txt2img",
        "/sdapi/v1/img2img",
    ],
)
async def test_post_routes_reach_the_model_server_with_path_and_query(
    launch: LaunchFn, path: str
) -> None:
    ts = await launch(config())
    async with ts.client() as client:
        response = await client.post(f"{path}?a=1&b=%2F", json={"model": "mini", "x": 1})
    # The responder serves none of these: it says so, having recorded the request.
    assert response.status_code == 404
    assert response.headers["x-responder-model"] == "m"
    (seen,) = await upstream_requests(ts)
    assert (seen["method"], seen["raw_path"], seen["query"]) == ("POST", path, "a=1&b=%2F")
    assert json.loads(seen["body"]) == {"model": "mini", "x": 1}


@pytest.mark.parametrize(
    ("path", "upstream_path"),
    [
        ("/v/chat/completions", "/chat/completions"),
        ("/v/completions", "/completions"),
        ("/v/embeddings", "/embeddings"),
        ("/v/rerank", "/rerank"),
        ("/v/reranking", "/reranking"),
        ("/audioapi/v1/tasks/run", "/v1/tasks/run"),
    ],
)
async def test_prefixed_routes_reach_the_model_server_without_their_prefix(
    launch: LaunchFn, path: str, upstream_path: str
) -> None:
    ts = await launch(config())
    async with ts.client() as client:
        response = await client.post(f"{path}?a=1", json={"model": "mini"})
    assert response.headers["x-responder-model"] == "m"
    (seen,) = await upstream_requests(ts)
    assert (seen["raw_path"], seen["query"]) == (upstream_path, "a=1")
    assert json.loads(seen["body"]) == {"model": "mini"}


@pytest.mark.parametrize("path", ["/props", "/v1/audio/voices", "/sdapi/v1/loras"])
async def test_get_routes_start_the_model_named_in_the_query(launch: LaunchFn, path: str) -> None:
    ts = await launch(config())
    async with ts.client() as client:
        response = await client.get(f"{path}?model=mini&lang=en%20GB")
        assert response.headers["x-responder-model"] == "m"
        assert await ts.states() == {"m": "ready"}
        (seen,) = await upstream_requests(ts)
        assert (seen["method"], seen["raw_path"]) == ("GET", path)
        assert seen["query"] == "model=mini&lang=en%20GB"
        assert seen["body"] == ""


async def test_props_answers_with_the_model_servers_props(launch: LaunchFn) -> None:
    ts = await launch(config())
    async with ts.client() as client:
        response = await client.get("/props", params={"model": "m"})
    assert response.status_code == 200
    assert response.json()["model_path"] == "m.gguf"


async def test_get_routes_without_a_known_model(launch: LaunchFn) -> None:
    ts = await launch(config())
    async with ts.client() as client:
        response = await client.get("/props?model=nope")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"
        response = await client.get("/sdapi/v1/loras")
        assert response.status_code == 400
        assert "?model=" in response.json()["error"]["message"]
    assert await ts.running() == {}


# -- unloading: llama-swap's paths beside trioswap's -------------------------------------------


async def test_api_unload_paths_stop_models(launch: LaunchFn) -> None:
    ts = await launch(pair_config())
    async with ts.client() as client:
        assert (await client.post("/v1/chat/completions", json=chat("a"))).status_code == 200
        response = await client.post("/api/models/unload/alpha")
        assert response.json() == {"status": "ok", "stopped": ["a"], "forced": []}
        assert await ts.running() == {}
        assert (await client.post("/v1/chat/completions", json=chat("b"))).status_code == 200
        response = await client.post("/api/models/unload")
        assert response.json() == {"status": "ok", "stopped": ["b"], "forced": []}
        assert await ts.running() == {}
        response = await client.post("/api/models/unload/nope")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"


async def test_api_unload_with_force_cuts_a_request_in_flight(launch: LaunchFn) -> None:
    ts = await launch(pair_config("--tokens-per-second 2 --response-text '" + "w " * 40 + "'"))
    lines: list[str] = []
    async with ts.client() as client, trio.open_nursery() as nursery:

        async def stream() -> None:
            body = chat("a", stream=True)
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                async for line in response.aiter_lines():
                    lines.append(line)

        nursery.start_soon(stream)
        await wait_until(lambda: any(line.startswith("data: ") for line in lines))
        response = await client.post("/api/models/unload/a?force=true")
        assert response.json() == {"status": "ok", "stopped": ["a"], "forced": ["a"]}
    assert "[DONE]" not in "\n".join(lines)


async def test_legacy_get_unload_stops_every_model(launch: LaunchFn) -> None:
    ts = await launch(pair_config())
    async with ts.client() as client:
        assert (await client.post("/v1/chat/completions", json=chat("a"))).status_code == 200
        response = await client.get("/unload")
        assert (response.status_code, response.text) == (200, "OK")
        assert await ts.running() == {}


async def test_a_cross_site_link_to_get_unload_unloads_nothing(launch: LaunchFn) -> None:
    ts = await launch(pair_config())
    navigation = {
        "sec-fetch-site": "cross-site",
        "sec-fetch-mode": "navigate",
        "sec-fetch-dest": "document",
    }
    async with ts.client() as client:
        assert (await client.post("/v1/chat/completions", json=chat("a"))).status_code == 200
        response = await client.get("/unload", headers=navigation)
        assert response.status_code == 403
        assert "POST /models/unload" in response.json()["error"]["message"]
        assert await ts.states() == {"a": "ready"}
        # Typed into the address bar, it is the user's own request.
        response = await client.get("/unload", headers=navigation | {"sec-fetch-site": "none"})
        assert response.status_code == 200
        assert await ts.running() == {}


# -- forms stream through, their model renamed -------------------------------------------------


def form_part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"\r\nContent-Type: application/octet-stream'
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"


def form_end() -> bytes:
    return f"--{BOUNDARY}--\r\n".encode()


def form_fields(body: bytes, boundary: str = BOUNDARY) -> dict[str, bytes]:
    """The parts of a form, by name."""
    fields = {}
    for part in body.split(f"--{boundary}".encode())[1:-1]:
        head, _, value = part.partition(b"\r\n\r\n")
        match = re.search(rb'name="([^"]+)"', head)
        assert match is not None
        fields[match[1].decode()] = value.removesuffix(b"\r\n")
    return fields


async def test_an_upload_arrives_whole_with_its_model_renamed(launch: LaunchFn) -> None:
    ts = await launch(config("    useModelName: served-name"))
    # Printable, so that the responder's record of the body (text) is the body.
    data = base64.b64encode(os.urandom(9 * MB))
    async with ts.client() as client:
        response = await client.post(
            "/v1/audio/transcriptions?x=1",
            data={"model": "mini", "language": "en"},
            files={"file": ("a.wav", data, "audio/wav")},
        )
    assert response.status_code == 200, response.text
    (seen,) = await upstream_requests(ts)
    assert seen["query"] == "x=1"
    body = seen["body"].encode()
    # httpx declared the form's length: trioswap passes on the renamed form's length.
    assert seen["headers"]["content-length"] == str(len(body))
    boundary = seen["headers"]["content-type"].split("boundary=")[1]
    fields = form_fields(body, boundary)
    assert fields["model"] == b"served-name"
    assert fields["language"] == b"en"
    assert hashlib.sha256(fields["file"]).hexdigest() == hashlib.sha256(data).hexdigest()


async def test_a_200mb_upload_streams_through_without_being_held(launch: LaunchFn) -> None:
    ts = await launch(config("    useModelName: served-name"))
    async with ts.client() as client:
        assert (await client.get("/props?model=m")).status_code == 200  # started
        chunk = b"a" * MB
        head = form_part("model", b"mini") + form_part("file", b"", "big.bin")[:-2]

        async def upload() -> AsyncIterator[bytes]:
            yield head
            for _ in range(200):
                yield chunk
            yield b"\r\n" + form_end()

        pid = ts.process.pid
        rss_before = memory_kb(pid, "VmRSS")
        # Resets VmHWM, the peak resident set size, to the current one.
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        response = await client.post(
            "/v1/audio/transcriptions",
            content=upload(),
            headers={"content-type": FORM_TYPE},
            timeout=120,
        )
        peak_rise_mb = (memory_kb(pid, "VmHWM") - rss_before) / 1024
    assert response.status_code == 200, response.text
    received = response.json()["received"]
    assert received["fields"]["model"] == "served-name"
    assert received["fields"]["file"] == {"filename": "big.bin", "size": 200 * MB}
    assert peak_rise_mb < 50, f"trioswap's peak RSS rose {peak_rise_mb:.0f} MB"


def memory_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field}")


async def test_a_form_reaches_a_peer_with_the_peers_model_id(launch: LaunchFn) -> None:
    peer = await launch(config())
    front = await launch(f"peers:\n  office:\n    proxy: {peer.url}\n    models: [m]\n")
    body = form_part("file", b"RIFF....WAVE", "a.wav") + form_part("model", b"office/m")
    async with front.client() as client:
        response = await client.post(
            "/v1/audio/transcriptions",
            content=body + form_end(),
            headers={"content-type": FORM_TYPE},
        )
    assert response.status_code == 200, response.text
    assert response.json()["received"]["fields"]["model"] == "m"


async def test_a_model_field_after_a_small_file_is_found_and_renamed(launch: LaunchFn) -> None:
    ts = await launch(config("    useModelName: served-name"))
    data = b"\x00\r\n--routes-test\r\n" * 1000
    body = form_part("file", data, "a.bin") + form_part("model", b"mini") + form_end()
    async with ts.client() as client:
        response = await client.post(
            "/v1/audio/transcriptions", content=body, headers={"content-type": FORM_TYPE}
        )
    assert response.status_code == 200, response.text
    (seen,) = await upstream_requests(ts)
    fields = form_fields(seen["body"].encode())
    assert fields == {"file": data, "model": b"served-name"}
    assert seen["headers"]["content-length"] == str(len(body) - len("mini") + len("served-name"))


async def test_a_model_field_after_a_large_file_needs_the_query(launch: LaunchFn) -> None:
    ts = await launch(config("    useModelName: served-name"))
    body = form_part("file", b"z" * 9 * MB, "a.bin") + form_part("model", b"mini") + form_end()

    async def whole() -> AsyncGenerator[bytes]:
        yield body

    # Answered before all of the body is read: a raw socket, which takes an early answer.
    answer = await raw_post(ts, "/v1/images/edits", [f"content-length: {len(body)}"], whole())
    assert answer.status == 400
    message = answer.json()["error"]["message"]
    assert "first 8 MB" in message and "?model=" in message
    assert await ts.running() == {}
    async with ts.client() as client:
        # Named in the query, the model is found there and the form goes on as it was sent.
        response = await client.post(
            "/v1/images/edits?model=mini", content=body, headers={"content-type": FORM_TYPE}
        )
        assert response.status_code == 404  # the responder has no such route
    (seen,) = await upstream_requests(ts)
    assert seen["headers"]["content-length"] == str(len(body))
    assert form_fields(seen["body"].encode())["model"] == b"mini"


async def test_a_form_over_the_body_limit_is_413_while_it_streams(launch: LaunchFn) -> None:
    ts = await launch(config(top="maxRequestBodyMB: 1"))
    head = form_part("model", b"mini") + form_part("file", b"", "a.bin")[:-2]

    async def endless() -> AsyncIterator[bytes]:
        yield head
        while True:
            yield b"x" * 65536

    answer = await raw_post(ts, "/v1/audio/transcriptions", [], endless())
    assert answer.status == 413
    assert "maxRequestBodyMB" in answer.json()["error"]["message"]
    # Declared too large, it is refused before the model starts.
    declared = [f"content-length: {2 * MB}"]
    answer = await raw_post(ts, "/v1/audio/transcriptions", declared, endless())
    assert answer.status == 413


async def test_a_form_that_stalls_is_408(launch: LaunchFn) -> None:
    ts = await launch(config(top="requestBodyTimeout: 0.5"))
    head = form_part("model", b"mini") + form_part("file", b"", "a.bin")[:-2]

    async def stalls() -> AsyncIterator[bytes]:
        yield head + b"some of the file"
        await trio.sleep_forever()

    answer = await raw_post(ts, "/v1/audio/transcriptions", ["content-length: 100000"], stalls())
    assert answer.status == 408
    assert "requestBodyTimeout" in answer.json()["error"]["message"]


class Answer:
    def __init__(self, data: bytes) -> None:
        head, _, self.body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }

    def json(self) -> dict[str, dict[str, str]]:
        assert "content-length" in self.headers  # errors come whole
        return json.loads(self.body)  # type: ignore[no-any-return]


async def raw_post(
    ts: Trioswap, path: str, headers: list[str], body: AsyncGenerator[bytes]
) -> Answer:
    """POST `body` (chunked unless a Content-Length is among `headers`) over a raw socket until
    the answer comes, then read it to its end (the server closes the connection)."""
    url = httpx.URL(ts.url)
    chunked = not any(h.startswith("content-length:") for h in headers)
    lines = [
        f"POST {path} HTTP/1.1",
        "host: localhost",
        "connection: close",
        f"content-type: {FORM_TYPE}",
        *headers,
        *(["transfer-encoding: chunked"] if chunked else []),
    ]
    data = b""
    with trio.fail_after(30):
        stream = await trio.open_tcp_stream(url.host, url.port)
        async with stream, trio.open_nursery() as nursery:

            async def send() -> None:
                try:
                    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
                    async with aclosing(body) as chunks:
                        async for chunk in chunks:
                            framed = b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk
                            await stream.send_all(framed)
                except trio.BrokenResourceError:
                    pass

            nursery.start_soon(send)
            try:
                while chunk := await stream.receive_some(65536):
                    data += chunk
            except trio.BrokenResourceError:
                pass
            nursery.cancel_scope.cancel()
    return Answer(data)


# -- what trioswap does not serve, answered in JSON --------------------------------------------


async def test_unknown_paths_are_json_404s_naming_the_path(launch: LaunchFn) -> None:
    ts = await launch(config())
    async with ts.client() as client:
        for method, path in (("GET", "/v1/nope"), ("POST", "/v2/chat"), ("GET", "/api/x")):
            response = await client.request(method, path, json={"model": "m"})
            assert response.status_code == 404, path
            body = response.json()
            assert body["error"] == {
                "message": f"route not found: {path}",
                "type": "invalid_request_error",
                "code": 404,
            }
            assert body["request_id"] == response.headers["x-request-id"]
        response = await client.post("/v1/messages/batches", json={"model": "m"})
        assert response.status_code == 404
        body = response.json()
        assert body["type"] == "error"
        assert body["error"] == {
            "type": "not_found_error",
            "message": "route not found: /v1/messages/batches",
        }
        response = await client.get("/v1/" + "x" * 5000)
        assert response.status_code == 404
        assert "more characters" in response.json()["error"]["message"]
        # The web UI stays a page.
        response = await client.get("/ui/")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
    assert await ts.running() == {}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/chat/completions", "POST"),
        ("PUT", "/v1/audio/voices", "GET, POST"),
        ("POST", "/props", "GET"),
        ("DELETE", "/v1/models", "GET, HEAD, OPTIONS"),
        ("GET", "/models/unload", "OPTIONS, POST"),
        ("GET", "/api/models/unload/m", "OPTIONS, POST"),
        ("POST", "/unload", "GET, HEAD, OPTIONS"),
    ],
)
async def test_a_wrong_method_is_a_json_405_with_allow(
    launch: LaunchFn, method: str, path: str, allow: str
) -> None:
    ts = await launch(config())
    async with ts.client() as client:
        response = await client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json()["error"]["message"] == f"{method} is not allowed on {path}"
    assert response.json()["error"]["code"] == 405
    assert await ts.running() == {}


async def test_a_wrong_method_on_messages_is_an_anthropic_405(launch: LaunchFn) -> None:
    ts = await launch(config())
    async with ts.client() as client:
        response = await client.get("/v1/messages")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["type"] == "error"
