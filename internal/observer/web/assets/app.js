// The observer's status page: one EventSource on /live, each "view" event
// re-renders the page. No framework, nothing fetched from elsewhere; text is
// always set with textContent, never parsed as HTML.
"use strict";

let last = null;      // the latest view
let skew = 0;         // server clock minus this browser's clock, ms

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function serverNow() { return Date.now() + skew; }

function ago(t) {
  if (!t) return "";
  return human(serverNow() - Date.parse(t)) + " ago";
}

function human(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + "s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + "m " + (s % 60) + "s";
  const h = Math.floor(m / 60);
  if (h < 48) return h + "h " + (m % 60) + "m";
  return Math.floor(h / 24) + "d";
}

function clock(t) {
  const d = new Date(t);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function td(label, value, cls) {
  return el("td", { "data-label": label, class: cls }, value);
}

function replaceRows(tbody, rows, empty, cols) {
  tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colSpan: cols }, empty))]));
}

function renderServices(v) {
  const box = document.getElementById("services");
  const cards = (v.services || []).map((s) => {
    const b = (v.breakers || {})[s.service];
    const state = (b && b.state) || s.breaker || "closed";
    let until = null;
    if (state === "open" && b && b.half_open_at) {
      const left = Date.parse(b.half_open_at) - serverNow();
      until = el("span", { class: "half-open-in muted", "data-at": b.half_open_at },
        left > 0 ? "half-open in " + human(left) : "half-open due");
    }
    const notClosed = b && b.not_closed ? Object.keys(b.not_closed).length : 0;
    return el("div", { class: "card service", "data-service": s.service, "data-status": s.status || "up" },
      el("div", { class: "row" },
        el("span", { class: "name" }, s.service),
        el("span", { class: "badge status " + (s.status || "up") }, s.status || "up")),
      el("div", { class: "row" },
        el("span", {}, "breaker ", el("span", { class: "badge breaker", "data-state": state }, state.replace("_", "-"))),
        until),
      el("div", { class: "reason" }, (s.reason || "") + (s.since ? " · since " + ago(s.since) : "") +
        (notClosed > 1 ? " · not closed on " + notClosed + " callers" : "")));
  });
  box.replaceChildren(...(cards.length ? cards : [el("p", { class: "empty" }, "No service seen yet.")]));
}

function renderCampaigns(v) {
  const box = document.getElementById("campaigns");
  const order = ["completed", "failed", "exhausted", "cancelled", "suppressed", "skipped", "in_progress", "queued", "pending", "postponed"];
  const items = (v.campaigns || []).map((c) => {
    const pct = c.total ? Math.round((100 * c.done) / c.total) : 0;
    const names = Object.keys(c.counts || {}).sort((a, b) => {
      const ia = order.indexOf(a), ib = order.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
    });
    const bar = el("div", { class: "fill" });
    bar.style.width = pct + "%";
    const state = c.state || "running";
    const rate = c.max_calls_per_second > 0 ? c.max_calls_per_second + " calls/s" : "no rate limit";
    const conc = c.max_concurrent_calls > 0 ? c.max_concurrent_calls + " at once" : "no concurrency limit";
    return el("div", { class: "campaign", "data-campaign": c.name, "data-control": state },
      el("div", { class: "top" },
        el("b", {}, c.name),
        el("span", { class: "badge control " + state }, state),
        el("span", { class: "pacing muted" }, rate + " · " + conc),
        el("span", { class: "progress-text" }, c.done + " / " + c.total + " done (" + pct + "%)" + (c.done < c.total ? "" : " · finished"))),
      el("div", { class: "bar", role: "progressbar", "aria-valuenow": pct, "aria-valuemin": 0, "aria-valuemax": 100 }, bar),
      el("div", { class: "counts" }, ...names.map((n) => el("span", { "data-count": n }, n.replace("_", " ") + " ", el("b", {}, c.counts[n])))));
  });
  box.replaceChildren(...(items.length ? items : [el("p", { class: "empty" }, "No campaign.")]));
}

function renderAlerts(v) {
  const rows = (v.recent_alerts || []).map((a) => el("tr", { "data-fingerprint": a.fingerprint },
    td("time", clock(a.time)),
    td("status", el("span", { class: "badge " + a.status + " " + a.severity }, a.status)),
    td("severity", a.severity),
    td("service", a.service || ""),
    td("summary", a.summary + (a.count > 1 ? " (×" + a.count + ")" : ""))));
  replaceRows(document.querySelector("#alerts tbody"), rows, "No alert yet.", 5);
}

function renderSinks(v) {
  const rows = (v.sinks || []).map((s) => el("tr", { "data-sink": s.name },
    td("sink", s.name + " (" + s.kind + ")"),
    td("health", el("span", { class: "badge " + (s.healthy ? "healthy" : "unhealthy") }, s.healthy ? "healthy" : "unhealthy")),
    td("backlog", s.backlog, "num"),
    td("delivered", s.delivered, "num"),
    td("dead letters", s.dead_letters, "num"),
    td("silenced", s.silenced || 0, "num"),
    td("last error", s.last_error || "")));
  replaceRows(document.querySelector("#sinks tbody"), rows, "No sink configured.", 7);
}

function matchers(m) {
  return Object.entries(m || {}).filter(([, v]) => v).map(([k, v]) => k + "=" + v).join(", ");
}

function renderSilences(v) {
  const rows = (v.silences || []).map((s) => el("tr", { "data-silence": s.id },
    td("id", s.id),
    td("matchers", matchers(s.matchers)),
    td("ends", "in " + human(Date.parse(s.ends_at) - serverNow())),
    td("by", s.created_by || ""),
    td("comment", s.comment)));
  replaceRows(document.querySelector("#silences tbody"), rows, "No active silence.", 5);
}

function render(v) {
  renderServices(v);
  renderCampaigns(v);
  renderAlerts(v);
  renderSinks(v);
  renderSilences(v);
  document.getElementById("clock").textContent = clock(serverNow());
  const l = v.lease;
  document.getElementById("lease").textContent = !l ? "" :
    l.role === "active" ? "active observer: " + l.self :
      "standby " + l.self + " · active observer: " + (l.active ? l.active.holder + " (" + l.active.addr + ")" : "none (the lease is free)");
  const c = v.consumer || {};
  document.getElementById("consumer").textContent =
    "consumer " + (c.name || "?") + (c.running ? "" : " (not running)") + " · seq " + (c.seq || 0) + " · backlog " + (c.backlog || 0);
}

function setConn(state, text) {
  const c = document.getElementById("conn");
  c.dataset.state = state;
  c.textContent = text;
}

function connect() {
  const es = new EventSource("/live");
  es.addEventListener("view", (e) => {
    const v = JSON.parse(e.data);
    skew = Date.parse(v.now) - Date.now();
    last = v;
    render(v);
    setConn("live", "live");
  });
  es.onerror = () => setConn("lost", "reconnecting…"); // EventSource retries by itself
}

// Countdowns move between views.
setInterval(() => { if (last) render(last); }, 1000);
connect();
