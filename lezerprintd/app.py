"""Builds the appliance: every room constructed and wired here, started and stopped in order.

Rule: only this module constructs rooms and connects them; rooms get their config section and
collaborators as constructor arguments. Rooms start in dependency order and stop in reverse
(aiohttp's cleanup contexts), so a stopping daemon finishes the job record before it closes
the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from lezerprintd.api import accounts as accounts_api
from lezerprintd.api import analytics as analytics_api
from lezerprintd.api import camera as camera_api
from lezerprintd.api import files as files_api
from lezerprintd.api import jobs as jobs_api
from lezerprintd.api import macros as macros_api
from lezerprintd.api import presets as presets_api
from lezerprintd.api import printer as printer_api
from lezerprintd.api import profile as profile_api
from lezerprintd.api import spec, system
from lezerprintd.api.envelope import add_security_headers, errors_middleware
from lezerprintd.api.pacing import pacing_middleware
from lezerprintd.auth.middleware import access_middleware
from lezerprintd.auth.offline import refuse_foreign_root
from lezerprintd.auth.permissions import Principal
from lezerprintd.auth.service import Auth
from lezerprintd.bus import Bus, BusEvent, JobProgressed, JobStatusChanged, PrinterStatusChanged
from lezerprintd.camera.camera import Camera
from lezerprintd.camera.timelapse import Timelapses
from lezerprintd.config import Config, GpioConfig
from lezerprintd.errors import ConfigError, LezerError, PrinterError, UserError
from lezerprintd.files.library import Library
from lezerprintd.gpio import Gpio
from lezerprintd.pages import add_pages
from lezerprintd.printer.jobs import Jobs
from lezerprintd.printer.printer import Printer, PrinterState
from lezerprintd.profile import Profile
from lezerprintd.store import Store
from lezerprintd.store.jobs import JobRecord
from lezerprintd.ws import Hub

if TYPE_CHECKING:
    from lezerprintd.printer.virtual import VirtualPrinter

log = logging.getLogger(__name__)

DATABASE_NAME: Final = "lezerprint.db"
# Each module's endpoints(appliance) declares its routes; the order is the OpenAPI order.
API_MODULES: Final = (
    system,
    accounts_api,
    printer_api,
    profile_api,
    presets_api,
    macros_api,
    jobs_api,
    files_api,
    camera_api,
    analytics_api,
)

APPLIANCE: web.AppKey[Appliance] = web.AppKey("appliance")


def build_app(config: Config, appliance: Appliance | None = None) -> web.Application:
    """The aiohttp application over the appliance's rooms, which start when the app starts.

    Handlers reach the rooms through the appliance at request time, so the routes, the
    middlewares and the OpenAPI description exist before any room has started.
    """
    appliance = appliance or Appliance(config)
    pacing = pacing_middleware(config.server.paced_reads_per_second, appliance.printing)
    app = web.Application(middlewares=[errors_middleware, pacing, access_middleware(appliance)])
    app[APPLIANCE] = appliance
    app.on_response_prepare.append(add_security_headers)
    app.cleanup_ctx.append(_rooms(appliance))
    # Open sockets first: aiohttp waits for running handlers before the cleanup runs.
    app.on_shutdown.append(lambda _: appliance.hub.stop())
    endpoints = [endpoint for module in API_MODULES for endpoint in module.endpoints(appliance)]
    document = spec.openapi(endpoints)

    async def handle_openapi(request: web.Request) -> web.Response:
        """The OpenAPI description of every route, generated from their declarations."""
        return web.json_response(document)

    async def handle_ws(request: web.Request) -> web.StreamResponse:
        """The live websocket (see docs/api.md)."""
        return await appliance.hub.handle(request)

    app.router.add_routes([endpoint.route() for endpoint in endpoints])
    app.router.add_get("/api/openapi.json", handle_openapi)
    app.router.add_get("/ws", handle_ws)
    add_pages(app, appliance)
    return app


def _rooms(appliance: Appliance) -> Callable[[web.Application], AsyncIterator[None]]:
    async def rooms(app: web.Application) -> AsyncIterator[None]:
        async with appliance:
            yield

    return rooms


class Appliance:
    """The rooms the web app and the headless `print` command share, wired together.

    Constructing it does nothing; `async with` starts the rooms in dependency order and stops
    them in reverse. `web=False` (the headless print) leaves out accounts and the websocket.
    """

    def __init__(
        self,
        config: Config,
        database: Path | str | None = None,
        auto_connect: bool = True,
        board_reset: Callable[[], None] | None = None,
        web: bool = True,
    ) -> None:
        self.config = config
        self._database = database or config.server.data_dir / DATABASE_NAME
        self._auto_connect = auto_connect
        # What opening the port does to the board: a real one reboots on DTR, the built-in
        # virtual printer (or a test's) is told to.
        self._board_reset = board_reset
        self._web = web
        self._running = contextlib.AsyncExitStack()
        self.bus = Bus()
        self.virtual: VirtualPrinter | None = None
        self.store: Store
        self.auth: Auth
        self.printer: Printer
        self.jobs: Jobs
        self.library: Library
        self.gpio: Gpio
        self.gpio_error = ""  # why the pins Settings set are unused, or ""
        self.profile: Profile
        self._changing = asyncio.Lock()  # one profile change at a time
        self.camera: Camera | None = None
        self.timelapses: Timelapses | None = None
        self.hub: Hub

    async def __aenter__(self) -> Appliance:
        running = contextlib.AsyncExitStack()
        try:
            await self._start(running)
        except BaseException:
            await running.aclose()
            raise
        self._running = running
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._running.aclose()

    async def _start(self, running: contextlib.AsyncExitStack) -> None:
        self.store = await Store.open(self._database)
        running.push_async_callback(self.store.close)
        self.profile = Profile(self.store, self.config)
        self.config = await self.profile.load()
        if self._web:
            self.auth = Auth(self.store, self.config.server.data_dir, self.bus)
            await self.auth.start()
            self.library = Library(
                self.config.files, self.config.server.data_dir, self.store, self.bus
            )
            await self.library.start()
            running.push_async_callback(self.library.stop)
        printer_config = self.config.printer
        if printer_config.port == "sim":  # only from the file or at launch: see profile.py
            # Imported here: an appliance with a real printer never loads the simulator.
            from lezerprintd.printer.virtual import VirtualOptions, VirtualPrinter

            self.virtual = VirtualPrinter(
                VirtualOptions(speedup=self.config.sim.speedup, record_accepted=False)
            )
            path = self.virtual.start()
            running.callback(self.virtual.stop)
            printer_config = dataclasses.replace(printer_config, port=path, baud=115200)
            self._board_reset = self.virtual.reset
        self.printer = Printer(
            printer_config,
            self.bus,
            self.store,
            board_reset=self._board_reset,
            auto_connect=self._auto_connect,
        )
        await self.printer.start()
        running.push_async_callback(self.printer.stop)
        self.jobs = Jobs(self.config.jobs, self.printer, self.store, self.bus)
        await self.jobs.start()
        running.push_async_callback(self.jobs.stop)
        if self._web:
            if self.config.camera.source != "off":
                self.camera = Camera(self.config.camera, self.config.server.data_dir)
                await self.camera.start()
                running.push_async_callback(self.camera.stop)
                self.timelapses = Timelapses(
                    self.camera, self.bus, self.store, self.config.server.data_dir
                )
                await self.timelapses.start()
                running.push_async_callback(self.timelapses.stop)
            await self._start_gpio(self.config.gpio)
            running.push_async_callback(self._stop_gpio)
            self.hub = Hub(self.bus, self.printer, self.jobs, recheck=self.auth.recheck)
            await self.hub.start()
            running.push_async_callback(self.hub.stop)

    async def _stop_gpio(self) -> None:
        await self.gpio.stop()  # the one running at the end: Settings may have replaced it

    async def change_profile(self, part: str, values: Mapping[str, Any] | None) -> None:
        """Change (or, with None, forget) Settings' `part` of the profile ("printer" or "gpio",
        see profile.py) and hand the result to the rooms that use it: limits at once, the
        pause/resume/cancel G-code at its next use, the serial port at the next connection,
        the pins reopened now. One change at a time, each applying all that is kept.

        Raises UserError: the profile's refusals; 409 for pins while a print runs (a runout
        being confirmed would be lost); 409 when new pins cannot be opened (the change is
        kept and the pins stay unused until it is corrected)."""
        async with self._changing:
            if part == "gpio" and self.jobs.current is not None:
                raise UserError(
                    "the pins are changed only between prints", status=409, code="CONFLICT"
                )
            if values is None:
                await self.profile.reset(part)
            else:
                await self.profile.change(part, values)
            self.config = config = self.profile.current()
            printer_config = config.printer
            if self.virtual is not None:  # its pseudo-terminal stays the link
                current = self.printer.settings
                printer_config = dataclasses.replace(
                    printer_config, port=current.port, baud=current.baud
                )
            self.printer.reconfigure(printer_config)
            self.jobs.config = config.jobs
            if self._web and config.gpio != self.gpio.config:
                await self._start_gpio(config.gpio, previous=self.gpio)
                if self.gpio_error:
                    raise UserError(
                        f"kept, but the pins cannot be used: {self.gpio_error}",
                        status=409,
                        code="CONFLICT",
                    )

    async def _start_gpio(self, config: GpioConfig, previous: Gpio | None = None) -> None:
        """Start a Gpio with `config`, in place of `previous`. Pins the file set that cannot
        be used stop the start (ConfigError); pins Settings set leave them unused, with the
        reason in `gpio_error`, so that Settings can still correct them."""
        taken_over: tuple[Any, Any] = (None, None)
        if previous is not None:
            taken_over = previous.hand_over(config)
            await previous.stop()
        self.gpio = Gpio(
            config, self.printer, self.jobs, self.bus, self.store, taken_over=taken_over
        )
        self.gpio_error = ""
        try:
            await self.gpio.start()
        except ConfigError as error:
            if not self.profile.edited("gpio"):
                raise
            log.error("the GPIO pins set in Settings cannot be used, so none is: %s", error)
            self.gpio_error = str(error)
            off = dataclasses.replace(config, factory="off")
            self.gpio = Gpio(off, self.printer, self.jobs, self.bus, self.store)

    def printing(self) -> bool:
        """A print is streaming lines to the printer now."""
        return self.printer.state is PrinterState.PRINTING

    async def authenticate(
        self, *, bearer: str | None, api_key: str | None, cookie: str | None
    ) -> Principal | None:
        """The access middleware's `Authenticator`: the auth room, once it has started."""
        return await self.auth.authenticate(bearer=bearer, api_key=api_key, cookie=cookie)


@contextlib.asynccontextmanager
async def offline_accounts(data_dir: Path) -> AsyncIterator[Auth]:
    """The auth room alone, over the appliance's database: `lezerprintd user` uses it,
    whether or not the daemon runs (see auth/offline.py)."""
    refuse_foreign_root(data_dir)
    store = await Store.open(data_dir / DATABASE_NAME)
    try:
        yield Auth(store, data_dir, Bus())
    finally:
        await store.close()


async def print_file(
    config: Config,
    path: Path,
    on_event: Callable[[BusEvent], None] | None = None,
    database: Path | str = ":memory:",
) -> JobRecord:
    """Connect, print `path` through the job engine and return the finished job's record.

    Raises PrinterError when no printer answers on the configured port. A cancelled or
    interrupted run (Ctrl-C) cancels the job and returns its record.
    """
    async with Appliance(config, database, auto_connect=False, web=False) as appliance:
        if on_event is not None:
            appliance.bus.subscribe(BusEvent, on_event)
        await appliance.printer.connect()
        job_id = await appliance.jobs.start_job(path)
        try:
            return await appliance.jobs.wait(job_id)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await appliance.jobs.cancel()
            return await asyncio.shield(appliance.jobs.wait(job_id))


def run_server(config: Config) -> int:
    """Serve until SIGINT/SIGTERM; rooms stop in reverse order. Raises LezerError when the
    address cannot be bound."""
    asyncio.run(_serve(config))
    return 0


async def _serve(config: Config) -> None:
    """The daemon's life, told to systemd: READY once the rooms run and the port listens,
    STATUS as the printer changes, WATCHDOG from this loop, STOPPING on the way out."""
    from lezerprintd.mdns import Announcer
    from lezerprintd.sd import Notifier, block_loop_on_signal

    host, port = config.server.host, config.server.port
    notifier = Notifier()
    app = build_app(config)
    appliance = app[APPLIANCE]
    runner = web.AppRunner(app, handle_signals=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    stack = contextlib.AsyncExitStack()  # what starts after the server, stopped before it
    try:
        await runner.setup()  # the rooms start here: the store is open after it
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as error:
            raise LezerError(f"cannot listen on {host}:{port}: {error.strerror}") from error
        for address in runner.addresses:
            log.info("listening on http://%s:%d", *address[:2])
        announcer = Announcer(config.mdns, config.server.data_dir, runner.addresses[0][1])
        await announcer.start()
        stack.push_async_callback(announcer.stop)
        block_loop_on_signal(loop)
        notifier.ready(_status_line(appliance))
        for kind in (PrinterStatusChanged, JobStatusChanged, JobProgressed):
            appliance.bus.subscribe(kind, lambda _: notifier.status(_status_line(appliance)))
        notifier.start_watchdog()
        await stop.wait()
        log.info("stopping")
    finally:
        notifier.stopping()
        await stack.aclose()
        await runner.cleanup()
        await notifier.close()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(number)


def _status_line(appliance: Appliance) -> str:
    """One line for `systemctl status`: what the printer is doing."""
    job = appliance.jobs.current
    state = appliance.printer.state
    if job is not None and state in (PrinterState.PRINTING, PrinterState.PAUSED):
        return f"{state.value} {job.file_name}: {job.progress:.0f}%"
    return f"printer {state.value}"


__all__ = ["Appliance", "PrinterError", "build_app", "print_file", "run_server"]
