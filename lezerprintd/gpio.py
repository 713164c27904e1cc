"""Buttons and sensors wired to the Pi's GPIO pins, through gpiozero: an emergency stop, a
filament runout sensor, a pause/resume button, a status LED and the printer's power relay.

Rule: gpiozero calls back on its own thread; a callback only hands the edge to the event loop
(`call_soon_threadsafe`) and every decision is made there. The emergency stop acts on the
first edge (M112 goes straight to the wire, ahead of anything queued); the other inputs act
only on a level that has held: `debounce_ms` for buttons and for filament coming back, and
`runout_confirm_ms` for a runout, so a wobbling filament does not pause a print. gpiozero's
mock pins do not debounce, and real ones vary by driver, so the debouncing is all ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from lezerprintd.bus import Bus, PrinterAlert, PrinterStatusChanged
from lezerprintd.config import GpioConfig
from lezerprintd.errors import ConfigError, UserError
from lezerprintd.printer.printer import Printer, PrinterState
from lezerprintd.store import Store
from lezerprintd.store import accounts as audit
from lezerprintd.store.jobs import Severity

if TYPE_CHECKING:
    from lezerprintd.printer.jobs import Jobs

log = logging.getLogger(__name__)

ESTOP_REASON: Final = "emergency stop button"
RUNOUT_REASON: Final = "filament runout"
GPIO_HARDWARE: Final = "/dev/gpiochip0"
# LED patterns (on, off seconds); None = steady.
_BLINK: Final = {"printing": (1.0, 1.0), "error": (0.125, 0.125)}


class Gpio:
    """The GPIO inputs and outputs, when any pin is wired."""

    def __init__(
        self,
        config: GpioConfig,
        printer: Printer,
        jobs: Jobs,
        bus: Bus,
        store: Store,
        *,
        taken_over: tuple[Any, Any] = (None, None),
    ) -> None:
        self.config = config
        self._printer = printer
        self._jobs = jobs
        self._bus = bus
        self._store = store
        # gpiozero's pin factory (a MockFactory for tests to drive) and the relay, when they
        # come from the Gpio this one replaces (see hand_over).
        self.factory: Any = taken_over[0]
        self._relay: Any = taken_over[1]
        self._devices: list[Any] = [] if self._relay is None else [self._relay]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._led: Any = None
        self._background: set[asyncio.Task[None]] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self.estop_tripped = False
        self.filament_out = False
        self._runout = _Settling()
        self._pause = _Settling()
        self._estop_normal = _Settling()

    @property
    def wired(self) -> dict[str, int]:
        """The functions that have a pin, by config key."""
        keys = ("estop_pin", "runout_pin", "pause_pin", "led_pin", "relay_pin")
        return {key: getattr(self.config, key) for key in keys if getattr(self.config, key) >= 0}

    @property
    def in_use(self) -> bool:
        """The pins are open: wired, allowed, and found on this machine."""
        return bool(self._devices)

    def hand_over(self, successor: GpioConfig) -> tuple[Any, Any]:
        """What the Gpio that replaces this one (with `successor`) takes over: the pin factory,
        and the power relay, still switched on, when its pin and polarity stay: changing
        another pin must not cut the printer's power. Call before stop()."""
        relay = None
        same = ("relay_pin", "relay_active_high", "factory")
        if self._relay is not None and all(
            getattr(successor, key) == getattr(self.config, key) for key in same
        ):
            relay, self._relay = self._relay, None
            self._devices.remove(relay)
        return self.factory, relay

    async def start(self) -> None:
        wired = self.wired
        if not wired or self.config.factory == "off":
            self._close()  # a relay handed over and no longer wanted
            return
        check_unique(wired)
        if self.config.factory == "auto" and not await asyncio.to_thread(
            os.path.exists, GPIO_HARDWARE
        ):
            log.warning("no GPIO hardware here (%s): the [gpio] pins are not used", GPIO_HARDWARE)
            return
        self._loop = asyncio.get_running_loop()
        # Imported only when pins are wired: most development machines never load it.
        import gpiozero

        if self.config.factory == "mock" and self.factory is None:
            from gpiozero.pins.mock import MockFactory

            self.factory = MockFactory()
        try:
            self._open(gpiozero)
        except ConfigError:
            self._close()
            raise
        self._unsubscribe = self._bus.subscribe(PrinterStatusChanged, self._show_state)
        self._show_state(None)
        log.info("GPIO: %s", ", ".join(f"{key} {pin}" for key, pin in wired.items()))

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for timer in (self._runout, self._pause, self._estop_normal):
            timer.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._close()

    # -- gpiozero's thread: hand over and return

    def _edge(self, handler: Callable[[bool], None], device: Any) -> Callable[[], None]:
        def on_edge() -> None:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(handler, bool(device.is_active))

        return on_edge

    # -- the event loop: every decision

    def _on_estop(self, active: bool) -> None:
        tripped = active != self.config.estop_normally_closed
        if tripped:
            self._estop_normal.cancel()
            if not self.estop_tripped:
                self.estop_tripped = True
                self._printer.emergency_stop(ESTOP_REASON)
                self._audit(
                    "EMERGENCY_STOP", "Emergency stop by the GPIO button", Severity.CRITICAL
                )
        elif self.estop_tripped:
            # Re-armed only once the input has been back to normal for the debounce time.
            self._estop_normal.start(self._debounce, self._estop_released)

    def _estop_released(self) -> None:
        self.estop_tripped = False
        log.info("the emergency stop input is back to normal")

    def _on_runout(self, active: bool) -> None:
        out = self._no_filament(active)
        if out == self.filament_out:
            self._runout.cancel()  # a bounce back to where it was
            return
        settle = self.config.runout_confirm_ms / 1000 if out else self._debounce
        self._runout.start(settle, lambda: self._runout_settled(out))

    def _runout_settled(self, out: bool) -> None:
        self.filament_out = out
        if out:
            self._runout_confirmed()
        else:
            self._jobs.release_resume()
            self._alert("FILAMENT_LOADED", "Filament present again: the print can resume", "INFO")

    def _runout_confirmed(self) -> None:
        job = self._jobs.current
        if job is None:  # idle: only a warning
            self._alert("FILAMENT_RUNOUT", "The filament sensor reports no filament", "WARNING")
            return
        self._jobs.hold_resume("the filament sensor reports no filament")
        self._audit(
            "FILAMENT_RUNOUT", f"Filament ran out printing {job.file_name}", Severity.WARNING
        )
        if self._printer.state is PrinterState.PRINTING:
            self._alert("FILAMENT_RUNOUT", "Filament ran out: pausing the print", "WARNING")
            self._spawn(self._jobs.pause(RUNOUT_REASON))
        else:
            self._alert("FILAMENT_RUNOUT", "Filament ran out: the print stays paused", "WARNING")

    def _on_pause_button(self, active: bool) -> None:
        if active:
            self._pause.start(self._debounce, self._pause_pressed)
        else:
            self._pause.cancel()  # released before it settled: a bounce

    def _pause_pressed(self) -> None:
        job = self._jobs.current
        if job is None:
            return
        if self._printer.state is PrinterState.PRINTING:
            self._spawn(self._jobs.pause("pause button"))
        elif self._printer.state is PrinterState.PAUSED:
            self._spawn(self._jobs.resume())

    def _show_state(self, event: PrinterStatusChanged | None) -> None:
        if self._led is None:
            return
        state = self._printer.state
        if state in (PrinterState.PRINTING, PrinterState.PAUSED):
            self._led.blink(*_BLINK["printing"])
        elif state is PrinterState.ERROR:
            self._led.blink(*_BLINK["error"])
        elif state is PrinterState.OPERATIONAL:
            self._led.on()
        else:
            self._led.off()

    # -- helpers

    @property
    def _debounce(self) -> float:
        return self.config.debounce_ms / 1000

    def _no_filament(self, active: bool) -> bool:
        """Inputs are pulled up and active when low (a switch closed to ground)."""
        return active if self.config.runout_active_level == "low" else not active

    def _open(self, gpiozero: Any) -> None:
        config, factory = self.config, self.factory
        inputs = (
            ("estop_pin", self._on_estop),
            ("runout_pin", self._on_runout),
            ("pause_pin", self._on_pause_button),
        )
        for key, handler in inputs:
            pin = getattr(config, key)
            if pin < 0:
                continue
            # Pulled up, so each reads active while its switch closes it to ground.
            device = self._device(
                key, partial(gpiozero.DigitalInputDevice, pin, pull_up=True, pin_factory=factory)
            )
            device.when_activated = self._edge(handler, device)
            device.when_deactivated = self._edge(handler, device)
            if key == "runout_pin" and self._no_filament(device.is_active):
                self.filament_out = True
                self._alert("FILAMENT_RUNOUT", "The filament sensor reports no filament", "WARNING")
            if key == "estop_pin" and device.is_active != config.estop_normally_closed:
                self.estop_tripped = True
                self._alert(
                    "EMERGENCY_STOP_INPUT",
                    "The emergency stop input is tripped (pressed, or its wire is cut)",
                    "CRITICAL",
                )
        if config.led_pin >= 0:
            self._led = self._device(
                "led_pin", partial(gpiozero.LED, config.led_pin, pin_factory=factory)
            )
        if config.relay_pin >= 0 and self._relay is None:  # else handed over, on all along
            # Switched on as it opens: the printer has power while the appliance runs.
            self._relay = self._device(
                "relay_pin",
                partial(
                    gpiozero.OutputDevice,
                    config.relay_pin,
                    active_high=config.relay_active_high,
                    initial_value=True,
                    pin_factory=factory,
                ),
            )

    def _device(self, key: str, make: Callable[[], Any]) -> Any:
        from gpiozero import GPIOZeroError

        try:
            device = make()
        except GPIOZeroError as error:
            raise ConfigError(f"[gpio] {key}: {error}") from None
        self._devices.append(device)
        return device

    def _close(self) -> None:
        for device in reversed(self._devices):
            with contextlib.suppress(Exception):
                device.close()
        self._devices.clear()
        self._led = self._relay = None

    def _alert(self, kind: str, message: str, severity: str) -> None:
        self._bus.publish(PrinterAlert(kind, message, severity))

    def _audit(self, kind: str, description: str, severity: Severity) -> None:
        self._spawn(
            audit.add_event(
                self._store,
                event_type=kind,
                description=description,
                severity=severity,
                now=time.time(),
                metadata={"source": "gpio"},
            )
        )

    def _spawn(self, work: Any) -> None:
        async def quietly() -> None:
            try:
                await work
            except UserError as refused:
                log.warning("GPIO action refused: %s", refused)
            except Exception:
                log.exception("a GPIO action failed")

        task = asyncio.create_task(quietly())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class _Settling:
    """One pending "if this level still holds after t seconds, act" timer."""

    def __init__(self) -> None:
        self._timer: asyncio.TimerHandle | None = None

    def start(self, seconds: float, then: Callable[[], None]) -> None:
        self.cancel()
        self._timer = asyncio.get_running_loop().call_later(seconds, then)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def check_unique(wired: dict[str, int]) -> None:
    seen: dict[int, str] = {}
    for key, pin in wired.items():
        if pin in seen:
            raise ConfigError(f"[gpio] {key}: GPIO {pin} is already [gpio] {seen[pin]}")
        seen[pin] = key
