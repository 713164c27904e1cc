// The camera page: the live stream (the Pi captures only while someone watches) and the
// timelapses of past prints.
const { api, showError, duration, bytes, element } = globalThis.lezer;
const $ = (id) => document.getElementById(id);

const stream = $("stream");
stream.addEventListener("load", () => { stream.hidden = false; $("no-camera").hidden = true; });
stream.addEventListener("error", () => { stream.hidden = true; $("no-camera").hidden = false; });
stream.src = "/api/camera/stream";
// Leaving the page ends the stream, so the Pi stops capturing for this tab.
window.addEventListener("pagehide", () => { stream.src = ""; });

api("GET", "/api/timelapses?limit=50").then(({ timelapses }) => {
  $("no-timelapses").hidden = timelapses.length > 0;
  $("timelapses").replaceChildren(...timelapses.map((lapse) => element("li", { class: "card" },
    element("div", { class: "name" }, new Date(lapse.createdAt).toLocaleString()),
    element("div", { class: "meta num" }, `${lapse.frameCount} frames · ${duration(lapse.duration)} · ${bytes(lapse.fileSize)} · ${lapse.format}`),
    element("a", { class: "button", href: lapse.videoUrl, download: "" }, "Download"))));
}).catch(showError);
