"""The file library through the real app: real uploads over loopback into real files under
tmp_path, real SQLite rows, the corpus's real slicer files and generated models, and hostile
uploads made byte by byte."""

from __future__ import annotations

import hashlib
import io
import socket
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lezerprintd.auth.permissions import Role
from lezerprintd.printer.virtual import VirtualPrinter
from tests.conftest import corpus_file, moves, until
from tests.test_api import Served, serve

Start = Callable[..., VirtualPrinter]


def binary_stl(triangles: int = 4) -> bytes:
    header = b"binary stl made by the tests".ljust(80, b" ")
    facets = b"".join(
        struct.pack("<12fH", 0, 0, 1, 0, 0, i, 10, 0, i, 0, 10, i, 0) for i in range(triangles)
    )
    return header + struct.pack("<I", triangles) + facets


def cube_stl(nan: bool = False) -> bytes:
    """A closed 10 mm cube (binary STL); with `nan`, one corner is not a number."""
    corners = [(x, y, z) for x in (0, 10) for y in (0, 10) for z in (0, 10)]
    faces = [(0, 2, 3), (0, 3, 1), (4, 5, 7), (4, 7, 6), (0, 1, 5), (0, 5, 4),
             (2, 6, 7), (2, 7, 3), (0, 4, 6), (0, 6, 2), (1, 3, 7), (1, 7, 5)]  # fmt: skip
    out = b"cube".ljust(80, b" ") + struct.pack("<I", len(faces))
    for number, face in enumerate(faces):
        points = [corners[i] for i in face]
        if nan and number == 0:
            points[0] = (float("nan"), 0, 0)
        out += struct.pack("<3f", 0, 0, 0) + b"".join(struct.pack("<3f", *p) for p in points)
        out += b"\0\0"
    return out


ASCII_STL = b"""solid cube
  facet normal 0 0 -1
    outer loop
      vertex 0 0 0
      vertex 10 0 0
      vertex 0 10 0
    endloop
  endfacet
endsolid cube
"""

OBJ = b"""# a triangle
o tri
v 0 0 0
v 10 0 0
v 0 10 0
f 1 2 3
"""


def three_mf(with_model: bool = True) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as package:
        package.writestr("[Content_Types].xml", "<Types/>")
        if with_model:
            package.writestr("3D/3dmodel.model", "<model unit='millimeter'/>")
    return out.getvalue()


def gcode(lines: int = 50, tag: str = "") -> bytes:
    text = f"; made by the tests {tag}\nG28\n" + "\n".join(moves(lines)) + "\n"
    return text.encode()


@pytest.fixture
async def served(
    aiohttp_client: Callable[..., Any], tmp_path: Path, start_virtual: Start
) -> Served:
    return await serve(aiohttp_client, tmp_path, start_virtual(speedup=1000))


async def upload(
    served: Served,
    content: bytes,
    filename: str,
    role: Role = Role.OPERATOR,
    **fields: str,
) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData(quote_fields=False)  # as browsers send names: unquoted
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field(
        "file", io.BytesIO(content), filename=filename, content_type="application/octet-stream"
    )
    reply = await served.client.post("/api/files", data=form, headers=served.auth(role))
    return reply.status, await reply.json()


async def raw_upload(
    served: Served, disposition: bytes, content: bytes, role: Role = Role.OPERATOR
) -> tuple[int, dict[str, Any]]:
    """A multipart body written byte by byte, as no polite client would."""
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; ' + disposition + b"\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n--XyZ--\r\n"
    )
    headers = {**served.auth(role), "Content-Type": "multipart/form-data; boundary=XyZ"}
    reply = await served.client.post("/api/files", data=body, headers=headers)
    return reply.status, await reply.json()


def files_folder(served: Served) -> Path:
    return served.appliance.config.server.data_dir / "files"


def stored(served: Served) -> list[Path]:
    return sorted(files_folder(served).iterdir())


# -- what is taken, and how it is kept ----------------------------------------------------------


async def test_every_kind_is_taken_by_its_content_and_kept_byte_for_byte(served: Served) -> None:
    uploads = {
        "cura.gcode": corpus_file("gcode/cura.gcode").read_bytes(),
        "part.GCO": gcode(tag="gco"),
        "part.g": gcode(tag="g"),
        "bracket.stl": binary_stl(),
        "cube.stl": ASCII_STL,
        "tri.obj": OBJ,
        "plate.3mf": three_mf(),
    }
    kinds = {}
    for name, content in uploads.items():
        status, answer = await upload(served, content, name)
        assert status == 201, (name, answer)
        file = answer["data"]["file"]
        assert file["originalName"] == name
        assert file["fileSize"] == str(len(content))
        assert file["sha256"] == hashlib.sha256(content).hexdigest()
        on_disk = files_folder(served) / file["fileName"]
        assert on_disk.read_bytes() == content
        kinds[name] = file["fileType"]
    assert kinds == {
        "cura.gcode": "GCODE",
        "part.GCO": "GCODE",
        "part.g": "GCODE",
        "bracket.stl": "STL",
        "cube.stl": "STL",
        "tri.obj": "OBJ",
        "plate.3mf": "THREEMF",
    }
    # Stored under generated names only, nothing else left in the folder.
    assert len(stored(served)) == len(uploads)
    assert all(len(path.stem) == 32 and not path.name.startswith(".") for path in stored(served))


async def test_an_uploaded_gcode_file_shows_what_its_slicer_wrote(served: Served) -> None:
    content = corpus_file("gcode/prusaslicer-issue1.gcode").read_bytes()
    status, answer = await upload(served, content, "shapes.gcode")
    assert status == 201, answer
    metadata = answer["data"]["file"]["metadata"]
    assert (metadata["slicer"], metadata["slicerVersion"]) == ("PrusaSlicer", "2.3.3+x64")
    assert metadata["estimatedTime"] == 1210  # "20m 10s"
    assert metadata["filamentWeight"] == pytest.approx(4.76)
    assert metadata["objects"] == ["Shape-Cylinder", "Shape-Box"]
    _, again = await served.call("GET", f"/api/files/{answer['data']['file']['id']}")
    assert again["data"]["file"]["metadata"] == metadata
    # A model has no slicer's figures.
    _, model = await upload(served, binary_stl(), "bracket.stl")
    assert model["data"]["file"]["metadata"] is None


async def test_the_slicers_picture_is_served_and_goes_with_the_file(served: Served) -> None:
    content = corpus_file("gcode/superslicer.gcode").read_bytes()
    _, answer = await upload(served, content, "boat.gcode")
    file = answer["data"]["file"]
    assert file["thumbnailUrl"] == f"/api/files/{file['id']}/thumbnail"
    reply = await served.client.get(file["thumbnailUrl"], headers=served.auth(Role.OPERATOR))
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "image/png"
    picture = await reply.read()
    assert picture.startswith(b"\x89PNG")
    assert picture[16:24] == struct.pack(">II", 400, 300)
    thumbnails = served.appliance.config.server.data_dir / "thumbnails"
    assert len(list(thumbnails.iterdir())) == 1
    # Without a picture: no URL, and 404.
    _, plain = await upload(served, gcode(tag="plain"), "plain.gcode")
    assert plain["data"]["file"]["thumbnailUrl"] is None
    status, answer = await served.call(
        "GET", f"/api/files/{plain['data']['file']['id']}/thumbnail", Role.OPERATOR
    )
    assert (status, answer["error"]["code"]) == (404, "NOT_FOUND")
    status, _ = await served.call("DELETE", f"/api/files/{file['id']}", Role.ADMIN)
    assert status == 200
    assert list(thumbnails.iterdir()) == []


async def test_a_model_is_analysed_in_the_background_and_watchers_are_told(
    served: Served,
) -> None:
    headers = served.auth(Role.OPERATOR)
    async with (
        served.client.ws_connect("/ws", headers=headers) as mine,
        served.client.ws_connect("/ws", headers=served.auth(Role.VIEWER)) as others,
    ):
        assert (await mine.receive_json(timeout=10))["event"] == "connected"
        assert (await others.receive_json(timeout=10))["event"] == "connected"

        async def analysed(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
            while True:
                message = await ws.receive_json(timeout=60)
                if message["event"] == "file:analyzed":
                    data: dict[str, Any] = message["data"]
                    return data

        _, answer = await upload(served, cube_stl(), "cube.stl")
        file = answer["data"]["file"]
        assert file["analysis"]["status"] in ("PENDING", "DONE")  # the upload does not wait
        event = await analysed(mine)
        assert (event["fileId"], event["status"], event["error"]) == (file["id"], "DONE", None)
        _, answer = await served.call("GET", f"/api/files/{file['id']}", Role.OPERATOR)
        figures = answer["data"]["file"]["metadata"]
        assert figures["triangles"] == 12
        assert figures["volume"] == pytest.approx(1000)
        assert figures["dimensions"] == [10, 10, 10]
        assert figures["watertight"] is True
        reply = await served.client.get(answer["data"]["file"]["thumbnailUrl"], headers=headers)
        picture = await reply.read()
        assert reply.headers["Content-Type"] == "image/png"
        assert picture[16:24] == struct.pack(">II", 256, 256)

        # A model whose numbers are not numbers: the analysis fails, saying why.
        _, answer = await upload(served, cube_stl(nan=True), "broken.stl")
        event = await analysed(mine)
        assert event["status"] == "FAILED"
        assert "not numbers" in event["error"]
        _, answer = await served.call(
            "GET", f"/api/files/{answer['data']['file']['id']}", Role.OPERATOR
        )
        assert answer["data"]["file"]["analysis"]["status"] == "FAILED"
        assert answer["data"]["file"]["metadata"] is None
        # OBJ and 3MF models are analysed the same way.
        obj = "v 0 0 0\nv 10 0 0\nv 0 10 0\nv 0 0 10\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n"
        _, answer = await upload(served, obj.encode(), "tetra.obj")
        event = await analysed(mine)
        assert (event["fileId"], event["status"]) == (answer["data"]["file"]["id"], "DONE")
        _, answer = await served.call(
            "GET", f"/api/files/{answer['data']['file']['id']}", Role.OPERATOR
        )
        assert answer["data"]["file"]["metadata"]["volume"] == pytest.approx(1000 / 6, abs=0.001)
        assert answer["data"]["file"]["metadata"]["watertight"] is True
        # The viewer saw none of it: not its files.
        with pytest.raises(TimeoutError):
            await analysed_quickly(others)


async def test_gcode_without_an_estimate_is_analysed_while_it_can_already_print(
    served: Served,
) -> None:
    headers = served.auth(Role.OPERATOR)
    async with served.client.ws_connect("/ws", headers=headers) as ws:
        assert (await ws.receive_json(timeout=10))["event"] == "connected"
        # Slic3r states its filament and layers but no time: the analysis computes that.
        _, answer = await upload(served, corpus_file("gcode/slic3r.gcode").read_bytes(), "s.gcode")
        file = answer["data"]["file"]
        assert file["analysis"] == {"status": "PENDING", "error": None}
        assert file["metadata"]["estimatedTime"] is None
        assert file["metadata"]["filamentLength"] == pytest.approx(290.4)
        # Usable at once: it prints before its analysis is in.
        status, answer = await served.call("POST", f"/api/files/{file['id']}/print", Role.OPERATOR)
        assert status == 201, answer
        while True:
            message = await ws.receive_json(timeout=60)
            if message["event"] == "file:analyzed":
                break
        assert (message["data"]["fileId"], message["data"]["status"]) == (file["id"], "DONE")
    _, answer = await served.call("GET", f"/api/files/{file['id']}", Role.OPERATOR)
    metadata = answer["data"]["file"]["metadata"]
    assert 300 < metadata["estimatedTime"] < 600
    assert metadata["computed"] == ["estimatedTime", "layerCount", "objectHeight"]
    assert metadata["layerCount"] == 16
    assert metadata["filamentLength"] == pytest.approx(290.4)  # the slicer's own stays
    assert metadata["slicer"] == "Slic3r"
    assert metadata["objectHeight"] == pytest.approx(4.9)
    assert metadata["boundingBox"]["max"][2] == pytest.approx(4.9)
    assert answer["data"]["file"]["analysis"]["status"] == "DONE"
    # A file whose slicer said it all is not read again.
    _, answer = await upload(served, corpus_file("gcode/prusaslicer.gcode").read_bytes(), "p.gcode")
    assert answer["data"]["file"]["analysis"] is None
    assert "computed" not in answer["data"]["file"]["metadata"]


async def analysed_quickly(ws: aiohttp.ClientWebSocketResponse) -> None:
    while True:
        message = await ws.receive_json(timeout=1)
        if message["event"] == "file:analyzed":
            return


@pytest.mark.parametrize(
    ("content", "filename", "status", "says"),
    [
        (bytes(range(256)) * 64, "junk.gcode", 415, "does not hold G-code"),
        (binary_stl()[:-7], "cut.stl", 415, "does not hold an STL model"),
        (OBJ, "tri.stl", 415, "does not hold an STL model"),
        (ASCII_STL, "cube.obj", 415, "does not hold an OBJ model"),
        (three_mf(with_model=False), "empty.3mf", 415, "without a 3D model"),
        (b"PK\x03\x04 not really a zip", "broken.3mf", 415, "not a readable 3MF"),
        (b"MZ\x90\x00", "setup.exe", 415, "'.exe' files are not accepted"),
        (gcode(), "noextension", 415, "files without an extension are not accepted"),
        (b"", "empty.gcode", 400, "is empty"),
    ],
)
async def test_what_is_not_what_it_says_is_refused_and_leaves_nothing(
    served: Served, content: bytes, filename: str, status: int, says: str
) -> None:
    got, answer = await upload(served, content, filename)
    assert got == status, answer
    assert says in answer["error"]["message"]
    assert stored(served) == []
    _, listed = await served.call("GET", "/api/files", Role.ADMIN)
    assert listed["data"]["files"] == []


@pytest.mark.parametrize(
    ("disposition", "shown"),
    [
        (b'filename="../../../etc/cron.d/evil.gcode"', "evil.gcode"),
        (b'filename="..\\\\..\\\\windows\\\\evil.gcode"', "evil.gcode"),
        (b"filename*=UTF-8''%1B%5B31mred%07%0A.gcode", "[31mred .gcode"),
        (b'filename="caf\xe9 latin-1.gcode"', "caf\ufffd latin-1.gcode"),
        (b"filename*=UTF-8''Gr%C3%BC%C3%9Fe%20Benchy.gcode", "Grüße Benchy.gcode"),
        (b'filename="' + b"x" * 1000 + b'.gcode"', "x" * 194 + ".gcode"),
        (b'filename="  ...hidden.gcode  "', "hidden.gcode"),
    ],
)
async def test_hostile_names_are_cleaned_data_and_never_paths(
    served: Served, disposition: bytes, shown: str, tmp_path: Path
) -> None:
    before = tree(tmp_path)
    status, answer = await raw_upload(served, disposition, gcode(tag=disposition.hex()))
    assert status == 201, answer
    file = answer["data"]["file"]
    assert file["originalName"] == shown
    assert [path.name for path in stored(served)] == [file["fileName"]]
    # The only new entry anywhere under the data dir is the stored file (and the database's).
    created = {path for path in tree(tmp_path) - before if "lezerprint.db" not in path.name}
    assert created == {files_folder(served) / file["fileName"]}


@pytest.mark.parametrize(
    "disposition",
    [b'filename="\x1b[31mred\x07.gcode"', b'filename="nul\x00byte.gcode"'],
)
async def test_raw_control_characters_in_the_form_are_refused(
    served: Served, disposition: bytes
) -> None:
    status, answer = await raw_upload(served, disposition, gcode())
    assert status == 400
    assert "not a well-formed multipart form" in answer["error"]["message"]
    assert stored(served) == []


def tree(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


async def test_a_name_with_no_usable_characters_is_refused(served: Served) -> None:
    status, answer = await raw_upload(served, b"filename*=UTF-8''%01%02%E2%80%8B", gcode())
    assert status == 400
    assert "no usable name" in answer["error"]["message"]
    status, answer = await raw_upload(served, b'name2="x"', gcode())
    assert status == 400
    assert answer["error"]["details"][0]["field"] == "file"
    assert stored(served) == []


async def test_the_same_content_twice_is_reported_not_doubled(served: Served) -> None:
    content = gcode(tag="twice")
    status, first = await upload(served, content, "a.gcode")
    assert status == 201
    status, again = await upload(served, content, "b.gcode", folder="elsewhere")
    assert status == 409
    assert again["error"]["details"]["fileId"] == first["data"]["file"]["id"]
    assert "already in the library as a.gcode" in again["error"]["message"]
    assert len(stored(served)) == 1
    # Another account has a library of its own.
    status, _ = await upload(served, content, "a.gcode", role=Role.ADMIN)
    assert status == 201


async def test_the_size_limit_refuses_and_removes_the_partial_file(
    aiohttp_client: Callable[..., Any], tmp_path: Path, start_virtual: Start
) -> None:
    served = await serve(aiohttp_client, tmp_path, start_virtual(speedup=1000))
    limited = served.appliance.library.config
    served.appliance.library.config = type(limited)(max_upload_mb=1, min_free_mb=0)
    status, answer = await upload(served, gcode(100_000), "big.gcode")
    assert status == 413
    assert answer["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert "1 MB" in answer["error"]["message"]

    # Without a Content-Length the limit is found while streaming.
    async def chunked() -> Any:
        yield b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="s.gcode"\r\n\r\n'
        for _ in range(60):
            yield gcode(2000)
        yield b"\r\n--XyZ--\r\n"

    headers = {**served.auth(Role.OPERATOR), "Content-Type": "multipart/form-data; boundary=XyZ"}
    reply = await served.client.post("/api/files", data=chunked(), headers=headers)
    assert reply.status == 413
    assert stored(served) == []


async def test_a_full_disk_is_refused_with_507(
    aiohttp_client: Callable[..., Any], tmp_path: Path, start_virtual: Start
) -> None:
    served = await serve(aiohttp_client, tmp_path, start_virtual(speedup=1000))
    # Ask for more free space than any disk here has.
    served.appliance.library.config = type(served.appliance.library.config)(
        max_upload_mb=500, min_free_mb=10_000_000
    )
    status, answer = await upload(served, gcode(), "part.gcode")
    assert status == 507
    assert answer["error"]["code"] == "INSUFFICIENT_STORAGE"
    assert "storage is full" in answer["error"]["message"]
    assert stored(served) == []


async def test_a_client_that_goes_away_mid_upload_leaves_nothing(served: Served) -> None:
    host, port = served.client.host, served.client.port
    head = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="gone.gcode"\r\n\r\n'
    first_part = head + gcode(20_000)
    token = served.tokens[Role.OPERATOR]
    request = (
        f"POST /api/files HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: multipart/form-data; boundary=XyZ\r\n"
        f"Content-Length: {len(first_part) * 10}\r\n\r\n"
    ).encode()
    sock = socket.create_connection((host, port))
    try:
        sock.sendall(request + first_part)
        await until(lambda: bool(stored(served)), 10, "the upload to reach the disk")
        assert stored(served)[0].name.startswith(".upload-")
    finally:
        sock.close()
    await until(lambda: not stored(served), 10, "the partial upload to be removed")
    _, listed = await served.call("GET", "/api/files", Role.ADMIN)
    assert listed["data"]["files"] == []
    # The daemon is fine and takes the next upload.
    status, _ = await upload(served, gcode(tag="next"), "next.gcode")
    assert status == 201


async def test_leftovers_of_a_power_cut_are_removed_at_start(
    aiohttp_client: Callable[..., Any], tmp_path: Path, start_virtual: Start
) -> None:
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / ".upload-0123.part").write_bytes(b"G1 X1\n" * 100)
    await serve(aiohttp_client, tmp_path, start_virtual(speedup=1000))
    assert list(folder.iterdir()) == []


# -- finding, reading, changing, deleting, printing ------------------------------------------


async def test_list_filters_sorts_and_pages(served: Served) -> None:
    for name, content, folder in [
        ("Benchy.gcode", gcode(10, "1"), ""),
        ("benchy_v2.gcode", gcode(300, "2"), "boats"),
        ("100%_infill.gcode", gcode(20, "3"), "tests/infill"),
        ("bracket.stl", binary_stl(20), "parts"),
        ("tri.obj", OBJ, "parts"),
    ]:
        status, answer = await upload(served, content, name, folder=folder)
        assert status == 201, answer

    async def names(query: str) -> list[str]:
        status, answer = await served.call("GET", f"/api/files?{query}", Role.OPERATOR)
        assert status == 200, answer
        return [file["originalName"] for file in answer["data"]["files"]]

    assert await names("type=STL") == ["bracket.stl"]
    assert await names("folder=parts&sort=name&order=asc") == ["bracket.stl", "tri.obj"]
    assert await names("folder=/tests/infill/") == ["100%_infill.gcode"]
    assert await names("search=benchy&sort=name&order=asc") == ["Benchy.gcode", "benchy_v2.gcode"]
    assert await names("search=%25") == ["100%_infill.gcode"]  # % is a character, not a wildcard
    assert await names("search=y_") == ["benchy_v2.gcode"]
    assert (await names("sort=size&order=desc"))[0] == "benchy_v2.gcode"
    assert (await names("sort=date&order=asc"))[0] == "Benchy.gcode"
    status, answer = await served.call("GET", "/api/files?limit=2&page=3", Role.OPERATOR)
    assert [f["originalName"] for f in answer["data"]["files"]] == ["Benchy.gcode"]
    assert answer["meta"] == {
        "page": 3, "limit": 2, "total": 5, "pages": 3, "hasNext": False, "hasPrev": True
    }  # fmt: skip
    status, answer = await served.call("GET", "/api/files?sort=colour", Role.OPERATOR)
    assert status == 400
    assert answer["error"]["details"][0]["field"] == "sort"


async def test_download_whole_or_a_range(served: Served) -> None:
    content = corpus_file("gcode/prusaslicer.gcode").read_bytes()
    _, answer = await upload(served, content, "prusa benchy.gcode")
    url = answer["data"]["file"]["downloadUrl"]
    reply = await served.client.get(url, headers=served.auth(Role.ADMIN))
    assert reply.status == 200
    assert await reply.read() == content
    assert "filename*=UTF-8''prusa%20benchy.gcode" in reply.headers["Content-Disposition"]
    reply = await served.client.get(
        url, headers={**served.auth(Role.ADMIN), "Range": "bytes=1000-1999"}
    )
    assert reply.status == 206
    assert await reply.read() == content[1000:2000]
    assert reply.headers["Content-Range"] == f"bytes 1000-1999/{len(content)}"
    reply = await served.client.get(url, headers=served.auth(Role.VIEWER))
    assert reply.status == 404  # another account's file


async def test_each_account_sees_its_own_files_and_admins_see_all(served: Served) -> None:
    _, mine = await upload(served, gcode(tag="mine"), "mine.gcode", role=Role.OPERATOR)
    _, theirs = await upload(served, gcode(tag="theirs"), "theirs.gcode", role=Role.ADMIN)
    file_id = theirs["data"]["file"]["id"]
    _, listed = await served.call("GET", "/api/files", Role.OPERATOR)
    assert [f["originalName"] for f in listed["data"]["files"]] == ["mine.gcode"]
    _, listed = await served.call("GET", "/api/files", Role.ADMIN)
    assert len(listed["data"]["files"]) == 2
    for method, path in [
        ("GET", f"/api/files/{file_id}"),
        ("GET", f"/api/files/{file_id}/download"),
        ("POST", f"/api/files/{file_id}/print"),
    ]:
        status, answer = await served.call(method, path, Role.OPERATOR)
        assert status == 404, (method, path, answer)
    status, answer = await served.call(
        "POST", "/api/jobs/start", Role.OPERATOR, {"fileId": file_id}
    )
    assert status == 404
    status, answer = await served.call("GET", f"/api/files/{mine['data']['file']['id']}")
    assert answer["data"]["file"]["user"]["username"] == "otto"


async def test_rename_and_move_by_the_owner_only(served: Served) -> None:
    _, answer = await upload(served, gcode(tag="r"), "old.gcode", folder="a")
    file_id = answer["data"]["file"]["id"]
    path = f"/api/files/{file_id}"
    status, answer = await served.call(
        "PATCH", path, Role.OPERATOR, {"name": "new name.gcode", "folder": "b/c"}
    )
    assert status == 200, answer
    assert (answer["data"]["file"]["originalName"], answer["data"]["file"]["folder"]) == (
        "new name.gcode",
        "b/c",
    )
    status, answer = await served.call("PATCH", path, Role.OPERATOR, {"name": "model.stl"})
    assert status == 400
    assert answer["error"]["details"][0]["field"] == "name"
    status, answer = await served.call("PATCH", path, Role.OPERATOR, {"folder": "a/../../etc"})
    assert status == 400
    assert answer["error"]["details"][0]["field"] == "folder"
    status, answer = await served.call("PATCH", path, Role.VIEWER, {"name": "v.gcode"})
    assert status == 403
    status, answer = await served.call("PATCH", path, Role.ADMIN, {"folder": ""})
    assert status == 200
    assert answer["data"]["file"]["folder"] == ""


async def test_print_from_the_library_and_delete_only_when_not_printing(served: Served) -> None:
    _, answer = await upload(served, gcode(40_000, "long"), "long.gcode")
    file_id = answer["data"]["file"]["id"]
    status, answer = await served.call("POST", f"/api/files/{file_id}/print", Role.OPERATOR)
    assert status == 201, answer
    job_id = answer["data"]["job"]["id"]
    assert answer["data"]["job"]["fileId"] == file_id
    status, answer = await served.call("DELETE", f"/api/files/{file_id}", Role.OPERATOR)
    assert status == 403  # deleting is for admins
    status, answer = await served.call("DELETE", f"/api/files/{file_id}", Role.ADMIN)
    assert status == 409
    assert "being printed" in answer["error"]["message"]
    status, _ = await served.call("POST", f"/api/jobs/{job_id}/cancel", Role.OPERATOR)
    assert status == 200
    await until(lambda: served.appliance.jobs.current is None, 20, "the job to end")
    status, answer = await served.call("GET", f"/api/files/{file_id}", Role.OPERATOR)
    assert answer["data"]["file"]["printCount"] == 1
    assert answer["data"]["file"]["_count"] == {"printJobs": 1}
    assert [job["id"] for job in answer["data"]["jobs"]] == [job_id]
    status, answer = await served.call("DELETE", f"/api/files/{file_id}", Role.ADMIN)
    assert status == 200
    assert stored(served) == []
    # The job's history stays, without the file.
    status, answer = await served.call("GET", f"/api/jobs/{job_id}", Role.OPERATOR)
    assert status == 200
    assert answer["data"]["job"]["fileId"] is None
    assert answer["data"]["job"]["fileName"] == "long.gcode"


async def test_a_model_cannot_be_printed(served: Served) -> None:
    _, answer = await upload(served, binary_stl(), "bracket.stl")
    status, answer = await served.call(
        "POST", f"/api/files/{answer['data']['file']['id']}/print", Role.OPERATOR
    )
    assert status == 409
    assert "slice it first" in answer["error"]["message"]


async def test_a_viewer_cannot_upload(served: Served) -> None:
    status, answer = await upload(served, gcode(), "v.gcode", role=Role.VIEWER)
    assert status == 403
    assert answer["error"]["details"]["required"] == "file:upload"
    assert stored(served) == []
