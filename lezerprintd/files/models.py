"""What is in a model file: its size, volume, surface, soundness, and a picture of it.

Runs in a worker process (see files/analysis.py), never in the daemon: numpy and a
million-triangle mesh would cost the daemon tens of MB for good. Every figure is computed
from the triangles themselves. Models that cannot be read, or hold coordinates that are not
numbers, raise ModelError with a sentence for the user.

The picture is an isometric view drawn with numpy: small triangles are splatted at their
corners and centre, larger ones are filled pixel by pixel, both through one depth buffer,
shaded by the angle of each face to a light over the viewer's shoulder.
"""

from __future__ import annotations

import math
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from lezerprintd.files.thumbnails import png_encode

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    Floats = NDArray[np.floating[Any]]

PICTURE_PIXELS: Final = 256
_COLOUR: Final = (255, 140, 40)  # the orange of a fresh spool
_LARGE_TRIANGLE_PIXELS: Final = 4.0  # bigger than this on screen: filled, not splatted
_CHUNK: Final = 100_000  # triangles measured and drawn at a time


class ModelError(Exception):
    """A model that cannot be analysed; the message says why, for the user."""


@dataclass(slots=True)
class ModelFigures:
    triangles: int
    min: list[float]  # mm, x y z
    max: list[float]
    dimensions: list[float]
    volume: float  # mm³
    surface_area: float  # mm²
    watertight: bool  # every edge joins exactly two faces, wound the same way
    degenerate_facets: int  # faces without area
    inverted_facets: int  # faces whose stored normal points against their winding

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["surfaceArea"] = out.pop("surface_area")
        out["degenerateFacets"] = out.pop("degenerate_facets")
        out["invertedFacets"] = out.pop("inverted_facets")
        return out


def analyze_stl(path: Path) -> tuple[ModelFigures, bytes]:
    """The figures and an isometric PNG of the STL file at `path`."""
    import numpy as np
    from stl import mesh

    try:
        model = mesh.Mesh.from_file(str(path), calculate_normals=False, speedups=True)
    except (ValueError, AssertionError, RuntimeError, OSError, IndexError, struct.error) as error:
        raise ModelError(f"the STL file cannot be read: {error}") from None
    # STL stores float32; working in it halves the memory a big mesh needs.
    corners = np.asarray(model.vectors, dtype=np.float32)  # (n, 3, 3)
    stored_normals = np.asarray(model.normals, dtype=np.float32)
    return analyze_triangles(corners, stored_normals)


def analyze_triangles(
    corners: Floats, stored_normals: Floats | None = None
) -> tuple[ModelFigures, bytes]:
    import numpy as np

    if corners.ndim != 3 or corners.shape[1:] != (3, 3) or len(corners) == 0:
        raise ModelError("the model holds no triangles")
    # Per column: numpy reduces a strided column far faster than along a short axis.
    low = np.array([corners[:, :, axis].min() for axis in range(3)], dtype=np.float64)
    high = np.array([corners[:, :, axis].max() for axis in range(3)], dtype=np.float64)
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ModelError("the model holds coordinates that are not numbers (NaN or infinity)")
    # Centred, the float32 products keep their precision (the volume does not move).
    centre = ((low + high) / 2).astype(corners.dtype)
    scale = float(np.max(high - low)) / 2 or 1.0
    picture = _Picture((low, high))
    degenerate = np.empty(len(corners), dtype=bool)
    volume = area = 0.0
    inverted = 0
    # A slice at a time: the temporaries of a million triangles at once would need hundreds of
    # MB, more than a Pi Zero 2 W has beside the daemon.
    for first in range(0, len(corners), _CHUNK):
        part = slice(first, first + _CHUNK)
        a, b, c = (corners[part, corner] - centre for corner in range(3))
        crossed = np.cross(b - a, c - a)
        doubled_areas = np.sqrt(np.einsum("ij,ij->i", crossed, crossed, dtype=np.float64))
        flat = doubled_areas <= scale * scale * 1e-10
        degenerate[part] = flat
        volume += float(np.einsum("ij,ij->", a, np.cross(b, c), dtype=np.float64))
        area += float(doubled_areas.sum())
        if stored_normals is not None and len(stored_normals) == len(corners):
            given = np.linalg.norm(stored_normals[part], axis=1) > 0
            agree = np.einsum("ij,ij->i", stored_normals[part], crossed)
            inverted += int(np.count_nonzero(given & ~flat & (agree < 0)))
        picture.draw(corners[part], crossed, doubled_areas)
    figures = ModelFigures(
        triangles=len(corners),
        min=_rounded(low),
        max=_rounded(high),
        dimensions=_rounded(high - low),
        volume=round(abs(volume) / 6, 3),
        surface_area=round(area / 2, 3),
        watertight=_watertight(corners, degenerate),
        degenerate_facets=int(np.count_nonzero(degenerate)),
        inverted_facets=inverted,
    )
    return figures, picture.png()


def _rounded(values: Floats) -> list[float]:
    return [round(float(value), 4) for value in values]


def _watertight(corners: Floats, degenerate: NDArray[np.bool_]) -> bool:
    """Each edge of a face with area joins exactly two such faces, once in each direction.

    Written for memory (a million triangles are 3 million corners): arrays are reused in place,
    ids are int32, and what is done with is deleted before the next big array is made."""
    import numpy as np

    points = corners[~degenerate]
    if len(points) == 0:
        return False
    points += np.float32(0)  # makes -0.0 into 0.0: the same point, whatever its sign bit
    ids = _vertex_ids(points.reshape(-1, 3).view(np.uint32))
    del points
    count = int(ids.max()) + 1
    first = ids
    second = np.roll(ids.reshape(-1, 3), -1, axis=1).ravel()
    # One sort key: the edge, and whether this face runs along it forwards.
    keys = np.minimum(first, second).astype(np.int64)
    keys *= count
    keys += np.maximum(first, second)
    keys *= 2
    keys += first < second
    del first, second, ids
    keys.sort()
    forward = (keys & 1).astype(np.int8)
    keys >>= 1
    group = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    uses = np.diff(np.r_[group, len(keys)])
    del keys
    # Two faces per edge, and they run along it in opposite directions.
    return bool((uses == 2).all()) and bool((np.add.reduceat(forward, group) == 1).all())


def _vertex_ids(bits: NDArray[np.uint32]) -> NDArray[np.int32]:
    """The same id for corners with the same coordinates (exactly: by their bits)."""
    import numpy as np

    hashed = bits[:, 0].astype(np.uint64)
    hashed *= np.uint64(0x9E3779B97F4A7C15)
    spare = np.empty_like(hashed)
    for axis, factor in ((1, 0xC2B2AE3D27D4EB4F), (2, 0x165667B19E3779F9)):
        spare[:] = bits[:, axis]
        spare *= np.uint64(factor)
        hashed ^= spare
    order = np.argsort(hashed)
    np.take(hashed, order, out=spare)
    fresh = np.r_[True, spare[1:] != spare[:-1]]
    del hashed, spare
    differs = np.zeros(len(order), dtype=bool)
    for axis in range(3):
        column = bits[order, axis]
        differs[1:] |= column[1:] != column[:-1]
    if (differs & ~fresh).any():  # two points, one hash: sort by the coordinates themselves
        order = np.lexsort((bits[:, 2], bits[:, 1], bits[:, 0]))
        fresh = np.zeros(len(order), dtype=bool)
        fresh[0] = True
        for axis in range(3):
            column = bits[order, axis]
            fresh[1:] |= column[1:] != column[:-1]
    ids = np.empty(len(order), dtype=np.int32)
    ids[order] = np.cumsum(fresh, dtype=np.int32) - 1
    return ids


class _Picture:
    """An isometric RGBA PNG of a model, PICTURE_PIXELS square, transparent around it, drawn
    a slice of triangles at a time through one depth buffer."""

    def __init__(self, box: tuple[Floats, Floats]) -> None:
        import numpy as np

        size = PICTURE_PIXELS
        # Turn 45° about Z, then tip the top towards the viewer: the classic isometric view.
        turn, tip = math.radians(-45), math.radians(54.7356)
        about_z = np.array(
            [[math.cos(turn), -math.sin(turn), 0], [math.sin(turn), math.cos(turn), 0], [0, 0, 1]]
        )
        about_x = np.array(
            [[1, 0, 0], [0, math.cos(tip), -math.sin(tip)], [0, math.sin(tip), math.cos(tip)]]
        )
        self.view = about_x @ about_z
        # The box's corners, turned, bound the model's picture without a pass over every point.
        box_corners = (
            np.array(
                [[box[i][0], box[j][1], box[k][2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)]
            )
            @ self.view.T
        )
        low, high = box_corners.min(axis=0), box_corners.max(axis=0)
        span = float(max(high[0] - low[0], high[1] - low[1])) or 1.0
        self.fit = (size - 8) / span
        self.middle = (low + high) / 2
        light = np.array([-0.4, 0.5, 0.77])
        self.light = light / np.linalg.norm(light)
        self.zbuffer = np.full(size * size, -np.inf)
        self.colour_of = np.zeros(size * size)

    def draw(self, corners: Floats, crossed: Floats, doubled_areas: Floats) -> None:
        import numpy as np

        size = PICTURE_PIXELS
        seen = corners.reshape(-1, 3) @ self.view.T.astype(corners.dtype)  # x right, y up, z to us
        screen_x = (seen[:, 0] - self.middle[0]) * self.fit + size / 2
        screen_y = size / 2 - (seen[:, 1] - self.middle[1]) * self.fit
        tri_x, tri_y, tri_z = (v.reshape(-1, 3) for v in (screen_x, screen_y, seen[:, 2]))
        normals = (crossed @ self.view.T) / np.maximum(doubled_areas, 1e-30)[:, None]
        # Both sides lit alike, so a model with flipped faces still looks like itself.
        shade = 0.35 + 0.65 * np.abs(normals @ self.light)
        extent = np.maximum(_spread(tri_x), _spread(tri_y))
        tiny = extent <= 1
        small = ~tiny & (extent <= math.sqrt(_LARGE_TRIANGLE_PIXELS))
        centres = [(t[:, 0] + t[:, 1] + t[:, 2]) / 3 for t in (tri_x, tri_y, tri_z)]
        # Tiny triangles: their centre; small ones: their corners and centre too.
        _splat([c[tiny] for c in centres], shade[tiny], self.zbuffer, self.colour_of)
        corners_and_centres = [
            np.concatenate([t[small], c[small, None]], axis=1).ravel()
            for t, c in zip((tri_x, tri_y, tri_z), centres, strict=True)
        ]
        _splat(corners_and_centres, np.repeat(shade[small], 4), self.zbuffer, self.colour_of)
        # Larger ones: every pixel centre inside them.
        for index in np.flatnonzero(~tiny & ~small):
            triangle = (tri_x[index], tri_y[index], tri_z[index])
            _fill(triangle, float(shade[index]), self.zbuffer, self.colour_of)

    def png(self) -> bytes:
        import numpy as np

        size = PICTURE_PIXELS
        covered = np.isfinite(self.zbuffer)
        rgba = np.zeros((size * size, 4), dtype=np.uint8)
        for channel, value in enumerate(_COLOUR):
            shaded = np.clip(self.colour_of[covered] * value, 0, 255)
            rgba[covered, channel] = shaded.astype(np.uint8)
        rgba[covered, 3] = 255
        return png_encode(size, size, rgba.tobytes())


def _spread(values: Floats) -> Floats:
    """Per row of three: largest minus smallest, element-wise (fast)."""
    import numpy as np

    a, b, c = values[:, 0], values[:, 1], values[:, 2]
    return np.maximum(np.maximum(a, b), c) - np.minimum(np.minimum(a, b), c)


def _splat(points: list[Floats], shade: Floats, zbuffer: Floats, colour_of: Floats) -> None:
    """Points (x, y, depth) into the depth buffer: the nearest of each pixel sets its colour."""
    import numpy as np

    size = PICTURE_PIXELS
    x, y, z = points
    column, row = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    inside = (column >= 0) & (column < size) & (row >= 0) & (row < size)
    pixel, depth, tone = row[inside] * size + column[inside], z[inside], shade[inside]
    nearest = zbuffer.copy()
    np.maximum.at(nearest, pixel, depth)
    winners = depth >= nearest[pixel]
    zbuffer[pixel[winners]] = depth[winners]
    colour_of[pixel[winners]] = tone[winners]


def _fill(
    triangle: tuple[Floats, Floats, Floats], shade: float, zbuffer: Floats, colour_of: Floats
) -> None:
    """Every pixel centre inside one (larger) triangle, through the depth buffer."""
    import numpy as np

    x, y, z = triangle
    size = PICTURE_PIXELS
    left, right = max(math.floor(x.min()), 0), min(math.ceil(x.max()), size - 1)
    top, bottom = max(math.floor(y.min()), 0), min(math.ceil(y.max()), size - 1)
    if left > right or top > bottom:
        return
    area = (x[1] - x[0]) * (y[2] - y[0]) - (x[2] - x[0]) * (y[1] - y[0])
    if abs(area) < 1e-12:
        return
    columns, rows = np.meshgrid(np.arange(left, right + 1) + 0.5, np.arange(top, bottom + 1) + 0.5)
    w0 = ((x[1] - columns) * (y[2] - rows) - (x[2] - columns) * (y[1] - rows)) / area
    w1 = ((x[2] - columns) * (y[0] - rows) - (x[0] - columns) * (y[2] - rows)) / area
    w2 = 1 - w0 - w1
    inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
    if not inside.any():
        return
    depth = (w0 * z[0] + w1 * z[1] + w2 * z[2])[inside]
    pixel = (rows[inside] - 0.5).astype(np.int64) * size + (columns[inside] - 0.5).astype(np.int64)
    nearer = depth > zbuffer[pixel]
    zbuffer[pixel[nearer]] = depth[nearer]
    colour_of[pixel[nearer]] = shade


def main(arguments: list[str]) -> int:
    """`python -m lezerprintd.files.models MODEL PICTURE`: the figures as JSON on stdout, the
    picture written to PICTURE; exit 2 with the reason on stderr when the model is unreadable.
    The library runs this as a child process at low priority (files/library.py)."""
    import json
    import os
    import sys

    from lezerprintd.files.mesh_formats import FormatError, read_3mf, read_obj

    os.nice(10)  # the printer and the web come first
    source, picture_path = Path(arguments[0]), Path(arguments[1])
    try:
        kind = source.suffix.lower()
        if kind == ".obj":
            figures, picture = analyze_triangles(read_obj(source))
        elif kind == ".3mf":
            figures, picture = analyze_triangles(read_3mf(source))
        else:
            figures, picture = analyze_stl(source)
    except (ModelError, FormatError) as error:
        print(str(error), file=sys.stderr)
        return 2
    except MemoryError:
        print("the model is too big for the memory this appliance has", file=sys.stderr)
        return 2
    picture_path.write_bytes(picture)
    print(json.dumps(figures.to_json()))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
