"""A connection-level TCP relay on trio, nothing else: accept, connect to the upstream, copy bytes
both ways until each side has sent its EOF. No HTTP parsing, so it is the floor a trio proxy can
reach; relay_floor.py runs it next to trioswap.

    python benchmarks/trio_relay.py --upstream http://127.0.0.1:8081 --mode streams
    python benchmarks/trio_relay.py --upstream http://127.0.0.1:8081 --mode raw --listen :9000

--mode streams: trio.serve_tcp, trio.SocketStream's receive_some/send_all (what trio offers).
--mode raw: the same connections as trioswap's `LeanStream`s: non-blocking sockets, waiting
with trio.lowlevel.wait_readable/wait_writable (trio's scheduler and epoll and nothing more; the
socket layer trioswap's data path runs on). Once listening it prints
"trio relay listening on http://HOST:PORT" (port 0 in --listen: a free one). An error on one
connection closes that connection only.
"""

from __future__ import annotations

import argparse
import functools
from urllib.parse import urlsplit

import trio

from trioswap.lean_stream import LeanStream

BUFFER = 65536
# What a peer can do to one connection (reset, close mid-write); anything else is a bug.
CONNECTION_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)
Address = tuple[str, int]


def announce(address: Address) -> None:
    print(f"trio relay listening on http://{address[0]}:{address[1]}", flush=True)


async def pump(source: trio.abc.HalfCloseableStream, sink: trio.abc.HalfCloseableStream) -> None:
    while data := await source.receive_some(BUFFER):
        await sink.send_all(data)
    await sink.send_eof()


async def relay(client: trio.SocketStream, upstream: Address, lean: bool) -> None:
    try:
        async with client, await trio.open_tcp_stream(*upstream) as server:
            # Adopted, the trio streams hand their sockets over (closing them is then a no-op).
            near: trio.abc.HalfCloseableStream = LeanStream.adopt(client) if lean else client
            far: trio.abc.HalfCloseableStream = LeanStream.adopt(server) if lean else server
            async with near, far, trio.open_nursery() as nursery:
                nursery.start_soon(pump, near, far)
                await pump(far, near)
    except* CONNECTION_ERRORS:
        pass


async def serve(listen: Address, upstream: Address, lean: bool) -> None:
    async with trio.open_nursery() as nursery:
        handler = functools.partial(relay, upstream=upstream, lean=lean)
        serving = functools.partial(trio.serve_tcp, handler, listen[1], host=listen[0])
        listeners = await nursery.start(serving)
        announce(listeners[0].socket.getsockname())


def host_port(text: str) -> Address:
    parts = urlsplit(text if "//" in text else f"//{text}")
    return parts.hostname or "127.0.0.1", parts.port or 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="http://HOST:PORT or HOST:PORT")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (0: a free port)")
    parser.add_argument("--mode", choices=("streams", "raw"), default="streams")
    args = parser.parse_args()
    trio.run(serve, host_port(args.listen), host_port(args.upstream), args.mode == "raw")


if __name__ == "__main__":
    main()
