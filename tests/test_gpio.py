"""GPIO buttons and the filament sensor on gpiozero's own MockFactory pins, driven from another
thread as gpiozero's would be, against the real app, printer link and virtual Marlin. The pins
do not debounce, so these tests play timed edge sequences (bounces, chatter, a held button) and
wait for what a person would see: a halted printer, a paused print, a refused resume."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lezerprintd.auth.permissions import Role
from lezerprintd.bus import PrinterAlert
from lezerprintd.config import GpioConfig
from lezerprintd.printer.printer import PrinterState
from lezerprintd.printer.virtual import VirtualPrinter
from tests.conftest import clean_environment, moves, until
from tests.test_api import Served, serve

ESTOP, RUNOUT, PAUSE, LED, RELAY = 17, 27, 22, 23, 24
WIRED = GpioConfig(
    factory="mock", estop_pin=ESTOP, runout_pin=RUNOUT, pause_pin=PAUSE, led_pin=LED,
    relay_pin=RELAY, debounce_ms=50, runout_confirm_ms=400,
)  # fmt: skip


@pytest.fixture
async def served(
    aiohttp_client: Callable[..., Any], tmp_path: Path, start_virtual: Callable[..., VirtualPrinter]
) -> Served:
    return await serve(aiohttp_client, tmp_path, start_virtual(speedup=200), gpio=WIRED)


class Pins:
    """The mock pins, driven from a thread of their own (gpiozero calls back on its thread)."""

    def __init__(self, served: Served) -> None:
        self.factory = served.appliance.gpio.factory
        self.alerts: list[PrinterAlert] = []
        served.appliance.bus.subscribe(PrinterAlert, self.alerts.append)

    async def low(self, pin: int) -> None:  # a switch closed to ground
        await asyncio.to_thread(self.factory.pin(pin).drive_low)

    async def high(self, pin: int) -> None:  # open: the pull-up wins
        await asyncio.to_thread(self.factory.pin(pin).drive_high)

    async def hold(self, pin: int, low: bool, seconds: float) -> None:
        """One level for `seconds` of real time: the stimulus, not a wait for a result."""
        await (self.low(pin) if low else self.high(pin))
        await asyncio.sleep(seconds)

    def kinds(self) -> list[str]:
        return [alert.type for alert in self.alerts]


async def printing(served: Served, lines: int = 40_000) -> str:
    file_id = served.library_file(["G28", *moves(lines)], "long.gcode")
    await served.register_files()
    status, answer = await served.call(
        "POST", "/api/jobs/start", Role.OPERATOR, {"fileId": file_id}
    )
    assert status == 201, answer
    await until(lambda: served.appliance.printer.state is PrinterState.PRINTING, 20, "printing")
    return str(answer["data"]["job"]["id"])


async def job(served: Served, job_id: str) -> dict[str, Any]:
    _, answer = await served.call("GET", f"/api/jobs/{job_id}", Role.OPERATOR)
    found: dict[str, Any] = answer["data"]["job"]
    return found


async def audit_rows(served: Served, kind: str) -> list[dict[str, Any]]:
    """The audit log's rows of `kind`, once there is one (they are written just after)."""
    for _ in range(100):
        _, answer = await served.call("GET", f"/api/system/events?eventType={kind}")
        rows: list[dict[str, Any]] = answer["data"]["events"]
        if rows:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {kind} row in the audit log within 5 s")


async def ready(served: Served) -> Pins:
    """Buttons wired and at rest: the stop closed to ground, filament in the sensor."""
    pins = Pins(served)
    gpio = served.appliance.gpio
    # Before anything is wired, an open normally-closed stop reads as tripped (a cut wire).
    assert gpio.estop_tripped
    assert "EMERGENCY_STOP_INPUT" in [a.type for a in pins.alerts] or gpio.estop_tripped
    await pins.low(ESTOP)
    await pins.low(RUNOUT)  # filament holds the switch closed
    await until(lambda: not gpio.estop_tripped and not gpio.filament_out, 5, "inputs at rest")
    return pins


async def test_the_stop_button_halts_the_printer_and_fails_the_job(served: Served) -> None:
    pins = await ready(served)
    job_id = await printing(served)
    await pins.high(ESTOP)  # pressed: the normally-closed contact opens
    await until(lambda: served.virtual.halted, 5, "the firmware to halt on M112")
    await until(lambda: served.appliance.jobs.current is None, 20, "the job to end")
    record = await job(served, job_id)
    assert record["status"] == "FAILED"
    assert "emergency stop button" in record["errorMessage"]
    assert "EMERGENCY_STOP" in pins.kinds()
    # Chatter while it is held does not stop it twice; one audit row says who stopped it.
    for _ in range(5):
        await pins.hold(ESTOP, low=True, seconds=0.005)
        await pins.hold(ESTOP, low=False, seconds=0.005)
    rows = await audit_rows(served, "EMERGENCY_STOP")
    assert len(rows) == 1
    assert rows[0]["description"] == "Emergency stop by the GPIO button"
    assert pins.kinds().count("EMERGENCY_STOP") == 1


async def test_a_cut_stop_wire_trips_too(served: Served) -> None:
    pins = await ready(served)
    job_id = await printing(served)
    await pins.high(ESTOP)  # a wire cut reads exactly as an open contact
    await until(lambda: served.appliance.jobs.current is None, 20, "the job to end")
    assert (await job(served, job_id))["status"] == "FAILED"


async def test_a_runout_pauses_only_once_confirmed_and_holds_the_resume(served: Served) -> None:
    pins = await ready(served)
    job_id = await printing(served)
    # A wobbling filament: out for less than the 400 ms confirmation, again and again.
    for _ in range(4):
        await pins.hold(RUNOUT, low=False, seconds=0.15)
        await pins.hold(RUNOUT, low=True, seconds=0.05)
    assert served.appliance.printer.state is PrinterState.PRINTING
    # Really out.
    await pins.high(RUNOUT)
    await until(lambda: served.appliance.printer.state is PrinterState.PAUSED, 10, "the pause")
    assert "FILAMENT_RUNOUT" in pins.kinds()
    _, events = await served.call("GET", f"/api/jobs/{job_id}", Role.OPERATOR)
    assert any("filament runout" in (e["message"] or "") for e in events["data"]["events"])
    status, refused = await served.call("POST", "/api/printer/resume", Role.OPERATOR)
    assert status == 409
    assert "filament" in refused["error"]["message"]
    # Filament back, held for the debounce time: resuming works again.
    await pins.low(RUNOUT)
    await until(lambda: not served.appliance.gpio.filament_out, 5, "filament present")
    status, answer = await served.call("POST", f"/api/jobs/{job_id}/resume", Role.OPERATOR)
    assert status == 200, answer
    await until(lambda: served.appliance.printer.state is PrinterState.PRINTING, 20, "resumed")
    # Out again; an operator who knows better resumes regardless.
    await pins.high(RUNOUT)
    await until(lambda: served.appliance.printer.state is PrinterState.PAUSED, 10, "paused again")
    status, answer = await served.call(
        "POST", "/api/printer/resume", Role.OPERATOR, {"override": True}
    )
    assert status == 200, answer
    await until(lambda: served.appliance.printer.state is PrinterState.PRINTING, 20, "overridden")
    status, _ = await served.call("POST", "/api/printer/cancel", Role.OPERATOR)
    assert status == 200


async def test_a_runout_while_idle_only_warns(served: Served) -> None:
    pins = await ready(served)
    await pins.high(RUNOUT)
    await until(lambda: served.appliance.gpio.filament_out, 5, "the runout to be confirmed")
    assert "FILAMENT_RUNOUT" in pins.kinds()
    assert served.appliance.printer.state is PrinterState.OPERATIONAL
    assert served.appliance.jobs.resume_held == ""


@pytest.mark.parametrize(
    "report", [b"//action:out_of_filament T0\n", b"//action:paused filament_runout 0\n"]
)
async def test_the_printers_own_runout_holds_the_resume_the_same_way(
    served: Served, report: bytes
) -> None:
    await ready(served)
    job_id = await printing(served)
    served.virtual.inject(report)
    await until(lambda: served.appliance.printer.state is PrinterState.PAUSED, 10, "the pause")
    status, _ = await served.call("POST", "/api/printer/resume", Role.OPERATOR)
    assert status == 409
    # The firmware finished its own filament change and says so.
    served.virtual.inject(b"//action:resume\n")
    await until(lambda: served.appliance.printer.state is PrinterState.PRINTING, 20, "resumed")
    assert (await job(served, job_id))["status"] == "PRINTING"
    await served.call("POST", "/api/printer/cancel", Role.OPERATOR)


async def test_the_pause_button_ignores_chatter_and_acts_once_per_press(served: Served) -> None:
    pins = await ready(served)
    await printing(served)
    # Contact chatter: presses shorter than the 50 ms debounce.
    for _ in range(6):
        await pins.hold(PAUSE, low=True, seconds=0.01)
        await pins.hold(PAUSE, low=False, seconds=0.01)
    assert served.appliance.printer.state is PrinterState.PRINTING
    # A real press, held down for a while: one pause, no toggling back while held.
    await pins.low(PAUSE)
    await until(lambda: served.appliance.printer.state is PrinterState.PAUSED, 10, "the pause")
    await asyncio.sleep(0.3)  # still held (the stimulus)
    assert served.appliance.printer.state is PrinterState.PAUSED
    await pins.high(PAUSE)
    # The next press resumes.
    await pins.hold(PAUSE, low=True, seconds=0.1)
    await pins.high(PAUSE)
    await until(lambda: served.appliance.printer.state is PrinterState.PRINTING, 20, "resumed")
    await served.call("POST", "/api/printer/cancel", Role.OPERATOR)


async def test_the_led_shows_the_state_and_the_relay_powers_the_printer(served: Served) -> None:
    pins = await ready(served)
    led = pins.factory.pin(LED)
    assert pins.factory.pin(RELAY).state is True  # printer power on while the appliance runs
    await until(lambda: led.state is True, 5, "a steady LED when ready")
    await printing(served)

    def toggles() -> int:
        return sum(
            1 for a, b in zip(led.states, led.states[1:], strict=False) if a.state != b.state
        )

    before = toggles()
    await until(lambda: toggles() >= before + 2, 5, "the LED to blink while printing")
    await pins.high(ESTOP)
    await until(lambda: served.appliance.printer.state is PrinterState.ERROR, 10, "the stop")
    fast = toggles()
    await until(lambda: toggles() >= fast + 6, 3, "the LED to flash fast on an error")


def test_two_functions_on_one_pin_stop_the_start_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[gpio]\nfactory = "mock"\nestop_pin = 17\nrunout_pin = 17\n')
    result = subprocess.run(
        [sys.executable, "-m", "lezerprintd", "serve", "--printer", "sim", "--config", str(config),
         "--data-dir", str(tmp_path), "--mdns", "off", "--port", "0", "--host", "127.0.0.1"],
        capture_output=True, text=True, env=clean_environment(), timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last == "lezerprintd: config error: [gpio] runout_pin: GPIO 17 is already [gpio] estop_pin"
    )


async def test_without_gpio_hardware_the_pins_are_left_alone(
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
    start_virtual: Callable[..., VirtualPrinter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # "auto" on a machine without /dev/gpiochip0 (this one, a laptop, CI): nothing is opened,
    # the appliance runs, and the log says why the pins do nothing.
    assert not os.path.exists("/dev/gpiochip0"), "this test means a machine without GPIO"  # noqa: ASYNC240
    wired = GpioConfig(factory="auto", estop_pin=ESTOP, runout_pin=RUNOUT)
    served = await serve(aiohttp_client, tmp_path, start_virtual(speedup=1000), gpio=wired)
    assert served.appliance.gpio.factory is None
    assert "no GPIO hardware here" in caplog.text
    status, _ = await served.call("GET", "/api/printer/status", Role.VIEWER)
    assert status == 200
