"""Terminal macros: named, ordered G-code lines, the same for every browser and every account.

Rule: the accounts' macros are one list in the settings table, changed only inside a
transaction (read, check, write), so two people saving at once cannot lose each other's
macro. The seed's built-in macros are constants listed ahead of them and never stored: nobody
changes or deletes them, and a newer LezerPrint's built-ins replace the older ones.

Each line is checked as the terminal checks a typed command (printable ASCII, at most 90
characters, no M110), and then stored as the printer will get it: a `;` comment is stripped,
as Marlin ignores it anyway, and a line left blank is dropped, so what the list shows is what
runs. M112 is refused: the STOP button halts the printer, a macro never does.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any, Final

from lezerprintd.errors import PrinterError, UserError, field_error
from lezerprintd.printer.printer import COMMAND_PATTERN, Printer
from lezerprintd.printer.protocol import clean_command
from lezerprintd.store import Store, settings
from lezerprintd.store.settings import Db

KEY: Final = "terminal.macros"
MAX_MACROS: Final = 50  # the accounts' own; the built-ins come on top
NAME_MAX: Final = 40
LINES_MAX: Final = 50
GIVEN_MAX: Final = 200  # lines as typed, blank and comment-only ones included
LINE_MAX: Final = 90  # as POST /api/printer/command and the websocket take one line
_PRINTABLE: Final = re.compile(COMMAND_PATTERN)
# The seed's built-ins (section 4, "Terminal and macros").
BUILTINS: Final = (
    ("Home All Axes", ("G28",)),
    ("Preheat PLA", ("M104 S205", "M140 S60")),
    ("Preheat ABS", ("M104 S245", "M140 S100")),
    ("Cool Down", ("M104 S0", "M140 S0", "M107")),
    ("Auto Bed Level", ("G28", "G29")),
)


@dataclass(frozen=True, slots=True)
class Macro:
    id: str
    name: str
    commands: tuple[str, ...]
    builtin: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "commands": list(self.commands),
            "builtin": self.builtin,
        }


@dataclass(frozen=True, slots=True)
class Answered:
    """One line of a macro that ran, and what the printer printed before its `ok`."""

    command: str
    response: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"command": self.command, "response": list(self.response)}


_BUILTIN_MACROS: Final = tuple(
    Macro("builtin-" + "-".join(name.lower().split()), name, commands, builtin=True)
    for name, commands in BUILTINS
)


class Macros:
    def __init__(self, store: Store, printer: Printer) -> None:
        self._store = store
        self._printer = printer

    async def all(self, db: Db | None = None) -> list[Macro]:
        """The built-ins, then the accounts' macros in the order they were made."""
        return [*_BUILTIN_MACROS, *await self._own(db or self._store)]

    async def get(self, macro_id: str) -> Macro:
        found = next((macro for macro in await self.all() if macro.id == macro_id), None)
        if found is None:
            raise UserError("no such macro", status=404, code="NOT_FOUND")
        return found

    async def add(self, name: str, commands: list[str]) -> Macro:
        made = Macro(str(uuid.uuid4()), _checked_name(name), _checked_lines(commands))
        async with self._store.transaction() as tx:
            own = await self._own(tx)
            if len(own) >= MAX_MACROS:
                raise UserError(f"there are {MAX_MACROS} macros already", 409, "CONFLICT")
            _refuse_taken(own, made)
            await _save(tx, [*own, made])
        return made

    async def change(self, macro_id: str, name: str | None, commands: list[str] | None) -> Macro:
        async with self._store.transaction() as tx:
            own = await self._own(tx)
            old = next((macro for macro in own if macro.id == macro_id), None)
            if old is None:
                _refuse_builtin(macro_id)
                raise UserError("no such macro", status=404, code="NOT_FOUND")
            new = Macro(
                old.id,
                old.name if name is None else _checked_name(name),
                old.commands if commands is None else _checked_lines(commands),
            )
            _refuse_taken(own, new)
            await _save(tx, [new if macro.id == macro_id else macro for macro in own])
        return new

    async def remove(self, macro_id: str) -> None:
        async with self._store.transaction() as tx:
            own = await self._own(tx)
            kept = [macro for macro in own if macro.id != macro_id]
            if len(kept) == len(own):
                _refuse_builtin(macro_id)
                raise UserError("no such macro", status=404, code="NOT_FOUND")
            await _save(tx, kept)

    async def run(self, macro: Macro) -> list[Answered]:
        """Each line through the printer's command queue, as the terminal sends one, waiting
        for its `ok` before the next; during a print they go out between the job's lines.

        Stops at the first line the printer cannot take, naming it (the lines before it have
        run: the printer cannot take them back).
        """
        answered: list[Answered] = []
        for number, command in enumerate(macro.commands, start=1):
            try:
                response = await self._printer.execute(command)
            except PrinterError as error:
                ran = "; the lines before it ran" if number > 1 else ""
                raise PrinterError(
                    f"line {number} ({command}): {error}{ran}", error.status, error.code
                ) from error
            answered.append(Answered(command, tuple(response)))
        return answered

    @staticmethod
    async def _own(db: Db) -> list[Macro]:
        stored = await settings.get(db, KEY) or []
        return [Macro(item["id"], item["name"], tuple(item["commands"])) for item in stored]


async def _save(tx: Db, macros: list[Macro]) -> None:
    value = [{"id": m.id, "name": m.name, "commands": list(m.commands)} for m in macros]
    await settings.put(tx, KEY, value, category="terminal")


def _checked_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= NAME_MAX:
        raise _invalid("name", f"must be 1-{NAME_MAX} characters", "length")
    return name


def _checked_lines(lines: list[str]) -> tuple[str, ...]:
    """The lines to send; numbers in messages count the lines as given, blank ones too."""
    kept: list[str] = []
    for number, given in enumerate(lines, start=1):
        line = given.strip()
        if not line:
            continue
        if len(line) > LINE_MAX:
            raise _bad_line(number, f"is over {LINE_MAX} characters", "length")
        if not _PRINTABLE.fullmatch(line):
            raise _bad_line(number, "is not one line of printable ASCII", "pattern")
        command = clean_command(line.encode()).decode()
        # Told apart as Printer.submit tells them: by how the cleaned line starts.
        if command.upper().startswith("M110"):
            raise _bad_line(number, "is M110: LezerPrint manages line numbers", "command")
        if command.upper().startswith("M112"):
            raise _bad_line(number, "is M112: the STOP button halts the printer", "command")
        if command:
            kept.append(command)
    if not kept:
        raise _invalid("commands", "must hold at least one G-code line", "required")
    if len(kept) > LINES_MAX:
        raise _invalid("commands", f"must be at most {LINES_MAX} G-code lines", "length")
    return tuple(kept)


def _refuse_builtin(macro_id: str) -> None:
    if any(macro.id == macro_id for macro in _BUILTIN_MACROS):
        raise UserError("a built-in macro cannot be changed or deleted", 403, "FORBIDDEN")


def _refuse_taken(own: list[Macro], macro: Macro) -> None:
    wanted = macro.name.casefold()
    if any(m.name.casefold() == wanted and m.id != macro.id for m in (*_BUILTIN_MACROS, *own)):
        raise UserError(f"a macro named {macro.name!r} exists", 409, "CONFLICT")


def _invalid(field: str, problem: str, code: str) -> UserError:
    return field_error(field, problem, code, f"the {field} {problem}")


def _bad_line(number: int, problem: str, code: str) -> UserError:
    message = f"line {number} {problem}"
    return field_error("commands", message, code, message)
