"""The `lezerprintd` command: parse arguments, load the config, hand over to a room.

Rule: no business logic here. A bad argument or setting ends the command with one line on
stderr and exit status 2; a failed print exits 1; success exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from lezerprintd import __version__
from lezerprintd.config import Config, load_config
from lezerprintd.errors import ConfigError, LezerError

if TYPE_CHECKING:
    from lezerprintd.auth.service import Auth

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_NO_SETUP_CODE: Final = 3  # `user setup-code` once an administrator exists
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
    serve.add_argument(
        "--camera",
        choices=("auto", "picamera", "v4l2", "test", "off"),
        help="the camera: the Pi's, a USB one, a test pattern, or none (default auto)",
    )
    serve.add_argument(
        "--mdns",
        metavar="off|all|ADDR[,ADDR...]",
        help="announce as printer.local on all interfaces (default), these addresses, or not",
    )
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

    user = commands.add_parser(
        "user",
        help="manage accounts, whether or not the daemon runs",
        description="Create and manage accounts in the appliance's database. Safe while the "
        "daemon runs: what changes here applies to its very next request.",
    )
    user_commands = user.add_subparsers(title="commands", required=True, metavar="COMMAND")
    add = user_commands.add_parser(
        "add",
        help="create an account",
        description="Create an active account. The password is read from standard input (one "
        "line), never from the command line. Creating an administrator also ends the web "
        "page's first-start setup (the setup-code file is removed).",
    )
    add.add_argument("name", metavar="NAME", help="the username: 3-50 of a-z A-Z 0-9 _ -")
    add.add_argument("--role", required=True, choices=("admin", "operator", "viewer"))
    add.add_argument("--email", help="the account's email address (optional)")
    given = add.add_mutually_exclusive_group(required=True)
    given.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input, one line",
    )
    given.add_argument(
        "--password-hash-stdin",
        action="store_true",
        help="read a bcrypt hash of the password from standard input instead (as mkpasswd "
        "-m bcrypt or htpasswd -B make it); the first sign-in replaces it",
    )
    _user_options(add)
    add.set_defaults(run=_user_add)
    setup_code = user_commands.add_parser(
        "setup-code",
        help="print the one-time setup code for the first administrator",
        description="While no administrator exists, print the one-time code the web page's "
        "first-start setup asks for (the same one the daemon uses; made if there is none "
        "yet). Exits 3 once an administrator exists.",
    )
    _user_options(setup_code)
    setup_code.set_defaults(run=_user_setup_code)
    list_ = user_commands.add_parser("list", help="list the accounts")
    _user_options(list_)
    list_.set_defaults(run=_user_list)
    passwd = user_commands.add_parser(
        "passwd",
        help="set an account's password",
        description="Set NAME's password from standard input (one line); every session of "
        "the account ends.",
    )
    passwd.add_argument("name", metavar="NAME", help="the username")
    _password_option(passwd)
    _user_options(passwd)
    passwd.set_defaults(run=_user_passwd)
    disable = user_commands.add_parser(
        "disable",
        help="disable an account and end its sessions",
        description="Disable NAME: its sessions end and its API keys stop working at once. "
        "The last active administrator cannot be disabled.",
    )
    disable.add_argument("name", metavar="NAME", help="the username")
    _user_options(disable)
    disable.set_defaults(run=_user_disable)
    enable = user_commands.add_parser("enable", help="enable a disabled account")
    enable.add_argument("name", metavar="NAME", help="the username")
    _user_options(enable)
    enable.set_defaults(run=_user_enable)
    first_boot = commands.add_parser(
        "first-boot",
        help="apply lezerprint.toml from the boot partition (systemd runs it at boot)",
        description="Apply the settings a person put in lezerprint.toml on the card's boot "
        "partition (hostname, Wi-Fi, time zone, first administrator), then remove the file and "
        "leave lezerprint-report.txt; while no administrator exists, keep the setup code in "
        "lezerprint-setup-code.txt there. Run as root by lezerprint-firstboot.service.",
    )
    first_boot.add_argument(
        "--boot-dir", type=Path, default=Path("/boot/firmware"), help="the boot partition"
    )
    first_boot.add_argument(
        "--root", type=Path, default=Path("/"), help="the system to change (tests use a folder)"
    )
    first_boot.add_argument(
        "--account-user",
        default="lezerprint",
        help="the user the account commands run as, the daemon's; '' for this user",
    )
    _user_options(first_boot)
    first_boot.set_defaults(run=_first_boot)
    return parser


def _config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", help="the TOML config file")
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="log detail"
    )


def _user_options(parser: argparse.ArgumentParser) -> None:
    _config_options(parser)
    parser.add_argument("--data-dir", type=Path, help="where the database lives")


def _password_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        required=True,
        help="read the password from standard input, one line (it never goes on the "
        "command line, where other users could see it)",
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
            "camera.source": args.camera,
            "mdns.enabled": None if args.mdns is None else args.mdns != "off",
            "mdns.interfaces": None if args.mdns in (None, "off") else args.mdns,
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


class NoSetupCode(Exception):
    """`user setup-code` after an administrator exists."""


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


# -- user: the auth room over the database, without the daemon


def _accounts(args: argparse.Namespace, action: Callable[[Auth], Awaitable[str]]) -> int:
    """Run `action` on the auth room and print what it reports; bad input exits 2."""
    config = _load(args, **{"server.data_dir": args.data_dir})
    from lezerprintd import app, logs
    from lezerprintd.errors import UserError

    async def run() -> str:
        async with app.offline_accounts(config.server.data_dir) as auth:
            return await action(auth)

    stop_logging = logs.setup(config.logging, None)
    try:
        print(asyncio.run(run()))
    except UserError as error:
        print(f"lezerprintd: {error}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        stop_logging()
    return EXIT_OK


def _read_password() -> str:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("password: ")
    return sys.stdin.readline().removesuffix("\n").removesuffix("\r")


def _user_add(args: argparse.Namespace) -> int:
    from lezerprintd.auth.permissions import Role
    from lezerprintd.auth.service import COMMAND_LINE

    role = Role[args.role.upper()]
    if args.password_hash_stdin:
        bcrypt_hash = sys.stdin.readline().strip()

        async def add(auth: Auth) -> str:
            user = await auth.import_user(
                args.name, bcrypt_hash, role, args.email, actor=None, client=COMMAND_LINE
            )
            return f"added {user.username} ({user.role.value})"

    else:
        password = _read_password()

        async def add(auth: Auth) -> str:
            user = await auth.create_user(
                args.name, password, role, args.email, actor=None, client=COMMAND_LINE
            )
            return f"added {user.username} ({user.role.value})"

    return _accounts(args, add)


def _first_boot(args: argparse.Namespace) -> int:
    from lezerprintd import firstboot

    config = _load(args, **{"server.data_dir": args.data_dir})
    places = firstboot.Places(
        boot=args.boot_dir,
        root=args.root,
        data_dir=config.server.data_dir,
        config=args.config,
        account_user=args.account_user or None,
    )
    if not places.boot.is_dir():
        print(f"lezerprintd: no boot partition at {places.boot}", file=sys.stderr)
        return EXIT_USAGE
    from lezerprintd import logs

    stop_logging = logs.setup(config.logging, None)
    try:
        return firstboot.run(places)
    finally:
        stop_logging()


def _user_setup_code(args: argparse.Namespace) -> int:
    from lezerprintd.auth.service import show_code

    async def show(auth: Auth) -> str:
        code = await auth.ensure_setup_code()
        if code is None:
            raise NoSetupCode
        return show_code(code)

    try:
        return _accounts(args, show)
    except NoSetupCode:
        print("lezerprintd: an administrator exists: there is no setup code", file=sys.stderr)
        return EXIT_NO_SETUP_CODE


def _user_list(args: argparse.Namespace) -> int:
    async def show(auth: Auth) -> str:
        users = await auth.all_users()
        if not users:
            return "no accounts yet"
        lines = [f"{'NAME':<20} {'ROLE':<9} {'STATE':<8} {'LAST SIGN-IN':<20} EMAIL"]
        for user in users:
            seen = (
                time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(user.last_login_at))
                if user.last_login_at
                else "never"
            )
            state = "active" if user.is_active else "disabled"
            lines.append(
                f"{user.username:<20} {user.role.value:<9} {state:<8} {seen:<20} "
                f"{user.email or ''}".rstrip()
            )
        return "\n".join(lines)

    return _accounts(args, show)


def _user_passwd(args: argparse.Namespace) -> int:
    from lezerprintd.auth.service import COMMAND_LINE

    password = _read_password()

    async def passwd(auth: Auth) -> str:
        user = await auth.user_named(args.name)
        await auth.reset_password(user.id, password, actor=None, client=COMMAND_LINE)
        return f"changed the password of {user.username}; its sessions have ended"

    return _accounts(args, passwd)


def _user_disable(args: argparse.Namespace) -> int:
    return _user_set_active(args, False)


def _user_enable(args: argparse.Namespace) -> int:
    return _user_set_active(args, True)


def _user_set_active(args: argparse.Namespace, active: bool) -> int:
    from lezerprintd.auth.service import COMMAND_LINE

    async def change(auth: Auth) -> str:
        user = await auth.user_named(args.name)
        await auth.update_user(user.id, is_active=active, actor=None, client=COMMAND_LINE)
        if active:
            return f"enabled {user.username}"
        return f"disabled {user.username}; its sessions have ended"

    return _accounts(args, change)
