"""The serial port: which ports and rates to try, and opening one for asyncio.

Rule: no protocol decisions here. Whether a port at a rate has a printer on it is decided by
the printer room's handshake; this room only lists candidates and opens them, exclusively so
that no second program (or a second lezerprintd) can write into a running print.
"""

from __future__ import annotations

import asyncio
import glob
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from lezerprintd.errors import PrinterError

# The stable names our udev rules create come first (udev/60-lezerprint.rules: each board's
# model-serial name, which stays with the board, before the shared "printer" link), then names
# that udev gives every USB serial device, then raw kernel names (a board without a serial
# number appears only there).
PORT_PATTERNS: Final = (
    "/dev/lezerprint/*-*",
    "/dev/lezerprint/printer",
    "/dev/serial/by-id/*",
    "/dev/ttyACM*",
    "/dev/ttyUSB*",
)
# Marlin's common rates, most common first; a wrong rate shows up as silence or garbage.
AUTO_BAUDS: Final = (115200, 250000, 230400, 57600)


@dataclass(frozen=True, slots=True)
class PortChoice:
    path: str
    baud: int


def candidate_ports(patterns: Iterable[str] = PORT_PATTERNS) -> list[str]:
    """Existing serial devices, best names first, each physical port once."""
    seen: set[str] = set()
    found = []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            real = os.path.realpath(path)
            if real in seen or not os.path.exists(real):
                continue
            seen.add(real)
            found.append(path)
    return found


def connection_attempts(
    port: str,
    baud: int | Literal["auto"],
    remembered: PortChoice | None = None,
    patterns: Iterable[str] = PORT_PATTERNS,
) -> list[PortChoice]:
    """The (port, rate) pairs to try in order: the last one that worked first."""
    ports = candidate_ports(patterns) if port == "auto" else [port]
    bauds = list(AUTO_BAUDS) if baud == "auto" else [baud]
    attempts = [PortChoice(path, rate) for path in ports for rate in bauds]
    if remembered is not None and remembered in attempts:
        attempts.remove(remembered)
        attempts.insert(0, remembered)
    return attempts


async def open_port(choice: PortChoice, protocol: asyncio.Protocol) -> asyncio.Transport:
    """Open `choice` for `protocol` with an exclusive lock. Raises PrinterError when it cannot."""
    # Imported here: only a connecting printer needs pyserial, not every CLI command.
    import serial
    import serial_asyncio_fast

    loop = asyncio.get_running_loop()
    # The handshake writes to whatever is opened: only a character device (a serial port, a
    # pty) may be, never a file that merely has the name someone typed.
    try:
        is_device = stat.S_ISCHR(os.stat(choice.path).st_mode)
    except OSError as error:
        raise PrinterError(f"cannot open {choice.path}: {error.strerror}") from error
    if not is_device:
        raise PrinterError(f"cannot open {choice.path}: it is not a serial device")
    try:
        transport, _ = await serial_asyncio_fast.create_serial_connection(
            loop, lambda: protocol, choice.path, baudrate=choice.baud, exclusive=True
        )
    except (serial.SerialException, OSError, ValueError) as error:
        reason = str(error)
        if "lock" in reason.lower():
            reason = "another program is using it"
        raise PrinterError(f"cannot open {choice.path} at {choice.baud} baud: {reason}") from error
    assert isinstance(transport, asyncio.Transport)
    return transport
