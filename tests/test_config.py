"""Settings: sources and their precedence, and a one-line refusal for every kind of bad value."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from lezerprintd.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    JobsConfig,
    PrinterConfig,
    ServerConfig,
    config_keys,
    load_config,
)
from lezerprintd.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def refusal(path: Path | None, env: dict[str, str], overrides: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env, overrides=overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    cfg = load_config(path, env={})
    assert cfg == Config(source=str(path))
    assert cfg.server == ServerConfig(host="0.0.0.0", port=80, data_dir=Path("/var/lib/lezerprint"))
    assert cfg.printer.baud == "auto"
    assert cfg.printer.port == "auto"
    assert cfg.jobs.pause_gcode.splitlines()[0] == "G91"


def test_missing_default_file_means_defaults() -> None:
    if DEFAULT_CONFIG_PATH.exists():
        pytest.skip(f"{DEFAULT_CONFIG_PATH} exists on this machine")
    assert load_config(env={}) == Config(source="defaults")


def test_file_values_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [server]
        host = "127.0.0.1"
        port = 8080
        data_dir = "/srv/lezer"

        [logging]
        level = "debug"
        serial_log = true

        [printer]
        port = "/dev/ttyUSB0"
        baud = 250000
        timeout = 45            # an int where a float is expected
        rx_buffer = 0

        [jobs]
        resume_gcode = '''
        G1 E2 F2700
        M117 resumed'''

        [sim]
        speedup = 50
        """,
    )
    cfg = load_config(path, env={})
    assert cfg.server == ServerConfig(host="127.0.0.1", port=8080, data_dir=Path("/srv/lezer"))
    assert cfg.logging.level == "debug"
    assert cfg.logging.serial_log is True
    assert cfg.printer.port == "/dev/ttyUSB0"
    assert cfg.printer.baud == 250000
    assert cfg.printer.timeout == 45.0
    assert isinstance(cfg.printer.timeout, float)
    assert cfg.printer.rx_buffer == 0
    assert cfg.jobs.resume_gcode.splitlines()[-2:] == [
        "        G1 E2 F2700",
        "        M117 resumed",
    ]
    assert cfg.sim.speedup == 50.0
    assert cfg.source == str(path)


def test_env_overrides_file_and_flags_override_env(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 8080\nhost = '127.0.0.1'\n[printer]\nwindow = 8\n")
    env = {"LEZERPRINT_SERVER_PORT": "9090", "LEZERPRINT_PRINTER_WINDOW": "2"}
    cfg = load_config(path, env=env, overrides={"server.port": "7070", "printer.baud": None})
    assert cfg.server.port == 7070  # flag beats env, env beats file
    assert cfg.printer.window == 2  # env beats file
    assert cfg.server.host == "127.0.0.1"  # file beats default
    assert cfg.printer.baud == "auto"  # a flag given as None was not given


def test_env_and_flag_strings_are_parsed(tmp_path: Path) -> None:
    env = {
        "LEZERPRINT_LOGGING_SERIAL_LOG": "Yes",
        "LEZERPRINT_PRINTER_BAUD": "115200",
        "LEZERPRINT_PRINTER_TIMEOUT": "2.5",
        "LEZERPRINT_JOBS_CANCEL_GCODE": "M104 S0\nM84",
        "LEZERPRINT_SERVER_DATA_DIR": str(tmp_path / "state"),
    }
    cfg = load_config(write(tmp_path, ""), env=env, overrides={"printer.port": "sim"})
    assert cfg.logging.serial_log is True
    assert cfg.printer.baud == 115200
    assert cfg.printer.timeout == 2.5
    assert cfg.jobs.cancel_gcode == "M104 S0\nM84"
    assert cfg.server.data_dir == tmp_path / "state"
    assert cfg.printer.port == "sim"


@pytest.mark.parametrize(
    ("word", "expected"),
    [("true", True), ("1", True), ("on", True), ("NO", False), ("0", False), ("off", False)],
)
def test_boolean_words(tmp_path: Path, word: str, expected: bool) -> None:
    cfg = load_config(write(tmp_path, ""), env={"LEZERPRINT_LOGGING_SERIAL_LOG": word})
    assert cfg.logging.serial_log is expected


def test_typed_flag_values_are_accepted(tmp_path: Path) -> None:
    overrides: dict[str, object] = {
        "server.port": 0,
        "server.data_dir": tmp_path,
        "printer.baud": 9600,
    }
    cfg = load_config(write(tmp_path, ""), env={}, overrides=overrides)
    assert cfg.server.port == 0
    assert cfg.server.data_dir == tmp_path
    assert cfg.printer.baud == 9600


def test_every_default_passes_its_own_checks(tmp_path: Path) -> None:
    # Feed each default back in as text, as an environment variable would carry it.
    defaults = Config()
    env: dict[str, str] = {}
    for dotted in config_keys():
        section, key = dotted.split(".")
        value = getattr(getattr(defaults, section), key)
        env[f"LEZERPRINT_{section.upper()}_{key.upper()}"] = str(value)
    assert load_config(write(tmp_path, ""), env=env) == Config(source=str(tmp_path / "config.toml"))


def test_relative_data_dir_resolves_against_current_directory(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[server]\ndata_dir = "state/here"\n'), env={})
    assert cfg.server.data_dir == Path.cwd() / "state" / "here"
    assert cfg.server.data_dir.is_absolute()


def test_serial_log_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""), env={}, overrides={"server.data_dir": str(tmp_path)})
    assert cfg.serial_log_file == tmp_path / "logs" / "serial.log"
    env = {"LEZERPRINT_LOGGING_SERIAL_LOG_PATH": "debug/serial.txt"}
    cfg = load_config(write(tmp_path, ""), env=env, overrides={"server.data_dir": str(tmp_path)})
    assert cfg.serial_log_file == tmp_path / "debug" / "serial.txt"
    env = {"LEZERPRINT_LOGGING_SERIAL_LOG_PATH": "/var/log/serial.log"}
    cfg = load_config(write(tmp_path, ""), env=env)
    assert cfg.serial_log_file == Path("/var/log/serial.log")


def test_lezerprint_config_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 8123\n")
    cfg = load_config(env={"LEZERPRINT_CONFIG": str(path)})
    assert cfg.server.port == 8123
    assert cfg.source == str(path)


def test_explicit_path_beats_lezerprint_config(tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text("[server]\nport = 1\n", encoding="utf-8")
    path = write(tmp_path, "[server]\nport = 2\n")
    assert load_config(path, env={"LEZERPRINT_CONFIG": str(other)}).server.port == 2


def test_missing_explicit_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    assert refusal(path, {}, {}) == f"{path}: config file not found"


def test_missing_lezerprint_config_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    message = refusal(None, {"LEZERPRINT_CONFIG": str(path)}, {})
    assert message == f"environment LEZERPRINT_CONFIG: config file {path} not found"


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 80\nhost = 0.0.0.0\n")
    message = refusal(path, {}, {})
    assert message.startswith(f"{path}: TOML syntax error: ")
    assert "line 3" in message


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[server]\nhost = "\xff"\n')
    assert refusal(path, {}, {}) == f"{path}: not UTF-8 text (bad byte at offset 17)"


KNOWN_PRINTER_KEYS = (
    "baud, handshake_timeout, idle_temperature_interval, max_bed_temp, max_chamber_temp,"
    " max_hotend_temp, max_timeouts, name, port, reconnect_interval, resend_history, rx_buffer,"
    " temperature_interval, timeout, volume_x, volume_y, volume_z, window"
)
KNOWN_SECTIONS = "camera, files, gpio, jobs, logging, mdns, printer, server, sim"

# (file text, message after "<path>: ")
FILE_REFUSALS = [
    (
        '[printer]\nbaud = "fast"',
        '[printer] baud: expected an integer baud rate or "auto", got "fast"',
    ),
    (
        '[printer]\nbaud = "9600"',
        '[printer] baud: expected an integer baud rate or "auto", got "9600"',
    ),
    (
        "[printer]\nbaud = 12345",
        "[printer] baud: must be one of 9600, 19200, 38400, 57600, 115200, 230400, 250000,"
        " 460800, 500000, 921600, 1000000, 1500000, 2000000, got 12345",
    ),
    (
        "[printer]\nbad_key = 1",
        f"unknown key [printer] bad_key (known: {KNOWN_PRINTER_KEYS})",
    ),
    ("[printr]\nport = 1", f"unknown section [printr] (known: {KNOWN_SECTIONS})"),
    ("port = 80", f"unknown key port outside any section (sections: {KNOWN_SECTIONS})"),
    ("printer = 5", "[printer] must be a table, got 5"),
    ("[server]\nport = true", "[server] port: expected an integer, got true"),
    ("[server]\nport = 8.5", "[server] port: expected an integer, got 8.5"),
    ("[server]\nport = 70000", "[server] port: must be between 0 and 65535, got 70000"),
    ("[server]\nhost = 127", "[server] host: expected a string, got 127"),
    ('[server]\ndata_dir = ""', '[server] data_dir: expected a non-empty path, got ""'),
    ("[server]\ndata_dir = [1]", "[server] data_dir: expected a non-empty path, got an array"),
    ("[logging]\nserial_log = 1", "[logging] serial_log: expected true or false, got 1"),
    (
        '[logging]\nlevel = "INFO"',
        '[logging] level: expected "debug", "info", "warning" or "error", got "INFO"',
    ),
    (
        "[logging]\nserial_log_max_bytes = 100",
        "[logging] serial_log_max_bytes: must be between 10000 and 1000000000, got 100",
    ),
    ("[printer]\nrx_buffer = 8", "[printer] rx_buffer: must be 0 or between 16 and 1048576, got 8"),
    ("[printer]\nwindow = 0", "[printer] window: must be between 1 and 64, got 0"),
    ('[printer]\ntimeout = "30"', '[printer] timeout: expected a number, got "30"'),
    ("[printer]\ntimeout = nan", "[printer] timeout: must be between 1 and 600, got nan"),
    ("[printer]\ntimeout = inf", "[printer] timeout: must be between 1 and 600, got inf"),
    (
        "[printer]\ntemperature_interval = 0.1",
        "[printer] temperature_interval: must be between 0.5 and 60, got 0.1",
    ),
    (
        '[printer]\nport = "ttyACM0"',
        '[printer] port: must be "auto", "sim" or an absolute device path such as /dev/ttyACM0,'
        ' got "ttyACM0"',
    ),
    ("[jobs]\npause_gcode = {a = 1}", "[jobs] pause_gcode: expected a string, got a table"),
    (
        '[jobs]\ncancel_gcode = "M104 S0\\nM84 \\u00e9"',
        '[jobs] cancel_gcode: line 2 is not a printable ASCII G-code line: "M84 é"',
    ),
    (
        f'[printer]\nname = "{"x" * 41}"',
        "[printer] name: must be at most 40 characters, got 41",
    ),
    ('[printer]\nname = "a\\tb"', '[printer] name: must be printable text, got "a\\tb"'),
    ("[sim]\nspeedup = 0", "[sim] speedup: must be between 0.1 and 1000, got 0"),
]


def test_gcode_comments_are_free_text(tmp_path: Path) -> None:
    # Only what is sent is held to the terminal's rule: a comment never reaches the printer.
    script = "G91\t; relative\nG1 Z10 F600 ; Düse 10 mm hoch, " + "x" * 100 + "\nG90"
    path = write(tmp_path, f'[jobs]\npause_gcode = """{script}"""\n')
    assert load_config(path, env={}).jobs.pause_gcode == script


@pytest.mark.parametrize(("text", "expected"), FILE_REFUSALS)
def test_file_refusals(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    assert refusal(path, {}, {}) == f"{path}: {expected}"


ENV_REFUSALS = [
    (
        {"LEZERPRINT_PRINTER_WINDOW": "four"},
        'environment LEZERPRINT_PRINTER_WINDOW: expected an integer, got "four"',
    ),
    (
        {"LEZERPRINT_PRINTER_BAUD": "fast"},
        'environment LEZERPRINT_PRINTER_BAUD: expected an integer baud rate or "auto", got "fast"',
    ),
    (
        {"LEZERPRINT_LOGGING_SERIAL_LOG": "maybe"},
        'environment LEZERPRINT_LOGGING_SERIAL_LOG: expected true or false, got "maybe"',
    ),
    (
        {"LEZERPRINT_SERVER_PORT": "-1"},
        "environment LEZERPRINT_SERVER_PORT: must be between 0 and 65535, got -1",
    ),
    (
        {"LEZERPRINT_JOBS_PAUSE_GCODE": "G91", "LEZERPRINT_JOBS_TEMPERATURE_LOG_INTERVAL": "x\ny"},
        'environment LEZERPRINT_JOBS_TEMPERATURE_LOG_INTERVAL: expected a number, got "x\\ny"',
    ),
    (
        {"LEZERPRINT_PRINTER_BAD_KEY": "1"},
        f"environment LEZERPRINT_PRINTER_BAD_KEY: unknown key [printer] bad_key"
        f" (known: {KNOWN_PRINTER_KEYS})",
    ),
    (
        {"LEZERPRINT_PRINTR_PORT": "sim"},
        f"environment LEZERPRINT_PRINTR_PORT: unknown section [printr] (known: {KNOWN_SECTIONS})",
    ),
    (
        {"LEZERPRINT_DEBUG": "1"},
        "environment LEZERPRINT_DEBUG: unknown variable; settings are LEZERPRINT_<SECTION>_<KEY>",
    ),
]


@pytest.mark.parametrize(("env", "expected"), ENV_REFUSALS)
def test_env_refusals(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    assert refusal(write(tmp_path, ""), env, {}) == expected


def test_other_variables_are_ignored(tmp_path: Path) -> None:
    env = {"HOME": "/root", "LEZERPRINTX": "1", "lezerprint_server_port": "x"}
    assert load_config(write(tmp_path, ""), env=env).server.port == 80


FLAG_REFUSALS: list[tuple[dict[str, object], str]] = [
    ({"server.port": "70000"}, "--port: must be between 0 and 65535, got 70000"),
    ({"server.port": "http"}, '--port: expected an integer, got "http"'),
    ({"server.port": True}, "--port: expected an integer, got true"),
    ({"server.data_dir": ""}, '--data-dir: expected a non-empty path, got ""'),
    (
        {"printer.port": "COM3"},
        '--printer: must be "auto", "sim" or an absolute device path such as /dev/ttyACM0,'
        ' got "COM3"',
    ),
    (
        {"printer.baud": 12},
        "--baud: must be one of 9600, 19200, 38400, 57600, 115200, 230400,"
        " 250000, 460800, 500000, 921600, 1000000, 1500000, 2000000, got 12",
    ),
    ({"printer.nope": "1"}, f"overrides: unknown key [printer] nope (known: {KNOWN_PRINTER_KEYS})"),
]


@pytest.mark.parametrize(("overrides", "expected"), FLAG_REFUSALS)
def test_flag_refusals(tmp_path: Path, overrides: dict[str, object], expected: str) -> None:
    assert refusal(write(tmp_path, ""), {}, overrides) == expected


def test_resend_history_must_cover_the_window(tmp_path: Path) -> None:
    path = write(tmp_path, "[printer]\nresend_history = 16\n")
    message = refusal(path, {"LEZERPRINT_PRINTER_WINDOW": "20"}, {})
    assert message == (
        f"{path}: [printer] resend_history: must be at least [printer] window"
        " (20, from environment LEZERPRINT_PRINTER_WINDOW), got 16"
    )
    assert load_config(path, env={"LEZERPRINT_PRINTER_WINDOW": "16"}).printer.window == 16


def test_the_first_bad_source_in_precedence_order_is_reported(tmp_path: Path) -> None:
    # A bad file value is refused even though the environment would override it.
    path = write(tmp_path, "[server]\nport = -5\n")
    message = refusal(path, {"LEZERPRINT_SERVER_PORT": "80"}, {})
    assert message == f"{path}: [server] port: must be between 0 and 65535, got -5"


def test_config_is_frozen() -> None:
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.server.port = 1  # type: ignore[misc]
    assert dataclasses.replace(cfg.printer, window=8) == PrinterConfig(window=8)
    assert JobsConfig().resume_gcode.splitlines() == ["G91", "G1 E2 F1800", "G90"]


def test_config_keys() -> None:
    keys = config_keys()
    assert len(keys) == len(set(keys)) == 62
    assert keys[:3] == ["server.host", "server.port", "server.data_dir"]
    assert "printer.resend_history" in keys
    assert "source" not in {key.split(".")[0] for key in keys}


def test_import_stays_light() -> None:
    # config.py is on the start-up path of a Pi Zero; it must not pull in the heavy modules.
    code = "import sys, lezerprintd.config; print(' '.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    loaded = set(result.stdout.split())
    heavy = {"asyncio", "aiohttp", "aiosqlite", "sqlite3", "serial", "logging", "json", "difflib"}
    assert not loaded & heavy


def test_mdns_interfaces_are_all_or_addresses() -> None:
    assert load_config(env={}, overrides={"mdns.interfaces": "all"}).mdns.interfaces == "all"
    chosen = load_config(env={}, overrides={"mdns.interfaces": "192.168.1.20,fe80::1"})
    assert chosen.mdns.interfaces == "192.168.1.20,fe80::1"
    with pytest.raises(ConfigError) as raised:
        load_config(env={"LEZERPRINT_MDNS_INTERFACES": "eth0"})
    assert str(raised.value) == (
        'environment LEZERPRINT_MDNS_INTERFACES: must be "all" or IP addresses separated by'
        ' commas, got "eth0"'
    )
