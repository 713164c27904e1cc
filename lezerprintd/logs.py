"""Logging: plain lines on stderr, and the raw serial traffic in a size-capped file.

Rule: the event loop never writes a log file itself. Lines on stderr are cheap (journald adds
the timestamps under systemd); the serial log, which can see thousands of lines a second,
goes through a queue to a thread that owns the rotating file.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
from collections.abc import Callable
from pathlib import Path

from lezerprintd.config import LoggingConfig

SERIAL_LOGGER = "lezerprintd.serial"


def setup(
    config: LoggingConfig, serial_log_file: Path | None, console: bool = True
) -> Callable[[], None]:
    """Configure logging for a command; returns the function that flushes and stops it.

    `console=False` leaves the root logger alone (a test harness owns it).
    """
    if console:
        root = logging.getLogger()
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(stderr)
        root.setLevel(config.level.upper())
        # aiohttp logs every request at INFO; on an appliance that is noise unless debugging.
        logging.getLogger("aiohttp.access").setLevel(
            logging.DEBUG if config.level == "debug" else logging.WARNING
        )

    serial = logging.getLogger(SERIAL_LOGGER)
    serial.propagate = False
    for handler in serial.handlers[:]:
        serial.removeHandler(handler)
    if not config.serial_log or serial_log_file is None:
        serial.setLevel(logging.CRITICAL + 1)
        return lambda: None
    serial_log_file.parent.mkdir(parents=True, exist_ok=True)
    rotating = logging.handlers.RotatingFileHandler(
        serial_log_file,
        maxBytes=config.serial_log_max_bytes,
        backupCount=config.serial_log_backups,
        encoding="utf-8",
    )
    rotating.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    serial.addHandler(logging.handlers.QueueHandler(lines))
    serial.setLevel(logging.DEBUG)
    listener = logging.handlers.QueueListener(lines, rotating)
    listener.start()

    def stop() -> None:
        listener.stop()
        rotating.close()
        serial.setLevel(logging.CRITICAL + 1)

    return stop
