// Artifacts: upload with progress, the list, a manifest and signature view, delete when unused.

import { del, get, session, upload } from "../api.js";
import { formatBytes, h, replace, table, time } from "../dom.js";
import { pageHeader, readOnlyNote, section } from "./common.js";

function uploadForm(onUploaded, { announce, toast }) {
  const input = h("input", { id: "artifact-file", name: "file", type: "file", accept: ".fca,application/octet-stream", required: true });
  const bar = h("progress", { id: "upload-progress", max: 100, value: 0, "aria-labelledby": "upload-progress-label" });
  const label = h("span", { id: "upload-progress-label" }, "Upload progress");
  const statusText = h("span", { id: "upload-status", class: "muted small", "aria-live": "polite" });
  const progress = h("div", { class: "upload-progress", hidden: true }, label, bar, statusText);
  const message = h("div");
  const button = h("button", { type: "submit", class: "button primary" }, "Upload");
  const form = h(
    "form",
    {
      class: "upload",
      onsubmit: async (event) => {
        event.preventDefault();
        const file = input.files[0];
        if (!file) return;
        replace(message);
        button.disabled = true;
        progress.hidden = false;
        bar.value = 0;
        statusText.textContent = `Sending ${file.name}…`;
        try {
          const artifact = await upload("/artifacts", file, (loaded, total) => {
            bar.value = Math.round((loaded / total) * 100);
            statusText.textContent = `${formatBytes(loaded)} of ${formatBytes(total)} sent`;
            if (loaded === total) statusText.textContent = "Verifying hashes and signature…";
          });
          bar.value = 100;
          statusText.textContent = `Uploaded and verified: ${artifact.name} ${artifact.version}.`;
          announce(`Uploaded ${artifact.name} ${artifact.version}.`);
          toast(`Uploaded ${artifact.name} ${artifact.version}.`, "success");
          form.reset();
          await onUploaded(artifact);
        } catch (error) {
          statusText.textContent = "Upload failed.";
          replace(message, h("div", { class: "alert", role: "alert" }, error.message));
        } finally {
          button.disabled = false;
        }
      },
    },
    h(
      "div",
      { class: "field" },
      h("label", { for: "artifact-file" }, "Artifact file (.fca)"),
      input,
      h("p", { class: "help" }, "Built and signed with fleetcast artifact build. The server checks its format, every payload hash and the signature before storing it."),
    ),
    h("div", { class: "field buttons" }, button),
    progress,
    message,
  );
  return form;
}

export const list = {
  async render(main, _params, _query, ctx) {
    const listEl = h("div");
    async function refresh() {
      const [artifacts, deployments] = await Promise.all([get("/artifacts"), get("/deployments")]);
      const usedBy = new Map();
      for (const d of deployments.items) usedBy.set(d.artifact_id, (usedBy.get(d.artifact_id) ?? 0) + 1);
      replace(
        listEl,
        table(
          "Artifacts",
          ["Artifact", "Version", "Compatible", "Payload", "Size", "Signed by", "Uploaded", "Used by", session.canWrite ? "Actions" : null].filter(Boolean),
          artifacts.items.map((a) => {
            const uses = usedBy.get(a.id) ?? 0;
            return h(
              "tr",
              {},
              h("th", { scope: "row" }, h("a", { href: `#/artifacts/${a.id}` }, a.name)),
              h("td", {}, a.version),
              h("td", {}, a.compatible.map((c) => h("span", { class: "tag" }, c))),
              h("td", {}, a.payload_type),
              h("td", { class: "num" }, formatBytes(a.size)),
              h("td", { class: "mono small", title: a.signer_keyid }, a.signer_keyid.slice(0, 12)),
              h("td", { class: "nowrap" }, time(a.created_at)),
              h("td", {}, uses ? `${uses} deployment${uses === 1 ? "" : "s"}` : h("span", { class: "muted" }, "unused")),
              session.canWrite
                ? h(
                    "td",
                    { class: "actions" },
                    h(
                      "button",
                      {
                        type: "button",
                        class: "button danger small",
                        disabled: uses > 0,
                        title: uses ? "A deployment uses this artifact" : null,
                        "aria-label": `Delete ${a.name} ${a.version}`,
                        onclick: async () => {
                          if (!window.confirm(`Delete ${a.name} ${a.version}? Its file is removed from the server.`)) return;
                          try {
                            await del(`/artifacts/${a.id}`);
                            ctx.announce(`Deleted ${a.name} ${a.version}.`);
                            ctx.toast(`Deleted ${a.name} ${a.version}.`, "success");
                            await refresh();
                          } catch (error) {
                            ctx.toast(error.message, "error");
                          }
                        },
                      },
                      "Delete",
                    ),
                  )
                : null,
            );
          }),
          { empty: "No artifact uploaded yet.", hideCaption: true },
        ),
      );
    }
    replace(
      main,
      pageHeader("Artifacts"),
      session.canWrite ? section("Upload an artifact", "upload-title", uploadForm(refresh, ctx)) : readOnlyNote(),
      h("section", { class: "card", "aria-labelledby": "artifacts-title" }, h("h2", { id: "artifacts-title" }, "All artifacts"), listEl),
    );
    await refresh();
    return null;
  },
};

export const detail = {
  async render(main, [id]) {
    const a = await get(`/artifacts/${id}`);
    const signed = a.manifest.signed;
    const payloads = signed.payloads ?? [];
    replace(
      main,
      h("p", { class: "breadcrumb" }, h("a", { href: "#/artifacts" }, "Artifacts")),
      pageHeader(`${a.name} ${a.version}`),
      h(
        "div",
        { class: "grid-2" },
        section(
          "Artifact",
          "artifact-title",
          h(
            "dl",
            { class: "facts" },
            [
              ["Name", a.name],
              ["Version", a.version],
              ["Compatible", a.compatible.map((c) => h("span", { class: "tag" }, c))],
              ["Depends on", signed.depends && Object.keys(signed.depends).length ? Object.entries(signed.depends).map(([k, v]) => `${k} ${v}`).join(", ") : "nothing"],
              ["Payload type", a.payload_type],
              ["Size", formatBytes(a.size)],
              ["SHA-256", h("span", { class: "mono small break" }, a.sha256)],
              ["Uploaded", time(a.created_at)],
            ].map(([t, d]) => [h("dt", {}, t), h("dd", {}, d)]),
          ),
        ),
        section(
          "Signatures",
          "signatures-title",
          table(
            "Signatures over the manifest",
            ["Key id", "Signature"],
            a.manifest.signatures.map((sig) =>
              h(
                "tr",
                {},
                h("td", { class: "mono small break" }, sig.keyid, sig.keyid === a.signer_keyid ? h("span", { class: "tag tag-good" }, "signer") : null),
                h("td", { class: "mono small break" }, `${(sig.sig ?? sig.signature ?? "").slice(0, 32)}…`),
              ),
            ),
            { empty: "Not signed.", hideCaption: true },
          ),
        ),
      ),
      section(
        "Payloads",
        "payloads-title",
        table(
          "Payloads in the manifest",
          ["Name", "Type", "Size", "SHA-256"],
          payloads.map((p) =>
            h("tr", {}, h("td", {}, p.name ?? ""), h("td", {}, p.type ?? ""), h("td", { class: "num" }, p.size !== undefined ? formatBytes(p.size) : ""), h("td", { class: "mono small break" }, p.sha256 ?? "")),
          ),
          { empty: "No payload.", hideCaption: true },
        ),
      ),
      section("Signed manifest", "manifest-title", h("pre", { class: "json", tabindex: 0, "aria-label": "Signed manifest (JSON)" }, JSON.stringify(a.manifest, null, 2))),
    );
    return null;
  },
};
