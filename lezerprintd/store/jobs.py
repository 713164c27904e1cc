"""Rows of `print_jobs`, `print_events` and `temperature_logs`."""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from lezerprintd.store import Row, Store


class JobStatus(enum.Enum):
    QUEUED = "QUEUED"
    PREPARING = "PREPARING"
    PRINTING = "PRINTING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


UNFINISHED: Final = tuple(status.value for status in JobStatus if not status.finished)


class Severity(enum.Enum):
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


@dataclass(frozen=True, slots=True)
class Plan:
    """What the slicer said printing the whole file takes; None where it did not say."""

    estimated_time: int | None = None  # s
    material: str | None = None  # the filament type, as the slicer names it ("PLA")
    filament_length: float | None = None  # mm
    filament_used: float | None = None  # g


NO_PLAN: Final = Plan()


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: str
    user_id: str | None
    file_id: str | None
    file_name: str
    status: JobStatus
    progress: float
    bytes_total: int
    bytes_done: int
    lines_done: int
    started_at: float | None
    completed_at: float | None
    actual_time: int | None
    error_message: str | None
    created_at: float
    updated_at: float
    plan: Plan = NO_PLAN
    filament_length: float | None = None  # mm used; pro-rated when it ended early
    filament_used: float | None = None  # g used; likewise

    @classmethod
    def from_row(cls, row: Row) -> JobRecord:
        return cls(
            id=row["id"],
            user_id=row["user_id"],
            file_id=row["file_id"],
            file_name=row["file_name"],
            status=JobStatus(row["status"]),
            progress=row["progress"],
            bytes_total=row["bytes_total"],
            bytes_done=row["bytes_done"],
            lines_done=row["lines_done"],
            started_at=row["started_at"],
            completed_at=row["completed_at"],
            actual_time=row["actual_time"],
            error_message=row["error_message"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            plan=Plan(
                row["estimated_time"],
                row["material"],
                row["estimated_filament_length"],
                row["estimated_filament_used"],
            ),
            filament_length=row["filament_length"],
            filament_used=row["filament_used"],
        )


@dataclass(frozen=True, slots=True)
class EventRecord:
    event_type: str
    message: str
    severity: str
    metadata: dict[str, Any] | None
    created_at: float


@dataclass(frozen=True, slots=True)
class TemperatureSample:
    hotend_temp: float | None
    hotend_target: float | None
    bed_temp: float | None
    bed_target: float | None
    chamber_temp: float | None
    recorded_at: float


# The columns a job's progress and outcome may change; anything else is fixed at creation.
_UPDATABLE: Final = frozenset(
    {
        "status",
        "progress",
        "bytes_done",
        "lines_done",
        "started_at",
        "completed_at",
        "actual_time",
        "error_message",
        "filament_length",
        "filament_used",
    }
)


async def create(
    store: Store,
    job_id: str,
    file_name: str,
    bytes_total: int,
    now: float,
    *,
    user_id: str | None = None,
    file_id: str | None = None,
    plan: Plan = NO_PLAN,
) -> None:
    async with store.transaction() as tx:
        await tx.execute(
            "INSERT INTO print_jobs (id, user_id, file_id, file_name, status, bytes_total,"
            " estimated_time, material, estimated_filament_length, estimated_filament_used,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, 'QUEUED', ?, ?, ?, ?, ?, ?, ?)",
            (
                job_id,
                user_id,
                file_id,
                file_name,
                bytes_total,
                plan.estimated_time,
                plan.material,
                plan.filament_length,
                plan.filament_used,
                now,
                now,
            ),
        )
        await tx.execute(
            _INSERT_EVENT, (job_id, "JOB_QUEUED", f"Queued {file_name}", "INFO", None, now)
        )


_INSERT_EVENT: Final = (
    "INSERT INTO print_events (job_id, event_type, message, severity, metadata, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


async def record(
    store: Store,
    job_id: str,
    now: float,
    events: Sequence[tuple[str, str, Severity, dict[str, Any] | None]] = (),
    **changes: Any,
) -> None:
    """Change a job's columns and add its events, in one transaction."""
    unknown = set(changes) - _UPDATABLE
    if unknown:
        raise ValueError(f"not an updatable job column: {sorted(unknown)}")
    if isinstance(changes.get("status"), JobStatus):
        changes["status"] = changes["status"].value
    async with store.transaction() as tx:
        if changes:
            assignments = ", ".join(f"{column} = ?" for column in changes)
            await tx.execute(
                f"UPDATE print_jobs SET {assignments}, updated_at = ? WHERE id = ?",
                (*changes.values(), now, job_id),
            )
        for event_type, message, severity, metadata in events:
            encoded = None if metadata is None else json.dumps(metadata)
            await tx.execute(
                _INSERT_EVENT, (job_id, event_type, message, severity.value, encoded, now)
            )


async def add_temperatures(store: Store, job_id: str, samples: Iterable[TemperatureSample]) -> None:
    await store.executemany(
        "INSERT INTO temperature_logs (job_id, hotend_temp, hotend_target, bed_temp,"
        " bed_target, chamber_temp, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            (
                job_id,
                s.hotend_temp,
                s.hotend_target,
                s.bed_temp,
                s.bed_target,
                s.chamber_temp,
                s.recorded_at,
            )
            for s in samples
        ),
    )


async def get(store: Store, job_id: str) -> JobRecord | None:
    row = await store.fetchone("SELECT * FROM print_jobs WHERE id = ?", (job_id,))
    return None if row is None else JobRecord.from_row(row)


async def unfinished(store: Store) -> list[JobRecord]:
    marks = ", ".join("?" for _ in UNFINISHED)
    rows = await store.fetchall(
        f"SELECT * FROM print_jobs WHERE status IN ({marks}) ORDER BY created_at", UNFINISHED
    )
    return [JobRecord.from_row(row) for row in rows]


async def events(store: Store, job_id: str) -> list[EventRecord]:
    rows = await store.fetchall(
        "SELECT event_type, message, severity, metadata, created_at FROM print_events"
        " WHERE job_id = ? ORDER BY id",
        (job_id,),
    )
    return [
        EventRecord(
            row["event_type"],
            row["message"],
            row["severity"],
            None if row["metadata"] is None else json.loads(row["metadata"]),
            row["created_at"],
        )
        for row in rows
    ]


async def temperatures(store: Store, job_id: str) -> list[TemperatureSample]:
    rows = await store.fetchall(
        "SELECT hotend_temp, hotend_target, bed_temp, bed_target, chamber_temp, recorded_at"
        " FROM temperature_logs WHERE job_id = ? ORDER BY recorded_at",
        (job_id,),
    )
    return [TemperatureSample(*row) for row in rows]


async def page(
    store: Store, page: int, limit: int, status: JobStatus | None = None
) -> tuple[list[JobRecord], int]:
    """One page of jobs, newest first, and the total count."""
    where, params = ("WHERE status = ?", [status.value]) if status else ("", [])
    total_row = await store.fetchone(f"SELECT COUNT(*) FROM print_jobs {where}", params)
    rows = await store.fetchall(
        f"SELECT * FROM print_jobs {where} ORDER BY created_at DESC LIMIT ? OFFSET ?",
        [*params, limit, (page - 1) * limit],
    )
    return [JobRecord.from_row(row) for row in rows], int(total_row[0]) if total_row else 0
