// A static preview of the Grafana dashboard deploy/grafana/confab.json, NOT
// Grafana: no Grafana can be installed on the machines this project is
// built on. It puts load on a running cluster, scrapes the real /metrics of
// its gateways and membership service every second, evaluates each panel's
// PromQL with a tiny evaluator for exactly the forms the dashboard uses
// (sum/min [by (labels)] of a selector or of rate(selector[window])), draws
// the panels at their grid positions with uPlot, and screenshots the page
// in headless Chromium. Run by tests/e2e/admin_ui.rs (the_dashboard_shows_a_loaded_cluster_s_metrics):
//   GATEWAYS    JSON array of gateway URLs
//   MEMBERSHIP  the membership service's URL
//   TOKENS      JSON array of tokens of members of channel:general
//   OUT         the PNG to write
//   SECONDS     how long to record (default 40)
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, "..", "..");
const require = createRequire(import.meta.url);
const { io } = createRequire(join(ROOT, "tests", "js", "package.json"))("socket.io-client");

const GATEWAYS = JSON.parse(process.env.GATEWAYS);
const MEMBERSHIP = process.env.MEMBERSHIP;
const TOKENS = JSON.parse(process.env.TOKENS);
const OUT = process.env.OUT;
const SECONDS = Number(process.env.SECONDS ?? 40);
const RATE_WINDOW_S = 10;
const dashboard = JSON.parse(readFileSync(join(ROOT, "deploy", "grafana", "confab.json"), "utf8"));

// --- scraping -------------------------------------------------------------

/** Samples of a Prometheus/OpenMetrics text: [{name, labels, value}]. */
function parse(text, instance, job) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = { instance, job };
    for (const l of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

const targets = [
  ...GATEWAYS.map((url) => ({ url, job: "confab-gateway" })),
  { url: MEMBERSHIP, job: "confab-membership" },
];
const scrapes = []; // [{t, samples}]
async function scrape() {
  const t = Date.now() / 1000;
  const samples = [];
  for (const { url, job } of targets) {
    const text = await (await fetch(`${url}/metrics`)).text();
    samples.push(...parse(text, new URL(url).host, job));
  }
  scrapes.push({ t, samples });
}

// --- load -------------------------------------------------------------------

const sockets = [];
function connect(token, gateway) {
  const s = io(gateway, { auth: { token }, transports: ["websocket"] });
  sockets.push(s);
  return new Promise((resolve, reject) => {
    s.once("connect", () => resolve(s));
    s.once("connect_error", reject);
  });
}

let sent = 0;
async function load(until) {
  let n = 0;
  while (Date.now() < until) {
    n++;
    // A burst of messages from everyone, fanned out to every member.
    await Promise.all(
      sockets
        .filter((s) => s.connected)
        .map((s, i) =>
          s
            .timeout(5000)
            .emitWithAck("message:send", { room: "channel:general", body: `hello ${n}`, clientMsgId: `m-${i}-${n}-${Date.now()}` })
            .then(() => sent++, () => {}),
        ),
    );
    if (n % 8 === 0) {
      // A lost transport: the client comes back and recovers its session.
      const s = sockets[n % sockets.length];
      s.io.engine?.close();
    }
    if (n % 10 === 0) {
      // A handshake with a bad token: refused.
      const bad = io(GATEWAYS[n % GATEWAYS.length], { auth: { token: "not-a-token" }, transports: ["websocket"], reconnection: false });
      bad.once("connect_error", () => bad.close());
    }
    if (n % 15 === 0) {
      // A client over its event budget: typing events dropped.
      const s = sockets[(n / 15) % sockets.length];
      for (let k = 0; k < 80; k++) s.emit("typing:start", { room: "channel:general" });
    }
    if (n % 12 === 0 && sockets.length < 24) {
      await connect(TOKENS[n % TOKENS.length], GATEWAYS[n % GATEWAYS.length]).catch(() => {});
    }
    await new Promise((r) => setTimeout(r, 150 + 100 * Math.sin(n / 5)));
  }
}

// --- the evaluator ------------------------------------------------------------

const FORM =
  /^(sum|min|max)(?: by \(([^)]*)\))? ?\((rate\()?([a-z_:][\w:]*)\{([^}]*)\}(?:\[[^\]]*\])?\)?\)$/;

/** [{legend labels, points [[t, v]]}] of one panel query over the scrapes. */
function evaluate(expr) {
  const m = FORM.exec(expr);
  assert.ok(m, `the preview does not evaluate ${expr}`);
  const [, agg, by, rate, name, sel] = m;
  const byLabels = by ? by.split(",").map((s) => s.trim()) : [];
  const matchers = [...sel.matchAll(/(\w+)\s*(=~|=)\s*"([^"]*)"/g)]
    .filter(([, , , v]) => !v.startsWith("$")) // $job, $instance: all
    .map(([, l, , v]) => [l, v]);
  const match = (s) => s.name === name && matchers.every(([l, v]) => s.labels[l] === v);
  const key = (labels) => JSON.stringify(labels);
  const series = new Map(); // group key -> Map(t -> value)
  for (let i = 0; i < scrapes.length; i++) {
    const { t, samples } = scrapes[i];
    let before = null;
    if (rate) {
      const j = scrapes.findIndex((s) => s.t >= t - RATE_WINDOW_S);
      if (j >= i) continue;
      before = scrapes[j];
    }
    const groups = new Map();
    for (const s of samples.filter(match)) {
      let v = s.value;
      if (rate) {
        const prev = before.samples.find((p) => p.name === s.name && key(p.labels) === key(s.labels));
        v = prev ? Math.max(0, s.value - prev.value) / (t - before.t) : 0;
      }
      const g = key(Object.fromEntries(byLabels.map((l) => [l, s.labels[l] ?? ""])));
      const acc = groups.get(g);
      groups.set(g, acc === undefined ? v : agg === "sum" ? acc + v : agg === "min" ? Math.min(acc, v) : Math.max(acc, v));
    }
    for (const [g, v] of groups) {
      if (!series.has(g)) series.set(g, []);
      series.get(g).push([t, v]);
    }
  }
  return [...series].map(([g, points]) => ({ labels: JSON.parse(g), points }));
}

function legend(format, labels) {
  return format.replace(/\{\{\s*(\w+)\s*\}\}/g, (_, l) => labels[l] ?? "");
}

// --- main -------------------------------------------------------------------------

for (let i = 0; i < TOKENS.length * 2; i++) {
  await connect(TOKENS[i % TOKENS.length], GATEWAYS[i % GATEWAYS.length]);
}
const started = Date.now();
const until = started + SECONDS * 1000;
const scraping = (async () => {
  while (Date.now() < until + 1000) {
    await scrape();
    await new Promise((r) => setTimeout(r, 1000));
  }
})();
// Quiet at first, then load: the panels show the change.
await new Promise((r) => setTimeout(r, 6000));
await load(until - 4000);
await scraping;
for (const s of sockets) s.close();
console.log(`recorded ${scrapes.length} scrapes of ${targets.length} targets, ${sent} messages sent`);

const panels = dashboard.panels.map((p) => ({
  title: p.title,
  type: p.type,
  gridPos: p.gridPos,
  series: p.targets.flatMap((q) =>
    evaluate(q.expr).map((s) => ({ name: legend(q.legendFormat, s.labels), points: s.points })),
  ),
}));
const nonEmpty = panels.filter((p) => p.series.length > 0).length;
console.log(`${nonEmpty} of ${panels.length} panels have data`);

const uplotJs = readFileSync(require.resolve("uplot/dist/uPlot.iife.min.js"), "utf8");
const uplotCss = readFileSync(require.resolve("uplot/dist/uPlot.min.css"), "utf8");
const html = `<!doctype html><html><head><meta charset="utf-8"><style>${uplotCss}
body{margin:0;background:#111217;color:#ccccdc;font:13px sans-serif}
header{padding:10px 16px;font-size:18px}
header small{display:block;font-size:12px;color:#ff9830;margin-top:4px}
#grid{position:relative;margin:0 8px}
.panel{position:absolute;background:#181b1f;border:1px solid #2c3235;border-radius:3px;box-sizing:border-box;padding:6px}
.panel h3{margin:0 0 4px;font-size:13px;font-weight:500}
.stat{display:flex;gap:6px;flex-wrap:wrap}
.stat div{flex:1;min-width:90px;padding:10px;border-radius:3px;color:#fff;font-size:12px}
.stat b{display:block;font-size:22px}
.u-legend{font-size:11px;color:#ccccdc}
</style><script>${uplotJs}</script></head><body>
<header>Confab — deploy/grafana/confab.json
<small>Static preview, not Grafana: the dashboard's queries evaluated on /metrics scraped from a 2-gateway cluster during a ${SECONDS} s run (${new Date().toISOString()}), drawn with uPlot.</small></header>
<div id="grid"></div>
<script>
const panels = ${JSON.stringify(panels)};
const COL = (window.innerWidth - 16) / 24, ROW = 30;
const colors = ["#73bf69","#f2cc0c","#5794f2","#ff9830","#f2495c","#b877d9","#8ab8ff","#ffb357"];
const grid = document.getElementById("grid");
let bottom = 0;
for (const p of panels) {
  const g = p.gridPos, el = document.createElement("div");
  el.className = "panel";
  Object.assign(el.style, { left: g.x * COL + "px", top: g.y * ROW + "px", width: g.w * COL - 6 + "px", height: g.h * ROW - 6 + "px" });
  el.innerHTML = "<h3></h3>";
  el.querySelector("h3").textContent = p.title;
  grid.appendChild(el);
  bottom = Math.max(bottom, (g.y + g.h) * ROW);
  if (p.type === "stat") {
    const box = document.createElement("div");
    box.className = "stat";
    for (const s of p.series) {
      const v = s.points.length ? s.points[s.points.length - 1][1] : NaN;
      const d = document.createElement("div");
      d.style.background = v >= 1 ? "#37872d" : "#c4162a";
      d.innerHTML = "<b></b><span></span>";
      d.querySelector("b").textContent = v >= 1 ? "UP" : "DOWN";
      d.querySelector("span").textContent = s.name;
      box.appendChild(d);
    }
    if (!p.series.length) box.textContent = "No data";
    el.appendChild(box);
    continue;
  }
  if (!p.series.length) {
    const none = document.createElement("div");
    none.style.cssText = "text-align:center;margin-top:60px;color:#8e8e8e";
    none.textContent = "No data (no such event during the run)";
    el.appendChild(none);
    continue;
  }
  const ts = [...new Set(p.series.flatMap((s) => s.points.map((x) => x[0])))].sort((a, b) => a - b);
  const data = [ts, ...p.series.map((s) => { const m = new Map(s.points); return ts.map((t) => m.has(t) ? m.get(t) : null); })];
  new uPlot({
    width: g.w * COL - 20, height: g.h * ROW - 80,
    series: [{}, ...p.series.map((s, i) => ({ label: s.name, stroke: colors[i % colors.length], width: 1.5, fill: colors[i % colors.length] + "22" }))],
    axes: [{ stroke: "#ccccdc", grid: { stroke: "#2c3235" } }, { stroke: "#ccccdc", grid: { stroke: "#2c3235" }, size: 45 }],
    legend: { show: true },
  }, data, el);
}
grid.style.height = bottom + "px";
</script></body></html>`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.setContent(html, { waitUntil: "load" });
  await page.screenshot({ path: OUT, fullPage: true });
  console.log(`preview saved to ${OUT}`);
} finally {
  await browser.close();
}
// What the run must show (the drops and server closes need faults it
// does not inject).
for (const title of ["Open connections", "Deliveries per second", "Recoveries by outcome", "Bus (NATS) connected", "Membership projections up", "Refused handshakes", "Rate-limited client events"]) {
  const p = panels.find((x) => x.title === title);
  assert.ok(p && p.series.length > 0, `${title}: no data in the preview`);
}
