"""Brute-force throttling: at most `limit` failed attempts per key in a sliding window.

Rule: an attempt is counted from the moment it starts, before the slow password check, and
forgiven only once it has succeeded; so a burst of parallel guesses cannot all slip past the
limit while their hashes are still being computed. Counters live in memory and never grow
without bound: keys whose attempts are all older than the window are dropped, and past
`max_keys` the least recently used keys go first.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from lezerprintd.errors import UserError

LIMIT: Final = 5
WINDOW: Final = 15 * 60.0  # seconds


@dataclass(frozen=True, slots=True)
class Attempt:
    keys: tuple[str, ...]
    started: float


class Throttle:
    def __init__(
        self,
        limit: int = LIMIT,
        window: float = WINDOW,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._max_keys = max_keys
        self._clock = clock
        # key -> start times of its counted attempts, oldest first; dict order = recency
        self._attempts: dict[str, deque[float]] = {}

    def begin(self, keys: Sequence[str]) -> Attempt:
        """Count an attempt against every key, or raise 429 RATE_LIMITED when any key has
        used up its attempts (Retry-After: seconds until one of them frees up)."""
        now = self._clock()
        wait = max((self._wait(key, now) for key in keys), default=0.0)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise UserError(
                f"too many failed attempts; try again in {seconds} seconds",
                status=429,
                code="RATE_LIMITED",
                details={"retryAfter": seconds},
                headers={"Retry-After": str(seconds)},
            )
        for key in keys:
            times = self._attempts.pop(key, None) or deque()
            times.append(now)
            self._attempts[key] = times  # re-inserted: most recently used
        self._bound(now)
        return Attempt(tuple(keys), now)

    def forgive(self, attempt: Attempt) -> None:
        """The attempt succeeded: it does not count."""
        for key in attempt.keys:
            times = self._attempts.get(key)
            if times is not None and attempt.started in times:
                times.remove(attempt.started)
                if not times:
                    del self._attempts[key]

    def _wait(self, key: str, now: float) -> float:
        times = self._attempts.get(key)
        if times is None:
            return 0.0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._attempts[key]
            return 0.0
        if len(times) < self.limit:
            return 0.0
        # Free again once the attempt `limit` places from the newest leaves the window.
        return times[-self.limit] + self.window - now

    def _bound(self, now: float) -> None:
        if len(self._attempts) <= self._max_keys:
            return
        for key in [k for k, times in self._attempts.items() if times[-1] <= now - self.window]:
            del self._attempts[key]
        while len(self._attempts) > self._max_keys:
            del self._attempts[next(iter(self._attempts))]
