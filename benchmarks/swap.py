"""Swap latency between two real llama-server models, through trioswap, split into phases.

    python benchmarks/swap.py               # ~50 s
    python benchmarks/swap.py --swaps 12 --idle-swaps 0

trioswap runs the shipped `config/smollm2.yaml` as it is (only the cache folder and startPort
changed, as tests/test_real.py does): `smollm2` and `smollm2-8k`, the same SmolLM2-135M file with
different context sizes, in one `swap: true` group. With one of them running, the benchmark asks
for the other one (a streaming chat completion on a fresh connection) and times request sent ->
first byte. overhead.py's SwapWatcher looks at each swap from outside (the old member's process
exiting, trioswap forking the new one, the new one's first 200 on /health). After each swap the
benchmark starts the same llama-server command itself, on a port of its own, and times its
start-up (spawn -> healthy), its first request's first byte and its exit (SIGTERM -> exited):
those are the upstream's own times, which trioswap cannot make shorter. trioswap's own share is
the rest.

Two runs: swaps back to back (0.3 s after the previous request) and swaps after 6 s of idle,
longer than llama-server's 5 s keep-alive timeout: llama-server takes ~100 ms longer to exit while
an idle keep-alive connection to it is open, and for 5 s after a model started trioswap has one
(its health checker's pooled connection; see the "old stopped listening -> old exited" row).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import harness
import loadgen
from harness import Harness, Trioswap
from loadgen import RawClient, Timed
from overhead import CHAT_PATH, SwapWatcher, Table, Timeline, fmt, progress, verdict

from trioswap.assets import data_folder

TARGET_OWN_SHARE_MS = 50.0
MODELS = ("smollm2", "smollm2-8k")


def swap_body(model: str) -> bytes:
    # Streaming: llama-server sends its headers before it evaluates the prompt, so the first byte
    # is the request reaching a ready server, not the model's speed.
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Name a color."}],
        "max_tokens": 4,
        "temperature": 0,
        "stream": True,
    }
    return json.dumps(body).encode()


def smollm2_config() -> str:
    text = (data_folder("config") / "smollm2.yaml").read_text()
    text = text.replace("cache: ${env.HOME}/.cache/trioswap", f"cache: {harness.CACHE}")
    start_port = harness.free_port_block(1000, 20000, 40000)
    return re.sub(r"(?m)^startPort: \d+", f"startPort: {start_port}", text)


def request(url: str, model: str, client: RawClient | None = None) -> Timed:
    """The swap request on a fresh connection (or `client`'s), read to the end."""
    own = client is None
    client = client or RawClient(url)
    try:
        client.connect()
        timed = client.request("POST", CHAT_PATH, swap_body(model))
    finally:
        if own:
            client.close()
    if timed.status != 200 or not timed.saw_done:
        raise RuntimeError(f"request for {model}: {timed.status} {timed.body[:300]!r}")
    return timed


@dataclass
class Direct:
    """The same llama-server command run by the benchmark alone."""

    healthy_ms: float  # Popen -> first 200 on /health
    first_byte_ms: float  # its first request: sent -> first byte
    keep_alive: bool  # whether an idle keep-alive connection was open at SIGTERM
    unlisten_ms: float  # SIGTERM -> its port no longer listening
    exit_ms: float  # SIGTERM -> exited


def run_directly(h: Harness, argv: list[str], keep_alive_open: bool) -> Direct:
    """Start `argv` (a member's command line) on a port of its own: time spawn -> healthy and the
    swap request's first byte; then SIGTERM -> stopped listening -> exited, with no connection
    open, or with an idle keep-alive connection on which /health was answered (as a health
    checker with a connection pool leaves one)."""
    argv = list(argv)
    port = harness.free_port()
    argv[argv.index("--port") + 1] = str(port)
    url = f"http://{harness.LOCALHOST}:{port}"
    proc = h.spawn("llama-direct", argv)
    try:
        healthy = harness.wait_healthy(url, timeout=60, interval=0.002, alive=proc.alive)
        healthy_ms = (healthy - proc.started_at) * 1000.0
        timed = request(url, "direct")
        client = RawClient(url)
        if keep_alive_open:
            client.request("GET", "/health")
        time.sleep(0.2)
        sent = time.perf_counter()
        os.killpg(proc.pid, signal.SIGTERM)
        unlisten = math.nan
        while proc.popen.poll() is None:
            if math.isnan(unlisten) and not harness.listening(port):
                unlisten = time.perf_counter()
            time.sleep(0.0005)
        exited = time.perf_counter()
        if math.isnan(unlisten):
            unlisten = exited
        client.close()
    finally:
        h.forget(proc)
    return Direct(
        healthy_ms,
        timed.ttfb_ms,
        keep_alive_open,
        (unlisten - sent) * 1000.0,
        (exited - sent) * 1000.0,
    )


class ListenWatcher:
    """When a port stops listening (llama-server closes its listener right after SIGTERM, so
    this is about when the stop reached it); polls /proc/net/tcp every 0.5 ms."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stopped = math.nan
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="listen-watcher", daemon=True)

    def __enter__(self) -> ListenWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._done.is_set():
            if not harness.listening(self.port):
                self.stopped = time.perf_counter()
                return
            time.sleep(0.0005)


def watched_swap(ts: Trioswap, old: str, new: str, urls: dict[str, str]) -> tuple[Timeline, float]:
    """One swap; returns its timeline and when the old member stopped listening."""
    old_pid = ts.model_pid(old)
    if old_pid is None:
        raise RuntimeError(f"'{old}' is not running before the swap to '{new}'")
    old_port = urlsplit(urls[old]).port or 80
    # llama-server runs with `--alias ${MODEL_ID}`: that names the member in its command line.
    with (
        SwapWatcher(ts.pid, old_pid, new, urls[new], member_flag="--alias") as watcher,
        ListenWatcher(old_port) as listen,
    ):
        timed = request(ts.url, new)
    timeline = Timeline(
        timed.sent, timed.first_byte, watcher.old_exited, watcher.new_spawned, watcher.new_healthy
    )
    if any(math.isnan(v) for v in [*timeline.phases_ms().values(), listen.stopped]):
        raise RuntimeError(f"swap {old} -> {new}: the watcher missed a step: {timeline}")
    return timeline, listen.stopped


def warm_up(ts: Trioswap) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Start each member once; returns their URLs and command lines."""
    urls: dict[str, str] = {}
    argvs: dict[str, list[str]] = {}
    progress("warm-up: starting each member once (ports and command lines)")
    for model in (*MODELS, MODELS[0]):
        request(ts.url, model)
        for entry in ts.running():
            if entry["model"] == model:
                urls[model] = str(entry["proxy"])
                argvs[model] = harness.cmdline(int(entry["pid"]))
    return urls, argvs


def swaps(
    h: Harness,
    ts: Trioswap,
    urls: dict[str, str],
    argvs: dict[str, list[str]],
    count: int,
    pause: float,
) -> tuple[Table, dict[str, Any]]:
    timelines: list[Timeline] = []
    unlistened: list[float] = []  # request sent -> the old member stopped listening (ms)
    direct: list[Direct] = []
    for index in range(count):
        old, new = (MODELS[0], MODELS[1]) if index % 2 == 0 else (MODELS[1], MODELS[0])
        progress(f"swap {index + 1}/{count} ({pause:g}s after the last request): {old} -> {new}")
        time.sleep(pause)
        timeline, stopped = watched_swap(ts, old, new, urls)
        timelines.append(timeline)
        unlistened.append((stopped - timeline.sent) * 1000.0)
        # The same command alone; every other time with an idle keep-alive connection left open.
        direct.append(run_directly(h, argvs[new], keep_alive_open=index % 2 == 1))

    def p50(xs: Sequence[float]) -> float:
        return loadgen.percentile(sorted(xs), 50)

    def both(xs: Sequence[float], digits: int = 1) -> str:
        return f"{fmt(p50(xs), digits)} / {fmt(max(xs), digits)}" if xs else "-"

    phases = {key: [t.phases_ms()[key] for t in timelines] for key in timelines[0].phases_ms()}
    idle = [d for d in direct if not d.keep_alive]
    kept = [d for d in direct if d.keep_alive]
    exit_idle = p50([d.exit_ms for d in idle])
    first_byte = p50([d.first_byte_ms for d in direct])
    own = [
        t.phases_ms()["total"] - t.phases_ms()["startup"] - exit_idle - first_byte
        for t in timelines
    ]
    own_p50 = p50(own)
    met = own_p50 <= TARGET_OWN_SHARE_MS
    table = Table(
        f"Swap between two llama-server models (config/smollm2.yaml: {MODELS[0]} <-> {MODELS[1]}),"
        f" {count} swaps, each {pause:g}s after the last request (then a direct run of the new "
        "member's command)"
    )
    table.add("(ms, p50 / max)")
    table.add("swap: request sent -> first byte", "", both(phases["total"]))
    table.add(
        "  request sent -> old member exited", both([d.exit_ms for d in idle]), both(phases["stop"])
    )
    table.add(
        "    request sent (direct: SIGTERM) -> old stopped listening",
        both([d.unlisten_ms for d in idle]),
        both(unlistened),
    )
    table.add(
        "    old stopped listening -> old exited",
        both([d.exit_ms - d.unlisten_ms for d in idle]),
        both([s - u for s, u in zip(phases["stop"], unlistened, strict=True)]),
    )
    table.add(
        "    direct, with an idle keep-alive connection open: SIGTERM -> exited",
        both([d.exit_ms for d in kept]),
    )
    table.add("  old exited -> new member started (exec)", "", both(phases["respawn"]))
    table.add(
        "  started -> new member healthy",
        both([d.healthy_ms for d in direct]),
        both(phases["startup"]),
    )
    table.add(
        "  healthy -> first byte at the client",
        both([d.first_byte_ms for d in direct], 2),
        both(phases["noticed"]),
    )
    target = f"<= {TARGET_OWN_SHARE_MS:g} ms: {verdict(met)}"
    table.add("trioswap's own share", "", both(own), "", "", target)
    table.notes.append(
        "trioswap column: a watcher thread polls /proc every 0.5 ms for the old member's exit and "
        "for trioswap's child running the new member's command (found by its --alias), probes the "
        "new member's /health every 2 ms, and reads /proc/net/tcp every 0.5 ms for the old "
        "member's listening socket (llama-server closes it ~1 ms after SIGTERM)"
    )
    table.notes.append(
        "direct column: after each swap the benchmark runs the new member's exact command on a "
        "port of its own: spawn -> first 200 on /health, the same streaming request's first byte "
        "on the fresh server, then SIGTERM -> stopped listening -> exited with no connection "
        "open (odd swaps), or with an idle keep-alive connection on which /health was answered "
        "(even swaps)"
    )
    table.notes.append(
        "own share = total - (started -> healthy) of that swap - direct SIGTERM -> exited (p50, "
        "no connection open) - direct first byte (p50): trioswap's request handling, stopping, "
        "reaping, spawning, health-probe interval and proxying"
    )
    name = f"trioswap's own share of a llama-server swap {pause:g}s after the last request, p50"
    table.verdicts.append(
        f"{name}: {own_p50:.0f} ms of {p50(phases['total']):.0f} ms in all "
        f"(target <= {TARGET_OWN_SHARE_MS:g} ms): {verdict(met)}"
    )
    raw = {
        "phases_ms": phases,
        "request_to_old_unlisten_ms": unlistened,
        "own_share_ms": own,
        "direct": [d.__dict__ for d in direct],
        "pause_s": pause,
        "targets": [
            {
                "name": name,
                "value": f"{own_p50:.0f} ms",
                "target": f"<= {TARGET_OWN_SHARE_MS:g} ms",
                "met": met,
            }
        ],
    }
    return table, raw


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = harness.arg_parser(
        "Swap latency between two real llama-server models through trioswap."
    )
    parser.add_argument("--swaps", type=int, default=8, help="back-to-back swaps")
    parser.add_argument(
        "--pause", type=float, default=0.3, help="idle seconds before each back-to-back swap"
    )
    parser.add_argument(
        "--idle-swaps", type=int, default=4, help="swaps after --idle-pause seconds of idle"
    )
    parser.add_argument(
        "--idle-pause",
        type=float,
        default=6.0,
        help="longer than llama-server's 5 s keep-alive timeout",
    )
    harness.add_common_args(parser, python_help="interpreter for trioswap")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    harness.require_llama_server()
    info = harness.machine_info()
    print("\n".join(["trioswap swap latency, llama-server", *harness.machine_lines(info)]))
    print(flush=True)
    began = time.monotonic()
    with Harness(keep_logs=args.keep_logs) as h:
        path = h.workdir / "smollm2.yaml"
        path.write_text(smollm2_config())
        argv_ts = [args.python, "-m", "trioswap", "--config", str(path), "--listen"]
        proc = h.spawn("trioswap", [*argv_ts, f"{harness.LOCALHOST}:0"], watch=True)
        url = proc.wait_for_line(harness.LISTENING, 30).group(1).rstrip("/")
        ts = Trioswap(proc, url, path)
        tables: list[Table] = []
        raw: dict[str, Any] = {"runs": [], "targets": []}
        try:
            urls, argvs = warm_up(ts)
            for count, pause in ((args.swaps, args.pause), (args.idle_swaps, args.idle_pause)):
                if count <= 0:
                    continue
                table, run = swaps(h, ts, urls, argvs, count, pause)
                tables.append(table)
                raw["runs"].append(run)
                raw["targets"] += run["targets"]
                print(table.render(), flush=True)
                print(flush=True)
        except Exception:
            print(f"trioswap's output (tail):\n{proc.tail()}", file=sys.stderr)
            raise
    harness.print_targets([line for table in tables for line in table.verdicts], always=True)
    print(harness.end_line(began))
    if args.json:
        raw["machine"] = info
        args.json.write_text(json.dumps(raw, indent=2))
    return 0


if __name__ == "__main__":
    harness.run_main(main)
