"""A thousand clients arriving at once are all served: the listen backlog is trioswap's own
(`listenBacklog`, default 1024), not hypercorn's default of 100."""

from __future__ import annotations

import resource

import httpx
import trio

from tests.conftest import RESPONDER, LaunchFn, random_start_port

CLIENTS = 1000


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def test_a_thousand_concurrent_streams_get_no_resets(launch: LaunchFn) -> None:
    raise_fd_limit(3 * CLIENTS)
    ts = await launch(
        f"""
        startPort: {random_start_port()}
        models:
          m:
            cmd: {RESPONDER} --port ${{PORT}} --model-id m --tokens-per-second 20
        """
    )
    url = httpx.URL(ts.url)
    body = b'{"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\n"
        b"content-type: application/json\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    # Start the model first: the test is about connections, not about a thousand waiting on a
    # start.
    async with ts.client() as client:
        assert (await client.post("/v1/chat/completions", content=body)).status_code == 200

    outcomes: dict[str, int] = {}
    all_connected = trio.Event()
    connected = 0

    async def one_client() -> None:
        nonlocal connected
        try:
            stream = await trio.open_tcp_stream(url.host, url.port)
        except OSError as exc:
            outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
            return
        async with stream:
            connected += 1
            if connected == CLIENTS:
                all_connected.set()
            try:
                await stream.send_all(request)
                received = b""
                while chunk := await stream.receive_some(65536):
                    received += chunk
            except (OSError, trio.BrokenResourceError) as exc:
                outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
                return
        done = received.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in received
        key = "complete" if done else "incomplete"
        if not done:
            print("INCOMPLETE", received[:300], received[-300:])
        outcomes[key] = outcomes.get(key, 0) + 1

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for _ in range(CLIENTS):
                nursery.start_soon(one_client)
    assert outcomes == {"complete": CLIENTS}
    assert all_connected.is_set()
