"""Access tokens (signed JWTs), refresh tokens and API keys, and the secret that signs them.

Rule: a token is trusted only after its signature, algorithm, issuer, audience and expiry
have all been checked here; verification pins HS256, so `alg: none` and algorithm swaps are
refused. Refresh tokens and API keys are random strings that are stored only as SHA-256
hashes (they are long and random, so a fast hash is enough: there is nothing to guess).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import jwt

from lezerprintd.auth.secret_files import SecretFileError, read_private, write_private

ALGORITHM: Final = "HS256"
ISSUER: Final = "lezerprint-api"
AUDIENCE: Final = "lezerprint-client"
ACCESS_TTL: Final = 15 * 60  # seconds
REFRESH_TTL: Final = 7 * 24 * 60 * 60
SECRET_FILE: Final = "jwt-secret"
SECRET_BYTES: Final = 32
API_KEY_PREFIX: Final = "lpk_"
API_KEY_SHOWN: Final = 12  # characters of a key kept in clear, to tell keys apart
_REQUIRED: Final = ["exp", "iat", "iss", "aud", "sub", "sid", "role", "jti"]


class TokenError(Exception):
    """An access token that must not be trusted; `reason` is safe to show a client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: str  # sub
    session_id: str  # sid
    role: str
    token_id: str  # jti
    issued_at: int
    expires_at: int


def load_secret(data_dir: Path) -> bytes:
    """The signing secret from `<data_dir>/jwt-secret`, made (0600) on first start.

    Raises SecretFileError when the file cannot be written, is too short, or is readable by
    others and cannot be tightened. Replacing the file signs everybody out.
    """
    path = data_dir / SECRET_FILE
    text = read_private(path)
    if text is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        write_private(path, (secrets.token_hex(SECRET_BYTES) + "\n").encode("ascii"))
        text = read_private(path)
        assert text is not None
    try:
        secret = bytes.fromhex(text.decode("ascii").strip())
    except ValueError:
        secret = b""
    if len(secret) < SECRET_BYTES:
        raise SecretFileError(
            f"{path} does not hold a secret of {SECRET_BYTES} or more random bytes in hex; "
            "delete it and restart to make a new one (everyone will have to sign in again)"
        )
    return secret


def issue_access(
    secret: bytes, *, user_id: str, session_id: str, role: str, now: int
) -> tuple[str, AccessClaims]:
    claims = AccessClaims(user_id, session_id, role, uuid.uuid4().hex, now, now + ACCESS_TTL)
    payload = {
        "sub": claims.user_id,
        "sid": claims.session_id,
        "role": claims.role,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": claims.issued_at,
        "exp": claims.expires_at,
        "jti": claims.token_id,
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM), claims


def verify_access(secret: bytes, token: str) -> AccessClaims:
    """The claims of a valid access token; TokenError says why any other is refused."""
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": _REQUIRED},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("the access token has expired") from None
    except jwt.InvalidTokenError:
        raise TokenError("the access token is invalid") from None
    sub, sid, role, jti = payload["sub"], payload["sid"], payload["role"], payload["jti"]
    iat, exp = payload["iat"], payload["exp"]
    if not all(isinstance(value, str) for value in (sub, sid, role, jti)) or not all(
        isinstance(value, int) for value in (iat, exp)
    ):
        raise TokenError("the access token is invalid")
    return AccessClaims(sub, sid, role, jti, iat, exp)


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """How a refresh token or an API key is stored and looked up."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()
