"""The one SQLite database: connection, WAL mode and numbered migrations.

Rule: `Store` owns the only connection and every statement goes through it, one at a time,
so a transaction is never interleaved with another coroutine's statements. Business rules
live in the rooms; the query modules beside this file only read and write rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Final

import aiosqlite

from lezerprintd.errors import LezerError

Row = sqlite3.Row
Params = Sequence[Any] | dict[str, Any]

MIGRATIONS_PACKAGE: Final = "lezerprintd.store.migrations"


class StoreError(LezerError):
    """The database cannot be opened or migrated."""


class Transaction:
    """Statements inside `Store.transaction()`: all of them commit, or none."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        cursor = await self._connection.execute(sql, params)
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        await self._connection.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        cursor = await self._connection.execute(sql, params)
        row: Row | None = await cursor.fetchone()
        return row

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        cursor = await self._connection.execute(sql, params)
        return list(await cursor.fetchall())


class Store:
    """The appliance's database. Open it with `await Store.open(path)`."""

    def __init__(self, connection: aiosqlite.Connection, path: str) -> None:
        self._connection = connection
        self._lock = asyncio.Lock()
        self.path = path

    @classmethod
    async def open(
        cls, path: Path | str, migrations: list[tuple[int, str, str]] | None = None
    ) -> Store:
        """Open (creating if needed) and migrate the database; `":memory:"` for a scratch one.

        `migrations` replaces the package's numbered SQL files (tests use it).
        """
        target = str(path)
        if target != ":memory:":
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = await aiosqlite.connect(target, isolation_level=None)
        except sqlite3.Error as error:
            raise StoreError(f"cannot open the database {target}: {error}") from error
        connection.row_factory = sqlite3.Row
        store = cls(connection, target)
        try:
            await store._configure()
            await store._migrate(_migrations() if migrations is None else migrations)
        except BaseException:
            await connection.close()
            raise
        return store

    async def close(self) -> None:
        async with self._lock:
            await self._connection.close()

    async def _configure(self) -> None:
        # WAL: readers never block the writer and a power cut never corrupts the file.
        # synchronous=FULL: a committed transaction survives a power cut too; the appliance
        # commits rarely (job transitions, batched temperature samples), so the SD card
        # pays little for it.
        try:
            for pragma in (
                "PRAGMA journal_mode = WAL",
                "PRAGMA synchronous = FULL",
                "PRAGMA foreign_keys = ON",
                "PRAGMA busy_timeout = 5000",
            ):
                await self._connection.execute(pragma)
        except sqlite3.Error as error:
            raise StoreError(f"cannot configure the database {self.path}: {error}") from error

    async def _migrate(self, migrations: list[tuple[int, str, str]]) -> None:
        """Apply every numbered migration newer than `PRAGMA user_version`, each atomically."""
        current = await self.user_version()
        for number, name, sql in migrations:
            if number <= current:
                continue
            script = f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {number};\nCOMMIT;"
            try:
                await self._connection.executescript(script)
            except sqlite3.Error as error:
                if self._connection.in_transaction:
                    await self._connection.execute("ROLLBACK")
                raise StoreError(
                    f"database migration {name} failed on {self.path}: {error}"
                ) from error

    async def user_version(self) -> int:
        row = await self.fetchone("PRAGMA user_version")
        return int(row[0]) if row is not None else 0

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement in its own transaction; returns the number of rows it changed."""
        async with self._lock:
            cursor = await self._connection.execute(sql, params)
            return cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        async with self.transaction() as tx:
            await tx.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        async with self._lock:
            cursor = await self._connection.execute(sql, params)
            row: Row | None = await cursor.fetchone()
            return row

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._lock:
            cursor = await self._connection.execute(sql, params)
            return list(await cursor.fetchall())

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Statements that commit together or not at all.

        A task cancelled inside leaves no open transaction behind: aiosqlite runs each
        statement in its thread even when the awaiting task is gone, so the ROLLBACK is queued
        behind whatever was started and shielded from the cancellation.
        """
        async with self._lock:
            try:
                await self._connection.execute("BEGIN IMMEDIATE")
                yield Transaction(self._connection)
            except BaseException:
                await asyncio.shield(self._rollback())
                raise
            await asyncio.shield(self._connection.execute("COMMIT"))

    async def _rollback(self) -> None:
        # When BEGIN itself failed there is nothing to roll back.
        with contextlib.suppress(sqlite3.OperationalError):
            await self._connection.execute("ROLLBACK")


def _migrations() -> list[tuple[int, str, str]]:
    """(number, file name, SQL) for every `NNNN_name.sql` file, in order."""
    found = []
    for entry in resources.files(MIGRATIONS_PACKAGE).iterdir():
        name = entry.name
        if not name.endswith(".sql"):
            continue
        number = name.split("_", 1)[0]
        if not number.isdigit():
            raise StoreError(f"migration {name} does not start with its number")
        found.append((int(number), name, entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [number for number, _, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise StoreError(f"migrations must be numbered 1, 2, 3... without gaps; found {numbers}")
    return found
