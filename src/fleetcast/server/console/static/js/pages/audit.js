// Audit log: every management action (who, what, when, outcome), newest first; read-only.

import { get } from "../api.js";
import { h, replace, table, time } from "../dom.js";
import { badge, pageHeader } from "./common.js";

const PAGE_SIZE = 50;

function row(e) {
  return h(
    "tr",
    {},
    h("td", { class: "nowrap" }, time(e.at)),
    h("td", { title: e.actor_id }, e.actor_name),
    h("th", { scope: "row", class: "mono" }, e.action),
    h("td", { class: "mono small" }, e.target_id ?? "–"),
    h("td", {}, badge(e.outcome === "ok" ? "success" : "failure"), " ", e.outcome),
    h("td", { class: "mono small" }, JSON.stringify(e.details)),
  );
}

export async function render(main) {
  const listEl = h("div");
  const more = h("div");
  const rows = [];
  async function load(before) {
    const page = await get("/audit", { limit: PAGE_SIZE, before });
    rows.push(...page.items.map(row));
    replace(
      listEl,
      table("Audit log", ["When", "Who", "Action", "Target", "Outcome", "Details"], rows, {
        empty: "No management action recorded yet.",
        hideCaption: true,
      }),
    );
    replace(
      more,
      page.next_before === null
        ? null
        : h("button", { type: "button", class: "button subtle", onclick: () => load(page.next_before) }, "Older actions"),
    );
  }
  replace(
    main,
    pageHeader("Audit log"),
    h("p", { class: "muted" }, "Every change made through the management API, by which token. Entries cannot be changed or deleted."),
    listEl,
    more,
  );
  await load(undefined);
}
