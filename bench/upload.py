"""Upload memory: does the daemon's RSS grow with the size of an upload?

Runs the real daemon (`lezerprintd serve --printer sim`, a child process), generates a
G-code file of --mb MB (default 500) and uploads it through POST /api/files as a streamed
multipart body, sampling the daemon's VmRSS every 20 ms. Prints its RSS before, the peak
during the upload and the growth (target: under 10 MB), and the upload's rate.

    .venv/bin/python bench/upload.py [--mb 500]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from daemon import add_bench_user, clean_environment, rss_mb, serving, sign_in


def write_gcode(path: Path, megabytes: int) -> None:
    lines = (f"G1 X{i % 200}.{i % 10} Y{(i * 7) % 200}.5 E{i * 0.01:.2f}\n" for i in range(40_000))
    data = "".join(lines).encode()
    with path.open("wb") as out:
        out.write(b"; bench/upload.py\nG28\n")
        written = 0
        while written < megabytes * 1024 * 1024:
            out.write(data)
            written += len(data)


async def upload(
    port: int, token: str, path: Path, size: int, pid: int
) -> tuple[float, float, float]:
    samples: list[float] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            samples.append(rss_mb(pid))
            await asyncio.sleep(0.02)

    async with aiohttp.ClientSession() as session:
        before = rss_mb(pid)
        sampler = asyncio.create_task(sample())
        started = time.perf_counter()
        with path.open("rb") as source:
            form = aiohttp.FormData(quote_fields=False)
            form.add_field("file", source, filename=path.name)
            async with session.post(
                f"http://127.0.0.1:{port}/api/files",
                data=form,
                headers={"Authorization": f"Bearer {token}"},
            ) as reply:
                answer = await reply.json()
        elapsed = time.perf_counter() - started
        done.set()
        await sampler
    if reply.status != 201:
        raise SystemExit(f"the upload was refused: {answer}")
    if int(answer["data"]["file"]["fileSize"]) != size:
        raise SystemExit(f"the stored size differs: {answer}")
    return before, max(samples), size / 1024 / 1024 / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=500)
    args = parser.parse_args()
    env = clean_environment()
    with tempfile.TemporaryDirectory() as scratch:
        data, config = Path(scratch) / "data", Path(scratch) / "config.toml"
        config.write_text(f"[files]\nmax_upload_mb = {args.mb + 10}\n")
        gcode = Path(scratch) / "big.gcode"
        write_gcode(gcode, args.mb)
        add_bench_user(data, config, env)
        with serving("sim", data, config, env) as (port, daemon):
            token = sign_in(port)
            time.sleep(1)  # let start-up settle before the baseline
            size = gcode.stat().st_size
            before, peak, rate = asyncio.run(upload(port, token, gcode, size, daemon.pid))
    print(f"uploaded:        {size / 1024 / 1024:,.0f} MB through POST /api/files")
    print(f"daemon RSS:      {before:.1f} MB before, {peak:.1f} MB at most during the upload")
    print(f"RSS growth:      {peak - before:.1f} MB  (target < 10 MB)")
    print(f"upload rate:     {rate:,.0f} MB/s (loopback, hashed and fsynced)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
