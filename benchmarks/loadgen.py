"""Load generation and timing clients shared by trioswap's benchmarks.

- `run_load()`: closed-loop load (N connections, each sending the next request when the last
  answer is complete) for a fixed time. Uses `wrk` when it is on PATH — a C load generator
  costs the proxy under test far less CPU than a Python one, which matters on a small machine —
  and otherwise a thread-per-connection `http.client` generator. Results carry the latency
  distribution as 1000 evenly spaced quantiles, so runs can be merged (`merge()`).
- `RawClient`: a minimal blocking HTTP/1.1 client on a plain socket that timestamps every
  received byte range, for time-to-first-byte and per-event timing of SSE streams. It decodes
  chunked transfer encoding itself, so event boundaries are exact whatever the proxy's chunking.
- `ResponseParser`: the same reading without the socket (sans-IO), for clients on an event loop:
  feed it what each `recv()` returns, with the time it returned, and it fills in a `Timed`.
- `one_stream()`: one stream read to its end: its events and its size on the wire.
"""

from __future__ import annotations

import http.client
import itertools
import math
import re
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

QUANTILES = 1000
_Deliver = Callable[[bytes, float], None]
# Midpoints of QUANTILES equal slices of the distribution, in percent.
QUANTILE_POINTS = [(i + 0.5) * 100.0 / QUANTILES for i in range(QUANTILES)]


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (0 <= p <= 100) of already sorted values."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return sorted_values[0]
    rank = p / 100.0 * (len(sorted_values) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def median(values: Iterable[float]) -> float:
    return percentile(sorted(values), 50.0)


# -- closed-loop load ------------------------------------------------------------------------


@dataclass
class LoadResult:
    tool: str
    concurrency: int
    requests: int
    duration: float  # seconds
    errors: int
    # (latency ms, weight) pairs: a run's 1000 quantiles each weigh requests/1000.
    points: list[tuple[float, float]] = field(default_factory=list)
    # Bytes read off the wire, unfinished responses included (wrk's count; 0: not counted).
    received: int = 0

    @property
    def rps(self) -> float:
        return self.requests / self.duration if self.duration > 0 else math.nan

    def latency_ms(self, p: float) -> float:
        """The p-th percentile latency, from the (weighted) quantile points."""
        if not self.points:
            return math.nan
        points = sorted(self.points)
        total = sum(w for _, w in points)
        target = p / 100.0 * total
        running = 0.0
        for value, weight in points:
            running += weight
            if running >= target:
                return value
        return points[-1][0]


def merge(results: Sequence[LoadResult]) -> LoadResult:
    """Several runs of the same load as one: requests and time add up, latencies pool."""
    if not results:
        raise ValueError("nothing to merge")
    return LoadResult(
        tool=results[0].tool,
        concurrency=results[0].concurrency,
        requests=sum(r.requests for r in results),
        duration=sum(r.duration for r in results),
        errors=sum(r.errors for r in results),
        received=sum(r.received for r in results),
        points=[point for r in results for point in r.points],
    )


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "wrk"
    first = (out.stdout or out.stderr).splitlines()[:1]
    return first[0].split(" Copyright")[0].strip() if first else "wrk"


def load_tool() -> tuple[str, str]:
    """The load generator to use ("wrk" when installed, else "python"), and how to name it."""
    if have_wrk():
        return "wrk", f"{wrk_version()} (1 thread)"
    return "python", "Python threads + http.client (wrk not found: it competes for CPU)"


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout, summary.bytes))
  local out = {}
  for _, p in ipairs(points) do out[#out + 1] = latency:percentile(p) end
  io.write("QUANTILES " .. table.concat(out, ",") .. "\\n")
end
"""


def _wrk_script(method: str, body: bytes | None, headers: Mapping[str, str]) -> str:
    lines = [f"wrk.method = {_lua_string(method)}"]
    if body is not None:
        lines.append(f"wrk.body = {_lua_string(body.decode())}")
    for name, value in headers.items():
        lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
    lines.append("points = {" + ",".join(f"{p:g}" for p in QUANTILE_POINTS) + "}")
    return "\n".join(lines) + _WRK_DONE


def _request_headers(body: bytes | None, headers: Mapping[str, str] | None) -> dict[str, str]:
    """`headers`, with a JSON content type first when there is a body."""
    all_headers = {"Content-Type": "application/json"} if body is not None else {}
    all_headers.update(headers or {})
    return all_headers


def run_wrk(
    url: str,
    *,
    method: str = "POST",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    concurrency: int,
    duration: float,
    threads: int = 1,
) -> LoadResult:
    all_headers = _request_headers(body, headers)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_wrk_script(method, body, all_headers))
    try:
        argv = [
            "wrk",
            f"-t{min(threads, concurrency)}",
            f"-c{concurrency}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "30s",
            "-s",
            script.name,
            url,
        ]
        # Its own session, so a Ctrl-C on the terminal reaches us and we end it ourselves.
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            out, _ = proc.communicate(timeout=duration + 60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        Path(script.name).unlink(missing_ok=True)
    text = out.decode(errors="replace")
    result = re.search(r"^RESULT (\d+) (\d+) (\d+) (\d+)$", text, re.MULTILINE)
    quantiles = re.search(r"^QUANTILES (.*)$", text, re.MULTILINE)
    if result is None or quantiles is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{text}")
    requests, duration_us, errors, received = (int(g) for g in result.groups())
    values = [float(v) / 1000.0 for v in quantiles.group(1).split(",") if v]
    weight = requests / len(values) if values else 0.0
    return LoadResult(
        tool="wrk",
        concurrency=concurrency,
        requests=requests,
        duration=duration_us / 1e6,
        errors=errors,
        points=[(v, weight) for v in values] if requests else [],
        received=received,
    )


def run_python_load(
    url: str,
    *,
    method: str = "POST",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    concurrency: int,
    duration: float,
) -> LoadResult:
    """The fallback: one thread and one keep-alive http.client connection per connection."""
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    all_headers = _request_headers(body, headers)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    start_barrier = threading.Barrier(concurrency + 1)
    stop_at = [math.inf]

    def worker(index: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        mine = latencies[index]
        start_barrier.wait()
        while time.perf_counter() < stop_at[0]:
            began = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=all_headers)
                response = conn.getresponse()
                response.read()
                ok = 200 <= response.status < 300
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=30)
            if ok:
                mine.append((time.perf_counter() - began) * 1000.0)
            else:
                errors[index] += 1
        conn.close()

    threads = [
        threading.Thread(target=worker, args=(i,), daemon=True, name=f"load-{i}")
        for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    stop_at[0] = started + duration
    start_barrier.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    values = sorted(v for mine in latencies for v in mine)
    points = [(percentile(values, p), len(values) / QUANTILES) for p in QUANTILE_POINTS]
    return LoadResult(
        tool="python",
        concurrency=concurrency,
        requests=len(values),
        duration=elapsed,
        errors=sum(errors),
        points=points if values else [],
    )


def run_load(
    url: str,
    *,
    tool: str,
    method: str = "POST",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    concurrency: int,
    duration: float,
) -> LoadResult:
    """`tool` is "wrk" or "python"."""
    run = run_wrk if tool == "wrk" else run_python_load
    return run(
        url, method=method, body=body, headers=headers, concurrency=concurrency, duration=duration
    )


# -- a timestamping raw HTTP/1.1 client ---------------------------------------------------------


@dataclass
class Timed:
    """One HTTP exchange as seen on the wire. Times are perf_counter seconds."""

    sent: float
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    first_byte: float = math.nan  # first byte of the response (status line)
    body: bytes = b""
    done: float = math.nan
    # For event streams: the time each complete SSE event (not [DONE]) arrived, in order.
    event_times: list[float] = field(default_factory=list)
    saw_done: bool = False
    wire_bytes: int = 0  # the whole response as read off the socket (RawClient only)

    @property
    def ttfb_ms(self) -> float:
        return (self.first_byte - self.sent) * 1000.0

    @property
    def first_event_ms(self) -> float:
        return (self.event_times[0] - self.sent) * 1000.0 if self.event_times else math.nan

    @property
    def total_ms(self) -> float:
        return (self.done - self.sent) * 1000.0

    @property
    def events_per_second(self) -> float:
        """Events per second between the first and last event of this stream."""
        if len(self.event_times) < 2:
            return math.nan
        span = self.event_times[-1] - self.event_times[0]
        return (len(self.event_times) - 1) / span if span > 0 else math.inf

    def gaps_ms(self) -> list[float]:
        t = self.event_times
        return [(b - a) * 1000.0 for a, b in itertools.pairwise(t)]


class ProtocolError(Exception):
    pass


class RawClient:
    """One keep-alive connection; `request()` may be called repeatedly."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""
        self.received = 0  # bytes read off the socket, over every connection

    def connect(self) -> None:
        if self._sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            self._buffer = b""

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _peer_closed(self) -> bool:
        """Whether the server has closed this idle connection (readable with nothing to read)."""
        assert self._sock is not None
        readable, _, _ = select.select([self._sock], [], [], 0)
        if not readable:
            return False
        try:
            return self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _recv(self) -> bytes:
        assert self._sock is not None
        data = self._sock.recv(262144)
        self.received += len(data)
        return data

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        *,
        keep_body: bool = True,
        retry_stale: bool = True,
    ) -> Timed:
        """Send a request (connecting first if needed, outside the timing) and read the whole
        response, timestamping the first byte and every SSE event.

        Some servers (llama-server after a stream) close a keep-alive connection without saying
        so. Like an HTTP client library, a reused connection that the server has closed is
        replaced before the request is sent, and that reconnection is part of the timing (a
        proxy in front of such a server has to reconnect too). With `retry_stale`, a reused
        connection that is closed before any byte of the answer arrives (a race with the server
        closing it) is replaced and the request sent again, timed from its own send."""
        reused = self._sock is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        all_headers = {"Content-Type": "application/json"} if body else {}
        all_headers.update(headers or {})
        lines += [f"{k}: {v}" for k, v in all_headers.items()]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        wire = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        sent = time.perf_counter()
        if reused and self._peer_closed():
            self.close()
            reused = False
            self.connect()  # timed: from `sent`
        elif not reused:
            self.connect()  # a first connection: not timed
            sent = time.perf_counter()
        assert self._sock is not None
        timed = Timed(sent=sent)
        before = self.received - len(self._buffer)
        try:
            self._sock.sendall(wire)
            self._read_response(timed, keep_body)
            timed.wire_bytes = self.received - len(self._buffer) - before
        except (ProtocolError, OSError):
            self.close()
            if reused and retry_stale and math.isnan(timed.first_byte):
                return self.request(method, path, body, headers, keep_body=keep_body)
            raise
        except BaseException:
            self.close()
            raise
        return timed

    def _read_response(self, timed: Timed, keep_body: bool) -> None:
        buffer = self._buffer
        while b"\r\n\r\n" not in buffer:
            data = self._recv()
            now = time.perf_counter()
            if not data:
                raise ProtocolError("connection closed before the response headers")
            if math.isnan(timed.first_byte):
                timed.first_byte = now
            buffer += data
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        _parse_head(head, timed)
        is_stream = timed.headers.get("content-type", "").startswith("text/event-stream")
        events = _EventSplitter(timed) if is_stream else None
        body_parts: list[bytes] = []

        def deliver(data: bytes, now: float) -> None:
            if events is not None:
                events.feed(data, now)
            if keep_body:
                body_parts.append(data)

        now = time.perf_counter()
        if timed.headers.get("transfer-encoding", "").lower() == "chunked":
            buffer = self._read_chunked(buffer, now, deliver)
            keep_alive = True
        elif "content-length" in timed.headers:
            remaining = int(timed.headers["content-length"])
            while True:
                piece, buffer = buffer[:remaining], buffer[remaining:]
                if piece:
                    deliver(piece, now)
                    remaining -= len(piece)
                if remaining <= 0:
                    break
                buffer = self._recv()
                now = time.perf_counter()
                if not buffer:
                    raise ProtocolError("connection closed inside the body")
            keep_alive = True
        else:
            if buffer:
                deliver(buffer, now)
            while data := self._recv():
                deliver(data, time.perf_counter())
            buffer = b""
            keep_alive = False
        timed.done = time.perf_counter()
        timed.body = b"".join(body_parts)
        if timed.headers.get("connection", "").lower() == "close" or not keep_alive:
            self.close()
        else:
            self._buffer = buffer

    def _read_chunked(self, buffer: bytes, now: float, deliver: _Deliver) -> bytes:
        """Decode a chunked body; returns what was read past its end. Works with an offset
        into the buffer, so a large burst of small chunks costs linear time."""
        pos = 0

        def line_end() -> int:
            nonlocal buffer, pos, now
            end = buffer.find(b"\r\n", pos)
            while end < 0:
                buffer, pos = buffer[pos:], 0
                buffer, now = self._more(buffer)
                end = buffer.find(b"\r\n")
            return end

        while True:
            end = line_end()
            size = int(buffer[pos:end].split(b";")[0].strip() or b"0", 16)
            pos = end + 2
            if size == 0:
                # Trailer lines (none expected) up to an empty line.
                while True:
                    end = line_end()
                    empty = end == pos
                    pos = end + 2
                    if empty:
                        return buffer[pos:]
            remaining = size
            while remaining > 0:
                if pos >= len(buffer):
                    buffer, now = self._more(b"")
                    pos = 0
                take = min(remaining, len(buffer) - pos)
                deliver(buffer[pos : pos + take], now)
                pos += take
                remaining -= take
            while len(buffer) - pos < 2:
                buffer, pos = buffer[pos:], 0
                buffer, now = self._more(buffer)
            pos += 2

    def _more(self, buffer: bytes) -> tuple[bytes, float]:
        data = self._recv()
        if not data:
            raise ProtocolError("connection closed inside a chunked body")
        return buffer + data, time.perf_counter()


class _EventSplitter:
    """Splits an SSE byte stream into events and timestamps each as it completes."""

    def __init__(self, timed: Timed) -> None:
        self._timed = timed
        self._pending = b""

    def feed(self, data: bytes, now: float) -> None:
        pending = self._pending + data if self._pending else data
        start = 0
        while (index := pending.find(b"\n\n", start)) >= 0:
            event = pending[start:index]
            start = index + 2
            if b"data: [DONE]" in event:
                self._timed.saw_done = True
            elif b"data:" in event:
                self._timed.event_times.append(now)
        self._pending = pending[start:]


def one_stream(url: str, path: str, body: bytes, headers: Mapping[str, str] | None = None) -> Timed:
    """One POST of `body` to `url` + `path` on a fresh connection, read to its end: its SSE
    events and its size on the wire (to turn a load generator's bytes into streams and chunks).
    Raises RuntimeError when the answer is not a complete stream."""
    with RawClient(url) as client:
        timed = client.request("POST", path, body, headers)
    if timed.status != 200 or not timed.saw_done:
        raise RuntimeError(f"stream from {url}{path}: {timed.status} {timed.body[:300]!r}")
    return timed


def pooled_gaps(samples: Sequence[Timed]) -> list[float]:
    """Every gap between consecutive events of every stream, sorted (ms)."""
    gaps: list[float] = []
    for sample in samples:
        gaps.extend(sample.gaps_ms())
    gaps.sort()
    return gaps


def _parse_head(head: bytes, timed: Timed) -> None:
    """A response's status line and headers into `timed`."""
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    match = re.match(r"HTTP/1\.[01] (\d{3})", status_line)
    if match is None:
        raise ProtocolError(f"bad status line {status_line!r}")
    timed.status = int(match.group(1))
    for line in header_lines:
        name, _, value = line.partition(":")
        timed.headers[name.strip().lower()] = value.strip()


class ResponseParser:
    """An HTTP/1.1 response read incrementally, without I/O: for clients that do their own
    reading (on trio or asyncio, thousands of connections at once), where `RawClient`'s blocking
    socket does not fit. Give `feed()` every piece a `recv()` returned and the time it returned
    (perf_counter); it fills in `timed` as `RawClient.request()` does (status, headers, first
    byte, SSE event times, `saw_done`, `done`, and the body with `keep_body`) and returns True
    once the response is complete. Call `eof()` when the peer closes the connection. Raises
    `ProtocolError` on a malformed response or one cut short."""

    def __init__(self, timed: Timed, *, keep_body: bool = False) -> None:
        self.timed = timed
        self.keep_body = keep_body
        self.complete = False
        self._buffer = b""
        self._state = "head"  # head, size, data, data-end, trailer, length, close, done
        self._remaining = 0
        self._events: _EventSplitter | None = None
        self._body: list[bytes] = []

    def feed(self, data: bytes, now: float) -> bool:
        if self.complete:
            return True
        if math.isnan(self.timed.first_byte) and data:
            self.timed.first_byte = now
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        pos = 0
        while not self.complete:
            state = self._state
            if state == "head":
                end = buffer.find(b"\r\n\r\n", pos)
                if end < 0:
                    break
                self._head(buffer[pos:end], now)
                pos = end + 4
            elif state in ("size", "data-end", "trailer"):
                end = buffer.find(b"\r\n", pos)
                if end < 0:
                    break
                line = buffer[pos:end]
                pos = end + 2
                if state == "size":
                    self._remaining = int(line.split(b";")[0].strip() or b"0", 16)
                    self._state = "data" if self._remaining else "trailer"
                elif state == "data-end":
                    if line:
                        raise ProtocolError(f"no CRLF after a chunk: {line[:40]!r}")
                    self._state = "size"
                elif not line:  # the empty line after the (normally absent) trailers
                    self._finish(now)
            elif state in ("data", "length"):
                take = min(self._remaining, len(buffer) - pos)
                if take <= 0:
                    break
                self._deliver(buffer[pos : pos + take], now)
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    if state == "data":
                        self._state = "data-end"
                    else:
                        self._finish(now)
            else:  # close-delimited body
                if pos < len(buffer):
                    self._deliver(buffer[pos:], now)
                pos = len(buffer)
                break
        self._buffer = buffer[pos:]
        return self.complete

    def eof(self, now: float) -> bool:
        """The peer closed the connection: completes a close-delimited body, else raises."""
        if self._state == "close":
            self._finish(now)
        if not self.complete:
            where = "before the response headers" if self._state == "head" else "inside the body"
            raise ProtocolError(f"connection closed {where}")
        return True

    def _head(self, head: bytes, now: float) -> None:
        timed = self.timed
        _parse_head(head, timed)
        if timed.headers.get("content-type", "").startswith("text/event-stream"):
            self._events = _EventSplitter(timed)
        if timed.headers.get("transfer-encoding", "").lower() == "chunked":
            self._state = "size"
        elif "content-length" in timed.headers:
            self._remaining = int(timed.headers["content-length"])
            self._state = "length" if self._remaining else "done"
            if not self._remaining:
                self._finish(now)
        else:
            self._state = "close"

    def _deliver(self, data: bytes, now: float) -> None:
        if self._events is not None:
            self._events.feed(data, now)
        if self.keep_body:
            self._body.append(data)

    def _finish(self, now: float) -> None:
        self._state = "done"
        self.complete = True
        self.timed.done = now
        self.timed.body = b"".join(self._body)
