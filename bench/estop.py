"""Emergency stop latency, mid-stream: from the API request, and from the GPIO button's edge,
to M112 reaching the firmware.

The virtual Marlin runs in this process, in instant mode, so the stream is as fast as it gets
and the moment the firmware acts on M112 is seen directly (its emergency parser halts it as the
bytes arrive). Each try: reset the board, reconnect, start a 50,000-line print, wait until it
streams, stop it, time until the firmware has halted.

- API (--tries, default 20): the daemon (`lezerprintd serve`) is a child process; the stop is
  POST /api/printer/emergency-stop. Target: median under 50 ms.
- GPIO (--gpio-tries, default 50): the appliance runs in this process, its [gpio] estop_pin on
  gpiozero's MockFactory, with --clients websocket clients (default 20, in a child process)
  following everything including the terminal; the stop is the pin's edge, driven from
  another thread as gpiozero's would be. Target: median under 20 ms, worst under 50 ms.

    .venv/bin/python bench/estop.py [--tries 20] [--gpio-tries 50] [--clients 20]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from daemon import (
    PASSWORD,
    add_bench_user,
    call,
    clean_environment,
    free_port,
    register_file,
    serving,
    sign_in,
)

from lezerprintd.app import Appliance, build_app
from lezerprintd.auth.permissions import Role
from lezerprintd.auth.service import COMMAND_LINE, Client
from lezerprintd.config import Config, GpioConfig, MdnsConfig, PrinterConfig, ServerConfig
from lezerprintd.printer.printer import PrinterState
from lezerprintd.printer.virtual import VirtualOptions, VirtualPrinter

ESTOP_PIN = 17


def wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.005)


def one_try(port: int, token: str, virtual: VirtualPrinter, file_id: str) -> float:
    virtual.reset()  # as a person presses reset after an emergency stop
    call(port, "POST", "/api/printer/connect", token, {})
    before = len(virtual.accepted)
    job = call(port, "POST", "/api/jobs/start", token, {"fileId": file_id})["data"]["job"]
    wait_for(lambda: len(virtual.accepted) > before + 2000, 20, "the stream to get going")
    halted_at: list[float] = []
    watcher = watch_halt(virtual, halted_at)
    sent = time.perf_counter()
    call(port, "POST", "/api/printer/emergency-stop", token)
    watcher.join(10)
    if not halted_at:
        raise SystemExit("the firmware never halted")
    final = call(port, "GET", f"/api/jobs/{job['id']}", token)["data"]["job"]
    if final["status"] != "FAILED":
        raise SystemExit(f"the job did not fail: {final['status']}")
    return (halted_at[0] - sent) * 1000


def watch_halt(virtual: VirtualPrinter, halted_at: list[float]) -> threading.Thread:
    def watch() -> None:
        while not virtual.halted:
            time.sleep(0.0002)  # a bare spin would hold the GIL from the firmware's thread
        halted_at.append(time.perf_counter())

    watcher = threading.Thread(target=watch)
    watcher.start()
    return watcher


async def until(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def gpio_tries(tries: int, clients: int, scratch: Path) -> list[float]:
    """The appliance in this process; its stop button on a mock pin; clients elsewhere."""
    logging.getLogger("lezerprintd").setLevel(logging.CRITICAL)  # fifty stops, as expected
    virtual = VirtualPrinter(VirtualOptions(instant=True, record_accepted=True))
    gcode = scratch / "long.gcode"
    with virtual:
        port = free_port()
        config = Config(
            server=ServerConfig(host="127.0.0.1", port=port, data_dir=scratch / "gpio-data"),
            printer=PrinterConfig(port=virtual.path, baud=115200),
            gpio=GpioConfig(factory="mock", estop_pin=ESTOP_PIN),
            mdns=MdnsConfig(enabled=False),
        )
        appliance = Appliance(config, board_reset=virtual.reset)
        runner = aiohttp.web.AppRunner(build_app(config, appliance))
        await runner.setup()
        watchers: subprocess.Popen[bytes] | None = None
        try:
            await aiohttp.web.TCPSite(runner, "127.0.0.1", port).start()
            await appliance.auth.create_user(
                "bench", PASSWORD, Role.OPERATOR, None, actor=None, client=COMMAND_LINE
            )
            login = await appliance.auth.login("bench", PASSWORD, Client("127.0.0.1", "bench"))
            token = login.tokens.access_token
            # The browsers: another process, as they would be.
            watchers = await asyncio.to_thread(
                subprocess.Popen,
                [sys.executable, __file__, "--watch", str(port), token, str(clients)],
                stdout=subprocess.PIPE,
            )
            assert watchers.stdout is not None
            if await asyncio.to_thread(watchers.stdout.readline) != b"connected\n":
                raise SystemExit("the websocket clients did not connect")
            pin = appliance.gpio.factory.pin(ESTOP_PIN)
            latencies = []
            for _ in range(tries):
                virtual.reset()
                await until(lambda: not virtual.halted, 5, "the board to restart")
                await appliance.printer.connect()
                await asyncio.to_thread(pin.drive_low)  # the stop button at rest: closed
                await until(lambda: not appliance.gpio.estop_tripped, 5, "the stop to re-arm")
                before = len(virtual.accepted)
                await appliance.jobs.start_job(gcode)
                await until(
                    lambda before=before: len(virtual.accepted) > before + 2000, 20, "the stream"
                )
                halted_at: list[float] = []
                watcher = watch_halt(virtual, halted_at)
                pressed = time.perf_counter()
                await asyncio.to_thread(pin.drive_high)  # pressed: the contact opens
                await asyncio.to_thread(watcher.join, 10)
                if not halted_at:
                    raise SystemExit("the firmware never halted")
                latencies.append((halted_at[0] - pressed) * 1000)
                await until(lambda: appliance.jobs.current is None, 20, "the job to end")
                if appliance.printer.state is not PrinterState.ERROR:
                    raise SystemExit(f"the printer is {appliance.printer.state}")
            return latencies
        finally:
            if watchers is not None:
                watchers.kill()
                watchers.wait()
            await runner.cleanup()


async def watch_only(port: int, token: str, clients: int) -> None:
    """--watch: the websocket clients, following everything, until killed."""
    async with aiohttp.ClientSession() as session:
        sockets = []
        for _ in range(clients):
            ws = await session.ws_connect(
                f"http://127.0.0.1:{port}/ws", headers={"Authorization": f"Bearer {token}"}
            )
            await ws.send_json({"event": "subscribe", "data": {"topics": ["terminal"]}})
            sockets.append(ws)
        print("connected", flush=True)

        async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for _ in ws:
                pass

        await asyncio.gather(*(read(ws) for ws in sockets))


def report(title: str, latencies: list[float], target: str) -> None:
    latencies.sort()
    print(f"{title}: {len(latencies)} tries, each during a stream to an instant-ok firmware")
    print(f"  median:  {statistics.median(latencies):.1f} ms  ({target})")
    print(f"  p95:     {latencies[int(0.95 * (len(latencies) - 1))]:.1f} ms")
    print(f"  worst:   {latencies[-1]:.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--gpio-tries", type=int, default=50)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument(
        "--watch", nargs=3, metavar=("PORT", "TOKEN", "CLIENTS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.watch:
        port, token, clients = args.watch
        asyncio.run(watch_only(int(port), token, int(clients)))
        return 0
    env = clean_environment()
    virtual = VirtualPrinter(VirtualOptions(instant=True, record_accepted=True))
    with tempfile.TemporaryDirectory() as scratch, virtual:
        data, config = Path(scratch) / "data", Path(scratch) / "config.toml"
        config.write_text("")
        gcode = Path(scratch) / "long.gcode"
        gcode.write_text("".join(f"G1 X{i % 200} Y{(i * 7) % 200} E{i}\n" for i in range(50_000)))
        if args.tries:
            add_bench_user(data, config, env)
            file_id = register_file(data, gcode)
            with serving(virtual.path, data, config, env) as (port, _):
                token = sign_in(port)
                api = [one_try(port, token, virtual, file_id) for _ in range(args.tries)]
            report("API", api, "target < 50 ms")
        if args.gpio_tries:
            button = asyncio.run(gpio_tries(args.gpio_tries, args.clients, Path(scratch)))
            report(
                f"GPIO button, {args.clients} websocket clients watching",
                button,
                "target: median < 20 ms, worst < 50 ms",
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
