"""The printer profile and the GPIO pins changed from Settings while the appliance runs: each
change is checked by the configuration file's rules, kept across a restart, and taken by the
rooms that use it (limits at once, G-code at the next pause, the port at the next connection,
pins reopened) — and a value fixed at launch stays fixed."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lezerprintd.app import Appliance, build_app
from lezerprintd.auth.middleware import ACCESS_COOKIE
from lezerprintd.auth.permissions import Role
from lezerprintd.config import Config, GpioConfig, load_config
from lezerprintd.printer.printer import PrinterState
from lezerprintd.printer.virtual import VirtualPrinter
from tests.conftest import make_config, until
from tests.test_api import NAMES, PASSWORD, Served, serve
from tests.test_gpio import ESTOP, LED, RELAY, Pins, printing


def settings(answer: dict[str, Any]) -> dict[str, Any]:
    return {name: s["value"] for name, s in answer["data"]["settings"].items()}


async def test_a_lower_hotend_limit_refuses_the_next_request(served: Served) -> None:
    heat = {"hotend": 260}
    assert (await served.call("POST", "/api/printer/temperature", Role.OPERATOR, heat))[0] == 200
    status, answer = await served.call("PATCH", "/api/printer/profile", body={"maxHotendTemp": 250})
    assert status == 200
    assert answer["data"]["settings"]["maxHotendTemp"] == {
        "value": 250, "from": "settings", "editable": True,
    }  # fmt: skip
    status, answer = await served.call("POST", "/api/printer/temperature", Role.OPERATOR, heat)
    assert status == 400
    assert answer["error"]["details"][0]["field"] == "hotend"
    assert "at most 250" in answer["error"]["details"][0]["message"]
    # Presets are held to the same limit, and the settings page's inputs say it.
    preset = {"name": "Hot", "hotend": 255, "bed": 60}
    assert (await served.call("POST", "/api/presets", body=preset))[0] == 400
    page = await served.client.get("/settings", cookies={ACCESS_COOKIE: served.tokens[Role.ADMIN]})
    assert 'id="preset-hotend" type="number" required min="0" max="250.0"' in await page.text()


async def test_a_smaller_bed_refuses_a_jog_past_its_edge(served: Served) -> None:
    assert (await served.call("POST", "/api/printer/home", Role.OPERATOR, {}))[0] == 200
    jog = {"axis": "X", "distance": 150}
    assert (await served.call("POST", "/api/printer/move", Role.OPERATOR, jog))[0] == 200
    await served.call("PATCH", "/api/printer/profile", body={"volumeX": 120})
    status, answer = await served.call("POST", "/api/printer/move", Role.OPERATOR, jog)
    assert status == 400
    assert answer["error"]["details"][0]["message"] == "X must stay within 0..120 mm"


async def test_the_new_pause_gcode_is_sent_at_the_next_pause(served: Served) -> None:
    script = "M117 Parked by the profile\nG91\nG1 Z5 F600\nG90"
    status, _ = await served.call("PATCH", "/api/printer/profile", body={"pauseGcode": script})
    assert status == 200
    await printing(served)
    assert (await served.call("POST", "/api/printer/pause", Role.OPERATOR))[0] == 200
    await until(
        lambda: "M117 Parked by the profile" in served.virtual.accepted, 10, "the new pause G-code"
    )
    assert (await served.call("POST", "/api/printer/cancel", Role.OPERATOR))[0] == 200


async def test_bad_values_are_refused_naming_the_key_and_nothing_is_kept(served: Served) -> None:
    _, before = await served.call("GET", "/api/printer/profile")
    refused = {
        "volumeX": (0, "[printer] volume_x: must be between 1 and 2000, got 0"),
        "maxBedTemp": (250, "[printer] max_bed_temp: must be between 0 and 200, got 250"),
        "port": ("sim", "[printer] port: the built-in virtual printer is chosen at launch"),
        "name": ("x" * 41, "invalid request: name"),  # the API's own field check
        "cancelGcode": ("M104 S0\nM84 \x07", "[jobs] cancel_gcode: line 2 is not a printable"),
    }
    for field, (value, message) in refused.items():
        # A good value beside the bad one is not kept either: a change lands whole or not at all.
        status, answer = await served.call(
            "PATCH", "/api/printer/profile", body={"name": "Kept?", field: value}
        )
        assert status == 400, field
        assert answer["error"]["message"].startswith(message), answer
        assert answer["error"]["details"][0]["field"] == field
    status, answer = await served.call("PATCH", "/api/printer/profile", body={"colour": "red"})
    assert (status, answer["error"]["details"][0]["field"]) == (400, "colour")
    assert (await served.call("GET", "/api/printer/profile"))[1] == before


async def test_a_body_of_blanks_is_refused_not_taken_for_no_change(served: Served) -> None:
    # Found by the schema fuzzer: "\n\n" is no JSON, though an empty body means no fields.
    headers = {**served.auth(Role.ADMIN), "Content-Type": "application/json"}
    reply = await served.client.patch("/api/printer/profile", data=b"\n\n", headers=headers)
    assert reply.status == 400
    assert (await reply.json())["error"]["message"] == "the body is not valid JSON"
    reply = await served.client.patch("/api/printer/profile", data=b"", headers=headers)
    assert reply.status == 200


async def test_changes_survive_a_restart_and_can_be_forgotten(
    aiohttp_client: Callable[..., Any], tmp_path: Path, start_virtual: Callable[..., VirtualPrinter]
) -> None:
    virtual = start_virtual(speedup=1000)
    served = await serve(aiohttp_client, tmp_path, virtual)
    change = {"name": "Workshop MK3", "volumeX": 250, "volumeY": 210, "baud": "250000"}
    assert (await served.call("PATCH", "/api/printer/profile", body=change))[0] == 200
    await served.client.close()  # the appliance stops

    config = make_config(tmp_path, virtual.path)
    appliance = Appliance(config, board_reset=virtual.reset)
    client = await aiohttp_client(build_app(config, appliance))
    await until(lambda: appliance.printer.state is PrinterState.OPERATIONAL, 10, "the printer")
    headers = {"Authorization": f"Bearer {await _token(client)}"}
    answer = await (await client.get("/api/printer/profile", headers=headers)).json()
    shown = answer["data"]["settings"]
    assert (shown["name"]["value"], shown["name"]["from"]) == ("Workshop MK3", "settings")
    assert (shown["volumeX"]["value"], shown["baud"]["value"]) == (250, 250000)
    assert appliance.printer.settings.volume_y == 210
    cookies = {ACCESS_COOKIE: headers["Authorization"].removeprefix("Bearer ")}
    page = await (await client.get("/", cookies=cookies)).text()
    assert '<a class="brand" href="/">Workshop MK3</a>' in page
    answer = await (await client.delete("/api/printer/profile", headers=headers)).json()
    shown = answer["data"]["settings"]
    assert (shown["name"]["value"], shown["name"]["from"]) == ("", "default")
    assert (shown["volumeX"]["value"], shown["baud"]["value"]) == (220, 115200)
    assert appliance.printer.settings.volume_x == 220


async def _token(client: Any) -> str:
    admin = {"username": NAMES[Role.ADMIN], "password": PASSWORD}
    reply = await client.post("/api/auth/login", json=admin)
    assert reply.status == 200, await reply.text()
    token: str = (await reply.json())["data"]["tokens"]["accessToken"]
    return token


async def restart(
    aiohttp_client: Callable[..., Any], config: Config, virtual: VirtualPrinter
) -> tuple[Any, Appliance, dict[str, str]]:
    """The appliance started again over the same data dir: its client, itself, and the
    administrator's bearer header."""
    appliance = Appliance(config, board_reset=virtual.reset)
    client = await aiohttp_client(build_app(config, appliance))
    await until(lambda: appliance.printer.state is PrinterState.OPERATIONAL, 10, "the printer")
    return client, appliance, {"Authorization": f"Bearer {await _token(client)}"}


async def test_a_value_set_at_launch_wins_over_a_kept_change(
    aiohttp_client: Callable[..., Any], tmp_path: Path, start_virtual: Callable[..., VirtualPrinter]
) -> None:
    virtual = start_virtual(speedup=1000)
    served = await serve(aiohttp_client, tmp_path, virtual)
    assert (await served.call("PATCH", "/api/printer/profile", body={"maxBedTemp": 110}))[0] == 200
    await served.client.close()
    # The next start sets the bed's maximum by a variable: it wins over the 110 kept...
    config = make_config(tmp_path, virtual.path)
    launched = load_config(path=None, env={"LEZERPRINT_PRINTER_MAX_BED_TEMP": "90"})
    config = dataclasses.replace(
        config,
        printer=dataclasses.replace(config.printer, max_bed_temp=90),
        origins={**config.origins, **launched.origins},
    )
    client, appliance, headers = await restart(aiohttp_client, config, virtual)
    fixed = {"value": 90, "from": "environment LEZERPRINT_PRINTER_MAX_BED_TEMP", "editable": False}
    answer = await (await client.get("/api/printer/profile", headers=headers)).json()
    assert answer["data"]["settings"]["maxBedTemp"] == fixed
    # ...also once another value is saved, and it cannot be changed here.
    reply = await client.patch("/api/printer/profile", json={"name": "Bench"}, headers=headers)
    assert (await reply.json())["data"]["settings"]["maxBedTemp"] == fixed
    assert appliance.printer.settings.max_bed_temp == 90
    reply = await client.patch("/api/printer/profile", json={"maxBedTemp": 80}, headers=headers)
    assert reply.status == 409
    assert "LEZERPRINT_PRINTER_MAX_BED_TEMP" in (await reply.json())["error"]["message"]
    heat = await client.post("/api/printer/temperature", json={"bed": 100}, headers=headers)
    assert heat.status == 400


async def test_only_an_administrator_changes_them(served: Served) -> None:
    for role in Role:
        assert (await served.call("GET", "/api/printer/profile", role))[0] == 200
    for role in (Role.OPERATOR, Role.VIEWER):
        status, answer = await served.call("PATCH", "/api/printer/profile", role, {"name": "x"})
        assert (status, answer["error"]["details"]["required"]) == (403, "printer:configure")
        assert (await served.call("DELETE", "/api/printer/profile", role))[0] == 403
        assert (await served.call("GET", "/api/gpio", role))[0] == 403
        assert (await served.call("PATCH", "/api/gpio", role, {"ledPin": 5}))[0] == 403


async def test_a_new_port_is_used_at_the_next_connection(
    served: Served, start_virtual: Callable[..., VirtualPrinter]
) -> None:
    other = start_virtual(speedup=1000)
    status, answer = await served.call("PATCH", "/api/printer/profile", body={"port": other.path})
    assert status == 200
    assert answer["data"]["settings"]["port"]["value"] == other.path
    # The link in use is not cut (a print may be running)...
    _, status_answer = await served.call("GET", "/api/printer/status")
    assert status_answer["data"]["port"] == served.virtual.path
    # ...the next connection takes the new port.
    assert (await served.call("POST", "/api/printer/connect", Role.OPERATOR, {}))[0] == 200
    _, status_answer = await served.call("GET", "/api/printer/status")
    assert (status_answer["data"]["port"], status_answer["data"]["state"]) == (
        other.path, "operational",
    )  # fmt: skip


# -- the GPIO pins ------------------------------------------------------------------------------

MOVED = 5  # where the stop button is wired after the change


@pytest.fixture
async def wired(
    aiohttp_client: Callable[..., Any], tmp_path: Path, start_virtual: Callable[..., VirtualPrinter]
) -> Served:
    gpio = GpioConfig(factory="mock", estop_pin=ESTOP, debounce_ms=20)
    return await serve(aiohttp_client, tmp_path, start_virtual(speedup=200), gpio=gpio)


async def test_moved_pins_are_reopened_at_once(wired: Served) -> None:
    status, answer = await wired.call(
        "PATCH", "/api/gpio", body={"estopPin": MOVED, "ledPin": 6, "estopNormallyClosed": False}
    )
    assert status == 200, answer
    assert settings(answer)["estopPin"] == MOVED
    assert answer["data"]["state"]["inUse"] is True
    pins = Pins(wired)  # the reopened pins' factory
    assert wired.appliance.gpio.wired == {"estop_pin": MOVED, "led_pin": 6}
    job_id = await printing(wired, lines=20_000)
    await pins.low(MOVED)  # normally open now: pressing closes it to ground
    await until(lambda: wired.virtual.halted, 5, "the moved stop button to halt the printer")
    await until(lambda: wired.appliance.jobs.current is None, 20, "the job to end")
    _, answer = await wired.call("GET", f"/api/jobs/{job_id}")
    assert answer["data"]["job"]["status"] == "FAILED"


async def test_two_functions_on_one_pin_are_refused(wired: Served) -> None:
    status, answer = await wired.call("PATCH", "/api/gpio", body={"runoutPin": ESTOP})
    assert status == 400
    assert (
        answer["error"]["message"] == f"[gpio] runout_pin: GPIO {ESTOP} is already [gpio] estop_pin"
    )
    assert answer["error"]["details"][0]["field"] == "runoutPin"
    assert wired.appliance.gpio.wired == {"estop_pin": ESTOP}
    status, answer = await wired.call("PATCH", "/api/gpio", body={"ledPin": 28})
    assert (status, answer["error"]["details"][0]["field"]) == (400, "ledPin")


async def test_pins_in_use_elsewhere_are_kept_unused_until_corrected(wired: Served) -> None:
    import gpiozero

    # Another program holds GPIO 9.
    holder = await asyncio.to_thread(gpiozero.LED, 9, pin_factory=wired.appliance.gpio.factory)
    status, answer = await wired.call("PATCH", "/api/gpio", body={"ledPin": 9})
    assert status == 409
    assert answer["error"]["message"].startswith(
        "kept, but the pins cannot be used: [gpio] led_pin"
    )
    _, answer = await wired.call("GET", "/api/gpio")
    assert settings(answer)["ledPin"] == 9
    assert answer["data"]["state"]["inUse"] is False
    assert answer["data"]["state"]["error"].startswith("[gpio] led_pin")
    await asyncio.to_thread(holder.close)
    # Saved again once the pin is free, the same values are used.
    status, answer = await wired.call("PATCH", "/api/gpio", body={"ledPin": 9})
    assert status == 200
    assert (answer["data"]["state"]["inUse"], answer["data"]["state"]["error"]) == (True, None)


async def test_a_file_that_now_clashes_with_settings_pins_does_not_stop_the_start(
    aiohttp_client: Callable[..., Any], tmp_path: Path, start_virtual: Callable[..., VirtualPrinter]
) -> None:
    virtual = start_virtual(speedup=200)
    gpio = GpioConfig(factory="mock", estop_pin=ESTOP)
    served = await serve(aiohttp_client, tmp_path, virtual, gpio=gpio)
    assert (await served.call("PATCH", "/api/gpio", body={"ledPin": 9}))[0] == 200
    await served.client.close()
    # The file now wires the pause button to GPIO 9 too: the appliance starts, no pin used.
    config = make_config(tmp_path, virtual.path)
    config = dataclasses.replace(config, gpio=dataclasses.replace(gpio, pause_pin=9))
    client, appliance, headers = await restart(aiohttp_client, config, virtual)
    answer = await (await client.get("/api/gpio", headers=headers)).json()
    state = answer["data"]["state"]
    assert state["error"] == "[gpio] led_pin: GPIO 9 is already [gpio] pause_pin"
    assert state["inUse"] is False
    # Corrected in Settings, the pins are used again.
    reply = await client.patch("/api/gpio", json={"ledPin": 10}, headers=headers)
    assert reply.status == 200
    assert (await reply.json())["data"]["state"]["inUse"] is True
    assert appliance.gpio.wired == {"estop_pin": ESTOP, "pause_pin": 9, "led_pin": 10}


async def test_pins_are_not_changed_during_a_print(wired: Served) -> None:
    await printing(wired, lines=20_000)
    status, answer = await wired.call("PATCH", "/api/gpio", body={"debounceMs": 30})
    assert (status, answer["error"]["message"]) == (409, "the pins are changed only between prints")
    assert wired.appliance.gpio.config.debounce_ms == 20
    assert (await wired.call("POST", "/api/printer/cancel", Role.OPERATOR))[0] == 200


async def test_the_power_relay_stays_on_while_other_pins_change(
    aiohttp_client: Callable[..., Any], tmp_path: Path, start_virtual: Callable[..., VirtualPrinter]
) -> None:
    gpio = GpioConfig(factory="mock", relay_pin=RELAY, led_pin=LED)
    served = await serve(aiohttp_client, tmp_path, start_virtual(speedup=200), gpio=gpio)
    relay = served.appliance.gpio.factory.pin(RELAY)
    assert relay.state is True
    relay.clear_states()
    body = {"ledPin": 6, "debounceMs": 30}
    assert (await served.call("PATCH", "/api/gpio", body=body))[0] == 200
    assert served.appliance.gpio.wired == {"led_pin": 6, "relay_pin": RELAY}
    assert [change.state for change in relay.states] == [True]  # never off, not for a moment
    # Moved to another pin, the relay is switched on there at once.
    assert (await served.call("PATCH", "/api/gpio", body={"relayPin": 25}))[0] == 200
    assert served.appliance.gpio.factory.pin(25).state is True


async def test_forgetting_the_pins_restores_the_files(wired: Served) -> None:
    await wired.call("PATCH", "/api/gpio", body={"estopPin": -1})
    assert wired.appliance.gpio.wired == {}
    status, answer = await wired.call("DELETE", "/api/gpio")
    assert (status, settings(answer)["estopPin"]) == (200, ESTOP)
    assert wired.appliance.gpio.wired == {"estop_pin": ESTOP}
