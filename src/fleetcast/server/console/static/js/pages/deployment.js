// One deployment, live: status, per-phase counts and progress, a chart over time,
// pause / resume / abort, and every device's state. Polls the API every second.

import { get, post, session } from "../api.js";
import { legend, lineChart } from "../charts.js";
import { ago, badge, deviceName, duration, h, progressBar, renderIfChanged, replace, table, time } from "../dom.js";
import { FINAL_STATES, finishedCount } from "./common.js";

const STATE_ORDER = ["pending", "scheduled", "downloading", "installing", "rebooting", "success", "already-installed", "failure", "aborted", "skipped"];
const IN_PROGRESS = ["downloading", "installing", "rebooting"];
const SERIES = [
  { key: "done", name: "Updated", className: "series-success" },
  { key: "working", name: "Updating", className: "series-progress" },
  { key: "failed", name: "Failed", className: "series-failure" },
];

// Samples survive leaving and reopening the page within this tab.
const samples = new Map();

function sample(d) {
  const list = samples.get(d.id) ?? [];
  if (!list.length && Date.now() - new Date(d.created_at).getTime() < 5 * 60 * 1000) {
    // Nothing had happened when the deployment was created.
    list.push({ t: new Date(d.created_at).getTime(), done: 0, working: 0, failed: 0 });
  }
  const c = d.counts;
  const point = {
    t: Date.now(),
    done: (c.success ?? 0) + (c["already-installed"] ?? 0),
    working: IN_PROGRESS.reduce((n, s) => n + (c[s] ?? 0), 0),
    failed: c.failure ?? 0,
  };
  const last = list[list.length - 1];
  const finished = d.status === "completed" || d.status === "aborted";
  if (!(finished && last && last.done === point.done && last.failed === point.failed && last.working === point.working)) list.push(point);
  if (list.length > 1800) list.splice(1, list.length - 1800);
  samples.set(d.id, list);
  return list;
}

function phaseState(d, phase) {
  const finished = finishedCount(phase.counts);
  if (phase.devices && finished === phase.devices) return "complete";
  if (phase.index < d.current_phase) return "complete";
  if (phase.index > d.current_phase) return "waiting";
  if (d.status === "aborted") return "aborted";
  if (d.status === "paused") return "paused";
  return "in progress";
}

function soakNote(d) {
  if (d.status !== "running" || !d.phase_completed_at) return null;
  const phase = d.phases[d.current_phase];
  if (!phase || d.current_phase >= d.phases.length - 1) return null;
  const ends = new Date(d.phase_completed_at).getTime() + phase.soak_seconds * 1000;
  const left = Math.max(0, Math.round((ends - Date.now()) / 1000));
  return h("p", { class: "note" }, `Phase ${d.current_phase + 1} is complete and soaking: phase ${d.current_phase + 2} starts in ${left}s.`);
}

function phaseCard(d, phase) {
  const finished = finishedCount(phase.counts);
  const share = phase.percent !== null ? `${phase.percent}%` : `${phase.count} devices`;
  const state = phaseState(d, phase);
  return h(
    "li",
    { class: `phase phase-${state.replace(" ", "-")}` },
    h("div", { class: "row-between" }, h("h3", {}, `Phase ${phase.index + 1}`), h("span", { class: "phase-state" }, state)),
    h("p", { class: "muted small" }, `${share} of the target · ${phase.devices} devices · ${phase.soak_seconds ? `soak ${duration(phase.soak_seconds)}` : "no soak"} · pauses above ${phase.max_failure_percent}% failures`),
    progressBar(finished, phase.devices, `Phase ${phase.index + 1} progress`),
    h(
      "ul",
      { class: "counts", "aria-label": `Phase ${phase.index + 1} devices per state` },
      STATE_ORDER.filter((s) => phase.counts[s]).map((s) => h("li", {}, badge(s), h("span", { class: "count" }, String(phase.counts[s])))),
    ),
  );
}

export async function render(main, [id], query, { poll, announce, toast }) {
  const status = h("div");
  const title = h("h1", {}, "Deployment");
  const statusBadge = h("span");
  const button = (action, label, kind) => h("button", { type: "button", class: `button ${kind}`, dataset: { action }, hidden: true, onclick: () => act(action) }, label);
  const buttons = session.canWrite ? [button("pause", "Pause", "secondary"), button("resume", "Resume", "primary"), button("abort", "Abort", "danger")] : [];
  const summary = h("div");
  const phasesEl = h("ol", { class: "phases", "aria-live": "off" });
  const chart = h("div");
  const devicesEl = h("div");
  const stateFilter = h(
    "select",
    { id: "state-filter", onchange: () => refreshDevices() },
    h("option", { value: "" }, "all states"),
    STATE_ORDER.map((s) => h("option", { value: s, selected: query.get("state") === s }, s)),
  );
  replace(
    main,
    h("p", { class: "breadcrumb" }, h("a", { href: "#/deployments" }, "Deployments")),
    h("div", { class: "page-header" }, h("div", { class: "title-line" }, title, statusBadge), h("div", { class: "page-actions" }, buttons)),
    status,
    h("section", { class: "card", "aria-labelledby": "overview-title" }, h("h2", { id: "overview-title", class: "visually-hidden" }, "Overview"), summary),
    h(
      "div",
      { class: "grid-2" },
      h("section", { class: "card", "aria-labelledby": "phases-title" }, h("h2", { id: "phases-title" }, "Phases"), phasesEl),
      h("section", { class: "card", "aria-labelledby": "chart-title" }, h("h2", { id: "chart-title" }, "Progress over time"), chart),
    ),
    h(
      "section",
      { class: "card", "aria-labelledby": "members-title" },
      h("div", { class: "row-between" }, h("h2", { id: "members-title" }, "Devices"), h("div", { class: "inline-field" }, h("label", { for: "state-filter" }, "Show"), stateFilter)),
      devicesEl,
    ),
  );

  let lastStatus = null;

  async function act(action) {
    if (action === "abort" && !window.confirm("Abort this deployment? Devices that have not started never will. This cannot be undone.")) return;
    try {
      const d = await post(`/deployments/${id}/${action}`);
      const verb = { pause: "paused", resume: "resumed", abort: "aborted" }[action];
      announce(`Deployment ${verb}.`);
      toast(`Deployment ${verb}.`, "success");
      update(d);
      const next = main.querySelector("[data-action]:not([hidden])");
      if (next) next.focus();
    } catch (error) {
      toast(error.message, "error");
    }
  }

  function update(d) {
    title.textContent = d.name;
    replace(statusBadge, badge(d.status));
    for (const b of buttons) {
      const action = b.dataset.action;
      b.hidden = !(
        (action === "pause" && d.status === "running") ||
        (action === "resume" && d.status === "paused") ||
        (action === "abort" && (d.status === "running" || d.status === "paused"))
      );
    }
    if (lastStatus !== null && lastStatus !== d.status) announce(`Deployment ${d.status}.`);
    lastStatus = d.status;
    const finished = finishedCount(d.counts);
    renderIfChanged(summary, { d, soak: soakNote(d)?.textContent }, () => [
      d.pause_reason ? h("div", { class: "alert alert-warn", role: "note" }, h("strong", {}, "Paused: "), d.pause_reason) : null,
      soakNote(d),
      h(
        "div",
        { class: "overview" },
        h(
          "dl",
          { class: "facts compact" },
          [
            ["Artifact", h("a", { href: `#/artifacts/${d.artifact_id}` }, `${d.artifact_name} ${d.artifact_version}`)],
            ["Target", [...d.target.device_types.map((t) => `type ${t}`), ...d.target.tags.map((t) => `tag ${t}`), ...(d.target.device_ids.length ? [`${d.target.device_ids.length} devices`] : [])].join(" and ")],
            ["Phase", `${Math.min(d.current_phase + 1, d.phases.length)} of ${d.phases.length}`],
            ["Created", time(d.created_at)],
            ["Finished", d.finished_at ? time(d.finished_at) : "not yet"],
          ].map(([t, v]) => [h("dt", {}, t), h("dd", {}, v)]),
        ),
        h(
          "div",
          { class: "overall" },
          h("p", { class: "overall-numbers" }, h("strong", {}, `${finished} of ${d.total}`), " devices finished"),
          progressBar(finished, d.total, "Overall progress"),
          h(
            "ul",
            { class: "counts", "aria-label": "Devices per state" },
            STATE_ORDER.filter((s) => d.counts[s]).map((s) => h("li", {}, badge(s), h("span", { class: "count" }, String(d.counts[s])))),
          ),
        ),
      ),
    ]);
    renderIfChanged(phasesEl, { phases: d.phases, status: d.status, current: d.current_phase }, () => d.phases.map((p) => phaseCard(d, p)));
    const points = sample(d);
    const series = SERIES.map((s) => ({ ...s, points: points.map((p) => [p.t, p[s.key]]) }));
    replace(
      chart,
      lineChart(series, { title: "Devices updated, updating and failed over time", max: d.total }),
      legend(series),
      h("p", { class: "help" }, "Sampled every second while this page is open."),
    );
  }

  async function refreshDevices() {
    const state = stateFilter.value || undefined;
    const page = await get(`/deployments/${id}/devices`, { state, limit: 500 });
    renderIfChanged(devicesEl, page, ({ items, total }) => [
      table(
        "Devices in this deployment",
        ["Device", "Phase", "State", "Progress", "Last message", "Updated"],
        items.map((m) =>
          h(
            "tr",
            { class: m.state === "failure" ? "row-failure" : null },
            h("th", { scope: "row" }, h("a", { href: `#/devices/${m.device_id}` }, deviceName(m.device_identity, m.device_id))),
            h("td", {}, m.phase === null ? "none" : String(m.phase + 1)),
            h("td", {}, badge(m.state)),
            h("td", { class: "num" }, m.progress === null || FINAL_STATES.includes(m.state) ? "" : `${m.progress}%`),
            h("td", {}, m.last_message, m.rolled_back ? h("span", { class: "tag tag-warn" }, "rolled back") : null),
            h("td", { class: "nowrap" }, h("time", { datetime: m.updated_at, title: m.updated_at }, ago(m.updated_at))),
          ),
        ),
        { empty: "No device in this state.", hideCaption: true },
      ),
      total > items.length ? h("p", { class: "muted small" }, `Showing ${items.length} of ${total}.`) : null,
    ]);
  }

  return poll(
    async () => {
      update(await get(`/deployments/${id}`));
      await refreshDevices();
    },
    1000,
    status,
  );
}
