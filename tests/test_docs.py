"""The docs cover the whole surface: every config key and every route has a heading in docs/.

Each check reads the headings of one page; a route check belongs beside the config one, reading
docs/api.md the same way.
"""

import re
from pathlib import Path

from lezerprintd.config import config_keys

DOCS = Path(__file__).resolve().parent.parent / "docs"
CONFIG_HEADING = re.compile(r"^\[(?P<section>[a-z]+)\] (?P<key>[a-z0-9_]+)$")


def headings(page: str, level: int = 3) -> list[str]:
    """The text of every heading of `level` in docs/`page`, outside fenced code blocks."""
    found: list[str] = []
    fenced = False
    marker = "#" * level + " "
    for line in (DOCS / page).read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith(marker):
            found.append(line.removeprefix(marker).strip())
    return found


def documented_config_keys() -> list[str]:
    keys = []
    for text in headings("configuration.md"):
        match = CONFIG_HEADING.match(text)
        if match:
            keys.append(f"{match['section']}.{match['key']}")
    return keys


def test_every_config_key_is_documented() -> None:
    documented = set(documented_config_keys())
    missing = [key for key in config_keys() if key not in documented]
    assert not missing, "add a '### [section] key' heading to docs/configuration.md for each"


def test_no_config_heading_documents_a_missing_key() -> None:
    documented = documented_config_keys()
    stale = [key for key in documented if key not in config_keys()]
    assert not stale, "docs/configuration.md documents settings that do not exist"
    assert len(documented) == len(set(documented)), "a setting is documented twice"


def test_every_setting_heading_is_well_formed() -> None:
    # A heading like "### [printer]  baud" would silently escape the checks above.
    malformed = [
        text
        for text in headings("configuration.md")
        if text.startswith("[") and not CONFIG_HEADING.match(text)
    ]
    assert not malformed


ROUTE_HEADING = re.compile(r"^(?P<method>GET|POST|PUT|PATCH|DELETE) (?P<path>/\S+)$")


def documented_routes() -> set[str]:
    return {text for text in headings("api.md") if ROUTE_HEADING.match(text)}


def served_routes() -> set[str]:
    from lezerprintd.app import build_app
    from lezerprintd.config import Config

    routes = set()
    for route in build_app(Config()).router.routes():
        if route.method == "HEAD":
            continue  # aiohttp adds HEAD beside every GET
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path.startswith(("/api/", "/ws")):  # the rest are the web UI's (docs/web-ui.md)
            routes.add(f"{route.method} {path}")
    return routes


def test_every_page_of_the_web_ui_is_described() -> None:
    from lezerprintd.pages import PAGES

    text = (DOCS / "web-ui.md").read_text()
    headings = set(re.findall(r"^### (/\S*)", text, flags=re.MULTILINE))
    assert headings == {*PAGES, "/login", "/setup"}


def test_every_route_is_documented() -> None:
    missing = sorted(served_routes() - documented_routes())
    assert not missing, f"add a '### METHOD /path' heading to docs/api.md for {missing}"


def test_no_route_heading_documents_a_missing_route() -> None:
    stale = sorted(documented_routes() - served_routes())
    assert not stale, f"docs/api.md documents routes the app does not serve: {stale}"
