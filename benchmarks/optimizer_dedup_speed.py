"""How long the `always` policy's duplicate search takes on a long agent transcript.

    python benchmarks/optimizer_dedup_speed.py               # 2,000 outputs of ~2 KB
    python benchmarks/optimizer_dedup_speed.py --outputs 5000

A synthetic transcript, the same on every run (seeded): reads of a handful of source files with
blank lines in them (the Read tool, `cat` and `sed -n` through Codex's shell), test runs that
differ in a timing line, directory listings that grow by a file, and one-off outputs. Each timing
gets the texts as new string objects, as a request's freshly parsed body would. Prints the best
of several timings of `duplicates`, against the target of 30 ms for 2,000 outputs on one core,
and of `collapse_repeats` over every output.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from trioswap.optimizer.dedup import ToolOutput, collapse_repeats, duplicates

TARGET_MS = 30.0


def source_file(rng: random.Random, lines: int) -> list[str]:
    names = ["value", "count", "items", "result", "config", "path", "index", "total"]
    return [
        ""
        if rng.random() < 0.12
        else f"{'    ' * rng.randint(0, 3)}{rng.choice(names)}_{rng.randrange(10_000)} = "
        f"{rng.choice(names)}({rng.randrange(100)}, {rng.choice(names)}_{rng.randrange(100)}, None)"
        for _ in range(lines)
    ]


def test_run(rng: random.Random, tests: int) -> str:
    lines = [
        f"tests/test_module_{n}.py::test_some_behaviour_{n} PASSED [{n}%]" for n in range(tests)
    ]
    lines.append(f"===== {tests} passed in {rng.uniform(0.5, 9.0):.2f}s =====")
    return "\n".join(lines)


def transcript(count: int, seed: int = 7) -> list[ToolOutput]:
    rng = random.Random(seed)
    files = {f"src/pkg/module_{index}.py": source_file(rng, 200) for index in range(12)}
    listing = [
        f"-rw-r--r-- 1 me staff {rng.randrange(9999):5} Nov 26 file_{n}.py" for n in range(40)
    ]
    outputs = []
    for key in range(count):
        path = rng.choice(sorted(files))
        start = rng.choice([1, 1, 41, 81])
        window = files[path][start - 1 : start + 39]
        kind = rng.randrange(6)
        if kind == 0:
            args: dict[str, object] = {"file_path": f"/repo/{path}", "offset": start, "limit": 40}
            output = ToolOutput(key, "Read", args, "\n".join(window))
        elif kind == 1:
            command = ["bash", "-lc", f"sed -n '{start},{start + 39}p' {path}"]
            output = ToolOutput(key, "shell", {"command": command}, "\n".join(window))
        elif kind == 2:
            output = ToolOutput(key, "Bash", {"command": "pytest -q"}, test_run(rng, 48))
        elif kind == 3:
            listing.append(f"-rw-r--r-- 1 me staff {rng.randrange(9999):5} Nov 26 file_{key}.py")
            output = ToolOutput(key, "exec_command", {"cmd": "ls -l"}, "\n".join(listing[-45:]))
        else:
            text = "\n".join(source_file(rng, 40))
            output = ToolOutput(key, "exec_command", {"cmd": f"grep -rn x{key} src"}, text)
        outputs.append(output)
        if rng.random() < 0.05:  # files change now and then
            files[path][rng.randrange(200)] = f"changed_{key} = True"
    return outputs


def fresh(outputs: list[ToolOutput]) -> list[ToolOutput]:
    """The same outputs in new string objects: a request's texts come from a JSON body just
    parsed, so no hash of them is cached yet."""
    return [replace(output, text=output.text.encode().decode()) for output in outputs]


def best_ms(
    run: Callable[[list[ToolOutput]], object], outputs: list[ToolOutput], repeats: int
) -> float:
    timings = []
    for _ in range(repeats):
        texts = fresh(outputs)
        began = time.perf_counter()
        run(texts)
        timings.append(time.perf_counter() - began)
    return min(timings) * 1000


def collapse_all(outputs: list[ToolOutput]) -> None:
    for output in outputs:
        collapse_repeats(output.text)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", type=int, default=2000, help="tool outputs in the transcript")
    parser.add_argument("--repeats", type=int, default=7, help="timings to take the best of")
    args = parser.parse_args(argv)
    outputs = transcript(args.outputs)
    size = sum(len(output.text) for output in outputs) / len(outputs)
    found = duplicates(outputs)
    kinds = {
        kind: sum(d.kind == kind for d in found.values()) for kind in ("exact", "near", "file")
    }
    print(f"{len(outputs)} outputs, {size:.0f} chars on average; superseded: {kinds}")
    took = best_ms(duplicates, outputs, args.repeats)
    target = TARGET_MS * len(outputs) / 2000
    print(f"duplicates:       {took:7.2f} ms   (target < {target:.0f} ms)")
    took = best_ms(collapse_all, outputs, args.repeats)
    print(f"collapse_repeats: {took:7.2f} ms   (every output once)")


if __name__ == "__main__":
    main()
