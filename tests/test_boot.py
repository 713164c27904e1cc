"""The appliance image's install recipe, run here as pi-gen runs it, and then booted.

A minimal Debian 12 root (debootstrap, cached between runs) stands in for Raspberry Pi OS
Lite: image-build/'s stage is applied to it exactly as pi-gen applies it (its host script,
then its chroot script under a clean environment, from a wheelhouse made by
image-build/wheelhouse.sh). Then the result is checked from outside, and booted with
systemd-nspawn on a private network with a card's boot partition carrying a lezerprint.toml:
from inside (tests/boot/probe.py) the first-boot unit has applied it, the daemon is active
only after READY, answers on port 80 as its own user, the card's admin signs in, nothing
listens but the web server and mDNS, writes stay in the state directory, and a blocked event
loop is killed by the watchdog and restarted. About a minute (two more the first time).

LEZERPRINT_TEST_ARM64=1 also runs the recipe and its checks on an arm64 root under qemu
(the Pi's architecture; about 6 minutes the first time, apt-get install qemu-user-static
first); the boot itself is checked on amd64 only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest

from tests.conftest import CACHE, built_once, clean_environment, need

PROJECT = Path(__file__).resolve().parent.parent
STAGE = PROJECT / "image-build" / "stage-lezerprint" / "00-install"
MIRROR = "http://deb.debian.org/debian"
# What Raspberry Pi OS Lite has and a minbase Debian lacks, plus the stage's own packages
# (00-packages; 00-packages-nr holds Raspberry Pi OS's camera and GPIO packages).
BASE_PACKAGES = ["systemd", "systemd-sysv", "dbus", "python3", "udev"]
ARM64 = os.environ.get("LEZERPRINT_TEST_ARM64") == "1"
# The first debootstrap, and everything under qemu, take longer than conftest's usual limit.
pytestmark = pytest.mark.stuck_after(3000 if ARM64 else 900)
ADMIN, PASSWORD, WIFI_KEY = "alice", "correct horse battery staple", "kitchen-wifi-key-42"


def stage_packages() -> list[str]:
    return (STAGE / "00-packages").read_text().split()


def run(command: list[str], timeout: float, **options: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, **options
    )  # type: ignore[call-overload]
    assert done.returncode == 0, (
        f"{command[:3]} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    )
    return done  # type: ignore[no-any-return]


def base_root(arch: str) -> Path:
    """The cached minimal root for `arch`, made with debootstrap the first time (about two
    minutes; arm64's second stage runs under qemu, about five)."""
    packages = sorted(set(BASE_PACKAGES + stage_packages()))
    tag = hashlib.sha256(" ".join(packages).encode()).hexdigest()[:8]
    base = CACHE / f"boot-root-bookworm-{arch}-{tag}"

    def bootstrap(partial: Path) -> None:
        debootstrap = need("debootstrap", "debootstrap")
        include = f"--include={','.join(packages)}"
        if arch == "amd64":
            run([debootstrap, "--variant=minbase", include, "bookworm", str(partial), MIRROR], 900)
        else:
            run([debootstrap, "--arch", arch, "--foreign", "--variant=minbase", include,
                 "bookworm", str(partial), MIRROR], 900)  # fmt: skip
            run(["chroot", str(partial), "/debootstrap/debootstrap", "--second-stage"], 1800)

    fresh = not (base / ".complete").exists()
    built_once(base, bootstrap)
    if fresh:
        for older in CACHE.glob(f"boot-root-bookworm-{arch}*"):  # roots of older package lists
            if older != base:
                shutil.rmtree(older, ignore_errors=True)
    return base


def check_emulation(arch: str) -> None:
    if arch == "amd64":
        return
    need("qemu-aarch64-static", "qemu-user-static")
    registered = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not registered.exists():
        if not Path("/proc/sys/fs/binfmt_misc/register").exists():
            run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"], 30)
        run(["update-binfmts", "--enable", "qemu-aarch64"], 30)
    assert registered.exists(), "qemu-aarch64 is not registered with binfmt_misc"


def card_settings() -> str:
    admin_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    return (
        'hostname = "workshop"\n'
        'timezone = "Europe/Amsterdam"\n'
        f'[wifi]\nssid = "Kitchen"\npassword = "{WIFI_KEY}"\ncountry = "NL"\n'
        f'[admin]\nusername = "{ADMIN}"\npassword_hash = "{admin_hash}"\n'
    )


@pytest.fixture(
    scope="module",
    params=["amd64", pytest.param("arm64", marks=pytest.mark.skipif(
        not ARM64, reason="arm64 under qemu is opt-in: LEZERPRINT_TEST_ARM64=1"))],
)  # fmt: skip
def installed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path | str]:
    """A root with the stage applied, as pi-gen would leave it in the image."""
    arch: str = request.param
    assert os.geteuid() == 0, "the image test needs root (debootstrap, chroot, systemd-nspawn)"
    need("unshare", "util-linux")
    check_emulation(arch)
    scratch = tmp_path_factory.mktemp(f"image-{arch}")
    base = base_root(arch)
    wheels = scratch / "wheels"
    run([str(PROJECT / "image-build" / "wheelhouse.sh"), arch, str(wheels)], 600,
        env={**os.environ, "PYTHON": sys.executable})  # fmt: skip
    root = scratch / "root"
    run(["cp", "-a", f"{base}/.", str(root)], 300)
    # What pi-gen's stage 1 puts on the boot partition, with the camera line turned off.
    firmware = root / "boot" / "firmware"
    firmware.mkdir(parents=True, exist_ok=True)
    (firmware / "config.txt").write_text("dtparam=audio=on\ncamera_auto_detect=0\n")
    install = PROJECT / "tests" / "boot" / "install.sh"
    run(["unshare", "-m", "--", "sh", str(install), str(root), str(wheels), str(PROJECT)], 1800)
    return {"arch": arch, "root": root, "scratch": scratch}


def in_root(root: Path, *command: str) -> str:
    return run(["chroot", str(root), *command], 120).stdout


def test_the_venv_runs_the_daemon(installed: dict[str, Path | str]) -> None:
    root = Path(installed["root"])
    version = in_root(root, "/opt/lezerprint/venv/bin/lezerprintd", "--help")
    assert "serve" in version
    imported = in_root(
        root, "/opt/lezerprint/venv/bin/python", "-c",
        "import lezerprintd, aiohttp, bcrypt, numpy, simplejpeg, zeroconf; "
        "import sys; print(sys.prefix, lezerprintd.__file__)",
    )  # fmt: skip
    assert imported.startswith("/opt/lezerprint/venv /opt/lezerprint/venv/lib/python3.11/")
    config = (root / "opt/lezerprint/venv/pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in config  # the OS's picamera2 and gpiozero
    assert not (root / "tmp/lezerprint-wheelhouse").exists()


def test_the_units_rules_and_names_are_in_place(installed: dict[str, Path | str]) -> None:
    root = Path(installed["root"])
    wants = root / "etc/systemd/system/multi-user.target.wants"
    for unit in ("lezerprintd.service", "lezerprint-firstboot.service", "avahi-daemon.service"):
        assert (wants / unit).is_symlink(), f"{unit} is not enabled"
    rules = root / "etc/udev/rules.d/60-lezerprint.rules"
    assert rules.read_text() == (PROJECT / "udev/60-lezerprint.rules").read_text()
    assert (root / "etc/hostname").read_text() == "printer\n"
    assert "127.0.1.1\tprinter" in (root / "etc/hosts").read_text()
    groups = in_root(root, "id", "-nG", "lezerprint").split()
    assert {"lezerprint", "dialout", "video", "gpio"} <= set(groups)
    assert in_root(root, "getent", "passwd", "lezerprint").strip().endswith(":/usr/sbin/nologin")
    journald = (root / "etc/systemd/journald.conf.d/lezerprint.conf").read_text()
    assert "Storage=volatile" in journald  # no journal writes on the SD card
    assert "camera_auto_detect=1" in (root / "boot/firmware/config.txt").read_text()
    check = run(
        [sys.executable, "-m", "lezerprintd", "config", "check", "--config",
         str(root / "etc/lezerprint/config.toml")], 60, env=clean_environment(),
    )  # fmt: skip
    assert "config ok" in check.stdout


def test_systemd_has_nothing_to_say_about_the_units(installed: dict[str, Path | str]) -> None:
    root = Path(installed["root"])
    tool = need("systemd-analyze", "systemd")
    done = subprocess.run(
        [tool, "verify", f"--root={root}", "lezerprintd.service", "lezerprint-firstboot.service"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert (done.stdout + done.stderr).strip() == ""
    assert done.returncode == 0


@pytest.fixture(scope="module")
def booted(installed: dict[str, Path | str]) -> dict[str, object]:
    """The installed root booted once, with a card whose lezerprint.toml sets up everything."""
    if installed["arch"] != "amd64":
        pytest.skip("the boot is checked on amd64; arm64 checks the recipe under qemu")
    need("systemd-nspawn", "systemd-container")
    root, scratch = Path(installed["root"]), Path(installed["scratch"])
    card = scratch / "card"
    card.mkdir()
    (card / "cmdline.txt").write_text("console=serial0,115200 root=PARTUUID=1234-02 rootwait\n")
    (card / "lezerprint.toml").write_text(card_settings())
    # Test-only additions: the probe, a virtual printer, and a short watchdog so that the
    # blocked loop is caught in seconds rather than 20.
    (root / "etc/boot-probe.json").write_text(json.dumps({"username": ADMIN, "password": PASSWORD}))
    shutil.copy(PROJECT / "tests/boot/probe.py", root / "usr/local/bin/boot-probe.py")
    drop_in = root / "etc/systemd/system/lezerprintd.service.d"
    drop_in.mkdir(parents=True, exist_ok=True)
    (drop_in / "test.conf").write_text(
        "[Service]\nWatchdogSec=4\nEnvironment=LEZERPRINT_PRINTER_PORT=sim\n"
    )
    (root / "etc/systemd/system/boot-probe.service").write_text(
        "[Unit]\nDescription=LezerPrint boot test probe\n"
        "After=lezerprintd.service avahi-daemon.service\n"
        "[Service]\nType=oneshot\nExecStart=/usr/bin/python3 /usr/local/bin/boot-probe.py\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    run(["systemctl", "--quiet", f"--root={root}", "enable", "boot-probe.service"], 60)
    done = subprocess.run(
        ["unshare", "-m", "--", "sh", str(PROJECT / "tests/boot/boot.sh"), str(root), str(card)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    result = root / "var/lib/boot-probe/result.json"
    assert result.exists(), (
        f"the probe wrote nothing:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    found: dict[str, object] = json.loads(result.read_text())
    found["console"] = done.stdout[-5000:]
    found["card"] = card
    return found


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


def test_the_card_settings_were_applied_at_first_boot(booted: dict[str, object]) -> None:
    assert booted["firstboot"] == {"Result": "success", "ExecMainStatus": "0"}
    assert booted["hostname"] == "workshop"
    assert booted["wifi_mode"] == "0o600"  # NetworkManager ignores a readable one
    assert booted["sign_in"] == 200  # the admin from the card, with the password only they know
    assert booted["login_page"] is True  # and the web UI's pages came with the wheel
    assert booted["wrong_sign_in"] == 401
    card = booted["card"]
    assert isinstance(card, Path)
    assert not (card / "lezerprint.toml").exists()
    assert "administrator: alice" in (card / "lezerprint-report.txt").read_text()
    assert not (card / "lezerprint-setup-code.txt").exists()  # an admin exists
    for left in card.iterdir():
        text = left.read_text()
        assert WIFI_KEY not in text, left.name
        assert "$2b$" not in text, left.name


def test_nothing_listens_but_the_web_server_and_mdns(booted: dict[str, object]) -> None:
    assert booted["avahi"] == "active"
    listening = booted["listening"]
    assert isinstance(listening, list)
    tcp = {entry for entry in listening if entry.startswith("tcp:")}
    assert tcp == {"tcp:80 lezerprintd"}, listening
    # UDP: mDNS (avahi for the host name, the daemon for its services), and the ephemeral
    # ports avahi keeps for its own queries' answers; no other program.
    owners = {entry.split()[1] for entry in listening}
    assert owners == {"lezerprintd", "avahi-daemon"}, listening
    assert "udp:5353 avahi-daemon" in listening


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
