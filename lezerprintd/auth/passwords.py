"""Password rules, and bcrypt hashing that never runs on the event loop.

Rule: a password is hashed and checked only in a worker thread (`asyncio.to_thread`): one
bcrypt at cost 12 takes about a quarter of a second on a desktop and seconds on a Pi Zero,
and the printer link shares the loop.

bcrypt reads at most 72 bytes (bcrypt 5 refuses longer input) and stops at a NUL byte, so a
long passphrase would be cut short. Every password is therefore first digested with SHA-256
and base64-encoded (44 ASCII bytes, no NUL), and that is what bcrypt hashes: every character
of a 128-character password counts.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Final

import bcrypt

from lezerprintd.errors import UserError

DEFAULT_COST: Final = 12
MIN_LENGTH: Final = 8
MAX_LENGTH: Final = 128


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
            return bcrypt.checkpw(_prepared(password), hashed.encode("ascii"))
        except ValueError:
            return False  # not a bcrypt hash: nothing matches it
