"""Process plumbing shared by trioswap's benchmarks.

Everything a benchmark starts goes through one `Harness`, which guarantees that no process
outlives the benchmark: each child leads its own process group (so a signal to the group reaches
anything it spawned), and `Harness.close()` — run from `with Harness() as h:` even on Ctrl-C,
SIGTERM or an exception — stops every group it started, SIGKILLs what ignores SIGTERM, and then
kills any descendant it saw that escaped into a group of its own (trioswap's model servers do:
they get a session each).

Pieces:

- `free_port()`, `free_port_block(n)`: ports to bind to.
- `ResponderSpec`: the command line of trioswap's fake upstream (`python -m trioswap.responder`).
- `Harness.spawn()`, `Harness.start_responder()`, `Harness.start_trioswap()`: start processes;
  `start_trioswap` writes the YAML config and reads the URL trioswap prints once it is ready.
- `wait_healthy()`, `http_request()`: tiny blocking HTTP helpers (http.client, no event loop).
- `machine_info()`, `cpu_seconds()`: what the benchmark ran on, and how much CPU a process used.
- `arg_parser()`, `add_common_args()`, `machine_lines()`, `print_targets()`, `end_line()`,
  `run_main()`: the command-line and report pieces every benchmark script shares.

Nothing here uses an event loop: drivers are plain threads and subprocesses, so that the
benchmark's own client code is cheap and predictable.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import http.client
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import urlsplit

import yaml

LOCALHOST = "127.0.0.1"
PORT_RANGE = (20000, 30000)
STOP_GRACE = 5.0
LISTENING = re.compile(r"trioswap listening on (http://\S+)")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- ports ------------------------------------------------------------------------------------


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOCALHOST) -> int:
    """A port the OS says is free right now (someone may take it before we do, rarely)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def free_port_block(count: int, lo: int = PORT_RANGE[0], hi: int = PORT_RANGE[1]) -> int:
    """The first port of `count` consecutive free ports in a random region of [lo, hi)."""
    rng = random.Random()
    for _ in range(200):
        start = rng.randrange(lo, hi - count)
        if all(port_is_free(p) for p in range(start, start + count)):
            return start
    raise RuntimeError(f"no {count} consecutive free ports in {lo}-{hi}")


# -- HTTP helpers (blocking) ------------------------------------------------------------------


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def http_request(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> HttpResponse:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(
        parts.hostname or LOCALHOST, parts.port or 80, timeout=timeout
    )
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        all_headers = {"content-type": "application/json"} if body is not None else {}
        all_headers.update(headers or {})
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        data = response.read()
        return HttpResponse(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()


def probe_once(host: str, port: int, path: str = "/health", timeout: float = 1.0) -> int | None:
    """One GET on a fresh connection: the status, or None when nothing answers (yet)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            head = b""
            while b"\r\n" not in head:
                data = sock.recv(4096)
                if not data:
                    return None
                head += data
    except OSError:
        return None
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return int(match.group(1)) if match else None


def wait_healthy(
    url: str,
    timeout: float = 30.0,
    interval: float = 0.005,
    path: str = "/health",
    alive: Callable[[], bool] | None = None,
) -> float:
    """Poll `url + path` until it answers 200; returns the monotonic time it did.
    Raises TimeoutError, or RuntimeError as soon as `alive()` says the server died."""
    parts = urlsplit(url)
    host, port = parts.hostname or LOCALHOST, parts.port or 80
    deadline = time.monotonic() + timeout
    while True:
        if probe_once(host, port, path) == 200:
            return time.monotonic()
        if alive is not None and not alive():
            raise RuntimeError(f"{url} exited before it was healthy")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}{path} not healthy after {timeout:g}s")
        time.sleep(interval)


# -- processes --------------------------------------------------------------------------------


def _read_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; it ends at the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (not of its children)."""
    fields = _read_stat(pid)
    if fields is None:
        return 0.0
    # After the name: state(0) ppid(1) ... utime(11) stime(12).
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def listening(port: int) -> bool:
    """Whether some socket listens on TCP `port` (IPv4 or IPv6), from /proc/net/tcp*: it does
    not connect, so the server does not notice it is being watched."""
    wanted = f":{port:04X} "
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f, None)
            for line in f:
                # sl local_address rem_address st ...; st 0A is LISTEN.
                fields = line.split(None, 4)
                if fields[3] == "0A" and (fields[1] + " ").endswith(wanted):
                    return True
    return False


def descendants(root: int) -> list[int]:
    """Every live process below `root`, parents before children."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _read_stat(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    queue = [root]
    while queue:
        for child in children.get(queue.pop(0), ()):
            found.append(child)
            queue.append(child)
    return found


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _pid_alive(pid: int) -> bool:
    fields = _read_stat(pid)
    return fields is not None and fields[0] != "Z"


def pid_running(pid: int) -> bool:
    """Whether `pid` exists and has not exited (a zombie counts as exited)."""
    return _pid_alive(pid)


def children(pid: int) -> list[int]:
    """The direct children of `pid`, cheaply (from /proc/PID/task/*/children)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                found.extend(
                    int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                )
    return found


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


class Proc:
    """A child process in its own process group, with its output in a log file.

    With `watch=True` the output goes through a pipe that a thread copies to the log file,
    so that `wait_for_line()` can see lines as they arrive."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        watch: bool = False,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._eof = False
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started_at = time.monotonic()
        self.popen: subprocess.Popen[bytes] = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if watch else self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
        self._reader: threading.Thread | None = None
        if watch:
            self._reader = threading.Thread(target=self._pump, name=f"{name}-output", daemon=True)
            self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self._log.write(raw)
            self._log.flush()
            with self._changed:
                self._lines.append(raw.decode(errors="replace").rstrip("\r\n"))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def wait_for_line(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """The first output line matching `pattern` (needs `watch=True`)."""
        if self._reader is None:
            raise RuntimeError(f"{self.name} was not started with watch=True")
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self._lines[seen:]:
                    if match := pattern.search(line):
                        return match
                seen = len(self._lines)
                if self._eof:
                    raise RuntimeError(
                        f"{self.name} exited (code {self.popen.wait()}) before printing "
                        f"{pattern.pattern!r}; output:\n{self.tail()}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.name} did not print {pattern.pattern!r} in time")
                self._changed.wait(left)

    def tail(self, lines: int = 30, width: int = 300) -> str:
        """The last `lines` lines of output, each cut to `width` characters."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(
            line if len(line) <= width else line[:width] + " [...]"
            for line in text.splitlines()[-lines:]
        )

    def stop(self, grace: float = STOP_GRACE, sig: signal.Signals = signal.SIGTERM) -> None:
        """Signal the process group, wait up to `grace`, then SIGKILL the group; also kill
        every descendant that lives in a group of its own. Idempotent."""
        pgid = self.popen.pid
        # Snapshot before signalling: once the leader is gone, its orphans are reparented.
        escaped = [p for p in descendants(pgid) if _pgid(p) not in (None, pgid)]
        if self.alive():
            _signal_group(pgid, sig)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(pgid, signal.SIGKILL)
                self.popen.wait()
        # The leader is gone; anything left in its group goes too.
        _signal_group(pgid, signal.SIGKILL)
        _kill_stragglers(escaped, grace)
        if self._reader is not None:
            self._reader.join(timeout=1.0)
        self._log.close()


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _kill_stragglers(pids: Sequence[int], grace: float) -> None:
    """The processes in `pids` should exit on their own (their parent stopped them); give them
    `grace`, then SIGKILL their groups."""
    deadline = time.monotonic() + grace
    while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in pids:
        if _pid_alive(pid) and (group := _pgid(pid)) is not None:
            _signal_group(group, signal.SIGKILL)


# -- trioswap's fake upstream ------------------------------------------------------------------


@dataclass(frozen=True)
class ResponderSpec:
    """`python -m trioswap.responder` with its knobs. `port=None` lets the config's ${PORT}
    choose (only inside a trioswap config)."""

    model_id: str
    port: int | None = None
    tokens_per_second: float = 0.0
    response_text: str | None = None
    startup_delay: float = 0.0
    extra_args: tuple[str, ...] = ()
    python: str = sys.executable

    @property
    def url(self) -> str:
        if self.port is None:
            raise ValueError("this responder's port is chosen by trioswap")
        return f"http://{LOCALHOST}:{self.port}"

    def argv(self) -> list[str]:
        argv = [self.python, "-m", "trioswap.responder", "--model-id", self.model_id]
        argv += ["--port", "${PORT}" if self.port is None else str(self.port)]
        if self.tokens_per_second:
            argv += ["--tokens-per-second", f"{self.tokens_per_second:g}"]
        if self.response_text is not None:
            argv += ["--response-text", self.response_text]
        if self.startup_delay:
            argv += ["--startup-delay", f"{self.startup_delay:g}"]
        return argv + list(self.extra_args)

    def model_entry(self) -> dict[str, Any]:
        """This responder as a trioswap `models:` entry."""
        entry: dict[str, Any] = {"cmd": shlex.join(self.argv())}
        if self.port is not None:
            entry["proxy"] = self.url
        return entry


@dataclass
class Trioswap:
    proc: Proc
    url: str
    config_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> list[dict[str, Any]]:
        """`GET /running`: the models trioswap runs now."""
        response = http_request(self.url + "/running")
        if response.status != 200:
            raise RuntimeError(f"GET /running: {response.status} {response.body[:200]!r}")
        running: list[dict[str, Any]] = json.loads(response.body)["running"]
        return running

    def model_pid(self, model: str) -> int | None:
        for entry in self.running():
            if entry["model"] == model:
                pid = entry.get("pid")
                return int(pid) if pid else None
        return None


def trioswap_config(
    models: Mapping[str, Mapping[str, Any]],
    groups: Mapping[str, Mapping[str, Any]] | None = None,
    **top: Any,
) -> dict[str, Any]:
    """A config dict; `top` holds top-level keys (healthCheckTimeout=..., logLevel=...).
    startPort defaults to a random free region of 20000-30000."""
    config: dict[str, Any] = {
        "healthCheckTimeout": 30,
        "startPort": free_port_block(max(len(models), 1) + 4),
    }
    config.update(top)
    config["models"] = {name: dict(entry) for name, entry in models.items()}
    if groups:
        settings = {"groups": {name: dict(group) for name, group in groups.items()}}
        config["routing"] = {"router": {"settings": settings}}
    return config


# -- the harness ------------------------------------------------------------------------------


@dataclass
class Harness:
    """Owns every process a benchmark starts. Use as a context manager."""

    keep_logs: bool = False
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="trioswap-bench-")))
    procs: list[Proc] = field(default_factory=list)
    _old_handlers: dict[int, Any] = field(default_factory=dict)

    def __enter__(self) -> Harness:
        # SIGTERM/SIGHUP become an exception in the main thread, so `finally` blocks run; so does
        # SIGINT even when it was inherited as ignored (as by a background job of a shell).
        self._old_handlers[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, _raise_interrupt)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        # A second Ctrl-C during teardown must not leave processes behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for proc in reversed(self.procs):
                try:
                    proc.stop()
                except Exception as exc:  # keep stopping the others
                    print(f"harness: stopping {proc.name} failed: {exc!r}", file=sys.stderr)
            self.procs.clear()
        finally:
            signal.signal(signal.SIGINT, previous)
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)
            self._old_handlers.clear()
            if not self.keep_logs:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        watch: bool = False,
    ) -> Proc:
        log_path = self.workdir / f"{name}-{len(self.procs)}.log"
        proc = Proc(name, argv, log_path, env=env, watch=watch)
        self.procs.append(proc)
        return proc

    def forget(self, proc: Proc) -> None:
        """Stop `proc` now and drop it from the teardown list."""
        proc.stop()
        with contextlib.suppress(ValueError):
            self.procs.remove(proc)

    @contextlib.contextmanager
    def reporting(self, *names: str) -> Iterator[None]:
        """On an exception, print the output tail of every process named in `names` (then let
        the exception through); either way, say where the logs are when they are kept."""
        try:
            yield
        except Exception:
            for proc in self.procs:
                if proc.name in names:
                    print(f"{proc.name}'s output (tail):\n{proc.tail()}", file=sys.stderr)
            raise
        finally:
            if self.keep_logs:
                print(f"logs kept in {self.workdir}", file=sys.stderr)

    def start_responder(self, spec: ResponderSpec, timeout: float = 30.0) -> Proc:
        """A responder of our own (not trioswap's), healthy when this returns."""
        if spec.port is None:
            spec = dataclasses.replace(spec, port=free_port())
        proc = self.spawn(f"responder-{spec.model_id}", spec.argv())
        try:
            wait_healthy(spec.url, timeout=timeout, alive=proc.alive)
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"{exc}; output:\n{proc.tail()}") from None
        return proc

    def start_trioswap(
        self,
        config: Mapping[str, Any],
        *,
        listen: str = f"{LOCALHOST}:0",
        extra_args: Sequence[str] = (),
        python: str = sys.executable,
        timeout: float = 30.0,
    ) -> Trioswap:
        """Write `config` as YAML, run `python -m trioswap` on it and wait for its URL."""
        config_path = self.workdir / f"trioswap-{len(self.procs)}.yaml"
        config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
        argv = [python, "-m", "trioswap", "--config", str(config_path), "--listen", listen]
        proc = self.spawn("trioswap", [*argv, *extra_args], watch=True)
        url = proc.wait_for_line(LISTENING, timeout).group(1).rstrip("/")
        return Trioswap(proc, url, config_path)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


# -- the machine ------------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def machine_info() -> dict[str, str]:
    load = "unknown"
    with contextlib.suppress(OSError):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError):
        meminfo = dict(
            line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines()
        )
        memory = f"{int(meminfo['MemTotal'].split()[0]) / 1024 / 1024:.1f} GiB"
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cores": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "memory": memory,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": f"{platform.system()} {platform.release()}",
        "loadavg": load,
    }


def machine_lines(
    info: Mapping[str, str],
    *,
    memory: bool = True,
    python: str | None = None,
    busy: Sequence[str] | None = None,
) -> list[str]:
    """The lines of a report's header that say what it ran on, from `machine_info()`: date,
    machine (with its memory unless `memory=False`), the interpreter when `python` is given,
    the load average, and the busy processes when `busy` (from `busy_processes()`) is given."""
    ram = f"{info['memory']}, " if memory else ""
    lines = [
        f"date:      {info['date']}",
        f"machine:   {info['cores']} cores, {info['cpu']}, {ram}{info['kernel']}",
    ]
    if python is not None:
        lines.append(f"python:    {info['python']} ({python})")
    lines.append(f"load avg:  {info['loadavg']} (1/5/15 min) at start")
    if busy is not None:
        lines.append(
            f"busy:      {', '.join(busy) if busy else 'no other process above 20% of a core'}"
        )
    return lines


def busy_processes(min_percent: float = 20.0, sample: float = 0.5) -> list[str]:
    """Other processes using at least `min_percent` of a core over `sample` seconds: on a small
    machine they skew every number, so benchmarks print them."""

    def snapshot() -> dict[int, tuple[float, str]]:
        out: dict[int, tuple[float, str]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                pid = int(entry)
                with contextlib.suppress(OSError):
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                    out[pid] = (cpu_seconds(pid), comm)
        return out

    before = snapshot()
    time.sleep(sample)
    after = snapshot()
    me = os.getpid()
    busy: list[tuple[float, str]] = []
    for pid, (cpu, comm) in after.items():
        if pid == me or pid not in before:
            continue
        percent = (cpu - before[pid][0]) / sample * 100
        if percent >= min_percent:
            busy.append((percent, f"{comm}[{pid}] {percent:.0f}%"))
    return [text for _, text in sorted(busy, reverse=True)]


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident) of a live process, in KiB, from
    /proc/PID/status; empty when the process is gone."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def tree_rss_kib(pid: int) -> int:
    """VmRSS of `pid` and every process below it, added up (shared pages count twice)."""
    return sum(memory_kib(p).get("VmRSS", 0) for p in [pid, *descendants(pid)])


# -- llama.cpp ---------------------------------------------------------------------------------

CACHE = Path(os.environ.get("TRIOSWAP_CACHE") or Path.home() / ".cache" / "trioswap")
LLAMA_SERVER = CACHE / "bin" / "llama-server"
SMOLLM2 = CACHE / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def require_llama_server() -> None:
    """Exit with a message (status 2) when llama-server or the SmolLM2 model is missing."""
    missing = [str(p) for p in (LLAMA_SERVER, SMOLLM2) if not p.exists()]
    if missing:
        print(
            f"missing: {', '.join(missing)}\nrun scripts/install-llama-server first "
            "(it builds llama-server and fetches the model into $TRIOSWAP_CACHE, default "
            "~/.cache/trioswap)",
            file=sys.stderr,
        )
        raise SystemExit(2)


def llama_server_argv(port: int, *, ctx_size: int = 2048, extra: Sequence[str] = ()) -> list[str]:
    """llama-server on SmolLM2 with one generation thread (more would starve the proxy on a
    2-core machine) and one slot."""
    return [
        str(LLAMA_SERVER),
        "--host",
        LOCALHOST,
        "--port",
        str(port),
        "-m",
        str(SMOLLM2),
        "-t",
        "1",
        "--parallel",
        "1",
        "--ctx-size",
        str(ctx_size),
        *extra,
    ]


@contextlib.contextmanager
def cpu_meter(pids: Mapping[str, int]) -> Iterator[dict[str, float]]:
    """`with cpu_meter({"trioswap": pid}) as used:` — afterwards `used[name]` is the CPU
    seconds each process spent inside the block."""
    used: dict[str, float] = {}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    try:
        yield used
    finally:
        for name, pid in pids.items():
            used[name] = cpu_seconds(pid) - before[name]


# -- the scripts' command line and report --------------------------------------------------------


def arg_parser(description: str) -> argparse.ArgumentParser:
    """A benchmark script's parser; its --help shows every default."""
    return argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )


def add_common_args(
    parser: argparse.ArgumentParser, *, keep_logs_help: str | None = None, python_help: str
) -> None:
    """--json, --keep-logs and --python, which every benchmark script takes."""
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    parser.add_argument("--keep-logs", action="store_true", help=keep_logs_help)
    parser.add_argument("--python", default=sys.executable, help=python_help)


def print_targets(verdicts: Iterable[str], *, always: bool = False) -> None:
    """The "Targets" section at the end of a report (run_all.py looks for its heading); nothing
    when there are no verdicts, unless `always`."""
    lines = list(verdicts)
    if not lines and not always:
        return
    print("Targets (printed for comparison, not asserted)")
    print("-----------------------------------------------")
    for line in lines:
        print(f"  {line}")
    print()


def end_line(began: float) -> str:
    """The report's last line: the load average now and the time since `began` (monotonic)."""
    return f"load avg at end: {machine_info()['loadavg']}; took {time.monotonic() - began:.0f}s"


def run_main(main: Callable[[], int]) -> None:
    """Run a script's `main()` and exit with its status; 130 on Ctrl-C or SIGTERM (by then
    `Harness` has stopped every process)."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; every process stopped", file=sys.stderr)
        sys.exit(130)
