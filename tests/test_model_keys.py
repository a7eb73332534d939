"""Model keys that change how requests are handled: `capabilities` and `peers` in /v1/models,
`filters.setParamsByID`, `upstream.ignorePaths` and `compat.ignoreWebsockets`."""

from __future__ import annotations

import json

import httpx
import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    open_websocket_url,
    wrap_client_stream,
)

from tests.conftest import RESPONDER, LaunchFn, Trioswap, chat, random_start_port, wait_until


def models_config(models: str, top: str = "") -> str:
    return f"""
startPort: {random_start_port()}
{top}
models:
{models}
"""


async def listing(ts: Trioswap) -> list[dict[str, object]]:
    async with ts.client() as client:
        response = await client.get("/v1/models")
    response.raise_for_status()
    data: list[dict[str, object]] = response.json()["data"]
    return data


def common(entry_id: str, created: object) -> dict[str, object]:
    return {"id": entry_id, "object": "model", "created": created, "owned_by": "trioswap"}


async def test_models_list_shows_capabilities_as_llama_swap_does(launch: LaunchFn) -> None:
    ts = await launch(
        models_config(f"""
  vision:
    cmd: {RESPONDER} --port ${{PORT}} --model-id vision
    name: " Vision "
    description: sees things
    metadata: {{architecture: mine, note: kept}}
    capabilities:
      in: [text, image]
      out: [text]
      tools: true
      context: 8192
  speaker:
    cmd: {RESPONDER} --port ${{PORT}} --model-id speaker
    capabilities: {{in: [text], out: [audio], reranker: true}}
  plain:
    cmd: {RESPONDER} --port ${{PORT}} --model-id plain
    metadata: {{architecture: mine}}
  hidden:
    cmd: {RESPONDER} --port ${{PORT}} --model-id hidden
    unlisted: true
""")
    )
    data = await listing(ts)
    created = data[0]["created"]
    unloaded = {"status": {"value": "unloaded"}}
    assert data == [
        {
            **common("vision", created),
            "name": "Vision",
            "description": "sees things",
            "architecture": {
                "input_modalities": ["text", "image"],
                "output_modalities": ["text"],
                "modality": "text+image->text",
            },
            "capabilities": {"vision": True, "function_calling": True},
            "supported_parameters": ["tools", "tool_choice"],
            "context_length": 8192,
            # A metadata key the capabilities render is dropped.
            "meta": {"trioswap": {"note": "kept", "type": "model"}, "n_ctx": 8192},
            **unloaded,
        },
        {
            **common("speaker", created),
            "architecture": {
                "input_modalities": ["text"],
                "output_modalities": ["audio"],
                "modality": "text->audio",
            },
            "capabilities": {"audio_speech": True, "reranker": True},
            "meta": {"trioswap": {"type": "model"}},
            **unloaded,
        },
        {
            **common("plain", created),
            "meta": {"trioswap": {"architecture": "mine", "type": "model"}},
            **unloaded,
        },
    ]


async def test_models_list_shows_peer_models(launch: LaunchFn) -> None:
    ts = await launch(
        models_config(
            f"""
  m:
    cmd: {RESPONDER} --port ${{PORT}} --model-id m
""",
            # Nothing listens there: listing a peer's models never asks the peer.
            top="peers:\n  office:\n    proxy: http://127.0.0.1:9\n    models: [llama-70b, qwen]",
        )
    )
    data = await listing(ts)
    created = data[0]["created"]
    assert [entry["id"] for entry in data] == ["m", "office/llama-70b", "office/qwen"]
    assert data[1] == {
        **common("office/llama-70b", created),
        "name": "office: llama-70b",
        "meta": {"trioswap": {"type": "peer", "peerID": "office"}},
        "status": {"value": "unloaded"},
    }
    # Nor is a websocket relayed to a peer.
    assert (await refusal(ts, "/upstream/office/qwen/ws")).status_code == 400


async def test_models_list_aliases_include_set_params_by_id_names(launch: LaunchFn) -> None:
    model = f"""
  m:
    cmd: {RESPONDER} --port ${{PORT}} --model-id m
    aliases: [alpha]
    filters:
      setParamsByID:
        "${{MODEL_ID}}": {{reasoning: medium}}
        "${{MODEL_ID}}:high": {{reasoning: high}}
        alpha: {{reasoning: low}}
"""
    ts = await launch(models_config(model))
    data = await listing(ts)
    assert [entry["id"] for entry in data] == ["m"]
    assert data[0]["meta"] == {"trioswap": {"type": "model", "aliases": ["alpha", "m:high"]}}

    ts = await launch(models_config(model, top="includeAliasesInList: true"))
    async with ts.client() as client:
        assert (await client.post("/v1/chat/completions", json=chat("m:high"))).status_code == 200
    data = await listing(ts)
    assert [entry["id"] for entry in data] == ["m", "alpha", "m:high"]
    assert data[2]["meta"] == {"trioswap": {"type": "alias", "modelID": "m"}}
    assert {entry["status"]["value"] for entry in data} == {"loaded"}  # type: ignore[index]


async def test_set_params_by_id_applies_the_requested_names_params(launch: LaunchFn) -> None:
    ts = await launch(
        models_config(f"""
  m:
    cmd: {RESPONDER} --port ${{PORT}} --model-id m
    aliases: [alpha]
    filters:
      setParams: {{temperature: 0.5, chat_template_kwargs: {{a: 1}}}}
      setParamsByID:
        "${{MODEL_ID}}": {{reasoning: medium}}
        "${{MODEL_ID}}:high":
          reasoning: high
          temperature: 0.9
          chat_template_kwargs: {{b: 2}}
        quick: {{max_tokens: 5}}
""")
    )
    sent: dict[str, dict[str, object]] = {}
    async with ts.client() as client:
        for name in ("m", "m:high", "quick", "alpha"):
            response = await client.post("/v1/chat/completions", json=chat(name, top_p=0.1))
            assert response.status_code == 200, response.text
            requests = (await client.get("/upstream/m/debug/requests")).json()
            sent[name] = json.loads(requests[-1]["body"])
    base = {"top_p": 0.1, "temperature": 0.5, "chat_template_kwargs": {"a": 1}}
    assert sent["m"] == {**chat("m"), **base, "reasoning": "medium"}
    # Set after setParams, each key's whole value replaced (not merged).
    assert sent["m:high"] == {
        **chat("m:high"),
        **base,
        "reasoning": "high",
        "temperature": 0.9,
        "chat_template_kwargs": {"b": 2},
    }
    assert sent["quick"] == {**chat("quick"), **base, "max_tokens": 5}
    assert sent["alpha"] == {**chat("alpha"), **base}


IGNORING = models_config(
    f"""
  m:
    cmd: {RESPONDER} --port ${{PORT}} --model-id m
""",
    top="upstream:\n  ignorePaths: ['^/props$', '\\.js$']",
)


async def test_ignored_paths_never_start_the_model(launch: LaunchFn) -> None:
    ts = await launch(IGNORING)
    async with ts.client() as client:
        # The path is matched without its query, and percent-decoded.
        for path in ("/upstream/m/props", "/upstream/m/props?x=1", "/upstream/m/app%2Ejs"):
            response = await client.get(path)
            assert response.status_code == 409, path
            error = response.json()["error"]
            assert "model 'm' is not loaded" in error["message"]
            assert "upstream.ignorePaths" in error["message"]
        assert await ts.running() == {}
        # Any other path starts the model; then ignored paths are served.
        response = await client.get("/upstream/m/health")
        assert response.status_code == 200
        assert await ts.states() == {"m": "ready"}
        response = await client.get("/upstream/m/props")
        assert response.status_code == 200
        assert response.json()["default_generation_settings"]["n_ctx"] > 0


def ws_url(ts: Trioswap, path: str) -> str:
    return ts.url.replace("http://", "ws://") + path


async def refusal(ts: Trioswap, path: str) -> ConnectionRejected:
    """How trioswap refuses a websocket to `path`. Our own stream: trio-websocket leaves a
    client's socket open when the server refuses, or closes first."""
    url = httpx.URL(ts.url)
    refused: list[ConnectionRejected] = []
    stream = await trio.open_tcp_stream(url.host, url.port)
    async with stream:
        try:
            async with trio.open_nursery() as nursery:
                await wrap_client_stream(nursery, stream, "localhost", path)
                nursery.cancel_scope.cancel()
        except* ConnectionRejected as group:
            refused.extend(group.exceptions)  # type: ignore[arg-type]
    assert refused, f"the websocket to {path} was accepted"
    return refused[0]


async def test_websocket_through_upstream_leases_its_model(launch: LaunchFn) -> None:
    ts = await launch(models_config(f"  m:\n    cmd: {RESPONDER} --port ${{PORT}} --model-id m"))
    async with open_websocket_url(ws_url(ts, "/upstream/m/ws")) as ws:
        await ws.send_message("hello")
        assert await ws.get_message() == "hello"
        await ws.send_message(b"\x00bytes")
        assert await ws.get_message() == b"\x00bytes"
        running = await ts.running()
        assert (running["m"]["state"], running["m"]["in_flight"]) == ("ready", 1)

    async def released() -> bool:
        return (await ts.running())["m"]["in_flight"] == 0

    await wait_until(released)
    # The model server's own refusal of a handshake is passed on.
    refused = await refusal(ts, "/upstream/m/not-ws")
    assert refused.status_code == 403


def ignoring_websockets() -> str:
    return f"""
healthCheckTimeout: 20
startPort: {random_start_port()}
drainTimeout: 600
models:
  a:
    cmd: {RESPONDER} --port ${{PORT}} --model-id a
    compat: {{ignoreWebsockets: true}}
  b:
    cmd: {RESPONDER} --port ${{PORT}} --model-id b
routing:
  router:
    settings:
      groups:
        pair: {{swap: true, members: [a, b]}}
"""


async def test_ignored_websocket_never_starts_its_model(launch: LaunchFn) -> None:
    ts = await launch(ignoring_websockets())
    refused = await refusal(ts, "/upstream/a/ws")
    assert refused.status_code == 409
    assert refused.body is not None
    error = json.loads(refused.body)["error"]
    assert "compat.ignoreWebsockets" in error["message"]
    assert await ts.running() == {}


async def test_ignored_websocket_does_not_keep_its_model_from_a_swap(launch: LaunchFn) -> None:
    ts = await launch(ignoring_websockets())
    url = httpx.URL(ts.url)
    async with ts.client() as client:
        assert (await client.post("/v1/chat/completions", json=chat("a"))).status_code == 200
        # Our own stream: trio-websocket leaves a client's socket open when the server closes.
        stream = await trio.open_tcp_stream(url.host, url.port)
        async with stream, trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, "localhost", "/upstream/a/ws")
            await ws.send_message("hello")
            assert await ws.get_message() == "hello"
            assert (await ts.running())["a"]["in_flight"] == 0
            # With drainTimeout at 600 s, a websocket holding a lease would stall this swap.
            with trio.fail_after(30):
                response = await client.post("/v1/chat/completions", json=chat("b"))
            assert response.status_code == 200
            assert await ts.states() == {"b": "ready"}
            # The model server went away, and with it the websocket.
            with pytest.raises(ConnectionClosed), trio.fail_after(15):
                await ws.get_message()
            nursery.cancel_scope.cancel()


async def test_ignored_path_websocket_never_starts_the_model(launch: LaunchFn) -> None:
    ts = await launch(IGNORING.replace("'\\.js$'", "'^/ws$'"))
    refused = await refusal(ts, "/upstream/m/ws")
    assert refused.status_code == 409
    assert await ts.running() == {}
