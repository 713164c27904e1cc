// One file: everything known about it, its prints, and for G-code the toolpath layer by layer
// (following the printer's current layer while this file prints).
const { api, on, can, confirm, showError, duration, bytes, element, readToolpath, drawToolpath } = globalThis.lezer;
const $ = (id) => document.getElementById(id);
const fileId = decodeURIComponent(location.pathname.split("/").pop());
const bed = { x: Number($("file").dataset.bedX), y: Number($("file").dataset.bedY) };

function fact(label, value) {
  if (value === null || value === undefined || value === "" || (Array.isArray(value) && !value.length)) return [];
  return [element("dt", {}, label), element("dd", {}, String(value))];
}

function showFacts(file) {
  const m = file.metadata || {};
  const mm = (v) => (v === null || v === undefined ? null : `${v} mm`);
  const degreesList = (list) => (list && list.length ? list.map((t) => `${t}°`).join(", ") : null);
  const triple = (v) => (Array.isArray(v) ? `${v.map((n) => n.toFixed(1)).join(" × ")} mm` : null);
  const size = triple(m.dimensions);
  const box = m.boundingBox ? triple(m.boundingBox.max.map((high, k) => high - m.boundingBox.min[k])) : null;
  $("facts").replaceChildren(
    ...fact("Type", file.fileType),
    ...fact("Size", bytes(Number(file.fileSize))),
    ...fact("Folder", file.folder || "(top)"),
    ...fact("Uploaded", new Date(file.createdAt).toLocaleString()),
    ...fact("Owner", file.user?.username),
    ...fact("Slicer", [m.slicer, m.slicerVersion].filter(Boolean).join(" ")),
    ...fact("Print time", m.estimatedTime ? duration(m.estimatedTime) : null),
    ...fact("Filament", m.filamentLength ? `${(m.filamentLength / 1000).toFixed(2)} m` : null),
    ...fact("Filament weight", m.filamentWeight ? `${m.filamentWeight.toFixed(1)} g` : null),
    ...fact("Filament type", m.filamentType),
    ...fact("Layer height", mm(m.layerHeight)),
    ...fact("First layer", mm(m.firstLayerHeight)),
    ...fact("Layers", m.layerCount),
    ...fact("Object height", mm(m.objectHeight)),
    ...fact("Nozzle", mm(m.nozzleDiameter)),
    ...fact("Hotend", degreesList(m.temperatures)),
    ...fact("Bed", m.bedTemperature ? `${m.bedTemperature}°` : null),
    ...fact("Objects", (m.objects || []).join(", ")),
    ...fact("Model size", size),
    ...fact("Extent", box),
    ...fact("Triangles", m.triangles),
    ...fact("Volume", m.volume ? `${(m.volume / 1000).toFixed(2)} cm³` : null),
    ...fact("Surface", m.surfaceArea ? `${(m.surfaceArea / 100).toFixed(1)} cm²` : null),
    ...fact("Watertight", m.watertight === undefined ? null : (m.watertight ? "yes" : "no")),
    ...fact("Figures", m.computed ? "computed by LezerPrint (the slicer did not say)" : null),
    ...fact("Analysis", file.analysis ? `${file.analysis.status.toLowerCase()}${file.analysis.error ? `: ${file.analysis.error}` : ""}` : null),
    ...fact("SHA-256", file.sha256),
  );
}

function showActions(file) {
  const actions = [];
  if (file.fileType === "GCODE" && can("job:create")) {
    actions.push(element("button", { type: "button", class: "primary", onclick: async () => {
      if (!(await confirm(`Print ${file.originalName}?`, "Print"))) return;
      try { await api("POST", `/api/files/${file.id}/print`); location.assign("/"); } catch (error) { showError(error); }
    } }, "Print"));
  }
  actions.push(element("a", { class: "button", href: file.downloadUrl, download: "" }, "Download"));
  if (can("file:delete")) {
    actions.push(element("button", { type: "button", class: "danger", onclick: async () => {
      if (!(await confirm(`Delete ${file.originalName}? This cannot be undone.`, "Delete"))) return;
      try { await api("DELETE", `/api/files/${file.id}`); location.assign("/files"); } catch (error) { showError(error); }
    } }, "Delete"));
  }
  $("actions").replaceChildren(...actions);
}

// Renaming (the type's extension is kept) and moving to another folder: the owner or an
// administrator; the API says no to anyone else.
function showRename(file) {
  const form = $("rename");
  if (!form) return;
  $("new-name").value = file.originalName;
  $("new-folder").value = file.folder;
  api("GET", "/api/files/folders").then(({ folders }) => {
    $("folders").replaceChildren(...folders.filter(Boolean).map((folder) => element("option", { value: folder })));
  }).catch(() => {});
  form.onsubmit = async (event) => {
    event.preventDefault();
    $("rename-error").textContent = "";
    try {
      const changed = await api("PATCH", `/api/files/${file.id}`, { name: $("new-name").value, folder: $("new-folder").value });
      const renamed = changed.file ?? changed;
      $("crumb").textContent = renamed.originalName;
      $("name").textContent = renamed.originalName;
      showFacts({ ...file, ...renamed });
      $("rename-box").open = false;
    } catch (error) {
      $("rename-error").textContent = error.message;
    }
  };
}

// -- the toolpath --------------------------------------------------------------------------

let toolpath = null;
let printingThisFile = false;

function showLayer(index) {
  if (!toolpath) return;
  const clamped = Math.max(1, Math.min(toolpath.layers.length, index));
  $("layer").value = String(clamped);
  const layer = toolpath.layers[clamped - 1];
  $("layer-number").textContent = `${clamped} of ${toolpath.layers.length}${layer ? ` · Z ${layer.z.toFixed(2)} mm` : ""}`;
  drawToolpath($("toolpath"), toolpath, clamped - 1, bed);
}

async function loadToolpath(file) {
  $("preview-status").textContent = "Reading the file…";
  const response = await fetch(file.downloadUrl);
  if (!response.ok) throw new Error(`the file could not be read (${response.status})`);
  toolpath = await readToolpath(response, Number(file.fileSize), (fraction) => {
    $("preview-status").textContent = `Reading the file… ${Math.round(fraction * 100)} %`;
  });
  $("preview-status").textContent = `${toolpath.layers.length} layers`;
  if (!toolpath.layers.length) { $("no-preview").hidden = false; return; }
  $("layer").max = String(toolpath.layers.length);
  $("layer-controls").hidden = false;
  showLayer(1);
  new ResizeObserver(() => showLayer(Number($("layer").value))).observe($("toolpath"));
}

$("layer").addEventListener("input", () => {
  $("follow").checked = false;  // the person chose a layer: stop following
  showLayer(Number($("layer").value));
});

let currentJobId = null;
on("printer:status", async (status) => {
  const job = status.currentJob;
  if (!job) { printingThisFile = false; currentJobId = null; return; }
  if (job.id !== currentJobId) {
    currentJobId = job.id;
    try {
      const { job: record } = await api("GET", `/api/jobs/${job.id}`);
      printingThisFile = record.fileId === fileId;
    } catch { printingThisFile = false; }
  }
  if (printingThisFile && $("follow").checked && job.layer) showLayer(job.layer);
});

// -- the page ------------------------------------------------------------------------------

// When the analysis of this file ends (a model's figures, G-code's computed ones), show them.
on("file:analyzed", async (event) => {
  if (event.fileId !== fileId) return;
  try {
    const { file } = await api("GET", `/api/files/${encodeURIComponent(fileId)}`);
    showFacts(file);
    if (file.thumbnailUrl) { $("thumb").src = `${file.thumbnailUrl}?t=${Date.now()}`; $("thumb").hidden = false; }
  } catch (error) {
    showError(error);
  }
});

try {
  const { file, jobs } = await api("GET", `/api/files/${encodeURIComponent(fileId)}`);
  document.title = `${file.originalName} · LezerPrint`;
  $("crumb").textContent = file.originalName;
  $("name").textContent = file.originalName;
  if (file.thumbnailUrl) { $("thumb").src = file.thumbnailUrl; $("thumb").hidden = false; }
  showFacts(file);
  showActions(file);
  showRename(file);
  $("no-jobs").hidden = jobs.length > 0;
  $("jobs").replaceChildren(...jobs.map((job) => element("li", { class: "card" },
    element("span", { class: `status-${job.status}` }, job.status.toLowerCase()), " · ",
    element("span", { class: "num" }, job.startedAt ? new Date(job.startedAt).toLocaleString() : "not started"),
    job.actualTime ? ` · ${duration(job.actualTime)}` : "")));
  if (file.fileType === "GCODE") {
    await loadToolpath(file);
  } else {
    // A model: the 3D view, whose library (three.js) only this case loads.
    $("toolpath").hidden = true;
    $("model").hidden = false;
    $("preview-status").textContent = "Loading the 3D view…";
    const { showModel } = await import($("file").dataset.modelViewer);
    const shown = await showModel($("model"), file.downloadUrl, file.fileType, bed);
    $("preview-status").textContent = `${shown.triangles.toLocaleString()} triangles · drag to turn`;
  }
} catch (error) {
  showError(error);
  $("preview-status").textContent = "";
}
