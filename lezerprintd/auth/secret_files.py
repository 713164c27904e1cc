"""The auth room's files under the data dir (the JWT secret, the setup code): owner-only.

Rule: such a file is never readable by another user, not even for a moment. It is written
under a temporary name created with mode 0600, synced and renamed into place; one found with
looser permissions is tightened to 0600 (and the fact logged) or, when that is not possible,
refused.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import stat
from pathlib import Path

from lezerprintd.durable import sync_directory, write_atomically
from lezerprintd.errors import LezerError

log = logging.getLogger(__name__)

MODE = 0o600


class SecretFileError(LezerError):
    """A secret file cannot be read, written or trusted; start-up stops."""


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` with `data`, atomically, with mode 0600."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        write_atomically(path, data, mode=MODE, temporary=temporary)
    except OSError as error:
        raise SecretFileError(f"cannot write {path}: {error.strerror or error}") from error


def read_private(path: Path) -> bytes | None:
    """The contents of `path`, or None when it does not exist. A file that others may read
    is tightened to 0600 first; one that cannot be tightened (or is a symlink) is refused."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise SecretFileError(f"{path} is a symbolic link; refusing to use it") from error
        raise SecretFileError(f"cannot read {path}: {error.strerror or error}") from error
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise SecretFileError(f"{path} is not a regular file; refusing to use it")
        loose = stat.S_IMODE(status.st_mode) & 0o077
        if loose:
            try:
                os.fchmod(descriptor, MODE)
            except OSError as error:
                raise SecretFileError(
                    f"{path} is readable by other users (mode "
                    f"{stat.S_IMODE(status.st_mode):04o}) and cannot be tightened: "
                    f"run 'chmod 600 {path}' as its owner"
                ) from error
            log.warning(
                "%s was readable by other users (mode %04o); tightened to 0600",
                path,
                stat.S_IMODE(status.st_mode),
            )
        chunks = []
        while chunk := os.read(descriptor, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as error:
        raise SecretFileError(f"cannot read {path}: {error.strerror or error}") from error
    finally:
        os.close(descriptor)


def remove(path: Path) -> bool:
    """Delete `path`; whether it was there."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    sync_directory(path.parent)
    return True
