// The console's shell: login, navigation (hash routes), and the page lifecycle.
// Each page is a module exporting `render(main, params, query, ctx)`; it may
// return a cleanup function, called when the operator navigates away.

import { ApiError, get, session, whenUnauthorized } from "./api.js";
import { errorBox, h, replace } from "./dom.js";
import * as artifacts from "./pages/artifacts.js";
import * as audit from "./pages/audit.js";
import * as dashboard from "./pages/dashboard.js";
import * as deployment from "./pages/deployment.js";
import * as deployments from "./pages/deployments.js";
import * as device from "./pages/device.js";
import * as devices from "./pages/devices.js";

const routes = [
  [/^\/$/, dashboard, "dashboard"],
  [/^\/devices$/, devices, "devices"],
  [/^\/devices\/([^/]+)$/, device, "devices"],
  [/^\/artifacts$/, artifacts.list, "artifacts"],
  [/^\/artifacts\/([^/]+)$/, artifacts.detail, "artifacts"],
  [/^\/deployments$/, deployments.list, "deployments"],
  [/^\/deployments\/new$/, deployments.create, "deployments"],
  [/^\/deployments\/([^/]+)$/, deployment, "deployments"],
  [/^\/audit$/, audit, "audit"],
];

const main = document.getElementById("main");
let cleanup = null;
let firstRender = true;

export function announce(message) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  // A fresh text node after a tick is announced even when the words repeat.
  window.setTimeout(() => {
    region.textContent = message;
  }, 50);
}

let toastTimer = null;
export function toast(message, kind = "info") {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = `toast toast-${kind}`;
  el.hidden = false;
  window.clearTimeout(toastTimer);
  toastTimer = window.setTimeout(() => {
    el.hidden = true;
  }, 5000);
}

export function navigate(hash) {
  if (window.location.hash === hash) route();
  else window.location.hash = hash;
}

// Run `tick` now and then every `ms` after each run ends, until the page is left.
// Errors show in `status` (if given) and polling goes on: the server may come back.
export function poll(tick, ms, status) {
  let stopped = false;
  let timer = null;
  async function run() {
    try {
      await tick();
      if (status) replace(status);
    } catch (error) {
      if (stopped) return;
      if (error instanceof ApiError && error.status === 401) return;
      if (status) replace(status, errorBox(error));
    }
    if (!stopped) timer = window.setTimeout(run, ms);
  }
  run();
  return () => {
    stopped = true;
    window.clearTimeout(timer);
  };
}

function parseHash() {
  const raw = window.location.hash.replace(/^#/, "") || "/";
  const [path, search = ""] = raw.split("?");
  return { path, query: new URLSearchParams(search) };
}

function showShell(visible) {
  document.getElementById("nav").hidden = !visible;
  document.getElementById("session").hidden = !visible;
  document.body.classList.toggle("read-only", visible && !session.canWrite);
  if (visible) {
    const who = document.getElementById("whoami");
    replace(who, h("span", { class: "who-name" }, session.me.name), " ", h("span", { class: `scope scope-${session.me.scope}` }, session.me.scope));
  }
}

function setCurrentNav(section) {
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.section === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function renderLogin(message) {
  showShell(false);
  document.title = "Log in · Fleetcast";
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "token-help",
  });
  const status = h("div", { id: "login-status" });
  if (message) replace(status, h("div", { class: "alert", role: "alert" }, message));
  const form = h(
    "form",
    {
      class: "card login-card",
      "aria-labelledby": "login-title",
      onsubmit: async (event) => {
        event.preventDefault();
        session.token = input.value.trim();
        try {
          session.me = await get("/tokens/me");
          route();
        } catch (error) {
          session.token = null;
          session.me = null;
          const text = error.status === 401 ? "That token was not accepted. Check it and try again." : error.message;
          replace(status, h("div", { class: "alert", role: "alert" }, text));
          input.focus();
        }
      },
    },
    h("h1", { id: "login-title" }, "Log in to Fleetcast"),
    h("label", { for: "token" }, "API token"),
    input,
    h(
      "p",
      { id: "token-help", class: "help" },
      "A management API token (admin, operator or read-only). The server prints the first admin token when it starts for the first time. The token stays in this browser tab only.",
    ),
    status,
    h("button", { type: "submit", class: "button primary" }, "Log in"),
  );
  replace(main, h("div", { class: "login" }, form));
  input.focus();
}

async function route() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  if (!session.token) {
    renderLogin();
    return;
  }
  if (!session.me) {
    try {
      session.me = await get("/tokens/me");
    } catch (error) {
      if (error.status !== 401) renderLogin(error.message);
      return;
    }
  }
  showShell(true);
  const { path, query } = parseHash();
  const match = routes.find(([pattern]) => pattern.test(path));
  replace(main);
  if (!match) {
    setCurrentNav(null);
    document.title = "Not found · Fleetcast";
    replace(main, h("h1", {}, "Page not found"), h("p", {}, h("a", { href: "#/" }, "Back to the dashboard")));
    return;
  }
  const [pattern, page, section] = match;
  const params = path.match(pattern).slice(1).map(decodeURIComponent);
  setCurrentNav(section);
  try {
    cleanup = (await page.render(main, params, query, { announce, toast, navigate, poll })) ?? null;
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) replace(main, errorBox(error));
  }
  const heading = main.querySelector("h1");
  document.title = `${heading ? heading.textContent : "Fleetcast"} · Fleetcast`;
  if (!firstRender) main.focus({ preventScroll: false });
  firstRender = false;
}

whenUnauthorized(() => {
  if (!session.me) return; // logging in: the login form reports it
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  session.token = null;
  session.me = null;
  renderLogin("Your token is no longer accepted (revoked, or the server was reset). Log in again.");
});

document.getElementById("logout").addEventListener("click", () => {
  session.token = null;
  session.me = null;
  window.location.hash = "#/";
  route();
});

document.getElementById("skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});

window.addEventListener("hashchange", route);
route();
