"""Terminal macros through the API, as the terminal page uses them: every role reads them, the
roles that run the printer keep, change, delete and run them, every line is checked as a typed
command is, the built-ins stay as they are, and two changes at once both land."""

from __future__ import annotations

import asyncio
from typing import Any

from lezerprintd.auth.permissions import Role
from lezerprintd.macros import KEY
from lezerprintd.printer.printer import PrinterState
from lezerprintd.store import settings
from tests.conftest import moves, until
from tests.test_api import Served

BUILT_INS = ["Home All Axes", "Preheat PLA", "Preheat ABS", "Cool Down", "Auto Bed Level"]


async def listed(served: Served, role: Role = Role.ADMIN) -> list[dict[str, Any]]:
    status, answer = await served.call("GET", "/api/macros", role)
    assert status == 200, answer
    macros: list[dict[str, Any]] = answer["data"]["macros"]
    return macros


def last(lines: list[str], line: str) -> int:
    return len(lines) - 1 - lines[::-1].index(line)


async def test_every_role_sees_the_built_ins(served: Served) -> None:
    for role in Role:
        macros = await listed(served, role)
        assert [m["name"] for m in macros] == BUILT_INS
        assert all(m["builtin"] for m in macros)
    cool_down = (await listed(served))[3]
    assert cool_down["commands"] == ["M104 S0", "M140 S0", "M107"]


async def test_an_operator_keeps_a_macro_that_everyone_sees_and_runs(served: Served) -> None:
    status, answer = await served.call("POST", "/api/macros", Role.OPERATOR, {
        "name": "  Who and where ",
        "commands": ["M115", "", "  M114 ; where the head is", "; only a note"],
    })  # fmt: skip
    assert status == 201, answer
    made = answer["data"]["macro"]
    assert made["name"] == "Who and where"
    assert made["commands"] == ["M115", "M114"]  # what the printer gets, as the list shows it
    assert made["builtin"] is False
    for role in Role:  # kept on the appliance: every account sees the same
        assert (await listed(served, role))[-1] == made

    status, answer = await served.call("POST", f"/api/macros/{made['id']}/run", Role.ADMIN)
    assert status == 200, answer
    results = answer["data"]["results"]
    assert [r["command"] for r in results] == ["M115", "M114"]
    assert any("FIRMWARE_NAME:Marlin" in line for line in results[0]["response"])
    assert results[1]["response"][0].startswith("X:")
    assert last(served.virtual.accepted, "M115") < last(served.virtual.accepted, "M114")

    status, answer = await served.call(
        "PATCH", f"/api/macros/{made['id']}", Role.OPERATOR, {"name": "Where"}
    )
    assert (status, answer["data"]["macro"]["commands"]) == (200, ["M115", "M114"])
    assert (await served.call("DELETE", f"/api/macros/{made['id']}", Role.OPERATOR))[0] == 200
    assert [m["name"] for m in await listed(served)] == BUILT_INS
    for method, path in (("DELETE", ""), ("PATCH", ""), ("POST", "/run")):
        status, answer = await served.call(
            method,
            f"/api/macros/{made['id']}{path}",
            body={"name": "x"} if method == "PATCH" else None,
        )
        assert (status, answer["error"]["code"]) == (404, "NOT_FOUND"), method


async def test_a_viewer_reads_them_but_neither_changes_nor_runs_them(served: Served) -> None:
    status, answer = await served.call(
        "POST", "/api/macros", body={"name": "Mine", "commands": ["M114"]}
    )
    assert status == 201
    mine = answer["data"]["macro"]["id"]
    for method, path, given in (
        ("POST", "/api/macros", {"name": "Theirs", "commands": ["M114"]}),
        ("PATCH", f"/api/macros/{mine}", {"name": "Theirs"}),
        ("DELETE", f"/api/macros/{mine}", None),
        ("POST", f"/api/macros/{mine}/run", None),
        ("POST", "/api/macros/builtin-home-all-axes/run", None),
    ):
        status, answer = await served.call(method, path, Role.VIEWER, given)
        assert status == 403, (method, path)
        assert answer["error"]["details"]["required"] == "printer:control"
    assert [m["name"] for m in await listed(served, Role.VIEWER)] == [*BUILT_INS, "Mine"]


async def test_the_built_ins_are_neither_changed_nor_deleted_but_run(served: Served) -> None:
    home = (await listed(served))[0]
    assert home["id"] == "builtin-home-all-axes"
    for method, given in (("PATCH", {"commands": ["G28 X"]}), ("DELETE", None)):
        status, answer = await served.call(method, f"/api/macros/{home['id']}", body=given)
        assert (status, answer["error"]["code"]) == (403, "FORBIDDEN"), method
        assert "built-in" in answer["error"]["message"]
    assert await listed(served) == [home, *(await listed(served))[1:]]
    # Their names are taken, compared without case.
    status, answer = await served.call(
        "POST", "/api/macros", Role.OPERATOR, {"name": "cool DOWN", "commands": ["M107"]}
    )
    assert (status, answer["error"]["code"]) == (409, "CONFLICT")
    status, answer = await served.call("POST", "/api/macros/builtin-cool-down/run", Role.OPERATOR)
    assert status == 200, answer
    assert [r["command"] for r in answer["data"]["results"]] == ["M104 S0", "M140 S0", "M107"]


async def test_bad_macros_are_refused_naming_the_field(served: Served) -> None:
    def given(*commands: str, name: str = "Bad") -> dict[str, Any]:
        return {"name": name, "commands": list(commands)}

    cases = [
        (given("G28", "M110 N0"), "line 2 is M110"),
        (given("m112"), "line 1 is M112"),
        (given("M112 ; a stop in a macro"), "line 1 is M112"),
        (given("G1 X" + "1" * 90), "line 1 is over 90 characters"),
        (given("M117 Grüße"), "printable ASCII"),
        (given("G28\tX"), "printable ASCII"),
        (given(), "commands"),  # no lines at all
        (given("", "  ; only a note"), "at least one G-code line"),
        (given(*["M114"] * 51), "at most 50"),
        (given("M114", name="   "), "name"),
        (given("M114", name="x" * 41), "name"),
        ({"name": "No lines"}, "commands"),
        ({"name": "Text", "commands": "M114"}, "commands"),
        ({"name": "Extra", "commands": ["M114"], "builtin": True}, "builtin"),
    ]
    for body, named in cases:
        status, answer = await served.call("POST", "/api/macros", Role.OPERATOR, body)
        assert (status, answer["error"]["code"]) == (400, "VALIDATION_ERROR"), (body, answer)
        assert named in str(answer["error"]), (body, answer)
        assert answer["error"]["details"][0]["field"] in ("name", "commands", "builtin")
    assert [m["name"] for m in await listed(served)] == BUILT_INS  # nothing was half made
    assert not served.virtual.halted
    assert served.appliance.printer.state is PrinterState.OPERATIONAL
    # A change is checked the same way.
    made = (await served.call("POST", "/api/macros", body=given("M114", name="Good")))[1]
    status, answer = await served.call(
        "PATCH", f"/api/macros/{made['data']['macro']['id']}", body={"commands": ["M112"]}
    )
    assert status == 400
    assert (await listed(served))[-1]["commands"] == ["M114"]


async def test_a_macro_runs_during_a_print_between_its_lines(served: Served) -> None:
    # As POST /api/printer/command does: OctoPrint's terminal and Klipper's macros too.
    made = (await served.call(
        "POST", "/api/macros", body={"name": "Where", "commands": ["M114", "M115"]}
    ))[1]["data"]["macro"]  # fmt: skip
    file_id = served.library_file(moves(100_000))
    await served.register_files()
    status, answer = await served.call(
        "POST", "/api/jobs/start", Role.OPERATOR, {"fileId": file_id}
    )
    assert status == 201, answer
    await until(lambda: served.appliance.printer.state is PrinterState.PRINTING, 10, "printing")
    await until(lambda: len(served.virtual.accepted) > 200, 20, "the print to get going")
    status, answer = await served.call("POST", f"/api/macros/{made['id']}/run", Role.OPERATOR)
    assert status == 200, answer
    assert answer["data"]["results"][0]["response"][0].startswith("X:")
    assert served.appliance.printer.state is PrinterState.PRINTING
    accepted = served.virtual.accepted
    at = last(accepted, "M114")
    assert "M115" in accepted[at:]  # after it: each line waits for the one before
    assert any(line.startswith("G1 ") for line in accepted[:at])
    await until(lambda: any(line.startswith("G1 ") for line in accepted[at:]), 20, "the print")
    status, _ = await served.call("POST", "/api/printer/cancel", Role.OPERATOR)
    assert status == 200


async def test_a_printer_that_cannot_take_a_line_is_named(served: Served) -> None:
    status, _ = await served.call("POST", "/api/printer/disconnect", Role.OPERATOR)
    assert status == 200
    status, answer = await served.call("POST", "/api/macros/builtin-preheat-pla/run")
    assert (status, answer["error"]["code"]) == (409, "CONFLICT")
    assert answer["error"]["message"].startswith("line 1 (M104 S205): the printer is")


async def test_changes_at_once_are_all_kept(served: Served) -> None:
    answers = await asyncio.gather(*(
        served.call("POST", "/api/macros", Role.OPERATOR, {"name": f"M{i}", "commands": ["M114"]})
        for i in range(10)
    ))  # fmt: skip
    assert [status for status, _ in answers] == [201] * 10
    for i in range(40):  # 50 of one's own at most; the built-ins do not count
        await served.call("POST", "/api/macros", body={"name": f"N{i}", "commands": ["M114"]})
    assert len(await listed(served)) == 55
    status, answer = await served.call(
        "POST", "/api/macros", body={"name": "One more", "commands": ["M114"]}
    )
    assert status == 409
    assert "50 macros" in answer["error"]["message"]
    stored = await settings.get(served.appliance.store, KEY)
    assert len(stored) == 50  # only the accounts' own are stored
