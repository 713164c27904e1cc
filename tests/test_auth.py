"""The auth room on a real SQLite file and a real data dir: passwords, the signing secret,
the setup code, access and refresh tokens, API keys and throttling.

Most tests hash at bcrypt cost 4 through the room's explicit test argument; the first proves
that the room's default is cost 12 and that hashing at that cost leaves the event loop free.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest

from lezerprintd.auth.passwords import Passwords, check_rules
from lezerprintd.auth.permissions import Role
from lezerprintd.auth.secret_files import SecretFileError
from lezerprintd.auth.service import SETUP_ALPHABET, Auth, Client, read_setup_code
from lezerprintd.auth.throttle import Throttle
from lezerprintd.auth.tokens import AUDIENCE, ISSUER
from lezerprintd.bus import Bus, SessionsRevoked
from lezerprintd.errors import UserError
from lezerprintd.store import Store
from tests.conftest import Events

FAST = 4  # bcrypt cost for tests that are not about the cost
PASSWORD = "correct horse battery staple"
CLIENT = Client(address="192.0.2.7", user_agent="pytest")


@dataclass
class Room:
    auth: Auth
    store: Store
    bus: Bus
    data_dir: Path


@pytest.fixture
async def room(tmp_path: Path) -> AsyncIterator[Room]:
    store = await Store.open(tmp_path / "lezerprint.db")
    bus = Bus()
    auth = Auth(store, tmp_path, bus, bcrypt_cost=FAST)
    await auth.start()
    try:
        yield Room(auth, store, bus, tmp_path)
    finally:
        await store.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def secret_of(data_dir: Path) -> bytes:
    return bytes.fromhex((data_dir / "jwt-secret").read_text().strip())


async def refused(auth: Auth, **credentials: str | None) -> UserError:
    given: dict[str, str | None] = {"bearer": None, "api_key": None, "cookie": None}
    given.update(credentials)
    with pytest.raises(UserError) as caught:
        await auth.authenticate(**given)
    assert caught.value.status == 401
    assert caught.value.code == "UNAUTHORIZED"
    return caught.value


# -- passwords -----------------------------------------------------------------------------------


async def test_passwords_hash_at_cost_12_by_default_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "lezerprint.db")
    try:
        auth = Auth(store, tmp_path, Bus())
        assert auth.bcrypt_cost == 12
        await auth.start()
        gaps: list[float] = []
        done = asyncio.Event()

        async def heartbeat() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.005)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        beat = asyncio.create_task(heartbeat())
        started = time.monotonic()
        await auth.create_user("owner", PASSWORD, Role.ADMIN, None, actor=None, client=CLIENT)
        creating = time.monotonic() - started
        started = time.monotonic()
        signed = await auth.login("owner", PASSWORD, CLIENT)
        signing_in = time.monotonic() - started
        done.set()
        await beat
        row = await store.fetchone("SELECT password_hash FROM users")
        assert row is not None
        assert row[0].startswith("$2b$12$")
        assert signed.user.username == "owner"
        # Each step is one cost-12 hash (~0.25 s here). Had it run on the loop, the heartbeat
        # would have missed a beat that long; it kept ticking instead. (Relative, so a busy
        # machine, which slows the hashes too, does not make it flaky.)
        slowest_beat = max(gaps)
        assert min(creating, signing_in) > 0.05
        assert slowest_beat < min(creating, signing_in) / 3, (slowest_beat, creating, signing_in)
    finally:
        await store.close()


def test_password_rules_are_length_only() -> None:
    check_rules("a" * 8)  # no classes demanded
    check_rules("ü" * 128)
    for bad in ("", "a" * 7, "a" * 129):
        with pytest.raises(UserError) as caught:
            check_rules(bad, "newPassword")
        assert caught.value.status == 400
        assert caught.value.details == [
            {
                "field": "newPassword",
                "message": caught.value.details[0]["message"],
                "code": "length",
            }
        ]


async def test_every_character_of_a_long_password_counts() -> None:
    # 100 characters of 2 bytes each: plain bcrypt would see only the first 36.
    passwords = Passwords(cost=FAST)
    long = "é" * 99
    hashed = await passwords.hash(long + "a")
    assert await passwords.verify(long + "a", hashed)
    assert not await passwords.verify(long + "b", hashed)
    assert not await passwords.verify(long + "a", None)  # no account: a decoy is checked
    assert not await passwords.verify(long + "a", "not a bcrypt hash")


# -- the signing secret --------------------------------------------------------------------------


async def test_the_secret_is_made_once_owner_only_and_reused(room: Room) -> None:
    path = room.data_dir / "jwt-secret"
    assert mode(path) == 0o600
    assert len(secret_of(room.data_dir)) >= 32
    before = path.read_bytes()
    await room.auth.create_user("ann", PASSWORD, Role.VIEWER, None, actor=None, client=CLIENT)
    signed = await room.auth.login("ann", PASSWORD, CLIENT)
    again = Auth(room.store, room.data_dir, room.bus, bcrypt_cost=FAST)
    await again.start()
    assert path.read_bytes() == before
    principal = await again.authenticate(
        bearer=signed.tokens.access_token, api_key=None, cookie=None
    )
    assert principal is not None
    assert principal.username == "ann"


async def test_a_loose_secret_file_is_tightened(
    room: Room, caplog: pytest.LogCaptureFixture
) -> None:
    path = room.data_dir / "jwt-secret"
    path.chmod(0o644)
    caplog.set_level(logging.WARNING)
    await Auth(room.store, room.data_dir, room.bus).start()
    assert mode(path) == 0o600
    assert "readable by other users" in caplog.text


async def test_a_damaged_secret_file_stops_the_start(room: Room) -> None:
    path = room.data_dir / "jwt-secret"
    path.write_text("too short\n")
    with pytest.raises(SecretFileError, match="jwt-secret does not hold a secret"):
        await Auth(room.store, room.data_dir, room.bus).start()


async def test_a_symlinked_secret_file_is_refused(room: Room, tmp_path: Path) -> None:
    path = room.data_dir / "jwt-secret"
    elsewhere = tmp_path / "elsewhere"
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    with pytest.raises(SecretFileError, match="symbolic link"):
        await Auth(room.store, room.data_dir, room.bus).start()


# -- the setup code ----------------------------------------------------------------------------


async def test_the_setup_code_exists_only_until_an_admin_does(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await Store.open(tmp_path / "lezerprint.db")
    try:
        caplog.set_level(logging.WARNING)
        auth = Auth(store, tmp_path, Bus(), bcrypt_cost=FAST)
        await auth.start()
        path = tmp_path / "setup-code"
        assert mode(path) == 0o600
        code = read_setup_code(path)
        assert code is not None
        assert re.fullmatch(f"[{SETUP_ALPHABET}]{{4}}(-[{SETUP_ALPHABET}]{{4}}){{2}}", code)
        assert code in caplog.text
        assert str(path) in caplog.text
        assert await auth.setup_required()
        # A viewer does not end the setup; an administrator does, however made.
        await auth.create_user("vic", PASSWORD, Role.VIEWER, None, actor=None, client=CLIENT)
        assert path.exists()
        await auth.create_user("ada", PASSWORD, Role.ADMIN, None, actor=None, client=CLIENT)
        assert not path.exists()
        assert not await auth.setup_required()
        restarted = Auth(store, tmp_path, Bus(), bcrypt_cost=FAST)
        await restarted.start()
        assert not path.exists()
        with pytest.raises(UserError) as caught:
            await restarted.setup(
                code, username="eve", password=PASSWORD, email=None, client=CLIENT
            )
        assert caught.value.status == 409
    finally:
        await store.close()


# -- access tokens ---------------------------------------------------------------------------------


def _claims(user_id: str, session_id: str, **changes: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": user_id,
        "sid": session_id,
        "role": "ADMIN",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 900,
        "jti": "test",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _forge(secret: bytes, case: str, user_id: str, session_id: str) -> str:
    if case == "tampered":
        good = jwt.encode(_claims(user_id, session_id), secret, algorithm="HS256")
        head, body, signature = good.split(".")
        flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
        return f"{head}.{body}.{flipped}"
    if case == "alg none":
        return jwt.encode(_claims(user_id, session_id), None, algorithm="none")
    if case == "other secret":
        return jwt.encode(_claims(user_id, session_id), os.urandom(32), algorithm="HS256")
    changes: dict[str, dict[str, object]] = {
        "expired": {"iat": int(time.time()) - 1000, "exp": int(time.time()) - 60},
        "wrong audience": {"aud": "someone-else"},
        "wrong issuer": {"iss": "someone-else"},
        "no session": {"sid": None},
        "no expiry": {"exp": None},
        "unknown session": {"sid": "a-session-that-never-was"},
        "another user": {"sub": "a-user-that-never-was"},
    }
    return jwt.encode(_claims(user_id, session_id, **changes[case]), secret, algorithm="HS256")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("tampered", "invalid"),
        ("alg none", "invalid"),
        ("other secret", "invalid"),
        ("expired", "expired"),
        ("wrong audience", "invalid"),
        ("wrong issuer", "invalid"),
        ("no session", "invalid"),
        ("no expiry", "invalid"),
        ("unknown session", "ended"),
        ("another user", "ended"),
    ],
)
async def test_forged_and_stale_access_tokens_are_refused(
    room: Room, case: str, message: str
) -> None:
    await room.auth.create_user("ann", PASSWORD, Role.ADMIN, None, actor=None, client=CLIENT)
    signed = await room.auth.login("ann", PASSWORD, CLIENT)
    secret = secret_of(room.data_dir)
    # The same claims, well signed, are accepted: what is refused below is the defect.
    good = jwt.encode(_claims(signed.user.id, signed.tokens.session_id), secret, algorithm="HS256")
    assert await room.auth.authenticate(bearer=good, api_key=None, cookie=None) is not None
    error = await refused(
        room.auth, bearer=_forge(secret, case, signed.user.id, signed.tokens.session_id)
    )
    assert message in str(error)
    assert "Traceback" not in str(error)


async def test_a_refused_cookie_is_also_cleared(room: Room) -> None:
    error = await refused(room.auth, cookie="not-a-token")
    assert error.headers["Set-Cookie"].startswith("lezerprint_access=")
    assert "Max-Age=0" in error.headers["Set-Cookie"]
    error = await refused(room.auth, bearer="not-a-token")
    assert "Set-Cookie" not in error.headers


async def test_a_long_lived_connection_can_recheck_its_principal(room: Room) -> None:
    user = await room.auth.create_user("ann", PASSWORD, Role.ADMIN, None, actor=None, client=CLIENT)
    await room.auth.create_user("bob", PASSWORD, Role.ADMIN, None, actor=None, client=CLIENT)
    signed = await room.auth.login("ann", PASSWORD, CLIENT)
    principal = await room.auth.authenticate(
        bearer=signed.tokens.access_token, api_key=None, cookie=None
    )
    assert principal is not None
    key = await room.auth.create_api_key(principal, "k", CLIENT)
    by_key = await room.auth.authenticate(bearer=None, api_key=key.secret, cookie=None)
    assert by_key is not None
    assert await room.auth.recheck(principal) == principal
    # A change in the database alone (as the command line makes it) is seen.
    await room.store.execute("UPDATE users SET role = 'VIEWER' WHERE id = ?", (user.id,))
    demoted = await room.auth.recheck(principal)
    assert demoted is not None
    assert demoted.role is Role.VIEWER
    await room.store.execute("UPDATE users SET is_active = 0 WHERE id = ?", (user.id,))
    assert await room.auth.recheck(principal) is None
    assert await room.auth.recheck(by_key) is None
    await room.store.execute("UPDATE users SET is_active = 1 WHERE id = ?", (user.id,))
    await room.auth.logout(principal, CLIENT)
    assert await room.auth.recheck(principal) is None
    assert await room.auth.recheck(by_key) is not None


async def test_no_credentials_is_nobody(room: Room) -> None:
    assert await room.auth.authenticate(bearer=None, api_key=None, cookie=None) is None


# -- refresh tokens --------------------------------------------------------------------------------


async def test_a_refresh_rotates_and_a_replayed_token_ends_every_session(room: Room) -> None:
    events = Events(room.bus)
    await room.auth.create_user("ann", PASSWORD, Role.OPERATOR, None, actor=None, client=CLIENT)
    first = await room.auth.login("ann", PASSWORD, CLIENT)
    other = await room.auth.login("ann", PASSWORD, CLIENT)
    second = await room.auth.refresh(first.tokens.refresh_token, CLIENT)
    assert second.tokens.refresh_token != first.tokens.refresh_token
    assert second.tokens.session_id == first.tokens.session_id  # the same sign-in
    rows = await room.store.fetchall(
        "SELECT id, family_id, replaced_by FROM sessions WHERE family_id = ? ORDER BY created_at",
        (first.tokens.session_id,),
    )
    assert len(rows) == 2
    assert rows[0]["replaced_by"] == rows[1]["id"]
    assert await room.auth.authenticate(
        bearer=second.tokens.access_token, api_key=None, cookie=None
    )

    with pytest.raises(UserError, match="just renewed") as raced:  # a second tab, at once
        await room.auth.refresh(first.tokens.refresh_token, CLIENT)
    assert raced.value.status == 409
    assert await room.auth.authenticate(
        bearer=second.tokens.access_token, api_key=None, cookie=None
    )
    await room.store.execute("UPDATE sessions SET created_at = created_at - 60")
    with pytest.raises(UserError, match="already used") as caught:
        await room.auth.refresh(first.tokens.refresh_token, CLIENT)
    assert caught.value.status == 401
    revoked = await events.wait_for(SessionsRevoked, seconds=5)
    assert revoked == SessionsRevoked(second.user.id, None)
    for tokens in (second.tokens, other.tokens):
        await refused(room.auth, bearer=tokens.access_token)
        with pytest.raises(UserError, match="ended"):
            await room.auth.refresh(tokens.refresh_token, CLIENT)
    audit = await room.store.fetchone(
        "SELECT severity FROM system_events WHERE event_type = 'REFRESH_TOKEN_REUSED'"
    )
    assert audit is not None
    assert audit[0] == "CRITICAL"


async def test_refresh_tokens_and_api_keys_are_stored_only_as_hashes(room: Room) -> None:
    await room.auth.create_user("ann", PASSWORD, Role.VIEWER, None, actor=None, client=CLIENT)
    signed = await room.auth.login("ann", PASSWORD, CLIENT)
    principal = await room.auth.authenticate(
        bearer=signed.tokens.access_token, api_key=None, cookie=None
    )
    assert principal is not None
    made = await room.auth.create_api_key(principal, "slicer", CLIENT)
    assert made.secret.startswith("lpk_")
    assert made.key.prefix == made.secret[:12]
    await room.store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    stored = b"".join(
        path.read_bytes() for path in room.data_dir.iterdir() if path.name.startswith("lezer")
    )
    for secret in (made.secret, signed.tokens.refresh_token, PASSWORD):
        assert secret.encode() not in stored


async def test_an_api_key_notes_its_use_at_most_once_a_minute(room: Room) -> None:
    await room.auth.create_user("ann", PASSWORD, Role.VIEWER, None, actor=None, client=CLIENT)
    signed = await room.auth.login("ann", PASSWORD, CLIENT)
    principal = await room.auth.authenticate(
        bearer=signed.tokens.access_token, api_key=None, cookie=None
    )
    assert principal is not None
    made = await room.auth.create_api_key(principal, "slicer", CLIENT)

    async def last_used() -> float | None:
        row = await room.store.fetchone(
            "SELECT last_used_at FROM api_keys WHERE id = ?", (made.key.id,)
        )
        assert row is not None
        return row[0]  # type: ignore[no-any-return]

    assert await last_used() is None
    by_key = await room.auth.authenticate(bearer=None, api_key=made.secret, cookie=None)
    assert by_key is not None
    assert by_key.method == "api_key"
    assert by_key.session_id is None
    first = await last_used()
    assert first is not None
    await room.auth.authenticate(bearer=None, api_key=made.secret, cookie=None)
    assert await last_used() == first  # within the minute: no write
    await room.store.execute(
        "UPDATE api_keys SET last_used_at = ? WHERE id = ?", (first - 61, made.key.id)
    )
    await room.auth.authenticate(bearer=None, api_key=made.secret, cookie=None)
    later = await last_used()
    assert later is not None
    assert later >= first
    await refused(room.auth, api_key="lpk_" + "x" * 43)
    await refused(room.auth, api_key="not even the prefix")


# -- throttling -----------------------------------------------------------------------------------


def test_the_throttle_counts_a_sliding_window_per_key() -> None:
    now = [1000.0]
    throttle = Throttle(limit=3, window=60, clock=lambda: now[0])
    attempts = [throttle.begin(["a", "x"]) for _ in range(2)]
    now[0] += 10
    ok = throttle.begin(["a", "x"])
    throttle.forgive(ok)  # a success does not count
    throttle.begin(["a", "y"])
    throttle.begin(["b", "x"])  # "x" had 2 counted: this is its third
    with pytest.raises(UserError) as caught:
        throttle.begin(["a", "z"])  # "a" has used its 3
    assert caught.value.status == 429
    assert caught.value.code == "RATE_LIMITED"
    # "a" frees up when its oldest counted attempt leaves the window: 60 s after t=1000.
    assert caught.value.headers == {"Retry-After": "50"}
    assert caught.value.details == {"retryAfter": 50}
    assert attempts[0].started == 1000.0
    now[0] = 1060.0
    throttle.begin(["a"])


def test_the_throttle_forgets_old_keys_and_stays_bounded() -> None:
    now = [0.0]
    throttle = Throttle(limit=2, window=10, max_keys=100, clock=lambda: now[0])
    for index in range(1000):
        now[0] += 0.001
        throttle.begin([f"key{index}"])
    assert len(throttle._attempts) <= 101
