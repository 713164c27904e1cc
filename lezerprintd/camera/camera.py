"""One capture pipeline, however many watch: a capture thread reads and encodes each frame
once, the event loop keeps only the newest, and every viewer is sent that same frame.

Rule: no work per viewer but sending. A viewer that is slower than the camera skips frames
(it waits for the newest, never a queue), and capture runs only while someone watches, a
snapshot is taken or a timelapse records, stopping `idle_seconds` after the last of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any, Final

from lezerprintd.camera.sources import CameraError, FrameSource, open_source
from lezerprintd.config import CameraConfig, check_values
from lezerprintd.durable import write_atomically
from lezerprintd.errors import ConfigError

log = logging.getLogger(__name__)

BOUNDARY: Final = "lezerprintframe"
SETTINGS_FILE: Final = "camera.json"
# What the API may change; the rest ([camera] source, device, timelapse quota) is config only.
ADJUSTABLE: Final = (
    "width", "height", "fps", "quality", "rotation", "flip_horizontal", "flip_vertical",
    "timelapse", "timelapse_interval",
)  # fmt: skip
FIRST_FRAME_SECONDS: Final = 10.0


class Camera:
    """The camera room: frames for viewers, snapshots and timelapses."""

    def __init__(self, config: CameraConfig, data_dir: Path) -> None:
        self.config = config
        self._settings_file = data_dir / SETTINGS_FILE
        self.frames_captured = 0
        self.source_name: str | None = None  # the source capturing now
        self.error: str | None = None  # why the camera could not capture, when it could not
        self._latest: bytes | None = None
        self._part: bytes = b""  # the latest frame as one multipart part, shared by all
        self._fresh = asyncio.Event()
        self._users = 0  # viewers, snapshots waiting, timelapses recording
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._idle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        saved = await asyncio.to_thread(self._read_saved)
        try:
            self.config = dataclasses.replace(self.config, **check_values("camera", saved))  # type: ignore[arg-type]
        except ConfigError as error:
            log.warning("%s: %s; using the configured camera settings", self._settings_file, error)

    async def stop(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        await self._stop_capture()

    # -- for viewers, snapshots and timelapses

    async def stream(self) -> AsyncGenerator[bytes, None]:
        """Multipart parts, each the newest frame when it is ready (see BOUNDARY)."""
        async with self.using():
            seen = -1
            while True:
                await self._wait_for_frame(after=seen)
                seen = self.frames_captured
                yield self._part

    async def snapshot(self) -> bytes:
        """The newest frame; the camera starts for it if it was not running."""
        async with self.using():
            if self._latest is None:
                await self._wait_for_frame(after=-1)
            assert self._latest is not None
            return self._latest

    @contextlib.asynccontextmanager
    async def using(self) -> AsyncIterator[None]:
        """Keep capturing while inside (a viewer, a snapshot, a timelapse recording)."""
        self._users += 1
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        try:
            await self._start_capture()
            yield
        finally:
            self._users -= 1
            if self._users == 0 and self._loop is not None:
                self._idle = self._loop.call_later(
                    self.config.idle_seconds, lambda: asyncio.ensure_future(self._stop_idle())
                )

    async def change(self, values: dict[str, Any]) -> CameraConfig:
        """Apply and keep new settings (ADJUSTABLE keys only, already checked); capture
        restarts with them if it was running."""
        self.config = dataclasses.replace(self.config, **values)
        kept = {key: getattr(self.config, key) for key in ADJUSTABLE}
        data = json.dumps(kept, indent=1).encode()
        temporary = self._settings_file.with_name(f".{SETTINGS_FILE}.part")
        await asyncio.to_thread(
            write_atomically, self._settings_file, data, mode=0o640, temporary=temporary
        )
        if self._thread is not None:
            await self._stop_capture()
            if self._users:
                await self._start_capture()
        return self.config

    # -- capture

    async def _start_capture(self) -> None:
        async with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._latest = None
            self.error = None
            if self._fresh.is_set():  # set by a failure: the next frame is awaited anew
                self._fresh = asyncio.Event()
            self._stopping = threading.Event()
            opened: asyncio.Future[FrameSource] = asyncio.get_running_loop().create_future()
            self._thread = threading.Thread(
                target=self._capture, args=(opened, self._stopping), name="camera", daemon=True
            )
            self._thread.start()
            try:
                source = await opened
            except CameraError as error:
                self.error = str(error)
                self._thread = None
                raise
            self.source_name = source.name
            log.info(
                "camera on: %s, %dx%d at %d fps",
                source.name, self.config.width, self.config.height, self.config.fps,
            )  # fmt: skip

    async def _stop_idle(self) -> None:
        if self._users == 0:
            await self._stop_capture()

    async def _stop_capture(self) -> None:
        async with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._stopping.set()
            await asyncio.to_thread(thread.join, 5)
            self.source_name = None
            log.info("camera off")

    def _capture(self, opened: asyncio.Future[FrameSource], stopping: threading.Event) -> None:
        """The capture thread: open, then read (and encode) frames until told to stop."""
        loop = self._loop
        assert loop is not None
        try:
            source = open_source(self.config)
        except CameraError as error:
            loop.call_soon_threadsafe(_settle, opened, None, error)
            return
        except Exception as error:  # a driver's own failure: say it, do not crash the thread
            log.exception("the camera failed to open")
            loop.call_soon_threadsafe(_settle, opened, None, CameraError(str(error)))
            return
        loop.call_soon_threadsafe(_settle, opened, source, None)
        try:
            while not stopping.is_set():
                frame = source.read()
                loop.call_soon_threadsafe(self._publish, frame)
        except CameraError as error:
            log.error("camera: %s", error)
            loop.call_soon_threadsafe(self._failed, str(error))
        except Exception:
            log.exception("the camera failed")
            loop.call_soon_threadsafe(self._failed, "the camera failed; the log has details")
        finally:
            source.close()

    def _publish(self, frame: bytes) -> None:
        self._latest = frame
        self._part = (
            (
                f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(frame)}\r\n"
                f"X-Timestamp: {time.time():.3f}\r\n\r\n"
            ).encode()
            + frame
            + b"\r\n"
        )
        self.frames_captured += 1
        fresh, self._fresh = self._fresh, asyncio.Event()
        fresh.set()  # every waiting viewer wakes to the same bytes

    def _failed(self, reason: str) -> None:
        self.error = reason
        self._thread = None
        self._fresh.set()

    async def _wait_for_frame(self, after: int) -> None:
        async with asyncio.timeout(FIRST_FRAME_SECONDS if after < 0 else None):
            while self.frames_captured <= after or self._latest is None:
                if self.error is not None:
                    raise CameraError(self.error)
                await self._fresh.wait()

    def _read_saved(self) -> dict[str, Any]:
        try:
            saved = json.loads(self._settings_file.read_text())
        except (OSError, ValueError):
            return {}
        return {key: value for key, value in saved.items() if key in ADJUSTABLE}


def _settle(
    future: asyncio.Future[FrameSource], source: FrameSource | None, error: Exception | None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert source is not None
        future.set_result(source)
