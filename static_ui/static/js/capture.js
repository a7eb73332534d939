// The capture viewer: /api/captures/{id} in a dialog — request and response (headers, body
// pretty-printed when it is JSON) and, for a stream, the reply rebuilt as text, reasoning and
// tool calls. Bodies are shown as text, clipped; nothing in them is markup.

import { api, el, fill, unavailable } from "./base.js";

const SHOWN_CHARS = 1 << 20;

const dialog = document.getElementById("capture-dialog");
const panels = {
  request: document.getElementById("panel-capture-request"),
  response: document.getElementById("panel-capture-response"),
  rebuilt: document.getElementById("panel-capture-rebuilt"),
};

/** A captured body as text: trioswap's `*_text` when given, else the base64 bytes as UTF-8. */
function bodyText(text, base64) {
  if (typeof text === "string") return text;
  if (typeof base64 !== "string" || base64 === "") return "";
  try {
    const binary = atob(base64);
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    return new TextDecoder("utf-8").decode(bytes);
  } catch {
    return "(a body that is not text)";
  }
}

function pretty(text) {
  const trimmed = text.trim();
  if (trimmed.startsWith("{") || trimmed.startsWith("[")) {
    try {
      return JSON.stringify(JSON.parse(trimmed), null, 2);
    } catch {
      // not JSON after all: as it came
    }
  }
  return text;
}

function block(text, testid) {
  const clipped = text.length > SHOWN_CHARS ? `${text.slice(0, SHOWN_CHARS)}\n… (${(text.length - SHOWN_CHARS).toLocaleString()} more characters)` : text;
  return el("pre", { class: "block", "data-testid": testid }, clipped || "(empty)");
}

function headersTable(headers) {
  const entries = Object.entries(headers || {});
  if (entries.length === 0) return el("p", { class: "muted small" }, "no headers");
  return el(
    "div",
    { class: "table-wrap" },
    el("table", { class: "table small" }, el("tbody", {}, entries.map(([name, value]) => el("tr", {}, el("th", { class: "mono" }, name), el("td", { class: "mono" }, Array.isArray(value) ? value.join(", ") : String(value)))))),
  );
}

function show(capture) {
  const requestBody = bodyText(capture.req_text, capture.req_body);
  panels.request.replaceChildren(
    el("p", { class: "mono" }, `${capture.method || ""} ${capture.req_path || ""}`.trim()),
    el("h3", {}, "Headers"),
    headersTable(capture.req_headers),
    el("h3", {}, "Body", capture.req_truncated ? " (truncated)" : ""),
    block(pretty(requestBody), "capture-request-body"),
  );
  const responseBody = bodyText(capture.resp_text, capture.resp_body);
  panels.response.replaceChildren(
    el("p", { class: "mono" }, capture.resp_status ? `status ${capture.resp_status}` : "", capture.complete === false ? " (still streaming)" : ""),
    el("h3", {}, "Headers"),
    headersTable(capture.resp_headers),
    el("h3", {}, "Body", capture.resp_truncated ? " (truncated)" : ""),
    block(pretty(responseBody), "capture-response-body"),
  );
  const rebuilt = capture.rebuilt;
  if (rebuilt && typeof rebuilt === "object") {
    const calls = Array.isArray(rebuilt.tool_calls) ? rebuilt.tool_calls : [];
    fill(
      panels.rebuilt,
      rebuilt.reasoning ? el("h3", {}, "Reasoning") : null,
      rebuilt.reasoning ? block(String(rebuilt.reasoning), "capture-rebuilt-reasoning") : null,
      el("h3", {}, "Text"),
      block(String(rebuilt.text ?? ""), "capture-rebuilt-text"),
      calls.length ? el("h3", {}, "Tool calls") : null,
      calls.length ? block(JSON.stringify(calls, null, 2), "capture-rebuilt-tool-calls") : null,
    );
  } else {
    panels.rebuilt.replaceChildren(el("p", { class: "muted" }, "No rebuilt reply for this capture."));
  }
}

export async function openCapture(id) {
  document.getElementById("capture-title").textContent = `Capture ${id}`;
  for (const panel of Object.values(panels)) panel.replaceChildren(el("p", { class: "muted" }, "loading…"));
  document.querySelector('[data-tabs="capture"]').selectTab?.(document.getElementById("tab-capture-request"));
  dialog.showModal();
  try {
    show(await api(`/api/captures/${encodeURIComponent(id)}`));
  } catch (error) {
    for (const panel of Object.values(panels)) unavailable(panel, "This capture", error);
  }
}
