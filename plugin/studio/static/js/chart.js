// A line chart as inline SVG: a few series of [time, value] points over a shared time window.

import { h, s } from "./dom.js";

export const COLORS = ["#0b63c5", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#bc4c00"];

/** A round number ≥ value for the top of the y axis (1, 2, 5 × 10^n). */
export function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

function format(value) {
  if (Number.isInteger(value)) return String(value);
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1);
  return String(Math.round(value * 100) / 100);
}

/**
 * `series`: [{name, points: [[t, v], ...], color?}] (t in seconds, null values skipped); `span`: seconds shown,
 * ending at the latest point. Returns a figure with the SVG and a legend.
 */
export function lineChart(title, series, { unit = "", span: most = 120 } = {}) {
  const width = 360, height = 130, left = 40, right = 6, top = 8, bottom = 18;
  const all = series.flatMap((x) => x.points.filter(([, v]) => v !== null && Number.isFinite(v)));
  const end = all.length ? Math.max(...all.map(([t]) => t)) : 0;
  const first = all.length ? Math.min(...all.map(([t]) => t)) : 0;
  // The window grows with the history, from 30 s up to `most`, so a fresh chart is not one point at its edge.
  const span = Math.min(most, Math.max(30, Math.ceil((end - first) / 10) * 10));
  const start = end - span;
  const top_ = niceMax(Math.max(0, ...all.map(([, v]) => v)));
  const x = (t) => left + ((t - start) / span) * (width - left - right);
  const y = (v) => top + (1 - v / top_) * (height - top - bottom);
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none",
    role: "img", "aria-label": title },
  s("line", { class: "axis", x1: left, y1: y(0), x2: width - right, y2: y(0) }),
  s("line", { class: "axis", x1: left, y1: y(top_), x2: width - right, y2: y(top_) }),
  s("text", { x: left - 4, y: y(top_) + 8, "text-anchor": "end" }, format(top_)),
  s("text", { x: left - 4, y: y(0), "text-anchor": "end" }, "0"),
  s("text", { x: width - right, y: height - 4, "text-anchor": "end" }, "now"),
  s("text", { x: left, y: height - 4 }, `-${span}s`));
  series.forEach((one, i) => {
    const points = one.points.filter(([t, v]) => t >= start && v !== null && Number.isFinite(v));
    if (!points.length) return;
    const color = one.color || COLORS[i % COLORS.length];
    svg.append(s("polyline", { stroke: color, "data-series": one.name,
      points: points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ") }));
    const [lastT, lastV] = points[points.length - 1];  // a dot on the latest value: one sample is a line of none
    svg.append(s("circle", { cx: x(lastT).toFixed(1), cy: y(lastV).toFixed(1), r: 2.5, fill: color }));
  });
  const legend = h("div", { class: "legend" }, series.map((one, i) => {
    const swatch = h("i", {});
    swatch.style.background = one.color || COLORS[i % COLORS.length];
    const last = one.points.length ? one.points[one.points.length - 1][1] : null;
    return h("span", {}, swatch, one.name, last === null || last === undefined ? "" : ` ${format(last)}${unit}`);
  }));
  return h("figure", { class: "card", "data-chart": title }, h("h3", {}, title), svg, legend);
}
