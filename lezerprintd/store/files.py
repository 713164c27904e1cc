"""Rows of `files`: what the file library stores (the library itself owns uploads)."""

from __future__ import annotations

from dataclasses import dataclass

from lezerprintd.store import Row, Store


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: str
    user_id: str | None
    original_name: str
    file_name: str  # the stored, generated name under <data dir>/files/
    file_type: str
    file_size: int
    print_count: int

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
        )


async def get(store: Store, file_id: str) -> FileRecord | None:
    row = await store.fetchone("SELECT * FROM files WHERE id = ?", (file_id,))
    return None if row is None else FileRecord.from_row(row)


async def count_print(store: Store, file_id: str, now: float) -> None:
    await store.execute(
        "UPDATE files SET print_count = print_count + 1, updated_at = ? WHERE id = ?",
        (now, file_id),
    )
