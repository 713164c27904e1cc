"""The raw serial log: every byte both ways, in a rotating file that never outgrows its cap."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

from lezerprintd import logs
from lezerprintd.printer.virtual import VirtualPrinter
from lezerprintd.store.jobs import JobStatus
from tests.conftest import gcode_file, make_config, moves, running


async def test_serial_traffic_goes_to_a_size_capped_rotating_file(
    start_virtual: Callable[..., VirtualPrinter], tmp_path: Path
) -> None:
    virtual = start_virtual(speedup=10_000)
    config = make_config(tmp_path, virtual.path)
    config = dataclasses.replace(
        config,
        logging=dataclasses.replace(
            config.logging, serial_log=True, serial_log_max_bytes=20_000, serial_log_backups=2
        ),
    )
    stop = logs.setup(config.logging, config.serial_log_file, console=False)
    try:
        path = gcode_file(tmp_path / "logged.gcode", moves(3000))
        async with running(config) as appliance:
            job_id = await appliance.jobs.start_job(path)
            record = await asyncio.wait_for(appliance.jobs.wait(job_id), 60)
    finally:
        stop()
    assert record.status is JobStatus.COMPLETED
    log_dir = tmp_path / "logs"
    files = sorted(log_dir.iterdir())
    assert [f.name for f in files] == ["serial.log", "serial.log.1", "serial.log.2"]
    assert all(f.stat().st_size <= 20_000 + 2_000 for f in files)
    newest = (log_dir / "serial.log").read_text()
    assert ">> b'N" in newest  # what we sent, line numbers and all
    assert "<< b'ok" in newest or "<< b'" in newest
    assert not logging.getLogger(logs.SERIAL_LOGGER).isEnabledFor(logging.DEBUG)


def test_without_the_setting_nothing_is_written(tmp_path: Path) -> None:
    config = make_config(tmp_path, "/dev/null")
    stop = logs.setup(config.logging, config.serial_log_file, console=False)
    stop()
    assert not (tmp_path / "logs").exists()
