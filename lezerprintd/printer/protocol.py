"""The Marlin host protocol, sans-IO: bytes in, events out; commands in, bytes out.

`PrinterLink` frames G-code lines (`N<n> <cmd>*<checksum>`), keeps the `ok` window, answers
resend requests from its history and turns every line the firmware prints into a typed event.

Rules this module must not break:
- No I/O and no clock. Time is an argument (`now`, seconds, any monotonic origin).
- Every change of `LinkState` is a row of `TRANSITIONS`; nothing else moves the state.
- `LocalProtocolError` means we asked for something illegal in this state; `RemoteProtocolError`
  means the firmware asked for something impossible or stopped answering. Both are raised where
  the fault is found, and both leave the link in `LinkState.ERROR`.

How Marlin speaks (Marlin 2.x `queue.cpp`, checked against 1.1 and 2.0 behaviour):
- Every accepted command is answered with exactly one `ok` when it has been processed;
  with ADVANCED_OK the ok carries `N<line> P<planner free> B<buffer free>`.
- A rejected line (checksum or line-number error) is answered with `Error:...`, `Resend: <n>`
  and, on most versions, an `ok` that belongs to the resend, not to any command. The firmware
  also flushes its receive buffer, so every line we sent after the bad one is lost: some are
  silently discarded, the rest each come back as one more `Resend: <n>` for the same line.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from dataclasses import dataclass, replace
from functools import reduce
from operator import xor
from typing import Final

# -- states -------------------------------------------------------------------------------


class LinkState(enum.Enum):
    HANDSHAKE = "handshake"  # port open, line numbers not yet agreed with the firmware
    READY = "ready"  # commands flow
    HALTED = "halted"  # firmware killed (M112, thermal runaway): only a board reset helps
    ERROR = "error"  # the link failed; open a new one
    CLOSED = "closed"  # the port is gone


class NeedData(enum.Enum):
    NEED_DATA = "need-data"


NEED_DATA: Final = NeedData.NEED_DATA


class ProtocolError(Exception):
    """The link cannot go on; it is now in `LinkState.ERROR`."""


class LocalProtocolError(ProtocolError):
    """We tried something that is illegal in the link's current state."""


class RemoteProtocolError(ProtocolError):
    """The firmware asked for the impossible, or stopped answering."""


# -- events: facts about what the firmware said ---------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    pass


@dataclass(frozen=True, slots=True)
class LineAcked(Event):
    """An `ok` for `line` (and for any earlier line whose ok was lost)."""

    line: int
    planner_free: int | None = None
    buffer_free: int | None = None


@dataclass(frozen=True, slots=True)
class OkIgnored(Event):
    """An `ok` that acknowledges none of our lines.

    `reason` is "resend" (the ok Marlin prints after a resend request), "fragment" (the ok for
    the tail of a line that reached the firmware after it flushed its buffer, echoed as an
    unknown command), "unnumbered" (with ADVANCED_OK: the ok for a command without a line
    number, which can only be such a tail, run by the firmware) or "stray" (no line was
    waiting for an ok).
    """

    reason: str


@dataclass(frozen=True, slots=True)
class ResendRequested(Event):
    """The firmware rejected `line`; the link will send it and every later line again."""

    line: int


@dataclass(frozen=True, slots=True)
class DuplicateResendIgnored(Event):
    """A resend request for a line we are already re-sending (one per line lost with it)."""

    line: int


@dataclass(frozen=True, slots=True)
class Reading:
    actual: float
    target: float | None
    power: int | None = None  # heater PWM as Marlin reports it after "@:" (0..127)


@dataclass(frozen=True, slots=True)
class TemperatureReported(Event):
    tools: tuple[Reading, ...]
    bed: Reading | None
    chamber: Reading | None
    waiting: bool  # printed while M109/M190 waits for its target


@dataclass(frozen=True, slots=True)
class PositionReported(Event):
    x: float
    y: float
    z: float
    e: float


@dataclass(frozen=True, slots=True)
class FirmwareIdentified(Event):
    """The M115 `FIRMWARE_NAME:` line, as ordered key/value pairs."""

    fields: tuple[tuple[str, str], ...]

    @property
    def name(self) -> str:
        return dict(self.fields).get("FIRMWARE_NAME", "")


@dataclass(frozen=True, slots=True)
class CapabilityReported(Event):
    name: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class BusyReported(Event):
    """`echo:busy: processing` and friends: a long command is still running."""

    reason: str


@dataclass(frozen=True, slots=True)
class WaitReported(Event):
    """Marlin's `wait` (NO_TIMEOUTS): its command queue is empty."""


@dataclass(frozen=True, slots=True)
class HostActionRequested(Event):
    """`//action:pause`, `//action:cancel`, `//action:prompt_begin ...` and the like."""

    action: str
    argument: str


class ErrorKind(enum.Enum):
    LINE = "line"  # checksum or line-number error: a resend request follows
    OTHER = "other"  # reported, not fatal


@dataclass(frozen=True, slots=True)
class FirmwareErrorReported(Event):
    message: str
    kind: ErrorKind


@dataclass(frozen=True, slots=True)
class FirmwareHalted(Event):
    """The firmware stopped itself (kill(), thermal runaway, MINTEMP...). Fatal."""

    reason: str


@dataclass(frozen=True, slots=True)
class FirmwareReset(Event):
    """`start`: the board rebooted. Line numbers, queue and temperatures are gone."""


@dataclass(frozen=True, slots=True)
class MessageReceived(Event):
    """Any other line (echo:, boot banners, unknown output, garbage)."""

    text: str


@dataclass(frozen=True, slots=True)
class LineTooLong(Event):
    """More than MAX_LINE bytes without a newline: discarded as garbage."""

    length: int


@dataclass(frozen=True, slots=True)
class ResponseTimedOut(Event):
    """No line from the firmware for `timeout` seconds while commands were waiting.

    The link assumes the oldest `ok` was lost (`assumed_acked`) so that one probe can go out.
    """

    attempt: int
    assumed_acked: int | None


@dataclass(frozen=True, slots=True)
class PortClosed(Event):
    pass


# -- commands: what we ask the link to put on the wire ---------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    pass


@dataclass(frozen=True, slots=True)
class SendLine(Command):
    """One G-code command, already free of comments and surrounding whitespace.

    `urgent` lines skip the window (never a pending resend): M108 must reach Marlin's
    emergency parser while its buffers are full of an M109 heat-up wait.
    """

    command: bytes
    urgent: bool = False


@dataclass(frozen=True, slots=True)
class ResetLineNumbers(Command):
    """`N0 M110 N0`: agree with the firmware that the next line is number 1."""


@dataclass(frozen=True, slots=True)
class EmergencyStop(Command):
    """M112, out of band: ahead of everything queued and regardless of the window."""


# -- the one table of states ------------------------------------------------------------

_LIVE = (LinkState.HANDSHAKE, LinkState.READY)
_TALKING = (LinkState.HANDSHAKE, LinkState.READY, LinkState.HALTED, LinkState.ERROR)
# Lines that inform but never move the link.
_INFORMATIONAL: tuple[type[Event], ...] = (
    OkIgnored,
    DuplicateResendIgnored,
    TemperatureReported,
    PositionReported,
    FirmwareIdentified,
    CapabilityReported,
    BusyReported,
    WaitReported,
    HostActionRequested,
    FirmwareErrorReported,
    MessageReceived,
    LineTooLong,
)

TRANSITIONS: Final[dict[tuple[LinkState, type[Event] | type[Command]], LinkState]] = {
    # informational lines keep whatever state the link is in
    **{(state, kind): state for state in _TALKING for kind in _INFORMATIONAL},
    # the first ok after the port opened means line numbers are agreed
    (LinkState.HANDSHAKE, LineAcked): LinkState.READY,
    (LinkState.READY, LineAcked): LinkState.READY,
    (LinkState.HALTED, LineAcked): LinkState.HALTED,
    (LinkState.ERROR, LineAcked): LinkState.ERROR,
    (LinkState.HANDSHAKE, ResendRequested): LinkState.HANDSHAKE,
    (LinkState.READY, ResendRequested): LinkState.READY,
    (LinkState.HALTED, ResendRequested): LinkState.HALTED,
    (LinkState.ERROR, ResendRequested): LinkState.ERROR,
    (LinkState.HANDSHAKE, ResponseTimedOut): LinkState.HANDSHAKE,
    (LinkState.READY, ResponseTimedOut): LinkState.READY,
    # a halt is final until the board restarts, which also ends any link error
    **{(state, FirmwareHalted): LinkState.HALTED for state in _LIVE},
    (LinkState.HALTED, FirmwareHalted): LinkState.HALTED,
    (LinkState.ERROR, FirmwareHalted): LinkState.ERROR,
    **{(state, FirmwareReset): LinkState.HANDSHAKE for state in _TALKING},
    **{(state, PortClosed): LinkState.CLOSED for state in _TALKING},
    # what we may send
    (LinkState.HANDSHAKE, SendLine): LinkState.HANDSHAKE,
    (LinkState.READY, SendLine): LinkState.READY,
    (LinkState.HANDSHAKE, ResetLineNumbers): LinkState.HANDSHAKE,
    (LinkState.READY, ResetLineNumbers): LinkState.READY,
    # M112 is always allowed while the port is open: safety first
    **{(state, EmergencyStop): LinkState.HALTED for state in _LIVE},
    (LinkState.HALTED, EmergencyStop): LinkState.HALTED,
    (LinkState.ERROR, EmergencyStop): LinkState.ERROR,
}


def transitions_markdown() -> str:
    """The transition table as Markdown, for docs/protocol.md."""
    rows = ["| state | event or command | next state |", "|---|---|---|"]
    for (state, kind), after in TRANSITIONS.items():
        rows.append(f"| {state.value} | `{kind.__name__}` | {after.value} |")
    return "\n".join(rows) + "\n"


# -- parsing helpers ----------------------------------------------------------------------

MAX_LINE: Final = 4096  # longer than any Marlin line; beyond this we are reading garbage

_FATAL_MARKERS: Final = (
    "halted",
    "kill()",
    "killed",
    "thermal runaway",
    "mintemp",
    "maxtemp",
    "heating failed",
    "stopped due to errors",
    "thermal malfunction",
    "shutdown",  # Klipper "!! Shutdown due to ..."
)
_LINE_ERROR_MARKERS: Final = (
    "checksum mismatch",
    "no checksum",
    "line number is not",
    "no line number",
    "expected line",
)
_TEMPERATURE = re.compile(rb"(?:^|\s)(T\d*|B|C):\s*(-?\d+(?:\.\d*)?)(?:\s*/\s*(-?\d+(?:\.\d*)?))?")
# "@:127" the active hotend, "@0:" "@1:" each tool, "B@:" the bed, "C@:" the chamber
_HEATER_POWER = re.compile(rb"(?:^|\s)(B|C)?@(\d*):\s*(-?\d+)")
_TEMPERATURE_START = re.compile(rb"\s*(?:ok\s+)?(?:T\d*|B|C):")
_POSITION = re.compile(
    rb"X:\s*(-?\d+(?:\.\d*)?)\s*Y:\s*(-?\d+(?:\.\d*)?)\s*Z:\s*(-?\d+(?:\.\d*)?)\s*E:\s*(-?\d+(?:\.\d*)?)"
)
_OK_FIELD = re.compile(rb"\b([NPB])(\d+)\b")
_FIRMWARE_FIELD_SPLIT = re.compile(r"\s+(?=[A-Z][A-Z_]+:)")
_UNKNOWN_COMMAND = re.compile(r'echo:\s*Unknown command:\s*"(.*)"$')
_RESEND = re.compile(rb"(?:Resend:|rs)\s*N?:?\s*(\d+)", re.IGNORECASE)


def _is_auto_report(line: bytes) -> bool:
    """A temperature report that was not asked for and is no heat-up progress (no `W:`)."""
    return line[:2] != b"ok" and b"W:" not in line and _TEMPERATURE_START.match(line) is not None


def checksum(data: bytes) -> int:
    """Marlin's line checksum: XOR of every byte before the `*`."""
    return reduce(xor, data, 0)


def clean_command(raw: bytes) -> bytes:
    """Strip a `;` comment and surrounding whitespace from one G-code line."""
    semicolon = raw.find(b";")
    if semicolon >= 0:
        raw = raw[:semicolon]
    return raw.strip()


def _parse_temperatures(line: bytes) -> TemperatureReported | None:
    tools: dict[int, Reading] = {}
    active: Reading | None = None
    bed = chamber = None
    powers = {heater or tool: int(value) for heater, tool, value in _HEATER_POWER.findall(line)}
    for name, actual, target in _TEMPERATURE.findall(line):
        reading = Reading(float(actual), float(target) if target else None)
        if name == b"T":
            active = replace(reading, power=powers.get(b""))
        elif name == b"B":
            bed = replace(reading, power=powers.get(b"B"))
        elif name == b"C":
            chamber = replace(reading, power=powers.get(b"C"))
        else:
            tools[int(name[1:])] = replace(reading, power=powers.get(name[1:]))
    if not tools and active is not None:
        tools[0] = active
    if not tools and bed is None:
        return None
    ordered = tuple(tools[index] for index in sorted(tools))
    return TemperatureReported(ordered, bed, chamber, waiting=b"W:" in line)


# -- the link ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkSettings:
    window: int = 4  # lines in flight without an ok
    rx_buffer: int = 127  # bytes in flight; 0 = unlimited (USB-native boards)
    timeout: float = 30.0  # seconds of silence, while waiting for an ok, before a probe
    max_timeouts: int = 5  # probes before giving up
    resend_history: int = 256  # sent lines kept for resend requests
    # Marlin keeps MAX_CMD_SIZE - 1 = 95 characters of a line and drops the rest (checksum
    # included), so a longer line would be rejected for ever.
    max_line: int = 95
    # The same line rejected this many times in a row: the line, or the wire, is hopeless.
    max_resends: int = 10

    def __post_init__(self) -> None:
        if self.window < 1 or self.resend_history < self.window:
            raise ValueError("window must be >= 1 and resend_history >= window")


class _LineError(enum.Enum):
    CHECKSUM = "checksum"  # the line arrived damaged
    LINE_NUMBER = "line-number"  # the line arrived out of order
    FRAGMENT = "fragment"  # only the tail of a line arrived (Marlin 1.0's "No Line Number")


@dataclass(slots=True)
class _Resend:
    """Bookkeeping of the last resend request we acted on."""

    line: int = -1
    duplicates_left: int = 0  # lines sent after `line` that may each still ask for it
    repeats: int = 0  # genuine requests for `line` in a row


@dataclass(slots=True)
class LinkCounters:
    """What a status page or benchmark wants to know about the link's health."""

    lines_sent: int = 0
    lines_resent: int = 0
    resend_requests: int = 0
    duplicate_resends: int = 0
    timeouts: int = 0
    bytes_received: int = 0


class PrinterLink:
    """One conversation with one firmware, from port open to port close."""

    def __init__(self, settings: LinkSettings | None = None) -> None:
        self.settings = settings or LinkSettings()
        self.state = LinkState.HANDSHAKE
        self.counters = LinkCounters()
        self._events: deque[Event] = deque()
        self._partial = b""
        self._next_line = 0
        self._history: dict[int, bytes] = {}
        self._in_flight: deque[tuple[int, int]] = deque()  # (line number, framed bytes)
        self._in_flight_bytes = 0
        self._ghost_bytes = 0  # bytes of flushed lines that may still be arriving
        self._ghosts_until = 0  # ...until a line from this number on is acknowledged
        self._resend_cursor: int | None = None  # next line to send again, if resending
        self._resend = _Resend()
        self._foreign_ok: str | None = None  # why the next ok, if next, is not for our line
        self._flushed: list[bytes] = []  # lines the firmware threw away at the last resend
        self._probes: deque[int] = deque()  # line numbers of the M105s in flight
        self._ok_has_temperatures = False  # this firmware answers M105 with "ok T:..."
        self._advanced_ok = False  # the firmware's oks carry N, P and B
        self._line_error: _LineError | None = None  # the line just parsed was a line error
        self._last_sent_at = 0.0
        self._window = self.settings.window
        self._last_progress = 0.0
        self._timeouts_in_a_row = 0
        self._firmware_buffer: int | None = None  # learned from ADVANCED_OK

    # -- introspection

    @property
    def lines_in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def window(self) -> int:
        """The current window: the configured one, or less if ADVANCED_OK reports less."""
        return self._window

    @property
    def resending(self) -> bool:
        return self._resend_cursor is not None

    @property
    def next_line_number(self) -> int:
        return self._next_line

    # -- input

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes read from the port; `b""` means the port closed."""
        if self.state is LinkState.CLOSED:
            raise self._local("data received after the port closed")
        if not data:
            self._emit(PortClosed())
            return
        self.counters.bytes_received += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_LINE:
            self._emit(LineTooLong(len(self._partial)))
            self._partial = b""
        for line in lines:
            self._parse_line(line, now)

    def next_event(self) -> Event | NeedData:
        if self._events:
            return self._events.popleft()
        return NEED_DATA

    def check_timeout(self, now: float) -> None:
        """Call periodically. Silence while oks are owed leads to a probe, then to an error."""
        if not self._in_flight or self.state not in _LIVE:
            return
        if now - self._last_progress < self.settings.timeout:
            return
        self._timeouts_in_a_row += 1
        self.counters.timeouts += 1
        if self._timeouts_in_a_row > self.settings.max_timeouts:
            silent = self.settings.timeout * self.settings.max_timeouts
            raise self._remote(
                f"the printer stopped answering: no reply for {silent:.0f} s "
                f"after {self.settings.max_timeouts} probes"
            )
        self._last_progress = now
        self._ghost_bytes = 0  # after this long, nothing is on its way any more
        line = self._ack_oldest()
        self._emit(ResponseTimedOut(self._timeouts_in_a_row, line))

    # -- output

    def can_send(self, command_length: int) -> bool:
        """Would a new command of this many bytes go out now without overfilling the firmware?"""
        if self.state not in _LIVE or self._resend_cursor is not None:
            return False
        return self._has_room(self.framed_length(command_length))

    def framed_length(self, command_length: int) -> int:
        """At most how long a command becomes once framed: "N<n> " + command + "*<cs>\n"."""
        return command_length + len(str(self._next_line)) + 7

    def fits(self, command_length: int) -> bool:
        """Whether a command of this length fits the firmware's line buffer once framed."""
        return self.framed_length(command_length) - 1 <= self.settings.max_line

    def send(self, command: Command, now: float) -> bytes:
        """The bytes to write for `command`. Raises LocalProtocolError when it may not go now."""
        self._move(type(command))
        match command:
            case SendLine(text, urgent):
                if self._resend_cursor is not None:
                    raise self._local("a new line cannot overtake lines being re-sent")
                return self._send_numbered(text, now, urgent)
            case ResetLineNumbers():
                if self.state is LinkState.READY and (self._in_flight or self.resending):
                    raise self._local("line numbers can only be reset when no ok is owed")
                # During the handshake a board that was still booting may have missed the
                # last M110; starting over is always right there.
                self._drop_in_flight()
                self._history.clear()
                self._resend = _Resend()
                self._next_line = 0
                data = self._frame(b"M110 N0")
                self._track(data, now)
                return data
            case EmergencyStop():
                # Marlin's emergency parser acts on M112 as the bytes arrive, even with its
                # buffers full, so it needs no line number and takes no window slot.
                self._drop_in_flight()
                return b"M112\n"
            case _:
                raise self._local(f"unknown command {command!r}")

    def retransmit(self, now: float) -> bytes:
        """The lines to send again after a resend request, as far as the window allows."""
        if self._resend_cursor is None or self.state not in _LIVE:
            return b""
        chunks = []
        cursor = self._resend_cursor
        while cursor < self._next_line:
            data = self._history[cursor]
            if not self._has_room(len(data)):
                break
            self._in_flight.append((cursor, len(data)))
            self._in_flight_bytes += len(data)
            chunks.append(data)
            cursor += 1
        self._resend_cursor = None if cursor >= self._next_line else cursor
        if chunks:
            self.counters.lines_resent += len(chunks)
            if len(self._in_flight) == len(chunks):
                self._last_progress = now  # the timeout counts from when an ok became owed
            self._last_sent_at = now
        return b"".join(chunks)

    # -- internals: sending

    def _has_room(self, framed_length: int) -> bool:
        in_flight = len(self._in_flight)
        if in_flight == 0:
            return True  # one line always goes, even one longer than the byte budget
        if in_flight >= self._window:
            return False
        budget = self.settings.rx_buffer
        used = self._in_flight_bytes + self._ghost_bytes
        return not budget or used + framed_length <= budget

    def _frame(self, command: bytes) -> bytes:
        body = b"N%d %s" % (self._next_line, command)
        return b"%s*%d\n" % (body, reduce(xor, body, 0))

    def _send_numbered(self, command: bytes, now: float, urgent: bool = False) -> bytes:
        if b"\n" in command or b"\r" in command:
            raise self._local(f"a line cannot contain a line break: {command!r}")
        data = self._frame(command)
        if len(data) - 1 > self.settings.max_line:
            raise self._local(
                f"{command[:40].decode(errors='replace')!r}... is too long for the printer "
                f"({len(data) - 1} characters framed; it keeps {self.settings.max_line})"
            )
        if not urgent and not self._has_room(len(data)):
            raise self._local("the window is full; wait for an ok")
        self._track(data, now)
        return data

    def _track(self, data: bytes, now: float) -> None:
        number = self._next_line
        if data.startswith(b"M105", data.index(b" ") + 1):
            self._probes.append(number)
        self._next_line = number + 1
        history = self._history
        history[number] = data
        history.pop(number - self.settings.resend_history, None)
        if not self._in_flight:
            self._last_progress = now  # the timeout counts from when an ok became owed
        self._last_sent_at = now
        self._in_flight.append((number, len(data)))
        self._in_flight_bytes += len(data)
        self.counters.lines_sent += 1

    # -- internals: receiving

    def _parse_line(self, raw: bytes, now: float) -> None:
        line = raw.strip()
        if not line:
            return
        if not _is_auto_report(line):
            # A sign that the firmware is working on what we sent. Auto-reports (M155) keep
            # coming while an ok is lost, so they must not hold off the timeout.
            self._last_progress = now
            self._timeouts_in_a_row = 0
        # Both facts only describe the line right after them.
        foreign_ok, self._foreign_ok = self._foreign_ok, None
        line_error, self._line_error = self._line_error, None
        if line[:2] == b"ok":
            self._on_ok(line, foreign_ok)
            return
        if line.startswith((b"Resend", b"rs ", b"rs:")):
            self._on_resend(line, line_error)
            return
        text = line.decode("utf-8", "replace")
        lowered = text.lower()
        if "busy:" in lowered:
            self._emit(BusyReported(text.split("busy:", 1)[1].strip()))
        elif text.startswith(("Error:", "!!")):
            self._on_error(text, lowered)
        elif text == "start":
            self._on_reset()
        elif text.startswith(("//action:", "// action:")):
            action, _, argument = text.split(":", 1)[1].strip().partition(" ")
            self._emit(HostActionRequested(action, argument.strip()))
        elif _TEMPERATURE_START.match(line) and (report := _parse_temperatures(line)):
            self._emit(report)
        elif text.startswith("FIRMWARE_NAME:"):
            pairs = (part.partition(":") for part in _FIRMWARE_FIELD_SPLIT.split(text))
            self._emit(FirmwareIdentified(tuple((k, v.strip()) for k, _, v in pairs)))
        elif text.startswith("Cap:"):
            name, _, value = text[4:].partition(":")
            self._emit(CapabilityReported(name.strip(), value.strip() == "1"))
        elif (position := _POSITION.match(line)) is not None:
            x, y, z, e = (float(value) for value in position.groups())
            self._emit(PositionReported(x, y, z, e))
        elif text == "wait":
            self._on_wait(now)
        else:
            if (unknown := _UNKNOWN_COMMAND.match(text)) and self._is_flushed_tail(unknown[1]):
                # After a flush, the tail of a line ("68" of "...*68") can reach the firmware
                # on its own; Marlin runs it as an unknown command and acknowledges it.
                self._foreign_ok = "fragment"
            self._emit(MessageReceived(text))

    def _on_ok(self, line: bytes, foreign: str | None) -> None:
        acked: int | None = None
        planner = buffer = None
        report = _parse_temperatures(line) if b":" in line else None
        if report is not None:
            self._ok_has_temperatures = True
        if report is not None and foreign is None and self._probes:
            # Marlin answers only M105 with "ok T:...", and it runs commands in order: every
            # line up to this M105 is done and none after it. Whatever oks were lost or
            # foreign before, the window is exact again from here. (An M105 waiting to be
            # sent again cannot have been answered: that answer is for the tail of a flushed
            # M105 line, which the firmware ran on its own.)
            # The report first: whoever waits for this M105 gets it before the ack.
            self._emit(report)
            if any(number == self._probes[0] for number, _ in self._in_flight):
                self._emit(LineAcked(self._ack_probe()))
            else:
                self._emit(OkIgnored("fragment"))
            return
        if len(line) > 2:
            fields = dict(_OK_FIELD.findall(line[2:]))
            if b"P" in fields and b"B" in fields:
                planner, buffer = int(fields[b"P"]), int(fields[b"B"])
                self._learn_buffer(buffer)
                self._advanced_ok = True
                if b"N" not in fields and foreign is None:
                    # Every line we send is numbered, so with ADVANCED_OK an ok without N
                    # acknowledges a command that was not one of ours: the tail of a line
                    # the firmware flushed, which it then ran on its own.
                    foreign = "unnumbered"
            if foreign is None:
                acked = (
                    self._ack_through(int(fields[b"N"]))
                    if b"N" in fields
                    else self._ack_oldest(plain_ok=report is None)
                )
        elif foreign is None:
            acked = self._ack_oldest(plain_ok=True)
        # The ok right after a resend request answers the rejected line, which we already
        # dropped from the window: it acknowledges nothing (see the module docstring).
        if report is not None:
            self._emit(report)  # before the ack, so it reaches whoever waits for the M105
        if acked is None:
            self._emit(OkIgnored(foreign or "stray"))
        else:
            self._emit(LineAcked(acked, planner, buffer))

    def _ack_oldest(self, plain_ok: bool = False) -> int | None:
        if not self._in_flight:
            return None
        probes = self._probes
        if plain_ok and self._ok_has_temperatures and probes and self._in_flight[0][0] == probes[0]:
            # This firmware answers M105 with "ok T:", so a plain ok cannot be the M105's: it
            # is one ok too many (a flushed tail the firmware ran). The M105's own answer will
            # put the window right.
            return None
        number, size = self._in_flight.popleft()
        self._in_flight_bytes -= size
        if self._probes and self._probes[0] <= number:
            self._forget_probes_through(number)
        if number >= self._ghosts_until:
            self._ghost_bytes = 0
        return number

    def _ack_through(self, number: int) -> int:
        in_flight = self._in_flight
        while in_flight and in_flight[0][0] <= number:
            self._in_flight_bytes -= in_flight.popleft()[1]
        self._forget_probes_through(number)
        if number >= self._ghosts_until:
            self._ghost_bytes = 0
        return number

    def _ack_probe(self) -> int:
        """The oldest M105 in flight is answered: rebuild the window from what followed it."""
        probe = self._probes.popleft()
        end = self._resend_cursor if self._resend_cursor is not None else self._next_line
        history = self._history
        self._in_flight = deque(
            (number, len(history[number])) for number in range(probe + 1, end) if number in history
        )
        self._in_flight_bytes = sum(size for _, size in self._in_flight)
        if probe >= self._ghosts_until:
            self._ghost_bytes = 0
        return probe

    def _forget_probes_through(self, number: int) -> None:
        probes = self._probes
        while probes and probes[0] <= number:
            probes.popleft()

    def _learn_buffer(self, free_now: int) -> None:
        # B counts free slots while the command being acknowledged still holds one, so the
        # firmware's buffer is at least B + 1; the largest such figure seen is its size.
        if self._firmware_buffer is None or free_now + 1 > self._firmware_buffer:
            self._firmware_buffer = free_now + 1
            self._window = max(1, min(self.settings.window, self._firmware_buffer))

    def _on_resend(self, line: bytes, line_error: _LineError | None) -> None:
        match = _RESEND.search(line)
        if match is None:
            self._emit(MessageReceived(line.decode("utf-8", "replace")))
            return
        number = int(match.group(1))
        self._foreign_ok = "resend"
        resend = self._resend
        if number == resend.line and (
            line_error is _LineError.FRAGMENT
            or (resend.duplicates_left > 0 and line_error is not _LineError.CHECKSUM)
        ):
            # One of the lines we had sent after `number` reached the firmware out of order,
            # or only the tail of one did (the firmware had flushed the rest). A checksum
            # error, by contrast, means our repeat of `number` arrived damaged.
            if line_error is not _LineError.FRAGMENT:
                resend.duplicates_left -= 1
            self.counters.duplicate_resends += 1
            self._emit(DuplicateResendIgnored(number))
            return
        if number == self._next_line:
            # The firmware wants the line we have not sent yet: nothing to repeat.
            self._emit(DuplicateResendIgnored(number))
            return
        if number not in self._history:
            held = f"{min(self._history)}..{self._next_line - 1}" if self._history else "none"
            raise self._remote(
                f"the printer asked to resend line {number}, which is no longer held (held: {held})"
            )
        resend.repeats = resend.repeats + 1 if number == resend.line else 1
        if resend.repeats >= self.settings.max_resends:
            raise self._remote(
                f"the printer rejected line {number} {resend.repeats} times in a row: "
                f"{self._history[number].decode(errors='replace').strip()!r}"
            )
        # Everything from `number` on was rejected or flushed by the firmware. The rest of a
        # flushed line may still be on its way into the firmware's buffer: its bytes stay
        # counted until the firmware acknowledges a line we send again, which it reads after.
        self._flushed = [self._history[n] for n, _ in self._in_flight if n > number]
        self._ghost_bytes = sum(size for n, size in self._in_flight if n >= number)
        self._ghosts_until = number
        dropped = len(self._flushed)
        kept = deque(entry for entry in self._in_flight if entry[0] < number)
        self._in_flight = kept
        self._in_flight_bytes = sum(size for _, size in kept)
        resend.line = number
        resend.duplicates_left = dropped
        self._resend_cursor = number
        self.counters.resend_requests += 1
        self._emit(ResendRequested(number))

    def _is_flushed_tail(self, echoed: str) -> bool:
        """Whether Marlin's "Unknown command" echo shows the tail of a line it had flushed."""
        tail = echoed.encode(errors="replace").strip()
        cut = tail.partition(b"*")[0].strip()  # Marlin may have cut the checksum off
        for framed in self._flushed:
            line = framed.rstrip(b"\n")
            body = line.rpartition(b"*")[0]
            command = body.partition(b" ")[2]
            if cut != command and (line.endswith(tail) or (cut and body.endswith(cut))):
                return True
        return False

    def _on_error(self, text: str, lowered: str) -> None:
        if any(marker in lowered for marker in _FATAL_MARKERS):
            self._drop_in_flight()
            reason = text.split(":", 1)[1].strip() if text.startswith("Error:") else text
            self._emit(FirmwareHalted(reason))
        elif any(marker in lowered for marker in _LINE_ERROR_MARKERS):
            if "line number is not" in lowered or "expected line" in lowered:
                self._line_error = _LineError.LINE_NUMBER
            elif "no line number" in lowered:
                self._line_error = _LineError.FRAGMENT
            else:
                self._line_error = _LineError.CHECKSUM
            self._emit(FirmwareErrorReported(text, ErrorKind.LINE))
        else:
            self._emit(FirmwareErrorReported(text, ErrorKind.OTHER))

    def _on_wait(self, now: float) -> None:
        # Marlin prints `wait` only after its queue has been empty with no serial input for
        # NO_TIMEOUTS ms: oks still owed were lost. A line sent just now may still be on its
        # way, so only lines older than a second count as lost.
        if self._in_flight and now - self._last_sent_at >= 1.0:
            last = self._in_flight[-1][0]
            self._ack_through(last)
            self._emit(LineAcked(last))
        self._emit(WaitReported())

    def _on_reset(self) -> None:
        self._drop_in_flight()
        self._resend = _Resend()
        self._history.clear()
        self._window = self.settings.window
        self._firmware_buffer = None
        self._emit(FirmwareReset())

    def _drop_in_flight(self) -> None:
        self._in_flight.clear()
        self._in_flight_bytes = 0
        self._ghost_bytes = 0
        self._resend_cursor = None
        self._probes.clear()

    # -- internals: states

    def _emit(self, event: Event) -> None:
        self._move(type(event))
        self._events.append(event)

    def _move(self, kind: type[Event] | type[Command]) -> None:
        try:
            self.state = TRANSITIONS[(self.state, kind)]
        except KeyError:
            state = self.state
            self.state = LinkState.ERROR
            if issubclass(kind, Command):
                raise LocalProtocolError(
                    f"cannot {kind.__name__} while the link is {state.value}"
                ) from None
            raise RemoteProtocolError(
                f"the printer sent {kind.__name__} while the link is {state.value}"
            ) from None

    def _local(self, message: str) -> LocalProtocolError:
        self.state = LinkState.ERROR
        return LocalProtocolError(message)

    def _remote(self, message: str) -> RemoteProtocolError:
        self.state = LinkState.ERROR
        return RemoteProtocolError(message)


__all__ = [
    "NEED_DATA",
    "TRANSITIONS",
    "BusyReported",
    "CapabilityReported",
    "Command",
    "DuplicateResendIgnored",
    "EmergencyStop",
    "ErrorKind",
    "Event",
    "FirmwareErrorReported",
    "FirmwareHalted",
    "FirmwareIdentified",
    "FirmwareReset",
    "HostActionRequested",
    "LineAcked",
    "LineTooLong",
    "LinkCounters",
    "LinkSettings",
    "LinkState",
    "LocalProtocolError",
    "MessageReceived",
    "NeedData",
    "OkIgnored",
    "PortClosed",
    "PositionReported",
    "PrinterLink",
    "ProtocolError",
    "Reading",
    "RemoteProtocolError",
    "ResendRequested",
    "ResetLineNumbers",
    "ResponseTimedOut",
    "SendLine",
    "TemperatureReported",
    "WaitReported",
    "checksum",
    "clean_command",
]
