// P3AK API console. Served as a file (the CSP allows no inline script). Every value from the
// kernel is written with textContent, never as HTML. The token lives in sessionStorage only.
"use strict";

const KEY = "p3ak-api-token";
const $ = (id) => document.getElementById(id);
let conversation = null;
let oldest = null;
let documentsAfter = null;
let shownEntry = null;

function token() { return sessionStorage.getItem(KEY); }

function flash(text) {
  const box = $("flash");
  box.textContent = text;
  box.hidden = !text;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c === undefined || c === null ? "" : String(c);
    tr.appendChild(td);
  }
  return tr;
}

function when(ms) { return ms ? new Date(ms).toLocaleString() : ""; }

async function api(method, path, body) {
  const headers = { "Authorization": "Bearer " + token() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401) { signOut(); throw new Error("the token was refused: sign in again"); }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.message || ("HTTP " + response.status));
  return data;
}

function signOut() {
  sessionStorage.removeItem(KEY);
  show();
}

function show() {
  const signedIn = !!token();
  $("login").hidden = signedIn;
  $("tabs").hidden = !signedIn;
  $("logout").hidden = !signedIn;
  const tab = (location.hash || "#status").slice(1);
  for (const page of document.querySelectorAll("section.page")) page.hidden = !signedIn || page.id !== tab;
  for (const a of document.querySelectorAll("#tabs a")) {
    if (a.dataset.tab === tab) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  if (signedIn) load(tab).catch((e) => flash(e.message));
}

async function load(tab) {
  flash("");
  if (tab === "status") return loadStatus();
  if (tab === "vault") return loadDocuments(true);
  if (tab === "audit") return loadAudit(null);
  if (tab === "tokens") return loadTokens();
  if (tab === "chat") { if (!conversation) newConversation(); }
}

async function loadStatus() {
  const s = await api("GET", "/v1/status");
  const summary = $("status-summary");
  summary.replaceChildren();
  const add = (k, v) => { summary.appendChild(el("dt", k)); summary.appendChild(el("dd", v)); };
  add("kernel pid", s.pid);
  add("agents", s.agents.join(", "));
  add("approvals", s.hitl && s.hitl.running ? "daemon running" : "daemon not running");
  add("waiting", s.pending);
  $("plugins").replaceChildren(...s.plugins.map((p) => row([p.name, p.kind, p.state, p.detail || ""])));
  const waiting = await api("GET", "/v1/approvals");
  $("approvals").replaceChildren(...(waiting.length ? waiting.map((a) => row([a.id, a.agent, a.action, "L" + a.level, when(a.asked_ms)]))
    : [row(["nothing waits", "", "", "", ""])]));
}

async function loadDocuments(first) {
  if (first) { documentsAfter = null; $("documents").replaceChildren(); }
  const query = "/v1/documents?limit=25" + (documentsAfter ? "&after=" + encodeURIComponent(documentsAfter) : "");
  const page = await api("GET", query);
  for (const d of page.documents) {
    const tr = row([d.title || "(untitled)", d.media_type || "", d.size, when(d.created * 1000), d.id.slice(0, 12)]);
    tr.className = "clickable";
    tr.addEventListener("click", () => openDocument(d.id).catch((e) => flash(e.message)));
    $("documents").appendChild(tr);
  }
  documentsAfter = page.next || null;
  $("more-documents").hidden = !documentsAfter;
}

async function openDocument(id) {
  const d = await api("GET", "/v1/documents/" + encodeURIComponent(id));
  $("document").hidden = false;
  $("document-title").textContent = d.title || "(untitled)";
  $("document-id").textContent = d.id;
  $("document-content").textContent = d.content + (d.truncated ? "\n…(cut at the read limit)" : "");
}

function marked(snippet, highlights) {
  const out = document.createElement("span");
  const bytes = new TextEncoder().encode(snippet);
  const decode = (a, b) => new TextDecoder().decode(bytes.slice(a, b));
  let at = 0;
  for (const [start, end] of highlights || []) {
    if (start < at || end > bytes.length) continue;
    out.appendChild(document.createTextNode(decode(at, start)));
    out.appendChild(el("mark", decode(start, end)));
    at = end;
  }
  out.appendChild(document.createTextNode(decode(at, bytes.length)));
  return out;
}

async function search(event) {
  event.preventDefault();
  const body = { query: $("query").value, mode: $("mode").value, k: 10, explain: $("explain").checked };
  const results = await api("POST", "/v1/search", body);
  $("search-notes").textContent = results.notes.join(" ") || (results.hits.length + " results (" + results.mode + ")");
  $("hits").replaceChildren(...results.hits.map((h) => {
    const li = document.createElement("li");
    const title = el("a", h.title || h.id.slice(0, 12));
    title.href = "#vault";
    title.addEventListener("click", (e) => { e.preventDefault(); openDocument(h.id).catch((x) => flash(x.message)); });
    li.appendChild(title);
    li.appendChild(el("span", "  score " + h.score.toFixed(3), "score"));
    li.appendChild(el("div", (h.heading_path || []).join(" › "), "hint"));
    li.appendChild(marked(h.snippet, h.highlights));
    if (h.signals) li.appendChild(el("div", h.signals.map((s) => s.signal + " #" + s.rank + " (" + s.score.toFixed(3) + ")").join(", "), "hint"));
    return li;
  }));
}

function newConversation() {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  conversation = "console-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  $("conversation").textContent = "conversation " + conversation;
  $("transcript").replaceChildren();
}

async function chat(event) {
  event.preventDefault();
  const text = $("message").value;
  if (!text.trim()) return;
  $("message").value = "";
  const mine = el("div", null, "turn");
  mine.appendChild(el("div", "you", "who"));
  mine.appendChild(el("pre", text));
  const theirs = el("div", null, "turn");
  theirs.appendChild(el("div", $("agent").value || "agent", "who"));
  const reply = el("pre", "");
  reply.className = "reply";
  theirs.appendChild(reply);
  $("transcript").append(mine, theirs);
  const body = { text, conversation };
  if ($("agent").value) body.agent = $("agent").value;
  const response = await fetch("/v1/chat", {
    method: "POST",
    headers: { "Authorization": "Bearer " + token(), "Content-Type": "application/json", "Accept": "text/event-stream" },
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    const data = await response.json().catch(() => ({}));
    throw new Error(data.message || ("HTTP " + response.status));
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message"; let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (!data) continue;
      const event = JSON.parse(data);
      if (name === "chunk") reply.textContent += event.text;
      else if (name === "reply") { reply.textContent = event.text; theirs.dataset.done = "1"; }
      else if (name === "approval") theirs.appendChild(el("div", "waiting for approval " + event.id + " (level " + event.level + "): " + event.text, "approval"));
      else if (name === "notice" && event.text) theirs.appendChild(el("div", event.text, "hint"));
      else if (name === "error") { theirs.appendChild(el("div", event.message, "bad-text")); theirs.dataset.done = "1"; }
    }
  }
}

async function loadAudit(before) {
  const limit = 50;
  const path = before === null ? "/v1/audit?limit=" + limit : "/v1/audit?from=" + Math.max(0, before - limit) + "&limit=" + Math.min(limit, before);
  const page = await api("GET", path);
  const rows = page.entries.slice().reverse().map((e) => {
    const tr = row([e.seq, when(e.time_ms), e.kind, e.actor]);
    tr.className = "clickable";
    tr.dataset.seq = e.seq;
    tr.addEventListener("click", () => showEntry(e));
    return tr;
  });
  if (before === null) $("entries").replaceChildren(...rows); else $("entries").append(...rows);
  oldest = page.entries.length ? page.entries[0].seq : 0;
  $("older").hidden = oldest === 0;
}

function showEntry(e) {
  shownEntry = e;
  $("entry").hidden = false;
  $("entry-title").textContent = "#" + e.seq + " " + e.kind;
  $("entry-payload").textContent = JSON.stringify({ time: when(e.time_ms), actor: e.actor, payload: e.payload, prev: e.prev }, null, 2);
  $("proof-result").textContent = "";
  $("entry").scrollIntoView();
}

const hex = (bytes) => Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
const unhex = (s) => new Uint8Array(s.match(/../g).map((h) => parseInt(h, 16)));

async function node(left, right) {
  const joined = new Uint8Array(1 + left.length + right.length);
  joined[0] = 1; joined.set(left, 1); joined.set(right, 1 + left.length);
  return new Uint8Array(await crypto.subtle.digest("SHA-256", joined));
}

// RFC 9162 §2.1.3.2: the audit path leads from the leaf to the signed root.
async function inclusionHolds(index, size, leaf, path, root) {
  if (index >= size) return false;
  let fn = index, sn = size - 1, r = unhex(leaf);
  for (const p of path) {
    if (sn === 0) return false;
    const sibling = unhex(p);
    if (fn % 2 === 1 || fn === sn) {
      r = await node(sibling, r);
      if (fn % 2 === 0) { while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); } }
    } else {
      r = await node(r, sibling);
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  return sn === 0 && hex(r) === root;
}

async function prove() {
  if (!shownEntry) return;
  const proof = await api("GET", "/v1/audit/" + shownEntry.seq + "/proof");
  const holds = await inclusionHolds(shownEntry.seq, proof.tree_size, proof.leaf_hash, proof.proof, proof.checkpoint.root);
  const out = $("proof-result");
  out.className = holds ? "ok-text" : "bad-text";
  out.textContent = holds
    ? "verified in this browser: entry " + shownEntry.seq + " is in the log of " + proof.tree_size + " entries whose root " + proof.checkpoint.root.slice(0, 16) + "… was signed at " + when(proof.checkpoint.time_ms)
    : "the proof does NOT lead to the signed root";
}

async function verify() {
  $("verify-result").textContent = "checking…";
  const result = await api("GET", "/v1/audit/verify");
  const r = result.report;
  $("verify-result").className = result.ok ? "ok-text" : "bad-text";
  $("verify-result").textContent = result.ok
    ? "intact: " + r.log_entries + " entries, the signed checkpoint covers " + (r.log_checkpoint || 0)
    : "damaged: " + (r.problems || []).join("; ");
}

const SCOPES = ["status", "vault:read", "vault:write", "chat", "audit:read", "tokens"];

async function loadTokens() {
  const list = await api("GET", "/v1/tokens");
  const now = Date.now() / 1000;
  $("token-list").replaceChildren(...list.map((t) => {
    const revoke = el("button", "Revoke", "deny");
    revoke.addEventListener("click", () => api("DELETE", "/v1/tokens/" + t.id).then(loadTokens).catch((e) => flash(e.message)));
    const expiry = t.expires_at ? (t.expires_at <= now ? "expired" : when(t.expires_at * 1000)) : "never";
    return row([t.id, t.name, t.scopes.join(", "), expiry, revoke]);
  }));
  const box = $("token-scopes");
  if (!box.childElementCount) {
    for (const s of SCOPES) {
      const label = el("label", null);
      const input = document.createElement("input");
      input.type = "checkbox"; input.value = s; input.name = "scope";
      label.append(input, document.createTextNode(" " + s));
      box.appendChild(label);
    }
  }
}

async function makeToken(event) {
  event.preventDefault();
  const scopes = Array.from(document.querySelectorAll("#token-scopes input:checked"), (i) => i.value);
  const days = $("token-days").value.trim();
  const body = { name: $("token-name").value, scopes };
  if (days) {
    const n = Number(days);
    if (!Number.isFinite(n) || n <= 0) throw new Error("days must be a positive number");
    body.expires_in = Math.round(n * 86400);
  }
  const made = await api("POST", "/v1/tokens", body);
  const shown = $("new-token");
  shown.hidden = false;
  shown.textContent = "Copy it now, it is shown only once: " + made.token;
  await loadTokens();
}

function guard(f) { return (e) => { Promise.resolve(f(e)).catch((x) => flash(x.message)); }; }

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, $("token").value.trim());
    $("token").value = "";
    show();
  });
  $("logout").addEventListener("click", signOut);
  $("search-form").addEventListener("submit", guard(search));
  $("more-documents").addEventListener("click", guard(() => loadDocuments(false)));
  $("chat-form").addEventListener("submit", guard(chat));
  $("new-conversation").addEventListener("click", newConversation);
  $("verify").addEventListener("click", guard(verify));
  $("older").addEventListener("click", guard(() => loadAudit(oldest)));
  $("prove").addEventListener("click", guard(prove));
  $("token-form").addEventListener("submit", guard(makeToken));
  window.addEventListener("hashchange", show);
  show();
});
