/// The dashboard's one page: plain HTML, CSS and JavaScript with nothing to fetch from elsewhere (a ring may run
/// where there is no internet). It follows `/api/events` (server-sent events) for the ring and reads the file tree
/// on demand. Elements carry `data-address` and `data-state` so a test (or a script) can read what is shown.
enum DashboardPage {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>OuroborosFS</title>
<style>
:root { --ink:#1d2430; --muted:#687385; --line:#e3e7ee; --bg:#f6f8fb; --card:#fff; --ok:#1f9d55; --bad:#d64545; --warn:#d08a0e; --accent:#3461c1; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--ink); background:var(--bg); }
header { display:flex; align-items:center; gap:16px; padding:12px 20px; background:#1d2430; color:#fff; }
header h1 { font-size:18px; margin:0; font-weight:600; letter-spacing:.3px; }
header .summary { color:#c9d1de; flex:1; }
header .live { font-size:12px; padding:2px 8px; border-radius:10px; background:#3a4352; }
header .live.on { background:var(--ok); }
button { font:inherit; border:1px solid var(--line); background:#fff; color:var(--ink); padding:5px 12px; border-radius:6px; cursor:pointer; }
button:hover { border-color:var(--accent); }
header button { background:#2d3646; color:#fff; border-color:#465063; }
main { display:grid; grid-template-columns: 380px 1fr; gap:16px; padding:16px 20px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:14px 16px; }
.card h2 { font-size:13px; text-transform:uppercase; letter-spacing:.6px; color:var(--muted); margin:0 0 10px; font-weight:600; }
.wide { grid-column: 1 / -1; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line); white-space:nowrap; }
th { color:var(--muted); font-weight:500; font-size:12px; }
td.num { text-align:right; font-variant-numeric: tabular-nums; }
.state { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; color:#fff; }
.state.alive { background:var(--ok); } .state.dead { background:var(--bad); } .state.noreply { background:var(--warn); }
.bar { position:relative; width:110px; height:8px; background:var(--line); border-radius:4px; overflow:hidden; display:inline-block; vertical-align:middle; }
.bar > span { position:absolute; left:0; top:0; bottom:0; background:var(--accent); }
.short { color:var(--bad); font-weight:600; }
.copies-ok { color:var(--ok); } .copies-short { color:var(--bad); font-weight:600; }
a { color:var(--accent); text-decoration:none; cursor:pointer; }
#crumbs a { margin-right:4px; }
#message { color:#c9d1de; font-size:12px; min-width:160px; }
#detail { margin-top:12px; }
#login { position:fixed; inset:0; background:rgba(20,25,35,.6); display:none; align-items:center; justify-content:center; }
#login form { background:#fff; padding:24px; border-radius:10px; width:340px; }
#login input { width:100%; padding:8px; margin:10px 0; font:inherit; border:1px solid var(--line); border-radius:6px; }
#login .error { color:var(--bad); min-height:1.4em; }
svg text { font-size:11px; fill:var(--ink); }
.muted { color:var(--muted); }
</style>
</head>
<body>
<header>
  <h1>OuroborosFS</h1>
  <span class="summary" id="summary">connecting…</span>
  <span id="message"></span>
  <button id="heal" title="Walk the ring and mend its successor pointers (NODE HEAL)">Heal</button>
  <button id="verify" title="Read back every stored copy on every live node now (NODE SCRUB)">Verify</button>
  <span class="live" id="live">offline</span>
</header>
<main>
  <section class="card"><h2>Ring</h2><svg id="ring" width="348" height="330" viewBox="0 0 348 330"></svg></section>
  <section class="card"><h2>Throughput (all nodes, MiB/s)</h2><svg id="graph" width="100%" height="150" viewBox="0 0 600 150" preserveAspectRatio="none"></svg>
    <div class="muted" id="rates"></div>
    <h2 style="margin-top:14px">Members</h2>
    <table id="members"><thead><tr><th>Node</th><th>State</th><th>Next</th><th class="num">Chunks</th><th class="num">Stored</th><th>Disk</th><th class="num">Short</th><th>Repair</th><th>Scrub</th></tr></thead><tbody></tbody></table>
  </section>
  <section class="card wide"><h2>Files</h2>
    <div id="crumbs"></div>
    <table id="files"><thead><tr><th>Name</th><th class="num">Size</th><th>Modified</th><th>Copies</th><th>Held by</th></tr></thead><tbody></tbody></table>
    <div id="more"></div>
    <div id="detail"></div>
  </section>
</main>
<div id="login"><form id="loginform">
  <strong>This ring has a cluster secret</strong>
  <div class="muted">Enter it to see the ring (it is checked by the node and never stored by this page).</div>
  <input type="password" id="secret" autocomplete="current-password" placeholder="cluster secret">
  <div class="error" id="loginerror"></div>
  <button type="submit" id="loginbutton">Open</button>
</form></div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;","'":"&#39;"}[c]));
function bytes(n) {
  if (n == null) return "–";
  const units = ["B","KiB","MiB","GiB","TiB"]; let u = 0; let v = n;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return u == 0 ? n + " B" : v.toFixed(1) + " " + units[u];
}
function when(seconds) {
  if (!seconds) return "never";
  const d = new Date(seconds * 1000), ago = Date.now() / 1000 - seconds;
  const t = d.toLocaleTimeString();
  return ago < 86400 ? t : d.toLocaleDateString() + " " + t;
}
async function api(path, options) {
  const response = await fetch(path, Object.assign({credentials: "same-origin"}, options || {}));
  if (response.status == 401) { showLogin(); throw new Error("the cluster secret is needed"); }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}
function say(text) { $("message").textContent = text; }

// --- Signing in (only when the ring has a secret) ---
function showLogin() { $("login").style.display = "flex"; $("secret").focus(); }
$("loginform").addEventListener("submit", async (event) => {
  event.preventDefault();
  const response = await fetch("/api/login", {method: "POST", body: $("secret").value, credentials: "same-origin"});
  if (!response.ok) { $("loginerror").textContent = "That is not the cluster secret."; return; }
  $("login").style.display = "none"; $("secret").value = ""; $("loginerror").textContent = "";
  start();
});

// --- The ring picture and the members table ---
function drawRing(picture) {
  const svg = $("ring"), members = picture.members, n = members.length;
  const cx = 174, cy = 160, r = n > 1 ? 118 : 0;
  const pos = {};
  members.forEach((m, i) => {
    const a = -Math.PI / 2 + 2 * Math.PI * i / Math.max(1, n);
    pos[m.address] = [cx + r * Math.cos(a), cy + r * Math.sin(a)];
  });
  let html = '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#8a94a6"/></marker></defs>';
  html += `<circle cx="${cx}" cy="${cy}" r="${r}" fill="none" stroke="#eef1f6" stroke-width="18"/>`;
  for (const m of members) {
    const from = pos[m.address], to = m.next && pos[m.next];
    if (!to || m.next == m.address) continue;
    const dx = to[0] - from[0], dy = to[1] - from[1], len = Math.hypot(dx, dy) || 1, k = 24 / len;
    html += `<line x1="${from[0] + dx * k}" y1="${from[1] + dy * k}" x2="${to[0] - dx * k}" y2="${to[1] - dy * k}" stroke="#8a94a6" stroke-width="1.6" marker-end="url(#arrow)"/>`;
  }
  for (const m of members) {
    const [x, y] = pos[m.address];
    const colour = m.state == "alive" ? "var(--ok)" : m.state == "dead" ? "var(--bad)" : "var(--warn)";
    const used = m.diskTotalBytes ? 1 - m.diskAvailableBytes / m.diskTotalBytes : 0;
    const arc = 2 * Math.PI * 22;
    html += `<g class="member" data-address="${esc(m.address)}" data-state="${esc(m.state)}">`
      + `<circle cx="${x}" cy="${y}" r="22" fill="#fff" stroke="#e3e7ee" stroke-width="4"/>`
      + `<circle cx="${x}" cy="${y}" r="22" fill="none" stroke="var(--accent)" stroke-width="4" stroke-dasharray="${arc * used} ${arc}" transform="rotate(-90 ${x} ${y})"><title>disk ${Math.round(used * 100)}% used</title></circle>`
      + `<circle cx="${x}" cy="${y}" r="15" fill="${colour}"/>`
      + `<text x="${x}" y="${y + 4}" text-anchor="middle" style="fill:#fff;font-weight:600">${m.chunks ?? "?"}</text>`
      + `<text x="${x}" y="${y + 38}" text-anchor="middle">${esc(m.address)}</text>`
      + `<text x="${x}" y="${y + 51}" text-anchor="middle" class="muted" style="fill:${colour}">${esc(m.state)}</text></g>`;
  }
  svg.innerHTML = html;
}
function scrubText(s) {
  if (!s) return "–";
  if (s.running) return `<span class="bar"><span style="width:${s.total ? 100 * s.checked / s.total : 0}%"></span></span> ${s.checked}/${s.total}`;
  if (!s.finishedAt) return '<span class="muted">no pass yet</span>';
  return `${when(s.finishedAt)}: ${s.total} copies` + (s.corrupt ? `, <span class="short">${s.corrupt} corrupt</span>` : ", all good");
}
function drawMembers(picture) {
  const rows = picture.members.map(m => {
    const used = m.diskTotalBytes ? 1 - m.diskAvailableBytes / m.diskTotalBytes : 0;
    const disk = m.diskTotalBytes == null ? "–" : `<span class="bar"><span style="width:${100 * used}%"></span></span> ${bytes(m.diskAvailableBytes)} free`;
    return `<tr data-address="${esc(m.address)}" data-state="${esc(m.state)}"><td>${esc(m.address)}</td>`
      + `<td><span class="state ${esc(m.state)}">${esc(m.state)}</span></td><td>${esc(m.next ?? "–")}</td>`
      + `<td class="num">${m.chunks ?? "–"}</td><td class="num">${bytes(m.storedBytes)}</td><td>${disk}</td>`
      + `<td class="num ${m.shortChunks ? "short" : ""}">${m.shortChunks ?? "–"}</td><td>${esc(m.repair ?? "–")}</td><td>${scrubText(m.scrub)}</td></tr>`;
  });
  document.querySelector("#members tbody").innerHTML = rows.join("");
  const alive = picture.members.filter(m => m.state == "alive").length;
  // Every member judges the whole catalog: the largest count, not the sum.
  const short = Math.max(0, ...picture.members.filter(m => m.state == "alive").map(m => m.shortChunks || 0));
  $("summary").textContent = `${alive} of ${picture.members.length} nodes alive · ${picture.files ?? "?"} files · `
    + (short ? `${short} chunks short of copies` : "every chunk has its copies") + ` · netmap epoch ${picture.epoch}`;
}

// --- Throughput from successive samples (per member, so a restart's reset counters do not count) ---
const history = [];
let previous = null;
function recordThroughput(picture) {
  if (previous) {
    const dt = picture.sampledAt - previous.sampledAt;
    if (dt > 0) {
      let inRate = 0, outRate = 0;
      for (const m of picture.members) {
        const p = previous.members.find(q => q.address == m.address);
        if (!p || m.bytesReceived == null || p.bytesReceived == null) continue;
        inRate += Math.max(0, m.bytesReceived - p.bytesReceived) / dt;
        outRate += Math.max(0, m.bytesSent - p.bytesSent) / dt;
      }
      history.push([inRate / 1048576, outRate / 1048576]);
      if (history.length > 120) history.shift();
    }
  }
  previous = picture;
  const top = Math.max(1, ...history.map(h => Math.max(h[0], h[1])));
  const line = (k) => history.map((h, i) => `${(600 * i / 119).toFixed(1)},${(145 - 135 * h[k] / top).toFixed(1)}`).join(" ");
  $("graph").innerHTML = `<line x1="0" y1="145" x2="600" y2="145" stroke="#e3e7ee"/>`
    + `<polyline points="${line(0)}" fill="none" stroke="#3461c1" stroke-width="2"/>`
    + `<polyline points="${line(1)}" fill="none" stroke="#1f9d55" stroke-width="2"/>`;
  const last = history[history.length - 1];
  $("rates").innerHTML = last ? `<span style="color:#3461c1">■</span> in ${last[0].toFixed(2)} MiB/s &nbsp; <span style="color:#1f9d55">■</span> out ${last[1].toFixed(2)} MiB/s (last 2 minutes; top of the graph ${top.toFixed(1)} MiB/s)` : "";
}
let ringKey = null;
function showRing(picture) {
  if (picture.error) { say(picture.error); return; }
  drawRing(picture); drawMembers(picture); recordThroughput(picture);
  // The tree's copies and holders follow the ring: shown again when a member's state or a short count changes.
  const key = picture.members.map(m => m.address + "=" + m.state + "/" + (m.shortChunks ?? "")).join(" ");
  if (ringKey != null && key != ringKey) refreshFiles();
  ringKey = key;
}

// --- The file tree ---
let currentPath = "/", lastName = null, detailPath = null;
function refreshFiles() {
  openDirectory(currentPath, null, true);
  if (detailPath) openFile(detailPath);
}
async function openDirectory(path, after, keepDetail) {
  try {
    const page = await api(`/api/dir?path=${encodeURIComponent(path)}` + (after ? `&after=${encodeURIComponent(after)}` : ""));
    currentPath = path;
    const parts = path.split("/").filter(p => p);
    let crumbs = `<a data-dir="/">ring</a>/`, at = "";
    for (const p of parts) { at += "/" + p; crumbs += ` <a data-dir="${esc(at)}">${esc(p)}</a>/`; }
    $("crumbs").innerHTML = crumbs;
    const rows = page.entries.map(e => {
      const full = (path == "/" ? "" : path) + "/" + e.name;
      const name = e.kind == "directory" ? `<a data-dir="${esc(full)}">${esc(e.name)}/</a>`
        : e.kind == "file" ? `<a data-file="${esc(full)}">${esc(e.name)}</a>` : esc(e.name);
      const copies = e.copies == null ? "" : `<span class="${e.copies < e.wanted ? "copies-short" : "copies-ok"}">${e.copies}/${e.wanted}</span>`;
      return `<tr data-name="${esc(e.name)}"><td>${name}</td><td class="num">${e.kind == "directory" ? "" : bytes(e.sizeBytes)}</td>`
        + `<td>${when(e.modifiedAt)}</td><td>${copies}</td><td class="muted">${esc((e.holders || []).join(", ") || (e.kind == "file" ? "inline" : ""))}</td></tr>`;
    });
    const body = document.querySelector("#files tbody");
    if (after) body.insertAdjacentHTML("beforeend", rows.join("")); else body.innerHTML = rows.join("") || '<tr><td class="muted" colspan="5">empty</td></tr>';
    lastName = page.entries.length ? page.entries[page.entries.length - 1].name : null;
    $("more").innerHTML = page.more ? '<button id="morebutton">more…</button>' : "";
    if (!after && !keepDetail) { $("detail").innerHTML = ""; detailPath = null; }
  } catch (error) { say(error.message); }
}
async function openFile(path) {
  try {
    const f = await api(`/api/file?path=${encodeURIComponent(path)}`);
    const v = f.verification;
    const verified = v.copies == 0 ? "inline in the catalog: checked at every read"
      : v.unverified == v.copies ? "not read back since its nodes started"
      : (v.unverified ? `${v.copies - v.unverified} of ${v.copies} copies read back, oldest ` : "every copy read back, oldest ") + when(v.oldest);
    let html = `<h2>${esc(f.path)}</h2><div>${bytes(f.sizeBytes)} · copies <span class="${f.copies < f.wanted ? "copies-short" : "copies-ok"}">${f.copies}/${f.wanted}</span> · last verified: ${esc(verified)}`
      + (f.sha256 ? ` · SHA-256 <code>${esc(f.sha256)}</code>` : "") + `</div>`;
    if (f.chunks.length) {
      html += '<table><thead><tr><th>Piece</th><th>Chunk</th><th class="num">Bytes</th><th>Copies (holder: state, last read back)</th></tr></thead><tbody>';
      for (const c of f.chunks) {
        html += `<tr><td>${c.piece}</td><td>${c.index}/${c.parts}</td><td class="num">${bytes(c.lengthBytes)}</td><td>`
          + c.holders.map(h => `<span class="state ${h.state == "alive" ? "alive" : "dead"}">${esc(h.address)}</span> ${esc(h.state)}, ${when(h.verifiedAt)}`).join(" &nbsp; ")
          + "</td></tr>";
      }
      html += "</tbody></table>";
    }
    $("detail").innerHTML = html;
    detailPath = path;
  } catch (error) { say(error.message); }
}
document.addEventListener("click", (event) => {
  const target = event.target.closest("a, button");
  if (!target) return;
  if (target.dataset.dir) openDirectory(target.dataset.dir);
  else if (target.dataset.file) openFile(target.dataset.file);
  else if (target.id == "morebutton") openDirectory(currentPath, lastName);
});

// --- Heal and verify ---
async function act(path, label) {
  say(label + "…");
  try { const answer = await api(path, {method: "POST"}); say(answer.result); } catch (error) { say(error.message); }
}
$("heal").addEventListener("click", () => act("/api/heal", "healing"));
$("verify").addEventListener("click", () => act("/api/verify", "starting a scrub"));

// --- Live updates ---
let events = null;
function follow() {
  if (events) events.close();
  events = new EventSource("/api/events");
  events.addEventListener("ring", (event) => {
    $("live").textContent = "live"; $("live").className = "live on"; document.body.dataset.live = "1";
    showRing(JSON.parse(event.data));
  });
  events.onerror = () => { $("live").textContent = "reconnecting"; $("live").className = "live"; document.body.dataset.live = "0"; };
}
async function start() {
  const session = await (await fetch("/api/session", {credentials: "same-origin"})).json();
  if (!session.authorized) { showLogin(); return; }
  try { showRing(await api("/api/ring")); } catch (error) { say(error.message); }
  openDirectory("/");
  follow();
}
start();
</script>
</body>
</html>
"""#
}
