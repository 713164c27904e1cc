"""The `lezerprintd` command as a person runs it: real processes, real ptys, exit statuses."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from lezerprintd.printer.virtual import VirtualPrinter
from tests.conftest import clean_environment, free_port, gcode_file, moves

Start = Callable[..., VirtualPrinter]


def run(
    *args: str, config: Path | None = None, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run lezerprintd with a clean environment (no LEZERPRINT_* from the caller)."""
    return subprocess.run(
        [sys.executable, "-m", "lezerprintd", *args],
        capture_output=True,
        text=True,
        env=clean_environment(),
        timeout=120,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def empty_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text("# nothing set: defaults\n")
    return path


@pytest.mark.parametrize(
    "command", [[], ["serve"], ["print"], ["virtual-printer"], ["config", "check"]]
)
def test_every_command_explains_itself(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: lezerprintd")


def test_config_check_accepts_a_good_file(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[printer]\nport = "/dev/ttyACM0"\nbaud = 250000\n')
    result = run("config", "check", "--config", str(config))
    assert result.returncode == 0
    assert result.stdout.strip() == f"config ok: {config}"


def test_config_check_names_the_bad_key_and_file_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[printer]\nbaud = "fast"\n')
    result = run("config", "check", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert str(config) in result.stderr
    assert "[printer] baud" in result.stderr


def test_a_misspelt_environment_variable_stops_the_command(empty_config: Path) -> None:
    env = dict(os.environ, LEZERPRINT_PRINTER_BUAD="250000")
    result = subprocess.run(
        [sys.executable, "-m", "lezerprintd", "config", "check", "--config", str(empty_config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "LEZERPRINT_PRINTER_BUAD" in result.stderr


def test_print_streams_a_file_and_exits_0(
    start_virtual: Start, tmp_path: Path, empty_config: Path
) -> None:
    virtual = start_virtual(speedup=1000)
    commands = moves(1200)
    path = gcode_file(tmp_path / "part.gcode", commands)
    result = run(
        "print",
        str(path),
        "--printer",
        virtual.path,
        "--baud",
        "115200",
        "--config",
        str(empty_config),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("completed: part.gcode, 1200 lines in 0:0")
    assert [c for c in virtual.accepted if c.startswith("G1 X")] == commands


def test_print_shows_progress_on_a_terminal(
    start_virtual: Start, tmp_path: Path, empty_config: Path
) -> None:
    virtual = start_virtual(speedup=30)
    path = gcode_file(tmp_path / "slow.gcode", moves(150))
    main, terminal = os.openpty()
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lezerprintd",
                "print",
                str(path),
                "--printer",
                virtual.path,
                "--config",
                str(empty_config),
                "--baud",
                "115200",
            ],
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
        )
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:
                break  # the terminal closed: the command is done
            if not chunk:
                break
            shown += chunk
        out, _ = process.communicate(timeout=60)
    finally:
        os.close(main)
    assert process.returncode == 0
    assert out.startswith("completed: slow.gcode")
    assert b"\r[" in shown
    assert b"% " in shown
    assert b"lines" in shown


def test_print_fails_clearly_when_the_printer_halts(
    start_virtual: Start, tmp_path: Path, empty_config: Path
) -> None:
    virtual = start_virtual(speedup=20)
    path = gcode_file(tmp_path / "hot.gcode", moves(3000))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lezerprintd",
            "print",
            str(path),
            "--printer",
            virtual.path,
            "--config",
            str(empty_config),
            "--baud",
            "115200",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while len(virtual.accepted) < 50:
        assert time.monotonic() < deadline, "the print did not start"
        time.sleep(0.01)
    virtual.inject(b"Error:Thermal Runaway, system stopped! Heater_ID: 0\n")
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "print failed: The printer halted: Thermal Runaway" in stderr


def test_print_to_a_port_that_does_not_exist_says_so(tmp_path: Path, empty_config: Path) -> None:
    path = gcode_file(tmp_path / "part.gcode", moves(5))
    result = run(
        "print",
        str(path),
        "--printer",
        "/dev/ttyNOPE0",
        "--baud",
        "115200",
        "--config",
        str(empty_config),
    )
    assert result.returncode == 1
    assert "cannot open /dev/ttyNOPE0" in result.stderr.splitlines()[-1]


def test_print_of_a_missing_file_is_a_usage_error(tmp_path: Path, empty_config: Path) -> None:
    result = run(
        "print", str(tmp_path / "nope.gcode"), "--printer", "sim", "--config", str(empty_config)
    )
    assert result.returncode == 2
    assert "no such file" in result.stderr


def test_serve_with_the_virtual_printer_answers_and_stops_cleanly(
    tmp_path: Path, empty_config: Path
) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lezerprintd",
            "serve",
            "--mdns",
            "off",
            "--printer",
            "sim",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
            "--config",
            str(empty_config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_environment(),
    )
    try:
        status = None
        deadline = time.monotonic() + 20
        while status is None or status["data"]["printer"]["state"] != "operational":
            assert time.monotonic() < deadline, "serve did not come up with its printer"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2) as r:
                    status = json.load(r)
            except OSError:
                time.sleep(0.05)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as reply:
            health = json.load(reply)
        assert health["success"] is True
        assert health["data"]["status"] == "ok"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "connected to Marlin" in stderr
    assert (tmp_path / "data" / "lezerprint.db").exists()


def test_serve_refuses_an_address_it_cannot_bind(tmp_path: Path, empty_config: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            "serve",
            "--mdns",
            "off",
            "--printer",
            "sim",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path),
            "--config",
            str(empty_config),
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr.splitlines()[-1]
