"""The web UI's pages: server-rendered Jinja2 templates (aiohttp-jinja2) that small JS modules
bring to life over the one websocket and the API.

Rule: a page handler only decides who may see the page and renders it; everything a page
shows or changes goes through the same API and websocket any client uses, so permissions are
checked there as well (a button hidden from a viewer is also refused to them by the API).
Jinja2 loads at the first page, not at start-up: it is 4 MB the daemon does not need until a
browser comes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from aiohttp import web

from lezerprintd import __version__
from lezerprintd.assets import Assets, web_dir
from lezerprintd.auth.middleware import ACCESS_COOKIE
from lezerprintd.auth.permissions import Permission, Principal, allows, permissions_of
from lezerprintd.config import BAUD_RATES
from lezerprintd.errors import UserError

if TYPE_CHECKING:
    from jinja2 import Environment

    from lezerprintd.app import Appliance

Page = Callable[[web.Request], Awaitable[web.StreamResponse]]
P = Permission

# path -> (template, title, the permission the page needs)
PAGES: Final[dict[str, tuple[str, str, Permission]]] = {
    "/": ("dashboard.html", "Dashboard", P.PRINTER_READ),
    "/files": ("files.html", "Files", P.FILE_READ),
    "/jobs": ("jobs.html", "Jobs", P.JOB_READ),
    "/terminal": ("terminal.html", "Terminal", P.PRINTER_READ),
    "/camera": ("camera.html", "Camera", P.PRINTER_READ),
    "/analytics": ("analytics.html", "Analytics", P.ANALYTICS_VIEW),
    "/settings": ("settings.html", "Settings", P.SYSTEM_CONFIGURE),
    "/account": ("account.html", "Account", P.PRINTER_READ),
    "/files/{file_id}": ("file.html", "File", P.FILE_READ),
}
# The header's links: every page but one's account (the name links there) and one file's.
NAVIGATION: Final = [
    (path, title, needs) for path, (_, title, needs) in PAGES.items()
    if path.count("/") == 1 and path != "/account"
]  # fmt: skip


class Templates:
    """The Jinja2 environment, made at the first page; aiohttp-jinja2 asks it only for
    templates."""

    def __init__(self, assets: Assets) -> None:
        self._assets = assets
        self._environment: Environment | None = None

    @property
    def ready(self) -> bool:
        return self._environment is not None

    def environment(self) -> Environment:
        if self._environment is None:
            import aiohttp_jinja2  # noqa: F401  (imported here, off the loop, for render())
            import jinja2

            environment = jinja2.Environment(
                loader=jinja2.FileSystemLoader(web_dir() / "templates"),
                autoescape=True,
                enable_async=True,
                trim_blocks=True,
                lstrip_blocks=True,
            )
            environment.globals.update(asset=self._assets.url, version=__version__)
            self._environment = environment
        return self._environment

    def get_template(self, name: str) -> Any:
        return self.environment().get_template(name)


TEMPLATES: Final = web.AppKey("templates", Templates)


async def render(request: web.Request, template: str, context: dict[str, Any]) -> web.Response:
    """The page, or 304 when the browser's copy (by ETag) is the same: a warm reload costs
    a few hundred bytes."""
    templates = request.app[TEMPLATES]
    if not templates.ready:
        # Jinja2's import and set-up take a few hundred milliseconds on a Pi: not on the loop
        # that streams a print.
        await asyncio.to_thread(templates.environment)
    import aiohttp_jinja2

    text = await aiohttp_jinja2.render_string_async(
        template,
        request,
        context,
        app_key=TEMPLATES,  # type: ignore[arg-type]
    )
    body = text.encode("utf-8")
    tag = hashlib.blake2b(body, digest_size=12).hexdigest()
    # Pages carry who is signed in: kept by the browser only to be revalidated.
    headers = {"Cache-Control": "no-cache, private", "Vary": "Cookie"}
    if any(given.value == tag for given in request.if_none_match or ()):
        response = web.Response(status=304, headers=headers)
    else:
        response = web.Response(body=body, content_type="text/html", charset="utf-8",
                                headers=headers)  # fmt: skip
        response.enable_compression()
    response.etag = tag
    return response


def add_pages(app: web.Application, appliance: Appliance) -> None:
    """The pages and the static files, on `app`."""
    assets = Assets(web_dir() / "static")
    app[TEMPLATES] = Templates(assets)
    app.router.add_get("/static/{path:.+}", assets.handle)
    for path, (template, title, needs) in PAGES.items():
        app.router.add_get(path, _page(appliance, template, title, needs))
    app.router.add_get("/login", _public(appliance, "login.html", "Sign in", during_setup=False))
    app.router.add_get("/setup", _public(appliance, "setup.html", "Set up", during_setup=True))


async def signed_in(appliance: Appliance, request: web.Request) -> Principal | None:
    """Who the page's cookie belongs to; None when there is none or it is no longer good."""
    cookie = request.cookies.get(ACCESS_COOKIE)
    if not cookie:
        return None
    try:
        return await appliance.auth.authenticate(bearer=None, api_key=None, cookie=cookie)
    except UserError:
        return None


def _page(appliance: Appliance, template: str, title: str, needs: Permission) -> Page:
    async def page(request: web.Request) -> web.StreamResponse:
        principal = await signed_in(appliance, request)
        if principal is None:
            # The login page renews an expired session silently (its refresh cookie is
            # only sent to /api/auth) and comes back here.
            target = quote(request.path_qs, safe="/")
            raise web.HTTPSeeOther(f"/login?next={target}")
        if not allows(principal.role, needs):
            raise web.HTTPForbidden(text=f"The {principal.role.value} role may not see this page.")
        context = _context(principal, title, request.path)
        context["limits"] = appliance.printer.settings  # the bed's size, for drawings
        context["printer_name"] = appliance.config.printer.name or "LezerPrint"
        context["baud_rates"] = BAUD_RATES
        return await render(request, template, context)

    return page


def _public(appliance: Appliance, template: str, title: str, *, during_setup: bool) -> Page:
    """A page for no one signed in: the setup page only while no administrator exists, the
    sign-in page only after; each sends to the other otherwise."""
    elsewhere = "/login" if during_setup else "/setup"

    async def page(request: web.Request) -> web.StreamResponse:
        if await appliance.auth.setup_required() != during_setup:
            raise web.HTTPSeeOther(elsewhere)
        return await render(request, template, {"title": title, "user": None, "can": set()})

    return page


def _context(principal: Principal, title: str, path: str) -> dict[str, Any]:
    can = set(permissions_of(principal.role))
    return {
        "title": title,
        "path": path,
        "user": {"username": principal.username, "role": principal.role.value},
        "can": can,
        "navigation": [
            (path, label) for path, label, needs in NAVIGATION if allows(principal.role, needs)
        ],
    }
