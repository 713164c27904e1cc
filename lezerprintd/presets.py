"""Heating presets: named hotend and bed temperatures, the same for every browser.

Rule: kept as one list in the settings table, changed only inside a transaction (read, check,
write), so two administrators editing at once cannot lose each other's change. Temperatures
are checked against the printer's configured maxima; a fresh appliance starts with the four
common filaments.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from typing import Any, Final

from lezerprintd.config import PrinterConfig
from lezerprintd.errors import UserError, field_error
from lezerprintd.store import Store, settings
from lezerprintd.store.settings import Db

KEY: Final = "printer.presets"
MAX_PRESETS: Final = 20
NAME_MAX: Final = 20
DEFAULTS: Final = (("PLA", 205.0, 60.0), ("PETG", 235.0, 80.0), ("ABS", 245.0, 100.0),
                   ("TPU", 225.0, 50.0))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Preset:
    id: str
    name: str
    hotend: float
    bed: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Presets:
    def __init__(self, store: Store, limits: PrinterConfig) -> None:
        self._store = store
        self._limits = limits

    async def all(self, db: Db | None = None) -> list[Preset]:
        stored = await settings.get(db or self._store, KEY)
        if stored is None:
            return [Preset(f"default-{name.lower()}", name, hotend, bed)
                    for name, hotend, bed in DEFAULTS]  # fmt: skip
        return [Preset(**item) for item in stored]

    async def add(self, name: str, hotend: float, bed: float) -> Preset:
        made = Preset(str(uuid.uuid4()), *self._checked(name, hotend, bed))
        async with self._store.transaction() as tx:
            presets = await self.all(tx)
            if len(presets) >= MAX_PRESETS:
                raise UserError(f"there are {MAX_PRESETS} presets already", 409, "CONFLICT")
            self._refuse_taken(presets, made)
            await self._save(tx, [*presets, made])
        return made

    async def change(
        self, preset_id: str, name: str | None, hotend: float | None, bed: float | None
    ) -> Preset:
        async with self._store.transaction() as tx:
            presets = await self.all(tx)
            old = next((preset for preset in presets if preset.id == preset_id), None)
            if old is None:
                raise UserError("no such preset", status=404, code="NOT_FOUND")
            new = Preset(old.id, *self._checked(
                old.name if name is None else name,
                old.hotend if hotend is None else hotend,
                old.bed if bed is None else bed,
            ))  # fmt: skip
            self._refuse_taken(presets, new)
            await self._save(tx, [new if p.id == preset_id else p for p in presets])
        return new

    async def remove(self, preset_id: str) -> None:
        async with self._store.transaction() as tx:
            presets = await self.all(tx)
            kept = [preset for preset in presets if preset.id != preset_id]
            if len(kept) == len(presets):
                raise UserError("no such preset", status=404, code="NOT_FOUND")
            await self._save(tx, kept)

    @staticmethod
    async def _save(tx: Db, presets: list[Preset]) -> None:
        await settings.put(tx, KEY, [p.to_json() for p in presets], category="printer")

    def _checked(self, name: str, hotend: float, bed: float) -> tuple[str, float, float]:
        name = name.strip()
        if not 1 <= len(name) <= NAME_MAX:
            raise _invalid("name", f"must be 1-{NAME_MAX} characters")
        if not 0 <= hotend <= self._limits.max_hotend_temp:
            raise _invalid("hotend", f"must be 0-{self._limits.max_hotend_temp:g} °C")
        if not 0 <= bed <= self._limits.max_bed_temp:
            raise _invalid("bed", f"must be 0-{self._limits.max_bed_temp:g} °C")
        return name, float(hotend), float(bed)

    @staticmethod
    def _refuse_taken(presets: list[Preset], preset: Preset) -> None:
        wanted = preset.name.casefold()
        if any(p.name.casefold() == wanted and p.id != preset.id for p in presets):
            raise UserError(f"a preset named {preset.name!r} exists", 409, "CONFLICT")


def _invalid(field: str, problem: str) -> UserError:
    return field_error(field, problem, "range", f"the {field} {problem}")
