"""The auth room: accounts, sign-in sessions, API keys, the first-start setup code, the audit log.

Rule: trust nothing a client says about itself. Every access token and API key is checked
against the database on every request (the session still live, the account still active, its
role as it is now), so signing out, a password change, a role change or a `lezerprintd user
disable` run by another process takes effect on the very next request. Nothing is cached.
"""

from __future__ import annotations

import asyncio
import enum
import hmac
import logging
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Final, Literal

from lezerprintd.auth.middleware import ACCESS_COOKIE
from lezerprintd.auth.passwords import (
    DEFAULT_COST,
    Passwords,
    check_rules,
    imported_hash,
    is_imported,
)
from lezerprintd.auth.permissions import Principal, Role
from lezerprintd.auth.secret_files import SecretFileError, read_private, remove, write_private
from lezerprintd.auth.throttle import Throttle
from lezerprintd.auth.tokens import (
    ACCESS_TTL,
    API_KEY_PREFIX,
    API_KEY_SHOWN,
    REFRESH_TTL,
    TokenError,
    digest,
    issue_access,
    load_secret,
    new_api_key,
    new_refresh_token,
    verify_access,
)
from lezerprintd.bus import Bus, SessionsRevoked
from lezerprintd.errors import LezerError, UserError, field_error
from lezerprintd.store import Store, settings
from lezerprintd.store import accounts as rows
from lezerprintd.store.accounts import Db, UserRow
from lezerprintd.store.jobs import Severity

log = logging.getLogger(__name__)

SETUP_CODE_FILE: Final = "setup-code"
# No 0/O, 1/I/L: the code is read off a screen and typed in.
SETUP_ALPHABET: Final = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
SETUP_GROUPS: Final = 3
SETUP_GROUP_LENGTH: Final = 4
REGISTRATION_SETTING: Final = "auth.registration_enabled"
USERNAME: Final = re.compile(r"[A-Za-z0-9_-]{3,50}")
EMAIL: Final = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
EMAIL_MAX: Final = 255
KEY_NAME_MAX: Final = 100
API_KEY_TOUCH_EVERY: Final = 60.0  # seconds between last_used_at writes of one key
USER_AGENT_MAX: Final = 512
# A refresh token presented again this soon after it was renewed is a second tab (or a retry)
# racing the first, not a thief: it is refused without ending every session.
RENEWAL_GRACE: Final = 30.0


class Audit(enum.Enum):
    """What the audit log (`system_events.event_type`) records about accounts."""

    SETUP_COMPLETED = "SETUP_COMPLETED"
    SETUP_FAILED = "SETUP_FAILED"
    LOGIN_SUCCEEDED = "LOGIN_SUCCEEDED"
    LOGIN_FAILED = "LOGIN_FAILED"
    LOGIN_REFUSED = "LOGIN_REFUSED"  # right password, disabled account
    LOGOUT = "LOGOUT"
    REFRESH_TOKEN_REUSED = "REFRESH_TOKEN_REUSED"
    USER_CREATED = "USER_CREATED"
    USER_REGISTERED = "USER_REGISTERED"
    ROLE_CHANGED = "ROLE_CHANGED"
    USER_DEACTIVATED = "USER_DEACTIVATED"
    USER_ACTIVATED = "USER_ACTIVATED"
    EMAIL_CHANGED = "EMAIL_CHANGED"
    PASSWORD_CHANGED = "PASSWORD_CHANGED"
    PASSWORD_CHANGE_FAILED = "PASSWORD_CHANGE_FAILED"
    PASSWORD_RESET = "PASSWORD_RESET"
    API_KEY_CREATED = "API_KEY_CREATED"
    API_KEY_REVOKED = "API_KEY_REVOKED"
    REGISTRATION_CHANGED = "REGISTRATION_CHANGED"


@dataclass(frozen=True, slots=True)
class Client:
    """Where a request came from, for the audit log and throttling."""

    address: str | None
    user_agent: str | None


COMMAND_LINE: Final = Client(address=None, user_agent="lezerprintd user (command line)")


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    email: str | None
    role: Role
    is_active: bool
    created_at: float
    updated_at: float
    last_login_at: float | None

    @classmethod
    def of(cls, row: UserRow) -> User:
        return cls(
            id=row.id,
            username=row.username,
            email=row.email,
            role=Role(row.role),
            is_active=row.is_active,
            created_at=row.created_at,
            updated_at=row.updated_at,
            last_login_at=row.last_login_at,
        )


@dataclass(frozen=True, slots=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_in: int  # seconds the access token is valid
    session_id: str


@dataclass(frozen=True, slots=True)
class SignIn:
    user: User
    tokens: Tokens


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None


@dataclass(frozen=True, slots=True)
class NewApiKey:
    key: ApiKey
    secret: str  # shown once; only its hash is kept


# An audit log entry is shown as the store reads it.
AuditEvent = rows.EventRow


def _clear_access_cookie() -> str:
    cookie: SimpleCookie = SimpleCookie()
    cookie[ACCESS_COOKIE] = ""
    morsel = cookie[ACCESS_COOKIE]
    morsel["path"] = "/"
    morsel["max-age"] = 0
    morsel["expires"] = "Thu, 01 Jan 1970 00:00:00 GMT"
    morsel["httponly"] = True
    morsel["samesite"] = "Strict"
    return morsel.OutputString()


# A refused cookie is also deleted, so a browser holding a stale one can still reach the
# public routes (sign in, refresh) instead of being refused on each of them.
_CLEAR_ACCESS_COOKIE: Final = _clear_access_cookie()


class Auth:
    """Accounts and their credentials, over the store; events go out on the bus.

    `bcrypt_cost` is for tests only: production hashes at the default cost of 12.
    """

    def __init__(
        self, store: Store, data_dir: Path, bus: Bus, *, bcrypt_cost: int = DEFAULT_COST
    ) -> None:
        self._store = store
        self._data_dir = data_dir
        self._bus = bus
        self._passwords = Passwords(bcrypt_cost)
        self._throttle = Throttle()
        self._secret: bytes | None = None
        self._setup_code: str | None = None
        self.setup_code_path = data_dir / SETUP_CODE_FILE

    @property
    def bcrypt_cost(self) -> int:
        return self._passwords.cost

    async def start(self) -> None:
        """Load (or make) the signing secret; while no active administrator exists, write a
        one-time setup code and log where it is. Raises SecretFileError on a bad secret file."""
        self._secret = await asyncio.to_thread(load_secret, self._data_dir)
        await rows.prune_sessions(self._store, time.time())
        code = await self.ensure_setup_code()
        if code is not None:
            log.warning(
                "no administrator account yet: open the web page and create one with the "
                "one-time setup code %s (also in %s), or run 'lezerprintd user add NAME "
                "--role admin --password-stdin'",
                show_code(code),
                self.setup_code_path,
            )

    async def ensure_setup_code(self) -> str | None:
        """While no active administrator exists: the one-time setup code, the one already in
        its file if there is one (the code a person read off the card or the log stays good
        across restarts), else a new one. Once one exists: None, and the file is removed."""
        if not await self.setup_required():
            await self._end_setup()
            return None
        code = await asyncio.to_thread(self._kept_setup_code)
        if code is None:
            code = "".join(secrets.choice(SETUP_ALPHABET) for _ in range(_SETUP_LENGTH))
            await asyncio.to_thread(
                write_private, self.setup_code_path, (show_code(code) + "\n").encode("ascii")
            )
        self._setup_code = code
        return code

    def _kept_setup_code(self) -> str | None:
        try:
            shown = read_setup_code(self.setup_code_path)
        except (OSError, SecretFileError, UnicodeDecodeError):
            return None  # unreadable or too open: a new code replaces it
        code = (shown or "").replace("-", "")
        if len(code) == _SETUP_LENGTH and all(c in SETUP_ALPHABET for c in code):
            return code
        return None

    # -- who is asking -------------------------------------------------------------------------

    async def authenticate(
        self, *, bearer: str | None, api_key: str | None, cookie: str | None
    ) -> Principal | None:
        """The principal behind the credentials (first of bearer, API key, cookie); None when
        none are given. A 401 UserError when they are invalid, expired or revoked."""
        if bearer is not None:
            return await self._by_token(bearer, "bearer")
        if api_key is not None:
            return await self._by_api_key(api_key)
        if cookie is not None:
            return await self._by_token(cookie, "cookie")
        return None

    async def _by_token(self, token: str, method: Literal["bearer", "cookie"]) -> Principal:
        try:
            claims = verify_access(self._signing_secret(), token)
        except TokenError as error:
            raise _refused(error.reason, method) from None
        row = await rows.live_session_user(
            self._store, claims.session_id, claims.user_id, time.time()
        )
        if row is None:
            raise _refused("the session has ended; sign in again", method)
        if not row.is_active:
            raise _refused("the account is disabled", method)
        return Principal(row.id, row.username, Role(row.role), claims.session_id, method)

    async def _by_api_key(self, key: str) -> Principal:
        found = None
        if key.startswith(API_KEY_PREFIX):
            found = await rows.api_key_by_hash(self._store, digest(key))
        if found is None:
            raise _refused("the API key is invalid", "api_key")
        if found.revoked_at is not None:
            raise _refused("the API key has been revoked", "api_key")
        user = await rows.user_by_id(self._store, found.user_id)
        if user is None or not user.is_active:
            raise _refused("the account is disabled", "api_key")
        now = time.time()
        # One write a minute at most: a slicer polling every second must not wear the SD card.
        if found.last_used_at is None or now - found.last_used_at >= API_KEY_TOUCH_EVERY:
            await rows.touch_api_key(self._store, found.id, now)
        return Principal(user.id, user.username, Role(user.role), None, "api_key")

    async def recheck(self, principal: Principal) -> Principal | None:
        """`principal` as it is now (its role may have changed), or None once its session has
        ended or its account is disabled. For connections that authenticate once and stay open
        (the websocket): a change made by `lezerprintd user` in another process publishes
        nothing on this process's bus, so such a connection must ask again."""
        if principal.session_id is not None:
            row = await rows.live_session_user(
                self._store, principal.session_id, principal.user_id, time.time()
            )
        else:
            row = await rows.user_by_id(self._store, principal.user_id)
        if row is None or not row.is_active:
            return None
        return Principal(
            row.id, row.username, Role(row.role), principal.session_id, principal.method
        )

    # -- first start -----------------------------------------------------------------------------

    async def setup_required(self) -> bool:
        """Whether no active administrator exists yet (the setup page is open)."""
        return await rows.count_active_admins(self._store) == 0

    async def setup(
        self, code: str, *, username: str, password: str, email: str | None, client: Client
    ) -> User:
        """Create the first administrator, with the setup code from the data dir."""
        username, email = _checked_username(username), _checked_email(email)
        check_rules(password)
        if not await self.setup_required():
            raise _setup_done()
        attempt = self._throttle.begin([_address_key(client)])
        expected = self._setup_code
        given = re.sub(r"[\s-]", "", code).upper().encode("utf-8")
        if expected is None or not hmac.compare_digest(given, expected.encode("ascii")):
            await self._audit(
                self._store,
                Audit.SETUP_FAILED,
                "A wrong setup code was given",
                client,
                severity=Severity.WARNING,
            )
            raise UserError(
                "the setup code is wrong; it is in the setup-code file in the data directory",
                status=403,
                code="FORBIDDEN",
            )
        user = await self._create(
            username,
            email,
            Role.ADMIN,
            await self._passwords.hash(password),
            actor=None,
            client=client,
            event=Audit.SETUP_COMPLETED,
            first_admin=True,
        )
        self._throttle.forgive(attempt)
        return user

    async def _end_setup(self) -> None:
        self._setup_code = None
        try:
            if await asyncio.to_thread(remove, self.setup_code_path):
                log.info("an administrator exists: removed %s", self.setup_code_path)
        except (OSError, SecretFileError) as error:
            log.error("cannot remove the used setup code %s: %s", self.setup_code_path, error)

    # -- signing in and out ----------------------------------------------------------------------

    async def login(self, identifier: str, password: str, client: Client) -> SignIn:
        """Sign in by username or email. Five failures per account or per address in 15
        minutes answer 429 until the oldest leaves the window."""
        self._signing_secret()  # refuse before any work when not started
        if "@" in identifier:
            row = await rows.user_by_email(self._store, identifier)
        else:
            row = await rows.user_by_username(self._store, identifier)
        account = f"user:{row.id}" if row else f"name:{identifier.casefold()}"
        attempt = self._throttle.begin([account, _address_key(client)])
        if not await self._passwords.verify(password, row.password_hash if row else None):
            await self._audit(
                self._store,
                Audit.LOGIN_FAILED,
                f"Failed sign-in as {identifier[:100]!r}",
                client,
                user_id=row.id if row else None,
                severity=Severity.WARNING,
                metadata={"username": identifier[:100]},
            )
            raise UserError("wrong username or password", status=401, code="UNAUTHORIZED")
        assert row is not None
        self._throttle.forgive(attempt)  # the right password is not a guess
        if not row.is_active:
            await self._audit(
                self._store,
                Audit.LOGIN_REFUSED,
                f"{row.username} tried to sign in to a disabled account",
                client,
                user_id=row.id,
                severity=Severity.WARNING,
            )
            raise UserError("this account is disabled", status=401, code="UNAUTHORIZED")
        kept = row.password_hash
        upgraded = await self._passwords.hash(password) if kept and is_imported(kept) else None
        now = time.time()
        async with self._store.transaction() as tx:
            if kept and upgraded:
                await rows.replace_password_hash(tx, row.id, kept, upgraded, now)
            await rows.prune_sessions(tx, now)
            tokens, _ = await self._issue(tx, row, client, now, family=None)
            await rows.update_user(tx, row.id, now, last_login_at=now)
            await self._audit(
                tx, Audit.LOGIN_SUCCEEDED, f"{row.username} signed in", client, user_id=row.id
            )
            fresh = await rows.user_by_id(tx, row.id)
        assert fresh is not None
        return SignIn(User.of(fresh), tokens)

    async def refresh(self, refresh_token: str, client: Client) -> SignIn:
        """A new token pair for a live refresh token, which is used up. A used-up token
        presented again was stolen or leaked: every session of its account ends, unless it
        was renewed within RENEWAL_GRACE seconds (then 409, and nothing ends)."""
        self._signing_secret()
        now = time.time()
        signed: SignIn | None = None
        async with self._store.transaction() as tx:
            found = await rows.session_by_token(tx, digest(refresh_token))
            if found is None:
                raise _refused("the refresh token is invalid", "refresh")
            if found.revoked_at is not None:
                raise _refused("the session has ended; sign in again", "refresh")
            if found.replaced_by is not None:
                renewed_at = await rows.session_created_at(tx, found.replaced_by)
                if renewed_at is not None and now - renewed_at <= RENEWAL_GRACE:
                    # Two tabs of one browser renewing together: the other one's answer
                    # has already set the new cookie. Not theft; nothing is ended.
                    raise UserError(
                        "this session was just renewed by another request; use the new token",
                        status=409,
                        code="CONFLICT",
                    )
                await rows.revoke_user_sessions(tx, found.user_id, now)
                await self._audit(
                    tx,
                    Audit.REFRESH_TOKEN_REUSED,
                    "A refresh token was used twice; every session of the account was ended",
                    client,
                    user_id=found.user_id,
                    severity=Severity.CRITICAL,
                    metadata={"sessionId": found.family_id},
                )
            else:
                if found.expires_at <= now:
                    raise _refused("the refresh token has expired", "refresh")
                user = await rows.user_by_id(tx, found.user_id)
                if user is None or not user.is_active:
                    raise _refused("the account is disabled", "refresh")
                tokens, row_id = await self._issue(tx, user, client, now, family=found.family_id)
                await rows.mark_replaced(tx, found.id, row_id)
                signed = SignIn(User.of(user), tokens)
        if signed is None:
            # Committed above: the revocation stands although this request fails.
            self._bus.publish(SessionsRevoked(found.user_id, None))
            raise _refused(
                "this refresh token was already used, so every session of the account has "
                "been ended; sign in again",
                "refresh",
            )
        return signed

    async def _issue(
        self, tx: Db, user: UserRow, client: Client, now: float, *, family: str | None
    ) -> tuple[Tokens, str]:
        """A new refresh-token row (a new session when `family` is None) and the access
        token that goes with it; returns the tokens and the row's id."""
        refresh_token = new_refresh_token()
        row_id = str(uuid.uuid4())
        session_id = family or row_id
        await rows.insert_session(
            tx,
            session_id=row_id,
            user_id=user.id,
            token_hash=digest(refresh_token),
            family_id=session_id,
            now=now,
            expires_at=now + REFRESH_TTL,
            address=client.address,
            user_agent=_agent(client),
        )
        access, _ = issue_access(
            self._signing_secret(),
            user_id=user.id,
            session_id=session_id,
            role=user.role,
            now=int(now),
        )
        return Tokens(access, refresh_token, ACCESS_TTL, session_id), row_id

    async def logout(self, principal: Principal, client: Client) -> None:
        """End the principal's session (nothing to end for an API key)."""
        if principal.session_id is None:
            return
        async with self._store.transaction() as tx:
            await rows.revoke_family(tx, principal.session_id, time.time())
            await self._audit(
                tx,
                Audit.LOGOUT,
                f"{principal.username} signed out",
                client,
                user_id=principal.user_id,
            )
        self._bus.publish(SessionsRevoked(principal.user_id, principal.session_id))

    # -- passwords ---------------------------------------------------------------------------------

    async def change_password(
        self, principal: Principal, current: str, new: str, client: Client
    ) -> None:
        """Change one's own password; every session of the account ends, this one included."""
        check_rules(new, "newPassword")
        row = await self._user_row(principal.user_id)
        attempt = self._throttle.begin([f"user:{row.id}", _address_key(client)])
        if not await self._passwords.verify(current, row.password_hash):
            await self._audit(
                self._store,
                Audit.PASSWORD_CHANGE_FAILED,
                f"{row.username} gave a wrong current password",
                client,
                user_id=row.id,
                severity=Severity.WARNING,
            )
            problem = "is not the account's current password"
            raise UserError(
                f"currentPassword {problem}",
                details=[{"field": "currentPassword", "message": problem, "code": "mismatch"}],
            )
        self._throttle.forgive(attempt)
        await self._set_password(
            row, new, Audit.PASSWORD_CHANGED, f"{row.username} changed their password", client
        )

    async def reset_password(
        self, user_id: str, password: str, *, actor: Principal | None, client: Client
    ) -> User:
        """Set an account's password (an administrator, or the command line); its sessions end."""
        check_rules(password)
        row = await self._user_row(user_id)
        return await self._set_password(
            row,
            password,
            Audit.PASSWORD_RESET,
            f"The password of {row.username} was reset by {_by(actor)}",
            client,
        )

    async def _set_password(
        self, row: UserRow, password: str, event: Audit, description: str, client: Client
    ) -> User:
        password_hash = await self._passwords.hash(password)
        now = time.time()
        async with self._store.transaction() as tx:
            if not await rows.set_password_hash(tx, row.id, password_hash, now):
                raise _no_user()
            ended = await rows.revoke_user_sessions(tx, row.id, now)
            await self._audit(
                tx, event, description, client, user_id=row.id, metadata={"sessionsEnded": ended}
            )
            fresh = await rows.user_by_id(tx, row.id)
        self._bus.publish(SessionsRevoked(row.id, None))
        assert fresh is not None
        return User.of(fresh)

    # -- API keys --------------------------------------------------------------------------------

    async def api_keys(self, principal: Principal) -> list[ApiKey]:
        """The principal's own keys that still work, newest first."""
        return [_api_key(row) for row in await rows.api_keys_of(self._store, principal.user_id)]

    async def create_api_key(self, principal: Principal, name: str, client: Client) -> NewApiKey:
        name = name.strip()
        if not 1 <= len(name) <= KEY_NAME_MAX:
            problem = f"must be 1 to {KEY_NAME_MAX} characters"
            raise UserError(
                f"name {problem}", details=[{"field": "name", "message": problem, "code": "length"}]
            )
        secret = new_api_key()
        key_id, prefix, now = str(uuid.uuid4()), secret[:API_KEY_SHOWN], time.time()
        async with self._store.transaction() as tx:
            await rows.insert_api_key(
                tx,
                key_id=key_id,
                user_id=principal.user_id,
                name=name,
                prefix=prefix,
                key_hash=digest(secret),
                now=now,
            )
            await self._audit(
                tx,
                Audit.API_KEY_CREATED,
                f"{principal.username} created the API key {name!r} ({prefix}…)",
                client,
                user_id=principal.user_id,
                metadata={"keyId": key_id, "prefix": prefix},
            )
        return NewApiKey(ApiKey(key_id, name, prefix, now, None, None), secret)

    async def revoke_api_key(self, principal: Principal, key_id: str, client: Client) -> ApiKey:
        """Revoke one of the principal's own keys; anyone else's is 'not found'."""
        now = time.time()
        async with self._store.transaction() as tx:
            found = await rows.api_key_by_id(tx, key_id)
            if found is None or found.user_id != principal.user_id or found.revoked_at:
                raise UserError("no such API key", status=404, code="NOT_FOUND")
            await rows.revoke_api_key(tx, key_id, now)
            await self._audit(
                tx,
                Audit.API_KEY_REVOKED,
                f"{principal.username} revoked the API key {found.name!r} ({found.prefix}…)",
                client,
                user_id=principal.user_id,
                metadata={"keyId": key_id, "prefix": found.prefix},
            )
        return ApiKey(found.id, found.name, found.prefix, found.created_at, found.last_used_at, now)

    # -- registration ----------------------------------------------------------------------------

    async def registration_enabled(self) -> bool:
        return await settings.get(self._store, REGISTRATION_SETTING) is True

    async def set_registration(self, enabled: bool, *, actor: Principal, client: Client) -> bool:
        await settings.put(self._store, REGISTRATION_SETTING, enabled, category="auth")
        await self._audit(
            self._store,
            Audit.REGISTRATION_CHANGED,
            f"{actor.username} {'opened' if enabled else 'closed'} self-registration",
            client,
            user_id=actor.user_id,
            metadata={"enabled": enabled},
        )
        return enabled

    async def register(
        self, username: str, email: str | None, password: str, client: Client
    ) -> User:
        """Self-registration of a VIEWER, while an administrator allows it. Each address may
        register five accounts in 15 minutes (bcrypt is costly: it must not be a free DoS)."""
        if not await self.registration_enabled():
            raise UserError(
                "self-registration is closed; ask an administrator for an account",
                status=403,
                code="FORBIDDEN",
            )
        username, email = _checked_username(username), _checked_email(email)
        check_rules(password)
        self._throttle.begin([f"register:{client.address or 'local'}"])
        return await self._create(
            username,
            email,
            Role.VIEWER,
            await self._passwords.hash(password),
            actor=None,
            client=client,
            event=Audit.USER_REGISTERED,
        )

    # -- administration ------------------------------------------------------------------------

    async def users(self, page: int, limit: int) -> tuple[list[User], int]:
        found, total = await rows.page_users(self._store, page, limit)
        return [User.of(row) for row in found], total

    async def all_users(self) -> list[User]:
        return [User.of(row) for row in await rows.all_users(self._store)]

    async def user(self, user_id: str) -> User:
        return User.of(await self._user_row(user_id))

    async def user_named(self, username: str) -> User:
        row = await rows.user_by_username(self._store, username)
        if row is None:
            raise UserError(f"no user is named {username!r}", status=404, code="NOT_FOUND")
        return User.of(row)

    async def create_user(
        self,
        username: str,
        password: str,
        role: Role,
        email: str | None,
        *,
        actor: Principal | None,
        client: Client,
    ) -> User:
        """A new, active account. Raises 409 when the username or email is taken."""
        username, email = _checked_username(username), _checked_email(email)
        check_rules(password)
        password_hash = await self._passwords.hash(password)
        return await self._create(
            username,
            email,
            role,
            password_hash,
            actor=actor,
            client=client,
            event=Audit.USER_CREATED,
        )

    async def import_user(
        self,
        username: str,
        bcrypt_hash: str,
        role: Role,
        email: str | None,
        *,
        actor: Principal | None,
        client: Client,
    ) -> User:
        """A new, active account whose password is given only as a plain bcrypt hash (a
        card's first-boot settings); the first sign-in replaces the hash with our own kind."""
        username, email = _checked_username(username), _checked_email(email)
        return await self._create(
            username,
            email,
            role,
            imported_hash(bcrypt_hash),
            actor=actor,
            client=client,
            event=Audit.USER_CREATED,
        )

    async def _create(
        self,
        username: str,
        email: str | None,
        role: Role,
        password_hash: str,
        *,
        actor: Principal | None,
        client: Client,
        event: Audit,
        first_admin: bool = False,
    ) -> User:
        user_id, now = str(uuid.uuid4()), time.time()
        async with self._store.transaction() as tx:
            if first_admin and await rows.count_active_admins(tx):
                raise _setup_done()
            await _check_free(tx, username, email, None)
            await rows.insert_user(
                tx,
                user_id=user_id,
                username=username,
                email=email,
                role=role.value,
                password_hash=password_hash,
                now=now,
            )
            await self._audit(
                tx,
                event,
                f"{username} ({role.value}) was created by {_by(actor)}"
                if event is Audit.USER_CREATED
                else f"{username} ({role.value}) was created",
                client,
                user_id=user_id,
                metadata={"role": role.value, **({"by": actor.username} if actor else {})},
            )
            row = await rows.user_by_id(tx, user_id)
        assert row is not None
        if role is Role.ADMIN:
            await self._end_setup()
        return User.of(row)

    async def update_user(
        self,
        user_id: str,
        *,
        role: Role | None = None,
        is_active: bool | None = None,
        email: str | None = None,
        actor: Principal | None,
        client: Client,
    ) -> User:
        """Change an account's role, active flag or email ("" removes it). A role change or a
        deactivation ends its sessions. The last active administrator cannot be demoted or
        deactivated (409)."""
        new_email = None if not email else _checked_email(email)
        now = time.time()
        async with self._store.transaction() as tx:
            row = await rows.user_by_id(tx, user_id)
            if row is None:
                raise _no_user()
            changes: dict[str, object] = {}
            events: list[tuple[Audit, str]] = []
            who = f"by {_by(actor)}"
            if role is not None and role.value != row.role:
                changes["role"] = role.value
                events.append(
                    (Audit.ROLE_CHANGED, f"{row.username}: {row.role} -> {role.value} {who}")
                )
            if is_active is not None and is_active != row.is_active:
                changes["is_active"] = int(is_active)
                events.append(
                    (Audit.USER_ACTIVATED, f"{row.username} was activated {who}")
                    if is_active
                    else (Audit.USER_DEACTIVATED, f"{row.username} was deactivated {who}")
                )
            if email is not None and new_email != row.email:
                await _check_free(tx, None, new_email, row.id)
                changes["email"] = new_email
                events.append((Audit.EMAIL_CHANGED, f"The email of {row.username} changed {who}"))
            stays_admin = changes.get("role", row.role) == "ADMIN" and changes.get(
                "is_active", row.is_active
            )
            losing_admin = row.role == "ADMIN" and row.is_active and not stays_admin
            if losing_admin and await rows.count_active_admins(tx) <= 1:
                raise UserError(
                    f"{row.username} is the last active administrator; make another "
                    "account an administrator first",
                    status=409,
                    code="CONFLICT",
                )
            await rows.update_user(tx, row.id, now, **changes)
            ends = "role" in changes or changes.get("is_active") == 0
            ended = await rows.revoke_user_sessions(tx, row.id, now) if ends else 0
            for event, description in events:
                severity = Severity.WARNING if event is Audit.ROLE_CHANGED else Severity.INFO
                await self._audit(
                    tx,
                    event,
                    description,
                    client,
                    user_id=row.id,
                    severity=severity,
                    metadata={
                        "changes": {k: v for k, v in changes.items() if k != "email"},
                        "sessionsEnded": ended,
                        **({"by": actor.username} if actor else {}),
                    },
                )
            fresh = await rows.user_by_id(tx, row.id)
        assert fresh is not None
        if ends:
            self._bus.publish(SessionsRevoked(row.id, None))
        if fresh.role == "ADMIN" and fresh.is_active:
            await self._end_setup()
        return User.of(fresh)

    async def events(
        self,
        page: int,
        limit: int,
        severity: Severity | None = None,
        event_type: str | None = None,
    ) -> tuple[list[AuditEvent], int]:
        """One page of the audit log, newest first, and the total."""
        return await rows.page_events(self._store, page, limit, severity, event_type)

    # -- helpers -----------------------------------------------------------------------------------

    def _signing_secret(self) -> bytes:
        if self._secret is None:
            raise LezerError("the auth room has not started: no signing secret loaded")
        return self._secret

    async def _user_row(self, user_id: str) -> UserRow:
        row = await rows.user_by_id(self._store, user_id)
        if row is None:
            raise _no_user()
        return row

    async def _audit(
        self,
        db: Db,
        event: Audit,
        description: str,
        client: Client,
        *,
        user_id: str | None = None,
        severity: Severity = Severity.INFO,
        metadata: dict[str, object] | None = None,
    ) -> None:
        await rows.add_event(
            db,
            event_type=event.value,
            description=description,
            severity=severity,
            now=time.time(),
            user_id=user_id,
            ip_address=client.address,
            user_agent=_agent(client),
            metadata=metadata,
        )


_SETUP_LENGTH: Final = SETUP_GROUPS * SETUP_GROUP_LENGTH


def show_code(code: str) -> str:
    step = SETUP_GROUP_LENGTH
    return "-".join(code[i : i + step] for i in range(0, len(code), step))


def read_setup_code(path: Path) -> str | None:
    """The setup code as written in its file (for tests and tools), or None."""
    data = read_private(path)
    return None if data is None else data.decode("ascii").strip()


def _refused(reason: str, method: str) -> UserError:
    headers = {"Set-Cookie": _CLEAR_ACCESS_COOKIE} if method == "cookie" else None
    return UserError(reason, status=401, code="UNAUTHORIZED", headers=headers)


def _no_user() -> UserError:
    return UserError("no such user", status=404, code="NOT_FOUND")


def _setup_done() -> UserError:
    return UserError(
        "setup is done: an administrator exists; sign in instead", status=409, code="CONFLICT"
    )


def _address_key(client: Client) -> str:
    return f"address:{client.address or 'local'}"


def _agent(client: Client) -> str | None:
    return None if client.user_agent is None else client.user_agent[:USER_AGENT_MAX]


def _by(actor: Principal | None) -> str:
    return actor.username if actor is not None else "the command line"


def _checked_username(username: str) -> str:
    if not USERNAME.fullmatch(username):
        raise field_error("username", "must be 3 to 50 letters, digits, '_' or '-'", "pattern")
    return username


def _checked_email(email: str | None) -> str | None:
    if email is None:
        return None
    email = email.strip().lower()
    if len(email) > EMAIL_MAX or not EMAIL.fullmatch(email):
        raise field_error(
            "email", f"must be an email address of at most {EMAIL_MAX} characters", "pattern"
        )
    return email


async def _check_free(db: Db, username: str | None, email: str | None, owner: str | None) -> None:
    """409 when another account (not `owner`) has the username or the email."""
    if username is not None and await rows.user_by_username(db, username) is not None:
        raise UserError(
            f"the username {username!r} is taken",
            status=409,
            code="CONFLICT",
            details=[{"field": "username", "message": "is taken", "code": "taken"}],
        )
    if email is not None:
        holder = await rows.user_by_email(db, email)
        if holder is not None and holder.id != owner:
            raise UserError(
                "another account has this email",
                status=409,
                code="CONFLICT",
                details=[{"field": "email", "message": "is taken", "code": "taken"}],
            )


def _api_key(row: rows.ApiKeyRow) -> ApiKey:
    return ApiKey(row.id, row.name, row.prefix, row.created_at, row.last_used_at, row.revoked_at)
