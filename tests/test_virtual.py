"""The virtual Marlin, seen from a host: through the real pty and pyserial, never the back door."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import serial

from lezerprintd.printer.virtual import VirtualOptions, VirtualPrinter, VirtualPrinterError

TEMPERATURES = r"T:\d+\.\d\d /\d+\.\d\d B:\d+\.\d\d /\d+\.\d\d @:\d+ B@:\d+"


def numbered(command: str, number: int) -> bytes:
    """A line as a host frames it: N, the command, '*' and the XOR of everything before it."""
    body = f"N{number} {command}".encode()
    checksum = 0
    for byte in body:
        checksum ^= byte
    return body + b"*%d\n" % checksum


def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


class Host:
    """The smallest host that can talk to the printer: writes lines, reads whole lines back."""

    def __init__(self, port: serial.Serial) -> None:
        self.port = port
        self._pending = b""

    def send(self, command: str, number: int | None = None) -> None:
        self.write(command.encode() + b"\n" if number is None else numbered(command, number))

    def write(self, data: bytes) -> None:
        self.port.write(data)

    def line(self, timeout: float = 3.0) -> str | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            if time.monotonic() >= deadline:
                return None
            self._pending += self.port.read(max(1, self.port.in_waiting))
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode("latin-1")

    def until(self, predicate: Callable[[str], bool], timeout: float = 3.0) -> list[str]:
        """Lines up to and including the first one that matches."""
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while True:
            line = self.line(deadline - time.monotonic())
            assert line is not None, f"no matching line in time; got {lines}"
            lines.append(line)
            if predicate(line):
                return lines

    def until_ok(self, timeout: float = 3.0) -> list[str]:
        return self.until(lambda line: line.startswith("ok"), timeout)

    def lines_within(self, seconds: float) -> list[str]:
        deadline = time.monotonic() + seconds
        lines: list[str] = []
        while (line := self.line(max(0.0, deadline - time.monotonic()))) is not None:
            lines.append(line)
        return lines


class Lab:
    """Printers and ports opened by one test, all closed again when it ends."""

    def __init__(self) -> None:
        self.printers: list[VirtualPrinter] = []
        self.ports: list[serial.Serial] = []

    def printer(self, link: Path | None = None, **options: float | bool | int) -> VirtualPrinter:
        printer = VirtualPrinter(VirtualOptions(**options), link)  # type: ignore[arg-type]
        self.printers.append(printer)
        printer.start()
        return printer

    def host(self, path: str) -> Host:
        port = serial.Serial(path, 115200, timeout=0.05)
        self.ports.append(port)
        return Host(port)

    def connect(self, **options: float | bool | int) -> tuple[VirtualPrinter, Host]:
        printer = self.printer(**options)
        return printer, self.host(printer.path)

    def close(self) -> None:
        for port in self.ports:
            port.close()
        for printer in self.printers:
            printer.stop()


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab()
    yield lab
    lab.close()


@pytest.mark.parametrize("autoreport", [True, False])
def test_m115_names_marlin_and_lists_capabilities(lab: Lab, autoreport: bool) -> None:
    _, host = lab.connect(autoreport_temp=autoreport)
    host.send("M115")
    lines = host.until_ok()
    assert lines[0].startswith("FIRMWARE_NAME:Marlin 2.1.2 ")
    assert "PROTOCOL_VERSION:1.0" in lines[0]
    assert "EXTRUDER_COUNT:1" in lines[0]
    caps = dict(line[4:].rsplit(":", 1) for line in lines[1:-1])
    assert all(line.startswith("Cap:") for line in lines[1:-1])
    assert caps["AUTOREPORT_TEMP"] == str(int(autoreport))
    assert caps["EMERGENCY_PARSER"] == caps["HOST_ACTION_COMMANDS"] == "1"
    assert caps["THERMAL_PROTECTION"] == caps["ARCS"] == "1"
    assert caps["SDCARD"] == "0"
    assert "ADVANCED_OK" not in caps
    assert lines[-1] == "ok"
    host.send("M155 S1")
    reply = host.until_ok()
    assert (reply == ["ok"]) is autoreport
    if not autoreport:
        assert reply == ['echo:Unknown command: "M155 S1"', "ok"]


def test_m105_reports_temperatures_as_marlin_does(lab: Lab) -> None:
    _, host = lab.connect()
    host.send("M105")
    assert host.until_ok() == ["ok T:21.30 /0.00 B:21.80 /0.00 @:0 B@:0"]
    host.send("M104 S200")
    host.send("M140 S60")
    host.send("M105")
    reply = host.until(lambda line: line.startswith("ok T:"))
    assert reply[:2] == ["ok", "ok"]
    assert re.fullmatch(f"ok {TEMPERATURES}", reply[2])
    assert " /200.00 B:" in reply[2]
    assert reply[2].split(" B:")[1].startswith(("21.", "22."))
    assert " /60.00 " in reply[2]


@pytest.mark.parametrize(
    ("bad_line", "error"),
    [
        (numbered("G1 X2", 2).replace(b"*", b"*1"), "checksum mismatch, Last Line: 1"),
        (numbered("G1 X2", 3), "Line Number is not Last Line Number+1, Last Line: 1"),
        (b"N2 G1 X2\n", "No Checksum with line number, Last Line: 1"),
    ],
    ids=["checksum", "line-number", "no-checksum"],
)
def test_a_bad_line_gets_error_resend_ok_and_nothing_runs_twice(
    lab: Lab, bad_line: bytes, error: str
) -> None:
    printer, host = lab.connect()
    host.send("G1 X1", 1)
    assert host.until_ok() == ["ok"]
    host.write(bad_line)
    assert host.until_ok() == [f"Error:{error}", "Resend: 2", "ok"]
    host.send("G1 X2", 2)
    host.send("M105")
    assert host.until(lambda line: line.startswith("ok T:"))[0] == "ok"
    assert printer.accepted == ["G1 X1", "G1 X2", "M105"]
    assert printer.last_line_number == 2


def test_a_line_with_a_checksum_but_no_line_number_runs_as_marlin_2_runs_it(lab: Lab) -> None:
    printer, host = lab.connect()
    host.send("G1 X1", 1)
    assert host.until_ok() == ["ok"]
    host.write(b"G1 X2*97\n")  # no N: Marlin 2.x checks nothing and runs it
    assert host.until_ok() == ["ok"]
    host.send("G1 X3", 2)  # the line numbers carry on where they were
    assert host.until_ok() == ["ok"]
    assert printer.accepted == ["G1 X1", "G1 X2", "G1 X3"]


def test_m110_moves_the_line_number(lab: Lab) -> None:
    printer, host = lab.connect()
    host.send("G1 X1", 1)
    assert host.until_ok() == ["ok"]
    # Like a real host, wait for M110's ok: when it runs, Marlin's handler sets the number again.
    host.send("M110 N100", 2)
    assert host.until_ok() == ["ok"]
    host.send("G1 X2", 101)
    assert host.until_ok() == ["ok"]
    assert printer.last_line_number == 101
    host.send("G1 X3", 3)
    assert host.until_ok()[0] == "Error:Line Number is not Last Line Number+1, Last Line: 101"
    host.send("M110 N0")  # unnumbered, so only its handler moves the number
    assert host.until_ok() == ["ok"]
    host.send("G1 X4", 1)
    assert host.until_ok() == ["ok"]
    assert printer.accepted == ["G1 X1", "M110 N100", "G1 X2", "M110 N0", "G1 X4"]


def test_advanced_ok_carries_line_planner_and_buffer_room(lab: Lab) -> None:
    _, host = lab.connect(advanced_ok=True)
    host.send("G1 X100 F600", 1)  # ten seconds of motion: it stays in the planner
    assert host.until_ok() == ["ok N1 P15 B3"]
    host.send("G1 X0")
    assert host.until_ok() == ["ok P14 B3"]
    host.send("M105")  # M105 answers with its own plain ok, as in Marlin
    assert re.fullmatch(f"ok {TEMPERATURES}", host.until_ok()[0])


def test_m109_waits_for_the_hotend_and_counts_down_residency(lab: Lab) -> None:
    printer, host = lab.connect(speedup=50)
    host.send("M109 S40")
    lines = host.until_ok(timeout=5)
    reports = lines[:-1]
    assert lines[-1] == "ok"
    assert all(re.fullmatch(rf" {TEMPERATURES} W:(\?|\d+)", line) for line in reports)
    waits = [line.rsplit("W:", 1)[1] for line in reports]
    assert waits[0] == "?"
    countdown = [int(wait) for wait in waits[waits.index(next(w for w in waits if w != "?")) :]]
    assert len(countdown) >= 3
    assert countdown == sorted(countdown, reverse=True)
    assert countdown[0] <= 10
    assert countdown[-1] == 0
    assert abs(printer.hotend.current - 40) < 1


def test_m108_breaks_a_heating_wait_at_once(lab: Lab) -> None:
    printer, host = lab.connect()
    host.send("M109 S200")  # about a minute of heating at speedup 1
    assert host.until(lambda line: line.endswith(" W:?"))[-1].startswith(" T:")
    host.send("M108")
    host.until_ok(timeout=1)  # the M109, ended early
    assert host.until_ok(timeout=1)[-1] == "ok"  # the M108 itself
    assert printer.hotend.target == 200
    assert printer.hotend.current < 150


def test_homing_sends_busy_keepalives(lab: Lab) -> None:
    printer, host = lab.connect(speedup=8, keepalive=0.1)
    host.send("G1 X50 Y40 Z5 F6000")
    assert host.until_ok() == ["ok"]
    host.send("G28")
    lines = host.until_ok(timeout=3)
    assert lines.count("echo:busy: processing") >= 3
    assert lines[-2:] == ["X:0.00 Y:0.00 Z:0.00 E:0.00 Count X:0 Y:0 Z:0", "ok"]
    assert printer.position == (0.0, 0.0, 0.0, 0.0)


def test_m112_inside_a_numbered_line_halts_even_with_the_ring_full(lab: Lab) -> None:
    printer, host = lab.connect(bufsize=4)
    host.send("G4 S60", 1)  # a minute of dwell keeps the ring from draining
    for number in range(2, 7):
        host.send(f"G1 X{number}", number)
    wait_for(lambda: len(printer.accepted) == 4)
    host.send("M112", 7)
    lines = host.until(lambda line: line.startswith("Error:"), timeout=1)
    assert lines[-2:] == ["echo:M112 Shutdown", "Error:Printer halted. kill() called!"]
    assert "ok" not in lines
    assert printer.halted
    assert printer.accepted == ["G4 S60", "G1 X2", "G1 X3", "G1 X4"]
    host.send("M105")
    assert host.lines_within(0.3) == []  # a killed board answers nothing at all


def test_m112_kills_once_and_only_a_reset_revives_the_board(lab: Lab) -> None:
    printer, host = lab.connect()
    host.send("M104 S200")
    assert host.until_ok() == ["ok"]
    host.send("M112")
    assert host.until(lambda line: line.startswith("Error:")) == [
        "echo:M112 Shutdown",
        "Error:Printer halted. kill() called!",
    ]
    assert printer.hotend.target == 0  # kill() switches the heaters off
    host.send("G1 X10")
    assert host.lines_within(0.2) == []
    printer.reset()
    assert host.until(lambda line: line == "start") == ["start"]
    host.send("G1 X10")
    assert host.until_ok()[-1] == "ok"
    assert not printer.halted
    assert printer.accepted == ["M104 S200", "G1 X10"]


def test_flooding_a_full_rx_buffer_drops_bytes_and_forces_a_resend(lab: Lab) -> None:
    printer, host = lab.connect(bufsize=2, rx_buffer=64)
    flood = [f"G1 X{number}" for number in range(2, 61)]
    host.write(
        numbered("G4 P500", 1)
        + b"".join(numbered(command, n) for n, command in enumerate(flood, 2))
    )
    wait_for(lambda: printer.rx_dropped_bytes > 0)
    # Anything sent while the buffer is full is lost too, so wait for the dwell to end; the lines
    # still in the buffer run in the same instant, one ok each.
    assert host.until_ok() == ["ok"]
    for _ in printer.accepted[1:]:
        assert host.until_ok() == ["ok"]
    host.send("M105", 61)
    lines = host.until(lambda line: line.startswith("Resend:"))
    assert any(line.startswith("Error:") for line in lines)
    # Whatever got in arrived whole and in order; the torn remainder was refused.
    got_in = printer.accepted[1:]
    assert printer.accepted[0] == "G4 P500"
    assert got_in == flood[: len(got_in)]
    assert len(got_in) < len(flood)


def test_reset_reboots_the_board_and_forgets_line_numbers(lab: Lab) -> None:
    printer, host = lab.connect()
    host.send("G1 X1", 1)
    host.send("M104 S200", 2)
    host.until_ok()
    host.until_ok()
    printer.reset()
    lines = host.until(lambda line: line.startswith("echo: Free Memory:"))
    assert lines[:3] == ["start", " External Reset", "Marlin 2.1.2"]
    assert printer.last_line_number == 0
    assert printer.hotend.target == 0
    assert printer.position == (0.0, 0.0, 0.0, 0.0)
    host.send("G1 X5", 1)
    assert host.until_ok() == ["ok"]


def test_unplug_makes_the_host_read_fail(lab: Lab) -> None:
    printer, host = lab.connect()
    printer.unplug()
    with pytest.raises(serial.SerialException):
        host.port.read(1)


def test_replug_serves_a_fresh_board_behind_the_same_link(lab: Lab, tmp_path: Path) -> None:
    link = tmp_path / "ttyVIRTUAL0"
    printer = lab.printer(link=link)
    assert printer.path == str(link)
    first_device = link.readlink()
    old = lab.host(printer.path)
    old.send("G1 X1", 1)
    assert old.until_ok() == ["ok"]
    printer.unplug()
    assert not link.is_symlink()  # the device node is gone, as /dev/ttyACM0 is
    with pytest.raises(serial.SerialException):
        old.port.read(1)
    printer.replug()
    assert link.readlink() != first_device
    new = lab.host(printer.path)
    new.send("G1 X2", 1)  # a fresh board: line numbers start again
    assert new.until_ok() == ["ok"]


def test_injected_bytes_reach_the_host_verbatim(lab: Lab) -> None:
    printer, host = lab.connect()
    garbage = bytes(range(1, 10)) + b"\xff\xfe junk"
    overlong = b"echo:" + b"x" * 300
    printer.inject(b"//action:pause\n" + garbage + b"\n" + overlong + b"\n")
    assert host.line() == "//action:pause"
    assert host.line() == garbage.decode("latin-1")
    assert host.line() == overlong.decode()
    host.send("M105")
    assert host.until_ok()[0].startswith("ok T:")


def test_fragmented_replies_still_arrive_as_whole_lines(lab: Lab) -> None:
    _, plain = lab.connect()
    _, fragmented = lab.connect(fragment_replies=True, seed=3)
    for host in (plain, fragmented):
        host.send("M115")
        host.send("M105")
    expected = plain.until(lambda line: line.startswith("ok T:"))
    assert fragmented.until(lambda line: line.startswith("ok T:"), timeout=5) == expected


def test_faults_can_change_while_running(lab: Lab) -> None:
    printer, host = lab.connect(keepalive=0.05)
    printer.set_faults(busy_rate=1.0, busy_seconds=0.3)
    host.send("M105")  # even the reply M105 prints itself comes late
    lines = host.until_ok()
    assert lines.count("echo:busy: processing") >= 2
    assert lines[-1].startswith("ok T:")
    printer.set_faults(busy_rate=0.0)
    host.send("G1 X2")
    assert host.until_ok() == ["ok"]
    with pytest.raises(VirtualPrinterError):
        printer.set_faults(bufsize=8)


def test_5000_lines_through_checksum_errors_arrive_once_and_in_order(lab: Lab) -> None:
    printer, host = lab.connect(instant=True, checksum_error_rate=0.05, seed=7)
    commands = [f"G1 X{n % 200} Y{n % 97}" for n in range(1, 5001)]
    resends = 0
    number = 1
    while number <= len(commands):
        host.send(commands[number - 1], number)
        reply = host.until_ok()
        asked = [line for line in reply if line.startswith("Resend: ")]
        if asked:
            resends += 1
            number = int(asked[-1].removeprefix("Resend: "))
        else:
            number += 1
    assert printer.accepted == commands
    assert 150 < resends < 400  # about 5 % of 5000 lines were hit in transit


def test_virtual_printer_command_serves_until_sigterm(lab: Lab) -> None:
    program = (
        "import sys\n"
        "from lezerprintd.printer.virtual import VirtualOptions, run_forever\n"
        "sys.exit(run_forever(VirtualOptions(), None, sys.stdout))\n"
    )
    with subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        path = process.stdout.readline().decode().strip()
        host = lab.host(path)
        host.send("M105")
        assert host.until_ok()[0].startswith("ok T:")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
