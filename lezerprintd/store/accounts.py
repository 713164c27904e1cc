"""Rows of `users`, `sessions`, `api_keys` and `system_events`.

Every function takes the `Store` or an open `Transaction`, so the auth room can group reads
and writes that must agree (the last active admin, a refresh rotation) into one transaction.
Only hashes of secrets pass through here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from lezerprintd.store import Row, Store, Transaction
from lezerprintd.store.jobs import Severity

Db = Store | Transaction


@dataclass(frozen=True, slots=True)
class UserRow:
    id: str
    username: str
    email: str | None
    role: str
    is_active: bool
    password_hash: str | None
    preferences: dict[str, object]
    created_at: float
    updated_at: float
    last_login_at: float | None
    password_changed_at: float | None

    @classmethod
    def from_row(cls, row: Row) -> UserRow:
        preferences = json.loads(row["preferences"])
        return cls(
            id=row["id"],
            username=row["username"],
            email=row["email"],
            role=row["role"],
            is_active=bool(row["is_active"]),
            password_hash=row["password_hash"],
            preferences=preferences if isinstance(preferences, dict) else {},
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            last_login_at=row["last_login_at"],
            password_changed_at=row["password_changed_at"],
        )


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: str
    user_id: str
    family_id: str
    created_at: float
    expires_at: float
    revoked_at: float | None
    replaced_by: str | None


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    id: str
    user_id: str
    name: str
    prefix: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None


@dataclass(frozen=True, slots=True)
class EventRow:
    id: int
    event_type: str
    description: str
    user_id: str | None
    ip_address: str | None
    user_agent: str | None
    metadata: dict[str, object] | None
    severity: Severity
    created_at: float


# -- users ------------------------------------------------------------------------------------

_USER_COLUMNS: Final = frozenset({"role", "is_active", "email", "last_login_at"})


async def insert_user(
    db: Db,
    *,
    user_id: str,
    username: str,
    email: str | None,
    role: str,
    password_hash: str,
    now: float,
) -> None:
    await db.execute(
        "INSERT INTO users (id, username, email, role, is_active, password_hash, created_at,"
        " updated_at, password_changed_at) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?)",
        (user_id, username, email, role, password_hash, now, now, now),
    )


async def user_by_id(db: Db, user_id: str) -> UserRow | None:
    row = await db.fetchone("SELECT * FROM users WHERE id = ?", (user_id,))
    return None if row is None else UserRow.from_row(row)


async def user_by_username(db: Db, username: str) -> UserRow | None:
    # `username` is COLLATE NOCASE: the comparison ignores case.
    row = await db.fetchone("SELECT * FROM users WHERE username = ?", (username,))
    return None if row is None else UserRow.from_row(row)


async def user_by_email(db: Db, email: str) -> UserRow | None:
    row = await db.fetchone("SELECT * FROM users WHERE email = ? COLLATE NOCASE", (email,))
    return None if row is None else UserRow.from_row(row)


async def page_users(db: Db, page: int, limit: int) -> tuple[list[UserRow], int]:
    """One page of accounts in the order they were made, and the total count."""
    total = await db.fetchone("SELECT COUNT(*) FROM users")
    rows = await db.fetchall(
        "SELECT * FROM users ORDER BY created_at, username LIMIT ? OFFSET ?",
        (limit, (page - 1) * limit),
    )
    return [UserRow.from_row(row) for row in rows], int(total[0]) if total else 0


async def all_users(db: Db) -> list[UserRow]:
    rows = await db.fetchall("SELECT * FROM users ORDER BY created_at, username")
    return [UserRow.from_row(row) for row in rows]


async def count_active_admins(db: Db) -> int:
    row = await db.fetchone("SELECT COUNT(*) FROM users WHERE role = 'ADMIN' AND is_active = 1")
    return int(row[0]) if row else 0


async def update_user(db: Db, user_id: str, now: float, **changes: Any) -> int:
    """Change some of `role`, `is_active`, `email`, `last_login_at`; returns rows changed."""
    unknown = set(changes) - _USER_COLUMNS
    if unknown:
        raise ValueError(f"not an updatable user column: {sorted(unknown)}")
    if not changes:
        return 0
    assignments = ", ".join(f"{column} = ?" for column in changes)
    # last_login_at alone is not an edit of the account
    touch = ", updated_at = ?" if set(changes) != {"last_login_at"} else ""
    params = [*changes.values(), *([now] if touch else []), user_id]
    return await db.execute(f"UPDATE users SET {assignments}{touch} WHERE id = ?", params)


async def set_password_hash(db: Db, user_id: str, password_hash: str, now: float) -> int:
    return await db.execute(
        "UPDATE users SET password_hash = ?, password_changed_at = ?, updated_at = ? WHERE id = ?",
        (password_hash, now, now, user_id),
    )


async def replace_password_hash(
    db: Db, user_id: str, old_hash: str, new_hash: str, now: float
) -> int:
    """Swap the stored hash for another of the same password (not a password change), unless
    the password was changed meanwhile."""
    return await db.execute(
        "UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ? AND password_hash = ?",
        (new_hash, now, user_id, old_hash),
    )


# -- sessions (refresh tokens) ------------------------------------------------------------------


def _session(row: Row) -> SessionRow:
    return SessionRow(
        id=row["id"],
        user_id=row["user_id"],
        family_id=row["family_id"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        replaced_by=row["replaced_by"],
    )


async def insert_session(
    db: Db,
    *,
    session_id: str,
    user_id: str,
    token_hash: str,
    family_id: str,
    now: float,
    expires_at: float,
    address: str | None,
    user_agent: str | None,
) -> None:
    await db.execute(
        "INSERT INTO sessions (id, user_id, token_hash, family_id, created_at, expires_at,"
        " address, user_agent) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (session_id, user_id, token_hash, family_id, now, expires_at, address, user_agent),
    )


async def session_by_token(db: Db, token_hash: str) -> SessionRow | None:
    row = await db.fetchone("SELECT * FROM sessions WHERE token_hash = ?", (token_hash,))
    return None if row is None else _session(row)


async def session_created_at(db: Db, session_id: str) -> float | None:
    row = await db.fetchone("SELECT created_at FROM sessions WHERE id = ?", (session_id,))
    return None if row is None else float(row[0])


async def mark_replaced(db: Db, session_id: str, replaced_by: str) -> int:
    return await db.execute(
        "UPDATE sessions SET replaced_by = ? WHERE id = ? AND replaced_by IS NULL",
        (replaced_by, session_id),
    )


async def live_session_user(db: Db, family_id: str, user_id: str, now: float) -> UserRow | None:
    """The account behind session `family_id` while its newest refresh token is live."""
    row = await db.fetchone(
        "SELECT users.* FROM sessions JOIN users ON users.id = sessions.user_id"
        " WHERE sessions.family_id = ? AND sessions.user_id = ?"
        " AND sessions.revoked_at IS NULL AND sessions.replaced_by IS NULL"
        " AND sessions.expires_at > ?",
        (family_id, user_id, now),
    )
    return None if row is None else UserRow.from_row(row)


async def revoke_family(db: Db, family_id: str, now: float) -> int:
    return await db.execute(
        "UPDATE sessions SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
        (now, family_id),
    )


async def revoke_user_sessions(db: Db, user_id: str, now: float) -> int:
    """End every session of an account; returns how many were live."""
    live = await db.fetchone(
        "SELECT COUNT(DISTINCT family_id) FROM sessions WHERE user_id = ?"
        " AND revoked_at IS NULL AND replaced_by IS NULL AND expires_at > ?",
        (user_id, now),
    )
    await db.execute(
        "UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
        (now, user_id),
    )
    return int(live[0]) if live else 0


async def prune_sessions(db: Db, now: float) -> int:
    """Forget refresh tokens that have expired: they can no longer be used or replayed."""
    return await db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))


# -- API keys ------------------------------------------------------------------------------------


def _api_key(row: Row) -> ApiKeyRow:
    return ApiKeyRow(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        prefix=row["prefix"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


async def insert_api_key(
    db: Db, *, key_id: str, user_id: str, name: str, prefix: str, key_hash: str, now: float
) -> None:
    await db.execute(
        "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (key_id, user_id, name, prefix, key_hash, now),
    )


async def api_keys_of(db: Db, user_id: str) -> list[ApiKeyRow]:
    """An account's keys that still work, newest first."""
    rows = await db.fetchall(
        "SELECT * FROM api_keys WHERE user_id = ? AND revoked_at IS NULL"
        " ORDER BY created_at DESC, id",
        (user_id,),
    )
    return [_api_key(row) for row in rows]


async def api_key_by_hash(db: Db, key_hash: str) -> ApiKeyRow | None:
    row = await db.fetchone("SELECT * FROM api_keys WHERE key_hash = ?", (key_hash,))
    return None if row is None else _api_key(row)


async def api_key_by_id(db: Db, key_id: str) -> ApiKeyRow | None:
    row = await db.fetchone("SELECT * FROM api_keys WHERE id = ?", (key_id,))
    return None if row is None else _api_key(row)


async def touch_api_key(db: Db, key_id: str, now: float) -> int:
    return await db.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now, key_id))


async def revoke_api_key(db: Db, key_id: str, now: float) -> int:
    return await db.execute(
        "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, key_id)
    )


# -- the audit log ---------------------------------------------------------------------------------


async def add_event(
    db: Db,
    *,
    event_type: str,
    description: str,
    severity: Severity,
    now: float,
    user_id: str | None = None,
    ip_address: str | None = None,
    user_agent: str | None = None,
    metadata: dict[str, object] | None = None,
) -> None:
    await db.execute(
        "INSERT INTO system_events (event_type, description, user_id, ip_address, user_agent,"
        " metadata, severity, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event_type,
            description,
            user_id,
            ip_address,
            user_agent,
            None if metadata is None else json.dumps(metadata),
            severity.value,
            now,
        ),
    )


async def page_events(
    db: Db,
    page: int,
    limit: int,
    severity: Severity | None = None,
    event_type: str | None = None,
) -> tuple[list[EventRow], int]:
    """One page of the audit log, newest first, and the total count."""
    conditions, params = [], []
    if severity is not None:
        conditions.append("severity = ?")
        params.append(severity.value)
    if event_type is not None:
        conditions.append("event_type = ?")
        params.append(event_type)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    total = await db.fetchone(f"SELECT COUNT(*) FROM system_events {where}", params)
    rows = await db.fetchall(
        f"SELECT * FROM system_events {where} ORDER BY id DESC LIMIT ? OFFSET ?",
        [*params, limit, (page - 1) * limit],
    )
    events = []
    for row in rows:
        metadata = None if row["metadata"] is None else json.loads(row["metadata"])
        events.append(
            EventRow(
                id=row["id"],
                event_type=row["event_type"],
                description=row["description"],
                user_id=row["user_id"],
                ip_address=row["ip_address"],
                user_agent=row["user_agent"],
                metadata=metadata if isinstance(metadata, dict) else None,
                severity=Severity(row["severity"]),
                created_at=row["created_at"],
            )
        )
    return events, int(total[0]) if total else 0
