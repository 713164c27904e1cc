"""The camera: the live MJPEG stream, a snapshot, its settings, and timelapses of prints."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from lezerprintd.api.envelope import ok, page_meta
from lezerprintd.api.spec import LIMIT, PAGE, Answer, Endpoint, Field, Kind, body, query
from lezerprintd.camera.camera import BOUNDARY
from lezerprintd.camera.sources import CameraError
from lezerprintd.config import check_values
from lezerprintd.errors import ConfigError, UserError
from lezerprintd.store import timelapses as timelapse_rows
from lezerprintd.store.timelapses import TimelapseRecord

if TYPE_CHECKING:
    from lezerprintd.app import Appliance
    from lezerprintd.camera.camera import Camera

_CAMEL: Final = {
    "width": "width", "height": "height", "fps": "fps", "quality": "quality",
    "rotation": "rotation", "flip_horizontal": "flipHorizontal", "flip_vertical": "flipVertical",
    "timelapse": "timelapse", "timelapse_interval": "timelapseInterval",
}  # fmt: skip
# Types only: the limits are the [camera] settings' own (config.py), checked by check_values.
SETTINGS_FIELDS: Final = (
    Field("width", Kind.INTEGER, "Picture width in pixels (160-1920)"),
    Field("height", Kind.INTEGER, "Picture height in pixels (120-1080)"),
    Field("fps", Kind.INTEGER, "Frames per second (1-30)"),
    Field("quality", Kind.INTEGER, "JPEG quality (10-95)"),
    Field("rotation", Kind.INTEGER, "Clockwise rotation", choices=(0, 90, 180, 270)),
    Field("flipHorizontal", Kind.BOOLEAN, "Mirror left to right"),
    Field("flipVertical", Kind.BOOLEAN, "Mirror top to bottom"),
    Field("timelapse", Kind.STRING, "Timelapse of prints", choices=("off", "layer", "interval")),
    Field("timelapseInterval", Kind.NUMBER, "Seconds between timelapse frames (1-3600)"),
)
SETTINGS_SCHEMA: Final = {
    "type": "object",
    "required": ["source", "active", "error", *_CAMEL.values()],
    "properties": {
        "source": {"type": "string"},
        "active": {"type": ["string", "null"]},
        "error": {"type": ["string", "null"]},
        **{field.name: field.schema() for field in SETTINGS_FIELDS},
    },
}


TIMELAPSE_SCHEMA: Final = {
    "type": "object",
    "required": ["id", "jobId", "format", "frameCount", "duration", "fileSize", "videoUrl"],
    "properties": {
        "id": {"type": "string"},
        "jobId": {"type": "string"},
        "format": {"type": "string", "enum": ["mp4", "zip"]},
        "frameCount": {"type": "integer"},
        "duration": {"type": "number"},
        "fileSize": {"type": "integer"},
        "videoUrl": {"type": "string"},
        "createdAt": {"type": "string"},
    },
}
ONE_TIMELAPSE: Final = {
    "type": "object",
    "required": ["timelapse"],
    "properties": {"timelapse": TIMELAPSE_SCHEMA},
}
TIMELAPSE_PAGE: Final = {
    "type": "object",
    "required": ["timelapses"],
    "properties": {"timelapses": {"type": "array", "items": TIMELAPSE_SCHEMA}},
}
_JOB: Final = Field("job_id", Kind.STRING, "The job's id", max_length=64)


def endpoints(appliance: Appliance) -> list[Endpoint]:
    def camera() -> Camera:
        if appliance.camera is None:
            raise UserError(
                "the camera is off ([camera] source = off)", status=404, code="NOT_FOUND"
            )
        return appliance.camera

    async def handle_stream(request: web.Request) -> web.StreamResponse:
        """Every frame as it is captured, as multipart/x-mixed-replace (an <img> shows it)."""
        parts = camera().stream()
        try:
            first = await anext(parts)
        except CameraError as error:
            raise UserError(
                f"the camera gives no picture: {error}", status=503, code="CAMERA_ERROR"
            ) from None
        response = web.StreamResponse(
            headers={
                "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                "Cache-Control": "no-store",
            }
        )
        await response.prepare(request)
        try:
            await response.write(first)
            async for part in parts:
                await response.write(part)  # a slow viewer waits here and skips frames
        except (ConnectionResetError, CameraError):
            pass  # the viewer left, or the camera stopped: end this stream
        finally:
            await parts.aclose()
        return response

    async def handle_snapshot(request: web.Request) -> web.Response:
        try:
            frame = await camera().snapshot()
        except (CameraError, TimeoutError) as error:
            raise UserError(
                f"the camera gives no picture: {error}", status=503, code="CAMERA_ERROR"
            ) from None
        return web.Response(
            body=frame,
            content_type="image/jpeg",
            headers={
                "Cache-Control": "no-store",
                "Content-Disposition": 'inline; filename="snapshot.jpg"',
            },
        )

    async def handle_settings(request: web.Request) -> web.Response:
        return ok(view(camera()))

    async def handle_change(request: web.Request) -> web.Response:
        given = await body(request, SETTINGS_FIELDS)
        checked: dict[str, object] = {}
        problems = []
        for key, name in _CAMEL.items():
            if given.get(name) is None:
                continue
            try:  # one key at a time, so each problem names its field
                checked.update(check_values("camera", {key: given[name]}))
            except ConfigError as error:
                message = str(error).split(": ", 1)[-1]
                problems.append({"field": name, "code": "range", "message": message})
        if problems:
            raise UserError(f"invalid request: {problems[0]['message']}", details=problems)
        await camera().change(checked)
        return ok(view(camera()))

    async def timelapse_of(request: web.Request) -> TimelapseRecord:
        record = await timelapse_rows.of_job(appliance.store, request.match_info["job_id"])
        if record is None or appliance.timelapses is None:
            raise UserError("this job has no timelapse", status=404, code="NOT_FOUND")
        return record

    async def handle_timelapse(request: web.Request) -> web.Response:
        return ok({"timelapse": timelapse_view(await timelapse_of(request))})

    async def handle_timelapse_download(request: web.Request) -> web.StreamResponse:
        record = await timelapse_of(request)
        assert appliance.timelapses is not None
        media = "video/mp4" if record.format == "mp4" else "application/zip"
        name = f"timelapse-{record.job_id}.{record.format}"
        return web.FileResponse(
            appliance.timelapses.path_of(record),
            headers={
                "Content-Type": media,
                "Content-Disposition": f'attachment; filename="{name}"',
            },
        )

    async def handle_timelapses(request: web.Request) -> web.Response:
        values = query(request, (PAGE, LIMIT))
        found, total = await timelapse_rows.page(appliance.store, values["page"], values["limit"])
        return ok(
            {"timelapses": [timelapse_view(record) for record in found]},
            page_meta(values["page"], values["limit"], total),
        )

    settings = Answer(200, "The camera's settings", SETTINGS_SCHEMA)
    no_camera = Answer(404, "The camera is off")
    no_picture = Answer(503, "The camera gives no picture")
    return [
        Endpoint("GET", "/api/camera/stream", handle_stream, "The live picture (MJPEG)", "camera",
                 answers=(Answer(200, "Frames as they come", media="multipart/x-mixed-replace"),
                          no_camera, no_picture)),
        Endpoint("GET", "/api/camera/snapshot", handle_snapshot, "The current picture (JPEG)",
                 "camera",
                 answers=(Answer(200, "One frame", media="image/jpeg"), no_camera, no_picture)),
        Endpoint("GET", "/api/camera/settings", handle_settings, "The camera's settings",
                 "camera", answers=(settings, no_camera)),
        Endpoint("POST", "/api/camera/settings", handle_change, "Change the camera's settings",
                 "camera", body=SETTINGS_FIELDS, answers=(settings, no_camera)),
        Endpoint("GET", "/api/jobs/{job_id}/timelapse", handle_timelapse, "This job's timelapse",
                 "camera", path_fields=(_JOB,),
                 answers=(Answer(200, "The timelapse", ONE_TIMELAPSE),
                          Answer(404, "No timelapse"))),
        Endpoint("GET", "/api/jobs/{job_id}/timelapse/download", handle_timelapse_download,
                 "Download this job's timelapse (MP4, or a zip of frames)", "camera",
                 path_fields=(_JOB,),
                 answers=(Answer(200, "The video", media="video/mp4"),
                          Answer(404, "No timelapse"))),
        Endpoint("GET", "/api/timelapses", handle_timelapses, "Every timelapse, newest first",
                 "camera", query=(PAGE, LIMIT),
                 answers=(Answer(200, "One page", TIMELAPSE_PAGE),)),
    ]  # fmt: skip


def timelapse_view(record: TimelapseRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "jobId": record.job_id,
        "format": record.format,
        "frameCount": record.frame_count,
        "duration": record.duration,
        "fileSize": record.file_size,
        "videoUrl": f"/api/jobs/{record.job_id}/timelapse/download",
        "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created_at)),
    }


def view(camera: Camera) -> dict[str, Any]:
    config = camera.config
    return {
        "source": config.source,
        "active": camera.source_name,
        "error": camera.error,
        **{name: getattr(config, key) for key, name in _CAMEL.items()},
    }
