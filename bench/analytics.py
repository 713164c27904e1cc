"""Analytics over a long history: how long GET /api/analytics/dashboard?range=1y takes with
--jobs finished prints (default 10,000) in the database.

Makes a fresh data dir, migrates its database, writes the history straight into
`print_jobs` in one transaction (a year and a half of prints, the mix a busy appliance sees:
most completed, some failed for the usual reasons, some cancelled; three materials, one in ten
without a stated weight), then runs the real daemon (`lezerprintd serve --printer sim`, a
child process) and times the request over loopback, as the analytics page makes it. Prints
the median of --runs after one warm-up request.

    .venv/bin/python bench/analytics.py [--jobs 10000] [--runs 50]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from daemon import add_bench_user, call, clean_environment, serving, sign_in

from lezerprintd.store import Store

DAY = 24 * 3600
REASONS = (
    "The printer halted: Thermal Runaway, system stopped! Heater_ID: 0",
    "interrupted: the daemon stopped or the power failed while printing",
    "the printer was disconnected",
    "The printer halted: Heating failed, system stopped! Heater_ID: 0",
)
MATERIALS = ("PLA", "PETG", "ASA")


def history(database: Path, jobs: int) -> None:
    """`jobs` finished prints over the last 540 days, a third of them older than a year."""
    asyncio.run(_migrate(database))
    rows = []
    now = time.time()
    pick = random.Random(1)
    for n in range(jobs):
        ended = now - pick.uniform(0, 540 * DAY)
        took = pick.randint(600, 8 * 3600)
        roll = pick.random()
        status, error, share = "COMPLETED", None, 1.0
        if roll > 0.95:
            status, share = "CANCELLED", pick.random()
        elif roll > 0.85:
            status, error, share = "FAILED", pick.choice(REASONS), pick.random()
        grams = None if n % 10 == 0 else round(took / 300 * share, 2)
        estimate = round(took * pick.uniform(0.8, 1.2))
        length = None if grams is None else round(grams * 330, 1)  # 1.75 mm PLA: 330 mm/g
        rows.append((
            str(uuid.uuid4()), f"part-{n}.gcode", status, 100 * share, ended - took - 60,
            ended - took, ended, estimate, took, grams, length, pick.choice(MATERIALS), error,
            ended,
        ))  # fmt: skip
    with sqlite3.connect(database) as db:
        db.executemany(
            "INSERT INTO print_jobs (id, file_name, status, progress, created_at, started_at,"
            " completed_at, estimated_time, actual_time, filament_used, filament_length,"
            " material, error_message, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?, ?)",
            rows,
        )
    with sqlite3.connect(database) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


async def _migrate(database: Path) -> None:
    store = await Store.open(database)
    await store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    env = clean_environment()
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        data.mkdir()
        config = Path(scratch) / "config.toml"
        config.write_text("")
        history(data / "lezerprint.db", args.jobs)
        add_bench_user(data, config, env)
        with serving("sim", data, config, env) as (port, _):
            token = sign_in(port)
            path = "/api/analytics/dashboard?range=1y"
            answer = call(port, "GET", path, token)  # warm-up: the first request's imports
            took = []
            for _ in range(args.runs):
                started = time.perf_counter()
                call(port, "GET", path, token)
                took.append((time.perf_counter() - started) * 1000)
    figures = answer["data"]
    print(f"history:  {args.jobs:,} finished jobs, {figures['totalPrints']:,} in the last year")
    print(f"GET {path}: median {statistics.median(took):.1f} ms over {args.runs} runs")
    print(f"  fastest {min(took):.1f} ms, slowest {max(took):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
