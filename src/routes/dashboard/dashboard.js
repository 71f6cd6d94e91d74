// The pools dashboard: draws each snapshot of /pools/events. No library,
// no other origin; the charts are SVG drawn here.
"use strict";

const KEEP = 300; // samples kept: five minutes at one a second
const SVG = "http://www.w3.org/2000/svg";
const pools = new Map(); // name -> { el, history, marks, breaker, leases, at }
const proc = { rss: [], cpu: [], last: null };

const $ = (root, field) => root.querySelector(`[data-field="${field}"]`);
const set = (root, field, text) => {
  const el = $(root, field);
  if (el && el.textContent !== text) el.textContent = text;
};
const push = (list, value) => {
  list.push(value);
  if (list.length > KEEP) list.shift();
};

function micros(us) {
  if (us >= 1e6) return (us / 1e6).toFixed(2) + " s";
  if (us >= 1e3) return (us / 1e3).toFixed(us >= 1e4 ? 0 : 1) + " ms";
  return (us < 10 ? us.toFixed(1) : Math.round(us)) + " µs";
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

function duration(s) {
  s = Math.max(0, Math.floor(s));
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  return m ? `${m}m ${s % 60}s` : `${s % 60}s`;
}

const count = (n) => n.toLocaleString("en");

// Draws `series` ([{cls, values}], newest last) on `svg`, from `bottom` to
// `top`; `marks` ([{ago, cls}], samples before the newest) are vertical lines.
function chart(svg, series, top, marks = [], bottom = 0) {
  const box = svg.viewBox.baseVal;
  const w = box.width, h = box.height, pad = 2;
  const scale = Math.max(top - bottom, 1);
  while (svg.firstChild) svg.firstChild.remove();
  // The window grows from one minute to KEEP samples as they come.
  const span = Math.max(60, ...series.map((s) => s.values.length));
  const x = (i) => (i / (span - 1)) * w;
  const y = (v) => h - pad - (Math.min(Math.max(v - bottom, 0), scale) / scale) * (h - 2 * pad);
  for (const { ago, cls } of marks) {
    const at = span - 1 - ago; // the newest sample is drawn at span - 1
    const line = document.createElementNS(SVG, "line");
    line.setAttribute("x1", x(at));
    line.setAttribute("x2", x(at));
    line.setAttribute("y1", 0);
    line.setAttribute("y2", h);
    line.setAttribute("class", "mark " + cls);
    svg.append(line);
  }
  for (const { cls, values } of series) {
    if (!values.length) continue;
    const offset = span - values.length;
    const path = document.createElementNS(SVG, "polyline");
    path.setAttribute("points", values.map((v, i) => `${x(i + offset).toFixed(1)},${y(v).toFixed(1)}`).join(" "));
    path.setAttribute("class", "line " + cls);
    path.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(path);
  }
}

function poolView(name) {
  let pool = pools.get(name);
  if (pool) return pool;
  const el = document.getElementById("pool").content.firstElementChild.cloneNode(true);
  el.dataset.pool = name;
  set(el, "name", name);
  document.getElementById("pools").append(el);
  pool = { el, history: { active: [], idle: [], waiting: [], max: [] }, marks: [], breaker: null, opened: null, leases: null, at: null };
  pools.set(name, pool);
  return pool;
}

function drawPool(s, health, at) {
  const pool = poolView(s.pool);
  const { el, history } = pool;
  push(history.active, s.active);
  push(history.idle, s.idle);
  push(history.waiting, s.waiting);
  push(history.max, s.max_size);
  // Breaker marks are kept as the sample they came with; they move left
  // with the samples and fall off the chart with them.
  pool.marks = pool.marks.map((m) => ({ ...m, ago: m.ago + 1 })).filter((m) => m.ago < KEEP);
  if (pool.breaker !== null && pool.breaker !== s.breaker.state) {
    pool.marks.push({ ago: 0, cls: s.breaker.state });
  } else if (pool.opened !== null && s.breaker.opened > pool.opened) {
    // Opened and closed again between two snapshots: still marked.
    pool.marks.push({ ago: 0, cls: "open" });
  }
  pool.breaker = s.breaker.state;
  pool.opened = s.breaker.opened;
  const top = Math.max(s.max_size, ...history.waiting, ...history.active);
  chart(el.querySelector('[data-chart="conns"]'),
    [{ cls: "max", values: history.max }, { cls: "idle", values: history.idle },
     { cls: "waiting", values: history.waiting }, { cls: "active", values: history.active }],
    top, pool.marks);

  set(el, "backend", s.backend);
  set(el, "conns", `${s.active} / ${s.idle} / ${s.max_size}`);
  set(el, "waiting", count(s.waiting));
  set(el, "leases", count(s.leases));
  // After a restart the counters start again: no negative rate.
  if (pool.leases !== null && at > pool.at && s.leases >= pool.leases) {
    set(el, "rate", ((s.leases - pool.leases) / ((at - pool.at) / 1000)).toFixed(1));
  }
  pool.leases = s.leases;
  pool.at = at;
  const w = s.acquire_wait;
  set(el, "p50", w.count ? micros(w.p50_us) : "–");
  set(el, "p95", w.count ? micros(w.p95_us) : "–");
  set(el, "p99", w.count ? micros(w.p99_us) : "–");
  for (const field of ["timeouts", "shed", "backend_errors", "query_timeouts", "leaks"]) {
    set(el, field, count(s[field]));
    $(el, field).classList.toggle("bad", s[field] > 0);
  }
  const breaker = $(el, "breaker");
  set(el, "breaker", "breaker " + s.breaker.state.replace("_", "-"));
  breaker.className = "badge breaker-" + s.breaker.state;

  const badge = $(el, "health");
  const status = health ? health.status : "unknown";
  set(el, "health", status + (health && !health.required ? " (optional)" : "") + (health && health.saturated ? " · saturated" : ""));
  badge.className = "badge " + status;
  set(el, "checked", health && health.checked_at
    ? `checked ${new Date(health.checked_at).toLocaleTimeString()}` + (health.latency_ms != null ? ` in ${health.latency_ms.toFixed(1)} ms` : "")
    : "not checked yet");
  const error = $(el, "error");
  error.hidden = !(health && health.error);
  error.classList.toggle("warn", status === "warn");
  set(el, "error", health && health.error ? health.error : "");
}

function drawProcess(p, at) {
  const root = document.getElementById("process");
  root.hidden = !p;
  if (!p) return;
  set(root, "rss", bytes(p.resident_bytes));
  set(root, "threads", count(p.threads));
  set(root, "fds", p.max_fds ? `${count(p.open_fds)} of ${count(p.max_fds)}` : count(p.open_fds));
  set(root, "tasks", `${count(p.tokio_alive_tasks)} on ${p.tokio_workers} workers`);
  set(root, "uptime", duration(at / 1000 - p.start_time_seconds));
  push(proc.rss, p.resident_bytes);
  if (proc.last && at > proc.last.at) {
    const cpu = Math.max((100 * (p.cpu_seconds - proc.last.cpu)) / ((at - proc.last.at) / 1000), 0);
    push(proc.cpu, cpu);
    set(root, "cpu", cpu.toFixed(1) + " %");
  }
  proc.last = { at, cpu: p.cpu_seconds };
  // Memory from 80 % of its lowest: growth shows, noise does not fill it.
  chart(root.querySelector('[data-chart="rss"]'), [{ cls: "active", values: proc.rss }],
    Math.max(...proc.rss) * 1.05, [], Math.min(...proc.rss) * 0.8);
  chart(root.querySelector('[data-chart="cpu"]'), [{ cls: "idle", values: proc.cpu }], Math.max(100, ...proc.cpu));
}

function draw(snapshot) {
  // Another process (a restart behind the same address): start afresh.
  const started = snapshot.process && snapshot.process.start_time_seconds;
  if (proc.started !== undefined && started !== proc.started) {
    for (const pool of pools.values()) pool.el.remove();
    pools.clear();
    proc.rss = [];
    proc.cpu = [];
    proc.last = null;
  }
  proc.started = started;
  const health = new Map(snapshot.health.map((h) => [h.pool, h]));
  for (const s of snapshot.pools) drawPool(s, health.get(s.pool), snapshot.at_ms);
  document.getElementById("empty").hidden = snapshot.pools.length > 0;
  drawProcess(snapshot.process, snapshot.at_ms);
  document.getElementById("updated").textContent = "updated " + new Date(snapshot.at_ms).toLocaleTimeString();
}

function link(state, text) {
  const el = document.getElementById("link");
  el.dataset.state = state;
  el.textContent = text;
}

const events = new EventSource("events");
events.addEventListener("snapshot", (e) => {
  link("live", "live");
  draw(JSON.parse(e.data));
});
// A refused stream (403, the server gone for good) is not retried.
events.addEventListener("error", () =>
  events.readyState === EventSource.CLOSED ? link("lost", "closed") : link("lost", "reconnecting…"));
