"""Camera fan-out: does the daemon's CPU grow with the number of MJPEG viewers?

Runs the real daemon (`lezerprintd serve --camera test`, a child process) with the test
pattern at 640x480 and 15 fps, then opens 1, 5 and 20 viewers of GET /api/camera/stream (in
this process) for --seconds each, after a warm-up, and reads the daemon's CPU time from
/proc (user + system). Prints, per count: the daemon's CPU as a share of one core, frames
delivered per viewer per second, and the ratio of 20 viewers' CPU to one's (target: at most
1.3).

    .venv/bin/python bench/camera.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from daemon import add_bench_user, clean_environment, serving, sign_in

BOUNDARY = b"--lezerprintframe"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def viewer(session: aiohttp.ClientSession, url: str, token: str, counts: list[int]) -> None:
    index = len(counts)
    counts.append(0)
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as reply:
        if reply.status != 200:
            raise SystemExit(f"the stream answered {reply.status}")
        async for line in reply.content:
            if line.startswith(BOUNDARY):
                counts[index] += 1


async def watch(
    port: int, token: str, viewers: int, seconds: float, pid: int
) -> tuple[float, float]:
    """(the daemon's CPU share of one core, frames per viewer per second)."""
    url = f"http://127.0.0.1:{port}/api/camera/stream"
    counts: list[int] = []
    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(viewer(session, url, token, counts)) for _ in range(viewers)]
        await asyncio.sleep(2)  # warm-up: the camera starts, every viewer gets going
        frames, cpu, started = sum(counts), cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - started
        used = cpu_seconds(pid) - cpu
        delivered = sum(counts) - frames
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return used / elapsed, delivered / viewers / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    env = clean_environment()
    with tempfile.TemporaryDirectory() as scratch:
        data, config = Path(scratch) / "data", Path(scratch) / "config.toml"
        config.write_text(
            '[camera]\nsource = "test"\nwidth = 640\nheight = 480\nfps = 15\nidle_seconds = 60\n'
        )
        add_bench_user(data, config, env)
        with serving("sim", data, config, env) as (port, daemon):
            token = sign_in(port)
            shares = {}
            for viewers in (1, 5, 20):
                share, rate = asyncio.run(watch(port, token, viewers, args.seconds, daemon.pid))
                shares[viewers] = share
                print(
                    f"{viewers:2d} viewer(s): daemon CPU {100 * share:5.1f}% of a core,"
                    f" {rate:4.1f} frames/s delivered to each"
                )
    print(f"20 viewers cost {shares[20] / shares[1]:.2f}x the CPU of one (target <= 1.3)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
