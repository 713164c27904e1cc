"""Wheel build hook: the web UI's text assets pre-compressed, so the appliance never gzips.

Each compressible file under web/static larger than 512 bytes gets a `.gz` beside it in the
wheel (gzip -9, no timestamp, so a rebuild is byte-identical). lezerprintd/assets.py serves
that file as is when it decompresses to the asset's bytes, and gzips at the first request only
where it is missing (a checkout run in place, whose files are never built).
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# The same choice as lezerprintd/assets.py (the build cannot import the package it builds).
COMPRESSIBLE = (".css", ".js", ".svg", ".json", ".txt", ".html", ".map")
SMALLEST = 512


class CompressAssets(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        static = Path(self.root) / "web" / "static"
        self._scratch = Path(tempfile.mkdtemp(prefix="lezerprint-gz-"))
        for path in sorted(static.rglob("*")):
            if not path.is_file() or path.suffix.lower() not in COMPRESSIBLE:
                continue
            body = path.read_bytes()
            if len(body) <= SMALLEST:
                continue
            name = path.relative_to(static).as_posix() + ".gz"
            target = self._scratch / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(gzip.compress(body, compresslevel=9, mtime=0))
            build_data["force_include"][str(target)] = f"lezerprintd/web/static/{name}"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        scratch = getattr(self, "_scratch", None)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
