"""System and GPU stats: sampled every `performance.every` seconds, the last hour kept.

CPU, memory, swap, load and network come from psutil; GPUs from `nvidia-smi` or `rocm-smi`
when one is on PATH (run once a sample, with a timeout; no tool or a failing one only means no
GPU stats). The fields and their names are llama-swap's (`SysStat`, `GpuStat` of its
`/api/performance`), so its tools read ours; a value a tool does not report is None (JSON
null), never 0.

The parsers are pure functions over the tools' text, so they are tested on captured output.
"""

from __future__ import annotations

import csv
import logging
import math
import shutil
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import trio

from trioswap.observe.timeformat import LAYOUTS

log = logging.getLogger("trioswap.performance")

MIN_EVERY = 5.0  # llama-swap's minimum for performance.every
KEPT_SECONDS = 3600.0
TOOL_TIMEOUT = 5.0
MIB = 1024 * 1024
# Bounds on what a tool or the host may list: a sample stays small whatever the machine.
MAX_GPUS = 64
MAX_INTERFACES = 64
_TIMESTAMP = LAYOUTS["rfc3339nano"]


@dataclass(frozen=True, slots=True)
class NetIO:
    name: str
    bytes_recv: int
    bytes_sent: int


@dataclass(frozen=True, slots=True)
class SysStat:
    cpu_util_per_core: tuple[float, ...]
    mem_total_mb: int
    mem_used_mb: int
    mem_free_mb: int
    swap_total_mb: int
    swap_used_mb: int
    load_avg_1: float
    load_avg_5: float
    load_avg_15: float
    net_io: tuple[NetIO, ...]


@dataclass(frozen=True, slots=True)
class GpuStat:
    id: int
    name: str
    uuid: str
    temp_c: float | None = None
    vram_temp_c: float | None = None
    gpu_util_pct: float | None = None
    mem_util_pct: float | None = None
    mem_used_mb: int | None = None
    mem_total_mb: int | None = None
    fan_speed_pct: float | None = None
    power_draw_w: float | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    timestamp: datetime
    system: SysStat
    gpus: tuple[GpuStat, ...]


@dataclass(frozen=True, slots=True)
class GpuTool:
    """A GPU tool: the program looked up on PATH, its arguments, and the parser of its output."""

    program: str
    args: tuple[str, ...]
    parse: Callable[[str], list[GpuStat]]


def _number(text: str) -> float | None:
    """A tool's number, or None for its ways of saying none ("[N/A]", "[Not Supported]", "")."""
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _mebibytes(value: float | None, unit: int = 1) -> int | None:
    return None if value is None else int(value // unit)


def _mem_util(used: int | None, total: int | None) -> float | None:
    if used is None or not total:
        return None
    return used / total * 100


NVIDIA_FIELDS = (
    "index,name,uuid,temperature.gpu,utilization.gpu,memory.used,memory.total,fan.speed,power.draw"
)


def parse_nvidia_smi(text: str) -> list[GpuStat]:
    """`nvidia-smi --query-gpu=NVIDIA_FIELDS --format=csv,noheader,nounits`: a line per GPU,
    memory in MiB."""
    gpus: list[GpuStat] = []
    for row in csv.reader(text.splitlines()[:MAX_GPUS], skipinitialspace=True):
        if len(row) != 9:
            continue
        index = _number(row[0])
        if index is None:
            continue
        used, total = _mebibytes(_number(row[5])), _mebibytes(_number(row[6]))
        gpus.append(
            GpuStat(
                id=int(index),
                name=row[1].strip(),
                uuid=row[2].strip(),
                temp_c=_number(row[3]),
                gpu_util_pct=_number(row[4]),
                mem_util_pct=_mem_util(used, total),
                mem_used_mb=used,
                mem_total_mb=total,
                fan_speed_pct=_number(row[7]),
                power_draw_w=_number(row[8]),
            )
        )
    return gpus


def _first(fields: Mapping[str, str], *names: str) -> str | None:
    """The first of `names` present with a value (rocm-smi says "N/A" for none)."""
    for name in names:
        value = fields.get(name)
        if value and value != "N/A":
            return value
    return None


def _rocm_number(fields: Mapping[str, str], *names: str) -> float | None:
    value = _first(fields, *names)
    return None if value is None else _number(value)


def _rocm_gpu(fields: Mapping[str, str]) -> GpuStat | None:
    device = fields.get("device", "")
    if not device.startswith("card") or not device[4:].isdigit():
        return None
    total_mb = _mebibytes(_rocm_number(fields, "vram total memory (b)"), MIB)
    used_mb = _mebibytes(_rocm_number(fields, "vram total used memory (b)"), MIB)
    product = _first(fields, "card series", "device name")
    gfx = _first(fields, "gfx version")
    name = device if product is None else f"{product} {device}"
    return GpuStat(
        id=int(device[4:]),
        name=name if gfx is None else f"{name} ({gfx})",
        uuid=_first(fields, "guid", "unique id") or "",
        temp_c=_rocm_number(
            fields, "temperature (sensor edge) (c)", "temperature (sensor junction) (c)"
        ),
        vram_temp_c=_rocm_number(fields, "temperature (sensor memory) (c)"),
        gpu_util_pct=_rocm_number(fields, "gpu use (%)"),
        mem_util_pct=_mem_util(used_mb, total_mb),
        mem_used_mb=used_mb,
        mem_total_mb=total_mb,
        fan_speed_pct=_rocm_number(fields, "fan speed (%)"),
        power_draw_w=_rocm_number(
            fields,
            "current socket graphics package power (w)",
            "average graphics package power (w)",
        ),
    )


def parse_rocm_smi(text: str) -> list[GpuStat]:
    """`rocm-smi ROCM_ARGS`: a header line starting `device,` then a line per GPU; the
    columns differ between ROCm versions, so they are read by name (memory in bytes)."""
    header: list[str] | None = None
    gpus: list[GpuStat] = []
    for row in csv.reader(line for line in text.splitlines() if line.strip()):
        cells = [cell.strip() for cell in row]
        if cells and cells[0].lower() == "device":
            header = [cell.lower() for cell in cells]
        elif header is not None and len(cells) == len(header):
            gpu = _rocm_gpu(dict(zip(header, cells, strict=True)))
            if gpu is not None:
                gpus.append(gpu)
                if len(gpus) == MAX_GPUS:
                    break
    return gpus


NVIDIA_SMI = GpuTool(
    "nvidia-smi",
    (f"--query-gpu={NVIDIA_FIELDS}", "--format=csv,noheader,nounits"),
    parse_nvidia_smi,
)
# Id, power, temperatures, fan, use, memory use and size, product name: as llama-swap asks.
ROCM_ARGS = "-i -P -t -f -u --showmemuse --showmeminfo vram --showproductname --csv"
ROCM_SMI = GpuTool("rocm-smi", tuple(ROCM_ARGS.split(" ")), parse_rocm_smi)
GPU_TOOLS = (NVIDIA_SMI, ROCM_SMI)


def read_system() -> SysStat:
    """One psutil reading (blocking file reads: run it in a thread). CPU percentages are since
    the previous call: the first call in a process reads 0."""
    import psutil  # here, in the worker thread: trioswap already serves while it loads

    memory = psutil.virtual_memory()
    swap = psutil.swap_memory()
    load = psutil.getloadavg()
    interfaces = sorted(psutil.net_io_counters(pernic=True).items())
    return SysStat(
        cpu_util_per_core=tuple(psutil.cpu_percent(percpu=True)),
        mem_total_mb=memory.total // MIB,
        mem_used_mb=memory.used // MIB,
        mem_free_mb=memory.free // MIB,
        swap_total_mb=swap.total // MIB,
        swap_used_mb=swap.used // MIB,
        load_avg_1=load[0],
        load_avg_5=load[1],
        load_avg_15=load[2],
        net_io=tuple(
            NetIO(name, io.bytes_recv, io.bytes_sent)
            for name, io in interfaces[:MAX_INTERFACES]
            if name != "lo"
        ),
    )


def _start_cpu_interval() -> None:
    """The first CPU reading only starts psutil's interval."""
    import psutil  # here, in the worker thread: trioswap already serves while it loads

    psutil.cpu_percent(percpu=True)


def _sys_json(timestamp: str, s: SysStat) -> dict[str, Any]:
    return {
        "timestamp": timestamp,
        "cpu_util_per_core": list(s.cpu_util_per_core),
        "mem_total_mb": s.mem_total_mb,
        "mem_used_mb": s.mem_used_mb,
        "mem_free_mb": s.mem_free_mb,
        "swap_total_mb": s.swap_total_mb,
        "swap_used_mb": s.swap_used_mb,
        "load_avg_1": s.load_avg_1,
        "load_avg_5": s.load_avg_5,
        "load_avg_15": s.load_avg_15,
        "net_io": [
            {"name": n.name, "bytes_recv": n.bytes_recv, "bytes_sent": n.bytes_sent}
            for n in s.net_io
        ],
    }


def _gpu_json(timestamp: str, g: GpuStat) -> dict[str, Any]:
    return {
        "timestamp": timestamp,
        "id": g.id,
        "name": g.name,
        "uuid": g.uuid,
        "temp_c": g.temp_c,
        "vram_temp_c": g.vram_temp_c,
        "gpu_util_pct": g.gpu_util_pct,
        "mem_util_pct": g.mem_util_pct,
        "mem_used_mb": g.mem_used_mb,
        "mem_total_mb": g.mem_total_mb,
        "fan_speed_pct": g.fan_speed_pct,
        "power_draw_w": g.power_draw_w,
    }


def _find_tool(tools: Sequence[GpuTool]) -> tuple[str, GpuTool] | None:
    """The first tool on PATH, with its path."""
    for tool in tools:
        path = shutil.which(tool.program)
        if path is not None:
            return path, tool
    names = ", ".join(t.program for t in tools) or "none given"
    log.debug("no GPU tool on PATH (%s): no GPU stats", names)
    return None


class SystemStats:
    """Samples the system (and GPUs) every `every` seconds from `run`, keeping the last hour."""

    def __init__(
        self,
        every: float = MIN_EVERY,
        disabled: bool = False,
        gpu_tools: Iterable[GpuTool] = GPU_TOOLS,
        tool_timeout: float = TOOL_TIMEOUT,
    ) -> None:
        if every < MIN_EVERY:
            raise ValueError(f"performance.every must be at least {MIN_EVERY:g}s, got {every:g}s")
        self.every = every
        self.enabled = not disabled
        self._tool_timeout = tool_timeout
        self._ring: deque[Sample] = deque(maxlen=max(1, math.ceil(KEPT_SECONDS / every)))
        self._gpu_tool = _find_tool(tuple(gpu_tools)) if self.enabled else None
        self._tool_failed = False

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sample every `every` seconds until cancelled; returns at once when disabled."""
        if not self.enabled:
            task_status.started()
            return
        await trio.to_thread.run_sync(_start_cpu_interval)
        task_status.started()
        deadline = trio.current_time()
        while True:
            # A sample that overran its period delays the next, rather than causing a burst.
            deadline = max(deadline + self.every, trio.current_time())
            await trio.sleep_until(deadline)
            await self.sample()

    async def sample(self) -> Sample:
        """Take one sample now and keep it."""
        timestamp = datetime.now(UTC)
        system = await trio.to_thread.run_sync(read_system)
        sample = Sample(timestamp, system, await self._read_gpus())
        self._ring.append(sample)
        return sample

    async def _read_gpus(self) -> tuple[GpuStat, ...]:
        if self._gpu_tool is None:
            return ()
        path, tool = self._gpu_tool
        problem = ""
        with trio.move_on_after(self._tool_timeout) as scope:
            try:
                done = await trio.run_process(
                    [path, *tool.args], capture_stdout=True, capture_stderr=True, check=False
                )
            except OSError as exc:
                problem = str(exc)
            else:
                if done.returncode == 0:
                    return tuple(tool.parse(done.stdout.decode(errors="replace")))
                problem = f"exit code {done.returncode}: {done.stderr.decode(errors='replace')}"
        if scope.cancelled_caught:
            problem = f"no answer in {self._tool_timeout:g}s"
        if not self._tool_failed:
            self._tool_failed = True
            log.debug("%s failed (%s): no GPU stats from it", tool.program, problem.strip()[:500])
        return ()

    def latest(self) -> Sample | None:
        return self._ring[-1] if self._ring else None

    def history(self, after: datetime | None = None) -> dict[str, Any]:
        """The body of `GET /api/performance` (llama-swap's): the samples kept, only those
        taken after `after` if given (an aware datetime); `{"enabled": false}` when disabled."""
        if not self.enabled:
            return {"enabled": False}
        sys_stats: list[dict[str, Any]] = []
        gpu_stats: list[dict[str, Any]] = []
        for sample in self._ring:
            if after is not None and sample.timestamp <= after:
                continue
            stamp = _TIMESTAMP(sample.timestamp)
            sys_stats.append(_sys_json(stamp, sample.system))
            gpu_stats.extend(_gpu_json(stamp, gpu) for gpu in sample.gpus)
        return {"enabled": True, "sys_stats": sys_stats, "gpu_stats": gpu_stats}
