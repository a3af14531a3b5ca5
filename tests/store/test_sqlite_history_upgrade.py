"""An SQLite workspace from before ``history_recent`` (schema 16) keeps its contact
history when Herald upgrades it: the counts it held and the new ones add up."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from engine.core.policy import Policy, utc_day
from engine.store.sqlite import SQLiteStore
from engine.store.sqlite.schema import MIGRATIONS
from tests.store.helpers import make_world, messages, new_run, reserve

pytestmark = pytest.mark.anyio


async def test_an_upgraded_workspace_counts_its_old_and_new_contact_history(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:16], start=1):
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    today = utc_day(time.time())
    # two messages to profile 1's phone (+447900000001) counted before the upgrade
    conn.execute("INSERT INTO history_contact (phone, day, n) VALUES (447900000001, ?, 2)",
                 (today,))
    conn.close()
    store = SQLiteStore.open(path)
    try:
        assert store.conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        w = await make_world(store, 2)
        _, run = await new_run(store, w)
        await reserve(store, run.id, [(1, "s", messages(w, [1, 2]))])
        contact = Policy(max_messages=5, period_days=1, scope="contact")
        assert await store.policy_counts(contact, w.resource_id, w.phones, time.time()) == {
            w.phones[0]: 3, w.phones[1]: 1}
    finally:
        await store.aclose()
