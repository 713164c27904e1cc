"""The udev rules as udev reads them: `udevadm verify` from systemd 254 or newer passes them,
and a broken copy proves the check can fail; and the rules name every board family the issue
lists, put the port in dialout and keep ModemManager off it.

Debian 12's udevadm (252) has no `verify`, so udev is fetched from bookworm-backports with a
private apt configuration and unpacked into the cache, never installed (a few seconds, once).
No USB device can be faked here, so what udev does with a real board is not tested."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CACHE, built_once, need

PROJECT = Path(__file__).resolve().parent.parent
RULES = PROJECT / "udev" / "60-lezerprint.rules"
BOARDS = PROJECT / "docs" / "boards.md"
BACKPORTS = CACHE / "udev-backports"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
SOURCE = f"deb [signed-by={KEYRING}] http://deb.debian.org/debian bookworm-backports main"
PACKAGES = ("udev", "systemd", "libsystemd-shared", "libsystemd0", "libudev1")
# vendor or vendor:product, as the issue lists them.
BOARD_IDS = (
    "2c99", "1a86", "0403", "10c4", "0483:5740", "1d50:6029", "1d50:614e", "1d50:6015",
    "2341:0042", "2341:0010", "27b1",
)  # fmt: skip
# Vendors whose ids other devices share: these must never match on the vendor alone.
SHARED_VENDORS = ("0483", "1d50", "2341")
PAIR = re.compile(r'([A-Z]+(?:\{[^}]*\})?)\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"')


def fetch(*command: str, cwd: Path | None = None) -> None:
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, (
        f"could not fetch {', '.join(PACKAGES)} from bookworm-backports (deb.debian.org):\n"
        f"{' '.join(command)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    )


def backports_udev() -> Path:
    """udev 254+ and the libraries it needs, unpacked under the cache the first time."""
    return built_once(BACKPORTS, _unpack_udev)


def _unpack_udev(partial: Path) -> None:
    apt_get = need("apt-get", "apt")
    dpkg = need("dpkg", "dpkg")
    assert KEYRING.exists(), f"{KEYRING} is missing: apt-get install debian-archive-keyring"
    apt, debs = partial / "apt", partial / "debs"
    for folder in (apt / "lists" / "partial", apt / "archives" / "partial", apt / "parts", debs):
        folder.mkdir(parents=True)
    (apt / "sources.list").write_text(SOURCE + "\n")
    (apt / "status").touch()
    # Only these files: the machine's sources, pins, package lists and dpkg state stay as
    # they are. The sandbox user _apt could not write into root's cache.
    private = [
        f"-oDir::Etc::SourceList={apt / 'sources.list'}",
        f"-oDir::Etc::SourceParts={apt / 'parts'}",
        f"-oDir::Etc::PreferencesParts={apt / 'parts'}",
        f"-oDir::State={apt}",
        f"-oDir::State::status={apt / 'status'}",
        f"-oDir::Cache={apt}",
        "-oAPT::Sandbox::User=root",
        "-oDebug::NoLocking=true",
    ]
    fetch(apt_get, "-q", *private, "update", "--error-on=any")
    wanted = [f"{package}/bookworm-backports" for package in PACKAGES]
    fetch(apt_get, "-q", *private, "download", *wanted, cwd=debs)
    for deb in sorted(debs.glob("*.deb")):
        fetch(dpkg, "-x", str(deb), str(partial / "root"))


@pytest.fixture(scope="module")
def udevadm() -> list[str]:
    """The command that runs the unpacked udevadm against its own libraries."""
    root = backports_udev() / "root"
    found = [path for path in (root / "usr" / "bin", root / "bin") if (path / "udevadm").exists()]
    assert found, f"no udevadm in {root}: the udev package's layout changed"
    # usr/lib/<multiarch triplet>/systemd, whatever this machine's triplet is.
    shared = sorted((root / "usr" / "lib").glob("*/systemd/libsystemd-shared-*.so"))
    assert shared, f"no libsystemd-shared in {root}"
    libraries = shared[0].parent
    return [
        "env",
        f"LD_LIBRARY_PATH={libraries.parent}:{libraries}",
        str(found[0] / "udevadm"),
    ]


def verify(udevadm: list[str], tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    copy = tmp_path / RULES.name
    copy.write_text(text)
    # Names are not resolved: the machine running the tests need not have every group.
    return subprocess.run(
        [*udevadm, "verify", "--resolve-names=never", str(copy)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def rules() -> list[list[tuple[str, str, str]]]:
    """Each rule of the file as its (key, operator, value) triples, in order."""
    text = RULES.read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            pairs = PAIR.findall(line)
            assert pairs, line
            found.append(pairs)
    return found


def test_verify_passes_the_rules(udevadm: list[str], tmp_path: Path) -> None:
    version = subprocess.run(
        [*udevadm, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert version.returncode == 0, f"the unpacked udevadm does not run: {version.stderr}"
    assert int(version.stdout.split()[0]) >= 254, version.stdout
    done = verify(udevadm, tmp_path, RULES.read_text())
    assert (done.returncode, done.stderr) == (0, ""), done.stderr


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (('GROUP="dialout"', 'GROUP=="dialout"'), "Invalid operator for GROUP"),
        (('ATTRS{idVendor}=="27b1"', 'ATTRS{idVendor}="27b1"'), "Invalid operator for ATTRS"),
        (('ENV{ID_MM_DEVICE_IGNORE}="1"', 'ENV{ID_MM_DEVICE_IGNORE}=+"1"'), "Invalid key/value"),
        (('LABEL="lezerprint_usb"', 'LABEL="lezerprint_ubs"'), "has no matching label"),
    ],
)
def test_verify_fails_a_broken_copy(
    udevadm: list[str], tmp_path: Path, change: tuple[str, str], complaint: str
) -> None:
    text = RULES.read_text()
    assert change[0] in text
    done = verify(udevadm, tmp_path, text.replace(*change))
    assert done.returncode != 0
    assert complaint in done.stderr, done.stderr


def test_every_listed_board_gets_a_model_name() -> None:
    covered: dict[str, str] = {}
    for rule in rules():
        keys = {key: value for key, operator, value in rule if operator == "=="}
        if "ATTRS{idVendor}" not in keys:
            continue
        vendor = keys["ATTRS{idVendor}"]
        model = {key: value for key, operator, value in rule if operator == "="}
        assert re.fullmatch(r"[a-z0-9-]+", model.get("ENV{LEZERPRINT_MODEL}", "")), rule
        if "ATTRS{idProduct}" not in keys:
            assert vendor not in SHARED_VENDORS, f"{vendor} needs a product id"
            covered[vendor] = model["ENV{LEZERPRINT_MODEL}"]
        for product in keys.get("ATTRS{idProduct}", "").split("|"):
            if product:
                covered[f"{vendor}:{product}"] = model["ENV{LEZERPRINT_MODEL}"]
    missing = [board for board in BOARD_IDS if board not in covered]
    assert not missing, f"no rule names {missing}"
    documented = BOARDS.read_text()
    undocumented = {model for model in covered.values() if f"`{model}`" not in documented}
    assert not undocumented, f"add {sorted(undocumented)} to docs/boards.md"


def test_matched_ports_get_names_group_and_no_modem_probes() -> None:
    found = rules()
    flat = [(index, pair) for index, rule in enumerate(found) for pair in rule]

    def where(pair: tuple[str, str, str]) -> int:
        places = [index for index, seen in flat if seen == pair]
        assert places, f"no {pair[0]}{pair[1]}{pair[2]!r} in {RULES.name}"
        return places[0]

    # Everything below the guard applies to the listed boards only.
    guard = where(("ENV{LEZERPRINT_MODEL}", "==", ""))
    assert found[guard] == [("ENV{LEZERPRINT_MODEL}", "==", ""), ("GOTO", "=", "lezerprint_end")]
    assert where(("IMPORT{builtin}", "=", "usb_id")) < guard
    assert where(("IMPORT{builtin}", "=", "path_id")) < guard
    for pair in [
        ("GROUP", "=", "dialout"),
        ("MODE", "=", "0660"),
        ("ENV{ID_MM_DEVICE_IGNORE}", "=", "1"),
        ("TAG", "+=", "systemd"),
        ("SYMLINK", "+=", "lezerprint/$env{LEZERPRINT_MODEL}-$env{LEZERPRINT_SERIAL}"),
        ("SYMLINK", "+=", "lezerprint/printer"),
        ("ENV{LEZERPRINT_SERIAL}", "=", "$env{ID_SERIAL_SHORT}"),
    ]:
        assert where(pair) > guard, pair
    # A board without a USB serial number is named by the port it is plugged into.
    fallback = where(("ENV{LEZERPRINT_SERIAL}", "=", "$env{ID_PATH_TAG}"))
    assert ("ENV{ID_SERIAL_SHORT}", "==", "") in found[fallback]
    assert fallback > where(("ENV{LEZERPRINT_SERIAL}", "=", "$env{ID_SERIAL_SHORT}"))
    # udev reads rules files in name order: ModemManager's 77-mm-*.rules must come after.
    assert RULES.name < "77-mm-"
