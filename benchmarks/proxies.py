"""trioswap next to other proxies: the same load sent directly to an upstream, through a bare
trio proxy (benchmarks/bare_proxy.py), through trioswap, through llama-swap and through LiteLLM's
proxy, side by side in one run, against three upstreams:

- the bundled responder (`python -m trioswap.responder`, no delay), where the proxies' own cost
  is all there is to see, and the same paced at 50 tokens/s;
- llama.cpp's llama-server with SmolLM2-135M on one thread (`-t 1`), a real model server.

    python benchmarks/proxies.py                  # ~8 minutes (+ LiteLLM's install once)
    python benchmarks/proxies.py --quick          # ~1.5 minutes, a smoke test: noisy numbers
    python benchmarks/proxies.py --no-litellm     # without the LiteLLM column
    python benchmarks/proxies.py --help

Sections: 1. non-streaming requests/s and latency (closed loop, wrk); 2. one stream at a time:
time to first byte and chunks per second per stream (raw-socket client); 3. streams under load:
unpaced streams/s and chunks/s at several concurrencies, and paced streams with each proxy's CPU;
then each proxy's resident memory at the end. All modes are interleaved in rounds (the order
rotates each round) so that background load hits them alike. See benchmarks/README.md for what
every number means.
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
import llama_swap
import loadgen
import yaml
from harness import Harness, Proc, ResponderSpec
from llama_swap import LlamaSwap
from loadgen import LoadResult, RawClient, Timed
from overhead import CHAT_PATH, fmt, progress, verdict, words

HERE = Path(__file__).resolve().parent
TARGET_VS_LITELLM = 4.0  # non-streaming requests/s on the responder, trioswap / LiteLLM
TARGET_CHUNK_RATIO = 0.98  # llama-server streams: chunks/s per stream, trioswap / direct
TARGET_ADDED_TTFB_MS = 3.0  # llama-server streams: added first-byte p50
# Issue 12's targets against llama-swap, on the responder:
JSON_THROUGHPUT_CONCURRENCY = 8  # JSON req/s at this concurrency: trioswap >= llama-swap
JSON_LATENCY_CONCURRENCY = 1  # added p50 at this concurrency: trioswap <= llama-swap
TARGET_STREAM_CHUNK_RATIO = 0.5  # unpaced streams: chunks/s through trioswap / direct
TARGET_PACED_CPU_PERCENT = 15.0  # paced streams: trioswap's CPU, % of one core

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
MODES = ("direct", "bare", "trioswap", "llama-swap", "litellm")
# The proxies trioswap is compared with, in the table's comparison columns.
RIVALS = ("direct", "llama-swap", "litellm")
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
    """Rows of metric | direct | bare | trioswap | llama-swap | LiteLLM | trioswap vs direct |
    trioswap vs llama-swap | trioswap vs LiteLLM | target. A row with only a metric is a
    sub-heading."""

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
        "llama-swap",
        "LiteLLM",
        "trioswap vs direct",
        "trioswap vs llama-swap",
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
        for other in RIVALS:
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
        self.rows.append([metric] + [values.get(mode, "-") for mode in MODES] + [""] * 4)

    def target(self, name: str, value: str, goal: str, ok: bool) -> str:
        """Record a target; returns the cell text for the table."""
        self.targets.append({"name": name, "value": value, "target": goal, "met": ok})
        self.verdicts.append(f"{name}: {value} (target {goal}): {verdict(ok)}")
        return f"{goal}: {verdict(ok)}"

    def unmeasured(self, name: str, goal: str, why: str) -> None:
        """Record a target that this run could not measure (a proxy is missing)."""
        self.targets.append({"name": name, "value": "not measured", "target": goal, "met": None})
        self.verdicts.append(f"{name}: not measured, {why} (target {goal})")

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

    key: str  # "responder", "paced" or "llama"
    model: str  # the model name in requests (the same through every proxy)
    direct_url: str
    urls: dict[str, str] = field(default_factory=dict)  # mode -> base URL
    pids: dict[str, int] = field(default_factory=dict)  # mode -> the proxy process serving it


@dataclass
class Setup:
    upstreams: dict[str, Upstream]
    missing: dict[str, str]  # proxy ("llama-swap", "litellm") -> why it has no column
    llama_swap_version: str  # its -version output, when it runs

    def headers(self, mode: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {LITELLM_KEY}"} if mode == "litellm" else {}

    def modes(self) -> list[str]:
        return [m for m in MODES if m not in self.missing]

    def proxy_pids(self, mode: str) -> list[int]:
        """The processes that are the proxy in `mode`: bare runs one per upstream; LiteLLM's
        whole process tree; trioswap's and llama-swap's own process only, since their children
        are the model servers."""
        pids = sorted({up.pids[mode] for up in self.upstreams.values() if mode in up.pids})
        if mode == "litellm":
            pids += [child for pid in pids for child in harness.descendants(pid)]
        return pids

    def proxy_cpu(self, mode: str, up: Upstream) -> float:
        """CPU seconds so far of the proxy in `mode` that serves `up` (see `proxy_pids`)."""
        if mode not in up.pids:
            return 0.0
        pids = [up.pids[mode]]
        if mode == "litellm":
            pids += harness.descendants(pids[0])
        return sum(harness.cpu_seconds(p) for p in pids)


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


# The upstreams' model names, and their keys in `Setup.upstreams`.
UPSTREAM_KEYS = {"resp": "responder", "paced": "paced", "llama": "llama"}


def upstream_models(ports: dict[str, int], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The upstreams as `models:` entries (trioswap's format is llama-swap's), each at an explicit
    port so that it can be reached directly too. Requests cut the answers with max_tokens."""
    text = words(max(args.stream_words, *args.load_chunks))
    resp = ResponderSpec("resp", ports["resp"], response_text=text, python=args.python)
    paced = ResponderSpec(
        "paced",
        ports["paced"],
        tokens_per_second=args.paced_rate,
        response_text=words(args.paced_chunks),
        python=args.python,
    )
    llama_argv = harness.llama_server_argv(ports["llama"], extra=("--alias", "llama"))
    llama_url = f"http://{harness.LOCALHOST}:{ports['llama']}"
    return {
        "resp": resp.model_entry(),
        "paced": paced.model_entry(),
        "llama": {"cmd": shlex.join(llama_argv), "proxy": llama_url},
    }


def proxy_config(models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A config that runs every model at once and keeps them up (a persistent, non-swapping
    group): nothing swaps during the measurements."""
    group = {"swap": False, "exclusive": False, "persistent": True, "members": list(models)}
    return harness.trioswap_config(models, {"bench": group}, healthCheckTimeout=60)


def warm_up(url: str, models: Sequence[str], proxy: str) -> None:
    """One request per model through the proxy at `url`: both trioswap and llama-swap start a
    model on its first request, and every measurement is of loaded models."""
    for model in models:
        response = harness.http_request(
            url + CHAT_PATH, "POST", chat(model, stream=False, max_tokens=4), timeout=120
        )
        if response.status != 200:
            raise RuntimeError(
                f"warm-up request for {model} via {proxy}: {response.status} {response.body!r}"
            )


def start_llama_swap(h: Harness, args: argparse.Namespace) -> tuple[LlamaSwap | None, str]:
    """llama-swap with upstreams of its own (the same commands on other ports), warm, and its
    version; or None and why it is missing."""
    path, about = llama_swap.binary(args)
    if path is None:
        return None, about
    models = upstream_models({name: harness.free_port() for name in UPSTREAM_KEYS}, args)
    # llama-swap answers 429 beyond 10 requests in flight per model by default; trioswap has no
    # such limit by default. Raised above the highest concurrency measured.
    limit = max(*args.concurrency, *args.load_concurrency, args.paced_clients) + 8
    for entry in models.values():
        entry["concurrencyLimit"] = limit
    progress("starting llama-swap")
    try:
        ls = llama_swap.start(h, path, proxy_config(models))
        warm_up(ls.url, list(models), "llama-swap")
    except RuntimeError as exc:
        return None, str(exc)
    return ls, about


def start(h: Harness, args: argparse.Namespace) -> Setup:
    ports = {name: harness.free_port() for name in UPSTREAM_KEYS}
    direct = {name: f"http://{harness.LOCALHOST}:{port}" for name, port in ports.items()}
    missing: dict[str, str] = {}
    # LiteLLM first: it takes several seconds to import and start; the rest starts meanwhile.
    litellm: tuple[Proc, str] | None = None
    if args.no_litellm:
        missing["litellm"] = "--no-litellm"
    else:
        if not litellm_installed() and (why := install_litellm(h)) is not None:
            missing["litellm"] = why
        else:
            progress("starting LiteLLM")
            litellm = start_litellm(h, direct)
    models = upstream_models(ports, args)
    progress("starting trioswap")
    ts = h.start_trioswap(proxy_config(models), python=args.python)
    warm_up(ts.url, list(models), "trioswap")
    ls, llama_swap_about = start_llama_swap(h, args)
    if ls is None:
        missing["llama-swap"] = llama_swap_about
    progress("starting the bare proxies")
    bare = {name: start_bare(h, name, url, args.python) for name, url in direct.items()}
    if litellm is not None:
        progress("waiting for LiteLLM to be healthy")
        try:
            wait_litellm(*litellm, timeout=args.litellm_timeout)
        except (TimeoutError, RuntimeError) as exc:
            missing["litellm"] = f"LiteLLM did not start: {exc}; its output:\n{litellm[0].tail(15)}"
            h.forget(litellm[0])
            litellm = None
    upstreams: dict[str, Upstream] = {}
    for name, key in UPSTREAM_KEYS.items():
        up = Upstream(key, name, direct[name])
        up.urls = {"direct": direct[name], "bare": bare[name][1], "trioswap": ts.url}
        up.pids = {"bare": bare[name][0].pid, "trioswap": ts.pid}
        if ls is not None:
            up.urls["llama-swap"], up.pids["llama-swap"] = ls.url, ls.pid
        if litellm is not None:
            up.urls["litellm"], up.pids["litellm"] = litellm[1], litellm[0].pid
        upstreams[key] = up
    return Setup(upstreams, missing, llama_swap_about if ls is not None else "")


# -- non-streaming ------------------------------------------------------------------------------


@dataclass
class ClosedLoop:
    load: dict[str, LoadResult]
    proxy_cpu: dict[str, float]  # mode -> CPU seconds of that mode's proxy during its runs

    def cpu_per_request_us(self, mode: str) -> float:
        requests = self.load[mode].requests
        return self.proxy_cpu[mode] / requests * 1e6 if requests else math.nan

    def cpu_percent(self, mode: str) -> float:
        """The proxy's CPU during its runs, in % of one core."""
        seconds = self.load[mode].duration
        return self.proxy_cpu[mode] / seconds * 100 if seconds else math.nan


def rotated(items: Sequence[str], by: int) -> list[str]:
    by %= len(items)
    return [*items[by:], *items[:by]]


def run_closed_loop(
    setup: Setup,
    up: Upstream,
    args: argparse.Namespace,
    modes: Sequence[str],
    body: bytes,
    concurrency: int,
    duration: float,
    label: str,
) -> ClosedLoop:
    """`concurrency` connections each sending `body` again as soon as its answer is complete,
    for `duration` seconds per mode, split into interleaved rounds; each proxy's CPU meanwhile."""

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
        # One request first: a proxy's lazy set-up on its first request is not its speed.
        harness.http_request(up.urls[mode] + CHAT_PATH, "POST", body, setup.headers(mode), 120)
        if args.warmup > 0:
            progress(f"{label} {mode}: warm-up {args.warmup:g}s")
            load(mode, args.warmup)
    runs: dict[str, list[LoadResult]] = {mode: [] for mode in modes}
    used = dict.fromkeys(modes, 0.0)
    per_round = duration / args.rounds
    for index in range(args.rounds):
        for mode in rotated(modes, index):
            progress(f"{label} {mode}: round {index + 1}/{args.rounds}")
            before = setup.proxy_cpu(mode, up)
            runs[mode].append(load(mode, per_round))
            used[mode] += setup.proxy_cpu(mode, up) - before
    return ClosedLoop({m: loadgen.merge(r) for m, r in runs.items()}, used)


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else math.nan


def rival_target(
    grid: Grid,
    setup: Setup,
    rival: str,
    name: str,
    goal: str,
    measure: Callable[[], tuple[str, bool]],
) -> str:
    """A target against `rival` ("llama-swap", "litellm"): `measure()` gives the value's text and
    whether it is met; "not measured" when the rival has no column. Returns the table cell."""
    if rival in setup.missing:
        grid.unmeasured(name, goal, f"{rival} is missing")
        return ""
    value, ok = measure()
    return grid.target(name, value, goal, ok)


def json_targets(
    grid: Grid, setup: Setup, concurrency: int, m: ClosedLoop
) -> tuple[list[str], list[str]]:
    """Issue 12's and the LiteLLM targets on the responder at `concurrency`: the target cells of
    the requests/s row and of the p50 row."""
    rps = {mode: r.rps for mode, r in m.load.items()}
    p50 = {mode: r.latency_ms(50) for mode, r in m.load.items()}

    def vs_litellm() -> tuple[str, bool]:
        times = ratio(rps["trioswap"], rps["litellm"])
        return f"{times:.2f}x", times >= TARGET_VS_LITELLM

    def rps_vs_llama_swap() -> tuple[str, bool]:
        times = ratio(rps["trioswap"], rps["llama-swap"])
        return f"{times:.2f}x", times >= 1.0

    def added_p50_vs_llama_swap() -> tuple[str, bool]:
        ours, theirs = p50["trioswap"] - p50["direct"], p50["llama-swap"] - p50["direct"]
        return f"{ours:+.2f} ms vs {theirs:+.2f} ms", ours <= theirs

    rps_cells = [
        rival_target(
            grid,
            setup,
            "litellm",
            f"non-streaming req/s on the responder at c={concurrency}, trioswap / LiteLLM",
            f">= {TARGET_VS_LITELLM:g}x",
            vs_litellm,
        )
    ]
    p50_cells: list[str] = []
    if concurrency == JSON_THROUGHPUT_CONCURRENCY:
        rps_cells.append(
            rival_target(
                grid,
                setup,
                "llama-swap",
                f"JSON req/s on the responder at c={concurrency}, trioswap / llama-swap",
                ">= 1x",
                rps_vs_llama_swap,
            )
        )
    if concurrency == JSON_LATENCY_CONCURRENCY:
        p50_cells.append(
            rival_target(
                grid,
                setup,
                "llama-swap",
                f"JSON added p50 on the responder at c={concurrency}, trioswap vs llama-swap",
                "<= llama-swap's",
                added_p50_vs_llama_swap,
            )
        )
    return rps_cells, p50_cells


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
    body = {
        key: chat(setup.upstreams[key].model, stream=False, max_tokens=args.max_tokens)
        for key, *_ in cases
    }
    for key, concurrencies, duration, label in cases:
        up = setup.upstreams[key]
        grid.heading(label)
        for concurrency in concurrencies:
            m = run_closed_loop(
                setup,
                up,
                args,
                setup.modes(),
                body[key],
                concurrency,
                duration,
                f"{key} non-streaming c={concurrency}",
            )
            rps_cells, p50_cells = [], []
            if key == "responder":
                rps_cells, p50_cells = json_targets(grid, setup, concurrency, m)
            grid.heading(f"  concurrency {concurrency}")
            grid.add(
                "    requests/s",
                {mode: r.rps for mode, r in m.load.items()},
                compare="ratio",
                target="; ".join(c for c in rps_cells if c),
            )
            for p in (50, 99):
                grid.add(
                    f"    latency p{p} (ms)",
                    {mode: r.latency_ms(p) for mode, r in m.load.items()},
                    digits=2,
                    compare="diff",
                    target="; ".join(c for c in p50_cells if c) if p == 50 else "",
                )
            grid.add_text(
                "    requests (errors)",
                {mode: f"{r.requests} ({r.errors})" for mode, r in m.load.items()},
            )
            grid.add(
                "    proxy CPU/request (us)",
                {mode: m.cpu_per_request_us(mode) for mode in m.load if mode != "direct"},
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
        "proxy CPU/request: user+system CPU of the proxy process, all its threads, children "
        "excluded (LiteLLM: its process tree) during its runs / requests; on 2 cores the "
        "busiest process sets the pace"
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
            args.stream_words,
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


# -- streams under load ------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadCase:
    upstream: str  # key in Setup.upstreams
    chunks: int  # SSE events per stream
    concurrency: int
    duration: float  # seconds per mode
    rate: float = 0.0  # the upstream's tokens/s; 0: unpaced

    @property
    def name(self) -> str:
        pace = f"paced at {self.rate:g} tok/s" if self.rate else "unpaced"
        return f"streams of {self.chunks} chunks {pace}, c={self.concurrency}"


def load_cases(args: argparse.Namespace) -> list[LoadCase]:
    cases = [
        LoadCase("responder", chunks, concurrency, args.load_duration)
        for chunks in args.load_chunks
        for concurrency in args.load_concurrency
    ]
    paced = LoadCase(
        "paced", args.paced_chunks, args.paced_clients, args.paced_duration, args.paced_rate
    )
    return [*cases, paced]


def streams_relayed(result: LoadResult, stream_bytes: int) -> float:
    """Streams/s from the bytes read, so that the streams a run's end cuts short count for what
    was relayed of them (at 64 streams of 256 chunks, one stream can take seconds); completed
    streams/s when the load generator does not count bytes."""
    if not result.received or not stream_bytes or not result.duration:
        return result.rps
    return result.received / stream_bytes / result.duration


def stream_load_targets(
    grid: Grid,
    setup: Setup,
    case: LoadCase,
    streams_per_s: dict[str, float],
    chunks_per_s: dict[str, float],
    m: ClosedLoop,
) -> dict[str, str]:
    """Issue 12's stream targets for `case`: metric row -> target cell."""
    if case.rate:
        cpu = m.cpu_percent("trioswap")
        cell = grid.target(
            f"{case.name}, trioswap's CPU",
            f"{cpu:.1f}% of a core",
            f"<= {TARGET_PACED_CPU_PERCENT:g}%",
            cpu <= TARGET_PACED_CPU_PERCENT,
        )
        return {"proxy CPU (% of a core)": cell}

    def vs_llama_swap() -> tuple[str, bool]:
        times = ratio(streams_per_s["trioswap"], streams_per_s["llama-swap"])
        return f"{times:.2f}x", times >= 1.0

    vs_direct = ratio(chunks_per_s["trioswap"], chunks_per_s["direct"])
    streams = rival_target(
        grid,
        setup,
        "llama-swap",
        f"{case.name}, streams/s trioswap / llama-swap",
        ">= 1x",
        vs_llama_swap,
    )
    chunks = grid.target(
        f"{case.name}, chunks/s trioswap / direct",
        f"{vs_direct:.2f}x",
        f">= {TARGET_STREAM_CHUNK_RATIO:g}x",
        vs_direct >= TARGET_STREAM_CHUNK_RATIO,
    )
    return {"streams/s": streams, "chunks/s": chunks}


def stream_load(setup: Setup, args: argparse.Namespace) -> tuple[Grid, dict[str, Any]]:
    modes = [mode for mode in setup.modes() if mode != "litellm"]
    grid = Grid(
        f"Streams under load: POST {CHAT_PATH} (stream: true), closed loop; modes interleaved "
        f"in {args.rounds} rounds"
    )
    raw: dict[str, Any] = {}
    for case in load_cases(args):
        up = setup.upstreams[case.upstream]
        body = chat(up.model, stream=True, max_tokens=case.chunks - 1)
        sample = {
            mode: loadgen.one_stream(up.urls[mode], CHAT_PATH, body, setup.headers(mode))
            for mode in modes
        }
        events = {mode: len(timed.event_times) for mode, timed in sample.items()}
        m = run_closed_loop(
            setup, up, args, modes, body, case.concurrency, case.duration, case.name
        )
        streams_per_s = {
            mode: streams_relayed(r, sample[mode].wire_bytes) for mode, r in m.load.items()
        }
        chunks_per_s = {mode: rate * events[mode] for mode, rate in streams_per_s.items()}
        cells = stream_load_targets(grid, setup, case, streams_per_s, chunks_per_s, m)
        grid.heading(f"{case.name}, {case.duration:g}s per mode")
        grid.add("  streams/s", streams_per_s, compare="ratio", target=cells.get("streams/s", ""))
        grid.add(
            "  chunks/s", chunks_per_s, digits=0, compare="ratio", target=cells.get("chunks/s", "")
        )
        grid.add(
            "  whole stream p50 (ms)",
            {mode: r.latency_ms(50) for mode, r in m.load.items()},
            digits=2,
            compare="diff",
        )
        proxies = [mode for mode in modes if mode != "direct"]
        grid.add(
            "  proxy CPU (% of a core)",
            {mode: m.cpu_percent(mode) for mode in proxies},
            compare="ratio",
            target=cells.get("proxy CPU (% of a core)", ""),
        )
        grid.add(
            "  proxy CPU/chunk (us)",
            {
                mode: m.proxy_cpu[mode] / (chunks_per_s[mode] * m.load[mode].duration) * 1e6
                if chunks_per_s[mode]
                else math.nan
                for mode in proxies
            },
            digits=1,
            compare="ratio",
        )
        grid.add_text(
            "  streams completed (errors)",
            {mode: f"{r.requests} ({r.errors})" for mode, r in m.load.items()},
        )
        grid.add_text("  chunks per stream", {mode: str(n) for mode, n in events.items()})
        raw[case.name] = {
            mode: {
                "streams_per_s": streams_per_s[mode],
                "chunks_per_s": chunks_per_s[mode],
                "p50_ms": r.latency_ms(50),
                "streams": r.requests,
                "errors": r.errors,
                "chunks_per_stream": events[mode],
                "bytes_per_stream": sample[mode].wire_bytes,
                "bytes_received": r.received,
                "seconds": r.duration,
                "proxy_cpu_seconds": m.proxy_cpu[mode] if mode != "direct" else None,
            }
            for mode, r in m.load.items()
        }
    grid.notes.append(
        f"load generator: {args.tool_label}; each connection opens its next stream when the last "
        "one has ended. streams/s: bytes the load generator read (streams cut by the end of a run "
        "included) / one stream's size on the wire via that mode / seconds; without wrk, "
        "completed streams / seconds. chunks/s: streams/s x chunks per stream"
    )
    grid.notes.append(
        "proxy CPU: user+system time from /proc/PID/stat of the proxy process (all its threads, "
        "children excluded: trioswap's and llama-swap's children are the model servers; bare: "
        "its process for this upstream) over its runs / the runs' wall time"
    )
    grid.notes.append(
        "LiteLLM is left out of this section: it relays a small fraction of the others' chunks/s "
        "(see the one-stream table) and no target involves it"
    )
    return grid, raw


# -- memory at the end --------------------------------------------------------------------------


def memory_rows(grid: Grid, setup: Setup) -> dict[str, Any]:
    rss: dict[str, float] = {}
    hwm: dict[str, float] = {}
    for mode in setup.modes():
        if mode == "direct":
            continue
        stats = [harness.memory_kib(p) for p in setup.proxy_pids(mode)]
        rss[mode] = sum(s.get("VmRSS", 0) for s in stats) / 1024
        hwm[mode] = sum(s.get("VmHWM", 0) for s in stats) / 1024
    grid.heading("memory at the end of the run (every upstream's traffic)")
    grid.add("  proxy RSS now (MiB)", rss, compare="ratio")
    grid.add("  proxy RSS peak, VmHWM (MiB)", hwm, compare="ratio")
    grid.notes.append(
        "memory: /proc/PID/status of the proxy (bare: its processes, one per upstream, added up; "
        "LiteLLM: its process tree; trioswap and llama-swap: their own process, not the model "
        "servers)"
    )
    return {"rss_mib": rss, "hwm_mib": hwm}


# -- main -------------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


# --quick: short runs, to see that everything works end to end (noisy numbers).
QUICK = {
    "duration": 1.0,
    "llama_duration": 1.0,
    "rounds": 1,
    "warmup": 0.0,
    "llama_concurrency": [1],
    "streams": 5,
    "llama_streams": 2,
    "llama_stream_tokens": 16,
    "load_duration": 1.0,
    "paced_chunks": 25,
    "paced_duration": 2.0,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = harness.arg_parser(
        "Direct vs bare trio proxy vs trioswap vs llama-swap vs LiteLLM, side by side."
    )
    parser.add_argument(
        "--quick", action="store_true", help="~1 minute smoke test; explicit options still apply"
    )
    parser.add_argument("--duration", type=float, default=6.0, help="responder: s/mode/conc")
    parser.add_argument("--llama-duration", type=float, default=6.0, help="llama: s/mode/conc")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per duration")
    parser.add_argument("--warmup", type=float, default=1.0, help="s of warm-up per mode (0: none)")
    parser.add_argument("--concurrency", type=int_list, default=[1, 8], help="responder")
    parser.add_argument("--llama-concurrency", type=int_list, default=[1, 2], help="llama")
    parser.add_argument("--max-tokens", type=int, default=8, help="non-streaming max_tokens")
    parser.add_argument("--streams", type=int, default=30, help="responder streams per mode")
    parser.add_argument("--stream-words", type=int, default=200, help="chunks per responder stream")
    parser.add_argument("--llama-streams", type=int, default=16, help="llama streams per mode")
    parser.add_argument("--llama-stream-tokens", type=int, default=64, help="llama stream length")
    parser.add_argument(
        "--load-chunks", type=int_list, default=[32, 256], help="section 3: unpaced stream lengths"
    )
    parser.add_argument(
        "--load-concurrency", type=int_list, default=[8, 64], help="section 3: unpaced streams"
    )
    parser.add_argument("--load-duration", type=float, default=6.0, help="unpaced: s/mode/case")
    parser.add_argument("--paced-clients", type=int, default=64, help="paced streams at once")
    parser.add_argument("--paced-rate", type=float, default=50.0, help="paced tokens/s")
    parser.add_argument("--paced-chunks", type=int, default=50, help="chunks per paced stream")
    parser.add_argument("--paced-duration", type=float, default=8.0, help="paced: s/mode")
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out")
    parser.add_argument(
        "--litellm-timeout", type=float, default=180.0, help="seconds LiteLLM may take to start"
    )
    llama_swap.add_args(parser)
    parser.add_argument(
        "--sections",
        default="1,2,3",
        help="1: non-streaming, 2: one stream at a time, 3: streams under load",
    )
    harness.add_common_args(
        parser,
        keep_logs_help="keep every process's output",
        python_help="for trioswap and the responder",
    )
    if parser.parse_known_args(argv)[0].quick:
        parser.set_defaults(**QUICK)
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
    print(
        f"upstreams: responder (trioswap.responder; no delay, and paced at {args.paced_rate:g} "
        f"tokens/s); {harness.LLAMA_SERVER} -t 1 --parallel 1"
    )
    print(
        "proxies:   bare = benchmarks/bare_proxy.py (hypercorn trio + httpcore, no features); "
        "llama-swap = the same models in its own config (concurrencyLimit raised, the rest its "
        f"defaults); LiteLLM = litellm[proxy] {litellm_version()} (1 uvicorn worker, uvloop, "
        "LITELLM_LOG=WARNING)"
    )
    if args.quick:
        print("--quick:   short runs for a smoke test; the numbers are noise")
    print(flush=True)
    began = time.monotonic()
    raw: dict[str, Any] = {"machine": info, "loadgen": args.tool_label}
    grids: list[Grid] = []
    with (
        Harness(keep_logs=args.keep_logs) as h,
        h.reporting("trioswap", "llama-swap", "litellm"),
    ):
        setup = start(h, args)
        if setup.llama_swap_version:
            print(f"llama-swap: {setup.llama_swap_version}")
            raw["llama_swap_version"] = setup.llama_swap_version
        for proxy, key in (("llama-swap", "llama_swap_missing"), ("litellm", "litellm_missing")):
            if proxy in setup.missing:
                print(f"{proxy} column skipped: {setup.missing[proxy]}")
                raw[key] = setup.missing[proxy]
        print(flush=True)
        sections: list[tuple[int, str, Callable[[], tuple[Grid, dict[str, Any]]]]] = [
            (1, "non_streaming", lambda: non_streaming(setup, args)),
            (2, "streaming", lambda: streaming(setup, args)),
            (3, "stream_load", lambda: stream_load(setup, args)),
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
