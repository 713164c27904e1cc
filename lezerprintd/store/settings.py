"""Rows of the `settings` table: JSON values under dotted keys, grouped by category."""

from __future__ import annotations

import json
import time
from typing import Any

from lezerprintd.store import Store, Transaction

Db = Store | Transaction  # a transaction's statements, or one on its own


async def get(store: Db, key: str) -> Any:
    """The value stored under `key`, or None."""
    row = await store.fetchone("SELECT value FROM settings WHERE key = ?", (key,))
    return None if row is None else json.loads(row["value"])


async def put(store: Db, key: str, value: Any, category: str = "general") -> None:
    await store.execute(
        "INSERT INTO settings (key, value, category, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
        " category = excluded.category, updated_at = excluded.updated_at",
        (key, json.dumps(value), category, time.time()),
    )
