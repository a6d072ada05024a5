// The search page: plain browser JavaScript, no build step.
// It talks to the service only through its public HA3 endpoints (GET/POST /query),
// the thumbnail endpoint and the small /ui/api overview, so every search it makes
// can be repeated with curl or the official SDK: the page prints both.
"use strict";

const state = {
  auth: sessionStorage.getItem("ha3-auth") || null, // "Basic base64(user:password)"
  user: sessionStorage.getItem("ha3-user") || null,
  tables: [],            // [{name, doc_count, vector_field, vector_index, distance, higher_is_better, ...}]
  lastImageB64: null,     // the image of the last image search (for re-running with new filters)
  lastMode: "text",
  polling: null,
};

const $ = (sel) => document.querySelector(sel);

// Requests go to absolute URLs on the page's origin. Opened as http://user:pass@host/ui/,
// the page's own URL carries the credentials, every relative URL would inherit them, and
// fetch() refuses a URL with credentials in it ("Request cannot be constructed from a URL
// that includes credentials"). location.origin never includes them.
const ORIGIN = window.location.origin;
const at = (path) => new URL(path, ORIGIN).toString();

// ---------------------------------------------------------------- HTTP helpers
class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  // X-Requested-With: the server then answers 401 without WWW-Authenticate, so the
  // browser shows our sign-in form instead of its own modal prompt.
  const headers = Object.assign({ "X-Requested-With": "ha3-page" }, options.headers || {});
  if (state.auth) headers["Authorization"] = state.auth;
  const resp = await fetch(at(path), Object.assign({}, options, { headers }));
  if (resp.status === 401) {
    if (state.auth) forgetLogin(); // a stored login that stopped working is no use either
    showLogin(state.auth ? "User or password refused (401)." : "");
    throw new HttpError(401, "authentication required");
  }
  return resp;
}

async function apiJson(path, options) {
  const resp = await api(path, options);
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (!resp.ok) {
    const msg = errorText(body) || `${resp.status} ${resp.statusText}`;
    throw new HttpError(resp.status, msg);
  }
  return body;
}

function errorText(body) {
  if (!body) return "";
  if (Array.isArray(body.errors) && body.errors.length) {
    return body.errors.map((e) => `error ${e.code}: ${e.message}`).join("; ");
  }
  if (body.detail) return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  if (body.message) return body.message;
  return "";
}

// ---------------------------------------------------------------- login
function showLogin(message, isError = true) {
  $("#login").classList.remove("hidden");
  $("#view-search").classList.add("hidden");
  $("#view-admin").classList.add("hidden");
  $("#sign-out").classList.add("hidden");
  $("#login-error").textContent = message || "";
  $("#login-error").classList.toggle("error", isError);
}

function hideLogin() {
  $("#login").classList.add("hidden");
  $("#sign-out").classList.remove("hidden");
  switchView(currentView());
}

// Tries user:password on the overview; keeps the login for this tab only when it works.
async function signIn(user, password) {
  // btoa needs Latin-1: encode UTF-8 first so non-ASCII passwords work.
  state.auth = "Basic " + b64FromBytes(new TextEncoder().encode(`${user}:${password}`));
  state.user = user;
  try {
    await loadTables();
  } catch (e) {
    state.auth = null;
    throw e;
  }
  sessionStorage.setItem("ha3-auth", state.auth);
  sessionStorage.setItem("ha3-user", user);
}

function forgetLogin() {
  sessionStorage.removeItem("ha3-auth");
  sessionStorage.removeItem("ha3-user");
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    await signIn($("#login-user").value, $("#login-password").value);
    $("#login-password").value = "";
    hideLogin();
  } catch (e) {
    if (!(e instanceof HttpError && e.status === 401)) $("#login-error").textContent = String(e.message || e);
  }
});

// ---------------------------------------------------------------- sign out
// Forgets the login and everything the page kept: its tab storage, results, thumbnails
// (blob URLs), the last query image, the API examples, the admin view. The server's answer
// carries Clear-Site-Data, which asks the browser to drop its HTTP cache of this origin
// (thumbnails are cached privately for an hour); browsers honour it on https and localhost.
async function signOut() {
  clearTimeout(state.polling);
  forgetLogin();
  Object.assign(state, { auth: null, user: null, tables: [], instanceId: null, lastImageB64: null,
                         lastMode: "text", polling: null });
  releaseImages(document);
  $("#results").innerHTML = "";
  $("#q-preview").removeAttribute("src");
  $("#q-preview").classList.add("hidden");
  for (const id of ["#api-query", "#api-curl", "#api-sdk"]) $(id).textContent = "";
  $("#api-box").classList.add("hidden");
  for (const id of ["#q-text", "#q-cate", "#q-file", "#login-user", "#login-password"]) $(id).value = "";
  $("#q-table").innerHTML = "";
  $("#admin-tables tbody").innerHTML = "";
  $("#admin-tasks").innerHTML = "";
  $("#admin-message").textContent = "";
  $("#who").textContent = "";
  setStatus("");
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.view === "search");
  showLogin("Signed out.", false);
  try {
    await fetch(at("/ui/api/sign-out"), { method: "POST", headers: { "X-Requested-With": "ha3-page" } });
  } catch (e) { /* the page's own state is gone already */ }
}
$("#sign-out").addEventListener("click", signOut);

// Images shown from blob: URLs hold their bytes until revoked.
function releaseImages(root) {
  for (const img of root.querySelectorAll("img")) {
    if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  }
}

// ---------------------------------------------------------------- views
function currentView() { return $("#tab-admin").classList.contains("active") ? "admin" : "search"; }

function switchView(name) {
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.view === name);
  $("#view-search").classList.toggle("hidden", name !== "search");
  $("#view-admin").classList.toggle("hidden", name !== "admin");
  if (name === "admin") loadAdmin();
}
for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => switchView(tab.dataset.view));

// ---------------------------------------------------------------- base64
function b64FromBytes(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
const b64Text = (text) => b64FromBytes(new TextEncoder().encode(text));

// ---------------------------------------------------------------- tables
async function loadTables() {
  const body = await apiJson("/ui/api/tables");
  state.tables = body.tables || [];
  state.instanceId = body.instance_id;
  const select = $("#q-table");
  const keep = select.value;
  select.innerHTML = "";
  for (const t of state.tables) {
    const opt = document.createElement("option");
    opt.value = t.name; opt.textContent = `${t.name} (${t.doc_count})`;
    select.appendChild(opt);
  }
  if (keep && state.tables.some((t) => t.name === keep)) select.value = keep;
  $("#who").textContent = body.user ? `signed in as ${body.user}` : "";
  if (!state.tables.length) setStatus("No tables yet: create one (ha3-adapter demo does) and come back.");
  return state.tables;
}

function currentTable() { return state.tables.find((t) => t.name === $("#q-table").value) || state.tables[0]; }

// ---------------------------------------------------------------- HA3 query building
// One place builds the HA3 query string from the controls; the page sends exactly it.
function buildHaQuery(table, payloadB64, modal) {
  const n = Math.max(1, Math.min(100, parseInt($("#q-n").value, 10) || 10));
  const cate = $("#q-cate").value.trim();
  const clauses = [
    `config=start:0,hit:${n},format:json`,
    `query=${table.vector_index}:'${payloadB64}&modal=${modal}&n=${n}&search_params={}'`,
  ];
  if (cate !== "") {
    const ids = cate.split(/[\s,|]+/).filter(Boolean);
    for (const id of ids) if (!/^-?\d+$/.test(id)) throw new Error(`cate_id must be a whole number, got "${id}"`);
    clauses.push(ids.length === 1 ? `filter=cate_id=${ids[0]}` : `filter=in(cate_id, "${ids.join("|")}")`);
  }
  clauses.push(`kvpairs=formula:proxima_score(${table.vector_index})`);
  clauses.push(`sort=${table.higher_is_better ? "-" : "+"}RANK`);
  clauses.push(`cluster=${table.cluster || table.name}`);
  return clauses.join("&&");
}

// Long queries (Base64 images) go by POST like the SDK's method='POST': URLs have size limits.
const GET_LIMIT = 4000;

async function runHaQuery(query) {
  if (query.length <= GET_LIMIT) {
    return apiJson("/query?" + new URLSearchParams({ query }).toString());
  }
  return apiJson("/query", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ assemblyQuery: query }),
  });
}

function shorten(query) {
  // Show Base64 images shortened; the real request carries all of it.
  return query.replace(/'([A-Za-z0-9+/=]{80,})&/g, (m, b64) => `'${b64.slice(0, 40)}…(${b64.length} chars)&`);
}

function showApi(query) {
  const origin = window.location.origin;
  const shown = shorten(query);
  const post = query.length > GET_LIMIT;
  $("#api-query").textContent = shown;
  const user = state.user || "USER";
  $("#api-curl").textContent = post
    ? `curl -u ${user}:PASSWORD -H 'Content-Type: application/json' \\\n  -X POST '${origin}/query' \\\n  -d '{"assemblyQuery": "${shown.replace(/"/g, '\\"')}"}'`
    : `curl -u ${user}:PASSWORD -G '${origin}/query' \\\n  --data-urlencode "query=${shown.replace(/"/g, '\\"')}"`;
  const host = window.location.host;
  $("#api-sdk").textContent =
`from alibabacloud_ha3engine import models, client

config = models.Config(endpoint="${host}", instance_id="", protocol="http",
                       access_user_name="${user}", access_pass_word="PASSWORD")
ha3 = client.Client(config)
query = ${JSON.stringify(shown)}
request = models.SearchRequestModel({}, models.SearchQuery(query=query)${post ? ', method="POST"' : ""})
print(ha3.search(request).body)`;
  $("#api-box").classList.remove("hidden");
}

// ---------------------------------------------------------------- searching
function setStatus(text, isError) {
  const el = $("#status");
  el.textContent = text;
  el.classList.toggle("error", !!isError);
}

async function search(payloadB64, modal) {
  const table = currentTable();
  if (!table) { setStatus("No table to search.", true); return; }
  let query;
  try { query = buildHaQuery(table, payloadB64, modal); }
  catch (e) { setStatus(e.message, true); return; }
  showApi(query);
  setStatus("Searching…");
  const started = performance.now();
  try {
    const body = await runHaQuery(query);
    if (body.errors && body.errors.length && !(body.result && body.result.items && body.result.items.length)) {
      setStatus(errorText(body), true);
      renderResults(table, []);
      return;
    }
    const items = (body.result && body.result.items) || [];
    const ms = Math.round(performance.now() - started);
    const total = body.result ? body.result.totalHits : items.length;
    setStatus(`${items.length} shown of ${total} hits in ${ms} ms (search time ${body.result ? body.result.searchtime : "?"} s)`);
    renderResults(table, items);
  } catch (e) {
    if (!(e instanceof HttpError && e.status === 401)) setStatus(String(e.message || e), true);
  }
}

function itemScore(item) {
  if (item.sortExprValues && item.sortExprValues.length) return Number(item.sortExprValues[0]);
  if (item.variableValue && item.variableValue.proxima_score !== undefined) return Number(item.variableValue.proxima_score);
  return NaN;
}

function renderResults(table, items) {
  const grid = $("#results");
  releaseImages(grid);
  grid.innerHTML = "";
  for (const item of items) {
    const fields = item.fields || {};
    const pk = fields[table.primary_key];
    const card = document.createElement("figure");
    card.className = "hit";
    card.dataset.pk = pk;
    const img = document.createElement("img");
    img.alt = `document ${pk}`;
    img.loading = "lazy";
    loadThumbnail(img, table.name, pk, 256);
    const cap = document.createElement("figcaption");
    const score = itemScore(item);
    cap.innerHTML = `<span class="pk">${table.primary_key} <b></b></span>` +
      `<span class="cate">cate_id <b></b></span>` +
      `<span class="score">proxima_score <b></b></span>`;
    cap.querySelector(".pk b").textContent = pk;
    cap.querySelector(".cate b").textContent = fields.cate_id !== undefined ? fields.cate_id : "–";
    cap.querySelector(".score b").textContent = Number.isNaN(score) ? "–" : score.toFixed(4);
    const more = document.createElement("button");
    more.type = "button"; more.className = "more"; more.textContent = "More like this";
    more.addEventListener("click", () => moreLikeThis(table.name, pk));
    cap.appendChild(more);
    card.append(img, cap);
    grid.appendChild(card);
  }
}

// Thumbnails go through fetch (not <img src>) so the Authorization header travels with them.
async function loadThumbnail(img, table, pk, size) {
  try {
    const resp = await api(`/ui/thumbnail/${encodeURIComponent(table)}/${encodeURIComponent(pk)}?size=${size}`);
    if (!resp.ok) { img.classList.add("broken"); img.title = `thumbnail: ${resp.status}`; return; }
    img.src = URL.createObjectURL(await resp.blob());
  } catch (e) { img.classList.add("broken"); }
}

async function moreLikeThis(table, pk) {
  // Search by a result: its own image (as the thumbnail endpoint serves it) becomes the query.
  const resp = await api(`/ui/thumbnail/${encodeURIComponent(table)}/${encodeURIComponent(pk)}?size=384`);
  if (!resp.ok) { setStatus(`cannot read the image of ${pk}: ${resp.status}`, true); return; }
  const bytes = new Uint8Array(await resp.arrayBuffer());
  state.lastImageB64 = b64FromBytes(bytes); state.lastMode = "image";
  showPreview(URL.createObjectURL(new Blob([bytes], { type: "image/jpeg" })));
  $("#q-text").value = "";
  await search(state.lastImageB64, "image");
}

// Uploaded images are shrunk in the browser (longest side 384 px, JPEG): the model sees
// 224 px anyway, and a smaller query keeps the request (and the shown curl) short.
async function imageFileToB64(file) {
  const bitmap = await createImageBitmap(file);
  const scale = Math.min(1, 384 / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
  return { b64: b64FromBytes(new Uint8Array(await blob.arrayBuffer())), url: URL.createObjectURL(blob) };
}

async function searchByFile(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) { setStatus(`${file.name} is not an image`, true); return; }
  let encoded;
  try { encoded = await imageFileToB64(file); }
  catch (e) { setStatus(`cannot read ${file.name} as an image`, true); return; }
  state.lastImageB64 = encoded.b64; state.lastMode = "image";
  showPreview(encoded.url);
  $("#q-text").value = "";
  await search(encoded.b64, "image");
}

function showPreview(url) {
  const img = $("#q-preview");
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.src = url; img.classList.remove("hidden");
}

$("#search-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("#q-text").value.trim();
  if (text) {
    state.lastMode = "text"; state.lastImageB64 = null;
    $("#q-preview").classList.add("hidden");
    await search(b64Text(text), "text");
  } else if (state.lastImageB64) {
    await search(state.lastImageB64, "image"); // re-run the image search with new n / filter
  } else {
    setStatus("Type some text or drop an image.", true);
  }
});

$("#q-file").addEventListener("change", (ev) => searchByFile(ev.target.files[0]));
const drop = $("#drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault(); drop.classList.remove("over");
  if (ev.dataTransfer.files.length) searchByFile(ev.dataTransfer.files[0]);
});

// ---------------------------------------------------------------- admin
async function loadAdmin() {
  let tables;
  try { tables = await loadTables(); } catch (e) { return; }
  const body = $("#admin-tables tbody");
  body.innerHTML = "";
  for (const t of tables) {
    const tr = document.createElement("tr");
    const gens = (t.generations || []).map((g) => `${g.generation}${g.live ? " (live)" : ""}: ${g.doc_count}`).join("\n");
    for (const v of [t.name, t.doc_count, t.index_type, t.dimension, t.distance, gens]) {
      const td = document.createElement("td"); td.textContent = v === undefined ? "" : v; tr.appendChild(td);
    }
    const td = document.createElement("td");
    if (t.pipeline) {
      const b = document.createElement("button");
      b.type = "button"; b.textContent = "Rebuild"; b.className = "rebuild";
      b.addEventListener("click", () => startRebuild(t.name, t.pipeline));
      td.appendChild(b);
    } else {
      td.textContent = "no stored pipeline";
      td.title = "put a pipeline at <data dir>/pipelines/<table>.json";
    }
    tr.appendChild(td);
    body.appendChild(tr);
  }
  await loadTasks();
}

async function startRebuild(table, pipeline) {
  // The same call as the OpenAPI SDK's reindex: POST .../instances/{id}/tables/{t}/reindex.
  const url = `/openapi/ha3/instances/${encodeURIComponent(state.instanceId || "ha3-adapter")}` +
    `/tables/${encodeURIComponent(table)}/reindex`;
  try {
    await apiJson(url, { method: "POST", headers: { "Content-Type": "application/json" },
                         body: JSON.stringify({ pipeline }) });
    $("#admin-message").textContent = `rebuild of ${table} started`;
  } catch (e) {
    $("#admin-message").textContent = `rebuild of ${table} not started: ${e.message}`;
    return;
  }
  await loadTasks();
}

async function loadTasks() {
  let body;
  try { body = await apiJson("/ui/api/tasks"); } catch (e) { return; }
  const box = $("#admin-tasks");
  box.innerHTML = "";
  const tasks = body.tasks || [];
  if (!tasks.length) box.textContent = "No tasks yet.";
  let running = false;
  for (const task of tasks) {
    const row = document.createElement("div");
    row.className = "task";
    const done = task.read || 0, total = task.total || 0;
    const pct = task.progress != null ? Math.round(100 * task.progress) : 0;
    const label = document.createElement("span");
    label.textContent = `${task.kind || "task"} ${task.table || ""} (${task.taskId || ""}) — ${task.state}: ` +
      `${done}/${total || "?"} read, ${task.indexed || 0} indexed` +
      (task.failed ? `, ${task.failed} failed` : "") + (task.generation ? `, generation ${task.generation}` : "") +
      (task.message ? ` — ${task.message}` : "");
    const bar = document.createElement("progress");
    bar.max = 100; bar.value = pct;
    row.append(label, bar);
    box.appendChild(row);
    if (task.state === "running" || task.state === "pending" || task.state === "queued") running = true;
  }
  clearTimeout(state.polling);
  if (running && currentView() === "admin") state.polling = setTimeout(loadAdmin, 1000);
}

$("#admin-refresh").addEventListener("click", loadAdmin);

// ---------------------------------------------------------------- start
// http://user:pass@host/ui/: sign in with those, then load the page again without them, so
// the password leaves the page's URL (history.replaceState may not change credentials).
function credentialsInUrl() {
  const url = new URL(document.URL);
  if (!url.username && !url.password) return null;
  return { user: decodeURIComponent(url.username), password: decodeURIComponent(url.password) };
}

(async () => {
  const given = credentialsInUrl();
  if (given) {
    try {
      await signIn(given.user, given.password);
      window.location.replace(ORIGIN + window.location.pathname + window.location.search + window.location.hash);
    } catch (e) {
      $("#login-user").value = given.user;
      if (e instanceof HttpError && e.status === 401) showLogin("The user and password in the address were refused (401).");
      else setStatus(String(e.message || e), true);
    }
    return;
  }
  try { await loadTables(); hideLogin(); } catch (e) {
    if (!(e instanceof HttpError && e.status === 401)) setStatus(String(e.message || e), true);
  }
})();
