"""Model figures and pictures from STL files written here: a 10 mm cube (binary and ASCII),
the cube with a face missing or turned inside out, and files that lie or hold no numbers."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest

from lezerprintd.files.mesh_formats import FormatError, read_3mf, read_obj
from lezerprintd.files.models import PICTURE_PIXELS, ModelError, analyze_stl, analyze_triangles

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


# -- OBJ and 3MF ---------------------------------------------------------------------------------

OBJ_CUBE = """# a 10 mm cube with square faces, written three ways
v 0 0 0
v 0 0 10
v 0 10 0
v 0 10 10
v 10 0 0
v 10 0 10
v 10 10 0
v 10 10 10
vn 0 0 1
f 1 2 4 3
f 5/1 7/1 8/1 6/1
f 1//1 5//1 6//1 2//1
f 3 4 8 7
f 1 3 7 5
f -7 -3 -1 -5
"""


def test_an_obj_cube_with_polygons_and_relative_indices(tmp_path: Path) -> None:
    path = tmp_path / "cube.obj"
    path.write_text(OBJ_CUBE)
    figures, _ = analyze_triangles(read_obj(path))
    assert figures.triangles == 12
    assert figures.volume == pytest.approx(1000)
    assert figures.watertight is True


def test_an_obj_face_naming_a_missing_vertex_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nf 1 2 9\n")
    with pytest.raises(FormatError, match="line 3"):
        read_obj(path)


def three_mf(path: Path, model: str | bytes, *, compress: bool = True) -> Path:
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as package:
        package.writestr("[Content_Types].xml", "<Types/>")
        package.writestr("3D/3dmodel.model", model)
    return path


def model_xml(objects: str, items: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<model unit="millimeter" '
        'xmlns="http://schemas.microsoft.com/3dmanufacturing/core/2015/02">'
        f"<resources>{objects}</resources><build>{items}</build></model>"
    )


def cube_object(object_id: int) -> str:
    vertices = "".join(f'<vertex x="{x}" y="{y}" z="{z}"/>' for x, y, z in CUBE_CORNERS)
    faces = "".join(f'<triangle v1="{a}" v2="{b}" v3="{c}"/>' for a, b, c in CUBE_FACES)
    return (
        f'<object id="{object_id}" type="model"><mesh><vertices>{vertices}</vertices>'
        f"<triangles>{faces}</triangles></mesh></object>"
    )


def test_a_3mf_builds_its_objects_where_their_transforms_put_them(tmp_path: Path) -> None:
    twice = '<object id="2"><components><component objectid="1" transform="2 0 0 0 2 0 0 0 2 0 0 0"/></components></object>'  # noqa: E501
    xml = model_xml(
        cube_object(1) + twice,
        '<item objectid="1" transform="1 0 0 0 1 0 0 0 1 5 0 0"/>'
        '<item objectid="2" transform="1 0 0 0 1 0 0 0 1 100 0 0"/>',
    )
    figures, _ = analyze_triangles(read_3mf(three_mf(tmp_path / "plate.3mf", xml)))
    assert figures.triangles == 24
    assert figures.min == [5, 0, 0]
    assert figures.max == [120, 20, 20]
    assert figures.volume == pytest.approx(1000 + 8000)


@pytest.mark.parametrize(
    ("model", "says"),
    [
        (model_xml(cube_object(1), '<item objectid="7"/>'), "does not define"),
        (model_xml(cube_object(1), '<item objectid="1"') + "oops", "not well-formed"),
        (
            '<?xml version="1.0"?><!DOCTYPE lol [<!ENTITY a "aaaaaaaaaa">'
            '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><model>&b;</model>',
            "DOCTYPE",
        ),
        (model_xml(cube_object(1).replace('x="10"', 'x="ten"', 1), "<item objectid='1'/>"),
         "not a number"),
    ],
)  # fmt: skip
def test_a_hostile_or_broken_3mf_is_refused(tmp_path: Path, model: str, says: str) -> None:
    with pytest.raises(FormatError, match=says):
        read_3mf(three_mf(tmp_path / "bad.3mf", model))


def test_a_3mf_that_would_inflate_to_gigabytes_is_refused_unopened(tmp_path: Path) -> None:
    # 40 MB of one byte deflates to ~40 KB: a thousand to one, as zip bombs are made.
    path = three_mf(tmp_path / "bomb.3mf", b" " * 40_000_000)
    assert path.stat().st_size < 200_000
    with pytest.raises(FormatError, match="zip bomb"):
        read_3mf(path)


def test_the_worker_answers_figures_or_one_line_of_why(tmp_path: Path) -> None:
    source = tmp_path / "cube.obj"
    source.write_text(OBJ_CUBE)
    done = subprocess.run(
        [sys.executable, "-m", "lezerprintd.files.models", str(source), str(tmp_path / "a.png")],
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["volume"] == pytest.approx(1000)
    assert (tmp_path / "a.png").read_bytes().startswith(b"\x89PNG")
    broken = three_mf(tmp_path / "broken.3mf", model_xml("", '<item objectid="1"/>'))
    failed = subprocess.run(
        [sys.executable, "-m", "lezerprintd.files.models", str(broken), str(tmp_path / "b.png")],
        capture_output=True,
        check=False,
    )
    assert failed.returncode == 2
    assert failed.stderr.decode().strip() == (
        "the 3MF build names object '1', which it does not define"
    )
    assert not (tmp_path / "b.png").exists()
