"""Paced streams: what trioswap's CPU costs next to what relaying the same bytes on trio costs at
all, side by side in one run, so that issue 12's "trioswap <= 15 % of one core" can be read
against trio's own floor on this machine.

    python benchmarks/relay_floor.py                 # ~1 minute
    python benchmarks/relay_floor.py --quick         # ~15 s, a smoke test: noisy numbers
    python benchmarks/relay_floor.py --clients 128 --rate 20 --duration 12 --rounds 3

One responder (`python -m trioswap.responder`, --rate tokens/s, --chunks words) is the upstream
of every mode: direct (no proxy); trio relay (streams) and trio relay (raw), benchmarks/
trio_relay.py, a TCP relay that copies bytes without reading HTTP, on trio.SocketStream and on
raw sockets (trioswap's LeanStream: trio.lowlevel.wait_readable/wait_writable); asyncio relay,
benchmarks/asyncio_relay.py, the same relay on the standard library's asyncio protocols (how
much of the floor is trio's); trioswap; llama-swap. wrk keeps --clients streams open (POST
/v1/chat/completions, stream: true; the next when one ends). Each mode runs --duration seconds,
split into --rounds interleaved rounds whose order rotates. The proxy's CPU is user + system
time from /proc/PID/stat over each round's window (the proxy's own process; trioswap's and
llama-swap's model is a `sleep`, the responder runs apart)."""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import harness
import llama_swap
import loadgen
from harness import Harness, ResponderSpec
from overhead import CHAT_PATH, fmt, progress, verdict, words
from proxies import TARGET_PACED_CPU_PERCENT, chat, rotated, streams_relayed

HERE = Path(__file__).resolve().parent
MODEL = "paced"
# Relay → its script and options (beside this file; the upstream is added) and its log's name.
RELAYS = {
    "trio relay (streams)": (["trio_relay.py", "--mode", "streams"], "trio-relay-streams"),
    "trio relay (raw)": (["trio_relay.py", "--mode", "raw"], "trio-relay-raw"),
    "asyncio relay": (["asyncio_relay.py"], "asyncio-relay"),
}
RELAY_LISTENING = re.compile(r"relay listening on (http://\S+)")
WARMUP_SECONDS = 1.0
# trioswap and llama-swap proxy to the shared responder; their model process only has to live.
PLACEHOLDER = {"cmd": "sleep infinity", "checkEndpoint": "none"}
LOGGED = ("responder-paced", *(log for _, log in RELAYS.values()), "trioswap", "llama-swap")
QUICK = {"duration": 2.0, "rounds": 1, "chunks": 25}


def parse_args() -> argparse.Namespace:
    parser = harness.arg_parser(__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--quick", action="store_true", help="short runs; explicit options apply")
    parser.add_argument("--clients", type=int, default=64, help="streams open at once")
    parser.add_argument("--rate", type=float, default=50.0, help="the upstream's tokens/s")
    parser.add_argument("--chunks", type=int, default=50, help="chunks per stream")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per mode")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    llama_swap.add_args(parser)
    harness.add_common_args(
        parser, keep_logs_help="keep every process's output", python_help="for every Python part"
    )
    if parser.parse_known_args()[0].quick:
        parser.set_defaults(**QUICK)
    return parser.parse_args()


def start_modes(
    h: Harness, args: argparse.Namespace, upstream: str
) -> tuple[dict[str, tuple[str, int]], str]:
    """mode -> (base URL, proxy pid; 0 for direct), and llama-swap's version or why it is out."""
    modes = {"direct": (upstream, 0)}
    for name, ((script, *options), log) in RELAYS.items():
        argv = [args.python, str(HERE / script), *options, "--upstream", upstream]
        proc = h.spawn(log, argv, watch=True)
        modes[name] = (proc.wait_for_line(RELAY_LISTENING, 30).group(1), proc.pid)
    models = {MODEL: {**PLACEHOLDER, "proxy": upstream}}
    ts = h.start_trioswap(harness.trioswap_config(models), python=args.python)
    modes["trioswap"] = (ts.url, ts.pid)
    path, about = llama_swap.binary(args)
    if path is not None:
        # llama-swap answers 429 beyond 10 requests in flight per model unless told otherwise.
        models[MODEL]["concurrencyLimit"] = args.clients + 8
        try:
            ls = llama_swap.start(h, path, {"models": models})
        except RuntimeError as exc:
            return modes, str(exc)
        modes["llama-swap"] = (ls.url, ls.pid)
    return modes, about


def measure(
    args: argparse.Namespace, modes: dict[str, tuple[str, int]], responder_pid: int
) -> dict[str, dict[str, Any]]:
    body = chat(MODEL, stream=True, max_tokens=args.chunks - 1)
    # One stream per mode (it also starts trioswap's and llama-swap's model): its size on the
    # wire turns wrk's bytes into streams, and its events are the chunks.
    sample = {mode: loadgen.one_stream(url, CHAT_PATH, body) for mode, (url, _) in modes.items()}

    def load(mode: str, seconds: float) -> loadgen.LoadResult:
        url = modes[mode][0] + CHAT_PATH
        return loadgen.run_load(
            url, tool=args.tool, body=body, concurrency=args.clients, duration=seconds
        )

    if not args.quick:
        for mode in modes:
            progress(f"{mode}: warm-up {WARMUP_SECONDS:g}s")
            load(mode, WARMUP_SECONDS)
    runs: dict[str, list[loadgen.LoadResult]] = {mode: [] for mode in modes}
    # CPU seconds of "proxy" and "upstream", and "wall" seconds, over each mode's rounds.
    spent = {mode: dict.fromkeys(("proxy", "upstream", "wall"), 0.0) for mode in modes}
    for index in range(args.rounds):
        for mode in rotated(list(modes), index):
            progress(f"{mode}: round {index + 1}/{args.rounds}")
            pids = {"proxy": modes[mode][1], "upstream": responder_pid}
            began = time.monotonic()
            with harness.cpu_meter({k: pid for k, pid in pids.items() if pid}) as used:
                runs[mode].append(load(mode, args.duration / args.rounds))
            used["wall"] = time.monotonic() - began
            for key, seconds in used.items():
                spent[mode][key] += seconds
    results: dict[str, dict[str, Any]] = {}
    for mode, mode_runs in runs.items():
        r = loadgen.merge(mode_runs)
        streams = streams_relayed(r, sample[mode].wire_bytes)
        chunks = streams * len(sample[mode].event_times)
        used, wall = spent[mode], spent[mode]["wall"]
        proxied = mode != "direct"
        results[mode] = {
            "streams_per_s": streams,
            "chunks_per_s": chunks,
            "p50_ms": r.latency_ms(50),
            "proxy_cpu_percent": used["proxy"] / wall * 100 if proxied else None,
            "cpu_us_per_chunk": used["proxy"] / (chunks * r.duration) * 1e6 if proxied else None,
            "upstream_cpu_percent": used["upstream"] / wall * 100,
            "streams": r.requests,
            "errors": r.errors,
            "chunks_per_stream": len(sample[mode].event_times),
            "bytes_per_stream": sample[mode].wire_bytes,
            "seconds": wall,
            "proxy_cpu_seconds": used["proxy"] if proxied else None,
        }
    return results


COLUMNS = (
    ("streams/s", "streams_per_s", 1),
    ("chunks/s", "chunks_per_s", 0),
    ("stream p50 ms", "p50_ms", 0),
    ("proxy CPU %", "proxy_cpu_percent", 1),
    ("CPU us/chunk", "cpu_us_per_chunk", 1),
    ("responder CPU %", "upstream_cpu_percent", 1),
)


def table(results: dict[str, dict[str, Any]]) -> list[str]:
    width = max(map(len, results)) + 2
    head = "".join(f"{title:>{len(title) + 3}}" for title, _, _ in COLUMNS)
    lines = [f"  {'':{width}}{head}   streams done (errors)"]
    for mode, row in results.items():
        cells = "".join(
            f"{fmt(math.nan if row[key] is None else row[key], digits):>{len(title) + 3}}"
            for title, key, digits in COLUMNS
        )
        lines.append(f"  {mode:{width}}{cells}   {row['streams']} ({row['errors']})")
    return lines


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """trioswap's CPU % and CPU per chunk over each relay's."""
    ts = results["trioswap"]
    return {
        f"trioswap / {relay}": {
            key: ts[key] / results[relay][key] if results[relay][key] else math.nan
            for key in ("proxy_cpu_percent", "cpu_us_per_chunk")
        }
        for relay in RELAYS
    }


def main() -> int:
    args = parse_args()
    args.tool, tool_label = loadgen.load_tool()
    began = time.monotonic()
    info = harness.machine_info()
    busy = harness.busy_processes()
    load = f"{args.clients} clients x {args.rate:g} tok/s, {args.chunks} chunks per stream"
    with Harness(keep_logs=args.keep_logs) as h, h.reporting(*LOGGED):
        spec = ResponderSpec(
            MODEL, harness.free_port(), args.rate, words(args.chunks), python=args.python
        )
        responder = h.start_responder(spec)
        modes, llama_swap_about = start_modes(h, args, spec.url)
        results = measure(args, modes, responder.pid)
    print(f"Relay floor: paced streams ({load}), one run, modes side by side")
    print("=" * 78)
    print("\n".join(harness.machine_lines(info, python=args.python, busy=busy)))
    print(f"load gen:  {tool_label}; POST {CHAT_PATH}, stream: true")
    print(f"rounds:    {args.duration:g}s per mode in {args.rounds} interleaved rounds")
    left_out = "" if "llama-swap" in results else "left out: "
    print(f"llama-swap: {left_out}{llama_swap_about}")
    if args.quick:
        print("--quick:   short runs for a smoke test; the numbers are noise")
    print()
    print("\n".join(table(results)))
    print()
    found = ratios(results)
    for name, values in found.items():
        print(
            f"{name}: {values['proxy_cpu_percent']:.2f}x CPU %, "
            f"{values['cpu_us_per_chunk']:.2f}x CPU per chunk"
        )
    print()
    cpu = results["trioswap"]["proxy_cpu_percent"]
    verdicts = [
        f"paced streams ({load}): trioswap <= {TARGET_PACED_CPU_PERCENT:g} % of one core: "
        f"{cpu:.1f} % -> {verdict(cpu <= TARGET_PACED_CPU_PERCENT)}"
    ]
    for relay in RELAYS:
        floor = results[relay]["proxy_cpu_percent"]
        side = "below" if floor > TARGET_PACED_CPU_PERCENT else "at or above"
        verdicts.append(f"the target is {side} {relay}'s own cost: {floor:.1f} %")
    harness.print_targets(verdicts)
    print(harness.end_line(began))
    if args.json:
        settings = {
            k: getattr(args, k) for k in ("clients", "rate", "chunks", "duration", "rounds")
        }
        raw = {
            "machine": info,
            "loadgen": tool_label,
            "llama_swap": llama_swap_about,
            "settings": settings,
            "modes": results,
            "ratios": found,
            "target_cpu_percent": TARGET_PACED_CPU_PERCENT,
        }
        args.json.write_text(json.dumps(raw, indent=2))
    return 0


if __name__ == "__main__":
    harness.run_main(main)
