"""systemd's notify protocol against a real datagram socket: the real daemon says READY once
it answers, keeps its STATUS, pings the watchdog from its loop and stops pinging when the loop
is blocked, and says STOPPING on the way out."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lezerprintd.sd import Notifier, watchdog_interval
from tests.conftest import clean_environment, free_port


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound notify socket, as systemd holds one, and its NOTIFY_SOCKET value."""
    path = tmp_path / "notify"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.settimeout(10)
    try:
        yield receiver, str(path)
    finally:
        receiver.close()


def messages(receiver: socket.socket, until: str, seconds: float = 20) -> list[dict[str, str]]:
    """Datagrams as KEY=value dicts, up to and including the first holding `until`."""
    found = []
    deadline = time.monotonic() + seconds
    while True:
        receiver.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            data = receiver.recv(4096).decode()
        except TimeoutError:
            raise AssertionError(f"no {until} within {seconds} s; got {found}") from None
        message = dict(line.split("=", 1) for line in data.splitlines())
        found.append(message)
        if until in message:
            return found


async def test_nothing_is_sent_or_opened_without_notify_socket() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    notifier.ready("x")
    notifier.start_watchdog()
    notifier.stopping()
    await notifier.close()


async def test_messages_reach_path_and_abstract_sockets(
    listener: tuple[socket.socket, str],
) -> None:
    receiver, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.ready("printer offline")
    notifier.status("printer offline")  # unchanged: not sent again
    notifier.status("printer operational")
    notifier.stopping()
    await notifier.close()
    got = messages(receiver, "STOPPING")
    assert got[0] == {"READY": "1", "STATUS": "printer offline", "MAINPID": str(os.getpid())}
    assert got[1:] == [{"STATUS": "printer operational"}, {"STOPPING": "1", "STATUS": "stopping"}]

    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"lezerprint-test-{os.getpid()}"
    abstract.bind(b"\0" + name.encode())
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        notifier.status("hello")
        await notifier.close()
        abstract.settimeout(5)
        assert abstract.recv(100) == b"STATUS=hello"
    finally:
        abstract.close()


def test_the_watchdog_is_for_this_process_only() -> None:
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(mine) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000"}) == 2.0
    assert watchdog_interval({**mine, "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({**mine, "WATCHDOG_USEC": "0"}) is None


def serve(tmp_path: Path, port: int, **environ: str) -> subprocess.Popen[str]:
    config = tmp_path / "config.toml"
    config.write_text("")
    return subprocess.Popen(
        [sys.executable, "-m", "lezerprintd", "serve", "--printer", "sim",
         "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(tmp_path / "data"),
         "--config", str(config), "--mdns", "off"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**clean_environment(), **environ},
    )  # fmt: skip


def test_the_daemon_is_ready_when_it_answers_and_says_stopping(
    tmp_path: Path, listener: tuple[socket.socket, str]
) -> None:
    receiver, path = listener
    port = free_port()
    daemon = serve(tmp_path, port, NOTIFY_SOCKET=path)
    try:
        ready = messages(receiver, "READY")[-1]
        assert ready["MAINPID"] == str(daemon.pid)
        # READY means serving: the very next request is answered.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as reply:
            assert json.load(reply)["data"]["status"] == "ok"
        # The status follows the printer; the virtual one connects after start.
        statuses = [m.get("STATUS") for m in messages(receiver, "STATUS")]
        while "printer operational" not in statuses:
            statuses += [m.get("STATUS") for m in messages(receiver, "STATUS")]
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, errors = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, errors
    assert messages(receiver, "STOPPING")[-1]["STOPPING"] == "1"


def test_the_watchdog_is_pinged_from_the_loop_and_stops_when_it_blocks(
    tmp_path: Path, listener: tuple[socket.socket, str]
) -> None:
    receiver, path = listener
    daemon = serve(tmp_path, free_port(), NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
    try:
        messages(receiver, "READY")
        pings = []
        while len(pings) < 5:
            messages(receiver, "WATCHDOG", seconds=2)  # every 0.2 s, half of 0.4 s
            pings.append(time.monotonic())
        assert pings[-1] - pings[0] < 2.0
        daemon.send_signal(signal.SIGUSR2)  # the debug switch: block the event loop
        time.sleep(0.5)  # pings already on their way may still arrive
        while True:
            receiver.settimeout(0.01)
            try:
                receiver.recv(4096)
            except TimeoutError:
                break
        receiver.settimeout(2.0)
        with pytest.raises(TimeoutError):  # a blocked loop pings no more: systemd would act
            receiver.recv(4096)
    finally:
        daemon.kill()
        _, errors = daemon.communicate(timeout=30)
    assert "blocking the event loop on request" in errors
