"""The web UI's static files: fingerprinted names, cached for a year, served compressed.

Rule: a page names every asset through `url()`, which gives `/static/<name>.<hash>.<ext>`;
the hash is of the file's bytes, so a browser may keep it for ever (`immutable`) and a new
version is a new name. Vendored libraries are the exception: their folder carries the
version (`vendor/three-0.170.0/`), and their modules import each other by their own names. Assets are small (the whole UI is tens of kilobytes), so each one is
read, hashed and gzip-compressed once, in a worker thread at its first request, and kept in
memory: a returning browser costs the Pi nothing, a new one costs no compression.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

WEB_DIR: Final = Path(__file__).resolve().parent / "web"  # in the wheel
DEV_WEB_DIR: Final = Path(__file__).resolve().parent.parent / "web"  # in a checkout
PREFIX: Final = "/static/"
VENDOR: Final = "vendor/"  # folders named <library>-<version>/
YEAR: Final = 365 * 24 * 3600
COMPRESSIBLE: Final = (".css", ".js", ".svg", ".json", ".txt", ".html", ".map")
TYPES: Final = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


def web_dir() -> Path:
    """Where the templates and static files are: inside the package when installed from the
    wheel, beside it in a checkout."""
    return WEB_DIR if WEB_DIR.is_dir() else DEV_WEB_DIR


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    content_type: str


class Assets:
    """The static folder, named by content hash."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        # name -> fingerprinted name, and back; filled by a walk of the folder at start-up
        # (stat only: a few dozen files), hashed lazily.
        self._fingerprints: dict[str, str] = {}
        self._by_url: dict[str, str] = {}
        self._loaded: dict[str, Asset] = {}

    def url(self, name: str) -> str:
        """The URL of `name` (relative to the static folder), with its content hash."""
        fingerprinted = self._fingerprints.get(name)
        if fingerprinted is None:
            path = self._path(name)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            stem, dot, suffix = name.rpartition(".")
            fingerprinted = f"{stem}.{digest}{dot}{suffix}" if dot else f"{name}.{digest}"
            self._fingerprints[name] = fingerprinted
            self._by_url[fingerprinted] = name
        return PREFIX + fingerprinted

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            raise FileNotFoundError(name)
        return path

    def _load(self, name: str) -> Asset:
        path = self._path(name)
        body = path.read_bytes()
        suffix = path.suffix.lower()
        content_type = TYPES.get(suffix) or mimetypes.guess_type(path.name)[0]
        gzipped = None
        if suffix in COMPRESSIBLE and len(body) > 512:
            gzipped = gzip.compress(body, compresslevel=9, mtime=0)
        return Asset(body, gzipped, content_type or "application/octet-stream")

    async def handle(self, request: web.Request) -> web.Response:
        """GET /static/{path}: only fingerprinted names the pages handed out."""
        path = request.match_info["path"]
        name = self._by_url.get(path)
        if name is None and path.startswith(VENDOR) and "/" in path.removeprefix(VENDOR):
            # A vendored library: its folder names its version, and its modules import each
            # other by plain relative names, so they are served under those.
            name = path
        if name is None:
            # A name from before a restart (or a new version): still the same bytes?
            name = self._resolve_unseen(path)
        if name is None:
            raise web.HTTPNotFound()
        asset = self._loaded.get(name)
        if asset is None:
            try:
                asset = await asyncio.to_thread(self._load, name)
            except FileNotFoundError:
                raise web.HTTPNotFound() from None
            self._loaded[name] = asset
        headers = {"Cache-Control": f"public, max-age={YEAR}, immutable", "Vary": "Accept-Encoding"}
        body = asset.body
        if asset.gzipped is not None and "gzip" in request.headers.get("Accept-Encoding", ""):
            body = asset.gzipped
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, content_type=asset.content_type, headers=headers)

    def _resolve_unseen(self, fingerprinted: str) -> str | None:
        """The asset a fingerprinted name means, if its hash matches the file now."""
        stem, dot, suffix = fingerprinted.rpartition(".")
        base, _, _digest = stem.rpartition(".") if dot else (fingerprinted, "", "")
        name = f"{base}.{suffix}" if dot else base
        try:
            if self.url(name) == PREFIX + fingerprinted:
                return name
        except (FileNotFoundError, OSError):
            return None
        return None
