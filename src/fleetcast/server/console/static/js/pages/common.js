// Pieces several pages share.

import { badge, h, progressBar } from "../dom.js";

export const FINAL_STATES = ["success", "already-installed", "failure", "aborted", "skipped"];

export function finishedCount(counts) {
  return FINAL_STATES.reduce((sum, state) => sum + (counts[state] ?? 0), 0);
}

export function deploymentProgress(d) {
  return progressBar(finishedCount(d.counts), d.total, `Progress of ${d.name}`);
}

export function pageHeader(title, ...extra) {
  return h("div", { class: "page-header" }, h("h1", {}, title), h("div", { class: "page-actions" }, extra));
}

export function section(title, id, ...children) {
  return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, title), children);
}

export function stat(label, value, { href, kind } = {}) {
  const body = [h("span", { class: "stat-value" }, String(value)), h("span", { class: "stat-label" }, label)];
  return href
    ? h("a", { class: `stat ${kind ? `stat-${kind}` : ""}`, href }, body)
    : h("div", { class: `stat ${kind ? `stat-${kind}` : ""}` }, body);
}

export function readOnlyNote() {
  return h("p", { class: "note" }, "You are logged in with a read-only token: you can look, not change.");
}

export { badge };
