// What every page shares: URLs under the page's base path, JSON calls, safe DOM building,
// toasts, tabs, dialogs, the theme and nav toggles, and the one live event stream.
//
// Everything shown that came from a client or a model goes through textContent (via `el`),
// never innerHTML; the one exception is ansi.js, which escapes before it marks up.

/** The path prefix the server computed (X-Forwarded-Prefix or root_path); "" when none. */
export const base = document.documentElement.dataset.base || "";

/** `path` (which starts with "/") under the base path. */
export function url(path) {
  return base + path;
}

/** A model id as path segments: each encoded, the slashes of `peer/model` kept. */
export function modelPath(id) {
  return String(id).split("/").map(encodeURIComponent).join("/");
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

/** The message of an error body in OpenAI's or Anthropic's shape, or a plain one. */
export function errorMessage(data, fallback) {
  const message = data?.error?.message ?? data?.message ?? (typeof data?.error === "string" ? data.error : null);
  return typeof message === "string" && message ? message : fallback;
}

/** Read a failed response's error message. */
export async function responseError(response) {
  const text = await response.text().catch(() => "");
  let data = null;
  try {
    data = JSON.parse(text);
  } catch {
    // not JSON: the text (clipped) is the message
  }
  const fallback = text.slice(0, 300) || `${response.status} ${response.statusText}`.trim();
  return new ApiError(response.status, errorMessage(data, fallback));
}

/**
 * Call a JSON API under the base path. A body is sent as JSON (the only body the control
 * routes take from a browser). Resolves to the parsed answer; rejects with ApiError.
 */
export async function api(path, { method = "GET", body, signal } = {}) {
  const init = { method, signal, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(url(path), init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "trioswap did not answer");
  }
  if (!response.ok) throw await responseError(response);
  const text = await response.text();
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    throw new ApiError(response.status, `${path} did not answer JSON`);
  }
}

/** An element with attributes and children; strings become text nodes (never markup). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Replace `node`'s children, skipping null, undefined and false ones (as `el` does). */
export function fill(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

/** Show in `container` that what it shows cannot be had now (an API missing or failing). */
export function unavailable(container, what, error) {
  const reason = error?.status === 404 ? "not available on this trioswap" : error?.message || "no answer";
  container.replaceChildren(el("p", { class: "muted unavailable", "data-testid": "unavailable" }, `${what} unavailable: ${reason}`));
}

export function toast(message, kind = "info", milliseconds = 6000) {
  const box = document.getElementById("toasts");
  if (!box) return;
  const note = el("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  box.append(note);
  while (box.children.length > 5) box.firstElementChild.remove();
  setTimeout(() => note.remove(), milliseconds);
}

/** JSON kept in localStorage under "trioswap.<key>"; `fallback` when absent or unreadable. */
export const stored = {
  get(key, fallback) {
    try {
      const text = localStorage.getItem(`trioswap.${key}`);
      return text === null ? fallback : JSON.parse(text);
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(`trioswap.${key}`, JSON.stringify(value));
    } catch {
      // storage full or blocked: the choice lasts for this page only
    }
  },
};

/** Resolve after `milliseconds`, or reject when `signal` aborts. */
export function sleep(milliseconds, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, milliseconds);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(new DOMException("aborted", "AbortError"));
    }, { once: true });
  });
}

/** `fn`, called at most once per `milliseconds` (the last call of a burst is kept). */
export function throttle(fn, milliseconds) {
  let timer = null;
  let last = 0;
  return (...args) => {
    const wait = last + milliseconds - Date.now();
    clearTimeout(timer);
    if (wait <= 0) {
      last = Date.now();
      fn(...args);
    } else {
      timer = setTimeout(() => {
        last = Date.now();
        fn(...args);
      }, wait);
    }
  };
}

// Live events. /api/events sends llama-swap's envelopes, {"type": T, "data": D} with D a JSON
// string; each is dispatched on <body> as the DOM event "ts:T" with D parsed as its detail, so
// htmx can trigger on it ("ts:modelStatus from:body") and modules can `on("modelStatus", ...)`.
// While the stream is down, "ts:poll" fires every 2 s instead, so pages poll as a fallback.
const EVENT_PREFIX = "ts:";
const POLL_EVERY = 2000;
const RETRY_MAX = 30000;

export function emit(type, detail) {
  document.body.dispatchEvent(new CustomEvent(EVENT_PREFIX + type, { detail }));
}

export function on(type, handler) {
  document.body.addEventListener(EVENT_PREFIX + type, (event) => handler(event.detail));
}

function startEvents() {
  const badge = document.getElementById("connection");
  let source = null;
  let failures = 0;
  let pollTimer = null;

  const show = (state, text) => {
    if (badge) {
      badge.dataset.state = state;
      badge.textContent = text;
    }
  };
  const poll = (on) => {
    if (on && pollTimer === null) pollTimer = setInterval(() => emit("poll"), POLL_EVERY);
    if (!on && pollTimer !== null) {
      clearInterval(pollTimer);
      pollTimer = null;
    }
  };
  const receive = (message) => {
    let envelope;
    try {
      envelope = JSON.parse(message.data);
    } catch {
      return;
    }
    const type = envelope?.type;
    if (typeof type !== "string" || !/^[A-Za-z]{1,40}$/.test(type)) return;
    let data = envelope.data;
    if (typeof data === "string") {
      try {
        data = JSON.parse(data);
      } catch {
        // a plain string payload stays a string
      }
    }
    emit(type, data);
    // Some events were lost: what pages follow is read again.
    if (type === "dropped") emit("refresh");
  };
  const connect = () => {
    source = new EventSource(url("/api/events"));
    source.onopen = () => {
      failures = 0;
      poll(false);
      show("live", "live");
      emit("refresh");
    };
    source.onmessage = receive;
    source.onerror = () => {
      source.close();
      failures += 1;
      show("polling", "polling");
      poll(true);
      setTimeout(connect, Math.min(RETRY_MAX, 1000 * 2 ** Math.min(failures, 5)));
    };
  };
  window.addEventListener("pagehide", () => source?.close());
  connect();
}

function startTabs() {
  for (const list of document.querySelectorAll('[role="tablist"]')) {
    const tabs = () => [...list.querySelectorAll('[role="tab"]')].filter((tab) => !tab.hidden);
    const select = (chosen) => {
      for (const tab of list.querySelectorAll('[role="tab"]')) {
        const selected = tab === chosen;
        tab.setAttribute("aria-selected", String(selected));
        tab.tabIndex = selected ? 0 : -1;
        const panel = document.getElementById(tab.getAttribute("aria-controls"));
        if (panel) panel.hidden = !selected;
      }
      list.dispatchEvent(new CustomEvent("tabchange", { detail: chosen }));
    };
    list.addEventListener("click", (event) => {
      const tab = event.target.closest('[role="tab"]');
      if (tab && list.contains(tab)) select(tab);
    });
    list.addEventListener("keydown", (event) => {
      if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
      const all = tabs();
      const index = all.indexOf(document.activeElement);
      if (index < 0) return;
      const next = all[(index + (event.key === "ArrowRight" ? 1 : all.length - 1)) % all.length];
      next.focus();
      select(next);
    });
    list.selectTab = select;
  }
}

function startDialogs() {
  document.addEventListener("click", (event) => {
    const closer = event.target.closest("dialog [data-close]");
    if (closer) closer.closest("dialog").close();
    // A click on the backdrop lands on the dialog element itself.
    if (event.target instanceof HTMLDialogElement) {
      const box = event.target.getBoundingClientRect();
      const inside = event.clientX >= box.left && event.clientX <= box.right && event.clientY >= box.top && event.clientY <= box.bottom;
      if (!inside) event.target.close();
    }
  });
}

/** Whether the page is dark now (chosen, or the system's preference). */
export function isDark() {
  const chosen = document.documentElement.dataset.theme;
  if (chosen) return chosen === "dark";
  return window.matchMedia("(prefers-color-scheme: dark)").matches;
}

function startToggles() {
  document.getElementById("theme-toggle")?.addEventListener("click", () => {
    const theme = isDark() ? "light" : "dark";
    document.documentElement.dataset.theme = theme;
    try {
      localStorage.setItem("trioswap.theme", theme);
    } catch {
      // the choice lasts for this page only
    }
    emit("theme", theme);
  });
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => emit("theme"));
  const toggle = document.getElementById("nav-toggle");
  const nav = document.getElementById("nav");
  toggle?.addEventListener("click", () => {
    const open = nav.classList.toggle("open");
    toggle.setAttribute("aria-expanded", String(open));
  });
}

startTabs();
startDialogs();
startToggles();
startEvents();
