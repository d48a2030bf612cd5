// mcpgate dashboard: reads /admin/events (SSE over fetch, so the token travels in the
// Authorization header, never in a URL) and renders each snapshot. Every value from the gateway
// is set as text, never as HTML: caller names and tools come from clients.
"use strict";

const $ = (id) => document.getElementById(id);
let token = null;
let previous = null;
let controller = null;

function takeToken() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    sessionStorage.setItem("mcpgate-admin-token", hash.get("token"));
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("mcpgate-admin-token");
}

function showLogin(message) {
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  setState("signed out", "down");
}

function setState(text, cls) {
  const s = $("state");
  s.textContent = text;
  s.className = "state " + (cls || "");
}

function cell(row, value, cls) {
  const td = row.insertCell();
  td.textContent = value === null || value === undefined ? "–" : String(value);
  if (cls) td.className = cls;
  return td;
}

function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s >= 1) return s.toFixed(2) + " s";
  return (s * 1000).toFixed(s < 0.01 ? 1 : 0) + " ms";
}

function duration(total) {
  const d = Math.floor(total / 86400), h = Math.floor(total % 86400 / 3600),
    m = Math.floor(total % 3600 / 60), s = total % 60;
  return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + s + "s";
}

function render(snap) {
  $("generation").textContent = snap.generation;
  $("uptime").textContent = duration(snap.uptime_seconds);
  $("connections").textContent = snap.open_connections;
  $("sessions").textContent = snap.active_sessions;
  setState(snap.draining ? "draining" : "live", snap.draining ? "down" : "live");

  const body = $("routes").tBodies[0];
  body.replaceChildren();
  for (const [name, r] of Object.entries(snap.routes)) {
    const row = body.insertRow();
    row.dataset.route = name;
    cell(row, name, "name");
    let rate = null;
    const before = previous && previous.routes[name];
    if (before) {
      const dt = (snap.at_unix_ms - previous.at_unix_ms) / 1000;
      if (dt > 0) rate = ((r.requests - before.requests) / dt).toFixed(1);
    }
    cell(row, rate, "rate");
    cell(row, r.requests, "requests");
    cell(row, r.errors, "errors");
    cell(row, r.denials, "denials");
    cell(row, r.rate_limited, "limited");
    cell(row, seconds(r.p50_seconds), "p50");
    cell(row, seconds(r.p90_seconds), "p90");
    cell(row, seconds(r.p99_seconds), "p99");
    cell(row, r.sse_streams, "streams");
    cell(row, r.sessions, "sessions");
    const h = r.health || {};
    const up = h.reachable === null || h.reachable === undefined ? "unknown" : h.reachable ? "reachable" : "unreachable";
    cell(row, up, "health " + (h.reachable === true ? "ok" : h.reachable === false ? "bad" : "muted"));
    cell(row, h.average_latency_ms !== null && h.average_latency_ms !== undefined ? h.average_latency_ms.toFixed(1) + " ms" : null, "latency");
    cell(row, h.last_error, "wrap last-error");
  }

  const plugins = $("plugins").tBodies[0];
  plugins.replaceChildren();
  $("no-plugins").hidden = snap.plugins.length > 0;
  for (const p of snap.plugins) {
    const row = plugins.insertRow();
    row.dataset.plugin = p.name;
    cell(row, p.name);
    cell(row, p.calls.calls, "calls");
    cell(row, p.calls.failures, p.calls.failures ? "bad" : "");
    cell(row, seconds(p.calls.p50_seconds));
    cell(row, seconds(p.calls.p99_seconds));
    cell(row, p.sha256.slice(0, 12), "muted");
  }

  const r = snap.last_reload;
  if (r) {
    $("reload-status").textContent = "Last reload (" + r.trigger + ", " + new Date(r.at_unix_ms).toLocaleTimeString() +
      "): " + r.result + " — generation " + r.generation +
      (r.restart_required.length ? "; needs a restart: " + r.restart_required.length + " key(s)" : "");
    $("reload-status").className = r.result === "applied" ? "ok" : "bad";
    const list = $("reload-errors");
    list.replaceChildren();
    for (const e of r.errors.concat(r.restart_required)) {
      const li = document.createElement("li");
      li.textContent = e;
      list.appendChild(li);
    }
  }

  const decisions = $("decisions").tBodies[0];
  decisions.replaceChildren();
  for (const d of snap.decisions) {
    const row = decisions.insertRow();
    cell(row, new Date(d.at_unix_ms).toLocaleTimeString());
    cell(row, d.route);
    cell(row, d.caller, "wrap");
    cell(row, d.method, "wrap");
    cell(row, d.tool, "wrap");
    cell(row, d.decision, d.decision === "allowed" ? "ok" : d.decision === "error" ? "bad" : "");
    cell(row, d.stage);
    cell(row, d.status);
    cell(row, d.duration_ms.toFixed(1));
  }
  previous = snap;
  document.body.dataset.snapshots = String(Number(document.body.dataset.snapshots || 0) + 1);
}

async function stream() {
  if (controller) controller.abort();
  controller = new AbortController();
  let response;
  try {
    response = await fetch("/admin/events", {
      headers: { Authorization: "Bearer " + token },
      signal: controller.signal,
    });
  } catch (e) {
    setState("disconnected", "down");
    setTimeout(stream, 2000);
    return;
  }
  if (response.status === 401) {
    sessionStorage.removeItem("mcpgate-admin-token");
    showLogin("That token was refused.");
    return;
  }
  if (!response.ok) {
    setState("error " + response.status, "down");
    setTimeout(stream, 5000);
    return;
  }
  $("login").hidden = true;
  $("main").hidden = false;
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (e) {
      break;
    }
    if (chunk.done) break;
    buffer += decoder.decode(chunk.value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data) render(JSON.parse(data));
    }
  }
  setState("disconnected", "down");
  setTimeout(stream, 2000);
}

async function reload() {
  const button = $("reload");
  button.disabled = true;
  try {
    await fetch("/admin/reload", { method: "POST", headers: { Authorization: "Bearer " + token } });
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("mcpgate-admin-token", token);
    stream();
  });
  $("reload").addEventListener("click", reload);
  token = takeToken();
  if (token) stream(); else showLogin();
});
