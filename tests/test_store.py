"""The database on a real SQLite file: WAL, migrations that apply once and atomically."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from lezerprintd.store import Store, StoreError, _migrations, settings
from lezerprintd.store import jobs as job_rows
from lezerprintd.store.jobs import JobStatus, Severity


async def test_a_new_database_is_in_wal_mode_and_fully_migrated(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "state" / "lezerprint.db")
    try:
        journal = await store.fetchone("PRAGMA journal_mode")
        foreign = await store.fetchone("PRAGMA foreign_keys")
        tables = {r[0] for r in await store.fetchall("SELECT name FROM sqlite_master")}
        assert journal is not None
        assert journal[0] == "wal"
        assert foreign is not None
        assert foreign[0] == 1
        assert await store.user_version() == len(_migrations())
        assert {
            "print_jobs",
            "print_events",
            "temperature_logs",
            "settings",
            "users",
            "files",
        } <= tables
    finally:
        await store.close()


async def test_reopening_keeps_the_data_and_migrates_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "lezerprint.db"
    store = await Store.open(path)
    await settings.put(store, "printer.last_connection", {"path": "/dev/ttyACM0", "baud": 250000})
    await store.close()
    store = await Store.open(path)
    try:
        assert await settings.get(store, "printer.last_connection") == {
            "path": "/dev/ttyACM0",
            "baud": 250000,
        }
        assert await store.user_version() == len(_migrations())
    finally:
        await store.close()


async def test_a_failing_migration_leaves_nothing_half_done(tmp_path: Path) -> None:
    path = tmp_path / "lezerprint.db"
    good = [(1, "0001_first.sql", "CREATE TABLE kept (id INTEGER PRIMARY KEY);")]
    bad = [
        *good,
        (2, "0002_broken.sql", "CREATE TABLE half (id INTEGER);\nINSERT INTO missing VALUES (1);"),
    ]
    store = await Store.open(path, migrations=good)
    await store.close()
    with pytest.raises(StoreError, match=r"migration 0002_broken\.sql failed"):
        await Store.open(path, migrations=bad)
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 1
        names = {r[0] for r in raw.execute("SELECT name FROM sqlite_master")}
    assert "kept" in names
    assert "half" not in names


async def test_a_file_that_is_not_a_database_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "lezerprint.db"
    path.write_bytes(b"this is not sqlite, just text that someone copied here\n" * 100)
    with pytest.raises(StoreError, match=r"lezerprint\.db"):
        await Store.open(path)
    assert path.read_bytes().startswith(b"this is not sqlite")


async def test_a_transaction_commits_together_or_not_at_all(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "lezerprint.db")
    try:
        await job_rows.create(store, "job-1", "a.gcode", 10, time.time())

        async def start_then_fail() -> None:
            async with store.transaction() as tx:
                await tx.execute("UPDATE print_jobs SET status = 'PRINTING' WHERE id = 'job-1'")
                raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            await start_then_fail()
        record = await job_rows.get(store, "job-1")
        assert record is not None
        assert record.status is JobStatus.QUEUED
    finally:
        await store.close()


async def test_concurrent_writers_never_interleave_inside_a_transaction(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "lezerprint.db")
    try:
        await job_rows.create(store, "job-1", "a.gcode", 10, time.time())

        async def bump(index: int) -> None:
            await job_rows.record(
                store,
                "job-1",
                time.time(),
                [("CUSTOM", f"event {index}", Severity.INFO, {"index": index})],
                lines_done=index,
            )

        await asyncio.gather(*(bump(i) for i in range(50)))
        events = await job_rows.events(store, "job-1")
        assert len(events) == 51  # JOB_QUEUED and the 50
        assert sorted(e.metadata["index"] for e in events[1:] if e.metadata) == list(range(50))
    finally:
        await store.close()


async def test_job_status_and_event_types_are_checked_by_the_schema(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "lezerprint.db")
    try:
        await job_rows.create(store, "job-1", "a.gcode", 10, time.time())
        with pytest.raises(sqlite3.IntegrityError):
            await store.execute("UPDATE print_jobs SET status = 'EXPLODED' WHERE id = 'job-1'")
        with pytest.raises(ValueError, match="not an updatable job column"):
            await job_rows.record(store, "job-1", time.time(), file_name="other.gcode")
    finally:
        await store.close()


async def test_a_writer_cancelled_mid_transaction_leaves_the_database_usable(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "lezerprint.db")
    try:
        await job_rows.create(store, "job-1", "a.gcode", 10, time.time())
        for spins in range(6):
            writer = asyncio.create_task(
                job_rows.record(store, "job-1", time.time(), progress=float(spins))
            )
            for _ in range(spins):
                await asyncio.sleep(0)
            writer.cancel()  # a job ending while its progress was being written
            await asyncio.gather(writer, return_exceptions=True)
            await job_rows.record(store, "job-1", time.time(), progress=50.0)
        record = await job_rows.get(store, "job-1")
        assert record is not None
        assert record.progress == 50.0
    finally:
        await store.close()
