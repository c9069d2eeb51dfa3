// Devices: search and filters (kept in the URL), pending devices to accept or reject, the list.

import { get, post, session } from "../api.js";
import { ago, badge, deviceName, h, renderIfChanged, replace, table } from "../dom.js";
import { pageHeader, readOnlyNote, section } from "./common.js";

const PAGE = 50;
const FILTERS = ["q", "status", "device_type", "tag", "artifact_version", "attribute", "online"];

function field(id, label, control) {
  return h("div", { class: "field" }, h("label", { for: id }, label), control);
}

function select(id, value, options) {
  return h(
    "select",
    { id, name: id },
    options.map(([optionValue, text]) => h("option", { value: optionValue, selected: optionValue === value }, text)),
  );
}

export async function render(main, _params, query, { poll, announce, toast, navigate }) {
  const summary = await get("/fleet/summary");
  const value = (name) => query.get(name) ?? "";
  const offset = Number(query.get("offset") ?? 0) || 0;

  const form = h(
    "form",
    {
      class: "filters",
      role: "search",
      "aria-label": "Filter devices",
      onsubmit: (event) => {
        event.preventDefault();
        const data = new FormData(event.target);
        const next = new URLSearchParams();
        for (const name of FILTERS) {
          const v = String(data.get(name) ?? "").trim();
          if (v) next.set(name, v);
        }
        navigate(`#/devices?${next}`);
      },
    },
    field("q", "Search", h("input", { id: "q", name: "q", type: "search", value: value("q"), placeholder: "serial or id" })),
    field(
      "status",
      "Status",
      select("status", value("status"), [
        ["", "any"],
        ["pending", "pending"],
        ["accepted", "accepted"],
        ["preauthorized", "preauthorized"],
        ["rejected", "rejected"],
        ["decommissioned", "decommissioned"],
      ]),
    ),
    field("online", "Connectivity", select("online", value("online"), [["", "any"], ["true", "online"], ["false", "offline"]])),
    field(
      "device_type",
      "Device type",
      select("device_type", value("device_type"), [["", "any"], ...summary.device_types.map((t) => [t.device_type, t.device_type])]),
    ),
    field(
      "artifact_version",
      "Version",
      select("artifact_version", value("artifact_version"), [
        ["", "any"],
        ...[...new Set(summary.versions.map((v) => v.artifact_version).filter(Boolean))].map((v) => [v, v]),
      ]),
    ),
    field("tag", "Tag", h("input", { id: "tag", name: "tag", value: value("tag") })),
    field("attribute", "Attribute", h("input", { id: "attribute", name: "attribute", value: value("attribute"), placeholder: "key=value" })),
    h(
      "div",
      { class: "field buttons" },
      h("button", { type: "submit", class: "button primary" }, "Filter"),
      h("a", { class: "button subtle", href: "#/devices" }, "Clear"),
    ),
  );

  const status = h("div");
  const pending = h("div");
  const list = h("div");
  const pager = h("nav", { class: "pager", "aria-label": "Pages of devices" });
  replace(
    main,
    pageHeader("Devices"),
    session.canWrite ? null : readOnlyNote(),
    status,
    pending,
    section("Find devices", "search-title", form),
    h("section", { class: "card", "aria-labelledby": "list-title" }, h("h2", { id: "list-title" }, "Matching devices"), list, pager),
  );

  async function decide(device, action) {
    const name = deviceName(device.identity, device.id);
    await post(`/devices/${device.id}/${action}`);
    const verb = action === "accept" ? "accepted" : "rejected";
    announce(`${name} ${verb}.`);
    toast(`${name} ${verb}.`, "success");
    await tick();
  }

  async function tick() {
    const params = { limit: PAGE, offset };
    for (const name of FILTERS) if (value(name)) params[name] = value(name);
    const [waiting, page] = await Promise.all([get("/devices", { status: "pending", limit: 100 }), get("/devices", params)]);
    renderIfChanged(pending, waiting.items, (items) =>
      items.length
        ? section(
            `Waiting for acceptance (${waiting.total})`,
            "pending-title",
            table(
              "Devices waiting for acceptance",
              ["Device", "Type", "Identity", "First contact", session.canWrite ? "Decision" : null].filter(Boolean),
              items.map((d) => {
                const name = deviceName(d.identity, d.id);
                return h(
                  "tr",
                  {},
                  h("th", { scope: "row" }, h("a", { href: `#/devices/${d.id}` }, name)),
                  h("td", {}, d.device_type),
                  h("td", { class: "mono small" }, Object.entries(d.identity).map(([k, v]) => `${k}=${v}`).join(", ")),
                  h("td", {}, ago(d.created_at)),
                  session.canWrite
                    ? h(
                        "td",
                        { class: "actions" },
                        h("button", { type: "button", class: "button primary small", "aria-label": `Accept ${name}`, onclick: () => decide(d, "accept").catch((e) => toast(e.message, "error")) }, "Accept"),
                        h("button", { type: "button", class: "button danger small", "aria-label": `Reject ${name}`, onclick: () => decide(d, "reject").catch((e) => toast(e.message, "error")) }, "Reject"),
                      )
                    : null,
                );
              }),
              { hideCaption: true },
            ),
          )
        : null,
    );
    renderIfChanged(list, { items: page.items, total: page.total }, ({ items, total }) => [
      h("p", { class: "muted small", id: "device-count" }, total === 1 ? "1 device matches." : `${total} devices match.`),
      table(
        "Devices matching the filters",
        ["Device", "Status", "Type", "Version", "Tags", "Last seen"],
        items.map((d) =>
          h(
            "tr",
            {},
            h("th", { scope: "row" }, h("a", { href: `#/devices/${d.id}` }, deviceName(d.identity, d.id))),
            h("td", {}, badge(d.status)),
            h("td", {}, d.device_type),
            h("td", {}, d.artifact_version ?? h("span", { class: "muted" }, "unknown")),
            h("td", {}, d.tags.map((t) => h("span", { class: "tag" }, t))),
            h("td", {}, presence(d, summary.online_within)),
          ),
        ),
        { empty: "No device matches these filters.", hideCaption: true },
      ),
    ]);
    const link = (label, to, rel) => {
      const next = new URLSearchParams(query);
      next.set("offset", String(to));
      return h("a", { class: "button subtle small", href: `#/devices?${next}`, rel }, label);
    };
    replace(
      pager,
      offset > 0 ? link("Previous", Math.max(0, offset - PAGE), "prev") : null,
      page.total > PAGE ? h("span", { class: "muted small" }, `${offset + 1}–${Math.min(offset + PAGE, page.total)} of ${page.total}`) : null,
      offset + PAGE < page.total ? link("Next", offset + PAGE, "next") : null,
    );
  }
  return poll(tick, 5000, status);
}

export function presence(device, onlineWithin) {
  if (!device.last_seen_at) return h("span", { class: "presence offline" }, "never");
  const online = Date.now() - new Date(device.last_seen_at).getTime() <= onlineWithin * 1000;
  return h(
    "span",
    { class: `presence ${online ? "online" : "offline"}`, title: device.last_seen_at },
    h("span", { class: "visually-hidden" }, online ? "online, " : "offline, "),
    ago(device.last_seen_at),
  );
}
