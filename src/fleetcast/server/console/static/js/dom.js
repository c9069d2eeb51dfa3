// Building DOM from text nodes and attributes: every value from the API stays text, never markup.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    // CSSOM, not a style attribute: the Content-Security-Policy forbids inline styles.
    else if (key === "style") Object.assign(el.style, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "value") el.value = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

// Re-render a region only when its data changed, so focus and scroll survive polling.
export function renderIfChanged(el, data, build) {
  const key = JSON.stringify(data);
  if (el.dataset.renderKey === key) return;
  el.dataset.renderKey = key;
  replace(el, build(data));
}

const SVG_NS = "http://www.w3.org/2000/svg";
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null) continue;
    if (key === "text") el.textContent = value;
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

// ------------------------------------------------------------------ formatting

export function deviceName(identity, id) {
  const values = Object.values(identity ?? {});
  if (identity && identity.serial) return identity.serial;
  if (values.length) return values.join(" / ");
  return id ? id.slice(0, 8) : "device";
}

export function shortId(id) {
  return id ? id.slice(0, 8) : "";
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export function formatTime(iso) {
  if (!iso) return "never";
  return new Date(iso).toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

export function ago(iso, now = Date.now()) {
  if (!iso) return "never";
  const seconds = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

export function time(iso, { relative = false } = {}) {
  return h("time", { datetime: iso ?? "", title: iso ? formatTime(iso) : null }, relative ? ago(iso) : formatTime(iso));
}

export function duration(seconds) {
  if (!seconds) return "none";
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

// A state or status as a coloured badge; the word is always there (colour is not the only cue).
export function badge(state) {
  return h("span", { class: `badge state-${String(state).replace(/[^a-z-]/g, "")}` }, state);
}

export function progressBar(done, total, label) {
  const percent = total ? Math.round((done / total) * 100) : 0;
  return h(
    "div",
    { class: "progress-wrap" },
    h(
      "div",
      {
        class: "progress",
        role: "progressbar",
        "aria-label": label,
        "aria-valuemin": 0,
        "aria-valuemax": 100,
        "aria-valuenow": percent,
        "aria-valuetext": `${percent}% (${done} of ${total})`,
      },
      h("div", { class: "progress-fill", style: { width: `${percent}%` } }),
    ),
    h("span", { class: "progress-text" }, `${percent}%`),
  );
}

export function table(caption, headers, rows, { empty = "Nothing here yet.", hideCaption = false } = {}) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("caption", { class: hideCaption ? "visually-hidden" : null }, caption),
      h("thead", {}, h("tr", {}, headers.map((title) => h("th", { scope: "col" }, title)))),
      h("tbody", {}, rows),
    ),
  );
}

export function errorBox(error) {
  return h("div", { class: "alert", role: "alert" }, h("strong", {}, "Error: "), error.message ?? String(error));
}
