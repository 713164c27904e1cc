"""mDNS between two network namespaces this test creates (a veth pair, link-local addresses):
the announcer announces on "all" its interfaces, a browser in the other namespace resolves it,
and when the announcing side gains an address the browser is told the new one. Nothing here
touches the machine's own network. Needs root (ip netns)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ANNOUNCE = """
import asyncio, sys
from pathlib import Path
from lezerprintd import mdns
from lezerprintd.config import MdnsConfig
mdns.CHECK_SECONDS = 0.5  # look at the addresses often: the test waits on the change
async def main():
    config = MdnsConfig(interfaces="all", name="Netns printer")
    announcer = mdns.Announcer(config, Path(sys.argv[1]), 8080)
    await announcer.start()
    await asyncio.sleep(3600)
asyncio.run(main())
"""

BROWSE = """
import json, time
from zeroconf import ServiceBrowser, ServiceInfo, Zeroconf
zc = Zeroconf()
def changed(zeroconf, service_type, name, state_change):
    info = ServiceInfo(service_type, name)
    if info.request(zeroconf, 3000):
        print(json.dumps({"name": name, "addresses": sorted(info.parsed_addresses())}), flush=True)
ServiceBrowser(zc, "_lezerprint._tcp.local.", handlers=[changed])
time.sleep(3600)
"""


def ip(*arguments: str) -> None:
    subprocess.run(["ip", *arguments], check=True, capture_output=True)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    assert os.geteuid() == 0, "this test needs root to create network namespaces"
    assert shutil.which("ip"), "ip is missing: apt-get install iproute2"
    tag = str(os.getpid())
    a, b = f"lzp-a{tag}", f"lzp-b{tag}"
    ip("netns", "add", a)
    ip("netns", "add", b)
    try:
        ip("link", "add", f"va{tag}", "type", "veth", "peer", "name", f"vb{tag}")
        ip("link", "set", f"va{tag}", "netns", a)
        ip("link", "set", f"vb{tag}", "netns", b)
        for space, device, address in (
            (a, f"va{tag}", "169.254.10.1"),
            (b, f"vb{tag}", "169.254.10.2"),
        ):
            ip("-n", space, "addr", "add", f"{address}/16", "dev", device)
            ip("-n", space, "link", "set", device, "up", "multicast", "on")
            ip("-n", space, "link", "set", "lo", "up")
        yield a, b
    finally:
        ip("netns", "del", a)
        ip("netns", "del", b)


class Reports:
    """The browser's reports, read on a thread of their own so waiting has a timeout."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        stdout = process.stdout
        threading.Thread(
            target=lambda: [self._queue.put(line) for line in stdout], daemon=True
        ).start()

    def until(self, wanted: str, seconds: float) -> dict[str, object]:
        """The first report whose addresses include `wanted`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                report: dict[str, object] = json.loads(self._queue.get(timeout=left))
            except queue.Empty:
                break
            if wanted in report["addresses"]:  # type: ignore[operator]
                return report
        raise AssertionError(f"the browser never saw {wanted} within {seconds} s")


def test_the_announcement_follows_a_new_address(
    namespaces: tuple[str, str], tmp_path: Path
) -> None:
    a, b = namespaces
    tag = str(os.getpid())
    announcer = subprocess.Popen(
        ["ip", "netns", "exec", a, sys.executable, "-c", ANNOUNCE, str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    browser = subprocess.Popen(
        ["ip", "netns", "exec", b, sys.executable, "-c", BROWSE],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        reports = Reports(browser)
        first = reports.until("169.254.10.1", 20)
        assert first["name"] == "Netns printer._lezerprint._tcp.local."
        assert first["addresses"] == ["169.254.10.1"]  # loopback is not announced
        ip("-n", a, "addr", "add", "169.254.20.1/16", "dev", f"va{tag}")  # a new lease, say
        later = reports.until("169.254.20.1", 20)
        assert later["addresses"] == ["169.254.10.1", "169.254.20.1"]
    finally:
        for process in (announcer, browser):
            process.kill()
            process.communicate()
