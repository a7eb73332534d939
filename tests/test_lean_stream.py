"""LeanStream (lean_stream.py) on real sockets: TCP on 127.0.0.1 (port 0) and Unix socketpairs.
The far end is trio's own SocketStream (or a plain socket where the test must not yield), so
each test checks LeanStream against an independent implementation: bytes both ways, receive
bounds, EOF and half-close, backpressure, peer resets, closing under a waiting task,
is_readable, cancellation, adopting a trio.SocketStream, and the TCP options."""

from __future__ import annotations

import random
import select
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import cycle, pairwise

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from trio.lowlevel import wait_readable
from trio.testing import wait_all_tasks_blocked

from trioswap.lean_stream import DEFAULT_RECEIVE_SIZE, NOTSENT_LOWAT, LeanStream

TIMEOUT = 10.0
# Far more than loopback TCP or a Unix socketpair buffer for a reader that does not read
# (about 200 KiB here), so a send of this much must wait for the reader.
LARGE = 4 * 2**20

Pair = tuple[LeanStream, trio.SocketStream]


def tcp_sockets(
    family: socket.AddressFamily = socket.AF_INET,
) -> tuple[socket.socket, socket.socket]:
    """Both ends of a fresh loopback TCP connection (the listener on port 0)."""
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    with socket.socket(family) as listener:
        listener.bind((host, 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname()[:2])
        server, _ = listener.accept()
    return client, server


@contextmanager
def connection(kind: str) -> Iterator[Pair]:
    """A LeanStream and trio's SocketStream on the other end; both closed on the way out."""
    ours, theirs = tcp_sockets() if kind == "tcp" else socket.socketpair()
    stream = LeanStream(ours)
    peer = trio.SocketStream(trio.socket.from_stdlib_socket(theirs))
    try:
        yield stream, peer
    finally:
        stream.close()
        peer.socket.close()


@pytest.fixture(params=["tcp", "unix"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    with connection(request.param) as streams:
        yield streams


@pytest.fixture
async def tcp() -> AsyncIterator[Pair]:
    with connection("tcp") as streams:
        yield streams


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    received = bytearray()
    while len(received) < size:
        chunk = await stream.receive_some(size - len(received))
        assert chunk, f"EOF after {len(received)} of {size} bytes"
        received += chunk
    return bytes(received)


async def receive_to_eof(stream: trio.abc.ReceiveStream) -> bytes:
    received = bytearray()
    while chunk := await stream.receive_some():
        received += chunk
    return bytes(received)


def reset(peer: trio.SocketStream) -> None:
    """Close with SO_LINGER 0: the kernel answers with a TCP reset instead of a FIN."""
    peer.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.socket.close()


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


# Bytes, bounds, EOF.


async def test_bytes_round_trip_both_ways(pair: Pair) -> None:
    stream, peer = pair
    with trio.fail_after(TIMEOUT):
        await stream.send_all(b"question")
        assert await receive_exactly(peer, 8) == b"question"
        await peer.send_all(b"answer")
        assert await receive_exactly(stream, 6) == b"answer"
        await stream.send_all(bytearray(b"as a bytearray "))
        await stream.send_all(memoryview(b"xx and a memoryview xx")[3:-3])
        await stream.send_all(b"")
        assert await receive_exactly(peer, 31) == b"as a bytearray and a memoryview"


async def test_receive_some_returns_no_more_than_max_bytes(pair: Pair) -> None:
    stream, peer = pair
    sent = payload(1000)
    with trio.fail_after(TIMEOUT):
        await peer.send_all(sent)
        await wait_readable(stream.socket)
        received = bytearray()
        while len(received) < len(sent):
            chunk = await stream.receive_some(7)
            assert 0 < len(chunk) <= 7
            received += chunk
    assert received == sent


async def test_receive_some_without_a_bound_returns_at_most_the_default_size(pair: Pair) -> None:
    stream, peer = pair
    sent = payload(3 * DEFAULT_RECEIVE_SIZE)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.send_all, sent)
            received = bytearray()
            while len(received) < len(sent):
                chunk = await stream.receive_some()
                assert 0 < len(chunk) <= DEFAULT_RECEIVE_SIZE
                received += chunk
    assert received == sent


async def test_eof_from_the_peer_reads_as_empty_bytes_every_time(pair: Pair) -> None:
    stream, peer = pair
    with trio.fail_after(TIMEOUT):
        await peer.send_all(b"last words")
        await peer.send_eof()
        assert await receive_to_eof(stream) == b"last words"
        assert await stream.receive_some() == b""
        assert await stream.receive_some(1) == b""


# Backpressure and ordering.


async def test_send_all_waits_for_a_peer_that_does_not_read_then_delivers_every_byte(
    pair: Pair,
) -> None:
    stream, peer = pair
    sent = payload(LARGE)
    done = trio.Event()

    async def send() -> None:
        await stream.send_all(sent)
        done.set()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await wait_all_tasks_blocked()
            assert not done.is_set(), "4 MiB cannot fit in the kernel's buffers"
            received = await receive_exactly(peer, LARGE)
        assert done.is_set()
    assert received == sent


@dataclass(frozen=True)
class Transfer:
    """One direction of a transfer: a payload sent in pieces, read with bounds taken in turn."""

    size: int
    seed: int
    cuts: list[int]
    reads: list[int]

    def pieces(self) -> Iterator[memoryview]:
        data = memoryview(payload(self.size, self.seed))
        for start, end in pairwise([0, *self.cuts, self.size]):
            yield data[start:end]


@st.composite
def transfers(draw: st.DrawFn) -> Transfer:
    # Past the kernel's buffers now and then, so sends have to wait.
    size = draw(st.integers(min_value=0, max_value=2**19))
    # No more than about 128 reads per pass over the bounds: fast whatever is drawn.
    floor = max(1, size // 128)
    return Transfer(
        size=size,
        seed=draw(st.integers(min_value=0, max_value=2**32 - 1)),
        cuts=sorted(draw(st.lists(st.integers(min_value=0, max_value=size), max_size=6))),
        reads=draw(st.lists(st.integers(min_value=floor, max_value=2**17), min_size=1, max_size=6)),
    )


async def send_then_eof(stream: trio.abc.HalfCloseableStream, transfer: Transfer) -> None:
    for piece in transfer.pieces():
        await stream.send_all(piece)
    await stream.send_eof()


async def receive_bounded(stream: trio.abc.ReceiveStream, transfer: Transfer) -> None:
    received = bytearray()
    for bound in cycle(transfer.reads):
        chunk = await stream.receive_some(bound)
        if not chunk:
            break
        assert len(chunk) <= bound
        received += chunk
    assert received == payload(transfer.size, transfer.seed)


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(["tcp", "unix"]), outbound=transfers(), inbound=transfers())
async def test_both_directions_at_once_arrive_whole_and_in_order(
    kind: str, outbound: Transfer, inbound: Transfer
) -> None:
    """Whatever the payload sizes, send splits and read sizes, with both directions in flight
    at once: every byte arrives, in order, and no read returns more than asked for."""
    with connection(kind) as (stream, peer), trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_then_eof, stream, outbound)
            nursery.start_soon(receive_bounded, peer, outbound)
            nursery.start_soon(send_then_eof, peer, inbound)
            nursery.start_soon(receive_bounded, stream, inbound)


# Half-close.


async def test_send_eof_ends_our_side_while_the_peer_can_still_answer(pair: Pair) -> None:
    stream, peer = pair
    with trio.fail_after(TIMEOUT):
        await stream.send_all(b"request")
        await stream.send_eof()
        assert await receive_to_eof(peer) == b"request"
        await peer.send_all(b"response")
        await peer.send_eof()
        assert await receive_to_eof(stream) == b"response"


async def test_send_eof_twice_is_fine(pair: Pair) -> None:
    stream, peer = pair
    with trio.fail_after(TIMEOUT):
        await stream.send_eof()
        await stream.send_eof()
        assert await peer.receive_some() == b""


async def test_send_all_after_send_eof_is_a_closed_resource_error(pair: Pair) -> None:
    stream, peer = pair
    with trio.fail_after(TIMEOUT):
        await stream.send_eof()
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"too late")
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"")
        assert await peer.receive_some() == b""


# A peer that resets the connection.


async def test_a_reset_makes_receive_some_a_broken_resource_error(tcp: Pair) -> None:
    stream, peer = tcp
    with trio.fail_after(TIMEOUT):
        reset(peer)
        await wait_readable(stream.socket)
        with pytest.raises(trio.BrokenResourceError) as caught:
            await stream.receive_some()
    assert isinstance(caught.value.__cause__, ConnectionResetError)


async def test_a_reset_makes_send_all_a_broken_resource_error(tcp: Pair) -> None:
    stream, peer = tcp
    with trio.fail_after(TIMEOUT):
        reset(peer)
        await wait_readable(stream.socket)
        with pytest.raises(trio.BrokenResourceError) as caught:
            await stream.send_all(b"anyone there?")
    assert isinstance(caught.value.__cause__, OSError)


async def test_a_reset_wakes_a_send_all_waiting_for_room_with_broken_resource_error(
    tcp: Pair,
) -> None:
    stream, peer = tcp

    async def send() -> None:
        with pytest.raises(trio.BrokenResourceError):
            await stream.send_all(payload(LARGE))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await wait_all_tasks_blocked()
            reset(peer)


# Closing.


async def test_close_wakes_a_waiting_receive_with_closed_resource_error(pair: Pair) -> None:
    stream, _ = pair

    async def receive() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await wait_all_tasks_blocked()
            stream.close()


async def test_close_wakes_a_send_all_waiting_for_room_with_closed_resource_error(
    pair: Pair,
) -> None:
    stream, _ = pair

    async def send() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(payload(LARGE))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await wait_all_tasks_blocked()
            stream.close()


async def test_every_operation_after_close_is_a_closed_resource_error(pair: Pair) -> None:
    stream, peer = pair
    with trio.fail_after(TIMEOUT):
        await peer.send_all(b"unread")
        stream.close()
        stream.close()
        await stream.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some()
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"x")
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_eof()
        with pytest.raises(trio.ClosedResourceError):
            await stream.wait_send_all_might_not_block()


async def test_aclose_under_a_cancelled_scope_still_closes(pair: Pair) -> None:
    stream, peer = pair
    with trio.fail_after(TIMEOUT):
        with trio.CancelScope() as scope:
            scope.cancel()
            await stream.aclose()
        assert scope.cancelled_caught
        assert stream.socket.fileno() == -1
        assert await peer.receive_some() == b""


async def test_wait_send_all_might_not_block_returns_on_an_idle_connection(pair: Pair) -> None:
    stream, _ = pair
    with trio.fail_after(TIMEOUT):
        await stream.wait_send_all_might_not_block()


# is_readable.


async def test_is_readable_is_false_on_an_idle_connection(pair: Pair) -> None:
    stream, _ = pair
    assert not stream.is_readable()


async def test_is_readable_when_data_waits_and_the_peek_consumes_nothing(pair: Pair) -> None:
    stream, peer = pair
    with trio.fail_after(TIMEOUT):
        await peer.send_all(b"waiting")
        await wait_readable(stream.socket)
        assert stream.is_readable()
        assert stream.is_readable()
        assert await receive_exactly(stream, 7) == b"waiting"
    assert not stream.is_readable()


async def test_is_readable_after_the_peer_closed(pair: Pair) -> None:
    stream, peer = pair
    with trio.fail_after(TIMEOUT):
        peer.socket.close()
        await wait_readable(stream.socket)
        assert stream.is_readable()
        assert await stream.receive_some() == b""


async def test_is_readable_after_a_reset_leaves_the_reset_for_receive_some(tcp: Pair) -> None:
    stream, peer = tcp
    with trio.fail_after(TIMEOUT):
        reset(peer)
        await wait_readable(stream.socket)
        assert stream.is_readable()
        with pytest.raises(trio.BrokenResourceError):
            await stream.receive_some()


# Cancellation.


async def test_a_receive_cancelled_as_data_arrives_consumes_nothing(pair: Pair) -> None:
    stream, peer = pair
    scope = trio.CancelScope()

    async def receive() -> None:
        with scope:
            await stream.receive_some()
            pytest.fail("the receive returned instead of being cancelled")

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await wait_all_tasks_blocked()
            # Data arrives and the cancel comes before the receiving task runs again (sent on a
            # duplicate of the peer's descriptor: trio's own send would yield in between).
            sock = peer.socket
            with socket.fromfd(sock.fileno(), sock.family, sock.type) as duplicate:
                duplicate.send(b"kept")
            scope.cancel()
        assert scope.cancelled_caught
        assert await receive_exactly(stream, 4) == b"kept"


async def test_a_receive_under_a_cancelled_scope_with_data_waiting_consumes_nothing(
    pair: Pair,
) -> None:
    stream, peer = pair
    with trio.fail_after(TIMEOUT):
        await peer.send_all(b"kept")
        await wait_readable(stream.socket)
        with trio.CancelScope() as scope:
            scope.cancel()
            await stream.receive_some()
        assert scope.cancelled_caught
        assert await receive_exactly(stream, 4) == b"kept"


async def test_send_all_under_a_cancelled_scope_sends_nothing(pair: Pair) -> None:
    stream, peer = pair
    with trio.fail_after(TIMEOUT):
        with trio.CancelScope() as scope:
            scope.cancel()
            await stream.send_all(b"never")
        assert scope.cancelled_caught
        with trio.CancelScope() as scope:
            scope.cancel()
            await stream.send_eof()
        assert scope.cancelled_caught
        await stream.send_all(b"after")
        await stream.send_eof()
        assert await receive_to_eof(peer) == b"after"


# Two tasks on one direction.


async def test_a_second_concurrent_receive_is_a_busy_resource_error(pair: Pair) -> None:
    stream, peer = pair

    async def receive() -> None:
        assert await stream.receive_some() == b"x"

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await stream.receive_some()
            await peer.send_all(b"x")


async def test_a_second_concurrent_send_all_is_a_busy_resource_error() -> None:
    ours, theirs = tcp_sockets()
    # A plain socket for the reader: making room must not let the first sender run.
    theirs.setblocking(False)
    stream = LeanStream(ours)
    first = b"a" * LARGE
    try:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.send_all, first)
                await wait_all_tasks_blocked()
                # Room in the kernel's buffer while the first send_all still waits.
                try:
                    while theirs.recv(2**20):
                        pass
                except BlockingIOError:
                    pass
                poller = select.poll()
                poller.register(ours, select.POLLOUT)
                assert poller.poll(TIMEOUT * 1000)
                with pytest.raises(trio.BusyResourceError):
                    await stream.send_all(b"B" * 10)
                nursery.cancel_scope.cancel()
        stream.close()
        theirs.settimeout(TIMEOUT)
        rest = bytearray()
        while chunk := theirs.recv(2**20):
            rest += chunk
        assert b"B" not in rest
    finally:
        stream.close()
        theirs.close()


# Adopting trio's stream; socket options.


async def test_adopt_takes_over_a_trio_socket_stream_with_our_options() -> None:
    with trio.fail_after(TIMEOUT):
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            opened = await trio.open_tcp_stream(*listener.getsockname())
            server, _ = listener.accept()
        peer = trio.SocketStream(trio.socket.from_stdlib_socket(server))
        # trio sets the same options; clear them so the test sees adopt set them.
        opened.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        opened.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 2**20)
        fd, name = opened.socket.fileno(), opened.socket.getsockname()
        stream = LeanStream.adopt(opened)
        try:
            assert stream.socket.fileno() == fd
            assert stream.socket.getsockname() == name
            assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT) == (
                NOTSENT_LOWAT
            )
            # The old stream no longer owns the descriptor: closing it closes nothing.
            await opened.aclose()
            await stream.send_all(b"ping")
            assert await receive_exactly(peer, 4) == b"ping"
            await peer.send_all(b"pong")
            assert await receive_exactly(stream, 4) == b"pong"
        finally:
            stream.close()
            peer.socket.close()


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    "family",
    [
        socket.AF_INET,
        pytest.param(
            socket.AF_INET6,
            marks=pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback"),
        ),
    ],
)
async def test_tcp_sockets_get_nodelay_and_a_small_unsent_buffer(
    family: socket.AddressFamily,
) -> None:
    ours, theirs = tcp_sockets(family)
    streams = [LeanStream(ours), LeanStream(theirs)]
    try:
        for stream in streams:
            assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT) == (
                NOTSENT_LOWAT
            )
            assert stream.socket.getblocking() is False
    finally:
        for stream in streams:
            stream.close()


async def test_a_unix_socketpair_takes_no_tcp_options_and_works() -> None:
    ours, theirs = socket.socketpair()
    streams = LeanStream(ours), LeanStream(theirs)
    try:
        with trio.fail_after(TIMEOUT):
            await streams[0].send_all(b"over unix")
            await streams[0].send_eof()
            assert await receive_to_eof(streams[1]) == b"over unix"
    finally:
        for stream in streams:
            stream.close()
