"""A request that meets a keep-alive connection its server just closed is sent again, once, on a
new connection — when its body can be sent again; a passed-through stream is not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
import trio

from trioswap.pipeline.transport_errors import RemoteProtocolError
from trioswap.pipeline.upstream import open_response, open_upstream_pool

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def serve_then_drop(
    listener: trio.SocketListener, seen: list[bytes], task_status: trio.TaskStatus[None]
) -> None:
    """Each connection answers its first request, then closes when the next one arrives (as a
    server closing an idle connection would, unseen by the client)."""

    async def one(stream: trio.SocketStream) -> None:
        async with stream:
            request = await stream.receive_some(65536)
            seen.append(request)
            await stream.send_all(ANSWER)
            if await stream.receive_some(65536):
                seen.append(b"dropped")

    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            nursery.start_soon(one, await listener.accept())


async def request_twice(content: bytes | AsyncIterator[bytes]) -> list[bytes]:
    seen: list[bytes] = []
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    async with listener, trio.open_nursery() as nursery, open_upstream_pool() as pool:
        await nursery.start(serve_then_drop, listener, seen)
        for attempt in range(2):
            body = content if attempt == 0 or isinstance(content, bytes) else one_chunk()
            async with AsyncExitStack() as stack:
                response = await open_response(stack, pool, method=b"POST", url=url, content=body)
                assert await response.aread() == b"ok"
        nursery.cancel_scope.cancel()
    return seen


async def one_chunk() -> AsyncIterator[bytes]:
    yield b"{}"


async def test_a_replayable_request_is_sent_again_on_a_new_connection() -> None:
    seen = await request_twice(b"{}")
    # First request, the second one on the reused connection (dropped), then the retry.
    assert seen.count(b"dropped") == 1
    assert sum(1 for s in seen if s.startswith(b"POST")) == 2


async def test_a_streamed_body_is_not_sent_twice() -> None:
    with pytest.raises(ExceptionGroup) as caught:
        await request_twice(one_chunk())
    assert caught.group_contains(RemoteProtocolError)
