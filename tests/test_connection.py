"""Finding and keeping the printer: port and baud autodetection, temperatures, flow control."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from lezerprintd.bus import Bus, TemperaturesReported
from lezerprintd.bus import PrinterStatusChanged as PrinterStatusChangedEvent
from lezerprintd.config import load_config
from lezerprintd.printer.printer import REMEMBERED_PORT_KEY, Printer, PrinterState
from lezerprintd.printer.transport import (
    PORT_PATTERNS,
    PortChoice,
    candidate_ports,
    connection_attempts,
)
from lezerprintd.printer.virtual import VirtualPrinter
from lezerprintd.store import Store
from lezerprintd.store import settings as stored_settings
from lezerprintd.store.jobs import JobStatus
from tests.conftest import (
    Events,
    clean_environment,
    gcode_file,
    make_config,
    moves,
    running,
    until,
)

Start = Callable[..., VirtualPrinter]


@asynccontextmanager
async def printer_on(
    port: str, store: Store | None = None, patterns: tuple[str, ...] = (), **settings: Any
) -> AsyncIterator[tuple[Printer, Bus]]:
    config = load_config(path=None, env={})
    printer_config = dataclasses.replace(config.printer, port=port, **settings)
    bus = Bus()
    printer = Printer(printer_config, bus, store, port_patterns=patterns or ("/nonexistent/*",))
    await printer.start()
    try:
        yield printer, bus
    finally:
        await printer.stop()


def test_candidate_ports_list_stable_names_first_and_each_device_once(tmp_path: Path) -> None:
    main, sub = os.openpty()
    try:
        device = os.ttyname(sub)
        (tmp_path / "by-id").mkdir()
        (tmp_path / "by-id" / "usb-Prusa_MK4").symlink_to(device)
        (tmp_path / "raw").mkdir()
        (tmp_path / "raw" / "ttyACM0").symlink_to(device)  # the same device, by its raw name
        found = candidate_ports([str(tmp_path / "by-id" / "*"), str(tmp_path / "raw" / "*")])
    finally:
        os.close(main)
        os.close(sub)
    assert found == [str(tmp_path / "by-id" / "usb-Prusa_MK4")]


def test_the_udev_rules_names_come_first_one_per_board(tmp_path: Path) -> None:
    """As udev/60-lezerprint.rules names two boards: each is offered once, by its own
    model-serial name, ahead of the names every USB serial port gets."""
    ends = [os.openpty() for _ in range(2)]
    prusa, ch340 = (os.ttyname(sub) for _, sub in ends)
    names = {
        "lezerprint/prusa-CZPX1234": prusa,
        "lezerprint/ch340-pci-0000_01_00_0-usb-0_1_2_1_0": ch340,
        "lezerprint/printer": prusa,
        "serial/by-id/usb-Prusa_Research_Original_Prusa_MK4-if00": prusa,
        "ttyACM0": prusa,
        "ttyUSB0": ch340,
    }
    try:
        for name, device in names.items():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).symlink_to(device)
        found = candidate_ports([p.replace("/dev", str(tmp_path)) for p in PORT_PATTERNS])
    finally:
        for end in ends:
            os.close(end[0])
            os.close(end[1])
    assert found == [
        str(tmp_path / "lezerprint/ch340-pci-0000_01_00_0-usb-0_1_2_1_0"),
        str(tmp_path / "lezerprint/prusa-CZPX1234"),
    ]


def test_the_last_port_that_worked_is_tried_first() -> None:
    remembered = PortChoice("/dev/ttyACM0", 250000)
    attempts = connection_attempts("/dev/ttyACM0", "auto", remembered)
    assert attempts[0] == remembered
    assert {a.baud for a in attempts} == {115200, 250000, 230400, 57600}


async def test_auto_finds_the_printer_among_ports_and_its_baud_rate(
    start_virtual: Start, tmp_path: Path
) -> None:
    silent_main, silent_sub = os.openpty()  # a serial device where nothing answers
    virtual = start_virtual(baud=250000)
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "a-silent").symlink_to(os.ttyname(silent_sub))
    (dev / "b-printer").symlink_to(virtual.path)
    store = await Store.open(tmp_path / "lezerprint.db")
    try:
        async with printer_on(
            "auto", store, (str(dev / "*"),), baud="auto", handshake_timeout=0.6
        ) as (printer, _):
            await until(lambda: printer.state is PrinterState.OPERATIONAL, 30, "autodetection")
            status = printer.status()
        remembered = await stored_settings.get(store, REMEMBERED_PORT_KEY)
    finally:
        await store.close()
        os.close(silent_main)
        os.close(silent_sub)
    assert status.port == str(dev / "b-printer")
    assert status.baud == 250000
    assert status.firmware == "Marlin 2.1.2 (LezerPrint virtual)"
    assert remembered == {"path": str(dev / "b-printer"), "baud": 250000}


async def test_no_printer_anywhere_is_reported_and_retried(tmp_path: Path) -> None:
    async with printer_on("auto", reconnect_interval=0.5) as (printer, _):
        await until(lambda: printer.error is not None, 5, "the error")
        assert printer.state is PrinterState.OFFLINE
        assert printer.error == "no serial port found; is the printer plugged in?"


async def test_without_auto_reports_temperatures_are_polled_with_m105(start_virtual: Start) -> None:
    virtual = start_virtual(autoreport_temp=False, speedup=5)
    async with printer_on(
        virtual.path, baud=115200, idle_temperature_interval=1.0, temperature_interval=0.5
    ) as (printer, bus):
        events = Events(bus)
        await until(lambda: printer.state is PrinterState.OPERATIONAL, 10, "the connection")
        await printer.execute("M104 S60")
        first = await events.wait_for(TemperaturesReported, lambda e: e.hotend_target == 60)
        await events.wait_for(
            TemperaturesReported, lambda e: (e.hotend_temp or 0) > (first.hotend_temp or 0) + 5
        )
    assert virtual.accepted.count("M105") >= 2
    assert not any(command.startswith("M155") for command in virtual.accepted)


async def test_auto_reports_are_slow_when_idle_and_fast_when_heating(start_virtual: Start) -> None:
    virtual = start_virtual(speedup=50)
    async with printer_on(virtual.path, baud=115200) as (printer, _):
        await until(lambda: "M155 S10" in virtual.accepted, 10, "slow reports while idle")
        await printer.execute("M140 S50")
        await until(lambda: "M155 S2" in virtual.accepted, 5, "faster reports while heating")
    assert virtual.accepted.count("M105") == 1  # the handshake's; no polling
    assert virtual.accepted.index("M155 S10") < virtual.accepted.index("M155 S2")


async def test_with_advanced_ok_the_window_follows_the_firmware_buffer(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual(advanced_ok=True, bufsize=2, speedup=10_000)
    commands = moves(2000)
    path = gcode_file(tmp_path / "adv.gcode", commands)
    async with running(make_config(tmp_path, virtual.path, window=8)) as appliance:
        job_id = await appliance.jobs.start_job(path)
        record = await asyncio.wait_for(appliance.jobs.wait(job_id), 60)
        window = appliance.printer.status().window
    assert record.status is JobStatus.COMPLETED
    assert [c for c in virtual.accepted if c.startswith("G1 X")] == commands
    assert window == 2


async def test_a_second_program_cannot_open_the_printers_port(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual()
    path = gcode_file(tmp_path / "x.gcode", moves(3))
    config = tmp_path / "config.toml"
    config.write_text("")
    async with running(make_config(tmp_path, virtual.path)):
        result = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "lezerprintd",
                "print",
                str(path),
                "--printer",
                virtual.path,
                "--baud",
                "115200",
                "--config",
                str(config),
            ],
            capture_output=True,
            text=True,
            env=clean_environment(),
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert "another program is using it" in result.stderr


async def test_a_board_that_restarts_while_being_identified_is_greeted_again(
    start_virtual: Start,
) -> None:
    virtual = start_virtual(speedup=10)
    async with printer_on(virtual.path, baud=115200) as (printer, _):
        await until(lambda: "M115" in virtual.accepted, 10, "the identification")
        virtual.reset()  # the board reboots in the middle of it (or just after)
        await until(lambda: virtual.accepted.count("M110 N0") >= 2, 15, "a second handshake")
        await until(lambda: printer.state is PrinterState.OPERATIONAL, 15, "operational")
        answer = await asyncio.wait_for(printer.execute("M105"), 10)
    assert answer[0].startswith("T:")


async def test_polling_goes_on_after_the_board_restarts(start_virtual: Start) -> None:
    virtual = start_virtual(autoreport_temp=False, speedup=10)
    async with printer_on(virtual.path, baud=115200, idle_temperature_interval=1.0) as (
        printer,
        bus,
    ):
        events = Events(bus)
        await until(lambda: printer.state is PrinterState.OPERATIONAL, 10, "the connection")
        virtual.reset()
        await events.wait_for(PrinterStatusChangedEvent, lambda e: e.state == "connecting")
        await until(lambda: printer.state is PrinterState.OPERATIONAL, 10, "reconnected")
        polls = virtual.accepted.count("M105")
        await until(lambda: virtual.accepted.count("M105") >= polls + 2, 5, "polls to go on")
