"""`lezerprintd user ...` as a person runs it on the appliance: real processes on a real data
dir, with the daemon not running, and while another process holds the database open.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lezerprintd.auth.permissions import Role
from lezerprintd.auth.service import Auth, read_setup_code
from lezerprintd.bus import Bus
from lezerprintd.store import Store
from tests.conftest import clean_environment
from tests.test_accounts_api import FAST, PASSWORD, Served, build

DATABASE = "lezerprint.db"


def user(
    data_dir: Path, *args: str, password: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`lezerprintd user ARGS --data-dir DATA_DIR`, with `password` on stdin."""
    return subprocess.run(
        [sys.executable, "-m", "lezerprintd", "user", *args, "--data-dir", str(data_dir)],
        input=None if password is None else password + "\n",
        capture_output=True,
        text=True,
        env=clean_environment(),
        timeout=60,
        check=False,
    )


async def user_async(data_dir: Path, *args: str, password: str | None = None) -> tuple[int, str]:
    """The same, without blocking the event loop that serves the test's app."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lezerprintd",
        "user",
        *args,
        "--data-dir",
        str(data_dir),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_environment(),
    )
    given = None if password is None else (password + "\n").encode()
    out, err = await asyncio.wait_for(process.communicate(given), 60)
    assert process.returncode is not None
    return process.returncode, (out + err).decode()


def test_user_commands_explain_themselves() -> None:
    for command in ([], ["add"], ["list"], ["passwd"], ["disable"], ["enable"]):
        result = subprocess.run(
            [sys.executable, "-m", "lezerprintd", "user", *command, "--help"],
            capture_output=True,
            text=True,
            env=clean_environment(),
            timeout=60,
            check=False,
        )
        assert result.returncode == 0
        assert result.stdout.startswith("usage: lezerprintd user")


def test_accounts_are_managed_with_the_daemon_not_running(tmp_path: Path) -> None:
    added = user(tmp_path, "add", "owner", "--role", "admin", "--password-stdin", password=PASSWORD)
    assert added.returncode == 0, added.stderr
    assert added.stdout == "added owner (ADMIN)\n"
    assert PASSWORD not in added.stdout + added.stderr
    added = user(
        tmp_path, "add", "ann", "--role", "viewer", "--email", "Ann@Example.org",
        "--password-stdin", password="another long one",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr

    listed = user(tmp_path, "list")
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "STATE", "LAST", "SIGN-IN", "EMAIL"]
    assert lines[1].split() == ["owner", "ADMIN", "active", "never"]
    assert lines[2].split() == ["ann", "VIEWER", "active", "never", "ann@example.org"]

    passwd = user(tmp_path, "passwd", "ANN", "--password-stdin", password="changed by root")
    assert passwd.returncode == 0, passwd.stderr
    disabled = user(tmp_path, "disable", "ann")
    assert disabled.returncode == 0, disabled.stderr
    assert "disabled ann" in disabled.stdout
    assert "disabled" in user(tmp_path, "list").stdout.splitlines()[2]
    assert user(tmp_path, "enable", "ann").returncode == 0

    with sqlite3.connect(tmp_path / DATABASE) as database:
        kinds = [
            row[0] for row in database.execute("SELECT event_type FROM system_events ORDER BY id")
        ]
        assert kinds == [
            "USER_CREATED",
            "USER_CREATED",
            "PASSWORD_RESET",
            "USER_DEACTIVATED",
            "USER_ACTIVATED",
        ]
        hashes = [row[0] for row in database.execute("SELECT password_hash FROM users")]
        assert all(h.startswith("$2b$12$") for h in hashes)  # the CLI hashes at cost 12
    database.close()


@pytest.mark.parametrize(
    ("args", "password", "message"),
    [
        (["add", "owner", "--role", "viewer"], "long enough pw", "the username 'owner' is taken"),
        (["add", "OWNER", "--role", "viewer"], "long enough pw", "the username 'OWNER' is taken"),
        (["add", "ann", "--role", "viewer"], "short", "at least 8 characters"),
        (["add", "a b", "--role", "viewer"], "long enough pw", "username must be 3 to 50"),
        (["add", "ann", "--role", "viewer", "--email", "nope"], "long enough pw", "email must"),
        (["passwd", "nobody"], "long enough pw", "no user is named 'nobody'"),
        (["passwd", "owner"], "", "at least 8 characters"),
        (["disable", "nobody"], None, "no user is named 'nobody'"),
        (["disable", "owner"], None, "owner is the last active administrator"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, args: list[str], password: str | None, message: str
) -> None:
    made = user(tmp_path, "add", "owner", "--role", "admin", "--password-stdin", password=PASSWORD)
    assert made.returncode == 0, made.stderr
    if password is not None:
        args = [*args, "--password-stdin"]
    result = user(tmp_path, *args, password=password)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("lezerprintd: ")
    assert message in result.stderr


def test_the_password_never_comes_from_the_command_line(tmp_path: Path) -> None:
    result = user(tmp_path, "add", "owner", "--role", "admin", password=PASSWORD)
    assert result.returncode == 2
    assert "--password-stdin" in result.stderr
    assert not (tmp_path / DATABASE).exists()


# -- beside a running daemon ---------------------------------------------------------------------


@pytest.fixture
async def daemon(aiohttp_client: object, tmp_path: Path) -> AsyncIterator[Served]:
    """The auth room serving HTTP from this process, over the data dir the CLI is given."""
    store = await Store.open(tmp_path / DATABASE)
    bus = Bus()
    auth = Auth(store, tmp_path, bus, bcrypt_cost=FAST)
    await auth.start()
    try:
        client = await aiohttp_client(build(auth))  # type: ignore[operator]
        yield Served(client, auth, store, bus, tmp_path)
    finally:
        await store.close()


async def test_the_first_admin_from_the_cli_ends_the_web_setup(daemon: Served) -> None:
    code = read_setup_code(daemon.data_dir / "setup-code")
    assert code is not None
    status, output = await user_async(
        daemon.data_dir, "add", "owner", "--role", "admin", "--password-stdin", password=PASSWORD
    )
    assert status == 0, output
    assert not (daemon.data_dir / "setup-code").exists()
    state = await daemon.call("GET", "/api/auth/setup", 200)
    assert state["data"] == {"setupRequired": False}
    body = {"code": code, "username": "intruder", "password": PASSWORD}
    await daemon.call("POST", "/api/auth/setup", 409, json=body)
    await daemon.login("owner")  # the daemon sees the account the CLI made


async def test_cli_changes_apply_to_the_running_daemon_at_once(daemon: Served) -> None:
    await daemon.user("root", Role.ADMIN)
    await daemon.user("ann", Role.OPERATOR)
    tokens = await daemon.login("ann")
    token = tokens["accessToken"]
    key = (
        await daemon.call("POST", "/api/auth/api-keys", 201, token=token, json={"name": "slicer"})
    )["data"]["key"]
    await daemon.call("GET", "/api/auth/profile", 200, token=token)

    status, output = await user_async(daemon.data_dir, "disable", "ann")
    assert status == 0, output
    await daemon.call("GET", "/api/auth/profile", 401, token=token)
    await daemon.call("GET", "/api/auth/profile", 401, headers={"X-Api-Key": key})
    await daemon.call(
        "POST", "/api/auth/refresh", 401, json={"refreshToken": tokens["refreshToken"]}
    )

    status, output = await user_async(daemon.data_dir, "enable", "ann")
    assert status == 0, output
    token = (await daemon.login("ann"))["accessToken"]
    status, output = await user_async(
        daemon.data_dir, "passwd", "ann", "--password-stdin", password="set on the console"
    )
    assert status == 0, output
    await daemon.call("GET", "/api/auth/profile", 401, token=token)
    await daemon.login("ann", "set on the console")


def test_the_cli_writes_beside_a_reader_and_queues_behind_a_writer(tmp_path: Path) -> None:
    made = user(tmp_path, "add", "owner", "--role", "admin", "--password-stdin", password=PASSWORD)
    assert made.returncode == 0, made.stderr
    other = sqlite3.connect(tmp_path / DATABASE, isolation_level=None)
    try:
        # A reader in the middle of a transaction (WAL): writers go on beside it.
        other.execute("BEGIN")
        assert other.execute("SELECT COUNT(*) FROM users").fetchone() == (1,)
        added = user(
            tmp_path, "add", "ann", "--role", "viewer", "--password-stdin", password=PASSWORD
        )
        assert added.returncode == 0, added.stderr
        assert other.execute("SELECT COUNT(*) FROM users").fetchone() == (1,)  # its snapshot
        other.execute("COMMIT")
        assert other.execute("SELECT COUNT(*) FROM users").fetchone() == (2,)

        # A writer holding the lock: the command waits (busy timeout) and then succeeds.
        other.execute("BEGIN IMMEDIATE")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lezerprintd",
                "user",
                "disable",
                "ann",
                "--data-dir",
                str(tmp_path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_environment(),
        )
        database = str((tmp_path / DATABASE).resolve())
        deadline = time.monotonic() + 30
        while not _has_open(process.pid, database):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the command never opened the database"
            time.sleep(0.01)
        assert process.poll() is None  # it cannot have written: the lock is ours
        other.execute("COMMIT")
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert "disabled ann" in out
    finally:
        other.close()


def _has_open(pid: int, path: str) -> bool:
    try:
        return any(
            os.readlink(f"/proc/{pid}/fd/{fd}") == path for fd in os.listdir(f"/proc/{pid}/fd")
        )
    except (FileNotFoundError, ProcessLookupError):
        return False
