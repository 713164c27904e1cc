"""Password rules, and bcrypt hashing that never runs on the event loop.

Rule: a password is hashed and checked only in a worker thread (`asyncio.to_thread`): one
bcrypt at cost 12 takes about a quarter of a second on a desktop and seconds on a Pi Zero,
and the printer link shares the loop.

bcrypt reads at most 72 bytes (bcrypt 5 refuses longer input) and stops at a NUL byte, so a
long passphrase would be cut short. Every password is therefore first digested with SHA-256
and base64-encoded (44 ASCII bytes, no NUL), and that is what bcrypt hashes: every character
of a 128-character password counts.

The one exception is an imported hash (see `IMPORTED`): a card's first-boot settings can only
hold what common tools make, plain bcrypt of the password. It is checked that way once and
replaced with our kind at the first sign-in.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from typing import Final

import bcrypt

from lezerprintd.errors import UserError

DEFAULT_COST: Final = 12
MIN_LENGTH: Final = 8
MAX_LENGTH: Final = 128
# A hash made elsewhere (a card's first-boot settings) with plain bcrypt over the password
# itself, as mkpasswd or htpasswd make it; it is kept with this mark and replaced by our own
# kind of hash at the account's first sign-in.
IMPORTED: Final = "imported:"
# Cost 4-14: a higher one would let anyone tie up a worker thread for minutes per sign-in
# attempt with that name, until its first sign-in replaces it.
BCRYPT_HASH: Final = re.compile(r"\$2[aby]\$(0[4-9]|1[0-4])\$[./A-Za-z0-9]{53}")


def check_rules(password: str, field: str = "password") -> None:
    """Raise a 400 naming `field` when `password` is too short or too long.

    Length is the only rule (counted in characters): composition rules push people towards
    predictable patterns, and a long passphrase of plain words is stronger than `Passw0rd!`.
    """
    if len(password) < MIN_LENGTH:
        problem = f"must be at least {MIN_LENGTH} characters"
    elif len(password) > MAX_LENGTH:
        problem = f"must be at most {MAX_LENGTH} characters"
    else:
        return
    raise UserError(
        f"the {field} {problem}",
        details=[{"field": field, "message": problem, "code": "length"}],
    )


def imported_hash(bcrypt_hash: str, field: str = "password_hash") -> str:
    """`bcrypt_hash` (plain bcrypt of the password) marked for keeping; a 400 naming `field`
    when it is not a bcrypt hash."""
    if not BCRYPT_HASH.fullmatch(bcrypt_hash):
        problem = "must be a bcrypt hash of cost 4-14 ($2b$12$ and 53 more characters)"
        raise UserError(
            f"the {field} {problem}",
            details=[{"field": field, "message": problem, "code": "format"}],
        )
    return IMPORTED + bcrypt_hash


def is_imported(hashed: str) -> bool:
    return hashed.startswith(IMPORTED)


def _prepared(password: str) -> bytes:
    return base64.b64encode(hashlib.sha256(password.encode("utf-8")).digest())


class Passwords:
    """bcrypt at a fixed cost; a lower cost is for tests only, and must be asked for."""

    def __init__(self, cost: int = DEFAULT_COST) -> None:
        self.cost = cost
        self._decoy: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hash, password)

    def _hash(self, password: str) -> str:
        return bcrypt.hashpw(_prepared(password), bcrypt.gensalt(self.cost)).decode("ascii")

    async def verify(self, password: str, hashed: str | None) -> bool:
        """Whether `password` matches `hashed`. With no hash (no such account, or one without a
        password) a decoy hash is checked instead, so the answer takes as long either way."""
        if hashed is None:
            if self._decoy is None:
                self._decoy = await self.hash("a decoy: no account has this password")
            await asyncio.to_thread(self._check, password, self._decoy)
            return False
        return await asyncio.to_thread(self._check, password, hashed)

    @staticmethod
    def _check(password: str, hashed: str) -> bool:
        try:
            if is_imported(hashed):
                # bcrypt tools cut the password at 72 bytes when they made the hash.
                plain = password.encode("utf-8")[:72]
                return bcrypt.checkpw(plain, hashed.removeprefix(IMPORTED).encode("ascii"))
            return bcrypt.checkpw(_prepared(password), hashed.encode("ascii"))
        except ValueError:
            return False  # not a bcrypt hash: nothing matches it
