"""The account routes over HTTP: aiohttp's test server on 127.0.0.1, the real middlewares, the
auth room over a real SQLite file in tmp_path, real bcrypt (at cost 4: see test_auth.py for
the default of 12).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from lezerprintd.api import accounts as accounts_api
from lezerprintd.api import spec
from lezerprintd.api.envelope import errors_middleware
from lezerprintd.auth.middleware import access_middleware
from lezerprintd.auth.permissions import ACCESS, Role
from lezerprintd.auth.service import Auth, Client, read_setup_code
from lezerprintd.bus import Bus, SessionsRevoked
from lezerprintd.store import Store
from tests.conftest import Events

FAST = 4
PASSWORD = "correct horse battery staple"
LOCAL = Client(address="127.0.0.1", user_agent="pytest")

Json = dict[str, Any]
MakeClient = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]


@dataclass
class Served:
    client: TestClient  # type: ignore[type-arg]
    auth: Auth
    store: Store
    bus: Bus
    data_dir: Path

    async def call(
        self,
        method: str,
        path: str,
        status: int,
        token: str | None = None,
        json: object = None,
        **kwargs: Any,
    ) -> Json:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        response = await self.client.request(method, path, json=json, headers=headers, **kwargs)
        answer: Json = await response.json()
        assert response.status == status, answer
        assert answer["success"] is (status < 400)
        return answer

    async def user(self, name: str, role: Role, password: str = PASSWORD) -> str:
        """A new account made by the room directly; returns its id."""
        made = await self.auth.create_user(name, password, role, None, actor=None, client=LOCAL)
        return made.id

    async def login(self, name: str, password: str = PASSWORD) -> Json:
        """Signs in in token mode; returns `tokens`."""
        answer = await self.call(
            "POST", "/api/auth/login", 200, json={"username": name, "password": password}
        )
        tokens: Json = answer["data"]["tokens"]
        return tokens

    async def events(self, event_type: str) -> list[Any]:
        return await self.store.fetchall(
            "SELECT * FROM system_events WHERE event_type = ? ORDER BY id", (event_type,)
        )


def build(auth: Auth) -> web.Application:
    """The accounts routes behind the daemon's own middlewares."""
    app = web.Application(middlewares=[errors_middleware, access_middleware(auth)])
    endpoints = accounts_api.endpoints(SimpleNamespace(auth=auth))  # type: ignore[arg-type]
    app.router.add_routes([endpoint.route() for endpoint in endpoints])
    return app


@pytest.fixture
async def served(aiohttp_client: MakeClient, tmp_path: Path) -> AsyncIterator[Served]:
    store = await Store.open(tmp_path / "lezerprint.db")
    bus = Bus()
    auth = Auth(store, tmp_path, bus, bcrypt_cost=FAST)
    await auth.start()
    try:
        client = await aiohttp_client(build(auth))
        yield Served(client, auth, store, bus, tmp_path)
    finally:
        await store.close()


@pytest.fixture
async def admin(served: Served) -> str:
    """An admin's access token."""
    await served.user("root", Role.ADMIN)
    return str((await served.login("root"))["accessToken"])


def origin(served: Served) -> dict[str, str]:
    return {"Origin": str(served.client.make_url("/")).rstrip("/")}


# -- first start -------------------------------------------------------------------------------


async def test_setup_takes_the_first_admin_only_with_the_code(served: Served) -> None:
    path = served.data_dir / "setup-code"
    assert path.stat().st_mode & 0o777 == 0o600
    code = read_setup_code(path)
    assert code is not None
    state = await served.call("GET", "/api/auth/setup", 200)
    assert state["data"] == {"setupRequired": True}
    first = {"username": "owner", "password": PASSWORD}
    missing = await served.call("POST", "/api/auth/setup", 400, json=first)
    assert missing["error"]["details"][0]["field"] == "code"
    wrong = await served.call("POST", "/api/auth/setup", 403, json={**first, "code": "AAAA-BBBB"})
    assert wrong["error"]["code"] == "FORBIDDEN"
    assert path.exists()
    made = await served.call(
        "POST", "/api/auth/setup", 201, json={**first, "code": code.lower().replace("-", " ")}
    )
    assert made["data"]["user"]["role"] == "ADMIN"
    assert not path.exists()
    assert (await served.call("GET", "/api/auth/setup", 200))["data"] == {"setupRequired": False}
    again = {"username": "other", "password": PASSWORD, "code": code}
    assert (await served.call("POST", "/api/auth/setup", 409, json=again))["error"][
        "code"
    ] == "CONFLICT"
    await served.login("owner")
    failed = await served.events("SETUP_FAILED")
    assert len(failed) == 1
    assert failed[0]["ip_address"] == "127.0.0.1"
    assert len(await served.events("SETUP_COMPLETED")) == 1


async def test_wrong_setup_codes_are_throttled(served: Served) -> None:
    code = read_setup_code(served.data_dir / "setup-code")
    body = {"username": "owner", "password": PASSWORD, "code": "WRONG"}
    for _ in range(5):
        await served.call("POST", "/api/auth/setup", 403, json=body)
    answer = await served.call("POST", "/api/auth/setup", 429, json={**body, "code": code})
    assert answer["error"]["code"] == "RATE_LIMITED"
    assert 0 < answer["error"]["details"]["retryAfter"] <= 900


# -- signing in --------------------------------------------------------------------------------


async def test_login_in_token_mode_answers_the_tokens(served: Served) -> None:
    await served.user("ann", Role.OPERATOR)
    await served.auth.update_user(
        (await served.auth.user_named("ann")).id, email="Ann@Example.org", actor=None, client=LOCAL
    )
    answer = await served.call(
        "POST", "/api/auth/login", 200, json={"username": "ANN@example.ORG", "password": PASSWORD}
    )
    data = answer["data"]
    assert data["tokens"]["tokenType"] == "Bearer"
    assert data["tokens"]["expiresIn"] == 900
    assert data["user"]["email"] == "ann@example.org"
    assert data["user"]["lastLoginAt"].endswith("Z")
    for path in ("/api/auth/profile", "/api/auth/me"):
        profile = await served.call("GET", path, 200, token=data["tokens"]["accessToken"])
        assert profile["data"]["user"]["username"] == "ann"
        assert set(profile["data"]["user"]) == {
            "id",
            "username",
            "email",
            "role",
            "isActive",
            "createdAt",
            "updatedAt",
            "lastLoginAt",
        }
        assert "printer:control" in profile["data"]["permissions"]
        assert "user:read" not in profile["data"]["permissions"]
    wrong = await served.call(
        "POST", "/api/auth/login", 401, json={"username": "ann", "password": "not it at all"}
    )
    assert wrong["error"]["message"] == "wrong username or password"
    nobody = await served.call(
        "POST", "/api/auth/login", 401, json={"username": "nobody", "password": "not it at all"}
    )
    assert nobody["error"] == wrong["error"]  # no hint whether the account exists


async def test_login_in_cookie_mode_sets_strict_httponly_cookies(served: Served) -> None:
    await served.user("ann", Role.VIEWER)
    body = {"username": "ann", "password": PASSWORD, "session": "cookie"}
    response = await served.client.post("/api/auth/login", json=body)
    answer = await response.json()
    assert response.status == 200
    assert "tokens" not in answer["data"]
    cookies = {c.split("=", 1)[0]: c for c in response.headers.getall("Set-Cookie")}
    access, refresh = cookies["lezerprint_access"], cookies["lezerprint_refresh"]
    for cookie in (access, refresh):
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert "Secure" not in cookie  # plain http here
    assert "Path=/;" in access + ";"
    assert "Max-Age=900" in access
    assert "Path=/api/auth" in refresh
    assert "Max-Age=604800" in refresh

    profile = await served.call("GET", "/api/auth/profile", 200)  # the jar sends the cookie
    assert profile["data"]["user"]["username"] == "ann"
    # A state change signed by cookie must come from our own pages.
    await served.call("POST", "/api/auth/logout", 403)
    await served.call("POST", "/api/auth/refresh", 403)
    # With the access cookie gone (expired), the refresh cookie alone still needs our Origin.
    jar = served.client.session.cookie_jar
    jar.clear(lambda morsel: morsel.key == "lezerprint_access")
    await served.call("POST", "/api/auth/refresh", 403)
    refreshed = await served.client.post("/api/auth/refresh", headers=origin(served))
    assert refreshed.status == 200
    assert "tokens" not in (await refreshed.json())["data"]
    renewed = {c.split("=", 1)[0] for c in refreshed.headers.getall("Set-Cookie")}
    assert renewed == {"lezerprint_access", "lezerprint_refresh"}
    out = await served.call("POST", "/api/auth/logout", 200, headers=origin(served))
    assert out["data"] == {"signedOut": True}
    assert not list(served.client.session.cookie_jar)
    await served.call("GET", "/api/auth/profile", 401)


async def test_a_stale_cookie_is_cleared_and_does_not_block_signing_in(served: Served) -> None:
    user_id = await served.user("ann", Role.VIEWER)
    body = {"username": "ann", "password": PASSWORD, "session": "cookie"}
    await served.call("POST", "/api/auth/login", 200, json=body)
    await served.auth.update_user(user_id, role=Role.OPERATOR, actor=None, client=LOCAL)
    stale = await served.client.get("/api/auth/registration")  # public, but the cookie is dead
    assert stale.status == 401
    assert "Max-Age=0" in stale.headers["Set-Cookie"]
    await served.call("GET", "/api/auth/registration", 200)
    await served.call("POST", "/api/auth/login", 200, json=body)
    profile = await served.call("GET", "/api/auth/profile", 200)
    assert profile["data"]["user"]["role"] == "OPERATOR"


# -- refresh and logout ------------------------------------------------------------------------


async def test_refresh_rotates_and_a_reused_token_ends_everything(served: Served) -> None:
    events = Events(served.bus)
    await served.user("ann", Role.VIEWER)
    first, elsewhere = await served.login("ann"), await served.login("ann")
    answer = await served.call(
        "POST", "/api/auth/refresh", 200, json={"refreshToken": first["refreshToken"]}
    )
    second = answer["data"]["tokens"]
    assert second["refreshToken"] != first["refreshToken"]
    await served.call("GET", "/api/auth/profile", 200, token=second["accessToken"])

    # At once again: a second tab racing the first. Refused, and nothing ends.
    raced = await served.call(
        "POST", "/api/auth/refresh", 409, json={"refreshToken": first["refreshToken"]}
    )
    assert "just renewed" in raced["error"]["message"]
    await served.call("GET", "/api/auth/profile", 200, token=second["accessToken"])

    # Later than the grace allows: a stolen token. Everything ends.
    await served.store.execute("UPDATE sessions SET created_at = created_at - 60")
    reused = await served.call(
        "POST", "/api/auth/refresh", 401, json={"refreshToken": first["refreshToken"]}
    )
    assert "already used" in reused["error"]["message"]
    revoked = await events.wait_for(SessionsRevoked, seconds=5)
    assert revoked.session_id is None
    for tokens in (second, elsewhere):
        await served.call("GET", "/api/auth/profile", 401, token=tokens["accessToken"])
        await served.call(
            "POST", "/api/auth/refresh", 401, json={"refreshToken": tokens["refreshToken"]}
        )
    await served.call("POST", "/api/auth/refresh", 401, json={"refreshToken": "made-up"})
    await served.call("POST", "/api/auth/refresh", 401)  # neither a token nor the cookie


async def test_logout_ends_only_this_session(served: Served) -> None:
    events = Events(served.bus)
    await served.user("ann", Role.VIEWER)
    here, there = await served.login("ann"), await served.login("ann")
    await served.call("POST", "/api/auth/logout", 200, token=here["accessToken"])
    revoked = await events.wait_for(SessionsRevoked, seconds=5)
    assert revoked.session_id is not None
    await served.call("GET", "/api/auth/profile", 401, token=here["accessToken"])
    await served.call("POST", "/api/auth/refresh", 401, json={"refreshToken": here["refreshToken"]})
    await served.call("GET", "/api/auth/profile", 200, token=there["accessToken"])
    assert len(await served.events("LOGOUT")) == 1


# -- ending sessions ---------------------------------------------------------------------------


async def test_deactivation_ends_sessions_and_keys_at_once(served: Served, admin: str) -> None:
    events = Events(served.bus)
    user_id = await served.user("ann", Role.OPERATOR)
    tokens = await served.login("ann")
    key = await served.call(
        "POST", "/api/auth/api-keys", 201, token=tokens["accessToken"], json={"name": "slicer"}
    )
    api_key = {"X-Api-Key": key["data"]["key"]}
    await served.call("GET", "/api/auth/profile", 200, headers=api_key)

    changed = await served.call(
        "PATCH", f"/api/users/{user_id}", 200, token=admin, json={"isActive": False}
    )
    assert changed["data"]["user"]["isActive"] is False
    assert await events.wait_for(SessionsRevoked, seconds=5) == SessionsRevoked(user_id, None)
    await served.call("GET", "/api/auth/profile", 401, token=tokens["accessToken"])
    refused = await served.call("GET", "/api/auth/profile", 401, headers=api_key)
    assert refused["error"]["message"] == "the account is disabled"
    await served.call(
        "POST", "/api/auth/refresh", 401, json={"refreshToken": tokens["refreshToken"]}
    )
    disabled = await served.call(
        "POST", "/api/auth/login", 401, json={"username": "ann", "password": PASSWORD}
    )
    assert disabled["error"]["message"] == "this account is disabled"
    await served.call("PATCH", f"/api/users/{user_id}", 200, token=admin, json={"isActive": True})
    await served.login("ann")
    await served.call("GET", "/api/auth/profile", 200, headers=api_key)
    assert len(await served.events("USER_DEACTIVATED")) == 1


async def test_changing_a_password_ends_every_session(served: Served) -> None:
    await served.user("ann", Role.VIEWER)
    one, two = await served.login("ann"), await served.login("ann")
    body = {"currentPassword": "not the password", "newPassword": "a brand new passphrase"}
    wrong = await served.call("PUT", "/api/auth/password", 400, token=one["accessToken"], json=body)
    assert wrong["error"]["details"][0]["field"] == "currentPassword"
    short = {"currentPassword": PASSWORD, "newPassword": "short"}
    await served.call("PUT", "/api/auth/password", 400, token=one["accessToken"], json=short)
    body["currentPassword"] = PASSWORD
    changed = await served.call(
        "PUT", "/api/auth/password", 200, token=one["accessToken"], json=body
    )
    assert changed["data"] == {"passwordChanged": True, "signedOut": True}
    for tokens in (one, two):
        await served.call("GET", "/api/auth/profile", 401, token=tokens["accessToken"])
    await served.call(
        "POST", "/api/auth/login", 401, json={"username": "ann", "password": PASSWORD}
    )
    await served.login("ann", "a brand new passphrase")
    assert len(await served.events("PASSWORD_CHANGED")) == 1
    assert len(await served.events("PASSWORD_CHANGE_FAILED")) == 1


async def test_an_admin_password_reset_ends_every_session(served: Served, admin: str) -> None:
    user_id = await served.user("ann", Role.VIEWER)
    tokens = await served.login("ann")
    body = {"password": "set by the admin"}
    await served.call("POST", f"/api/users/{user_id}/password", 200, token=admin, json=body)
    await served.call("GET", "/api/auth/profile", 401, token=tokens["accessToken"])
    await served.login("ann", "set by the admin")
    reset = await served.events("PASSWORD_RESET")
    assert "by root" in reset[0]["description"]


async def test_a_role_change_applies_at_once(served: Served, admin: str) -> None:
    user_id = await served.user("ann", Role.OPERATOR)
    tokens = await served.login("ann")
    await served.call("PATCH", f"/api/users/{user_id}", 200, token=admin, json={"role": "VIEWER"})
    await served.call("GET", "/api/auth/profile", 401, token=tokens["accessToken"])
    profile = await served.call(
        "GET", "/api/auth/me", 200, token=(await served.login("ann"))["accessToken"]
    )
    assert profile["data"]["user"]["role"] == "VIEWER"
    assert "printer:control" not in profile["data"]["permissions"]
    changed = await served.events("ROLE_CHANGED")
    assert changed[0]["severity"] == "WARNING"


# -- API keys ----------------------------------------------------------------------------------


async def test_api_keys_are_shown_once_used_and_revoked(served: Served) -> None:
    await served.user("ann", Role.OPERATOR)
    await served.user("bob", Role.ADMIN)
    ann, bob = (
        (await served.login("ann"))["accessToken"],
        (await served.login("bob"))["accessToken"],
    )
    made = await served.call(
        "POST", "/api/auth/api-keys", 201, token=ann, json={"name": "PrusaSlicer"}
    )
    secret, key = made["data"]["key"], made["data"]["apiKey"]
    assert secret.startswith("lpk_")
    assert key["prefix"] == secret[:12]
    assert key["name"] == "PrusaSlicer"
    listed = await served.call("GET", "/api/auth/api-keys", 200, token=ann)
    assert listed["data"]["apiKeys"] == [key]  # the key itself is never shown again
    assert secret not in str(listed)
    assert (await served.call("GET", "/api/auth/api-keys", 200, token=bob))["data"]["apiKeys"] == []
    stored = await served.store.fetchone("SELECT key_hash FROM api_keys")
    assert stored is not None
    assert stored[0] != secret

    by_key = await served.call("GET", "/api/auth/profile", 200, headers={"X-Api-Key": secret})
    assert by_key["data"]["user"]["username"] == "ann"
    # Even an admin cannot revoke (or so learn of) someone else's key.
    await served.call("DELETE", f"/api/auth/api-keys/{key['id']}", 404, token=bob)
    revoked = await served.call("DELETE", f"/api/auth/api-keys/{key['id']}", 200, token=ann)
    assert revoked["data"]["apiKey"]["revokedAt"] is not None
    gone = await served.call("GET", "/api/auth/profile", 401, headers={"X-Api-Key": secret})
    assert gone["error"]["message"] == "the API key has been revoked"
    await served.call("DELETE", f"/api/auth/api-keys/{key['id']}", 404, token=ann)
    assert (await served.call("GET", "/api/auth/api-keys", 200, token=ann))["data"]["apiKeys"] == []
    assert len(await served.events("API_KEY_CREATED")) == 1
    assert len(await served.events("API_KEY_REVOKED")) == 1


# -- throttling --------------------------------------------------------------------------------


async def login_from(
    served: Served, address: str, name: str, password: str
) -> aiohttp.ClientResponse:
    """A sign-in from another loopback address (Linux routes all of 127/8 to lo)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        response = await session.post(
            served.client.make_url("/api/auth/login"),
            json={"username": name, "password": password},
        )
        await response.read()
        return response


async def test_five_failures_for_one_account_lock_it_from_any_address(served: Served) -> None:
    await served.user("ann", Role.VIEWER)
    for index in range(5):
        response = await login_from(served, f"127.0.0.{index + 2}", "ann", "wrong password")
        assert response.status == 401
    response = await login_from(served, "127.0.0.9", "ann", PASSWORD)
    assert response.status == 429
    retry = int(response.headers["Retry-After"])
    assert 890 <= retry <= 900
    # Another account from those same addresses is not affected.
    await served.user("bob", Role.VIEWER)
    assert (await login_from(served, "127.0.0.2", "bob", PASSWORD)).status == 200


async def test_five_failures_from_one_address_lock_it_out(served: Served) -> None:
    await served.user("ann", Role.VIEWER)
    for name in ("a1x", "b2y", "c3z", "d4w", "e5v"):
        await served.call(
            "POST", "/api/auth/login", 401, json={"username": name, "password": "whatever1"}
        )
    answer = await served.call(
        "POST", "/api/auth/login", 429, json={"username": "ann", "password": PASSWORD}
    )
    assert answer["error"]["code"] == "RATE_LIMITED"
    assert answer["error"]["details"]["retryAfter"] > 0
    assert (await login_from(served, "127.0.0.3", "ann", PASSWORD)).status == 200
    failures = await served.events("LOGIN_FAILED")
    assert len(failures) == 5  # a refused (429) attempt is not another row
    assert {row["ip_address"] for row in failures} == {"127.0.0.1"}
    assert {row["user_agent"] for row in failures} == {f"Python/3.11 aiohttp/{aiohttp.__version__}"}


async def test_successful_logins_are_not_counted(served: Served) -> None:
    await served.user("ann", Role.VIEWER)
    for _ in range(4):
        await served.call(
            "POST", "/api/auth/login", 401, json={"username": "ann", "password": "wrong one"}
        )
    for _ in range(3):
        await served.login("ann")
    await served.login("ann")
    successes = await served.events("LOGIN_SUCCEEDED")
    assert len(successes) == 4
    assert successes[0]["user_id"] == (await served.auth.user_named("ann")).id


# -- administration ----------------------------------------------------------------------------


ADMIN_ROUTES = [
    ("GET", "/api/users", None),
    ("POST", "/api/users", {"username": "x-y", "password": PASSWORD, "role": "ADMIN"}),
    ("GET", "/api/users/{id}", None),
    ("PATCH", "/api/users/{id}", {"role": "ADMIN"}),
    ("POST", "/api/users/{id}/password", {"password": PASSWORD}),
    ("PUT", "/api/auth/registration", {"enabled": True}),
    ("GET", "/api/system/events", None),
]


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.VIEWER])
async def test_admin_routes_are_refused_to_operators_and_viewers(
    served: Served, role: Role
) -> None:
    user_id = await served.user("someone", role)
    token = (await served.login("someone"))["accessToken"]
    key = (await served.call("POST", "/api/auth/api-keys", 201, token=token, json={"name": "k"}))[
        "data"
    ]["key"]
    for method, path, body in ADMIN_ROUTES:
        for credentials in ({"token": token}, {"headers": {"X-Api-Key": key}}):
            answer = await served.call(
                method, path.format(id=user_id), 403, json=body, **credentials
            )
            assert answer["error"]["code"] == "FORBIDDEN"
            assert answer["error"]["details"]["role"] == role.value
    for method, path, body in ADMIN_ROUTES:
        await served.call(method, path.format(id=user_id), 401, json=body)
    assert (await served.auth.user(user_id)).role is role


async def test_admins_create_list_and_read_accounts(served: Served, admin: str) -> None:
    made = await served.call(
        "POST",
        "/api/users",
        201,
        token=admin,
        json={"username": "Ann", "password": PASSWORD, "role": "OPERATOR", "email": "ann@x.org"},
    )
    user = made["data"]["user"]
    assert user["role"] == "OPERATOR"
    assert user["isActive"] is True
    duplicate = await served.call(
        "POST", "/api/users", 409, token=admin,
        json={"username": "ANN", "password": PASSWORD, "role": "VIEWER"},
    )  # fmt: skip
    assert duplicate["error"]["details"][0]["field"] == "username"
    await served.call(
        "POST", "/api/users", 409, token=admin,
        json={"username": "ann2", "password": PASSWORD, "role": "VIEWER", "email": "ANN@X.org"},
    )  # fmt: skip
    bad = await served.call(
        "POST", "/api/users", 400, token=admin,
        json={"username": "a b", "password": "short", "role": "KING", "email": "nope"},
    )  # fmt: skip
    assert {d["field"] for d in bad["error"]["details"]} == {
        "username",
        "password",
        "role",
        "email",
    }
    for name in ("bob", "cid"):
        await served.user(name, Role.VIEWER)
    page = await served.call("GET", "/api/users?page=2&limit=2", 200, token=admin)
    assert [u["username"] for u in page["data"]["users"]] == ["bob", "cid"]
    assert page["meta"] == {
        "page": 2, "limit": 2, "total": 4, "pages": 2, "hasNext": False, "hasPrev": True,
    }  # fmt: skip
    one = await served.call("GET", f"/api/users/{user['id']}", 200, token=admin)
    assert one["data"]["user"] == user
    await served.call("GET", "/api/users/no-such-id", 404, token=admin)
    await served.call("PATCH", "/api/users/no-such-id", 404, token=admin, json={"isActive": False})
    cleared = await served.call(
        "PATCH", f"/api/users/{user['id']}", 200, token=admin, json={"email": ""}
    )
    assert cleared["data"]["user"]["email"] is None
    created = await served.events("USER_CREATED")
    assert [row["description"] for row in created if row["user_id"] == user["id"]] == [
        "Ann (OPERATOR) was created by root"
    ]


async def test_the_last_active_admin_stays(served: Served, admin: str) -> None:
    root = (await served.auth.user_named("root")).id
    for change in ({"isActive": False}, {"role": "OPERATOR"}):
        answer = await served.call("PATCH", f"/api/users/{root}", 409, token=admin, json=change)
        assert "last active administrator" in answer["error"]["message"]
    await served.call("GET", "/api/auth/profile", 200, token=admin)  # nothing changed
    second = await served.user("deputy", Role.ADMIN)
    await served.call("PATCH", f"/api/users/{root}", 200, token=admin, json={"role": "VIEWER"})
    deputy = (await served.login("deputy"))["accessToken"]
    await served.call("PATCH", f"/api/users/{second}", 409, token=deputy, json={"isActive": False})


async def test_registration_opens_and_closes(served: Served, admin: str) -> None:
    body = {"username": "newbie", "password": PASSWORD, "email": "new@example.org"}
    assert (await served.call("GET", "/api/auth/registration", 200))["data"] == {"enabled": False}
    closed = await served.call("POST", "/api/auth/register", 403, json=body)
    assert closed["error"]["code"] == "FORBIDDEN"
    opened = await served.call(
        "PUT", "/api/auth/registration", 200, token=admin, json={"enabled": True}
    )
    assert opened["data"] == {"enabled": True}
    assert (await served.call("GET", "/api/auth/registration", 200))["data"] == {"enabled": True}
    made = await served.call("POST", "/api/auth/register", 201, json=body)
    assert made["data"]["user"]["role"] == "VIEWER"
    await served.call("POST", "/api/auth/register", 409, json=body)
    await served.login("newbie")
    await served.call("PUT", "/api/auth/registration", 200, token=admin, json={"enabled": False})
    await served.call("POST", "/api/auth/register", 403, json={**body, "username": "late"})
    assert len(await served.events("REGISTRATION_CHANGED")) == 2
    assert len(await served.events("USER_REGISTERED")) == 1


async def test_the_audit_log_lists_newest_first(served: Served, admin: str) -> None:
    await served.call(
        "POST", "/api/auth/login", 401, json={"username": "root", "password": "not right"},
        headers={"User-Agent": "curl/8.0"},
    )  # fmt: skip
    answer = await served.call("GET", "/api/system/events?limit=2", 200, token=admin)
    events = answer["data"]["events"]
    assert [e["eventType"] for e in events] == ["LOGIN_FAILED", "LOGIN_SUCCEEDED"]
    failed = events[0]
    assert failed["severity"] == "WARNING"
    assert failed["ipAddress"] == "127.0.0.1"
    assert failed["userAgent"] == "curl/8.0"
    assert failed["metadata"] == {"username": "root"}
    assert failed["createdAt"].endswith("Z")
    assert answer["meta"]["total"] == 3  # created (by the room), signed in, failed
    assert answer["meta"]["hasNext"] is True
    warnings = await served.call("GET", "/api/system/events?severity=WARNING", 200, token=admin)
    assert [e["eventType"] for e in warnings["data"]["events"]] == ["LOGIN_FAILED"]
    await served.call("GET", "/api/system/events?severity=LOUD", 400, token=admin)


# -- the declaration ---------------------------------------------------------------------------


def test_every_route_is_declared_in_the_access_table_and_openapi() -> None:
    endpoints = accounts_api.endpoints(SimpleNamespace(auth=None))  # type: ignore[arg-type]
    keys = [endpoint.key for endpoint in endpoints]
    assert len(keys) == len(set(keys))
    assert all(key in ACCESS for key in keys)
    accounts_keys = {
        key for key in ACCESS if key.startswith(("GET /api/auth", "POST /api/auth", "PUT /api/auth",
                                                  "DELETE /api/auth", "GET /api/users",
                                                  "POST /api/users", "PATCH /api/users"))
    }  # fmt: skip
    assert accounts_keys | {"GET /api/system/events"} == set(keys)
    document = spec.openapi(endpoints)
    login = document["paths"]["/api/auth/login"]["post"]
    assert login["security"] == []
    assert set(login["requestBody"]["content"]["application/json"]["schema"]["properties"]) == {
        "username",
        "password",
        "session",
    }
    assert "user:write" in document["paths"]["/api/users"]["post"]["description"]


async def test_tokens_expire_after_15_minutes_and_refresh_after_7_days(served: Served) -> None:
    await served.user("ann", Role.VIEWER)
    before = int(time.time())
    tokens = await served.login("ann")
    import jwt

    claims = jwt.decode(tokens["accessToken"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 900
    assert before <= claims["iat"] <= before + 5
    assert claims["iss"] == "lezerprint-api"
    assert claims["aud"] == "lezerprint-client"
    assert claims["role"] == "VIEWER"
    row = await served.store.fetchone("SELECT created_at, expires_at FROM sessions")
    assert row is not None
    assert row[1] - row[0] == 7 * 24 * 3600
