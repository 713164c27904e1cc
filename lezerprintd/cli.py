"""The `lezerprintd` command: parse arguments, load the config, hand over to a room.

Rule: no business logic here. A bad argument or setting ends the command with one line on
stderr and exit status 2; a failed print exits 1; success exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, TextIO

from lezerprintd import __version__
from lezerprintd.config import Config, load_config
from lezerprintd.errors import ConfigError, LezerError

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        return command(args)
    except ConfigError as error:
        print(f"lezerprintd: config error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except LezerError as error:
        print(f"lezerprintd: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lezerprintd",
        description="LezerPrint: run a 3D printer from any browser.",
    )
    parser.add_argument("--version", action="version", version=f"lezerprintd {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the appliance: web server, printer link, jobs",
        description="Run the appliance. With --printer sim it drives a built-in virtual "
        "printer, so it runs anywhere.",
    )
    _config_options(serve)
    serve.add_argument("--data-dir", type=Path, help="where the database and files live")
    serve.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    serve.add_argument("--port", help="port to listen on (default 80)")
    serve.add_argument("--printer", metavar="PORT", help="serial port, 'auto' (default) or 'sim'")
    serve.add_argument("--baud", help="baud rate or 'auto' (default)")
    serve.set_defaults(run=_serve)

    print_ = commands.add_parser(
        "print",
        help="print one G-code file headless and exit",
        description="Stream FILE to the printer on PORT through the job engine, show progress "
        "on a terminal, and exit 0 when the print completes (1 if it fails).",
    )
    print_.add_argument("file", type=Path, metavar="FILE", help="the G-code file")
    print_.add_argument(
        "--printer", metavar="PORT", required=True, help="serial port, 'auto' or 'sim'"
    )
    print_.add_argument("--baud", help="baud rate or 'auto' (default from the config)")
    _config_options(print_)
    print_.add_argument(
        "--data-dir",
        type=Path,
        help="record the job in this data dir's database (default: not recorded)",
    )
    print_.set_defaults(run=_print)

    virtual = commands.add_parser(
        "virtual-printer",
        help="serve a virtual Marlin printer on a pseudo-terminal",
        description="Start a virtual Marlin printer, print the path of its serial port and "
        "serve it until interrupted. Point another program at that path.",
    )
    virtual.add_argument("--link", type=Path, help="also make this symlink to the port")
    virtual.add_argument("--speedup", type=float, default=1.0, help="motion and heating speed-up")
    virtual.add_argument(
        "--instant", action="store_true", help="ok every command at once (benchmarks)"
    )
    virtual.add_argument("--advanced-ok", action="store_true", help="ok N.. P.. B..")
    virtual.add_argument("--no-autoreport", action="store_true", help="no M155 support")
    virtual.add_argument("--bufsize", type=int, default=4, help="command buffer lines")
    virtual.add_argument(
        "--rx-buffer", type=int, default=128, help="serial buffer bytes (0 = unlimited)"
    )
    virtual.add_argument(
        "--checksum-errors", type=float, default=0.0, metavar="RATE", help="damaged-line rate"
    )
    virtual.add_argument("--lost-oks", type=float, default=0.0, metavar="RATE", help="lost-ok rate")
    virtual.add_argument("--busy", type=float, default=0.0, metavar="RATE", help="busy-period rate")
    virtual.add_argument("--fragment", action="store_true", help="reply in small pieces")
    virtual.add_argument("--seed", type=int, help="random seed for the faults")
    virtual.set_defaults(run=_virtual_printer)

    config = commands.add_parser("config", help="work with the configuration")
    config_commands = config.add_subparsers(title="commands", required=True, metavar="COMMAND")
    check = config_commands.add_parser(
        "check",
        help="validate the configuration and exit 0 (valid) or 2",
        description="Load the configuration as `serve` would (file, LEZERPRINT_* variables) "
        "and report the first problem.",
    )
    _config_options(check)
    check.set_defaults(run=_config_check)
    return parser


def _config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", help="the TOML config file")
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="log detail"
    )


def _load(args: argparse.Namespace, **flags: object) -> Config:
    overrides = {"logging.level": args.log_level, **flags}
    return load_config(args.config, overrides=overrides)


# -- commands


def _serve(args: argparse.Namespace) -> int:
    config = _load(
        args,
        **{
            "server.data_dir": args.data_dir,
            "server.host": args.host,
            "server.port": args.port,
            "printer.port": args.printer,
            "printer.baud": args.baud,
        },
    )
    from lezerprintd import app, logs

    stop_logging = logs.setup(config.logging, config.serial_log_file)
    try:
        return app.run_server(config)
    finally:
        stop_logging()


def _print(args: argparse.Namespace) -> int:
    config = _load(
        args,
        **{
            "server.data_dir": args.data_dir,
            "printer.port": args.printer,
            "printer.baud": args.baud,
        },
    )
    from lezerprintd import app, logs
    from lezerprintd.store.jobs import JobStatus

    if not args.file.is_file():
        print(f"lezerprintd: no such file: {args.file}", file=sys.stderr)
        return EXIT_USAGE
    database = config.server.data_dir / app.DATABASE_NAME if args.data_dir else ":memory:"
    progress = _Progress(sys.stderr)
    stop_logging = logs.setup(config.logging, config.serial_log_file)
    try:
        record = asyncio.run(app.print_file(config, args.file, progress.show, database))
    finally:
        stop_logging()
        progress.done()
    minutes, seconds = divmod(record.actual_time or 0, 60)
    took = f"{minutes}:{seconds:02d}"
    if record.status is JobStatus.COMPLETED:
        print(f"completed: {record.file_name}, {record.lines_done} lines in {took}")
        return EXIT_OK
    why = f": {record.error_message}" if record.error_message else ""
    print(f"lezerprintd: print {record.status.value.lower()}{why}", file=sys.stderr)
    return EXIT_INTERRUPTED if record.status is JobStatus.CANCELLED else EXIT_FAILED


class _Progress:
    """A progress line redrawn in place, only when the output is a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._shown = False
        self._tty = stream.isatty()

    def show(self, event: object) -> None:
        from lezerprintd.bus import JobProgressed

        if not self._tty or not isinstance(event, JobProgressed):
            return
        filled = int(event.progress / 5)
        minutes, seconds = divmod(int(event.elapsed), 60)
        bar = "#" * filled + "." * (20 - filled)
        self._stream.write(
            f"\r[{bar}] {event.progress:5.1f}%  {event.lines_done} lines  {minutes}:{seconds:02d}"
        )
        self._stream.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            self._stream.write("\n")
            self._stream.flush()


def _virtual_printer(args: argparse.Namespace) -> int:
    from lezerprintd.printer.virtual import VirtualOptions, run_forever

    options = VirtualOptions(
        speedup=args.speedup,
        instant=args.instant,
        advanced_ok=args.advanced_ok,
        autoreport_temp=not args.no_autoreport,
        bufsize=args.bufsize,
        rx_buffer=args.rx_buffer,
        checksum_error_rate=args.checksum_errors,
        lost_ok_rate=args.lost_oks,
        busy_rate=args.busy,
        fragment_replies=args.fragment,
        seed=args.seed,
        record_accepted=False,
    )
    return run_forever(options, args.link, sys.stdout)


def _config_check(args: argparse.Namespace) -> int:
    config = _load(args)
    print(f"config ok: {config.source}")
    return EXIT_OK
