// The serial terminal: what crosses the link, live (filtered), and commands with history.
const { on, send, followTerminal, showError, element } = globalThis.lezer;
const $ = (id) => document.getElementById(id);
const MAX_LINES = 1000;
const TEMPERATURE = /^(ok\s+)?T:\s*-?\d|^\s*T:-?\d|^N\d+\s+M105\*|^M105$/;
const OK = /^ok\b(?!\s+T:)/;
// The seed's built-in macros.
const MACROS = [
  ["Home all", ["G28"]],
  ["Preheat PLA", ["M104 S205", "M140 S60"]],
  ["Preheat ABS", ["M104 S245", "M140 S100"]],
  ["Cool down", ["M104 S0", "M140 S0", "M107"]],
  ["Auto bed level", ["G28", "G29"]],
];

const MACROS_KEY = "lezerprint.macros";
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
  showMacros();
  $("macro-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const commands = $("macro-lines").value.split("\n").map((line) => line.trim()).filter(Boolean);
    if (!commands.length) return;
    saveMacros([...userMacros(), [$("macro-name").value.trim(), commands]]);
    $("macro-form").reset();
    $("macro-editor").open = false;
  });
}

// The person's own macros, kept in this browser beside the built-in ones.

function userMacros() {
  try { return JSON.parse(localStorage.getItem(MACROS_KEY)) || []; } catch { return []; }
}

function saveMacros(macros) {
  localStorage.setItem(MACROS_KEY, JSON.stringify(macros));
  showMacros();
}

function macroButton([name, commands], index) {
  const button = element("button", {
    type: "button", title: commands.join("\n"),
    onclick: async () => { for (const command of commands) await run(command); },
  }, name);
  if (index === undefined) return button;
  const remove = element("button", {
    type: "button", class: "danger", "aria-label": `Delete the macro ${name}`,
    onclick: () => saveMacros(userMacros().filter((_, other) => other !== index)),
  }, "×");
  return element("span", { class: "row" }, button, remove);
}

function showMacros() {
  $("macros").replaceChildren(...MACROS.map((macro) => macroButton(macro)),
    ...userMacros().map((macro, index) => macroButton(macro, index)));
}
