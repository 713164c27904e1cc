"""Heating presets: everyone who watches the printer reads them, administrators edit them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from aiohttp import web

from lezerprintd.api.envelope import ok
from lezerprintd.api.spec import Answer, Endpoint, Field, Kind, body
from lezerprintd.presets import NAME_MAX, Presets

if TYPE_CHECKING:
    from lezerprintd.app import Appliance

PRESET: Final = {
    "type": "object",
    "required": ["id", "name", "hotend", "bed"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "hotend": {"type": "number"},
        "bed": {"type": "number"},
    },
}
_ID: Final = Field("preset_id", Kind.STRING, "The preset's id", required=True, max_length=64)


def _fields(required: bool) -> tuple[Field, ...]:
    return (
        Field("name", Kind.STRING, "What the button says, e.g. PLA", required=required,
              min_length=1, max_length=NAME_MAX),
        Field("hotend", Kind.NUMBER, "Hotend °C (up to [printer] max_hotend_temp)",
              required=required, minimum=0, maximum=500),
        Field("bed", Kind.NUMBER, "Bed °C (up to [printer] max_bed_temp)", required=required,
              minimum=0, maximum=200),
    )  # fmt: skip


def endpoints(appliance: Appliance) -> list[Endpoint]:
    def presets() -> Presets:
        return Presets(appliance.store, appliance.printer.settings)

    async def handle_list(request: web.Request) -> web.Response:
        return ok({"presets": [preset.to_json() for preset in await presets().all()]})

    async def handle_add(request: web.Request) -> web.Response:
        values = await body(request, _fields(required=True))
        made = await presets().add(values["name"], values["hotend"], values["bed"])
        return ok({"preset": made.to_json()}, status=201)

    async def handle_change(request: web.Request) -> web.Response:
        values = await body(request, _fields(required=False))
        changed = await presets().change(
            request.match_info["preset_id"],
            values.get("name"),
            values.get("hotend"),
            values.get("bed"),
        )
        return ok({"preset": changed.to_json()})

    async def handle_remove(request: web.Request) -> web.Response:
        await presets().remove(request.match_info["preset_id"])
        return ok({"deleted": True})

    one = {"type": "object", "required": ["preset"], "properties": {"preset": PRESET}}
    return [
        Endpoint("GET", "/api/presets", handle_list, "The heating presets", "printer",
                 answers=(Answer(200, "The presets", {
                     "type": "object", "required": ["presets"],
                     "properties": {"presets": {"type": "array", "items": PRESET}},
                 }),)),
        Endpoint("POST", "/api/presets", handle_add, "Add a heating preset", "printer",
                 body=_fields(required=True),
                 answers=(Answer(201, "Added", one), Answer(409, "The name is taken, or full"))),
        Endpoint("PATCH", "/api/presets/{preset_id}", handle_change, "Change a heating preset",
                 "printer", path_fields=(_ID,), body=_fields(required=False),
                 answers=(Answer(200, "Changed", one), Answer(404, "No such preset"),
                          Answer(409, "The name is taken"))),
        Endpoint("DELETE", "/api/presets/{preset_id}", handle_remove, "Delete a heating preset",
                 "printer", path_fields=(_ID,),
                 answers=(Answer(200, "Deleted"), Answer(404, "No such preset"))),
    ]  # fmt: skip
