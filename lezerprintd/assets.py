"""The web UI's static files: fingerprinted names, cached for a year, served compressed.

Rule: a page names every asset through `url()`, which gives `/static/<name>.<hash>.<ext>`;
the hash is of the file's bytes, so a browser may keep it for ever (`immutable`) and a new
version is a new name. Vendored libraries are the exception: their folder carries the
version (`vendor/three-0.170.0/`), and their modules import each other by their own names.

The set of files is read once, at start-up (names only, no bytes), and a request is answered
only when its path is exactly one of them: whatever else a client sends cannot make the
appliance read, hash or keep anything new. Each file is read and hashed once, the first time
it is needed, and kept with its hash and gzipped bytes, so the bytes served are the bytes
hashed. The gzipped bytes are the wheel's, compressed when it was built (hatch_build.py); a
checkout run in place has none, and gzips a file once, at its first request.
The page's own files are a few kilobytes each (read on the event loop at the first page, in
well under a millisecond); a vendored library is read in a worker thread.
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
# The same choice as hatch_build.py, which compresses them when the wheel is built.
COMPRESSIBLE: Final = (".css", ".js", ".svg", ".json", ".txt", ".html", ".map")
SMALLEST: Final = 512
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
    fingerprinted: str  # the name with the hash of `body`


class Assets:
    """The static folder, named by content hash."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        # The build's .gz files are read beside their asset, never served by their own names.
        files = (p for p in self.root.rglob("*") if p.is_file() and p.suffix != ".gz")
        self._names = frozenset(path.relative_to(self.root).as_posix() for path in files)
        self._loaded: dict[str, Asset] = {}  # at most one entry per file in `_names`
        self._by_url: dict[str, str] = {}  # fingerprinted name -> name

    def url(self, name: str) -> str:
        """The URL of `name` (relative to the static folder), with its content hash."""
        return PREFIX + self._asset(name).fingerprinted

    def _asset(self, name: str) -> Asset:
        asset = self._loaded.get(name)
        if asset is None:
            asset = self._load(name)
            self._loaded[name] = asset
            self._by_url[asset.fingerprinted] = name
        return asset

    def _load(self, name: str) -> Asset:
        if name not in self._names:
            raise FileNotFoundError(name)
        body = (self.root / name).read_bytes()
        digest = hashlib.sha256(body).hexdigest()[:12]
        stem, dot, suffix = name.rpartition(".")
        fingerprinted = f"{stem}.{digest}{dot}{suffix}" if dot else f"{name}.{digest}"
        extension = f".{suffix.lower()}" if dot else ""
        content_type = TYPES.get(extension) or mimetypes.guess_type(name)[0]
        gzipped = None
        if extension in COMPRESSIBLE and len(body) > SMALLEST:
            gzipped = self._built_gzip(name, body) or gzip.compress(body, compresslevel=9, mtime=0)
        return Asset(body, gzipped, content_type or "application/octet-stream", fingerprinted)

    def _built_gzip(self, name: str, body: bytes) -> bytes | None:
        """The `.gz` the wheel's build made beside `name` (hatch_build.py), when it holds these
        very bytes: an upgrade that replaced one file and not the other must not serve the
        old one. Decompressing to check costs a tenth of compressing."""
        try:
            built = (self.root / f"{name}.gz").read_bytes()
            return built if gzip.decompress(built) == body else None
        except (OSError, EOFError, gzip.BadGzipFile):
            return None

    def _name_of(self, path: str) -> str | None:
        """The file a request's path means, or None: a fingerprinted name of one of the
        files (the current hash only), or a vendored file by its own name."""
        if path.startswith(VENDOR) and path in self._names:
            return path
        name = self._by_url.get(path)
        if name is not None:
            return name
        # A page from before a restart: its name is good if its hash is still the file's.
        stem, dot, suffix = path.rpartition(".")
        base = stem.rpartition(".")[0] if dot else ""
        candidate = f"{base}.{suffix}" if base else ""
        return candidate if candidate in self._names else None

    async def handle(self, request: web.Request) -> web.Response:
        """GET /static/{path}."""
        path = request.match_info["path"]
        name = self._name_of(path)
        if name is None:
            raise web.HTTPNotFound()
        asset = self._loaded.get(name)
        if asset is None:
            asset = await asyncio.to_thread(self._load, name)
            self._loaded[name] = asset
            self._by_url[asset.fingerprinted] = name
        if not name.startswith(VENDOR) and asset.fingerprinted != path:
            raise web.HTTPNotFound()  # an old hash: those bytes are gone
        headers = {"Cache-Control": f"public, max-age={YEAR}, immutable", "Vary": "Accept-Encoding"}
        body = asset.body
        if asset.gzipped is not None and "gzip" in request.headers.get("Accept-Encoding", ""):
            body = asset.gzipped
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, content_type=asset.content_type, headers=headers)
