"""Print jobs: a stored file streamed to the printer line by line, from start to finish.

A job moves QUEUED -> PREPARING -> PRINTING (<-> PAUSED) -> COMPLETED | FAILED | CANCELLED;
every move is a `print_jobs` update and a `print_events` row, written together.

Rules this module must not break:
- A file is never read whole: a worker thread reads it in 64 KiB chunks, one chunk ahead of
  the printer, so the event loop never waits on the SD card.
- Nothing is left claiming to print: at start-up every unfinished job is marked FAILED
  ("interrupted"), and a job ends FAILED whenever the printer can no longer print it.
- Temperatures are sampled into the job's log and written in batches (an SD card is not a disk).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

from lezerprintd.bus import Bus, JobFinished, JobLayerChanged, JobProgressed, JobStatusChanged
from lezerprintd.config import JobsConfig
from lezerprintd.errors import PrinterError, UserError
from lezerprintd.printer.printer import Position, Printer, PrinterState
from lezerprintd.printer.protocol import clean_command
from lezerprintd.store import Store
from lezerprintd.store import files as file_rows
from lezerprintd.store import jobs as job_rows
from lezerprintd.store.jobs import NO_PLAN, JobRecord, JobStatus, Plan, Severity, TemperatureSample

log = logging.getLogger(__name__)

CHUNK_BYTES: Final = 64 * 1024
STOP_SECONDS: Final = 10
# Marlin keeps 95 characters of a line; with "N<up to 7 digits> " and "*<checksum>" around it,
# a message of this length always fits.
MESSAGE_KEEP: Final = 80
# Comments slicers write where a layer begins: PrusaSlicer and its family, Cura and
# ideaMaker, Simplify3D, KISSlicer.
LAYER_COMMENTS: Final = (b";LAYER_CHANGE", b";LAYER:", b"; layer ", b"; BEGIN_LAYER")
PROGRESS_SECONDS: Final = 1.0
_FEEDRATE = re.compile(rb"F(\d+(?:\.\d*)?)")


class GcodeReader:
    """Clean G-code lines from a file, read one chunk ahead in a worker thread.

    `peek`/`advance` are called on the event loop and never block; when the buffered lines run
    low the next chunk is read in the background and `on_data` is called when it arrives.
    """

    def __init__(self, path: Path, on_data: Callable[[], None]) -> None:
        self.path = path
        self._on_data = on_data
        self._file: BinaryIO | None = None
        self.size = 0
        self.bytes_done = 0
        self.lines_done = 0
        self._lines: list[bytes] = []
        self._ends: list[int] = []  # byte offset just past each line
        self._layers: set[int] = set()  # indices of the lines that begin a layer
        self._index = 0
        self._next: tuple[list[bytes], list[int], set[int]] | None = None
        self.layer = 0  # the layer the last line handed out belongs to (0: before the first)
        self._reading = False
        self._eof = False
        self._partial = b""  # touched only by the reading thread
        self._offset = 0  # ditto
        self._layer_pending = False  # ditto: a layer comment seen, its first command not yet
        self.error: OSError | None = None

    async def open(self) -> None:
        """Open the file and read its first chunk."""
        self._file, self.size = await asyncio.to_thread(self._open)
        lines, ends, layers, eof = await asyncio.to_thread(self._read_chunk)
        self._lines, self._ends, self._layers, self._eof = lines, ends, layers, eof

    def _open(self) -> tuple[BinaryIO, int]:
        handle = self.path.open("rb")
        return handle, self.path.stat().st_size

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def exhausted(self) -> bool:
        """Every line of the file has been handed out."""
        return self._eof and self._next is None and self._index >= len(self._lines)

    def peek(self) -> bytes | None:
        if self._index < len(self._lines):
            return self._lines[self._index]
        if self._next is not None:
            self._lines, self._ends, self._layers = self._next
            self._index = 0
            self._next = None
            self._read_ahead()
            return self.peek()
        self._read_ahead()
        return None

    def advance(self) -> bool:
        """Past the line `peek` gave; True when it began a new layer."""
        self.bytes_done = self._ends[self._index]
        new_layer = self._index in self._layers
        self._index += 1
        self.lines_done += 1
        if new_layer:
            self.layer += 1
        return new_layer

    def _read_ahead(self) -> None:
        if self._reading or self._eof or self._next is not None or self._file is None:
            return
        self._reading = True
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, self._read_chunk).add_done_callback(self._chunk_read)

    def _chunk_read(
        self, future: asyncio.Future[tuple[list[bytes], list[int], set[int], bool]]
    ) -> None:
        self._reading = False
        if future.cancelled():
            return
        if (error := future.exception()) is not None:
            self.error = error if isinstance(error, OSError) else OSError(str(error))
            self._eof = True
        else:
            lines, ends, layers, self._eof = future.result()
            self._next = (lines, ends, layers)
        self._on_data()

    def _read_chunk(self) -> tuple[list[bytes], list[int], set[int], bool]:
        """In the worker thread: the next chunk's clean lines, their end offsets, and which
        of them begin a layer (the first command after a slicer's layer comment)."""
        assert self._file is not None
        data = self._file.read(CHUNK_BYTES)
        eof = len(data) < CHUNK_BYTES
        text = self._partial + data
        pieces = text.splitlines(keepends=True)
        self._partial = b""
        if pieces and not eof and not pieces[-1].endswith((b"\n", b"\r")):
            self._partial = pieces.pop()  # the rest of this line is in the next chunk
        lines: list[bytes] = []
        ends: list[int] = []
        layers: set[int] = set()
        offset = self._offset
        for piece in pieces:
            offset += len(piece)
            if piece.startswith(LAYER_COMMENTS):
                self._layer_pending = True
            command = clean_command(piece)
            if command:
                if self._layer_pending:
                    layers.add(len(lines))
                    self._layer_pending = False
                if len(command) > MESSAGE_KEEP and command.startswith((b"M117", b"M118")):
                    # A status message longer than Marlin keeps would be refused for ever;
                    # shortened, it still says what it said.
                    command = command[:MESSAGE_KEEP].rstrip()
                lines.append(command)
                ends.append(offset)
        self._offset = offset
        return lines, ends, layers, eof


@dataclass(frozen=True, slots=True)
class _Parked:
    """What a pause saved, to come back to on resume."""

    position: Position
    hotend_target: float | None
    bed_target: float | None
    relative_moves: bool
    relative_extrusion: bool
    feedrate: float | None


class Job:
    """The job being printed. It is the printer's `Feed`."""

    def __init__(self, jobs: Jobs, record: JobRecord, reader: GcodeReader) -> None:
        self._jobs = jobs
        self.id = record.id
        self.file_name = record.file_name
        self.file_id = record.file_id
        self.plan = record.plan
        self.reader = reader
        self.status = record.status
        self.fed_all = asyncio.Event()
        self.outcome: asyncio.Future[tuple[JobStatus, str | None]] = (
            asyncio.get_running_loop().create_future()
        )
        self.started_at: float | None = None
        self.printing_since: float | None = None
        self.printed_seconds = 0.0
        self.ending = False  # cancelled, failed or completing: no pause or resume any more
        self.parking: asyncio.Task[_Parked | None] | None = None
        self.restoring: asyncio.Task[None] | None = None
        self.pause_reason = ""
        self.relative_moves = False
        self.relative_extrusion = False
        self.feedrate: float | None = None

    @property
    def elapsed(self) -> float:
        running = time.monotonic() - self.printing_since if self.printing_since else 0.0
        return self.printed_seconds + running

    @property
    def progress(self) -> float:
        size = self.reader.size
        return 100.0 if size == 0 else round(100.0 * self.reader.bytes_done / size, 2)

    # -- Feed

    def peek(self) -> bytes | None:
        line = self.reader.peek()
        if line is None and self.reader.exhausted and not self.fed_all.is_set():
            self.fed_all.set()
        return line

    def advance(self) -> None:
        line = self.reader.peek()
        if self.reader.advance():
            self._jobs.layer_changed(self)
        if line is not None:
            self._track_modes(line)

    def on_fault(self, reason: str) -> None:
        self.end(JobStatus.FAILED, reason)

    def on_host_action(self, action: str, argument: str) -> None:
        self._jobs.host_action(self, action, argument)

    # -- internals

    def end(self, status: JobStatus, error: str | None) -> None:
        self.ending = True
        if not self.outcome.done():
            self.outcome.set_result((status, error))

    def _track_modes(self, line: bytes) -> None:
        # Only what a resume must restore: the positioning modes and the last feed rate.
        head = line[:3]
        if head in (b"G1 ", b"G0 ") and b"F" in line:
            if match := _FEEDRATE.search(line):
                self.feedrate = float(match.group(1))
        elif head in {b"G90", b"G91"}:
            self.relative_moves = relative = head == b"G91"
            self.relative_extrusion = relative  # Marlin's G90/G91 switch E too
        elif head in {b"M82", b"M83"}:
            self.relative_extrusion = head == b"M83"


def plan_of(metadata: dict[str, Any]) -> Plan:
    """A file's metadata (`GcodeMetadata.to_json`, completed by the analysis) as a job's plan."""

    def number(key: str) -> float | None:
        value = metadata.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            return None
        return float(value)

    # The estimate LezerPrint computed itself (metadata.computed) is not the slicer's: the
    # history compares prints with what the slicer said.
    computed = metadata.get("computed") or ()
    seconds = None if "estimatedTime" in computed else number("estimatedTime")
    material = metadata.get("filamentType")
    return Plan(
        estimated_time=None if seconds is None else round(seconds),
        material=(material.strip() or None) if isinstance(material, str) else None,
        filament_length=number("filamentLength"),
        filament_used=number("filamentWeight"),
    )


def used_filament(plan: Plan, progress: float) -> tuple[float | None, float | None]:
    """(mm, g) of filament a job used, from the slicer's totals: all of it at 100 % progress,
    the share of the file sent so far otherwise (bytes, not extrusion: an estimate, and the
    only figure there is without reading every line sent). None where the slicer gave none."""
    share = min(max(progress, 0.0), 100.0) / 100.0
    length = plan.filament_length
    grams = plan.filament_used
    return (
        None if length is None else round(length * share, 1),
        None if grams is None else round(grams * share, 2),
    )


class Jobs:
    """Starts, pauses, resumes and cancels print jobs, and keeps their records."""

    def __init__(self, config: JobsConfig, printer: Printer, store: Store, bus: Bus) -> None:
        self.config = config
        self._printer = printer
        self._store = store
        self._bus = bus
        self._active: Job | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._samples: list[TemperatureSample] = []
        self._finished: dict[str, asyncio.Event] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._starting = False
        self._last_sample = 0.0
        self._last_flush = 0.0
        # Why a paused print may not resume yet (a filament runout), or "" when it may.
        self.resume_held = ""

    async def start(self) -> None:
        await self._recover()
        self._ticker = asyncio.create_task(self._tick(), name="jobs-ticker")

    async def stop(self) -> None:
        job = self._active
        if job is not None:
            job.end(JobStatus.FAILED, "interrupted: the daemon stopped")
            self._printer.end_feed(job)
        for task in (self._ticker, *self._background):
            if task is not None:
                task.cancel()
        runner = self._runner
        if runner is not None and not runner.done():
            # The record of the job is written at once; never wait on the printer to stop.
            done, _ = await asyncio.wait({runner}, timeout=STOP_SECONDS)
            if not done:
                log.warning("the job did not finish stopping in %d s", STOP_SECONDS)
                runner.cancel()
        await asyncio.gather(
            *(t for t in (self._ticker, runner, *self._background) if t is not None),
            return_exceptions=True,
        )

    @property
    def current(self) -> Job | None:
        return self._active

    # -- what users ask for

    async def start_job(
        self,
        path: Path,
        name: str | None = None,
        user_id: str | None = None,
        file_id: str | None = None,
    ) -> str:
        """Start printing `path`; returns the new job's id. Raises UserError if it cannot."""
        if self._active is not None or self._starting:
            raise UserError("a print is already running", status=409, code="CONFLICT")
        if self._printer.state is not PrinterState.OPERATIONAL:
            raise UserError(
                f"the printer is {self._printer.state.value}, not ready to print",
                status=409,
                code="CONFLICT",
            )
        self._starting = True  # claimed before the first await: one print at a time
        try:
            try:
                size = (await asyncio.to_thread(path.stat)).st_size
            except OSError as error:
                raise UserError(
                    f"cannot read {path}: {error.strerror}", status=404, code="NOT_FOUND"
                ) from error
            job_id = str(uuid.uuid4())
            display = name or path.name
            plan = await self._plan(file_id)
            await job_rows.create(
                self._store,
                job_id,
                display,
                size,
                time.time(),
                user_id=user_id,
                file_id=file_id,
                plan=plan,
            )
            record = await job_rows.get(self._store, job_id)
            assert record is not None
            job = Job(self, record, GcodeReader(path, self._printer.kick))
            self._active = job
        finally:
            self._starting = False
        self._finished[job_id] = asyncio.Event()
        self._publish_status(job, None)
        self._runner = asyncio.create_task(self._run(job), name=f"job-{job_id}")
        return job_id

    async def pause(self, reason: str = "paused by the user") -> None:
        job = self._require(JobStatus.PRINTING, "pause")
        if job.fed_all.is_set():
            raise UserError("the print is finishing its last moves", status=409, code="CONFLICT")
        self._printer.pause_feed()
        # Before the first await: a resume arriving meanwhile must find the parking to wait for.
        job.status = JobStatus.PAUSED
        job.pause_reason = reason
        self._stop_clock(job)
        job.parking = asyncio.create_task(self._park(job), name="job-park")
        await self._move(job, JobStatus.PAUSED, ("JOB_PAUSED", reason, Severity.INFO, None))

    def hold_resume(self, reason: str) -> None:
        """Refuse resuming until `release_resume` (or an override): the printer has run out
        of filament and resuming would print air."""
        self.resume_held = reason

    def release_resume(self) -> None:
        self.resume_held = ""

    async def resume(self, override: bool = False) -> None:
        job = self._require(JobStatus.PAUSED, "resume")
        if self.resume_held and not override:
            raise UserError(
                f"cannot resume: {self.resume_held}; load filament first, or resume with"
                " override to go on regardless",
                status=409,
                code="CONFLICT",
                details={"held": self.resume_held},
            )
        self.resume_held = ""
        if job.restoring is not None:
            raise UserError("the print is already resuming", status=409, code="CONFLICT")
        job.restoring = asyncio.create_task(self._restore(job), name="job-restore")

    async def cancel(self) -> None:
        job = self._active
        if job is None or job.ending:
            raise UserError("no print to cancel", status=409, code="CONFLICT")
        job.ending = True
        self._printer.end_feed(job)
        self._printer.break_heating_wait()
        self._spawn(self._cancel(job))

    async def wait(self, job_id: str) -> JobRecord:
        """Wait until the job has finished and its record is final."""
        finished = self._finished.get(job_id)
        if finished is not None:
            await finished.wait()
        record = await job_rows.get(self._store, job_id)
        if record is None:
            raise UserError(f"no job {job_id}", status=404, code="NOT_FOUND")
        return record

    def layer_changed(self, job: Job) -> None:
        """The job's stream reached the first command of a new layer."""
        self._bus.publish(JobLayerChanged(job.id, job.reader.layer))

    def host_action(self, job: Job, action: str, argument: str) -> None:
        """The firmware asked to pause, resume or cancel (`//action:...`), or said its own
        sensor ran out of filament (`//action:out_of_filament`)."""
        if action == "out_of_filament":
            self.hold_resume("the printer's filament sensor reports no filament")
            if job.status is JobStatus.PRINTING:
                self._spawn(self._quietly(self.pause("filament runout (the printer's sensor)")))
        elif action in ("pause", "paused") and job.status is JobStatus.PRINTING:
            why = f"the printer asked to pause{': ' + argument if argument else ''}"
            if "runout" in argument.lower():  # Marlin's "paused filament_runout" (M600 on runout)
                self.hold_resume("the printer's filament sensor reports no filament")
            self._spawn(self._quietly(self.pause(why)))
        elif action in ("resume", "resumed") and job.status is JobStatus.PAUSED:
            # The firmware has dealt with its own runout (M600 done) when it says resume.
            self._spawn(self._quietly(self.resume(override=True)))
        elif action == "cancel" and not job.ending:
            self._spawn(self._quietly(self.cancel()))

    # -- the job's life

    async def _run(self, job: Job) -> None:
        try:
            await self._move(
                job,
                JobStatus.PREPARING,
                ("JOB_PREPARING", f"Preparing {job.file_name}", Severity.INFO, None),
            )
            try:
                await job.reader.open()
                if not job.ending:  # cancelled or stopped while the file was opening
                    self._printer.start_feed(job)
            except (OSError, PrinterError) as failure:
                job.end(JobStatus.FAILED, f"could not start: {failure}")
            if not job.ending:
                job.started_at = time.time()
                job.printing_since = time.monotonic()
                await self._move(
                    job,
                    JobStatus.PRINTING,
                    ("JOB_STARTED", f"Printing {job.file_name}", Severity.INFO, None),
                    started_at=job.started_at,
                )
                await self._until_fed_or_ended(job)
            status, error = await job.outcome
            await self._finish(job, status, error)
        except Exception:
            log.exception("the job runner failed")
            await self._finish(job, JobStatus.FAILED, "internal error; see the log")
        finally:
            job.reader.close()

    async def _until_fed_or_ended(self, job: Job) -> None:
        fed = asyncio.create_task(job.fed_all.wait())
        either: set[asyncio.Future[Any]] = {fed, job.outcome}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        fed.cancel()
        if job.outcome.done():
            return
        if job.reader.error is not None:
            job.end(JobStatus.FAILED, f"could not read {job.file_name}: {job.reader.error}")
            return
        # Every line is in the printer; M400 answers once the last move has finished, unless
        # the job ends otherwise first (a fault, the daemon stopping).
        job.ending = True
        last_moves = asyncio.ensure_future(self._printer.execute("M400"))
        either = {last_moves, job.outcome}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if job.outcome.done():
            last_moves.cancel()
            return
        try:
            last_moves.result()
        except PrinterError as error:
            job.end(JobStatus.FAILED, str(error))
            return
        job.end(JobStatus.COMPLETED, None)

    async def _finish(self, job: Job, status: JobStatus, error: str | None) -> None:
        self._printer.end_feed(job)
        for task in (job.parking, job.restoring):
            if task is not None and not task.done():
                task.cancel()
        self._stop_clock(job)
        actual = round(job.elapsed) if job.started_at else None
        event_type = {
            JobStatus.COMPLETED: ("JOB_COMPLETED", Severity.INFO),
            JobStatus.CANCELLED: ("JOB_CANCELLED", Severity.WARNING),
        }.get(status, ("JOB_FAILED", Severity.ERROR))
        message = error or f"{status.value.capitalize()}: {job.file_name}"
        events = [(event_type[0], message, event_type[1], None)]
        if error and "thermal runaway" in error.lower():
            events.insert(0, ("THERMAL_RUNAWAY", error, Severity.CRITICAL, None))
        progress = 100.0 if status is JobStatus.COMPLETED else job.progress
        # A job that never began printing sent no line (and a file that never opened shows
        # 100 % of its 0 bytes): it used nothing.
        length, grams = used_filament(job.plan, progress if job.started_at else 0.0)
        try:
            await self._flush_samples(job)
            await self._move(
                job,
                status,
                *events,
                progress=progress,
                bytes_done=job.reader.bytes_done,
                lines_done=job.reader.lines_done,
                completed_at=time.time(),
                actual_time=actual,
                error_message=error,
                filament_length=length,
                filament_used=grams,
            )
        except Exception:
            # A full or failing SD card must not leave the printer claimed by a dead job.
            log.exception("could not record the end of job %s", job.id)
            job.status = status
        finally:
            if self._active is job:
                self._active = None
            self._bus.publish(JobFinished(job.id, status.value, job.file_name, error, actual))
            self._finished.pop(job.id).set()
        log.info(
            "job %s (%s) %s%s", job.id, job.file_name, status.value, f": {error}" if error else ""
        )

    async def _park(self, job: Job) -> _Parked | None:
        """After a pause: wait for the moves in flight, note where we were, run the pause G-code."""
        printer = self._printer
        try:
            await printer.execute("M400")
            position = await printer.query_position()
            temperatures = printer.temperatures
            hotend = temperatures.tools[0].target if temperatures.tools else None
            bed = temperatures.bed.target if temperatures.bed else None
            parked = _Parked(
                position, hotend, bed, job.relative_moves, job.relative_extrusion, job.feedrate
            )
            await self._run_script(self.config.pause_gcode)
            return parked
        except PrinterError as error:
            log.warning("pause sequence interrupted: %s", error)
            return None

    async def _restore(self, job: Job) -> None:
        """Resume: heat back up, run the resume G-code, go back to where we were, go on."""
        printer = self._printer
        try:
            parked = await job.parking if job.parking is not None else None
            if parked is not None:
                await self._reheat(parked)
                await self._run_script(self.config.resume_gcode)
                p = parked.position
                for command in (
                    "G90",
                    f"G1 X{p.x:.3f} Y{p.y:.3f} F3000",
                    f"G1 Z{p.z:.3f} F600",
                    f"G92 E{p.e:.5f}",
                    "G91" if parked.relative_moves else "G90",
                    "M83" if parked.relative_extrusion else "M82",
                ):
                    await printer.execute(command)
                if parked.feedrate:
                    await printer.execute(f"G1 F{parked.feedrate:g}")
        except PrinterError as error:
            log.warning("resume sequence interrupted: %s", error)
            job.restoring = None
            return
        job.parking = job.restoring = None
        if job.ending or job.status is not JobStatus.PAUSED:
            return
        printer.resume_feed()
        job.printing_since = time.monotonic()
        await self._move(job, JobStatus.PRINTING, ("JOB_RESUMED", "Resumed", Severity.INFO, None))

    async def _reheat(self, parked: _Parked) -> None:
        temperatures = self._printer.temperatures
        hotend = temperatures.tools[0] if temperatures.tools else None
        bed = temperatures.bed
        commands = []
        if parked.hotend_target and hotend is not None:
            if hotend.target != parked.hotend_target:
                commands.append(f"M104 S{parked.hotend_target:g}")
            if hotend.actual < parked.hotend_target - 3:
                commands.append(f"M109 S{parked.hotend_target:g}")
        if parked.bed_target and bed is not None:
            if bed.target != parked.bed_target:
                commands.append(f"M140 S{parked.bed_target:g}")
            if bed.actual < parked.bed_target - 3:
                commands.append(f"M190 S{parked.bed_target:g}")
        for command in commands:
            await self._printer.execute(command)

    async def _cancel(self, job: Job) -> None:
        # A resume in progress stops where it is (its queued moves are dropped); a parking in
        # progress finishes, so the head is away from the print before the cancel G-code.
        if job.restoring is not None and not job.restoring.done():
            job.restoring.cancel()
        for task in (job.restoring, job.parking):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            await self._run_script(self.config.cancel_gcode)
        except PrinterError as error:
            log.warning("cancel sequence interrupted: %s", error)
        job.end(JobStatus.CANCELLED, None)

    async def _run_script(self, script: str) -> None:
        for line in script.splitlines():
            if clean_command(line.encode()):
                await self._printer.execute(line)

    # -- records

    async def _move(
        self,
        job: Job,
        status: JobStatus,
        *events: tuple[str, str, Severity, dict[str, object] | None],
        **changes: object,
    ) -> None:
        job.status = status
        await job_rows.record(self._store, job.id, time.time(), events, status=status, **changes)
        error = changes.get("error_message")
        self._publish_status(job, error if isinstance(error, str) else None)

    def _publish_status(self, job: Job, error: str | None) -> None:
        self._bus.publish(JobStatusChanged(job.id, job.status.value, job.file_name, error))

    async def _plan(self, file_id: str | None) -> Plan:
        """The slicer's figures for a library file, copied onto its job when it starts: the
        history keeps them when the file is deleted. A file still being analysed may have no
        estimate yet; what is missing stays None."""
        if file_id is None:
            return NO_PLAN
        record = await file_rows.get(self._store, file_id)
        return NO_PLAN if record is None or not record.metadata else plan_of(record.metadata)

    def _stop_clock(self, job: Job) -> None:
        if job.printing_since is not None:
            job.printed_seconds += time.monotonic() - job.printing_since
            job.printing_since = None

    def _require(self, status: JobStatus, action: str) -> Job:
        job = self._active
        if job is None or job.ending or job.status is not status:
            now = "no print" if job is None else f"the print is {job.status.value.lower()}"
            raise UserError(f"cannot {action}: {now}", status=409, code="CONFLICT")
        return job

    async def _recover(self) -> None:
        """Whatever was printing when the daemon last stopped did not finish."""
        for record in await job_rows.unfinished(self._store):
            reason = "interrupted: the daemon stopped or the power failed while printing"
            # Its progress is the last one written (every flush interval): close enough.
            sent = record.progress if record.started_at else 0.0
            length, grams = used_filament(record.plan, sent)
            await job_rows.record(
                self._store,
                record.id,
                time.time(),
                [
                    ("POWER_LOSS", reason, Severity.ERROR, None),
                    ("JOB_FAILED", reason, Severity.ERROR, None),
                ],
                status=JobStatus.FAILED,
                error_message=reason,
                completed_at=time.time(),
                filament_length=length,
                filament_used=grams,
            )
            log.warning("job %s (%s) was interrupted", record.id, record.file_name)

    # -- every second: progress; every few: a temperature sample; now and then: a write

    async def _tick(self) -> None:
        while True:
            try:
                await self._tick_once()
            except Exception:
                log.exception("recording the job's progress failed; trying again")

    async def _tick_once(self) -> None:
        await asyncio.sleep(PROGRESS_SECONDS)
        job = self._active
        if job is None or job.ending or job.status not in (JobStatus.PRINTING, JobStatus.PAUSED):
            return
        now = time.monotonic()
        self._bus.publish(
            JobProgressed(
                job.id,
                job.progress,
                job.reader.bytes_done,
                job.reader.size,
                job.reader.lines_done,
                round(job.elapsed, 1),
                job.reader.layer,
            )
        )
        if now - self._last_sample >= self.config.temperature_log_interval:
            self._last_sample = now
            self._samples.append(self._sample())
        if now - self._last_flush >= self.config.temperature_log_flush_interval:
            self._last_flush = now
            await self._flush_samples(job)
            if self._active is job and not job.ending:  # it may have ended meanwhile
                await job_rows.record(
                    self._store,
                    job.id,
                    time.time(),
                    progress=job.progress,
                    bytes_done=job.reader.bytes_done,
                    lines_done=job.reader.lines_done,
                )

    def _sample(self) -> TemperatureSample:
        t = self._printer.temperatures
        hotend = t.tools[0] if t.tools else None
        return TemperatureSample(
            hotend.actual if hotend else None,
            hotend.target if hotend else None,
            t.bed.actual if t.bed else None,
            t.bed.target if t.bed else None,
            t.chamber.actual if t.chamber else None,
            time.time(),
        )

    async def _flush_samples(self, job: Job) -> None:
        samples, self._samples = self._samples, []
        if samples:
            await job_rows.add_temperatures(self._store, job.id, samples)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in the background, holding on to it until it is done."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _quietly(operation: Awaitable[None]) -> None:
        try:
            await operation
        except (UserError, PrinterError) as error:
            log.info("ignored the printer's request: %s", error)
