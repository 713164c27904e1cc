// The file library: uploads with a real progress bar (XMLHttpRequest: fetch cannot report
// upload progress) and a cancel button, and the list with thumbnails and slicer figures.
const { api, on, can, confirm, showError, duration, bytes, element } = globalThis.lezer;
const $ = (id) => document.getElementById(id);
const LIMIT = 30;
let page = 1;

// -- the list ------------------------------------------------------------------------------

function facts(file) {
  const m = file.metadata || {};
  const parts = [bytes(Number(file.fileSize))];
  if (m.estimatedTime) parts.push(`⏱ ${duration(m.estimatedTime)}`);
  if (m.filamentLength) parts.push(`${(m.filamentLength / 1000).toFixed(2)} m`);
  if (m.filamentWeight) parts.push(`${m.filamentWeight.toFixed(1)} g`);
  if (m.layerHeight) parts.push(`${m.layerHeight} mm layers`);
  if (m.slicer) parts.push(m.slicer);
  if (Array.isArray(m.dimensions)) parts.push(`${m.dimensions.map((n) => n.toFixed(1)).join("×")} mm`);
  if (file.analysis?.status === "PENDING" || file.analysis?.status === "RUNNING") parts.push("analysing…");
  if (file.analysis?.status === "FAILED") parts.push(`analysis failed: ${file.analysis.error}`);
  if (file.folder) parts.push(`📁 ${file.folder}`);
  return parts.join(" · ");
}

function row(file) {
  const thumb = file.thumbnailUrl
    ? element("img", { class: "thumb", src: file.thumbnailUrl, alt: "", loading: "lazy" })
    : element("div", { class: "thumb", "aria-hidden": "true" });
  const actions = element("div", { class: "actions" });
  if (file.fileType === "GCODE" && can("job:create")) {
    actions.append(element("button", { type: "button", class: "primary", onclick: () => print(file) }, "Print"));
  }
  actions.append(element("a", { class: "button", href: file.downloadUrl, download: "" }, "Download"));
  if (can("file:delete")) {
    actions.append(element("button", { type: "button", class: "danger", onclick: () => remove(file) }, "Delete"));
  }
  return element("li", { class: "file card", "data-id": file.id },
    thumb,
    element("div", {},
      element("a", { class: "name", href: `/files/${encodeURIComponent(file.id)}` }, file.originalName),
      element("div", { class: "meta num" }, facts(file))),
    actions);
}

let asked = 0;  // the newest list request: an older answer arriving late is dropped

async function load(more = false) {
  page = more ? page + 1 : 1;
  const mine = ++asked;
  const [sort, order] = $("sort").value.split(":");
  const query = new URLSearchParams({ page, limit: LIMIT, sort, order });
  if ($("search").value) query.set("search", $("search").value);
  if ($("type").value) query.set("type", $("type").value);
  if ($("folder").value !== "") query.set("folder", $("folder").value === "/" ? "" : $("folder").value);
  try {
    const answer = await api("GET", `/api/files?${query}`, undefined, { whole: true });
    if (mine !== asked) return;
    const rows = answer.data.files.map(row);
    if (more) $("files").append(...rows); else $("files").replaceChildren(...rows);
    $("empty").hidden = answer.meta.total > 0;
    $("more").hidden = answer.meta.page >= answer.meta.pages;
  } catch (error) {
    showError(error);
  }
}

async function loadFolders() {
  const { folders } = await api("GET", "/api/files/folders");
  const chosen = $("folder").value;
  $("folder").replaceChildren(element("option", { value: "" }, "All folders"),
    ...folders.map((folder) => element("option", { value: folder || "/" }, folder || "(top)")));
  $("folder").value = chosen;
}

async function print(file) {
  if (!(await confirm(`Print ${file.originalName}?`, "Print"))) return;
  try {
    await api("POST", `/api/files/${file.id}/print`);
    location.assign("/");
  } catch (error) {
    showError(error);
  }
}

async function remove(file) {
  if (!(await confirm(`Delete ${file.originalName}? This cannot be undone.`, "Delete"))) return;
  try {
    await api("DELETE", `/api/files/${file.id}`);
    document.querySelector(`[data-id="${file.id}"]`)?.remove();
  } catch (error) {
    showError(error);
  }
}

let searching = null;
$("search").addEventListener("input", () => { clearTimeout(searching); searching = setTimeout(() => load(), 250); });
for (const id of ["sort", "type", "folder"]) $(id).addEventListener("change", () => load());
$("filters").addEventListener("submit", (event) => { event.preventDefault(); load(); });
$("more").addEventListener("click", () => load(true));
on("file:analyzed", () => load());

// -- uploads -------------------------------------------------------------------------------

// One file; a 401 (the session's cookie expired while the phone slept) renews it and tries
// once more.
async function upload(file) {
  if ((await send(file)) === 401 && (await globalThis.lezer.refresh().catch(() => false))) {
    await send(file);
  }
}

function send(file) {
  const bar = element("div", { class: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-label": `Uploading ${file.name}` }, element("div"));
  const label = element("div", { class: "num" }, `${file.name} · 0 %`);
  const cancel = element("button", { type: "button" }, "Cancel");
  const item = element("div", { class: "upload" }, element("div", {}, label, bar), cancel);
  $("uploads").append(item);
  const form = new FormData();
  form.append("file", file);
  const folder = $("upload-folder").value.trim();
  if (folder) form.append("folder", folder);
  const request = new XMLHttpRequest();
  request.open("POST", "/api/files");
  request.upload.addEventListener("progress", (event) => {
    if (!event.lengthComputable) return;
    const percent = (100 * event.loaded) / event.total;
    bar.firstElementChild.style.width = `${percent}%`;
    bar.setAttribute("aria-valuenow", percent.toFixed(0));
    label.textContent = `${file.name} · ${percent.toFixed(0)} % of ${bytes(event.total)}`;
  });
  cancel.addEventListener("click", () => request.abort());
  return new Promise((resolve) => {
    request.addEventListener("load", () => {
      if (request.status === 401) { item.remove(); resolve(401); return; }
      let answer = null;
      try { answer = JSON.parse(request.responseText); } catch { /* not JSON */ }
      if (request.status >= 200 && request.status < 300) {
        label.textContent = `${file.name} · uploaded`;
        cancel.remove();
        setTimeout(() => item.remove(), 4000);
      } else {
        label.textContent = `${file.name} · ${answer?.error?.message || request.statusText}`;
        label.classList.add("error-text");
        cancel.textContent = "Dismiss";
        cancel.onclick = () => item.remove();
      }
      resolve();
    });
    request.addEventListener("abort", () => { label.textContent = `${file.name} · cancelled`; cancel.remove(); setTimeout(() => item.remove(), 3000); resolve(); });
    request.addEventListener("error", () => { label.textContent = `${file.name} · the connection failed`; resolve(); });
    request.send(form);
  });
}

async function uploadAll(files) {
  for (const file of files) await upload(file);
  await Promise.all([load(), loadFolders()]);
}

const dropzone = $("dropzone");
if (dropzone) {
  $("picker").addEventListener("change", () => { uploadAll([...$("picker").files]); $("picker").value = ""; });
  dropzone.addEventListener("dragover", (event) => { event.preventDefault(); dropzone.classList.add("over"); });
  dropzone.addEventListener("dragleave", () => dropzone.classList.remove("over"));
  dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    dropzone.classList.remove("over");
    uploadAll([...event.dataTransfer.files]);
  });
}

load();
loadFolders().catch(showError);
