"""systemd's notify protocol: READY=1, STATUS=, WATCHDOG=1 and STOPPING=1 over NOTIFY_SOCKET.

Rule: without NOTIFY_SOCKET every call does nothing. The watchdog is pinged by a task on the
event loop itself, at half of WATCHDOG_USEC: a loop that is blocked stops pinging, and systemd
restarts the daemon. The protocol is one datagram of `KEY=value` lines per message (see
sd_notify(3)); a few lines of socket code, so no library is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Mapping
from typing import Final

log = logging.getLogger(__name__)

# SIGUSR2 blocks the event loop on purpose, so the watchdog can be seen to work (the boot
# test and an administrator can check it). Whoever may signal the daemon may kill it anyway.
BLOCK_SIGNAL: Final = signal.SIGUSR2


class Notifier:
    """Sends notify messages to the socket systemd named, if it named one."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self._address = _address(environ.get("NOTIFY_SOCKET", ""))
        self._socket: socket.socket | None = None
        if self._address is not None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)
        self.watchdog_interval = watchdog_interval(environ)
        self._status = ""
        self._pinger: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}")
        self._status = status

    def status(self, text: str) -> None:
        if text != self._status:
            self._status = text
            self._send(f"STATUS={text}")

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping")

    def start_watchdog(self) -> None:
        """Ping from this event loop at half the interval systemd gave (if it gave one)."""
        if self.enabled and self.watchdog_interval is not None and self._pinger is None:
            self._pinger = asyncio.create_task(self._ping(self.watchdog_interval / 2))

    async def close(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
            self._pinger = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def _ping(self, every: float) -> None:
        while True:
            self._send("WATCHDOG=1")
            await asyncio.sleep(every)

    def _send(self, message: str) -> None:
        if self._socket is None or self._address is None:
            return
        try:
            self._socket.sendto(message.encode(), self._address)
        except OSError as error:  # systemd gone or busy: the daemon runs on regardless
            log.debug("notify message not sent: %s", error)


def block_loop_on_signal(loop: asyncio.AbstractEventLoop) -> None:
    """On SIGUSR2, block the event loop for good (a watchdog test; see BLOCK_SIGNAL)."""

    def block() -> None:
        log.warning("blocking the event loop on request (SIGUSR2): the watchdog should end me")
        while True:
            time.sleep(3600)

    loop.add_signal_handler(BLOCK_SIGNAL, block)


def _address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):  # an abstract socket: a leading NUL byte instead of the @
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET=%r is neither a path nor @abstract; not notifying", value)
    return None


def watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """WATCHDOG_USEC in seconds, when the watchdog is meant for this process."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000
