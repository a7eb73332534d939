"""Many concurrent streaming connections through a swap group: does any connection fail?

    python benchmarks/connections.py                     # < 2 minutes, trioswap and llama-swap
    python benchmarks/connections.py --no-llama-swap     # trioswap only, ~1.5 minutes
    python benchmarks/connections.py --connections 600 --json out.json

Two models, `a` and `b`, both the bundled responder (paced: `--words` chunks at
`--tokens-per-second`, a few seconds a stream), in one `swap: true` group. A trio client (in this
process; trioswap runs in its own) opens `--connections` TCP connections at the same instant and
sends a streaming chat completion on each:

1. every stream for `a` (already running): all connections held open together;
2. the streams alternate `a`, `b`, `a`, `b`… while `a` runs: the first `b` starts a swap that
   waits for the in-flight `a` streams, later `a` requests queue behind it, then a swap back.

Every stream must end with `data: [DONE]` and all its chunks; connect errors, resets, streams
cut before [DONE], short streams, non-200 statuses and streams still open at the hard timeout
are counted apart. While each phase runs a thread samples the proxy's RSS, open fds, its model
servers' RSS and the upstream connections from /proc. The same load then runs through the
llama-swap binary (`--llama-swap`, or `$LLAMA_SWAP`) as a baseline, unless `--no-llama-swap`.
See benchmarks/README.md for what every number means.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import re
import resource
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
import llama_swap
import trio
from harness import Harness, Proc, ResponderSpec
from loadgen import ProtocolError, ResponseParser, Timed, percentile
from overhead import CHAT_PATH, chat_body, progress, words

MODELS = ("a", "b")
PHASES = {
    1: "one model",
    2: "a/b, swapping",
}
SAMPLE_INTERVAL = 0.2
LLAMA_SWAP_RESERVE = 30.0  # seconds of the --timeout budget kept for the llama-swap baseline
RESET_ERRNOS = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED}


# -- the proxies under test ------------------------------------------------------------------


@dataclass
class Target:
    name: str  # "trioswap" or "llama-swap"
    proc: Proc
    url: str
    model_ports: dict[str, int]
    info: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> tuple[str, int]:
        port = int(self.url.rsplit(":", 1)[1])
        return harness.LOCALHOST, port


def responder_entry(model: str, port: int, args: argparse.Namespace) -> dict[str, Any]:
    spec = ResponderSpec(
        model,
        port,
        tokens_per_second=args.tokens_per_second,
        response_text=words(args.words),
        python=args.python,
    )
    return spec.model_entry()


def models_and_group(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], dict]:
    ports = {model: harness.free_port() for model in MODELS}
    models = {model: responder_entry(model, port, args) for model, port in ports.items()}
    groups = {"pair": {"swap": True, "exclusive": True, "members": list(MODELS)}}
    return models, groups, ports


def start_trioswap(h: Harness, args: argparse.Namespace) -> Target:
    models, groups, ports = models_and_group(args)
    top = {} if args.trioswap_backlog is None else {"listenBacklog": args.trioswap_backlog}
    config = harness.trioswap_config(models, groups, **top)
    ts = h.start_trioswap(config, python=args.python)
    return Target("trioswap", ts.proc, ts.url, ports)


def start_llama_swap(h: Harness, args: argparse.Namespace, binary: Path) -> Target:
    models, groups, ports = models_and_group(args)
    for entry in models.values():
        # llama-swap's default concurrencyLimit (10) would answer all but 10 streams with 429.
        entry["concurrencyLimit"] = args.connections + 10
    config = {"healthCheckTimeout": 30, "models": models, "groups": groups}
    ls = llama_swap.start(h, binary, config)
    return Target("llama-swap", ls.proc, ls.url, ports)


def listen_backlog(port: int) -> str:
    """The accept-queue limit of the socket listening on `port` (ss's Send-Q for a listener)."""
    try:
        out = subprocess.run(
            ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "? (no ss)"
    fields = out.split()
    return fields[2] if len(fields) >= 3 else "?"


def open_files_limit(pid: int) -> str:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return f"{soft} (hard {hard})"
    return "?"


# -- sampling /proc while a phase runs -------------------------------------------------------


def listen_overflows() -> dict[str, int]:
    """TcpExt ListenOverflows and ListenDrops (system-wide counters)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        lines = Path("/proc/net/netstat").read_text().splitlines()
        names, values = next(
            (a.split()[1:], b.split()[1:])
            for a, b in zip(lines[::2], lines[1::2], strict=False)
            if a.startswith("TcpExt:")
        )
        table = dict(zip(names, (int(v) for v in values), strict=False))
        return {k: table.get(k, 0) for k in ("ListenOverflows", "ListenDrops")}
    return {}


def established_to(ports: Sequence[int]) -> int:
    """Established TCP connections whose local port is one of `ports` (the server side)."""
    wanted = {f"{port:04X}" for port in ports}
    count = 0
    with contextlib.suppress(OSError), open("/proc/net/tcp") as f:
        next(f, None)
        for line in f:
            fields = line.split(None, 4)
            if fields[3] == "01" and fields[1].rsplit(":", 1)[1] in wanted:
                count += 1
    return count


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class Sampler(threading.Thread):
    """Peaks of the proxy's RSS and fds, its children's (the model servers') RSS, and the
    connections open to the model servers, every SAMPLE_INTERVAL seconds."""

    def __init__(self, target: Target) -> None:
        super().__init__(name="sampler", daemon=True)
        self.target = target
        self.stop_event = threading.Event()
        self.peaks = {"rss_kib": 0, "models_rss_kib": 0, "fds": 0, "upstream": 0}
        self.samples = 0
        self.proxy_cpu_start = harness.cpu_seconds(target.proc.pid)
        # CPU seconds of each model server: first and last seen (they come and go with swaps).
        self.model_cpu: dict[int, list[float]] = {}

    def sample(self) -> None:
        pid = self.target.proc.pid
        # trioswap's children are the watchdogs; the model servers are their children.
        children = [p for c in harness.children(pid) for p in (c, *harness.children(c))]
        for child in children:
            cpu = harness.cpu_seconds(child)
            self.model_cpu.setdefault(child, [cpu, cpu])[1] = cpu
        values = {
            "rss_kib": harness.memory_kib(pid).get("VmRSS", 0),
            "models_rss_kib": sum(harness.memory_kib(c).get("VmRSS", 0) for c in children),
            "fds": fd_count(pid),
            "upstream": established_to(list(self.target.model_ports.values())),
        }
        for key, value in values.items():
            self.peaks[key] = max(self.peaks[key], value)
        self.samples += 1

    def run(self) -> None:
        while True:
            self.sample()
            if self.stop_event.wait(SAMPLE_INTERVAL):
                return

    def finish(self) -> dict[str, float]:
        self.stop_event.set()
        self.join()
        self.sample()
        return {
            **self.peaks,
            "proxy_cpu_s": harness.cpu_seconds(self.target.proc.pid) - self.proxy_cpu_start,
            "models_cpu_s": sum(last - first for first, last in self.model_cpu.values()),
        }


# -- the client -------------------------------------------------------------------------------


@dataclass
class Stream:
    model: str
    stage: str = "waiting"  # waiting, connecting, sending, head, body, then the outcome
    outcome: str = ""  # ok, short, status, closed, reset, connect, error; "" = timed out
    detail: str = ""
    connect_start: float = math.nan
    connected: float = math.nan
    timed: Timed | None = None

    def since_connect_ms(self, t: float) -> float:
        return (t - self.connect_start) * 1000.0


def request_bytes(host: str, port: int, model: str) -> bytes:
    body = chat_body(model, stream=True)
    head = (
        f"POST {CHAT_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def error_text(timed: Timed) -> str:
    """A non-200 answer as `status: message` (the message of an OpenAI-style error body)."""
    message = timed.body[:200].decode(errors="replace")
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        message = json.loads(timed.body)["error"]["message"]
    message = re.sub(r"\s+", " ", str(message))
    return f"{timed.status}: {message[:100]}"


def error_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


async def one_stream(
    stream: Stream,
    address: tuple[str, int],
    wire: bytes,
    expected_events: int,
    ready: list[int],
    all_ready: trio.Event,
    go: trio.Event,
    open_now: list[int],
) -> None:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ready[0] -= 1
    if ready[0] == 0:
        all_ready.set()
    counted = False
    with sock:
        await go.wait()
        stream.stage = "connecting"
        stream.connect_start = time.perf_counter()
        try:
            await sock.connect(address)
        except OSError as exc:
            stream.outcome, stream.detail = "connect", error_name(exc)
            return
        stream.connected = time.perf_counter()
        open_now[0] += 1
        open_now[1] = max(open_now[1], open_now[0])
        counted = True
        try:
            stream.stage = "sending"
            stream.timed = timed = Timed(sent=time.perf_counter())
            await _send_all(sock, wire)
            parser = ResponseParser(timed, keep_body=True)
            stream.stage = "head"
            while True:
                data = await sock.recv(65536)
                now = time.perf_counter()
                if not data:
                    parser.eof(now)
                    break
                if parser.feed(data, now):
                    break
                if timed.status:
                    stream.stage = "body"
            if timed.status != 200:
                stream.outcome, stream.detail = "status", error_text(timed)
            elif not timed.saw_done:
                stream.outcome, stream.detail = "closed", "no [DONE]"
            elif len(timed.event_times) < expected_events:
                stream.outcome, stream.detail = "short", str(len(timed.event_times))
            else:
                stream.outcome = "ok"
        except OSError as exc:
            reset = exc.errno in RESET_ERRNOS
            stream.outcome = "reset" if reset else "error"
            stream.detail = f"{error_name(exc)} while {stream.stage}"
        except ProtocolError as exc:
            stream.outcome, stream.detail = "closed", f"{exc} (while {stream.stage})"
        finally:
            if counted:
                open_now[0] -= 1


async def _send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        sent = await sock.send(view)
        view = view[sent:]


@dataclass
class PhaseRun:
    streams: list[Stream]
    went: float  # perf_counter when the connections were opened
    wall: float  # seconds from opening them to the last stream's end (or the timeout)
    timed_out: bool
    peak_open: int
    interrupted: str = ""


async def run_streams(
    address: tuple[str, int], models: Sequence[str], expected_events: int, timeout: float
) -> PhaseRun:
    host, port = address
    wires = {m: request_bytes(host, port, m) for m in set(models)}
    streams = [Stream(model) for model in models]
    ready = [len(streams)]
    all_ready, go = trio.Event(), trio.Event()
    open_now = [0, 0]  # now, peak
    interrupted = ""
    went = math.nan

    async def watch_signals(cancel: trio.CancelScope) -> None:
        nonlocal interrupted
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                interrupted = signal.Signals(signum).name
                cancel.cancel()
                return

    timed_out = False
    async with trio.open_nursery() as outer:
        outer.start_soon(watch_signals, outer.cancel_scope)
        with trio.move_on_after(timeout) as scope:
            async with trio.open_nursery() as nursery:
                for stream in streams:
                    nursery.start_soon(
                        one_stream,
                        stream,
                        address,
                        wires[stream.model],
                        expected_events,
                        ready,
                        all_ready,
                        go,
                        open_now,
                    )
                await all_ready.wait()
                went = time.perf_counter()
                go.set()
        timed_out = scope.cancelled_caught
        outer.cancel_scope.cancel()
    if interrupted:
        raise KeyboardInterrupt(f"received {interrupted}")
    return PhaseRun(streams, went, time.perf_counter() - went, timed_out, open_now[1])


def run_trio(
    address: tuple[str, int], models: Sequence[str], expected_events: int, timeout: float
) -> PhaseRun:
    try:
        return trio.run(run_streams, address, models, expected_events, timeout)
    except BaseExceptionGroup as group:
        if group.subgroup(KeyboardInterrupt) is not None:
            raise KeyboardInterrupt("interrupted") from None
        raise


# -- one phase, summarised -------------------------------------------------------------------


def pcts(values: list[float]) -> dict[str, float]:
    values = sorted(v for v in values if not math.isnan(v))
    return {
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": values[-1] if values else math.nan,
    }


def summarise(run: PhaseRun, peaks: dict[str, float], hwm_kib: int, overflow: dict) -> dict:
    streams = run.streams
    outcomes = Counter(s.outcome or "timeout" for s in streams)
    details: dict[str, Counter[str]] = {}
    for s in streams:
        kind = s.outcome or "timeout"
        if kind != "ok":
            details.setdefault(kind, Counter())[s.detail or f"still {s.stage}"] += 1
    connect, ttfb, first_event, whole = [], [], [], []
    for s in streams:
        if not math.isnan(s.connected):
            connect.append(s.since_connect_ms(s.connected))
        if s.timed is not None:
            ttfb.append(s.since_connect_ms(s.timed.first_byte))
            if s.timed.event_times:
                first_event.append(s.since_connect_ms(s.timed.event_times[0]))
        if s.outcome == "ok" and s.timed is not None:
            whole.append(s.since_connect_ms(s.timed.done))
    return {
        "streams": len(streams),
        "by_model": dict(Counter(s.model for s in streams)),
        "outcomes": dict(outcomes),
        "details": {k: dict(v) for k, v in details.items()},
        "failed": len(streams) - outcomes["ok"],
        "timed_out": run.timed_out,
        "wall_s": run.wall,
        "peak_open_client_connections": run.peak_open,
        "connect_ms": pcts(connect),
        "ttfb_ms": pcts(ttfb),
        "first_event_ms": pcts(first_event),
        "whole_stream_ms": pcts(whole),
        "peaks": peaks,
        "proxy_vmhwm_kib": hwm_kib,
        "listen_overflows": overflow,
    }


def run_phase(
    target: Target, phase: int, connections: int, expected: int, timeout: float
) -> dict[str, Any]:
    # Phase 2 alternates, so the first `b` arrives while the first `a` streams are in flight.
    models = ["a"] * connections if phase == 1 else [MODELS[i % 2] for i in range(connections)]
    progress(
        f"{target.name}: phase {phase} ({PHASES[phase]}): {connections} streams at once "
        f"(hard timeout {timeout:.0f}s)"
    )
    before = listen_overflows()
    sampler = Sampler(target)
    sampler.start()
    try:
        run = run_trio(target.address, models, expected, timeout)
    finally:
        peaks = sampler.finish()
    after = listen_overflows()
    overflow = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    hwm = harness.memory_kib(target.proc.pid).get("VmHWM", 0)
    result = summarise(run, peaks, hwm, overflow)
    ok = result["outcomes"].get("ok", 0)
    progress(
        f"{target.name}: phase {phase}: {ok}/{connections} ok in {run.wall:.1f}s; "
        f"failures {result['details'] or 'none'}"
    )
    return result


def warm_up(target: Target, args: argparse.Namespace) -> int:
    """One stream for `a` (which starts it); returns its number of events, which every stream
    of the load must reach."""
    progress(f"{target.name}: starting model a (one stream)")
    run = run_trio(target.address, ["a"], 0, 60.0)
    stream = run.streams[0]
    if stream.outcome != "ok" or stream.timed is None:
        raise RuntimeError(
            f"{target.name}: warm-up stream failed: {stream.outcome} {stream.detail}"
        )
    return len(stream.timed.event_times)


def run_target(
    target: Target, args: argparse.Namespace, deadline: float
) -> tuple[dict[int, dict[str, Any]], list[str]]:
    notes: list[str] = []
    target.info["listen backlog"] = listen_backlog(target.address[1])
    target.info["open files limit"] = open_files_limit(target.proc.pid)
    expected = warm_up(target, args)
    target.info["events per stream"] = str(expected)
    target.info["model a listen backlog"] = listen_backlog(target.model_ports["a"])
    results: dict[int, dict[str, Any]] = {}
    for index, phase in enumerate(args.phases):
        left = deadline - time.monotonic()
        if left < 5:
            notes.append(f"{target.name} phase {phase} skipped: the --timeout budget ran out")
            progress(notes[-1])
            continue
        # A fair share of what is left, so that a slow phase 1 does not starve phase 2.
        share = left / (len(args.phases) - index)
        results[phase] = run_phase(
            target, phase, args.connections, expected, min(args.phase_timeout, share)
        )
        time.sleep(1.0)  # let closing connections settle before the next phase
    return results, notes


# -- the report --------------------------------------------------------------------------------


def fmt(value: float, scale: float = 1.0, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value / scale:,.{digits}f}"


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}" if kib else "-"


def pair(stats: dict[str, float], scale: float = 1.0, digits: int = 0) -> str:
    return f"{fmt(stats['p50'], scale, digits)} / {fmt(stats['p99'], scale, digits)}"


STILL = {
    "waiting": "not started",
    "connecting": "still connecting",
    "sending": "still sending the request",
    "head": "no response headers yet",
    "body": "still streaming",
}
KINDS = {
    "connect": "connect error",
    "reset": "reset",
    "error": "socket error",
    "closed": "closed before [DONE]",
    "short": "short stream",
    "status": "status",
    "timeout": "open at the hard timeout",
}


def count_cell(result: dict[str, Any], kind: str) -> str:
    total = result["outcomes"].get(kind, 0)
    return f"**{total}**" if total else "0"


def failure_lines(column: str, result: dict[str, Any]) -> list[str]:
    """What went wrong in one column, one line per kind and detail."""
    lines = []
    for kind, details in result["details"].items():
        for detail, n in sorted(details.items(), key=lambda item: -item[1]):
            text = STILL.get(detail.removeprefix("still "), detail) if kind == "timeout" else detail
            lines.append(f"{column}: {n} x {KINDS.get(kind, kind)}: {text}")
    return lines


ROWS: list[tuple[str, Any]] = [
    ("streams (a / b)", lambda r: " / ".join(str(r["by_model"].get(m, 0)) for m in MODELS)),
    ("completed: 200, every chunk, [DONE]", lambda r: str(r["outcomes"].get("ok", 0))),
    ("connect errors", lambda r: count_cell(r, "connect")),
    ("connection resets", lambda r: count_cell(r, "reset")),
    ("other socket errors", lambda r: count_cell(r, "error")),
    ("closed before [DONE]", lambda r: count_cell(r, "closed")),
    ("short streams (fewer chunks)", lambda r: count_cell(r, "short")),
    ("non-200 statuses", lambda r: count_cell(r, "status")),
    ("still open at the hard timeout", lambda r: count_cell(r, "timeout")),
    ("peak client connections open at once", lambda r: str(r["peak_open_client_connections"])),
    ("peak upstream connections (sampled)", lambda r: str(r["peaks"]["upstream"])),
    ("connect p50 / p99 (ms)", lambda r: pair(r["connect_ms"], digits=1)),
    ("first byte p50 / p99 (ms)", lambda r: pair(r["ttfb_ms"])),
    ("first event p50 / p99 (ms)", lambda r: pair(r["first_event_ms"])),
    ("whole stream p50 / p99 (s)", lambda r: pair(r["whole_stream_ms"], 1000.0, 2)),
    ("phase wall time (s)", lambda r: fmt(r["wall_s"], digits=1)),
    ("proxy RSS peak, sampled (MiB)", lambda r: mib(r["peaks"]["rss_kib"])),
    ("proxy VmHWM since start (MiB)", lambda r: mib(r["proxy_vmhwm_kib"])),
    ("model servers' RSS peak, sampled (MiB)", lambda r: mib(r["peaks"]["models_rss_kib"])),
    ("proxy open fds peak, sampled", lambda r: str(r["peaks"]["fds"])),
    ("proxy CPU time (s)", lambda r: fmt(r["peaks"]["proxy_cpu_s"], digits=1)),
    ("model servers' CPU time (s)", lambda r: fmt(r["peaks"]["models_cpu_s"], digits=1)),
    (
        "listen overflows / drops (system-wide)",
        lambda r: " / ".join(
            str(r["listen_overflows"].get(k, "?")) for k in ("ListenOverflows", "ListenDrops")
        ),
    ),
]


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table, its columns padded to line up in a terminal too; the first column is
    left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [cells[0].ljust(widths[0])]
        padded += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "-" * (widths[0] + 2) + "".join(f"|{'-' * (w + 1)}:" for w in widths[1:]) + "|"
    return [line(header), rule, *(line(row) for row in rows)]


def report(
    results: dict[str, dict[int, dict[str, Any]]],
    targets: dict[str, Target],
    args: argparse.Namespace,
) -> list[str]:
    columns = [(name, phase) for name in results for phase in results[name]]
    header = [""] + [f"{name}: {phase}. {PHASES[phase]}" for name, phase in columns]
    rows = [[label] + [cell(results[n][p]) for n, p in columns] for label, cell in ROWS]
    title = (
        f"{args.connections} concurrent streaming connections through a swap group "
        f"({args.words} chunks at {args.tokens_per_second:g} tokens/s per stream)"
    )
    lines = [title, "-" * len(title)]
    lines += markdown_table(header, rows)
    for (name, phase), column in zip(columns, header[1:], strict=True):
        lines += [f"  * {line}" for line in failure_lines(column, results[name][phase])]
    for name, target in targets.items():
        facts = "; ".join(f"{k} {v}" for k, v in target.info.items())
        lines.append(f"  * {name}: {facts}")
    lines.append(
        "  * times are from the client's connect() call (all connections opened at the same "
        "instant): first byte = the status line, whole stream = data: [DONE]"
    )
    return lines


def verdicts(results: dict[str, dict[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    targets = []
    for phase, result in results.get("trioswap", {}).items():
        failed = result["failed"]
        targets.append(
            {
                "name": f"{result['streams']} concurrent streams, phase {phase} ({PHASES[phase]}): "
                "failed connections/streams",
                "value": str(failed),
                "target": "0",
                "met": failed == 0,
            }
        )
    return targets


# -- main -------------------------------------------------------------------------------------


def raise_fd_limit(needed: int) -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise SystemExit(f"this process may open {soft} files; {needed} needed (raise ulimit -Hn)")
    return str(soft)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = harness.arg_parser(
        "Many concurrent streaming connections through a swap group: resets, RSS, latency."
    )
    parser.add_argument("--connections", type=int, default=1000, help="streams opened at once")
    parser.add_argument("--tokens-per-second", type=float, default=5.0, help="responder pace")
    parser.add_argument("--words", type=int, default=15, help="chunks per stream")
    parser.add_argument("--phases", default="1,2", help="1: one model; 2: a/b alternating")
    parser.add_argument(
        "--trioswap-backlog",
        type=int,
        help="trioswap's listenBacklog (default: not set, i.e. trioswap's default)",
    )
    llama_swap.add_args(parser)
    parser.add_argument(
        "--phase-timeout", type=float, default=40.0, help="hard limit of one phase (seconds)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=110.0,
        help="wall-clock budget for all the phases (seconds): a phase gets at most what is left; "
        "the whole run is stopped (every process) at this plus 30",
    )
    harness.add_common_args(
        parser,
        keep_logs_help="keep the proxies' and responders' logs",
        python_help="interpreter for trioswap and the responders",
    )
    args = parser.parse_args(argv)
    args.phases = sorted({int(p) for p in args.phases.split(",") if p})
    if not set(args.phases) <= set(PHASES):
        parser.error("--phases takes 1 and/or 2")
    return args


def trioswap_source(python: str) -> str:
    """Where `python` imports trioswap from (a checkout's src/, or $PYTHONPATH's)."""
    try:
        out = subprocess.run(
            [python, "-c", "import trioswap; print(trioswap.__file__)"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return str(Path(out.stdout.strip()).parent) if out.returncode == 0 else "not importable"


def watchdog(seconds: float) -> threading.Timer:
    """SIGTERM ourselves after `seconds`: the harness then stops every process."""
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGTERM))
    timer.daemon = True
    timer.start()
    return timer


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    fd_limit = raise_fd_limit(2 * args.connections + 100)
    info = harness.machine_info()
    busy = harness.busy_processes()
    print(
        "\n".join(
            [
                "trioswap concurrent connections benchmark",
                *harness.machine_lines(info, python=args.python, busy=busy),
                f"trioswap:  {trioswap_source(args.python)}",
                f"client:    trio {trio.__version__}, one process, open files limit {fd_limit}",
            ]
        ),
        flush=True,
    )
    deadline = began + args.timeout
    timer = watchdog(args.timeout + 30)
    results: dict[str, dict[int, dict[str, Any]]] = {}
    targets: dict[str, Target] = {}
    notes: list[str] = []
    llama_swap_missing = ""
    try:
        with Harness(keep_logs=args.keep_logs) as h, h.reporting("trioswap", "llama-swap"):
            binary, llama_swap_about = llama_swap.binary(args)
            if binary is None:
                llama_swap_missing = llama_swap_about
            else:
                print(f"baseline:  llama-swap {llama_swap_about}", flush=True)
            print(flush=True)
            progress("starting trioswap")
            target = start_trioswap(h, args)
            targets["trioswap"] = target
            # llama-swap needs much less (~8 + ~12 s of phases on a busy 2-core machine).
            reserve = LLAMA_SWAP_RESERVE if binary is not None else 0.0
            results["trioswap"], more = run_target(target, args, deadline - reserve)
            notes += more
            h.forget(target.proc)  # stops it and its model servers before the baseline
            if binary is not None:
                if deadline - time.monotonic() < LLAMA_SWAP_RESERVE / 2:
                    llama_swap_missing = "skipped: the --timeout budget ran out"
                else:
                    progress("starting llama-swap")
                    target = start_llama_swap(h, args, binary)
                    targets["llama-swap"] = target
                    results["llama-swap"], more = run_target(target, args, deadline)
                    notes += more
    finally:
        timer.cancel()
    print("\n".join(report(results, targets, args)))
    for note in notes:
        print(f"  * {note}")
    if llama_swap_missing:
        print(f"  * llama-swap baseline not run: {llama_swap_missing}")
    print()
    found = verdicts(results)
    harness.print_targets(
        f"{t['name']}: {t['value']} (target {t['target']}): {'met' if t['met'] else 'NOT MET'}"
        for t in found
    )
    print(harness.end_line(began))
    if args.json:
        raw = {
            "machine": info,
            "options": {k: v for k, v in vars(args).items() if k != "json"},
            "targets": found,
            "results": {
                name: {str(p): r for p, r in runs.items()} for name, runs in results.items()
            },
            "proxies": {name: t.info for name, t in targets.items()},
            "llama_swap_missing": llama_swap_missing,
            "notes": notes,
        }
        args.json.write_text(json.dumps(raw, indent=2, default=str))
        print(f"raw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    harness.run_main(main)
