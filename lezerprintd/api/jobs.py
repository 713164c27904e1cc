"""Print jobs: the history, the current one, starting one from a stored file, and control."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from lezerprintd.api.envelope import ok, page_meta
from lezerprintd.api.spec import LIMIT, PAGE, Answer, Endpoint, Field, Kind, body, query
from lezerprintd.auth.middleware import principal_of
from lezerprintd.auth.permissions import Principal, Role
from lezerprintd.errors import UserError
from lezerprintd.printer.jobs import Job
from lezerprintd.store import files as file_rows
from lezerprintd.store import jobs as job_rows
from lezerprintd.store.files import Visibility
from lezerprintd.store.jobs import JobRecord, JobStatus

if TYPE_CHECKING:
    from lezerprintd.app import Appliance

_ID: Final = Field("job_id", Kind.STRING, "The job's id", required=True, max_length=64)


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def visible_to(principal: Principal) -> Visibility:
    """Each account sees its own files (and those nobody owns); an admin sees them all."""
    return file_rows.EVERYONE if principal.role is Role.ADMIN else Visibility(principal.user_id)


async def start_print(appliance: Appliance, file_id: str, principal: Principal) -> JobRecord:
    """Start printing a library file `principal` may see; the new job's record."""
    record = await file_rows.get(appliance.store, file_id, visible_to(principal))
    if record is None:
        raise UserError("no such file", status=404, code="NOT_FOUND")
    if record.file_type != "GCODE":
        raise UserError(
            f"{record.original_name} is a {record.file_type} model, not G-code; slice it first",
            status=409,
            code="CONFLICT",
        )
    job_id = await appliance.jobs.start_job(
        appliance.library.path_of(record),
        name=record.original_name,
        user_id=principal.user_id,
        file_id=record.id,
    )
    await file_rows.count_print(appliance.store, record.id, time.time())
    started = await job_rows.get(appliance.store, job_id)
    assert started is not None
    return started


def record_view(record: JobRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "userId": record.user_id,
        "fileId": record.file_id,
        "fileName": record.file_name,
        "status": record.status.value,
        "progress": record.progress,
        "bytesTotal": record.bytes_total,
        "bytesDone": record.bytes_done,
        "linesDone": record.lines_done,
        "startedAt": iso(record.started_at),
        "completedAt": iso(record.completed_at),
        "actualTime": record.actual_time,
        "estimatedTime": record.plan.estimated_time,
        "material": record.plan.material,
        "filamentUsed": record.filament_used,  # g; null when the slicer gave no weight
        "filamentLength": record.filament_length,  # mm
        "errorMessage": record.error_message,
        "createdAt": iso(record.created_at),
    }


def live_view(job: Job) -> dict[str, Any]:
    """The running job as it is this moment (its row is written only now and then)."""
    return {
        "id": job.id,
        "fileName": job.file_name,
        "status": job.status.value,
        "progress": job.progress,
        "printTime": round(job.elapsed, 1),
        "bytesDone": job.reader.bytes_done,
        "bytesTotal": job.reader.size,
        "linesDone": job.reader.lines_done,
        "layer": job.reader.layer,
        "pauseReason": job.pause_reason or None if job.status is JobStatus.PAUSED else None,
        "startedAt": iso(job.started_at),
    }


JOB_SCHEMA: Final = {
    "type": "object",
    "required": ["id", "fileName", "status", "progress"],
    "properties": {
        "id": {"type": "string"},
        "fileName": {"type": "string"},
        "status": {"type": "string", "enum": [status.value for status in JobStatus]},
        "progress": {"type": "number", "minimum": 0, "maximum": 100},
    },
}


RESUME_FIELDS: Final = (
    Field(
        "override",
        Kind.BOOLEAN,
        "Resume although a filament runout holds the print",
        default=False,
    ),
)


def endpoints(appliance: Appliance) -> list[Endpoint]:
    list_fields = (
        PAGE,
        LIMIT,
        Field(
            "status",
            Kind.STRING,
            "Only jobs in this status",
            choices=tuple(status.value for status in JobStatus),
        ),
    )
    start_fields = (
        Field(
            "fileId",
            Kind.STRING,
            "The stored file to print",
            required=True,
            min_length=1,
            max_length=64,
        ),
    )

    async def view(record: JobRecord) -> dict[str, Any]:
        current = appliance.jobs.current
        out = record_view(record)
        if current is not None and current.id == record.id:
            out.update(live_view(current))
        return out

    async def handle_list(request: web.Request) -> web.Response:
        values = query(request, list_fields)
        status = JobStatus(values["status"]) if values["status"] else None
        records, total = await job_rows.page(
            appliance.store, values["page"], values["limit"], status
        )
        return ok(
            {"jobs": [await view(record) for record in records]},
            meta=page_meta(values["page"], values["limit"], total),
        )

    async def handle_current(request: web.Request) -> web.Response:
        job = appliance.jobs.current
        return ok({"job": None if job is None else live_view(job)})

    async def handle_start(request: web.Request) -> web.Response:
        values = await body(request, start_fields)
        started = await start_print(appliance, values["fileId"], principal_of(request))
        return ok({"job": await view(started)}, status=201)

    async def one(request: web.Request) -> JobRecord:
        job_id = request.match_info["job_id"]
        record = await job_rows.get(appliance.store, job_id) if len(job_id) <= 64 else None
        if record is None:
            raise UserError("no such job", status=404, code="NOT_FOUND")
        return record

    async def handle_get(request: web.Request) -> web.Response:
        record = await one(request)
        events = await job_rows.events(appliance.store, record.id)
        temperatures = await job_rows.temperatures(appliance.store, record.id)
        return ok(
            {
                "job": await view(record),
                "events": [
                    {
                        "eventType": e.event_type,
                        "message": e.message,
                        "severity": e.severity,
                        "metadata": e.metadata,
                        "timestamp": iso(e.created_at),
                    }
                    for e in events
                ],
                "temperatures": [
                    {
                        "hotendTemp": t.hotend_temp,
                        "hotendTarget": t.hotend_target,
                        "bedTemp": t.bed_temp,
                        "bedTarget": t.bed_target,
                        "chamberTemp": t.chamber_temp,
                        "timestamp": iso(t.recorded_at),
                    }
                    for t in temperatures
                ],
            }
        )

    async def current_one(request: web.Request) -> JobRecord:
        record = await one(request)
        current = appliance.jobs.current
        if current is None or current.id != record.id:
            raise UserError(
                f"the job is {record.status.value.lower()}, not running",
                status=409,
                code="CONFLICT",
            )
        return record

    async def handle_pause(request: web.Request) -> web.Response:
        record = await current_one(request)
        await appliance.jobs.pause(f"paused by {principal_of(request).username}")
        return ok({"job": await view(record)})

    async def handle_resume(request: web.Request) -> web.Response:
        values = await body(request, RESUME_FIELDS)
        record = await current_one(request)
        await appliance.jobs.resume(override=values["override"])
        return ok({"job": await view(record)})

    async def handle_cancel(request: web.Request) -> web.Response:
        record = await current_one(request)
        await appliance.jobs.cancel()
        return ok({"job": await view(record)})

    job = {"type": "object", "required": ["job"], "properties": {"job": JOB_SCHEMA}}
    return [
        Endpoint(
            "GET",
            "/api/jobs",
            handle_list,
            "Jobs, newest first",
            "jobs",
            query=list_fields,
            answers=(
                Answer(
                    200,
                    "One page of jobs",
                    {
                        "type": "object",
                        "required": ["jobs"],
                        "properties": {"jobs": {"type": "array", "items": JOB_SCHEMA}},
                    },
                ),
            ),
        ),
        Endpoint(
            "GET",
            "/api/jobs/current",
            handle_current,
            "The running job, if any",
            "jobs",
            answers=(
                Answer(
                    200,
                    "The job or null",
                    {
                        "type": "object",
                        "required": ["job"],
                        "properties": {"job": {"oneOf": [JOB_SCHEMA, {"type": "null"}]}},
                    },
                ),
            ),
        ),
        Endpoint(
            "POST",
            "/api/jobs/start",
            handle_start,
            "Print a stored G-code file",
            "jobs",
            body=start_fields,
            answers=(Answer(201, "Started", job),),
        ),
        Endpoint(
            "GET",
            "/api/jobs/{job_id}",
            handle_get,
            "One job with its events and temperature log",
            "jobs",
            path_fields=(_ID,),
            answers=(Answer(200, "The job"),),
        ),
        Endpoint(
            "POST",
            "/api/jobs/{job_id}/pause",
            handle_pause,
            "Pause this job",
            "jobs",
            path_fields=(_ID,),
            answers=(Answer(200, "Pausing", job),),
        ),
        Endpoint(
            "POST",
            "/api/jobs/{job_id}/resume",
            handle_resume,
            "Resume this job",
            "jobs",
            body=RESUME_FIELDS,
            path_fields=(_ID,),
            answers=(Answer(200, "Resuming", job),),
        ),
        Endpoint(
            "POST",
            "/api/jobs/{job_id}/cancel",
            handle_cancel,
            "Cancel this job",
            "jobs",
            path_fields=(_ID,),
            answers=(Answer(200, "Cancelling", job),),
        ),
    ]
