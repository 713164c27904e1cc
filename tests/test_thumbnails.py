"""Embedded thumbnails: the corpus's real PrusaSlicer and SuperSlicer pictures, QOI blocks made
here by the format's reference algorithm, JPEG blocks, and blocks that only pretend."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest

from lezerprintd.files.gcode_meta import read_ends
from lezerprintd.files.thumbnails import PNG_MAGIC, largest, qoi_decode
from tests.conftest import corpus_file


def png_pixels(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and RGBA rows of a PNG written by png_encode (filter 0 only)."""
    assert data.startswith(PNG_MAGIC)
    width, height = struct.unpack(">II", data[16:24])
    position, idat = 8, b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        if kind == b"IDAT":
            idat += data[position + 8 : position + 8 + length]
        position += 12 + length
    rows = zlib.decompress(idat)
    stride = width * 4 + 1
    assert all(rows[y * stride] == 0 for y in range(height))
    return width, height, b"".join(rows[y * stride + 1 : (y + 1) * stride] for y in range(height))


def qoi_encode(width: int, height: int, rgba: bytes) -> bytes:
    """The QOI reference encoder's algorithm (qoiformat.org), for test images."""
    out = bytearray(b"qoif" + struct.pack(">IIBB", width, height, 4, 0))
    index = [(0, 0, 0, 0)] * 64
    previous = (0, 0, 0, 255)
    run = 0
    pixels = [tuple(rgba[i : i + 4]) for i in range(0, len(rgba), 4)]
    for number, pixel in enumerate(pixels):
        if pixel == previous:
            run += 1
            if run == 62 or number == len(pixels) - 1:
                out.append(0xC0 | (run - 1))
                run = 0
            continue
        if run:
            out.append(0xC0 | (run - 1))
            run = 0
        r, g, b, a = pixel
        position = (r * 3 + g * 5 + b * 7 + a * 11) % 64
        if index[position] == pixel:
            out.append(position)
        else:
            index[position] = pixel
            if a == previous[3]:
                dr = (r - previous[0] + 128) % 256 - 128
                dg = (g - previous[1] + 128) % 256 - 128
                db = (b - previous[2] + 128) % 256 - 128
                if -2 <= dr <= 1 and -2 <= dg <= 1 and -2 <= db <= 1:
                    out.append(0x40 | (dr + 2) << 4 | (dg + 2) << 2 | (db + 2))
                elif -32 <= dg <= 31 and -8 <= dr - dg <= 7 and -8 <= db - dg <= 7:
                    out += bytes((0x80 | (dg + 32), (dr - dg + 8) << 4 | (db - dg + 8)))
                else:
                    out += bytes((0xFE, r, g, b))
            else:
                out += bytes((0xFF, r, g, b, a))
        previous = pixel
    return bytes(out + b"\x00" * 7 + b"\x01")


def gradient(width: int, height: int) -> bytes:
    """Runs, small steps, larger steps, repeats and a change of alpha: every QOI op."""
    out = bytearray()
    for y in range(height):
        for x in range(width):
            if x < 5:
                out += bytes((10, 20, 30, 255))  # a run
            elif y % 3 == 0:
                out += bytes((x % 256, (x * 2) % 256, 40, 255))  # small steps
            elif y % 3 == 1:
                out += bytes(((x * 17) % 256, (y * 29) % 256, (x * y) % 256, 200))
            else:
                out += bytes(((x // 4) * 40 % 256, 50, 60, 255))  # repeats from the index
    return bytes(out)


def block(kind: str, width: int, height: int, data: bytes) -> bytes:
    text = base64.b64encode(data).decode()
    lines = [f"; {text[i : i + 78]}" for i in range(0, len(text), 78)]
    tag = "thumbnail" if kind == "PNG" else f"thumbnail_{kind}"
    return (
        f"; {tag} begin {width}x{height} {len(text)}\n" + "\n".join(lines) + f"\n; {tag} end\n"
    ).encode()


@pytest.mark.parametrize("name", ["prusaslicer-issue1.gcode", "superslicer.gcode"])
def test_the_largest_real_slicer_picture_is_kept(name: str) -> None:
    picture = largest(*read_ends(corpus_file(f"gcode/{name}")))
    assert picture is not None
    assert (picture.width, picture.height, picture.media_type) == (400, 300, "image/png")
    assert png_pixels(picture.data)[:2] == (400, 300)


def test_a_qoi_thumbnail_becomes_a_png_with_the_same_pixels() -> None:
    pixels = gradient(48, 30)
    encoded = qoi_encode(48, 30, pixels)
    assert qoi_decode(encoded) == (48, 30, pixels)
    picture = largest(b"G28\n" + block("QOI", 48, 30, encoded) + b"G1 X1\n")
    assert picture is not None
    assert picture.media_type == "image/png"
    assert png_pixels(picture.data) == (48, 30, pixels)


def test_jpeg_blocks_are_kept_as_jpeg_and_the_largest_wins() -> None:
    jpeg = b"\xff\xd8\xff\xe0" + b"\x00" * 100 + b"\xff\xd9"
    small = qoi_encode(4, 4, bytes(range(64)))
    picture = largest(block("QOI", 4, 4, small), block("JPG", 300, 300, jpeg))
    assert picture is not None
    assert (picture.media_type, picture.width, picture.extension) == ("image/jpeg", 300, ".jpg")


def test_blocks_that_only_pretend_are_skipped() -> None:
    not_png = block("PNG", 10, 10, b"GIF89a" + b"\x00" * 40)
    wrong_size = block("QOI", 10, 10, qoi_encode(4, 4, bytes(64)))
    bad_base64 = b"; thumbnail begin 10x10 12\n; !!!not base64!!!\n; thumbnail end\n"
    cut_short = b"; thumbnail begin 10x10 12\n; iVBORw0KGgo\nG1 X10\n; thumbnail end\n"
    absurd = block("QOI", 100_000, 100_000, b"qoif")
    truncated_qoi = block("QOI", 48, 30, qoi_encode(48, 30, gradient(48, 30))[:200])
    assert largest(not_png + wrong_size + bad_base64 + cut_short + absurd + truncated_qoi) is None
