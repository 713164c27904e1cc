"""Timelapses of prints: a frame at each layer change (or on an interval) while a job prints,
made into an MP4 after it (a zip of the frames where ffmpeg is not installed), kept within a
disk quota, oldest removed first.

Rule: frames are written as they are taken (a power cut keeps what was recorded; the next
start finishes it), assembly runs in a child process at low priority, and the event loop only
hands frames to a thread to write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Final

from lezerprintd.bus import Bus, JobFinished, JobLayerChanged, JobStatusChanged
from lezerprintd.camera.camera import Camera
from lezerprintd.camera.sources import CameraError
from lezerprintd.durable import move_into_place
from lezerprintd.store import Store
from lezerprintd.store import timelapses as rows
from lezerprintd.store.timelapses import TimelapseRecord

log = logging.getLogger(__name__)

FOLDER: Final = "timelapse"
FRAMES_SUFFIX: Final = ".frames"
VIDEO_FPS: Final = 25
MB: Final = 1024 * 1024


class Timelapses:
    """Records a timelapse of each print, when [camera] timelapse is not "off"."""

    def __init__(self, camera: Camera, bus: Bus, store: Store, data_dir: Path) -> None:
        self._camera = camera
        self._bus = bus
        self._store = store
        self.folder = data_dir / FOLDER
        self._recording: dict[str, _Recording] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._unsubscribe: list[Callable[[], None]] = []

    async def start(self) -> None:
        await asyncio.to_thread(self.folder.mkdir, parents=True, exist_ok=True)
        self._unsubscribe = [
            self._bus.subscribe(JobStatusChanged, self._on_status),
            self._bus.subscribe(JobLayerChanged, self._on_layer),
            self._bus.subscribe(JobFinished, self._on_finished),
        ]
        # Frames left by a power cut or a stop mid-print: still a timelapse of what printed.
        for leftover in await asyncio.to_thread(
            lambda: list(self.folder.glob(f"*{FRAMES_SUFFIX}"))
        ):
            self._spawn(self._assemble(leftover.name.removesuffix(FRAMES_SUFFIX), leftover))

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        for recording in list(self._recording.values()):
            await recording.close()
        self._recording.clear()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def path_of(self, record: TimelapseRecord) -> Path:
        return self.folder / record.file_name

    # -- the job's events

    def _on_status(self, event: JobStatusChanged) -> None:
        mode = self._camera.config.timelapse
        # From PREPARING: the first lines (and a layer change) can go out before PRINTING is told.
        if mode == "off" or event.status != "PREPARING" or event.job_id in self._recording:
            return
        frames = self.folder / f"{event.job_id}{FRAMES_SUFFIX}"
        recording = _Recording(self._camera, frames)
        self._recording[event.job_id] = recording
        self._spawn(
            recording.open(
                interval=self._camera.config.timelapse_interval if mode == "interval" else None
            )
        )

    def _on_layer(self, event: JobLayerChanged) -> None:
        recording = self._recording.get(event.job_id)
        if recording is not None and recording.interval is None:
            self._spawn(recording.capture())

    def _on_finished(self, event: JobFinished) -> None:
        recording = self._recording.pop(event.job_id, None)
        if recording is not None:
            self._spawn(self._finish(event.job_id, recording))

    async def _finish(self, job_id: str, recording: _Recording) -> None:
        await recording.close()
        await self._assemble(job_id, recording.frames)

    # -- after the print

    async def _assemble(self, job_id: str, frames: Path) -> None:
        pictures = sorted(await asyncio.to_thread(lambda: list(frames.glob("*.jpg"))))
        if not pictures:
            await asyncio.to_thread(shutil.rmtree, frames, True)
            return
        ffmpeg = shutil.which("ffmpeg")
        kind = "mp4"
        partial = self.folder / f".{job_id}.mp4.part"
        if ffmpeg is None or not await _encode(ffmpeg, frames, partial):
            kind = "zip"
            partial = self.folder / f".{job_id}.zip.part"
            await asyncio.to_thread(_zip, pictures, partial)
        target = self.folder / f"{job_id}.{kind}"
        await asyncio.to_thread(move_into_place, partial, target)
        size = (await asyncio.to_thread(target.stat)).st_size
        record = TimelapseRecord(
            id=str(uuid.uuid4()), job_id=job_id, file_name=target.name, format=kind,
            frame_count=len(pictures), duration=round(len(pictures) / VIDEO_FPS, 2),
            file_size=size, created_at=time.time(),
        )  # fmt: skip
        await rows.add(self._store, record)
        await asyncio.to_thread(shutil.rmtree, frames, True)
        log.info(
            "timelapse of job %s: %d frames, %s, %d KB", job_id, len(pictures), kind, size // 1024
        )
        await self._keep_quota()

    async def _keep_quota(self) -> None:
        quota = self._camera.config.timelapse_quota_mb * MB
        kept = await rows.oldest_first(self._store)
        total = sum(record.file_size for record in kept)
        for record in kept[:-1]:  # the newest stays, whatever its size
            if total <= quota:
                break
            await rows.delete(self._store, record.id)
            await asyncio.to_thread(self.path_of(record).unlink, missing_ok=True)
            total -= record.file_size
            log.info(
                "timelapse of job %s removed: over the %d MB quota", record.job_id, quota // MB
            )

    def _spawn(self, work: object) -> None:
        async def quietly() -> None:
            try:
                await work  # type: ignore[misc]
            except Exception:
                log.exception("a timelapse step failed")

        task = asyncio.create_task(quietly())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class _Recording:
    """One print's frames: the camera kept running, pictures numbered in order."""

    def __init__(self, camera: Camera, frames: Path) -> None:
        self._camera = camera
        self.frames = frames
        self.interval: float | None = None
        self._count = 0
        self._using = contextlib.AsyncExitStack()
        self._ticker: asyncio.Task[None] | None = None
        self._writing = asyncio.Lock()

    async def open(self, interval: float | None) -> None:
        # Under the lock from the first step: a layer change that comes before the camera is
        # ready waits for it, in order, instead of racing the count of frames.
        async with self._writing:
            self.interval = interval
            await asyncio.to_thread(self.frames.mkdir, parents=True, exist_ok=True)
            self._count = len(await asyncio.to_thread(lambda: list(self.frames.glob("*.jpg"))))
            try:
                await self._using.enter_async_context(self._camera.using())
            except CameraError as error:
                log.warning("no timelapse: %s", error)
                return
            await self._capture()  # the first frame: the bed before the print
        if interval is not None:
            self._ticker = asyncio.create_task(self._every(interval))

    async def capture(self) -> None:
        async with self._writing:
            await self._capture()

    async def _capture(self) -> None:
        try:
            frame = await self._camera.snapshot()
        except (CameraError, TimeoutError) as error:
            log.warning("timelapse frame missed: %s", error)
            return
        self._count += 1
        path = self.frames / f"{self._count:06d}.jpg"
        await asyncio.to_thread(path.write_bytes, frame)

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        async with self._writing:  # after the captures already asked for (the lock is FIFO)
            await self._using.aclose()

    async def _every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.capture()


async def _encode(ffmpeg: str, frames: Path, target: Path) -> bool:
    """The frames as an H.264 MP4, by ffmpeg in a child process at low priority."""
    process = await asyncio.create_subprocess_exec(
        "nice", "-n", "10", ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
        "-framerate", str(VIDEO_FPS), "-i", str(frames / "%06d.jpg"),
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart",
        "-f", "mp4", str(target),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, errors = await process.communicate()
    if process.returncode != 0:
        log.warning("ffmpeg could not make the timelapse (%s); keeping the frames as a zip",
                    errors.decode(errors="replace").strip()[-300:])  # fmt: skip
        await asyncio.to_thread(target.unlink, missing_ok=True)
        return False
    return True


def _zip(pictures: list[Path], target: Path) -> None:
    """The frames in a zip (stored: JPEGs do not compress), fsynced."""
    import zipfile  # at first use: the daemon does not load it at every boot

    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        for picture in pictures:
            archive.write(picture, picture.name)
    with target.open("rb+") as written:
        os.fsync(written.fileno())
