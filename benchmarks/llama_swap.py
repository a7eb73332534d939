"""llama-swap (the Go proxy trioswap is compatible with) as a benchmark baseline: find its binary,
run it on a generated config, wait until it answers.

The binary comes from `--llama-swap PATH` (or `$LLAMA_SWAP`), by default the build next to the
repository in `../shared/bin/llama-swap-0bdb372.gz`; a `.gz` is unpacked once into
`$TRIOSWAP_CACHE/bin`. Without one, `binary()` says how to get one: llama-swap publishes Linux
binaries on its releases page.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import yaml
from harness import Harness, Proc

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BINARY = ROOT.parent / "shared" / "bin" / "llama-swap-0bdb372.gz"
RELEASES = "https://github.com/mostlygeek/llama-swap/releases"
HOW_TO_GET = (
    f"download llama-swap_<version>_linux_amd64.tar.gz from {RELEASES}, extract the llama-swap "
    "binary and pass --llama-swap PATH (or set $LLAMA_SWAP)"
)


@dataclass
class LlamaSwap:
    proc: Proc
    url: str

    @property
    def pid(self) -> int:
        return self.proc.pid


def add_args(parser: argparse.ArgumentParser) -> None:
    """--llama-swap PATH and --no-llama-swap."""
    parser.add_argument(
        "--llama-swap",
        default=os.environ.get("LLAMA_SWAP") or str(DEFAULT_BINARY),
        help="llama-swap executable, or a .gz of it ($LLAMA_SWAP)",
    )
    parser.add_argument("--no-llama-swap", action="store_true", help="leave llama-swap out")


def unpacked(packed: Path) -> Path:
    """The executable inside `packed` (a .gz), unpacked into the cache once (again when the .gz
    is newer); written to a temporary name first, so an interrupted unpack is never used."""
    target = harness.CACHE / "bin" / packed.name.removesuffix(".gz")
    if target.exists() and target.stat().st_mtime >= packed.stat().st_mtime:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    with gzip.open(packed) as source, open(partial, "wb") as out:
        shutil.copyfileobj(source, out)
    partial.chmod(0o755)
    partial.replace(target)
    return target


def binary(args: argparse.Namespace) -> tuple[Path | None, str]:
    """The llama-swap executable and its version line, or None and one line saying why not."""
    if args.no_llama_swap:
        return None, "--no-llama-swap"
    source = Path(args.llama_swap)
    if not source.exists():
        return None, f"no llama-swap binary at {source}: {HOW_TO_GET}"
    path = unpacked(source) if source.suffix == ".gz" else source
    try:
        out = subprocess.run([str(path), "-version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{path} does not run: {exc}; {HOW_TO_GET}"
    if out.returncode != 0:
        hint = " (apt-get install -y libsqlite3-0)" if "sqlite" in out.stderr else ""
        return None, f"{path} -version failed: {out.stderr.strip()[:300]}{hint}"
    return path, (out.stdout or out.stderr).strip().replace("\n", "; ")


def start(h: Harness, path: Path, config: dict[str, Any], timeout: float = 20.0) -> LlamaSwap:
    """llama-swap on `config` (written as YAML into the harness's folder) on a free port, its
    output in the harness's log file; returns once its /health answers."""
    config_path = h.workdir / "llama-swap.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = harness.free_port()
    url = f"http://{harness.LOCALHOST}:{port}"
    argv = [str(path), "-config", str(config_path), "-listen", f"{harness.LOCALHOST}:{port}"]
    proc = h.spawn("llama-swap", argv)
    try:
        harness.wait_healthy(url, timeout=timeout, alive=proc.alive)
    except (TimeoutError, RuntimeError) as exc:
        raise RuntimeError(f"llama-swap did not start: {exc}; output:\n{proc.tail()}") from None
    return LlamaSwap(proc, url)
