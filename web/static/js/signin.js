// The sign-in and first-start pages. An expired session is renewed silently first: its
// refresh cookie goes only to /api/auth, so the page server cannot do it.
const { api } = globalThis.lezer;
const next = new URLSearchParams(location.search).get("next");
const target = next && next.startsWith("/") && !next.startsWith("//") ? next : "/";

async function signIn(username, password) {
  await api("POST", "/api/auth/login", { username, password, session: "cookie" }, { renew: false });
  location.replace(target);
}

const login = document.getElementById("login");
if (login) {
  const card = document.getElementById("signin-card");
  api("POST", "/api/auth/refresh", {}, { renew: false })
    .then(() => location.replace(target))
    .catch(() => { card.hidden = false; document.getElementById("username").focus(); });
  login.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = document.getElementById("login-error");
    message.textContent = "";
    try {
      await signIn(login.username.value, login.password.value);
    } catch (error) {
      message.textContent = error.message;
    }
  });
}

const setup = document.getElementById("setup");
if (setup) {
  setup.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = document.getElementById("setup-error");
    message.textContent = "";
    try {
      await api("POST", "/api/auth/setup", {
        code: setup.code.value, username: setup.username.value, password: setup.password.value,
      }, { renew: false });
      await signIn(setup.username.value, setup.password.value);
    } catch (error) {
      message.textContent = error.message;
    }
  });
}
