// One's own account: the password (changing it ends every session, this one included) and
// API keys (a new key's secret is shown once).
const { api, showError, element } = globalThis.lezer;
const $ = (id) => document.getElementById(id);

$("password-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const message = $("password-message");
  message.textContent = "";
  try {
    await api("PUT", "/api/auth/password", { currentPassword: $("current").value, newPassword: $("new").value }, { renew: false });
    globalThis.lezer.leave();
    location.assign("/login");  // every session ended: sign in with the new password
  } catch (error) {
    message.textContent = error.message;
  }
});

async function loadKeys() {
  const { apiKeys } = await api("GET", "/api/auth/api-keys");
  $("keys").replaceChildren(...apiKeys.filter((key) => !key.revokedAt).map((key) => element("li", { class: "card row" },
    element("span", { class: "name" }, key.name),
    element("span", { class: "muted num" }, `${key.prefix}… · last used ${key.lastUsedAt ? new Date(key.lastUsedAt).toLocaleString() : "never"}`),
    element("button", { type: "button", class: "danger", onclick: async () => {
      try { await api("DELETE", `/api/auth/api-keys/${key.id}`); await loadKeys(); } catch (error) { showError(error); }
    } }, "Revoke"))));
}

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const made = await api("POST", "/api/auth/api-keys", { name: $("key-name").value });
    $("new-key").hidden = false;
    $("new-key").replaceChildren("Copy this key now; it is not shown again: ", element("code", { class: "code" }, made.key));
    $("key-name").value = "";
    await loadKeys();
  } catch (error) {
    showError(error);
  }
});
loadKeys().catch(showError);
