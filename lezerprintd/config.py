"""Typed settings for lezerprintd, from a TOML file, `LEZERPRINT_*` variables and CLI flags.

Sources apply in order -- the file, then the environment, then the flags -- and a later one wins.
Each setting is declared once, as a field of a section dataclass whose annotation carries both its
type and its limits (`Annotated[int, Rule(...)]`); one converter reads those declarations, so there
is no per-key code.

Rule: every value is checked here, once, and a bad one stops start-up with ONE line naming the key
and the file, variable or flag it came from; nothing downstream sees an unchecked value. The config
file is the only thing this module reads, and it imports nothing slow (it runs at every start on a
Pi Zero).
"""

import ipaddress
import os
import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path, PurePath
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin, get_type_hints

from lezerprintd.errors import ConfigError

DEFAULT_CONFIG_PATH: Final = Path("/etc/lezerprint/config.toml")
ENV_PREFIX: Final = "LEZERPRINT_"
CONFIG_ENV: Final = "LEZERPRINT_CONFIG"

# The rates `baud = "auto"` may settle on and the only integers `baud` accepts; odd rates are
# almost always a typo, and the transport's autodetection tries these same values.
BAUD_RATES: Final = (
    9600,
    19200,
    38400,
    57600,
    115200,
    230400,
    250000,
    460800,
    500000,
    921600,
    1000000,
    1500000,
    2000000,
)

NAME_MAX: Final = 40
# A script's command on one line (before any ';' comment), as the terminal takes one: printable
# ASCII (tabs too), short enough for any firmware.
GCODE_LINE: Final = re.compile(r"[\t -~]{0,90}")

LogLevel = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True, slots=True)
class Rule:
    """Limits on a setting beyond its type, declared in the field's `Annotated` metadata.

    Number checks (`one_of`, `between`) apply to int and float values, `absolute` to strings;
    a value matched by a `Literal` member of the type (such as baud's "auto") is never limited.
    """

    between: tuple[float, float] | None = None  # inclusive
    also: tuple[object, ...] = ()  # accepted although outside the limits (rx_buffer's 0)
    one_of: tuple[int, ...] = ()  # the only numbers accepted
    absolute: bool = False  # a string must start with "/" unless it is one of `also`
    addresses: bool = False  # a string must be IP addresses, comma-separated, unless in `also`
    noun: str = ""  # what the value is, for messages: "an integer baud rate"
    at_least: str = ""  # another key of the same section this one must not be below
    flag: str = ""  # the CLI flag, when it is not --<key with - for _>
    max_length: int = 0  # a string's most characters; 0 = no limit
    gcode: bool = False  # G-code lines: each command printable ASCII (comments are free text)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """[server]: where the web server listens and where the appliance keeps its state."""

    host: str = "0.0.0.0"
    port: Annotated[int, Rule(between=(0, 65535))] = 80  # 0 = any free port (tests)
    data_dir: Path = Path("/var/lib/lezerprint")
    # Per client address while printing; 0 = no pacing. See api/pacing.py.
    paced_reads_per_second: Annotated[float, Rule(between=(0, 1000))] = 20.0


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """[logging]: the daemon's log level and the optional raw serial log."""

    level: LogLevel = "info"
    serial_log: bool = False
    serial_log_path: str = ""  # "" = <data_dir>/logs/serial.log; see serial_log_file()
    serial_log_max_bytes: Annotated[int, Rule(between=(10_000, 1_000_000_000))] = 5_000_000
    serial_log_backups: Annotated[int, Rule(between=(0, 100))] = 3

    def serial_log_file(self, data_dir: Path) -> Path:
        """Where the serial log goes; a relative `serial_log_path` is taken inside `data_dir`."""
        # Joining keeps an absolute serial_log_path as it is.
        return data_dir / (self.serial_log_path or "logs/serial.log")


@dataclass(frozen=True, slots=True)
class PrinterConfig:
    """[printer]: the printer's name, its serial link, its limits."""

    name: Annotated[str, Rule(max_length=NAME_MAX)] = ""  # what the pages call it; "" = LezerPrint
    port: Annotated[
        str,
        Rule(
            absolute=True,
            also=("auto", "sim"),
            noun="device path such as /dev/ttyACM0",
            flag="--printer",
        ),
    ] = "auto"
    baud: Annotated[int | Literal["auto"], Rule(one_of=BAUD_RATES, noun="baud rate")] = "auto"
    window: Annotated[int, Rule(between=(1, 64))] = 4
    # 127, not 128: Marlin's AVR RX ring buffer holds one byte less than its size.
    rx_buffer: Annotated[int, Rule(between=(16, 1_048_576), also=(0,))] = 127
    timeout: Annotated[float, Rule(between=(1, 600))] = 30.0
    max_timeouts: Annotated[int, Rule(between=(1, 100))] = 5
    resend_history: Annotated[int, Rule(between=(16, 100_000), at_least="window")] = 256
    temperature_interval: Annotated[float, Rule(between=(0.5, 60))] = 2.0
    idle_temperature_interval: Annotated[float, Rule(between=(1, 300))] = 10.0
    reconnect_interval: Annotated[float, Rule(between=(0.5, 300))] = 2.0
    handshake_timeout: Annotated[float, Rule(between=(0.5, 60))] = 4.0
    max_hotend_temp: Annotated[float, Rule(between=(0, 500))] = 300.0
    max_bed_temp: Annotated[float, Rule(between=(0, 200))] = 120.0
    max_chamber_temp: Annotated[float, Rule(between=(0, 150))] = 80.0
    volume_x: Annotated[float, Rule(between=(1, 2000))] = 220.0
    volume_y: Annotated[float, Rule(between=(1, 2000))] = 220.0
    volume_z: Annotated[float, Rule(between=(1, 2000))] = 250.0


@dataclass(frozen=True, slots=True)
class FilesConfig:
    """[files]: the file library's limits."""

    max_upload_mb: Annotated[int, Rule(between=(1, 100_000))] = 500
    # Uploads are refused (507) rather than fill the SD card past this much free space.
    min_free_mb: Annotated[int, Rule(between=(0, 10_000_000))] = 100


GcodeScript = Annotated[str, Rule(max_length=4000, gcode=True)]


@dataclass(frozen=True, slots=True)
class JobsConfig:
    """[jobs]: the G-code run around a print and how its temperatures are recorded."""

    pause_gcode: GcodeScript = "G91\nG1 E-2 F2700\nG1 Z10 F600\nG90\nG1 X0 Y0 F3000"
    resume_gcode: GcodeScript = "G91\nG1 E2 F1800\nG90"
    cancel_gcode: GcodeScript = "M104 S0\nM140 S0\nM106 S0\nG91\nG1 Z10 F600\nG90\nM84"
    temperature_log_interval: Annotated[float, Rule(between=(0.5, 60))] = 2.0
    temperature_log_flush_interval: Annotated[float, Rule(between=(1, 3600))] = 30.0


@dataclass(frozen=True, slots=True)
class SimConfig:
    """[sim]: the built-in virtual printer."""

    speedup: Annotated[float, Rule(between=(0.1, 1000))] = 1.0


@dataclass(frozen=True, slots=True)
class MdnsConfig:
    """[mdns]: how the appliance announces itself on the local network (printer.local)."""

    enabled: Annotated[bool, Rule(flag="--mdns")] = True
    # "all", or the addresses of the interfaces to announce on: "192.168.1.20,fe80::1"
    interfaces: Annotated[str, Rule(addresses=True, also=("all",), flag="--mdns")] = "all"
    name: str = ""  # the name browsers list; "" = "LezerPrint on <hostname>"


@dataclass(frozen=True, slots=True)
class CameraConfig:
    """[camera]: the camera's source and picture, and timelapses of prints."""

    source: Annotated[Literal["auto", "picamera", "v4l2", "test", "off"], Rule(flag="--camera")] = (
        "auto"
    )
    device: Annotated[str, Rule(absolute=True, noun="device path such as /dev/video0")] = (
        "/dev/video0"
    )
    width: Annotated[int, Rule(between=(160, 1920))] = 640
    height: Annotated[int, Rule(between=(120, 1080))] = 480
    fps: Annotated[int, Rule(between=(1, 30))] = 15
    quality: Annotated[int, Rule(between=(10, 95))] = 80
    rotation: Annotated[int, Rule(one_of=(0, 90, 180, 270), noun="rotation in degrees")] = 0
    flip_horizontal: bool = False
    flip_vertical: bool = False
    idle_seconds: Annotated[float, Rule(between=(0, 3600))] = 10.0
    timelapse: Literal["off", "layer", "interval"] = "off"
    timelapse_interval: Annotated[float, Rule(between=(1, 3600))] = 10.0
    timelapse_quota_mb: Annotated[int, Rule(between=(10, 1_000_000))] = 2000


GpioPin = Annotated[int, Rule(between=(0, 27), also=(-1,), noun="BCM GPIO number")]


@dataclass(frozen=True, slots=True)
class GpioConfig:
    """[gpio]: buttons and the filament sensor wired to the Pi, its status LED and a relay
    for the printer's power. Pins are BCM GPIO numbers; -1 = not wired."""

    factory: Literal["auto", "mock", "off"] = "auto"
    estop_pin: GpioPin = -1
    estop_normally_closed: bool = True  # closed to ground until pressed: a cut wire trips too
    runout_pin: GpioPin = -1
    runout_active_level: Literal["high", "low"] = "high"  # the level that means "no filament"
    runout_confirm_ms: Annotated[int, Rule(between=(0, 60_000))] = 1000
    pause_pin: GpioPin = -1
    debounce_ms: Annotated[int, Rule(between=(1, 1000))] = 50
    led_pin: GpioPin = -1
    relay_pin: GpioPin = -1
    relay_active_high: bool = True


@dataclass(frozen=True, slots=True)
class Config:
    """Every setting, one frozen section per attribute, plus the file they were read from."""

    server: ServerConfig = field(default_factory=ServerConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    printer: PrinterConfig = field(default_factory=PrinterConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    files: FilesConfig = field(default_factory=FilesConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    mdns: MdnsConfig = field(default_factory=MdnsConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    source: str = "defaults"  # the config file used, or "defaults"
    # "section.key" -> where it was set (the file, a variable, a flag), for every key not
    # left at its default.
    origins: dict[str, str] = field(default_factory=dict, compare=False)

    def launched(self, dotted: str) -> str:
        """The flag or environment variable that set "section.key" at launch, or ""."""
        origin = self.origins.get(dotted, self.source)
        return "" if origin == self.source else origin

    @property
    def serial_log_file(self) -> Path:
        """The resolved path of the raw serial log."""
        return self.logging.serial_log_file(self.server.data_dir)


@dataclass(frozen=True, slots=True)
class _Setting:
    """One declared setting: its bare type and its limits."""

    section: str
    key: str
    kind: object
    rule: Rule

    @property
    def flag(self) -> str:
        return self.rule.flag or "--" + self.key.replace("_", "-")


@dataclass(frozen=True, slots=True)
class _Chosen:
    """A value that some source set, with what to name in a message about it."""

    value: object
    origin: str  # "/etc/lezerprint/config.toml", "environment LEZERPRINT_X_Y", "--port"
    where: str  # the origin plus the key when the origin does not name it


class _Mismatch(Exception):
    """The value is not of the wanted type; a union tries its next member."""


def config_keys() -> list[str]:
    """Every setting as "section.key", in declaration order (the docs test walks this)."""
    return [f"{section}.{key}" for section, keys in _settings().items() for key in keys]


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Read the settings: the file, then `LEZERPRINT_*` variables, then CLI `overrides`.

    `path` None means `LEZERPRINT_CONFIG`, else `DEFAULT_CONFIG_PATH` if it exists, else defaults.
    `env` None means `os.environ`. `overrides` maps "section.key" to a flag's value: a string is
    parsed like an environment value, anything else must already have the right type, and None
    (a flag that was not given) is skipped. Raises ConfigError with a one-line message.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    settings = _settings()
    chosen: dict[str, dict[str, _Chosen]] = {section: {} for section in settings}

    source, document = _read_file(path, environ)
    for section, table in document.items():
        if not isinstance(table, dict):
            if section in settings:
                raise ConfigError(f"{source}: [{section}] must be a table, got {_show(table)}")
            raise ConfigError(
                f"{source}: unknown key {section} outside any section"
                f" (sections: {_known(settings)})"
            )
        keys = _section(settings, section, source)
        for key, raw in table.items():
            setting = _key(keys, section, key, source)
            where = f"{source}: [{section}] {key}"
            chosen[section][key] = _Chosen(_convert(raw, setting, where, text=False), source, where)

    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        where = f"environment {name}"
        section, _, key = name.removeprefix(ENV_PREFIX).lower().partition("_")
        if not key:
            raise ConfigError(
                f"{where}: unknown variable; settings are {ENV_PREFIX}<SECTION>_<KEY>"
            )
        setting = _key(_section(settings, section, where), section, key, where)
        value = _convert(environ[name], setting, where, text=True)
        chosen[section][key] = _Chosen(value, where, where)

    for dotted, raw in (overrides or {}).items():
        if raw is None:
            continue
        section, _, key = dotted.partition(".")
        setting = _key(_section(settings, section, "overrides"), section, key, "overrides")
        value = _convert(raw, setting, setting.flag, text=isinstance(raw, str))
        chosen[section][key] = _Chosen(value, setting.flag, setting.flag)

    # Any is confined to this call: each section's constructor takes its own field types.
    sections: dict[str, Any] = {}
    classes = _section_classes()
    for section, keys in settings.items():
        sections[section] = classes[section](**{key: c.value for key, c in chosen[section].items()})
        _check_pairs(sections[section], keys, chosen[section])
    origins = {
        f"{section}.{key}": c.origin for section, keys in chosen.items() for key, c in keys.items()
    }
    return Config(**sections, source=source, origins=origins)


def check_values(section: str, values: Mapping[str, object]) -> dict[str, object]:
    """`values` (already typed, as JSON or TOML gives them) for keys of [section], checked as
    the config file's would be. Raises ConfigError naming the first bad key."""
    keys = _section(_settings(), section, "values")
    checked: dict[str, object] = {}
    for key, raw in values.items():
        setting = _key(keys, section, key, "values")
        checked[key] = _convert(raw, setting, f"[{section}] {key}", text=False)
    return checked


def _read_file(path: Path | None, env: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """The config file's name and contents; a missing default file means no settings."""
    if path is not None:
        missing = f"{path}: config file not found"
    elif env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV])
        missing = f"environment {CONFIG_ENV}: config file {path} not found"
    else:
        path, missing = DEFAULT_CONFIG_PATH, ""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if missing:
            raise ConfigError(missing) from None
        return "defaults", {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    try:
        # TOMLDecodeError's text already ends in "(at line N, column M)".
        return str(path), tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None


def _section_classes() -> dict[str, type[Any]]:
    hints = get_type_hints(Config)
    return {f.name: hints[f.name] for f in fields(Config) if is_dataclass(hints[f.name])}


def _settings() -> dict[str, dict[str, _Setting]]:
    """section -> key -> setting, read from the dataclass declarations."""
    settings: dict[str, dict[str, _Setting]] = {}
    for section, cls in _section_classes().items():
        hints = get_type_hints(cls, include_extras=True)
        settings[section] = {}
        for f in fields(cls):
            kind, rule = hints[f.name], Rule()
            if get_origin(kind) is Annotated:
                kind, *extras = get_args(kind)
                rule = next((extra for extra in extras if isinstance(extra, Rule)), rule)
            settings[section][f.name] = _Setting(section, f.name, kind, rule)
    return settings


def _section(
    settings: dict[str, dict[str, _Setting]], section: str, where: str
) -> dict[str, _Setting]:
    if section not in settings:
        raise ConfigError(f"{where}: unknown section [{section}] (known: {_known(settings)})")
    return settings[section]


def _key(keys: dict[str, _Setting], section: str, key: str, where: str) -> _Setting:
    if key not in keys:
        raise ConfigError(f"{where}: unknown key [{section}] {key} (known: {_known(keys)})")
    return keys[key]


def _known(names: Mapping[str, object]) -> str:
    return ", ".join(sorted(names))


def _convert(raw: object, setting: _Setting, where: str, *, text: bool) -> object:
    """The checked value of `raw` for `setting`; `text` means parse it from a string."""
    try:
        value = _parse(raw, setting.kind, text=text)
    except _Mismatch:
        expected = _or(_describe(setting.kind, setting.rule.noun))
        raise ConfigError(f"{where}: expected {expected}, got {_show(raw)}") from None
    problem = _limit_problem(value, setting.rule)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    return value


def _parse(raw: object, kind: object, *, text: bool) -> object:
    """`raw` as a value of `kind`, or _Mismatch; strings are parsed only when `text`."""
    origin = get_origin(kind)
    if origin is Union or origin is types.UnionType:
        for member in get_args(kind):
            try:
                return _parse(raw, member, text=text)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        for choice in get_args(kind):
            if type(raw) is type(choice) and raw == choice:
                return choice
        raise _Mismatch
    if text:
        if not isinstance(raw, str):
            raise _Mismatch
        return _from_text(raw, kind)
    # TOML, or an already-typed flag. bool is a subclass of int, but `port = true` is a mistake.
    if kind is bool and isinstance(raw, bool):
        return raw
    if kind is int and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if kind is float and isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    if kind is str and isinstance(raw, str):
        return raw
    if kind is Path and isinstance(raw, str | PurePath):
        return _path(str(raw))
    raise _Mismatch


def _from_text(raw: str, kind: object) -> object:
    word = raw.strip().lower()
    try:
        if kind is bool and word in ("true", "1", "yes", "on"):
            return True
        if kind is bool and word in ("false", "0", "no", "off"):
            return False
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
    except ValueError:
        raise _Mismatch from None
    if kind is str:
        return raw
    if kind is Path:
        return _path(raw)
    raise _Mismatch


def _path(raw: str) -> Path:
    # Path("") is ".", which would silently mean the current directory.
    if not raw:
        raise _Mismatch
    return Path(raw).absolute()


def _describe(kind: object, noun: str) -> list[str]:
    """The alternatives `kind` accepts, for "expected ...": ['an integer baud rate', '"auto"']."""
    origin = get_origin(kind)
    if origin is Union or origin is types.UnionType:
        return [words for member in get_args(kind) for words in _describe(member, noun)]
    if origin is Literal:
        return [_show(choice) for choice in get_args(kind)]
    if kind is int or kind is float:
        return [("an integer" if kind is int else "a number") + (f" {noun}" if noun else "")]
    if kind is bool:
        return ["true or false"]
    if kind is Path:
        return ["a non-empty path"]
    return ["a string"]


def _limit_problem(value: object, rule: Rule) -> str:
    """Why `value` breaks `rule`, or "" when it does not."""
    if value in rule.also or isinstance(value, bool):
        return ""
    also = [_show(allowed) for allowed in rule.also]
    if isinstance(value, int | float):
        if rule.one_of and value not in rule.one_of:
            choices = ", ".join(str(choice) for choice in rule.one_of)
            return f"must be one of {choices}, got {_show(value)}"
        # Written as `not low <= value <= high` so that NaN fails too.
        if rule.between is not None and not rule.between[0] <= value <= rule.between[1]:
            low, high = (_number(bound) for bound in rule.between)
            return f"must be {_or([*also, f'between {low} and {high}'])}, got {_show(value)}"
    if isinstance(value, str) and rule.absolute and not value.startswith("/"):
        absolute = f"an absolute {rule.noun or 'path'}"
        return f"must be {_or([*also, absolute])}, got {_show(value)}"
    if isinstance(value, str) and rule.max_length and len(value) > rule.max_length:
        return f"must be at most {rule.max_length} characters, got {len(value)}"
    if isinstance(value, str) and rule.gcode:
        for number, line in enumerate(value.splitlines(), 1):
            command = line.split(";", 1)[0]  # a comment is never sent: any text will do
            if not GCODE_LINE.fullmatch(command):
                shown = _show(command[:40])
                return f"line {number} is not a printable ASCII G-code line: {shown}"
    elif isinstance(value, str) and rule.max_length and not value.isprintable():
        return f"must be printable text, got {_show(value)}"
    if isinstance(value, str) and rule.addresses:
        for address in value.split(","):
            try:
                ipaddress.ip_address(address.strip())
            except ValueError:
                listed = "IP addresses separated by commas"
                return f"must be {_or([*also, listed])}, got {_show(address.strip())}"
    return ""


def _check_pairs(section: object, keys: dict[str, _Setting], chosen: dict[str, _Chosen]) -> None:
    """Apply the `at_least` rules between two keys of one section, after every source."""
    for key, setting in keys.items():
        other = setting.rule.at_least
        if not other:
            continue
        value, floor = getattr(section, key), getattr(section, other)
        if value < floor:
            default = _Chosen(None, "the default", f"[{setting.section}] {key} (default)")
            where = chosen.get(key, default).where
            origin = chosen.get(other, default).origin
            raise ConfigError(
                f"{where}: must be at least [{setting.section}] {other}"
                f" ({_show(floor)}, from {origin}), got {_show(value)}"
            )


def _or(alternatives: list[str]) -> str:
    if len(alternatives) == 1:
        return alternatives[0]
    return ", ".join(alternatives[:-1]) + " or " + alternatives[-1]


def _number(number: float) -> str:
    # 60.0 reads better as 60; is_integer() is False for inf and nan, which int() would reject.
    if isinstance(number, float) and number.is_integer():
        return str(int(number))
    return str(number)


def _show(value: object) -> str:
    """`value` as the user would write it, on one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, str | PurePath):
        # Escape newlines and other control characters so the message stays one line.
        text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(value))
        text = text.replace('"', '\\"')
        return '"' + (text if len(text) <= 60 else text[:57] + "...") + '"'
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return str(value)  # TOML dates and times
