"""Access control for every request: who is asking, and whether the access table lets them.

Rule: deny by default. A route missing from `ACCESS` is refused (and logged as a bug); a
request whose credentials are given but wrong is refused even on a public route that would
not need them, so a client learns at once that its token is bad.
"""

from __future__ import annotations

import logging
from typing import Final, Protocol
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from lezerprintd.api.envelope import Handler
from lezerprintd.auth.permissions import ACCESS, Open, Principal, Requirement, allows
from lezerprintd.errors import UserError

log = logging.getLogger(__name__)

ACCESS_COOKIE: Final = "lezerprint_access"
REFRESH_COOKIE: Final = "lezerprint_refresh"
_PRINCIPAL: Final = web.RequestKey("principal", Principal)
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


class Authenticator(Protocol):
    async def authenticate(
        self, *, bearer: str | None, api_key: str | None, cookie: str | None
    ) -> Principal | None:
        """The principal behind the credentials; None when none are given. Raises a 401
        UserError when credentials are given but invalid, expired or revoked."""


def principal_of(request: web.Request) -> Principal:
    """The signed-in principal of a request the access table let through as signed in."""
    principal = maybe_principal(request)
    if principal is None:
        raise UserError("sign in first", status=401, code="UNAUTHORIZED")
    return principal


def maybe_principal(request: web.Request) -> Principal | None:
    principal: Principal | None = request.get(_PRINCIPAL, None)
    return principal


def requirement_of(request: web.Request) -> Requirement | None:
    resource = request.match_info.route.resource
    if resource is None:
        return Open.PUBLIC  # nothing matched: let the router answer 404/405
    method = "GET" if request.method == "HEAD" else request.method
    return ACCESS.get(f"{method} {resource.canonical}")


def access_middleware(authenticator: Authenticator) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(("/api/", "/ws")):
            return await handler(request)
        requirement = requirement_of(request)
        if requirement is None:
            log.error("no access rule for %s %s: refused", request.method, request.path)
            raise UserError("this route has no access rule", status=403, code="FORBIDDEN")
        bearer = _bearer(request.headers.get("Authorization"))
        principal = await authenticator.authenticate(
            bearer=bearer,
            api_key=request.headers.get("X-Api-Key") or None,
            cookie=request.cookies.get(ACCESS_COOKIE) or None,
        )
        if requirement is not Open.PUBLIC:
            if principal is None:
                raise UserError("sign in first", status=401, code="UNAUTHORIZED")
            if not allows(principal.role, requirement):
                raise UserError(
                    f"the {principal.role.value} role may not do this",
                    status=403,
                    code="FORBIDDEN",
                    details={
                        "required": str(getattr(requirement, "value", requirement)),
                        "role": principal.role.value,
                    },
                )
        if principal is not None and principal.method == "cookie":
            check_origin(request)
        if principal is not None:
            request[_PRINCIPAL] = principal
        return await handler(request)

    return middleware


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UserError(
            "the Authorization header must be 'Bearer <token>'", status=401, code="UNAUTHORIZED"
        )
    return token.strip()


def check_origin(request: web.Request) -> None:
    """A browser's cookie goes with any request to us; a state-changing one (and a websocket)
    must come from our own pages: its Origin (or Referer) must name this host."""
    if request.method in _SAFE_METHODS and request.path != "/ws":
        return
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if source and urlsplit(source).netloc == request.host:
        return
    raise UserError(
        "refused: a request signed in by cookie must come from this appliance's own pages",
        status=403,
        code="FORBIDDEN",
    )
