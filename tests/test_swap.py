"""Swapping between real responder processes through a real trioswap."""

from __future__ import annotations

import json

import trio

from tests.conftest import RESPONDER, LaunchFn, chat, pair_config, random_start_port, wait_until


async def test_swap_a_b_a_with_running_at_each_step(launch: LaunchFn) -> None:
    ts = await launch(pair_config())
    assert await ts.running() == {}
    async with ts.client() as client:
        for model in ("a", "b", "a"):
            response = await client.post("/v1/chat/completions", json=chat(model))
            assert response.status_code == 200, response.text
            assert response.headers["x-responder-model"] == model
            assert response.json()["responder"]["model_id"] == model
            running = await ts.running()
            assert list(running) == [model]
            assert running[model]["state"] == "ready"
            assert running[model]["in_flight"] == 0


async def test_alias_resolves_to_model(launch: LaunchFn) -> None:
    ts = await launch(pair_config())
    async with ts.client() as client:
        response = await client.post("/v1/chat/completions", json=chat("alpha"))
    assert response.status_code == 200
    assert response.headers["x-responder-model"] == "a"
    # The upstream sees the name the client used; only useModelName rewrites it.
    assert response.json()["model"] == "alpha"


async def test_concurrent_requests_for_cold_model_start_it_once(launch: LaunchFn) -> None:
    ts = await launch(pair_config(extra_a="--startup-delay 0.5"))
    results: list[int] = []
    async with ts.client() as client:

        async def one() -> None:
            response = await client.post("/v1/chat/completions", json=chat("a"))
            results.append(response.status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(one)
    assert results == [200] * 20
    assert ts.count_output(r"model a: started pid") == 1


async def test_mixed_concurrent_traffic_never_runs_both(launch: LaunchFn) -> None:
    ts = await launch(
        pair_config(extra_a="--tokens-per-second 200", extra_b="--tokens-per-second 200")
    )
    statuses: list[int] = []
    snapshots: list[set[str]] = []
    done = trio.Event()

    async def watch() -> None:
        while not done.is_set():
            # (a stopped model shows in /running while requests wait for it)
            states = await ts.states()
            snapshots.append({m for m, state in states.items() if state != "stopped"})
            await trio.sleep(0.005)

    async with ts.client() as client:

        async def one(model: str) -> None:
            response = await client.post("/v1/chat/completions", json=chat(model, stream=True))
            assert response.headers["x-responder-model"] == model
            assert response.text.rstrip().endswith("data: [DONE]")
            statuses.append(response.status_code)

        async with trio.open_nursery() as watcher:
            watcher.start_soon(watch)
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for i in range(50):
                        nursery.start_soon(one, "ab"[i % 2])
            done.set()
    assert statuses == [200] * 50
    assert all(len(s) <= 1 for s in snapshots), [s for s in snapshots if len(s) > 1]
    assert len(snapshots) > 5


async def test_swap_waits_for_in_flight_request(launch: LaunchFn) -> None:
    # a streams slowly; a request for b must wait for it, and a's stream completes intact.
    ts = await launch(pair_config(extra_a="--tokens-per-second 20"))
    async with ts.client() as client:
        order: list[str] = []

        async def slow_a() -> None:
            response = await client.post("/v1/chat/completions", json=chat("a", stream=True))
            assert "data: [DONE]" in response.text
            order.append("a done")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_a)
            await wait_until(lambda: _in_flight(ts, "a"))
            response = await client.post("/v1/chat/completions", json=chat("b"))
            order.append("b done")
            assert response.status_code == 200
        assert order == ["a done", "b done"]


async def _in_flight(ts: object, model: str) -> bool:
    running = await ts.running()  # type: ignore[attr-defined]
    return model in running and running[model]["in_flight"] == 1


async def test_unload_endpoints(launch: LaunchFn) -> None:
    ts = await launch(pair_config())
    async with ts.client() as client:
        await client.post("/v1/chat/completions", json=chat("a"))
        assert list(await ts.running()) == ["a"]
        response = await client.post("/models/unload/alpha")
        assert response.status_code == 200
        await wait_until(lambda: _nothing_running(ts))
        await client.post("/v1/chat/completions", json=chat("b"))
        response = await client.post("/models/unload")
        assert response.status_code == 200
        await wait_until(lambda: _nothing_running(ts))
        response = await client.post("/models/unload/nope")
        assert response.status_code == 404


async def _nothing_running(ts: object) -> bool:
    return await ts.running() == {}  # type: ignore[attr-defined]


async def test_ttl_unloads_idle_model(launch: LaunchFn) -> None:
    ts = await launch(pair_config(top="globalTTL: 0.5"))
    async with ts.client() as client:
        response = await client.post("/v1/chat/completions", json=chat("a"))
        assert response.status_code == 200
    assert "a" in await ts.running()
    await wait_until(lambda: _nothing_running(ts), timeout=10)
    assert ts.count_output(r"model a: ready -> stopping") == 1


async def test_ttl_never_unloads_during_a_request(launch: LaunchFn) -> None:
    # The stream lasts about 1.5 s, three times the ttl: the model must stay up throughout.
    ts = await launch(pair_config(top="globalTTL: 0.5", extra_a="--tokens-per-second 4"))
    async with ts.client() as client:
        response = await client.post("/v1/chat/completions", json=chat("a", stream=True))
    assert response.text.rstrip().endswith("data: [DONE]")
    assert ts.count_output(r"model a: ready -> stopping") == 0
    await wait_until(lambda: _nothing_running(ts), timeout=10)


async def test_preload_starts_models_at_startup(launch: LaunchFn) -> None:
    config = pair_config(top="hooks:\n  on_startup:\n    preload: [alpha]")
    ts = await launch(config)
    await wait_until(lambda: _state_is(ts, "a", "ready"))


async def _state_is(ts: object, model: str, state: str) -> bool:
    return (await ts.states()).get(model) == state  # type: ignore[attr-defined]


async def test_models_list(launch: LaunchFn) -> None:
    config = f"""
startPort: {random_start_port()}
includeAliasesInList: true
models:
  a:
    cmd: {RESPONDER} --port ${{PORT}} --model-id a
    aliases: [alpha]
    name: Model A
    description: the first
    metadata: {{ctx: 4096}}
  hidden:
    cmd: {RESPONDER} --port ${{PORT}} --model-id hidden
    unlisted: true
"""
    ts = await launch(config)
    async with ts.client() as client:
        body = (await client.get("/v1/models")).json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids == ["a", "alpha"]
    first = body["data"][0]
    assert first["name"] == "Model A"
    assert first["description"] == "the first"
    assert first["meta"] == {"trioswap": {"ctx": 4096, "type": "model", "aliases": ["alpha"]}}
    assert json.dumps(body)  # plain JSON


async def test_drain_timeout_cuts_a_long_request_for_a_swap(launch: LaunchFn) -> None:
    # a streams for ~5 s; with drainTimeout 0.5 a request for b does not wait for it.
    ts = await launch(pair_config(extra_a="--tokens-per-second 1.2", top="drainTimeout: 0.5"))
    async with ts.client() as client:
        a_text: list[str] = []

        async def slow_a() -> None:
            response = await client.post("/v1/chat/completions", json=chat("a", stream=True))
            a_text.append(response.text)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_a)
            await wait_until(lambda: _in_flight(ts, "a"))
            response = await client.post("/v1/chat/completions", json=chat("b"))
            assert response.status_code == 200
            assert response.headers["x-responder-model"] == "b"
    (text,) = a_text
    assert "[DONE]" not in text
    assert '"error"' in text.splitlines()[-2]
