"""Startup: exec → the first 200 from /health, from the venv and from the zipapp, side by side.

    python benchmarks/startup.py                  # ~2 min (builds the zipapp: ~40 s of it)
    python benchmarks/startup.py --pyz dist/trioswap.pyz --runs 101
    python benchmarks/startup.py --no-zipapp --imports

Each run execs trioswap on the bundled demo config (what `trioswap` with no arguments serves)
on a free port and polls `GET /health` on fresh connections every 2 ms; the time is exec → the
first 200, and the CPU time is what trioswap's threads had used by then (user + system, from
/proc/PID/task/*/schedstat). Runs alternate venv and zipapp so both see the same machine; the
medians are compared. The venv's first run (it writes bytecode) and the zipapp's first run (shiv
extracts it into $SHIV_ROOT) are cold starts: reported, not in the medians. Starts here vary
by a third from run to run, so a median of 15 is only good to about ±40 ms; the default of 41
halves that, enough to read the zipapp's gap against its 50 ms target.

`--imports` adds where `import trioswap.app` spends its time: `-X importtime` self times, the
smallest of 5 runs per module, added up per top-level package. On a busy machine compare the CPU
column and those totals, not only the wall times.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import harness
from harness import LOCALHOST, Harness

ROOT = Path(__file__).resolve().parent.parent
TARGET_START_S = 0.25
TARGET_ZIPAPP_GAP_S = 0.050
POLL_INTERVAL = 0.002
TIMEOUT = 30.0


@dataclass
class Samples:
    name: str
    argv: list[str]
    env: dict[str, str]
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    cold: tuple[float, float] | None = None

    def median_wall(self) -> float:
        return statistics.median(self.wall)

    def median_cpu(self) -> float:
        return statistics.median(self.cpu)


def thread_cpu_seconds(pid: int) -> float:
    """CPU time of every live thread of `pid`, to the nanosecond (schedstat's first field);
    /proc/PID/stat's 10 ms ticks are too coarse for a start of a few hundred ms."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9 if total else harness.cpu_seconds(pid)


def start_once(h: Harness, samples: Samples) -> tuple[float, float]:
    """Exec, poll /health until 200, stop: (seconds to the 200, CPU seconds by then)."""
    port = harness.free_port()
    began = time.monotonic()
    proc = h.spawn(
        samples.name, [*samples.argv, "--listen", f"{LOCALHOST}:{port}"], env=samples.env
    )
    try:
        while harness.probe_once(LOCALHOST, port, timeout=TIMEOUT) != 200:
            if not proc.alive():
                raise RuntimeError(f"{samples.name} exited before /health answered:\n{proc.tail()}")
            if time.monotonic() - began > TIMEOUT:
                raise TimeoutError(f"{samples.name}: no 200 from /health in {TIMEOUT:g} s")
            time.sleep(POLL_INTERVAL)
        wall = time.monotonic() - began
        cpu = thread_cpu_seconds(proc.pid)
    finally:
        h.forget(proc)
    return wall, cpu


def build_zipapp(python: str, output: Path, env: dict[str, str]) -> None:
    print(f"  .. building {output} (scripts/build-zipapp)", file=sys.stderr, flush=True)
    subprocess.run(
        [str(ROOT / "scripts" / "build-zipapp"), str(output)],
        env={**env, "PYTHON": python},
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def import_profile(python: str, env: dict[str, str], runs: int = 5) -> Counter[str]:
    """Microseconds of `import trioswap.app` per top-level package (trioswap's subpackages
    apart): the smallest self time of each module over `runs` runs."""
    best: dict[str, int] = {}
    for _ in range(runs):
        err = subprocess.run(
            [python, "-X", "importtime", "-c", "import trioswap.app"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        for match in re.finditer(r"import time:\s+(\d+) \|\s+\d+ \| \s*(\S+)", err):
            best[match[2]] = min(best.get(match[2], 1 << 62), int(match[1]))
    per_package: Counter[str] = Counter()
    for module, micros in best.items():
        parts = module.split(".")
        per_package[".".join(parts[:2]) if parts[0] == "trioswap" else parts[0]] += micros
    return per_package


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}"


def main() -> int:
    parser = harness.arg_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=41, help="warm starts of each, alternating")
    parser.add_argument("--pyz", type=Path, help="a built zipapp (default: build one now)")
    parser.add_argument("--no-zipapp", action="store_true", help="the venv only")
    parser.add_argument(
        "--zipapp-python",
        default=getattr(sys, "_base_executable", sys.executable),
        help="the interpreter that runs the zipapp (default: the venv's base interpreter, as "
        "`python3 trioswap.pyz` would)",
    )
    parser.add_argument("--imports", action="store_true", help="also the import-time profile")
    harness.add_common_args(parser, python_help="the venv's interpreter")
    args = parser.parse_args()

    began = time.monotonic()
    info = harness.machine_info()
    busy = harness.busy_processes()
    with Harness(keep_logs=args.keep_logs) as h:
        # Bytecode is written and read as in an installed trioswap; demo state goes to the workdir.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(XDG_STATE_HOME=str(h.workdir / "state"), SHIV_ROOT=str(h.workdir / "shiv"))
        kinds = [Samples("venv", [args.python, "-m", "trioswap"], env)]
        if not args.no_zipapp:
            pyz = args.pyz
            if pyz is None:
                pyz = h.workdir / "trioswap.pyz"
                build_zipapp(args.python, pyz, env)
            # Its own copy of trioswap, not one a PYTHONPATH would put ahead of it.
            zipapp_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
            kinds.append(Samples("zipapp", [args.zipapp_python, str(pyz)], zipapp_env))
        baseline = Samples("python -c pass", [args.python, "-c", "pass"], env)
        with h.reporting(*(s.name for s in kinds)):
            for samples in kinds:
                samples.cold = start_once(h, samples)
            for run in range(args.runs):
                print(f"  .. run {run + 1}/{args.runs}", file=sys.stderr, flush=True)
                for samples in kinds if run % 2 == 0 else kinds[::-1]:
                    wall, cpu = start_once(h, samples)
                    samples.wall.append(wall)
                    samples.cpu.append(cpu)
            for _ in range(args.runs):
                before = time.monotonic()
                subprocess.run(baseline.argv, env=baseline.env, check=True)
                baseline.wall.append(time.monotonic() - before)
        profile = import_profile(args.python, env) if args.imports else None

    print("Startup: exec -> first 200 from GET /health (bundled demo config)")
    print("=" * 66)
    for line in harness.machine_lines(info, python=args.python, busy=busy):
        print(line)
    print(f"runs:      {args.runs} warm starts each, alternating; medians (min-max)")
    print()
    print(f"  {'':16} {'exec -> 200, ms':>24} {'CPU by then, ms':>24} {'cold start, ms':>15}")
    for samples in kinds:
        assert samples.cold is not None
        print(
            f"  {samples.name:16} {ms(samples.median_wall()):>8} "
            f"({ms(min(samples.wall))}-{ms(max(samples.wall))}){'':>4} "
            f"{ms(samples.median_cpu()):>8} ({ms(min(samples.cpu))}-{ms(max(samples.cpu))})"
            f"{'':>4} {ms(samples.cold[0]):>9}"
        )
    print(f"  {baseline.name:16} {ms(baseline.median_wall()):>8}  (the interpreter alone)")
    print()
    if profile is not None:
        total = sum(profile.values())
        print(f"import trioswap.app: {total / 1000:,.0f} ms of import self time; the largest:")
        for package, micros in profile.most_common(20):
            print(f"  {micros / 1000:7.1f} ms  {package}")
        print()
    venv = kinds[0].median_wall()
    verdicts = [
        f"venv start < {ms(TARGET_START_S)} ms: {ms(venv)} ms -> "
        + ("met" if venv < TARGET_START_S else "NOT MET")
    ]
    if len(kinds) > 1:
        gap = kinds[1].median_wall() - venv
        verdicts.append(
            f"zipapp warm start within {ms(TARGET_ZIPAPP_GAP_S)} ms of the venv's: "
            f"{gap * 1000:+,.0f} ms -> " + ("met" if gap <= TARGET_ZIPAPP_GAP_S else "NOT MET")
        )
    harness.print_targets(verdicts)
    if args.json:
        raw = {s.name: {"wall": s.wall, "cpu": s.cpu, "cold": s.cold} for s in kinds}
        args.json.write_text(json.dumps({"machine": info, "starts": raw}, indent=2))
    print(harness.end_line(began))
    return 0


if __name__ == "__main__":
    harness.run_main(main)
