// Live logs: every [data-log-view] on the page follows one of /logs/stream (everything),
// /logs/stream/proxy, /logs/stream/upstream or /logs/stream/<model> — chunked text, its history
// first — with a filter, a pause button and ANSI colours. What is kept is bounded.

import { ansiToHtml } from "./ansi.js";
import { modelPath, responseError, sleep, url } from "./base.js";

const KEPT_LINES = 5000;
const LINE_CHARS = 8000;
const RETRY_MAX = 30000;

function streamPath(source) {
  if (source === "all") return "/logs/stream";
  if (source === "proxy" || source === "upstream") return `/logs/stream/${source}`;
  return `/logs/stream/${modelPath(source)}`;
}

class LogView {
  constructor(root) {
    this.root = root;
    this.panel = root.querySelector("[data-log-panel]");
    this.status = root.querySelector("[data-log-status]");
    this.pauseButton = root.querySelector("[data-log-pause]");
    this.filterInput = root.querySelector("[data-log-filter]");
    this.lines = [];
    this.queued = [];
    this.partial = "";
    this.paused = false;
    this.missed = 0;
    this.filter = "";
    this.frame = 0;
    this.controller = null;

    this.filterInput?.addEventListener("input", () => {
      this.filter = this.filterInput.value.toLowerCase();
      this.renderAll();
    });
    this.pauseButton?.addEventListener("click", () => this.setPaused(!this.paused));
    root.querySelector("[data-log-clear]")?.addEventListener("click", () => {
      this.lines = [];
      this.queued = [];
      this.panel.replaceChildren();
    });
    const select = root.querySelector("[data-log-source]");
    select?.addEventListener("change", () => this.follow(select.value));
    this.follow(select?.value || root.dataset.source);
  }

  setStatus(text) {
    if (this.status) this.status.textContent = text;
  }

  setPaused(paused) {
    this.paused = paused;
    this.pauseButton.textContent = paused ? "Resume" : "Pause";
    this.pauseButton.setAttribute("aria-pressed", String(paused));
    if (paused) {
      this.missed = 0;
      this.setStatus("paused");
    } else {
      this.renderAll();
      this.setStatus("live");
    }
  }

  /** Follow `source` (a new one replaces what is shown), reconnecting when the stream ends. */
  async follow(source) {
    this.controller?.abort();
    const controller = new AbortController();
    this.controller = controller;
    this.root.dataset.source = source;
    let attempt = 0;
    while (!controller.signal.aborted) {
      // Each connection starts with the history again.
      this.lines = [];
      this.queued = [];
      this.partial = "";
      this.panel.replaceChildren();
      try {
        const response = await fetch(url(streamPath(source)), { signal: controller.signal });
        if (!response.ok) throw await responseError(response);
        attempt = 0;
        this.setStatus(this.paused ? "paused" : "live");
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          this.receive(value);
        }
        this.setStatus("reconnecting…");
      } catch (error) {
        if (controller.signal.aborted) return;
        this.setStatus(`unavailable: ${error.message}`);
      }
      attempt += 1;
      try {
        await sleep(Math.min(RETRY_MAX, 500 * 2 ** Math.min(attempt, 6)), controller.signal);
      } catch {
        return;
      }
    }
  }

  receive(text) {
    const pieces = (this.partial + text).split("\n");
    this.partial = pieces.pop();
    if (this.partial.length > LINE_CHARS) {
      pieces.push(this.partial);
      this.partial = "";
    }
    for (const piece of pieces) {
      const line = piece.length > LINE_CHARS ? `${piece.slice(0, LINE_CHARS)}…` : piece;
      this.lines.push(line);
      if (this.paused) this.missed += 1;
      else this.queued.push(line);
    }
    if (this.lines.length > KEPT_LINES) this.lines.splice(0, this.lines.length - KEPT_LINES);
    if (this.paused) {
      this.setStatus(`paused (${this.missed.toLocaleString()} new lines)`);
    } else if (!this.frame) {
      this.frame = requestAnimationFrame(() => this.flush());
    }
  }

  matches(line) {
    return !this.filter || line.toLowerCase().includes(this.filter);
  }

  lineElement(line) {
    const div = document.createElement("div");
    div.className = "log-line";
    div.innerHTML = ansiToHtml(line); // escaped by ansiToHtml
    return div;
  }

  atBottom() {
    const panel = this.panel;
    return panel.scrollTop + panel.clientHeight >= panel.scrollHeight - 8;
  }

  flush() {
    this.frame = 0;
    const follow = this.atBottom();
    const fragment = document.createDocumentFragment();
    for (const line of this.queued.slice(-KEPT_LINES)) {
      if (this.matches(line)) fragment.append(this.lineElement(line));
    }
    this.queued = [];
    this.panel.append(fragment);
    const extra = this.panel.childElementCount - KEPT_LINES;
    for (let i = 0; i < extra; i++) this.panel.firstElementChild.remove();
    if (follow) this.panel.scrollTop = this.panel.scrollHeight;
  }

  renderAll() {
    this.queued = [];
    this.panel.replaceChildren();
    this.queued = [...this.lines];
    this.flush();
    this.panel.scrollTop = this.panel.scrollHeight;
  }
}

for (const root of document.querySelectorAll("[data-log-view]")) new LogView(root);
