"""The least a trio proxy can be: raw ASGI on hypercorn's trio worker + an httpcore pool, one
upstream, no routing, no model logic, no disconnect handling. proxies.py runs it as a baseline so
that the cost of the server/client library stack itself is visible next to trioswap's.

    python benchmarks/bare_proxy.py --upstream http://127.0.0.1:8081 --listen 127.0.0.1:8080
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpcore
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

Message = MutableMapping[str, Any]
HOP = {b"host", b"connection", b"keep-alive", b"transfer-encoding", b"te", b"upgrade", b"date"}


def make_app(upstream: str, pool: httpcore.AsyncConnectionPool) -> Callable[..., Awaitable[None]]:
    async def app(
        scope: Message, receive: Callable[[], Awaitable[Message]], send: Callable[..., Any]
    ) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        url = upstream + scope["raw_path"].decode()
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode()
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP and k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        async with pool.stream(scope["method"], url, headers=headers, content=body) as response:
            out = [(k, v) for k, v in response.headers if k.lower() not in HOP]
            await send({"type": "http.response.start", "status": response.status, "headers": out})
            async for chunk in response.aiter_stream():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def main(upstream: str, listen: str) -> None:
    config = Config()
    config.bind, config.accesslog, config.include_server_header = [listen], None, False
    config.keep_alive_timeout = 75
    async with httpcore.AsyncConnectionPool(max_connections=256) as pool, trio.open_nursery() as n:
        binds = await n.start(serve, make_app(upstream.rstrip("/"), pool), config)
        print(f"bare proxy listening on {binds[0]}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8081")
    parser.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT")
    args = parser.parse_args()
    trio.run(main, args.upstream, args.listen)
