"""While a print streams, reads from one address are paced so the printer keeps its rate.

Why: the web server and the serial link share one event loop. Every request wakes the loop and
holds it for a while (~0.3 ms here, a few ms on a Pi Zero); a script polling the API back to
back made the printer's replies wait often enough to cost an instant-ok stream a third of its
rate (bench/ws_load.py), and on a Pi Zero it would starve a real printer's planner. No page
needs more than a few reads a second: the live view comes over the websocket.

Rule: only reads (GET, HEAD) under /api/ are paced, only while the printer is printing, and
only beyond `rate` a second per client address (with a burst of as many). A read over the pace
waits its turn; one that would wait longer than MAX_WAIT seconds is answered 429 with
Retry-After. Actions (emergency stop, pause, cancel, commands) never wait. Buckets live in
memory and never grow without bound.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from lezerprintd.api.envelope import Handler
from lezerprintd.errors import UserError

MAX_WAIT: Final = 2.0  # seconds
MAX_ADDRESSES: Final = 1024
_READS: Final = frozenset({"GET", "HEAD"})


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class Pace:
    """Token buckets per address: `rate` reads a second, a burst of `rate`."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def wait_for(self, address: str) -> float:
        """Seconds the next read from `address` must wait (0: at once); the read is counted.
        Raises a 429 UserError when the wait would be longer than MAX_WAIT."""
        now = self._clock()
        bucket = self._buckets.get(address)
        if bucket is None:
            self._forget_idle(now)
            bucket = self._buckets[address] = _Bucket(self.rate, now)
        bucket.tokens = min(self.rate, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        # Tokens go below zero for reads already waiting, so each new one queues behind them.
        wait = max(0.0, (1 - bucket.tokens) / self.rate)
        if wait > MAX_WAIT:
            raise UserError(
                "too many requests while the printer is printing; slow down",
                status=429,
                code="RATE_LIMITED",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        bucket.tokens -= 1
        return wait

    def _forget_idle(self, now: float) -> None:
        if len(self._buckets) < MAX_ADDRESSES:
            return
        full = [
            address
            for address, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.updated) * self.rate >= self.rate
        ]
        for address in full or list(self._buckets)[: MAX_ADDRESSES // 2]:
            del self._buckets[address]


def pacing_middleware(rate: float, printing: Callable[[], bool]) -> Middleware:
    """Pace reads while `printing()`; `rate` 0 turns pacing off."""
    pace = Pace(rate)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            rate > 0
            and request.method in _READS
            and request.path.startswith("/api/")
            and printing()
        ):
            wait = pace.wait_for(request.remote or "")
            if wait > 0:
                await asyncio.sleep(wait)
        return await handler(request)

    return middleware
