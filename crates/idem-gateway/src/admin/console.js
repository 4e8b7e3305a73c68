// The idem admin console: a small static page over the keys API. Nothing
// is fetched from elsewhere; every value from the store is inserted as
// text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("idem-admin-token") || "";

function say(text) { $("status").textContent = text; }

async function api(method, path) {
  const init = { method, headers: { Authorization: "Bearer " + token } };
  if (arguments.length > 2) {
    init.body = JSON.stringify(arguments[2]);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function query(k) {
  return "scope=" + encodeURIComponent(k.scope) + "&token=" + k.token;
}

function keyPath(k) { return "/v1/keys/" + encodeURIComponent(k.key); }

async function release(k) {
  try {
    await api("POST", keyPath(k) + "/release?" + query(k));
    say("released " + k.key);
  } catch (e) { say("release of " + k.key + " refused: " + e.message); }
  refresh();
}

let resolving = null;
function openResolve(k) {
  resolving = k;
  $("resolve-key").textContent = k.key;
  $("resolve").showModal();
}

async function resolve() {
  const k = resolving;
  const headers = {};
  if ($("resolve-type").value) headers["content-type"] = $("resolve-type").value;
  try {
    await api("POST", keyPath(k) + "/resolve?" + query(k), {
      status: Number($("resolve-status").value), headers, body: $("resolve-body").value,
    });
    say("resolved " + k.key);
  } catch (e) { say("resolve of " + k.key + " refused: " + e.message); }
  refresh();
}

function fill(table, rows, render) {
  const body = $(table).tBodies[0];
  body.replaceChildren();
  for (const k of rows) render(body.insertRow(), k);
  if (rows.length === 0) cell(body.insertRow(), "none");
}

async function outcomes() {
  const text = await (await fetch("/metrics")).text();
  const rows = [];
  for (const line of text.split("\n")) {
    const m = /^idem_requests_total\{[^}]*outcome="([^"]+)"[^}]*\} (\S+)/.exec(line);
    if (m) rows.push([m[1], Number(m[2])]);
  }
  const body = $("outcomes").tBodies[0];
  body.replaceChildren();
  for (const [outcome, n] of rows) {
    const row = body.insertRow();
    cell(row, outcome);
    cell(row, String(n));
  }
}

async function refresh() {
  outcomes().catch(() => {});
  if (!token) { say("enter the admin token"); return; }
  try {
    const unknown = await api("GET", "/v1/keys?state=outcome-unknown&limit=100");
    fill("unknown", unknown.keys, (row, k) => {
      row.dataset.key = k.key;
      cell(row, k.claimed_at);
      cell(row, k.key, "key");
      cell(row, k.scope, "key");
      cell(row, k.holder || "-", "holder");
      cell(row, String(k.token));
      const actions = row.insertCell();
      const r = document.createElement("button");
      r.textContent = "Release";
      r.className = "release";
      r.onclick = () => release(k);
      const s = document.createElement("button");
      s.textContent = "Resolve";
      s.className = "resolve";
      s.onclick = () => openResolve(k);
      actions.append(r, s);
    });
    const inflight = await api("GET", "/v1/keys?state=in-flight&limit=100");
    fill("inflight", inflight.keys, (row, k) => {
      row.dataset.key = k.key;
      cell(row, k.claimed_at);
      cell(row, k.key, "key");
      cell(row, k.scope, "key");
      cell(row, k.holder || "-", "holder");
      cell(row, k.lease_until);
    });
    if (!$("status").textContent.startsWith("re")) say("");
  } catch (e) { say(e.message); }
}

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = token;
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("idem-admin-token", token);
    say("");
    refresh();
  });
  $("resolve-form").addEventListener("submit", (ev) => {
    if (ev.submitter && ev.submitter.value === "ok") resolve();
  });
  refresh();
  setInterval(refresh, 5000);
});
