"""Peers: a front trioswap routes `peer/model` (and a bare id only one peer lists) to another
trioswap, which serves it from its own responder."""

from __future__ import annotations

import json
import socket

import httpx

from tests.conftest import RESPONDER, LaunchFn, Trioswap, chat, random_start_port


def peer_config(text: str = "from the peer", top: str = "") -> str:
    return f"""
startPort: {random_start_port()}
{top}
models:
  m:
    cmd: {RESPONDER} --port ${{PORT}} --model-id m --response-text "{text}"
"""


async def start_peer(launch: LaunchFn, text: str = "from the peer", top: str = "") -> Trioswap:
    return await launch(peer_config(text, top))


def reply_text(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def streamed_text(lines: list[str]) -> str:
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


async def received(peer: Trioswap) -> list[dict[str, object]]:
    """The requests the peer's responder got, oldest first."""
    async with peer.client() as client:
        response = await client.get("/upstream/m/debug/requests")
    response.raise_for_status()
    return [r for r in response.json() if r["path"] != "/debug/requests"]


async def test_chat_reaches_a_peer_by_qualified_and_bare_id(launch: LaunchFn) -> None:
    peer = await start_peer(launch)
    front = await launch(f"peers:\n  office:\n    proxy: {peer.url}\n    models: [m]\n")
    async with front.client() as client:
        for name in ("office/m", "m"):
            response = await client.post("/v1/chat/completions", json=chat(name))
            assert reply_text(response) == "from the peer"
            # The peer was asked for its own id (the responder answers with the model asked for).
            assert response.json()["model"] == "m"
            async with client.stream(
                "POST", "/v1/chat/completions", json=chat(name, stream=True)
            ) as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                lines = [line async for line in stream.aiter_lines() if line]
            assert lines[-1] == "data: [DONE]"
            assert streamed_text(lines[:-1]) == "from the peer"
        # /upstream/<peer/model>/<path> goes to <path> on the peer.
        response = await client.get("/upstream/office/m/v1/models")
        assert response.status_code == 200
        assert "m" in [entry["id"] for entry in response.json()["data"]]
        response = await client.get("/upstream/elsewhere/m/v1/models")
        assert response.status_code == 404
    assert await front.running() == {}


async def test_a_peer_gets_its_api_key_and_answers_401_without(launch: LaunchFn) -> None:
    peer = await start_peer(launch, top="apiKeys: [peer-key]")
    front = await launch(
        f"""
peers:
  keyed:
    proxy: {peer.url}
    apiKey: peer-key
    models: [m]
  keyless:
    proxy: {peer.url}
    models: [m]
"""
    )
    async with front.client() as client:
        assert reply_text(await client.post("/v1/chat/completions", json=chat("keyed/m")))
        response = await client.get("/upstream/keyed/m/v1/models")
        assert response.status_code == 200
        # The peer's own refusal, as the peer gave it.
        response = await client.post("/v1/chat/completions", json=chat("keyless/m"))
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"


async def test_a_clients_credentials_never_reach_a_peer(launch: LaunchFn) -> None:
    # This peer has no apiKeys, so it passes what it gets on to its responder, which records it.
    peer = await start_peer(launch)
    # A key for this trioswap is not the peer's; the peer gets its apiKey instead.
    guarded = await launch(
        f"""
apiKeys: [front-key]
peers:
  keyed:
    proxy: {peer.url}
    apiKey: peer-key
    models: [m]
"""
    )
    # Nor does a client's own key go to a peer when this trioswap has no apiKeys.
    open_front = await launch(f"peers:\n  keyless:\n    proxy: {peer.url}\n    models: [m]\n")
    async with guarded.client() as client:
        response = await client.post(
            "/v1/chat/completions",
            json=chat("keyed/m"),
            headers={"authorization": "Bearer front-key"},
        )
        assert reply_text(response)
    async with open_front.client() as client:
        response = await client.post(
            "/v1/chat/completions",
            json=chat("keyless/m"),
            headers={"authorization": "Bearer own-key", "x-api-key": "own-key"},
        )
        assert reply_text(response)
    keyed, keyless = [r["headers"] for r in await received(peer)]
    assert isinstance(keyed, dict) and isinstance(keyless, dict)
    assert keyed["authorization"] == "Bearer peer-key"
    assert keyed["x-api-key"] == "peer-key"
    assert "authorization" not in keyless and "x-api-key" not in keyless
    assert "front-key" not in str(keyed)


async def test_a_peers_filters_apply(launch: LaunchFn) -> None:
    peer = await start_peer(launch)
    front = await launch(
        f"""
peers:
  office:
    proxy: {peer.url}
    models: [m]
    filters:
      stripParams: top_p
      setParams: {{temperature: 0.25}}
"""
    )
    async with front.client() as client:
        body = chat("office/m", top_p=0.9, temperature=1.5, seed=7)
        assert reply_text(await client.post("/v1/chat/completions", json=body))
    (request,) = await received(peer)
    sent = json.loads(str(request["body"]))
    assert sent["model"] == "m"
    assert sent["temperature"] == 0.25
    assert "top_p" not in sent
    assert sent["seed"] == 7


async def test_a_local_model_of_the_same_id_wins(launch: LaunchFn) -> None:
    peer = await start_peer(launch)
    front = await launch(
        f"""
startPort: {random_start_port()}
models:
  m:
    cmd: {RESPONDER} --port ${{PORT}} --model-id m --response-text "from here"
peers:
  office:
    proxy: {peer.url}
    models: [m]
"""
    )
    async with front.client() as client:
        assert reply_text(await client.post("/v1/chat/completions", json=chat("m"))) == "from here"
        response = await client.post("/v1/chat/completions", json=chat("office/m"))
        assert reply_text(response) == "from the peer"


async def test_a_bare_id_two_peers_list_is_unknown_and_a_proxy_path_prefix_is_kept(
    launch: LaunchFn,
) -> None:
    peer = await start_peer(launch)
    # `via` reaches the same model through the peer's /upstream/m/ passthrough, which serves
    # any model name: `other` works only if the prefix is kept.
    front = await launch(
        f"""
peers:
  office:
    proxy: {peer.url}
    models: [m]
  via:
    proxy: {peer.url}/upstream/m
    models: [m, other]
"""
    )
    async with front.client() as client:
        response = await client.post("/v1/chat/completions", json=chat("m"))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"
        for name in ("office/m", "via/m"):
            assert reply_text(await client.post("/v1/chat/completions", json=chat(name)))
        response = await client.post("/v1/chat/completions", json=chat("other"))
        assert reply_text(response) == "from the peer"
        assert response.json()["model"] == "other"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_peer_that_is_down_is_a_502_naming_it(launch: LaunchFn) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    front = await launch(f"peers:\n  office:\n    proxy: {url}\n    models: [m]\n")
    async with front.client() as client:
        response = await client.post("/v1/chat/completions", json=chat("m", stream=True))
        assert response.status_code == 502
        message = response.json()["error"]["message"]
        assert f"peer 'office' ({url})" in message
        assert "connection refused" in message
        response = await client.post(
            "/v1/messages",
            json={"model": "office/m", "max_tokens": 5, "messages": chat()["messages"]},
        )
        assert response.status_code == 502
        assert response.json()["type"] == "error"
        assert f"peer 'office' ({url})" in response.json()["error"]["message"]
