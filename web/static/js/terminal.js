// The serial terminal: what crosses the link, live (filtered), and commands with history.
const { api, can, confirm, on, send, followTerminal, showError, element } = globalThis.lezer;
const $ = (id) => document.getElementById(id);
const MAX_LINES = 1000;
const TEMPERATURE = /^(ok\s+)?T:\s*-?\d|^\s*T:-?\d|^N\d+\s+M105\*|^M105$/;
const OK = /^ok\b(?!\s+T:)/;
// What the terminal kept in this browser before macros were kept on the appliance.
const OLD_MACROS_KEY = "lezerprint.macros";
const log = $("log");

function add(text, kind) {
  const hidden = ($("hide-temps").checked && TEMPERATURE.test(text.replace(/^N\d+\s+/, "")))
    || ($("hide-oks").checked && OK.test(text));
  if (hidden) return;
  log.append(element("div", { class: kind }, kind === "send" ? `> ${text}` : text));
  while (log.childElementCount > MAX_LINES) log.firstElementChild.remove();
  if ($("autoscroll").checked) log.scrollTop = log.scrollHeight;
}

on("printer:log", ({ lines, skipped }) => {
  if (skipped) add(`… ${skipped} lines not shown`, "muted");
  for (const line of lines) add(line.text, line.dir === "send" ? "send" : "recv");
});
followTerminal();
$("clear").addEventListener("click", () => log.replaceChildren());

const history = [];
let cursor = 0;
let printerState = null;
let leftovers = [];  // macros this browser kept that the appliance refused: {name, commands, reason}
let editing = null;  // the one of them now in the editor, forgotten here once it is saved

async function run(command) {
  add(command, "mine");
  try {
    const answer = await send("printer:command", { command });
    for (const line of answer.response || []) add(line, "mine");
  } catch (error) {
    add(`${command}: ${error.message}`, "error");
  }
}

const form = $("command-form");
if (form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const command = $("command").value.trim();
    if (!command) return;
    history.push(command);
    cursor = history.length;
    $("command").value = "";
    await run(command);
  });
  $("command").addEventListener("keydown", (event) => {
    if (event.key === "ArrowUp" && cursor > 0) { cursor -= 1; $("command").value = history[cursor]; event.preventDefault(); }
    if (event.key === "ArrowDown") { cursor = Math.min(history.length, cursor + 1); $("command").value = history[cursor] || ""; event.preventDefault(); }
  });
  on("printer:status", (status) => { printerState = status.state; });
  $("macro-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("macro-error").textContent = "";
    // Sent as typed: the appliance drops blank lines and comments, and counts lines as here.
    const values = { name: $("macro-name").value, commands: $("macro-lines").value.split("\n") };
    try {
      await api("POST", "/api/macros", values);
    } catch (error) {
      $("macro-error").textContent = error.message;
      return;
    }
    if (editing) dropOldMacro(editing);
    editing = null;
    $("macro-form").reset();
    $("macro-editor").open = false;
    await showMacros();
  });
  showMacros().then(moveOldMacros).catch(showError);
}

// -- macros: kept on the appliance, the same in every browser and for every account -------

async function runMacro(macro) {
  // Before the websocket's first status (a click right after the page opened), ask.
  const state = printerState ?? (await api("GET", "/api/printer/status").catch(() => ({}))).state;
  if (state === "printing" && !(await confirm(
    `A print is running: the lines of “${macro.name}” go out between its lines. Run it now?`, "Run",
  ))) return;
  try {
    const { results } = await api("POST", `/api/macros/${macro.id}/run`);
    for (const { command, response } of results) {
      add(command, "mine");
      for (const line of response) add(line, "mine");
    }
  } catch (error) {
    add(`${macro.name}: ${error.message}`, "error");
  }
}

function macroButton(macro) {
  const button = element("button", {
    type: "button", title: macro.commands.join("\n"), onclick: () => runMacro(macro),
  }, macro.name);
  if (macro.builtin || !can("printer:control")) return button;
  const remove = element("button", {
    type: "button", class: "danger", "aria-label": `Delete the macro ${macro.name}`,
    onclick: async () => {
      if (!(await confirm(`Delete the macro “${macro.name}” for everyone?`, "Delete"))) return;
      try { await api("DELETE", `/api/macros/${macro.id}`); await showMacros(); } catch (error) { showError(error); }
    },
  }, "×");
  return element("span", { class: "row" }, button, remove);
}

async function showMacros() {
  const { macros } = await api("GET", "/api/macros");
  $("macros").replaceChildren(...macros.map(macroButton));
  return macros;
}

// -- macros this browser kept before: moved to the appliance once, then forgotten here ----

function oldMacros() {
  try {
    const kept = JSON.parse(localStorage.getItem(OLD_MACROS_KEY));
    return Array.isArray(kept) ? kept.filter((item) => Array.isArray(item) && Array.isArray(item[1])) : [];
  } catch { return []; }
}

function keepOldMacros(left) {
  leftovers = left;
  if (left.length) localStorage.setItem(OLD_MACROS_KEY, JSON.stringify(left.map(({ name, commands }) => [name, commands])));
  else localStorage.removeItem(OLD_MACROS_KEY);
  showOldMacros();
}

function dropOldMacro(macro) {
  keepOldMacros(leftovers.filter((other) => other !== macro));
}

// As the appliance keeps it: names compared without case, lines without comments or blanks.
function sameMacro(macros, name, commands) {
  const lines = commands.map((line) => String(line).split(";")[0].trim()).filter(Boolean).join("\n");
  return macros.some((macro) => macro.name.toLowerCase() === String(name).trim().toLowerCase()
    && macro.commands.join("\n") === lines);
}

// Each goes up under its own name, or "(this browser)" after it when another macro has the
// name; the ones the appliance refuses stay here, shown with the reason, to fix or discard.
async function moveOldMacros(macros) {
  const old = oldMacros();
  if (!old.length || !can("printer:control")) return;
  const left = [];
  let moved = 0;
  for (const [name, commands] of old) {
    if (sameMacro(macros, name, commands)) continue;  // moved already (another tab of this browser)
    let reason = "";
    for (const tried of [name, `${String(name).slice(0, 25)} (this browser)`]) {
      try {
        await api("POST", "/api/macros", { name: tried, commands });
        moved += 1;
        reason = "";
        break;
      } catch (error) {
        reason = error.message;
        if (error.status !== 409) break;
        macros = await showMacros();
        if (sameMacro(macros, name, commands)) { reason = ""; break; }
      }
    }
    if (reason) left.push({ name, commands, reason });
  }
  if (moved) $("macro-status").textContent = `${moved} macro${moved === 1 ? "" : "s"} kept only in this browser ${moved === 1 ? "is" : "are"} now kept on the printer, for everyone.`;
  keepOldMacros(left);
  await showMacros();
}

function showOldMacros() {
  $("old-macros").replaceChildren(...leftovers.map((macro) => element("p", { class: "row" },
    element("span", { class: "grow" }, `“${macro.name}”, kept only in this browser, could not be moved to the printer`,
      macro.reason ? `: ${macro.reason}` : "."),
    element("button", { type: "button", onclick: () => {
      editing = macro;
      $("macro-name").value = macro.name;
      $("macro-lines").value = macro.commands.join("\n");
      $("macro-editor").open = true;
      $("macro-name").focus();
    } }, "Edit"),
    element("button", { type: "button", class: "danger", onclick: async () => {
      if (await confirm(`Forget “${macro.name}”? It was kept only in this browser.`, "Forget")) dropOldMacro(macro);
    } }, "Forget"),
  )));
}
