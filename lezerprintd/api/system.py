"""The daemon itself: liveness and a public glance at its state."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web

from lezerprintd import __version__
from lezerprintd.api.envelope import ok
from lezerprintd.api.spec import Answer, Endpoint

if TYPE_CHECKING:
    from lezerprintd.app import Appliance

HEALTH = {
    "type": "object",
    "required": ["status", "version", "timestamp"],
    "properties": {
        "status": {"type": "string", "enum": ["ok"]},
        "version": {"type": "string"},
        "timestamp": {"type": "string", "format": "date-time"},
    },
}


def iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def endpoints(appliance: Appliance) -> list[Endpoint]:
    async def handle_health(request: web.Request) -> web.Response:
        return ok({"status": "ok", "version": __version__, "timestamp": iso_now()})

    async def handle_status(request: web.Request) -> web.Response:
        printer = appliance.printer
        return ok(
            {
                "server": "LezerPrint",
                "status": "running",
                "version": __version__,
                "timestamp": iso_now(),
                "printer": {"state": printer.state.value, "connected": printer.connected},
            }
        )

    status = {
        "type": "object",
        "required": ["server", "status", "version", "timestamp", "printer"],
        "properties": {
            "server": {"type": "string"},
            "status": {"type": "string"},
            "version": {"type": "string"},
            "timestamp": {"type": "string"},
            "printer": {
                "type": "object",
                "required": ["state", "connected"],
                "properties": {"state": {"type": "string"}, "connected": {"type": "boolean"}},
            },
        },
    }
    return [
        Endpoint(
            "GET",
            "/api/health",
            handle_health,
            "Is the daemon up?",
            "system",
            answers=(Answer(200, "The daemon answers", HEALTH),),
        ),
        Endpoint(
            "GET",
            "/api/status",
            handle_status,
            "The daemon and its printer link",
            "system",
            answers=(Answer(200, "A public glance at the state", status),),
        ),
    ]
