// The Performance page: CPU, memory and GPU over the last hour, from /api/performance
// (llama-swap's shape: sys_stats and gpu_stats samples), read again every few seconds with
// ?after=<the newest sample's time>.

import { api } from "./base.js";
import { timeChart } from "./charts.js";
import { parseTime } from "./format.js";

const KEPT_MS = 3600 * 1000;
const EVERY_MS = 5000;
const $ = (id) => document.getElementById(id);
const status = $("performance-status");

const charts = {
  cpu: timeChart($("chart-cpu"), ["average", "busiest core"], { unit: "%" }),
  memory: timeChart($("chart-memory"), ["used", "swap used"], { unit: " MB" }),
  gpu: timeChart($("chart-gpu"), [], { unit: "%" }),
  gpuMemory: timeChart($("chart-gpu-memory"), [], { unit: " MB" }),
};

let system = [];
let gpus = [];
let after = null;

const number = (value) => (typeof value === "number" && Number.isFinite(value) ? value : null);

function prune(samples) {
  const oldest = Date.now() - KEPT_MS;
  return samples.filter((s) => parseTime(s.timestamp) >= oldest);
}

function draw() {
  const times = system.map((s) => parseTime(s.timestamp) / 1000);
  const cores = system.map((s) => (Array.isArray(s.cpu_util_per_core) ? s.cpu_util_per_core.map(number).filter((v) => v !== null) : []));
  charts.cpu.setData(
    times,
    cores.map((c) => (c.length ? c.reduce((a, b) => a + b, 0) / c.length : null)),
    cores.map((c) => (c.length ? Math.max(...c) : null)),
  );
  charts.memory.setData(times, system.map((s) => number(s.mem_used_mb)), system.map((s) => number(s.swap_used_mb)));

  // One line per GPU, on the times any GPU reported.
  const ids = [...new Set(gpus.map((g) => g.id))].sort((a, b) => a - b);
  const names = ids.map((id) => {
    const sample = gpus.find((g) => g.id === id);
    return `${id}: ${sample?.name || "GPU"}`;
  });
  const gpuTimes = [...new Set(gpus.map((g) => g.timestamp))].sort((a, b) => parseTime(a) - parseTime(b));
  const at = new Map(gpus.map((g) => [`${g.id}@${g.timestamp}`, g]));
  const column = (key) => ids.map((id) => gpuTimes.map((t) => number(at.get(`${id}@${t}`)?.[key])));
  charts.gpu.setLabels(names);
  charts.gpuMemory.setLabels(names);
  const seconds = gpuTimes.map((t) => parseTime(t) / 1000);
  charts.gpu.setData(seconds, ...column("gpu_util_pct"));
  charts.gpuMemory.setData(seconds, ...column("mem_used_mb"));
}

async function load() {
  try {
    const path = after ? `/api/performance?after=${encodeURIComponent(after)}` : "/api/performance";
    const answer = await api(path);
    if (answer?.enabled === false) {
      status.textContent = "Performance monitoring is off (performance.disabled in the config).";
      return;
    }
    system = prune([...system, ...(answer?.sys_stats ?? [])]);
    gpus = prune([...gpus, ...(answer?.gpu_stats ?? [])]);
    const newest = [...system, ...gpus].map((s) => s.timestamp).sort((a, b) => parseTime(a) - parseTime(b)).pop();
    if (newest) after = newest;
    status.textContent = system.length ? `${system.length} samples in the last hour${gpus.length ? "" : " · no GPU reported"}` : "no samples yet";
    draw();
  } catch (error) {
    status.textContent = error.status === 503
      ? "Performance monitoring is off (performance.disabled in the config)."
      : `Performance data unavailable: ${error.status === 404 ? "not available on this trioswap" : error.message}`;
  }
}

load();
setInterval(load, EVERY_MS);
