"""The websocket hub: live printer state to signed-in clients, and their commands back.

Every message is JSON `{"event": ..., "data": ..., "id"?: ...}` in both directions; the protocol
is described for client writers in docs/websocket.md.

Rule: nothing the printer or the bus does ever waits for a client. Publishing (bus handlers,
the status and terminal timers) only puts already-serialized bytes in per-client places and
returns: a bounded queue for discrete messages and one slot each for the newest status and
temperatures. One writer task per client sends them. A client whose queue is full, or whose
send has not completed within SEND_SECONDS, is dropped (close 1013 "too slow"); it has then
cost a bounded amount of memory and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import json
import logging
import math
import re
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

from aiohttp import WSMsgType, web

from lezerprintd.api.envelope import camel
from lezerprintd.api.jobs import live_view
from lezerprintd.api.printer import status_view
from lezerprintd.auth.middleware import principal_of
from lezerprintd.auth.permissions import ACCESS, Principal, Role, allows, permissions_of
from lezerprintd.bus import (
    Bus,
    FileAnalyzed,
    JobFinished,
    JobStatusChanged,
    PrinterAlert,
    PrinterStatusChanged,
    SessionsRevoked,
    TemperaturesReported,
)
from lezerprintd.errors import PrinterError, UserError
from lezerprintd.printer.jobs import Jobs
from lezerprintd.printer.printer import COMMAND_PATTERN, Printer

log = logging.getLogger(__name__)

SEND_SECONDS: Final = 10.0  # one message not sent by then: the client is dropped
CLOSE_SECONDS: Final = 5.0  # for the closing handshake; then the connection is cut
CLOSE_POLL_SECONDS: Final = 0.05
HEARTBEAT_SECONDS: Final = 30.0  # aiohttp pings; no pong within half of it closes the socket
MAX_MESSAGE_BYTES: Final = 64 * 1024  # a client message larger than this closes with 1009
# Kernel send buffer of each socket: without it Linux autotunes a stalled peer's buffer up to
# several MB, which a Pi Zero 2 W with 512 MB cannot give many clients. 64 KiB still carries
# far more than the hub ever sends (a few tens of KB/s with the terminal open).
SEND_BUFFER_BYTES: Final = 64 * 1024
WRITER_LIMIT: Final = 64 * 1024  # aiohttp waits for the socket to drain past this much
TERMINAL_BATCH_LINES: Final = 200
COMMANDS_IN_FLIGHT: Final = 8  # per client; the printer's own queue is not bounded
RECHECK_SECONDS: Final = 30.0  # how often open sockets' accounts are checked again
COMMAND_MAX_CHARACTERS: Final = 90
MAX_ID_CHARACTERS: Final = 100
_PRINTABLE = re.compile(COMMAND_PATTERN)

RequestId = str | int | None
Data = dict[str, Any]


class CloseCode(enum.IntEnum):
    GOING_AWAY = 1001  # the daemon is stopping
    MESSAGE_TOO_BIG = 1009  # sent by aiohttp itself
    TRY_AGAIN_LATER = 1013  # "too slow": the client did not keep up
    SESSION_ENDED = 4001  # signed out, deactivated or password changed


class Topic(enum.Enum):
    STATUS = "status"  # printer:status
    TEMPERATURE = "temperature"  # temperature:update
    JOBS = "jobs"  # job:status, job:completed
    ALERTS = "alerts"  # alert
    TERMINAL = "terminal"  # printer:log
    FILES = "files"  # file:analyzed, for the files the account sees


DEFAULT_TOPICS: Final = frozenset(
    {Topic.STATUS, Topic.TEMPERATURE, Topic.JOBS, Topic.ALERTS, Topic.FILES}
)

# What a client may send; each has a "WS <event>" entry in ACCESS (a test holds them equal).
CLIENT_EVENTS: Final = frozenset(
    {
        "subscribe",
        "unsubscribe",
        "printer:command",
        "control:command",
        "control:emergency",
        "control:pause",
        "control:resume",
        "control:stop",
    }
)


def encode(event: str, data: object, request_id: RequestId = None) -> bytes:
    """One message as the bytes of a text frame; serialized once, however many clients get it."""
    body: dict[str, object] = {"event": event, "data": data}
    if request_id is not None:
        body["id"] = request_id
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


Recheck = Callable[[Principal], Awaitable[Principal | None]]


class _Client:
    """One open socket: who it is, what it follows, and what waits to be sent to it."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        principal: Principal,
        transport: asyncio.Transport | None,
        name: str,
        *,
        status_interval: float,
        temperature_interval: float,
    ) -> None:
        self.ws = ws
        self.principal = principal
        self.transport = transport
        self.name = name
        self.topics: set[Topic] = set(DEFAULT_TOPICS)
        self.queue: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.writer: asyncio.Task[None] | None = None
        self.commands: set[asyncio.Task[None]] = set()
        self.closing: asyncio.Task[None] | None = None  # being dropped
        self.gone = False  # no longer receives anything
        self._status_interval = status_interval
        self._temperature_interval = temperature_interval
        self._status: bytes | None = None  # the newest status not yet sent
        self._sent_status: bytes | None = None
        self._status_at = -math.inf
        self._temperature: bytes | None = None
        self._temperature_at = -math.inf

    def offer_status(self, message: bytes) -> None:
        self._status = None if message == self._sent_status else message
        if self._status is not None:
            self.wake.set()

    def offer_temperature(self, message: bytes) -> None:
        self._temperature = message
        self.wake.set()

    def sent_status(self, message: bytes) -> None:
        """`message` went out through the queue (the snapshot after `connected`)."""
        self._sent_status = message
        self._status_at = time.monotonic()

    def next_message(self, now: float) -> tuple[bytes | None, float | None]:
        """What to send now, or how long until a coalesced message is due (None: no limit).

        A due slot goes before the queue: slots are rate-limited, so they cannot starve it,
        and the newest state is never stuck behind a backlog of discrete messages.
        """
        wait: float | None = None
        if self._status is not None:
            due = self._status_at + self._status_interval
            if now >= due:
                message, self._status = self._status, None
                self._sent_status, self._status_at = message, now
                return message, None
            wait = due - now
        if self._temperature is not None:
            due = self._temperature_at + self._temperature_interval
            if now >= due:
                message, self._temperature = self._temperature, None
                self._temperature_at = now
                return message, None
            wait = due - now if wait is None else min(wait, due - now)
        if self.queue:
            return self.queue.popleft(), None
        return None, wait


class Hub:
    """The websocket endpoint's clients. Construct, `await start()`, route GET /ws to `handle`."""

    def __init__(
        self,
        bus: Bus,
        printer: Printer,
        jobs: Jobs,
        *,
        queue_size: int = 256,
        status_interval: float = 0.5,
        temperature_interval: float = 0.5,
        terminal_interval: float = 0.2,
        recheck: Recheck | None = None,
    ) -> None:
        self._bus = bus
        # Asks the auth room whether a socket's account and session still stand: a change
        # made by `lezerprintd user` in another process publishes nothing on this bus.
        self._recheck = recheck
        self._printer = printer
        self._jobs = jobs
        self._queue_size = queue_size
        self._status_interval = status_interval
        self._temperature_interval = temperature_interval
        self._terminal_interval = terminal_interval
        self._clients: set[_Client] = set()
        self._watching: set[_Client] = set()  # terminal subscribers
        self._tap_seen = 0
        self._status: bytes | None = None  # the last status fanned out
        self._unsubscribers: list[Callable[[], None]] = []
        self._timers: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()  # commands and controls
        self._closing: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.Task[None]] = set()
        self._numbers = itertools.count(1)
        self._stopping = False
        self._operations: dict[str, Callable[[_Client, Data, RequestId], None]] = {
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "printer:command": lambda c, d, i: self._command(c, d, i, "printer:command", "command"),
            "control:command": lambda c, d, i: self._command(c, d, i, "control:command", "gcode"),
            "control:emergency": self._emergency,
            "control:pause": lambda c, d, i: self._control(c, i, "control:pause", jobs.pause),
            "control:resume": lambda c, d, i: self._control(c, i, "control:resume", jobs.resume),
            "control:stop": lambda c, d, i: self._control(c, i, "control:stop", jobs.cancel),
        }
        assert set(self._operations) == CLIENT_EVENTS

    @property
    def clients(self) -> int:
        return len(self._clients)

    # -- lifecycle

    async def start(self) -> None:
        bus = self._bus
        self._unsubscribers = [
            bus.subscribe(TemperaturesReported, self._on_temperatures),
            bus.subscribe(PrinterStatusChanged, lambda _: self._refresh_status()),
            bus.subscribe(JobStatusChanged, self._on_job_status),
            bus.subscribe(JobFinished, self._on_job_finished),
            bus.subscribe(PrinterAlert, self._on_alert),
            bus.subscribe(SessionsRevoked, self._on_sessions_revoked),
            bus.subscribe(FileAnalyzed, self._on_file_analyzed),
        ]
        self._timers = [
            asyncio.create_task(
                _every(self._status_interval, self._refresh_status, "building the printer status"),
                name="ws-status",
            ),
            asyncio.create_task(
                _every(self._terminal_interval, self._send_terminal, "sending the terminal lines"),
                name="ws-terminal",
            ),
            asyncio.create_task(self._recheck_timer(), name="ws-recheck"),
        ]

    async def stop(self) -> None:
        """Close every socket (1001 going away) and end the hub's tasks. Safe to call twice."""
        self._stopping = True
        for unsubscribe in self._unsubscribers:
            unsubscribe()
        self._unsubscribers = []
        for client in list(self._clients):
            self._drop(client, CloseCode.GOING_AWAY, "going away", "the daemon is stopping")
        for task in (*self._timers, *self._background):
            task.cancel()
        await asyncio.gather(
            *self._timers, *self._background, *self._closing, *self._writers, return_exceptions=True
        )
        self._timers = []

    # -- a connection

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """GET /ws: the access middleware has already signed the request in."""
        principal = principal_of(request)
        if self._stopping:
            raise web.HTTPServiceUnavailable(text="the daemon is stopping")
        ws = web.WebSocketResponse(
            timeout=CLOSE_SECONDS,
            heartbeat=HEARTBEAT_SECONDS,
            max_msg_size=MAX_MESSAGE_BYTES,
            # Deflate would run once per client per message on the printer's event loop.
            compress=False,
            writer_limit=WRITER_LIMIT,
        )
        await ws.prepare(request)
        if self._stopping:  # stopped while the handshake ran
            await ws.close(code=CloseCode.GOING_AWAY, message=b"going away")
            return ws
        transport = request.transport
        _limit_send_buffer(transport)
        name = f"#{next(self._numbers)} {principal.username} ({request.remote})"
        client = _Client(
            ws,
            principal,
            transport,
            name,
            status_interval=self._status_interval,
            temperature_interval=self._temperature_interval,
        )
        self._clients.add(client)
        client.writer = asyncio.create_task(self._write(client), name=f"ws-writer {name}")
        self._writers.add(client.writer)
        client.writer.add_done_callback(self._writers.discard)
        self._enqueue(client, encode("connected", self._welcome(client)))
        status = self._status_message()
        self._enqueue(client, status)
        client.sent_status(status)
        log.info("websocket %s connected", name)
        try:
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    self._receive(client, message.data)
                elif message.type is WSMsgType.BINARY:
                    self._refuse(client, "VALIDATION_ERROR", "messages are JSON text frames")
        finally:
            await self._finish(client)
        return ws

    def _welcome(self, client: _Client) -> Data:
        principal = client.principal
        return {
            "user": {
                "id": principal.user_id,
                "username": principal.username,
                "role": principal.role.value,
            },
            "permissions": permissions_of(principal.role),
            "topics": sorted(topic.value for topic in client.topics),
        }

    async def _finish(self, client: _Client) -> None:
        """The socket's read loop ended: forget the client, end its tasks."""
        self._forget(client)
        if client.writer is not None and client.writer is not asyncio.current_task():
            client.writer.cancel()
        for task in client.commands:
            task.cancel()
        if client.closing is None:  # a drop has been logged already
            error = client.ws.exception()
            log.info(
                "websocket %s closed (%s)%s",
                client.name,
                client.ws.close_code,
                f": {error}" if error else "",
            )
        # aiohttp's test server cancels a handler whose connection is lost; the tasks awaited
        # here are the hub's too, and stop() awaits whatever this does not.
        await asyncio.gather(
            *(t for t in (client.writer, client.closing) if t is not None),
            *client.commands,
            return_exceptions=True,
        )

    def _forget(self, client: _Client) -> None:
        client.gone = True
        self._clients.discard(client)
        self._watch(client, False)

    def _drop(self, client: _Client, code: CloseCode, reason: str, why: str) -> None:
        """Close `client`'s socket with `code`; it receives nothing more. Never waits."""
        if client.closing is not None or client.ws.closed:
            self._forget(client)
            return
        self._forget(client)
        log.info("websocket %s dropped (%d %s): %s", client.name, code, reason, why)
        if client.writer is not None and client.writer is not asyncio.current_task():
            client.writer.cancel()
        for task in client.commands:
            task.cancel()
        client.closing = asyncio.create_task(self._close(client, code, reason))
        self._closing.add(client.closing)
        client.closing.add_done_callback(self._closing.discard)

    async def _close(self, client: _Client, code: CloseCode, reason: str) -> None:
        # The close frame goes behind whatever is still buffered. aiohttp then closes the
        # transport, which asyncio does only once the buffer is out: a client that reads
        # again within CLOSE_SECONDS gets its backlog and the close code; one that does not
        # is cut off then. (asyncio offers no awaitable for "buffer empty", hence the poll.)
        transport = client.transport
        try:
            async with asyncio.timeout(CLOSE_SECONDS):
                await client.ws.close(code=code, message=reason.encode(), drain=False)
                while transport is not None and transport.get_write_buffer_size():  # noqa: ASYNC110
                    await asyncio.sleep(CLOSE_POLL_SECONDS)
        except TimeoutError:
            pass
        finally:
            if transport is not None:
                transport.abort()

    # -- sending

    def _enqueue(self, client: _Client, message: bytes) -> None:
        if client.gone:
            return
        if len(client.queue) >= self._queue_size:
            why = f"{self._queue_size} messages were waiting to be sent to it"
            self._drop(client, CloseCode.TRY_AGAIN_LATER, "too slow", why)
            return
        client.queue.append(message)
        client.wake.set()

    async def _write(self, client: _Client) -> None:
        """The client's one writer: coalesced and queued messages, one send at a time."""
        ws = client.ws
        while True:
            message, wait = client.next_message(time.monotonic())
            if message is None:
                client.wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await client.wake.wait()
                continue
            try:
                async with asyncio.timeout(SEND_SECONDS):
                    await ws.send_frame(message, WSMsgType.TEXT)
            except TimeoutError:
                why = f"a message was not taken within {SEND_SECONDS:g} s"
                self._drop(client, CloseCode.TRY_AGAIN_LATER, "too slow", why)
                return
            except ConnectionError:
                self._forget(client)  # the peer went away; the read loop ends too
                return

    def _send(self, topic: Topic, message: bytes) -> None:
        for client in list(self._clients):
            if topic in client.topics:
                self._enqueue(client, message)

    def _reply(self, client: _Client, event: str, data: Data, request_id: RequestId) -> None:
        self._enqueue(client, encode(event, data, request_id))

    def _refuse(
        self, client: _Client, code: str, message: str, request_id: RequestId = None
    ) -> None:
        data: Data = {"code": code, "message": message}
        if request_id is not None:
            data["id"] = request_id
        self._enqueue(client, encode("error", data, request_id))

    # -- what the appliance publishes

    def _status_message(self) -> bytes:
        # Exactly what GET /api/printer/status answers: one shape wherever the status goes.
        job = self._jobs.current
        view = status_view(self._printer.status(), None if job is None else live_view(job))
        return encode("printer:status", view)

    def _refresh_status(self) -> None:
        if not any(Topic.STATUS in client.topics for client in self._clients):
            return
        message = self._status_message()
        if message == self._status:
            return
        self._status = message
        for client in self._clients:
            if Topic.STATUS in client.topics:
                client.offer_status(message)

    async def _recheck_timer(self) -> None:
        while True:
            await asyncio.sleep(RECHECK_SECONDS)
            for client in list(self._clients):
                try:
                    await self._still_allowed(client)
                except Exception:
                    log.exception("checking websocket %s's account failed", client.name)

    async def _still_allowed(self, client: _Client) -> bool:
        """Refresh the client's principal; close it (4001) when its session is gone."""
        if self._recheck is None or client.gone:
            return not client.gone
        principal = await self._recheck(client.principal)
        if principal is None:
            self._drop(client, CloseCode.SESSION_ENDED, "session ended", "its session ended")
            return False
        client.principal = principal
        return True

    def _on_temperatures(self, event: TemperaturesReported) -> None:
        followers = [client for client in self._clients if Topic.TEMPERATURE in client.topics]
        if followers:
            message = _temperature_message(event)
            for client in followers:
                client.offer_temperature(message)

    def _on_job_status(self, event: JobStatusChanged) -> None:
        self._send(Topic.JOBS, encode("job:status", _camel_keys(event.payload())))
        self._refresh_status()

    def _on_job_finished(self, event: JobFinished) -> None:
        self._send(Topic.JOBS, encode("job:completed", _camel_keys(event.payload())))
        self._refresh_status()

    def _on_file_analyzed(self, event: FileAnalyzed) -> None:
        # Only to those who see the file: its owner, admins, everyone for an ownerless one.
        message = encode("file:analyzed", _camel_keys(event.payload()))
        for client in list(self._clients):
            principal = client.principal
            if Topic.FILES in client.topics and (
                event.owner_id in (None, principal.user_id) or principal.role is Role.ADMIN
            ):
                self._enqueue(client, message)

    def _on_alert(self, event: PrinterAlert) -> None:
        self._send(Topic.ALERTS, encode("alert", event.payload()))

    def _on_sessions_revoked(self, event: SessionsRevoked) -> None:
        for client in list(self._clients):
            principal = client.principal
            if principal.user_id == event.user_id and event.session_id in (
                None,
                principal.session_id,
            ):
                why = "its session ended" if event.session_id else "the account's sessions ended"
                self._drop(client, CloseCode.SESSION_ENDED, "session ended", why)

    # -- the serial terminal

    def _watch(self, client: _Client, watching: bool) -> None:
        """Keep `printer.tap.watchers` equal to the terminal subscribers we count."""
        tap = self._printer.tap
        if watching and client not in self._watching:
            if not self._watching:
                self._tap_seen = tap.count  # lines from now on
            self._watching.add(client)
            tap.watchers += 1
        elif not watching and client in self._watching:
            self._watching.discard(client)
            tap.watchers -= 1

    def _send_terminal(self) -> None:
        if not self._watching:
            return
        tap = self._printer.tap
        lines, skipped = tap.since(self._tap_seen)
        self._tap_seen = tap.count
        if not lines and not skipped:
            return
        if len(lines) > TERMINAL_BATCH_LINES:
            skipped += len(lines) - TERMINAL_BATCH_LINES
            lines = lines[-TERMINAL_BATCH_LINES:]
        batch = [{"dir": direction, "text": text} for direction, text in lines]
        message = encode("printer:log", {"lines": batch, "skipped": skipped})
        for client in list(self._watching):
            self._enqueue(client, message)

    # -- what clients send

    def _receive(self, client: _Client, text: str) -> None:
        request_id: RequestId = None
        try:
            body = json.loads(text)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            self._refuse(client, "VALIDATION_ERROR", 'a message is a JSON object {"event": ...}')
            return
        try:
            request_id = _request_id(body.get("id"))
            event, data = body.get("event"), body.get("data")
            if not isinstance(event, str):
                raise UserError('a message needs an "event" string')
            if data is None:
                data = {}
            if not isinstance(data, dict):
                raise UserError('"data" must be an object')
            operation = self._operations.get(event)
            if operation is None:
                raise UserError(f"unknown event {event[:40]!r}")
            requirement = ACCESS.get(f"WS {event}")
            if requirement is None:
                log.error("no access rule for websocket message %s: refused", event)
                raise UserError("this message has no access rule", status=403, code="FORBIDDEN")
            if not allows(client.principal.role, requirement):
                raise UserError(
                    f"the {client.principal.role.value} role may not send {event}",
                    status=403,
                    code="FORBIDDEN",
                )
            operation(client, data, request_id)
        except (UserError, PrinterError) as error:
            self._refuse(client, error.code, str(error), request_id)
        except Exception:
            log.exception("websocket %s: handling a message failed", client.name)
            message = "internal error; the daemon's log has details"
            self._refuse(client, "INTERNAL_ERROR", message, request_id)

    def _topics(self, data: Data) -> set[Topic]:
        names = data.get("topics")
        if not isinstance(names, list) or not names:
            raise UserError('"topics" must be a list of topic names')
        topics = set()
        for name in names:
            try:
                topics.add(Topic(name))
            except ValueError:
                known = ", ".join(topic.value for topic in Topic)
                raise UserError(f"unknown topic {str(name)[:40]!r}; topics: {known}") from None
        return topics

    def _subscribe(self, client: _Client, data: Data, request_id: RequestId) -> None:
        added = self._topics(data) - client.topics
        self._set_topics(client, client.topics | added, request_id, "subscribe")
        if Topic.STATUS in added:
            client.offer_status(self._status_message())
        if Topic.TEMPERATURE in added:
            t = self._printer.temperatures
            hotend = t.tools[0] if t.tools else None
            current = TemperaturesReported(
                hotend_temp=hotend.actual if hotend else None,
                hotend_target=hotend.target if hotend else None,
                bed_temp=t.bed.actual if t.bed else None,
                bed_target=t.bed.target if t.bed else None,
                chamber_temp=t.chamber.actual if t.chamber else None,
            )
            client.offer_temperature(_temperature_message(current))

    def _unsubscribe(self, client: _Client, data: Data, request_id: RequestId) -> None:
        self._set_topics(client, client.topics - self._topics(data), request_id, "unsubscribe")

    def _set_topics(
        self, client: _Client, topics: set[Topic], request_id: RequestId, event: str
    ) -> None:
        client.topics = topics
        self._watch(client, Topic.TERMINAL in topics)
        names = sorted(topic.value for topic in topics)
        self._reply(client, event, {"topics": names}, request_id)

    def _command(
        self, client: _Client, data: Data, request_id: RequestId, event: str, key: str
    ) -> None:
        command = data.get(key)
        if not isinstance(command, str):
            raise UserError(f'"{key}" must be a G-code line')
        command = command.strip()
        if not 1 <= len(command) <= COMMAND_MAX_CHARACTERS:
            raise UserError(f"a command is 1 to {COMMAND_MAX_CHARACTERS} characters")
        if not _PRINTABLE.fullmatch(command):
            raise UserError("a command is one line of printable ASCII")
        if len(client.commands) >= COMMANDS_IN_FLIGHT:
            raise UserError(
                f"{COMMANDS_IN_FLIGHT} commands are already waiting for the printer",
                status=429,
                code="RATE_LIMITED",
            )

        async def run() -> None:
            if not await self._still_allowed(client):
                return
            if not allows(client.principal.role, ACCESS[f"WS {event}"]):
                self._refuse(client, "FORBIDDEN", "the account's role changed", request_id)
                return
            try:
                lines = await self._printer.execute(command)
            except PrinterError as error:
                self._refuse(client, error.code, str(error), request_id)
                return
            answer: Data = {"command": command, "ok": True, "response": lines}
            if request_id is not None:
                answer["id"] = request_id
            self._reply(client, event, answer, request_id)

        task = asyncio.create_task(run(), name=f"ws-command {client.name}")
        client.commands.add(task)
        task.add_done_callback(client.commands.discard)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _emergency(self, client: _Client, data: Data, request_id: RequestId) -> None:
        # At once, in the read loop: nothing this client sent earlier is waited for.
        self._printer.emergency_stop(f"emergency stop by {client.principal.username}")
        self._reply(client, "control:emergency", {"ok": True}, request_id)

    def _control(
        self,
        client: _Client,
        request_id: RequestId,
        event: str,
        operation: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        # Not cancelled when the client goes: a half-made pause would be worse than none.
        async def run() -> None:
            if not await self._still_allowed(client):
                return
            if not allows(client.principal.role, ACCESS[f"WS {event}"]):
                self._refuse(client, "FORBIDDEN", "the account's role changed", request_id)
                return
            try:
                await operation()
            except (UserError, PrinterError) as error:
                self._refuse(client, error.code, str(error), request_id)
            else:
                self._reply(client, event, {"ok": True}, request_id)

        task = asyncio.create_task(run(), name=f"ws-{event} {client.name}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)


async def _every(interval: float, work: Callable[[], None], what: str) -> None:
    """`work()` every `interval` seconds; a failure is logged and the next turn tries again."""
    while True:
        await asyncio.sleep(interval)
        try:
            work()
        except Exception:
            log.exception("%s failed; trying again", what)


def _temperature_message(report: TemperaturesReported) -> bytes:
    data = {camel(key): _finite(value) for key, value in report.payload().items()}
    data["timestamp"] = round(time.time(), 3)
    return encode("temperature:update", data)


def _request_id(value: object) -> RequestId:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and len(value) <= MAX_ID_CHARACTERS:
        return value
    raise UserError(f'"id" must be an integer or a string of at most {MAX_ID_CHARACTERS}')


def _limit_send_buffer(transport: asyncio.Transport | None) -> None:
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity; a reading that is neither is no reading."""
    return value if value is None or math.isfinite(value) else None


def _camel_keys(payload: Data) -> Data:
    return {camel(key): value for key, value in payload.items()}


__all__ = ["CLIENT_EVENTS", "DEFAULT_TOPICS", "CloseCode", "Hub", "Topic", "encode"]
