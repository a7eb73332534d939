"""trio_relay.py's relay on the standard library's asyncio instead: the same connection-level TCP
relay (accept, connect to the upstream, copy bytes both ways, pass each side's EOF on), written
with asyncio's protocols and transports, the cheapest way asyncio offers to move bytes (its
event loop calls `data_received`; no task switch per read). relay_floor.py runs it beside the trio
relays: how much of the floor is trio's own, measured rather than assumed.

    python benchmarks/asyncio_relay.py --upstream http://127.0.0.1:8081
    python benchmarks/asyncio_relay.py --upstream http://127.0.0.1:8081 --listen :9000

Once listening it prints "asyncio relay listening on http://HOST:PORT" (port 0 in --listen: a
free one). An error on one connection closes that connection only.
"""

from __future__ import annotations

import argparse
import asyncio

from trio_relay import Address, host_port


class Pipe(asyncio.Protocol):
    """One side of a relayed connection: what it receives goes to its peer's transport, with
    asyncio's flow control passed across (a full peer pauses this side's reading)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Pipe | None = None
        self.pending: list[bytes] = []  # the client's bytes that came before the upstream was up
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.pending.append(data)
        else:
            peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write_eof()
            if self.peer.eof:
                self.close_both()
        return True  # half-closed: the other direction may still be sending

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def close_both(self) -> None:
        for side in (self, self.peer):
            if side is not None and side.transport is not None:
                side.transport.close()


class Client(Pipe):
    """The accepted side: it opens the upstream connection, then joins the two."""

    def __init__(self, upstream: Address, tasks: set[asyncio.Task[None]]) -> None:
        super().__init__()
        self.upstream = upstream
        self.tasks = tasks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        task = asyncio.get_running_loop().create_task(self.connect())
        self.tasks.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self.tasks.discard)

    async def connect(self) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        try:
            _, server = await loop.create_connection(Pipe, *self.upstream)
        except OSError:
            self.transport.close()
            return
        server.peer, self.peer = self, server
        assert server.transport is not None
        for data in self.pending:
            server.transport.write(data)
        self.pending.clear()
        if self.eof:
            server.transport.write_eof()


async def serve(listen: Address, upstream: Address) -> None:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    server = await loop.create_server(lambda: Client(upstream, tasks), *listen)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"asyncio relay listening on http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="http://HOST:PORT or HOST:PORT")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (0: a free port)")
    args = parser.parse_args()
    asyncio.run(serve(host_port(args.listen), host_port(args.upstream)))


if __name__ == "__main__":
    main()
