"""Where a model server may listen: its own port if nobody else does, else the next free one.

Ports from `startPort` are given out by a hash of the model id, so they may land on a service
that already runs there (or on a server another trioswap started). Such a server would answer
the health check and get the model's traffic while the real one dies with "address in use". So
right before a start, the port is tried: a bind with SO_REUSEADDR fails when anything listens on
it (on 0.0.0.0 or a single address) but not for connections lingering in TIME_WAIT.
"""

from __future__ import annotations

import socket
from collections.abc import Set

from trioswap.config import PORT_SPAN, ModelConfig


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def place(config: ModelConfig, start_port: int, avoid: Set[int]) -> ModelConfig | None:
    """The model's config for a start now: as it is when its port is free (or it has no port of
    trioswap's); else moved to the next free port of `startPort … startPort+PORT_SPAN-1` that is
    not in `avoid`; None when there is none."""
    if config.port is None or config.with_port is None or port_is_free(config.port):
        return config
    for step in range(1, PORT_SPAN):
        port = start_port + (config.port - start_port + step) % PORT_SPAN
        if port not in avoid and port_is_free(port):
            return config.with_port(port)
    return None
