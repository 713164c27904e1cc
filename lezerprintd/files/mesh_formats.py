"""Triangles out of OBJ and 3MF files, for the model analysis (files/models.py).

Rule: a hostile file costs a clear error, never the worker's memory or the disk. A 3MF is
read in memory from its zip, never unpacked to disk (so entry names cannot point anywhere);
entries that would unpack past MAX_UNPACKED_BYTES, or swell more than MAX_RATIO times, are
refused before a byte is inflated; model XML with a DOCTYPE (entity tricks) is refused, and
the XML is read as a stream. Runs in the worker process only.
"""

from __future__ import annotations

import itertools
import math
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast
from xml.etree import ElementTree

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

MAX_UNPACKED_BYTES: Final = 2 * 1024**3
MAX_RATIO: Final = 200  # a mesh's XML compresses about 5-20 times; 200 is a bomb
MAX_TRIANGLES: Final = 20_000_000
_CORE: Final = "{http://schemas.microsoft.com/3dmanufacturing/core/2015/02}"


class FormatError(Exception):
    """The file cannot be read as the model it claims to be; the message says why."""


def read_obj(path: Path) -> NDArray[np.float32]:
    """Every face of an OBJ file as triangles (polygons fanned), (n, 3, 3) float32."""
    import numpy as np

    vertices: list[tuple[float, float, float]] = []
    triangles: list[tuple[int, int, int]] = []
    with path.open("rb") as source:
        for number, raw in enumerate(source, 1):
            parts = raw.split()
            if not parts:
                continue
            try:
                if parts[0] == b"v":
                    vertices.append((float(parts[1]), float(parts[2]), float(parts[3])))
                elif parts[0] == b"f":
                    corners = [_obj_index(part, len(vertices)) for part in parts[1:]]
                    if len(corners) < 3:
                        raise ValueError("a face needs three corners")
                    triangles += [(corners[0], b, c) for b, c in itertools.pairwise(corners[1:])]
            except (ValueError, IndexError) as error:
                raise FormatError(f"line {number} of the OBJ file is not valid: {error}") from None
            if len(triangles) > MAX_TRIANGLES:
                raise FormatError(f"the model has more than {MAX_TRIANGLES:,} triangles")
    if not triangles:
        raise FormatError("the OBJ file has no faces")
    points = np.asarray(vertices, dtype=np.float32)
    return points[np.asarray(triangles, dtype=np.int64)]


def _obj_index(part: bytes, count: int) -> int:
    """`7`, `7/1`, `7//3` or `-1` (relative) to a 0-based vertex index."""
    index = int(part.split(b"/", 1)[0])
    resolved = index - 1 if index > 0 else count + index
    if not 0 <= resolved < count or index == 0:
        raise ValueError(f"vertex {index} does not exist (yet)")
    return resolved


def read_3mf(path: Path) -> NDArray[np.float32]:
    """The triangles of every object a 3MF package builds, placed by its transforms."""
    import numpy as np

    try:
        package = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise FormatError(f"the 3MF file is not a readable zip: {error}") from None
    with package:
        entries = {entry.filename.lower(): entry for entry in package.infolist()}
        model = entries.get("3d/3dmodel.model")
        if model is None:
            raise FormatError("the 3MF package holds no 3D/3dmodel.model")
        total = sum(entry.file_size for entry in entries.values())
        if total > MAX_UNPACKED_BYTES:
            raise FormatError("the 3MF package would unpack to more than 2 GB")
        if model.file_size > MAX_RATIO * max(model.compress_size, 1) + 1_000_000:
            raise FormatError("the 3MF model swells too much when unpacked (a zip bomb?)")
        objects, build = _parse_model(package, model)
    pieces = [
        _placed(triangles, placement)
        for object_id, item_transform in build
        for triangles, placement in _flatten(objects, object_id, item_transform, depth=0)
    ]
    pieces = [piece for piece in pieces if len(piece)]
    if not pieces:
        raise FormatError("the 3MF package builds no triangles")
    return np.concatenate(pieces).astype(np.float32)


Transform = tuple[float, ...]  # 3MF's 12 numbers: a 3x3 matrix by rows, then a translation
IDENTITY: Final[Transform] = (1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0)


class _Object:
    def __init__(self) -> None:
        self.vertices: list[tuple[float, float, float]] = []
        self.triangles: list[tuple[int, int, int]] = []
        self.components: list[tuple[str, Transform]] = []


def _parse_model(
    package: zipfile.ZipFile, entry: zipfile.ZipInfo
) -> tuple[dict[str, _Object], list[tuple[str, Transform]]]:
    objects: dict[str, _Object] = {}
    build: list[tuple[str, Transform]] = []
    current: _Object | None = None
    count = 0
    parser: ElementTree.XMLPullParser[Any] = ElementTree.XMLPullParser(events=("start", "end"))
    try:
        with package.open(entry) as stream:
            for chunk in _refuse_doctype(stream):
                parser.feed(chunk)
                for event, element in cast(
                    Iterator[tuple[str, ElementTree.Element]], parser.read_events()
                ):
                    tag = element.tag.removeprefix(_CORE)
                    if event == "start":
                        if tag == "object":
                            current = objects.setdefault(element.get("id", ""), _Object())
                        continue
                    if tag == "vertex" and current is not None:
                        current.vertices.append(
                            (float(element.get("x", "")), float(element.get("y", "")),
                             float(element.get("z", "")))
                        )  # fmt: skip
                    elif tag == "triangle" and current is not None:
                        current.triangles.append(
                            (int(element.get("v1", "")), int(element.get("v2", "")),
                             int(element.get("v3", "")))
                        )  # fmt: skip
                        count += 1
                        if count > MAX_TRIANGLES:
                            raise FormatError(
                                f"the model has more than {MAX_TRIANGLES:,} triangles"
                            )
                    elif tag == "component" and current is not None:
                        placement = _transform(element.get("transform"))
                        current.components.append((element.get("objectid", ""), placement))
                    elif tag == "item":
                        placement = _transform(element.get("transform"))
                        build.append((element.get("objectid", ""), placement))
                    elif tag == "object":
                        current = None
                    element.clear()  # a stream: what is read is let go
            parser.close()
    except ElementTree.ParseError as error:
        raise FormatError(f"the 3MF model is not well-formed XML: {error}") from None
    except ValueError as error:
        raise FormatError(f"the 3MF model holds a value that is not a number: {error}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise FormatError(f"the 3MF package is damaged: {error}") from None
    return objects, build


def _refuse_doctype(stream: Any) -> Iterator[bytes]:
    """Pass the XML through, refusing a DOCTYPE (entities) before the parser sees it."""
    previous = b""
    while chunk := stream.read(65536):
        window = (previous[-16:] + chunk).upper()
        if b"<!DOCTYPE" in window or b"<!ENTITY" in window:
            raise FormatError("the 3MF model declares a DOCTYPE or entities; 3MF never needs them")
        previous = chunk
        yield chunk


def _transform(text: str | None) -> Transform:
    if not text:
        return IDENTITY
    numbers = tuple(float(value) for value in text.split())
    if len(numbers) != 12 or not all(math.isfinite(n) for n in numbers):
        raise ValueError(f"transform {text[:60]!r}")
    return numbers


def _compose(outer: Transform, inner: Transform) -> Transform:
    """`inner` applied first, then `outer` (3MF's row-vector convention)."""
    a, b = _matrix(inner), _matrix(outer)
    product = a @ b
    return tuple(float(v) for v in product[:3, :3].ravel()) + tuple(
        float(v) for v in product[3, :3]
    )


def _matrix(transform: Transform) -> NDArray[np.float64]:
    import numpy as np

    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(transform[:9]).reshape(3, 3)
    matrix[3, :3] = transform[9:]
    return matrix


def _flatten(
    objects: dict[str, _Object], object_id: str, transform: Transform, depth: int
) -> Iterator[tuple[NDArray[np.float32], Transform]]:
    """The triangles of an object and of the components it is made of, with their placement."""
    import numpy as np

    if depth > 16:
        raise FormatError("the 3MF objects refer to each other in a loop")
    found = objects.get(object_id)
    if found is None:
        raise FormatError(f"the 3MF build names object {object_id!r}, which it does not define")
    if found.triangles:
        points = np.asarray(found.vertices, dtype=np.float32)
        indices = np.asarray(found.triangles, dtype=np.int64)
        if len(points) == 0 or indices.min() < 0 or indices.max() >= len(points):
            raise FormatError(f"a triangle of object {object_id!r} names a missing vertex")
        yield points[indices], transform
    for child, placement in found.components:
        yield from _flatten(objects, child, _compose(transform, placement), depth + 1)


def _placed(triangles: NDArray[np.float32], transform: Transform) -> NDArray[np.float32]:
    import numpy as np

    if transform == IDENTITY:
        return triangles
    matrix = _matrix(transform)
    flat = triangles.reshape(-1, 3).astype(np.float64) @ matrix[:3, :3] + matrix[3, :3]
    return flat.astype(np.float32).reshape(-1, 3, 3)
