// The Activity page: summary cards, requests in flight (with cancel), the activity table
// (columns the user picks, filters, sorting, paging, Markdown and CSV export), the capture
// viewer and speed charts. Each part shows "unavailable" on its own when its API is missing.

import { COLUMNS, activityPath, rowOf, renderStats } from "./activity-table.js";
import { api, el, on, stored, throttle, toast, unavailable } from "./base.js";
import { timeChart } from "./charts.js";
import { UNKNOWN, absoluteTime, bytes, milliseconds, parseTime, speed } from "./format.js";
import { openCapture } from "./capture.js";

const $ = (id) => document.getElementById(id);

// ---- summary cards

const statsBox = $("activity-stats");

async function loadStats() {
  const model = $("activity-model").value;
  try {
    renderStats(statsBox, await api(model ? `/api/metrics/stats?model=${encodeURIComponent(model)}` : "/api/metrics/stats"));
  } catch (error) {
    unavailable(statsBox, "Statistics", error);
  }
}

// ---- requests in flight

const inflight = new Map(); // id → entry, with `received_at` (performance.now() at arrival)
let inflightEvents = 0; // a listing fetched before the latest event is stale
const inflightRows = $("inflight-rows");
const inflightStatus = $("inflight-status");

function header(entry, name) {
  const wanted = name.toLowerCase();
  for (const [key, value] of Object.entries(entry.req_headers || {})) if (key.toLowerCase() === wanted) return value;
  return "";
}

function keep(entry) {
  if (entry && entry.id !== undefined) inflight.set(String(entry.id), { ...entry, received_at: performance.now() });
}

function renderInflight() {
  const entries = [...inflight.values()].sort((a, b) => parseTime(a.timestamp) - parseTime(b.timestamp) || String(a.id).localeCompare(String(b.id)));
  $("inflight-count").textContent = String(entries.length);
  const now = performance.now();
  inflightRows.replaceChildren(
    ...entries.map((entry) =>
      el(
        "tr",
        { "data-testid": "inflight-row", "data-id": entry.id },
        el("td", {}, el("button", { type: "button", class: "btn danger", "data-cancel": entry.id, "data-testid": "inflight-cancel" }, "Cancel")),
        el("td", { class: "num" }, milliseconds((entry.elapsed_ms || 0) + (now - entry.received_at))),
        el("td", {}, entry.model || UNKNOWN),
        el("td", { class: "mono small" }, `${entry.method || ""} ${entry.req_path || ""}`),
        el("td", { class: "mono small" }, entry.remote_ip || UNKNOWN),
        el("td", { class: "small" }, entry.user_agent || header(entry, "User-Agent") || UNKNOWN),
        el("td", { class: "small" }, entry.session_id || header(entry, "X-Session-ID") || UNKNOWN),
        el("td", { class: "num" }, bytes(entry.resp_bytes)),
      ),
    ),
  );
  if (entries.length === 0 && !inflightStatus.textContent) inflightRows.append(el("tr", {}, el("td", { colspan: 8, class: "empty" }, "Nothing in flight.")));
}

async function loadInflight() {
  const seen = inflightEvents;
  try {
    const answer = await api("/api/inflight");
    if (seen !== inflightEvents) return;
    const list = Array.isArray(answer) ? answer : answer?.requests ?? answer?.data ?? [];
    inflight.clear();
    list.forEach(keep);
    inflightStatus.textContent = "";
  } catch (error) {
    inflightStatus.textContent = `In-flight requests unavailable: ${error.status === 404 ? "not available on this trioswap" : error.message}`;
  }
  renderInflight();
}

on("inflight", (update) => {
  if (!update) return;
  inflightEvents += 1;
  if (update.operation === "snapshot") {
    inflight.clear();
    (update.requests || []).forEach(keep);
  } else if (update.operation === "upsert") keep(update.request);
  else if (update.operation === "remove") inflight.delete(String(update.id));
  inflightStatus.textContent = "";
  renderInflight();
});

inflightRows.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-cancel]");
  if (!button) return;
  button.disabled = true;
  try {
    await api(`/api/inflight/${encodeURIComponent(button.dataset.cancel)}/cancel`, { method: "POST" });
    toast("Request cancelled", "ok");
  } catch (error) {
    toast(`Cancel failed: ${error.message}`, "error");
    button.disabled = false;
  }
});

// Elapsed times tick between updates.
setInterval(() => inflight.size && renderInflight(), 1000);

// ---- the table

const visibility = { ...Object.fromEntries(COLUMNS.map((c) => [c.id, c.visible])), ...stored.get("activity.columns", {}) };
const view = {
  page: 1,
  limit: Number(stored.get("activity.limit", 25)) || 25,
  sort: stored.get("activity.sort", "id"),
  order: stored.get("activity.order", "desc"),
};
let shown = []; // the rows of the current page
const rowsBox = $("activity-rows");
const head = $("activity-head");

const visibleColumns = () => COLUMNS.filter((c) => visibility[c.id] !== false);

function filters() {
  const time = (input) => (input.value ? new Date(input.value).toISOString() : "");
  return {
    model: $("activity-model").value,
    start: time($("activity-start")),
    end: time($("activity-end")),
    min_id: $("activity-min-id").value,
    max_id: $("activity-max-id").value,
  };
}

function renderHead() {
  head.replaceChildren(
    ...visibleColumns().map((column) => {
      const th = el("th", { class: [column.num ? "num" : "", column.sort ? "sortable" : ""].join(" ").trim() || null, scope: "col", "data-column": column.id }, column.label);
      if (column.sort) {
        th.tabIndex = 0;
        if (view.sort === column.id) th.setAttribute("aria-sort", view.order === "asc" ? "ascending" : "descending");
      }
      return th;
    }),
  );
}

function sortBy(id) {
  view.order = view.sort === id && view.order === "desc" ? "asc" : "desc";
  view.sort = id;
  view.page = 1;
  stored.set("activity.sort", view.sort);
  stored.set("activity.order", view.order);
  loadTable();
}

head.addEventListener("click", (event) => {
  const th = event.target.closest("th.sortable");
  if (th) sortBy(th.dataset.column);
});
head.addEventListener("keydown", (event) => {
  const th = event.target.closest("th.sortable");
  if (th && (event.key === "Enter" || event.key === " ")) {
    event.preventDefault();
    sortBy(th.dataset.column);
  }
});

function renderColumnsMenu() {
  $("activity-columns").replaceChildren(
    ...COLUMNS.map((column) =>
      el(
        "label",
        { class: "check" },
        el("input", { type: "checkbox", "data-column": column.id, "data-testid": "column-toggle", checked: visibility[column.id] !== false }),
        column.label,
      ),
    ),
  );
}

$("activity-columns").addEventListener("change", (event) => {
  const box = event.target.closest("input[data-column]");
  if (!box) return;
  visibility[box.dataset.column] = box.checked;
  stored.set("activity.columns", visibility);
  renderTable();
});

function renderTable() {
  renderHead();
  const columns = visibleColumns();
  rowsBox.replaceChildren(...shown.map((entry) => rowOf(entry, columns)));
  if (shown.length === 0) rowsBox.append(el("tr", {}, el("td", { colspan: columns.length || 1, class: "empty" }, "No activity recorded.")));
}

let tableRequest = 0;

async function loadTable() {
  const mine = ++tableRequest;
  try {
    const answer = await api(activityPath({ ...filters(), page: view.page, limit: view.limit, sort: view.sort, order: view.order }));
    if (mine !== tableRequest) return;
    shown = Array.isArray(answer?.data) ? answer.data : [];
    const pages = answer?.total_pages ?? 1;
    $("activity-page-info").textContent = `page ${answer?.page ?? view.page} of ${Math.max(1, pages)} · ${(answer?.total ?? shown.length).toLocaleString()} requests`;
    $("activity-prev").disabled = view.page <= 1;
    $("activity-next").disabled = view.page >= pages;
    renderTable();
  } catch (error) {
    if (mine !== tableRequest) return;
    if (error.status === 400 && view.sort !== "id") {
      // A sort this trioswap does not offer (remembered from elsewhere): back to the default.
      view.sort = "id";
      view.order = "desc";
      stored.set("activity.sort", view.sort);
      stored.set("activity.order", view.order);
      loadTable();
      return;
    }
    shown = [];
    renderHead();
    const td = el("td", { colspan: visibleColumns().length || 1 });
    unavailable(td, "Activity", error);
    rowsBox.replaceChildren(el("tr", {}, td));
    $("activity-page-info").textContent = "";
  }
}

$("activity-prev").addEventListener("click", () => {
  view.page = Math.max(1, view.page - 1);
  loadTable();
});
$("activity-next").addEventListener("click", () => {
  view.page += 1;
  loadTable();
});
$("activity-limit").value = String(view.limit);
$("activity-limit").addEventListener("change", () => {
  view.limit = Number($("activity-limit").value);
  view.page = 1;
  stored.set("activity.limit", view.limit);
  loadTable();
});

function filtersChanged() {
  view.page = 1;
  loadTable();
  loadStats();
  loadCharts();
}

for (const id of ["activity-model", "activity-start", "activity-end", "activity-min-id", "activity-max-id"]) {
  $(id).addEventListener("change", filtersChanged);
}
$("activity-filters-clear").addEventListener("click", () => {
  for (const id of ["activity-start", "activity-end", "activity-min-id", "activity-max-id"]) $(id).value = "";
  filtersChanged();
});

async function loadModels() {
  try {
    const listed = await api("/v1/models");
    const select = $("activity-model");
    for (const model of listed?.data ?? []) {
      if (model?.meta?.trioswap?.type === "alias") continue;
      select.append(el("option", { value: model.id }, model.id));
    }
  } catch {
    // The filter then offers "all" only.
  }
}

rowsBox.addEventListener("click", (event) => {
  const button = event.target.closest("[data-capture]");
  if (button) openCapture(button.dataset.capture);
});

// ---- export

function csvCell(text) {
  let value = String(text ?? "");
  // A spreadsheet runs a cell that starts with one of these as a formula.
  if (/^[=+\-@\t\r]/.test(value)) value = `'${value}`;
  return /[",\n\r]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}

function exportColumns() {
  return visibleColumns().filter((c) => c.id !== "capture");
}

function markdownCell(text) {
  return String(text).replace(/\|/g, "\\|").replace(/[\r\n\t]+/g, " ");
}

function markdown() {
  const columns = exportColumns();
  let prompt = 0;
  let promptSeconds = 0;
  let generated = 0;
  let generatedSeconds = 0;
  let duration = 0;
  for (const row of shown) {
    const t = row.tokens ?? {};
    duration += row.duration_ms || 0;
    if (t.input_tokens > 0 && t.prompt_per_second > 0) {
      prompt += t.input_tokens;
      promptSeconds += t.input_tokens / t.prompt_per_second;
    }
    if (t.output_tokens > 0 && t.tokens_per_second > 0) {
      generated += t.output_tokens;
      generatedSeconds += t.output_tokens / t.tokens_per_second;
    }
  }
  const times = shown.map((r) => parseTime(r.timestamp)).filter((t) => !Number.isNaN(t));
  const range = times.length ? `${absoluteTime(new Date(Math.min(...times)).toISOString())} → ${absoluteTime(new Date(Math.max(...times)).toISOString())}` : UNKNOWN;
  const summaryRows = [
    ["Requests", String(shown.length)],
    ["Range", range],
    ["Duration", milliseconds(duration)],
    ["Prefill (token-weighted)", promptSeconds > 0 ? speed(prompt / promptSeconds) : UNKNOWN],
    ["Decode (token-weighted)", generatedSeconds > 0 ? speed(generated / generatedSeconds) : UNKNOWN],
  ];
  return [
    ["| Summary | |", "| --- | --- |", ...summaryRows.map(([k, v]) => `| ${k} | ${markdownCell(v)} |`)].join("\n"),
    [
      `| ${columns.map((c) => markdownCell(c.label)).join(" | ")} |`,
      `| ${columns.map(() => "---").join(" | ")} |`,
      ...shown.map((row) => `| ${columns.map((c) => markdownCell(c.text(row))).join(" | ")} |`),
    ].join("\n"),
    `Exported from trioswap at ${absoluteTime(new Date().toISOString())}`,
  ].join("\n\n");
}

function download(name, type, text) {
  const link = el("a", { href: URL.createObjectURL(new Blob([text], { type })), download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

$("export-markdown").addEventListener("click", () => {
  $("export-text").value = markdown();
  $("export-dialog").showModal();
});
$("export-copy").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText($("export-text").value);
    toast("Copied", "ok");
  } catch {
    $("export-text").select();
    toast("Select all and copy (the clipboard is not available here)", "info");
  }
});
$("export-download").addEventListener("click", () => download("trioswap-activity.md", "text/markdown", $("export-text").value));
$("export-csv").addEventListener("click", () => {
  const columns = exportColumns();
  const raw = {
    time: (r) => r.timestamp,
    cached: (r) => r.tokens?.cache_tokens ?? "",
    prompt: (r) => r.tokens?.input_tokens ?? "",
    generated: (r) => r.tokens?.output_tokens ?? "",
    prompt_speed: (r) => r.tokens?.prompt_per_second ?? "",
    gen_speed: (r) => r.tokens?.tokens_per_second ?? "",
    ttft: (r) => r.ttft_ms ?? "",
    duration: (r) => r.duration_ms ?? "",
  };
  const lines = [columns.map((c) => csvCell(c.label)).join(",")];
  for (const row of shown) lines.push(columns.map((c) => csvCell((raw[c.id] ?? c.text)(row))).join(","));
  download("trioswap-activity.csv", "text/csv", lines.join("\r\n") + "\r\n");
});

// ---- charts

const CHART_ROWS = 500;
const chartsStatus = $("charts-status");
const charts = {
  decode: timeChart($("chart-decode"), ["decode"], { unit: " t/s" }),
  prefill: timeChart($("chart-prefill"), ["prefill"], { unit: " t/s" }),
  ttft: timeChart($("chart-ttft"), ["TTFT"], { unit: " ms" }),
};

const positive = (value) => (typeof value === "number" && value > 0 ? value : null);

async function loadCharts() {
  try {
    const answer = await api(activityPath({ ...filters(), page: 1, limit: CHART_ROWS, sort: "id", order: "desc" }));
    const rows = (answer?.data ?? []).filter((r) => !Number.isNaN(parseTime(r.timestamp))).reverse();
    const times = rows.map((r) => parseTime(r.timestamp) / 1000);
    charts.decode.setData(times, rows.map((r) => positive(r.tokens?.tokens_per_second)));
    charts.prefill.setData(times, rows.map((r) => positive(r.tokens?.prompt_per_second)));
    charts.ttft.setData(times, rows.map((r) => positive(r.ttft_ms)));
    chartsStatus.textContent = rows.length ? `the last ${rows.length} requests` : "no requests yet";
  } catch (error) {
    chartsStatus.textContent = `Charts unavailable: ${error.status === 404 ? "no activity API on this trioswap" : error.message}`;
  }
}

// ---- live

const refreshActivity = throttle(() => {
  loadTable();
  loadStats();
  loadCharts();
}, 2000);

on("activity", refreshActivity);
on("poll", refreshActivity);
on("poll", throttle(loadInflight, 2000));
on("refresh", () => {
  refreshActivity();
  loadInflight();
});

renderColumnsMenu();
renderHead();
loadModels();
loadStats();
loadTable();
loadInflight();
loadCharts();
