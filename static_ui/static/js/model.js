// A model's page: its recent activity and summary (the details and state are server-rendered,
// the live log comes from logs.js).

import { COLUMNS, activityPath, renderStats, rowOf } from "./activity-table.js";
import { api, el, on, throttle, unavailable } from "./base.js";
import "./logs.js";

const model = document.getElementById("model-page").dataset.model;
const columns = COLUMNS.filter((c) => c.visible && c.id !== "model" && c.id !== "capture");
const head = document.getElementById("model-activity-head");
const rows = document.getElementById("model-activity-rows");
const stats = document.getElementById("model-stats");

head.replaceChildren(...columns.map((c) => el("th", { class: c.num ? "num" : null, scope: "col" }, c.label)));

async function load() {
  try {
    renderStats(stats, await api(`/api/metrics/stats?model=${encodeURIComponent(model)}`));
  } catch (error) {
    unavailable(stats, "Statistics", error);
  }
  try {
    const answer = await api(activityPath({ model, limit: 25, page: 1, sort: "id", order: "desc" }));
    const entries = answer?.data ?? [];
    rows.replaceChildren(...entries.map((entry) => rowOf(entry, columns)));
    if (entries.length === 0) rows.append(el("tr", {}, el("td", { colspan: columns.length, class: "empty" }, "No requests for this model yet.")));
  } catch (error) {
    const td = el("td", { colspan: columns.length });
    unavailable(td, "Activity", error);
    rows.replaceChildren(el("tr", {}, td));
  }
}

const refresh = throttle(load, 2000);
on("activity", refresh);
on("poll", refresh);
on("refresh", refresh);
load();
