"""How much does trioswap cost? The same load, sent directly to a responder and through trioswap
to that very responder process, in one run, side by side.

    python benchmarks/overhead.py                 # ~2 minutes
    python benchmarks/overhead.py --duration 10   # longer non-streaming runs
    python benchmarks/overhead.py --help

Three sections (see benchmarks/README.md for what every number means):

1. non-streaming chat completions, closed loop at concurrency 1 and 8 (wrk when installed);
2. streaming chat completions: time to first byte / first event and chunks per second per
   stream, against a paced responder (200 tokens/s) and one with no delay;
3. swap latency in a `swap: true` group of two responders, next to how long a responder takes
   to start (spawn to healthy /health) and to stop (SIGTERM to exit) when run directly.

The responders are started by trioswap (so that trioswap can swap them and pump their logs as it
would in production); the direct runs talk to the same processes at their own ports. Direct and
trioswap runs are interleaved in rounds so that background load on the machine affects both alike.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import harness
import loadgen
from harness import Harness, ResponderSpec, Trioswap
from loadgen import LoadResult, RawClient, Timed

CHAT_PATH = "/v1/chat/completions"
TARGET_THROUGHPUT_RATIO = 0.5  # non-streaming c=8 requests/s, trioswap / direct
TARGET_ADDED_TTFB_MS = 3.0  # added p50 time to first byte on a stream
TARGET_SWAP_MS = 150.0  # swap with no startup delay: request sent -> first byte

TEXT = (
    "the quick brown fox jumps over the lazy dog while a model swaps in and out of memory "
    "and every token travels from the upstream through the proxy to the client unbuffered"
)
WORDS = TEXT.split()


def words(count: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(count))


def chat_body(model: str, *, stream: bool, content: str = "Say hello.") -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}]}
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# -- formatting -------------------------------------------------------------------------------


def fmt(value: float, digits: int = 1) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:,.{digits}f}"


@dataclass
class Row:
    metric: str
    direct: str = ""
    trioswap: str = ""
    ratio: str = ""
    added: str = ""
    target: str = ""


@dataclass
class Table:
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)  # one line per target, for the summary

    def add(self, *args: str) -> None:
        self.rows.append(Row(*args))

    def compare(
        self,
        metric: str,
        direct: float,
        via: float,
        *,
        digits: int = 1,
        ratio: bool = True,
        added: bool = False,
        target: str = "",
    ) -> None:
        ratio_text = f"{via / direct:.2f}x" if ratio and direct and not math.isnan(direct) else ""
        added_text = f"{via - direct:+.2f} ms" if added else ""
        self.add(metric, fmt(direct, digits), fmt(via, digits), ratio_text, added_text, target)

    def render(self) -> str:
        header = Row("", "direct", "trioswap", "trioswap/direct", "added", "target")
        rows = [header, *self.rows]
        cols = ["metric", "direct", "trioswap", "ratio", "added", "target"]
        widths = {c: max(len(getattr(r, c)) for r in rows) for c in cols}
        lines = [self.title, "-" * len(self.title)]
        for row in rows:
            if not any(getattr(row, c) for c in cols[1:]) and row is not header:
                lines.append(row.metric)
                continue
            cells = [row.metric.ljust(widths["metric"])]
            cells += [getattr(row, c).rjust(widths[c]) for c in cols[1:5]]
            cells.append(row.target)
            lines.append("  ".join(cells).rstrip())
        lines += [f"  * {note}" for note in self.notes]
        return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


# -- the setup --------------------------------------------------------------------------------


@dataclass
class Setup:
    trioswap: Trioswap
    specs: dict[str, ResponderSpec]
    pids: dict[str, int]

    def direct_url(self, model: str) -> str:
        return self.specs[model].url

    def server_pid(self, model: str) -> int:
        return self.pids[model]


def start(h: Harness, args: argparse.Namespace) -> Setup:
    base = harness.free_port_block(5)
    py = args.python
    specs = {
        # Non-streaming load: a short answer with no delay, so the proxy's cost dominates.
        "fast": ResponderSpec("fast", base, python=py),
        # Streams: a long answer at a measurable pace, and the same with no pacing at all.
        "paced": ResponderSpec(
            "paced",
            base + 1,
            tokens_per_second=args.tokens_per_second,
            response_text=words(args.paced_words),
            python=py,
        ),
        "burst": ResponderSpec("burst", base + 2, response_text=words(args.burst_words), python=py),
        # The swap pair: no startup delay.
        "a": ResponderSpec("a", base + 3, python=py),
        "b": ResponderSpec("b", base + 4, python=py),
    }
    config = harness.trioswap_config(
        {name: spec.model_entry() for name, spec in specs.items()},
        {
            # Always running side by side, never evicted by the pair's swaps.
            "bench": {
                "swap": False,
                "exclusive": False,
                "persistent": True,
                "members": ["fast", "paced", "burst"],
            },
            "pair": {"swap": True, "exclusive": False, "members": ["a", "b"]},
        },
        healthCheckTimeout=30,
    )
    progress("starting trioswap")
    ts = h.start_trioswap(config, python=py)
    pids: dict[str, int] = {}
    for name in ("fast", "paced", "burst"):
        # trioswap starts models on first use.
        response = harness.http_request(
            ts.url + CHAT_PATH, "POST", chat_body(name, stream=False), timeout=60
        )
        if response.status != 200:
            raise RuntimeError(f"warm-up request for {name}: {response.status} {response.body!r}")
    for entry in ts.running():
        if entry["model"] in specs:
            if entry["proxy"] != specs[entry["model"]].url:
                raise RuntimeError(f"unexpected proxy URL in /running: {entry}")
            pids[entry["model"]] = int(entry["pid"])
    return Setup(ts, specs, pids)


# -- 1. non-streaming ---------------------------------------------------------------------------


@dataclass
class Measured:
    load: LoadResult
    cpu: dict[str, float]


def run_interleaved(
    setup: Setup,
    args: argparse.Namespace,
    concurrency: int,
    model: str,
) -> dict[str, Measured]:
    urls = {
        "direct": setup.direct_url(model) + CHAT_PATH,
        "trioswap": setup.trioswap.url + CHAT_PATH,
    }
    body = chat_body(model, stream=False)
    pids = {"trioswap": setup.trioswap.pid, "responder": setup.server_pid(model)}
    per_round = args.duration / args.rounds
    for mode, url in urls.items():
        progress(f"non-streaming c={concurrency} {mode}: warm-up {args.warmup:g}s")
        loadgen.run_load(
            url, tool=args.tool, body=body, concurrency=concurrency, duration=args.warmup
        )
    runs: dict[str, list[LoadResult]] = {mode: [] for mode in urls}
    cpu: dict[str, dict[str, float]] = {mode: dict.fromkeys(pids, 0.0) for mode in urls}
    for index in range(args.rounds):
        # Alternate who goes first, so slow drifts in background load cancel out.
        order = list(urls) if index % 2 == 0 else list(reversed(urls))
        for mode in order:
            progress(
                f"non-streaming c={concurrency} {mode}: round {index + 1}/{args.rounds}, "
                f"{per_round:g}s"
            )
            with harness.cpu_meter(pids) as used:
                result = loadgen.run_load(
                    urls[mode],
                    tool=args.tool,
                    body=body,
                    concurrency=concurrency,
                    duration=per_round,
                )
            runs[mode].append(result)
            for name, seconds in used.items():
                cpu[mode][name] += seconds
    return {mode: Measured(loadgen.merge(runs[mode]), cpu[mode]) for mode in urls}


def non_streaming(setup: Setup, args: argparse.Namespace) -> tuple[Table, dict[str, Any]]:
    table = Table(
        f"1. Non-streaming POST {CHAT_PATH} (responder 'fast': no delay, short answer); "
        f"{args.duration:g}s per mode per concurrency in {args.rounds} interleaved rounds"
    )
    raw: dict[str, Any] = {}
    for concurrency in args.concurrency:
        m = run_interleaved(setup, args, concurrency, "fast")
        d, t = m["direct"].load, m["trioswap"].load
        target = ""
        if concurrency == 8:
            ok = t.rps >= TARGET_THROUGHPUT_RATIO * d.rps
            target = f">= {TARGET_THROUGHPUT_RATIO:.2f}x of direct: {verdict(ok)}"
            table.verdicts.append(
                f"non-streaming c=8 throughput, trioswap/direct: {t.rps / d.rps:.2f}x "
                f"(target >= {TARGET_THROUGHPUT_RATIO:.2f}x): {verdict(ok)}"
            )
        table.add(f"concurrency {concurrency}")
        table.compare("  requests/s", d.rps, t.rps, target=target)
        table.compare(
            "  latency p50 (ms)", d.latency_ms(50), t.latency_ms(50), digits=2, added=True
        )
        table.compare(
            "  latency p99 (ms)", d.latency_ms(99), t.latency_ms(99), digits=2, added=True
        )
        table.add("  requests (errors)", f"{d.requests} ({d.errors})", f"{t.requests} ({t.errors})")
        cpu_rows = [
            ("trioswap", "  CPU/request, trioswap proc (us)"),
            ("responder", "  CPU/request, responder proc (us)"),
        ]
        for name, label in cpu_rows:
            per_d = m["direct"].cpu[name] / d.requests * 1e6 if d.requests else math.nan
            per_t = m["trioswap"].cpu[name] / t.requests * 1e6 if t.requests else math.nan
            table.compare(label, per_d, per_t, digits=0, ratio=False)
        raw[f"c{concurrency}"] = {
            mode: {
                "rps": x.load.rps,
                "p50_ms": x.load.latency_ms(50),
                "p99_ms": x.load.latency_ms(99),
                "requests": x.load.requests,
                "errors": x.load.errors,
                "cpu_seconds": x.cpu,
            }
            for mode, x in m.items()
        }
    table.notes.append(
        f"load generator: {args.tool_label}; closed loop (each connection sends its next "
        "request when the previous answer is complete)"
    )
    table.notes.append(
        "CPU/request in the 'direct' column is what trioswap spends meanwhile anyway: pumping "
        "the responder's one log line per request into its log hub"
    )
    return table, raw


# -- 2. streaming -------------------------------------------------------------------------------


def stream_batch(clients: Sequence[RawClient], body: bytes) -> list[Timed]:
    """One stream on each client, all at once."""
    results: list[Timed | BaseException] = [RuntimeError("not run")] * len(clients)

    def run(index: int) -> None:
        try:
            results[index] = clients[index].request("POST", CHAT_PATH, body)
        except BaseException as exc:
            results[index] = exc

    if len(clients) == 1:
        run(0)
    else:
        threads = [
            threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(clients))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    out: list[Timed] = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        if result.status != 200 or not result.saw_done:
            raise RuntimeError(f"bad stream: status {result.status}, body {result.body[:300]!r}")
        out.append(result)
    return out


def run_streams(setup: Setup, args: argparse.Namespace, model: str) -> dict[str, list[Timed]]:
    urls = {"direct": setup.direct_url(model), "trioswap": setup.trioswap.url}
    body = chat_body(model, stream=True)
    concurrency = args.stream_concurrency
    clients = {mode: [RawClient(url) for _ in range(concurrency)] for mode, url in urls.items()}
    samples: dict[str, list[Timed]] = {mode: [] for mode in urls}
    try:
        for mode in urls:
            for _ in range(2):
                stream_batch(clients[mode], body)  # warm-up: connections, caches
        batches = max(1, args.streams // concurrency)
        progress(f"streaming '{model}': {batches * concurrency} streams per mode")
        for index in range(batches):
            order = list(urls) if index % 2 == 0 else list(reversed(urls))
            for mode in order:
                samples[mode].extend(stream_batch(clients[mode], body))
    finally:
        for mode_clients in clients.values():
            for client in mode_clients:
                client.close()
    return samples


def streaming(setup: Setup, args: argparse.Namespace) -> tuple[Table, dict[str, Any]]:
    table = Table(
        f"2. Streaming POST {CHAT_PATH} (stream: true), {args.streams} streams per mode at "
        f"concurrency {args.stream_concurrency}, alternating direct/trioswap"
    )
    raw: dict[str, Any] = {}
    cases = [
        (
            "paced",
            f"responder 'paced': {args.tokens_per_second:g} tokens/s, {args.paced_words} chunks",
        ),
        ("burst", f"responder 'burst': no delay, {args.burst_words} chunks"),
    ]
    for model, label in cases:
        samples = run_streams(setup, args, model)
        d, t = samples["direct"], samples["trioswap"]

        def pct(xs: list[Timed], get: Callable[[Timed], float], p: float) -> float:
            return loadgen.percentile(sorted(get(x) for x in xs), p)

        def ttfb(x: Timed) -> float:
            return x.ttfb_ms

        def first_event(x: Timed) -> float:
            return x.first_event_ms

        def total(x: Timed) -> float:
            return x.total_ms

        def rate(x: Timed) -> float:
            return x.events_per_second

        added_first = pct(t, first_event, 50) - pct(d, first_event, 50)
        met = verdict(added_first <= TARGET_ADDED_TTFB_MS)
        target = f"added <= {TARGET_ADDED_TTFB_MS:g} ms: {met}"
        table.verdicts.append(
            f"stream '{model}', added first-event p50: {added_first:+.2f} ms "
            f"(target <= {TARGET_ADDED_TTFB_MS:g} ms): {met}"
        )
        table.add(label)
        table.compare(
            "  first byte p50 (ms)", pct(d, ttfb, 50), pct(t, ttfb, 50), digits=2, added=True
        )
        table.compare(
            "  first byte p99 (ms)", pct(d, ttfb, 99), pct(t, ttfb, 99), digits=2, added=True
        )
        table.compare(
            "  first event p50 (ms)",
            pct(d, first_event, 50),
            pct(t, first_event, 50),
            digits=2,
            added=True,
            target=target,
        )
        table.compare(
            "  first event p99 (ms)",
            pct(d, first_event, 99),
            pct(t, first_event, 99),
            digits=2,
            added=True,
        )
        table.compare("  chunks/s per stream p50", pct(d, rate, 50), pct(t, rate, 50), digits=0)
        gaps_d, gaps_t = loadgen.pooled_gaps(d), loadgen.pooled_gaps(t)
        table.compare(
            "  gap between chunks p99 (ms)",
            loadgen.percentile(gaps_d, 99),
            loadgen.percentile(gaps_t, 99),
            digits=2,
            added=True,
        )
        table.compare(
            "  whole stream p50 (ms)", pct(d, total, 50), pct(t, total, 50), digits=1, added=True
        )
        chunks = {len(x.event_times) for x in d + t}
        if len(chunks) != 1:
            table.notes.append(f"'{model}': streams had different chunk counts: {sorted(chunks)}")
        raw[model] = {
            mode: {
                "ttfb_ms": [x.ttfb_ms for x in xs],
                "first_event_ms": [x.first_event_ms for x in xs],
                "chunks_per_s": [x.events_per_second for x in xs],
                "total_ms": [x.total_ms for x in xs],
            }
            for mode, xs in samples.items()
        }
    table.notes.append(
        "first byte: request sent -> status line received; first event: -> first complete "
        "'data:' SSE event (the paced responder sleeps 1/rate before every chunk, the first too)"
    )
    table.notes.append(
        "chunks/s per stream: (chunks - 1) / (last chunk - first chunk), median over streams; "
        "client: raw-socket HTTP/1.1 keep-alive, timestamps taken at recv()"
    )
    return table, raw


# -- 3. swap ------------------------------------------------------------------------------------


@dataclass
class Spawned:
    healthy_ms: float
    stop_ms: float


def spawn_directly(h: Harness, args: argparse.Namespace) -> Spawned:
    """Start a responder like the swap pair's, on a port of its own, with no trioswap: spawn to
    first healthy /health, then SIGTERM to exit."""
    spec = ResponderSpec("spawn-probe", harness.free_port(), python=args.python)
    began = time.perf_counter()
    proc = h.spawn("spawn-probe", spec.argv())
    try:
        harness.wait_healthy(spec.url, timeout=30, interval=0.002, alive=proc.alive)
        healthy = time.perf_counter()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.popen.wait(timeout=30)
        stopped = time.perf_counter()
    finally:
        h.forget(proc)
    return Spawned((healthy - began) * 1000.0, (stopped - healthy) * 1000.0)


def swap_once(setup: Setup, model: str) -> Timed:
    with RawClient(setup.trioswap.url) as client:
        client.connect()
        timed = client.request("POST", CHAT_PATH, chat_body(model, stream=False))
    served_by = timed.headers.get("x-responder-model")
    if timed.status != 200 or served_by != model:
        raise RuntimeError(
            f"swap to {model}: status {timed.status}, served by {served_by!r}: {timed.body[:300]!r}"
        )
    return timed


@dataclass
class Timeline:
    """One swap as seen from outside trioswap, in perf_counter seconds."""

    sent: float
    first_byte: float
    old_exited: float
    new_spawned: float
    new_healthy: float

    def phases_ms(self) -> dict[str, float]:
        return {
            "total": (self.first_byte - self.sent) * 1000.0,
            "stop": (self.old_exited - self.sent) * 1000.0,
            "respawn": (self.new_spawned - self.old_exited) * 1000.0,
            "startup": (self.new_healthy - self.new_spawned) * 1000.0,
            "noticed": (self.first_byte - self.new_healthy) * 1000.0,
        }


class SwapWatcher:
    """Watches a swap from outside: when the old member's process exits, when trioswap forks
    the new one, and when the new one first answers /health with 200 (probed every 2 ms, as
    trioswap's own health check would see it). Polls /proc every 0.5 ms in a thread."""

    def __init__(
        self,
        trioswap_pid: int,
        old_pid: int,
        new_model: str,
        new_url: str,
        member_flag: str = "--model-id",
    ) -> None:
        """`member_flag`: the command-line flag whose value names the model in the new member's
        command (`--model-id` for the responder; e.g. `--alias` for llama-server)."""
        self._trioswap_pid = trioswap_pid
        self._member_flag = member_flag
        self._old_pid = old_pid
        self._new_model = new_model
        self._new_url = new_url
        self._before = set(harness.children(trioswap_pid))
        self.old_exited = math.nan
        self.new_spawned = math.nan
        self.new_healthy = math.nan
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="swap-watcher", daemon=True)

    def __enter__(self) -> SwapWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _is_new_member(self, pid: int) -> bool:
        # Until the child has exec'd, its command line is still trioswap's.
        argv = harness.cmdline(pid)
        try:
            return argv[argv.index(self._member_flag) + 1] == self._new_model
        except (ValueError, IndexError):
            return False

    def _watch(self) -> None:
        parts = urlsplit(self._new_url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        last_probe = 0.0
        while not self._stop.is_set():
            now = time.perf_counter()
            if math.isnan(self.old_exited) and not harness.pid_running(self._old_pid):
                self.old_exited = now
            if math.isnan(self.new_spawned):
                for pid in harness.children(self._trioswap_pid):
                    if pid not in self._before and self._is_new_member(pid):
                        self.new_spawned = now
            elif math.isnan(self.new_healthy) and now - last_probe >= 0.002:
                last_probe = now
                if harness.probe_once(host, port) == 200:
                    self.new_healthy = time.perf_counter()
                    return
            time.sleep(0.0005)


def watched_swap(setup: Setup, old: str, new: str) -> Timeline:
    old_pid = setup.trioswap.model_pid(old)
    if old_pid is None:
        raise RuntimeError(f"'{old}' is not running before the swap to '{new}'")
    with SwapWatcher(setup.trioswap.pid, old_pid, new, setup.direct_url(new)) as watcher:
        timed = swap_once(setup, new)
    timeline = Timeline(
        timed.sent, timed.first_byte, watcher.old_exited, watcher.new_spawned, watcher.new_healthy
    )
    if any(math.isnan(v) for v in timeline.phases_ms().values()):
        raise RuntimeError(f"swap {old} -> {new}: the watcher missed a step: {timeline}")
    return timeline


def swaps(h: Harness, setup: Setup, args: argparse.Namespace) -> tuple[Table, dict[str, Any]]:
    table = Table(
        f"3. Swap: a and b in one 'swap: true' group (responders, no startup delay); "
        f"{args.swaps} swaps alternating a<->b, each followed by a direct spawn of a responder"
    )
    progress("swap: making 'a' the running member")
    swap_once(setup, "a")
    timelines: list[Timeline] = []
    spawned: list[Spawned] = []
    for index in range(args.swaps):
        old, new = ("a", "b") if index % 2 == 0 else ("b", "a")
        progress(f"swap {index + 1}/{args.swaps}: {old} -> {new}")
        timelines.append(watched_swap(setup, old, new))
        spawned.append(spawn_directly(h, args))

    def p50(xs: Sequence[float]) -> float:
        return loadgen.percentile(sorted(xs), 50)

    phases = {key: [t.phases_ms()[key] for t in timelines] for key in timelines[0].phases_ms()}
    healthy = [s.healthy_ms for s in spawned]
    stop = [s.stop_ms for s in spawned]
    # trioswap's own part of each swap: everything but the upstreams' own start-up and exit.
    own = [t.phases_ms()["total"] - t.phases_ms()["startup"] - p50(stop) for t in timelines]
    total_p50 = p50(phases["total"])
    own_p50 = p50(own)

    def both(xs: Sequence[float]) -> str:
        return f"{fmt(p50(xs))} / {fmt(max(xs))}"

    table.add("(ms, p50 / max)")
    table.add(
        "swap: request sent -> first byte",
        "",
        both(phases["total"]),
        "",
        "",
        f"<= {TARGET_SWAP_MS:g} ms: {verdict(total_p50 <= TARGET_SWAP_MS)}",
    )
    table.add("  request sent -> old member exited", both(stop), both(phases["stop"]))
    table.add("  old exited -> new member started (exec)", "", both(phases["respawn"]))
    table.add("  started -> new member healthy", both(healthy), both(phases["startup"]))
    table.add("  healthy -> first byte at the client", "", both(phases["noticed"]))
    table.add(
        "trioswap's own share (total - startup - exit)",
        "",
        both(own),
        "",
        "",
        f"<= {TARGET_SWAP_MS:g} ms: {verdict(own_p50 <= TARGET_SWAP_MS)}",
    )
    table.notes.append(
        "trioswap column: a watcher thread polls /proc every 0.5 ms for the old member's exit "
        "and for trioswap's child running the new one's command, and probes the new one's "
        "/health every 2 ms"
    )
    table.notes.append(
        "direct column: the same responder command run by this script after each swap: "
        "SIGTERM -> exited (the row of the old member's exit) and spawn -> first healthy /health"
    )
    table.notes.append(
        "own share = total - (started -> healthy) of that swap - median direct SIGTERM -> exited: "
        "trioswap's request handling, process reaping, spawning, health-probe interval, proxying"
    )
    table.verdicts.append(
        f"swap request -> first byte p50: {total_p50:.0f} ms in all (target <= "
        f"{TARGET_SWAP_MS:g} ms: {verdict(total_p50 <= TARGET_SWAP_MS)}), of which the "
        f"upstreams' own start-up and exit are {p50(phases['startup']) + p50(stop):.0f} ms; "
        f"trioswap's own share {own_p50:.0f} ms ({verdict(own_p50 <= TARGET_SWAP_MS)})"
    )
    raw = {
        "phases_ms": phases,
        "own_share_ms": own,
        "direct_spawn_to_healthy_ms": healthy,
        "direct_sigterm_to_exit_ms": stop,
    }
    return table, raw


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = harness.arg_parser("trioswap's overhead: direct vs through trioswap, side by side.")
    parser.add_argument(
        "--duration",
        type=float,
        default=6.0,
        help="seconds of non-streaming load per mode (direct, trioswap) per concurrency",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved direct/trioswap rounds per duration"
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per mode")
    parser.add_argument(
        "--concurrency",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 8],
        help="comma-separated connection counts for the non-streaming load",
    )
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="non-streaming load generator; auto: wrk if on PATH, else Python threads",
    )
    parser.add_argument("--streams", type=int, default=30, help="streams per mode per responder")
    parser.add_argument("--stream-concurrency", type=int, default=1)
    parser.add_argument("--tokens-per-second", type=float, default=200.0)
    parser.add_argument("--paced-words", type=int, default=40, help="chunks per paced stream")
    parser.add_argument("--burst-words", type=int, default=1000, help="chunks per no-delay stream")
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--sections", default="1,2,3", help="which sections to run, e.g. 1,3")
    harness.add_common_args(
        parser,
        keep_logs_help="keep trioswap's and the responders' logs",
        python_help="interpreter for trioswap and the responders",
    )
    args = parser.parse_args(argv)
    if args.loadgen == "wrk" and not loadgen.have_wrk():
        parser.error("--loadgen wrk: wrk is not on PATH (apt-get install wrk)")
    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and loadgen.have_wrk())
    args.tool = "wrk" if use_wrk else "python"
    if use_wrk:
        args.tool_label = f"{loadgen.wrk_version()} (1 thread)"
    else:
        why = "--loadgen python" if args.loadgen == "python" else "wrk not found"
        args.tool_label = f"Python threads + http.client ({why}: it competes for CPU)"
    args.sections = {int(s) for s in args.sections.split(",") if s}
    return args


def header(args: argparse.Namespace) -> str:
    info = harness.machine_info()
    busy = harness.busy_processes()
    lines = [
        "trioswap overhead benchmark",
        *harness.machine_lines(info, memory=False, python=args.python, busy=busy),
        f"load gen:  non-streaming: {args.tool_label}; streaming and swaps: Python raw sockets",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(header(args), flush=True)
    print(flush=True)
    began = time.monotonic()
    raw: dict[str, Any] = {"machine": harness.machine_info(), "loadgen": args.tool_label}
    tables: list[Table] = []
    with Harness(keep_logs=args.keep_logs) as h, h.reporting("trioswap"):
        setup = start(h, args)
        sections: list[tuple[int, str, Callable[[], tuple[Table, dict[str, Any]]]]] = [
            (1, "non_streaming", lambda: non_streaming(setup, args)),
            (2, "streaming", lambda: streaming(setup, args)),
            (3, "swap", lambda: swaps(h, setup, args)),
        ]
        for number, key, run in sections:
            if number not in args.sections:
                continue
            table, raw[key] = run()
            tables.append(table)
            print(table.render(), flush=True)
            print(flush=True)
    harness.print_targets(line for table in tables for line in table.verdicts)
    print(harness.end_line(began))
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2))
        print(f"raw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    harness.run_main(main)
