// The brizo dashboard. Everything it shows goes in as text (textContent, attributes set one by
// one), never as markup: an image name, a log line or an output name with `<script>` in it
// stays text. Actions carry the session's CSRF token in a header.
"use strict";

const CSRF = document.querySelector('meta[name="csrf"]').content;
const view = document.getElementById("view");

// ---- small helpers ------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") node.addEventListener("click", v);
    else if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

async function api(path) {
  const res = await fetch(path, { credentials: "same-origin" });
  if (res.status === 401) { location.reload(); throw new Error("signed out"); }
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

async function act(id, action, reason) {
  const res = await fetch(`/ui/api/jobs/${encodeURIComponent(id)}/${action}`, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
    body: JSON.stringify(reason ? { reason } : {}),
  });
  const body = await res.json().catch(() => ({}));
  flash(res.ok ? `${action}: done` : `${action}: ${body.error || res.statusText}`);
  if (res.ok) render();
  return body;
}

function flash(text) {
  const f = document.getElementById("flash");
  f.textContent = text;
  f.className = "show";
  setTimeout(() => (f.className = ""), 3000);
}

function age(epoch) {
  if (!epoch) return "";
  const s = Math.max(0, Date.now() / 1000 - epoch);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

function duration(job) {
  if (!job.dateStarted) return "";
  const end = job.dateFinished || Date.now() / 1000;
  return `${(end - job.dateStarted).toFixed(1)} s`;
}

function outcome(o) {
  return el("span", { class: `outcome-${o || "none"}` }, o || "");
}

// ---- views --------------------------------------------------------------------------------

const filters = { phase: "", outcome: "", backend: "", consumer: "" };
let pages = [null]; // cursors of the pages seen, for "newer"

async function jobsView(cursor) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
  if (cursor) q.set("before", cursor);
  const data = await api(`/ui/api/jobs?${q}`);
  const select = (name, options) => el("select", { id: `filter-${name}` },
    el("option", { value: "" }, `any ${name}`),
    options.map((o) => { const opt = el("option", { value: o }, o); if (filters[name] === o) opt.selected = true; return opt; }));
  const phase = select("phase", ["queued", "staging", "provisioned", "running", "filtering", "publishing", "finished", "data_provisioning_failed", "algorithm_provisioning_failed"]);
  const out = select("outcome", ["succeeded", "failed", "stopped", "timed_out", "out_of_memory"]);
  const backend = el("input", { id: "filter-backend", placeholder: "backend", value: filters.backend });
  const consumer = el("input", { id: "filter-consumer", placeholder: "consumer", value: filters.consumer });
  const apply = el("button", { id: "apply", onclick: () => {
    filters.phase = phase.value; filters.outcome = out.value;
    filters.backend = backend.value; filters.consumer = consumer.value;
    pages = [null]; render();
  } }, "Filter");
  const rows = data.jobs.map((j) => el("tr", { class: "row", "data-job": j.jobId, onclick: () => (location.hash = `#/job/${j.jobId}`) },
    el("td", {}, el("a", { href: `#/job/${j.jobId}` }, j.jobId.slice(0, 12))),
    el("td", { class: "status" }, `${j.status} ${j.statusText}`),
    el("td", {}, outcome(j.outcome)),
    el("td", { class: "image" }, j.image),
    el("td", {}, j.backend, el("br"), el("small", {}, j.backendReason)),
    el("td", { class: "waiting" }, j.waiting ? j.waiting.text : ""),
    el("td", {}, j.consumer),
    el("td", {}, age(j.dateCreated)),
    el("td", {}, duration(j))));
  const nav = el("p", {},
    pages.length > 1 ? el("button", { id: "newer", onclick: () => { pages.pop(); render(); } }, "← newer") : null,
    data.next ? el("button", { id: "older", onclick: () => { pages.push(data.next); render(); } }, "older →") : null);
  return [el("h2", {}, "Jobs"), el("div", { class: "filters" }, phase, out, backend, consumer, apply),
    el("table", { id: "jobs" }, el("tr", {}, ["job", "status", "outcome", "image", "backend (why)", "waits for", "consumer", "created", "ran"].map((h) => el("th", {}, h))), rows),
    nav];
}

let logSource = null;

async function jobView(id) {
  const d = await api(`/ui/api/jobs/${encodeURIComponent(id)}`);
  const j = d.job;
  const t = j.timings || {};
  const phases = [["queued", t.queuedMs], ["staging", t.stagingMs], ["starting", t.startingMs], ["running", t.runningMs], ["filtering", t.filteringMs], ["publishing", t.publishingMs], ["cleanup", t.cleanupMs]];
  const longest = Math.max(1, ...phases.map(([, ms]) => ms || 0));
  const timeline = el("table", { id: "timeline" }, phases.filter(([, ms]) => ms !== undefined).map(([name, ms]) =>
    el("tr", {}, el("td", {}, name), el("td", {}, `${ms} ms`),
      el("td", {}, el("span", { class: "bar", style: `width: ${Math.round((ms / longest) * 300)}px` })))));
  const buttons = el("p", {},
    !["finished", "data_provisioning_failed", "algorithm_provisioning_failed"].includes(j.phase)
      ? el("button", { id: "stop", onclick: () => act(id, "stop") }, "Stop") : null,
    el("button", { id: "delete", onclick: () => confirm("Delete this job and everything it left?") && act(id, "delete") }, "Delete"),
    j.imageDigest && j.dateFinished ? el("button", { id: "rerun", onclick: async () => { const r = await act(id, "rerun"); if (r.jobId) location.hash = `#/job/${r.jobId}`; } }, "Rerun") : null);
  const decision = await decisionCard(j);
  const outputs = el("table", { id: "outputs" }, el("tr", {}, el("th", {}, "output"), el("th", {}, "size"), el("th", {}, "sha256")),
    (j.outputs || []).map((o) => el("tr", {},
      el("td", {}, el("a", { href: `/ui/api/jobs/${encodeURIComponent(id)}/outputs/${o.name.split("/").map(encodeURIComponent).join("/")}`, class: "output" }, o.name)),
      el("td", {}, o.size), el("td", {}, el("code", {}, o.sha256)))));
  const verification = d.verification
    ? el("ul", { id: "verification" }, d.verification.map((c) => el("li", { class: c.ok ? "ok" : "bad" }, `${c.ok ? "✓ passed" : "✗ failed"} ${c.check}: ${c.detail}`)))
    : el("p", {}, "No receipt yet.");
  const log = el("pre", { class: "log", id: "log" });
  const card = (title, ...body) => el("div", { class: "card" }, el("h3", {}, title), ...body);
  const nodes = [
    el("h2", {}, `Job ${j.jobId}`),
    card("Status",
      el("dl", {},
        el("dt", {}, "status"), el("dd", { id: "status" }, `${j.status} ${j.statusText}`),
        el("dt", {}, "outcome"), el("dd", { id: "outcome" }, outcome(j.outcome), j.error ? ` — ${j.error}` : ""),
        el("dt", {}, "waits for"), el("dd", {}, j.waiting ? j.waiting.text : "—"),
        el("dt", {}, "image"), el("dd", {}, j.image, j.imageDigest ? ` (${j.imageDigest})` : ""),
        el("dt", {}, "entrypoint"), el("dd", {}, d.entrypoint),
        el("dt", {}, "consumer"), el("dd", {}, d.consumer),
        el("dt", {}, "backend"), el("dd", {}, `${j.backend}: ${j.backendReason}`),
        el("dt", {}, "agreement"), el("dd", {}, d.agreement ? `${d.agreement.agreementId} on ${d.agreement.did}` : "none (operator job)"),
        el("dt", {}, "settlement"), el("dd", { id: "settlement" }, d.settlement ? `${d.settlement.state}: ${d.settlement.reason}${d.settlement.tx ? ` (tx ${d.settlement.tx})` : ""}${d.settlement.computeTx ? ` (compute tx ${d.settlement.computeTx})` : ""}` : "—")),
      buttons),
    decision,
    card("Timeline", timeline),
    card("Log", log),
    card("Outputs", outputs),
    card("Receipt", verification, d.receipt ? el("details", {}, el("summary", {}, "signed receipt"), el("pre", { class: "code" }, JSON.stringify(d.receipt, null, 2))) : null),
  ];
  followLog(id, log);
  return nodes;
}

function followLog(id, pre) {
  if (logSource) logSource.close();
  logSource = new EventSource(`/ui/api/jobs/${encodeURIComponent(id)}/log`);
  logSource.addEventListener("line", (e) => { pre.append(document.createTextNode(JSON.parse(e.data) + "\n")); pre.scrollTop = pre.scrollHeight; });
  logSource.addEventListener("end", () => { logSource.close(); logSource = null; });
}

async function decisionCard(j) {
  const reason = () => prompt("Why? (the consumer reads it)") || "";
  if (j.approval && j.approval.state === "pending") {
    const a = await api(`/ui/api/jobs/${encodeURIComponent(j.jobId)}/algorithm`);
    return el("div", { class: "card", id: "approval" }, el("h3", {}, "Waiting for your approval"),
      el("dl", {}, el("dt", {}, "consumer"), el("dd", {}, a.consumer), el("dt", {}, "algorithm"), el("dd", {}, a.algorithmDid || "raw code"),
        el("dt", {}, "image"), el("dd", {}, a.image),
        el("dt", {}, "image digest"), el("dd", { id: "image-digest" }, a.imageDigest || "not known before it runs on this backend"),
        el("dt", {}, "sha256"), el("dd", { id: "algorithm-sha256" }, a.sha256)),
      el("pre", { class: "code", id: "algorithm-code" }, a.code === null ? "(not text)" : a.code),
      el("button", { id: "approve", onclick: () => act(j.jobId, "approve") }, "Approve"),
      el("button", { id: "reject", onclick: () => act(j.jobId, "reject", reason()) }, "Reject"));
  }
  if (j.waiting && j.waiting.reason === "review") {
    const files = (j.outputs || []);
    const list = el("div", {}, files.map((o) => {
      const pre = el("pre", { class: "code" });
      fetch(`/ui/api/jobs/${encodeURIComponent(j.jobId)}/held/${o.name.split("/").map(encodeURIComponent).join("/")}`, { credentials: "same-origin" })
        .then((r) => r.text()).then((text) => (pre.textContent = text));
      return el("div", {}, el("strong", {}, `${o.name} (${o.size} bytes, sha256 ${o.sha256})`), pre);
    }));
    return el("div", { class: "card", id: "review" }, el("h3", {}, "Outputs waiting for your review"), list,
      el("button", { id: "release", onclick: () => act(j.jobId, "release") }, "Release"),
      el("button", { id: "withhold", onclick: () => act(j.jobId, "withhold", reason()) }, "Withhold"));
  }
  return null;
}

async function decisionsView() {
  const [queued, filtering] = await Promise.all([api("/ui/api/jobs?phase=queued&limit=200"), api("/ui/api/jobs?phase=filtering&limit=200")]);
  const waiting = [...queued.jobs, ...filtering.jobs].filter((j) => j.waiting && ["approval", "review"].includes(j.waiting.reason));
  return [el("h2", {}, "Approvals & reviews"),
    waiting.length === 0 ? el("p", { id: "nothing-waiting" }, "Nothing waits for you.") : null,
    el("table", { id: "decisions" }, el("tr", {}, ["job", "waits for", "consumer", "image", "created"].map((h) => el("th", {}, h))),
      waiting.map((j) => el("tr", { class: "row", onclick: () => (location.hash = `#/job/${j.jobId}`) },
        el("td", {}, el("a", { href: `#/job/${j.jobId}` }, j.jobId.slice(0, 12))),
        el("td", {}, j.waiting.reason), el("td", {}, j.consumer), el("td", {}, j.image), el("td", {}, age(j.dateCreated)))))];
}

async function backendsView() {
  const list = await api("/ui/api/backends");
  return [el("h2", {}, "Backends"), el("table", { id: "backends" },
    el("tr", {}, ["backend", "kind", "health", "running", "queued", "finishing", "capacity", "isolates network", "fetches itself"].map((h) => el("th", {}, h))),
    list.map((b) => el("tr", {}, el("td", {}, b.name, b.default ? " (default)" : ""), el("td", {}, b.kind),
      el("td", { class: b.health === "ok" ? "ok" : "bad" }, b.health), el("td", {}, b.running), el("td", {}, b.queued),
      el("td", {}, b.finishing), el("td", {}, b.capacity), el("td", {}, b.isolatesNetwork ? "yes" : "no (the infrastructure's)"),
      el("td", {}, (b.fetches || []).join(", ") || "—"))))];
}

async function assetsView() {
  const list = await api("/ui/api/assets");
  return [el("h2", {}, "Published assets"), el("table", { id: "assets" },
    el("tr", {}, ["DID", "type", "name", "author", "policy"].map((h) => el("th", {}, h))),
    list.map((a) => el("tr", {}, el("td", {}, el("code", {}, a.did)), el("td", {}, a.type), el("td", {}, a.name), el("td", {}, a.author),
      el("td", {}, a.policy ? el("pre", { class: "code" }, JSON.stringify(a.policy, null, 1)) : "—"))))];
}

const COLORS = { succeeded: "#1b7a2f", failed: "#b00020", stopped: "#8a6d00", timed_out: "#d46b08", out_of_memory: "#722ed1" };
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  if (text !== undefined) n.textContent = String(text);
  return n;
}

async function chartsView() {
  const s = await api("/ui/api/stats");
  const now = Math.floor(Date.now() / 3600000);
  const hours = Array.from({ length: 24 }, (_, i) => now - 23 + i);
  const counts = hours.map((h) => s.perHour.filter((r) => r.hour === h));
  const top = Math.max(1, ...counts.map((c) => c.reduce((a, r) => a + r.count, 0)));
  const outcomes = svg("svg", { width: 620, height: 220, id: "chart-outcomes", role: "img" });
  counts.forEach((rows, i) => {
    let y = 190;
    for (const r of rows) {
      const h = (r.count / top) * 170;
      y -= h;
      const rect = svg("rect", { x: 30 + i * 24, y, width: 18, height: h, fill: COLORS[r.outcome] || "#888" });
      rect.append(svg("title", {}, `${r.count} ${r.outcome}`));
      outcomes.append(rect);
    }
    if (i % 4 === 0) outcomes.append(svg("text", { x: 30 + i * 24, y: 210 }, `${hours[i] % 24}:00`));
  });
  outcomes.append(svg("text", { x: 0, y: 20 }, top));
  const legend = el("p", {}, Object.entries(COLORS).map(([k, c]) => el("span", { style: `color: ${c}; margin-right: 1rem` }, `■ ${k}`)));
  const longest = Math.max(1, ...s.phases.map((p) => p.ms));
  const phases = svg("svg", { width: 620, height: 30 + s.phases.length * 24, id: "chart-phases", role: "img" });
  s.phases.forEach((p, i) => {
    phases.append(svg("text", { x: 0, y: 20 + i * 24 }, p.phase));
    phases.append(svg("rect", { x: 90, y: 8 + i * 24, width: Math.max(1, (p.ms / longest) * 450), height: 16, fill: "#4a90d9" }));
    phases.append(svg("text", { x: 95 + (p.ms / longest) * 450, y: 20 + i * 24 }, `${p.ms} ms`));
  });
  return [el("h2", {}, "Jobs finished per hour (last 24 h)"), outcomes, legend,
    el("h2", {}, "Mean phase durations (last 200 jobs)"), phases];
}

// ---- routing and live updates -------------------------------------------------------------

let rendering = false;
let again = false;
async function render() {
  // A change that arrives while the page is being drawn is drawn right after, not dropped.
  if (rendering) { again = true; return; }
  rendering = true;
  try {
    const [, route, arg] = (location.hash || "#/jobs").split("/");
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.getAttribute("href") === `#/${route}`);
    let nodes;
    if (route === "job" && arg) nodes = await jobView(decodeURIComponent(arg));
    else {
      if (logSource) { logSource.close(); logSource = null; }
      if (route === "decisions") nodes = await decisionsView();
      else if (route === "backends") nodes = await backendsView();
      else if (route === "assets") nodes = await assetsView();
      else if (route === "charts") nodes = await chartsView();
      else nodes = await jobsView(pages[pages.length - 1]);
    }
    view.replaceChildren(...nodes.filter(Boolean));
  } catch (e) {
    view.replaceChildren(el("p", { class: "bad" }, `Could not load: ${e.message}`));
  } finally {
    rendering = false;
    if (again) { again = false; render(); }
  }
}

window.addEventListener("hashchange", render);
document.getElementById("signout").addEventListener("click", async () => {
  await fetch("/ui/logout", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": CSRF } });
  location.reload();
});

// Every view refreshes when a job changes (the job view restarts its log stream, which
// replays the log from its beginning).
const events = new EventSource("/ui/api/events");
events.addEventListener("open", () => document.getElementById("live").classList.add("on"));
events.addEventListener("error", () => document.getElementById("live").classList.remove("on"));
events.addEventListener("jobs", () => render());

render();
