// Shared by every page: the API, the one websocket per tab, the stop button, dialogs.
// Pages are server-rendered; this and each page's own module make them live. It sets
// globalThis.lezer (module scripts run in order, so page modules after it can use it).

const can = new Set((document.body.dataset.can || "").split(" ").filter(Boolean));

// -- the API: the envelope's data, or an Error carrying the server's message ---------------

let refreshing = null;

// True when renewed (by this tab, or just now by another: 409), false when the appliance
// says the session is over (401/403); rejects when it cannot be reached or fails (5xx).
async function refresh() {
  refreshing ??= fetch("/api/auth/refresh", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: "{}",
  }).then((reply) => {
    if (reply.ok || reply.status === 409) return true;
    if (reply.status === 401 || reply.status === 403) return false;
    throw new Error(`the appliance answered ${reply.status}`);
  }).finally(() => { refreshing = null; });
  return refreshing;
}

// `renew: false` answers a 401 as an error, as the sign-in page needs; otherwise a 401
// renews the session once, then sends the person to sign in.
// `whole: true` answers the whole envelope (for a list's `meta`).
async function api(method, path, body, { renew = true, whole = false } = {}) {
  const options = { method, headers: {} };
  if (body instanceof FormData) {
    options.body = body;
  } else if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const reply = await fetch(path, options);
  if (reply.status === 401 && renew) {
    const renewed = await refresh().catch(() => null);
    if (renewed) return api(method, path, body, { renew: false, whole });
    if (renewed === false) {
      location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
      throw new Error("signed out");
    }
    throw new Error("the appliance cannot be reached");
  }
  const answer = await reply.json().catch(() => null);
  if (!reply.ok || !answer || answer.success === false) {
    const error = new Error(answer?.error?.message || `${reply.status} ${reply.statusText}`);
    error.status = reply.status;
    throw error;
  }
  return whole ? answer : answer.data;
}

// The access cookie lasts 15 minutes: renew it while the page stays open.
setInterval(() => { if (document.body.dataset.user) refresh().catch(() => {}); }, 10 * 60 * 1000);
// A phone that slept had its timers frozen: renew when the page is seen again.
let hiddenAt = 0;
document.addEventListener("visibilitychange", () => {
  if (document.hidden) { hiddenAt = Date.now(); return; }
  if (document.body.dataset.user && Date.now() - hiddenAt > 5 * 60 * 1000) refresh().catch(() => {});
});

// -- the websocket: one per tab, every live element listens to it --------------------------

const listeners = new Map();
const banner = document.getElementById("connection");
let socket = null;
let attempt = 0;
let wantTerminal = false;
let nextId = 1;
let leaving = false;  // signing out: the socket's end is expected
const pending = new Map();

// State events: a handler that subscribes late still gets the newest one at once.
const STATE_EVENTS = new Set(["printer:status", "temperature:update", "connected"]);
const latest = new Map();

function on(event, handler) {
  if (!listeners.has(event)) listeners.set(event, new Set());
  listeners.get(event).add(handler);
  if (latest.has(event)) handler(latest.get(event));
}

function emit(event, data) {
  if (STATE_EVENTS.has(event)) latest.set(event, data);
  for (const handler of listeners.get(event) || []) {
    try { handler(data); } catch (error) { console.error(event, error); }
  }
}

function setConnected(connected, message) {
  document.body.classList.toggle("offline", !connected);
  document.body.dataset.connection = connected ? "open" : "lost";
  if (banner) {
    banner.hidden = connected;
    if (message) banner.textContent = message;
  }
  emit("connection", { connected });
}

function connect() {
  if (!document.body.dataset.user) return;  // the sign-in pages have no live data
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws`);
  let opened = false;
  socket.onopen = () => {
    opened = true;
    attempt = 0;
    setConnected(true);
    if (wantTerminal) send("subscribe", { topics: ["terminal"] });
  };
  socket.onmessage = (message) => {
    const { event, data, id } = JSON.parse(message.data);
    if (id !== undefined && pending.has(id)) {
      const { resolve, reject } = pending.get(id);
      pending.delete(id);
      if (event === "error") reject(new Error(data.message));
      else resolve(data);
      return;
    }
    emit(event, data);
  };
  socket.onclose = async (closed) => {
    for (const { reject } of pending.values()) reject(new Error("the connection was lost"));
    pending.clear();
    if (leaving) return;
    if (closed.code === 4001 || !opened) {
      // The session ended, or the upgrade was refused (an expired cookie, or the appliance
      // is down): renew the cookie; sign in again only if the appliance says so.
      const renewed = await refresh().catch(() => null);
      if (renewed === false) {
        location.assign(`/login?next=${encodeURIComponent(location.pathname)}`);
        return;
      }
    }
    // Back off: 1, 2, 4, 8, then every 15 s, with a little jitter so that a restart of
    // the appliance is not met by every tab at once.
    const delay = Math.min(15, 2 ** attempt) * 1000 * (0.8 + Math.random() * 0.4);
    attempt += 1;
    setConnected(false, `Connection to the printer lost. Reconnecting in ${Math.round(delay / 1000)} s…`);
    setTimeout(connect, delay);
  };
}

function send(event, data = {}) {
  return new Promise((resolve, reject) => {
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      reject(new Error("not connected to the printer"));
      return;
    }
    const id = nextId++;
    pending.set(id, { resolve, reject });
    socket.send(JSON.stringify({ event, data, id }));
  });
}

function followTerminal() {
  wantTerminal = true;
  if (socket && socket.readyState === WebSocket.OPEN) send("subscribe", { topics: ["terminal"] });
}

// -- dialogs and small helpers ------------------------------------------------------------

const dialog = document.getElementById("confirm");

function confirmAction(question, yes = "Yes") {
  if (!dialog) return Promise.resolve(window.confirm(question));
  dialog.querySelector("p").textContent = question;
  dialog.querySelector("[value=yes]").textContent = yes;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
  });
}

function showError(error) {
  const box = document.getElementById("alerts");
  if (!box) { window.alert(error.message || error); return; }
  const item = document.createElement("div");
  item.className = "alert";
  item.setAttribute("role", "alert");
  item.textContent = error.message || String(error);
  box.append(item);
  setTimeout(() => item.remove(), 8000);
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  seconds = Math.max(0, Math.round(seconds));
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return h ? `${h}h ${String(m).padStart(2, "0")}m` : `${m}m ${String(s).padStart(2, "0")}s`;
}

function bytes(size) {
  if (size >= 1e6) return `${(size / 1e6).toFixed(1)} MB`;
  if (size >= 1e3) return `${(size / 1e3).toFixed(0)} kB`;
  return `${size} B`;
}

function degrees(value) {
  return value === null || value === undefined ? "—" : `${value.toFixed(1)}°`;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

// -- on every page: the stop button (no confirmation: it must act at once) and alerts -----

document.getElementById("estop")?.addEventListener("click", async () => {
  try {
    await api("POST", "/api/printer/emergency-stop");
  } catch (error) {
    showError(error);
  }
});
on("alert", (alert) => showError({ message: alert.message }));
document.getElementById("signout")?.addEventListener("click", async () => {
  leaving = true;
  await api("POST", "/api/auth/logout").catch(() => {});
  location.assign("/login");
});

globalThis.lezer = {
  can: (permission) => can.has(permission),
  api, on, send, followTerminal, confirm: confirmAction, showError,
  duration, bytes, degrees, element, refresh,
  leave: () => { leaving = true; },
};
// Connected once every page module has registered its handlers (they all run before this).
document.addEventListener("DOMContentLoaded", connect);
