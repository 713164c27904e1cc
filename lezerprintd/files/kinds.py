"""What kind of file an upload is: by its extension, confirmed by its content.

Rule: the extension names the claim and the content must bear it out; anything else is
refused with 415 and a sentence saying why. Only the first HEAD_BYTES and the size are
needed, except for 3MF, whose zip directory sits at the end (read in a worker thread).
"""

from __future__ import annotations

import enum
import re
import struct
from pathlib import Path
from typing import Final

from lezerprintd.errors import UserError

HEAD_BYTES: Final = 64 * 1024


class FileType(enum.Enum):
    GCODE = "GCODE"
    STL = "STL"
    OBJ = "OBJ"
    THREEMF = "THREEMF"


EXTENSIONS: Final = {
    ".gcode": FileType.GCODE,
    ".gco": FileType.GCODE,
    ".g": FileType.GCODE,
    ".stl": FileType.STL,
    ".obj": FileType.OBJ,
    ".3mf": FileType.THREEMF,
}
ACCEPTED: Final = "G-code (.gcode, .gco, .g), STL, OBJ and 3MF files"

# A G-code line: a command word, a comment, or a line number before one.
_GCODE_LINE: Final = re.compile(rb"^\s*(?:N\d+\s*)?(?:[GMTgmt]\d|;|\(|[A-Z]+_[A-Z_]+\b|$)")
_OBJ_LINE: Final = re.compile(
    rb"^\s*(?:#|v |vt |vn |vp |f |l |p |o |g |s |mtllib |usemtl |$)", re.IGNORECASE
)
_OBJ_VERTEX: Final = re.compile(rb"^\s*v\s", re.MULTILINE)


def claimed_type(name: str, extension: str) -> FileType:
    """The type `name`'s extension claims; 415 when it is none we take."""
    kind = EXTENSIONS.get(extension)
    if kind is None:
        shown = f"'{extension}' files" if extension else "files without an extension"
        raise _refused(f"{shown} are not accepted; the library takes {ACCEPTED}")
    return kind


def check_content(kind: FileType, head: bytes, size: int, name: str) -> None:
    """Refuse (415) when the first bytes and the size contradict the claimed `kind`."""
    if size == 0:
        raise UserError(
            f"{name} is empty",
            details=[{"field": "file", "code": "empty", "message": "the file is empty"}],
        )
    if kind is FileType.GCODE:
        ok, what = _looks_like_gcode(head), "G-code"
    elif kind is FileType.STL:
        ok, what = _is_binary_stl(head, size) or _is_ascii_stl(head), "an STL model"
    elif kind is FileType.OBJ:
        ok, what = _looks_like_obj(head), "an OBJ model"
    else:
        ok, what = head.startswith(b"PK\x03\x04"), "a 3MF package (a zip)"
    if not ok:
        raise _refused(f"{name} does not hold {what}, whatever its name says")


def check_3mf(path: Path, name: str) -> None:
    """Refuse (415) a 3MF that is not a zip holding a 3D model. Blocking: run in a thread."""
    import zipfile  # only when a 3MF arrives

    try:
        with zipfile.ZipFile(path) as package:
            entries = {entry.lower() for entry in package.namelist()}
    except (zipfile.BadZipFile, OSError, ValueError):
        raise _refused(f"{name} is not a readable 3MF package (a zip)") from None
    if "3d/3dmodel.model" not in entries:
        raise _refused(f"{name} is a zip without a 3D model (3D/3dmodel.model), not a 3MF")


def _lines(head: bytes) -> list[bytes]:
    lines = head.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    # The last line of a cut-off head may be cut too.
    return lines[:-1] if len(lines) > 1 else lines


def _is_text(head: bytes) -> bool:
    return b"\x00" not in head


def _looks_like_gcode(head: bytes) -> bool:
    if not _is_text(head):
        return False
    lines = [line for line in _lines(head)[:200] if line.strip()]
    if not lines:
        return False
    matching = sum(1 for line in lines if _GCODE_LINE.match(line))
    return matching >= 0.9 * len(lines)


def _is_binary_stl(head: bytes, size: int) -> bool:
    if len(head) < 84:
        return False
    (triangles,) = struct.unpack_from("<I", head, 80)
    return size == 84 + 50 * int(triangles)


def _is_ascii_stl(head: bytes) -> bool:
    text = head.lstrip().lower()
    return (
        _is_text(head) and text.startswith(b"solid") and (b"facet" in text or b"endsolid" in text)
    )


def _looks_like_obj(head: bytes) -> bool:
    if not _is_text(head):
        return False
    lines = [line for line in _lines(head)[:200] if line.strip()]
    return (
        bool(lines)
        and all(_OBJ_LINE.match(line) for line in lines)
        and _OBJ_VERTEX.search(head) is not None
    )


def _refused(message: str) -> UserError:
    return UserError(message, status=415, code="UNSUPPORTED_MEDIA_TYPE")
