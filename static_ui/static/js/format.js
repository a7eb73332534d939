// How numbers, times and sizes read. Unknown (null, undefined, negative speeds) reads "—".

export const UNKNOWN = "—";

const known = (value) => typeof value === "number" && Number.isFinite(value);

export function count(value) {
  return known(value) ? value.toLocaleString() : UNKNOWN;
}

/** Tokens per second: unknown unless positive. */
export function speed(value) {
  return known(value) && value > 0 ? `${value.toFixed(1)} t/s` : UNKNOWN;
}

export function milliseconds(value) {
  if (!known(value) || value < 0) return UNKNOWN;
  if (value < 1000) return `${Math.round(value)} ms`;
  if (value < 60000) return `${(value / 1000).toFixed(value < 10000 ? 2 : 1)} s`;
  const minutes = Math.floor(value / 60000);
  const seconds = Math.round((value % 60000) / 1000);
  return `${minutes}m ${seconds}s`;
}

export function bytes(value) {
  if (!known(value) || value < 0) return UNKNOWN;
  if (value < 1024) return `${value} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let amount = value / 1024;
  let unit = 0;
  while (amount >= 1024 && unit < units.length - 1) {
    amount /= 1024;
    unit += 1;
  }
  return `${amount.toFixed(amount >= 10 ? 1 : 2)} ${units[unit]}`;
}

/** Milliseconds since the epoch of an RFC 3339 time (any number of fraction digits), or NaN. */
export function parseTime(text) {
  if (typeof text !== "string") return NaN;
  // Date.parse reads at most milliseconds; Go and Python write up to nanoseconds.
  return Date.parse(text.replace(/(\.\d{3})\d+/, "$1"));
}

const pad = (n) => String(n).padStart(2, "0");

/** "2026-11-26 14:03:09", local time. */
export function absoluteTime(text) {
  const time = parseTime(text);
  if (Number.isNaN(time)) return UNKNOWN;
  const d = new Date(time);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** "12s ago", "5m ago", "3h ago", or the date when older than a day. */
export function relativeTime(text, now = Date.now()) {
  const time = parseTime(text);
  if (Number.isNaN(time)) return UNKNOWN;
  const seconds = Math.max(0, Math.round((now - time) / 1000));
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ago`;
  return absoluteTime(text);
}
