// The dashboard: printer state, temperatures and their chart, the current job and its
// controls, heating presets, jogging and the camera. Everything live comes over the tab's
// one websocket; everything it changes goes through the API.
const { api, on, confirm, showError, duration, degrees, RollingChart } = globalThis.lezer;
const $ = (id) => document.getElementById(id);
let connected = false;  // the printer listens: the heating buttons work

// -- printer and temperatures ------------------------------------------------------------

const chart = new RollingChart($("chart"), [
  { key: "hotend", color: "--hot" },
  { key: "hotendTarget", color: "--hot", dashed: true },
  { key: "bed", color: "--bed" },
  { key: "bedTarget", color: "--bed", dashed: true },
]);

function showTemperatures(t) {
  $("hotend").textContent = degrees(t.hotendTemp);
  $("hotend-target").textContent = degrees(t.hotendTarget);
  $("bed").textContent = degrees(t.bedTemp);
  $("bed-target").textContent = degrees(t.bedTarget);
}

on("temperature:update", (t) => {
  showTemperatures(t);
  chart.add(t.timestamp, {
    hotend: t.hotendTemp, hotendTarget: t.hotendTarget, bed: t.bedTemp, bedTarget: t.bedTarget,
  });
});


on("printer:status", (status) => {

  const badge = $("state");
  badge.textContent = status.state;
  badge.dataset.state = status.state;
  const error = $("printer-error");
  error.hidden = !status.error;
  error.textContent = status.error || "";
  if ($("reconnect-row")) $("reconnect-row").hidden = status.state !== "error" && status.state !== "offline";
  if (status.temperatures) showTemperatures(status.temperatures);
  const p = status.position;
  if ($("position")) {
    $("position").textContent = p ? `X ${p.x.toFixed(2)} · Y ${p.y.toFixed(2)} · Z ${p.z.toFixed(2)}` : "—";
  }
  showJob(status.currentJob);
  // Jogging only while no print moves the head; heating whenever the printer listens.
  for (const button of document.querySelectorAll("#jog button")) {
    button.disabled = status.state !== "operational" && status.state !== "paused";
  }
  connected = status.connected;
  for (const button of document.querySelectorAll("#presets button, #targets button")) {
    button.disabled = !connected;
  }
});

// -- the current job ---------------------------------------------------------------------

let shownJob = null;
let estimate = null;

async function loadJobFile(jobId) {
  estimate = null;
  const thumb = $("job-thumb");
  thumb.hidden = true;
  try {
    const { job } = await api("GET", `/api/jobs/${jobId}`);
    if (!job.fileId || jobId !== shownJob) return;
    const { file } = await api("GET", `/api/files/${job.fileId}`);
    if (jobId !== shownJob) return;  // another job started meanwhile
    estimate = file.metadata?.estimatedTime ?? null;
    if (file.thumbnailUrl) {
      thumb.src = file.thumbnailUrl;
      thumb.hidden = false;
    }
  } catch {
    // the file may have been deleted since: the job shows without its picture
  }
}

function remaining(job) {
  const done = job.progress / 100;
  if (estimate && done < 0.1) return Math.max(0, estimate - job.printTime);
  if (done > 0) return (job.printTime * (1 - done)) / done;
  return estimate;
}

function showJob(job) {
  $("no-job").hidden = Boolean(job);
  $("job").hidden = !job;
  if (!job) { shownJob = null; return; }
  if (job.id !== shownJob) {
    shownJob = job.id;
    loadJobFile(job.id);
  }
  $("job-file").textContent = job.fileName;
  $("job-status").textContent = job.status.toLowerCase();
  $("job-status").dataset.state = job.status === "PAUSED" ? "paused" : "printing";
  $("job-reason").hidden = !job.pauseReason;
  $("job-reason").textContent = job.pauseReason ? `Paused: ${job.pauseReason}` : "";
  const bar = $("job-bar");
  bar.firstElementChild.style.width = `${job.progress}%`;
  bar.setAttribute("aria-valuenow", job.progress.toFixed(1));
  $("job-progress").textContent = `${job.progress.toFixed(1)} %`;
  $("job-elapsed").textContent = duration(job.printTime);
  const left = remaining(job);
  $("job-remaining").textContent = duration(left);
  $("job-eta").textContent = left === null || left === undefined ? "—"
    : new Date(Date.now() + left * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  $("job-layer").textContent = job.layer ? String(job.layer) : "—";
  if ($("pause")) {
    $("pause").hidden = job.status !== "PRINTING";
    $("resume").hidden = job.status !== "PAUSED";
  }
}

async function act(question, yes, path) {
  if (question && !(await confirm(question, yes))) return;
  try { await api("POST", path); } catch (error) { showError(error); }
}
$("pause")?.addEventListener("click", () => act("Pause the print?", "Pause", "/api/printer/pause"));
$("resume")?.addEventListener("click", () => act(null, null, "/api/printer/resume"));
$("cancel")?.addEventListener("click",
  () => act("Cancel the print? It cannot be resumed.", "Cancel the print", "/api/printer/cancel"));

// -- heating: the appliance's presets (an administrator edits them in Settings) and targets

async function heat(hotend, bed) {
  try { await api("POST", "/api/printer/temperature", { hotend, bed }); } catch (error) { showError(error); }
}

async function showPresets() {
  const box = $("presets");
  if (!box) return;
  const { presets } = await api("GET", "/api/presets");
  box.replaceChildren(...presets.map((preset) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `${preset.name} ${preset.hotend}°/${preset.bed}°`;
    button.disabled = !connected;
    button.addEventListener("click", () => heat(preset.hotend, preset.bed));
    return button;
  }));
}

$("targets")?.addEventListener("submit", (event) => {
  event.preventDefault();
  const hotend = $("hotend-input").value;
  const bed = $("bed-input").value;
  const wanted = {};
  if (hotend !== "") wanted.hotend = Number(hotend);
  if (bed !== "") wanted.bed = Number(bed);
  if (Object.keys(wanted).length) api("POST", "/api/printer/temperature", wanted).catch(showError);
});
$("cool")?.addEventListener("click", () => heat(0, 0));
showPresets().catch(showError);
$("reconnect")?.addEventListener("click", () => api("POST", "/api/printer/connect", {}).catch(showError));

// -- jogging -------------------------------------------------------------------------------

let step = 10;
for (const button of document.querySelectorAll("[data-step]")) {
  button.addEventListener("click", () => {
    step = Number(button.dataset.step);
    for (const other of document.querySelectorAll("[data-step]")) {
      other.setAttribute("aria-pressed", String(other === button));
    }
  });
}
for (const button of document.querySelectorAll("#jog [data-axis]")) {
  button.addEventListener("click", () => {
    const distance = step * Number(button.dataset.sign);
    api("POST", "/api/printer/move", { axis: button.dataset.axis, distance }).catch(showError);
  });
}
for (const button of document.querySelectorAll("#jog [data-home]")) {
  button.addEventListener("click", () => {
    const axes = button.dataset.home ? button.dataset.home.split(",") : undefined;
    api("POST", "/api/printer/home", axes ? { axes } : {}).catch(showError);
  });
}

// -- camera: the live stream only when asked for (it keeps the Pi capturing and costs the
// network); the choice is remembered in this browser.

const CAMERA_KEY = "lezerprint.camera";
const camera = $("camera");
const toggle = $("camera-live");
camera.addEventListener("load", () => { camera.hidden = false; $("camera-off").hidden = true; });
camera.addEventListener("error", () => {
  if (!camera.getAttribute("src")) return;
  camera.hidden = true;
  $("camera-off").hidden = false;
});

function watch(live) {
  toggle.setAttribute("aria-expanded", String(live));
  toggle.textContent = live ? "Stop watching" : "Watch live";
  if (live) {
    camera.src = "/api/camera/stream";
  } else {
    camera.removeAttribute("src");
    camera.hidden = true;
    $("camera-off").hidden = true;
  }
  localStorage.setItem(CAMERA_KEY, live ? "live" : "off");
}

toggle.addEventListener("click", () => watch(toggle.getAttribute("aria-expanded") !== "true"));
if (localStorage.getItem(CAMERA_KEY) === "live") watch(true);
