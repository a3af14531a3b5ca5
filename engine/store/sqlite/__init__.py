"""The embedded store: stdlib ``sqlite3`` in WAL mode, on the event loop thread.

Each method runs its statements synchronously with no ``await`` inside, so it is atomic with
respect to other tasks sharing the connection, and it is short: the audience is read in
keyset-paginated chunks, and writes are one transaction per batch. Measured here, a reader
thread lost to GIL ping-pong in the full pipeline; see ``bench/pipeline.py``.

``synchronous=NORMAL`` in WAL mode keeps every committed transaction across a process crash
(``kill -9``); only a power loss can lose the last commits.

One module per role, each a mixin on ``connection.SQLiteBase``: ``profiles``,
``suppression``, ``segments`` (with ``conditions/``, segment conditions in SQLite's SQL),
``audience``, ``runs``, ``journal`` (with the dedupe record), ``receipts``, ``policy``,
``triggers``, ``subscriptions``, ``tokens``, ``gallery``, ``tracking`` (links, clicks,
opens, unsubscribes), ``bounces`` (email's bounces and complaints), ``events`` (the event
record), ``hooks`` (the action hooks' cursors, leases and dead letters over it) and
``reports`` (from the counters of ``engine.store.counters``); ``schema`` holds the
migrations.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from engine.errors import StoreError
from engine.store.base import Store
from engine.store.sqlite.audience import SQLiteAudience
from engine.store.sqlite.bounces import SQLiteBounces
from engine.store.sqlite.cluster import SQLiteCluster
from engine.store.sqlite.events import SQLiteEvents
from engine.store.sqlite.gallery import SQLiteGallery
from engine.store.sqlite.hooks import SQLiteHooks
from engine.store.sqlite.policy import SQLitePolicy
from engine.store.sqlite.profiles import SQLiteProfiles
from engine.store.sqlite.receipts import RECEIPT_CHUNK, SQLiteReceipts
from engine.store.sqlite.reports import SQLiteReports
from engine.store.sqlite.runs import SQLiteRuns
from engine.store.sqlite.schema import MIGRATIONS
from engine.store.sqlite.subscriptions import SQLiteSubscriptions
from engine.store.sqlite.tokens import SQLiteTokens
from engine.store.sqlite.tracking import SQLiteTracking
from engine.store.sqlite.triggers import SQLiteTriggers

__all__ = ["RECEIPT_CHUNK", "SQLiteStore"]


class SQLiteStore(
    SQLiteProfiles, SQLiteAudience, SQLiteRuns, SQLiteReceipts, SQLitePolicy, SQLiteTriggers,
    SQLiteTokens, SQLiteSubscriptions, SQLiteGallery, SQLiteCluster, SQLiteTracking,
    SQLiteBounces, SQLiteEvents, SQLiteHooks, SQLiteReports, Store,
):
    """``SQLiteStore.open(path)`` creates or migrates the file and returns a store."""

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> SQLiteStore:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(p, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{p}: not a Herald database ({err})") from err
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA cache_size=-16384")  # 16 MiB: RSS stays flat as data grows
        store = cls(conn, p)
        store._migrate()
        return store

    def _migrate(self) -> None:
        (version,) = self.conn.execute("PRAGMA user_version").fetchone()
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this Herald "
                f"({len(MIGRATIONS)}); upgrade Herald"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # executescript commits first; the version bump rides in the same script.
            self.conn.executescript(
                f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
            )

    async def aclose(self) -> None:
        if self._scratch is not None:
            self._scratch.close()
        self.conn.close()

    # -- inspection helpers (tests, CLI) -----------------------------------------------

    def recipients(self, run_id: int) -> list[tuple[Any, ...]]:
        """Every recipient row of a run as (seq, profile_id, phone, state, reason)."""
        return self.conn.execute(
            "SELECT seq, profile_id, phone, state, reason FROM recipients WHERE run_id = ?"
            " ORDER BY seq",
            (run_id,),
        ).fetchall()
