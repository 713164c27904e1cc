"""A virtual Marlin 2.1 firmware served on a real pseudo-terminal, with deterministic faults.

`VirtualFirmware` is the sans-IO core: bytes and the current time go in, bytes come out. It owns no
thread, no file descriptor and no clock, so it can be driven byte by byte. `VirtualPrinter` is the
thin runner that serves one core on an `os.openpty()` pair from a daemon thread, and `run_forever`
is the `lezerprintd virtual-printer` command.

The rule: every byte the host sees is one a stock Marlin 2.1 board would send, in the order it would
send it, and the host reaches the firmware only through the real pty - no back door. Every fault is
drawn from the one seeded `random.Random`, so the same seed and the same input give the same run.
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import errno
import fcntl
import math
import os
import queue
import random
import re
import select
import signal
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import NamedTuple, TextIO

from lezerprintd.errors import LezerError

__all__ = [
    "EXTERNAL_RESET",
    "POWER_UP",
    "HeaterReading",
    "VirtualFirmware",
    "VirtualOptions",
    "VirtualPrinter",
    "VirtualPrinterError",
    "run_forever",
]


class VirtualPrinterError(LezerError):
    """The virtual printer was misused: a bad option, or a call while it is not running."""


@dataclass(frozen=True, slots=True)
class VirtualOptions:
    """How the virtual board behaves. The defaults are a stock Marlin 2.1 build on an AVR board."""

    speedup: float = 1.0
    instant: bool = False
    advanced_ok: bool = False
    autoreport_temp: bool = True
    bufsize: int = 4
    planner_blocks: int = 16
    rx_buffer: int = 128
    resend_ok: bool = True
    keepalive: float = 2.0
    checksum_error_rate: float = 0.0
    lost_ok_rate: float = 0.0
    busy_rate: float = 0.0
    busy_seconds: float = 3.0
    fragment_replies: bool = False
    seed: int | None = None
    # Tests compare `accepted` with the file they streamed; a demo printer that runs for
    # weeks must not keep every command it ever received.
    record_accepted: bool = True
    # The board's UART rate. A host that opens the port at another rate hears noise and is
    # not understood, as on a real board; None accepts every rate (a pty has no wire).
    baud: int | None = None

    def __post_init__(self) -> None:
        if not self.speedup > 0:
            raise VirtualPrinterError(f"speedup must be above 0, not {self.speedup}")
        if self.bufsize < 1 or self.planner_blocks < 1:
            raise VirtualPrinterError("bufsize and planner_blocks must be at least 1")
        if self.rx_buffer < 0:
            raise VirtualPrinterError("rx_buffer must be 0 (unlimited) or more")
        if self.keepalive < 0 or self.busy_seconds < 0:
            raise VirtualPrinterError("keepalive and busy_seconds cannot be negative")
        for name in ("checksum_error_rate", "lost_ok_rate", "busy_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise VirtualPrinterError(f"{name} must lie in 0..1, not {rate}")


DEFAULT_OPTIONS = VirtualOptions()

# The options set_faults() may change while the printer runs.
FAULT_OPTIONS = frozenset(
    {"checksum_error_rate", "lost_ok_rate", "busy_rate", "busy_seconds", "fragment_replies"}
)


@dataclass(frozen=True, slots=True)
class HeaterReading:
    """One heater as the thermistor and the firmware see it, in degrees Celsius."""

    current: float
    target: float


# The reset causes Marlin prints after "start" (language.h STR_POWERUP, STR_EXTERNAL_RESET).
POWER_UP = "PowerUp"
EXTERNAL_RESET = " External Reset"

_FIRMWARE_NAME = (
    "FIRMWARE_NAME:Marlin 2.1.2 (LezerPrint virtual)"
    " SOURCE_CODE_URL:github.com/MarlinFirmware/Marlin"
    " PROTOCOL_VERSION:1.0"
    " MACHINE_TYPE:LezerPrint Virtual"
    " EXTRUDER_COUNT:1"
    " UUID:5f3c2a9e-8d41-4b6a-9c07-2e1d4f6a8b30"
)

# M115 capability lines in Marlin 2.1.2's order (gcode/host/M115.cpp); values describe this board,
# a single-extruder printer without probe, SD card or runout sensor.
_CAPABILITIES = (
    ("SERIAL_XON_XOFF", False),
    ("BINARY_FILE_TRANSFER", False),
    ("EEPROM", True),
    ("VOLUMETRIC", True),
    ("AUTOREPORT_POS", False),
    ("AUTOREPORT_TEMP", True),
    ("PROGRESS", False),
    ("PRINT_JOB", True),
    ("AUTOLEVEL", False),
    ("RUNOUT", False),
    ("Z_PROBE", False),
    ("LEVELING_DATA", False),
    ("BUILD_PERCENT", True),
    ("SOFTWARE_POWER", False),
    ("TOGGLE_LIGHTS", False),
    ("CASE_LIGHT_BRIGHTNESS", False),
    ("EMERGENCY_PARSER", True),
    ("HOST_ACTION_COMMANDS", True),
    ("PROMPT_SUPPORT", True),
    ("SDCARD", False),
    ("REPEAT", False),
    ("SD_WRITE", False),
    ("AUTOREPORT_SD_STATUS", False),
    ("LONG_FILENAME", False),
    ("LFN_WRITE", False),
    ("CUSTOM_FIRMWARE_UPLOAD", False),
    ("EXTENDED_M20", False),
    ("THERMAL_PROTECTION", True),
    ("MOTION_MODES", False),
    ("ARCS", True),
    ("BABYSTEPPING", False),
    ("CHAMBER_TEMPERATURE", False),
    ("COOLER_TEMPERATURE", False),
    ("MEATPACK", False),
    ("CONFIG_EXPORT", False),
)

_M503_REPORT = (
    "echo:; Steps per unit:",
    "echo:  M92 X80.00 Y80.00 Z400.00 E500.00",
    "echo:; Max feedrates (units/s):",
    "echo:  M203 X300.00 Y300.00 Z5.00 E25.00",
    "echo:; Max Acceleration (units/s2):",
    "echo:  M201 X3000.00 Y3000.00 Z100.00 E10000.00",
    "echo:; Acceleration (units/s2) (P<print-accel> R<retract-accel> T<travel-accel>):",
    "echo:  M204 P3000.00 R3000.00 T3000.00",
    "echo:; Advanced (B<min_segment_time_us> S<min_feedrate> T<min_travel_feedrate> J<junc_dev>):",
    "echo:  M205 B20000.00 S0.00 T0.00 J0.01",
    "echo:; Home offset:",
    "echo:  M206 X0.00 Y0.00 Z0.00",
    "echo:; Hotend PID:",
    "echo:  M301 P22.20 I1.08 D114.00",
)

_ERR_LINE_NUMBER = "Line Number is not Last Line Number+1, Last Line: "
_ERR_CHECKSUM = "checksum mismatch, Last Line: "
_ERR_NO_CHECKSUM = "No Checksum with line number, Last Line: "

# Marlin's MAX_CMD_SIZE is 96: the line buffer keeps 95 characters and skips the rest of the line.
_LINE_KEEP = 95
# Raw bytes kept for a line still waiting for its end; enough to find a comment and then truncate.
_PARTIAL_KEEP = 256
# The emergency parser state is per line, so only a line start's worth of history matters.
_EMERGENCY_TAIL = 96

_STEPS_PER_MM = (80.0, 80.0, 400.0)
_MAX_FEEDRATE = (300.0, 300.0, 5.0, 25.0)  # mm/s, DEFAULT_MAX_FEEDRATE
_DEFAULT_FEEDRATE = 3000.0  # mm/min
_HOMING_SECONDS = 4.0

# Heater model: first-order with a proportional controller around a feed-forward hold power.
# A hotend at full power settles at 280 C with a 51 s time constant (20 -> 200 C in about a minute),
# a bed at 160 C with 273 s (20 -> 60 C in about 90 s).
_PROPORTIONAL_GAIN = 30.0  # loop gain: power per degree times the full-power span
_HOTEND_MAX_TARGET = 260  # HEATER_0_MAXTEMP 275 - HOTEND_OVERSHOOT 15
_BED_MAX_TARGET = 140  # BED_MAXTEMP 150 - BED_OVERSHOOT 10
_TEMP_WINDOW = 1.0
_TEMP_HYSTERESIS = 3.0
_TEMP_RESIDENCY = 10.0  # seconds, TEMP_RESIDENCY_TIME and TEMP_BED_RESIDENCY_TIME
_COOLING_SLOPE_DEG = 1.5
_COOLING_SLOPE_TIME = 60.0
# Marlin prints the wait report every second; at high speedups that would flood the host.
_MIN_WAIT_REPORT = 0.02
_MIN_WAIT_CHECK = 0.005
_HEATER_REFRESH = 0.5  # wall seconds between model updates while a heater is still moving

_CR_TO_LF = bytes.maketrans(b"\r", b"\n")
_LEADING_INT = re.compile(rb"\s*([-+]?\d+)")
_LINE_NUMBER_PREFIX = re.compile(rb"N[-+]?\d*\s*")
_COMMAND = re.compile(r"\s*([A-Za-z])\s*(\d*)")
_PARAM = re.compile(r"([A-Z])\s*([-+]?(?:\d+\.?\d*|\.\d+))?")
_MOVE_PARAM = re.compile(r"([XYZEFIJ])\s*([-+]?(?:\d+\.?\d*|\.\d+))")
# The emergency parser (feature/e_parser.h) acts on "M108", "M112" or "M410" at the start of a line,
# optionally after spaces and an "N<number>" prefix, once the end of that line arrives.
_EMERGENCY_CANDIDATE = re.compile(rb"M *(108|112|410)")
_EMERGENCY_PREFIX = re.compile(rb"[ \n]*(?:N[-0-9 ]*)?")

_Job = Generator[float, None, None]
_Position = tuple[float, float, float, float]
_Handler = Callable[[str, int], "_Job | None"]


class _Block(NamedTuple):
    start: float
    end: float
    origin: _Position
    target: _Position


def _strtol(data: bytes, pos: int) -> int:
    """C strtol as Marlin uses it: leading spaces, a sign, digits; 0 when there is no number."""
    match = _LEADING_INT.match(data, pos)
    return int(match.group(1)) if match else 0


def _checksum(data: bytes) -> int:
    """XOR of all bytes, folded as one big integer because a Python loop per byte is too slow."""
    value = int.from_bytes(data, "little")
    width = len(data)
    while width > 1:
        half = (width + 1) >> 1
        bits = half << 3
        value = (value >> bits) ^ (value & ((1 << bits) - 1))
        width = half
    return value


class _Heater:
    """A first-order thermal model under a proportional controller. Time is simulated seconds."""

    __slots__ = ("ambient", "full_power", "max_target", "power", "target", "tau", "temp")

    def __init__(self, ambient: float, full_power: float, tau: float, max_target: int) -> None:
        self.ambient = ambient
        self.full_power = full_power
        self.tau = tau
        self.max_target = max_target
        self.temp = ambient
        self.target = 0.0
        self.power = 0.0

    def set_target(self, celsius: float) -> None:
        # Marlin keeps targets as whole degrees and clamps them silently below the max temperature.
        self.target = float(min(max(int(celsius), 0), self.max_target))
        self.power = self._power_at(self.temp)

    def jump_to_target(self) -> None:
        self.temp = max(self.target, self.ambient)
        self.power = self._power_at(self.temp)

    def _power_at(self, temp: float) -> float:
        if self.target <= self.ambient:
            return 0.0
        span = self.full_power - self.ambient
        hold = min((self.target - self.ambient) / span, 1.0)
        return min(max(hold + _PROPORTIONAL_GAIN / span * (self.target - temp), 0.0), 1.0)

    def settled(self) -> bool:
        goal = self.target if self.target > self.ambient else self.ambient
        return abs(self.temp - goal) < 0.005

    def advance(self, dt: float) -> None:
        span = self.full_power - self.ambient
        while dt > 0.0:
            if self.target <= self.ambient:
                self.power = 0.0
                self.temp = self.ambient + (self.temp - self.ambient) * math.exp(-dt / self.tau)
                return
            hold = min((self.target - self.ambient) / span, 1.0)
            gain = _PROPORTIONAL_GAIN / span
            low = self.target - (1.0 - hold) / gain
            high = self.target + hold / gain
            if low <= self.temp <= high:
                # Unsaturated, the loop is linear and closes on the target exponentially.
                rate = (1.0 + _PROPORTIONAL_GAIN) / self.tau
                self.temp = self.target + (self.temp - self.target) * math.exp(-dt * rate)
                self.power = hold + gain * (self.target - self.temp)
                return
            power, edge = (1.0, low) if self.temp < low else (0.0, high)
            settle = self.ambient + power * span
            self.power = power
            ratio = (edge - settle) / (self.temp - settle)
            reach = -self.tau * math.log(ratio) if ratio > 0.0 else math.inf
            if reach >= dt:
                self.temp = settle + (self.temp - settle) * math.exp(-dt / self.tau)
                return
            self.temp = edge
            dt -= reach


class VirtualFirmware:
    """The sans-IO Marlin core: `receive_data`, `advance`, `data_to_send`, `next_deadline`.

    Times are wall-clock seconds from any monotonic origin; motion, heating and dwell run
    `options.speedup` times faster. `accepted` is appended to, never cleared, so an observer's
    record survives resets.
    """

    # Everything below is firmware state: boot() sets all of it afresh.
    _now: float
    _halted: bool
    _last_n: int
    _rx: bytearray
    _line: bytes
    _ep_tail: bytes
    _ring: deque[tuple[str, int | None]]
    _job: _Job | None
    _job_wake: float
    _skip_ok: bool
    _busy_at: float | None
    _report_every: float
    _report_at: float | None
    _wait_for_heatup: bool
    _planner: deque[_Block]
    _pos: _Position
    _feedrate: float
    _feed_percent: int
    _flow_percent: int
    _relative: bool
    _relative_e: bool
    _fan: int
    _hotend: _Heater
    _bed: _Heater
    _quick_stops: int

    def __init__(
        self, options: VirtualOptions, rng: random.Random, accepted: list[str], now: float
    ) -> None:
        self.options = options
        self.accepted = accepted
        self.rx_dropped_bytes = 0
        self._rng = rng
        self._out: list[str] = []
        self._handlers = self._handler_table()
        self._clear(now)

    # -- the sans-IO surface ---------------------------------------------------------------

    def boot(self, now: float, cause: str = POWER_UP) -> None:
        """Start from scratch as after power-up or a reset, and print the boot banner."""
        self._clear(max(now, self._now))
        self._emit("start")
        self._emit(cause)
        self._emit("Marlin 2.1.2")
        self._emit("echo: Last Updated: 2022-12-22 | Author: (LezerPrint, virtual)")
        self._emit("echo: Compiled: Dec 22 2022")
        self._emit("echo: Free Memory: 4739  PlannerBufferBytes: 1152")

    def set_options(self, options: VirtualOptions) -> None:
        self.options = options

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes from the host arrived at `now`."""
        self.advance(now)
        if self._halted or not data:
            return
        if b"\r" in data:
            # Marlin ends a line at either CR or LF and ignores the empty line between CR and LF.
            data = data.translate(_CR_TO_LF)
        tail = self._ep_tail
        seam = tail[-3:] + data[:3]
        if any(code in data or code in seam for code in (b"108", b"112", b"410")):
            self._receive_watching_emergencies(tail + data, len(tail))
        else:
            self._feed(data)
        eol = data.rfind(b"\n")
        tail = data[eol + 1 :] if eol >= 0 else tail + data
        # A NUL can never start an emergency line, so it stands for "rest of this line ignored".
        self._ep_tail = tail if len(tail) <= _EMERGENCY_TAIL else b"\x00"

    def advance(self, now: float) -> None:
        """Let time pass up to `now`: moves finish, heaters heat, waits end, reports go out."""
        while not self._halted:
            due = self._next_event()
            if due is None or due > now:
                break
            self._step_to(due)
            if self._report_at is not None and self._report_at <= due:
                self._report_at = due + self._report_every
                self._emit(self._heater_states())
            if self._busy_at is not None and self._busy_at <= due:
                self._busy_at = due + self.options.keepalive
                self._emit("echo:busy: processing")
            if self._job is not None and self._job_wake <= due:
                self._process()
        self._step_to(now)

    def data_to_send(self) -> bytes:
        """Everything printed since the last call."""
        if not self._out:
            return b""
        data = "".join(self._out).encode()
        self._out.clear()
        return data

    def next_deadline(self) -> float | None:
        """When `advance` next has something to do; None while only new input can change things."""
        if self._halted:
            return None
        deadline = self._next_event()
        if not self.options.instant and not (self._hotend.settled() and self._bed.settled()):
            refresh = self._now + _HEATER_REFRESH
            deadline = refresh if deadline is None else min(deadline, refresh)
        return deadline

    @property
    def rx_backlog(self) -> int:
        """Bytes in the serial RX buffer that the firmware has not read yet."""
        return len(self._rx)

    @property
    def halted(self) -> bool:
        return self._halted

    @property
    def hotend(self) -> HeaterReading:
        return HeaterReading(self._hotend.temp, self._hotend.target)

    @property
    def bed(self) -> HeaterReading:
        return HeaterReading(self._bed.temp, self._bed.target)

    @property
    def position(self) -> _Position:
        """Where the last accepted move goes (Marlin's current_position, what M114 reports)."""
        return self._pos

    @property
    def last_line_number(self) -> int:
        return self._last_n

    # -- state -----------------------------------------------------------------------------

    def _clear(self, now: float) -> None:
        self._now = now
        self._halted = False
        self._last_n = 0
        self._rx = bytearray()
        self._line = b""
        self._ep_tail = b""
        self._ring = deque()
        self._job = None
        self._job_wake = now
        self._skip_ok = False
        self._busy_at = None
        self._report_every = 0.0
        self._report_at = None
        self._wait_for_heatup = False
        self._planner = deque()
        self._pos = (0.0, 0.0, 0.0, 0.0)
        self._feedrate = _DEFAULT_FEEDRATE
        self._feed_percent = 100
        self._flow_percent = 100
        self._relative = False
        self._relative_e = False
        self._fan = 0
        self._quick_stops = 0
        self._hotend = _Heater(21.3, full_power=280.0, tau=51.1, max_target=_HOTEND_MAX_TARGET)
        self._bed = _Heater(21.8, full_power=160.0, tau=273.0, max_target=_BED_MAX_TARGET)
        self._out.clear()

    def _emit(self, line: str) -> None:
        self._out.append(line + "\n")

    def _send_ok(self, line: str) -> None:
        if self.options.lost_ok_rate and self._rng.random() < self.options.lost_ok_rate:
            return
        self._emit(line)

    def _next_event(self) -> float | None:
        due = self._job_wake if self._job is not None else None
        for when in (self._busy_at, self._report_at):
            if when is not None and (due is None or when < due):
                due = when
        return due

    def _step_to(self, now: float) -> None:
        dt = now - self._now
        if dt > 0.0:
            if not self.options.instant:
                simulated = dt * self.options.speedup
                self._hotend.advance(simulated)
                self._bed.advance(simulated)
            self._now = now
        planner = self._planner
        while planner and planner[0].end <= self._now:
            planner.popleft()

    # -- receiving -------------------------------------------------------------------------

    def _receive_watching_emergencies(self, buffer: bytes, start: int) -> None:
        # The emergency parser runs in the serial interrupt, so it acts when the end of its line
        # arrives - before the lines ahead of it are processed and even when the RX buffer is full.
        for match in _EMERGENCY_CANDIDATE.finditer(buffer):
            line_start = buffer.rfind(b"\n", 0, match.start()) + 1
            if not _EMERGENCY_PREFIX.fullmatch(buffer, line_start, match.start()):
                continue
            eol = buffer.find(b"\n", match.end())
            if eol < 0:
                break
            # Everything before the line's end is in; the end itself reaches the main loop after
            # the parser has acted, so a killed board never runs the M112 line as a command.
            self._feed(buffer[start:eol])
            start = eol
            self._emergency(match.group(1))
            if self._halted:
                return
        self._feed(buffer[start:])

    def _emergency(self, code: bytes) -> None:
        if self._halted:
            return
        if code == b"112":
            self._kill()
            return
        if code == b"108":
            self._wait_for_heatup = False
        else:
            self._quick_stop()
        if self._job is not None:
            self._job_wake = self._now
            self._process()

    def _feed(self, data: bytes) -> None:
        if self._halted:
            return  # a killed board has interrupts off: nothing is received any more
        capacity = self.options.rx_buffer
        if not capacity:
            self._rx += data
            self._process()
            return
        done = 0
        while done < len(data):
            room = capacity - len(self._rx)
            if room <= 0:
                self._process()
                room = capacity - len(self._rx)
                if room <= 0:
                    # The UART has nowhere to put them: an AVR drops bytes that arrive now.
                    self.rx_dropped_bytes += len(data) - done
                    return
            self._rx += data[done : done + room]
            done += room
        self._process()

    def _pump(self) -> None:
        """Marlin's get_serial_commands(): read the RX buffer into the ring while it has room."""
        rx = self._rx
        ring = self._ring
        bufsize = self.options.bufsize
        pos = 0
        while len(ring) < bufsize and not self._halted:
            eol = rx.find(b"\n", pos)
            if eol < 0:
                if pos < len(rx):
                    self._line = (self._line + rx[pos:])[:_PARTIAL_KEEP]
                rx.clear()
                return
            raw = bytes(rx[pos:eol])
            pos = eol + 1
            if self._line:
                raw = (self._line + raw)[:_PARTIAL_KEEP]
                self._line = b""
            if self._take_line(raw):
                pos = 0  # the error path flushed the RX buffer
        if pos:
            del rx[:pos]

    def _take_line(self, raw: bytes) -> bool:
        """Check one line and put it in the ring. True when an error flushed the RX buffer."""
        comment = raw.find(b";")
        if comment >= 0:
            raw = raw[:comment]
        command = raw[:_LINE_KEEP].strip()
        if not command:
            return False
        number: int | None = None
        if command[0] == 0x4E:  # "N"
            rate = self.options.checksum_error_rate
            if rate and self._rng.random() < rate:
                command = self._corrupt(command)
            line_n = _strtol(command, 1)
            n = line_n
            if b"M110" in command:
                # queue.cpp: a line holding M110 sets the line number from M110's own N, unchecked.
                other = command.find(b"N", 4)
                if other >= 0:
                    n = _strtol(command, other + 1)
            elif n != self._last_n + 1:
                return self._line_error(_ERR_LINE_NUMBER)
            star = command.rfind(b"*")
            if star < 0:
                return self._line_error(_ERR_NO_CHECKSUM)
            if _strtol(command, star + 1) != _checksum(command[:star]):
                return self._line_error(_ERR_CHECKSUM)
            self._last_n = n
            prefix = _LINE_NUMBER_PREFIX.match(command)
            command = command[prefix.end() if prefix else 0 : star].strip()
            number = line_n
        elif (star := command.rfind(b"*")) >= 0:
            # Marlin 2.x checks no checksum without a line number and runs the command as it
            # is (its parser cuts the "*..." off). After a flush, this is how the tail of a
            # line that was on its way in gets run.
            command = command[:star].strip()
        text = command.decode(errors="replace")
        if self.options.record_accepted:
            self.accepted.append(text)
        self._ring.append((text, number))
        return False

    def _corrupt(self, command: bytes) -> bytes:
        # One character between the line number and the checksum changes in transit, so the XOR
        # (or, if it hits the number's end, the line number check) is sure to reject the line.
        prefix = _LINE_NUMBER_PREFIX.match(command)
        first = prefix.end() if prefix else 1
        star = command.rfind(b"*")
        if star <= first:
            return command
        where = self._rng.randrange(first, star)
        replacement = self._rng.randrange(0x21, 0x7E)
        if replacement == command[where]:
            replacement += 1
        return command[:where] + bytes((replacement,)) + command[where + 1 :]

    def _line_error(self, message: str) -> bool:
        self._emit(f"Error:{message}{self._last_n}")
        # gcode_line_error() empties the RX buffer: whatever followed the bad line is lost too.
        self._rx.clear()
        self._line = b""
        self._emit(f"Resend: {self._last_n + 1}")
        if self.options.resend_ok:
            self._send_ok("ok")
        return True

    # -- executing -------------------------------------------------------------------------

    def _process(self) -> None:
        """Marlin's loop: refill the ring, run its head, send ok when it finishes, repeat."""
        ring = self._ring
        while not self._halted:
            if len(ring) < self.options.bufsize and self._rx:
                self._pump()
            job = self._job
            if job is not None:
                if self._job_wake > self._now:
                    return
                try:
                    self._job_wake = next(job)
                except StopIteration:
                    self._job = None
                    if not self._halted:
                        self._finish()
            elif ring:
                self._start(ring[0][0])
            else:
                return

    def _start(self, text: str) -> None:
        rate = self.options.busy_rate
        if rate and self._rng.random() < rate:
            job: _Job | None = self._run_late(text, self.options.busy_seconds)
        else:
            job = self._run(text)
        if self._halted:
            return
        if job is None:
            self._finish()
            return
        try:
            self._job_wake = next(job)
        except StopIteration:
            if not self._halted:
                self._finish()
            return
        self._job = job
        if self.options.keepalive > 0:
            self._busy_at = self._now + self.options.keepalive

    def _run(self, text: str) -> _Job | None:
        """Dispatch one command; a generator comes back when it has to wait for something."""
        match = _COMMAND.match(text)
        if match and match.group(1).upper() in "GMT":
            letter = match.group(1).upper()
            digits = match.group(2)
            handler: _Handler | None = self._tool if letter == "T" else None
            if digits and handler is None:
                handler = self._handlers.get(f"{letter}{int(digits)}")
            if handler is not None:
                return handler(text, match.end())
        self._emit(f'echo:Unknown command: "{text}"')
        return None

    def _run_late(self, text: str, seconds: float) -> _Job:
        # The busy fault: the board sits on the command first, so even M105's own ok comes late.
        yield from self._dwell(seconds)
        job = self._run(text)
        if job is not None:
            yield from job

    def _finish(self) -> None:
        _, number = self._ring[0]
        self._busy_at = None
        if self._skip_ok:
            self._skip_ok = False
        elif self.options.advanced_ok:
            free = self.options.planner_blocks - len(self._planner)
            room = self.options.bufsize - len(self._ring)
            n = "" if number is None else f" N{number}"
            self._send_ok(f"ok{n} P{free} B{room}")
        else:
            self._send_ok("ok")
        self._ring.popleft()

    def _kill(self) -> None:
        self._hotend.set_target(0)
        self._bed.set_target(0)
        self._emit("echo:M112 Shutdown")
        self._emit("Error:Printer halted. kill() called!")
        self._halted = True
        self._job = None
        self._busy_at = None
        self._report_at = None
        self._ring.clear()
        self._rx.clear()

    def _quick_stop(self) -> None:
        self._pos = self._actual_position()
        self._planner.clear()
        self._quick_stops += 1

    def _actual_position(self) -> _Position:
        if not self._planner:
            return self._pos
        block = self._planner[0]
        if self._now <= block.start:
            return block.origin
        share = (self._now - block.start) / (block.end - block.start)
        return tuple(  # type: ignore[return-value]
            a + (b - a) * share for a, b in zip(block.origin, block.target, strict=True)
        )

    # -- waiting ---------------------------------------------------------------------------

    def _dwell(self, seconds: float) -> _Job:
        until = self._now + seconds
        while self._now < until:
            yield until

    def _synchronize(self) -> _Job:
        while self._planner:
            yield self._planner[-1].end

    def _wait_for_heater(self, heater: _Heater, no_wait_for_cooling: bool) -> _Job:
        """Temperature::wait_for_hotend() / wait_for_bed() with TEMP_RESIDENCY_TIME."""
        speedup = self.options.speedup
        report_every = max(1.0 / speedup, _MIN_WAIT_REPORT)
        check_every = max(0.1 / speedup, _MIN_WAIT_CHECK)
        residency = _TEMP_RESIDENCY / speedup
        target = heater.target
        wants_to_cool = heater.temp > target
        self._wait_for_heatup = True
        if no_wait_for_cooling and wants_to_cool:
            # M109 S (unlike R) only ever waits for heating up.
            self._wait_for_heatup = False
            return
        next_report = self._now
        residency_start: float | None = None
        first_loop = True
        old_temp = 9999.0
        cool_check: float | None = None
        while True:
            now = self._now
            if now >= next_report:
                next_report = now + report_every
                left = "?"
                if residency_start is not None:
                    left = str(max(0, int((residency - (now - residency_start)) * speedup)))
                self._emit(f"{self._heater_states()} W:{left}")
            temp = heater.temp
            difference = abs(target - temp)
            if residency_start is None:
                if difference < _TEMP_WINDOW:
                    residency_start = now + (residency / 3 if first_loop else 0.0)
            elif difference > _TEMP_HYSTERESIS:
                residency_start = now
            first_loop = False
            if wants_to_cool and (cool_check is None or now >= cool_check):
                # Marlin gives up on a cool-down that stalls rather than waiting forever.
                if old_temp - temp < _COOLING_SLOPE_DEG:
                    break
                cool_check = now + _COOLING_SLOPE_TIME / speedup
                old_temp = temp
            if not self._wait_for_heatup:
                break
            if residency_start is not None and now >= residency_start + residency:
                break
            yield min(next_report, now + check_every)
        self._wait_for_heatup = False

    # -- commands --------------------------------------------------------------------------

    def _handler_table(self) -> dict[str, _Handler]:
        quiet = self._quiet
        table: dict[str, _Handler] = {
            "G0": self._move,
            "G1": self._move,
            "G2": self._arc_clockwise,
            "G3": self._arc_counter_clockwise,
            "G4": self._g4,
            "G21": quiet,
            "G28": self._g28,
            "G90": self._g90,
            "G91": self._g91,
            "G92": self._g92,
            "M17": quiet,
            "M18": self._m84,
            "M73": quiet,
            "M75": quiet,
            "M76": quiet,
            "M77": quiet,
            "M82": self._m82,
            "M83": self._m83,
            "M84": self._m84,
            "M92": quiet,
            "M104": self._m104,
            "M105": self._m105,
            "M106": self._m106,
            "M107": self._m107,
            "M108": self._m108,
            "M109": self._m109,
            "M110": self._m110,
            "M112": self._m112,
            "M114": self._m114,
            "M115": self._m115,
            "M117": quiet,
            "M118": self._m118,
            "M119": self._m119,
            "M140": self._m140,
            "M190": self._m190,
            "M200": quiet,
            "M201": quiet,
            "M203": quiet,
            "M204": quiet,
            "M205": quiet,
            "M206": quiet,
            "M220": self._m220,
            "M221": self._m221,
            "M300": quiet,
            "M400": self._m400,
            "M410": self._m410,
            "M500": self._m500,
            "M501": self._m501,
            "M502": self._m502,
            "M503": self._m503,
            "M876": quiet,
            "M999": quiet,
        }
        if self.options.autoreport_temp:
            table["M155"] = self._m155
        return table

    @staticmethod
    def _params(text: str, start: int) -> dict[str, float | None]:
        return {
            letter: float(value) if value else None
            for letter, value in _PARAM.findall(text.upper(), start)
        }

    def _quiet(self, text: str, start: int) -> None:
        """Commands this board accepts with a plain ok and nothing a host can see."""

    def _tool(self, text: str, start: int) -> None:
        match = _COMMAND.match(text)
        tool = int(match.group(2)) if match and match.group(2) else 0
        if tool != 0:
            self._emit(f"echo:T{tool} Invalid extruder")

    def _move(self, text: str, start: int) -> _Job | None:
        return self._travel(text, start, arc=0)

    def _arc_clockwise(self, text: str, start: int) -> _Job | None:
        return self._travel(text, start, arc=-1)

    def _arc_counter_clockwise(self, text: str, start: int) -> _Job | None:
        return self._travel(text, start, arc=1)

    def _travel(self, text: str, start: int, arc: int) -> _Job | None:
        """G0-G3: the destination becomes current at once; the move then runs in the planner."""
        x, y, z, e = origin = self._pos
        offset = (x, y, z) if self._relative else (0.0, 0.0, 0.0)
        e_offset = e if self._relative_e else 0.0
        centre = [0.0, 0.0]
        for letter, value in _MOVE_PARAM.findall(text.upper(), start):
            number = float(value)
            if letter == "X":
                x = offset[0] + number
            elif letter == "Y":
                y = offset[1] + number
            elif letter == "Z":
                z = offset[2] + number
            elif letter == "E":
                e = e_offset + number
            elif letter == "F":
                if number > 0:
                    self._feedrate = number
            else:
                centre[letter == "J"] = number
        self._pos = target = (x, y, z, e)
        if self.options.instant or target == origin:
            return None
        seconds = self._travel_seconds(origin, target, arc, centre[0], centre[1])
        if len(self._planner) < self.options.planner_blocks:
            self._plan(origin, target, seconds)
            return None
        return self._plan_when_room(origin, target, seconds)

    def _travel_seconds(
        self, origin: _Position, target: _Position, arc: int, centre_i: float, centre_j: float
    ) -> float:
        dx, dy, dz, de = (b - a for a, b in zip(origin, target, strict=True))
        length = math.sqrt(dx * dx + dy * dy + dz * dz)
        if arc and (centre_i or centre_j):
            # One planner block for the whole arc (Marlin cuts it in segments); only its length
            # matters here, for the time it takes.
            cx, cy = origin[0] + centre_i, origin[1] + centre_j
            sweep = math.atan2(target[1] - cy, target[0] - cx) - math.atan2(-centre_j, -centre_i)
            if arc < 0 and sweep >= 0:
                sweep -= 2 * math.pi
            elif arc > 0 and sweep <= 0:
                sweep += 2 * math.pi
            length = math.hypot(abs(sweep) * math.hypot(centre_i, centre_j), dz)
        speed = self._feedrate / 60.0 * self._feed_percent / 100.0
        seconds = (length or abs(de)) / speed
        # Marlin slows the whole move so that no axis exceeds its maximum feedrate.
        for delta, limit in zip((dx, dy, dz, de), _MAX_FEEDRATE, strict=True):
            seconds = max(seconds, abs(delta) / limit)
        return seconds / self.options.speedup

    def _plan(self, origin: _Position, target: _Position, seconds: float) -> None:
        start = max(self._now, self._planner[-1].end) if self._planner else self._now
        self._planner.append(_Block(start, start + seconds, origin, target))

    def _plan_when_room(self, origin: _Position, target: _Position, seconds: float) -> _Job:
        # buffer_line() idles until a block frees; the G1 is not done (no ok) until it is queued.
        stops = self._quick_stops
        while len(self._planner) >= self.options.planner_blocks:
            yield self._planner[0].end
        # After a quick stop Marlin's planner refuses moves for a moment (cleaning_buffer_counter),
        # so the move that was waiting is dropped and the head stays where it stopped.
        if self._quick_stops == stops:
            self._plan(origin, target, seconds)

    def _g4(self, text: str, start: int) -> _Job | None:
        params = self._params(text, start)
        milliseconds = params.get("P") or 0.0
        if params.get("S") is not None:
            milliseconds = (params["S"] or 0.0) * 1000.0
        if self.options.instant:
            return None
        return self._g4_wait(milliseconds / 1000.0 / self.options.speedup)

    def _g4_wait(self, seconds: float) -> _Job:
        yield from self._synchronize()
        yield from self._dwell(seconds)

    def _g28(self, text: str, start: int) -> _Job | None:
        params = self._params(text, start)
        axes = [axis for axis in "XYZ" if axis in params] or ["X", "Y", "Z"]
        if self.options.instant:
            self._home(axes)
            return None
        return self._g28_wait(axes)

    def _g28_wait(self, axes: list[str]) -> _Job:
        yield from self._synchronize()
        yield from self._dwell(_HOMING_SECONDS / self.options.speedup)
        self._home(axes)

    def _home(self, axes: list[str]) -> None:
        x, y, z, e = self._pos
        self._pos = (
            0.0 if "X" in axes else x,
            0.0 if "Y" in axes else y,
            0.0 if "Z" in axes else z,
            e,
        )
        self._emit(self._position_report())

    def _g90(self, text: str, start: int) -> None:
        self._relative = self._relative_e = False

    def _g91(self, text: str, start: int) -> None:
        # Marlin 2.1's set_relative_mode() makes E relative too.
        self._relative = self._relative_e = True

    def _g92(self, text: str, start: int) -> None:
        params = self._params(text, start)
        self._pos = tuple(  # type: ignore[assignment]
            current if params.get(axis) is None else params[axis]
            for axis, current in zip("XYZE", self._pos, strict=True)
        )

    def _m82(self, text: str, start: int) -> None:
        self._relative_e = False

    def _m83(self, text: str, start: int) -> None:
        self._relative_e = True

    def _m84(self, text: str, start: int) -> _Job | None:
        # Without S, M18/M84 waits for the moves to finish before the motors go off.
        if "S" in self._params(text, start) or self.options.instant:
            return None
        return self._synchronize()

    def _set_temperature(self, heater: _Heater, text: str, start: int, wait: bool) -> _Job | None:
        params = self._params(text, start)
        no_wait_for_cooling = params.get("S") is not None
        value = params.get("S") if no_wait_for_cooling else params.get("R") if wait else None
        if value is None:
            return None
        heater.set_target(value)
        if self.options.instant:
            heater.jump_to_target()
            return None
        if not wait:
            return None
        return self._wait_for_heater(heater, no_wait_for_cooling)

    def _m104(self, text: str, start: int) -> _Job | None:
        return self._set_temperature(self._hotend, text, start, wait=False)

    def _m109(self, text: str, start: int) -> _Job | None:
        return self._set_temperature(self._hotend, text, start, wait=True)

    def _m140(self, text: str, start: int) -> _Job | None:
        return self._set_temperature(self._bed, text, start, wait=False)

    def _m190(self, text: str, start: int) -> _Job | None:
        return self._set_temperature(self._bed, text, start, wait=True)

    def _heater_states(self) -> str:
        hotend, bed = self._hotend, self._bed
        return (
            f" T:{hotend.temp:.2f} /{hotend.target:.2f} B:{bed.temp:.2f} /{bed.target:.2f}"
            f" @:{int(hotend.power * 127)} B@:{int(bed.power * 127)}"
        )

    def _m105(self, text: str, start: int) -> None:
        # M105 answers "ok T:..." itself and skips the normal ok (gcode.cpp: case 105 ... return).
        self._skip_ok = True
        self._send_ok("ok" + self._heater_states())

    def _m106(self, text: str, start: int) -> None:
        speed = self._params(text, start).get("S")
        self._fan = 255 if speed is None else min(max(int(speed), 0), 255)

    def _m107(self, text: str, start: int) -> None:
        self._fan = 0

    def _m108(self, text: str, start: int) -> None:
        self._wait_for_heatup = False

    def _m110(self, text: str, start: int) -> None:
        number = self._params(text, start).get("N")
        if number is not None:
            self._last_n = int(number)

    def _m112(self, text: str, start: int) -> None:
        self._kill()

    def _position_report(self) -> str:
        x, y, z, e = (value + 0.0 for value in self._pos)
        counts = (round(v * s) for v, s in zip((x, y, z), _STEPS_PER_MM, strict=True))
        cx, cy, cz = counts
        return f"X:{x:.2f} Y:{y:.2f} Z:{z:.2f} E:{e:.2f} Count X:{cx} Y:{cy} Z:{cz}"

    def _m114(self, text: str, start: int) -> None:
        self._emit(self._position_report())

    def _m115(self, text: str, start: int) -> None:
        self._emit(_FIRMWARE_NAME)
        for name, enabled in _CAPABILITIES:
            on = self.options.autoreport_temp if name == "AUTOREPORT_TEMP" else enabled
            self._emit(f"Cap:{name}:{int(on)}")

    def _m118(self, text: str, start: int) -> None:
        # M118 prints its text raw; "E1" adds "echo:" and "A1" adds "//" (host action) in front.
        rest = text[start:].lstrip(" ")
        echo = action = False
        while len(rest) > 1 and rest[0] in "AE" and rest[1].isdigit():
            if rest[0] == "E":
                echo = rest[1] > "0"
            else:
                action = rest[1] > "0"
            rest = rest[2:].lstrip(" ")
        self._emit(("echo:" if echo else "") + ("//" if action else "") + rest)

    def _m119(self, text: str, start: int) -> None:
        self._emit("Reporting endstop status")
        for endstop in ("x_min", "y_min", "z_min"):
            self._emit(f"{endstop}: open")

    def _m155(self, text: str, start: int) -> None:
        seconds = self._params(text, start).get("S")
        if seconds is None:
            return
        self._report_every = float(min(max(int(seconds), 0), 255))
        self._report_at = self._now + self._report_every if self._report_every else None

    def _m220(self, text: str, start: int) -> None:
        percent = self._params(text, start).get("S")
        if percent is None:
            self._emit(f"FR:{self._feed_percent}%")
        else:
            self._feed_percent = max(int(percent), 10)

    def _m221(self, text: str, start: int) -> None:
        percent = self._params(text, start).get("S")
        if percent is None:
            self._emit(f"echo:E0 Flow: {self._flow_percent}%")
        else:
            self._flow_percent = max(int(percent), 1)

    def _m400(self, text: str, start: int) -> _Job | None:
        return None if self.options.instant else self._synchronize()

    def _m410(self, text: str, start: int) -> None:
        self._quick_stop()

    def _m500(self, text: str, start: int) -> None:
        self._emit("echo:Settings Stored (642 bytes; crc 29041)")

    def _m501(self, text: str, start: int) -> None:
        self._emit("echo:V86 stored settings retrieved (642 bytes; crc 29041)")

    def _m502(self, text: str, start: int) -> None:
        self._emit("echo:Hardcoded Default Settings Loaded")

    def _m503(self, text: str, start: int) -> None:
        for line in _M503_REPORT:
            self._emit(line)


@dataclass(slots=True)
class _Request:
    """Work handed to the firmware thread; the caller waits on `done`."""

    action: Callable[[float], None]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


# Stop reading the host while this much output waits: the firmware would be blocked on its TX.
_OUTPUT_BACKLOG = 1 << 20
# With an unlimited (USB CDC) RX, stop reading at this backlog so bytes wait in the pty instead.
_CDC_BACKLOG = 1 << 16
_READ_SIZE = 1 << 16
# Linux's TCGETS2 (asm-generic: x86, arm, arm64) and where struct termios2 keeps c_ospeed when
# read as ints; pyserial sets any rate, 250000 included, through the same structure.
_TCGETS2 = 0x802C542A
_OUTPUT_SPEED = 10
# What a UART makes of bytes sent at the wrong rate: anything but a line end.
_NOISE = bytes(b for b in range(256) if b not in b"\r\n")


class VirtualPrinter:
    """Serves a `VirtualFirmware` on a real pseudo-terminal from one daemon thread.

    Fault switches (`reset`, `unplug`, `replug`, `inject`, `set_faults`) may be called from any
    thread; each is handed to the firmware thread and has taken effect when the call returns.
    """

    def __init__(self, options: VirtualOptions = DEFAULT_OPTIONS, link: Path | None = None) -> None:
        self._options = options
        self._link = link
        self._rng = random.Random(options.seed)
        self.accepted: list[str] = []
        self._firmware = VirtualFirmware(options, self._rng, self.accepted, time.monotonic())
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._stopping = False
        self._master = -1
        self._slave = -1
        self._wake_read = -1
        self._wake_write = -1
        self._path = ""
        self._out = bytearray()
        self._next_piece_at = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> str:
        """Open the pty, boot the firmware and serve it; returns the path a host opens."""
        if self._thread is not None:
            raise VirtualPrinterError("the virtual printer was already started")
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        try:
            self._open_pty()
        except OSError:
            self._stopped = True
            self._close_wake_pipe()
            raise
        self._firmware.boot(time.monotonic(), POWER_UP)
        # The banner goes into the pty now, before anyone can open it, as on a board that booted
        # before the host connected; opening the port flushes it.
        self._out += self._firmware.data_to_send()
        self._write_all_now()
        self._thread = threading.Thread(target=self._serve, name="virtual-printer", daemon=True)
        self._thread.start()
        return self._path

    def stop(self) -> None:
        """Stop serving and release the pty and the link. Safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._requests.put(_Request(self._stop_action))
            self._wake()
            thread.join()
        self._close_pty()
        self._close_wake_pipe()

    def _close_wake_pipe(self) -> None:
        for fd in (self._wake_read, self._wake_write):
            if fd >= 0:
                os.close(fd)
        self._wake_read = self._wake_write = -1

    def __enter__(self) -> VirtualPrinter:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- observable state ------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The link if one was given, else the current slave device (it changes on replug)."""
        return self._path

    @property
    def halted(self) -> bool:
        return self._firmware.halted

    @property
    def hotend(self) -> HeaterReading:
        return self._firmware.hotend

    @property
    def bed(self) -> HeaterReading:
        return self._firmware.bed

    @property
    def position(self) -> tuple[float, float, float, float]:
        return self._firmware.position

    @property
    def last_line_number(self) -> int:
        return self._firmware.last_line_number

    @property
    def rx_dropped_bytes(self) -> int:
        return self._firmware.rx_dropped_bytes

    # -- fault switches --------------------------------------------------------------------

    def reset(self) -> None:
        """Reset the board as a DTR pulse does: all state lost, boot banner printed again."""

        def action(now: float) -> None:
            self._out.clear()  # a reset loses whatever was still in the TX buffer
            self._firmware.boot(now, EXTERNAL_RESET)

        self._call(action)

    def unplug(self) -> None:
        """Pull the USB cable: the pty goes away and the host's reads and writes fail."""
        self._call(lambda now: self._close_pty())

    def replug(self) -> None:
        """Plug the cable back in: a new pty (the link follows it) and a freshly booted board."""

        def action(now: float) -> None:
            self._close_pty()
            self._open_pty()
            self._firmware.boot(now, POWER_UP)
            self._out += self._firmware.data_to_send()
            self._write_all_now()

        self._call(action)

    def inject(self, data: bytes) -> None:
        """Send raw bytes to the host after everything the firmware has printed so far."""
        payload = bytes(data)

        def action(now: float) -> None:
            if self._master >= 0:
                self._out += payload

        self._call(action)

    def set_faults(self, **changes: float | bool) -> None:
        """Change fault options (checksum_error_rate, lost_ok_rate, busy_rate, ...) at runtime."""
        unknown = set(changes) - FAULT_OPTIONS
        if unknown:
            raise VirtualPrinterError(f"not a fault option: {', '.join(sorted(unknown))}")

        def action(now: float) -> None:
            # Built here, on the firmware thread, so two callers cannot lose each other's change.
            self._options = dataclasses.replace(self._options, **changes)  # type: ignore[arg-type]
            self._firmware.set_options(self._options)

        self._call(action)

    # -- the firmware thread ---------------------------------------------------------------

    def _call(self, action: Callable[[float], None]) -> None:
        thread = self._thread
        if thread is None or self._stopped or not thread.is_alive():
            raise VirtualPrinterError("the virtual printer is not running")
        request = _Request(action)
        self._requests.put(request)
        self._wake()
        while not request.done.wait(0.05):
            if not thread.is_alive():
                raise VirtualPrinterError("the virtual printer thread has stopped")
        if request.error is not None:
            raise request.error

    def _wake(self) -> None:
        # A full pipe already holds enough wake-ups.
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_write, b"\x00")

    def _stop_action(self, now: float) -> None:
        self._stopping = True

    def _run_requests(self) -> bool:
        """Run pending requests; False once the stop request has run."""
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return True
            try:
                request.action(time.monotonic())
            except LezerError as error:
                request.error = error
            request.done.set()
            if self._stopping:
                return False

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(self._wake_read, select.POLLIN)
        registered = -1
        firmware = self._firmware
        while self._run_requests():
            now = time.monotonic()
            firmware.advance(now)
            self._out += firmware.data_to_send()
            self._write(now)
            if registered != self._master:
                if registered >= 0:
                    poller.unregister(registered)
                registered = self._master
            deadline = firmware.next_deadline()
            if registered >= 0:
                events = 0
                if self._wants_input():
                    events |= select.POLLIN
                if self._out:
                    if not self._options.fragment_replies or now >= self._next_piece_at:
                        events |= select.POLLOUT
                    elif deadline is None or self._next_piece_at < deadline:
                        deadline = self._next_piece_at
                poller.register(registered, events)
            timeout = None if deadline is None else max(0, math.ceil((deadline - now) * 1000))
            for fd, _ in poller.poll(timeout):
                if fd == self._wake_read:
                    self._drain_wake_pipe()
                elif fd == self._master:
                    self._read(firmware)

    def _wants_input(self) -> bool:
        if self._firmware.halted:
            return True  # keep draining the pty so a host's writes fail no differently
        if len(self._out) >= _OUTPUT_BACKLOG:
            return False
        return self._options.rx_buffer > 0 or self._firmware.rx_backlog < _CDC_BACKLOG

    def _read(self, firmware: VirtualFirmware) -> None:
        try:
            data = os.read(self._master, _READ_SIZE)
        except BlockingIOError:
            return
        if not self._rate_matches():
            data = self._noise(len(data))
        firmware.receive_data(data, time.monotonic())

    def _rate_matches(self) -> bool:
        """Whether the host set the port to the board's rate (always, without `baud`)."""
        if self._options.baud is None or self._slave < 0:
            return True
        settings = array.array("i", [0] * 64)
        try:
            fcntl.ioctl(self._slave, _TCGETS2, settings)
        except OSError:
            return True  # this kernel cannot tell; behave as if it matched
        return settings[_OUTPUT_SPEED] == self._options.baud

    def _noise(self, size: int) -> bytes:
        # Bytes at the wrong rate decode as framing garbage, never as line ends.
        return bytes(self._rng.choice(_NOISE) for _ in range(size))

    def _write(self, now: float) -> None:
        if self._master < 0:
            self._out.clear()
            return
        if not self._out:
            return
        if not self._options.fragment_replies:
            self._write_piece(len(self._out))
            return
        if now < self._next_piece_at:
            return
        # Pieces of 1..7 bytes, each its own write; after about a third of them a pause of up
        # to 2 ms, so a reading host sees lines split anywhere (a USB-serial chip delivers
        # whatever arrived in each 1 ms frame). Pausing after every piece would be slower
        # than a real 115200 baud link.
        while self._out:
            if not self._write_piece(self._rng.randint(1, 7)):
                return
            if self._rng.random() < 0.35:
                self._next_piece_at = now + self._rng.uniform(0.0, 0.002)
                return

    def _write_piece(self, size: int) -> bool:
        """Write up to `size` bytes of the output; False when the pty takes no more now."""
        piece = bytes(self._out[:size])
        if not self._rate_matches():
            piece = self._noise(len(piece))
        try:
            written = os.write(self._master, piece)
        except BlockingIOError:
            return False
        except OSError as error:
            if error.errno != errno.EIO:
                raise
            self._out.clear()
            return False
        del self._out[:written]
        return True

    def _write_all_now(self) -> None:
        # Only the boot banner goes this way: small enough for the pty buffer, so no waiting.
        while self._out and self._master >= 0:
            try:
                written = os.write(self._master, self._out)
            except BlockingIOError:
                return
            del self._out[:written]

    def _drain_wake_pipe(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_read, 4096):
                pass

    # -- the pty ---------------------------------------------------------------------------

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        device = os.ttyname(slave)
        if self._link is None:
            self._path = device
            return
        # Build the new link beside the old one and rename it over, so a host never sees none.
        temporary = self._link.with_name(f".{self._link.name}.{os.getpid()}.tmp")
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(device)
        os.replace(temporary, self._link)
        self._path = str(self._link)

    def _close_pty(self) -> None:
        # Closing the slave too is what makes the device vanish, as /dev/ttyACM0 does on unplug.
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1
        self._out.clear()
        if self._link is not None and self._link.is_symlink():
            self._link.unlink()


def run_forever(options: VirtualOptions, link: Path | None, out: TextIO) -> int:
    """`lezerprintd virtual-printer`: print the device path, serve until SIGINT or SIGTERM."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with VirtualPrinter(options, link) as printer:
            print(printer.path, file=out, flush=True)
            stopping.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
