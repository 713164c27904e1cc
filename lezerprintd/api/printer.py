"""The printer: its status, and everything a person does to it by hand.

Handlers are thin: read the declared fields, ask the printer or job room, answer. Limits that
depend on the machine (temperatures, build volume) are the printer profile's at the moment of
the request: Settings may change them while the appliance runs.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from lezerprintd.api.envelope import ok
from lezerprintd.api.jobs import RESUME_FIELDS, live_view
from lezerprintd.api.spec import Answer, Endpoint, Field, Kind, body
from lezerprintd.auth.middleware import principal_of
from lezerprintd.config import BAUD_RATES, PrinterConfig
from lezerprintd.errors import UserError
from lezerprintd.printer.printer import COMMAND_PATTERN, PrinterState, PrinterStatus

if TYPE_CHECKING:
    from lezerprintd.app import Appliance

AXES: Final = ("X", "Y", "Z")
_JOG_SPEED: Final = {"X": 3000.0, "Y": 3000.0, "Z": 600.0, "E": 300.0}

_NUMBER_OR_NULL: Final = {"type": ["number", "null"]}
STATUS_SCHEMA: Final = {
    "type": "object",
    "required": ["state", "connected", "temperatures", "position", "currentJob"],
    "properties": {
        "state": {
            "type": "string",
            "enum": [state.value for state in PrinterState],
        },
        "error": {"type": ["string", "null"]},
        "connected": {"type": "boolean"},
        "port": {"type": ["string", "null"]},
        "baud": {"type": ["integer", "null"]},
        "firmware": {"type": ["string", "null"]},
        "capabilities": {"type": "object"},
        "temperatures": {
            "type": "object",
            "properties": {
                "hotendTemp": _NUMBER_OR_NULL,
                "hotendTarget": _NUMBER_OR_NULL,
                "bedTemp": _NUMBER_OR_NULL,
                "bedTarget": _NUMBER_OR_NULL,
                "chamberTemp": _NUMBER_OR_NULL,
                "chamberTarget": _NUMBER_OR_NULL,
                "heating": {"type": "boolean"},
                "tools": {"type": "array"},
            },
        },
        "position": {"type": ["object", "null"]},
        "currentJob": {"type": ["object", "null"]},
        "link": {"type": "object"},
    },
}


def status_view(status: PrinterStatus, current_job: dict[str, Any] | None) -> dict[str, Any]:
    """The printer as the API and the websocket show it."""
    temperatures = status.temperatures
    hotend = temperatures.tools[0] if temperatures.tools else None
    bed, chamber = temperatures.bed, temperatures.chamber
    position = status.position
    return {
        "state": status.state.value,
        "error": status.error,
        "connected": status.state
        in (PrinterState.OPERATIONAL, PrinterState.PRINTING, PrinterState.PAUSED),
        "port": status.port,
        "baud": status.baud,
        "firmware": status.firmware,
        "capabilities": status.capabilities,
        "temperatures": {
            "hotendTemp": hotend.actual if hotend else None,
            "hotendTarget": hotend.target if hotend else None,
            "bedTemp": bed.actual if bed else None,
            "bedTarget": bed.target if bed else None,
            "chamberTemp": chamber.actual if chamber else None,
            "chamberTarget": chamber.target if chamber else None,
            "heating": temperatures.waiting,
            "tools": [
                {"temp": tool.actual, "target": tool.target, "power": tool.power}
                for tool in temperatures.tools
            ],
        },
        "position": None
        if position is None
        else {"x": position.x, "y": position.y, "z": position.z, "e": position.e},
        "currentJob": current_job,
        "link": {
            "window": status.window,
            "linesSent": status.lines_sent,
            "linesResent": status.lines_resent,
            "resendRequests": status.resend_requests,
            "timeouts": status.timeouts,
        },
    }


def temperature_fields(limits: PrinterConfig) -> tuple[Field, ...]:
    """The heaters' targets, up to the profile's maxima."""
    return (
        Field(
            "hotend",
            Kind.NUMBER,
            "Hotend target in °C (0 turns it off)",
            minimum=0,
            maximum=limits.max_hotend_temp,
        ),
        Field(
            "bed",
            Kind.NUMBER,
            "Bed target in °C (0 turns it off)",
            minimum=0,
            maximum=limits.max_bed_temp,
        ),
        Field(
            "chamber",
            Kind.NUMBER,
            "Chamber target in °C (0 turns it off)",
            minimum=0,
            maximum=limits.max_chamber_temp,
        ),
        Field("tool", Kind.INTEGER, "Which hotend (T0, T1...)", minimum=0, maximum=7, default=0),
    )


def endpoints(appliance: Appliance) -> list[Endpoint]:
    command_fields = (
        Field(
            "command",
            Kind.STRING,
            "One G-code line, printable ASCII",
            required=True,
            min_length=1,
            max_length=90,
            pattern=COMMAND_PATTERN,
        ),
        Field("wait", Kind.BOOLEAN, "Wait for the printer's answer", default=True),
    )
    home_fields = (
        Field(
            "axes",
            Kind.STRINGS,
            "Axes to home; all when left out",
            choices=AXES,
            min_length=1,
            max_length=3,
        ),
    )
    move_fields = (
        Field("axis", Kind.STRING, "The axis to jog", required=True, choices=(*AXES, "E")),
        Field(
            "distance",
            Kind.NUMBER,
            "Millimetres, negative for the other way",
            required=True,
            minimum=-200,
            maximum=200,
        ),
        Field(
            "speed",
            Kind.NUMBER,
            "mm/min; X/Y 3000, Z 600, E 300 when left out",
            minimum=1,
            maximum=10000,
        ),
    )
    connect_fields = (
        Field(
            "port",
            Kind.STRING,
            "'auto' or the serial device, e.g. /dev/ttyACM0",
            min_length=1,
            max_length=255,
            pattern=r"auto|/[\w./@:+-]+",
        ),
        Field(
            "baud",
            Kind.INTEGER,
            "The baud rate; the configured one when left out",
            choices=BAUD_RATES,
        ),
    )

    def current_job() -> dict[str, Any] | None:
        job = appliance.jobs.current
        return None if job is None else live_view(job)

    def who(request: web.Request) -> str:
        return principal_of(request).username

    async def handle_status(request: web.Request) -> web.Response:
        return ok(status_view(appliance.printer.status(), current_job()))

    async def handle_command(request: web.Request) -> web.Response:
        values = await body(request, command_fields)
        command: str = values["command"]
        if not values["wait"]:
            appliance.printer.submit(command)
            return ok({"command": command, "queued": True}, status=202)
        response = await appliance.printer.execute(command)
        return ok({"command": command, "response": response})

    async def handle_home(request: web.Request) -> web.Response:
        values = await body(request, home_fields)
        _refuse_while_printing(appliance)
        axes = values["axes"] or list(AXES)
        command = "G28" if set(axes) == set(AXES) else "G28 " + " ".join(sorted(set(axes)))
        return ok({"command": command, "response": await appliance.printer.execute(command)})

    async def handle_move(request: web.Request) -> web.Response:
        values = await body(request, move_fields)
        _refuse_while_printing(appliance)
        axis: str = values["axis"]
        distance: float = values["distance"]
        speed: float = values["speed"] or _JOG_SPEED[axis]
        printer = appliance.printer
        limits = printer.settings
        volume = {"X": limits.volume_x, "Y": limits.volume_y, "Z": limits.volume_z}
        if axis in volume:
            position = await printer.query_position()
            target = getattr(position, axis.lower()) + distance
            if not 0 <= target <= volume[axis]:
                raise UserError(
                    f"the move would leave the build volume ({axis} {target:g} mm)",
                    details=[
                        {
                            "field": "distance",
                            "code": "range",
                            "message": f"{axis} must stay within 0..{volume[axis]:g} mm",
                        }
                    ],
                )
        responses: list[str] = []
        for line in ("G91", f"G1 {axis}{distance:g} F{speed:g}", "G90"):
            responses += await printer.execute(line)
        return ok({"axis": axis, "distance": distance, "response": responses})

    async def handle_temperature(request: web.Request) -> web.Response:
        values = await body(request, temperature_fields(appliance.printer.settings))
        commands = []
        if values["hotend"] is not None:
            commands.append(f"M104 T{values['tool']} S{values['hotend']:g}")
        if values["bed"] is not None:
            commands.append(f"M140 S{values['bed']:g}")
        if values["chamber"] is not None:
            commands.append(f"M141 S{values['chamber']:g}")
        if not commands:
            raise UserError(
                "name at least one heater",
                details=[
                    {"field": name, "code": "required", "message": "give a target"}
                    for name in ("hotend", "bed", "chamber")
                ],
            )
        for command in commands:
            await appliance.printer.execute(command)
        return ok({"commands": commands})

    async def handle_emergency_stop(request: web.Request) -> web.Response:
        appliance.printer.emergency_stop(f"emergency stop from the API by {who(request)}")
        return ok({"state": appliance.printer.state.value})

    async def handle_pause(request: web.Request) -> web.Response:
        await appliance.jobs.pause(f"paused by {who(request)}")
        return ok({"job": current_job()})

    async def handle_resume(request: web.Request) -> web.Response:
        values = await body(request, RESUME_FIELDS)
        await appliance.jobs.resume(override=values["override"])
        return ok({"job": current_job()})

    async def handle_cancel(request: web.Request) -> web.Response:
        await appliance.jobs.cancel()
        return ok({"job": current_job()})

    async def handle_connect(request: web.Request) -> web.Response:
        values = await body(request, connect_fields)
        port = values["port"]
        if port not in (None, "auto") and not _is_serial_device(port):
            raise UserError(
                f"{port} is not a serial device",
                details=[
                    {"field": "port", "code": "choice", "message": "no serial device of that name"}
                ],
            )
        if appliance.jobs.current is not None:
            raise UserError("a print is running; cancel it first", status=409, code="CONFLICT")
        await appliance.printer.connect(values["port"], values["baud"])
        return ok(status_view(appliance.printer.status(), None))

    async def handle_disconnect(request: web.Request) -> web.Response:
        if appliance.jobs.current is not None:
            raise UserError("a print is running; cancel it first", status=409, code="CONFLICT")
        await appliance.printer.disconnect()
        return ok(status_view(appliance.printer.status(), None))

    done = Answer(200, "Done")
    return [
        Endpoint(
            "GET",
            "/api/printer/status",
            handle_status,
            "The printer's state",
            "printer",
            answers=(Answer(200, "The printer now", STATUS_SCHEMA),),
        ),
        Endpoint(
            "POST",
            "/api/printer/command",
            handle_command,
            "Send one G-code line",
            "printer",
            body=command_fields,
            answers=(Answer(200, "The printer's answer"), Answer(202, "Queued")),
        ),
        Endpoint(
            "POST",
            "/api/printer/home",
            handle_home,
            "Home axes",
            "printer",
            body=home_fields,
            answers=(done,),
        ),
        Endpoint(
            "POST",
            "/api/printer/move",
            handle_move,
            "Jog one axis",
            "printer",
            body=move_fields,
            answers=(done,),
        ),
        Endpoint(
            "POST",
            "/api/printer/temperature",
            handle_temperature,
            "Set heater targets",
            "printer",
            body=temperature_fields(appliance.config.printer),
            answers=(done,),
        ),
        Endpoint(
            "POST",
            "/api/printer/emergency-stop",
            handle_emergency_stop,
            "M112 now: the printer halts until reconnected",
            "printer",
            answers=(done,),
        ),
        Endpoint(
            "POST",
            "/api/printer/pause",
            handle_pause,
            "Pause the print",
            "printer",
            answers=(done,),
        ),
        Endpoint(
            "POST",
            "/api/printer/resume",
            handle_resume,
            "Resume the print",
            "printer",
            body=RESUME_FIELDS,
            answers=(done,),
        ),
        Endpoint(
            "POST",
            "/api/printer/cancel",
            handle_cancel,
            "Cancel the print",
            "printer",
            answers=(done,),
        ),
        Endpoint(
            "POST",
            "/api/printer/connect",
            handle_connect,
            "(Re)connect, optionally to another port or baud rate",
            "printer",
            body=connect_fields,
            answers=(Answer(200, "Connected", STATUS_SCHEMA),),
        ),
        Endpoint(
            "POST",
            "/api/printer/disconnect",
            handle_disconnect,
            "Close the port",
            "printer",
            answers=(Answer(200, "Disconnected", STATUS_SCHEMA),),
        ),
    ]


def _is_serial_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _refuse_while_printing(appliance: Appliance) -> None:
    if appliance.printer.state is PrinterState.PRINTING:
        raise UserError("not while printing; pause first", status=409, code="CONFLICT")
