"""Builds the object graph (supervisor, pipelines, web) and owns the root nursery."""

from __future__ import annotations

import ipaddress
import logging
import resource
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import trio

from trioswap.config import Config, ModelConfig
from trioswap.discovery.ollama import PREFIX as OLLAMA_PREFIX
from trioswap.discovery.ollama import Ollama
from trioswap.observe.activity import MEMORY, ActivityStore
from trioswap.observe.captures import CaptureRing
from trioswap.observe.events import EventHub
from trioswap.observe.inflight import InflightRegistry
from trioswap.observe.logs import HubHandler, LogHub
from trioswap.observe.metrics import Metrics
from trioswap.observe.observability import Observability
from trioswap.observe.system import SystemStats
from trioswap.observe.timeformat import LogFormatter
from trioswap.pipeline.loader import RouteTable, load_routes
from trioswap.pipeline.stage import StageContext
from trioswap.pipeline.upstream import close_idle_connections, open_upstream_pools
from trioswap.runtime import RuntimeState
from trioswap.supervisor import Supervisor
from trioswap.web.front import Front
from trioswap.web.guard import Guard
from trioswap.web.inflight import InFlight
from trioswap.web.internal import Internal

log = logging.getLogger("trioswap")

# How long exchanges cut at shutdown get to send their error before everything is cancelled.
CUT_GRACE = 2.0

LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


def setup_logging(level: str, time_format: str, logs: LogHub) -> None:
    """trioswap's own log goes into the hub, which copies it to stdout if logToStdout says so."""
    root = logging.getLogger("trioswap")
    root.setLevel(LOG_LEVELS[level])
    root.propagate = False
    handler = HubHandler(logs)
    handler.setFormatter(LogFormatter(time_format))
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
    state_file: Path,
    activity: ActivityStore,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled or until SIGINT/SIGTERM (see `shut_down`); then stop every model
    server. `state_file` keeps the runtime overrides (see `trioswap.runtime`); `activity` (see
    `open_activity`) is closed on the way out."""
    prefix = None if config.ollama is None else OLLAMA_PREFIX
    runtime = await RuntimeState.load(state_file, config.models, prefix)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            open_upstream_pools(config) as pools,
            activity,
            trio.open_nursery() as nursery,
        ):

            async def before_stop(model: ModelConfig) -> None:
                await close_idle_connections(pools(model.timeouts), model.proxy)

            supervisor = Supervisor(config, logs, before_stop, runtime.launch)
            await nursery.start(supervisor.run)
            ollama = None
            if config.ollama is not None:
                ollama = Ollama(config.ollama, config, pools)
                await nursery.start(ollama.run)
            context = StageContext(
                config=config,
                supervisor=supervisor,
                upstream_pools=pools,
                runtime=runtime,
                ollama=ollama,
            )
            routes = load_routes(context)
            observability = observe(config, supervisor, activity, routes)
            runtime.snapshot_listeners.append(observability.optimized)
            await nursery.start(observability.run, logs)
            guard = Guard(
                _not_built,
                routes,
                loopback=is_loopback(listener),
                cors_origins=config.cors_origins,
                allowed_hosts=config.allowed_hosts,
            )

            def control_plane() -> Guard:
                # Imported here: Quart and the UI load while the front already answers.
                from trioswap.web.asgi import shield_last_body
                from trioswap.web.control import create_control_app, require_key
                from trioswap.web.upstream_websocket import UpstreamWebsockets

                control = create_control_app(
                    config, supervisor, logs, context.learned_apis, runtime, ollama, observability
                )
                guard.app = shield_last_body(
                    require_key(UpstreamWebsockets(control, config, supervisor), config.api_keys)
                )
                return guard

            internal = Internal(control_plane, config.shutdown_timeout + CUT_GRACE)
            front = Front(
                routes,
                guard,
                internal,
                body_limit=config.max_request_body,
                body_timeout=config.request_body_timeout,
                observability=observability,
            )
            stop_accepting = trio.Event()
            binds = await nursery.start(front.serve, listener, stop_accepting)
            await nursery.start(internal.run)
            task_status.started(binds)
            await shut_down(signals, stop_accepting, front.in_flight, config.shutdown_timeout)
            log.info("stopping model servers")
            observability.events.close()
            nursery.cancel_scope.cancel()


async def _not_built(scope: object, receive: object, send: object) -> None:
    raise RuntimeError("the control plane is not built yet")


async def open_activity(config: Config) -> ActivityStore:
    """The activity store: `store.path`'s file, or memory (`metricsMaxInMemory` records)."""
    path = config.observe.store_path or MEMORY
    return await ActivityStore.open(path, max_in_memory=config.observe.max_in_memory)


def observe(
    config: Config, supervisor: Supervisor, activity: ActivityStore, routes: RouteTable
) -> Observability:
    events = EventHub()
    system = SystemStats(
        every=config.observe.performance_every, disabled=config.observe.performance_disabled
    )
    capture_bytes = config.observe.capture_bytes
    return Observability(
        config,
        supervisor,
        activity,
        events,
        InflightRegistry(events),
        CaptureRing(capture_bytes) if capture_bytes > 0 else None,
        Metrics(
            statuses=supervisor.statuses,
            system=system,
            routes=routes.exact.keys(),
            route_prefixes=[prefix for prefix, _ in routes.prefixes],
        ),
        system,
    )


async def shut_down(
    signals: AsyncIterator[int], stop_accepting: trio.Event, in_flight: InFlight, grace: float
) -> None:
    """Return once SIGINT/SIGTERM has stopped the serving: the listener closes at once, requests
    in flight get `grace` seconds (shutdownTimeout) to finish, and those still running then end
    with an error in their API family. A second signal ends them at once."""
    name = signal.Signals(await anext(signals)).name
    log.info(
        "received %s: accepting no more connections; %d requests in flight get up to %g s "
        "(shutdownTimeout) to finish; %s again stops at once",
        name,
        len(in_flight),
        grace,
        name,
    )
    stop_accepting.set()
    in_flight.close()
    async with trio.open_nursery() as wait:

        async def second_signal() -> None:
            again = signal.Signals(await anext(signals)).name
            log.info("received %s again: stopping at once", again)
            wait.cancel_scope.cancel()

        wait.start_soon(second_signal)
        with trio.move_on_after(grace):
            await in_flight.idle()
        wait.cancel_scope.cancel()
    if len(in_flight):
        log.info("ending %d requests still in flight", len(in_flight))
        in_flight.cut()
        with trio.move_on_after(CUT_GRACE):
            await in_flight.idle()
