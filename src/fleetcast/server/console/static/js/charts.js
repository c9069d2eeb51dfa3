// Small hand-written SVG charts. Each has a text alternative: a title and a
// description for assistive technology, and the numbers are in a table nearby.

import { h, s } from "./dom.js";

let chartIds = 0;

function frame(width, height, title, description) {
  chartIds += 1;
  const id = `chart-${chartIds}`;
  return s(
    "svg",
    {
      viewBox: `0 0 ${width} ${height}`,
      class: "chart",
      role: "img",
      "aria-labelledby": `${id}-title ${id}-desc`,
      preserveAspectRatio: "xMinYMin meet",
    },
    s("title", { id: `${id}-title`, text: title }),
    s("desc", { id: `${id}-desc`, text: description }),
  );
}

// Horizontal bars: [{label, value}], longest first as given.
export function barChart(items, { title, unit = "devices" }) {
  const rowHeight = 30;
  const labelWidth = 170;
  const width = 640;
  const height = Math.max(1, items.length) * rowHeight + 8;
  const max = Math.max(1, ...items.map((i) => i.value));
  const description = items.map((i) => `${i.label}: ${i.value} ${unit}`).join("; ") || "no data";
  const svg = frame(width, height, title, description);
  items.forEach((item, index) => {
    const y = index * rowHeight + 4;
    const barWidth = Math.max(2, ((width - labelWidth - 60) * item.value) / max);
    svg.append(
      s("text", { x: labelWidth - 8, y: y + 17, "text-anchor": "end", class: "chart-label", text: item.label }),
      s("rect", { x: labelWidth, y: y + 3, width: barWidth, height: rowHeight - 10, rx: 3, class: `bar bar-${index % 6}` }),
      s("text", { x: labelWidth + barWidth + 6, y: y + 17, class: "chart-value", text: String(item.value) }),
    );
  });
  return svg;
}

// Lines over time: series [{name, className, points: [[t_ms, value], ...]}], y from 0 to max.
export function lineChart(series, { title, max, yLabel = "devices" }) {
  const width = 640;
  const height = 220;
  const pad = { left: 44, right: 12, top: 12, bottom: 28 };
  const all = series.flatMap((line) => line.points);
  const t0 = all.length ? Math.min(...all.map((p) => p[0])) : 0;
  const t1 = all.length ? Math.max(...all.map((p) => p[0])) : 1;
  const span = Math.max(1000, t1 - t0);
  const top = Math.max(1, max ?? Math.max(1, ...all.map((p) => p[1])));
  const x = (t) => pad.left + ((t - t0) / span) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - (v / top) * (height - pad.top - pad.bottom);
  const last = series.map((line) => `${line.name} ${line.points.length ? line.points[line.points.length - 1][1] : 0}`);
  const seconds = Math.round(span / 1000);
  const svg = frame(width, height, title, `Over the last ${seconds} s: ${last.join(", ")} of ${top} ${yLabel}.`);
  for (const fraction of [0, 0.25, 0.5, 0.75, 1]) {
    const value = Math.round(top * fraction);
    svg.append(
      s("line", { x1: pad.left, x2: width - pad.right, y1: y(top * fraction), y2: y(top * fraction), class: "grid" }),
      s("text", { x: pad.left - 6, y: y(top * fraction) + 4, "text-anchor": "end", class: "chart-axis", text: String(value) }),
    );
  }
  svg.append(
    s("text", { x: pad.left, y: height - 8, class: "chart-axis", text: all.length ? new Date(t0).toLocaleTimeString() : "" }),
    s("text", { x: width - pad.right, y: height - 8, "text-anchor": "end", class: "chart-axis", text: all.length ? new Date(t1).toLocaleTimeString() : "" }),
  );
  for (const line of series) {
    if (!line.points.length) continue;
    const points = line.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    svg.append(s("polyline", { points, class: `line ${line.className}` }));
  }
  return svg;
}

export function legend(series) {
  return h(
    "ul",
    { class: "legend", "aria-hidden": "true" },
    series.map((line) => h("li", {}, h("span", { class: `swatch ${line.className}` }), line.name)),
  );
}
