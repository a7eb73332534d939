"""Builds the object graph (supervisor, pipelines, web) and owns the root nursery."""

from __future__ import annotations

import ipaddress
import logging
import resource
import signal
import socket
import sys

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from trioswap.config import Config, ModelConfig
from trioswap.observe.logs import HubHandler, LogHub
from trioswap.pipeline.loader import load_routes
from trioswap.pipeline.stage import StageContext
from trioswap.pipeline.upstream import close_idle_connections, open_upstream_pool
from trioswap.supervisor import Supervisor
from trioswap.web.asgi import ProxyApp
from trioswap.web.control import create_control_app
from trioswap.web.guard import Guard

log = logging.getLogger("trioswap")

LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


def setup_logging(level: str, logs: LogHub) -> None:
    root = logging.getLogger("trioswap")
    root.setLevel(LOG_LEVELS[level])
    root.propagate = False
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    for handler in (logging.StreamHandler(sys.stderr), HubHandler(logs)):
        handler.setFormatter(formatter)
        root.addHandler(handler)


def raise_open_file_limit() -> None:
    """Every proxied request holds two sockets; allow as many as the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def bind_listener(listen: str, backlog: int) -> socket.socket:
    """Bind HOST:PORT ourselves, so a bad address is one clear error before anything starts."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"--listen takes HOST:PORT, not {listen!r}")
    host = host.strip("[]") or "0.0.0.0"
    family, kind, proto, _, address = socket.getaddrinfo(
        host, int(port_text), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def is_loopback(sock: socket.socket) -> bool:
    host = sock.getsockname()[0]
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def run(
    config: Config,
    listener: socket.socket,
    logs: LogHub,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled or until SIGINT/SIGTERM; then stop every model server."""
    hypercorn_config = HypercornConfig()
    loopback = is_loopback(listener)
    hypercorn_config.bind = [f"fd://{listener.detach()}"]
    hypercorn_config.accesslog = None
    hypercorn_config.errorlog = logging.getLogger("trioswap.http")
    hypercorn_config.keep_alive_timeout = 75
    # hypercorn calls listen() again on the socket it is given, with this backlog.
    hypercorn_config.backlog = config.listen_backlog
    # Proxied responses carry the model server's own Server header.
    hypercorn_config.include_server_header = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            open_upstream_pool() as pool,
            trio.open_nursery() as nursery,
        ):

            async def before_stop(model: ModelConfig) -> None:
                await close_idle_connections(pool, model.proxy)

            supervisor = Supervisor(config, logs, before_stop)
            await nursery.start(supervisor.run)
            context = StageContext(config=config, supervisor=supervisor, upstream_pool=pool)
            routes = load_routes(context)
            app = Guard(
                ProxyApp(routes, create_control_app(config, supervisor, logs)),
                routes,
                loopback=loopback,
                cors_origins=config.cors_origins,
                allowed_hosts=config.allowed_hosts,
            )
            binds = await nursery.start(serve, app, hypercorn_config)
            task_status.started(binds)
            async for signum in signals:
                log.info("received %s; stopping model servers", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
