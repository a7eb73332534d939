"""Run every benchmark and regenerate benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/run_all.py            # ~17 minutes on 2 cores
    .venv/bin/python benchmarks/run_all.py --quick    # ~4 minutes, shorter runs, noisier
    .venv/bin/python benchmarks/run_all.py --only proxies,swap

Each benchmark runs as its own process (overhead.py, proxies.py, swap.py, memory.py,
connections.py, observability_overhead.py, relay_floor.py, startup.py), one after the other,
never two at once; their tables go to the terminal as they come and into RESULTS.md with the
date, the machine, the exact commands and a summary of the targets (printed next to the numbers,
never asserted: the exit status is 0 unless a benchmark fails). Ctrl-C or SIGTERM stops the
running benchmark, which stops everything it started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import harness
import loadgen

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# name -> (script, normal arguments, --quick arguments, what it measures)
BENCHMARKS: dict[str, tuple[str, list[str], list[str], str]] = {
    "overhead": (
        "overhead.py",
        [],
        ["--duration", "3", "--rounds", "2", "--streams", "15", "--swaps", "4"],
        "trioswap's cost against the bundled responder: non-streaming, streaming, swap",
    ),
    "proxies": (
        "proxies.py",
        [],
        ["--quick"],
        "direct vs bare trio proxy vs trioswap vs llama-swap vs LiteLLM, on the responder and "
        "llama-server: JSON replies, single streams, streams under load",
    ),
    "swap": (
        "swap.py",
        [],
        ["--swaps", "4", "--idle-swaps", "2"],
        "swap latency between two real llama-server models, split into phases",
    ),
    "memory": (
        "memory.py",
        [],
        ["--rounds", "2", "--duration", "2"],
        "trioswap's resident memory, idle and after load",
    ),
    "connections": (
        "connections.py",
        [],
        ["--no-llama-swap"],
        "1000 concurrent streaming connections through a swap group, next to llama-swap",
    ),
    "observability": (
        "observability_overhead.py",
        [],
        ["--duration", "4", "--rounds", "2"],
        "what observability costs: minimal, default and heavy trioswaps next to direct",
    ),
    "relay_floor": (
        "relay_floor.py",
        [],
        ["--quick"],
        "paced streams through bare trio relays, trioswap and llama-swap: each proxy's CPU",
    ),
    "startup": (
        "startup.py",
        [],
        ["--runs", "5"],
        "exec -> a healthy /health, from the venv and from the zipapp",
    ),
}


@dataclass
class Outcome:
    name: str
    command: str
    stdout: str = ""
    returncode: int | None = None
    seconds: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


def run_one(name: str, extra: Sequence[str], json_path: Path) -> Outcome:
    script, _, _, _ = BENCHMARKS[name]
    argv = [sys.executable, str(HERE / script), *extra, "--json", str(json_path)]
    shown = shlex.join([".venv/bin/python", f"benchmarks/{script}", *extra])
    outcome = Outcome(name, shown)
    print(f"\n### {shown}\n", flush=True)
    began = time.monotonic()
    # Same process group: a Ctrl-C on the terminal reaches the benchmark directly too.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if not line.startswith("raw numbers written to "):  # a temporary file
                lines.append(line)
        proc.wait()
    except BaseException:
        # The benchmark's own harness stops everything it started on SIGTERM.
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        raise
    outcome.seconds = time.monotonic() - began
    outcome.returncode = proc.returncode
    outcome.stdout = "".join(lines)
    with contextlib.suppress(OSError, ValueError):
        outcome.raw = json.loads(json_path.read_text())
    return outcome


def overhead_verdicts(stdout: str) -> list[str]:
    """overhead.py prints its verdicts after a 'Targets' heading."""
    lines = stdout.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("Targets (printed"):
            return [x.strip() for x in lines[index + 2 :] if x.startswith("  ")]
    return []


VERDICT = re.compile(
    r"^(?P<name>.*?): (?P<value>[^():]*?) \(target (?P<goal>[^)]*)\): (?P<met>met|NOT MET)$"
)


def overhead_row(line: str) -> str:
    """One of overhead.py's verdict lines as a row of the targets table."""
    if match := VERDICT.match(line):
        met = "yes" if match["met"] == "met" else "**no**"
        return f"| overhead | {match['name']} | {match['value']} | {match['goal']} | {met} |"
    # The swap line has two verdicts (the total and trioswap's own share).
    verdicts = re.findall(r"\b(met|NOT MET)\b", line)
    met = "yes" if "NOT MET" not in verdicts else "partly" if "met" in verdicts else "**no**"
    return f"| overhead | {line.replace('|', '/')} | | | {met} |"


def tool_versions() -> dict[str, str]:
    versions = {"wrk": loadgen.wrk_version() if loadgen.have_wrk() else "not installed"}
    try:
        out = subprocess.run(
            [str(harness.LLAMA_SERVER), "--version"], capture_output=True, text=True, timeout=20
        )
        first = [x for x in (out.stdout + out.stderr).splitlines() if x.startswith("version")]
        versions["llama-server"] = first[0] if first else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        versions["llama-server"] = "not installed"
    try:
        head = subprocess.run(
            ["git", "log", "-1", "--format=%h %s"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], capture_output=True, text=True, cwd=ROOT
        ).stdout.split()
        versions["trioswap"] = (head or "unknown") + (
            " + uncommitted changes in src/" if dirty else ""
        )
    except OSError:
        versions["trioswap"] = "unknown"
    from proxies import litellm_version

    versions["litellm"] = litellm_version()
    return versions


def llama_swap_version(outcomes: Sequence[Outcome]) -> str:
    """The llama-swap the benchmarks ran beside (they report its -version output)."""
    found = (o.raw.get("llama_swap_version") for o in outcomes)
    return next((v for v in found if v), "not run")


def render(
    outcomes: list[Outcome],
    info: dict[str, str],
    end_load: str,
    busy: list[str],
    versions: dict[str, str],
    argv: Sequence[str],
    total: float,
) -> str:
    out: list[str] = ["# Benchmark results", ""]
    out.append(
        "Generated by `benchmarks/run_all.py`; do not edit by hand, rerun it. What each number "
        "means: [README.md](README.md)."
    )
    out.append("")
    out.append("| | |")
    out.append("|---|---|")
    rows = [
        ("date", info["date"]),
        ("machine", f"{info['cores']} cores, {info['cpu']}, {info['memory']} RAM"),
        ("kernel", info["kernel"]),
        ("Python", info["python"]),
        ("load average (1/5/15 min)", f"{info['loadavg']} at start, {end_load} at the end"),
        ("other busy processes at start", ", ".join(busy) or "none above 20% of a core"),
        ("trioswap commit", versions["trioswap"]),
        ("wrk", versions["wrk"]),
        ("llama-server", f"{versions['llama-server']}, SmolLM2-135M-Instruct Q4_1, `-t 1`"),
        ("llama-swap", llama_swap_version(outcomes)),
        ("LiteLLM", f"litellm[proxy] {versions['litellm']}"),
        ("total time", f"{total / 60:.1f} min"),
    ]
    out += [f"| {k} | {v} |" for k, v in rows]
    out += ["", "## Commands", "", "```sh"]
    out.append(shlex.join([".venv/bin/python", "benchmarks/run_all.py", *argv]) + "  # all of:")
    out += [o.command for o in outcomes]
    out += ["```", "", "## Targets", ""]
    out.append("Printed for comparison, never asserted.")
    out.append("")
    out.append("| benchmark | target | this run | goal | met |")
    out.append("|---|---|---|---|---|")
    for o in outcomes:
        for t in o.raw.get("targets", []):
            met = {True: "yes", False: "**no**"}.get(t["met"], "not measured")
            out.append(f"| {o.name} | {t['name']} | {t['value']} | {t['target']} | {met} |")
        if o.name == "overhead":
            for line in overhead_verdicts(o.stdout):
                out.append(overhead_row(line))
        if o.returncode != 0:
            out.append(f"| {o.name} | the benchmark failed (exit {o.returncode}) | | | **no** |")
    for o in outcomes:
        _, _, _, what = BENCHMARKS[o.name]
        out += ["", f"## {o.name}: {what}", ""]
        out.append(f"`{o.command}` ({o.seconds:.0f} s)")
        out += ["", "```", o.stdout.rstrip(), "```"]
        if o.raw.get("litellm_missing"):
            out += ["", f"LiteLLM column missing: {o.raw['litellm_missing']}"]
        if o.raw.get("llama_swap_missing"):
            out += ["", f"llama-swap baseline missing: {o.raw['llama_swap_missing']}"]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter runs (noisier numbers)")
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help=f"comma-separated, of {','.join(BENCHMARKS)}"
    )
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    if {"proxies", "swap"} & set(names):
        harness.require_llama_server()
    signals = (signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in signals}
    info = harness.machine_info()
    busy = harness.busy_processes()
    versions = tool_versions()
    began = time.monotonic()
    outcomes: list[Outcome] = []
    try:
        with tempfile.TemporaryDirectory(prefix="trioswap-run-all-") as tmp:
            for name in names:
                _, normal, quick, _ = BENCHMARKS[name]
                outcomes.append(run_one(name, quick if args.quick else normal, Path(tmp) / name))
    except KeyboardInterrupt:
        print("interrupted; RESULTS.md not written", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    total = time.monotonic() - began
    end_load = harness.machine_info()["loadavg"]
    shown = ["--quick"] if args.quick else []
    if names != list(BENCHMARKS):
        shown += ["--only", ",".join(names)]
    text = render(outcomes, info, end_load, busy, versions, shown, total)
    args.output.write_text(text)
    print(f"\nwrote {args.output} ({total / 60:.1f} min in all)")
    return 0 if all(o.returncode == 0 for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
