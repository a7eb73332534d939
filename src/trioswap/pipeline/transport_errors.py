"""How a request to an upstream fails below HTTP's meaning: the exceptions trioswap's own client
(`wire.ConnectionPool`) raises. They keep httpcore's names and meanings (its classes were used
before there was a client of our own), without importing httpcore at startup. The one boundary
that turns them into trioswap's errors is `upstream.upstream_errors`.

    TransportError
    ├── TimeoutException
    │   ├── ConnectTimeout
    │   │   └── TLSHandshakeTimeout
    │   ├── ReadTimeout
    │   └── WriteTimeout
    ├── NetworkError
    │   ├── ConnectError
    │   ├── ReadError
    │   └── WriteError
    ├── ProtocolError
    │   ├── RemoteProtocolError
    │   └── LocalProtocolError
    └── UnsupportedProtocol
"""

from __future__ import annotations


class TransportError(Exception):
    """A request to an upstream failed before or while its response came."""


class TimeoutException(TransportError):
    """A bound on waiting for the upstream passed."""


class ConnectTimeout(TimeoutException):
    """Connecting (name lookup included) took longer than `timeouts.connect`."""


class TLSHandshakeTimeout(ConnectTimeout):
    """An https upstream's TLS handshake took longer than `timeouts.tlsHandshake`."""


class ReadTimeout(TimeoutException):
    """The upstream sent nothing for longer than the read timeout."""


class WriteTimeout(TimeoutException):
    """The upstream took none of the request for longer than the write timeout."""


class NetworkError(TransportError):
    """The connection could not be made or broke."""


class ConnectError(NetworkError):
    """Connecting failed: refused, no such host, a failed TLS handshake."""


class ReadError(NetworkError):
    """Reading from the upstream failed (e.g. the connection was reset)."""


class WriteError(NetworkError):
    """Writing to the upstream failed (e.g. it closed the connection)."""


class ProtocolError(TransportError):
    """An exchange HTTP/1.1 does not allow."""


class RemoteProtocolError(ProtocolError):
    """The upstream's response broke HTTP/1.1 (or it closed without one)."""


class LocalProtocolError(ProtocolError):
    """The request cannot be sent as HTTP/1.1 (a target, header or body framing it refuses)."""


class UnsupportedProtocol(TransportError):
    """A URL whose scheme is not http or https."""
