"""Streaming while watched: does a crowd of browsers slow the printer?

Runs the real daemon (`lezerprintd serve`, a child process) against an instant-ok virtual
Marlin (another child) and prints the same 50,000-line job. First with bench/stream.py's
engine in this process (its figure, in the same run), then through the daemon's API, --runs
times each, alternated so a slow spell of the machine does not land on one side only:
- unloaded: nothing else connected;
- loaded: 20 websocket clients subscribed to everything (18 reading; 2 that complete the
  handshake and then never read, with small receive buffers, so TCP pushes back for real) and
  one HTTP client polling GET /api/printer/status in a loop (back to back, or --poll-hz times a
  second).
Prints the median lines/s of both (target: loaded >= 90% of unloaded; OctoPrint 1.11.8 lost 24%
with one browser tab open), the p99 latency of the status request under load, and the daemon's
RSS with 20 clients. The file is registered in the library's table directly, as an upload would.

    .venv/bin/python bench/ws_load.py [--lines 50000] [--clients 20] [--runs 3] [--poll-hz 0]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from daemon import add_bench_user, clean_environment, register_file, rss_mb, serving, sign_in
from stream import stream


def silent_client(port: int, token: str) -> socket.socket:
    """A websocket client that shakes hands and then never reads another byte."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    answer = sock.recv(1024)
    if b" 101 " not in answer.split(b"\r\n", 1)[0]:
        raise SystemExit(f"websocket handshake refused: {answer[:80]!r}")
    return sock


async def reader(
    session: aiohttp.ClientSession,
    port: int,
    token: str,
    stop: asyncio.Event,
    *,
    counts: list[int],
    all_in: tuple[asyncio.Event, int],
) -> None:
    async with session.ws_connect(
        f"http://127.0.0.1:{port}/ws", headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        await ws.send_json({"event": "subscribe", "data": {"topics": ["terminal"]}})
        index = len(counts)
        counts.append(0)
        everyone, expected = all_in
        if len(counts) == expected:
            everyone.set()
        while not stop.is_set():
            try:
                message = await asyncio.wait_for(ws.receive(), 0.5)
            except TimeoutError:
                continue
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            counts[index] += 1


async def poller(
    session: aiohttp.ClientSession,
    port: int,
    token: str,
    stop: asyncio.Event,
    latencies: list[float],
    *,
    every: float,
) -> None:
    url = f"http://127.0.0.1:{port}/api/printer/status"
    headers = {"Authorization": f"Bearer {token}"}
    while not stop.is_set():
        started = time.perf_counter()
        async with session.get(url, headers=headers) as reply:
            await reply.read()
            if reply.status != 200:
                raise SystemExit(f"status request answered {reply.status}")
        latencies.append(time.perf_counter() - started)
        if every:
            await asyncio.sleep(max(0.0, every - (time.perf_counter() - started)))


async def print_once(
    session: aiohttp.ClientSession, port: int, token: str, file_id: str, lines: int
) -> float:
    """Start the print and time it to its job:completed event: the websocket is never paced,
    so the clock stops when the daemon says the job ended, not when a paced poll finds out."""
    base, headers = f"http://127.0.0.1:{port}/api", {"Authorization": f"Bearer {token}"}
    async with session.ws_connect(f"http://127.0.0.1:{port}/ws", headers=headers) as ws:
        started = time.perf_counter()
        async with session.post(
            f"{base}/jobs/start", json={"fileId": file_id}, headers=headers
        ) as reply:
            job_id = (await reply.json())["data"]["job"]["id"]
        async with asyncio.timeout(600):
            while True:
                message = await ws.receive()
                if message.type is not aiohttp.WSMsgType.TEXT:
                    raise SystemExit(f"the websocket closed during the print: {message}")
                event = json.loads(message.data)
                if event["event"] == "job:completed" and event["data"]["jobId"] == job_id:
                    break
        elapsed = time.perf_counter() - started
    async with session.get(f"{base}/jobs/{job_id}", headers=headers) as reply:
        job = (await reply.json())["data"]["job"]
    if job["status"] != "COMPLETED" or job["linesDone"] != lines:
        raise SystemExit(f"the print did not complete: {job}")
    return lines / elapsed


async def loaded_print(
    args: argparse.Namespace,
    session: aiohttp.ClientSession,
    port: int,
    token: str,
    *,
    file_id: str,
    latencies: list[float],
) -> tuple[float, float, int]:
    """One print with the crowd connected: lines/s, the daemon's RSS, messages the readers got."""
    stop, counts = asyncio.Event(), []
    silent = [silent_client(port, token) for _ in range(2)]
    connected = asyncio.Event()
    count = args.clients - len(silent)
    readers = [
        asyncio.create_task(
            reader(session, port, token, stop, counts=counts, all_in=(connected, count))
        )
        for _ in range(count)
    ]
    await connected.wait()
    every = 1 / args.poll_hz if args.poll_hz else 0.0
    polling = asyncio.create_task(poller(session, port, token, stop, latencies, every=every))
    rate = await print_once(session, port, token, file_id, args.lines)
    memory = rss_mb(args.daemon_pid)
    stop.set()
    await asyncio.gather(polling, *readers)
    for sock in silent:
        sock.close()
    return rate, memory, sum(counts)


async def run(
    args: argparse.Namespace, port: int, token: str, file_id: str, engine_rate: float
) -> None:
    unloaded, loaded, latencies = [], [], []
    async with aiohttp.ClientSession() as session:
        # Alternated, so a slow spell of the machine does not land on one side only.
        for _ in range(args.runs):
            unloaded.append(await print_once(session, port, token, file_id, args.lines))
            rate, memory, messages = await loaded_print(
                args, session, port, token, file_id=file_id, latencies=latencies
            )
            loaded.append(rate)

    quiet, busy = statistics.median(unloaded), statistics.median(loaded)
    p99 = statistics.quantiles(latencies, n=100)[98] * 1000
    polling = f"{args.poll_hz:g} per second" if args.poll_hz else "back to back"
    print(f"lines per print:            {args.lines} (medians of {args.runs} alternated runs)")
    print(f"bench/stream.py engine:     {engine_rate:,.0f} lines/s")
    print(f"daemon, unloaded:           {quiet:,.0f} lines/s  {_runs(unloaded)}")
    print(
        f"daemon, loaded ({args.clients} ws clients, 2 never read, status polled {polling}):"
        f" {busy:,.0f} lines/s  {_runs(loaded)}"
    )
    print(f"loaded / unloaded:          {100 * busy / quiet:.1f}% (target >= 90%)")
    print(f"status request under load:  p99 {p99:.1f} ms over {len(latencies)} requests")
    print(f"daemon RSS with clients:    {memory:.1f} MB")
    print(f"messages the readers got:   {messages} (last run)")


def _runs(rates: list[float]) -> str:
    return "(" + ", ".join(f"{rate:,.0f}" for rate in rates) + ")"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5, help="unloaded and loaded prints each")
    parser.add_argument(
        "--poll-hz", type=float, default=0, help="status requests per second (0: back to back)"
    )
    args = parser.parse_args()
    env = clean_environment()
    with tempfile.TemporaryDirectory() as scratch:
        data, config = Path(scratch) / "data", Path(scratch) / "config.toml"
        config.write_text("")
        gcode = Path(scratch) / "bench.gcode"
        with gcode.open("w") as out:
            for i in range(args.lines):
                out.write(f"G1 X{i % 200}.{i % 10} Y{(i * 7) % 200}.5 E{i * 0.01:.2f}\n")
        firmware = subprocess.Popen(
            [sys.executable, "-m", "lezerprintd", "virtual-printer", "--instant"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert firmware.stdout is not None
            pty = firmware.stdout.readline().strip()
            wall, _, lines = asyncio.run(stream(gcode, pty))
            engine_rate = lines / wall
            add_bench_user(data, config, env)
            file_id = register_file(data, gcode)
            with serving(pty, data, config, env) as (port, daemon):
                args.daemon_pid = daemon.pid
                asyncio.run(run(args, port, sign_in(port), file_id, engine_rate))
        finally:
            firmware.terminate()
            firmware.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
