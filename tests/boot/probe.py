"""Runs inside the booted container, after lezerprintd: checks what only the inside can see,
writes the answers to /var/lib/boot-probe/result.json and powers the container off."""

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

RESULT = Path("/var/lib/boot-probe/result.json")
found: dict[str, object] = {}


def show(*properties: str) -> dict[str, str]:
    out = subprocess.run(
        ["systemctl", "show", "lezerprintd", *(f"--property={p}" for p in properties)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_active(seconds: float, other_than: str = "") -> dict[str, str]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = show("ActiveState", "SubState", "MainPID", "NRestarts")
        if state["ActiveState"] == "active" and state["MainPID"] not in ("0", other_than):
            return state
        time.sleep(0.2)
    return show("ActiveState", "SubState", "MainPID", "NRestarts", "Result")


def inside(pid: str, command: str) -> int:
    """`command` in the daemon's own mount namespace, as its sandbox shows the files."""
    return subprocess.run(
        ["nsenter", "-t", pid, "-m", "--", "sh", "-c", command], capture_output=True, check=False
    ).returncode


try:
    first = wait_active(90)
    found["first"] = first
    with urllib.request.urlopen("http://127.0.0.1:80/api/health", timeout=10) as reply:
        found["health"] = json.load(reply)
    pid = first["MainPID"]
    found["write_opt"] = inside(pid, "touch /opt/lezerprint/probe")
    found["write_etc"] = inside(pid, "touch /etc/probe")
    found["write_state"] = inside(pid, "touch /var/lib/lezerprint/probe")
    found["notify"] = show("Type", "NotifyAccess", "WatchdogUSec", "StatusText")
    os.kill(int(pid), signal.SIGUSR2)  # block its event loop
    found["after_block"] = wait_active(60, other_than=pid)
except Exception as error:  # the test reads the failure, whatever it was
    found["error"] = repr(error)
finally:
    found["journal"] = subprocess.run(
        ["journalctl", "-u", "lezerprintd", "--no-pager", "-o", "cat"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout[-4000:]
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(found, indent=1))
    subprocess.run(["systemctl", "poweroff", "--no-block"], check=False)
