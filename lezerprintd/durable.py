"""Writing files so that a power cut leaves the old version or the new one, whole.

Rule: new content goes to a temporary file beside its target, is fsynced, renamed over the
target, and the folder is synced so the rename itself is on disk. Blocking: call from a worker
thread (or at start-up).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomically(
    target: Path, data: bytes, *, mode: int, temporary: Path, exact_mode: bool = True
) -> None:
    """Replace `target` with `data` (file mode `mode`), through `temporary`; on failure the
    temporary is removed and the OSError raised. `exact_mode=False` leaves the mode to the
    umask: a FAT partition (a Pi's boot partition) refuses chmod."""
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            if exact_mode:
                os.fchmod(descriptor, mode)  # whatever the umask left
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        move_into_place(temporary, target)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def move_into_place(source: Path, target: Path) -> None:
    """Rename a complete, fsynced `source` over `target`, durably."""
    os.replace(source, target)
    sync_directory(target.parent)


def sync_directory(directory: Path) -> None:
    # The rename (or unlink) itself must survive a power cut, not only the file's bytes.
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
