"""The auth room without the daemon, for `lezerprintd user ...` on the appliance itself.

Rule: it works whether or not the daemon runs. Both open the same SQLite file (WAL, with a
busy timeout), so the command's writes simply queue behind the daemon's; and the daemon
checks accounts and sessions in the database on every request, so what the command changes
(a disabled account, a new password) applies there at once, without a message between them.
No signing secret is loaded: the command issues no tokens. `app.offline_accounts` builds
the room; this module holds the rule about who may run it.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from lezerprintd.errors import LezerError


def refuse_foreign_root(data_dir: Path) -> None:
    """root must not write into the daemon's data dir: SQLite's -wal and -shm files it made
    would belong to root, and the daemon (its own user) could no longer write the database."""
    if os.geteuid() != 0:
        return
    try:
        owner = data_dir.stat().st_uid
    except FileNotFoundError:
        return
    if owner == 0:
        return
    try:
        name = pwd.getpwuid(owner).pw_name
    except KeyError:
        name = str(owner)
    raise LezerError(
        f"{data_dir} belongs to the user {name}: run this command as that user "
        f"(sudo -u {name} lezerprintd user ...) so the database files stay theirs"
    )
