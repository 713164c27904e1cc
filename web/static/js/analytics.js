// The print history in figures: totals, prints per day, filament by material, why prints did
// not finish, and a table by day, week or month that downloads as CSV. Refreshed when a print ends.
const { api, on, showError, duration, element } = globalThis.lezer;
const $ = (id) => document.getElementById(id);
const percent = (value) => (value === null || value === undefined ? "—" : `${value.toFixed(1)} %`);
// Small amounts keep a decimal: a print stopped early may have used a fraction of a gram.
const grams = (value) => (value === null || value === undefined ? "—"
  : value >= 1000 ? `${(value / 1000).toFixed(2)} kg` : `${value.toFixed(value >= 10 ? 0 : 1)} g`);
const metres = (mm) => (mm === null || mm === undefined ? "—" : `${(mm / 1000).toFixed(mm >= 10000 ? 1 : 2)} m`);
let trend = [];

function kpi(label, value, note) {
  return element("div", {}, element("dt", {}, label), element("dd", {}, value, note ? element("div", { class: "muted" }, note) : null));
}

function showTotals(d) {
  $("span").textContent = `${d.from} to ${d.to}`;
  $("nothing").hidden = d.totalPrints > 0;
  const accuracy = d.estimateAccuracy;
  const estimate = accuracy.meanRatio === null ? "—" : `${accuracy.meanRatio.toFixed(2)}×`;
  $("kpis").replaceChildren(
    kpi("Prints", String(d.totalPrints), `${d.completed} finished · ${d.failed} failed · ${d.cancelled} cancelled`),
    kpi("Success rate", percent(d.successRate)),
    kpi("Printing time", duration(d.totalTime)),
    kpi("Average finished print", duration(d.averagePrintTime)),
    kpi("Filament used", grams(d.materialUsed), d.materialUnknown ? `${d.materialUnknown} without a weight from the slicer` : null),
    kpi("Actual ÷ slicer's estimate", estimate, accuracy.jobs ? `over ${accuracy.jobs} finished prints` : "no finished print with an estimate"),
  );
  trend = d.trends;
  $("trend").setAttribute("aria-label", `Prints per day: ${d.trends.map((t) => `${t.date} ${t.prints}`).join(", ")}`);
  drawTrend();
}

// Bars: prints ended each day; line: that day's success rate (right-hand scale, 0-100 %).
function drawTrend() {
  const canvas = $("trend");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height || !trend.length) return;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  const style = getComputedStyle(document.body);
  const color = (name) => style.getPropertyValue(name).trim();
  const top = Math.max(4, ...trend.map((t) => t.prints));
  const left = 28, right = 34, bottom = 16;
  const slot = (width - left - right) / trend.length;
  const y = (v) => height - bottom - (v / top) * (height - bottom - 8);
  const yRate = (r) => height - bottom - (r / 100) * (height - bottom - 8);
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = color("--muted");
  g.strokeStyle = color("--line");
  for (const v of [0, Math.round(top / 2), top]) {
    g.beginPath(); g.moveTo(left, y(v)); g.lineTo(width - right, y(v)); g.stroke();
    g.fillText(String(v), 2, y(v) + 4);
  }
  g.fillText("100 %", width - right + 2, yRate(100) + 4);
  g.fillText(trend[0].date.slice(5), left, height - 2);
  const last = trend[trend.length - 1].date.slice(5);
  g.fillText(last, width - right - g.measureText(last).width, height - 2);
  g.fillStyle = color("--accent");
  trend.forEach((t, i) => {
    if (t.prints) g.fillRect(left + i * slot + slot * 0.15, y(t.prints), Math.max(1, slot * 0.7), y(0) - y(t.prints));
  });
  g.strokeStyle = color("--ok");
  g.lineWidth = 2;
  g.beginPath();
  let drawing = false;
  trend.forEach((t, i) => {
    if (t.successRate === null) { drawing = false; return; }
    const x = left + (i + 0.5) * slot;
    if (drawing) g.lineTo(x, yRate(t.successRate)); else g.moveTo(x, yRate(t.successRate));
    drawing = true;
  });
  g.stroke();
}
new ResizeObserver(drawTrend).observe($("trend"));

function showMaterials({ materials }) {
  $("materials").replaceChildren(...materials.map((m) => element("tr", {},
    element("td", {}, m.type ?? "not named by the slicer"),
    element("td", { class: "num" }, grams(m.usage), m.usageUnknown ? element("div", { class: "muted" }, `+ ${m.usageUnknown} without a weight`) : null),
    element("td", { class: "num" }, metres(m.length)),
    element("td", { class: "num" }, String(m.prints)))));
}

function showFailures({ failures }) {
  $("no-failures").hidden = failures.length > 0;
  $("failures").replaceChildren(...failures.map((f) => element("tr", {},
    element("td", {}, f.reason),
    element("td", { class: "num" }, String(f.count)),
    element("td", { class: "num" },
      element("meter", { min: "0", max: "100", value: String(f.percentage), "aria-label": `${f.reason}: ${percent(f.percentage)}` }),
      ` ${percent(f.percentage)}`))));
}

// -- by period -------------------------------------------------------------------------------

const COLUMNS = ["period", "prints", "completed", "failed", "cancelled", "successRate", "time", "materialUsed"];
let csvUrl = null;

function showPeriods({ statistics }) {
  $("periods").replaceChildren(...statistics.map((s) => element("tr", {},
    element("td", { class: "num" }, s.period),
    ...[s.prints, s.completed, s.failed, s.cancelled].map((n) => element("td", { class: "num" }, String(n))),
    element("td", { class: "num" }, percent(s.successRate)),
    element("td", { class: "num" }, duration(s.time)),
    element("td", { class: "num" }, grams(s.materialUsed)))));
  const lines = [COLUMNS.join(","), ...statistics.map((s) => COLUMNS.map((key) => s[key] ?? "").join(","))];
  if (csvUrl) URL.revokeObjectURL(csvUrl);
  csvUrl = URL.createObjectURL(new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" }));
  $("csv").href = csvUrl;
  $("csv").download = `lezerprint-${$("group").value}s-${$("from").value}-to-${$("to").value}.csv`;
  $("csv").hidden = false;
}

async function loadPeriods() {
  $("periods-error").textContent = "";
  const query = new URLSearchParams({ from: $("from").value, to: $("to").value, groupBy: $("group").value });
  try {
    showPeriods(await api("GET", `/api/analytics/statistics?${query}`));
  } catch (error) {
    $("periods-error").textContent = error.message;
  }
}

$("periods-form").addEventListener("submit", (event) => { event.preventDefault(); loadPeriods(); });

async function load() {
  const range = $("range").value;
  try {
    const [dashboard, materials, failures] = await Promise.all(
      ["dashboard", "materials", "failures"].map((name) => api("GET", `/api/analytics/${name}?range=${range}`)));
    showTotals(dashboard);
    showMaterials(materials);
    showFailures(failures);
    if (!$("from").value) {
      $("from").value = dashboard.from;
      $("to").value = dashboard.to;
    }
  } catch (error) {
    showError(error);
  }
}

$("range").addEventListener("change", load);
on("job:completed", () => { load(); loadPeriods(); });
load().then(loadPeriods);
