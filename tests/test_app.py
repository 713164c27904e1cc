"""The web app's public endpoints, served by the real app with its rooms and virtual printer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from aiohttp.test_utils import TestClient

from lezerprintd.app import APPLIANCE, build_app
from lezerprintd.printer.printer import PrinterState
from tests.conftest import make_config, until


async def test_health_and_status_answer_in_the_envelope(
    aiohttp_client: type[TestClient],
    tmp_path: Path,  # type: ignore[type-arg]
) -> None:
    config = make_config(tmp_path, "sim")
    config = dataclasses.replace(config, sim=dataclasses.replace(config.sim, speedup=100))
    app = build_app(config)
    client = await aiohttp_client(app)  # type: ignore[operator]
    await until(
        lambda: app[APPLIANCE].printer.state is PrinterState.OPERATIONAL, 10, "the sim printer"
    )
    health = await (await client.get("/api/health")).json()
    assert health["success"] is True
    assert health["data"]["status"] == "ok"
    status = await (await client.get("/api/status")).json()
    assert status["data"]["printer"] == {"state": "operational", "connected": True}
    assert (tmp_path / "lezerprint.db").exists()
