"""What observability costs the proxy: the same load sent directly to a responder and through three
trioswaps that differ only in what they keep about each request, side by side in one run.

    python benchmarks/observability_overhead.py                # ~2.5 minutes
    python benchmarks/observability_overhead.py --duration 12  # longer runs, less noise
    python benchmarks/observability_overhead.py --profile      # + where the time goes (py-spy)
    python benchmarks/observability_overhead.py --help

Modes (the table's columns):

- `direct`: the responder's own port, no proxy;
- `minimal`: trioswap with `metricsMaxInMemory: 0` and `captureBuffer: 0`;
- `default`: `metricsMaxInMemory: 1000`, `captureBuffer: 5` (trioswap's defaults);
- `heavy`: `store: {path: <tmp>/activity.sqlite}` (every record in a SQLite file) and
  `captureBuffer: 50`.

Each trioswap runs its own responder model (`python -m trioswap.responder`, no delay, a 31-word
answer: 32 SSE events when streamed) at an explicit port; `direct` talks to the minimal one's.
Scenarios: JSON replies at concurrency 1 (latency added to direct) and 8 (requests/s), and
unpaced streams at concurrency 8 (streams/s, chunks/s), all closed loop with wrk (a Python
fallback without it). The modes take turns in every round, the first one rotating, so background
load hits them alike. CPU per request is each trioswap's own user + system time (/proc/PID/stat,
all its threads: the SQLite writer too) during its runs, divided by the requests it served.
With `--profile`, py-spy then samples each trioswap under the JSON c=8 load and the samples are
split by the deepest trioswap frame: the share in `trioswap/observe/` is what observability costs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
import loadgen
from harness import Harness, Proc, ResponderSpec, Trioswap
from loadgen import LoadResult
from overhead import CHAT_PATH, chat_body, fmt, progress, words
from proxies import int_list, rotated

ROOT = Path(__file__).resolve().parent.parent
MODEL = "fast"
PROXIES = ("minimal", "default", "heavy")
MODES = ("direct", *PROXIES)
# The observability settings of each trioswap; "heavy" also gets `store` (a path in the workdir).
SETTINGS: dict[str, dict[str, Any]] = {
    "minimal": {"metricsMaxInMemory": 0, "captureBuffer": 0},
    "default": {"metricsMaxInMemory": 1000, "captureBuffer": 5},
    "heavy": {"captureBuffer": 50},
}
OBSERVE_DIR = "trioswap/observe/"
TRIOSWAP_DIR = "trioswap/"
# The entry point's frames hold every stack of trio's loop: they are not where time goes.
ENTRY_POINTS = ("trioswap/__main__.py", "trioswap/cli.py")
# Innermost frames of threads that wait, which py-spy does not always see as idle: a thread-cache
# worker waiting for a job (a lock with a timeout) and trio's loop in epoll_wait.
WAITING = (
    ("WorkerThread._work", "trio/_core/_thread_cache.py"),
    ("EpollIOManager.get_events", "trio/_core/_io_epoll.py"),
)


# -- the setup --------------------------------------------------------------------------------


@dataclass
class Setup:
    proxies: dict[str, Trioswap]
    direct_url: str
    store_path: Path

    def url(self, mode: str) -> str:
        return self.direct_url if mode == "direct" else self.proxies[mode].url

    def pid(self, mode: str) -> int | None:
        return None if mode == "direct" else self.proxies[mode].pid


def start(h: Harness, args: argparse.Namespace) -> Setup:
    store_path = h.workdir / "activity.sqlite"
    proxies: dict[str, Trioswap] = {}
    direct_url = ""
    for mode in PROXIES:
        spec = ResponderSpec(
            MODEL,
            harness.free_port(),
            response_text=words(args.stream_chunks - 1),
            python=args.python,
        )
        top = dict(SETTINGS[mode])
        if mode == "heavy":
            top["store"] = {"path": str(store_path)}
        config = harness.trioswap_config({MODEL: spec.model_entry()}, **top)
        progress(f"starting trioswap '{mode}'")
        ts = h.start_trioswap(config, python=args.python)
        # trioswap starts the model on first use.
        response = harness.http_request(
            ts.url + CHAT_PATH, "POST", chat_body(MODEL, stream=False), timeout=60
        )
        if response.status != 200:
            raise RuntimeError(f"first request via '{mode}': {response.status} {response.body!r}")
        proxies[mode] = ts
        if mode == "minimal":
            direct_url = spec.url
    return Setup(proxies, direct_url, store_path)


# -- load ---------------------------------------------------------------------------------------


@dataclass
class Measured:
    load: LoadResult
    cpu: float  # CPU seconds of the mode's trioswap during its runs (NaN for direct)

    def cpu_per_request_us(self) -> float:
        return self.cpu / self.load.requests * 1e6 if self.load.requests else math.nan


def run_scenario(
    setup: Setup, args: argparse.Namespace, name: str, body: bytes, concurrency: int
) -> dict[str, Measured]:
    """Every mode under the same closed-loop load, in interleaved rounds."""

    def load(mode: str, seconds: float) -> LoadResult:
        return loadgen.run_load(
            setup.url(mode) + CHAT_PATH,
            tool=args.tool,
            body=body,
            concurrency=concurrency,
            duration=seconds,
        )

    for mode in MODES:
        progress(f"{name}: {mode} warm-up {args.warmup:g}s")
        load(mode, args.warmup)
    runs: dict[str, list[LoadResult]] = {mode: [] for mode in MODES}
    cpu = dict.fromkeys(MODES, 0.0)
    per_round = args.duration / args.rounds
    for index in range(args.rounds):
        for mode in rotated(MODES, index):
            progress(f"{name}: {mode} round {index + 1}/{args.rounds}, {per_round:g}s")
            pid = setup.pid(mode)
            with harness.cpu_meter({} if pid is None else {mode: pid}) as used:
                runs[mode].append(load(mode, per_round))
            cpu[mode] += used.get(mode, math.nan)
    return {mode: Measured(loadgen.merge(runs[mode]), cpu[mode]) for mode in MODES}


def chunks_per_stream(setup: Setup, body: bytes) -> dict[str, int]:
    """How many SSE events one stream delivers through each mode (they must agree)."""
    return {
        mode: len(loadgen.one_stream(setup.url(mode), CHAT_PATH, body).event_times)
        for mode in MODES
    }


# -- the table ----------------------------------------------------------------------------------


@dataclass
class Table:
    """metric | direct | minimal | default | heavy | default vs minimal | heavy vs minimal.
    A row with only a metric is a sub-heading."""

    title: str
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.rows.append([text])

    def add(
        self, metric: str, values: dict[str, float], *, digits: int = 1, compare: str = ""
    ) -> None:
        """`compare`: "percent" (rates) or "diff" (times) of default and heavy against minimal."""
        cells = [metric] + [fmt(values.get(mode, math.nan), digits) for mode in MODES]
        base = values.get("minimal", math.nan)
        for mode in ("default", "heavy"):
            value = values.get(mode, math.nan)
            if math.isnan(value) or math.isnan(base) or not compare:
                cells.append("")
            elif compare == "percent":
                cells.append(f"{(value / base - 1) * 100:+.1f}%" if base else "")
            else:
                cells.append(f"{value - base:+.{digits}f}")
        self.rows.append(cells)

    def render(self) -> str:
        header = ["", *MODES, "default vs minimal", "heavy vs minimal"]
        rows = [header, *self.rows]
        ncols = len(header)
        widths = [max(len(r[i]) for r in rows if len(r) == ncols) for i in range(ncols)]
        lines = [self.title, "-" * len(self.title)]
        for row in rows:
            if len(row) == 1:
                lines.append(row[0])
            else:
                cells = [row[0].ljust(widths[0])] + [
                    row[i].rjust(widths[i]) for i in range(1, ncols)
                ]
                lines.append("  ".join(cells).rstrip())
        lines += [f"  * {note}" for note in self.notes]
        return "\n".join(lines)


def json_rows(table: Table, name: str, m: dict[str, Measured]) -> dict[str, Any]:
    loads = {mode: x.load for mode, x in m.items()}
    table.heading(name)
    table.add("  requests/s", {mode: r.rps for mode, r in loads.items()}, compare="percent")
    for p in (50, 99):
        latency = {mode: r.latency_ms(p) for mode, r in loads.items()}
        table.add(f"  latency p{p} (ms)", latency, digits=2, compare="diff")
        table.add(
            f"  added to direct, p{p} (ms)",
            {mode: v - latency["direct"] for mode, v in latency.items() if mode != "direct"},
            digits=2,
        )
    cpu = {mode: x.cpu_per_request_us() for mode, x in m.items() if mode != "direct"}
    table.add("  trioswap CPU/request (us)", cpu, digits=0, compare="diff")
    table.rows.append(
        ["  requests (errors)"] + [f"{r.requests} ({r.errors})" for r in loads.values()] + ["", ""]
    )
    return {mode: _raw(x) for mode, x in m.items()}


def stream_rows(
    table: Table, name: str, m: dict[str, Measured], chunks: dict[str, int]
) -> dict[str, Any]:
    loads = {mode: x.load for mode, x in m.items()}
    table.heading(name)
    table.add("  streams/s", {mode: r.rps for mode, r in loads.items()}, compare="percent")
    table.add(
        "  chunks/s",
        {mode: r.rps * chunks[mode] for mode, r in loads.items()},
        digits=0,
        compare="percent",
    )
    table.add(
        "  whole stream p50 (ms)",
        {mode: r.latency_ms(50) for mode, r in loads.items()},
        digits=2,
        compare="diff",
    )
    table.add(
        "  trioswap CPU/stream (us)",
        {mode: x.cpu_per_request_us() for mode, x in m.items() if mode != "direct"},
        digits=0,
        compare="diff",
    )
    table.rows.append(
        ["  streams (errors)"] + [f"{r.requests} ({r.errors})" for r in loads.values()] + ["", ""]
    )
    table.rows.append(["  chunks per stream"] + [str(chunks[mode]) for mode in MODES] + ["", ""])
    return {mode: {**_raw(x), "chunks_per_stream": chunks[mode]} for mode, x in m.items()}


def _raw(x: Measured) -> dict[str, Any]:
    r = x.load
    return {
        "rps": r.rps,
        "p50_ms": r.latency_ms(50),
        "p99_ms": r.latency_ms(99),
        "requests": r.requests,
        "errors": r.errors,
        "trioswap_cpu_seconds": None if math.isnan(x.cpu) else x.cpu,
    }


# -- what each trioswap kept ----------------------------------------------------------------------


def kept(setup: Setup) -> dict[str, dict[str, Any]]:
    """Proof that the observability was on: activity records kept, whether the newest request has
    a capture, and the store file's size."""
    out: dict[str, dict[str, Any]] = {}
    for mode, ts in setup.proxies.items():
        response = harness.http_request(ts.url + "/api/metrics/activity?limit=1")
        page = json.loads(response.body) if response.status == 200 else {}
        newest = (page.get("data") or [{}])[0]
        capture = None
        if "id" in newest:
            status = harness.http_request(f"{ts.url}/api/captures/{newest['id']}").status
            capture = status == 200
        out[mode] = {"records": page.get("total"), "capture": capture}
    with contextlib.suppress(OSError):
        out["heavy"]["store_bytes"] = sum(
            p.stat().st_size for p in setup.store_path.parent.glob(setup.store_path.name + "*")
        )
    return out


def kept_line(found: dict[str, dict[str, Any]]) -> str:
    parts = []
    for mode, what in found.items():
        text = f"{mode}: {what['records']} activity records"
        text += {True: ", captured", False: ", no capture", None: ""}[what["capture"]]
        if "store_bytes" in what:
            text += f", store {what['store_bytes'] / 1e6:.1f} MB"
        parts.append(text)
    return "kept at the end: " + "; ".join(parts)


# -- profile ------------------------------------------------------------------------------------


def find_py_spy(given: str | None) -> str | None:
    return given or os.environ.get("PY_SPY") or shutil.which("py-spy")


def profile(
    h: Harness, setup: Setup, args: argparse.Namespace, py_spy: str
) -> tuple[str, dict[str, Any]]:
    """py-spy samples each trioswap under the JSON c=8 load; each sample goes to the module of
    its deepest trioswap frame (library code counts for the trioswap code that called it)."""
    body = chat_body(MODEL, stream=False)
    lines = [
        f"Where each trioswap's CPU goes (py-spy, {args.profile_seconds:g}s of JSON replies at "
        f"c={args.json_concurrency}, {args.profile_rate} samples/s of threads not waiting)",
    ]
    raw: dict[str, Any] = {}
    for mode in PROXIES:
        ts = setup.proxies[mode]
        out = h.workdir / f"py-spy-{mode}.txt"
        argv = [py_spy, "record", "-p", str(ts.pid), "-r", str(args.profile_rate)]
        argv += ["-d", f"{math.ceil(args.profile_seconds)}", "-f", "raw", "-o", str(out)]
        argv.append("--full-filenames")
        progress(f"profile: {mode}")
        proc: Proc = h.spawn(f"py-spy-{mode}", argv)
        loadgen.run_load(
            ts.url + CHAT_PATH,
            tool=args.tool,
            body=body,
            concurrency=args.json_concurrency,
            duration=args.profile_seconds + 1,
        )
        code = proc.popen.wait(timeout=60)
        if code != 0 or not out.exists():
            tail = proc.tail(5)
            h.forget(proc)
            return f"py-spy failed (exit {code}): {tail}", {}
        h.forget(proc)
        by_module = split_samples(out.read_text())
        total = sum(by_module.values())
        observe = sum(n for module, n in by_module.items() if module.startswith(OBSERVE_DIR))
        top = ", ".join(
            f"{module.removeprefix(TRIOSWAP_DIR)} {n / total * 100:.1f}%"
            for module, n in by_module.most_common()
            if module.startswith(OBSERVE_DIR)
        )
        lines.append(
            f"  {mode}: {total} samples; in observe/: {observe / total * 100:.1f}%"
            + (f" ({top})" if top else "")
        )
        raw[mode] = {"samples": total, "by_module": dict(by_module)}
        if args.keep_logs:
            lines.append(f"    collapsed stacks: {out}")
    return "\n".join(lines), raw


def split_samples(collapsed: str) -> Counter[str]:
    """py-spy's raw (collapsed) output, `frame;frame;... count` per line with frames as
    `function (/full/path:line)`, counted by the file of the deepest frame in a trioswap/ folder
    ("other" when a stack has none but the entry point's: trio's scheduler, hypercorn). Threads
    that wait are left out."""
    counts: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        function, _, where = frames[-1].partition(" (")
        waiting = any(function == f and where.partition(":")[0].endswith(p) for f, p in WAITING)
        if not count.isdigit() or waiting:
            continue
        module = "other"
        for frame in reversed(frames):
            path = frame.rpartition("(")[2].rpartition(":")[0]
            if (at := path.rfind("/" + TRIOSWAP_DIR)) >= 0 and not path.endswith(ENTRY_POINTS):
                module = path[at + 1 :]
                break
        counts[module] += int(count)
    return counts


# -- main ---------------------------------------------------------------------------------------


def versions(args: argparse.Namespace) -> list[str]:
    def run(argv: Sequence[str]) -> str:
        try:
            return subprocess.run(
                argv, capture_output=True, text=True, cwd=ROOT, timeout=20
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    head = run(["git", "log", "-1", "--format=%h"]) or "unknown"
    dirty = run(["git", "status", "--porcelain", "--", "src"])
    libraries = []
    for name in ("trio", "hypercorn", "httpcore", "quart"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            libraries.append(f"{name} {importlib.metadata.version(name)}")
    return [
        f"trioswap:  commit {head}" + (" + uncommitted changes in src/" if dirty else ""),
        f"libraries: {', '.join(libraries)} (this interpreter's)",
        f"loadgen:   {args.tool_label}",
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = harness.arg_parser(
        "trioswap's overhead with observability minimal, default and heavy, next to direct."
    )
    parser.add_argument("--duration", type=float, default=8.0, help="s per mode per scenario")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds per scenario")
    parser.add_argument("--warmup", type=float, default=1.0, help="s of warm-up per mode")
    parser.add_argument(
        "--latency-concurrency", type=int, default=1, help="JSON replies: latency scenario"
    )
    parser.add_argument(
        "--json-concurrency", type=int, default=8, help="JSON replies: throughput scenario"
    )
    parser.add_argument("--stream-concurrency", type=int, default=8, help="streams scenario")
    parser.add_argument("--stream-chunks", type=int, default=32, help="SSE events per stream")
    parser.add_argument(
        "--scenarios", type=int_list, default=[1, 2, 3], help="1: JSON c=1, 2: JSON c=8, 3: streams"
    )
    parser.add_argument("--profile", action="store_true", help="then profile with py-spy")
    parser.add_argument("--py-spy", help="py-spy binary (default: $PY_SPY, then PATH)")
    parser.add_argument("--profile-seconds", type=float, default=6.0, help="per trioswap")
    parser.add_argument("--profile-rate", type=int, default=250, help="py-spy samples/s")
    harness.add_common_args(
        parser,
        keep_logs_help="keep every process's output (and py-spy's stacks)",
        python_help="for trioswap and the responders",
    )
    args = parser.parse_args(argv)
    args.tool, args.tool_label = loadgen.load_tool()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    py_spy = find_py_spy(args.py_spy) if args.profile else None
    if args.profile and py_spy is None:
        print("--profile needs py-spy: pip install py-spy, or --py-spy PATH", file=sys.stderr)
        return 2
    info = harness.machine_info()
    busy = harness.busy_processes()
    header = ["trioswap's overhead with observability on and off"]
    header += harness.machine_lines(info, python=args.python, busy=busy)
    print("\n".join(header + versions(args)))
    print(f"command:   {' '.join(['python', *sys.argv])}")
    print(flush=True)
    began = time.monotonic()
    raw: dict[str, Any] = {"machine": info, "loadgen": args.tool_label, "targets": []}
    with Harness(keep_logs=args.keep_logs) as h, h.reporting("trioswap"):
        setup = start(h, args)
        table = Table(
            f"POST {CHAT_PATH} to the responder (no delay), closed loop, {args.duration:g}s per "
            f"mode per scenario in {args.rounds} interleaved rounds"
        )
        json_body, stream_body = chat_body(MODEL, stream=False), chat_body(MODEL, stream=True)
        # number, name, body, concurrency, whether it streams
        scenarios = [
            (
                1,
                f"JSON replies, concurrency {args.latency_concurrency}",
                json_body,
                args.latency_concurrency,
                False,
            ),
            (
                2,
                f"JSON replies, concurrency {args.json_concurrency}",
                json_body,
                args.json_concurrency,
                False,
            ),
            (
                3,
                f"streams of {args.stream_chunks} unpaced chunks, concurrency "
                f"{args.stream_concurrency}",
                stream_body,
                args.stream_concurrency,
                True,
            ),
        ]
        for number, name, body, concurrency, streamed in scenarios:
            if number not in args.scenarios:
                continue
            measured = run_scenario(setup, args, name, body, concurrency)
            if streamed:
                raw[name] = stream_rows(table, name, measured, chunks_per_stream(setup, body))
            else:
                raw[name] = json_rows(table, name, measured)
        found = kept(setup)
        raw["kept"] = found
        table.notes += [
            "minimal: metricsMaxInMemory 0, captureBuffer 0; default: metricsMaxInMemory 1000, "
            "captureBuffer 5; heavy: store.path (SQLite file), captureBuffer 50",
            "vs minimal: % for rates, difference for times; added to direct: the mode's latency "
            "minus direct's at the same percentile",
            "CPU/request: the trioswap process's user+system CPU (all threads) during its own "
            "runs / requests served",
            kept_line(found),
        ]
        print(table.render(), flush=True)
        print(flush=True)
        if py_spy is not None:
            text, raw["profile"] = profile(h, setup, args, py_spy)
            print(text, flush=True)
            print(flush=True)
    print(harness.end_line(began))
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2))
    return 0


if __name__ == "__main__":
    harness.run_main(main)
