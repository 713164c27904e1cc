// Print history: every job with its status, when it ran, how long it took, and why it failed.
const { api, on, showError, duration, element } = globalThis.lezer;
const $ = (id) => document.getElementById(id);
let page = 1;

function row(job) {
  const started = job.startedAt ? new Date(job.startedAt).toLocaleString() : "—";
  return element("tr", {},
    element("td", {}, job.fileName, job.errorMessage ? element("div", { class: "error-text" }, job.errorMessage) : null),
    element("td", { class: `status-${job.status}` }, job.status.toLowerCase()),
    element("td", { class: "num" }, started),
    element("td", { class: "num" }, duration(job.actualTime)),
    element("td", { class: "num" }, `${(job.progress ?? 0).toFixed(0)} %`));
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
