"""Model figures and pictures from STL files written here: a 10 mm cube (binary and ASCII),
the cube with a face missing or turned inside out, and files that lie or hold no numbers."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import pytest

from lezerprintd.files.models import PICTURE_PIXELS, ModelError, analyze_stl

CUBE_CORNERS = [(x, y, z) for x in (0, 10) for y in (0, 10) for z in (0, 10)]
# Two triangles per side, wound counter-clockwise seen from outside.
CUBE_FACES = [
    (0, 2, 3), (0, 3, 1),  # x = 0
    (4, 5, 7), (4, 7, 6),  # x = 10
    (0, 1, 5), (0, 5, 4),  # y = 0
    (2, 6, 7), (2, 7, 3),  # y = 10
    (0, 4, 6), (0, 6, 2),  # z = 0
    (1, 3, 7), (1, 7, 5),  # z = 10
]  # fmt: skip

Triangle = tuple[tuple[float, float, float], ...]


def cube(faces: list[tuple[int, int, int]] = CUBE_FACES) -> list[Triangle]:
    return [tuple(CUBE_CORNERS[i] for i in face) for face in faces]


def normal(triangle: Triangle) -> tuple[float, float, float]:
    (ax, ay, az), (bx, by, bz), (cx, cy, cz) = triangle
    u, v = (bx - ax, by - ay, bz - az), (cx - ax, cy - ay, cz - az)
    n = (u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0])
    length = math.sqrt(sum(c * c for c in n)) or 1
    return (n[0] / length, n[1] / length, n[2] / length)


def binary_stl(
    path: Path, triangles: list[Triangle], normals: list[Triangle] | None = None
) -> Path:
    with path.open("wb") as out:
        out.write(b"made by the tests".ljust(80, b" ") + struct.pack("<I", len(triangles)))
        for index, triangle in enumerate(triangles):
            given = normals[index] if normals else normal(triangle)
            out.write(struct.pack("<3f", *given))
            for corner in triangle:
                out.write(struct.pack("<3f", *corner))
            out.write(b"\0\0")
    return path


def ascii_stl(path: Path, triangles: list[Triangle]) -> Path:
    lines = ["solid cube"]
    for triangle in triangles:
        lines += [f"  facet normal {' '.join(map(str, normal(triangle)))}", "    outer loop"]
        lines += [f"      vertex {x} {y} {z}" for x, y, z in triangle]
        lines += ["    endloop", "  endfacet"]
    path.write_text("\n".join([*lines, "endsolid cube", ""]))
    return path


def alpha(png: bytes, x: int, y: int) -> int:
    (width,) = struct.unpack(">I", png[16:20])
    position, idat = 8, b""
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        if png[position + 4 : position + 8] == b"IDAT":
            idat += png[position + 8 : position + 8 + length]
        position += 12 + length
    rows = zlib.decompress(idat)
    return rows[y * (width * 4 + 1) + 1 + x * 4 + 3]


@pytest.mark.parametrize("write", [binary_stl, ascii_stl])
def test_a_cube_is_measured_and_drawn(tmp_path: Path, write: object) -> None:
    path = write(tmp_path / "cube.stl", cube())  # type: ignore[operator]
    figures, picture = analyze_stl(path)
    assert figures.triangles == 12
    assert (figures.min, figures.max, figures.dimensions) == ([0, 0, 0], [10, 10, 10], [10] * 3)
    assert figures.volume == pytest.approx(1000)
    assert figures.surface_area == pytest.approx(600)
    assert figures.watertight is True
    assert (figures.degenerate_facets, figures.inverted_facets) == (0, 0)
    assert picture.startswith(b"\x89PNG")
    assert struct.unpack(">II", picture[16:24]) == (PICTURE_PIXELS, PICTURE_PIXELS)
    middle = PICTURE_PIXELS // 2
    assert alpha(picture, middle, middle) == 255  # the cube
    assert alpha(picture, 1, 1) == 0  # around it, transparent


def test_a_missing_face_is_not_watertight(tmp_path: Path) -> None:
    figures, _ = analyze_stl(binary_stl(tmp_path / "open.stl", cube(CUBE_FACES[:-1])))
    assert figures.watertight is False
    assert figures.triangles == 11


def test_a_face_turned_inside_out_is_counted_and_breaks_watertightness(tmp_path: Path) -> None:
    faces = list(CUBE_FACES)
    faces[0] = (faces[0][0], faces[0][2], faces[0][1])
    triangles = cube(faces)
    normals = [normal(t) for t in cube()]  # the normals as they were before
    figures, _ = analyze_stl(binary_stl(tmp_path / "flipped.stl", triangles, normals))  # type: ignore[arg-type]
    assert figures.inverted_facets == 1
    assert figures.watertight is False


def test_a_flat_sliver_is_degenerate(tmp_path: Path) -> None:
    sliver: Triangle = ((0, 0, 0), (5, 0, 0), (10, 0, 0))
    figures, _ = analyze_stl(binary_stl(tmp_path / "sliver.stl", [*cube(), sliver]))
    assert figures.degenerate_facets == 1
    assert figures.watertight is True  # a face without area is no hole


def test_coordinates_that_are_not_numbers_are_refused(tmp_path: Path) -> None:
    broken: Triangle = ((0, 0, 0), (math.nan, 1, 0), (0, math.inf, 0))
    with pytest.raises(ModelError, match="not numbers"):
        analyze_stl(binary_stl(tmp_path / "nan.stl", [*cube(), broken]))


def test_text_that_is_not_an_stl_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.stl"
    path.write_text("solid junk\n  facet normal banana\n    outer loop\n  vertex x y z\n")
    with pytest.raises(ModelError, match=r"cannot be read|holds no triangles"):
        analyze_stl(path)
