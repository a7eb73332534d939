"""trioswap next to other proxies: the same load sent directly to an upstream, through a bare
trio proxy (benchmarks/bare_proxy.py), through trioswap and through LiteLLM's proxy, side by side
in one run, against two upstreams:

- the bundled responder (`python -m trioswap.responder`, no delay), where the proxies' own cost
  is all there is to see;
- llama.cpp's llama-server with SmolLM2-135M on one thread (`-t 1`), a real model server.

    python benchmarks/proxies.py                  # ~2.5 minutes (+ LiteLLM's install once)
    python benchmarks/proxies.py --no-litellm     # without the LiteLLM column
    python benchmarks/proxies.py --help

Sections: non-streaming requests/s and latency (closed loop, wrk), streaming time to first byte
and chunks per second per stream (raw-socket client), and each proxy's resident memory at the
end. All modes are interleaved in rounds (the order rotates each round) so that background load
hits them alike. See benchmarks/README.md for what every number means.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
import loadgen
import yaml
from harness import Harness, Proc, ResponderSpec
from loadgen import LoadResult, RawClient, Timed
from overhead import CHAT_PATH, fmt, progress, verdict, words

HERE = Path(__file__).resolve().parent
TARGET_VS_LITELLM = 4.0  # non-streaming requests/s on the responder, trioswap / LiteLLM
TARGET_CHUNK_RATIO = 0.98  # llama-server streams: chunks/s per stream, trioswap / direct
TARGET_ADDED_TTFB_MS = 3.0  # llama-server streams: added first-byte p50

LITELLM_VERSION = "1.108.7"
LITELLM_KEY = "sk-bench"
LITELLM_VENV = Path(os.environ.get("LITELLM_VENV") or harness.CACHE / "litellm-venv")
# Everything LiteLLM would otherwise fetch or phone home about, off. It was checked to start and
# serve inside a network namespace with only a loopback interface (`unshare -n`).
LITELLM_ENV = {
    "LITELLM_MASTER_KEY": LITELLM_KEY,
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # the bundled cost map, not the one on GitHub
    "LITELLM_TELEMETRY": "False",
    "DISABLE_SCHEMA_UPDATE": "True",  # no Prisma schema push (no database configured anyway)
    "DISABLE_ADMIN_UI": "True",
    "LITELLM_MODE": "PRODUCTION",  # no .env loading
    "LITELLM_LOG": "WARNING",  # no per-request access log lines: its best case
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "NO_PROXY": "127.0.0.1,localhost",
}
MODES = ("direct", "bare", "trioswap", "litellm")
LABELS = {"direct": "direct", "bare": "bare", "trioswap": "trioswap", "litellm": "LiteLLM"}
PROMPT = "Name a color."
# For llama-server streams: an answer that runs to max_tokens, so every stream has as many chunks.
LONG_PROMPT = "Tell a long story about a fox and a dog."


def chat(model: str, *, stream: bool, max_tokens: int | None, prompt: str = PROMPT) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


# -- a table with one column per proxy ----------------------------------------------------------


@dataclass
class Grid:
    """Rows of metric | direct | bare | trioswap | LiteLLM | trioswap vs direct | trioswap vs
    LiteLLM | target. A row whose cells are all empty is a sub-heading."""

    title: str
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)

    HEADER = (
        "",
        "direct",
        "bare",
        "trioswap",
        "LiteLLM",
        "trioswap vs direct",
        "trioswap vs LiteLLM",
        "target",
    )

    def heading(self, text: str) -> None:
        self.rows.append([text])

    def add(
        self,
        metric: str,
        values: dict[str, float],
        *,
        digits: int = 1,
        compare: str = "",  # "ratio" (x) or "diff" (ms)
        target: str = "",
    ) -> None:
        cells = [metric] + [fmt(values.get(mode, math.nan), digits) for mode in MODES]
        for other in ("direct", "litellm"):
            a, b = values.get("trioswap", math.nan), values.get(other, math.nan)
            if compare == "ratio" and b and not math.isnan(a) and not math.isnan(b):
                cells.append(f"{a / b:.2f}x")
            elif compare == "diff" and not math.isnan(a) and not math.isnan(b):
                cells.append(f"{a - b:+.2f} ms")
            else:
                cells.append("")
        cells.append(target)
        self.rows.append(cells)

    def add_text(self, metric: str, values: dict[str, str]) -> None:
        self.rows.append([metric] + [values.get(mode, "-") for mode in MODES] + ["", "", ""])

    def target(self, name: str, value: str, goal: str, ok: bool) -> str:
        """Record a target; returns the cell text for the table."""
        self.targets.append({"name": name, "value": value, "target": goal, "met": ok})
        self.verdicts.append(f"{name}: {value} (target {goal}): {verdict(ok)}")
        return f"{goal}: {verdict(ok)}"

    def render(self) -> str:
        rows = [list(self.HEADER), *self.rows]
        ncols = len(self.HEADER)
        widths = [max(len(r[i]) for r in rows if len(r) == ncols) for i in range(ncols)]
        lines = [self.title, "-" * len(self.title)]
        for row in rows:
            if len(row) == 1:
                lines.append(row[0])
                continue
            cells = [row[0].ljust(widths[0])]
            cells += [row[i].rjust(widths[i]) for i in range(1, ncols - 1)]
            cells.append(row[-1])
            lines.append("  ".join(cells).rstrip())
        lines += [f"  * {note}" for note in self.notes]
        return "\n".join(lines)


# -- the setup ----------------------------------------------------------------------------------


@dataclass
class Upstream:
    """One upstream and how each mode reaches it."""

    key: str  # "responder" or "llama"
    model: str  # the model name in requests (trioswap's and LiteLLM's)
    direct_url: str
    urls: dict[str, str] = field(default_factory=dict)  # mode -> base URL
    server_pid: int = 0


@dataclass
class Setup:
    upstreams: dict[str, Upstream]
    proxy_pids: dict[str, int]  # mode -> the pid whose process tree is that proxy
    litellm_missing: str | None  # why there is no LiteLLM column, or None
    trioswap_pid: int = 0

    def headers(self, mode: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {LITELLM_KEY}"} if mode == "litellm" else {}

    def modes(self) -> list[str]:
        return [m for m in MODES if m != "litellm" or self.litellm_missing is None]

    def proxy_cpu(self, mode: str) -> float:
        """CPU seconds of the proxy in `mode` so far (its whole process tree, except for trioswap,
        whose children are the model servers)."""
        pid = self.proxy_pids.get(mode)
        if pid is None:
            return 0.0
        if mode == "trioswap":
            return harness.cpu_seconds(pid)
        return sum(harness.cpu_seconds(p) for p in [pid, *harness.descendants(pid)])


def litellm_installed() -> bool:
    return (LITELLM_VENV / "bin" / "litellm").exists()


def install_litellm(h: Harness) -> str | None:
    """Run benchmarks/install-litellm (a few minutes the first time); None on success, else why
    it failed."""
    progress(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} (once)")
    env = {"LITELLM_VENV": str(LITELLM_VENV), "LITELLM_VERSION": LITELLM_VERSION}
    proc = h.spawn("install-litellm", [str(HERE / "install-litellm")], env=env)
    code = proc.popen.wait()
    if code != 0 or not litellm_installed():
        tail = proc.tail(8)
        h.forget(proc)
        return f"benchmarks/install-litellm failed (exit {code}):\n{tail}"
    h.forget(proc)
    return None


def start_litellm(h: Harness, upstreams: dict[str, str]) -> tuple[Proc, str]:
    """LiteLLM's proxy, one worker, mapping each model name to `openai/<name>` at its upstream.
    Returns the process and its URL; the caller waits for it to be healthy."""
    config = {
        "model_list": [
            {
                "model_name": name,
                "litellm_params": {
                    "model": f"openai/{name}",
                    "api_base": f"{url}/v1",
                    "api_key": "sk-dummy",
                },
            }
            for name, url in upstreams.items()
        ],
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }
    path = h.workdir / "litellm.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = harness.free_port()
    argv = [
        str(LITELLM_VENV / "bin" / "litellm"),
        "--config",
        str(path),
        "--host",
        harness.LOCALHOST,
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    proc = h.spawn("litellm", argv, env=LITELLM_ENV)
    return proc, f"http://{harness.LOCALHOST}:{port}"


def wait_litellm(proc: Proc, url: str, timeout: float) -> None:
    harness.wait_healthy(
        url, timeout=timeout, interval=0.1, path="/health/liveliness", alive=proc.alive
    )


BARE_LISTENING = re.compile(r"bare proxy listening on (http://\S+)")


def start_bare(h: Harness, name: str, upstream: str, python: str) -> tuple[Proc, str]:
    argv = [python, str(HERE / "bare_proxy.py"), "--upstream", upstream]
    argv += ["--listen", f"{harness.LOCALHOST}:{harness.free_port()}"]
    proc = h.spawn(f"bare-{name}", argv, watch=True)
    return proc, proc.wait_for_line(BARE_LISTENING, 30).group(1).rstrip("/")


def start(h: Harness, args: argparse.Namespace) -> Setup:
    resp_port, llama_port = harness.free_port(), harness.free_port()
    direct = {
        "resp": f"http://{harness.LOCALHOST}:{resp_port}",
        "llama": f"http://{harness.LOCALHOST}:{llama_port}",
    }
    # LiteLLM first: it takes several seconds to import and start; the rest starts meanwhile.
    litellm: tuple[Proc, str] | None = None
    missing: str | None = None
    if args.no_litellm:
        missing = "--no-litellm"
    else:
        if not litellm_installed():
            missing = install_litellm(h)
        if missing is None:
            progress("starting LiteLLM")
            litellm = start_litellm(h, direct)
    responder = ResponderSpec(
        "resp", resp_port, response_text=words(args.stream_words), python=args.python
    )
    llama_argv = harness.llama_server_argv(llama_port, extra=("--alias", "llama"))
    models = {
        "resp": responder.model_entry(),
        "llama": {"cmd": shlex.join(llama_argv), "proxy": direct["llama"]},
    }
    config = harness.trioswap_config(
        models,
        {
            "bench": {
                "swap": False,
                "exclusive": False,
                "persistent": True,
                "members": list(models),
            }
        },
        healthCheckTimeout=60,
    )
    progress("starting trioswap")
    ts = h.start_trioswap(config, python=args.python)
    for name in models:  # trioswap starts models on first use
        response = harness.http_request(
            ts.url + CHAT_PATH, "POST", chat(name, stream=False, max_tokens=4), timeout=120
        )
        if response.status != 200:
            raise RuntimeError(f"warm-up request for {name}: {response.status} {response.body!r}")
    pids = {entry["model"]: int(entry["pid"]) for entry in ts.running()}
    progress("starting the bare proxies")
    bare = {name: start_bare(h, name, url, args.python) for name, url in direct.items()}
    proxy_pids = {"trioswap": ts.pid}
    if litellm is not None:
        progress("waiting for LiteLLM to be healthy")
        try:
            wait_litellm(*litellm, timeout=args.litellm_timeout)
            proxy_pids["litellm"] = litellm[0].pid
        except (TimeoutError, RuntimeError) as exc:
            missing = f"LiteLLM did not start: {exc}; its output:\n{litellm[0].tail(15)}"
            h.forget(litellm[0])
            litellm = None
    upstreams: dict[str, Upstream] = {}
    for key, name in (("responder", "resp"), ("llama", "llama")):
        up = Upstream(key, name, direct[name], server_pid=pids[name])
        up.urls = {"direct": direct[name], "bare": bare[name][1], "trioswap": ts.url}
        if litellm is not None:
            up.urls["litellm"] = litellm[1]
        upstreams[key] = up
    proxy_pids["bare"] = bare["resp"][0].pid
    setup = Setup(upstreams, proxy_pids, missing, ts.pid)
    # The bare proxy of the llama upstream has its own pid; CPU is counted per upstream below.
    setup.proxy_pids["bare-llama"] = bare["llama"][0].pid
    return setup


# -- non-streaming ------------------------------------------------------------------------------


@dataclass
class NonStreaming:
    load: dict[str, LoadResult]
    proxy_cpu: dict[str, float]  # mode -> CPU seconds of that mode's proxy during its runs


def rotated(items: Sequence[str], by: int) -> list[str]:
    by %= len(items)
    return [*items[by:], *items[:by]]


def run_non_streaming(
    setup: Setup,
    up: Upstream,
    args: argparse.Namespace,
    concurrency: int,
    duration: float,
    max_tokens: int,
) -> NonStreaming:
    modes = setup.modes()
    body = chat(up.model, stream=False, max_tokens=max_tokens)

    def cpu(mode: str) -> float:
        if mode == "bare" and up.key == "llama":
            return harness.cpu_seconds(setup.proxy_pids["bare-llama"])
        return setup.proxy_cpu(mode)

    def load(mode: str, seconds: float) -> LoadResult:
        return loadgen.run_load(
            up.urls[mode] + CHAT_PATH,
            tool=args.tool,
            body=body,
            headers=setup.headers(mode),
            concurrency=concurrency,
            duration=seconds,
        )

    for mode in modes:
        progress(f"{up.key} non-streaming c={concurrency} {mode}: warm-up {args.warmup:g}s")
        load(mode, args.warmup)
    runs: dict[str, list[LoadResult]] = {mode: [] for mode in modes}
    used = dict.fromkeys(modes, 0.0)
    per_round = duration / args.rounds
    for index in range(args.rounds):
        for mode in rotated(modes, index):
            progress(
                f"{up.key} non-streaming c={concurrency} {mode}: round {index + 1}/{args.rounds}"
            )
            before = cpu(mode)
            runs[mode].append(load(mode, per_round))
            used[mode] += cpu(mode) - before
    return NonStreaming({m: loadgen.merge(r) for m, r in runs.items()}, used)


def non_streaming(setup: Setup, args: argparse.Namespace) -> tuple[Grid, dict[str, Any]]:
    grid = Grid(
        f"Non-streaming POST {CHAT_PATH}, closed loop, max_tokens {args.max_tokens}; "
        f"modes interleaved in {args.rounds} rounds"
    )
    raw: dict[str, Any] = {}
    cases = [
        (
            "responder",
            args.concurrency,
            args.duration,
            f"responder (no delay), {args.duration:g}s per mode per concurrency",
        ),
        (
            "llama",
            args.llama_concurrency,
            args.llama_duration,
            f"llama-server -t 1 (SmolLM2-135M), {args.llama_duration:g}s per mode per concurrency",
        ),
    ]
    for key, concurrencies, duration, label in cases:
        up = setup.upstreams[key]
        grid.heading(label)
        for concurrency in concurrencies:
            m = run_non_streaming(setup, up, args, concurrency, duration, args.max_tokens)
            rps = {mode: r.rps for mode, r in m.load.items()}
            target = ""
            if key == "responder" and "litellm" not in rps:
                name = f"non-streaming req/s, responder, c={concurrency}, trioswap / LiteLLM"
                goal = f">= {TARGET_VS_LITELLM:g}x"
                grid.targets.append(
                    {"name": name, "value": "not measured", "target": goal, "met": None}
                )
                grid.verdicts.append(f"{name}: not measured, LiteLLM is missing (target {goal})")
            if key == "responder" and "litellm" in rps:
                ratio = rps["trioswap"] / rps["litellm"]
                target = grid.target(
                    f"non-streaming req/s on the responder at c={concurrency}, trioswap / LiteLLM",
                    f"{ratio:.2f}x",
                    f">= {TARGET_VS_LITELLM:g}x",
                    ratio >= TARGET_VS_LITELLM,
                )
            grid.heading(f"  concurrency {concurrency}")
            grid.add("    requests/s", rps, compare="ratio", target=target)
            for p in (50, 99):
                grid.add(
                    f"    latency p{p} (ms)",
                    {mode: r.latency_ms(p) for mode, r in m.load.items()},
                    digits=2,
                    compare="diff",
                )
            grid.add_text(
                "    requests (errors)",
                {mode: f"{r.requests} ({r.errors})" for mode, r in m.load.items()},
            )
            grid.add(
                "    proxy CPU/request (us)",
                {
                    mode: m.proxy_cpu[mode] / r.requests * 1e6 if r.requests else math.nan
                    for mode, r in m.load.items()
                    if mode != "direct"
                },
                digits=0,
                compare="ratio",
            )
            raw[f"{key}-c{concurrency}"] = {
                mode: {
                    "rps": r.rps,
                    "p50_ms": r.latency_ms(50),
                    "p99_ms": r.latency_ms(99),
                    "requests": r.requests,
                    "errors": r.errors,
                    "proxy_cpu_seconds": m.proxy_cpu[mode],
                }
                for mode, r in m.load.items()
            }
    grid.notes.append(
        f"load generator: {args.tool_label}; each connection sends its next request when the "
        "previous answer is complete, so requests/s is capacity at that concurrency"
    )
    grid.notes.append(
        "proxy CPU/request: user+system CPU of the proxy process (LiteLLM: its process tree) "
        "during its runs / requests; on 2 cores the busiest process sets the pace"
    )
    return grid, raw


# -- streaming ----------------------------------------------------------------------------------


def run_streams(
    setup: Setup, up: Upstream, count: int, max_tokens: int | None
) -> dict[str, list[Timed]]:
    modes = setup.modes()
    prompt = LONG_PROMPT if up.key == "llama" else PROMPT
    body = chat(up.model, stream=True, max_tokens=max_tokens, prompt=prompt)
    clients = {mode: RawClient(up.urls[mode]) for mode in modes}
    samples: dict[str, list[Timed]] = {mode: [] for mode in modes}

    def one(mode: str) -> Timed:
        timed = clients[mode].request("POST", CHAT_PATH, body, setup.headers(mode))
        if timed.status != 200 or not timed.saw_done:
            raise RuntimeError(
                f"{up.key} via {mode}: bad stream: {timed.status} {timed.body[:300]!r}"
            )
        return timed

    try:
        for mode in modes:
            for _ in range(2):
                one(mode)  # warm-up: connections, caches
        progress(f"{up.key} streaming: {count} streams per mode")
        for index in range(count):
            for mode in rotated(modes, index):
                samples[mode].append(one(mode))
    finally:
        for client in clients.values():
            client.close()
    return samples


def streaming(setup: Setup, args: argparse.Namespace) -> tuple[Grid, dict[str, Any]]:
    grid = Grid(
        f"Streaming POST {CHAT_PATH} (stream: true), one stream at a time, modes alternating "
        "stream by stream"
    )
    raw: dict[str, Any] = {}
    cases: list[tuple[str, int, int | None, str]] = [
        (
            "responder",
            args.streams,
            None,
            f"responder, no delay, {args.stream_words} chunks; {args.streams} streams per mode",
        ),
        (
            "llama",
            args.llama_streams,
            args.llama_stream_tokens,
            f"llama-server -t 1, max_tokens {args.llama_stream_tokens}; "
            f"{args.llama_streams} streams per mode",
        ),
    ]
    for key, count, max_tokens, label in cases:
        up = setup.upstreams[key]
        samples = run_streams(setup, up, count, max_tokens)

        def pct(
            get: Callable[[Timed], float], p: float, samples: dict[str, list[Timed]] = samples
        ) -> dict[str, float]:
            return {
                mode: loadgen.percentile(sorted(get(x) for x in xs), p)
                for mode, xs in samples.items()
            }

        ttfb50 = pct(lambda x: x.ttfb_ms, 50)
        rate50 = pct(lambda x: x.events_per_second, 50)
        ttfb_target = rate_target = ""
        if key == "llama":
            added = ttfb50["trioswap"] - ttfb50["direct"]
            ttfb_target = grid.target(
                "llama-server stream, trioswap's added first byte p50",
                f"{added:+.2f} ms",
                f"<= {TARGET_ADDED_TTFB_MS:g} ms",
                added <= TARGET_ADDED_TTFB_MS,
            )
            ratio = rate50["trioswap"] / rate50["direct"]
            rate_target = grid.target(
                "llama-server stream, chunks/s per stream p50, trioswap / direct",
                f"{ratio * 100:.1f}%",
                f">= {TARGET_CHUNK_RATIO * 100:g}%",
                ratio >= TARGET_CHUNK_RATIO,
            )
        grid.heading(label)
        grid.add("  first byte p50 (ms)", ttfb50, digits=2, compare="diff", target=ttfb_target)
        grid.add("  first byte p99 (ms)", pct(lambda x: x.ttfb_ms, 99), digits=2, compare="diff")
        grid.add(
            "  first event p50 (ms)", pct(lambda x: x.first_event_ms, 50), digits=2, compare="diff"
        )
        grid.add("  chunks/s per stream p50", rate50, digits=0, compare="ratio", target=rate_target)
        grid.add(
            "  gap between chunks p99 (ms)",
            {mode: loadgen.percentile(loadgen.pooled_gaps(xs), 99) for mode, xs in samples.items()},
            digits=2,
            compare="diff",
        )
        grid.add("  whole stream p50 (ms)", pct(lambda x: x.total_ms, 50), compare="diff")
        grid.add_text(
            "  chunks per stream",
            {
                mode: "/".join(str(n) for n in sorted({len(x.event_times) for x in xs}))
                for mode, xs in samples.items()
            },
        )
        raw[key] = {
            mode: {
                "ttfb_ms": [x.ttfb_ms for x in xs],
                "first_event_ms": [x.first_event_ms for x in xs],
                "chunks_per_s": [x.events_per_second for x in xs],
                "total_ms": [x.total_ms for x in xs],
                "chunks": [len(x.event_times) for x in xs],
            }
            for mode, xs in samples.items()
        }
    grid.notes.append(
        "first byte: request sent -> status line; first event: -> first complete 'data:' SSE "
        "event (llama-server sends its headers before evaluating the prompt); keep-alive "
        "connections, raw-socket client, timestamps at recv()"
    )
    grid.notes.append(
        "chunks/s per stream: (chunks - 1) / (last chunk - first chunk), median over streams; "
        "LiteLLM re-encodes every chunk, so its chunk count may differ by one or two"
    )
    return grid, raw


# -- memory at the end --------------------------------------------------------------------------


def memory_rows(grid: Grid, setup: Setup) -> dict[str, Any]:
    rss: dict[str, float] = {}
    hwm: dict[str, float] = {}
    for mode in setup.modes():
        if mode == "direct":
            continue
        pids = [setup.proxy_pids[mode]]
        if mode == "bare":
            pids.append(setup.proxy_pids["bare-llama"])
        elif mode == "litellm":
            pids += harness.descendants(pids[0])
        stats = [harness.memory_kib(p) for p in pids]
        rss[mode] = sum(s.get("VmRSS", 0) for s in stats) / 1024
        hwm[mode] = sum(s.get("VmHWM", 0) for s in stats) / 1024
    grid.heading("memory at the end of the run (both upstreams' traffic)")
    grid.add("  proxy RSS now (MiB)", rss, compare="ratio")
    grid.add("  proxy RSS peak, VmHWM (MiB)", hwm, compare="ratio")
    grid.notes.append(
        "memory: /proc/PID/status of the proxy (bare: its two processes, one per upstream, "
        "added up; LiteLLM: its process tree; trioswap: its own process, not the model servers)"
    )
    return {"rss_mib": rss, "hwm_mib": hwm}


# -- main -------------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = harness.arg_parser("Direct vs bare trio proxy vs trioswap vs LiteLLM, side by side.")
    parser.add_argument("--duration", type=float, default=6.0, help="responder: s/mode/conc")
    parser.add_argument("--llama-duration", type=float, default=6.0, help="llama: s/mode/conc")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per duration")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per mode")
    parser.add_argument("--concurrency", type=int_list, default=[1, 8], help="responder")
    parser.add_argument("--llama-concurrency", type=int_list, default=[1, 2], help="llama")
    parser.add_argument("--max-tokens", type=int, default=8, help="non-streaming max_tokens")
    parser.add_argument("--streams", type=int, default=30, help="responder streams per mode")
    parser.add_argument("--stream-words", type=int, default=200, help="chunks per responder stream")
    parser.add_argument("--llama-streams", type=int, default=16, help="llama streams per mode")
    parser.add_argument("--llama-stream-tokens", type=int, default=64, help="llama stream length")
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out")
    parser.add_argument(
        "--litellm-timeout", type=float, default=180.0, help="seconds LiteLLM may take to start"
    )
    parser.add_argument("--sections", default="1,2", help="1: non-streaming, 2: streaming")
    harness.add_common_args(
        parser,
        keep_logs_help="keep every process's output",
        python_help="for trioswap and the responder",
    )
    args = parser.parse_args(argv)
    args.tool, args.tool_label = loadgen.load_tool()
    args.sections = {int(s) for s in args.sections.split(",") if s}
    return args


def litellm_version() -> str:
    try:
        out = (LITELLM_VENV / "lib").glob("python*/site-packages/litellm-*.dist-info")
        return next(out).name.removeprefix("litellm-").removesuffix(".dist-info")
    except StopIteration:
        return "not installed"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    harness.require_llama_server()
    info = harness.machine_info()
    busy = harness.busy_processes()
    print(
        "\n".join(
            [
                "trioswap vs other proxies",
                *harness.machine_lines(info, python=args.python, busy=busy),
            ]
        )
    )
    print(f"upstreams: responder (trioswap.responder); {harness.LLAMA_SERVER} -t 1 --parallel 1")
    print(
        "proxies:   bare = benchmarks/bare_proxy.py (hypercorn trio + httpcore, no features); "
        f"LiteLLM = litellm[proxy] {litellm_version()} (1 uvicorn worker, uvloop, "
        "LITELLM_LOG=WARNING)"
    )
    print(flush=True)
    began = time.monotonic()
    raw: dict[str, Any] = {"machine": info, "loadgen": args.tool_label}
    grids: list[Grid] = []
    with Harness(keep_logs=args.keep_logs) as h, h.reporting("trioswap", "litellm"):
        setup = start(h, args)
        if setup.litellm_missing:
            print(f"LiteLLM column missing: {setup.litellm_missing}\n", flush=True)
            raw["litellm_missing"] = setup.litellm_missing
        sections: list[tuple[int, str, Callable[[], tuple[Grid, dict[str, Any]]]]] = [
            (1, "non_streaming", lambda: non_streaming(setup, args)),
            (2, "streaming", lambda: streaming(setup, args)),
        ]
        for number, key, run in sections:
            if number not in args.sections:
                continue
            grid, raw[key] = run()
            if number == max(args.sections):
                raw["memory"] = memory_rows(grid, setup)
            grids.append(grid)
            print(grid.render(), flush=True)
            print(flush=True)
    raw["targets"] = [t for grid in grids for t in grid.targets]
    harness.print_targets(line for grid in grids for line in grid.verdicts)
    print(harness.end_line(began))
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2))
    return 0


if __name__ == "__main__":
    harness.run_main(main)
