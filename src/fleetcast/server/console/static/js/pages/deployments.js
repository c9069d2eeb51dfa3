// Deployments: the list, and the form that creates one (phased or all at once).

import { get, post, session } from "../api.js";
import { badge, h, renderIfChanged, replace, table, time } from "../dom.js";
import { deploymentProgress, pageHeader, readOnlyNote } from "./common.js";

export const list = {
  async render(main, _params, _query, { poll }) {
    const status = h("div");
    const listEl = h("div");
    replace(
      main,
      pageHeader("Deployments", session.canWrite ? h("a", { class: "button primary", href: "#/deployments/new" }, "New deployment") : null),
      session.canWrite ? null : readOnlyNote(),
      status,
      h("section", { class: "card", "aria-labelledby": "deployments-title" }, h("h2", { id: "deployments-title", class: "visually-hidden" }, "All deployments"), listEl),
    );
    return poll(
      async () => {
        const deployments = await get("/deployments");
        renderIfChanged(listEl, deployments.items, (items) =>
          table(
            "All deployments",
            ["Deployment", "Artifact", "Status", "Phase", "Progress", "Created"],
            items.map((d) =>
              h(
                "tr",
                {},
                h("th", { scope: "row" }, h("a", { href: `#/deployments/${d.id}` }, d.name)),
                h("td", {}, `${d.artifact_name} ${d.artifact_version}`),
                h("td", {}, badge(d.status)),
                h("td", {}, `${Math.min(d.current_phase + 1, d.phases.length)} of ${d.phases.length}`),
                h("td", { class: "progress-cell" }, deploymentProgress(d)),
                h("td", { class: "nowrap" }, time(d.created_at)),
              ),
            ),
            { empty: "No deployment yet.", hideCaption: true },
          ),
        );
      },
      2000,
      status,
    );
  },
};

function numberInput(id, label, value, { min = 0, max, help } = {}) {
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    h("input", { id, name: id, type: "number", inputmode: "numeric", min, max, value: String(value), required: true, "aria-describedby": help ? `${id}-help` : null }),
    help ? h("p", { class: "help", id: `${id}-help` }, help) : null,
  );
}

const DEFAULT_PHASES = [
  { percent: 10, soak: 600, fail: 20 },
  { percent: 50, soak: 600, fail: 10 },
  { percent: 100, soak: 0, fail: 100 },
];

export const create = {
  async render(main, _params, _query, { navigate, announce }) {
    if (!session.canWrite) {
      replace(main, pageHeader("New deployment"), readOnlyNote());
      return null;
    }
    const [artifacts, summary] = await Promise.all([get("/artifacts"), get("/fleet/summary")]);
    let phases = DEFAULT_PHASES.map((p) => ({ ...p }));
    const phaseList = h("ol", { class: "phases-edit" });
    const message = h("div");

    function readPhases() {
      phases = [...phaseList.querySelectorAll("li")].map((li, i) => ({
        percent: Number(li.querySelector(`#phase-${i}-percent`).value),
        soak: Number(li.querySelector(`#phase-${i}-soak`).value),
        fail: Number(li.querySelector(`#phase-${i}-fail`).value),
      }));
    }

    function drawPhases() {
      replace(
        phaseList,
        phases.map((p, i) =>
          h(
            "li",
            { class: "phase-edit" },
            h(
              "fieldset",
              {},
              h("legend", {}, `Phase ${i + 1}`),
              numberInput(`phase-${i}-percent`, "Share of the target (%)", p.percent, { min: 1, max: 100 }),
              numberInput(`phase-${i}-soak`, "Soak time (s)", p.soak),
              numberInput(`phase-${i}-fail`, "Pause above failure (%)", p.fail, { max: 100 }),
              phases.length > 1
                ? h(
                    "button",
                    {
                      type: "button",
                      class: "button subtle small",
                      "aria-label": `Remove phase ${i + 1}`,
                      onclick: () => {
                        readPhases();
                        phases.splice(i, 1);
                        drawPhases();
                        phaseList.querySelector("input")?.focus();
                      },
                    },
                    "Remove",
                  )
                : null,
            ),
          ),
        ),
      );
    }
    drawPhases();

    const phasedBox = h(
      "div",
      { id: "phases-box" },
      h("p", { class: "help", id: "phases-help" }, "Shares are cumulative; the last phase must reach 100%. After a phase completes, the next waits for its soak time. A phase pauses the deployment when more of its devices fail than its threshold."),
      phaseList,
      h(
        "button",
        {
          type: "button",
          class: "button subtle",
          onclick: () => {
            readPhases();
            phases.push({ percent: 100, soak: 0, fail: 100 });
            drawPhases();
            phaseList.querySelector(`#phase-${phases.length - 1}-percent`).focus();
          },
        },
        "Add a phase",
      ),
    );

    const mode = (value, label, checked) =>
      h(
        "label",
        { class: "choice" },
        h("input", {
          type: "radio",
          name: "mode",
          value,
          checked,
          onchange: () => {
            phasedBox.hidden = value !== "phased";
          },
        }),
        label,
      );

    const artifactOptions = artifacts.items.map((a) => h("option", { value: a.id }, `${a.name} ${a.version} (${a.compatible.join(", ")})`));
    const form = h(
      "form",
      {
        class: "card form",
        "aria-labelledby": "new-title",
        onsubmit: async (event) => {
          event.preventDefault();
          const data = new FormData(form);
          const list = (name) =>
            String(data.get(name) ?? "")
              .split(/[\s,]+/)
              .map((v) => v.trim())
              .filter(Boolean);
          const body = {
            name: String(data.get("name")).trim(),
            artifact_id: String(data.get("artifact")),
            target: {
              device_types: data.getAll("device_types").map(String),
              tags: list("tags"),
              device_ids: list("device_ids"),
            },
            allow_downgrade: data.get("allow_downgrade") === "on",
          };
          if (data.get("mode") === "phased") {
            readPhases();
            body.phases = phases.map((p) => ({ percent: p.percent, soak_seconds: p.soak, max_failure_percent: p.fail }));
          }
          try {
            const created = await post("/deployments", body);
            announce(`Deployment ${created.name} created.`);
            navigate(`#/deployments/${created.id}`);
          } catch (error) {
            replace(message, h("div", { class: "alert", role: "alert" }, error.message));
          }
        },
      },
      h("h2", { id: "new-title", class: "visually-hidden" }, "Deployment"),
      h("div", { class: "field" }, h("label", { for: "name" }, "Name"), h("input", { id: "name", name: "name", required: true, maxlength: 256 })),
      h(
        "div",
        { class: "field" },
        h("label", { for: "artifact" }, "Artifact"),
        artifacts.items.length ? h("select", { id: "artifact", name: "artifact", required: true }, artifactOptions) : h("p", { class: "empty" }, "Upload an artifact first."),
      ),
      h(
        "fieldset",
        { class: "target" },
        h("legend", {}, "Target"),
        h("p", { class: "help" }, "Accepted devices matching every kind you fill in (any value within a kind)."),
        h(
          "div",
          { class: "checks", role: "group", "aria-label": "Device types" },
          h("span", { class: "field-label" }, "Device types"),
          summary.device_types.map((t, i) =>
            h("label", { class: "choice" }, h("input", { type: "checkbox", name: "device_types", value: t.device_type, id: `type-${i}` }), `${t.device_type} (${t.devices})`),
          ),
        ),
        h("div", { class: "field" }, h("label", { for: "tags" }, "Tags"), h("input", { id: "tags", name: "tags", placeholder: "lab, eu" })),
        h("div", { class: "field" }, h("label", { for: "device_ids" }, "Device ids"), h("input", { id: "device_ids", name: "device_ids", placeholder: "separated by spaces or commas" })),
      ),
      h(
        "fieldset",
        {},
        h("legend", {}, "Rollout"),
        h("div", { class: "choices" }, mode("phased", "Phased", true), mode("simultaneous", "All at once", false)),
        phasedBox,
      ),
      h("label", { class: "choice" }, h("input", { type: "checkbox", name: "allow_downgrade" }), "Allow installing an older version"),
      message,
      h("div", { class: "buttons" }, h("button", { type: "submit", class: "button primary", disabled: !artifacts.items.length }, "Create deployment"), h("a", { class: "button subtle", href: "#/deployments" }, "Cancel")),
    );
    replace(main, h("p", { class: "breadcrumb" }, h("a", { href: "#/deployments" }, "Deployments")), pageHeader("New deployment"), form);
    return null;
  },
};
