// Print history: every job with its status, when it ran, how long it took, and why it failed.
const { api, on, showError, duration, element, RollingChart } = globalThis.lezer;
const $ = (id) => document.getElementById(id);
let page = 1;

// A job's details, below its row: its temperatures over the print, and what happened.
async function details(job, button) {
  const open = button.getAttribute("aria-expanded") === "true";
  const next = button.closest("tr").nextElementSibling;
  if (open) {
    next?.remove();
    button.setAttribute("aria-expanded", "false");
    return;
  }
  button.setAttribute("aria-expanded", "true");
  const canvas = element("canvas", { class: "chart", role: "img", "aria-label": `Temperatures during ${job.fileName}` });
  const events = element("ul", { class: "muted" });
  const cell = element("td", { colspan: "6" }, canvas, events);
  button.closest("tr").after(element("tr", { class: "details" }, cell));
  try {
    const found = await api("GET", `/api/jobs/${job.id}`);
    const points = found.temperatures.map((t) => [Date.parse(t.timestamp) / 1000, t]);
    if (points.length > 1) {
      const span = points[points.length - 1][0] - points[0][0];
      const chart = new RollingChart(canvas, [
        { key: "hotend", color: "--hot" }, { key: "hotendTarget", color: "--hot", dashed: true },
        { key: "bed", color: "--bed" }, { key: "bedTarget", color: "--bed", dashed: true },
      ], Math.max(span, 1));
      chart.label = `${duration(span)} of the job`;
      for (const [time, t] of points) {
        chart.add(time, { hotend: t.hotendTemp, hotendTarget: t.hotendTarget, bed: t.bedTemp, bedTarget: t.bedTarget });
      }
    } else {
      canvas.replaceWith(element("p", { class: "muted" }, "No temperatures were recorded for this job."));
    }
    events.replaceChildren(...found.events.map((event) => element("li", {},
      `${new Date(event.timestamp).toLocaleTimeString()} · ${event.message}`)));
  } catch (error) {
    showError(error);
  }
}

// What the print used: grams when the slicer gave a weight, else metres; the material named.
function filament(job) {
  const amount = job.filamentUsed != null ? `${job.filamentUsed.toFixed(1)} g`
    : job.filamentLength != null ? `${(job.filamentLength / 1000).toFixed(2)} m` : "—";
  return job.material ? `${amount} ${job.material}` : amount;
}

function row(job) {
  const started = job.startedAt ? new Date(job.startedAt).toLocaleString() : "—";
  const more = element("button", { type: "button", "aria-expanded": "false", "aria-label": `Details of ${job.fileName}` }, "Details");
  more.addEventListener("click", () => details(job, more));
  return element("tr", {},
    element("td", {}, job.fileName, job.errorMessage ? element("div", { class: "error-text" }, job.errorMessage) : null),
    element("td", { class: `status-${job.status}` }, job.status.toLowerCase()),
    element("td", { class: "num" }, started),
    element("td", { class: "num" }, duration(job.actualTime)),
    element("td", { class: "num" }, filament(job)),
    element("td", { class: "num" }, `${(job.progress ?? 0).toFixed(0)} %`),
    element("td", {}, more));
}

async function load(more = false) {
  page = more ? page + 1 : 1;
  const query = new URLSearchParams({ page, limit: 30 });
  if ($("status").value) query.set("status", $("status").value);
  try {
    const answer = await api("GET", `/api/jobs?${query}`, undefined, { whole: true });
    const rows = answer.data.jobs.map(row);
    if (more) $("jobs").append(...rows); else $("jobs").replaceChildren(...rows);
    $("empty").hidden = answer.meta.total > 0;
    $("more").hidden = answer.meta.page >= answer.meta.pages;
  } catch (error) {
    showError(error);
  }
}

$("status").addEventListener("change", () => load());
$("more").addEventListener("click", () => load(true));
on("job:status", () => load());
load();
