"""A cluster needs a store that several processes on several machines share: SQLite is one
process's file, so its ClusterStore refuses, saying what to use instead."""

from __future__ import annotations

from engine.errors import StoreError
from engine.store.base import ChunkRow, Lease, WorkerRow
from engine.store.models import AudienceSource
from engine.store.sqlite.connection import SQLiteBase

__all__ = ["NEEDS_POSTGRES", "SQLiteCluster", "no_cluster"]

NEEDS_POSTGRES = (
    "a cluster needs PostgreSQL: set [engine] database = \"postgresql://USER@HOST/DB\""
)


def no_cluster(lease: Lease | None) -> None:
    """StoreError for a write under a cluster lease (never made by this store)."""
    if lease is not None:
        raise StoreError(NEEDS_POSTGRES)


class SQLiteCluster(SQLiteBase):
    async def create_chunks(self, run_id: int, source: AudienceSource, *, size: int) -> int:
        raise StoreError(NEEDS_POSTGRES)

    async def claim_chunk(
        self, worker: str, ttl: float, *, run_id: int | None = None
    ) -> Lease | None:
        raise StoreError(NEEDS_POSTGRES)

    async def renew_lease(self, lease: Lease, ttl: float) -> bool:
        raise StoreError(NEEDS_POSTGRES)

    async def release_chunk(self, lease: Lease, *, done: bool) -> bool:
        raise StoreError(NEEDS_POSTGRES)

    async def chunks(self, run_id: int) -> list[ChunkRow]:
        raise StoreError(NEEDS_POSTGRES)

    async def worker_heartbeat(
        self, worker: str, *, host: str, pid: int, chunks: int, ttl: float
    ) -> None:
        raise StoreError(NEEDS_POSTGRES)

    async def workers(self) -> list[WorkerRow]:
        raise StoreError(NEEDS_POSTGRES)
