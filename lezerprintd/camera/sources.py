"""Where frames come from: the Pi camera (picamera2), a USB camera (V4L2, through ffmpeg), or
a generated test pattern. Each gives JPEG frames, one `read()` at a time, on a worker thread.

Rule: one small interface (`FrameSource`), blocking calls only (the camera room runs them on
its capture thread), and every heavy import inside the source that needs it: numpy and
simplejpeg load when a camera first starts, picamera2 only on a Pi.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import TYPE_CHECKING, Any, Final, Protocol

from lezerprintd.config import CameraConfig
from lezerprintd.errors import LezerError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

JPEG_START: Final = b"\xff\xd8"
JPEG_END: Final = b"\xff\xd9"


class CameraError(LezerError):
    """The camera cannot be opened or stopped giving frames; the message says why."""


class FrameSource(Protocol):
    name: str

    def read(self) -> bytes:
        """The next frame, as JPEG; blocks until it is there (about 1/fps)."""
        ...

    def close(self) -> None: ...


def open_source(config: CameraConfig) -> FrameSource:
    """The configured source (for "auto": the Pi camera, else a USB camera, else the test
    pattern). Raises CameraError when the chosen one cannot be opened."""
    kind: str = config.source
    if kind == "auto":
        kind = _available(config)
    if kind == "picamera":
        return PiCamera(config)
    if kind == "v4l2":
        return V4l2Camera(config)
    return TestPattern(config)


def _available(config: CameraConfig) -> str:
    import importlib.util
    import os

    if importlib.util.find_spec("picamera2") is not None:
        return "picamera"
    if os.path.exists(config.device) and shutil.which("ffmpeg"):
        return "v4l2"
    return "test"


class _Transform:
    """Rotation and flips of a decoded frame, then JPEG encoding (simplejpeg)."""

    def __init__(self, config: CameraConfig) -> None:
        import simplejpeg

        self._config = config
        self._encode = simplejpeg.encode_jpeg
        self._decode = simplejpeg.decode_jpeg

    @property
    def needed(self) -> bool:
        c = self._config
        return bool(c.rotation or c.flip_horizontal or c.flip_vertical)

    def encode(self, pixels: NDArray[np.uint8]) -> bytes:
        import numpy as np

        c = self._config
        if c.flip_horizontal:
            pixels = pixels[:, ::-1]
        if c.flip_vertical:
            pixels = pixels[::-1]
        if c.rotation:
            pixels = np.rot90(pixels, k=-c.rotation // 90)  # clockwise, as people say it
        frame: bytes = self._encode(
            np.ascontiguousarray(pixels), quality=c.quality, colorspace="RGB", fastdct=True
        )
        return frame

    def reencode(self, jpeg: bytes) -> bytes:
        """A camera's own JPEG, turned as configured (only when a turn is configured)."""
        if not self.needed:
            return jpeg
        return self.encode(self._decode(jpeg, colorspace="RGB", fastdct=True))


class TestPattern:
    """Colour bars that move, a frame counter and the time: a camera for development, the
    demo and the tests. Paced to the configured frame rate."""

    name = "test"

    def __init__(self, config: CameraConfig) -> None:
        import numpy as np

        self._config = config
        self._transform = _Transform(config)
        self._count = 0
        self._next = time.monotonic()
        w, h = config.width, config.height
        bars = np.array(
            [[235, 235, 235], [235, 235, 16], [16, 235, 235], [16, 235, 16],
             [235, 16, 235], [235, 16, 16], [16, 16, 235], [16, 16, 16]],
            dtype=np.uint8,
        )  # fmt: skip
        columns = np.arange(w) * len(bars) // w
        self._bars = np.broadcast_to(bars[columns], (h, w, 3)).copy()

    def read(self) -> bytes:
        interval = 1 / self._config.fps
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next = max(self._next + interval, time.monotonic())
        self._count += 1
        frame = self._bars.copy()
        w, h = self._config.width, self._config.height
        # A white band sweeping down, so a frozen stream is plain to see.
        band = (self._count * 4) % h
        frame[band : band + 8] = 255
        stamp = f"{self._count:06d} " + time.strftime("%H:%M:%S")
        _draw_text(frame, stamp, x=max(4, w // 40), y=h - 12 * max(1, h // 240) - 8)
        return self._transform.encode(frame)

    def close(self) -> None:
        pass


class V4l2Camera:
    """A USB (UVC) camera through ffmpeg's V4L2 input. When the camera offers MJPEG, its
    frames pass through unchanged (no encoding on the Pi); otherwise ffmpeg encodes them."""

    name = "v4l2"

    def __init__(self, config: CameraConfig) -> None:
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise CameraError("a USB camera needs ffmpeg (apt-get install ffmpeg)")
        self._transform = _Transform(config)
        size = f"{config.width}x{config.height}"
        common = ["-hide_banner", "-loglevel", "error", "-f", "v4l2", "-framerate",
                  str(config.fps), "-video_size", size]  # fmt: skip
        attempts = [
            [ffmpeg, *common, "-input_format", "mjpeg", "-i", config.device, "-c:v", "copy",
             "-f", "mjpeg", "pipe:1"],
            [ffmpeg, *common, "-i", config.device, "-c:v", "mjpeg",
             "-q:v", str(_ffmpeg_quality(config.quality)), "-f", "mjpeg", "pipe:1"],
        ]  # fmt: skip
        self._process: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._pending: bytes | None = None
        for command in attempts:
            self._process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            try:
                self._pending = self._next_frame()  # proof that this way works
                return
            except CameraError:
                self.close()
        raise CameraError(f"the camera {config.device} gives no frames")

    def read(self) -> bytes:
        frame, self._pending = self._pending or self._next_frame(), None
        return self._transform.reencode(frame)

    def _next_frame(self) -> bytes:
        process = self._process
        assert process is not None
        assert process.stdout is not None
        while True:
            start = self._buffer.find(JPEG_START)
            end = self._buffer.find(JPEG_END, start + 2) if start >= 0 else -1
            if end >= 0:
                frame = self._buffer[start : end + 2]
                self._buffer = self._buffer[end + 2 :]
                return frame
            chunk = process.stdout.read1(65536)  # type: ignore[attr-defined]
            if not chunk:
                error = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise CameraError(f"the camera stopped: {error.strip()[-200:] or 'no frames'}")
            self._buffer += chunk
            if len(self._buffer) > 8 * 1024 * 1024:  # no frame end in 8 MB: not MJPEG
                raise CameraError("the camera's stream is not MJPEG")

    def close(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            for pipe in (self._process.stdout, self._process.stderr):
                if pipe is not None:
                    pipe.close()
            self._process = None


class PiCamera:
    """The Raspberry Pi camera through picamera2 (Raspberry Pi OS's python3-picamera2; the
    venv sees it through --system-site-packages). Untested off a Pi: picamera2 needs
    libcamera, which only Raspberry Pi OS has."""

    name = "picamera"

    def __init__(self, config: CameraConfig) -> None:
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found,unused-ignore]
        except ImportError as error:
            raise CameraError(f"picamera2 is not installed: {error}") from None
        self._transform = _Transform(config)
        try:
            camera: Any = Picamera2()
            settings = camera.create_video_configuration(
                main={"size": (config.width, config.height), "format": "RGB888"},
                controls={"FrameRate": float(config.fps)},
            )
            camera.configure(settings)
            camera.start()
        except Exception as error:  # libcamera raises plain RuntimeErrors
            raise CameraError(f"the Pi camera cannot start: {error}") from None
        self._camera = camera

    def read(self) -> bytes:
        # RGB888 arrives as BGR in memory; simplejpeg is told RGB, so swap to match.
        pixels = self._camera.capture_array("main")[:, :, ::-1]
        return self._transform.encode(pixels)

    def close(self) -> None:
        self._camera.stop()
        self._camera.close()


def _ffmpeg_quality(quality: int) -> int:
    """JPEG quality 10-95 as ffmpeg's -q:v 31 (worst) to 2 (best)."""
    return max(2, min(31, round(31 - (quality - 10) * 29 / 85)))


# A 5x7 font for the digits, the colon and the space of the test pattern's stamp.
_GLYPHS: Final = {
    "0": "01110100011001110101110011000101110", "1": "00100011000010000100001000010001110",
    "2": "01110100010000100010001000100011111", "3": "11110000010000101110000010000111110",
    "4": "00010001100101010010111110001000010", "5": "11111100001111000001000011000101110",
    "6": "00110010001000011110100011000101110", "7": "11111000010001000100010000100001000",
    "8": "01110100011000101110100011000101110", "9": "01110100011000101111000010001001100",
    ":": "00000011000110000000011000110000000", " ": "0" * 35,
}  # fmt: skip


def _draw_text(frame: NDArray[np.uint8], text: str, x: int, y: int) -> None:
    """White digits on a black box, scaled with the picture."""
    import numpy as np

    scale = max(1, frame.shape[0] // 240)
    width = len(text) * 6 * scale
    frame[y - scale : y + 8 * scale, x - scale : x + width + scale] = 0
    for index, char in enumerate(text):
        bits = np.array([int(b) for b in _GLYPHS.get(char, _GLYPHS[" "])], dtype=bool)
        glyph = np.kron(bits.reshape(7, 5), np.ones((scale, scale), dtype=bool))
        left = x + index * 6 * scale
        region = frame[y : y + glyph.shape[0], left : left + glyph.shape[1]]
        region[glyph[: region.shape[0], : region.shape[1]]] = 255
