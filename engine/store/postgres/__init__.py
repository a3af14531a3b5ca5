"""The PostgreSQL store (PostgreSQL 15 or newer, psycopg 3): one module per role.

``PostgresStore.open(url)`` connects a pool (``db.py``: async connections on asyncio,
threads on trio), creates or migrates the schema (``schema.py``) and returns the store.
Writes are set-based, one statement per chunk (``unnest`` of arrays, or COPY into a temp
table then ``INSERT ... ON CONFLICT``), never one per message. Those that make events
write them, and add to the report counters, in the same statement (``events.py``);
``tracking.py`` keeps links, clicks and opens, ``bounces.py`` an email's bounces and
complaints, ``reports.py`` reads the counters, ``hooks.py``
keeps the action hooks' cursors over the event record (in commit order: see there).
"""

from __future__ import annotations

import psycopg

from engine.errors import StoreError
from engine.store.base import Store
from engine.store.postgres.audience import PgAudience
from engine.store.postgres.bounces import PgBounces
from engine.store.postgres.cluster import PgCluster
from engine.store.postgres.db import connect, redact_url
from engine.store.postgres.events import PgEvents
from engine.store.postgres.gallery import PgGallery
from engine.store.postgres.hooks import PgHooks
from engine.store.postgres.journal import PgJournal
from engine.store.postgres.policy import PgPolicy
from engine.store.postgres.profiles import PgProfiles
from engine.store.postgres.receipts import PgReceipts
from engine.store.postgres.reports import PgReports
from engine.store.postgres.runs import PgRuns
from engine.store.postgres.segments import PgSegments
from engine.store.postgres.subscriptions import PgSubscriptions
from engine.store.postgres.suppression import PgSuppression
from engine.store.postgres.tokens import PgTokens
from engine.store.postgres.tracking import PgTracking
from engine.store.postgres.triggers import PgTriggers

__all__ = ["PostgresStore"]

#: The advisory lock that serialises migrations (any constant: it names Herald's schema).
_MIGRATION_LOCK = 0x4845_5241_4C44  # "HERALD"


class PostgresStore(
    PgProfiles, PgSubscriptions, PgSuppression, PgSegments, PgAudience, PgRuns, PgJournal,
    PgReceipts, PgPolicy, PgTriggers, PgTokens, PgGallery, PgCluster, PgTracking, PgBounces,
    PgEvents, PgHooks, PgReports, Store,
):
    """Everything Herald persists, in one PostgreSQL database."""

    @classmethod
    async def open(cls, url: str) -> PostgresStore:
        """Connect to ``url`` and create or migrate its schema."""
        db = await connect(url)
        store = cls(db, redact_url(url))
        try:
            await store._migrate()
        except BaseException:
            await db.aclose()
            raise
        return store

    async def _migrate(self) -> None:
        """Apply the migrations not yet applied, each in its own transaction, under an
        advisory lock: two processes opening a new database at once migrate it once."""
        from engine.store.postgres.schema import MIGRATIONS

        while True:
            try:
                async with self.db.transaction() as tx:
                    await tx.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                    await tx.execute("CREATE TABLE IF NOT EXISTS herald_schema (version int)")
                    row = await tx.fetchone("SELECT max(version) FROM herald_schema")
                    version = int(row[0]) if row and row[0] is not None else 0
                    if version > len(MIGRATIONS):
                        raise StoreError(
                            f"{self.url}: schema version {version} is newer than this Herald "
                            f"({len(MIGRATIONS)}); upgrade Herald"
                        )
                    if version == len(MIGRATIONS):
                        return
                    await tx.execute(MIGRATIONS[version])
                    await tx.execute("DELETE FROM herald_schema")
                    await tx.execute(
                        "INSERT INTO herald_schema (version) VALUES (%s)", (version + 1,))
            except psycopg.Error as err:
                raise StoreError(f"{self.url}: cannot migrate the schema ({err})") from err

    async def aclose(self) -> None:
        await self.db.aclose()
