"""The printer: connection, state machine, command queue, temperatures, emergency stop.

`Printer` is the asyncio shell around the sans-IO `PrinterLink`: it is the serial port's
protocol object, so every read goes straight into the link and every `ok` immediately lets
the next lines out, with no task switch per line.

Rules this module must not break:
- Every state change is a row of `TRANSITIONS`.
- M112 is written to the port at once, ahead of everything queued and regardless of the window.
- User commands go out between job lines, never behind the rest of the file.
- Nothing here blocks the event loop: the job's lines come from memory (the job room reads
  the file in a worker thread) and the serial log is written by a logging thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from lezerprintd.bus import Bus, PrinterAlert, PrinterStatusChanged, TemperaturesReported
from lezerprintd.config import PrinterConfig
from lezerprintd.errors import PrinterError
from lezerprintd.printer import transport as serial_port
from lezerprintd.printer.protocol import (
    NEED_DATA,
    BusyReported,
    CapabilityReported,
    DuplicateResendIgnored,
    EmergencyStop,
    ErrorKind,
    Event,
    FirmwareErrorReported,
    FirmwareHalted,
    FirmwareIdentified,
    FirmwareReset,
    HostActionRequested,
    LineAcked,
    LineTooLong,
    LinkSettings,
    LinkState,
    MessageReceived,
    OkIgnored,
    PortClosed,
    PositionReported,
    PrinterLink,
    ProtocolError,
    Reading,
    RemoteProtocolError,
    ResendRequested,
    ResetLineNumbers,
    ResponseTimedOut,
    SendLine,
    TemperatureReported,
    WaitReported,
    clean_command,
)
from lezerprintd.printer.transport import PortChoice
from lezerprintd.store import Store
from lezerprintd.store import settings as stored_settings

log = logging.getLogger(__name__)
serial_log = logging.getLogger("lezerprintd.serial")

HANDSHAKE_RETRY_SECONDS: Final = 1.5  # a freshly reset AVR board needs about 2 s to boot
HANDSHAKE_SETTLE_SECONDS: Final = 0.2  # Marlin answers a line within milliseconds
INFO_SECONDS: Final = 5.0  # M115 answer
TICK_SECONDS: Final = 0.5
REMEMBERED_PORT_KEY: Final = "printer.last_connection"
# One line of printable ASCII, as the terminal, macros and scripts send it.
COMMAND_PATTERN: Final = r"[\x20-\x7e]+"
_HEATER_ON = re.compile(rb"M(?:104|109|140|190|141|191)\b.*\b[SR]0*[1-9]", re.IGNORECASE)


class PrinterState(enum.Enum):
    OFFLINE = "offline"  # no port open
    CONNECTING = "connecting"  # port open, handshake running
    OPERATIONAL = "operational"  # idle and ready
    PRINTING = "printing"
    PAUSED = "paused"
    ERROR = "error"  # halted, emergency-stopped or link failed: reconnect to recover


class Trigger(enum.Enum):
    CONNECT = "connect"  # a port is being opened
    CONNECTED = "connected"  # the handshake succeeded
    CONNECT_FAILED = "connect-failed"
    PRINT_STARTED = "print-started"
    PRINT_PAUSED = "print-paused"
    PRINT_RESUMED = "print-resumed"
    PRINT_ENDED = "print-ended"
    FIRMWARE_RESET = "firmware-reset"  # the board rebooted: handshake again
    FAULT = "fault"  # firmware halt, emergency stop, protocol failure
    PORT_LOST = "port-lost"  # unplugged
    DISCONNECT = "disconnect"  # asked for


_S = PrinterState
_CONNECTED = (_S.OPERATIONAL, _S.PRINTING, _S.PAUSED)
TRANSITIONS: Final[dict[tuple[PrinterState, Trigger], PrinterState]] = {
    (_S.OFFLINE, Trigger.CONNECT): _S.CONNECTING,
    (_S.ERROR, Trigger.CONNECT): _S.CONNECTING,
    (_S.CONNECTING, Trigger.CONNECT): _S.CONNECTING,  # next port or rate
    (_S.CONNECTING, Trigger.CONNECTED): _S.OPERATIONAL,
    (_S.CONNECTING, Trigger.CONNECT_FAILED): _S.OFFLINE,
    (_S.OPERATIONAL, Trigger.PRINT_STARTED): _S.PRINTING,
    (_S.PRINTING, Trigger.PRINT_PAUSED): _S.PAUSED,
    (_S.PAUSED, Trigger.PRINT_RESUMED): _S.PRINTING,
    (_S.PRINTING, Trigger.PRINT_ENDED): _S.OPERATIONAL,
    (_S.PAUSED, Trigger.PRINT_ENDED): _S.OPERATIONAL,
    **{(state, Trigger.FIRMWARE_RESET): _S.CONNECTING for state in _CONNECTED},
    (_S.CONNECTING, Trigger.FIRMWARE_RESET): _S.CONNECTING,
    **{(state, Trigger.FAULT): _S.ERROR for state in (*_CONNECTED, _S.CONNECTING, _S.ERROR)},
    **{(state, Trigger.PORT_LOST): _S.OFFLINE for state in (*_CONNECTED, _S.CONNECTING, _S.ERROR)},
    **{(state, Trigger.DISCONNECT): _S.OFFLINE for state in PrinterState},
}


class Feed(Protocol):
    """A source of job lines (the job room); the printer pulls from it while printing."""

    def peek(self) -> bytes | None:
        """The next line, or None when there is none right now."""

    def advance(self) -> None:
        """The line `peek` returned has been sent."""

    def on_fault(self, reason: str) -> None:
        """The printer can no longer print (halt, unplug, reset, emergency stop)."""

    def on_host_action(self, action: str, argument: str) -> None:
        """The firmware asked the host to pause, resume or cancel."""


class SerialTap:
    """The latest lines that crossed the serial link, for terminal windows.

    Lines are kept only while someone watches (`watchers` > 0), so a print nobody watches in
    a terminal pays one integer test per write. Readers ask for what came `since` a count;
    one that fell more than `size` lines behind gets the newest and the number it missed.
    """

    def __init__(self, size: int = 2000) -> None:
        self._lines: deque[tuple[str, str]] = deque(maxlen=size)
        self.count = 0  # lines recorded since the start
        self.watchers = 0

    def record(self, direction: str, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip():
                self._lines.append((direction, line.strip()))
                self.count += 1

    def since(self, seen: int) -> tuple[list[tuple[str, str]], int]:
        """The lines after the first `seen`, and how many of them are no longer kept."""
        new = self.count - seen
        if new <= 0:
            return [], 0
        kept = min(new, len(self._lines))
        lines = list(self._lines)[-kept:]
        return lines, new - kept


@dataclass(slots=True)
class _Pending:
    """A command someone awaits, with the lines the firmware printed in answer."""

    command: bytes
    future: asyncio.Future[list[str]]
    lines: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Temperatures:
    tools: tuple[Reading, ...] = ()
    bed: Reading | None = None
    chamber: Reading | None = None
    waiting: bool = False  # an M109/M190 wait is in progress

    @property
    def heating(self) -> bool:
        readings = (*self.tools, self.bed, self.chamber)
        return any(r is not None and r.target for r in readings)


@dataclass(frozen=True, slots=True)
class Position:
    x: float
    y: float
    z: float
    e: float


@dataclass(frozen=True, slots=True)
class PrinterStatus:
    state: PrinterState
    error: str | None
    port: str | None
    baud: int | None
    firmware: str | None
    capabilities: dict[str, bool]
    temperatures: Temperatures
    position: Position | None
    window: int  # lines sent ahead of their oks (follows the firmware with ADVANCED_OK)
    lines_sent: int
    lines_resent: int
    resend_requests: int
    timeouts: int


class Printer(asyncio.Protocol):
    """One printer on one serial port. Construct, then `await start()`."""

    def __init__(
        self,
        settings: PrinterConfig,
        bus: Bus,
        store: Store | None = None,
        *,
        board_reset: Callable[[], None] | None = None,
        auto_connect: bool = True,
        port_patterns: Sequence[str] = serial_port.PORT_PATTERNS,
    ) -> None:
        self.settings = settings
        self._bus = bus
        self._store = store
        # Opening a real board's port pulses DTR and reboots it; the virtual printer has no
        # DTR line, so the app hands in the equivalent.
        self._board_reset = board_reset
        self.state = PrinterState.OFFLINE
        self.error: str | None = None
        self._port: str = settings.port
        self._baud = settings.baud
        self._choice: PortChoice | None = None
        self._link = PrinterLink(self._link_settings())
        self._transport: asyncio.Transport | None = None
        self._closing = False  # we closed the port on purpose
        self._lost: asyncio.Event = asyncio.Event()
        # The handshake's M110 was answered, or refused, or the board rebooted: try again now.
        self._handshake_news = asyncio.Event()
        self._urgent: deque[bytes] = deque()  # M108: past the window, to the emergency parser
        self._commands: deque[tuple[bytes, _Pending | None]] = deque()
        self._awaiting: dict[int, _Pending] = {}
        self._feed: Feed | None = None
        self._feeding = False
        self._firmware: str | None = None
        self._capabilities: dict[str, bool] = {}
        self._temperatures = Temperatures()
        self._position: Position | None = None
        self._autoreport_interval: int | None = None
        self._heating_asked = False  # a heater was switched on since the last report
        self._poll_pending = False
        self._last_poll = 0.0
        self._auto_connect = auto_connect  # connect at start and after an unplug
        self._port_patterns = port_patterns  # where `port = "auto"` looks
        self._wake = asyncio.Event()
        self._connect_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._log_serial = serial_log.isEnabledFor(logging.DEBUG)
        self.tap = SerialTap()

    # -- lifecycle

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._supervise(), name="printer-supervisor"),
            asyncio.create_task(self._tick(), name="printer-ticker"),
        ]

    async def stop(self) -> None:
        self._auto_connect = False
        tasks = [*self._tasks, *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []
        self._abandon("the daemon is stopping")
        await self._close_port()

    # -- what others ask for

    def status(self) -> PrinterStatus:
        counters = self._link.counters
        return PrinterStatus(
            state=self.state,
            error=self.error,
            port=self._choice.path if self._choice else None,
            baud=self._choice.baud if self._choice else None,
            firmware=self._firmware,
            capabilities=dict(self._capabilities),
            temperatures=self._temperatures,
            position=self._position,
            window=self._link.window,
            lines_sent=counters.lines_sent,
            lines_resent=counters.lines_resent,
            resend_requests=counters.resend_requests,
            timeouts=counters.timeouts,
        )

    @property
    def temperatures(self) -> Temperatures:
        return self._temperatures

    @property
    def connected(self) -> bool:
        return self.state in _CONNECTED

    def reconfigure(self, settings: PrinterConfig) -> None:
        """Take a changed profile: limits at once, a new port or baud at the next connection
        (a link in use is not cut for it: a print may be running)."""
        if (settings.port, settings.baud) != (self.settings.port, self.settings.baud):
            self._port, self._baud = settings.port, settings.baud
        self.settings = settings

    async def connect(self, port: str | None = None, baud: int | None = None) -> None:
        """Connect now (to `port`/`baud`, or as configured). Raises PrinterError on failure."""
        if port is not None:
            self._port = port
        if baud is not None:
            self._baud = baud
        self._auto_connect = True
        async with self._connect_lock:
            if self.state is not PrinterState.OFFLINE:
                await self._disconnect_now("reconnecting")
            if not await self._connect_once():
                raise PrinterError(self.error or "no printer answered")

    async def disconnect(self) -> None:
        """Close the port and stay offline until `connect()`."""
        self._auto_connect = False
        async with self._connect_lock:
            await self._disconnect_now("disconnected")

    def submit(self, command: str) -> asyncio.Future[list[str]]:
        """Queue one G-code line ahead of any job lines; the future gets its answer lines."""
        if "\n" in command.strip() or "\r" in command.strip():
            raise PrinterError(
                "one command at a time: the command holds a line break", 400, "VALIDATION_ERROR"
            )
        cleaned = clean_command(command.encode())
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        if not cleaned:
            future.set_result([])
            return future
        if cleaned.upper().startswith(b"M112"):
            self.emergency_stop("M112 sent as a command")
            future.set_result([])
            return future
        if cleaned.upper().startswith(b"M110"):
            raise PrinterError(
                "line numbers (M110) are managed by LezerPrint", 400, "VALIDATION_ERROR"
            )
        if self.state not in _CONNECTED:
            raise PrinterError(f"the printer is {self.state.value}", 409, "CONFLICT")
        if not self._link.fits(len(cleaned)):
            raise PrinterError(
                f"the command is too long for the printer ({len(cleaned)} characters)",
                400,
                "VALIDATION_ERROR",
            )
        self._commands.append((cleaned, _Pending(cleaned, future)))
        if _HEATER_ON.match(cleaned):
            # Report faster at once, not when the next slow report shows the new target.
            self._heating_asked = True
            self._update_temperature_reporting(time.monotonic())
        self._pump()
        return future

    async def execute(self, command: str) -> list[str]:
        """Send one G-code line and wait for its `ok`; returns what the firmware printed."""
        return await self.submit(command)

    async def query_position(self) -> Position:
        """M114, answered with the position the firmware is heading for."""
        await self.execute("M114")
        if self._position is None:
            raise PrinterError("the printer did not report its position")
        return self._position

    def emergency_stop(self, reason: str = "emergency stop") -> None:
        """M112 to the wire now; the printer is then in error until reconnected."""
        if self._transport is not None and self._link.state is not LinkState.CLOSED:
            self._write(self._link.send(EmergencyStop(), time.monotonic()))
        log.warning("emergency stop: %s", reason)
        self._alert("EMERGENCY_STOP", f"Emergency stop: {reason}", "CRITICAL")
        self._fault(f"Emergency stop: {reason}")

    def break_heating_wait(self) -> None:
        """M108 to end an M109/M190 wait at once, through Marlin's emergency parser.

        Sent whether or not a wait is known to be running: temperature auto-reports between
        the wait's own reports do not say so, and M108 with nothing to break does nothing.
        """
        if self._capabilities.get("EMERGENCY_PARSER") and self.state in _CONNECTED:
            self._urgent.append(b"M108")
            self._pump()

    # -- the job room's feed

    def start_feed(self, feed: Feed) -> None:
        if self.state is not PrinterState.OPERATIONAL:
            raise PrinterError(
                f"cannot start a print while the printer is {self.state.value}", 409, "CONFLICT"
            )
        self._feed = feed
        self._feeding = True
        self._move(Trigger.PRINT_STARTED)
        self._pump()

    def pause_feed(self) -> None:
        self._feeding = False
        self._move(Trigger.PRINT_PAUSED)

    def resume_feed(self) -> None:
        self._feeding = True
        self._move(Trigger.PRINT_RESUMED)
        self._pump()

    def end_feed(self, feed: Feed) -> None:
        """`feed`'s job is over (or was stopped): no more lines from it."""
        if self._feed is not feed:
            return  # already dropped (a fault), or never started
        self._feed = None
        self._feeding = False
        if self.state in (PrinterState.PRINTING, PrinterState.PAUSED):
            self._move(Trigger.PRINT_ENDED)

    def kick(self) -> None:
        """New lines are available from the feed."""
        self._pump()

    # -- asyncio.Protocol: the serial port calls these

    def data_received(self, data: bytes) -> None:
        if self._log_serial:
            serial_log.debug("<< %r", data)
        if self.tap.watchers:
            self.tap.record("recv", data)
        link = self._link
        try:
            link.receive_data(data, time.monotonic())
        except RemoteProtocolError as error:
            self._drain()
            self._fault(str(error))
            return
        self._drain()
        self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._link.state is not LinkState.CLOSED:
            self._link.receive_data(b"", time.monotonic())
            self._drain()
        self._lost.set()
        if self._closing:
            return
        log.warning("the printer's port closed: %s", exc or "unplugged")
        self._abandon("the printer was disconnected")
        if self.state is not PrinterState.OFFLINE:
            self._move(Trigger.PORT_LOST)
        self._wake.set()

    # -- connecting

    def _link_settings(self) -> LinkSettings:
        s = self.settings
        return LinkSettings(s.window, s.rx_buffer, s.timeout, s.max_timeouts, s.resend_history)

    async def _supervise(self) -> None:
        """Keep the printer connected: at start, and again after an unplug."""
        while True:
            if self._auto_connect and self.state is PrinterState.OFFLINE:
                async with self._connect_lock:
                    if self._auto_connect and self.state is PrinterState.OFFLINE:
                        await self._connect_once()
            self._wake.clear()
            # asyncio.timeout, never wait_for: Python 3.11's wait_for swallows a cancellation
            # that arrives as the wait ends, and stop() would then wait for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.reconnect_interval):
                    await self._wake.wait()

    async def _connect_once(self) -> bool:
        remembered = await self._remembered()
        attempts = serial_port.connection_attempts(
            self._port, self._baud, remembered, self._port_patterns
        )
        if not attempts:
            self._set_error("no serial port found; is the printer plugged in?")
            return False
        for choice in attempts:
            self._move(Trigger.CONNECT)
            try:
                await self._open_and_handshake(choice)
            except PrinterError as error:
                log.info("no printer on %s at %d baud: %s", choice.path, choice.baud, error)
                self._set_error(str(error))
                await self._close_port()
                continue
            if self.state is not PrinterState.CONNECTING:
                return False  # halted or unplugged during the handshake
            self.error = None
            self._move(Trigger.CONNECTED)
            log.info("connected to %s on %s at %d baud", self._firmware, choice.path, choice.baud)
            await self._remember(choice)
            return True
        if self.state is PrinterState.CONNECTING:
            self._move(Trigger.CONNECT_FAILED)
        return False

    async def _open_and_handshake(self, choice: PortChoice) -> None:
        if self._board_reset is not None:
            self._board_reset()
        self._link = PrinterLink(self._link_settings())
        self._firmware = None
        self._capabilities = {}
        self._autoreport_interval = None
        self._closing = False
        self._lost = asyncio.Event()
        self._transport = await serial_port.open_port(choice, self)
        self._choice = choice
        await self._establish()

    async def _establish(self) -> None:
        """Handshake and identify; again if the board rebooted meanwhile (up to three times)."""
        for _attempt in range(3):
            self._poll_pending = False
            self._autoreport_interval = None
            await self._handshake()
            await self._identify()
            if self._link.state is LinkState.READY:
                return
        raise PrinterError(f"the printer keeps restarting (the link is {self._link.state.value})")

    async def _handshake(self) -> None:
        """Agree on line numbers: `N0 M110 N0` until an ok comes back."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.handshake_timeout
        while True:
            if self._transport is None:
                raise PrinterError("the port closed during the handshake")
            # A half line left in the board's buffer (noise from an attempt at the wrong rate,
            # or an earlier session) would swallow our M110: end it, let its answer go by, and
            # start the conversation afresh.
            self._write(b"\n")
            await asyncio.sleep(HANDSHAKE_SETTLE_SECONDS)
            self._link = PrinterLink(self._link_settings())
            self._handshake_news.clear()
            self._write(self._link.send(ResetLineNumbers(), time.monotonic()))
            wait = min(HANDSHAKE_RETRY_SECONDS, deadline - loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.05)):
                    await self._handshake_news.wait()
            state = self._link.state
            if state is LinkState.READY:
                return
            if state is not LinkState.HANDSHAKE:
                raise PrinterError(f"the printer is {state.value}")
            if loop.time() >= deadline:
                raise PrinterError("no answer to M110")

    async def _identify(self) -> None:
        """M115 (firmware name, capabilities) and a first M105 (temperatures, and how this
        firmware answers M105, which later anchors the window); then auto-reports if offered."""
        loop = asyncio.get_running_loop()
        identified = _Pending(b"M115", loop.create_future())
        measured = _Pending(b"M105", loop.create_future())
        self._commands.extend([(b"M115", identified), (b"M105", measured)])
        self._pump()
        try:
            async with asyncio.timeout(INFO_SECONDS):
                await asyncio.gather(identified.future, measured.future)
        except TimeoutError:
            log.warning("the printer did not answer M115 and M105; assuming a plain firmware")
        except PrinterError:
            return  # the board restarted meanwhile; _establish tries again
        self._last_poll = time.monotonic()
        self._update_temperature_reporting(self._last_poll)

    async def _disconnect_now(self, reason: str) -> None:
        self._abandon(f"the printer was {reason}")
        self._move(Trigger.DISCONNECT)
        await self._close_port()
        self.error = None
        self._publish_status()

    async def _close_port(self) -> None:
        transport = self._transport
        if transport is None:
            return
        self._closing = True
        transport.close()
        try:
            async with asyncio.timeout(5.0):
                await self._lost.wait()
        except TimeoutError:
            log.warning("the serial port did not close within 5 s")
        self._transport = None

    async def _remembered(self) -> PortChoice | None:
        if self._store is None:
            return None
        value = await stored_settings.get(self._store, REMEMBERED_PORT_KEY)
        if not isinstance(value, dict):
            return None
        path, baud = value.get("path"), value.get("baud")
        return PortChoice(path, baud) if isinstance(path, str) and isinstance(baud, int) else None

    async def _remember(self, choice: PortChoice) -> None:
        if self._store is not None:
            value = {"path": choice.path, "baud": choice.baud}
            await stored_settings.put(self._store, REMEMBERED_PORT_KEY, value, "printer")

    # -- the periodic tick: timeouts and temperatures

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = time.monotonic()
            if self.state in _CONNECTED:
                try:
                    self._link.check_timeout(now)
                except RemoteProtocolError as error:
                    self._drain()
                    self._fault(str(error))
                    continue
                self._drain()
                self._update_temperature_reporting(now)
                self._pump()

    def _temperature_interval(self) -> float:
        s = self.settings
        printing = self.state in (PrinterState.PRINTING, PrinterState.PAUSED)
        busy = printing or self._heating_asked or self._temperatures.heating
        return s.temperature_interval if busy else s.idle_temperature_interval

    def _update_temperature_reporting(self, now: float) -> None:
        if self.state not in (*_CONNECTED, PrinterState.CONNECTING):
            return
        interval = self._temperature_interval()
        if self._capabilities.get("AUTOREPORT_TEMP"):
            seconds = max(1, round(interval))
            if seconds != self._autoreport_interval:
                self._autoreport_interval = seconds
                self._commands.append((b"M155 S%d" % seconds, None))
        elif not self._poll_pending and now - self._last_poll >= interval:
            self._poll_pending = True
            self._last_poll = now
            self._commands.append((b"M105", None))

    # -- sending

    def _write(self, data: bytes) -> None:
        if not data or self._transport is None:
            return
        if self._log_serial:
            serial_log.debug(">> %r", data)
        if self.tap.watchers:
            self.tap.record("send", data)
        self._transport.write(data)

    def _pump(self) -> None:
        """Send what the window allows: resends, then probes, then commands, then job lines."""
        link = self._link
        if self._transport is None or link.state is not LinkState.READY:
            return
        now = time.monotonic()
        out = [link.retransmit(now)]
        if link.resending:
            self._write(b"".join(out))
            return
        send = link.send
        urgent, commands = self._urgent, self._commands
        while urgent:
            out.append(send(SendLine(urgent.popleft(), urgent=True), now))
        while commands and link.can_send(len(commands[0][0])):
            command, pending = commands.popleft()
            if pending is not None and pending.future.done():
                continue  # whoever asked has given up (a cancelled pause or resume)
            out.append(send(SendLine(command), now))
            if pending is not None:
                self._awaiting[link.next_line_number - 1] = pending
        if not commands and self._feeding and self._feed is not None:
            feed = self._feed
            while (line := feed.peek()) is not None and link.can_send(len(line)):
                if not link.fits(len(line)):
                    self._feeding = False
                    shown = line[:48].decode(errors="replace")
                    feed.on_fault(f"a line of the file is too long for the printer: {shown}...")
                    break
                out.append(send(SendLine(line), now))
                feed.advance()
        self._write(b"".join(out))

    # -- what the firmware said

    def _drain(self) -> None:
        link = self._link
        while (event := link.next_event()) is not NEED_DATA:
            assert isinstance(event, Event)
            self._handle(event)

    def _handle(self, event: Event) -> None:
        match event:
            case LineAcked(line=line):
                self._handshake_news.set()
                if self._awaiting:
                    self._resolve_through(line)
            case DuplicateResendIgnored():
                if self.state is PrinterState.CONNECTING:
                    self._handshake_news.set()  # our M110 was refused: send it again
            case OkIgnored() | WaitReported() | BusyReported():
                pass
            case TemperatureReported(tools, bed, chamber, waiting):
                self._on_temperatures(Temperatures(tools, bed, chamber, waiting))
                if self._awaiting:
                    pending = self._awaiting[min(self._awaiting)]
                    if pending.command.upper().startswith(b"M105"):
                        pending.lines.append(_describe(self._temperatures))
            case PositionReported(x, y, z, e):
                self._position = Position(x, y, z, e)
                self._answer(f"X:{x:.2f} Y:{y:.2f} Z:{z:.2f} E:{e:.2f}")
            case MessageReceived(text):
                self._answer(text)
            case FirmwareIdentified():
                self._firmware = event.name or None
                self._answer(", ".join(f"{k}:{v}" for k, v in event.fields))
            case CapabilityReported(name, enabled):
                self._capabilities[name] = enabled
            case HostActionRequested(action, argument):
                self._on_host_action(action, argument)
            case FirmwareErrorReported(message, kind):
                if kind is ErrorKind.OTHER:
                    self._answer(message)
                    self._alert("FIRMWARE_ERROR", message, "WARNING")
            case ResendRequested(line):
                log.debug("the printer asked for line %d again", line)
                if self.state is PrinterState.CONNECTING:
                    self._handshake_news.set()
                elif not self._poll_pending:
                    # M105's answer re-anchors the window after whatever the flush did
                    self._poll_pending = True
                    self._commands.appendleft((b"M105", None))
            case FirmwareHalted(reason):
                alert = "THERMAL_RUNAWAY" if "thermal runaway" in reason.lower() else "HALTED"
                self._alert(alert, f"The printer halted: {reason}", "CRITICAL")
                self._fault(f"The printer halted: {reason}")
            case FirmwareReset():
                self._on_firmware_reset()
            case ResponseTimedOut(attempt, assumed):
                log.warning(
                    "no answer from the printer for %.0f s; probing (%d of %d)",
                    self.settings.timeout,
                    attempt,
                    self.settings.max_timeouts,
                )
                if assumed is not None and self._awaiting:
                    self._resolve_through(assumed)
                self._poll_pending = False
                self._commands.appendleft((b"M105", None))
            case LineTooLong(length):
                log.warning("discarded %d bytes of garbage from the printer", length)
            case PortClosed():
                pass
            case _:
                log.debug("unhandled printer event %r", event)

    def _answer(self, text: str) -> None:
        """Attach a printed line to the oldest command someone awaits."""
        if self._awaiting:
            self._awaiting[min(self._awaiting)].lines.append(text)

    def _resolve_through(self, line: int) -> None:
        for number in sorted(n for n in self._awaiting if n <= line):
            pending = self._awaiting.pop(number)
            if not pending.future.done():
                pending.future.set_result(pending.lines)

    def _on_temperatures(self, temperatures: Temperatures) -> None:
        self._temperatures = temperatures
        self._poll_pending = False
        self._heating_asked = False  # the report shows the targets now
        hotend = temperatures.tools[0] if temperatures.tools else None
        self._bus.publish(
            TemperaturesReported(
                hotend_temp=hotend.actual if hotend else None,
                hotend_target=hotend.target if hotend else None,
                bed_temp=temperatures.bed.actual if temperatures.bed else None,
                bed_target=temperatures.bed.target if temperatures.bed else None,
                chamber_temp=temperatures.chamber.actual if temperatures.chamber else None,
            )
        )

    def _on_host_action(self, action: str, argument: str) -> None:
        if action.startswith("prompt") or action == "notification":
            if argument:
                self._alert("PROMPT", argument, "INFO")
            return
        if action == "disconnect":
            self._spawn(self.disconnect())
            return
        if self._feed is not None:
            self._feed.on_host_action(action, argument)

    def _on_firmware_reset(self) -> None:
        if self.state is PrinterState.CONNECTING:
            self._handshake_news.set()
            return
        if self.state not in _CONNECTED:
            return
        log.warning("the printer restarted")
        self._alert("PRINTER_RESET", "The printer restarted", "ERROR")
        self._abandon("the printer restarted")
        self._move(Trigger.FIRMWARE_RESET)
        self._spawn(self._rehandshake())

    async def _rehandshake(self) -> None:
        async with self._connect_lock:
            try:
                await self._establish()
            except PrinterError as error:
                self._fault(f"the printer restarted and did not answer: {error}")
                return
            if self.state is PrinterState.CONNECTING:
                self._move(Trigger.CONNECTED)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in the background; `stop()` cancels it."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- failures

    def _abandon(self, reason: str) -> None:
        """Drop every queued command and tell whoever waits that the printer is gone."""
        self._urgent.clear()
        self._commands.clear()
        self._poll_pending = False
        awaiting, self._awaiting = self._awaiting, {}
        for pending in awaiting.values():
            if not pending.future.done():
                pending.future.set_exception(PrinterError(reason))
        feed, self._feed = self._feed, None
        self._feeding = False
        if feed is not None:
            feed.on_fault(reason)

    def _fault(self, reason: str) -> None:
        log.error("printer fault: %s", reason)
        self.error = reason
        self._abandon(reason)
        if self.state is not PrinterState.OFFLINE:
            self._move(Trigger.FAULT)
        else:
            self._publish_status()

    def _set_error(self, reason: str) -> None:
        if reason != self.error:
            self.error = reason
            self._publish_status()

    def _alert(self, kind: str, message: str, severity: str) -> None:
        self._bus.publish(PrinterAlert(type=kind, message=message, severity=severity))

    # -- states

    def _move(self, trigger: Trigger) -> None:
        try:
            after = TRANSITIONS[(self.state, trigger)]
        except KeyError:
            raise PrinterError(
                f"cannot {trigger.value.replace('-', ' ')} while the printer is {self.state.value}",
                409,
                "CONFLICT",
            ) from None
        changed = after is not self.state
        self.state = after
        if changed:
            self._publish_status()

    def _publish_status(self) -> None:
        self._bus.publish(
            PrinterStatusChanged(
                state=self.state.value,
                error=self.error,
                port=self._choice.path if self._choice else None,
                baud=self._choice.baud if self._choice else None,
                firmware=self._firmware,
            )
        )


def _describe(temperatures: Temperatures) -> str:
    """A report in Marlin's own words, for whoever sent M105."""
    parts = []
    for index, reading in enumerate(temperatures.tools):
        parts.append(_reading(f"T{index}" if len(temperatures.tools) > 1 else "T", reading))
    if temperatures.bed is not None:
        parts.append(_reading("B", temperatures.bed))
    if temperatures.chamber is not None:
        parts.append(_reading("C", temperatures.chamber))
    return " ".join(parts)


def _reading(name: str, reading: Reading) -> str:
    target = "" if reading.target is None else f" /{reading.target:.2f}"
    return f"{name}:{reading.actual:.2f}{target}"


__all__ = [
    "TRANSITIONS",
    "Feed",
    "Position",
    "Printer",
    "PrinterState",
    "PrinterStatus",
    "ProtocolError",
    "SerialTap",
    "Temperatures",
    "Trigger",
]
