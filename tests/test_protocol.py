"""The sans-IO link, fed canned bytes: what Marlin prints must become the right events.

Each canned case is fed whole, byte by byte and with trailing bytes of a next line, as h11's
tests do, so that no parse depends on how the serial port chunks its reads.
"""

from __future__ import annotations

import ast
import random
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import reduce
from operator import xor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lezerprintd.printer import protocol
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
    LocalProtocolError,
    MessageReceived,
    OkIgnored,
    PortClosed,
    PositionReported,
    PrinterLink,
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

ROOT = Path(__file__).resolve().parent.parent


def events(link: PrinterLink) -> list[Event]:
    found = []
    while (event := link.next_event()) is not NEED_DATA:
        assert isinstance(event, Event)
        found.append(event)
    return found


def ready_link(**settings: object) -> PrinterLink:
    """A link past the handshake: M110 sent and acknowledged."""
    link = PrinterLink(LinkSettings(**settings))  # type: ignore[arg-type]
    link.send(ResetLineNumbers(), now=0.0)
    link.receive_data(b"ok\n", now=0.0)
    assert isinstance(events(link)[0], LineAcked)
    assert link.state is LinkState.READY
    return link


def frame(number: int, command: str) -> bytes:
    body = f"N{number} {command}".encode()
    return body + b"*%d\n" % reduce(xor, body, 0)


def feed_three_ways(data: bytes, setup: Callable[[], PrinterLink]) -> list[list[Event]]:
    """The events from feeding `data` whole, one byte at a time, and with a partial next line."""
    results = []
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))], [data + b"echo:par"]):
        link = setup()
        for chunk in chunks:
            link.receive_data(chunk, now=1.0)
        results.append(events(link))
    return results


# -- framing ----------------------------------------------------------------------------


def test_lines_are_numbered_and_checksummed_like_marlin_expects() -> None:
    link = PrinterLink()
    assert link.send(ResetLineNumbers(), now=0.0) == frame(0, "M110 N0") == b"N0 M110 N0*125\n"
    link.receive_data(b"ok\n", now=0.0)
    events(link)
    assert link.send(SendLine(b"G28"), now=0.0) == frame(1, "G28")
    assert link.send(SendLine(b"G1 X10 Y20 F3000"), now=0.0) == frame(2, "G1 X10 Y20 F3000")


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (b"G1 X10 ; move\n", b"G1 X10"),
        (b"  M104 S200\r\n", b"M104 S200"),
        (b";LAYER:3\n", b""),
        (b"\t\n", b""),
        (b"M117 Hello", b"M117 Hello"),
    ],
)
def test_comments_and_whitespace_are_stripped(raw: bytes, clean: bytes) -> None:
    assert clean_command(raw) == clean


@given(
    st.lists(
        st.text(
            alphabet=st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters="*;"),
            min_size=1,
            max_size=90,
        )
        .map(str.strip)
        .filter(bool),
        max_size=30,
    )
)
def test_any_printable_command_is_framed_so_marlin_accepts_it(commands: list[str]) -> None:
    link = ready_link(window=64, rx_buffer=0)
    for expected_number, command in enumerate(commands, start=1):
        data = link.send(SendLine(command.encode()), now=0.0)
        body, star, digits = data.rstrip(b"\n").rpartition(b"*")
        assert star
        assert int(digits) == reduce(xor, body, 0)
        assert body == f"N{expected_number} {command}".encode()


# -- canned firmware output ---------------------------------------------------------------

CANNED: list[tuple[bytes, list[Event]]] = [
    (
        b"ok T:21.30 /0.00 B:21.80 /60.00 @:0 B@:0\n",
        [
            TemperatureReported(
                (Reading(21.3, 0.0, 0),), Reading(21.8, 60.0, 0), None, waiting=False
            ),
            OkIgnored("stray"),
        ],
    ),
    (
        b" T:201.04 /210.00 B:59.90 /60.00 @:90 B@:12\n",
        [
            TemperatureReported(
                (Reading(201.04, 210.0, 90),), Reading(59.9, 60.0, 12), None, waiting=False
            )
        ],
    ),
    (
        b"T:180.1 /200.0 B:50.0 /60.0 T0:180.1 /200.0 T1:25.0 /0.0 @:127 B@:0 W:?\r\n",
        [
            TemperatureReported(
                (Reading(180.1, 200.0), Reading(25.0, 0.0)),
                Reading(50.0, 60.0, 0),
                None,
                waiting=True,
            )
        ],
    ),
    (
        b" T:20.00 /0.00 B:20.00 /0.00 C:30.5 /40.0 @:0 B@:0\n",
        [
            TemperatureReported(
                (Reading(20.0, 0.0, 0),), Reading(20.0, 0.0, 0), Reading(30.5, 40.0), waiting=False
            )
        ],
    ),
    (
        b"X:10.00 Y:20.50 Z:0.30 E:-1.00 Count X:800 Y:1640 Z:120\n",
        [PositionReported(10.0, 20.5, 0.3, -1.0)],
    ),
    (
        b"FIRMWARE_NAME:Marlin 2.1.2 (Jan  1 2023) SOURCE_CODE_URL:github.com/MarlinFirmware/Marlin"
        b" PROTOCOL_VERSION:1.0 MACHINE_TYPE:Ender-3 V2 EXTRUDER_COUNT:1 UUID:cede2a2f-41a2\n",
        [
            FirmwareIdentified(
                (
                    ("FIRMWARE_NAME", "Marlin 2.1.2 (Jan  1 2023)"),
                    ("SOURCE_CODE_URL", "github.com/MarlinFirmware/Marlin"),
                    ("PROTOCOL_VERSION", "1.0"),
                    ("MACHINE_TYPE", "Ender-3 V2"),
                    ("EXTRUDER_COUNT", "1"),
                    ("UUID", "cede2a2f-41a2"),
                )
            )
        ],
    ),
    (
        b"Cap:AUTOREPORT_TEMP:1\nCap:EEPROM:0\n",
        [CapabilityReported("AUTOREPORT_TEMP", True), CapabilityReported("EEPROM", False)],
    ),
    (
        b"echo:busy: processing\nbusy: paused for user\n",
        [BusyReported("processing"), BusyReported("paused for user")],
    ),
    (
        b"//action:pause\n// action:prompt_begin Filament runout\n//action:cancel\n",
        [
            HostActionRequested("pause", ""),
            HostActionRequested("prompt_begin", "Filament runout"),
            HostActionRequested("cancel", ""),
        ],
    ),
    (
        b"Error:Thermal Runaway, system stopped! Heater_ID: 0\n"
        b"Error:Printer halted. kill() called!\n",
        [
            FirmwareHalted("Thermal Runaway, system stopped! Heater_ID: 0"),
            FirmwareHalted("Printer halted. kill() called!"),
        ],
    ),
    (
        b"Error:MINTEMP triggered, system stopped! Heater_ID: bed\n",
        [FirmwareHalted("MINTEMP triggered, system stopped! Heater_ID: bed")],
    ),
    (
        b"!! Shutdown due to webhooks request\n",
        [FirmwareHalted("!! Shutdown due to webhooks request")],
    ),
    (b"Error:Probing Failed\n", [FirmwareErrorReported("Error:Probing Failed", ErrorKind.OTHER)]),
    (
        b" T:200.0 /200.0 T0:200.0 /200.0 T1:30.0 /0.0 B:60.0 /60.0 @:80 B@:20 @0:80 @1:0\n",
        [
            TemperatureReported(
                (Reading(200.0, 200.0, 80), Reading(30.0, 0.0, 0)),
                Reading(60.0, 60.0, 20),
                None,
                waiting=False,
            )
        ],
    ),
    (b"start\n", [FirmwareReset()]),
    (b"wait\n", [WaitReported()]),
    (b'echo:Unknown command: "G999"\n', [MessageReceived('echo:Unknown command: "G999"')]),
    (b"\xff\xfe\x00garbage\x81\n", [MessageReceived("\ufffd\ufffd\x00garbage\ufffd")]),
    (b"\r\n\n   \n", []),
]


@pytest.mark.parametrize(("data", "expected"), CANNED)
def test_firmware_lines_become_events_however_they_are_chunked(
    data: bytes, expected: list[Event]
) -> None:
    for found in feed_three_ways(data, PrinterLink):
        assert found == expected


def test_an_overlong_line_is_discarded_as_garbage_and_the_link_goes_on() -> None:
    link = ready_link()
    link.receive_data(b"x" * (protocol.MAX_LINE + 10), now=1.0)
    link.receive_data(b"yyy\nok\n", now=1.0)
    found = events(link)
    assert found[0] == LineTooLong(protocol.MAX_LINE + 10)
    assert isinstance(found[-1], OkIgnored)
    assert link.state is LinkState.READY


@given(st.binary(min_size=1, max_size=3000))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_random_garbage_never_crashes_the_link(noise: bytes) -> None:
    link = ready_link()
    link.send(SendLine(b"G28"), now=0.0)
    try:
        link.receive_data(noise, now=1.0)
    except RemoteProtocolError:
        # Only a resend request for a line we never had may stop the link, with a message.
        assert link.state is LinkState.ERROR
        return
    events(link)
    assert link.state in (LinkState.READY, LinkState.HALTED, LinkState.HANDSHAKE)


# -- flow control -------------------------------------------------------------------------


def test_the_window_limits_lines_in_flight_and_each_ok_frees_one() -> None:
    link = ready_link(window=3, rx_buffer=0)
    for command in (b"G1 X1", b"G1 X2", b"G1 X3"):
        assert link.can_send(len(command))
        link.send(SendLine(command), now=0.0)
    assert not link.can_send(5)
    with pytest.raises(LocalProtocolError):
        link.send(SendLine(b"G1 X4"), now=0.0)
    assert link.state is LinkState.ERROR


def test_oks_acknowledge_lines_in_order() -> None:
    link = ready_link(window=3, rx_buffer=0)
    for command in (b"G1 X1", b"G1 X2"):
        link.send(SendLine(command), now=0.0)
    link.receive_data(b"ok\nok\nok\n", now=0.1)
    assert events(link) == [LineAcked(1), LineAcked(2), OkIgnored("stray")]
    assert link.lines_in_flight == 0


def test_the_byte_budget_keeps_an_avr_receive_buffer_from_overflowing() -> None:
    link = ready_link(window=16, rx_buffer=64)
    command = b"G1 X100.000 Y100.000 E1.2345"  # framed: 38 bytes
    link.send(SendLine(command), now=0.0)
    assert not link.can_send(len(command))  # 76 bytes would not fit in 64
    link.receive_data(b"ok\n", now=0.0)
    events(link)
    assert link.can_send(len(command))


def test_a_line_longer_than_the_budget_still_goes_when_nothing_is_in_flight() -> None:
    link = ready_link(window=4, rx_buffer=32)
    assert link.can_send(60)
    link.send(SendLine(b"M117 " + b"x" * 55), now=0.0)
    assert not link.can_send(1)


def test_advanced_ok_acknowledges_by_line_number_and_sizes_the_window() -> None:
    link = ready_link(window=8, rx_buffer=0)
    for number in range(1, 6):
        link.send(SendLine(b"G1 X%d" % number), now=0.0)
    # the firmware's ok for line 3 arrives (oks for 1 and 2 were lost); BUFSIZE is 4
    link.receive_data(b"ok N3 P15 B3\n", now=0.1)
    assert events(link) == [LineAcked(3, planner_free=15, buffer_free=3)]
    assert link.lines_in_flight == 2
    assert link.window == 4


def test_the_window_follows_advanced_ok_but_never_beyond_the_setting() -> None:
    link = ready_link(window=4, rx_buffer=0)
    link.send(SendLine(b"G28"), now=0.0)
    link.receive_data(b"ok N1 P15 B31\n", now=0.1)
    events(link)
    assert link.window == 4


# -- resends ----------------------------------------------------------------------------------


def test_a_checksum_error_makes_the_link_resend_from_that_line() -> None:
    link = ready_link(window=4, rx_buffer=0)
    sent = [link.send(SendLine(b"G1 X%d" % n), now=0.0) for n in range(1, 5)]
    link.receive_data(
        b"ok\nError:checksum mismatch, Last Line: 1\nResend: 2\nok\n"
        b"Error:Line Number is not Last Line Number+1, Last Line: 1\nResend: 2\nok\n",
        now=0.2,
    )
    found = events(link)
    assert found == [
        LineAcked(1),
        FirmwareErrorReported("Error:checksum mismatch, Last Line: 1", ErrorKind.LINE),
        ResendRequested(2),
        OkIgnored("resend"),
        FirmwareErrorReported(
            "Error:Line Number is not Last Line Number+1, Last Line: 1", ErrorKind.LINE
        ),
        DuplicateResendIgnored(2),
        OkIgnored("resend"),
    ]
    assert link.resending
    assert not link.can_send(5)
    assert link.retransmit(now=0.3) == b"".join(sent[1:])
    assert not link.resending
    # the remaining duplicate (line 4 was also out of order) must not cause a second resend
    link.receive_data(
        b"Error:Line Number is not Last Line Number+1, Last Line: 1\nResend: 2\nok\n", now=0.3
    )
    assert [type(e) for e in events(link)] == [
        FirmwareErrorReported,
        DuplicateResendIgnored,
        OkIgnored,
    ]
    assert link.retransmit(now=0.3) == b""
    link.receive_data(b"ok\nok\nok\n", now=0.4)
    assert events(link) == [LineAcked(2), LineAcked(3), LineAcked(4)]


def test_a_resent_line_that_arrives_damaged_again_is_resent_again() -> None:
    link = ready_link(window=4, rx_buffer=0)
    sent = [link.send(SendLine(b"G1 X%d" % n), now=0.0) for n in range(1, 4)]
    link.receive_data(b"Error:checksum mismatch, Last Line: 0\nResend: 1\nok\n", now=0.1)
    events(link)
    assert link.retransmit(now=0.1) == b"".join(sent)
    # duplicates from lines 2 and 3 are still owed, but this one is a damaged repeat of 1
    link.receive_data(b"Error:checksum mismatch, Last Line: 0\nResend: 1\nok\n", now=0.2)
    assert ResendRequested(1) in events(link)
    assert link.retransmit(now=0.2) == b"".join(sent)


def test_a_resend_request_for_a_line_no_longer_held_fails_the_link_clearly() -> None:
    link = ready_link(window=4, rx_buffer=0, resend_history=16)
    for number in range(1, 41):
        link.send(SendLine(b"G1 X%d" % number), now=0.0)
        link.receive_data(b"ok\n", now=0.0)
    events(link)
    with pytest.raises(RemoteProtocolError, match="resend line 3, which is no longer held"):
        link.receive_data(b"Resend: 3\n", now=0.1)
    assert link.state is LinkState.ERROR


def test_rs_resend_form_is_understood() -> None:
    link = ready_link(window=2, rx_buffer=0)
    first = link.send(SendLine(b"G28"), now=0.0)
    link.receive_data(b"rs N1\n", now=0.1)
    assert events(link) == [ResendRequested(1)]
    assert link.retransmit(now=0.1) == first


# -- timeouts, busy, wait ------------------------------------------------------------------------


def test_silence_leads_to_probes_then_to_a_clear_failure() -> None:
    link = ready_link(timeout=10.0, max_timeouts=2, window=2, rx_buffer=0)
    link.send(SendLine(b"G1 X1"), now=100.0)
    link.send(SendLine(b"G1 X2"), now=100.0)
    link.check_timeout(now=109.0)
    assert events(link) == []
    link.check_timeout(now=110.0)
    assert events(link) == [ResponseTimedOut(attempt=1, assumed_acked=1)]
    assert link.can_send(5)  # one slot freed for the M105 probe
    link.check_timeout(now=120.0)
    assert events(link) == [ResponseTimedOut(attempt=2, assumed_acked=2)]
    link.send(SendLine(b"M105"), now=120.0)
    with pytest.raises(RemoteProtocolError, match="stopped answering"):
        link.check_timeout(now=130.0)
    assert link.state is LinkState.ERROR


def test_busy_keepalives_extend_the_timeout() -> None:
    link = ready_link(timeout=5.0)
    link.send(SendLine(b"G28"), now=0.0)
    for second in range(4, 60, 4):
        link.receive_data(b"echo:busy: processing\n", now=float(second))
        link.check_timeout(now=float(second) + 3.9)
    assert all(isinstance(e, BusyReported) for e in events(link))
    assert link.lines_in_flight == 1


def test_nothing_times_out_while_nothing_is_owed() -> None:
    link = ready_link(timeout=1.0)
    link.check_timeout(now=1000.0)
    assert events(link) == []


def test_wait_means_oks_owed_for_more_than_a_second_were_lost() -> None:
    link = ready_link(window=4, rx_buffer=0)
    link.send(SendLine(b"G1 X1"), now=0.0)
    link.send(SendLine(b"G1 X2"), now=0.0)
    link.receive_data(b"wait\n", now=0.5)
    assert events(link) == [WaitReported()]
    assert link.lines_in_flight == 2
    link.receive_data(b"wait\n", now=2.0)
    assert events(link) == [LineAcked(2), WaitReported()]
    assert link.lines_in_flight == 0


# -- halts, resets, closing ----------------------------------------------------------------------


def test_emergency_stop_goes_out_at_once_whatever_the_window() -> None:
    link = ready_link(window=1)
    link.send(SendLine(b"G28"), now=0.0)
    assert not link.can_send(4)
    assert link.send(EmergencyStop(), now=0.0) == b"M112\n"
    assert link.state is LinkState.HALTED
    with pytest.raises(LocalProtocolError, match="cannot SendLine while the link is halted"):
        link.send(SendLine(b"G28"), now=0.0)


def test_a_halted_firmware_accepts_nothing_until_it_restarts() -> None:
    link = ready_link()
    link.receive_data(b"Error:Printer halted. kill() called!\n", now=0.0)
    assert events(link) == [FirmwareHalted("Printer halted. kill() called!")]
    assert not link.can_send(3)
    link.receive_data(b"start\necho:Marlin 2.1.2\n", now=5.0)
    assert events(link) == [FirmwareReset(), MessageReceived("echo:Marlin 2.1.2")]
    assert link.state is LinkState.HANDSHAKE
    link.send(ResetLineNumbers(), now=5.0)


def test_a_firmware_reset_mid_stream_forgets_everything_owed() -> None:
    link = ready_link(window=4, rx_buffer=0)
    for number in range(1, 4):
        link.send(SendLine(b"G1 X%d" % number), now=0.0)
    link.receive_data(b"start\n", now=1.0)
    assert events(link) == [FirmwareReset()]
    assert link.lines_in_flight == 0
    assert link.state is LinkState.HANDSHAKE


def test_a_closed_port_ends_the_link() -> None:
    link = ready_link()
    link.receive_data(b"", now=0.0)
    assert events(link) == [PortClosed()]
    assert link.state is LinkState.CLOSED
    with pytest.raises(LocalProtocolError):
        link.receive_data(b"ok\n", now=0.0)


def test_every_state_change_is_a_row_of_the_table() -> None:
    source = Path(protocol.__file__).read_text()
    assignments = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Attribute) and t.attr == "state" for t in node.targets)
    ]
    # __init__ (HANDSHAKE), _move (table lookup and its ERROR), _local, _remote
    assert len(assignments) == 5


def test_the_protocol_module_does_no_io() -> None:
    tree = ast.parse(Path(protocol.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    forbidden = {
        "asyncio",
        "aiohttp",
        "serial",
        "serial_asyncio_fast",
        "sqlite3",
        "aiosqlite",
        "time",
        "os",
        "socket",
        "threading",
        "select",
        "io",
    }
    assert imported.isdisjoint(forbidden), imported & forbidden


def test_the_docs_carry_the_current_transition_table() -> None:
    docs = (ROOT / "docs" / "protocol.md").read_text()
    assert protocol.transitions_markdown() in docs


# -- a noisy wire against a model of Marlin's queue.cpp ----------------------------------------


# The commands this model's firmware runs; anything else is an unknown command (G152...).
MARLIN_KNOWS = frozenset(
    {
        "G0",
        "G1",
        "G28",
        "G90",
        "G91",
        "G92",
        "M82",
        "M83",
        "M104",
        "M105",
        "M109",
        "M110",
        "M114",
        "M140",
        "M190",
        "M400",
    }
)


@dataclass
class MiniMarlin:
    """Marlin 2.1's serial intake, pure: a receive buffer that drops overflow; line checks that
    flush the buffer and ask for a resend; a command ring; one ok per processed command.

    Like Marlin 2.1, it runs a line without a line number as it is: after a flush that can be
    the tail of one of our lines. A tail that starts with a command is run (`tails_run`), any
    other is answered "Unknown command", and both get an ok.
    """

    rx_size: int = 128
    bufsize: int = 4
    advanced_ok: bool = False
    last_n: int = 0
    rx: bytearray = field(default_factory=bytearray)
    ring: deque[tuple[str, int | None]] = field(default_factory=deque)
    accepted: list[str] = field(default_factory=list)
    tails_run: list[str] = field(default_factory=list)
    out: bytearray = field(default_factory=bytearray)

    def receive(self, data: bytes) -> None:
        room = self.rx_size - len(self.rx)
        self.rx += data[:room]  # a UART drops what does not fit

    def intake(self) -> None:
        while len(self.ring) < self.bufsize and b"\n" in self.rx:
            raw, _, rest = bytes(self.rx).partition(b"\n")
            self.rx = bytearray(rest)
            line = raw.strip()
            if not line:
                continue
            if not line.startswith(b"N"):
                self.ring.append((line.partition(b"*")[0].strip().decode("latin-1"), None))
                continue
            digits = line[1:].split(b" ", 1)[0]
            number = int(digits) if digits.isdigit() else -1
            if b"M110" in line:
                self.last_n = number - 1
            if number != self.last_n + 1:
                self._reject("Line Number is not Last Line Number+1")
                continue
            body, star, given = line.rpartition(b"*")
            if not star:
                self._reject("No Checksum with line number")
                continue
            if not given.isdigit() or int(given) != reduce(xor, body, 0):
                self._reject("checksum mismatch")
                continue
            self.last_n = number
            self.ring.append((body.split(b" ", 1)[1].decode("latin-1"), number))

    def _reject(self, why: str) -> None:
        self.out += f"Error:{why}, Last Line: {self.last_n}\n".encode()
        self.rx.clear()
        self.out += f"Resend: {self.last_n + 1}\nok\n".encode()

    def process(self, count: int) -> None:
        for _ in range(min(count, len(self.ring))):
            command, number = self.ring.popleft()
            if number is None:
                if command.split(" ", 1)[0] in MARLIN_KNOWS:
                    self.tails_run.append(command)
                else:
                    self.out += b'echo:Unknown command: "%s"\n' % command.encode()
            elif command == "M105":
                self.out += b"ok T:21.30 /0.00 B:21.80 /0.00 @:0 B@:0\n"
                continue
            elif not command.startswith("M110"):
                self.accepted.append(command)
            if not self.advanced_ok:
                self.out += b"ok\n"
            else:
                line_number = b"" if number is None else b" N%d" % number
                free = self.bufsize - len(self.ring) - 1
                self.out += b"ok%s P15 B%d\n" % (line_number, free)


def damage(data: bytes, rng: random.Random, rate: float) -> bytes:
    """Each line, with probability `rate`, gets one byte replaced on the wire. (Marlin's XOR
    checksum cannot see two changes that cancel out, so a line is damaged at most once.)"""
    lines = data.split(b"\n")
    for index, line in enumerate(lines):
        if line and rng.random() < rate:
            position = rng.randrange(len(line))
            replacement = rng.choice([c for c in range(32, 127) if c != line[position]])
            lines[index] = line[:position] + bytes([replacement]) + line[position + 1 :]
    return b"\n".join(lines)


def stream_over_noisy_wire(
    seed: int,
    corruption: float,
    window: int,
    rx_size: int,
    *,
    count: int = 300,
    advanced_ok: bool = False,
) -> tuple[list[str], MiniMarlin, PrinterLink]:
    """Stream `count` lines through a link and a MiniMarlin over a wire that damages lines and
    delivers bytes in random pieces; return the commands, the firmware and the link."""
    rng = random.Random(seed)
    commands = [f"G1 X{i % 200}.{i % 7} Y{(i * 3) % 200} E{i / 10:.3f}" for i in range(count)]
    firmware = MiniMarlin(rx_size=rx_size, advanced_ok=advanced_ok)
    link = PrinterLink(
        LinkSettings(window=window, rx_buffer=min(127, rx_size - 1), timeout=2.0, max_timeouts=5)
    )
    now = 0.0
    wire = link.send(ResetLineNumbers(), now)
    # Like a job, which ends with M400: a last numbered line shows up any line before it that
    # an ok not meant for it had seemed to acknowledge.
    pending = deque([*commands, "M105"])
    for _step in range(50 * count):
        if not pending and not link.lines_in_flight and not link.resending:
            break
        fresh = link.retransmit(now)
        while pending and link.can_send(len(pending[0])):
            fresh += link.send(SendLine(pending.popleft().encode()), now)
        wire += damage(fresh, rng, corruption)
        if wire:
            cut = rng.randint(1, len(wire))
            firmware.receive(wire[:cut])
            wire = wire[cut:]
        firmware.intake()
        firmware.process(rng.randint(0, 3))
        firmware.intake()
        if firmware.out:
            cut = rng.randint(1, len(firmware.out))
            link.receive_data(bytes(firmware.out[:cut]), now)
            del firmware.out[:cut]
        for event in events(link):
            # the printer's probe after a silence, and its check after a resend
            if isinstance(event, (ResponseTimedOut, ResendRequested)) and "M105" not in pending:
                pending.appendleft("M105")
        now += 0.05
        link.check_timeout(now)
    return commands, firmware, link


@given(
    seed=st.integers(0, 2**32 - 1),
    corruption=st.sampled_from([0.0, 0.01, 0.05]),
    window=st.integers(1, 8),
    rx_size=st.sampled_from([64, 128, 100_000]),
    advanced_ok=st.booleans(),
)
# Once found at random: a damaged byte became '*', so the tail that ran was cut short.
@example(seed=715, corruption=0.05, window=5, rx_size=128, advanced_ok=True)
# And a line whose '*' was damaged: its checksum digits were run with the tail.
@example(seed=3930, corruption=0.05, window=3, rx_size=128, advanced_ok=False)
# The same 80 cases every run. At random, about 1 case in 2,000 (5% damage, a 64-byte buffer,
# no ADVANCED_OK) meets a limit of Marlin's protocol rather than of this link: a damaged 'N'
# makes a line run unnumbered, its ok frees the budget early, the buffer overflows, and once
# in 256 such drops the lost bytes XOR to zero and a cut line passes its checksum.
@settings(max_examples=80, deadline=None, derandomize=True)
def test_every_line_arrives_exactly_once_in_order_over_a_noisy_wire(
    seed: int, corruption: float, window: int, rx_size: int, advanced_ok: bool
) -> None:
    commands, firmware, link = stream_over_noisy_wire(
        seed, corruption, window, rx_size, advanced_ok=advanced_ok
    )
    assert firmware.accepted == commands
    assert link.lines_in_flight == 0
    # Marlin 2.1 runs the tail of a line it flushed if the tail starts with a command; no host
    # can stop that once the line was sent ahead. Every such tail is a piece of our lines.
    assert all(is_tail_of_ours(tail, [*commands, "M105"]) for tail in firmware.tails_run)


def is_tail_of_ours(tail: str, commands: list[str]) -> bool:
    """Whether `tail` is a piece of one of our lines as sent (`N.. command*checksum`): the end
    of a command, allowing the one damaged character it may carry; a piece cut short where the
    damage turned a character into '*' (the firmware ignores what follows a '*' on a line
    without a number); or the end of a line whose own '*' was damaged, so its checksum digits
    came along."""
    star_damaged = re.fullmatch(r"(.*)[^*\d](\d{1,3})", tail)
    pieces = [tail] + ([star_damaged[1]] if star_damaged else [])
    for piece_of_tail in pieces:
        for command in commands:
            for start in range(len(command) - len(piece_of_tail) + 1):
                piece = command[start : start + len(piece_of_tail)]
                differences = sum(a != b for a, b in zip(piece, piece_of_tail, strict=True))
                at_end = start + len(piece_of_tail) == len(command)
                if differences == 0 or (at_end and differences <= 1):
                    return True
    return False


def test_with_one_line_in_flight_no_tail_can_ever_run() -> None:
    for seed in range(40):
        commands, firmware, _ = stream_over_noisy_wire(seed, 0.05, 1, 128)
        assert firmware.accepted == commands
        assert firmware.tails_run == []


# -- what the review of the first version found ---------------------------------------------


def test_a_line_too_long_for_marlins_buffer_is_refused_before_it_is_sent() -> None:
    link = ready_link(window=4, rx_buffer=0)
    assert link.fits(80)
    assert not link.fits(95)
    with pytest.raises(LocalProtocolError, match="too long for the printer"):
        link.send(SendLine(b"M117 " + b"x" * 100), now=0.0)


def test_a_command_cannot_smuggle_a_second_line() -> None:
    link = ready_link()
    with pytest.raises(LocalProtocolError, match="line break"):
        link.send(SendLine(b"G28\nG1 X10"), now=0.0)


def test_a_line_the_firmware_rejects_again_and_again_fails_the_link() -> None:
    link = ready_link(window=1, rx_buffer=0, max_resends=3)
    link.send(SendLine(b"G28"), now=0.0)
    rejection = b"Error:checksum mismatch, Last Line: 0\nResend: 1\nok\n"
    for _ in range(2):
        link.receive_data(rejection, now=0.1)
        assert link.retransmit(now=0.1)
    with pytest.raises(RemoteProtocolError, match="rejected line 1 3 times in a row"):
        link.receive_data(rejection, now=0.2)


def test_temperature_auto_reports_do_not_hold_off_the_timeout() -> None:
    # M155 keeps reporting while an ok is lost; that is no answer to what we sent
    link = ready_link(timeout=5.0)
    link.send(SendLine(b"G1 X1"), now=0.0)
    for second in range(1, 7):
        link.receive_data(b" T:200.00 /200.00 B:60.00 /60.00 @:30 B@:10\n", now=float(second))
        link.check_timeout(now=float(second))
    assert ResponseTimedOut(attempt=1, assumed_acked=1) in events(link)


def test_heat_up_reports_while_m109_waits_do_count_as_progress() -> None:
    link = ready_link(timeout=5.0)
    link.send(SendLine(b"M109 S200"), now=0.0)
    for second in range(1, 30):
        link.receive_data(b" T:150.00 /200.00 B:60.00 /60.00 @:127 B@:0 W:?\n", float(second))
        link.check_timeout(now=float(second))
    assert not any(isinstance(e, ResponseTimedOut) for e in events(link))


def test_with_advanced_ok_an_ok_without_a_line_number_is_not_ours() -> None:
    link = ready_link(window=4, rx_buffer=0)
    link.send(SendLine(b"G1 X1"), now=0.0)
    link.send(SendLine(b"G1 X2"), now=0.0)
    link.receive_data(b"ok N1 P15 B3\nok P15 B3\nok N2 P15 B3\n", now=0.1)
    assert events(link) == [
        LineAcked(1, 15, 3),
        OkIgnored("unnumbered"),  # a flushed tail the firmware ran on its own
        LineAcked(2, 15, 3),
    ]


def test_an_unknown_command_echo_of_a_flushed_tail_does_not_acknowledge_our_line() -> None:
    link = ready_link(window=4, rx_buffer=0)
    for number in range(1, 4):
        link.send(SendLine(b"G1 X%d.5 Y7" % number), now=0.0)
    link.receive_data(b"Error:checksum mismatch, Last Line: 0\nResend: 1\nok\n", now=0.1)
    events(link)
    link.retransmit(now=0.1)
    # the firmware had flushed line 2 half-way; its tail arrived later on its own
    link.receive_data(b'echo:Unknown command: "2.5 Y7"\nok\n', now=0.2)
    assert events(link)[-1] == OkIgnored("fragment")
    assert link.lines_in_flight == 3


def test_the_answer_to_m105_puts_the_window_right_after_an_ok_too_many() -> None:
    link = ready_link(window=4, rx_buffer=0)
    link.send(SendLine(b"M105"), now=0.0)
    link.receive_data(b"ok T:20.0 /0.0 B:20.0 /0.0\n", now=0.0)  # learn how M105 is answered
    events(link)
    link.send(SendLine(b"G1 X1"), now=0.0)  # line 2
    link.send(SendLine(b"M105"), now=0.0)  # line 3
    link.send(SendLine(b"G1 X2"), now=0.0)  # line 4
    # one ok too many (a tail the firmware ran) arrives before the oks for 2 and 3
    link.receive_data(b"ok\nok\n", now=0.1)
    assert [type(e) for e in events(link)] == [LineAcked, OkIgnored]
    link.receive_data(b"ok T:20.0 /0.0 B:20.0 /0.0\n", now=0.1)
    assert events(link)[1] == LineAcked(3)
    assert link.lines_in_flight == 1  # line 4, exactly


def test_bytes_of_flushed_lines_stay_counted_until_a_resent_line_is_acknowledged() -> None:
    link = ready_link(window=4, rx_buffer=40)
    sent = [link.send(SendLine(b"G1 X1%d.0 Y2" % n), now=0.0) for n in range(1, 3)]
    link.receive_data(b"Error:checksum mismatch, Last Line: 0\nResend: 1\nok\n", now=0.1)
    events(link)
    # the rest of line 2 may still be arriving: only line 1 goes again for now
    assert link.retransmit(now=0.1) == sent[0]
    link.receive_data(b"ok\n", now=0.2)
    events(link)
    assert link.retransmit(now=0.2) == sent[1]
