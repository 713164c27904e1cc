"""What the benches that drive a real daemon share: an account, a data dir, the daemon itself
as a child process on a free loopback port, and a way in through its API.

Not a bench itself; the scripts beside it import it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The console script installed beside this interpreter: what a person (and systemd) runs.
COMMAND = str(Path(sys.executable).parent / "lezerprintd")
PASSWORD = "bench-password-1"


def clean_environment() -> dict[str, str]:
    """This environment without LEZERPRINT_* settings, so only the bench's own apply."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LEZERPRINT_")}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def call(port: int, method: str, path: str, token: str | None = None, body: object = None) -> Any:
    """One API request; the answer's JSON."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.load(reply)


def add_bench_user(data: Path, config: Path, env: dict[str, str]) -> None:
    """The operator account `bench` (password PASSWORD), made as an admin would."""
    subprocess.run(
        [COMMAND, "user", "add", "bench", "--role", "operator", "--password-stdin",
         "--data-dir", str(data), "--config", str(config)],
        input=PASSWORD + "\n", text=True, check=True, env=env, capture_output=True,
    )  # fmt: skip


def sign_in(port: int) -> str:
    """An access token for `bench`."""
    answer = call(
        port, "POST", "/api/auth/login", None, {"username": "bench", "password": PASSWORD}
    )
    token: str = answer["data"]["tokens"]["accessToken"]
    return token


def register_file(data_dir: Path, source: Path) -> str:
    """Put `source` in the file library directly, as an upload would, so a print bench does not
    also measure an upload."""
    file_id, stored = str(uuid.uuid4()), f"{uuid.uuid4().hex}.gcode"
    (data_dir / "files").mkdir(exist_ok=True)
    shutil.copy(source, data_dir / "files" / stored)
    now = time.time()
    with sqlite3.connect(data_dir / "lezerprint.db") as db:
        db.execute(
            "INSERT INTO files (id, original_name, file_name, file_type, file_size, created_at,"
            " updated_at) VALUES (?, ?, ?, 'GCODE', ?, ?, ?)",
            (file_id, source.name, stored, source.stat().st_size, now, now),
        )
    return file_id


@contextlib.contextmanager
def serving(
    printer: str, data: Path, config: Path, env: dict[str, str]
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """`lezerprintd serve` on a free loopback port, yielded once its printer is operational,
    stopped afterwards. `printer` is a pty path (115200 baud) or "sim"."""
    port = free_port()
    baud = [] if printer == "sim" else ["--baud", "115200"]
    daemon = subprocess.Popen(
        [COMMAND, "serve", "--mdns", "off", "--printer", printer, *baud, "--host", "127.0.0.1",
         "--port", str(port), "--data-dir", str(data), "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not _operational(port):
            if time.monotonic() > deadline:
                raise SystemExit("the daemon did not come up with its printer")
            time.sleep(0.05)
        yield port, daemon
    finally:
        daemon.terminate()
        daemon.wait(20)


def _operational(port: int) -> bool:
    try:
        status = call(port, "GET", "/api/status")
    except OSError:
        return False
    return bool(status["data"]["printer"]["state"] == "operational")
