// Time-series charts with the vendored uPlot (loaded as a classic script: window.uPlot).
// A chart follows its container's width and the page's theme.

import { el, isDark, on } from "./base.js";

const PALETTE = ["#2f8f5f", "#3b7dd8", "#d8893b", "#b05cc8", "#c84b4b", "#3bb3b3", "#8a8f3b", "#7a6bd8"];

function axisColors() {
  const style = getComputedStyle(document.documentElement);
  return {
    text: style.getPropertyValue("--muted").trim() || (isDark() ? "#9aa3ae" : "#5d6673"),
    grid: style.getPropertyValue("--border").trim() || (isDark() ? "#30353c" : "#d8dce2"),
  };
}

/**
 * A line chart in `container` with one line per label. `setData(times, ...columns)` takes
 * seconds since the epoch (ascending) and one array of values per line (null: unknown).
 */
export function timeChart(container, labels, { unit = "" } = {}) {
  if (typeof window.uPlot !== "function") {
    container.replaceChildren(el("p", { class: "muted unavailable" }, "charts unavailable (uPlot did not load)"));
    return { setData() {}, setLabels() {} };
  }
  let names = labels;
  let data = [[], ...names.map(() => [])];
  let plot = null;

  const build = () => {
    plot?.destroy();
    container.replaceChildren();
    const colors = axisColors();
    const axis = { stroke: colors.text, grid: { stroke: colors.grid, width: 1 }, ticks: { stroke: colors.grid } };
    plot = new window.uPlot(
      {
        width: Math.max(200, container.clientWidth),
        height: 200,
        series: [
          {},
          ...names.map((label, i) => ({
            label,
            stroke: PALETTE[i % PALETTE.length],
            width: 1.5,
            points: { show: true, size: 4 },
            value: (_, v) => (v === null || v === undefined ? "—" : `${Number(v).toFixed(1)}${unit}`),
          })),
        ],
        axes: [axis, { ...axis, size: 55 }],
        scales: { x: { time: true } },
        legend: { live: true },
      },
      data,
      container,
    );
  };

  new ResizeObserver(() => plot?.setSize({ width: Math.max(200, container.clientWidth), height: 200 })).observe(container);
  on("theme", build);
  build();
  return {
    setData(times, ...columns) {
      data = [times, ...columns];
      plot.setData(data);
    },
    /** New lines (e.g. another GPU): the chart is built again. */
    setLabels(newLabels) {
      if (newLabels.length === names.length && newLabels.every((label, i) => label === names[i])) return;
      names = newLabels;
      data = [[], ...names.map(() => [])];
      build();
    },
  };
}
