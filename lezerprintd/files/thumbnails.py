"""The pictures slicers embed in G-code: found, checked, and the largest one kept.

Slicers write base64 blocks in comments: `; thumbnail begin WxH LEN` ... `; thumbnail end`
(PNG; PrusaSlicer, SuperSlicer, Orca, Bambu, Cura's plugins), `; thumbnail_JPG begin` (JPEG)
and `; thumbnail_QOI begin` (QOI, which no browser shows: it is converted to PNG here).
A block that does not decode, or whose bytes are not the image it claims, is skipped.
Pure functions over bytes; the caller runs them in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Final

_BEGIN: Final = re.compile(
    r"^;\s*thumbnail(?:_(JPG|QOI|PNG))?\s+begin\s+(\d+)x(\d+)", re.IGNORECASE
)
_END: Final = re.compile(r"^;\s*thumbnail(?:_(?:JPG|QOI|PNG))?\s+end", re.IGNORECASE)
MAX_PIXELS: Final = 2048 * 2048  # a claimed size beyond this is not a thumbnail
PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True, slots=True)
class Thumbnail:
    width: int
    height: int
    media_type: str  # image/png or image/jpeg
    data: bytes

    @property
    def extension(self) -> str:
        return ".jpg" if self.media_type == "image/jpeg" else ".png"


def largest(*parts: bytes) -> Thumbnail | None:
    """The largest valid thumbnail in `parts` (the file's head and tail), or None."""
    found = [thumbnail for part in parts for thumbnail in _blocks(part)]
    return max(found, key=lambda t: t.width * t.height, default=None)


def _blocks(data: bytes) -> list[Thumbnail]:
    text = data.decode("ascii", "replace").replace("\r\n", "\n").replace("\r", "\n")
    found: list[Thumbnail] = []
    kind: str | None = None
    size = (0, 0)
    chunks: list[str] = []
    for line in text.split("\n"):
        if kind is None:
            begin = _BEGIN.match(line)
            if begin:
                kind, size, chunks = (begin[1] or "PNG").upper(), (int(begin[2]), int(begin[3])), []
            continue
        if _END.match(line):
            thumbnail = _decode(kind, size, "".join(chunks))
            if thumbnail is not None:
                found.append(thumbnail)
            kind = None
        elif line.startswith(";"):
            chunks.append(line[1:].strip())
        else:
            kind = None  # a block cut short by G-code: not a thumbnail
    return found


def _decode(kind: str, size: tuple[int, int], text: str) -> Thumbnail | None:
    width, height = size
    if not 0 < width * height <= MAX_PIXELS:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if kind == "PNG" and raw.startswith(PNG_MAGIC) and _png_size(raw) == size:
        return Thumbnail(width, height, "image/png", raw)
    if kind == "JPG" and raw.startswith(b"\xff\xd8\xff"):
        return Thumbnail(width, height, "image/jpeg", raw)
    if kind == "QOI":
        pixels = qoi_decode(raw)
        if pixels is not None and pixels[:2] == size:
            return Thumbnail(width, height, "image/png", png_encode(*pixels))
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def qoi_decode(data: bytes) -> tuple[int, int, bytes] | None:
    """(width, height, RGBA bytes) of a QOI image, or None when it is not one."""
    if len(data) < 22 or data[:4] != b"qoif":
        return None
    width, height = struct.unpack(">II", data[4:12])
    count = width * height
    if not 0 < count <= MAX_PIXELS:
        return None
    out = bytearray(count * 4)
    seen = [(0, 0, 0, 0)] * 64
    r, g, b, a = 0, 0, 0, 255
    position, end = 14, len(data) - 8
    pixel = 0
    run = 0
    while pixel < count:
        if run:
            run -= 1
        elif position >= end:
            return None
        else:
            byte = data[position]
            position += 1
            if byte == 0xFE:
                r, g, b = data[position : position + 3]
                position += 3
            elif byte == 0xFF:
                r, g, b, a = data[position : position + 4]
                position += 4
            elif byte >> 6 == 0:
                r, g, b, a = seen[byte]
            elif byte >> 6 == 1:
                r = (r + ((byte >> 4) & 3) - 2) & 255
                g = (g + ((byte >> 2) & 3) - 2) & 255
                b = (b + (byte & 3) - 2) & 255
            elif byte >> 6 == 2:
                second = data[position]
                position += 1
                green = (byte & 63) - 32
                r = (r + green - 8 + ((second >> 4) & 15)) & 255
                g = (g + green) & 255
                b = (b + green - 8 + (second & 15)) & 255
            else:
                run = byte & 63
            seen[(r * 3 + g * 5 + b * 7 + a * 11) % 64] = (r, g, b, a)
        out[pixel * 4 : pixel * 4 + 4] = bytes((r, g, b, a))
        pixel += 1
    return width, height, bytes(out)


def png_encode(width: int, height: int, rgba: bytes) -> bytes:
    """A plain RGBA PNG."""
    stride = width * 4
    rows = b"".join(b"\x00" + rgba[y * stride : (y + 1) * stride] for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        checksum = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + checksum

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        PNG_MAGIC
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 6))
        + chunk(b"IEND", b"")
    )
