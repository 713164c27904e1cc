"""The camera through the real app with the test-pattern source: snapshots, the MJPEG stream
shared by many viewers (one capture, slow viewers skip frames), capture only while watched,
settings that stick, and the permission table."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import shutil
import socket
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import simplejpeg

from lezerprintd.auth.permissions import Role
from lezerprintd.bus import Bus, JobLayerChanged
from lezerprintd.camera.camera import BOUNDARY, Camera
from lezerprintd.camera.timelapse import FRAMES_SUFFIX, Timelapses
from lezerprintd.config import CameraConfig
from lezerprintd.printer.virtual import VirtualPrinter
from lezerprintd.store import Store
from lezerprintd.store import timelapses as timelapse_rows
from lezerprintd.store.timelapses import TimelapseRecord
from tests.conftest import until
from tests.test_api import Served, serve

PATTERN = CameraConfig(source="test", width=320, height=240, fps=10, idle_seconds=0.3)


@pytest.fixture
async def served(
    aiohttp_client: Callable[..., Any], tmp_path: Path, start_virtual: Callable[..., VirtualPrinter]
) -> Served:
    return await serve(aiohttp_client, tmp_path, start_virtual(speedup=1000), camera=PATTERN)


def size_of(jpeg: bytes) -> tuple[int, int]:
    height, width, _, _ = simplejpeg.decode_jpeg_header(jpeg)
    return width, height


async def snapshot(served: Served, role: Role = Role.VIEWER) -> tuple[int, bytes]:
    reply = await served.client.get("/api/camera/snapshot", headers=served.auth(role))
    return reply.status, await reply.read()


async def read_parts(
    response: aiohttp.ClientResponse, count: int
) -> list[tuple[dict[str, str], bytes]]:
    """`count` parts of a multipart/x-mixed-replace stream: (headers, JPEG)."""
    parts = []
    while len(parts) < count:
        line = await response.content.readline()
        if line.strip() != f"--{BOUNDARY}".encode():
            continue
        headers = {}
        while (line := await response.content.readline()) not in (b"\r\n", b""):
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        frame = await response.content.readexactly(int(headers["content-length"]))
        parts.append((headers, frame))
    return parts


async def test_a_snapshot_is_a_jpeg_of_the_configured_size(served: Served) -> None:
    status, frame = await snapshot(served)
    assert status == 200
    assert frame.startswith(b"\xff\xd8")
    assert size_of(frame) == (320, 240)
    status, _ = await snapshot(served, role=None)  # type: ignore[arg-type]
    assert status == 401  # unlike OctoPrint's open stream, ours needs an account


async def test_many_viewers_share_one_capture(served: Served) -> None:
    camera = served.appliance.camera
    assert camera is not None
    headers = served.auth(Role.VIEWER)
    responses = [await served.client.get("/api/camera/stream", headers=headers) for _ in range(5)]
    try:
        assert all(
            r.headers["Content-Type"].startswith("multipart/x-mixed-replace") for r in responses
        )
        started, first = time.monotonic(), camera.frames_captured
        received = await asyncio.gather(*(read_parts(r, 8) for r in responses))
        elapsed = time.monotonic() - started
        for parts in received:
            stamps = [float(h["x-timestamp"]) for h, _ in parts]
            assert stamps == sorted(stamps)
            assert all(size_of(frame) == (320, 240) for _, frame in parts)
        # One capture at 10 fps for all five: not five times as many frames.
        captured = camera.frames_captured - first
        assert captured <= 10 * elapsed + 3
        # The same frame bytes went to every viewer.
        assert {parts[-1][1] for parts in received} <= {p[1] for parts in received for p in parts}
    finally:
        for response in responses:
            response.close()


async def test_a_viewer_that_stops_reading_does_not_hold_up_the_others(served: Served) -> None:
    port = served.client.port
    stuck = socket.create_connection(("127.0.0.1", port))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    token = served.tokens[Role.VIEWER]
    request = f"GET /api/camera/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    stuck.sendall(request.encode())
    try:
        reply = await served.client.get("/api/camera/stream", headers=served.auth(Role.VIEWER))
        started = time.monotonic()
        parts = await asyncio.wait_for(read_parts(reply, 20), 10)
        # 20 frames at 10 fps: about two seconds, whatever the stuck viewer does.
        assert time.monotonic() - started < 4
        assert len(parts) == 20
        reply.close()
    finally:
        stuck.close()


async def test_capture_runs_only_while_someone_watches(served: Served) -> None:
    camera = served.appliance.camera
    assert camera is not None
    assert camera.source_name is None  # nobody has looked yet
    reply = await served.client.get("/api/camera/stream", headers=served.auth(Role.VIEWER))
    await read_parts(reply, 2)
    assert camera.source_name == "test"
    reply.close()
    await until(lambda: camera.source_name is None, 5, "capture to stop after the last viewer")


async def test_settings_change_the_picture_and_are_kept(served: Served, tmp_path: Path) -> None:
    status, answer = await served.call(
        "POST", "/api/camera/settings", Role.ADMIN, {"width": 640, "height": 480, "rotation": 90}
    )
    assert status == 200, answer
    assert (answer["data"]["width"], answer["data"]["rotation"]) == (640, 90)
    _, frame = await snapshot(served)
    assert size_of(frame) == (480, 640)  # turned a quarter
    kept = json.loads((served.appliance.config.server.data_dir / "camera.json").read_text())
    assert (kept["width"], kept["height"], kept["rotation"]) == (640, 480, 90)
    # Out of range: 400, naming each field; nothing changes.
    status, answer = await served.call(
        "POST", "/api/camera/settings", Role.ADMIN, {"fps": 120, "quality": 3}
    )
    assert status == 400
    fields = {d["field"] for d in answer["error"]["details"]}
    assert fields == {"fps", "quality"}
    # Operators and viewers watch but do not configure.
    status, answer = await served.call("POST", "/api/camera/settings", Role.OPERATOR, {"fps": 5})
    assert status == 403
    status, answer = await served.call("GET", "/api/camera/settings", Role.VIEWER)
    assert (status, answer["data"]["fps"]) == (200, 10)


async def test_with_the_camera_off_there_is_none(
    aiohttp_client: Callable[..., Any], tmp_path: Path, start_virtual: Callable[..., VirtualPrinter]
) -> None:
    served = await serve(
        aiohttp_client, tmp_path, start_virtual(speedup=1000), camera=CameraConfig(source="off")
    )
    status, answer = await served.call("GET", "/api/camera/snapshot", Role.VIEWER)
    assert (status, answer["error"]["code"]) == (404, "NOT_FOUND")


# -- timelapses ----------------------------------------------------------------------------------


def layered_file(served: Served, layers: int, moves_per_layer: int = 200) -> str:
    """A G-code file in the library whose slicer marked `layers` layers."""
    lines = ["G28"]
    for layer in range(layers):
        lines += [";LAYER_CHANGE", f";Z:{0.2 * (layer + 1):.1f}", f"G1 Z{0.2 * (layer + 1):.1f}"]
        lines += [f"G1 X{10 + i % 50} Y{10 + (i * 3) % 50} E0.1" for i in range(moves_per_layer)]
    stored = f"{uuid.uuid4().hex}.gcode"
    path = served.appliance.config.server.data_dir / "files" / stored
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    served.files.append((str(uuid.uuid4()), "layers.gcode", stored, path.stat().st_size))
    return served.files[-1][0]


@pytest.mark.parametrize("ffmpeg", [True, False], ids=["mp4 with ffmpeg", "zip without"])
async def test_a_print_leaves_a_timelapse_of_its_layers(
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
    start_virtual: Callable[..., VirtualPrinter],
    monkeypatch: pytest.MonkeyPatch,
    ffmpeg: bool,
) -> None:
    assert shutil.which("ffmpeg"), "ffmpeg is missing: apt-get install ffmpeg (./dev.sh does)"
    if not ffmpeg:  # an appliance without it: nothing on the PATH by that name
        (tmp_path / "bin").mkdir()
        monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    camera = dataclasses.replace(PATTERN, timelapse="layer")
    served = await serve(aiohttp_client, tmp_path, start_virtual(speedup=1000), camera=camera)
    layers: list[int] = []
    served.appliance.bus.subscribe(JobLayerChanged, lambda event: layers.append(event.layer))
    file_id = layered_file(served, 5)
    await served.register_files()
    status, answer = await served.call(
        "POST", "/api/jobs/start", Role.OPERATOR, {"fileId": file_id}
    )
    assert status == 201, answer
    job_id = answer["data"]["job"]["id"]
    await until(lambda: served.appliance.jobs.current is None, 60, "the print to finish")
    assert layers == [1, 2, 3, 4, 5]
    for _ in range(200):
        status, answer = await served.call("GET", f"/api/jobs/{job_id}/timelapse", Role.VIEWER)
        if status == 200:
            break
        await asyncio.sleep(0.05)
    assert status == 200, answer
    timelapse = answer["data"]["timelapse"]
    # One frame before the print, one a layer.
    assert (timelapse["format"], timelapse["frameCount"]) == ("mp4" if ffmpeg else "zip", 6)
    reply = await served.client.get(timelapse["videoUrl"], headers=served.auth(Role.VIEWER))
    assert reply.status == 200
    data = await reply.read()
    assert timelapse["fileSize"] == len(data)
    if ffmpeg:
        assert reply.headers["Content-Type"] == "video/mp4"
        assert data[4:8] == b"ftyp"  # an MP4 (ISO base media) file
        assert timelapse["duration"] == pytest.approx(6 / 25)
    else:
        assert reply.headers["Content-Type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            assert names == [f"{n:06d}.jpg" for n in range(1, 7)]
            assert size_of(archive.read(names[-1])) == (320, 240)
    _, listed = await served.call("GET", "/api/timelapses", Role.VIEWER)
    assert [t["jobId"] for t in listed["data"]["timelapses"]] == [job_id]
    frames_left = list((served.appliance.config.server.data_dir / "timelapse").glob("*.frames"))
    assert frames_left == []
    status, _ = await served.call("GET", "/api/jobs/no-such-job/timelapse", Role.VIEWER)
    assert status == 404


async def test_the_quota_removes_the_oldest_and_a_cut_recording_is_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no ffmpeg: the frames become a zip
    store = await Store.open(tmp_path / "db.sqlite")
    camera = Camera(dataclasses.replace(PATTERN, timelapse_quota_mb=10), tmp_path)
    await camera.start()
    timelapses = Timelapses(camera, Bus(), store, tmp_path)
    folder = tmp_path / "timelapse"
    folder.mkdir()
    for name in ["old", "older", "new"]:
        path = folder / f"{name}.zip"
        with path.open("wb") as out:
            out.truncate(6 * 1024 * 1024)
        created = {"older": 1.0, "old": 2.0, "new": 3.0}[name]
        await timelapse_rows.add(
            store,
            TimelapseRecord(name, name, path.name, "zip", 1, 0.04, 6 * 1024 * 1024, created),
        )
    # A recording a power cut interrupted: three frames on disk, no video yet.
    cut = folder / f"cut-job{FRAMES_SUFFIX}"
    cut.mkdir()
    frame = await camera.snapshot()
    for n in range(1, 4):
        (cut / f"{n:06d}.jpg").write_bytes(frame)
    await timelapses.start()
    await until(lambda: not cut.exists(), 10, "the interrupted recording to be finished")
    kept = await timelapse_rows.oldest_first(store)
    await timelapses.stop()
    await camera.stop()
    await store.close()
    # 6 + 6 + 6 MB and the new small one: over 10 MB, so the oldest went first.
    assert [record.job_id for record in kept] == ["new", "cut-job"]
    assert sorted(path.name for path in folder.iterdir()) == ["cut-job.zip", "new.zip"]
