"""Emergency stop latency: from the API request to M112 reaching the firmware, mid-stream.

The daemon (`lezerprintd serve`) runs as a child process; the virtual Marlin runs in this
process, in instant mode, so the stream is as fast as it gets and the moment the firmware acts
on M112 is seen directly (its emergency parser halts it as the bytes arrive). Each try: reset
the board, reconnect through the API, start a 50,000-line print, wait until it streams, send
POST /api/printer/emergency-stop and time until the firmware has halted. Prints the median,
p95 and worst of --tries (target: median under 50 ms).

    .venv/bin/python bench/estop.py [--tries 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from daemon import add_bench_user, call, clean_environment, register_file, serving, sign_in

from lezerprintd.printer.virtual import VirtualOptions, VirtualPrinter


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

    def watch() -> None:
        while not virtual.halted:
            time.sleep(0.0002)  # a bare spin would hold the GIL from the firmware's thread
        halted_at.append(time.perf_counter())

    watcher = threading.Thread(target=watch)
    watcher.start()
    sent = time.perf_counter()
    call(port, "POST", "/api/printer/emergency-stop", token)
    watcher.join(10)
    if not halted_at:
        raise SystemExit("the firmware never halted")
    final = call(port, "GET", f"/api/jobs/{job['id']}", token)["data"]["job"]
    if final["status"] != "FAILED":
        raise SystemExit(f"the job did not fail: {final['status']}")
    return (halted_at[0] - sent) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tries", type=int, default=20)
    args = parser.parse_args()
    env = clean_environment()
    virtual = VirtualPrinter(VirtualOptions(instant=True, record_accepted=True))
    with tempfile.TemporaryDirectory() as scratch, virtual:
        data, config = Path(scratch) / "data", Path(scratch) / "config.toml"
        config.write_text("")
        gcode = Path(scratch) / "long.gcode"
        gcode.write_text("".join(f"G1 X{i % 200} Y{(i * 7) % 200} E{i}\n" for i in range(50_000)))
        add_bench_user(data, config, env)
        file_id = register_file(data, gcode)
        with serving(virtual.path, data, config, env) as (port, _):
            token = sign_in(port)
            latencies = [one_try(port, token, virtual, file_id) for _ in range(args.tries)]
    latencies.sort()
    print(f"tries:   {len(latencies)}, each during a stream to an instant-ok firmware")
    print(f"median:  {statistics.median(latencies):.1f} ms  (target < 50 ms)")
    print(f"p95:     {latencies[int(0.95 * (len(latencies) - 1))]:.1f} ms")
    print(f"worst:   {latencies[-1]:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
