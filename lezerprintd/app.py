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
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from aiohttp import web

from lezerprintd import __version__
from lezerprintd.bus import Bus, BusEvent
from lezerprintd.config import Config
from lezerprintd.errors import LezerError, PrinterError
from lezerprintd.printer.jobs import Jobs
from lezerprintd.printer.printer import Printer
from lezerprintd.store import Store
from lezerprintd.store.jobs import JobRecord

if TYPE_CHECKING:
    from lezerprintd.printer.virtual import VirtualPrinter

log = logging.getLogger(__name__)

DATABASE_NAME: Final = "lezerprint.db"

STORE = web.AppKey("store", Store)
BUS = web.AppKey("bus", Bus)
PRINTER = web.AppKey("printer", Printer)
JOBS = web.AppKey("jobs", Jobs)
VIRTUAL: web.AppKey[VirtualPrinter] = web.AppKey("virtual")


def build_app(config: Config) -> web.Application:
    """The aiohttp application with every room; they start when the app starts."""
    app = web.Application()
    app.cleanup_ctx.append(_rooms(config))
    app.router.add_routes(
        [
            web.get("/api/health", handle_health),
            web.get("/api/status", handle_status),
        ]
    )
    return app


def _rooms(config: Config) -> Callable[[web.Application], AsyncIterator[None]]:
    async def rooms(app: web.Application) -> AsyncIterator[None]:
        async with Appliance(config) as appliance:
            app[STORE] = appliance.store
            app[BUS] = appliance.bus
            app[PRINTER] = appliance.printer
            app[JOBS] = appliance.jobs
            if appliance.virtual is not None:
                app[VIRTUAL] = appliance.virtual
            yield

    return rooms


class Appliance:
    """The rooms the web app and the headless `print` command share, wired together."""

    def __init__(
        self,
        config: Config,
        database: Path | str | None = None,
        auto_connect: bool = True,
        board_reset: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self._database = database or config.server.data_dir / DATABASE_NAME
        self._auto_connect = auto_connect
        # What opening the port does to the board: a real one reboots on DTR, the built-in
        # virtual printer (or a test's) is told to.
        self._board_reset = board_reset
        self.bus = Bus()
        self.virtual: VirtualPrinter | None = None
        self.store: Store
        self.printer: Printer
        self.jobs: Jobs

    async def __aenter__(self) -> Appliance:
        self.store = await Store.open(self._database)
        try:
            printer_config = self.config.printer
            if printer_config.port == "sim":
                # Imported here: an appliance with a real printer never loads the simulator.
                from lezerprintd.printer.virtual import VirtualOptions, VirtualPrinter

                self.virtual = VirtualPrinter(
                    VirtualOptions(speedup=self.config.sim.speedup, record_accepted=False)
                )
                path = self.virtual.start()
                printer_config = dataclasses.replace(printer_config, port=path, baud=115200)
                self._board_reset = self.virtual.reset
            self.printer = Printer(
                printer_config,
                self.bus,
                self.store,
                board_reset=self._board_reset,
                auto_connect=self._auto_connect,
            )
            self.jobs = Jobs(self.config.jobs, self.printer, self.store, self.bus)
            await self.printer.start()
            try:
                await self.jobs.start()
            except BaseException:
                await self.printer.stop()
                raise
        except BaseException:
            await self._close_rest()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.jobs.stop()
            await self.printer.stop()
        finally:
            await self._close_rest()

    async def _close_rest(self) -> None:
        if self.virtual is not None:
            self.virtual.stop()
        await self.store.close()


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
    async with Appliance(config, database, auto_connect=False) as appliance:
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
    host, port = config.server.host, config.server.port
    try:
        web.run_app(
            build_app(config),
            host=host,
            port=port,
            print=lambda _: log.info("listening on http://%s:%d", host, port),
            handle_signals=True,
        )
    except OSError as error:
        raise LezerError(f"cannot listen on {host}:{port}: {error.strerror}") from error
    return 0


# -- handlers: parse, ask a room, answer in the envelope


def _ok(data: object) -> web.Response:
    return web.json_response({"success": True, "data": data})


async def handle_health(request: web.Request) -> web.Response:
    """Liveness: the daemon answers (public)."""
    return _ok({"status": "ok", "version": __version__, "timestamp": _iso_now()})


async def handle_status(request: web.Request) -> web.Response:
    """The daemon and its printer link, in one glance (public, nothing sensitive)."""
    printer = request.app[PRINTER]
    state = printer.state
    return _ok(
        {
            "server": "LezerPrint",
            "status": "running",
            "version": __version__,
            "timestamp": _iso_now(),
            "printer": {"state": state.value, "connected": printer.connected},
        }
    )


def _iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


__all__ = ["Appliance", "PrinterError", "build_app", "print_file", "run_server"]
