"""The printer profile and the GPIO pins, as an administrator edits them in Settings.

Rule: the config file gives the starting values. What is changed in Settings is kept in the
settings table and wins over the file; a value given at launch (a flag or a `LEZERPRINT_*`
variable) wins over both and cannot be changed here, because the next start would undo it.
Every change is checked by the config file's own rules (config.check_values), so a value the
file would refuse is refused here with the same message, naming the key.

This room only keeps and checks; the appliance hands the result to the rooms that use it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, Final

from lezerprintd.config import Config, check_values
from lezerprintd.errors import ConfigError, UserError, field_error
from lezerprintd.gpio import check_unique
from lezerprintd.store import Store, settings

log = logging.getLogger(__name__)

KEY: Final = "profile.edits"  # {"printer": {key: value}, "jobs": {...}, "gpio": {...}}
# What each part of Settings may change, by config section.
EDITABLE: Final[Mapping[str, Mapping[str, tuple[str, ...]]]] = {
    "printer": {
        "printer": ("name", "port", "baud", "volume_x", "volume_y", "volume_z",
                    "max_hotend_temp", "max_bed_temp", "max_chamber_temp"),
        "jobs": ("pause_gcode", "resume_gcode", "cancel_gcode"),
    },
    "gpio": {
        "gpio": ("estop_pin", "estop_normally_closed", "runout_pin", "runout_active_level",
                 "runout_confirm_ms", "pause_pin", "debounce_ms", "led_pin", "relay_pin",
                 "relay_active_high"),
    },
}  # fmt: skip
Edits = dict[str, dict[str, Any]]


class Profile:
    """The edits made in Settings over `base` (the configuration read at start)."""

    def __init__(self, store: Store, base: Config) -> None:
        self._store = store
        self.base = base
        self._edits: Edits = {}

    async def load(self) -> Config:
        """Read the kept edits and answer the configuration with them."""
        self._edits = self._usable(await settings.get(self._store, KEY) or {})
        return self.current()

    def edited(self, part: str) -> bool:
        """Settings has changed something of `part` that is in force."""
        return any(self._edits.get(section) for section in EDITABLE[part])

    def _usable(self, stored: Edits) -> Edits:
        """The kept edits that apply: not of a key set at launch, and still allowed by the
        rules (an edit from a newer version, or under a changed limit, is logged and left
        out, and stays kept for when it applies again)."""
        usable: Edits = {}
        for part in EDITABLE.values():
            for section, keys in part.items():
                for key, value in (stored.get(section) or {}).items():
                    if key not in keys or self._launched(section, key):
                        continue
                    try:
                        usable.setdefault(section, {}).update(check_values(section, {key: value}))
                    except ConfigError as error:
                        log.warning("Settings' [%s] %s is ignored: %s", section, key, error)
        return usable

    def current(self) -> Config:
        """The configuration in force: the file's, with the edits made in Settings."""
        return self._over_base(self._edits)

    def view(self, part: str) -> dict[str, dict[str, Any]]:
        """Each setting of `part` ("printer" or "gpio"): its value, and where it comes from:
        "settings", "file", "default", or the flag or variable that fixed it at launch."""
        config = self.current()
        shown: dict[str, dict[str, Any]] = {}
        for section, keys in EDITABLE[part].items():
            for key in keys:
                shown[key] = {
                    "value": getattr(getattr(config, section), key),
                    "from": self._origin(section, key),
                    "editable": not self._launched(section, key),
                }
        return shown

    async def change(self, part: str, values: Mapping[str, Any]) -> Config:
        """Check `values` (config keys of `part`), keep them, and answer the configuration
        they make. Raises UserError (400 naming the key; 409 for a value fixed at launch)."""
        where = {key: section for section, keys in EDITABLE[part].items() for key in keys}
        checked: Edits = {}
        for key, value in values.items():
            section = where[key]
            if self._launched(section, key):
                raise UserError(
                    f"[{section}] {key} is fixed by {self._origin(section, key)} while the"
                    " appliance runs; change it where it was set and restart",
                    status=409,
                    code="CONFLICT",
                    details=[{"field": key, "code": "launched", "message": "set at launch"}],
                )
            if (section, key, value) == ("printer", "port", "sim"):
                raise _invalid(
                    key,
                    "[printer] port: the built-in virtual printer is chosen at launch"
                    " (--printer sim); here, give 'auto' or a serial device",
                )
            try:
                checked.setdefault(section, {}).update(check_values(section, {key: value}))
            except ConfigError as error:
                raise _invalid(key, str(error)) from None
        async with self._store.transaction() as tx:
            stored: Edits = await settings.get(tx, KEY) or {}
            merged = {section: dict(stored.get(section) or {}) for section in EDITABLE[part]}
            for section, edits in checked.items():
                merged[section].update(edits)
            kept = {**stored, **merged}
            usable = self._usable(kept)
            self._check_together(part, self._over_base(usable))
            await settings.put(tx, KEY, kept, "profile")
        self._edits = usable
        return self.current()

    async def reset(self, part: str) -> Config:
        """Forget the edits of `part`: the file's values (or the defaults) apply again."""
        async with self._store.transaction() as tx:
            stored: Edits = await settings.get(tx, KEY) or {}
            for section in EDITABLE[part]:
                stored.pop(section, None)
            await settings.put(tx, KEY, stored, "profile")
        for section in EDITABLE[part]:
            self._edits.pop(section, None)
        return self.current()

    def _over_base(self, edits: Edits) -> Config:
        changed = {
            section: dataclasses.replace(getattr(self.base, section), **values)
            for section, values in edits.items()
        }
        return dataclasses.replace(self.base, **changed)

    @staticmethod
    def _check_together(part: str, config: Config) -> None:
        """Rules between keys: one pin, one function."""
        if part == "gpio":
            pins = {key: getattr(config.gpio, key) for key in EDITABLE["gpio"]["gpio"]
                    if key.endswith("_pin") and getattr(config.gpio, key) >= 0}  # fmt: skip
            try:
                check_unique(pins)
            except ConfigError as error:
                key = str(error).split(":", 1)[0].removeprefix("[gpio] ")
                raise _invalid(key, str(error)) from None

    def _launched(self, section: str, key: str) -> bool:
        if self.base.launched(f"{section}.{key}"):
            return True
        # The virtual printer's pseudo-terminal exists only for this run: its link is fixed.
        return section == "printer" and key in ("port", "baud") and self.base.printer.port == "sim"

    def _origin(self, section: str, key: str) -> str:
        dotted = f"{section}.{key}"
        if self.base.launched(dotted):
            return self.base.launched(dotted)
        if key in self._edits.get(section, {}):
            return "settings"
        if section == "printer" and key in ("port", "baud") and self.base.printer.port == "sim":
            return "the virtual printer"
        return "file" if dotted in self.base.origins else "default"


def _invalid(key: str, message: str) -> UserError:
    return field_error(key, message, "invalid", message)
