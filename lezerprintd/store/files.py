"""Rows of `files`: what the file library stores (the library itself owns the files on disk)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from lezerprintd.store import Row, Store
from lezerprintd.store.jobs import JobRecord


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: str
    user_id: str | None  # None: its uploader's account is gone, or it came from elsewhere
    original_name: str
    file_name: str  # the stored, generated name under <data dir>/files/
    file_type: str
    file_size: int
    print_count: int
    folder: str
    sha256: str | None
    created_at: float
    updated_at: float
    metadata: dict[str, Any] | None = None  # the slicer's figures, for G-code
    thumbnail: str | None = None  # its picture's name under <data dir>/thumbnails/
    analysis_status: str | None = None  # PENDING, DONE, FAILED; None: nothing to analyse
    analysis_error: str | None = None

    @classmethod
    def from_row(cls, row: Row) -> FileRecord:
        return cls(
            row["id"],
            row["user_id"],
            row["original_name"],
            row["file_name"],
            row["file_type"],
            row["file_size"],
            row["print_count"],
            row["folder"],
            row["sha256"],
            row["created_at"],
            row["updated_at"],
            json.loads(row["metadata"]) if row["metadata"] else None,
            row["thumbnail"],
            row["analysis_status"],
            row["analysis_error"],
        )


@dataclass(frozen=True, slots=True)
class Visibility:
    """Whose files a caller sees: everyone's (`owner` None), or one account's and the
    files nobody owns."""

    owner: str | None

    def clause(self) -> tuple[str, list[object]]:
        if self.owner is None:
            return "1", []
        return "(user_id = ? OR user_id IS NULL)", [self.owner]


EVERYONE: Final = Visibility(None)

SORTS: Final = {
    "name": "original_name COLLATE NOCASE",
    "date": "created_at",
    "size": "file_size",
    "prints": "print_count",
}


async def get(store: Store, file_id: str, seen_by: Visibility = EVERYONE) -> FileRecord | None:
    where, params = seen_by.clause()
    row = await store.fetchone(f"SELECT * FROM files WHERE id = ? AND {where}", [file_id, *params])
    return None if row is None else FileRecord.from_row(row)


async def by_hash(store: Store, sha256: str, seen_by: Visibility) -> FileRecord | None:
    where, params = seen_by.clause()
    row = await store.fetchone(
        f"SELECT * FROM files WHERE sha256 = ? AND {where} ORDER BY created_at LIMIT 1",
        [sha256, *params],
    )
    return None if row is None else FileRecord.from_row(row)


async def add(store: Store, record: FileRecord) -> None:
    await store.execute(
        "INSERT INTO files (id, user_id, original_name, file_name, file_type, file_size,"
        " print_count, folder, sha256, created_at, updated_at, metadata, thumbnail,"
        " analysis_status) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?)",
        (
            record.id,
            record.user_id,
            record.original_name,
            record.file_name,
            record.file_type,
            record.file_size,
            record.folder,
            record.sha256,
            record.created_at,
            record.updated_at,
            None if record.metadata is None else json.dumps(record.metadata),
            record.thumbnail,
            record.analysis_status,
        ),
    )


async def page(
    store: Store,
    seen_by: Visibility,
    *,
    page: int,
    limit: int,
    file_type: str | None = None,
    folder: str | None = None,
    search: str | None = None,
    sort: str = "date",
    descending: bool = True,
) -> tuple[list[FileRecord], int]:
    """One page of the files `seen_by` sees, filtered and sorted, and the total count."""
    where, params = seen_by.clause()
    conditions, values = [where], list(params)
    if file_type is not None:
        conditions.append("file_type = ?")
        values.append(file_type)
    if folder is not None:
        conditions.append("folder = ?")
        values.append(folder)
    if search:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append("original_name LIKE ? ESCAPE '\\'")
        values.append(f"%{escaped}%")
    clause = " AND ".join(conditions)
    order = f"{SORTS[sort]} {'DESC' if descending else 'ASC'}, id"
    total_row = await store.fetchone(f"SELECT COUNT(*) FROM files WHERE {clause}", values)
    rows = await store.fetchall(
        f"SELECT * FROM files WHERE {clause} ORDER BY {order} LIMIT ? OFFSET ?",
        [*values, limit, (page - 1) * limit],
    )
    return [FileRecord.from_row(row) for row in rows], int(total_row[0]) if total_row else 0


async def folders(store: Store, seen_by: Visibility) -> list[str]:
    """The folders that hold files `seen_by` sees, sorted ("" is the top)."""
    where, params = seen_by.clause()
    rows = await store.fetchall(
        f"SELECT DISTINCT folder FROM files WHERE {where} ORDER BY folder COLLATE NOCASE", params
    )
    return [str(row[0]) for row in rows]


async def rename(store: Store, file_id: str, name: str, folder: str, now: float) -> None:
    await store.execute(
        "UPDATE files SET original_name = ?, folder = ?, updated_at = ? WHERE id = ?",
        (name, folder, now, file_id),
    )


async def delete(store: Store, file_id: str) -> int:
    return await store.execute("DELETE FROM files WHERE id = ?", (file_id,))


async def count_print(store: Store, file_id: str, now: float) -> None:
    await store.execute(
        "UPDATE files SET print_count = print_count + 1, updated_at = ? WHERE id = ?",
        (now, file_id),
    )


async def count_jobs(store: Store, file_id: str) -> int:
    row = await store.fetchone("SELECT COUNT(*) FROM print_jobs WHERE file_id = ?", (file_id,))
    return int(row[0]) if row else 0


async def jobs_of(store: Store, file_id: str, limit: int) -> list[JobRecord]:
    """The file's latest jobs, newest first."""
    rows = await store.fetchall(
        "SELECT * FROM print_jobs WHERE file_id = ? ORDER BY created_at DESC LIMIT ?",
        (file_id, limit),
    )
    return [JobRecord.from_row(row) for row in rows]


async def analysed(
    store: Store,
    file_id: str,
    *,
    metadata: dict[str, Any] | None,
    thumbnail: str | None,
    error: str | None,
) -> bool:
    """Record a model's analysis: its figures and picture, or why there are none. False when
    the file has been deleted meanwhile."""
    return (
        await store.execute(
            "UPDATE files SET metadata = ?, thumbnail = ?, analysis_status = ?, analysis_error = ?"
            " WHERE id = ?",
            (
                None if metadata is None else json.dumps(metadata),
                thumbnail,
                "FAILED" if error else "DONE",
                error,
                file_id,
            ),
        )
        > 0
    )


async def pending_analysis(store: Store) -> list[FileRecord]:
    rows = await store.fetchall(
        "SELECT * FROM files WHERE analysis_status = 'PENDING' ORDER BY created_at"
    )
    return [FileRecord.from_row(row) for row in rows]
