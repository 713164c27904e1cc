"""Shared fixtures: a virtual Marlin on a real pty, and the appliance's rooms wired to it.

Everything is real: the pty, pyserial-asyncio-fast, the SQLite file in tmp_path, the job
engine reading files from disk. Waiting is on events or conditions, always with a deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import faulthandler
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from lezerprintd.app import Appliance
from lezerprintd.bus import Bus, BusEvent
from lezerprintd.config import Config, load_config
from lezerprintd.printer.printer import PrinterState
from lezerprintd.printer.virtual import VirtualOptions, VirtualPrinter

if TYPE_CHECKING:
    from tests.test_api import Served

E = TypeVar("E", bound=BusEvent)

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"


def corpus_file(name: str) -> Path:
    """A real slicer file from ../shared/corpus (see its README); the test skips, saying
    why, in a checkout that has no corpus beside it."""
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"the slicer corpus is not at {CORPUS} (it sits beside the project in CI)")
    return path


# What the slow tests build once and keep between runs (a Debian root, unpacked packages).
CACHE = Path(os.environ.get("LEZERPRINT_CACHE", Path.home() / ".cache" / "lezerprint"))


def need(tool: str, package: str) -> str:
    """The path of `tool`; a failure naming the Debian package when it is missing."""
    found = shutil.which(tool)
    assert found, f"{tool} is missing: apt-get install {package} (./dev.sh does)"
    return found


def built_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """`folder`, made by `build(partial)` the first time: built beside it, marked complete and
    renamed into place, so an interrupted build is never taken for a finished one."""
    if (folder / ".complete").exists():
        return folder
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    build(partial)
    (partial / ".complete").touch()
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


# No test (set-up and tear-down included) takes anywhere near this; one that does is stuck.
STUCK_SECONDS = 300


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "stuck_after(seconds): a longer limit than STUCK_SECONDS for slow work"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """A stuck test prints what every asyncio task and thread is waiting on, then stops the
    run, instead of hanging until an outer timeout kills it without a word."""
    marker = item.get_closest_marker("stuck_after")  # slower by nature: emulated builds
    seconds = float(marker.args[0]) if marker else STUCK_SECONDS
    watchdog = threading.Timer(seconds, _report_stuck, args=(item, seconds))
    watchdog.daemon = True
    watchdog.start()
    try:
        return (yield)
    finally:
        watchdog.cancel()


def _report_stuck(item: pytest.Item, seconds: float) -> None:
    capture = item.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture(in_=False)  # let the report reach the terminal or CI log
    out = sys.stderr
    print(f"\n==== {item.nodeid} has run for {seconds:.0f} s; what waits:", file=out)
    # The test's loop is blocked in select(); its tasks can still be read from here.
    for task in list(asyncio.tasks._all_tasks):  # type: ignore[attr-defined]
        if not task.done():
            print(f"---- task {task.get_name()}: {task!r}"[:400], file=out)
            task.print_stack(file=out)
    faulthandler.dump_traceback(file=out)
    out.flush()
    # A real signal: it breaks the loop's blocking select(), which interrupt_main() cannot.
    os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture
def start_virtual() -> Iterator[Callable[..., VirtualPrinter]]:
    """Start virtual printers with given options (and link); all are stopped afterwards."""
    started: list[VirtualPrinter] = []

    def start(link: Path | None = None, **options: Any) -> VirtualPrinter:
        printer = VirtualPrinter(VirtualOptions(**options), link=link)
        printer.start()
        started.append(printer)
        return printer

    yield start
    for printer in started:
        printer.stop()


@pytest.fixture
async def served(
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
    start_virtual: Callable[..., VirtualPrinter],
) -> Served:
    """The app on a loopback port over a fast virtual printer, one account per role signed
    in (tests/test_api.py's `serve`; modules that need other rooms make their own)."""
    from tests.test_api import serve  # it imports this module's helpers

    return await serve(aiohttp_client, tmp_path, start_virtual(speedup=1000))


def make_config(data_dir: Path, port: str, **printer: Any) -> Config:
    """Defaults (no config file, no environment) rooted in `data_dir`, printing to `port`."""
    config = load_config(path=None, env={})
    server = dataclasses.replace(config.server, data_dir=data_dir, host="127.0.0.1", port=0)
    printer_config = dataclasses.replace(config.printer, port=port, baud=115200, **printer)
    return dataclasses.replace(config, server=server, printer=printer_config)


@asynccontextmanager
async def running(
    config: Config, virtual: VirtualPrinter | None = None, **jobs: Any
) -> AsyncIterator[Appliance]:
    """The appliance's rooms, started, with the printer connected. Opening the port resets
    `virtual` as DTR resets a real board."""
    if jobs:
        config = dataclasses.replace(config, jobs=dataclasses.replace(config.jobs, **jobs))
    reset = virtual.reset if virtual is not None else None
    async with Appliance(config, board_reset=reset) as appliance:
        await until(lambda: appliance.printer.state is PrinterState.OPERATIONAL, 10)
        yield appliance


async def until(condition: Callable[[], bool], seconds: float = 10.0, what: str = "") -> None:
    """Wait until `condition()` holds; fail with `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what or condition}")
        await asyncio.sleep(0.01)


class Events:
    """Everything published on a bus, with waiting for a particular event."""

    def __init__(self, bus: Bus) -> None:
        self.seen: list[BusEvent] = []
        self._arrived = asyncio.Event()
        bus.subscribe(BusEvent, self._record)

    def _record(self, event: BusEvent) -> None:
        self.seen.append(event)
        self._arrived.set()

    async def wait_for(
        self, kind: type[E], predicate: Callable[[E], bool] = lambda _: True, seconds: float = 10
    ) -> E:
        deadline = time.monotonic() + seconds
        checked = 0
        while True:
            for event in self.seen[checked:]:
                if isinstance(event, kind) and predicate(event):
                    return event
            checked = len(self.seen)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {kind.__name__} matching within {seconds} s")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                continue


def clean_environment() -> dict[str, str]:
    """This process's environment without LEZERPRINT_* settings, for a lezerprintd child."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LEZERPRINT_")}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def gcode_file(path: Path, commands: list[str], header: str = "; made by the tests\n") -> Path:
    """Write `commands` as a G-code file with comments and blank lines the engine must skip."""
    with path.open("w") as out:
        out.write(header)
        for index, command in enumerate(commands):
            out.write(f"{command} ; line {index}\n")
            if index % 50 == 0:
                out.write("\n;LAYER_CHANGE\n")
    return path


def moves(count: int, start: int = 0) -> list[str]:
    return [
        f"G1 X{(i % 150) + 10}.{i % 10} Y{(i * 7) % 150 + 10}.5 E{i * 0.02:.3f}"
        for i in range(start, start + count)
    ]
