"""The web UI's static files come pre-compressed in the wheel: the appliance sends the build's
gzip as is (no CPU spent compressing on a Pi), checks that it still matches the file it sits
beside, and never serves a .gz by its own name."""

from __future__ import annotations

import gzip
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from lezerprintd.assets import COMPRESSIBLE, SMALLEST, Assets

PROJECT = Path(__file__).resolve().parent.parent
SCRIPT = b"export const words = [" + b", ".join(b'"w%d"' % n for n in range(400)) + b"];\n"


async def served(aiohttp_client: Callable[..., Any], static: Path) -> tuple[Any, Assets]:
    assets = Assets(static)
    app = web.Application()
    app.router.add_get("/static/{path:.+}", assets.handle)
    return await aiohttp_client(app), assets


async def test_the_builds_gzip_is_sent_as_it_is(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    (tmp_path / "app.js").write_bytes(SCRIPT)
    # Level 1 differs from the level 9 the appliance would make: the bytes say whose they are.
    built = gzip.compress(SCRIPT, compresslevel=1, mtime=0)
    assert built != gzip.compress(SCRIPT, compresslevel=9, mtime=0)
    (tmp_path / "app.js.gz").write_bytes(built)
    client, assets = await served(aiohttp_client, tmp_path)
    url = assets.url("app.js")
    reply = await client.get(url, headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert reply.status == 200
    assert reply.headers["Content-Encoding"] == "gzip"
    assert reply.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert await reply.read() == built
    plain = await client.get(url, headers={"Accept-Encoding": "identity"})
    assert await plain.read() == SCRIPT
    # The .gz itself is no static file of its own.
    assert (await client.get("/static/app.js.gz")).status == 404
    assert (await client.get(url + ".gz")).status == 404


async def test_a_gzip_of_other_bytes_is_not_sent(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    # An upgrade that replaced the file but not its .gz (or a damaged .gz) must not serve it.
    (tmp_path / "app.js").write_bytes(SCRIPT)
    (tmp_path / "app.js.gz").write_bytes(gzip.compress(b"export const old = 1;\n" * 40))
    (tmp_path / "app.css").write_bytes(b"body { margin: 0; }\n" * 60)
    (tmp_path / "app.css.gz").write_bytes(b"not gzip at all")
    client, assets = await served(aiohttp_client, tmp_path)
    for name, body in (("app.js", SCRIPT), ("app.css", (tmp_path / "app.css").read_bytes())):
        reply = await client.get(
            assets.url(name), headers={"Accept-Encoding": "gzip"}, auto_decompress=False
        )
        assert reply.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(await reply.read()) == body


def test_the_wheel_carries_a_gzip_of_every_text_asset(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path),
         str(PROJECT)],
        check=True, timeout=600,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("lezerprintd-*.whl")
    static = PROJECT / "web" / "static"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        expected = [
            path.relative_to(static).as_posix()
            for path in static.rglob("*")
            if path.is_file()
            and path.suffix.lower() in COMPRESSIBLE
            and path.stat().st_size > SMALLEST
        ]
        assert "js/live.js" in expected
        assert "app.css" in expected
        for name in expected:
            inside = f"lezerprintd/web/static/{name}"
            assert inside in names, name
            built = archive.read(f"{inside}.gz")
            assert gzip.decompress(built) == archive.read(inside), name
