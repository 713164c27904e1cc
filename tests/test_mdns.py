"""The appliance found on the network: a second, real zeroconf browses and resolves what the
daemon announces, on loopback only (nothing here may announce on the machine's network)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from zeroconf import ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from lezerprintd import __version__
from lezerprintd.config import MdnsConfig
from lezerprintd.mdns import APPLIANCE_TYPE, HTTP_TYPE, Announcer
from tests.conftest import clean_environment, free_port, until

LOOPBACK = "127.0.0.1"


class Browser:
    """A browser on loopback that remembers which names are announced now."""

    def __init__(self) -> None:
        self.zeroconf = AsyncZeroconf(interfaces=[LOOPBACK])
        self.present: set[str] = set()
        self.browser = AsyncServiceBrowser(
            self.zeroconf.zeroconf, [HTTP_TYPE, APPLIANCE_TYPE], handlers=[self._changed]
        )

    def _changed(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            self.present.discard(name)
        else:
            self.present.add(name)

    async def resolve(self, kind: str, name: str) -> AsyncServiceInfo:
        info = AsyncServiceInfo(kind, name)
        assert await info.async_request(self.zeroconf.zeroconf, 3000), f"{name} did not resolve"
        return info

    async def close(self) -> None:
        await self.browser.async_cancel()
        await self.zeroconf.async_close()


async def test_both_services_are_announced_resolved_and_withdrawn(tmp_path: Path) -> None:
    browser = Browser()
    name = f"Test printer {tmp_path.name}"
    announcer = Announcer(MdnsConfig(interfaces=LOOPBACK, name=name), tmp_path, 8123)
    try:
        await announcer.start()
        wanted = {f"{name}.{HTTP_TYPE}", f"{name}.{APPLIANCE_TYPE}"}
        await until(lambda: wanted <= browser.present, 10, "both services in the browser")
        info = await browser.resolve(APPLIANCE_TYPE, f"{name}.{APPLIANCE_TYPE}")
        assert info.port == 8123
        assert info.parsed_addresses() == [LOOPBACK]
        assert info.server == f"{socket.gethostname().split('.')[0]}.local."
        txt = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
        appliance_id = (tmp_path / "appliance-id").read_text().strip()
        assert txt == {"version": __version__, "api": "/api", "uuid": appliance_id, "name": name}
        web = await browser.resolve(HTTP_TYPE, f"{name}.{HTTP_TYPE}")
        assert web.properties == {b"path": b"/"}
        await until(lambda: announcer.announced == [LOOPBACK], 10, "the announcement to end")
        await announcer.stop()
        # Goodbye packets: the browser forgets it at once, not after the records' lifetime.
        await until(lambda: not (wanted & browser.present), 10, "the services to be withdrawn")
    finally:
        await announcer.stop()
        await browser.close()
    # The id stays the appliance's: the next start announces the same one.
    again = Announcer(MdnsConfig(interfaces=LOOPBACK, name=name), tmp_path, 8123)
    assert (tmp_path / "appliance-id").read_text().strip() == appliance_id
    await again.stop()


async def test_a_name_already_taken_gets_a_number(tmp_path: Path) -> None:
    browser = Browser()
    twin = f"Twin {tmp_path.name}"
    config = MdnsConfig(interfaces=LOOPBACK, name=twin)
    first = Announcer(config, tmp_path / "a", 8001)
    second = Announcer(config, tmp_path / "b", 8002)

    def twins() -> int:  # only this test's: other programs may announce on loopback too
        return sum(name.startswith(twin) for name in browser.present)

    try:
        await first.start()
        await until(lambda: twins() == 2, 10, "the first appliance")
        await second.start()
        await until(lambda: twins() == 4, 15, "the second, renamed")
        assert f"Twin {tmp_path.name}-2.{APPLIANCE_TYPE}" in browser.present
    finally:
        await first.stop()
        await second.stop()
        await browser.close()


async def test_off_announces_nothing(tmp_path: Path) -> None:
    announcer = Announcer(MdnsConfig(enabled=False), tmp_path, 80)
    await announcer.start()
    await asyncio.sleep(0)
    assert announcer.announced == []
    await announcer.stop()
    assert not (tmp_path / "appliance-id").exists()


async def test_the_daemon_is_found_and_answers_where_it_says(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[mdns]\nname = "Daemon under test"\n')
    port = free_port()
    command = [
        sys.executable, "-m", "lezerprintd", "serve", "--printer", "sim", "--host", LOOPBACK,
        "--port", str(port), "--data-dir", str(tmp_path / "data"), "--config", str(config),
        "--mdns", LOOPBACK,
    ]  # fmt: skip
    browser = Browser()
    daemon = await asyncio.to_thread(
        subprocess.Popen,
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_environment(),
    )
    try:
        name = f"Daemon under test.{APPLIANCE_TYPE}"
        await until(lambda: name in browser.present, 20, "the daemon's announcement")
        info = await browser.resolve(APPLIANCE_TYPE, name)
        address, found_port = info.parsed_addresses()[0], info.port
        api = info.properties[b"api"].decode()
        url = f"http://{address}:{found_port}{api}/health"
        answer = await asyncio.to_thread(lambda: json.load(urllib.request.urlopen(url, timeout=5)))
        assert answer["data"]["status"] == "ok"
        daemon.send_signal(signal.SIGTERM)
        _, errors = await asyncio.to_thread(daemon.communicate, timeout=30)
        assert daemon.returncode == 0, errors
        # It said goodbye on the way out.
        await until(lambda: name not in browser.present, 10, "the goodbye")
    finally:
        if daemon.returncode is None:
            daemon.kill()
            await asyncio.to_thread(daemon.communicate, timeout=30)
        await browser.close()


@pytest.mark.parametrize(
    ("flag", "says"),
    [("192.168.1.x", '"192.168.1.x"'), ("127.0.0.1,,", '""'), ("everywhere", '"everywhere"')],
)
def test_a_bad_mdns_flag_is_one_clear_line(tmp_path: Path, flag: str, says: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "lezerprintd", "serve", "--printer", "sim", "--config",
         str(config), "--data-dir", str(tmp_path), "--mdns", flag],
        capture_output=True, text=True, env=clean_environment(), timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "--mdns" in result.stderr
    assert says in result.stderr
