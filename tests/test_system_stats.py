"""System and GPU stats: the tools' parsers on captured-shape output, the sampler on a virtual
clock (an hour kept, nothing when disabled), real psutil readings, and GPU tools run as real
processes (fake ones: no GPU here) that answer, fail or hang."""

from __future__ import annotations

import json
import logging
import stat
from datetime import datetime
from pathlib import Path

import psutil
import pytest
import trio

from tests.conftest import pid_alive
from trioswap.observe.system import (
    GPU_TOOLS,
    MAX_GPUS,
    NVIDIA_SMI,
    GpuStat,
    GpuTool,
    SystemStats,
    parse_nvidia_smi,
    parse_rocm_smi,
)

# nvidia-smi --query-gpu=index,name,uuid,temperature.gpu,utilization.gpu,memory.used,
# memory.total,fan.speed,power.draw --format=csv,noheader,nounits
NVIDIA_OUTPUT = """\
0, NVIDIA GeForce RTX 4090, GPU-8f1c9a3e-2d4b-4c6a-9e1f-3b5d7c9a1e2f, 47, 93, 21874, 24564, \
41, 312.58
1, NVIDIA A100-SXM4-80GB, GPU-1d2e3f40-5a6b-7c8d-9e0f-a1b2c3d4e5f6, 34, 0, 4, 81920, [N/A], 61.27
2, NVIDIA GeForce GTX 1060 6GB, GPU-0a0b0c0d-1e1f-2a2b-3c3d-4e4f5a5b6c6d, 52, 7, 312, 6144, 28, \
[Not Supported]
"""

# rocm-smi -i -P -t -f -u --showmemuse --showmeminfo vram --showproductname --csv, ROCm 5.7
# (columns as that version prints them).
ROCM5_OUTPUT = """\


device,GPU ID,Temperature (Sensor edge) (C),Temperature (Sensor junction) (C),\
Temperature (Sensor memory) (C),Fan speed (level),Fan speed (%),Fan RPM,\
Average Graphics Package Power (W),GPU use (%),GPU memory use (%),Memory Activity,\
VRAM Total Memory (B),VRAM Total Used Memory (B),Card series,Card model,Card vendor,Card SKU
card0,0x744c,45.0,52.0,58.0,62,24,1123,71.0,98,87,N/A,25753026560,21458059264,\
Navi 31 [Radeon RX 7900 XT/7900 XTX],0x744c,0x1002,EXT94393
card1,0x73bf,38.0,40.0,44.0,0,0,0,9.0,0,2,N/A,17163091968,268435456,\
Navi 21 [Radeon RX 6800/6800 XT / 6900 XT],0x73bf,0x1002,D4120100

"""

# The same with ROCm 7.1: more columns, "Device Name" and "GFX Version", "Card Series" N/A.
ROCM7_OUTPUT = """\
device,Device Name,Device ID,Device Rev,Subsystem ID,GUID,Temperature (Sensor edge) (C),\
Temperature (Sensor junction) (C),Temperature (Sensor memory) (C),Fan speed (level),\
Fan speed (%),Fan RPM,Average Graphics Package Power (W),GPU use (%),\
GPU Memory Allocated (VRAM%),GPU Memory Read/Write Activity (%),Memory Activity,\
Avg. Memory Bandwidth,VRAM Total Memory (B),VRAM Total Used Memory (B),Card Series,Card Model,\
Card Vendor,Card SKU,Node ID,GFX Version
card0,Radeon RX 9070 XT,0x7551,0xc0,0x1234,23541,51.0,63.0,N/A,51,20,1068,214.0,100,88,41,N/A,\
0,17095983104,15032385536,N/A,0x7551,0x1002,APM7199,1,gfx1201
"""


def test_nvidia_smi_lines() -> None:
    rtx, a100, gtx = parse_nvidia_smi(NVIDIA_OUTPUT)
    assert rtx == GpuStat(
        id=0,
        name="NVIDIA GeForce RTX 4090",
        uuid="GPU-8f1c9a3e-2d4b-4c6a-9e1f-3b5d7c9a1e2f",
        temp_c=47,
        gpu_util_pct=93,
        mem_util_pct=pytest.approx(21874 / 24564 * 100),
        mem_used_mb=21874,
        mem_total_mb=24564,
        fan_speed_pct=41,
        power_draw_w=312.58,
    )
    # What the tool cannot read stays unknown, never 0.
    assert a100.id == 1 and a100.fan_speed_pct is None and a100.gpu_util_pct == 0
    assert gtx.power_draw_w is None and gtx.vram_temp_c is None


def test_nvidia_smi_odd_lines_are_skipped() -> None:
    text = "\n".join(
        [
            "",
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
            "0, short, line",
            "x, NVIDIA T4, GPU-1, 40, 1, 2, 3, 4, 5",
            "3, NVIDIA T4, GPU-3, 40, 1, 200, 15360, [N/A], 27.1",
        ]
    )
    (t4,) = parse_nvidia_smi(text)
    assert (t4.id, t4.mem_used_mb, t4.mem_total_mb, t4.fan_speed_pct) == (3, 200, 15360, None)


def test_rocm_smi_5() -> None:
    xtx, rx6800 = parse_rocm_smi(ROCM5_OUTPUT)
    assert xtx == GpuStat(
        id=0,
        name="Navi 31 [Radeon RX 7900 XT/7900 XTX] card0",
        uuid="",
        temp_c=45,
        vram_temp_c=58,
        gpu_util_pct=98,
        mem_util_pct=pytest.approx(20464 / 24560 * 100),
        mem_used_mb=20464,
        mem_total_mb=24560,
        fan_speed_pct=24,
        power_draw_w=71,
    )
    assert rx6800.id == 1 and rx6800.mem_used_mb == 256 and rx6800.gpu_util_pct == 0


def test_rocm_smi_7() -> None:
    (gpu,) = parse_rocm_smi(ROCM7_OUTPUT)
    assert gpu.name == "Radeon RX 9070 XT card0 (gfx1201)"
    assert gpu.uuid == "23541"
    assert (gpu.temp_c, gpu.vram_temp_c, gpu.power_draw_w) == (51, None, 214)
    assert (gpu.mem_used_mb, gpu.mem_total_mb) == (14336, 16304)


def test_rocm_smi_odd_output() -> None:
    assert parse_rocm_smi("") == []
    assert parse_rocm_smi("WARNING: AMD GPU device(s) is/are in a low-power state.\n") == []
    header = ROCM7_OUTPUT.splitlines()[0]
    # Rows before a header, with a cell too many (an unquoted comma) or not a card: skipped.
    text = "\n".join(
        [
            "card0,1,2",
            header,
            ROCM7_OUTPUT.splitlines()[1].replace("Radeon RX", "Radeon, RX"),
            ROCM7_OUTPUT.splitlines()[1].replace("card0", "GPU[0]"),
        ]
    )
    assert parse_rocm_smi(text) == []


def test_parsers_are_bounded() -> None:
    line = "0, NVIDIA T4, GPU-1, 40, 1, 200, 15360, 30, 27.1\n"
    assert len(parse_nvidia_smi(line * 10_000)) == MAX_GPUS
    header, row = ROCM7_OUTPUT.splitlines()
    assert len(parse_rocm_smi(header + "\n" + (row + "\n") * 10_000)) == MAX_GPUS


def test_every_has_llama_swaps_minimum() -> None:
    with pytest.raises(ValueError, match="at least 5s"):
        SystemStats(every=1)


async def test_a_real_psutil_sample_is_sane() -> None:
    stats = SystemStats(gpu_tools=())
    assert stats.latest() is None
    sample = await stats.sample()
    s = sample.system
    assert len(s.cpu_util_per_core) == psutil.cpu_count()
    assert all(0 <= p <= 100 for p in s.cpu_util_per_core)
    assert 0 < s.mem_used_mb <= s.mem_total_mb and 0 <= s.mem_free_mb <= s.mem_total_mb
    assert 0 <= s.swap_used_mb <= s.swap_total_mb
    assert min(s.load_avg_1, s.load_avg_5, s.load_avg_15) >= 0
    assert all(io.name != "lo" and io.bytes_recv >= 0 for io in s.net_io)
    assert sample.gpus == () and stats.latest() is sample

    body = json.loads(json.dumps(stats.history()))
    (entry,) = body["sys_stats"]
    assert body["enabled"] is True and body["gpu_stats"] == []
    assert entry["timestamp"].endswith("Z")
    assert datetime.fromisoformat(entry["timestamp"]) == sample.timestamp
    assert entry["mem_total_mb"] == s.mem_total_mb
    assert set(entry) == {
        "timestamp",
        "cpu_util_per_core",
        "mem_total_mb",
        "mem_used_mb",
        "mem_free_mb",
        "swap_total_mb",
        "swap_used_mb",
        "load_avg_1",
        "load_avg_5",
        "load_avg_15",
        "net_io",
    }


async def test_the_sampler_keeps_the_last_hour(autojump_clock: trio.testing.MockClock) -> None:
    every = 60.0
    kept = 60  # an hour of samples
    stats = SystemStats(every=every, gpu_tools=())
    async with trio.open_nursery() as nursery:
        await nursery.start(stats.run)
        assert stats.latest() is None  # the first sample comes after `every`
        # Count the samples seen taken (at least as many as counted: polls may miss some).
        seen, last = 0, None
        while seen < kept + 5:
            await trio.sleep(every / 4)
            if stats.latest() is not last:
                last, seen = stats.latest(), seen + 1
        nursery.cancel_scope.cancel()
    sys_stats = stats.history()["sys_stats"]
    assert len(sys_stats) == kept
    stamps = [datetime.fromisoformat(s["timestamp"]) for s in sys_stats]
    assert stamps == sorted(stamps)
    assert stats.latest() is not None
    assert stamps[-1] == stats.latest().timestamp

    # `after` keeps only the samples taken later.
    cut = stamps[kept // 2]
    later = stats.history(after=cut)["sys_stats"]
    assert [s["timestamp"] for s in later] == [
        s["timestamp"] for s, t in zip(sys_stats, stamps, strict=True) if t > cut
    ]


async def test_disabled_samples_nothing(autojump_clock: trio.testing.MockClock) -> None:
    stats = SystemStats(disabled=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(stats.run)  # returns at once
        await trio.sleep(3600)
    assert stats.latest() is None
    assert stats.history() == {"enabled": False}


def tool(path: Path, script: str) -> GpuTool:
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return GpuTool(str(path), NVIDIA_SMI.args, NVIDIA_SMI.parse)


async def test_gpus_from_a_tool(tmp_path: Path) -> None:
    answer = tool(tmp_path / "nvidia-smi", f"cat <<'EOF'\n{NVIDIA_OUTPUT}EOF\n")
    stats = SystemStats(gpu_tools=[answer])
    sample = await stats.sample()
    assert [g.name for g in sample.gpus] == [
        "NVIDIA GeForce RTX 4090",
        "NVIDIA A100-SXM4-80GB",
        "NVIDIA GeForce GTX 1060 6GB",
    ]
    body = json.loads(json.dumps(stats.history()))
    gpu = body["gpu_stats"][0]
    assert gpu["timestamp"] == body["sys_stats"][0]["timestamp"]
    assert gpu["mem_used_mb"] == 21874 and gpu["temp_c"] == 47
    assert body["gpu_stats"][1]["fan_speed_pct"] is None
    assert set(gpu) == {
        "timestamp",
        "id",
        "name",
        "uuid",
        "temp_c",
        "vram_temp_c",
        "gpu_util_pct",
        "mem_util_pct",
        "mem_used_mb",
        "mem_total_mb",
        "fan_speed_pct",
        "power_draw_w",
    }


async def test_no_tool_on_path_means_no_gpus(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with caplog.at_level(logging.DEBUG, "trioswap.performance"):
        stats = SystemStats(gpu_tools=GPU_TOOLS)
    assert (await stats.sample()).gpus == ()
    assert "no GPU tool on PATH (nvidia-smi, rocm-smi)" in caplog.text


async def test_a_failing_tool_is_logged_once_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    failing = tool(
        tmp_path / "nvidia-smi",
        "echo 'NVIDIA-SMI has failed because it could not communicate with the driver' >&2\n"
        "exit 9\n",
    )
    stats = SystemStats(gpu_tools=[failing])
    with caplog.at_level(logging.DEBUG, "trioswap.performance"):
        for _ in range(3):
            assert (await stats.sample()).gpus == ()
    (record,) = caplog.records
    assert record.levelno == logging.DEBUG
    assert "exit code 9" in record.message and "could not communicate" in record.message


async def test_a_hanging_tool_is_stopped_at_its_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pid_file = tmp_path / "pid"
    hanging = tool(tmp_path / "nvidia-smi", f"echo $$ > {pid_file}\nexec sleep 60\n")
    stats = SystemStats(gpu_tools=[hanging], tool_timeout=0.5)
    with caplog.at_level(logging.DEBUG, "trioswap.performance"), trio.fail_after(10):
        assert (await stats.sample()).gpus == ()
    assert "no answer in 0.5s" in caplog.text
    assert not pid_alive(int(pid_file.read_text()))
