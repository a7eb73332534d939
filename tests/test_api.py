"""The HTTP surface: request parsing, filters, auth, streaming, logs and passthrough."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import httpx
import trio

from tests.conftest import (
    RESPONDER,
    LaunchFn,
    Trioswap,
    chat,
    random_start_port,
    read_stream_until,
    wait_until,
)


def config(model_extra: str = "", top: str = "", flags: str = "") -> str:
    return f"""
startPort: {random_start_port()}
{top}
models:
  m:
    cmd: {RESPONDER} --port ${{PORT}} --model-id m {flags}
    aliases: [mini]
{model_extra}
"""


async def upstream_requests(ts: Trioswap, model: str = "m") -> list[dict[str, object]]:
    async with ts.client() as client:
        response = await client.get(f"/upstream/{model}/debug/requests")
    response.raise_for_status()
    return [r for r in response.json() if r["path"] != "/debug/requests"]


async def test_unknown_model_is_404_openai_error(launch: LaunchFn) -> None:
    ts = await launch(config())
    async with ts.client() as client:
        response = await client.post("/v1/chat/completions", json={"model": "nope"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["type"] == "invalid_request_error"
    assert "'nope'" in error["message"]


async def test_unknown_model_on_anthropic_route_is_anthropic_error(launch: LaunchFn) -> None:
    ts = await launch(config())
    async with ts.client() as client:
        response = await client.post("/v1/messages", json={"model": "nope", "max_tokens": 5})
    assert response.status_code == 404
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"


async def test_malformed_json_is_400(launch: LaunchFn) -> None:
    ts = await launch(config())
    async with ts.client() as client:
        response = await client.post(
            "/v1/chat/completions",
            content=b'{"model": "m", ',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400
        assert "not valid JSON" in response.json()["error"]["message"]
        response = await client.post("/v1/chat/completions", content=b"[1, 2]")
        assert response.status_code == 400
        response = await client.post("/v1/chat/completions", json={"messages": []})
        assert response.status_code == 400
        assert "names no model" in response.json()["error"]["message"]
        response = await client.post("/v1/chat/completions", json={"model": 5})
        assert response.status_code == 400
    assert await ts.running() == {}


async def test_json_without_content_type_and_model_from_query(launch: LaunchFn) -> None:
    ts = await launch(config())
    async with ts.client() as client:
        response = await client.post(
            "/v1/chat/completions", content=json.dumps({"model": "mini", "messages": []}).encode()
        )
        assert response.status_code == 200
        response = await client.post("/v1/audio/speech?model=m", content=b"")
        assert response.status_code == 200


async def test_multipart_model_field(launch: LaunchFn) -> None:
    ts = await launch(config())
    async with ts.client() as client:
        response = await client.post(
            "/v1/audio/transcriptions",
            data={"model": "mini", "language": "en"},
            files={"file": ("a.wav", b"RIFF....WAVE", "audio/wav")},
        )
    assert response.status_code == 200
    received = response.json()["received"]
    assert received["fields"]["model"] == "mini"
    assert received["fields"]["language"] == "en"


async def test_filters_and_use_model_name_keep_every_other_field(launch: LaunchFn) -> None:
    extra = """    useModelName: upstream-name
    filters:
      stripParams: "temperature, top_k"
      setParams:
        top_p: 0.5
        chat_template_kwargs: {enable_thinking: false}
"""
    ts = await launch(config(extra))
    sent = {
        "model": "mini",
        "messages": [{"role": "user", "content": "hi", "name": "x"}],
        "temperature": 0.7,
        "top_k": 40,
        "top_p": 0.9,
        "seed": 42,
        "response_format": {"type": "json_object"},
        "unicode": "héllo ✓",
    }
    async with ts.client() as client:
        response = await client.post("/v1/chat/completions", json=sent)
    assert response.status_code == 200
    (request,) = [r for r in await upstream_requests(ts) if r["path"] == "/v1/chat/completions"]
    body = json.loads(str(request["body"]))
    assert body == {
        "model": "upstream-name",
        "messages": [{"role": "user", "content": "hi", "name": "x"}],
        "top_p": 0.5,
        "seed": 42,
        "response_format": {"type": "json_object"},
        "unicode": "héllo ✓",
        "chat_template_kwargs": {"enable_thinking": False},
    }


async def test_untouched_body_is_forwarded_byte_for_byte(launch: LaunchFn) -> None:
    ts = await launch(config())
    raw = b'{ "model" : "m",   "messages": [],  "x": 1.50 }'
    async with ts.client() as client:
        response = await client.post("/v1/chat/completions", content=raw)
    assert response.status_code == 200
    (request,) = [r for r in await upstream_requests(ts) if r["path"] == "/v1/chat/completions"]
    assert request["body"] == raw.decode()
    headers = request["headers"]
    assert isinstance(headers, dict)
    assert headers["content-length"] == str(len(raw))


async def test_api_keys_off_lets_everything_through(launch: LaunchFn) -> None:
    ts = await launch(config())
    async with ts.client() as client:
        assert (await client.get("/v1/models")).status_code == 200
        assert (await client.post("/v1/chat/completions", json={"model": "m"})).status_code == 200


async def test_api_keys_on(launch: LaunchFn) -> None:
    ts = await launch(config(top="apiKeys: [sk-one, sk-two]"))
    async with ts.client() as client:
        response = await client.post("/v1/chat/completions", json={"model": "m"})
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Basic")
        assert response.json()["error"]["type"] == "authentication_error"
        wrong = {"authorization": "Bearer sk-three"}
        assert (
            await client.post("/v1/chat/completions", json={"model": "m"}, headers=wrong)
        ).status_code == 401
        assert (await client.get("/running")).status_code == 401
        assert (await client.get("/v1/models")).status_code == 401
        assert (await client.get("/health")).status_code == 200
        basic = "Basic " + base64.b64encode(b"anyone:sk-two").decode()
        for headers in (
            {"authorization": "Bearer sk-one"},
            {"x-api-key": "sk-two"},
            {"authorization": basic},
        ):
            response = await client.post(
                "/v1/chat/completions", json={"model": "m"}, headers=headers
            )
            assert response.status_code == 200, headers
            assert (await client.get("/running", headers=headers)).status_code == 200
        response = await client.post("/v1/messages", json={"model": "m", "max_tokens": 5})
        assert response.status_code == 401
        assert response.json()["type"] == "error"
        requests = (
            await client.get("/upstream/m/debug/requests", headers={"x-api-key": "sk-one"})
        ).json()
    # trioswap's own keys are not passed on to the model server.
    for request in requests:
        assert "authorization" not in request["headers"]
        assert "x-api-key" not in request["headers"]


async def test_stream_arrives_before_upstream_finishes(launch: LaunchFn) -> None:
    # 6 words at 4 words/s: the last chunk comes at least a second after the first.
    ts = await launch(
        config(flags="--tokens-per-second 4 --response-text 'one two three four five six'")
    )
    async with ts.client() as client:
        await client.post("/v1/chat/completions", json={"model": "m"})  # start it first
        arrivals: list[tuple[float, str]] = []
        async with client.stream(
            "POST", "/v1/chat/completions", json={"model": "m", "stream": True}
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-accel-buffering"] == "no"
            assert response.headers["cache-control"] == "no-cache"
            async for chunk in response.aiter_raw():
                arrivals.append((trio.current_time(), chunk.decode()))
    first_at = next(t for t, text in arrivals if '"one"' in text)
    done_at = next(t for t, text in arrivals if "[DONE]" in text)
    assert done_at - first_at > 0.9
    assert len(arrivals) >= 6


async def test_upstream_passthrough(launch: LaunchFn) -> None:
    ts = await launch(config())
    async with ts.client() as client:
        response = await client.get("/upstream/mini/props")
        assert response.status_code == 200
        assert response.json()["default_generation_settings"]["n_ctx"] > 0
        response = await client.get("/upstream/m/v1/models", params={"x": "1"})
        assert response.json()["data"][0]["id"] == "m"
        response = await client.get("/upstream/nope/props")
        assert response.status_code == 404
    requests = await upstream_requests(ts)
    assert {"path": "/v1/models", "query": "x=1"}.items() <= requests[-1].items()


async def test_health_and_logs(launch: LaunchFn) -> None:
    ts = await launch(config())
    async with ts.client() as client:
        health = await client.get("/health")
        assert (health.status_code, health.text) == (200, "OK")
        await client.post("/v1/chat/completions", json={"model": "m"})
        logs = (await client.get("/logs")).text
        assert "model m: starting -> ready" in logs
        assert "[m] responder m listening" in logs

        text = await read_stream_until(ts.url, "/logs/stream/m", lambda t: "listening" in t)
        assert text.startswith("HTTP/1.1 200")
        assert "responder m listening" in text
        for path in ("/logs/stream/proxy", "/logs/stream/upstream", "/logs/stream"):
            text = await read_stream_until(
                ts.url, path, lambda t: "starting -> ready" in t or "[m]" in t
            )
            assert text.startswith("HTTP/1.1 200")
        assert (await client.get("/logs/stream/nope")).status_code == 404


async def test_live_log_stream_without_history(launch: LaunchFn) -> None:
    ts = await launch(config())
    async with ts.client() as client:
        await client.post("/v1/chat/completions", json={"model": "m"})
        text = ""
        async with trio.open_nursery() as nursery:

            async def follow() -> None:
                nonlocal text
                text = await read_stream_until(
                    ts.url, "/logs/stream/upstream?no-history", lambda t: "/v1/models" in t
                )

            nursery.start_soon(follow)
            # Repeat until the follower, subscribed at some point, sees a fresh line.
            while not text:
                await client.get("/upstream/m/v1/models")
                await trio.sleep(0.05)
    assert "[m] GET /v1/models" in text
    assert "listening" not in text  # history was skipped


async def test_wrong_method_on_inference_route(launch: LaunchFn) -> None:
    ts = await launch(config())
    async with httpx.AsyncClient(base_url=ts.url) as client:
        response = await client.get("/v1/chat/completions")
    assert response.status_code == 405
    assert "error" in response.json()


async def test_send_loading_state_streams_progress_then_the_answer(launch: LaunchFn) -> None:
    ts = await launch(config("    sendLoadingState: true", flags="--startup-delay 0.3"))
    async with ts.client() as client:
        response = await client.post(
            "/v1/chat/completions", json={"model": "m", "stream": True, "messages": []}
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in response.text.splitlines() if line]
        first = json.loads(events[0])
        assert first["choices"][0]["delta"]["reasoning_content"].startswith("Loading model m")
        contents = [
            json.loads(e)["choices"][0]["delta"].get("content", "")
            for e in events[1:-1]
            if json.loads(e)["choices"]
        ]
        assert "".join(contents).startswith("Hello from m")
        assert events[-1] == "[DONE]"
        # Once loaded, nothing extra is sent.
        again = await client.post(
            "/v1/chat/completions", json={"model": "m", "stream": True, "messages": []}
        )
        assert "reasoning_content" not in again.text


async def test_send_loading_state_failed_start_ends_with_error_event(launch: LaunchFn) -> None:
    ts = await launch(config("    sendLoadingState: true", flags="--fail-on-start"))
    async with ts.client() as client:
        response = await client.post(
            "/v1/chat/completions", json={"model": "m", "stream": True, "messages": []}
        )
    assert response.status_code == 200
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line]
    assert "Loading model" in events[0]
    error = json.loads(events[-1])["error"]
    assert "failed to start" in error["message"]


async def test_connection_close_is_honoured_on_every_route(launch: LaunchFn) -> None:
    # A client that reads until the server closes (HTTP/1.0 style) must see the close.
    ts = await launch(config())
    url = httpx.URL(ts.url)
    cases = [
        ("POST", "/v1/chat/completions", b'{"model": "m"}'),
        ("POST", "/v1/chat/completions", b'{"model": "m", "stream": true}'),
        ("POST", "/v1/chat/completions", b'{"model": "nope"}'),
        ("GET", "/running", b""),
        ("GET", "/v1/models", b""),
    ]
    for method, path, body in cases:
        stream = await trio.open_tcp_stream(url.host, url.port)
        async with stream:
            await stream.send_all(
                f"{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n"
                f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            received = b""
            with trio.fail_after(10):
                while chunk := await stream.receive_some(65536):
                    received += chunk
        assert received.startswith(b"HTTP/1.1 "), (path, received[:100])


async def test_the_root_is_the_web_ui(launch: LaunchFn) -> None:
    ts = await launch(config())
    async with ts.client() as client:
        response = await client.get("/")
        page = await client.get("/ui/")
    assert response.status_code == 302 and response.headers["location"] == "/ui/"
    assert page.headers["content-type"].startswith("text/html")
    assert 'data-testid="models-table"' in page.text


async def test_running_says_uptime_and_ttl_left(launch: LaunchFn) -> None:
    ts = await launch(config("    ttl: 600"))
    async with ts.client() as client:
        assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200
        page = await client.get("/ui/fragments/models")
    entry = (await ts.running())["m"]
    assert isinstance(entry["uptime"], float) and 0 <= entry["uptime"] < 600
    assert isinstance(entry["ttl_left"], float) and 0 < entry["ttl_left"] <= 600
    assert " left of 10m" in page.text


async def test_requests_over_the_concurrency_limit_wait_their_turn(launch: LaunchFn) -> None:
    ts = await launch(config("    concurrencyLimit: 1", flags="--tokens-per-second 20"))
    statuses: list[int] = []
    async with ts.client() as client, trio.open_nursery() as nursery:

        async def ask() -> None:
            response = await client.post("/v1/chat/completions", json={"model": "m"})
            statuses.append(response.status_code)

        async def waiting(count: int) -> bool:
            running = await ts.running()
            return "m" in running and running["m"]["waiting"] == count

        nursery.start_soon(ask)
        await wait_until(lambda: _in_flight(ts, 1))
        nursery.start_soon(ask)
        # The second request queues (llama-swap would answer 429); /running shows it waiting.
        await wait_until(lambda: waiting(1))
        assert (await ts.running())["m"]["in_flight"] == 1
    assert statuses == [200, 200]


async def _in_flight(ts: Trioswap, count: int) -> bool:
    running = await ts.running()
    return "m" in running and running["m"]["in_flight"] == count


async def test_upstream_route_streams_request_bodies(launch: LaunchFn) -> None:
    ts = await launch(config())
    payload = bytes(range(256)) * 8192  # 2 MiB, binary
    async with ts.client() as client:
        response = await client.post(
            "/upstream/m/v1/audio/speech",
            content=payload,
            headers={"content-type": "application/octet-stream"},
        )
        assert response.status_code == 200
        assert response.json()["received"]["bytes"] == len(payload)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(payload), 100_000):
                yield payload[i : i + 100_000]

        # No content-length from the client: the body is forwarded chunked, as it came.
        response = await client.post(
            "/upstream/m/v1/audio/speech",
            content=chunks(),
            headers={"content-type": "application/octet-stream"},
        )
        assert response.status_code == 200
        assert response.json()["received"]["bytes"] == len(payload)
        # A GET without a body stays without one.
        assert (await client.get("/upstream/m/health")).status_code == 200
    requests = await upstream_requests(ts)
    speech = [r for r in requests if r["path"] == "/v1/audio/speech"]
    headers = [r["headers"] for r in speech]
    assert isinstance(headers[0], dict) and headers[0]["content-length"] == str(len(payload))
    assert isinstance(headers[1], dict) and headers[1]["transfer-encoding"] == "chunked"
