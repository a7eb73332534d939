// The models table's buttons and filter. The rows themselves are server-rendered and refreshed
// by htmx (models_table.html) on every model event, or every 2 s while events are down.
//
// Load = a GET under /upstream/<model>/, which starts the model and answers once it is ready.

import { api, emit, modelPath, responseError, toast, url } from "./base.js";

// Models whose load is under way from this page: their buttons stay disabled across refreshes.
const loading = new Set();

function rowsOf(model) {
  return [...document.querySelectorAll('[data-testid="model-row"]')].filter((row) => row.dataset.model === model);
}

function markLoading() {
  for (const model of loading) {
    for (const row of rowsOf(model)) {
      const button = row.querySelector('[data-action="load"]');
      if (button) button.disabled = true;
    }
  }
}

async function load(model) {
  loading.add(model);
  markLoading();
  emit("refresh");
  try {
    const response = await fetch(url(`/upstream/${modelPath(model)}/health`));
    // Any answer from the model server means it runs; trioswap's own failures are 5xx.
    if (response.status >= 500) throw await responseError(response);
    toast(`${model} is loaded`, "ok");
  } catch (error) {
    toast(`${model} did not load: ${error.message}`, "error", 12000);
  } finally {
    loading.delete(model);
    emit("refresh");
  }
}

async function unload(model) {
  try {
    const path = model === null ? "/api/models/unload" : `/api/models/unload/${modelPath(model)}`;
    emit("refresh");
    await api(path, { method: "POST" });
    toast(model === null ? "Every model is unloaded" : `${model} is unloaded`, "ok");
  } catch (error) {
    toast(`Unload failed: ${error.message}`, "error", 12000);
  } finally {
    emit("refresh");
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button || button.disabled) return;
  const action = button.dataset.action;
  if (action === "load") load(button.dataset.model);
  else if (action === "unload") {
    button.disabled = true;
    unload(button.dataset.model);
  } else if (action === "unload-all") unload(null);
});

const filter = document.getElementById("models-filter");

function applyFilter() {
  if (!filter) return;
  const wanted = filter.value.trim().toLowerCase();
  for (const row of document.querySelectorAll('[data-testid="model-row"]')) {
    row.hidden = wanted !== "" && !row.textContent.toLowerCase().includes(wanted);
  }
}

filter?.addEventListener("input", applyFilter);
document.body.addEventListener("htmx:afterSettle", () => {
  markLoading();
  applyFilter();
});
