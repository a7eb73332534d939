// The activity table's columns (llama-swap's, plus trioswap's TTFT, optimizer, translation and
// session), how each reads as a cell and as text, and the summary cards of /api/metrics/stats.
// Used by the Activity page and by a model's page.

import { el, fill, modelPath, url } from "./base.js";
import { UNKNOWN, absoluteTime, count, milliseconds, relativeTime, speed } from "./format.js";

const tokens = (row) => row.tokens ?? {};

function summary(value) {
  // The optimizer's and translation's outcome: a word, or an object read as key=value pairs.
  if (value === null || value === undefined || value === "") return UNKNOWN;
  if (typeof value !== "object") return String(value);
  const parts = Object.entries(value)
    .filter(([, v]) => v !== null && v !== undefined && typeof v !== "object")
    .map(([k, v]) => `${k}=${v}`);
  return parts.length ? parts.join(" ") : JSON.stringify(value).slice(0, 200);
}

function drafted(row) {
  const { draft_tokens: drafts, draft_acc_tokens: accepted } = tokens(row);
  return drafts > 0 ? `${((accepted * 100) / drafts).toFixed(1)}% (${accepted}/${drafts})` : UNKNOWN;
}

/**
 * id: stable key (also the API's sort key where `sort`); text(row): the plain text (exports);
 * visible: shown unless the user hides it.
 */
export const COLUMNS = [
  { id: "id", label: "ID", sort: true, num: true, visible: true, text: (r) => String(r.id) },
  { id: "time", label: "Time", sort: true, visible: true, text: (r) => absoluteTime(r.timestamp) },
  { id: "model", label: "Model", sort: true, visible: true, text: (r) => r.model ?? "" },
  { id: "req_path", label: "Path", sort: true, visible: false, text: (r) => r.req_path || UNKNOWN },
  { id: "resp_status_code", label: "Status", sort: true, num: true, visible: true, text: (r) => String(r.resp_status_code || UNKNOWN) },
  { id: "resp_content_type", label: "Content-Type", visible: false, text: (r) => r.resp_content_type || UNKNOWN },
  { id: "cached", label: "Cached", sort: true, num: true, visible: true, text: (r) => (tokens(r).cache_tokens > 0 ? count(tokens(r).cache_tokens) : UNKNOWN) },
  { id: "prompt", label: "Prompt", sort: true, num: true, visible: true, text: (r) => count(tokens(r).input_tokens) },
  { id: "generated", label: "Generated", sort: true, num: true, visible: true, text: (r) => count(tokens(r).output_tokens) },
  { id: "drafted", label: "Drafted", num: true, visible: false, text: drafted },
  { id: "prompt_speed", label: "Prefill", sort: true, num: true, visible: true, text: (r) => speed(tokens(r).prompt_per_second) },
  { id: "gen_speed", label: "Decode", sort: true, num: true, visible: true, text: (r) => speed(tokens(r).tokens_per_second) },
  { id: "ttft", label: "TTFT", sort: true, num: true, visible: true, text: (r) => milliseconds(r.ttft_ms) },
  { id: "duration", label: "Duration", sort: true, num: true, visible: true, text: (r) => milliseconds(r.duration_ms) },
  { id: "optimizer", label: "Optimizer", visible: false, text: (r) => summary(r.optimizer) },
  { id: "translation", label: "Translation", visible: false, text: (r) => summary(r.translation) },
  { id: "session", label: "Session", visible: false, text: (r) => r.session_id || UNKNOWN },
  { id: "capture", label: "Capture", visible: true, text: (r) => (r.has_capture ? "yes" : "") },
  { id: "meta", label: "Meta", visible: false, text: (r) => Object.entries(r.metadata || {}).map(([k, v]) => `${k}=${v}`).join("; ") || UNKNOWN },
];

/** The table cell of `column` for `row`. */
export function cell(column, row) {
  const td = el("td", { class: column.num ? "num" : null, dataset: { column: column.id } });
  if (column.id === "time") {
    td.append(el("time", { datetime: row.timestamp, title: absoluteTime(row.timestamp) }, relativeTime(row.timestamp)));
  } else if (column.id === "model" && row.model) {
    td.append(el("a", { href: url(`/ui/models/${modelPath(row.model)}`) }, row.model));
  } else if (column.id === "resp_status_code") {
    td.className = `num status-${String(row.resp_status_code || "")[0] || "0"}`;
    td.append(column.text(row));
    if (row.error_msg) td.title = row.error_msg;
  } else if (column.id === "capture") {
    if (row.has_capture) {
      td.append(el("button", { type: "button", class: "btn", "data-capture": row.id, "data-testid": "capture-open" }, "View"));
    }
  } else {
    td.append(column.text(row));
  }
  return td;
}

/** The row of `entry` with `columns`. */
export function rowOf(entry, columns) {
  return el("tr", { "data-testid": "activity-row", "data-id": entry.id }, columns.map((column) => cell(column, entry)));
}

function stat(label, value, sub, testid) {
  return el("div", { class: "stat", "data-testid": testid }, el("div", { class: "label" }, label), el("div", { class: "value" }, value), sub ? el("div", { class: "sub" }, sub) : null);
}

function speeds(histogram) {
  if (!histogram) return [UNKNOWN, null];
  return [speed(histogram.p50), `p95 ${speed(histogram.p95)} · p99 ${speed(histogram.p99)}`];
}

/** trioswap's `percentiles` entry ({count, p50, p90, p99}), in milliseconds. */
function times(entry) {
  if (!entry || !entry.count) return [UNKNOWN, null];
  return [milliseconds(entry.p50), `p90 ${milliseconds(entry.p90)} · p99 ${milliseconds(entry.p99)}`];
}

/** Flatten an object's numeric leaves, one level deep, to [label, number] pairs. */
function numbers(prefix, value) {
  if (!value || typeof value !== "object") return [];
  const out = [];
  for (const [key, inner] of Object.entries(value)) {
    if (typeof inner === "number") out.push([`${prefix} ${key}`, inner]);
    else if (inner && typeof inner === "object" && !Array.isArray(inner)) {
      for (const [k, v] of Object.entries(inner)) if (typeof v === "number") out.push([`${prefix} ${key} ${k}`, v]);
    }
  }
  return out.slice(0, 12);
}

/** The summary cards of /api/metrics/stats. */
export function renderStats(container, stats) {
  const [prefill, prefillSub] = speeds(stats.prompt_histogram);
  const [decode, decodeSub] = speeds(stats.gen_histogram);
  const [ttft, ttftSub] = times(stats.percentiles?.ttft_ms);
  const [duration, durationSub] = times(stats.percentiles?.duration_ms);
  fill(
    container,
    stat("Requests", count(stats.total_requests), null, "stat-requests"),
    typeof stats.total_errors === "number" ? stat("Errors", count(stats.total_errors), null, "stat-errors") : null,
    stat("Prompt tokens", count(stats.total_input_tokens), null, "stat-prompt"),
    stat("Generated tokens", count(stats.total_output_tokens), null, "stat-generated"),
    stat("Cached tokens", count(stats.total_cache_tokens), null, "stat-cached"),
    stat("Prefill p50", prefill, prefillSub, "stat-prefill"),
    stat("Decode p50", decode, decodeSub, "stat-decode"),
    stats.percentiles ? stat("TTFT p50", ttft, ttftSub, "stat-ttft") : null,
    stats.percentiles ? stat("Duration p50", duration, durationSub, "stat-duration") : null,
    ...numbers("optimizer", stats.optimizer).map(([label, value]) => stat(label, count(value), null, "stat-optimizer")),
    ...numbers("translation", stats.translation).map(([label, value]) => stat(label, count(value), null, "stat-translation")),
  );
}

/** `/api/metrics/activity` with these query parameters (arrays repeat). */
export function activityPath(parameters) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(parameters)) {
    for (const one of Array.isArray(value) ? value : [value]) {
      if (one !== undefined && one !== null && one !== "") query.append(key, String(one));
    }
  }
  const text = query.toString();
  return text ? `/api/metrics/activity?${text}` : "/api/metrics/activity";
}
