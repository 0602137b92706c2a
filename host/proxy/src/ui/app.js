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

function render(mesh) {
  const root = document.getElementById("mesh");
  root.replaceChildren();
  if (mesh.functions.length === 0) {
    root.append("No functions routed yet.");
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
      " · changed ", el("b", {}, f.modified || "?"),
      " · fail-safes ", el("b", { "data-field": "fail-safes", class: f["fail-safes"] ? "alert" : "" }, String(f["fail-safes"])),
      " · shadow diffs ", el("b", { "data-field": "shadow-differed" }, `${f.shadow.differed} of ${f.shadow.compared}`),
      guard ? el("span", { class: "alert", "data-field": "guard" }, ` · guard tripped: ${guard}`) : "");
    const table = el("table", {},
      el("tr", {}, el("th", {}, "target"), el("th", {}, "traffic"), el("th", {}, "last 10 minutes"),
        el("th", {}, "requests"), el("th", {}, "errors"), el("th", {}, "per second, last minute")));
    for (const s of f.series) {
      const lastMinute = s.requests.slice(-6).reduce((a, b) => a + b, 0) / 60;
      const cell = (cls, text) => el("td", { class: cls, "data-function": f.function, "data-target": s.target, "data-traffic": s.traffic }, text);
      table.append(el("tr", {},
        el("td", {}, s.target),
        el("td", { class: `traffic-${s.traffic}` }, s.traffic),
        el("td", {}, spark(s.requests, s.errors)),
        cell("num total", String(s.total)),
        cell(`num errors ${s["errors-total"] ? "alert" : ""}`, String(s["errors-total"])),
        cell("num rate", lastMinute.toFixed(2))));
    }
    root.append(el("section", { class: "function", "data-function": f.function },
      el("h2", {}, f.function), facts, table));
  }
}

async function refresh() {
  try {
    const res = await fetch("/v1/mesh", { headers: token ? { authorization: `Bearer ${token}` } : {} });
    if (!res.ok) throw new Error(`/v1/mesh answered ${res.status}${res.status === 401 ? " (add #token=... to the address)" : ""}`);
    render(await res.json());
    document.getElementById("error").textContent = "";
    document.getElementById("updated").textContent = `Updated ${new Date().toLocaleTimeString()}.`;
  } catch (e) {
    document.getElementById("error").textContent = String(e.message || e);
  }
}

refresh();
setInterval(refresh, 2000);
