"""Shared fixtures: trioswap and its model servers as real processes on real ports.

No fixed ports: trioswap listens on port 0 and says where; model servers get ports from a
`startPort` picked at random below the kernel's ephemeral range, so they never collide with
client sockets. Every process a test starts is killed (its whole process group) at teardown.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path

import httpx
import pytest
import trio

from trioswap.config import ModelConfig
from trioswap.config.reader import load

READY_TIMEOUT = 30.0
LISTEN_LINE = re.compile(r"trioswap listening on (http://\S+)")
RESPONDER = f"{sys.executable} -m trioswap.responder"


def random_start_port() -> int:
    # Below Linux's ephemeral range (32768+) and away from common service ports.
    return random.randrange(20000, 30000 - 1000, 10)


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


async def wait_until(
    predicate: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout: float = 15.0
) -> None:
    """Wait for a condition, checking it often; fail the test if it never holds."""
    with trio.fail_after(timeout):
        while True:
            result = predicate()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await trio.sleep(0.02)


def chat(model: str = "m", **extra: object) -> dict[str, object]:
    """A minimal chat completion request body."""
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def pair_config(extra_a: str = "", extra_b: str = "", top: str = "") -> str:
    """Two responder models, `a` (alias `alpha`) and `b`, in one swap group."""
    return f"""
healthCheckTimeout: 20
startPort: {random_start_port()}
{top}
models:
  a:
    cmd: {RESPONDER} --port ${{PORT}} --model-id a {extra_a}
    aliases: [alpha]
  b:
    cmd: {RESPONDER} --port ${{PORT}} --model-id b {extra_b}
routing:
  router:
    settings:
      groups:
        pair:
          swap: true
          members: [a, b]
"""


class Trioswap:
    """A running `python -m trioswap` and what it printed."""

    def __init__(self, process: trio.Process, config_path: Path) -> None:
        self.process = process
        self.config_path = config_path
        self.url = ""
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = trio.Event()

    def client(self, **kwargs: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30.0, **kwargs)  # type: ignore[arg-type]

    async def pump(self, stream: trio.abc.ReceiveStream, lines: list[str]) -> None:
        pending = b""
        async for chunk in stream:
            *complete, pending = (pending + chunk).split(b"\n")
            for line in complete:
                lines.append(line.decode(errors="replace"))
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for_output(self, pattern: str, timeout: float = READY_TIMEOUT) -> re.Match[str]:
        regex = re.compile(pattern)
        with trio.fail_after(timeout):
            while True:
                for line in self.stdout + self.stderr:
                    if match := regex.search(line):
                        return match
                if self.process.returncode is not None:
                    raise AssertionError(
                        f"trioswap exited with {self.process.returncode} before printing "
                        f"{pattern!r}:\n" + "\n".join(self.stderr[-30:])
                    )
                with trio.move_on_after(0.1):
                    await self._changed.wait()

    def count_output(self, pattern: str) -> int:
        regex = re.compile(pattern)
        return sum(1 for line in self.stdout + self.stderr if regex.search(line))

    async def running(self) -> dict[str, dict[str, object]]:
        async with self.client() as client:
            response = await client.get("/running")
        response.raise_for_status()
        return {entry["model"]: entry for entry in response.json()["running"]}

    async def states(self) -> dict[str, str]:
        return {model: str(entry["state"]) for model, entry in (await self.running()).items()}


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@contextlib.contextmanager
def responders() -> Iterator[Callable[..., str]]:
    """`start(*argv)`: the URL of a responder run as `argv` (which binds port 0 and says where
    on its first line), started once per distinct argv and stopped on the way out."""
    started: dict[tuple[str, ...], tuple[subprocess.Popen[str], str]] = {}

    def start(*argv: str) -> str:
        if argv not in started:
            process = subprocess.Popen(
                argv, stdout=subprocess.PIPE, text=True, start_new_session=True
            )
            assert process.stdout is not None
            line = process.stdout.readline()  # the first line says where it listens
            process.stdout.close()  # the responder shrugs off a closed stdout
            match = re.search(r"listening on (http://\S+)", line)
            assert match, f"responder {argv} did not start: {line!r}"
            started[argv] = (process, match[1])
        return started[argv][1]

    try:
        yield start
    finally:
        for process, _ in started.values():
            kill_group(process.pid)
            process.wait()


LaunchFn = Callable[..., Awaitable[Trioswap]]


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[LaunchFn]:
    """`await launch(yaml_text)` starts trioswap on that config and waits until it listens."""
    started: list[Trioswap] = []
    async with trio.open_nursery() as nursery:

        async def start(
            config_text: str,
            *extra_args: str,
            wait: bool = True,
            env: Mapping[str, str] | None = None,
        ) -> Trioswap:
            path = tmp_path / f"config-{len(started)}.yaml"
            path.write_text(textwrap.dedent(config_text))
            process = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "trioswap",
                    "--config",
                    str(path),
                    "--listen",
                    "127.0.0.1:0",
                    *extra_args,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env=None if env is None else {**os.environ, **env},
            )
            instance = Trioswap(process, path)
            started.append(instance)
            assert process.stdout is not None and process.stderr is not None
            nursery.start_soon(instance.pump, process.stdout, instance.stdout)
            nursery.start_soon(instance.pump, process.stderr, instance.stderr)
            if wait:
                match = await instance.wait_for_output(LISTEN_LINE.pattern)
                instance.url = match.group(1)
            return instance

        try:
            yield start
        finally:
            with trio.CancelScope(shield=True):
                for instance in started:
                    if instance.process.returncode is None:
                        instance.process.send_signal(signal.SIGTERM)
                        with trio.move_on_after(15):
                            await instance.process.wait()
                    kill_group(instance.process.pid)
                    await instance.process.wait()
            nursery.cancel_scope.cancel()


async def read_stream_until(
    base_url: str, path: str, done: Callable[[str], bool], timeout: float = 15.0
) -> str:
    """GET a streaming response over a raw socket until `done(text so far)`, then hang up.

    A raw socket rather than httpx: leaving an httpx stream early leaves its internal async
    generators unfinished, which pytest (warnings as errors) reports."""
    url = httpx.URL(base_url)
    text = ""
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(url.host, url.port)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n".encode())
            while not done(text):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                text += chunk.decode(errors="replace")
    return text


ModelFn = Callable[..., ModelConfig]


@pytest.fixture
def model(tmp_path: Path) -> ModelFn:
    """`model(cmd, extra_yaml)` → the ModelConfig a config file with that model resolves to."""

    def make(cmd: str, extra: str = "") -> ModelConfig:
        path = tmp_path / "config.yaml"
        body = textwrap.indent(textwrap.dedent(extra), "    ")
        path.write_text(f"models:\n  m:\n    cmd: {cmd}\n{body}")
        return load(path).models["m"]

    return make
