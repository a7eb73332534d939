"""A connection-level TCP relay on trio, nothing else: accept, connect to the upstream, copy bytes
both ways until each side has sent its EOF. No HTTP parsing, so it is the floor a trio proxy can
reach; relay_floor.py runs it next to trioswap.

    python benchmarks/trio_relay.py --upstream http://127.0.0.1:8081 --mode streams
    python benchmarks/trio_relay.py --upstream http://127.0.0.1:8081 --mode raw --listen :9000

--mode streams: trio.serve_tcp, trio.SocketStream's receive_some/send_all (what trio offers).
--mode raw: stdlib non-blocking sockets, waiting with trio.lowlevel.wait_readable/wait_writable
(trio's scheduler and epoll and nothing more). Once listening it prints
"trio relay listening on http://HOST:PORT" (port 0 in --listen: a free one). An error on one
connection closes that connection only.
"""

from __future__ import annotations

import argparse
import errno
import functools
import os
import socket
from urllib.parse import urlsplit

import trio

BUFFER = 65536
BACKLOG = 1024
# What a peer can do to one connection (reset, close mid-write); anything else is a bug.
CONNECTION_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)
Address = tuple[str, int]
# accept() failures that pass once some connection closes; trio.serve_listeners pauses on them.
OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_PAUSE = 0.1


def announce(address: Address) -> None:
    print(f"trio relay listening on http://{address[0]}:{address[1]}", flush=True)


# -- trio streams ---------------------------------------------------------------------------------


async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
    while data := await source.receive_some(BUFFER):
        await sink.send_all(data)
    await sink.send_eof()


async def relay_streams(client: trio.SocketStream, upstream: Address) -> None:
    try:
        async with (
            client,
            await trio.open_tcp_stream(*upstream) as server,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(pump, client, server)
            await pump(server, client)
    except* CONNECTION_ERRORS:
        pass


async def serve_streams(listen: Address, upstream: Address) -> None:
    async with trio.open_nursery() as nursery:
        handler = functools.partial(relay_streams, upstream=upstream)
        serve = functools.partial(trio.serve_tcp, handler, listen[1], host=listen[0])
        listeners = await nursery.start(serve)
        announce(listeners[0].socket.getsockname())


# -- raw sockets ----------------------------------------------------------------------------------


def close(sock: socket.socket) -> None:
    trio.lowlevel.notify_closing(sock)  # trio forgets the descriptor before it is reused
    sock.close()


async def pump_raw(source: socket.socket, sink: socket.socket) -> None:
    while True:
        await trio.lowlevel.wait_readable(source)  # wait first: a paced stream is rarely ready
        try:
            data = source.recv(BUFFER)
        except BlockingIOError:
            continue
        if not data:
            sink.shutdown(socket.SHUT_WR)
            return
        view = memoryview(data)
        while view:
            try:
                view = view[sink.send(view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sink)


async def connect_raw(upstream: Address) -> socket.socket:
    sock = socket.socket()
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(upstream)
        if code == errno.EINPROGRESS:
            await trio.lowlevel.wait_writable(sock)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, f"connect to {upstream}: {os.strerror(code)}")
    except BaseException:
        close(sock)
        raise
    return sock


async def relay_raw(client: socket.socket, upstream: Address) -> None:
    try:
        server = await connect_raw(upstream)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump_raw, client, server)
                await pump_raw(server, client)
        finally:
            close(server)
    except* CONNECTION_ERRORS:
        pass
    finally:
        close(client)


async def serve_raw(listen: Address, upstream: Address) -> None:
    with socket.create_server(listen, backlog=BACKLOG) as listener:
        listener.setblocking(False)
        announce(listener.getsockname())
        async with trio.open_nursery() as nursery:
            while True:
                await trio.lowlevel.wait_readable(listener)
                try:
                    client, _ = listener.accept()
                except (BlockingIOError, ConnectionAbortedError):
                    continue
                except OSError as exc:
                    if exc.errno not in OUT_OF_RESOURCES:
                        raise
                    await trio.sleep(ACCEPT_PAUSE)  # as trio.serve_listeners: wait for a close
                    continue
                client.setblocking(False)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                nursery.start_soon(relay_raw, client, upstream)


def host_port(text: str) -> Address:
    parts = urlsplit(text if "//" in text else f"//{text}")
    return parts.hostname or "127.0.0.1", parts.port or 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="http://HOST:PORT or HOST:PORT")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (0: a free port)")
    parser.add_argument("--mode", choices=("streams", "raw"), default="streams")
    args = parser.parse_args()
    serve = serve_streams if args.mode == "streams" else serve_raw
    trio.run(serve, host_port(args.listen), host_port(args.upstream))


if __name__ == "__main__":
    main()
