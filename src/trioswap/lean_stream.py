"""A TCP stream for the data path: `trio.SocketStream`'s job in fewer steps per chunk.

trio's socket stream makes every receive try `recv` first (on a streaming connection the data
is rarely there yet: one failed syscall and an exception per chunk), then wait, then `recv`,
then yield to the scheduler once more after succeeding; and every send yields after it has
sent. On a relay of paced token streams those steps are most of the proxy's CPU (a bare relay
of 64 streams at 50 tok/s: 19 % of a core on trio's streams, 13 % on these).

Here a receive waits for readability and then reads: one wait (a checkpoint) and one `recv`.
A send writes at once and waits only when the kernel's buffer is full; it is always a cancel
point and a schedule point only when it has to wait, which cannot starve other tasks: every
relay loop also receives, and a receive always waits.

Errors are trio's: `BrokenResourceError` for a connection the peer broke,
`ClosedResourceError` for one this side closed.
"""

from __future__ import annotations

import errno
import select
import socket

import trio
from trio.lowlevel import (
    checkpoint,
    checkpoint_if_cancelled,
    notify_closing,
    wait_readable,
    wait_writable,
)

DEFAULT_RECEIVE_SIZE = 65536
# As trio.SocketStream: small send buffers on top of the kernel's, so a stalled reader is heard
# as backpressure soon.
NOTSENT_LOWAT = 2**14


class LeanStream(trio.abc.HalfCloseableStream):
    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)
        self.socket = sock
        self._eof_sent = False
        # A send waiting for room: another task's send now would interleave its bytes.
        self._send_waiting = False

    @classmethod
    def adopt(cls, stream: trio.SocketStream) -> LeanStream:
        """The same connection as a LeanStream (`stream` must not be used after)."""
        trio_socket = stream.socket
        family, kind, proto = trio_socket.family, trio_socket.type, trio_socket.proto
        return cls(socket.socket(family, kind, proto, trio_socket.detach()))

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        sock = self.socket
        while True:
            if sock.fileno() == -1:
                raise trio.ClosedResourceError("the connection was closed")
            await wait_readable(sock)
            try:
                return sock.recv(max_bytes or DEFAULT_RECEIVE_SIZE)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise _stream_error(exc) from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        sock = self.socket
        if self._send_waiting:
            raise trio.BusyResourceError("another task is sending on this connection")
        if self._eof_sent:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        await checkpoint_if_cancelled()
        total = len(data)
        sent = 0
        view: memoryview | None = None
        while True:
            try:
                sent += sock.send(data if view is None else view[sent:])
            except BlockingIOError:
                pass
            except OSError as exc:
                raise _stream_error(exc) from exc
            if sent >= total:
                return
            if view is None:
                view = memoryview(data)
            self._send_waiting = True
            try:
                await wait_writable(sock)
            finally:
                self._send_waiting = False

    async def wait_send_all_might_not_block(self) -> None:
        if self.socket.fileno() == -1:
            raise trio.ClosedResourceError("the connection was closed")
        await wait_writable(self.socket)

    async def send_eof(self) -> None:
        await checkpoint()
        if self._eof_sent:
            return
        self._eof_sent = True
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise _stream_error(exc) from exc

    def is_readable(self) -> bool:
        """Readable right now (data or EOF waiting), without blocking."""
        if self.socket.fileno() == -1:
            return True
        # poll, not recv(MSG_PEEK): a peek would consume a pending error (a reset), and the
        # next receive would read a clean EOF.
        poller = select.poll()
        poller.register(self.socket, select.POLLIN)
        return bool(poller.poll(0))

    def close(self) -> None:
        """Close at once, without a checkpoint (safe in a `finally` under cancellation); a task
        waiting on it gets ClosedResourceError."""
        if self.socket.fileno() != -1:
            notify_closing(self.socket)
            self.socket.close()

    async def aclose(self) -> None:
        self.close()
        await checkpoint()


def _stream_error(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("the connection was closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")
