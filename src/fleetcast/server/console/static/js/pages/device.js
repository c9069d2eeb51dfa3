// One device: identity, status, attributes, installed version, full history with failure logs.

import { get, post, session } from "../api.js";
import { badge, deviceName, h, renderIfChanged, replace, table, time } from "../dom.js";
import { pageHeader, section } from "./common.js";
import { presence } from "./devices.js";

const ACTIONS = {
  pending: ["accept", "reject"],
  preauthorized: ["reject", "decommission"],
  accepted: ["reject", "decommission"],
  rejected: ["accept", "decommission"],
  decommissioned: [],
};

function definitions(pairs) {
  return h("dl", { class: "facts" }, pairs.map(([term, detail]) => [h("dt", {}, term), h("dd", {}, detail)]));
}

function historyRow(e) {
  const failed = e.state === "failure";
  return h(
    "tr",
    { class: failed ? "row-failure" : null },
    h("td", { class: "nowrap" }, time(e.at)),
    h("td", {}, e.kind === "admission" ? "admission" : "update"),
    h("td", {}, badge(e.state)),
    h("td", {}, e.artifact_version ? `${e.artifact_name} ${e.artifact_version}` : ""),
    h("td", {}, e.deployment_id ? h("a", { href: `#/deployments/${e.deployment_id}` }, "deployment") : ""),
    h(
      "td",
      {},
      e.message,
      e.rolled_back ? h("span", { class: "tag tag-warn" }, "rolled back") : null,
      e.log_tail.length
        ? h("details", { class: "log", open: failed }, h("summary", {}, `Log tail (${e.log_tail.length} lines)`), h("pre", {}, e.log_tail.join("\n")))
        : null,
    ),
  );
}

export async function render(main, [id], _query, { poll, announce, toast }) {
  const status = h("div");
  const header = h("div");
  const facts = h("div");
  const attributes = h("div");
  const history = h("div");
  const summary = await get("/fleet/summary");
  replace(
    main,
    h("p", { class: "breadcrumb" }, h("a", { href: "#/devices" }, "Devices")),
    header,
    status,
    h("div", { class: "grid-2" }, section("Device", "facts-title", facts), section("Attributes", "attributes-title", attributes)),
    section("Update history", "history-title", history),
  );

  async function act(device, action) {
    if (action === "decommission" && !window.confirm(`Decommission ${deviceName(device.identity, device.id)}? This is final.`)) return;
    try {
      await post(`/devices/${device.id}/${action}`);
      announce(`Device ${action === "accept" ? "accepted" : action === "reject" ? "rejected" : "decommissioned"}.`);
      toast(`Done: ${action}.`, "success");
      await tick();
    } catch (error) {
      toast(error.message, "error");
    }
  }

  async function tick() {
    const [device, events] = await Promise.all([get(`/devices/${id}`), get(`/devices/${id}/history`)]);
    const name = deviceName(device.identity, device.id);
    renderIfChanged(header, { name, status: device.status, canWrite: session.canWrite }, () =>
      pageHeader(
        name,
        badge(device.status),
        session.canWrite
          ? ACTIONS[device.status].map((action) =>
              h(
                "button",
                { type: "button", class: `button ${action === "accept" ? "primary" : "danger"}`, onclick: () => act(device, action) },
                action[0].toUpperCase() + action.slice(1),
              ),
            )
          : null,
      ),
    );
    renderIfChanged(facts, device, (d) =>
      definitions([
        ["Installed", d.artifact_version ? `${d.artifact_name} ${d.artifact_version}` : h("span", { class: "muted" }, "unknown")],
        ["Status", badge(d.status)],
        ["Device type", d.device_type],
        ["Last seen", presence(d, summary.online_within)],
        ["Tags", d.tags.length ? d.tags.map((t) => h("span", { class: "tag" }, t)) : h("span", { class: "muted" }, "none")],
        ["Identity", h("span", { class: "mono" }, Object.entries(d.identity).map(([k, v]) => `${k}=${v}`).join(", "))],
        ["Device id", h("span", { class: "mono" }, d.id)],
        ["Public key id", h("span", { class: "mono small", title: d.public_key_id }, `${d.public_key_id.slice(0, 16)}…`)],
        ["Registered", time(d.created_at)],
      ]),
    );
    renderIfChanged(attributes, device.attributes, (attrs) =>
      table(
        "Attributes reported by the device",
        ["Name", "Value"],
        Object.entries(attrs)
          .sort(([a], [b]) => a.localeCompare(b))
          .map(([k, v]) => h("tr", {}, h("th", { scope: "row", class: "mono" }, k), h("td", {}, typeof v === "string" ? v : JSON.stringify(v)))),
        { empty: "The device has not reported any attribute.", hideCaption: true },
      ),
    );
    renderIfChanged(history, events.items, (items) => {
      const newestFirst = [...items].reverse();
      const failures = items.filter((e) => e.state === "failure").length;
      return [
        h("p", { class: "muted small" }, `${items.length} entries, newest first${failures ? `; ${failures} failed update${failures === 1 ? "" : "s"}` : ""}.`),
        table("Update and admission history", ["When", "Kind", "State", "Artifact", "Deployment", "Message"], newestFirst.map(historyRow), {
          empty: "No history yet.",
          hideCaption: true,
        }),
      ];
    });
  }
  return poll(tick, 3000, status);
}
