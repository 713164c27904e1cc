"""The whole API through the real app: a real server on loopback, the real auth room with real
bcrypt, the virtual printer over its pty, real SQLite in tmp_path, real websocket clients."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from lezerprintd.app import Appliance, build_app
from lezerprintd.auth.permissions import ACCESS, Open, Permission, Role, allows
from lezerprintd.auth.service import COMMAND_LINE, Client
from lezerprintd.config import CameraConfig, GpioConfig
from lezerprintd.pages import PAGES
from lezerprintd.printer.printer import PrinterState
from lezerprintd.printer.virtual import VirtualPrinter
from tests.conftest import gcode_file, make_config, moves, until

PASSWORD = "correct horse battery staple"
NAMES = {Role.ADMIN: "ada", Role.OPERATOR: "otto", Role.VIEWER: "vera"}


@dataclass
class Served:
    client: TestClient  # type: ignore[type-arg]
    appliance: Appliance
    virtual: VirtualPrinter
    tokens: dict[Role, str]
    files: list[tuple[str, str, str, int]]  # (id, name, stored name, size) for the library

    def auth(self, role: Role | None) -> dict[str, str]:
        return {} if role is None else {"Authorization": f"Bearer {self.tokens[role]}"}

    async def call(
        self, method: str, path: str, role: Role | None = Role.ADMIN, body: object = None
    ) -> tuple[int, dict[str, Any]]:
        response = await self.client.request(method, path, json=body, headers=self.auth(role))
        return response.status, await response.json()

    async def sign_in(self, role: Role) -> str:
        reply = await self.client.post(
            "/api/auth/login", json={"username": NAMES[role], "password": PASSWORD}
        )
        assert reply.status == 200
        token: str = (await reply.json())["data"]["tokens"]["accessToken"]
        return token

    def library_file(self, commands: list[str], name: str = "part.gcode") -> str:
        """A G-code file in the library, as an upload puts it there (uploads: issue 4)."""
        data_dir = self.appliance.config.server.data_dir
        stored = f"{uuid.uuid4().hex}.gcode"
        (data_dir / "files").mkdir(exist_ok=True)
        path = gcode_file(data_dir / "files" / stored, commands)
        self.files.append((str(uuid.uuid4()), name, stored, path.stat().st_size))
        return self.files[-1][0]

    async def register_files(self) -> None:
        now = time.time()
        for file_id, name, stored, size in self.files:
            await self.appliance.store.execute(
                "INSERT OR IGNORE INTO files (id, original_name, file_name, file_type, file_size,"
                " created_at, updated_at) VALUES (?, ?, ?, 'GCODE', ?, ?, ?)",
                (file_id, name, stored, size, now, now),
            )


async def serve(
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
    virtual: VirtualPrinter,
    gpio: GpioConfig | None = None,
    camera: CameraConfig | None = None,
    **server: Any,
) -> Served:
    """The app on a loopback port with one account per role signed in; `server` overrides
    [server] settings, `gpio` the [gpio] section."""
    config = make_config(tmp_path, virtual.path)
    config = dataclasses.replace(config, server=dataclasses.replace(config.server, **server))
    if gpio is not None:
        config = dataclasses.replace(config, gpio=gpio)
    if camera is not None:
        config = dataclasses.replace(config, camera=camera)
    appliance = Appliance(config, board_reset=virtual.reset)
    client = await aiohttp_client(build_app(config, appliance))
    await until(lambda: appliance.printer.state is PrinterState.OPERATIONAL, 10, "the printer")
    for role, name in NAMES.items():
        await appliance.auth.create_user(
            name, PASSWORD, role, None, actor=None, client=COMMAND_LINE
        )
    here = Client("127.0.0.1", "pytest")
    tokens = {
        role: (await appliance.auth.login(name, PASSWORD, here)).tokens.access_token
        for role, name in NAMES.items()
    }
    return Served(client, appliance, virtual, tokens, files=[])


# -- the whole flow, as a person or a script runs it ------------------------------------------


async def test_sign_in_print_watch_pause_resume_and_finish(served: Served) -> None:
    token = await served.sign_in(Role.OPERATOR)
    file_id = served.library_file(["G28", "G1 Z0.3 F600", *moves(1500)], "benchy.gcode")
    await served.register_files()
    headers = {"Authorization": f"Bearer {token}"}
    async with served.client.ws_connect("/ws", headers=headers) as ws:
        seen: list[dict[str, Any]] = []

        async def next_event(event: str, match: Callable[[Any], bool] = lambda _: True) -> Any:
            while True:
                for message in seen:
                    if message["event"] == event and match(message["data"]):
                        seen.remove(message)
                        return message["data"]
                message = await asyncio.wait_for(ws.receive_json(), 30)
                seen.append(message)

        assert (await next_event("connected"))["user"]["role"] == "OPERATOR"
        reply = await served.client.post(
            "/api/jobs/start", json={"fileId": file_id}, headers=headers
        )
        assert reply.status == 201
        job = (await reply.json())["data"]["job"]
        assert job["fileName"] == "benchy.gcode"
        await next_event("job:status", lambda d: d["status"] == "PRINTING")
        await until(lambda: len(served.virtual.accepted) > 300, 20, "the print to get going")

        paused = await served.client.post(f"/api/jobs/{job['id']}/pause", headers=headers)
        assert paused.status == 200
        await next_event("job:status", lambda d: d["status"] == "PAUSED")
        status = await next_event("printer:status", lambda d: d["state"] == "paused")
        assert status["currentJob"]["id"] == job["id"]
        resumed = await served.client.post(f"/api/jobs/{job['id']}/resume", headers=headers)
        assert resumed.status == 200
        await next_event("job:status", lambda d: d["status"] == "PRINTING")
        done = await next_event("job:completed")
        assert done["status"] == "COMPLETED"
        assert done["jobId"] == job["id"]

    status, answer = await served.call("GET", f"/api/jobs/{job['id']}", Role.VIEWER)
    assert status == 200
    kinds = [event["eventType"] for event in answer["data"]["events"]]
    assert kinds == [
        "JOB_QUEUED",
        "JOB_PREPARING",
        "JOB_STARTED",
        "JOB_PAUSED",
        "JOB_RESUMED",
        "JOB_COMPLETED",
    ]
    status, page = await served.call("GET", "/api/jobs?status=COMPLETED&limit=5", Role.VIEWER)
    assert status == 200
    assert [j["id"] for j in page["data"]["jobs"]] == [job["id"]]
    assert page["meta"] == {
        "page": 1,
        "limit": 5,
        "total": 1,
        "pages": 1,
        "hasNext": False,
        "hasPrev": False,
    }


async def test_a_command_and_the_printer_status(served: Served) -> None:
    status, answer = await served.call(
        "POST", "/api/printer/command", Role.OPERATOR, {"command": "M114"}
    )
    assert status == 200
    assert answer["data"]["response"][0].startswith("X:")
    status, answer = await served.call("GET", "/api/printer/status", Role.VIEWER)
    assert status == 200
    printer = answer["data"]
    assert printer["state"] == "operational"
    assert printer["firmware"] == "Marlin 2.1.2 (LezerPrint virtual)"
    assert printer["position"] == {"x": 0.0, "y": 0.0, "z": 0.0, "e": 0.0}


async def test_an_emergency_stop_through_the_api_halts_the_printer(served: Served) -> None:
    status, answer = await served.call("POST", "/api/printer/emergency-stop", Role.OPERATOR)
    assert status == 200
    assert answer["data"]["state"] == "error"
    await until(lambda: served.virtual.halted, 2, "the firmware to halt")
    status, answer = await served.call(
        "POST", "/api/printer/command", Role.OPERATOR, {"command": "G28"}
    )
    assert status == 409
    assert answer["error"]["code"] == "CONFLICT"
    status, answer = await served.call("POST", "/api/printer/connect", Role.OPERATOR, {})
    assert status == 200
    assert answer["data"]["state"] == "operational"


# -- every role against every route --------------------------------------------------------


def served_routes(served: Served) -> list[tuple[str, str]]:
    routes = []
    for route in served.client.app.router.routes():
        resource = route.resource
        if route.method == "HEAD" or resource is None:
            continue
        if not resource.canonical.startswith(("/api/", "/ws")):
            continue  # the web UI's pages: tests/test_web_ui.py
        routes.append((route.method, resource.canonical))
    return routes


def test_every_access_rule_belongs_to_a_route_or_a_websocket_message(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, "/dev/null")
    app = build_app(config)
    everything = {
        f"{route.method} {route.resource.canonical}"
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    routes = {key for key in everything if key.startswith(("GET /api/", "GET /ws")) or
              not key.startswith("GET ")}  # fmt: skip
    http_rules = {key for key in ACCESS if not key.startswith("WS ")}
    assert routes - http_rules == set(), "a route without an access rule"
    assert http_rules - routes == set(), "an access rule without a route"
    # The rest are the web UI's pages (each page checks its own permission, see pages.PAGES)
    # and its static files: reading only.
    pages = {f"GET {path}" for path in PAGES} | {"GET /login", "GET /setup"}
    assert everything - routes == pages | {"GET /static/{path}"}


async def test_every_role_against_every_route(served: Served) -> None:
    """A forbidden role gets 403 naming the permission; anyone else gets past the door.

    Bodies carry an unknown field, so no route acts: every route that takes a body, or takes
    none, refuses it (400) once access has been granted.
    """
    refused: list[str] = []
    for method, path in served_routes(served):
        requirement = ACCESS[f"{method} {path}"]
        concrete = re.sub(r"\{[^}]+\}", "no-such-id", path)
        body = {"notAField": 1} if method in ("POST", "PUT", "PATCH", "DELETE") else None
        for role in (None, *Role):
            if path == "/ws":
                continue  # the websocket: test_ws.py and the flow above
            response = await served.client.request(
                method, concrete, json=body, headers=served.auth(role)
            )
            if response.content_type != "application/json":
                # Let in: a picture or the camera's endless stream (a refusal is JSON).
                response.close()
                answer: dict[str, Any] = {"error": {}}
            else:
                answer = await response.json()
            stopped_at_door = response.status == 401 or (
                response.status == 403 and "required" in (answer["error"].get("details") or {})
            )
            if role is None:
                expected_stop = requirement is not Open.PUBLIC
            else:
                expected_stop = not allows(role, requirement)
            if stopped_at_door != expected_stop:
                refused.append(f"{method} {path} as {role}: {response.status} {answer}")
            if role is not None and expected_stop:
                assert isinstance(requirement, Permission)
                assert answer["error"]["details"]["required"] == requirement.value
    assert refused == []


# -- cookies and CSRF -------------------------------------------------------------------------


async def test_a_cookie_session_must_come_from_the_appliances_own_pages(served: Served) -> None:
    client = served.client
    reply = await client.post(
        "/api/auth/login",
        json={"username": NAMES[Role.OPERATOR], "password": PASSWORD, "session": "cookie"},
    )
    assert reply.status == 200
    assert "tokens" not in (await reply.json())["data"]
    own = f"http://{client.server.host}:{client.server.port}"
    status = await client.get("/api/printer/status")  # reading needs no Origin
    assert status.status == 200
    for origin in (None, "http://evil.example", "null"):
        headers = {} if origin is None else {"Origin": origin}
        forged = await client.post("/api/printer/command", json={"command": "G28"}, headers=headers)
        assert forged.status == 403, origin
        assert (await forged.json())["error"]["code"] == "FORBIDDEN"
    real = await client.post(
        "/api/printer/command", json={"command": "M114"}, headers={"Origin": own}
    )
    assert real.status == 200


# -- what a bad request gets back -------------------------------------------------------------


async def test_a_bad_body_names_every_bad_field(served: Served) -> None:
    status, answer = await served.call(
        "POST",
        "/api/printer/temperature",
        Role.OPERATOR,
        {"hotend": 400, "bed": "hot", "fan": 1},
    )
    assert status == 400
    assert answer["success"] is False
    problems = {(p["field"], p["code"]) for p in answer["error"]["details"]}
    assert problems == {("hotend", "range"), ("bed", "type"), ("fan", "unknown")}


async def test_a_jog_may_not_leave_the_build_volume(served: Served) -> None:
    status, answer = await served.call(
        "POST", "/api/printer/move", Role.OPERATOR, {"axis": "X", "distance": -10}
    )
    assert status == 400
    assert answer["error"]["details"][0]["field"] == "distance"
    status, answer = await served.call(
        "POST", "/api/printer/move", Role.OPERATOR, {"axis": "X", "distance": 10}
    )
    assert status == 200
    assert served.virtual.position[0] == 10.0


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ("M110 N5", "VALIDATION_ERROR"),
        ("G28\nG1 X1", "VALIDATION_ERROR"),
        ("M117 caf\u00e9", "VALIDATION_ERROR"),
        ("", "VALIDATION_ERROR"),
    ],
)
async def test_raw_commands_are_one_line_of_printable_ascii(
    served: Served, command: str, code: str
) -> None:
    status, answer = await served.call(
        "POST", "/api/printer/command", Role.OPERATOR, {"command": command}
    )
    assert status == 400
    assert answer["error"]["code"] == code


async def test_a_port_that_is_not_a_serial_device_is_never_opened(served: Served) -> None:
    database = served.appliance.config.server.data_dir / "lezerprint.db"
    before = database.read_bytes()[:100]
    status, answer = await served.call(
        "POST", "/api/printer/connect", Role.OPERATOR, {"port": str(database)}
    )
    assert status == 400
    assert answer["error"]["details"][0]["field"] == "port"
    assert database.read_bytes()[:100] == before


async def test_errors_are_json_in_the_envelope_with_security_headers(served: Served) -> None:
    for method, path, role, expected in (
        ("GET", "/api/nothing-here", Role.ADMIN, 404),
        ("DELETE", "/api/printer/status", Role.ADMIN, 405),
        ("GET", "/api/printer/status", None, 401),
        ("POST", "/api/printer/home", Role.VIEWER, 403),
    ):
        response = await served.client.request(method, path, headers=served.auth(role))
        assert response.status == expected
        answer = await response.json()
        assert answer["success"] is False
        assert set(answer["error"]) >= {"code", "message"}
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    malformed = await served.client.post(
        "/api/printer/command",
        data=b"{nope",
        headers={**served.auth(Role.ADMIN), "Content-Type": "application/json"},
    )
    assert malformed.status == 400
    assert (await malformed.json())["error"]["message"] == "the body is not valid JSON"


async def test_the_openapi_document_describes_every_route(served: Served) -> None:
    status, document = await served.call("GET", "/api/openapi.json", None)
    assert status == 200
    assert document["openapi"].startswith("3.")
    described = {
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method in operations
    }
    served_keys = {f"{m} {p}" for m, p in served_routes(served)}
    assert served_keys - {"GET /api/openapi.json", "GET /ws"} == described
    temperature = document["paths"]["/api/printer/temperature"]["post"]
    schema = temperature["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["hotend"]["maximum"] == 300
    assert "printer:control" in temperature["description"]


async def test_jobs_pagination_and_filters_are_checked(served: Served) -> None:
    for query in ("page=0", "limit=500", "status=DONE", "page=x", "page=1&page=2"):
        status, answer = await served.call("GET", f"/api/jobs?{query}", Role.VIEWER)
        assert status == 400, query
        assert answer["error"]["code"] == "VALIDATION_ERROR"


async def test_websocket_refuses_without_credentials(served: Served) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with served.client.ws_connect("/ws"):
            pass
    assert refused.value.status == 401


async def test_a_deactivated_account_loses_the_api_at_once(served: Served) -> None:
    status, _ = await served.call("GET", "/api/printer/status", Role.VIEWER)
    assert status == 200
    users = (await served.call("GET", "/api/users"))[1]["data"]["users"]
    vera = next(user for user in users if user["username"] == "vera")
    status, _ = await served.call(
        "PATCH", f"/api/users/{vera['id']}", Role.ADMIN, {"isActive": False}
    )
    assert status == 200
    status, answer = await served.call("GET", "/api/printer/status", Role.VIEWER)
    assert status == 401
    assert answer["error"]["code"] == "UNAUTHORIZED"
    assert json.dumps(answer).count("Traceback") == 0


# -- pacing: a client polling back to back cannot slow a print -------------------------------


async def test_while_printing_reads_are_paced_per_address_and_actions_are_not(
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
    start_virtual: Callable[..., VirtualPrinter],
) -> None:
    served = await serve(
        aiohttp_client, tmp_path, start_virtual(speedup=1000), paced_reads_per_second=5
    )
    headers = served.auth(Role.OPERATOR)

    async def read() -> tuple[int, dict[str, Any], dict[str, str], float]:
        started = time.monotonic()
        reply = await served.client.get("/api/printer/status", headers=headers)
        return reply.status, await reply.json(), dict(reply.headers), time.monotonic() - started

    # Idle: a burst of reads is answered at once, none refused.
    idle = await asyncio.gather(*(read() for _ in range(20)))
    assert [status for status, *_ in idle] == [200] * 20

    file_id = served.library_file(moves(200_000))
    await served.register_files()
    start = {"fileId": file_id}
    status, answer = await served.call("POST", "/api/jobs/start", Role.OPERATOR, start)
    assert status == 201, answer
    job_id = answer["data"]["job"]["id"]
    await until(lambda: served.appliance.printer.state is PrinterState.PRINTING, 10, "printing")

    # Printing, at 5 reads a second (a burst of 5): the same burst queues up, and what would
    # wait more than 2 s is refused with Retry-After.
    reads = [asyncio.create_task(read()) for _ in range(20)]
    await until(lambda: sum(task.done() for task in reads) >= 5, 10, "the burst's first reads")
    # An action from the same address does not queue behind them.
    status, answer = await served.call("POST", f"/api/jobs/{job_id}/pause", Role.OPERATOR)
    assert status == 200, answer
    assert not all(task.done() for task in reads), "the pause waited for the paced reads"
    answers = await asyncio.gather(*reads)

    served_reads = [seconds for status, _, _, seconds in answers if status == 200]
    refused = [(body, head) for status, body, head, _ in answers if status == 429]
    assert len(served_reads) >= 10
    assert max(served_reads) >= 1.5, "the reads over the pace were not slowed"
    assert refused, "a burst four times the pace was never refused"
    for body, head in refused:
        assert body["error"]["code"] == "RATE_LIMITED"
        assert int(head["Retry-After"]) >= 1
    status, answer = await served.call("POST", f"/api/jobs/{job_id}/cancel", Role.OPERATOR)
    assert status == 200, answer
