"""Accounts over HTTP: first-start setup, signing in and out, one's own profile, password and
API keys, self-registration, user administration and the audit log.

Rule: handlers only translate. Every decision (who may sign in, what a token is worth, the
last administrator) is the auth room's, read through `appliance.auth` at request time.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from lezerprintd.api.envelope import failure, ok, page_meta
from lezerprintd.api.spec import LIMIT, PAGE, Answer, Endpoint, Field, Kind, body, query
from lezerprintd.auth.middleware import (
    ACCESS_COOKIE,
    REFRESH_COOKIE,
    check_origin,
    principal_of,
)
from lezerprintd.auth.permissions import Role, permissions_of
from lezerprintd.auth.service import ApiKey, AuditEvent, Client, SignIn, User
from lezerprintd.auth.tokens import ACCESS_TTL, REFRESH_TTL
from lezerprintd.errors import UserError
from lezerprintd.store.jobs import Severity

if TYPE_CHECKING:
    from lezerprintd.app import Appliance

REFRESH_COOKIE_PATH: Final = "/api/auth"
ROLES: Final = tuple(role.value for role in Role)

# -- declared inputs --------------------------------------------------------------------------

USERNAME: Final = Field(
    "username",
    Kind.STRING,
    "3 to 50 letters, digits, '_' or '-' (unique, ignoring case)",
    required=True,
    min_length=3,
    max_length=50,
    pattern=r"[A-Za-z0-9_-]+",
)
EMAIL_PATTERN: Final = r"[^@\s]+@[^@\s]+\.[^@\s]+"
EMAIL: Final = Field(
    "email",
    Kind.STRING,
    "Email address (optional; unique, ignoring case)",
    max_length=255,
    pattern=EMAIL_PATTERN,
)
PASSWORD: Final = Field(
    "password",
    Kind.STRING,
    "8 to 128 characters; no other rules",
    required=True,
    min_length=8,
    max_length=128,
)
ROLE: Final = Field("role", Kind.STRING, "ADMIN, OPERATOR or VIEWER", required=True, choices=ROLES)
USER_ID: Final = Field("user_id", Kind.STRING, "The account's id")
KEY_ID: Final = Field("key_id", Kind.STRING, "The API key's id")

SETUP_BODY: Final = (
    Field(
        "code",
        Kind.STRING,
        "The one-time setup code from <data dir>/setup-code (dashes and case do not matter)",
        required=True,
        max_length=64,
    ),
    USERNAME,
    PASSWORD,
    EMAIL,
)
LOGIN_BODY: Final = (
    Field(
        "username",
        Kind.STRING,
        "The username or the email address",
        required=True,
        min_length=1,
        max_length=255,
    ),
    Field("password", Kind.STRING, "The password", required=True, min_length=1, max_length=128),
    Field(
        "session",
        Kind.STRING,
        "'token': answer the tokens; 'cookie': set httpOnly cookies (the browser UI)",
        choices=("token", "cookie"),
        default="token",
    ),
)
REFRESH_BODY: Final = (
    Field(
        "refreshToken",
        Kind.STRING,
        "The refresh token; leave out to use the refresh cookie",
        min_length=1,
        max_length=256,
    ),
)
PASSWORD_BODY: Final = (
    Field(
        "currentPassword",
        Kind.STRING,
        "The account's current password",
        required=True,
        min_length=1,
        max_length=128,
    ),
    Field(
        "newPassword",
        Kind.STRING,
        "8 to 128 characters; no other rules",
        required=True,
        min_length=8,
        max_length=128,
    ),
)
API_KEY_BODY: Final = (
    Field(
        "name",
        Kind.STRING,
        "What the key is for (a slicer, a script)",
        required=True,
        min_length=1,
        max_length=100,
    ),
)
REGISTRATION_BODY: Final = (
    Field("enabled", Kind.BOOLEAN, "Whether anyone may create a VIEWER account", required=True),
)
REGISTER_BODY: Final = (USERNAME, EMAIL, PASSWORD)
CREATE_USER_BODY: Final = (USERNAME, PASSWORD, ROLE, EMAIL)
UPDATE_USER_BODY: Final = (
    Field("role", Kind.STRING, "ADMIN, OPERATOR or VIEWER", choices=ROLES),
    Field("isActive", Kind.BOOLEAN, "false disables the account and ends its sessions"),
    Field(
        "email",
        Kind.STRING,
        'A new email address, or "" to remove it',
        max_length=255,
        pattern=f"(?:{EMAIL_PATTERN})?",
    ),
)
RESET_BODY: Final = (PASSWORD,)
EVENTS_QUERY: Final = (
    PAGE,
    LIMIT,
    Field("severity", Kind.STRING, "Only this severity", choices=tuple(s.value for s in Severity)),
    Field("eventType", Kind.STRING, "Only this event type", max_length=64),
)

# -- answer schemas (OpenAPI) -----------------------------------------------------------------

_DATE: Final = {"type": "string", "format": "date-time"}
_MAYBE_DATE: Final = {"type": ["string", "null"], "format": "date-time"}
USER: Final = {
    "type": "object",
    "required": [
        "id",
        "username",
        "email",
        "role",
        "isActive",
        "createdAt",
        "updatedAt",
        "lastLoginAt",
    ],
    "properties": {
        "id": {"type": "string"},
        "username": {"type": "string"},
        "email": {"type": ["string", "null"]},
        "role": {"type": "string", "enum": list(ROLES)},
        "isActive": {"type": "boolean"},
        "createdAt": _DATE,
        "updatedAt": _DATE,
        "lastLoginAt": _MAYBE_DATE,
    },
}
TOKENS: Final = {
    "type": "object",
    "required": ["accessToken", "refreshToken", "tokenType", "expiresIn"],
    "properties": {
        "accessToken": {"type": "string"},
        "refreshToken": {"type": "string"},
        "tokenType": {"type": "string", "enum": ["Bearer"]},
        "expiresIn": {"type": "integer", "description": "seconds"},
    },
}
API_KEY: Final = {
    "type": "object",
    "required": ["id", "name", "prefix", "createdAt", "lastUsedAt", "revokedAt"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "prefix": {"type": "string", "description": "the key's first characters"},
        "createdAt": _DATE,
        "lastUsedAt": _MAYBE_DATE,
        "revokedAt": _MAYBE_DATE,
    },
}
EVENT: Final = {
    "type": "object",
    "required": ["id", "eventType", "description", "severity", "createdAt"],
    "properties": {
        "id": {"type": "integer"},
        "eventType": {"type": "string"},
        "description": {"type": "string"},
        "userId": {"type": ["string", "null"]},
        "ipAddress": {"type": ["string", "null"]},
        "userAgent": {"type": ["string", "null"]},
        "metadata": {"type": ["object", "null"]},
        "severity": {"type": "string", "enum": [s.value for s in Severity]},
        "createdAt": _DATE,
    },
}


def _object(**properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(properties), "properties": properties}


ONE_USER: Final = _object(user=USER)
SIGNED_IN: Final = {
    "type": "object",
    "required": ["user"],
    "properties": {"user": USER, "tokens": TOKENS},
    "description": "`tokens` only when signing in with session 'token'",
}
PROFILE: Final = _object(user=USER, permissions={"type": "array", "items": {"type": "string"}})


# -- JSON shapes ----------------------------------------------------------------------------------


def iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def user_json(user: User) -> dict[str, object]:
    return {
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "role": user.role.value,
        "isActive": user.is_active,
        "createdAt": iso(user.created_at),
        "updatedAt": iso(user.updated_at),
        "lastLoginAt": iso(user.last_login_at),
    }


def api_key_json(key: ApiKey) -> dict[str, object]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "createdAt": iso(key.created_at),
        "lastUsedAt": iso(key.last_used_at),
        "revokedAt": iso(key.revoked_at),
    }


def event_json(event: AuditEvent) -> dict[str, object]:
    return {
        "id": event.id,
        "eventType": event.event_type,
        "description": event.description,
        "userId": event.user_id,
        "ipAddress": event.ip_address,
        "userAgent": event.user_agent,
        "metadata": event.metadata,
        "severity": event.severity.value,
        "createdAt": iso(event.created_at),
    }


def client_of(request: web.Request) -> Client:
    return Client(address=request.remote, user_agent=request.headers.get("User-Agent"))


def _signed_in(request: web.Request, signed: SignIn, cookies: bool) -> web.Response:
    """The answer to a sign-in or a refresh: tokens in the body, or in httpOnly cookies."""
    if not cookies:
        tokens = signed.tokens
        return ok(
            {
                "user": user_json(signed.user),
                "tokens": {
                    "accessToken": tokens.access_token,
                    "refreshToken": tokens.refresh_token,
                    "tokenType": "Bearer",
                    "expiresIn": tokens.expires_in,
                },
            }
        )
    response = ok({"user": user_json(signed.user)})
    # Secure only over https: the appliance is usually reached by plain http on the LAN,
    # where a Secure cookie would never be sent back.
    common: dict[str, Any] = {"httponly": True, "samesite": "Strict", "secure": request.secure}
    response.set_cookie(
        ACCESS_COOKIE, signed.tokens.access_token, max_age=ACCESS_TTL, path="/", **common
    )
    response.set_cookie(
        REFRESH_COOKIE,
        signed.tokens.refresh_token,
        max_age=REFRESH_TTL,
        path=REFRESH_COOKIE_PATH,
        **common,
    )
    return response


def _clear_cookies(response: web.Response) -> web.Response:
    response.del_cookie(ACCESS_COOKIE, path="/", httponly=True, samesite="Strict")
    response.del_cookie(REFRESH_COOKIE, path=REFRESH_COOKIE_PATH, httponly=True, samesite="Strict")
    return response


def endpoints(appliance: Appliance) -> list[Endpoint]:
    # -- first start

    async def handle_setup_state(request: web.Request) -> web.Response:
        return ok({"setupRequired": await appliance.auth.setup_required()})

    async def handle_setup(request: web.Request) -> web.Response:
        values = await body(request, SETUP_BODY)
        user = await appliance.auth.setup(
            values["code"],
            username=values["username"],
            password=values["password"],
            email=values["email"],
            client=client_of(request),
        )
        return ok({"user": user_json(user)}, status=201)

    # -- signing in and out

    async def handle_login(request: web.Request) -> web.Response:
        values = await body(request, LOGIN_BODY)
        signed = await appliance.auth.login(
            values["username"], values["password"], client_of(request)
        )
        return _signed_in(request, signed, cookies=values["session"] == "cookie")

    async def handle_refresh(request: web.Request) -> web.Response:
        values = await body(request, REFRESH_BODY)
        token = values["refreshToken"]
        from_cookie = token is None
        if from_cookie:
            token = request.cookies.get(REFRESH_COOKIE)
            if not token:
                raise UserError(
                    "give refreshToken, or send the refresh cookie",
                    status=401,
                    code="UNAUTHORIZED",
                )
            # A cookie goes with any request to us: a refresh by cookie must come from our
            # own pages, as the access middleware demands of every cookie-signed change.
            check_origin(request)
        try:
            signed = await appliance.auth.refresh(token, client_of(request))
        except UserError as error:
            if not from_cookie or error.status != 401:
                raise
            refused = failure(error.status, error.code, str(error), error.details)
            return _clear_cookies(refused)
        return _signed_in(request, signed, cookies=from_cookie)

    async def handle_logout(request: web.Request) -> web.Response:
        await appliance.auth.logout(principal_of(request), client_of(request))
        return _clear_cookies(ok({"signedOut": True}))

    # -- one's own account

    async def handle_profile(request: web.Request) -> web.Response:
        user = await appliance.auth.user(principal_of(request).user_id)
        return ok({"user": user_json(user), "permissions": permissions_of(user.role)})

    async def handle_password(request: web.Request) -> web.Response:
        values = await body(request, PASSWORD_BODY)
        await appliance.auth.change_password(
            principal_of(request),
            values["currentPassword"],
            values["newPassword"],
            client_of(request),
        )
        return _clear_cookies(ok({"passwordChanged": True, "signedOut": True}))

    async def handle_api_keys(request: web.Request) -> web.Response:
        keys = await appliance.auth.api_keys(principal_of(request))
        return ok({"apiKeys": [api_key_json(key) for key in keys]})

    async def handle_create_api_key(request: web.Request) -> web.Response:
        values = await body(request, API_KEY_BODY)
        made = await appliance.auth.create_api_key(
            principal_of(request), values["name"], client_of(request)
        )
        return ok({"apiKey": api_key_json(made.key), "key": made.secret}, status=201)

    async def handle_revoke_api_key(request: web.Request) -> web.Response:
        key = await appliance.auth.revoke_api_key(
            principal_of(request), request.match_info["key_id"], client_of(request)
        )
        return ok({"apiKey": api_key_json(key)})

    # -- registration

    async def handle_registration(request: web.Request) -> web.Response:
        return ok({"enabled": await appliance.auth.registration_enabled()})

    async def handle_set_registration(request: web.Request) -> web.Response:
        values = await body(request, REGISTRATION_BODY)
        enabled = await appliance.auth.set_registration(
            values["enabled"], actor=principal_of(request), client=client_of(request)
        )
        return ok({"enabled": enabled})

    async def handle_register(request: web.Request) -> web.Response:
        values = await body(request, REGISTER_BODY)
        user = await appliance.auth.register(
            values["username"], values["email"], values["password"], client_of(request)
        )
        return ok({"user": user_json(user)}, status=201)

    # -- administration

    async def handle_users(request: web.Request) -> web.Response:
        values = query(request, (PAGE, LIMIT))
        users, total = await appliance.auth.users(values["page"], values["limit"])
        return ok(
            {"users": [user_json(user) for user in users]},
            meta=page_meta(values["page"], values["limit"], total),
        )

    async def handle_create_user(request: web.Request) -> web.Response:
        values = await body(request, CREATE_USER_BODY)
        user = await appliance.auth.create_user(
            values["username"],
            values["password"],
            Role(values["role"]),
            values["email"],
            actor=principal_of(request),
            client=client_of(request),
        )
        return ok({"user": user_json(user)}, status=201)

    async def handle_user(request: web.Request) -> web.Response:
        user = await appliance.auth.user(request.match_info["user_id"])
        return ok({"user": user_json(user)})

    async def handle_update_user(request: web.Request) -> web.Response:
        values = await body(request, UPDATE_USER_BODY)
        user = await appliance.auth.update_user(
            request.match_info["user_id"],
            role=None if values["role"] is None else Role(values["role"]),
            is_active=values["isActive"],
            email=values["email"],
            actor=principal_of(request),
            client=client_of(request),
        )
        return ok({"user": user_json(user)})

    async def handle_reset_password(request: web.Request) -> web.Response:
        values = await body(request, RESET_BODY)
        user = await appliance.auth.reset_password(
            request.match_info["user_id"],
            values["password"],
            actor=principal_of(request),
            client=client_of(request),
        )
        return ok({"user": user_json(user)})

    async def handle_events(request: web.Request) -> web.Response:
        values = query(request, EVENTS_QUERY)
        severity = None if values["severity"] is None else Severity(values["severity"])
        events, total = await appliance.auth.events(
            values["page"], values["limit"], severity, values["eventType"]
        )
        return ok(
            {"events": [event_json(event) for event in events]},
            meta=page_meta(values["page"], values["limit"], total),
        )

    user_path = (USER_ID,)
    return [
        Endpoint("GET", "/api/auth/setup", handle_setup_state,
                 "Whether the first administrator must still be created", "auth",
                 answers=(Answer(200, "The setup state",
                                 _object(setupRequired={"type": "boolean"})),)),
        Endpoint("POST", "/api/auth/setup", handle_setup,
                 "Create the first administrator with the one-time setup code", "auth",
                 body=SETUP_BODY,
                 answers=(Answer(201, "The administrator exists; sign in", ONE_USER),
                          Answer(403, "The setup code is wrong"),
                          Answer(409, "Setup is done: an administrator exists"),
                          Answer(429, "Too many wrong codes from this address"))),
        Endpoint("POST", "/api/auth/login", handle_login, "Sign in", "auth",
                 body=LOGIN_BODY,
                 answers=(Answer(200, "Signed in", SIGNED_IN),
                          Answer(401, "Wrong username or password, or a disabled account"),
                          Answer(429, "Too many failures for this account or address"))),
        Endpoint("POST", "/api/auth/refresh", handle_refresh,
                 "Trade a refresh token for a new pair (the old one is used up)", "auth",
                 body=REFRESH_BODY,
                 answers=(Answer(200, "A new pair, the same way it was presented", SIGNED_IN),
                          Answer(401, "Invalid, expired, revoked or already used"))),
        Endpoint("POST", "/api/auth/logout", handle_logout,
                 "Sign out: end this session and clear the cookies", "auth",
                 answers=(Answer(200, "Signed out", _object(signedOut={"type": "boolean"})),)),
        Endpoint("GET", "/api/auth/profile", handle_profile,
                 "The signed-in account and its permissions", "auth",
                 answers=(Answer(200, "The account", PROFILE),)),
        Endpoint("GET", "/api/auth/me", handle_profile,
                 "The signed-in account and its permissions (same as /profile)", "auth",
                 answers=(Answer(200, "The account", PROFILE),)),
        Endpoint("PUT", "/api/auth/password", handle_password,
                 "Change one's own password; every session ends", "auth",
                 body=PASSWORD_BODY,
                 answers=(Answer(200, "Changed; sign in again",
                                 _object(passwordChanged={"type": "boolean"},
                                         signedOut={"type": "boolean"})),
                          Answer(400, "The current password is wrong, or the new one too short"),
                          Answer(429, "Too many wrong current passwords"))),
        Endpoint("GET", "/api/auth/api-keys", handle_api_keys, "One's own API keys", "auth",
                 answers=(Answer(200, "The keys that still work, newest first",
                                 _object(apiKeys={"type": "array", "items": API_KEY})),)),
        Endpoint("POST", "/api/auth/api-keys", handle_create_api_key,
                 "Make an API key (shown once, in this answer only)", "auth",
                 body=API_KEY_BODY,
                 answers=(Answer(201, "The key; store it now",
                                 _object(apiKey=API_KEY, key={"type": "string"})),)),
        Endpoint("DELETE", "/api/auth/api-keys/{key_id}", handle_revoke_api_key,
                 "Revoke one of one's own API keys", "auth",
                 path_fields=(KEY_ID,),
                 answers=(Answer(200, "Revoked", _object(apiKey=API_KEY)),
                          Answer(404, "No such key among one's own"))),
        Endpoint("GET", "/api/auth/registration", handle_registration,
                 "Whether self-registration is open", "auth",
                 answers=(Answer(200, "The setting", _object(enabled={"type": "boolean"})),)),
        Endpoint("PUT", "/api/auth/registration", handle_set_registration,
                 "Open or close self-registration", "auth",
                 body=REGISTRATION_BODY,
                 answers=(Answer(200, "The new setting", _object(enabled={"type": "boolean"})),)),
        Endpoint("POST", "/api/auth/register", handle_register,
                 "Create a VIEWER account, while registration is open", "auth",
                 body=REGISTER_BODY,
                 answers=(Answer(201, "The account; sign in", ONE_USER),
                          Answer(403, "Registration is closed"),
                          Answer(409, "The username or email is taken"),
                          Answer(429, "Too many registrations from this address"))),
        Endpoint("GET", "/api/users", handle_users, "Every account, a page at a time", "users",
                 query=(PAGE, LIMIT),
                 answers=(Answer(200, "One page, oldest account first",
                                 _object(users={"type": "array", "items": USER})),)),
        Endpoint("POST", "/api/users", handle_create_user, "Create an account", "users",
                 body=CREATE_USER_BODY,
                 answers=(Answer(201, "The account", ONE_USER),
                          Answer(409, "The username or email is taken"))),
        Endpoint("GET", "/api/users/{user_id}", handle_user, "One account", "users",
                 path_fields=user_path,
                 answers=(Answer(200, "The account", ONE_USER), Answer(404, "No such account"))),
        Endpoint("PATCH", "/api/users/{user_id}", handle_update_user,
                 "Change an account's role, active flag or email", "users",
                 path_fields=user_path, body=UPDATE_USER_BODY,
                 answers=(Answer(200, "The account as it is now", ONE_USER),
                          Answer(404, "No such account"),
                          Answer(409, "The last active administrator, or a taken email"))),
        Endpoint("POST", "/api/users/{user_id}/password", handle_reset_password,
                 "Set an account's password; its sessions end", "users",
                 path_fields=user_path, body=RESET_BODY,
                 answers=(Answer(200, "Done", ONE_USER), Answer(404, "No such account"))),
        Endpoint("GET", "/api/system/events", handle_events,
                 "The audit log, newest first", "system",
                 query=EVENTS_QUERY,
                 answers=(Answer(200, "One page of events",
                                 _object(events={"type": "array", "items": EVENT})),)),
    ]  # fmt: skip
