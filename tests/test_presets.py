"""Heating presets through the API, as the dashboard and the settings page use them: every role
reads them, only an administrator changes them, temperatures stay within the printer's
maxima, and two changes at once both land."""

from __future__ import annotations

import asyncio

from lezerprintd.auth.permissions import Role
from tests.test_api import Served


async def test_a_fresh_appliance_has_the_common_filaments(served: Served) -> None:
    for role in Role:
        status, answer = await served.call("GET", "/api/presets", role)
        assert status == 200
        names = [(p["name"], p["hotend"], p["bed"]) for p in answer["data"]["presets"]]
        assert names == [("PLA", 205, 60), ("PETG", 235, 80), ("ABS", 245, 100), ("TPU", 225, 50)]


async def test_an_administrator_adds_changes_and_deletes_them(served: Served) -> None:
    status, answer = await served.call(
        "POST", "/api/presets", body={"name": "ASA", "hotend": 250, "bed": 100}
    )
    assert status == 201
    made = answer["data"]["preset"]
    status, answer = await served.call("PATCH", f"/api/presets/{made['id']}", body={"bed": 105})
    assert (status, answer["data"]["preset"]["bed"], answer["data"]["preset"]["name"]) == (
        200, 105, "ASA",
    )  # fmt: skip
    pla = (await served.call("GET", "/api/presets"))[1]["data"]["presets"][0]
    assert (await served.call("DELETE", f"/api/presets/{pla['id']}"))[0] == 200
    names = [p["name"] for p in (await served.call("GET", "/api/presets"))[1]["data"]["presets"]]
    assert names == ["PETG", "ABS", "TPU", "ASA"]
    assert (await served.call("DELETE", f"/api/presets/{pla['id']}"))[0] == 404


async def test_others_may_only_read_them(served: Served) -> None:
    for role in (Role.OPERATOR, Role.VIEWER):
        status, answer = await served.call(
            "POST", "/api/presets", role, {"name": "Mine", "hotend": 200, "bed": 60}
        )
        assert status == 403
        assert answer["error"]["details"]["required"] == "system:configure"


async def test_bad_presets_are_refused_naming_the_field(served: Served) -> None:
    limits = served.appliance.config.printer
    cases = [
        ({"name": "Hot", "hotend": limits.max_hotend_temp + 1, "bed": 60}, 400, "hotend"),
        ({"name": "Hot", "hotend": 200, "bed": limits.max_bed_temp + 1}, 400, "bed"),
        ({"name": "   ", "hotend": 200, "bed": 60}, 400, "name"),
        ({"name": "pla", "hotend": 200, "bed": 60}, 409, "exists"),
        ({"name": "x" * 21, "hotend": 200, "bed": 60}, 400, "name"),
        ({"name": "NoBed", "hotend": 200}, 400, "bed"),
    ]
    for given, status, named in cases:
        got, answer = await served.call("POST", "/api/presets", body=given)
        assert got == status, (given, answer)
        assert named in str(answer["error"]), (given, answer)
    names = [p["name"] for p in (await served.call("GET", "/api/presets"))[1]["data"]["presets"]]
    assert names == ["PLA", "PETG", "ABS", "TPU"]  # nothing was half made


async def test_changes_at_once_are_all_kept(served: Served) -> None:
    answers = await asyncio.gather(*(
        served.call("POST", "/api/presets", body={"name": f"P{i}", "hotend": 200, "bed": 60})
        for i in range(8)
    ))  # fmt: skip
    assert [status for status, _ in answers] == [201] * 8
    presets = (await served.call("GET", "/api/presets"))[1]["data"]["presets"]
    assert len(presets) == 12
    for i in range(8):  # 20 at most
        await served.call("POST", "/api/presets", body={"name": f"Q{i}", "hotend": 1, "bed": 1})
    status, answer = await served.call(
        "POST", "/api/presets", body={"name": "One more", "hotend": 1, "bed": 1}
    )
    assert status == 409
    assert "20 presets" in answer["error"]["message"]
