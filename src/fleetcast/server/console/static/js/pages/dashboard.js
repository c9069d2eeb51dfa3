// The fleet at a glance: size, online/offline, versions (a chart), active deployments, failures.

import { get } from "../api.js";
import { barChart } from "../charts.js";
import { ago, badge, deviceName, h, renderIfChanged, replace, table } from "../dom.js";
import { deploymentProgress, pageHeader, section, stat } from "./common.js";

export async function render(main, _params, _query, { poll }) {
  const status = h("div");
  const stats = h("div", { class: "stats" });
  const versions = h("div");
  const active = h("div");
  const failures = h("div");
  replace(
    main,
    pageHeader("Dashboard"),
    status,
    h("section", { "aria-label": "Fleet", class: "stats-section" }, stats),
    h(
      "div",
      { class: "grid-2" },
      section("Installed versions", "versions-title", versions),
      section("Active deployments", "active-title", active),
    ),
    section("Recent failures", "failures-title", failures),
  );

  async function tick() {
    const [summary, deployments, events] = await Promise.all([
      get("/fleet/summary"),
      get("/deployments"),
      get("/events", { state: "failure", limit: 8 }),
    ]);
    const running = deployments.items.filter((d) => d.status === "running" || d.status === "paused");
    renderIfChanged(stats, { summary, running: running.length }, () => [
      stat("devices in the fleet", summary.devices, { href: "#/devices?status=accepted" }),
      stat("online", summary.online, { href: "#/devices?status=accepted&online=true", kind: "good" }),
      stat("offline", summary.offline, { href: "#/devices?status=accepted&online=false", kind: summary.offline ? "warn" : null }),
      stat("waiting for acceptance", summary.by_status.pending ?? 0, {
        href: "#/devices?status=pending",
        kind: summary.by_status.pending ? "attention" : null,
      }),
      stat("active deployments", running.length, { href: "#/deployments" }),
    ]);
    renderIfChanged(versions, summary.versions, (items) => {
      if (!items.length) return h("p", { class: "empty" }, "No accepted device yet.");
      const bars = items.map((v) => ({
        label: v.artifact_version ? `${v.artifact_name} ${v.artifact_version}` : "unknown",
        value: v.devices,
      }));
      return [
        barChart(bars, { title: "Devices per installed version" }),
        table(
          "Devices per installed version",
          ["Artifact", "Version", "Devices"],
          items.map((v) =>
            h(
              "tr",
              {},
              h("td", {}, v.artifact_name ?? "unknown"),
              h("td", {}, v.artifact_version ? h("a", { href: `#/devices?artifact_version=${encodeURIComponent(v.artifact_version)}` }, v.artifact_version) : "unknown"),
              h("td", { class: "num" }, String(v.devices)),
            ),
          ),
          { hideCaption: true },
        ),
      ];
    });
    renderIfChanged(active, running, (items) =>
      items.length
        ? h(
            "ul",
            { class: "deployment-list" },
            items.map((d) =>
              h(
                "li",
                {},
                h("div", { class: "row-between" }, h("a", { href: `#/deployments/${d.id}` }, d.name), badge(d.status)),
                h("div", { class: "muted small" }, `${d.artifact_name} ${d.artifact_version} · phase ${d.current_phase + 1} of ${d.phases.length} · ${d.total} devices`),
                deploymentProgress(d),
              ),
            ),
          )
        : h("p", { class: "empty" }, "No deployment is running.", " ", h("a", { href: "#/deployments" }, "All deployments")),
    );
    renderIfChanged(failures, events.items, (items) =>
      table(
        "Recent failures",
        ["When", "Device", "Version", "What happened"],
        items.map((e) =>
          h(
            "tr",
            {},
            h("td", {}, h("time", { datetime: e.at, title: e.at }, ago(e.at))),
            h("td", {}, h("a", { href: `#/devices/${e.device_id}` }, deviceName(e.device_identity, e.device_id))),
            h("td", {}, e.artifact_version ?? ""),
            h("td", {}, e.message || "failure", e.rolled_back ? h("span", { class: "tag" }, "rolled back") : null),
          ),
        ),
        { empty: "No failed update. ", hideCaption: true },
      ),
    );
  }
  return poll(tick, 3000, status);
}

