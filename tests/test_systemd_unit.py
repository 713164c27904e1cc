"""The systemd unit as systemd reads it: `systemd-analyze verify` has nothing to say about it
(it exits 0 even on unknown keys, so its output is what is checked, and a broken copy proves
the check can fail), and `systemd-analyze security` scores it 4.0 or better."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "lezerprintd.service"
INSTALLED_AT = "/opt/lezerprint/venv/bin/lezerprintd"


def analyze(tmp_path: Path, *arguments: str, text: str | None = None) -> str:
    """systemd-analyze on a copy of the unit whose ExecStart names this checkout's daemon
    (verify fails when the binary is missing, and /opt/lezerprint exists only on a Pi)."""
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing: install Debian's systemd package (./dev.sh does)"
    daemon = Path(sys.executable).with_name("lezerprintd")
    assert daemon.exists(), f"{daemon} is missing: the project is not installed in this venv"
    copy = tmp_path / UNIT.name
    copy.write_text((text or UNIT.read_text()).replace(INSTALLED_AT, str(daemon)))
    done = subprocess.run(
        [tool, *arguments, str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    return (done.stdout + done.stderr).strip()


def test_verify_has_nothing_to_say(tmp_path: Path) -> None:
    assert analyze(tmp_path, "verify") == ""


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (("ProtectSystem=strict", "ProtectSytem=strict"), "Unknown key 'ProtectSytem'"),
        (("WatchdogSec=20", "WatchdogSec=twenty"), "Failed to parse sec value"),
    ],
)
def test_a_broken_unit_fails_the_same_check(
    tmp_path: Path, change: tuple[str, str], complaint: str
) -> None:
    broken = UNIT.read_text().replace(*change)
    assert complaint in analyze(tmp_path, "verify", text=broken)


def test_the_unit_is_hardened(tmp_path: Path) -> None:
    report = analyze(tmp_path, "security", "--offline=yes")
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", report)
    assert found, report[-500:]
    assert float(found[1]) <= 4.0, report


def test_the_unit_says_what_the_appliance_needs() -> None:
    text = UNIT.read_text()
    for line in [
        "Type=notify", "NotifyAccess=main", "Restart=on-failure", "User=lezerprint",
        "SupplementaryGroups=dialout video gpio", "StateDirectory=lezerprint",
        "ConfigurationDirectory=lezerprint", "DevicePolicy=closed",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
    ]:  # fmt: skip
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    # It would hide a printer plugged in after start.
    assert not re.search(r"^PrivateDevices=", text, re.M)
    assert re.search(r"^WatchdogSec=\d+$", text, re.M)
