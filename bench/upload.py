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
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from ws_load import COMMAND, PASSWORD, free_port, read_json, rss_mb


def write_gcode(path: Path, megabytes: int) -> None:
    lines = (f"G1 X{i % 200}.{i % 10} Y{(i * 7) % 200}.5 E{i * 0.01:.2f}\n" for i in range(40_000))
    data = "".join(lines).encode()
    with path.open("wb") as out:
        out.write(b"; bench/upload.py\nG28\n")
        written = 0
        while written < megabytes * 1024 * 1024:
            out.write(data)
            written += len(data)


async def upload(port: int, path: Path, size: int, pid: int) -> tuple[float, float, float]:
    samples: list[float] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            samples.append(rss_mb(pid))
            await asyncio.sleep(0.02)

    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://127.0.0.1:{port}/api/auth/login",
            json={"username": "bench", "password": PASSWORD},
        ) as reply:
            token = (await reply.json())["data"]["tokens"]["accessToken"]
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
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEZERPRINT_")}
    with tempfile.TemporaryDirectory() as scratch:
        data, config = Path(scratch) / "data", Path(scratch) / "config.toml"
        config.write_text(f"[files]\nmax_upload_mb = {args.mb + 10}\n")
        gcode = Path(scratch) / "big.gcode"
        write_gcode(gcode, args.mb)
        subprocess.run(
            [COMMAND, "user", "add", "bench", "--role", "operator", "--password-stdin",
             "--data-dir", str(data), "--config", str(config)],
            input=PASSWORD + "\n", text=True, check=True, env=env, capture_output=True,
        )  # fmt: skip
        port = free_port()
        daemon = subprocess.Popen(
            [COMMAND, "serve", "--printer", "sim", "--host", "127.0.0.1", "--port", str(port),
             "--data-dir", str(data), "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    read_json(f"http://127.0.0.1:{port}/api/health")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("the daemon did not come up") from None
                    time.sleep(0.05)
            time.sleep(1)  # let start-up settle before the baseline
            size = gcode.stat().st_size
            before, peak, rate = asyncio.run(upload(port, gcode, size, daemon.pid))
        finally:
            daemon.terminate()
            daemon.wait(20)
    print(f"uploaded:        {size / 1024 / 1024:,.0f} MB through POST /api/files")
    print(f"daemon RSS:      {before:.1f} MB before, {peak:.1f} MB at most during the upload")
    print(f"RSS growth:      {peak - before:.1f} MB  (target < 10 MB)")
    print(f"upload rate:     {rate:,.0f} MB/s (loopback, hashed and fsynced)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
