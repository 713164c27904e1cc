"""The file library: uploads streamed to disk and kept, and the files removed again.

Rule: an upload is never held in memory. Its chunks go to a temporary file in the files folder
(written, and hashed, in a worker thread) while its size is counted against the limit and the
disk's free space; only a complete, checked upload is fsynced, renamed into place under a
generated name and recorded. Whatever stops an upload half way (too big, disk full, wrong
content, a client that goes away, a daemon that stops) leaves nothing behind; a power cut can
leave a temporary file, which the next start removes.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from lezerprintd.bus import Bus, FileAnalyzed
from lezerprintd.config import FilesConfig
from lezerprintd.durable import move_into_place, write_atomically
from lezerprintd.errors import UserError
from lezerprintd.files import names
from lezerprintd.files.kinds import HEAD_BYTES, FileType, check_3mf, check_content, claimed_type
from lezerprintd.store import Store
from lezerprintd.store import files as file_rows
from lezerprintd.store.files import FileRecord, Visibility

if TYPE_CHECKING:
    from lezerprintd.files.thumbnails import Thumbnail

log = logging.getLogger(__name__)

FOLDER: Final = "files"
THUMBNAILS: Final = "thumbnails"
TEMPORARY_PREFIX: Final = ".upload-"
TEMPORARY_SUFFIX: Final = ".part"
MB: Final = 1024 * 1024
ANALYSIS_SECONDS: Final = 300
MODELS: Final = frozenset({FileType.STL, FileType.OBJ, FileType.THREEMF})
# What the G-code analysis can fill in when the slicer did not say (gcode_analysis.py).
COMPUTED: Final = (
    "estimatedTime", "filamentLength", "layerCount", "firstLayerHeight", "layerHeight",
    "objectHeight",
)  # fmt: skip
FREE_SPACE_EVERY: Final = 16 * MB  # how often a long upload looks at the free space again


@dataclass(slots=True)
class Upload:
    """A received file waiting in its temporary name to be kept or discarded."""

    path: Path
    name: str  # the display name the client gave, cleaned
    kind: FileType
    extension: str
    size: int = 0
    sha256: str = ""
    head: bytearray = field(default_factory=bytearray)

    def discard(self) -> None:
        # One unlink, done inline: a cancelled upload must not leave its file behind.
        self.path.unlink(missing_ok=True)


class Library:
    def __init__(self, config: FilesConfig, data_dir: Path, store: Store, bus: Bus) -> None:
        self.config = config
        self.folder = data_dir / FOLDER
        self.thumbnails = data_dir / THUMBNAILS
        self._store = store
        self._bus = bus
        self._keeping = asyncio.Lock()  # the duplicate check and the insert go together
        self._to_analyse: asyncio.Queue[str] = asyncio.Queue()
        self._analyser: asyncio.Task[None] | None = None

    async def start(self) -> None:
        removed = await asyncio.to_thread(self._prepare)
        if removed:
            log.info("removed %d unfinished upload(s) left by an earlier run", removed)
        for record in await file_rows.pending_analysis(self._store):
            self._to_analyse.put_nowait(record.id)  # the daemon stopped before they were done
        self._analyser = asyncio.create_task(self._analyse_forever(), name="file-analysis")

    async def stop(self) -> None:
        if self._analyser is not None:
            self._analyser.cancel()
            await asyncio.gather(self._analyser, return_exceptions=True)

    def path_of(self, record: FileRecord) -> Path:
        return self.folder / record.file_name

    async def receive(
        self, chunks: AsyncIterator[bytes], filename: str, expected_size: int | None
    ) -> Upload:
        """Stream one uploaded file to a temporary file and check it. The caller keeps or
        discards the answer; on any failure nothing is left behind."""
        name = names.display_name(filename)
        extension = names.extension_of(name)
        kind = claimed_type(name, extension)
        limit = self.config.max_upload_mb * MB
        if expected_size is not None and expected_size > limit + HEAD_BYTES:
            raise _too_big(limit)
        await self._check_free_space(expected_size or 0)
        temporary = self._temporary(self.folder)
        upload = Upload(temporary, name, kind, extension)
        writer = _Writer(temporary)
        try:
            await asyncio.to_thread(writer.open)
            next_free_check = FREE_SPACE_EVERY
            async for chunk in chunks:
                upload.size += len(chunk)
                if upload.size > limit:
                    raise _too_big(limit)
                if len(upload.head) < HEAD_BYTES:
                    upload.head += chunk[: HEAD_BYTES - len(upload.head)]
                await asyncio.to_thread(writer.write, chunk)
                if upload.size >= next_free_check:
                    next_free_check += FREE_SPACE_EVERY
                    await self._check_free_space(0)
            upload.sha256 = await asyncio.to_thread(writer.finish)
            check_content(kind, bytes(upload.head), upload.size, name)
            if kind is FileType.THREEMF:
                await asyncio.to_thread(check_3mf, temporary, name)
        except OSError as error:
            writer.close()
            upload.discard()
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _disk_full() from None
            raise
        except BaseException:
            writer.close()
            upload.discard()
            raise
        return upload

    async def keep(
        self, upload: Upload, *, name: str | None, folder: str, owner: str | None
    ) -> FileRecord:
        """Move `upload` into the library as a new file of `owner`, named `name` (or as
        uploaded) in `folder`. 409 when the owner already has the same content."""
        display = upload.name if name is None else self._renamed(name, upload.kind)
        async with self._keeping:
            same = await file_rows.by_hash(self._store, upload.sha256, Visibility(owner))
            if same is not None:
                shown = f"{same.folder}/{same.original_name}" if same.folder else same.original_name
                raise UserError(
                    f"this file is already in the library as {shown}",
                    status=409,
                    code="CONFLICT",
                    details={"fileId": same.id, "originalName": same.original_name},
                )
            stored = names.stored_name(upload.extension)
            metadata, thumbnail = None, None
            analyse = upload.kind in MODELS
            if upload.kind is FileType.GCODE:
                # The two ends of the file only: milliseconds, whatever its size.
                metadata, picture = await asyncio.to_thread(_inspect_gcode, upload.path)
                # The whole file is read only when its slicer gave no time or filament.
                analyse = any(metadata.get(key) is None for key in COMPUTED[:2])
                if picture is not None:
                    thumbnail = Path(stored).stem + picture.extension
                    await asyncio.to_thread(
                        write_atomically,
                        self.thumbnails / thumbnail,
                        picture.data,
                        mode=0o640,
                        temporary=self._temporary(self.thumbnails),
                    )
            await asyncio.to_thread(move_into_place, upload.path, self.folder / stored)
            now = time.time()
            record = FileRecord(
                id=str(uuid.uuid4()),
                user_id=owner,
                original_name=display,
                file_name=stored,
                file_type=upload.kind.value,
                file_size=upload.size,
                print_count=0,
                folder=folder,
                sha256=upload.sha256,
                created_at=now,
                updated_at=now,
                metadata=metadata,
                thumbnail=thumbnail,
                analysis_status="PENDING" if analyse else None,
            )
            try:
                await file_rows.add(self._store, record)
            except BaseException:
                (self.folder / stored).unlink(missing_ok=True)
                if thumbnail is not None:
                    (self.thumbnails / thumbnail).unlink(missing_ok=True)
                raise
        log.info("stored %s (%d bytes) as %s", display, upload.size, stored)
        if record.analysis_status == "PENDING":
            self._to_analyse.put_nowait(record.id)
        return record

    async def rename(self, record: FileRecord, *, name: str | None, folder: str | None) -> None:
        kind = FileType(record.file_type)
        display = record.original_name if name is None else self._renamed(name, kind)
        where = record.folder if folder is None else folder
        await file_rows.rename(self._store, record.id, display, where, time.time())

    async def remove(self, record: FileRecord) -> None:
        """Forget the file, then delete it: a crash in between leaves a stray file on disk,
        never a row pointing at nothing. Jobs printed from it keep their history."""
        await file_rows.delete(self._store, record.id)
        await asyncio.to_thread(self.path_of(record).unlink, missing_ok=True)
        if record.thumbnail is not None:
            await asyncio.to_thread((self.thumbnails / record.thumbnail).unlink, missing_ok=True)

    @staticmethod
    def _renamed(raw: str, wanted: FileType) -> str:
        display = names.display_name(raw)
        try:
            same_kind = claimed_type(display, names.extension_of(display)) is wanted
        except UserError:
            same_kind = False
        if not same_kind:
            message = f"the name must end in an extension of a {wanted.value} file"
            raise UserError(
                f"invalid request: {message}",
                details=[{"field": "name", "code": "extension", "message": message}],
            )
        return display

    async def _analyse_forever(self) -> None:
        """One file at a time, each in a child process of its own (numpy, a big mesh or a
        whole G-code file never enter the daemon), at low priority, within ANALYSIS_SECONDS."""
        while True:
            file_id = await self._to_analyse.get()
            record = await file_rows.get(self._store, file_id)
            if record is None or record.analysis_status != "PENDING":
                continue  # deleted meanwhile
            try:
                if record.file_type == FileType.GCODE.value:
                    figures, picture, error = await self._analyse_gcode(record)
                else:
                    figures, picture, error = await self._analyse(record)
            except Exception:
                log.exception("analysing %s failed", record.original_name)
                figures, picture, error = None, None, "the analysis failed; the log has details"
            still_there = await file_rows.analysed(
                self._store, record.id, metadata=figures, thumbnail=picture, error=error
            )
            if not still_there and picture is not None:
                (self.thumbnails / picture).unlink(missing_ok=True)  # deleted while analysed
            self._bus.publish(
                FileAnalyzed(record.id, record.user_id, "FAILED" if error else "DONE", error)
            )

    async def _analyse(
        self, record: FileRecord
    ) -> tuple[dict[str, Any] | None, str | None, str | None]:
        """A model's figures and picture: (figures, picture name, None), or (None, None, why
        not)."""
        picture = Path(record.file_name).stem + ".png"
        drawn = self._temporary(self.thumbnails)
        try:
            figures, error = await self._run_worker(
                record, "lezerprintd.files.models", str(self.path_of(record)), str(drawn)
            )
            if figures is not None:
                await asyncio.to_thread(_sync_and_move, drawn, self.thumbnails / picture)
                return figures, picture, None
        finally:
            drawn.unlink(missing_ok=True)
        return None, None, error

    async def _analyse_gcode(
        self, record: FileRecord
    ) -> tuple[dict[str, Any] | None, str | None, str | None]:
        """The slicer's metadata completed with what the whole file shows; the slicer's own
        figures and picture stay."""
        figures, error = await self._run_worker(
            record, "lezerprintd.files.gcode_analysis", str(self.path_of(record))
        )
        if figures is None:
            return record.metadata, record.thumbnail, error
        metadata = dict(record.metadata or {})
        computed = [key for key in COMPUTED if metadata.get(key) is None]
        for key in computed:
            metadata[key] = figures[key]
        metadata["computed"] = computed
        metadata["boundingBox"] = {"min": figures["min"], "max": figures["max"]}
        metadata["moves"] = figures["moves"]
        return metadata, record.thumbnail, None

    async def _run_worker(
        self, record: FileRecord, module: str, *arguments: str
    ) -> tuple[dict[str, Any] | None, str | None]:
        """Run `python -m module arguments`: (its JSON answer, None) or (None, why not)."""
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *arguments,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            async with asyncio.timeout(ANALYSIS_SECONDS):
                output, errors = await worker.communicate()
        except TimeoutError:
            return None, f"the analysis did not finish within {ANALYSIS_SECONDS} s"
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        if worker.returncode == 2:  # the file's fault: the worker says why
            return None, errors.decode(errors="replace").strip().splitlines()[-1][:300]
        if worker.returncode != 0:
            log.error(
                "the analysis of %s ended with %s: %s",
                record.original_name,
                worker.returncode,
                errors.decode(errors="replace")[-2000:],
            )
            return None, "the analysis stopped unexpectedly (too big for the memory?)"
        answer: dict[str, Any] = json.loads(output)
        return answer, None

    async def _check_free_space(self, needed: int) -> None:
        usage = await asyncio.to_thread(shutil.disk_usage, self.folder)
        if usage.free - needed < self.config.min_free_mb * MB:
            raise _disk_full(usage.free)

    @staticmethod
    def _temporary(folder: Path) -> Path:
        """A new name for a file being made; the next start removes any left by a power cut."""
        return folder / f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}{TEMPORARY_SUFFIX}"

    def thumbnail_of(self, record: FileRecord) -> Path | None:
        return None if record.thumbnail is None else self.thumbnails / record.thumbnail

    def _prepare(self) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.thumbnails.mkdir(parents=True, exist_ok=True)
        removed = 0
        for folder in (self.folder, self.thumbnails):
            for leftover in folder.glob(f"{TEMPORARY_PREFIX}*{TEMPORARY_SUFFIX}"):
                leftover.unlink(missing_ok=True)
                removed += 1
        return removed


class _Writer:
    """The temporary file, written and hashed in worker threads (hashlib lets go of the GIL)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None
        self._hash = hashlib.sha256()
        # A cancelled upload closes the file while a worker may still be writing to it: the
        # lock makes the close wait, so the number is never reused under a late write.
        self._lock = threading.Lock()

    def open(self) -> None:
        with self._lock:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)

    def write(self, chunk: bytes) -> None:
        with self._lock:
            if self._fd is None:
                return  # closed by a cancelled upload
            view = memoryview(chunk)
            while view:
                view = view[os.write(self._fd, view) :]
            self._hash.update(chunk)

    def finish(self) -> str:
        """fsync and close; the content's SHA-256."""
        with self._lock:
            assert self._fd is not None
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            return self._hash.hexdigest()

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _inspect_gcode(path: Path) -> tuple[dict[str, Any], Thumbnail | None]:
    """The slicer's figures and its largest picture, from the file's two ends."""
    # Imported at the first upload, not at every boot.
    from lezerprintd.files.gcode_meta import parse, read_ends
    from lezerprintd.files.thumbnails import largest

    head, tail = read_ends(path)
    return parse(head, tail).to_json(), largest(head, tail)


def _sync_and_move(source: Path, target: Path) -> None:
    """Move a file the worker wrote (without fsync) into place, durably."""
    with source.open("rb+") as written:
        os.fsync(written.fileno())
    move_into_place(source, target)


def _too_big(limit: int) -> UserError:
    return UserError(
        f"the file is larger than the library takes ({limit // MB} MB)",
        status=413,
        code="PAYLOAD_TOO_LARGE",
    )


def _disk_full(free: int | None = None) -> UserError:
    left = "" if free is None else f" ({free // MB} MB free)"
    return UserError(
        f"the appliance's storage is full{left}; delete files to make room",
        status=507,
        code="INSUFFICIENT_STORAGE",
    )
