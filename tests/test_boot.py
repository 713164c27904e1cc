"""A real boot: a minimal Debian 12 root (debootstrap, cached between runs), the daemon
installed in it from this checkout's wheel, booted with systemd-nspawn on a private network.
From inside (tests/boot/probe.py): the unit is active only after READY, answers /api/health on
port 80 as its own user, cannot write outside its state directory, and a blocked event loop is
killed by the watchdog and restarted. About a minute (two more the first time)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("LEZERPRINT_CACHE", Path.home() / ".cache" / "lezerprint"))
BASE = CACHE / "boot-root-bookworm-amd64"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-venv"


def need(tool: str, package: str) -> str:
    found = shutil.which(tool)
    assert found, f"{tool} is missing: apt-get install {package} (./dev.sh does)"
    return found


def base_root() -> Path:
    """The cached minimal root; made with debootstrap the first time (about two minutes)."""
    if (BASE / ".complete").exists():
        return BASE
    debootstrap = need("debootstrap", "debootstrap")
    partial = BASE.with_name(BASE.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [debootstrap, "--variant=minbase", f"--include={PACKAGES}", "bookworm", str(partial),
         MIRROR],
        check=True, capture_output=True, timeout=900,
    )  # fmt: skip
    (partial / ".complete").touch()
    shutil.rmtree(BASE, ignore_errors=True)
    partial.rename(BASE)
    return BASE


def wheelhouse(where: Path) -> Path:
    """The project's wheel and every dependency's, made on the host (the container has no
    index to reach)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(where), str(PROJECT)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return where


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    assert os.geteuid() == 0, "the boot test needs root (debootstrap, systemd-nspawn)"
    need("systemd-nspawn", "systemd-container")
    need("unshare", "util-linux")
    scratch = tmp_path_factory.mktemp("boot")
    base = base_root()
    wheels = wheelhouse(scratch / "wheels")
    root = scratch / "root"
    root.mkdir()
    try:
        done = subprocess.run(
            ["unshare", "-m", "--", "sh", str(PROJECT / "tests" / "boot" / "boot.sh"),
             str(base), str(root), str(wheels), str(PROJECT)],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        result = root / "var" / "lib" / "boot-probe" / "result.json"
        assert result.exists(), (
            f"the probe wrote nothing:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
        found: dict[str, object] = json.loads(result.read_text())
        found["console"] = done.stdout[-5000:]
        return found
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_unit_is_active_only_once_ready_and_answers(booted: dict[str, object]) -> None:
    assert "error" not in booted, booted.get("journal")
    first = booted["first"]
    assert isinstance(first, dict)
    assert first["ActiveState"] == "active"
    health = booted["health"]
    assert isinstance(health, dict)
    assert health["data"]["status"] == "ok"  # on port 80: the one capability it was given
    notify = booted["notify"]
    assert isinstance(notify, dict)
    assert (notify["Type"], notify["NotifyAccess"], notify["WatchdogUSec"]) == (
        "notify",
        "main",
        "4s",
    )
    assert notify["StatusText"].startswith("printer ")


def test_the_sandbox_keeps_writes_in_the_state_directory(booted: dict[str, object]) -> None:
    assert booted["write_opt"] != 0
    assert booted["write_etc"] != 0
    assert booted["write_state"] == 0


def test_a_blocked_loop_is_killed_by_the_watchdog_and_restarted(booted: dict[str, object]) -> None:
    first, after = booted["first"], booted["after_block"]
    assert isinstance(first, dict)
    assert isinstance(after, dict)
    assert after["ActiveState"] == "active", after
    assert after["MainPID"] != first["MainPID"]
    assert int(after["NRestarts"]) == int(first["NRestarts"]) + 1
    journal = str(booted["journal"])
    assert "blocking the event loop on request" in journal
    assert "Watchdog timeout" in journal or "watchdog" in journal.lower(), journal[-1500:]
