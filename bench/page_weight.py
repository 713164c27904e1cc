"""What the dashboard costs a browser: bytes transferred for a cold load (empty cache, signed
in, everything included: page, styles, scripts, the camera's still picture, the websocket's
first messages) and for a warm reload, and the time from navigation to the first live
temperature on the page. Debian's Chromium, driven by Playwright, against a real daemon with
its virtual printer and test-pattern camera on loopback.

    .venv/bin/python bench/page_weight.py

Bytes are what the network carried: HTTP headers and bodies as sent (compressed), and the
websocket's upgrade headers and frames. The camera's live view is shown only when asked for
(the choice is remembered per browser), so it is not part of the load. Targets (issue 5):
cold under 150 KB, warm under 5 KB. OctoPrint's UI,
measured the same way after login (the issue's anchor): 1,539 KB cold, 948 KB warm.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import CDPSession, Page, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from daemon import PASSWORD, add_bench_user, clean_environment, rss_mb, serving

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
RUNS = 5
SETTLE_SECONDS = 2.0  # after the first temperature, what else the page loads by itself


class Meter:
    """Bytes the page's network carried, from Chromium's own accounting (CDP)."""

    def __init__(self, session: CDPSession) -> None:
        self.http = 0
        self.frames = 0
        self.urls: dict[str, str] = {}
        self.sizes: dict[str, int] = {}
        session.on("Network.loadingFinished", self._finished)
        session.on("Network.webSocketFrameReceived", self._frame)
        session.on("Network.webSocketFrameSent", self._frame)
        session.on("Network.responseReceived", self._response)
        session.on("Network.webSocketWillSendHandshakeRequest", self._handshake)
        session.on("Network.webSocketHandshakeResponseReceived", self._handshake)
        session.send("Network.enable")

    def _finished(self, event: dict[str, Any]) -> None:
        size = int(event["encodedDataLength"])
        self.http += size
        self.sizes[event["requestId"]] = size

    def _frame(self, event: dict[str, Any]) -> None:
        self.frames += len(event["response"]["payloadData"].encode()) + 2  # + frame header

    def _handshake(self, event: dict[str, Any]) -> None:
        # The upgrade's request or response: its headers, as "Name: value\r\n" lines.
        headers = event.get("request", event.get("response", {})).get("headers", {})
        self.frames += 40 + sum(len(k) + len(str(v)) + 4 for k, v in headers.items())

    def _response(self, event: dict[str, Any]) -> None:
        response = event["response"]
        self.urls[event["requestId"]] = f"{response['status']} {response['url']}"

    def listing(self) -> list[str]:
        return [f"{self.sizes.get(key, 0):7d} B  {url}" for key, url in self.urls.items()]

    def reset(self) -> None:
        self.http, self.frames, self.urls, self.sizes = 0, 0, {}, {}

    @property
    def total(self) -> int:
        return self.http + self.frames


def first_temperature(page: Page) -> float:
    """Milliseconds from navigation start to a live hotend temperature on the page."""
    page.wait_for_function(
        "() => /\\d/.test(document.getElementById('hotend')?.textContent || '')", timeout=20_000
    )
    return float(page.evaluate("performance.now()"))


def main() -> None:
    cold, warm, to_temperature = [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        data, config = Path(scratch) / "data", Path(scratch) / "config.toml"
        config.write_text('[camera]\nsource = "test"\n')
        env = clean_environment()
        add_bench_user(data, config, env)
        with serving("sim", data, config, env) as (port, daemon), sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            base = f"http://127.0.0.1:{port}"
            for _ in range(RUNS):
                context = browser.new_context(base_url=base)  # an empty cache
                signed = context.request.post(
                    "/api/auth/login",
                    data={"username": "bench", "password": PASSWORD, "session": "cookie"},
                )
                assert signed.ok, signed.text()
                page = context.new_page()
                meter = Meter(context.new_cdp_session(page))
                page.goto("/")
                to_temperature.append(first_temperature(page))
                time.sleep(SETTLE_SECONDS)
                cold.append(meter.total)
                cold_requests = [*meter.listing(), f"{meter.frames:7d} B  websocket"]
                meter.reset()
                page.reload()
                first_temperature(page)
                time.sleep(SETTLE_SECONDS)
                warm.append(meter.total)
                warm_requests = [*meter.listing(), f"{meter.frames:7d} B  websocket"]
                context.close()
            browser.close()
            rss = rss_mb(daemon.pid)  # Jinja2 and the templates are loaded by now
    print("cold load, last run's requests:", *cold_requests, sep="\n  ")
    print("warm reload, last run's requests:", *warm_requests, sep="\n  ")
    print(f"dashboard, {RUNS} runs (medians):")
    cold_kb, warm_kb = statistics.median(cold) / 1000, statistics.median(warm) / 1000
    print(f"  cold load:   {cold_kb:6.1f} KB  (target < 150 KB; OctoPrint 1,539 KB)")
    print(f"  warm reload: {warm_kb:6.1f} KB  (target < 5 KB; OctoPrint 948 KB)")
    print(f"  first live temperature: {statistics.median(to_temperature):.0f} ms after navigation")
    print(f"  daemon RSS after serving the pages: {rss:.1f} MB")


if __name__ == "__main__":
    main()
