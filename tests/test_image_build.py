"""image-build/build.sh, where the real image cannot be built: it says what the machine lacks,
each with the package or step that fixes it, and builds nothing. (The stage it would run is
proven by tests/test_boot.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

BUILD = Path(__file__).resolve().parent.parent / "image-build" / "build.sh"


def test_a_machine_without_the_tools_is_told_what_to_install(tmp_path: Path) -> None:
    # Only a shell and the basic commands: every build tool is missing.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "id", "uname", "df", "tail", "dirname", "printf", "cat"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    done = subprocess.run(
        [str(bin_dir / "bash"), str(BUILD), "--check"],
        capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": str(bin_dir), "LEZERPRINT_IMAGE_WORK": str(tmp_path / "work")},
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0] == "build.sh: this machine cannot build the image yet; it needs:"
    for tool, package in [("debootstrap", "debootstrap"), ("qemu-aarch64-static",
                          "qemu-user-static"), ("git", "git"), ("kpartx", "kpartx")]:  # fmt: skip
        assert f"  - {tool}: apt-get install {package}" in lines
    assert any(line.startswith("  - pi-gen: no checkout") for line in lines)
    assert not (tmp_path / "work").exists()  # nothing was started
    if os.geteuid() != 0:
        assert any(line.startswith("  - root:") for line in lines)
