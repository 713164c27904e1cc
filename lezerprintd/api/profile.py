"""The printer profile and the GPIO pins, edited in Settings (the rule is in profile.py)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from lezerprintd.api.envelope import camel, ok
from lezerprintd.api.spec import Answer, Endpoint, Field, Kind, body
from lezerprintd.config import BAUD_RATES, NAME_MAX
from lezerprintd.errors import UserError
from lezerprintd.printer.transport import candidate_ports
from lezerprintd.profile import EDITABLE

if TYPE_CHECKING:
    from lezerprintd.app import Appliance

_GCODE: Final = "G-code lines, printable ASCII, up to 90 characters each"
_PIN: Final = "BCM GPIO number 0-27, or -1 when not wired"
PRINTER_FIELDS: Final = (
    Field("name", Kind.STRING, "What the pages call the printer; empty = LezerPrint",
          max_length=NAME_MAX),
    Field("port", Kind.STRING, "'auto' or the serial device, e.g. /dev/ttyACM0; used at the"
          " next connection", min_length=1, max_length=255, pattern=r"auto|sim|/[\w./@:+-]+"),
    Field("baud", Kind.STRING, "'auto' or the baud rate; used at the next connection",
          choices=("auto", *(str(rate) for rate in BAUD_RATES))),
    Field("volumeX", Kind.NUMBER, "Build volume X in mm (1-2000)"),
    Field("volumeY", Kind.NUMBER, "Build volume Y in mm (1-2000)"),
    Field("volumeZ", Kind.NUMBER, "Build volume Z in mm (1-2000)"),
    Field("maxHotendTemp", Kind.NUMBER, "Highest hotend target accepted, °C (0-500)"),
    Field("maxBedTemp", Kind.NUMBER, "Highest bed target accepted, °C (0-200)"),
    Field("maxChamberTemp", Kind.NUMBER, "Highest chamber target accepted, °C (0-150)"),
    Field("pauseGcode", Kind.STRING, f"Run when a print pauses: {_GCODE}", max_length=4000),
    Field("resumeGcode", Kind.STRING, f"Run before a print resumes: {_GCODE}", max_length=4000),
    Field("cancelGcode", Kind.STRING, f"Run when a print is cancelled: {_GCODE}",
          max_length=4000),
)  # fmt: skip
GPIO_FIELDS: Final = (
    Field("estopPin", Kind.INTEGER, f"Emergency stop button: {_PIN}"),
    Field("estopNormallyClosed", Kind.BOOLEAN, "The button is closed until pressed"),
    Field("runoutPin", Kind.INTEGER, f"Filament runout sensor: {_PIN}"),
    Field("runoutActiveLevel", Kind.STRING, "The level that means no filament",
          choices=("high", "low")),
    Field("runoutConfirmMs", Kind.INTEGER, "How long a runout must last, ms (0-60000)"),
    Field("pausePin", Kind.INTEGER, f"Pause/resume button: {_PIN}"),
    Field("debounceMs", Kind.INTEGER, "Buttons' debounce, ms (1-1000)"),
    Field("ledPin", Kind.INTEGER, f"Status LED: {_PIN}"),
    Field("relayPin", Kind.INTEGER, f"Power relay: {_PIN}"),
    Field("relayActiveHigh", Kind.BOOLEAN, "The relay switches on at a high level"),
)  # fmt: skip
FIELDS: Final = {"printer": PRINTER_FIELDS, "gpio": GPIO_FIELDS}


def _schema(part: str) -> dict[str, Any]:
    setting = {
        "type": "object",
        "required": ["value", "from", "editable"],
        "properties": {
            "from": {"type": "string", "description": "settings, file, default, or the flag"
                     " or variable that set it at launch"},
            "editable": {"type": "boolean"},
        },
    }  # fmt: skip
    extra: dict[str, Any] = (
        {"ports": {"type": "array", "items": {"type": "string"},
                   "description": "Serial devices found now"}}
        if part == "printer"
        else {"state": {"type": "object", "properties": {
            "inUse": {"type": "boolean"}, "error": {"type": ["string", "null"]},
            "estopTripped": {"type": "boolean"},
            "filamentOut": {"type": "boolean"}}}}
    )  # fmt: skip
    return {
        "type": "object",
        "required": ["settings", *extra],
        "properties": {
            "settings": {
                "type": "object",
                "properties": {field.name: setting for field in FIELDS[part]},
            },
            **extra,
        },
    }


def endpoints(appliance: Appliance) -> list[Endpoint]:
    keys = {
        part: {camel(key): key for keys in sections.values() for key in keys}
        for part, sections in EDITABLE.items()
    }

    async def view(part: str) -> dict[str, Any]:
        shown = appliance.profile.view(part)
        answer: dict[str, Any] = {"settings": {camel(key): s for key, s in shown.items()}}
        if part == "printer":
            answer["ports"] = await asyncio.to_thread(candidate_ports)
        if part == "gpio":
            gpio = appliance.gpio
            answer["state"] = {
                "inUse": gpio.in_use,
                "error": appliance.gpio_error or None,
                "estopTripped": gpio.estop_tripped,
                "filamentOut": gpio.filament_out,
            }
        return answer

    def handlers(part: str) -> tuple[Any, Any, Any]:
        async def handle_get(request: web.Request) -> web.Response:
            return ok(await view(part))

        async def handle_change(request: web.Request) -> web.Response:
            given = await body(request, FIELDS[part])
            values = {keys[part][name]: value for name, value in given.items() if value is not None}
            if "baud" in values and values["baud"] != "auto":
                values["baud"] = int(values["baud"])
            try:
                await appliance.change_profile(part, values)
            except UserError as error:
                for problem in error.details if isinstance(error.details, list) else ():
                    problem["field"] = camel(problem["field"])  # the rule names config keys
                raise
            return ok(await view(part))

        async def handle_reset(request: web.Request) -> web.Response:
            await appliance.change_profile(part, None)
            return ok(await view(part))

        return handle_get, handle_change, handle_reset

    printer_get, printer_change, printer_reset = handlers("printer")
    gpio_get, gpio_change, gpio_reset = handlers("gpio")
    printer_answer = Answer(
        200, "Each setting: its value, where it comes from, editable", _schema("printer")
    )
    gpio_answer = Answer(200, "Each pin setting, and whether the pins are in use", _schema("gpio"))
    launched = Answer(409, "A value set at launch by a flag or variable")
    return [
        Endpoint("GET", "/api/printer/profile", printer_get, "The printer profile", "printer",
                 answers=(printer_answer,)),
        Endpoint("PATCH", "/api/printer/profile", printer_change,
                 "Change the printer profile: limits apply at once, G-code at its next use,"
                 " the port at the next connection", "printer", body=PRINTER_FIELDS,
                 answers=(printer_answer, launched)),
        Endpoint("DELETE", "/api/printer/profile", printer_reset,
                 "Forget the profile's changes: the config file's values apply again",
                 "printer", answers=(printer_answer,)),
        Endpoint("GET", "/api/gpio", gpio_get, "The GPIO pins", "system",
                 answers=(gpio_answer,)),
        Endpoint("PATCH", "/api/gpio", gpio_change, "Change the GPIO pins (reopened at once)",
                 "system", body=GPIO_FIELDS,
                 answers=(gpio_answer, Answer(409, "Set at launch, or the pins cannot be used"))),
        Endpoint("DELETE", "/api/gpio", gpio_reset,
                 "Forget the pins' changes: the config file's values apply again", "system",
                 answers=(gpio_answer,)),
    ]  # fmt: skip
