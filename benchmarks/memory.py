"""trioswap's memory: resident set size when idle, and after sustained load.

    python benchmarks/memory.py             # ~40 s
    python benchmarks/memory.py --rounds 5  # more load rounds, to see whether RSS keeps growing

One trioswap with one model (the bundled responder, no delay, a 200-word answer). VmRSS (resident
now) and VmHWM (peak resident) come from /proc/PID/status of the trioswap process itself (not the
model server): right after start with no model running, after the model is started, then after
each round of load: non-streaming requests at concurrency 8 with wrk for a few seconds (a few
thousand requests) followed by streams at concurrency 8. A steady RSS over the rounds means no
per-request leak; the peak shows what concurrency costs.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import harness
import loadgen
from harness import Harness, ResponderSpec
from loadgen import RawClient
from overhead import CHAT_PATH, chat_body, progress, stream_batch, words


def mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = harness.arg_parser("trioswap's resident memory, idle and under load.")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of load")
    parser.add_argument("--duration", type=float, default=4.0, help="wrk seconds per round")
    parser.add_argument("--concurrency", type=int, default=8, help="connections and streams")
    parser.add_argument("--streams", type=int, default=160, help="streams per round")
    parser.add_argument("--stream-words", type=int, default=200, help="chunks per stream")
    harness.add_common_args(parser, python_help="for trioswap and the responder")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tool = "wrk" if loadgen.have_wrk() else "python"
    info = harness.machine_info()
    print("\n".join(["trioswap memory", *harness.machine_lines(info)]))
    print(flush=True)
    began = time.monotonic()
    rows: list[dict[str, Any]] = []
    with Harness(keep_logs=args.keep_logs) as h:
        spec = ResponderSpec(
            "mem",
            harness.free_port(),
            response_text=words(args.stream_words),
            python=args.python,
        )
        config = harness.trioswap_config({"mem": spec.model_entry()})
        progress("starting trioswap")
        ts = h.start_trioswap(config, python=args.python)
        requests = streams = 0

        def sample(stage: str) -> None:
            stats = harness.memory_kib(ts.pid)
            rows.append(
                {
                    "stage": stage,
                    "requests": requests,
                    "streams": streams,
                    "rss_kib": stats.get("VmRSS"),
                    "hwm_kib": stats.get("VmHWM"),
                }
            )

        time.sleep(1.0)
        sample("idle, just started, no model running")
        body = chat_body("mem", stream=False)
        response = harness.http_request(ts.url + CHAT_PATH, "POST", body, timeout=60)
        if response.status != 200:
            raise RuntimeError(f"first request: {response.status} {response.body!r}")
        requests += 1
        time.sleep(0.5)
        sample("model started, 1 request")
        stream = chat_body("mem", stream=True)
        for index in range(args.rounds):
            progress(f"round {index + 1}/{args.rounds}: wrk {args.duration:g}s, then streams")
            result = loadgen.run_load(
                ts.url + CHAT_PATH,
                tool=tool,
                body=body,
                concurrency=args.concurrency,
                duration=args.duration,
            )
            if result.errors:
                raise RuntimeError(f"{result.errors} errors under load")
            requests += result.requests
            sample(f"after round {index + 1}: non-streaming")
            clients = [RawClient(ts.url) for _ in range(args.concurrency)]
            try:
                for _ in range(max(1, args.streams // args.concurrency)):
                    streams += len(stream_batch(clients, stream))
            finally:
                for client in clients:
                    client.close()
            sample(f"after round {index + 1}: + streams")
        time.sleep(2.0)
        sample("idle again, 2 s later")
    title = (
        f"trioswap's memory (VmRSS / VmHWM of its own process), one responder model; load rounds: "
        f"wrk c={args.concurrency} for {args.duration:g}s, then streams of {args.stream_words} "
        f"chunks at concurrency {args.concurrency}"
    )
    width = max(len(r["stage"]) for r in rows)
    lines = [title, "-" * len(title)]
    lines.append(
        f"{'':{width}}  {'requests':>8}  {'streams':>7}  {'RSS (MiB)':>9}  {'peak RSS (MiB)':>14}"
    )
    for r in rows:
        lines.append(
            f"{r['stage']:{width}}  {r['requests']:>8}  {r['streams']:>7}  "
            f"{mib(r['rss_kib']):>9}  {mib(r['hwm_kib']):>14}"
        )
    first, last = rows[1], rows[-1]
    if first["rss_kib"] and last["rss_kib"]:
        growth = (last["rss_kib"] - rows[3]["rss_kib"]) / 1024 if len(rows) > 3 else 0.0
        lines.append(
            f"  * growth from the end of round 1 to the end: {growth:+.1f} MiB over "
            f"{last['requests'] - rows[3]['requests']} requests and "
            f"{last['streams'] - rows[3]['streams']} streams"
        )
    lines.append(f"  * load generator: {tool}; streams: raw-socket keep-alive clients")
    print("\n".join(lines))
    print()
    print(harness.end_line(began))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "rows": rows, "targets": []}, indent=2))
    return 0


if __name__ == "__main__":
    harness.run_main(main)
