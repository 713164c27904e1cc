"""Terminal macros: everyone who watches the printer reads them; those who run it keep and run
them (an operator's macros are part of running the printer, as typed commands are)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from aiohttp import web

from lezerprintd.api.envelope import ok
from lezerprintd.api.spec import Answer, Endpoint, Field, Kind, body
from lezerprintd.macros import GIVEN_MAX, NAME_MAX, Macros

if TYPE_CHECKING:
    from lezerprintd.app import Appliance

MACRO: Final = {
    "type": "object",
    "required": ["id", "name", "commands", "builtin"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "commands": {"type": "array", "items": {"type": "string"}},
        "builtin": {"type": "boolean"},
    },
}
RAN: Final = {
    "type": "object",
    "required": ["macro", "results"],
    "properties": {
        "macro": MACRO,
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["command", "response"],
                "properties": {
                    "command": {"type": "string"},
                    "response": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
_ID: Final = Field("macro_id", Kind.STRING, "The macro's id", required=True, max_length=64)


def _fields(required: bool) -> tuple[Field, ...]:
    return (
        Field("name", Kind.STRING, "What the button says, e.g. Purge line", required=required,
              min_length=1, max_length=NAME_MAX),
        Field("commands", Kind.STRINGS,
              "G-code lines in order, each checked as POST /api/printer/command checks one; "
              "comments after ';' are stripped, blank lines dropped; 1-50 lines remain",
              required=required, min_length=1, max_length=GIVEN_MAX),
    )  # fmt: skip


def endpoints(appliance: Appliance) -> list[Endpoint]:
    def macros() -> Macros:
        return Macros(appliance.store, appliance.printer)

    async def handle_list(request: web.Request) -> web.Response:
        return ok({"macros": [macro.to_json() for macro in await macros().all()]})

    async def handle_add(request: web.Request) -> web.Response:
        values = await body(request, _fields(required=True))
        made = await macros().add(values["name"], values["commands"])
        return ok({"macro": made.to_json()}, status=201)

    async def handle_change(request: web.Request) -> web.Response:
        values = await body(request, _fields(required=False))
        changed = await macros().change(
            request.match_info["macro_id"], values.get("name"), values.get("commands")
        )
        return ok({"macro": changed.to_json()})

    async def handle_remove(request: web.Request) -> web.Response:
        await macros().remove(request.match_info["macro_id"])
        return ok({"deleted": True})

    async def handle_run(request: web.Request) -> web.Response:
        room = macros()
        macro = await room.get(request.match_info["macro_id"])
        results = await room.run(macro)
        return ok({"macro": macro.to_json(), "results": [r.to_json() for r in results]})

    one = {"type": "object", "required": ["macro"], "properties": {"macro": MACRO}}
    builtin = Answer(403, "A built-in macro: nobody changes or deletes it")
    return [
        Endpoint("GET", "/api/macros", handle_list, "The terminal's macros", "printer",
                 answers=(Answer(200, "Built-in macros first, then the accounts' own", {
                     "type": "object", "required": ["macros"],
                     "properties": {"macros": {"type": "array", "items": MACRO}},
                 }),)),
        Endpoint("POST", "/api/macros", handle_add, "Keep a macro", "printer",
                 body=_fields(required=True),
                 answers=(Answer(201, "Kept", one), Answer(409, "The name is taken, or full"))),
        Endpoint("PATCH", "/api/macros/{macro_id}", handle_change, "Change a macro", "printer",
                 path_fields=(_ID,), body=_fields(required=False),
                 answers=(Answer(200, "Changed", one), builtin, Answer(404, "No such macro"),
                          Answer(409, "The name is taken"))),
        Endpoint("DELETE", "/api/macros/{macro_id}", handle_remove, "Delete a macro", "printer",
                 path_fields=(_ID,),
                 answers=(Answer(200, "Deleted"), builtin, Answer(404, "No such macro"))),
        Endpoint("POST", "/api/macros/{macro_id}/run", handle_run,
                 "Send a macro's lines, one after another, each once the last was answered",
                 "printer", path_fields=(_ID,),
                 answers=(Answer(200, "Every line answered", RAN), Answer(404, "No such macro"),
                          Answer(409, "The printer is not connected, or could not take a line"))),
    ]  # fmt: skip
