"""Printing through the whole engine: job room -> printer -> link -> pyserial -> pty -> Marlin.

The virtual Marlin records every command it accepted, so "arrived complete, in order, exactly
once" is checked against the file itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lezerprintd.app import Appliance
from lezerprintd.bus import JobFinished, JobStatusChanged, PrinterAlert, PrinterStatusChanged
from lezerprintd.errors import UserError
from lezerprintd.printer.printer import PrinterState
from lezerprintd.printer.virtual import VirtualPrinter
from lezerprintd.store import Store
from lezerprintd.store import jobs as job_rows
from lezerprintd.store.jobs import JobStatus
from tests.conftest import Events, gcode_file, make_config, moves, running, until

Start = Callable[..., VirtualPrinter]


def is_file_move(command: str) -> bool:
    """The extruding moves `moves()` writes; parking and restoring moves never extrude."""
    return command.startswith("G1 X") and " E" in command


def file_moves(printer: VirtualPrinter) -> list[str]:
    """The file's moves the firmware accepted (the host adds M105, M400, M114, parking...)."""
    return [command for command in printer.accepted if is_file_move(command)]


async def moves_in(printer: VirtualPrinter, count: int, seconds: float = 30) -> None:
    """Wait until the firmware has taken more than `count` of the file's moves."""
    await until(lambda: len(file_moves(printer)) > count, seconds, f"{count} moves printed")


async def test_20000_lines_arrive_complete_in_order_once_through_errors_busy_and_fragments(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual(
        speedup=10_000,
        checksum_error_rate=0.01,
        busy_rate=0.0005,
        busy_seconds=0.3,
        keepalive=0.1,
        fragment_replies=True,
        seed=20_000,
    )
    commands = moves(20_000)
    path = gcode_file(tmp_path / "big.gcode", commands)
    async with running(make_config(tmp_path, virtual.path)) as appliance:
        job_id = await appliance.jobs.start_job(path)
        record = await asyncio.wait_for(appliance.jobs.wait(job_id), 120)
        link = appliance.printer.status()
        events = [e.event_type for e in await job_rows.events(appliance.store, job_id)]
    assert record.status is JobStatus.COMPLETED, record.error_message
    assert file_moves(virtual) == commands
    assert record.lines_done == 20_000
    assert record.progress == 100.0
    assert link.resend_requests >= 100  # about 1% of 20,000 lines were damaged
    assert events == ["JOB_QUEUED", "JOB_PREPARING", "JOB_STARTED", "JOB_COMPLETED"]


async def test_lost_oks_are_recovered_by_probing_and_the_print_completes(
    start_virtual: Start, tmp_path: Path
) -> None:
    # Temperature auto-reports keep arriving every 2 s while oks are lost: they must not
    # keep the link from noticing that its oks stopped.
    virtual = start_virtual(speedup=10_000, lost_ok_rate=0.01, seed=3)
    commands = moves(400)
    path = gcode_file(tmp_path / "lossy.gcode", commands)
    config = make_config(tmp_path, virtual.path, timeout=3.0)
    async with running(config) as appliance:
        job_id = await appliance.jobs.start_job(path)
        record = await asyncio.wait_for(appliance.jobs.wait(job_id), 60)
        timeouts = appliance.printer.status().timeouts
    assert record.status is JobStatus.COMPLETED, record.error_message
    assert file_moves(virtual) == commands
    assert timeouts >= 1


async def test_pause_parks_the_head_and_resume_returns_and_finishes_the_file(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual(speedup=1000)
    commands = ["M104 S200", "M109 S200", "G28", "G1 Z0.3 F600", "M83", *moves(3000)]
    path = gcode_file(tmp_path / "pause.gcode", commands)
    async with running(make_config(tmp_path, virtual.path)) as appliance:
        events = Events(appliance.bus)
        job_id = await appliance.jobs.start_job(path)
        await moves_in(virtual, 300, 30)
        await appliance.jobs.pause()
        await events.wait_for(JobStatusChanged, lambda e: e.status == "PAUSED")
        assert appliance.printer.state is PrinterState.PAUSED
        # parked: lifted 10 mm and moved to X0 Y0 by the default pause G-code
        await until(lambda: virtual.position[:2] == (0.0, 0.0), 20, "the head to park")
        await until(lambda: virtual.position[2] > 10, 5, "the head to lift")
        parked_at = len(virtual.accepted)
        fed_before_pause = len(file_moves(virtual))
        assert virtual.position[2] == pytest.approx(10.3, abs=0.01)
        assert virtual.accepted[-1] == "G1 X0 Y0 F3000"
        await appliance.jobs.resume()
        await events.wait_for(JobStatusChanged, lambda e: e.status == "PRINTING")
        record = await asyncio.wait_for(appliance.jobs.wait(job_id), 60)
        kinds = [e.event_type for e in await job_rows.events(appliance.store, job_id)]
    assert record.status is JobStatus.COMPLETED, record.error_message
    assert file_moves(virtual) == [c for c in commands if is_file_move(c)]
    assert 300 < fed_before_pause < 3000
    restore = virtual.accepted[parked_at:]
    # back over the part, down to the layer, extruder position and modes as they were
    assert any(c.startswith("G1 X") and c.endswith("F3000") for c in restore[:8])
    assert "G1 Z0.300 F600" in restore
    assert any(c.startswith("G92 E") for c in restore)
    assert "M83" in restore  # the file extrudes relatively; the resume must keep that
    assert kinds == [
        "JOB_QUEUED",
        "JOB_PREPARING",
        "JOB_STARTED",
        "JOB_PAUSED",
        "JOB_RESUMED",
        "JOB_COMPLETED",
    ]


async def test_cancel_stops_feeding_runs_the_cancel_gcode_and_records_it(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual(speedup=100)
    commands = ["M104 S210", "M140 S60", *moves(5000)]
    path = gcode_file(tmp_path / "cancel.gcode", commands)
    async with running(make_config(tmp_path, virtual.path)) as appliance:
        job_id = await appliance.jobs.start_job(path)
        await moves_in(virtual, 200, 30)
        await appliance.jobs.cancel()
        record = await asyncio.wait_for(appliance.jobs.wait(job_id), 30)
        assert appliance.printer.state is PrinterState.OPERATIONAL
    assert record.status is JobStatus.CANCELLED
    assert len(file_moves(virtual)) < 5000
    assert virtual.accepted[-7:] == [
        "M104 S0",
        "M140 S0",
        "M106 S0",
        "G91",
        "G1 Z10 F600",
        "G90",
        "M84",
    ]
    assert virtual.hotend.target == 0
    assert virtual.bed.target == 0


async def test_cancel_during_the_first_heat_up_does_not_wait_for_it(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual(speedup=1)  # real heating: 200 °C would take about a minute
    path = gcode_file(tmp_path / "heat.gcode", ["M109 S200", *moves(10)])
    async with running(make_config(tmp_path, virtual.path)) as appliance:
        job_id = await appliance.jobs.start_job(path)
        await until(lambda: appliance.printer.temperatures.waiting, 10, "the heat-up wait")
        started = time.monotonic()
        await appliance.jobs.cancel()
        record = await asyncio.wait_for(appliance.jobs.wait(job_id), 20)
    assert record.status is JobStatus.CANCELLED
    assert time.monotonic() - started < 10
    assert virtual.hotend.target == 0


async def test_emergency_stop_halts_the_printer_at_once_and_fails_the_job(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual(speedup=5)
    path = gcode_file(tmp_path / "estop.gcode", moves(2000))
    async with running(make_config(tmp_path, virtual.path), virtual) as appliance:
        events = Events(appliance.bus)
        job_id = await appliance.jobs.start_job(path)
        await moves_in(virtual, 20, 20)
        appliance.printer.emergency_stop("test button")
        await until(lambda: virtual.halted, 2, "the firmware to halt")
        record = await asyncio.wait_for(appliance.jobs.wait(job_id), 10)
        assert appliance.printer.state is PrinterState.ERROR
        alert = await events.wait_for(PrinterAlert)
        assert alert.severity == "CRITICAL"
        with pytest.raises(UserError, match="printer is error"):
            await appliance.jobs.start_job(path)
        # reconnecting resets the board (DTR on a real one) and the printer is usable again
        await appliance.printer.connect()
        assert appliance.printer.state is PrinterState.OPERATIONAL
        assert not virtual.halted
    assert record.status is JobStatus.FAILED
    assert record.error_message == "Emergency stop: test button"


async def test_a_firmware_reset_mid_print_fails_the_job_and_the_printer_comes_back(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual(speedup=100)
    path = gcode_file(tmp_path / "reset.gcode", moves(3000))
    async with running(make_config(tmp_path, virtual.path)) as appliance:
        job_id = await appliance.jobs.start_job(path)
        await moves_in(virtual, 100, 20)
        virtual.reset()
        record = await asyncio.wait_for(appliance.jobs.wait(job_id), 10)
        await until(lambda: appliance.printer.state is PrinterState.OPERATIONAL, 10, "re-handshake")
    assert record.status is JobStatus.FAILED
    assert record.error_message == "the printer restarted"


async def test_an_unplug_fails_the_job_and_the_printer_reconnects_when_plugged_back(
    start_virtual: Start, tmp_path: Path
) -> None:
    link = tmp_path / "ttyPrinter"
    virtual = start_virtual(link=link, speedup=100)
    path = gcode_file(tmp_path / "unplug.gcode", moves(3000))
    config = make_config(tmp_path, str(link), reconnect_interval=0.5)
    async with running(config) as appliance:
        events = Events(appliance.bus)
        job_id = await appliance.jobs.start_job(path)
        await moves_in(virtual, 100, 20)
        virtual.unplug()
        record = await asyncio.wait_for(appliance.jobs.wait(job_id), 10)
        await events.wait_for(PrinterStatusChanged, lambda e: e.state == "offline")
        virtual.replug()
        await until(lambda: appliance.printer.state is PrinterState.OPERATIONAL, 10, "reconnect")
    assert record.status is JobStatus.FAILED
    assert record.error_message == "the printer was disconnected"


async def test_a_firmware_pause_request_pauses_the_print(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual(speedup=100)
    path = gcode_file(tmp_path / "runout.gcode", moves(3000))
    async with running(make_config(tmp_path, virtual.path)) as appliance:
        events = Events(appliance.bus)
        job_id = await appliance.jobs.start_job(path)
        await moves_in(virtual, 100, 20)
        virtual.inject(b"//action:pause filament runout\n")
        changed = await events.wait_for(JobStatusChanged, lambda e: e.status == "PAUSED")
        assert changed.job_id == job_id
        kinds = await job_rows.events(appliance.store, job_id)
        assert kinds[-1].message == "the printer asked to pause: filament runout"
        await appliance.jobs.cancel()
        await asyncio.wait_for(appliance.jobs.wait(job_id), 20)


async def test_garbage_from_the_printer_does_not_disturb_a_print(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual(speedup=1000)
    commands = moves(1500)
    path = gcode_file(tmp_path / "noise.gcode", commands)
    async with running(make_config(tmp_path, virtual.path)) as appliance:
        job_id = await appliance.jobs.start_job(path)
        await moves_in(virtual, 100, 20)
        virtual.inject(b"\x00\xff\xfe garbage \x81\x82\n" + b"x" * 10_000 + b"\n\r\r\n")
        record = await asyncio.wait_for(appliance.jobs.wait(job_id), 30)
    assert record.status is JobStatus.COMPLETED
    assert file_moves(virtual) == commands


async def test_commands_typed_during_a_print_are_answered_between_job_lines(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual(speedup=20)
    path = gcode_file(tmp_path / "busy.gcode", moves(3000))
    async with running(make_config(tmp_path, virtual.path)) as appliance:
        job_id = await appliance.jobs.start_job(path)
        await moves_in(virtual, 20, 20)
        started = time.monotonic()
        answer = await asyncio.wait_for(appliance.printer.execute("M114"), 5)
        waited = time.monotonic() - started
        still_printing = appliance.jobs.current is not None
        await appliance.jobs.cancel()
        await asyncio.wait_for(appliance.jobs.wait(job_id), 30)
    assert answer[0].startswith("X:")
    assert still_printing
    assert waited < 5


async def test_temperatures_are_logged_for_the_job_in_batches(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual(speedup=20)
    path = gcode_file(tmp_path / "hot.gcode", ["M140 S60", "M104 S200", "M109 S200", *moves(60)])
    async with running(
        make_config(tmp_path, virtual.path),
        temperature_log_interval=0.5,
        temperature_log_flush_interval=2.0,
    ) as appliance:
        job_id = await appliance.jobs.start_job(path)
        await moves_in(virtual, 10, 30)
        record = await asyncio.wait_for(appliance.jobs.wait(job_id), 60)
        samples = await job_rows.temperatures(appliance.store, job_id)
    assert record.status is JobStatus.COMPLETED
    assert len(samples) >= 3
    assert samples[-1].hotend_target == 200
    assert samples[-1].bed_target == 60
    assert max(s.hotend_temp or 0 for s in samples) > 150


async def test_a_job_left_printing_by_a_power_cut_is_failed_at_the_next_start(
    start_virtual: Start, tmp_path: Path
) -> None:
    store = await Store.open(tmp_path / "lezerprint.db")
    await job_rows.create(store, "cut-job", "benchy.gcode", 1000, time.time())
    await job_rows.record(store, "cut-job", time.time(), status=JobStatus.PRINTING)
    await store.close()  # the power went out here
    virtual = start_virtual()
    async with Appliance(make_config(tmp_path, virtual.path)) as appliance:
        record = await job_rows.get(appliance.store, "cut-job")
        kinds = [e.event_type for e in await job_rows.events(appliance.store, "cut-job")]
    assert record is not None
    assert record.status is JobStatus.FAILED
    assert record.error_message is not None
    assert record.error_message.startswith("interrupted")
    assert kinds[-2:] == ["POWER_LOSS", "JOB_FAILED"]


async def test_only_one_print_at_a_time_and_a_missing_file_is_refused(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual(speedup=20)
    path = gcode_file(tmp_path / "one.gcode", moves(2000))
    async with running(make_config(tmp_path, virtual.path)) as appliance:
        with pytest.raises(UserError, match="cannot read"):
            await appliance.jobs.start_job(tmp_path / "missing.gcode")
        job_id = await appliance.jobs.start_job(path)
        with pytest.raises(UserError, match="already running"):
            await appliance.jobs.start_job(path)
        events = Events(appliance.bus)
        await appliance.jobs.cancel()
        finished = await events.wait_for(JobFinished)
        await asyncio.wait_for(appliance.jobs.wait(job_id), 30)
    assert finished.status == "CANCELLED"


async def test_an_overlong_message_is_shortened_and_an_overlong_command_fails_the_job_clearly(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual(speedup=10_000)
    message = "M117 Printing part_with_a_rather_long_descriptive_name_v3_final (copy) 0.2mm PLA"
    path = gcode_file(tmp_path / "message.gcode", [*moves(20), message, *moves(20, 20)])
    async with running(make_config(tmp_path, virtual.path)) as appliance:
        job_id = await appliance.jobs.start_job(path)
        record = await asyncio.wait_for(appliance.jobs.wait(job_id), 30)
        assert record.status is JobStatus.COMPLETED
        assert message[:80] in virtual.accepted
        too_long = "G1 X10 Y10 " + " ".join(f"E{i}" for i in range(40))
        path = gcode_file(tmp_path / "long.gcode", [*moves(5), too_long, *moves(5)])
        job_id = await appliance.jobs.start_job(path)
        record = await asyncio.wait_for(appliance.jobs.wait(job_id), 30)
        resends = appliance.printer.status().resend_requests
        assert appliance.printer.state is PrinterState.OPERATIONAL
    assert record.status is JobStatus.FAILED
    assert record.error_message is not None
    assert record.error_message.startswith("a line of the file is too long for the printer")
    assert resends == 0


async def test_cancel_while_preparing_sends_no_line_of_the_file(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual(speedup=100)
    path = gcode_file(tmp_path / "early.gcode", ["M140 S60", "M104 S200", *moves(100)])
    async with running(make_config(tmp_path, virtual.path)) as appliance:
        job_id = await appliance.jobs.start_job(path)
        await appliance.jobs.cancel()
        record = await asyncio.wait_for(appliance.jobs.wait(job_id), 20)
        kinds = [e.event_type for e in await job_rows.events(appliance.store, job_id)]
    assert record.status is JobStatus.CANCELLED
    assert kinds == ["JOB_QUEUED", "JOB_PREPARING", "JOB_CANCELLED"]
    assert not file_moves(virtual)
    assert "M104 S200" not in virtual.accepted
    assert virtual.hotend.target == 0


async def test_a_resume_right_after_a_pause_waits_for_the_parking(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual(speedup=1000)
    commands = ["G28", "G1 Z0.3 F600", *moves(2000)]
    path = gcode_file(tmp_path / "quick.gcode", commands)
    async with running(make_config(tmp_path, virtual.path)) as appliance:
        job_id = await appliance.jobs.start_job(path)
        await moves_in(virtual, 200, 30)
        await appliance.jobs.pause()
        await appliance.jobs.resume()  # a second tab, or //action:pause then //action:resume
        record = await asyncio.wait_for(appliance.jobs.wait(job_id), 60)
    assert record.status is JobStatus.COMPLETED
    assert file_moves(virtual) == [c for c in commands if is_file_move(c)]
    lifted = virtual.accepted.index("G1 Z10 F600")
    lowered = virtual.accepted.index("G1 Z0.300 F600")
    after = virtual.accepted[lifted:lowered]
    assert not any(is_file_move(c) for c in after)  # nothing printed while the head was up


async def test_cancel_during_a_resume_leaves_the_heaters_off_and_the_head_up(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual(speedup=8)
    commands = ["M140 S40", "M104 S60", "M109 S60", "G28", "G1 Z0.3 F600", *moves(3000)]
    path = gcode_file(tmp_path / "cool.gcode", commands)
    async with running(make_config(tmp_path, virtual.path)) as appliance:
        job_id = await appliance.jobs.start_job(path)
        await moves_in(virtual, 10, 60)
        await appliance.jobs.pause()
        await until(lambda: virtual.position[2] > 10, 10, "the head to lift")
        await appliance.printer.execute("M104 S0")  # cooled down during the pause
        await until(lambda: virtual.hotend.current < 50, 30, "the hotend to cool")
        await appliance.jobs.resume()  # has to heat back to 60 first
        await until(lambda: "M109 S60" in virtual.accepted[-3:], 10, "the reheat")
        await appliance.jobs.cancel()
        record = await asyncio.wait_for(appliance.jobs.wait(job_id), 30)
    assert record.status is JobStatus.CANCELLED
    # The cancel G-code's M104 S0 is the last one (the test sent one of its own earlier).
    accepted = virtual.accepted
    cancel_at = len(accepted) - 1 - accepted[::-1].index("M104 S0")
    assert accepted[cancel_at + 1] == "M140 S0"
    assert not any(c.startswith(("G1 X", "G1 Z0")) for c in accepted[cancel_at:])
    assert virtual.hotend.target == 0
    assert virtual.bed.target == 0
    assert virtual.position[2] > 10


async def test_two_prints_started_at_once_leave_exactly_one_printing(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual(speedup=1000)
    commands = moves(1500)
    path = gcode_file(tmp_path / "twice.gcode", commands)
    async with running(make_config(tmp_path, virtual.path)) as appliance:
        first, second = await asyncio.gather(
            appliance.jobs.start_job(path), appliance.jobs.start_job(path), return_exceptions=True
        )
        assert isinstance(first, str)
        assert isinstance(second, UserError)
        record = await asyncio.wait_for(appliance.jobs.wait(first), 60)
    assert record.status is JobStatus.COMPLETED
    assert file_moves(virtual) == commands


async def test_a_failing_sd_card_at_the_end_of_a_print_does_not_wedge_the_printer(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual(speedup=10_000)
    path = gcode_file(tmp_path / "disk.gcode", moves(300))
    async with running(make_config(tmp_path, virtual.path)) as appliance:
        job_id = await appliance.jobs.start_job(path)
        await until(
            lambda: (job := appliance.jobs.current) is not None and job.status.name == "PRINTING",
            10,
            "printing",
        )
        await appliance.store.execute("PRAGMA query_only = ON")  # every write now fails
        await asyncio.wait_for(appliance.jobs.wait(job_id), 30)
        assert appliance.jobs.current is None
        await appliance.store.execute("PRAGMA query_only = OFF")  # the card recovered
        next_job = await appliance.jobs.start_job(path)
        record = await asyncio.wait_for(appliance.jobs.wait(next_job), 30)
    assert record.status is JobStatus.COMPLETED


async def test_stopping_the_daemon_mid_print_records_the_job_at_once(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual(speedup=1)  # slow, real-time moves: the printer is busy for long
    path = gcode_file(tmp_path / "long.gcode", moves(500))
    config = make_config(tmp_path, virtual.path)
    async with running(config) as appliance:
        job_id = await appliance.jobs.start_job(path)
        await moves_in(virtual, 5, 20)
        started = time.monotonic()
    stopped_in = time.monotonic() - started
    async with Appliance(config) as appliance:
        record = await job_rows.get(appliance.store, job_id)
    assert record is not None
    assert record.status is JobStatus.FAILED
    assert record.error_message == "interrupted: the daemon stopped"
    assert stopped_in < 5
