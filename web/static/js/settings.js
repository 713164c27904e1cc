// Administration: accounts and roles, sign-up, the camera, heating presets, the printer
// profile and the GPIO pins.
const { api, confirm, showError, element } = globalThis.lezer;
const $ = (id) => document.getElementById(id);
const ROLES = ["ADMIN", "OPERATOR", "VIEWER"];
const me = document.body.dataset.user;

async function change(user, values) {
  try {
    await api("PATCH", `/api/users/${user.id}`, values);
  } catch (error) {
    showError(error);
  }
  await loadUsers();
}

async function resetPassword(user) {
  const dialog = element("dialog", {},
    element("form", { method: "dialog" },
      element("label", { for: "reset-password" }, `New password for ${user.username}`),
      element("input", { id: "reset-password", type: "password", minlength: "8", maxlength: "128", autocomplete: "new-password", required: "" }),
      element("div", { class: "row" }, element("button", { value: "yes", class: "primary" }, "Set password"), element("button", { value: "no", formnovalidate: "" }, "Cancel"))));
  document.body.append(dialog);
  dialog.showModal();
  dialog.addEventListener("close", async () => {
    const password = dialog.querySelector("input").value;
    dialog.remove();
    if (dialog.returnValue !== "yes") return;
    try {
      await api("POST", `/api/users/${user.id}/password`, { password });
    } catch (error) {
      showError(error);
    }
  });
}

async function loadUsers() {
  const { users } = await api("GET", "/api/users?limit=100");
  $("users").replaceChildren(...users.map((user) => {
    const role = element("select", { "aria-label": `Role of ${user.username}` },
      ...ROLES.map((name) => element("option", { value: name, selected: name === user.role ? "" : null }, name.toLowerCase())));
    role.addEventListener("change", () => change(user, { role: role.value }));
    const active = element("input", { type: "checkbox", "aria-label": `${user.username} may sign in`, checked: user.isActive ? "" : null });
    active.addEventListener("change", async () => {
      if (!active.checked && !(await confirm(`Disable ${user.username}? Their sessions end at once.`, "Disable"))) {
        active.checked = true;
        return;
      }
      await change(user, { isActive: active.checked });
    });
    if (user.username === me) { role.disabled = true; active.disabled = true; }
    return element("tr", {},
      element("td", {}, user.username, user.email ? element("div", { class: "muted" }, user.email) : null),
      element("td", {}, role),
      element("td", {}, active),
      element("td", { class: "num" }, user.lastLoginAt ? new Date(user.lastLoginAt).toLocaleString() : "never"),
      element("td", {}, element("button", { type: "button", onclick: () => resetPassword(user) }, "Set…")));
  }));
}

$("new-user").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("new-user-error").textContent = "";
  try {
    await api("POST", "/api/users", { username: $("new-username").value, password: $("new-password").value, role: $("new-role").value });
    $("new-user").reset();
    await loadUsers();
  } catch (error) {
    $("new-user-error").textContent = error.message;
  }
});

api("GET", "/api/auth/registration").then(({ enabled }) => { $("registration").checked = enabled; }).catch(showError);
$("registration").addEventListener("change", () => {
  api("PUT", "/api/auth/registration", { enabled: $("registration").checked }).catch(showError);
});

// -- the camera ----------------------------------------------------------------------------

const NUMBERS = ["width", "height", "fps", "quality", "timelapseInterval"];
const FLAGS = ["flipHorizontal", "flipVertical"];

function showCamera(settings) {
  for (const key of NUMBERS) $(key).value = settings[key];
  for (const key of FLAGS) $(key).checked = settings[key];
  $("rotation").value = String(settings.rotation);
  $("timelapse").value = settings.timelapse;
  $("camera-source").textContent = `Source: ${settings.source}${settings.active ? ` (${settings.active})` : ""}${settings.error ? ` · ${settings.error}` : ""}`;
}

$("camera-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const wanted = { rotation: Number($("rotation").value), timelapse: $("timelapse").value };
  for (const key of NUMBERS) wanted[key] = Number($(key).value);
  for (const key of FLAGS) wanted[key] = $(key).checked;
  try {
    showCamera(await api("POST", "/api/camera/settings", wanted));
    $("camera-message").textContent = "Saved.";
  } catch (error) {
    $("camera-message").textContent = error.message;
  }
});

api("GET", "/api/camera/settings").then(showCamera).catch(() => {
  $("camera-source").textContent = "The camera is off ([camera] source = \"off\").";
  for (const input of $("camera-form").elements) input.disabled = true;
});
// -- heating presets --------------------------------------------------------------------------

async function loadPresets() {
  const { presets } = await api("GET", "/api/presets");
  $("presets").replaceChildren(...presets.map((preset) => {
    const name = element("input", { value: preset.name, maxlength: "20", size: "10", "aria-label": `Name of ${preset.name}` });
    const hotend = element("input", { type: "number", value: String(preset.hotend), min: "0", step: "any", size: "5", "aria-label": `Hotend °C of ${preset.name}` });
    const bed = element("input", { type: "number", value: String(preset.bed), min: "0", step: "any", size: "5", "aria-label": `Bed °C of ${preset.name}` });
    const save = element("button", { type: "button", onclick: async () => {
      $("preset-error").textContent = "";
      try {
        await api("PATCH", `/api/presets/${preset.id}`, { name: name.value, hotend: Number(hotend.value), bed: Number(bed.value) });
        await loadPresets();
      } catch (error) { $("preset-error").textContent = error.message; }
    } }, "Save");
    const remove = element("button", { type: "button", class: "danger", onclick: async () => {
      if (!(await confirm(`Delete the preset ${preset.name}?`, "Delete"))) return;
      try { await api("DELETE", `/api/presets/${preset.id}`); await loadPresets(); } catch (error) { showError(error); }
    } }, "Delete");
    return element("div", { class: "preset field" }, name, hotend, bed, save, remove);
  }));
}

$("new-preset").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("preset-error").textContent = "";
  try {
    await api("POST", "/api/presets", { name: $("preset-name").value, hotend: Number($("preset-hotend").value), bed: Number($("preset-bed").value) });
    $("new-preset").reset();
    await loadPresets();
  } catch (error) {
    $("preset-error").textContent = error.message;
  }
});

loadPresets().catch(showError);
loadUsers().catch(showError);

// -- the printer profile and the GPIO pins ---------------------------------------------------
// Each form's inputs are named as the API's fields; a value fixed at launch is shown disabled
// with where it came from.

const PINS = [["-1", "not wired"], ...Array.from({ length: 28 }, (_, pin) => [String(pin), `GPIO ${pin}`])];
for (const select of document.querySelectorAll("select.pin")) {
  select.replaceChildren(...PINS.map(([value, label]) => element("option", { value }, label)));
}

function fill(form, settings) {
  for (const input of form.elements) {
    const setting = settings[input.name];
    if (!setting) continue;
    if (input.type === "checkbox") input.checked = setting.value;
    else input.value = String(setting.value);
    input.dataset.was = input.type === "checkbox" ? String(input.checked) : input.value;
    input.disabled = !setting.editable;
    input.title = setting.editable ? (setting.from === "settings" ? "Changed here" : `From the ${setting.from}`) : `Set by ${setting.from} when the appliance started`;
  }
}

// Only what was changed is sent: the rest keeps coming from the file.
function wanted(form) {
  const values = {};
  for (const input of form.elements) {
    if (!input.name || input.disabled) continue;
    if ((input.type === "checkbox" ? String(input.checked) : input.value) === input.dataset.was) continue;
    if (input.type === "checkbox") values[input.name] = input.checked;
    else if (input.type === "number" || input.classList.contains("pin")) values[input.name] = Number(input.value);
    else values[input.name] = input.value;
  }
  return values;
}

function showProfile({ settings, ports }) {
  fill($("profile-form"), settings);
  $("ports").replaceChildren(...["auto", ...ports].map((port) => element("option", { value: port })));
}

function showGpio({ settings, state }) {
  fill($("gpio-form"), settings);
  $("gpio-state").textContent = state.error ? `No pin is in use: ${state.error}`
    : state.inUse
      ? `The pins are in use${state.estopTripped ? " · the emergency stop is pressed" : ""}${state.filamentOut ? " · no filament" : ""}.`
      : "No pin is in use: none is wired, or this machine has no GPIO (the pins are used on a Raspberry Pi).";
}

function settingsForm(formId, path, show, message) {
  $(formId).addEventListener("submit", async (event) => {
    event.preventDefault();
    $(message).textContent = "";
    try {
      show(await api("PATCH", path, wanted($(formId))));
      $(message).textContent = "Saved.";
    } catch (error) {
      $(message).textContent = error.message;
    }
  });
  api("GET", path).then(show).catch(showError);
}

settingsForm("profile-form", "/api/printer/profile", showProfile, "profile-message");
settingsForm("gpio-form", "/api/gpio", showGpio, "gpio-message");
for (const [button, path, show, message] of [["profile-reset", "/api/printer/profile", showProfile, "profile-message"], ["gpio-reset", "/api/gpio", showGpio, "gpio-message"]]) {
  $(button).addEventListener("click", async () => {
    if (!(await confirm("Forget the changes made here and use the configuration file's values?", "Use the file's"))) return;
    try {
      show(await api("DELETE", path));
      $(message).textContent = "The configuration file's values apply again.";
    } catch (error) {
      $(message).textContent = error.message;
    }
  });
}
