// The Settings page: each model's prompt-optimization policy and context size, read from and
// saved through /api/model/<m>/prompt-optimization and /api/model/<m>/ctxsize, and its latest
// optimization snapshot (/api/model/<m>/prompt-optimization/latest).

import { ApiError, api, el, fill, modelPath, on, throttle, toast } from "./base.js";
import { UNKNOWN, count } from "./format.js";

// Rows are read a few at a time: a config (or an Ollama) can list hundreds of models.
const PARALLEL = 4;

const rows = new Map(
  [...document.querySelectorAll('[data-testid="settings-row"]')].map((row) => [row.dataset.model, row]),
);
const field = (row, name) => row.querySelector(`[data-field="${name}"]`);
const apiPath = (model, rest) => `/api/model/${modelPath(model)}/${rest}`;

function showPolicy(row, view) {
  const select = row.querySelector('[data-testid="policy-select"]');
  select.value = view.source === "runtime" ? view.policy : "";
  select.disabled = false;
  select.dataset.saved = select.value;
  field(row, "policy-status").textContent = view.source === "runtime" ? "set here" : `now ${view.policy}`;
}

function showContext(row, view) {
  const input = row.querySelector('[data-testid="ctx-input"]');
  const buttons = row.querySelectorAll("[data-action]");
  input.value = view.ctxSize ?? "";
  input.placeholder = view.configured ? String(view.configured) : "unknown";
  const readOnly = Boolean(view.readOnly);
  input.disabled = readOnly;
  for (const button of buttons) {
    button.disabled = readOnly;
    button.hidden = readOnly;
  }
  const source = view.source ? ` (${view.source})` : "";
  field(row, "ctx-status").textContent = readOnly ? `set by Ollama${source}` : view.ctxSize ? `${count(view.ctxSize)}${source}` : "not set";
}

const snapshots = new Map();

function showSnapshot(row, snapshot) {
  const cell = field(row, "snapshot");
  if (!snapshot) {
    cell.replaceChildren(el("span", { class: "muted small" }, "none yet"));
    return;
  }
  snapshots.set(row.dataset.model, snapshot);
  const tokens = snapshot.tokens ?? {};
  cell.replaceChildren(
    el("span", { "data-testid": "snapshot-tokens" }, `${count(tokens.before)} → ${count(tokens.after)} tokens`),
    " ",
    el("span", { class: "muted small" }, tokens.budget ? `budget ${count(tokens.budget)}` : ""),
    " ",
    el("button", { type: "button", class: "btn", "data-action": "snapshot-show", "data-testid": "snapshot-show" }, "Details"),
  );
}

function showError(row, name, error) {
  field(row, name).textContent = error.status === 404 ? "unavailable" : `unavailable: ${error.message}`;
}

async function loadRow(model, row) {
  await Promise.all([
    api(apiPath(model, "prompt-optimization")).then((view) => showPolicy(row, view), (error) => showError(row, "policy-status", error)),
    api(apiPath(model, "ctxsize")).then((view) => showContext(row, view), (error) => showError(row, "ctx-status", error)),
    loadSnapshot(model, row),
  ]);
}

async function loadSnapshot(model, row) {
  try {
    showSnapshot(row, await api(apiPath(model, "prompt-optimization/latest")));
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) showSnapshot(row, null);
    else field(row, "snapshot").replaceChildren(el("span", { class: "muted small" }, `unavailable: ${error.message}`));
  }
}

async function loadAll() {
  const queue = [...rows.entries()];
  const worker = async () => {
    while (queue.length) {
      const [model, row] = queue.shift();
      await loadRow(model, row);
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
}

document.addEventListener("change", async (event) => {
  const select = event.target.closest('[data-testid="policy-select"]');
  if (!select) return;
  const row = select.closest('[data-testid="settings-row"]');
  const model = row.dataset.model;
  select.disabled = true;
  try {
    showPolicy(row, await api(apiPath(model, "prompt-optimization"), { method: "POST", body: { policy: select.value || null } }));
    toast(`${model}: prompt optimization ${select.value || "as configured"}`, "ok");
  } catch (error) {
    select.value = select.dataset.saved ?? "";
    select.disabled = false;
    toast(`${model}: ${error.message}`, "error", 10000);
  }
});

async function saveContext(row, size) {
  const model = row.dataset.model;
  for (const control of row.querySelectorAll('[data-testid="ctx-input"], [data-action^="ctx"]')) control.disabled = true;
  try {
    const view = await api(apiPath(model, "ctxsize"), { method: "POST", body: { ctxSize: size } });
    showContext(row, view);
    const restart = view.restart && typeof view.restart !== "object" ? ` (restart: ${view.restart})` : "";
    toast(`${model}: context size ${size === null ? "as configured" : count(size)}${restart}`, "ok");
  } catch (error) {
    toast(`${model}: ${error.message}`, "error", 10000);
    for (const control of row.querySelectorAll('[data-testid="ctx-input"], [data-action^="ctx"]')) control.disabled = false;
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-action]");
  if (!button) return;
  const row = button.closest('[data-testid="settings-row"]');
  if (!row) return;
  if (button.dataset.action === "ctx-apply") {
    const value = row.querySelector('[data-testid="ctx-input"]').value.trim();
    const size = Number(value);
    if (!value || !Number.isInteger(size) || size < 1) {
      toast("A context size is a whole number of tokens", "error");
      return;
    }
    saveContext(row, size);
  } else if (button.dataset.action === "ctx-reset") {
    saveContext(row, null);
  } else if (button.dataset.action === "snapshot-show") {
    openSnapshot(row.dataset.model);
  }
});

function pair(label, value) {
  return [el("dt", {}, label), el("dd", {}, value === undefined || value === null || value === "" ? UNKNOWN : String(value))];
}

function openSnapshot(model) {
  const snapshot = snapshots.get(model);
  if (!snapshot) return;
  const tokens = snapshot.tokens ?? {};
  const actions = Array.isArray(snapshot.actions) ? snapshot.actions : [];
  const body = (name) => {
    const value = snapshot[name];
    if (value === undefined) return null;
    const text = value?.truncated ? `${value.json}\n… (${count(value.chars)} characters in all)` : JSON.stringify(value, null, 2);
    return el("details", {}, el("summary", {}, name === "request" ? "Request as sent" : "Request as optimized"), el("pre", { class: "block" }, text));
  };
  document.getElementById("snapshot-title").textContent = `Latest optimization: ${model}`;
  fill(
    document.getElementById("snapshot-body"),
    el(
      "dl",
      { class: "details" },
      pair("Policy", snapshot.policy),
      pair("Tokens before", count(tokens.before)),
      pair("Tokens after", count(tokens.after)),
      pair("Budget", count(tokens.budget)),
      pair("Window", count(tokens.window)),
      pair("Window from", tokens.windowSource),
      pair("Counted by", tokens.counter),
    ),
    el("h3", {}, "Actions"),
    actions.length
      ? el("ul", { "data-testid": "snapshot-actions" }, actions.map((a) => el("li", {}, typeof a === "string" ? a : JSON.stringify(a))))
      : el("p", { class: "muted" }, "none: the prompt fitted"),
    body("request"),
    body("optimized"),
  );
  document.getElementById("snapshot-dialog").showModal();
}

const filter = document.getElementById("settings-filter");
filter?.addEventListener("input", () => {
  const wanted = filter.value.trim().toLowerCase();
  for (const [model, row] of rows) row.hidden = wanted !== "" && !model.toLowerCase().includes(wanted);
});

// A finished request may have left a new snapshot: the rows shown (a bounded number) are read
// again, at most every few seconds. An optimizer event naming its model reads just that row.
const REFRESHED_ROWS = 50;
const refreshSnapshots = throttle(() => {
  const shown = [...rows].filter(([, row]) => !row.hidden).slice(0, REFRESHED_ROWS);
  for (const [model, row] of shown) loadSnapshot(model, row);
}, 5000);
on("optimizer", (data) => {
  const row = rows.get(data?.model);
  if (row) loadSnapshot(data.model, row);
  else refreshSnapshots();
});
on("activity", refreshSnapshots);
on("poll", refreshSnapshots);

loadAll();
