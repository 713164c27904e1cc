"""The websocket hub on a real server: loopback, real websocket clients, a virtual Marlin on a pty.

The one stand-in is the authenticator (the auth room is not wired yet): fixed bearer tokens and
API keys map to principals of each role. The access middleware, the printer, the job engine, the
SQLite file and the sockets are the real ones.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from lezerprintd.api.envelope import errors_middleware
from lezerprintd.auth import permissions
from lezerprintd.auth.middleware import access_middleware
from lezerprintd.auth.permissions import ACCESS, Principal, Role, permissions_of
from lezerprintd.bus import Bus, SessionsRevoked, TemperaturesReported
from lezerprintd.errors import UserError
from lezerprintd.printer.jobs import Jobs
from lezerprintd.printer.printer import Printer, PrinterState
from lezerprintd.printer.virtual import VirtualPrinter
from lezerprintd.store import Store
from lezerprintd.store.jobs import JobStatus
from lezerprintd.ws import CLIENT_EVENTS, CLOSE_SECONDS, Hub
from tests.conftest import gcode_file, make_config, moves, until

Start = Callable[..., VirtualPrinter]
Message = dict[str, Any]

OPERATOR = Principal("u-otto", "otto", Role.OPERATOR, "s-otto-laptop", "bearer")
OPERATOR_PHONE = Principal("u-otto", "otto", Role.OPERATOR, "s-otto-phone", "bearer")
OPERATOR_KEY = Principal("u-otto", "otto", Role.OPERATOR, None, "api_key")
VIEWER = Principal("u-vera", "vera", Role.VIEWER, "s-vera", "bearer")
ADMIN = Principal("u-ada", "ada", Role.ADMIN, "s-ada", "bearer")
TOKENS = {
    "operator": OPERATOR,
    "operator-phone": OPERATOR_PHONE,
    "viewer": VIEWER,
    "admin": ADMIN,
}
API_KEYS = {"otto-key": OPERATOR_KEY}


class FixedTokens:
    """The `Authenticator` stand-in: fixed bearer tokens and API keys."""

    async def authenticate(
        self, *, bearer: str | None, api_key: str | None, cookie: str | None
    ) -> Principal | None:
        if bearer is None and api_key is None and cookie is None:
            return None
        principal = TOKENS.get(bearer or "") or API_KEYS.get(api_key or "")
        if principal is None:
            raise UserError("the token is not valid", status=401, code="UNAUTHORIZED")
        return principal


class Peer:
    """A websocket client that reads everything into `messages`, with waiting for one."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.messages: list[Message] = []
        self.times: list[float] = []
        self._arrived = asyncio.Event()
        self._ids = itertools.count(1)
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type is WSMsgType.TEXT:
                self.messages.append(json.loads(message.data))
                self.times.append(time.monotonic())
                self._arrived.set()
        self._arrived.set()

    def mark(self) -> int:
        return len(self.messages)

    def events(self, event: str, since: int = 0) -> list[Message]:
        return [m for m in self.messages[since:] if m["event"] == event]

    async def wait_for(
        self,
        event: str | None,
        where: Callable[[Message], bool] = lambda _: True,
        since: int = 0,
        seconds: float = 10,
    ) -> Message:
        """The first message after `since` that is `event` (None: any) and `where` holds for."""
        deadline = time.monotonic() + seconds
        checked = since
        while True:
            for message in self.messages[checked:]:
                if (event is None or message["event"] == event) and where(message):
                    return message
            checked = len(self.messages)
            if self.reader.done():
                raise AssertionError(f"closed ({self.ws.close_code}) before a {event} came")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {event} within {seconds} s")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                continue

    async def send(self, event: str, data: object = None, request_id: object = None) -> None:
        body: Message = {"event": event, "data": data if data is not None else {}}
        if request_id is not None:
            body["id"] = request_id
        await self.ws.send_json(body)

    async def request(self, event: str, data: object = None, seconds: float = 10) -> Message:
        """Send with a fresh id; the reply (or error) that carries it."""
        request_id = next(self._ids)
        since = self.mark()
        await self.send(event, data, request_id)
        return await self.reply(request_id, since, seconds)

    async def reply(self, request_id: object, since: int = 0, seconds: float = 10) -> Message:
        return await self.wait_for(None, lambda m: m.get("id") == request_id, since, seconds)

    async def closed(self, seconds: float = 10) -> int | None:
        await asyncio.wait_for(asyncio.shield(self.reader), seconds)
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        await self.reader


@dataclass
class Rig:
    hub: Hub
    printer: Printer
    jobs: Jobs
    bus: Bus
    virtual: VirtualPrinter
    server: TestServer
    session: aiohttp.ClientSession
    peers: list[Peer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return str(self.server.make_url("/ws"))

    async def connect(self, token: str = "operator", *, api_key: bool = False) -> Peer:
        header = {"X-Api-Key": token} if api_key else {"Authorization": f"Bearer {token}"}
        ws = await self.session.ws_connect(self.url, headers=header)
        peer = Peer(ws)
        self.peers.append(peer)
        await peer.wait_for("printer:status")
        return peer


@asynccontextmanager
async def serving(
    tmp_path: Path, virtual: VirtualPrinter, **hub_options: Any
) -> AsyncIterator[Rig]:
    """The hub over a real printer and job engine, on aiohttp's test server at 127.0.0.1."""
    config = make_config(tmp_path, virtual.path)
    store = await Store.open(tmp_path / "lezerprint.db")
    bus = Bus()
    printer = Printer(config.printer, bus, store, board_reset=virtual.reset)
    jobs = Jobs(config.jobs, printer, store, bus)
    hub = Hub(bus, printer, jobs, **hub_options)
    app = web.Application(middlewares=[errors_middleware, access_middleware(FixedTokens())])
    app.router.add_get("/ws", hub.handle)
    server = TestServer(app, host="127.0.0.1")
    session = aiohttp.ClientSession()
    rig = Rig(hub, printer, jobs, bus, virtual, server, session)
    await printer.start()
    await jobs.start()
    await hub.start()
    await server.start_server()
    try:
        await until(lambda: printer.state is PrinterState.OPERATIONAL, 10, "the printer")
        yield rig
    finally:
        for peer in rig.peers:
            await peer.close()
        await hub.stop()
        await session.close()
        await server.close()
        await jobs.stop()
        await printer.stop()
        await store.close()


def heating(message: Message) -> bool:
    return bool(message["data"]["hotendTarget"] == 60)


def code_of(message: Message) -> str:
    assert message["event"] == "error", message
    return str(message["data"]["code"])


async def test_every_client_message_has_an_access_rule() -> None:
    assert {key[3:] for key in ACCESS if key.startswith("WS ")} == CLIENT_EVENTS


async def test_a_client_is_greeted_with_who_it_is_and_then_the_printers_status(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual()
    async with serving(tmp_path, virtual) as rig:
        viewer = await rig.connect("viewer")
        by_key = await rig.connect("otto-key", api_key=True)
        for bad in ({"Authorization": "Bearer forged"}, {}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await rig.session.ws_connect(rig.url, headers=bad)
            assert refused.value.status == 401
        assert rig.hub.clients == 2

    connected, status = viewer.messages[:2]
    assert connected == {
        "event": "connected",
        "data": {
            "user": {"id": "u-vera", "username": "vera", "role": "VIEWER"},
            "permissions": permissions_of(Role.VIEWER),
            "topics": ["alerts", "files", "jobs", "status", "temperature"],
        },
    }
    assert status["event"] == "printer:status"
    assert status["data"]["state"] == "operational"
    assert status["data"]["connected"] is True
    assert status["data"]["error"] is None
    assert status["data"]["currentJob"] is None
    assert set(status["data"]["temperatures"]) >= {
        "hotendTemp",
        "hotendTarget",
        "bedTemp",
        "bedTarget",
        "chamberTemp",
    }
    assert by_key.messages[0]["data"]["user"]["role"] == "OPERATOR"


async def test_a_client_gets_only_the_topics_it_follows(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual(speedup=20)
    async with serving(tmp_path, virtual, status_interval=0.1) as rig:
        watcher = await rig.connect("viewer")
        picky = await rig.connect("viewer")
        reply = await picky.request("unsubscribe", {"topics": ["status", "temperature"]})
        assert reply["data"] == {"topics": ["alerts", "files", "jobs"]}
        since = picky.mark()

        # The heater's new target changes the status and the next temperature report.
        await rig.printer.execute("M104 S60")
        await watcher.wait_for("temperature:update", heating)
        await watcher.wait_for(
            "printer:status", lambda m: m["data"]["temperatures"]["hotendTarget"] == 60
        )
        # Had the hub offered picky either, it would go out before this reply: due coalesced
        # messages are sent ahead of the queue.
        await picky.request("subscribe", {"topics": ["jobs"]})
        assert not picky.events("printer:status", since)
        assert not picky.events("temperature:update", since)

        since = picky.mark()
        reply = await picky.request("subscribe", {"topics": ["status", "temperature"]})
        assert reply["data"] == {"topics": ["alerts", "files", "jobs", "status", "temperature"]}
        status = await picky.wait_for("printer:status", since=since)
        assert status["data"]["temperatures"]["hotendTarget"] == 60
        await picky.wait_for("temperature:update", heating, since=since)


async def test_a_short_print_reports_job_status_progress_and_completion(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual(speedup=20)
    path = gcode_file(tmp_path / "short.gcode", moves(60))
    async with serving(tmp_path, virtual) as rig:
        peer = await rig.connect("viewer")
        job_id = await rig.jobs.start_job(path)
        finished = await peer.wait_for("job:completed", seconds=60)
        await peer.wait_for("printer:status", lambda m: m["data"]["currentJob"] is None)

    assert finished["data"] == {
        "jobId": job_id,
        "status": "COMPLETED",
        "fileName": "short.gcode",
        "errorMessage": None,
        "actualTime": finished["data"]["actualTime"],
    }
    assert isinstance(finished["data"]["actualTime"], int)
    statuses = [m["data"]["status"] for m in peer.events("job:status")]
    assert statuses == ["QUEUED", "PREPARING", "PRINTING", "COMPLETED"]
    assert all(m["data"]["jobId"] == job_id for m in peer.events("job:status"))
    printing = [m["data"] for m in peer.events("printer:status") if m["data"]["currentJob"]]
    assert printing, "no status with the job's progress"
    assert {p["state"] for p in printing} <= {"operational", "printing"}
    job = printing[-1]["currentJob"]
    assert job["id"] == job_id
    assert job["fileName"] == "short.gcode"
    assert job["bytesTotal"] == path.stat().st_size
    assert 0 <= job["progress"] <= 100
    assert set(job) == {
        "id",
        "fileName",
        "status",
        "progress",
        "printTime",
        "bytesDone",
        "bytesTotal",
        "linesDone",
        "layer",
        "pauseReason",
        "startedAt",
    }
    assert job["pauseReason"] is None


async def test_a_burst_of_temperature_reports_is_coalesced(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual()
    async with serving(tmp_path, virtual, temperature_interval=0.5) as rig:
        peer = await rig.connect("viewer")
        since, start = peer.mark(), time.monotonic()
        for index in range(200):  # a hundred reports a second, for two seconds
            burst_end = time.time()
            rig.bus.publish(TemperaturesReported(1000.0 + index, 1200.0, 60.0, 60.0, None))
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - start
        # The newest report goes out (or a real one the board sent after it).
        await peer.wait_for("temperature:update", lambda m: m["data"]["timestamp"] >= burst_end)

    arrivals = list(zip(peer.times[since:], peer.messages[since:], strict=True))
    updates = [(t, m["data"]) for t, m in arrivals if m["event"] == "temperature:update"]
    span = updates[-1][0] - updates[0][0]
    # 200 reports in `elapsed` seconds; the socket saw one per half second at most
    assert 2 <= len(updates) <= span / 0.5 + 1, (len(updates), span, elapsed)
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(updates)]
    assert all(gap > 0.4 for gap in gaps), gaps
    burst = [data["hotendTemp"] for _, data in updates if data["hotendTemp"] >= 1000]
    assert burst == sorted(burst), "an older report was sent after a newer one"
    assert set(updates[-1][1]) == {
        "hotendTemp",
        "hotendTarget",
        "bedTemp",
        "bedTarget",
        "chamberTemp",
        "timestamp",
    }


async def test_terminal_subscribers_get_the_serial_lines_and_watching_ends_with_them(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual()
    async with serving(tmp_path, virtual) as rig:
        tap = rig.printer.tap
        first = await rig.connect("operator")
        second = await rig.connect("viewer")
        assert tap.watchers == 0
        reply = await first.request("subscribe", {"topics": ["terminal"]})
        assert "terminal" in reply["data"]["topics"]
        assert tap.watchers == 1
        await second.request("subscribe", {"topics": ["terminal"]})
        assert tap.watchers == 2

        since = first.mark()
        answer = await first.request("printer:command", {"command": "M114"})
        assert answer["data"]["ok"] is True
        sent = await first.wait_for(
            "printer:log",
            lambda m: any(
                line["dir"] == "send" and "M114" in line["text"] for line in m["data"]["lines"]
            ),
            since,
        )
        assert sent["data"]["skipped"] == 0
        lines = [line for m in first.events("printer:log", since) for line in m["data"]["lines"]]
        await first.wait_for(
            "printer:log",
            lambda m: any(
                line["dir"] == "recv" and line["text"].startswith("X:")
                for line in m["data"]["lines"]
            ),
            since,
        )
        assert all(set(line) == {"dir", "text"} for line in lines)
        # The viewer watches too, without having asked for anything.
        await second.wait_for(
            "printer:log", lambda m: any("M114" in line["text"] for line in m["data"]["lines"])
        )
        # Unsubscribed, the operator gets no more lines, while the viewer still does.
        await first.request("unsubscribe", {"topics": ["terminal"]})
        assert tap.watchers == 1
        since = first.mark()
        await first.request("printer:command", {"command": "M105"})
        await second.wait_for(
            "printer:log", lambda m: any("M105" in line["text"] for line in m["data"]["lines"])
        )
        await first.request("subscribe", {"topics": ["alerts"]})
        assert not first.events("printer:log", since)
        await second.close()
        await until(lambda: tap.watchers == 0, 5, "the closed socket to stop watching")


async def test_a_viewer_is_refused_every_command_and_control(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual()
    async with serving(tmp_path, virtual) as rig:
        viewer = await rig.connect("viewer")
        attempts = [
            ("printer:command", {"command": "M117 from a viewer"}),
            ("control:command", {"gcode": "M117 from a viewer"}),
            ("control:emergency", {}),
            ("control:pause", {}),
            ("control:resume", {}),
            ("control:stop", {}),
        ]
        for event, data in attempts:
            refused = await viewer.request(event, data)
            assert code_of(refused) == "FORBIDDEN", event
            assert refused["data"]["id"] == refused["id"]
            assert "VIEWER" in refused["data"]["message"]
        # Still open and still allowed to follow things.
        reply = await viewer.request("subscribe", {"topics": ["terminal"]})
        assert reply["event"] == "subscribe"
        assert not virtual.halted
        assert rig.printer.state is PrinterState.OPERATIONAL
        assert not any("from a viewer" in command for command in virtual.accepted)


async def test_an_operator_commands_the_printer_and_gets_the_firmwares_answer(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual()
    async with serving(tmp_path, virtual) as rig:
        operator = await rig.connect("operator")
        where = await operator.request("printer:command", {"command": "M114"})
        assert where["event"] == "printer:command"
        assert where["data"]["command"] == "M114"
        assert where["data"]["ok"] is True
        assert where["data"]["id"] == where["id"]
        assert "X:0.00 Y:0.00 Z:0.00 E:0.00" in where["data"]["response"]

        moved = await operator.request("control:command", {"gcode": "G1 X10 Y20 F6000"})
        assert moved["event"] == "control:command"
        assert moved["data"]["ok"] is True
        where = await operator.request("printer:command", {"command": "M114"})
        assert any(line.startswith("X:10.00 Y:20.00") for line in where["data"]["response"])

        # A slow command does not hold up the socket: the dwell answers last.
        since = operator.mark()
        await operator.send("printer:command", {"command": "G4 P1500"}, "dwell")
        await operator.request("subscribe", {"topics": ["alerts"]})
        dwell = await operator.reply("dwell", since)
        assert dwell["data"]["ok"] is True
        order = [m.get("id") for m in operator.messages[since:] if m.get("id") is not None]
        assert order.index("dwell") > 0

        nothing = await operator.request("control:pause")
        assert code_of(nothing) == "CONFLICT"
        nothing = await operator.request("control:stop")
        assert code_of(nothing) == "CONFLICT"
    assert "G1 X10 Y20 F6000" in virtual.accepted


async def test_an_operator_pauses_resumes_and_stops_a_print(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual(speedup=100)
    path = gcode_file(tmp_path / "long.gcode", moves(20_000))
    async with serving(tmp_path, virtual) as rig:
        operator = await rig.connect("operator")
        job_id = await rig.jobs.start_job(path)
        printing = lambda m: m["data"]["status"] == "PRINTING"  # noqa: E731
        await operator.wait_for("job:status", printing)

        paused = await operator.request("control:pause")
        assert paused["data"] == {"ok": True}
        await operator.wait_for("job:status", lambda m: m["data"]["status"] == "PAUSED")
        since = operator.mark()
        resumed = await operator.request("control:resume")
        assert resumed["data"] == {"ok": True}
        await operator.wait_for("job:status", printing, since, seconds=30)

        stopped = await operator.request("control:stop")
        assert stopped["data"] == {"ok": True}
        done = await operator.wait_for("job:completed", seconds=30)
        again = await operator.request("control:stop")
    assert done["data"]["jobId"] == job_id
    assert done["data"]["status"] == "CANCELLED"
    assert code_of(again) == "CONFLICT"


async def test_emergency_stop_halts_the_printer_at_once_behind_a_long_command(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual()
    async with serving(tmp_path, virtual) as rig:
        operator = await rig.connect("operator")
        since = operator.mark()
        await operator.send("printer:command", {"command": "G4 S60"}, "dwell")
        await until(lambda: "G4 S60" in virtual.accepted, 5, "the firmware to start dwelling")
        started = time.monotonic()
        stopped = await operator.request("control:emergency")
        await until(lambda: virtual.halted, 2, "the virtual board to halt")
        halted_after = time.monotonic() - started
        assert stopped["data"] == {"ok": True}

        dwell = await operator.reply("dwell", since)
        assert code_of(dwell) == "PRINTER_ERROR"
        alert = await operator.wait_for("alert", lambda m: m["data"]["type"] == "EMERGENCY_STOP")
        assert alert["data"]["severity"] == "CRITICAL"
        assert "emergency stop by otto" in alert["data"]["message"]
        await operator.wait_for("printer:status", lambda m: m["data"]["state"] == "error")
        refused = await operator.request("printer:command", {"command": "M105"})
        assert code_of(refused) == "CONFLICT"  # the printer's state refuses it
        assert refused["data"]["message"] == "the printer is error"
    assert halted_after < 1.0


async def test_malformed_messages_are_refused_and_the_socket_stays_usable(
    start_virtual: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    virtual = start_virtual()
    async with serving(tmp_path, virtual) as rig:
        admin = await rig.connect("admin")
        for text in ("not json", "[1, 2]", '"subscribe"', '{"data": {}}', '{"event": 5}'):
            since = admin.mark()
            await admin.ws.send_str(text)
            refused = await admin.wait_for("error", since=since)
            assert refused["data"]["code"] == "VALIDATION_ERROR", text
            assert "id" not in refused
        since = admin.mark()
        await admin.ws.send_bytes(b'{"event": "subscribe"}')
        assert code_of(await admin.wait_for("error", since=since)) == "VALIDATION_ERROR"

        invalid: list[tuple[str, object]] = [
            ("camera:start", {}),
            ("subscribe", []),
            ("subscribe", {"topics": "status"}),
            ("subscribe", {"topics": ["status", "camera"]}),
            ("printer:command", {}),
            ("printer:command", {"command": 114}),
            ("printer:command", {"command": "   "}),
            ("printer:command", {"command": "M105\nM112"}),
            ("printer:command", {"command": "M117 caf\u00e9"}),
            ("printer:command", {"command": "M117 " + "x" * 86}),
            ("printer:command", {"command": "M110 N0"}),
            ("control:command", {"command": "M105"}),  # the seed's field is "gcode"
        ]
        for event, data in invalid:
            refused = await admin.request(event, data)
            assert code_of(refused) == "VALIDATION_ERROR", (event, data)
        since = admin.mark()
        await admin.ws.send_json({"event": "subscribe", "data": {"topics": ["jobs"]}, "id": [1]})
        assert code_of(await admin.wait_for("error", since=since)) == "VALIDATION_ERROR"

        # A message the hub knows but the access table does not: deny by default.
        monkeypatch.delitem(permissions.ACCESS, "WS control:pause")
        assert code_of(await admin.request("control:pause")) == "FORBIDDEN"
        monkeypatch.undo()

        answer = await admin.request("printer:command", {"command": "M117 " + "x" * 40})
        assert answer["data"]["ok"] is True
        # 90 characters pass the hub; the printer's own limit (its receive buffer) decides.
        answer = await admin.request("printer:command", {"command": "M117 " + "x" * 85})
        assert code_of(answer) == "VALIDATION_ERROR"
        assert "too long for the printer" in answer["data"]["message"]
        assert not virtual.halted
        assert not any(c.startswith(("M110 N0", "M112")) for c in virtual.accepted[2:])

        # Too large a message is not read at all: the socket closes with 1009.
        big = await rig.connect("admin")
        await big.ws.send_str(json.dumps({"event": "subscribe", "data": {"x": "y" * 70_000}}))
        assert await big.closed() == 1009
        assert (await admin.request("subscribe", {"topics": ["jobs"]}))["event"] == "subscribe"


def small_receive_buffer(address: Any) -> socket.socket:
    """A client socket with a tiny receive window, so a stalled reader stalls the server soon."""
    family, kind, proto, _, _ = address
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


@dataclass(frozen=True)
class Stall:
    queue_size: int
    lines: int  # long enough to be printing still when the drop comes
    why: str  # what the log says


@pytest.mark.parametrize(
    "stall",
    [
        pytest.param(Stall(32, 150_000, "32 messages were waiting"), id="its-queue-fills"),
        # A queue that cannot fill in time: the send that has waited 10 s drops it.
        pytest.param(Stall(100_000, 320_000, "not taken within 10 s"), id="a-send-times-out"),
    ],
)
async def test_a_client_that_never_reads_is_dropped_and_nobody_else_notices(
    start_virtual: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture, stall: Stall
) -> None:
    caplog.set_level(logging.INFO, logger="lezerprintd.ws")
    virtual = start_virtual(speedup=10_000)
    commands = moves(stall.lines)
    path = gcode_file(tmp_path / "big.gcode", commands)
    # Terminal batches every 50 ms: the stalled socket's buffers fill within a second or two.
    async with serving(
        tmp_path, virtual, queue_size=stall.queue_size, terminal_interval=0.05
    ) as rig:
        reader = await rig.connect("operator")
        await reader.request("subscribe", {"topics": ["terminal"]})
        connector = aiohttp.TCPConnector(socket_factory=small_receive_buffer)
        async with aiohttp.ClientSession(connector=connector) as stalled_session:
            stalled = await stalled_session.ws_connect(
                rig.url, headers={"Authorization": "Bearer viewer"}
            )
            await stalled.send_json({"event": "subscribe", "data": {"topics": ["terminal"]}})
            await until(lambda: rig.printer.tap.watchers == 2, 5, "both to watch the terminal")
            since = reader.mark()
            job_id = await rig.jobs.start_job(path)

            # It never reads: its socket buffers fill, its writer waits, then it is dropped.
            await until(lambda: rig.hub.clients == 1, 40, "the stalled client to be dropped")
            dropped_at = time.monotonic()
            state_at_drop = rig.printer.state
            assert rig.printer.tap.watchers == 1

            # Reading again at last, it finds the close frame behind its backlog.
            backlog = 0
            async with asyncio.timeout(CLOSE_SECONDS):
                while (message := await stalled.receive()).type is WSMsgType.TEXT:
                    backlog += 1
            assert message.type is WSMsgType.CLOSE
            assert (message.data, message.extra) == (1013, "too slow")

        record = await asyncio.wait_for(rig.jobs.wait(job_id), 120)
        link = rig.printer.status()

    assert state_at_drop is PrinterState.PRINTING, "the print ended before the drop was seen"
    assert record.status is JobStatus.COMPLETED, record.error_message
    assert [c for c in virtual.accepted if c.startswith("G1 X") and " E" in c] == commands
    assert link.timeouts == 0
    assert backlog > 0
    drops = [r for r in caplog.records if "dropped (1013 too slow)" in r.getMessage()]
    assert len(drops) == 1
    assert drops[0].levelno == logging.INFO
    assert stall.why in drops[0].getMessage()
    # The other client kept getting the live status and the terminal all along.
    arrivals = list(zip(reader.times[since:], reader.messages[since:], strict=True))
    statuses = [t for t, m in arrivals if m["event"] == "printer:status" and t <= dropped_at]
    assert len(statuses) >= 4
    assert max(later - earlier for earlier, later in itertools.pairwise(statuses)) < 2.0
    logs = [t for t, m in arrivals if m["event"] == "printer:log" and t <= dropped_at]
    assert max(later - earlier for earlier, later in itertools.pairwise(logs)) < 2.0


async def test_ending_a_session_closes_exactly_its_sockets(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual()
    async with serving(tmp_path, virtual) as rig:
        laptop = await rig.connect("operator")
        phone = await rig.connect("operator-phone")
        script = await rig.connect("otto-key", api_key=True)
        viewer = await rig.connect("viewer")

        rig.bus.publish(SessionsRevoked(user_id="u-otto", session_id="s-otto-laptop"))
        assert await laptop.closed() == 4001
        assert laptop.ws.close_code == 4001
        for peer in (phone, script, viewer):
            assert (await peer.request("subscribe", {"topics": ["jobs"]}))["event"] == "subscribe"

        rig.bus.publish(SessionsRevoked(user_id="u-otto", session_id=None))
        assert await phone.closed() == 4001
        assert await script.closed() == 4001
        assert (await viewer.request("subscribe", {"topics": ["jobs"]}))["event"] == "subscribe"
        assert rig.hub.clients == 1


async def test_stop_closes_every_socket_and_refuses_new_ones(
    start_virtual: Start, tmp_path: Path
) -> None:
    virtual = start_virtual()
    async with serving(tmp_path, virtual) as rig:
        first = await rig.connect("operator")
        second = await rig.connect("viewer")
        await second.request("subscribe", {"topics": ["terminal"]})
        await rig.hub.stop()
        assert rig.hub.clients == 0
        assert rig.printer.tap.watchers == 0
        assert await first.closed(1) == 1001
        assert await second.closed(1) == 1001
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await rig.session.ws_connect(rig.url, headers={"Authorization": "Bearer viewer"})
        assert refused.value.status == 503
