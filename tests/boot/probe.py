"""Runs inside the booted container, after lezerprintd: checks what only the inside can see,
writes the answers to /var/lib/boot-probe/result.json and powers the container off. The test
leaves what it expects (the card's admin) in /etc/boot-probe.json."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

RESULT = Path("/var/lib/boot-probe/result.json")
EXPECT = json.loads(Path("/etc/boot-probe.json").read_text())
WIFI = Path("/etc/NetworkManager/system-connections/lezerprint-wifi.nmconnection")
found: dict[str, object] = {}


def show(*properties: str, unit: str = "lezerprintd") -> dict[str, str]:
    out = subprocess.run(
        ["systemctl", "show", unit, *(f"--property={p}" for p in properties)],
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


def socket_owners() -> dict[str, str]:
    """Socket inode -> the name of the process holding it."""
    owners = {}
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            name = (fd_dir.parent / "comm").read_text().strip()
            for fd in fd_dir.iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    owners[target[8:-1]] = name
        except OSError:
            continue  # a process that ended meanwhile
    return owners


def listening() -> list[str]:
    """What this machine listens on: TCP sockets in LISTEN and bound UDP sockets, each as
    "proto:port owner"."""
    owners = socket_owners()
    found = set()
    for kind in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{kind}").read_text().splitlines()[1:]:
            fields = line.split()
            if kind.startswith("tcp") and fields[3] != "0A":
                continue
            port = int(fields[1].rsplit(":", 1)[1], 16)
            found.add(f"{kind.rstrip('6')}:{port} {owners.get(fields[9], '?')}")
    return sorted(found)


def sign_in(username: str, password: str) -> int:
    request = urllib.request.Request(
        "http://127.0.0.1:80/api/auth/login",
        data=json.dumps({"username": username, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return error.code


try:
    first = wait_active(90)
    found["first"] = first
    with urllib.request.urlopen("http://127.0.0.1:80/api/health", timeout=10) as reply:
        found["health"] = json.load(reply)
    found["firstboot"] = show("Result", "ExecMainStatus", unit="lezerprint-firstboot")
    found["hostname"] = socket.gethostname()
    found["wifi_mode"] = oct(WIFI.stat().st_mode & 0o777) if WIFI.exists() else None
    found["sign_in"] = sign_in(EXPECT["username"], EXPECT["password"])
    found["wrong_sign_in"] = sign_in(EXPECT["username"], "not the password")
    with urllib.request.urlopen("http://127.0.0.1:80/login", timeout=30) as reply:
        page = reply.read().decode()
    found["login_page"] = "Sign in to LezerPrint" in page  # the web UI, from the wheel
    found["listening"] = listening()
    found["avahi"] = show("ActiveState", unit="avahi-daemon")["ActiveState"]
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
