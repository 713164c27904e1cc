"""Streaming speed: 50,000 short G1 lines through the real job engine to an instant-ok firmware.

The firmware is our virtual Marlin in instant mode (every command acknowledged as soon as it is
checked), in its own process on a real pseudo-terminal, so this process's CPU time is the host's
alone. The host is the same code `lezerprintd print` and `serve` run, with default settings
(window 4, 127-byte budget). Prints lines/s and host CPU-ms per line (user + sys of this
process, worker threads included), best of --runs.

Reference on this machine (from the issue): OctoPrint 1.11.8 streamed this kind of file at about
2,400 lines/s and 0.355 CPU-ms per line.

    .venv/bin/python bench/stream.py [--lines 50000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lezerprintd.app import print_file
from lezerprintd.config import load_config
from lezerprintd.store.jobs import JobStatus

OCTOPRINT_LINES_PER_SECOND = 2400
OCTOPRINT_CPU_MS_PER_LINE = 0.355


def write_file(path: Path, lines: int) -> None:
    with path.open("w") as out:
        for i in range(lines):
            out.write(f"G1 X{i % 200}.{i % 10} Y{(i * 7) % 200}.5 E{i * 0.01:.2f}\n")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def stream(path: Path, port: str) -> tuple[float, float, int]:
    config = load_config(path=None, env={})
    config = dataclasses.replace(
        config,
        printer=dataclasses.replace(config.printer, port=port, baud=115200),
    )
    started_cpu, started = cpu_seconds(), time.perf_counter()
    record = await print_file(config, path)
    wall, cpu = time.perf_counter() - started, cpu_seconds() - started_cpu
    if record.status is not JobStatus.COMPLETED:
        raise SystemExit(f"the print did not complete: {record.status} {record.error_message}")
    return wall, cpu, record.lines_done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        gcode = Path(scratch) / "bench.gcode"
        write_file(gcode, args.lines)
        firmware = subprocess.Popen(
            [sys.executable, "-m", "lezerprintd", "virtual-printer", "--instant"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert firmware.stdout is not None
            port = firmware.stdout.readline().strip()
            if not port:
                raise SystemExit("the virtual printer did not start")
            results = [asyncio.run(stream(gcode, port)) for _ in range(args.runs)]
        finally:
            firmware.terminate()
            firmware.wait(10)
    wall, cpu, lines = min(results)
    rate = lines / wall
    cpu_ms = 1000 * cpu / lines
    print(f"lines streamed:    {lines} (best of {len(results)} runs, cores: {os.cpu_count()})")
    print(
        f"lines/s:           {rate:,.0f}   (OctoPrint 1.11.8: ~{OCTOPRINT_LINES_PER_SECOND:,};"
        f" {rate / OCTOPRINT_LINES_PER_SECOND:.1f}x)"
    )
    print(
        f"host CPU-ms/line:  {cpu_ms:.4f}  (OctoPrint 1.11.8: {OCTOPRINT_CPU_MS_PER_LINE};"
        f" {OCTOPRINT_CPU_MS_PER_LINE / cpu_ms:.1f}x less)"
    )
    print(f"wall time:         {wall:.2f} s, host CPU {cpu:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
