"""What a file is called and where it is filed: cleaned for display, never used as a path.

Rule: a file on disk is named by `stored_name()` alone (a random hex name and the type's
extension), so nothing a client sends can reach outside the files folder. The original name
and the folder are data: cleaned here of path parts, control characters, undecodable bytes
and excess length, so they cannot break a page or a log line either.
"""

from __future__ import annotations

import unicodedata
import uuid
from typing import Final

from lezerprintd.errors import UserError

MAX_NAME_CHARACTERS: Final = 200
MAX_FOLDER_CHARACTERS: Final = 200
MAX_FOLDER_DEPTH: Final = 8


def display_name(raw: str) -> str:
    """The name a client gave, as the library shows it: its last path part, NFC, without
    control or format characters, at most MAX_NAME_CHARACTERS (the extension kept)."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = _printable(name).strip().strip(".").strip()
    if len(name) > MAX_NAME_CHARACTERS:
        _, dot, extension = name.rpartition(".")
        keep = extension if dot and len(extension) <= 10 else ""
        name = name[: MAX_NAME_CHARACTERS - len(keep) - 1].rstrip() + ("." + keep if keep else "")
    if not name:
        raise UserError(
            "the file has no usable name",
            details=[{"field": "file", "code": "name", "message": "give the file a name"}],
        )
    return name


def folder_path(raw: str) -> str:
    """A folder as `a/b/c` ("" is the top): parts cleaned like names, no `.` or `..`."""
    parts = [_printable(part).strip() for part in raw.replace("\\", "/").split("/")]
    parts = [part for part in parts if part]
    problem = None
    if any(part in (".", "..") for part in parts):
        problem = "may not hold . or .. parts"
    elif len(parts) > MAX_FOLDER_DEPTH:
        problem = f"may be at most {MAX_FOLDER_DEPTH} levels deep"
    elif len("/".join(parts)) > MAX_FOLDER_CHARACTERS:
        problem = f"may be at most {MAX_FOLDER_CHARACTERS} characters"
    if problem is not None:
        raise UserError(
            f"invalid request: folder {problem}",
            details=[{"field": "folder", "code": "pattern", "message": problem}],
        )
    return "/".join(parts)


def stored_name(extension: str) -> str:
    """A new name for a file on disk: random, with the type's extension (`.gcode`, ...)."""
    return f"{uuid.uuid4().hex}{extension}"


def extension_of(name: str) -> str:
    """`.gcode` for `Benchy.GCODE`; "" when there is none."""
    stem, dot, extension = name.rpartition(".")
    return f".{extension.lower()}" if dot and stem else ""


def _printable(text: str) -> str:
    # Undecodable bytes arrive as lone surrogates: they show as U+FFFD. Line breaks and tabs
    # become spaces; other control, format and unassigned characters are dropped.
    kept = []
    for character in unicodedata.normalize("NFC", text):
        category = unicodedata.category(character)
        if category == "Cs":
            kept.append("\ufffd")
        elif character in "\t\n\r":
            kept.append(" ")
        elif category not in ("Cc", "Cf", "Co", "Cn"):
            kept.append(character)
    return "".join(kept)
