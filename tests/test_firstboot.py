"""First boot of a flashed card, as `lezerprintd first-boot` runs it: a real boot folder with
a lezerprint.toml, a system root in a folder, a real data dir; the accounts it makes are then
used through the daemon's own HTTP routes. tests/test_boot.py runs the same command inside a
booted container, as root, through its systemd unit."""

from __future__ import annotations

import configparser
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import bcrypt
import pytest

from lezerprintd.auth.service import Auth
from lezerprintd.bus import Bus
from lezerprintd.store import Store
from tests.conftest import clean_environment
from tests.test_accounts_api import FAST, PASSWORD, Served, build

WIFI_KEY = "kitchen-wifi-key-42"
ADMIN_HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(FAST)).decode()
CMDLINE = "console=serial0,115200 root=PARTUUID=1234-02 rootwait quiet\n"
SETTINGS = f"""
hostname = "Workshop"
timezone = "Europe/Amsterdam"

[wifi]
ssid = "Kitchen WiFi"
password = "{WIFI_KEY}"
country = "nl"

[admin]
username = "alice"
password_hash = "{ADMIN_HASH}"
"""


def card(tmp_path: Path, settings: str | None = SETTINGS) -> tuple[Path, Path, Path]:
    """A boot partition, a system root and a data dir, as a fresh card has them."""
    boot, root, data = tmp_path / "boot", tmp_path / "root", tmp_path / "data"
    boot.mkdir()
    (boot / "cmdline.txt").write_text(CMDLINE)
    if settings is not None:
        (boot / "lezerprint.toml").write_text(settings)
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("printer\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tprinter\n")
    zone = root / "usr/share/zoneinfo/Europe/Amsterdam"
    zone.parent.mkdir(parents=True)
    zone.write_bytes(b"TZif2")
    rfkill = root / "var/lib/systemd/rfkill"
    rfkill.mkdir(parents=True)
    (rfkill / "platform-3f300000.mmcnr:wlan").write_text("1\n")
    return boot, root, data


def first_boot(boot: Path, root: Path, data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lezerprintd", "first-boot", "--boot-dir", str(boot),
         "--root", str(root), "--data-dir", str(data), "--account-user", ""],
        capture_output=True, text=True, env=clean_environment(), timeout=120, check=False,
    )  # fmt: skip


def test_the_card_settings_are_applied_and_the_secrets_leave_the_card(tmp_path: Path) -> None:
    boot, root, data = card(tmp_path)
    done = first_boot(boot, root, data)
    assert done.returncode == 0, done.stderr

    assert (root / "etc/hostname").read_text() == "workshop\n"
    hosts = (root / "etc/hosts").read_text().splitlines()
    assert hosts == ["127.0.0.1\tlocalhost", "127.0.1.1\tworkshop"]
    assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/Europe/Amsterdam"
    assert (root / "etc/timezone").read_text() == "Europe/Amsterdam\n"

    connection = root / "etc/NetworkManager/system-connections/lezerprint-wifi.nmconnection"
    assert stat.S_IMODE(connection.stat().st_mode) == 0o600  # NetworkManager insists
    keyfile = configparser.ConfigParser(interpolation=None)
    keyfile.read_string(connection.read_text())
    assert keyfile["connection"]["type"] == "wifi"
    ssid = keyfile["wifi"]["ssid"]  # as bytes, the one form NetworkManager cannot misread
    assert bytes(int(byte) for byte in ssid.split(";") if byte).decode() == "Kitchen WiFi"
    assert keyfile["wifi-security"]["key-mgmt"] == "wpa-psk"
    assert keyfile["wifi-security"]["psk"] == WIFI_KEY
    assert (boot / "cmdline.txt").read_text() == CMDLINE.strip() + (
        " cfg80211.ieee80211_regdom=NL\n"
    )
    assert (root / "var/lib/systemd/rfkill/platform-3f300000.mmcnr:wlan").read_text() == "0\n"

    assert not (boot / "lezerprint.toml").exists()
    report = (boot / "lezerprint-report.txt").read_text()
    for line in ("hostname: workshop", "timezone: Europe/Amsterdam", "wifi: Kitchen WiFi",
                 "administrator: alice"):  # fmt: skip
        assert line in report
    for left in boot.iterdir():  # no secret stays on a partition anyone can read
        text = left.read_text()
        assert WIFI_KEY not in text
        assert ADMIN_HASH not in text
        assert "$2b$" not in text
    assert not (boot / "lezerprint-setup-code.txt").exists()  # an admin exists
    assert (data / "first-boot.done").exists()


@pytest.fixture
async def card_daemon(aiohttp_client: object, tmp_path: Path) -> AsyncIterator[Served]:
    """The card after first boot, then the daemon's auth routes over its data dir."""
    boot, root, data = card(tmp_path)
    assert first_boot(boot, root, data).returncode == 0
    store = await Store.open(data / "lezerprint.db")
    auth = Auth(store, data, Bus(), bcrypt_cost=FAST)
    await auth.start()
    try:
        client = await aiohttp_client(build(auth))  # type: ignore[operator]
        yield Served(client, auth, store, Bus(), data)
    finally:
        await store.close()


def stored_hash(data: Path, username: str) -> str:
    with sqlite3.connect(data / "lezerprint.db") as db:
        (found,) = db.execute("SELECT password_hash FROM users WHERE username = ?", (username,))
    return str(found[0])


async def test_the_admin_from_the_card_signs_in_and_gets_our_hash(card_daemon: Served) -> None:
    assert stored_hash(card_daemon.data_dir, "alice").startswith("imported:$2b$")
    await card_daemon.call(
        "POST", "/api/auth/login", 401, json={"username": "alice", "password": "not it at all"}
    )
    await card_daemon.login("alice")
    upgraded = stored_hash(card_daemon.data_dir, "alice")
    assert not upgraded.startswith("imported:")
    assert upgraded != ADMIN_HASH
    await card_daemon.login("alice")  # the same password, now checked our way
    state = await card_daemon.call("GET", "/api/auth/setup", 200)
    assert state["data"] == {"setupRequired": False}


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ('hostnme = "workshop"', "hostnme: unknown setting"),
        ('hostname = "my_printer!"', "hostname: 1-63 letters"),
        ('timezone = "../../../etc/passwd"', "timezone: unknown time zone"),
        ('[wifi]\nssid = "Home"\npassword = "short"', "wifi.password: 8-63"),
        ('[wifi]\npassword = "long enough key"', "wifi.ssid:"),
        ('[admin]\nusername = "alice"\npassword = "hunter22"', "admin.password: a password"),
        ('[admin]\nusername = "alice"\npassword_hash = "plain"', "admin.password_hash:"),
        ('wifi = "Home"', "wifi: must be a table"),
        ('hostname = "unclosed', "lezerprint.toml is not valid TOML"),
        ('[wifi]\nssid = "Home"\npassword = "long enough key"', "wifi.country: the two-letter"),
        (f'[admin]\nusername = "--help"\npassword_hash = "{ADMIN_HASH}"', "admin.username:"),
        (
            f'[admin]\nusername = "alice"\nemail = "-x"\npassword_hash = "{ADMIN_HASH}"',
            "admin.email:",
        ),
        (
            '[admin]\nusername = "alice"\npassword_hash = "$2b$31$' + "a" * 53 + '"',
            "admin.password_hash: a bcrypt hash of cost 4-14",
        ),
    ],
)
def test_a_mistake_changes_nothing_and_the_report_names_the_key(
    tmp_path: Path, settings: str, named: str
) -> None:
    boot, root, data = card(tmp_path, settings + "\n")
    done = first_boot(boot, root, data)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert named in done.stderr
    assert (boot / "lezerprint.toml").read_text() == settings + "\n"  # left for a fix
    assert named in (boot / "lezerprint-report.txt").read_text()
    assert (root / "etc/hostname").read_text() == "printer\n"
    assert not (data / "lezerprint.db").exists()


async def test_without_an_admin_the_setup_code_on_the_card_works(
    aiohttp_client: object, tmp_path: Path
) -> None:
    boot, root, data = card(tmp_path, settings=None)
    assert first_boot(boot, root, data).returncode == 0
    note = (boot / "lezerprint-setup-code.txt").read_text()
    code = note.split("setup code: ", 1)[1].split()[0]
    assert (root / "etc/hostname").read_text() == "printer\n"  # nothing else was asked

    store = await Store.open(data / "lezerprint.db")
    auth = Auth(store, data, Bus(), bcrypt_cost=FAST)
    await auth.start()  # a restart keeps the code the person read off the card
    try:
        client = await aiohttp_client(build(auth))  # type: ignore[operator]
        served = Served(client, auth, store, Bus(), data)
        body = {"code": code, "username": "owner", "password": PASSWORD}
        await served.call("POST", "/api/auth/setup", 201, json=body)
    finally:
        await store.close()

    assert first_boot(boot, root, data).returncode == 0
    assert not (boot / "lezerprint-setup-code.txt").exists()  # no stale code stays


def test_a_refused_account_applies_nothing_else_and_still_clears_the_card(
    tmp_path: Path,
) -> None:
    boot, root, data = card(tmp_path)
    taken = subprocess.run(
        [sys.executable, "-m", "lezerprintd", "user", "add", "alice", "--role", "viewer",
         "--password-stdin", "--data-dir", str(data)],
        input=PASSWORD + "\n", capture_output=True, text=True, env=clean_environment(),
        timeout=60, check=False,
    )  # fmt: skip
    assert taken.returncode == 0, taken.stderr
    done = first_boot(boot, root, data)
    assert done.returncode == 1
    report = (boot / "lezerprint-report.txt").read_text()
    assert "FAILED, the rest was not applied" in report
    assert "alice" in report
    assert not (boot / "lezerprint.toml").exists()  # the secrets leave the card all the same
    assert (root / "etc/hostname").read_text() == "printer\n"
    assert not (root / "etc/NetworkManager").exists()
    # No administrator yet (alice is a viewer): the card carries the setup code.
    assert (boot / "lezerprint-setup-code.txt").exists()


def test_without_a_setup_code_the_first_boot_is_not_marked_done(tmp_path: Path) -> None:
    boot, root, data = card(tmp_path, settings=None)
    (data / "setup-code").mkdir(parents=True)  # the code cannot be written there
    done = first_boot(boot, root, data)
    assert done.returncode == 1
    assert "setup code" in done.stderr
    assert not (data / "first-boot.done").exists()  # so the next boot tries again
