"""Start-up: how long `lezerprintd serve --printer sim` takes to listen, and its idle memory.

Starts the real command as a child process (a fresh data dir each run), times the first
successful TCP connection to its port, waits until /api/status reports the virtual printer
operational, lets it idle, then reads VmRSS from /proc. Prints the median of --runs.

Reference on this machine (from the issue): OctoPrint 1.11.8 took 6.6 s to listen and idled
at 106 MB RSS. Targets: under 1 s and under 45 MB.

    .venv/bin/python bench/startup.py [--runs 5] [--idle 15]
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from daemon import clean_environment, free_port, rss_mb

OCTOPRINT_START_SECONDS = 6.6
OCTOPRINT_RSS_MB = 106


def one_run(idle: float) -> tuple[float, float]:
    port = free_port()
    env = clean_environment()
    with tempfile.TemporaryDirectory() as data:
        config = Path(data) / "config.toml"
        config.write_text("")
        started = time.perf_counter()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lezerprintd",
                "serve",
                "--mdns",
                "off",
                "--printer",
                "sim",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--data-dir",
                data,
                "--config",
                str(config),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if process.poll() is not None:
                        raise SystemExit("serve exited during start-up") from None
                    time.sleep(0.002)
            listening = time.perf_counter() - started
            deadline = time.monotonic() + 20
            while True:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status") as reply:
                    if json.load(reply)["data"]["printer"]["state"] == "operational":
                        break
                if time.monotonic() > deadline:
                    raise SystemExit("the virtual printer never became operational")
                time.sleep(0.05)
            time.sleep(idle)  # idle as an appliance does: polling temperatures, nothing else
            return listening, rss_mb(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=15.0, help="seconds idle before measuring")
    args = parser.parse_args()
    results = [one_run(args.idle) for _ in range(args.runs)]
    start = statistics.median(r[0] for r in results)
    rss = statistics.median(r[1] for r in results)
    print(f"runs:              {args.runs} (median)")
    print(
        f"start to listening: {start:.2f} s   (OctoPrint 1.11.8: {OCTOPRINT_START_SECONDS} s;"
        f" target < 1 s)"
    )
    print(
        f"idle RSS:           {rss:.1f} MB  (OctoPrint 1.11.8: {OCTOPRINT_RSS_MB} MB;"
        f" target < 45 MB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
