"""First boot of a flashed card: settings from `lezerprint.toml` on the boot partition.

A person who flashed the card has no terminal: what they can do is drop a small TOML file on
the boot partition (FAT, readable from any computer). This room applies it once, as root,
before the daemon starts (systemd/lezerprint-firstboot.service): hostname, Wi-Fi (as a
NetworkManager connection), time zone and the first administrator (a bcrypt hash, never a
password). It then removes the file, so the Wi-Fi key and the hash do not stay on a partition
anyone can read, and leaves a report in its place. Without an administrator it writes the
one-time setup code next to it, so the person can finish setup in the browser.

Rules: the whole file is checked before anything is changed, and a file with a mistake is
left in place, untouched, with a report naming the key. Once it is applied, or applying it
failed part way, it is overwritten and removed all the same. The account is made first (the
one step that can still be refused), by the daemon's own command as the daemon's user (root
must not own the database's files). Every path is taken under `root`, so tests run it on a
folder.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from lezerprintd.cli import EXIT_NO_SETUP_CODE
from lezerprintd.durable import sync_directory, write_atomically

log = logging.getLogger(__name__)

SETTINGS_FILE: Final = "lezerprint.toml"
REPORT_FILE: Final = "lezerprint-report.txt"
SETUP_CODE_FILE: Final = "lezerprint-setup-code.txt"
DONE_MARK: Final = "first-boot.done"
WIFI_CONNECTION: Final = "etc/NetworkManager/system-connections/lezerprint-wifi.nmconnection"

HOSTNAME: Final = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
USERNAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{2,49}")  # the daemon's, no leading -
COUNTRY: Final = re.compile(r"[A-Z]{2}")
PSK: Final = re.compile(r"[\x20-\x7e]{8,63}|[0-9A-Fa-f]{64}")
KNOWN: Final = {
    "": {"hostname", "timezone", "wifi", "admin"},
    "wifi": {"ssid", "password", "country", "hidden"},
    "admin": {"username", "password_hash", "email"},
}


class SettingsError(Exception):
    """A mistake in lezerprint.toml; the message names the key."""


@dataclass(frozen=True, slots=True)
class Wifi:
    ssid: str
    password: str | None
    country: str
    hidden: bool


@dataclass(frozen=True, slots=True)
class Admin:
    username: str
    password_hash: str
    email: str | None


@dataclass(frozen=True, slots=True)
class BootSettings:
    hostname: str | None
    timezone: str | None
    wifi: Wifi | None
    admin: Admin | None


@dataclass(frozen=True, slots=True)
class Places:
    """Where first boot reads and writes: the boot partition, the system root, the daemon's
    data directory and config, and which user runs the account commands (None: this one)."""

    boot: Path
    root: Path
    data_dir: Path
    config: Path | None
    account_user: str | None


def read_settings(path: Path, root: Path) -> BootSettings:
    """The checked settings in `path`. Raises SettingsError naming the key."""
    try:
        # utf-8-sig: Windows' Notepad may start the file with a byte-order mark.
        data = tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{path.name} is not valid TOML: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(f"cannot read {path.name}: {error}") from None
    _refuse_unknown(data, "")
    wifi = data.get("wifi")
    admin = data.get("admin")
    for name, table in (("wifi", wifi), ("admin", admin)):
        if table is not None:
            if not isinstance(table, dict):
                raise SettingsError(f"{name}: must be a table ([{name}])")
            _refuse_unknown(table, name)
    return BootSettings(
        hostname=_hostname(data),
        timezone=_timezone(data, root),
        wifi=None if wifi is None else _wifi(wifi),
        admin=None if admin is None else _admin(admin),
    )


def _refuse_unknown(table: dict[str, object], section: str) -> None:
    for key in table:
        if key not in KNOWN[section]:
            name = f"{section}.{key}" if section else key
            if section == "admin" and key == "password":
                raise SettingsError(
                    "admin.password: a password is never kept on the card; give "
                    "admin.password_hash, a bcrypt hash of it (see the README)"
                )
            raise SettingsError(f"{name}: unknown setting")


def _text(table: dict[str, object], key: str, name: str) -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise SettingsError(f"{name}: must be text in quotes")
    return value


def _hostname(data: dict[str, object]) -> str | None:
    name = _text(data, "hostname", "hostname")
    if name is not None and not HOSTNAME.fullmatch(name.lower()):
        raise SettingsError(
            "hostname: 1-63 letters, digits and '-', not starting or ending with '-'"
        )
    return None if name is None else name.lower()


def _timezone(data: dict[str, object], root: Path) -> str | None:
    zone = _text(data, "timezone", "timezone")
    if zone is None:
        return None
    zone_file = root / "usr/share/zoneinfo" / zone
    if ".." in zone.split("/") or zone.startswith("/") or not zone_file.is_file():
        raise SettingsError(f"timezone: unknown time zone {zone!r} (like 'Europe/Amsterdam')")
    return zone


def _wifi(table: dict[str, object]) -> Wifi:
    ssid = _text(table, "ssid", "wifi.ssid")
    if not ssid or len(ssid.encode("utf-8")) > 32 or any(ord(c) < 0x20 for c in ssid):
        raise SettingsError("wifi.ssid: the network's name, 1-32 bytes, is required")
    password = _text(table, "password", "wifi.password")
    if password is not None and not PSK.fullmatch(password):
        raise SettingsError("wifi.password: 8-63 plain characters (or 64 hex digits)")
    country = _text(table, "country", "wifi.country")
    if country is None or not COUNTRY.fullmatch(country.upper()):
        # A Pi keeps Wi-Fi blocked until its country is known (radio rules differ).
        raise SettingsError("wifi.country: the two-letter country code, like 'NL' or 'US'")
    hidden = table.get("hidden", False)
    if not isinstance(hidden, bool):
        raise SettingsError("wifi.hidden: must be true or false")
    return Wifi(ssid, password, country.upper(), hidden)


def _admin(table: dict[str, object]) -> Admin:
    from lezerprintd.auth.passwords import BCRYPT_HASH
    from lezerprintd.auth.service import EMAIL, EMAIL_MAX

    username = _text(table, "username", "admin.username")
    if username is None or not USERNAME.fullmatch(username):
        raise SettingsError("admin.username: 3-50 of a-z A-Z 0-9 _ - (not first) is required")
    email = _text(table, "email", "admin.email")
    if email is not None and (len(email) > EMAIL_MAX or not EMAIL.fullmatch(email)):
        raise SettingsError("admin.email: an email address, like 'alice@example.com'")
    password_hash = _text(table, "password_hash", "admin.password_hash")
    if password_hash is None or not BCRYPT_HASH.fullmatch(password_hash):
        raise SettingsError(
            "admin.password_hash: a bcrypt hash of cost 4-14 ($2b$12$ and 53 more "
            "characters) is required"
        )
    return Admin(username, password_hash, email)


# -- applying --------------------------------------------------------------------------------


def run(places: Places) -> int:
    """Apply the card's settings if there are any, and keep the setup code on the card while
    no administrator exists. 0 when done, 1 when something failed, 2 for a settings mistake
    (nothing applied; the report on the card says which key)."""
    settings_path = places.boot / SETTINGS_FILE
    status = 0
    if settings_path.exists():
        try:
            settings = read_settings(settings_path, places.root)
        except SettingsError as error:
            _write_report(places.boot, [f"NOT applied, nothing changed: {error}"])
            print(f"lezerprintd: {SETTINGS_FILE}: {error}", file=sys.stderr)
            return 2
        report: list[str] = []
        try:
            apply(settings, places, report)
        except Exception as error:  # whatever failed, the secrets leave the card below
            report.append(f"FAILED, the rest was not applied: {error}")
            status = 1
            log.exception("first boot: applying %s failed", SETTINGS_FILE)
        finally:
            # The Wi-Fi key and the hash must not stay on a partition anyone can read.
            _erase(settings_path)
        _write_report(places.boot, report)
    try:
        _keep_setup_code(places)
    except Exception as error:
        # No mark: the next boot tries again, so the person is not left without a code.
        log.exception("first boot: the setup code could not be kept on the card: %s", error)
        return 1
    mark = places.data_dir / DONE_MARK
    if not mark.exists():
        _write(mark, b"")
    return status


def apply(settings: BootSettings, places: Places, report: list[str]) -> None:
    """Apply checked settings, adding the report's lines (no secrets in them) as each step
    is done. The account first: it is the one step that can still be refused (a name taken)."""
    if settings.admin is not None:
        email = [f"--email={settings.admin.email}"] if settings.admin.email else []
        _account_command(
            places,
            ["add", "--role", "admin", "--password-hash-stdin", *email, "--",
             settings.admin.username],
            stdin=settings.admin.password_hash + "\n",
        )  # fmt: skip
        report.append(f"administrator: {settings.admin.username}")
    if settings.hostname is not None:
        _set_hostname(places.root, settings.hostname)
        report.append(f"hostname: {settings.hostname} (http://{settings.hostname}.local)")
    if settings.timezone is not None:
        _set_timezone(places.root, settings.timezone)
        report.append(f"timezone: {settings.timezone}")
    if settings.wifi is not None:
        _set_wifi(places, settings.wifi)
        report.append(f"wifi: {settings.wifi.ssid} (country {settings.wifi.country})")


def _erase(path: Path) -> None:
    """Overwrite `path` and remove it: on FAT a plain unlink leaves the bytes in free
    clusters, where anyone imaging the card finds them."""
    try:
        size = path.stat().st_size
        with path.open("r+b") as file:
            file.write(b"\0" * size)
            file.flush()
            os.fsync(file.fileno())
    except OSError:
        log.warning("could not overwrite %s before removing it", path, exc_info=True)
    path.unlink(missing_ok=True)
    sync_directory(path.parent)


def _set_hostname(root: Path, name: str) -> None:
    _write(root / "etc/hostname", f"{name}\n".encode("ascii"))
    hosts_path = root / "etc/hosts"
    lines = hosts_path.read_text().splitlines() if hosts_path.exists() else []
    lines = [line for line in lines if not line.startswith("127.0.1.1")]
    lines.append(f"127.0.1.1\t{name}")
    _write(hosts_path, ("\n".join(lines) + "\n").encode("utf-8"))
    if root == Path("/"):
        try:
            import socket

            socket.sethostname(name)  # now, for avahi; /etc/hostname keeps it
        except OSError as error:
            print(f"lezerprintd: first boot: hostname applies at next boot: {error}")


def _set_timezone(root: Path, zone: str) -> None:
    localtime = root / "etc/localtime"
    temporary = localtime.with_name("localtime.new")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(Path("/usr/share/zoneinfo") / zone)
    temporary.replace(localtime)
    _write(root / "etc/timezone", f"{zone}\n".encode("ascii"))


def _set_wifi(places: Places, wifi: Wifi) -> None:
    lines = [
        "[connection]",
        "id=lezerprint-wifi",
        f"uuid={uuid.uuid4()}",
        "type=wifi",
        "autoconnect=true",
        "",
        "[wifi]",
        "mode=infrastructure",
        # As bytes ("75;105;...;"): NetworkManager reads some plain names (digits and ';')
        # as byte lists, so the one form that cannot be misread.
        "ssid=" + "".join(f"{byte};" for byte in wifi.ssid.encode("utf-8")),
    ]
    if wifi.hidden:
        lines.append("hidden=true")
    if wifi.password is not None:
        lines += ["", "[wifi-security]", "key-mgmt=wpa-psk", f"psk={_keyfile_value(wifi.password)}"]
    lines += ["", "[ipv4]", "method=auto", "", "[ipv6]", "method=auto", ""]
    connection = places.root / WIFI_CONNECTION
    connection.parent.mkdir(parents=True, exist_ok=True)
    # NetworkManager ignores a connection file that others can read; it holds the key.
    _write(connection, "\n".join(lines).encode("utf-8"), mode=0o600)
    _set_country(places, wifi.country)


def _keyfile_value(text: str) -> str:
    """`text` as a NetworkManager keyfile (GKeyFile) string value."""
    escaped = text.replace("\\", "\\\\")
    if escaped.startswith(" "):
        escaped = "\\s" + escaped[1:]
    return escaped


def _set_country(places: Places, country: str) -> None:
    """The Wi-Fi regulatory country: Raspberry Pi OS keeps Wi-Fi blocked until one is set."""
    cmdline = places.boot / "cmdline.txt"
    if cmdline.exists():
        words = [
            word
            for word in cmdline.read_text().split()
            if not word.startswith("cfg80211.ieee80211_regdom=")
        ]
        words.append(f"cfg80211.ieee80211_regdom={country}")
        _write_on_card(cmdline, (" ".join(words) + "\n").encode("ascii"))
    # Unblocked now and at every boot (systemd-rfkill restores the saved state).
    rfkill = places.root / "var/lib/systemd/rfkill"
    for state in rfkill.glob("*:wlan") if rfkill.is_dir() else ():
        _write(state, b"0\n")
    if places.root == Path("/"):  # and now, for this boot
        for command in (["iw", "reg", "set", country], ["rfkill", "unblock", "wifi"]):
            if shutil.which(command[0]):
                subprocess.run(command, capture_output=True, timeout=30, check=False)


def _keep_setup_code(places: Places) -> None:
    """While no administrator exists, the setup code on the card; after, no stale copy."""
    on_card = places.boot / SETUP_CODE_FILE
    code = _account_command(places, ["setup-code"], none_when=EXIT_NO_SETUP_CODE)
    if code is None:
        if on_card.exists():
            on_card.unlink()
            sync_directory(places.boot)
        return
    _write_on_card(
        on_card,
        (
            f"LezerPrint setup code: {code}\n\n"
            "Open http://<hostname>.local (http://printer.local unless you chose another name)\n"
            "and create the first administrator with this code. It works once; this file is\n"
            "removed at the next start after an administrator exists.\n"
        ).encode("ascii"),
    )


class AccountError(Exception):
    """The account command refused or failed; its one-line message."""


def _account_command(
    places: Places, arguments: list[str], stdin: str = "", none_when: int | None = None
) -> str | None:
    """`lezerprintd user ARGUMENTS` as the daemon's user; its output, or None when it exits
    with `none_when`. Raises AccountError with its message on any other failure."""
    command = [sys.executable, "-m", "lezerprintd", "user", arguments[0]]
    command += ["--data-dir", str(places.data_dir)]
    if places.config is not None:
        command += ["--config", str(places.config)]
    command += arguments[1:]
    user = places.account_user
    account = None if user is None else pwd.getpwnam(user)
    if account is not None:
        places.data_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        os.chown(places.data_dir, account.pw_uid, account.pw_gid)
    done = subprocess.run(
        command,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        user=user,
        group=None if account is None else account.pw_gid,
        extra_groups=None if account is None else [],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        cwd="/",
    )
    if none_when is not None and done.returncode == none_when:
        return None
    if done.returncode != 0:
        message = done.stderr.strip().splitlines()
        raise AccountError(message[-1] if message else f"exit status {done.returncode}")
    return done.stdout.strip()


def _write_report(boot: Path, lines: list[str]) -> None:
    text = "LezerPrint first boot: what lezerprint.toml set\n\n" + "\n".join(lines) + "\n"
    _write_on_card(boot / REPORT_FILE, text.encode("utf-8"))


def _write(target: Path, data: bytes, mode: int = 0o644) -> None:
    temporary = target.with_name(f".{target.name}.new")
    temporary.unlink(missing_ok=True)  # left by a power cut
    write_atomically(target, data, mode=mode, temporary=temporary)


def _write_on_card(target: Path, data: bytes) -> None:
    temporary = target.with_name(f"{target.name}.new")  # FAT: no leading-dot names wanted
    temporary.unlink(missing_ok=True)
    write_atomically(target, data, mode=0o644, temporary=temporary, exact_mode=False)
