// The live view: polls /v1/mesh every 2 s and draws it. No framework, no
// CDN. An admin token, if the host needs one, comes from the page's
// fragment (/ui#token=...), never from the page itself.
"use strict";

const token = new URLSearchParams(location.hash.slice(1)).get("token");

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("data-") || k === "class") e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

function spark(requests, errors) {
  const w = 180, h = 28, n = requests.length;
  const max = Math.max(1, ...requests);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  const line = (values, colour) => {
    const p = document.createElementNS(ns, "polyline");
    p.setAttribute("fill", "none");
    p.setAttribute("stroke", colour);
    p.setAttribute("stroke-width", "1.5");
    p.setAttribute("points", values.map((v, i) => `${(i * (w - 2)) / (n - 1) + 1},${h - 2 - (v * (h - 4)) / max}`).join(" "));
    svg.append(p);
  };
  line(requests, "#2f6fdf");
  line(errors, "#b91c1c");
  return svg;
}

// Every time on the page in one form: ISO 8601, UTC, to the second.
function iso(date) {
  return date.toISOString().replace(/\.\d+Z$/, "Z");
}

function render(mesh) {
  const root = document.getElementById("mesh");
  root.replaceChildren();
  for (const u of mesh.unloadable || []) {
    root.append(el("section", { class: "function", "data-function": u.function },
      el("h2", {}, u.function),
      el("div", { class: "alert", "data-field": "unloadable" },
        `nothing served: route version ${u.newest ?? "?"} could not be loaded (${u.reason}), and no older one either`)));
  }
  if (mesh.functions.length === 0) {
    if (!(mesh.unloadable || []).length) root.append("No functions routed yet.");
    return;
  }
  for (const f of mesh.functions) {
    const versions = Object.entries(f.versions).map(([r, q]) => `${r} ${q}`).join(", ");
    const guard = f.guard && (f.guard.production || f.guard.synthetic);
    const facts = el("div", { class: "facts" },
      "mode ", el("b", { class: `mode-${f.mode}`, "data-field": "mode" }, f.mode),
      " · versions ", el("b", {}, versions),
      " · route version ", el("b", { "data-field": "route-version" }, String(f["route-version"])),
      " · policy ", el("b", { title: f.policy }, f.policy.slice(0, 19) + "…"),
      " · changed ", el("b", { "data-field": "modified" }, f.modified && !isNaN(Date.parse(f.modified)) ? iso(new Date(f.modified)) : (f.modified || "?")),
      " · fail-safes ", el("b", { "data-field": "fail-safes", class: f["fail-safes"] ? "alert" : "" }, String(f["fail-safes"])),
      " · shadow diffs ", el("b", { "data-field": "shadow-differed" }, `${f.shadow.differed} of ${f.shadow.compared}`),
      guard ? el("span", { class: "alert", "data-field": "guard" }, ` · guard tripped (circuit open: the candidate gets no ${f.guard.production ? "production" : "synthetic"} traffic here): ${guard}`) : "");
    const held = f["held-back"]
      ? el("div", { class: "alert", "data-field": "held-back" },
        `newer route version ${f["held-back"].newest ?? "?"} not served (${f["held-back"].reason}); version ${f["route-version"]} keeps serving`)
      : "";
    const table = el("table", {},
      el("tr", {}, el("th", {}, "target"), el("th", {}, "traffic"), el("th", {}, "last 10 minutes"),
        el("th", {}, "requests"), el("th", {}, "errors (5xx)"), el("th", {}, "client errors (4xx)"),
        el("th", {}, "per second, last minute")));
    for (const s of f.series) {
      const lastMinute = s.requests.slice(-6).reduce((a, b) => a + b, 0) / 60;
      const cell = (cls, text) => el("td", { class: cls, "data-function": f.function, "data-target": s.target, "data-traffic": s.traffic }, text);
      table.append(el("tr", {},
        el("td", {}, s.traffic === "none" ? "—" : s.target),
        el("td", { class: `traffic-${s.traffic}` }, s.traffic === "none" ? "refused before deciding" : s.traffic),
        el("td", {}, spark(s.requests, s.errors)),
        cell("num total", String(s.total)),
        cell(`num errors ${s["errors-total"] ? "alert" : ""}`, String(s["errors-total"])),
        cell("num client-errors", String(s["client-errors-total"])),
        cell("num rate", lastMinute.toFixed(2))));
    }
    root.append(el("section", { class: "function", "data-function": f.function },
      el("h2", {}, f.function), facts, held, table));
  }
}

async function refresh() {
  try {
    const res = await fetch("/v1/mesh", { headers: token ? { authorization: `Bearer ${token}` } : {} });
    if (!res.ok) throw new Error(`/v1/mesh answered ${res.status}${res.status === 401 ? " (add #token=... to the address)" : ""}`);
    render(await res.json());
    document.getElementById("error").textContent = "";
    document.getElementById("updated").textContent = `Updated ${iso(new Date())}.`;
  } catch (e) {
    document.getElementById("error").textContent = String(e.message || e);
  }
}

refresh();
setInterval(refresh, 2000);
