// The sign-in and first-start pages. An expired session is renewed silently first: its
// refresh cookie goes only to /api/auth, so the page server cannot do it.
const { api } = globalThis.lezer;
// Only a page of this appliance, and not the sign-in pages themselves (a loop).
function safeTarget(next) {
  if (!next) return "/";
  try {
    const url = new URL(next, location.origin);
    if (url.origin !== location.origin || ["/login", "/setup"].includes(url.pathname)) return "/";
    return url.pathname + url.search;
  } catch {
    return "/";
  }
}
const target = safeTarget(new URLSearchParams(location.search).get("next"));

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

// Sign-up, when an administrator has opened it (Settings).
const register = document.getElementById("register");
if (register) {
  api("GET", "/api/auth/registration", undefined, { renew: false })
    .then(({ enabled }) => { document.getElementById("register-box").hidden = !enabled; })
    .catch(() => {});
  register.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = document.getElementById("register-error");
    message.textContent = "";
    const username = document.getElementById("register-username").value;
    const password = document.getElementById("register-password").value;
    const email = document.getElementById("register-email").value;
    try {
      const account = email ? { username, password, email } : { username, password };
      await api("POST", "/api/auth/register", account, { renew: false });
      await signIn(username, password);
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
