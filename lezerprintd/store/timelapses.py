"""The timelapses table: one finished timelapse per job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lezerprintd.store import Store


@dataclass(frozen=True, slots=True)
class TimelapseRecord:
    id: str
    job_id: str
    file_name: str  # under <data dir>/timelapse/
    format: str  # "mp4" or "zip"
    frame_count: int
    duration: float  # seconds of video (at the assembly frame rate)
    file_size: int
    created_at: float

    @classmethod
    def from_row(cls, row: Any) -> TimelapseRecord:
        return cls(**{name: row[name] for name in cls.__slots__})


async def add(store: Store, record: TimelapseRecord) -> None:
    await store.execute(
        "INSERT OR REPLACE INTO timelapses (id, job_id, file_name, format, frame_count, duration,"
        " file_size, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (record.id, record.job_id, record.file_name, record.format, record.frame_count,
         record.duration, record.file_size, record.created_at),
    )  # fmt: skip


async def of_job(store: Store, job_id: str) -> TimelapseRecord | None:
    row = await store.fetchone("SELECT * FROM timelapses WHERE job_id = ?", (job_id,))
    return None if row is None else TimelapseRecord.from_row(row)


async def page(store: Store, page: int, limit: int) -> tuple[list[TimelapseRecord], int]:
    rows = await store.fetchall(
        "SELECT * FROM timelapses ORDER BY created_at DESC LIMIT ? OFFSET ?",
        (limit, (page - 1) * limit),
    )
    total = await store.fetchone("SELECT COUNT(*) AS n FROM timelapses")
    return [TimelapseRecord.from_row(row) for row in rows], int(total["n"] if total else 0)


async def oldest_first(store: Store) -> list[TimelapseRecord]:
    rows = await store.fetchall("SELECT * FROM timelapses ORDER BY created_at")
    return [TimelapseRecord.from_row(row) for row in rows]


async def delete(store: Store, timelapse_id: str) -> None:
    await store.execute("DELETE FROM timelapses WHERE id = ?", (timelapse_id,))
