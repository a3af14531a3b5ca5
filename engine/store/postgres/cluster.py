"""Chunks of cluster runs, their leases, and the workers (ClusterStore).

A cluster run's audience is cut into ranges of profile ids (``run_chunks``), each with its
own reading position and its own range of seqs (chunk ``k`` gives seqs from ``k * 2**32 +
1``: message ids ``{uid}-{seq}`` stay unique whoever sends them). A worker leases a chunk
with ``FOR UPDATE SKIP LOCKED``; each claim raises the chunk's ``fence``, and every write
of the journal under a lease (``journal.py``) first takes ``LEASE_HELD``: the chunk's row
``FOR SHARE`` at the lease's fence. So a worker whose lease was taken over writes nothing
more (LeaseLost), and a takeover waits for the write in progress to commit (a claim skips
the row meanwhile).

A trigger run on a cluster is one chunk (``create_trigger_chunk``: chunk 0, lo 0, hi NULL)
that one worker at a time leases and keeps with heartbeats for as long as the mailing is
active; its checkpoint is the last ``trigger_queue`` id settled. Its seqs are handed out
as calls are queued (``runs.next_seq``), not from the chunk's range, and its reserves go
through ``reserve_triggers``: fenced like ``reserve``, but without the ``(run, phone)``
backstop, since two calls to one phone are two messages.

Every time is the database server's (``NOW``), in epoch seconds like the rest of the
schema: workers on machines whose clocks differ agree on who holds what.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import anyio
import anyio.to_thread
import psycopg

from engine.core.policy import utc_day
from engine.core.prepare import Message, Skipped
from engine.errors import LeaseLost, NotFound, StoreError
from engine.store.base import ChunkRow, Lease, WorkerRow
from engine.store.models import AudienceSource
from engine.store.postgres.connection import PgBase
from engine.store.postgres.db import redact_url

__all__ = ["CONTROL_CHANNEL", "DDL", "LEASE_HELD", "SEQS_PER_CHUNK", "PgCluster",
           "lease_lost"]

#: The channel of control messages (``engine.cluster.control``: pause, resume, cancel...).
CONTROL_CHANNEL = "herald_control"
#: Seconds a listener's worker thread (trio) waits for a notification before it looks
#: whether it was cancelled: the longest a cancelled listener takes to end.
LISTEN_POLL = 0.2

#: This role's tables: the second migration (``schema.py``).
DDL = """
-- The chunks of cluster runs: profile ids lo < id <= hi (hi NULL: no upper bound).
CREATE TABLE run_chunks (
    run_id bigint NOT NULL REFERENCES runs(id),
    chunk integer NOT NULL,
    lo bigint NOT NULL,
    hi bigint,
    state text NOT NULL DEFAULT 'pending',
    worker text,
    lease_until double precision,
    fence bigint NOT NULL DEFAULT 0,
    checkpoint bigint NOT NULL,
    next_seq bigint NOT NULL,
    audience_done boolean NOT NULL DEFAULT false,
    PRIMARY KEY (run_id, chunk)
);
CREATE INDEX run_chunks_open ON run_chunks(run_id, chunk) WHERE state <> 'done';
-- The live workers, as their heartbeats say.
CREATE TABLE cluster_workers (
    worker text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at double precision NOT NULL,
    heartbeat_at double precision NOT NULL,
    chunks integer NOT NULL DEFAULT 0
);
"""

#: The server's clock, in epoch seconds (statements here are one per transaction).
NOW = "extract(epoch FROM clock_timestamp())::float8"

#: Seqs each chunk may give: chunk k's are k * SEQS_PER_CHUNK + 1 onwards.
SEQS_PER_CHUNK = 2**32

#: A CTE body that holds a lease, for the journal's writes: the chunk's row locked
#: ``FOR SHARE`` if it is still leased at the lease's fence, else no row. Parameters
#: ``%(run)s``, ``%(chunk)s``, ``%(fence)s``.
LEASE_HELD = (
    "SELECT 1 AS held FROM run_chunks WHERE run_id = %(run)s AND chunk = %(chunk)s"
    " AND fence = %(fence)s AND state = 'leased' FOR SHARE"
)

#: The high half of the advisory locks that make releases of one run's chunks take turns.
_RELEASE_LOCKS = 0x4852_4348 << 32  # "HRCH"

_LEASE_COLUMNS = (
    "c.run_id, c.chunk, c.lo, c.hi, c.fence, c.worker, c.checkpoint, c.next_seq,"
    " c.audience_done"
)

#: One statement: the first claimable chunk (pending, or leased and expired) of a running
#: run, skipping the rows other claims or writes hold, leased with its fence raised.
_CLAIM = f"""
UPDATE run_chunks c SET worker = %(worker)s, fence = c.fence + 1, state = 'leased',
    lease_until = {NOW} + %(ttl)s
FROM (
    SELECT rc.run_id, rc.chunk, rc.state AS was FROM run_chunks rc
    JOIN runs r ON r.id = rc.run_id
    WHERE r.status = 'running' AND rc.state <> 'done'
      AND (rc.state = 'pending' OR (rc.state = 'leased' AND rc.lease_until < {NOW}))
      AND (%(run)s::bigint IS NULL OR rc.run_id = %(run)s::bigint)
    ORDER BY rc.run_id, rc.chunk LIMIT 1
    FOR UPDATE OF rc SKIP LOCKED
) pick
WHERE c.run_id = pick.run_id AND c.chunk = pick.chunk
RETURNING {_LEASE_COLUMNS}, pick.was = 'leased'
"""

#: One statement: the chunks of a run's audience, from the ids of ``ids`` (a CTE placed
#: in front): a cut after every ``size``-th id but the last, the last chunk open-ended
#: (``size`` 0: one chunk).
_CHUNKS = """
numbered AS (
    SELECT id, row_number() OVER (ORDER BY id) AS n, count(*) OVER () AS total FROM ids
), cuts AS (
    SELECT id AS hi, row_number() OVER (ORDER BY id) AS k FROM numbered
    WHERE mod(n, %(size)s) = 0 AND n < total
), bounds AS (
    SELECT k - 1 AS chunk, coalesce(lag(hi) OVER (ORDER BY k), 0) AS lo, hi FROM cuts
    UNION ALL
    SELECT (SELECT count(*) FROM cuts), coalesce((SELECT max(hi) FROM cuts), 0), NULL
)
INSERT INTO run_chunks (run_id, chunk, lo, hi, state, fence, checkpoint, next_seq)
SELECT %(run)s, chunk, lo, hi, 'pending', 0, lo, chunk * %(seqs)s + 1 FROM bounds
"""


def lease_lost(lease: Lease) -> LeaseLost:
    """The error of a write under a lease that was taken over (or given up)."""
    return LeaseLost(
        f"run {lease.run_id} chunk {lease.chunk}: the lease of {lease.worker}"
        f" (fence {lease.fence}) was taken over"
    )


def _lease_params(lease: Lease) -> dict[str, int]:
    return {"run": lease.run_id, "chunk": lease.chunk, "fence": lease.fence}


class PgCluster(PgBase):
    async def create_chunks(self, run_id: int, source: AudienceSource, *, size: int) -> int:
        async with self.db.transaction() as tx:
            # The run's row lock makes two first calls take turns: the second sees the
            # first's chunks and keeps them.
            if await tx.fetchone("SELECT 1 FROM runs WHERE id = %s FOR UPDATE",
                                 (run_id,)) is None:
                raise NotFound(f"no run {run_id}")
            row = await tx.fetchone(
                "SELECT count(*) FROM run_chunks WHERE run_id = %s", (run_id,))
            if row and row[0]:
                return int(row[0])
            static = False
            if source.kind == "segment":
                row = await tx.fetchone(
                    "SELECT kind FROM segments WHERE id = %s", (source.segment_id,))
                static = row is not None and row[0] == "static"
            # A dynamic segment is judged as it is read: its chunks cut its database.
            ids = (
                "SELECT profile_id AS id FROM segment_members WHERE segment_id = %(source)s"
                if static else "SELECT id FROM profiles WHERE database_id = %(source)s"
            )
            return int(await tx.execute(f"WITH ids AS ({ids}), {_CHUNKS}", {
                "run": run_id, "size": size if size > 0 else 2**62, "seqs": SEQS_PER_CHUNK,
                "source": source.segment_id if static else source.database_id,
            }))

    async def create_trigger_chunk(self, run_id: int) -> None:
        """The one chunk of a trigger run, pending, from the run's own position (a run
        begun by a single process goes on after what it settled). A run that has it
        keeps it."""
        n = await self.db.execute(
            "INSERT INTO run_chunks (run_id, chunk, lo, hi, state, fence, checkpoint,"
            " next_seq) SELECT id, 0, 0, NULL, 'pending', 0, checkpoint, next_seq"
            " FROM runs WHERE id = %s ON CONFLICT (run_id, chunk) DO NOTHING", (run_id,))
        if n == 0 and not await self.db.fetchone(
                "SELECT 1 FROM runs WHERE id = %s", (run_id,)):
            raise NotFound(f"no run {run_id}")

    async def reserve_triggers(
        self,
        run_id: int,
        *,
        batches: Sequence[tuple[int, str, Sequence[Message]]],
        skipped: Sequence[Skipped],
        checkpoint: int,
        counts: dict[str, int],
        lease: Lease,
        links: Sequence[tuple[int, int, str]] = (),
    ) -> None:
        """``reserve`` of queued triggers under the trigger run's lease: the batches
        journalled, the skips recorded, the chunk's checkpoint (a queue id) and counters
        advanced, in one transaction that holds the lease (LeaseLost, nothing written, if
        it was taken over). No phone is refused: each trigger call is its own message."""
        # journal.py imports this module for LEASE_HELD: its statement is taken here late
        from engine.store.postgres import journal

        now = time.time()
        async with self.db.transaction() as tx:
            if await tx.fetchone(LEASE_HELD, _lease_params(lease)) is None:
                raise lease_lost(lease)
            resource = await cast(Any, self)._run_resource_id(tx, run_id) if any(
                msgs for _, _, msgs in batches) else None
            channel = await self._channel(tx, run_id)
            await tx.execute(journal.reserve_sql(channel, leased=True), {
                "run": run_id, "now": now, "day": utc_day(now), "resource": resource,
                "count": resource is not None,  # a trigger call is never a test send
                **journal.reserve_params(channel, batches),
                "skipped": journal.json_rows(skipped),
                "checkpoint": checkpoint, "next_seq": None, "done": False,
                "counts": journal.json_rows(counts), "chunk": lease.chunk,
                "links": journal.json_rows([(k[0], k[1], url) for k, url in
                                            {(link, seq): url
                                             for link, seq, url in links}.items()]),
            })
            await journal.write_control(tx, run_id, skipped, now)

    async def claim_chunk(
        self, worker: str, ttl: float, *, run_id: int | None = None
    ) -> Lease | None:
        row = await self.db.fetchone(_CLAIM, {"worker": worker, "ttl": ttl, "run": run_id})
        return None if row is None else Lease(*row)

    async def renew_lease(self, lease: Lease, ttl: float) -> bool:
        n = await self.db.execute(
            f"UPDATE run_chunks SET lease_until = {NOW} + %(ttl)s WHERE run_id = %(run)s"
            " AND chunk = %(chunk)s AND fence = %(fence)s AND state = 'leased'",
            {**_lease_params(lease), "ttl": ttl},
        )
        return n == 1

    async def release_chunk(self, lease: Lease, *, done: bool) -> bool:
        async with self.db.transaction() as tx:
            if done:
                # Releases of a run's chunks take turns, so the one that makes the last
                # chunk done sees every other one done (each statement's snapshot is
                # taken after the lock).
                await tx.execute("SELECT pg_advisory_xact_lock(%s)",
                                 (_RELEASE_LOCKS | (lease.run_id & 0xFFFF_FFFF),))
            n = await tx.execute(
                "UPDATE run_chunks SET state = %(state)s, lease_until = NULL,"
                " worker = CASE WHEN %(done)s THEN worker END"
                " WHERE run_id = %(run)s AND chunk = %(chunk)s AND fence = %(fence)s"
                " AND state = 'leased'",
                {**_lease_params(lease), "state": "done" if done else "pending",
                 "done": done},
            )
            if n != 1:
                raise lease_lost(lease)
            if not done:
                return False
            last = await tx.fetchone(
                "UPDATE runs SET audience_done = true WHERE id = %(run)s AND NOT EXISTS"
                " (SELECT 1 FROM run_chunks WHERE run_id = %(run)s AND state <> 'done')"
                " RETURNING id",
                {"run": lease.run_id},
            )
            return last is not None

    async def chunks(self, run_id: int) -> list[ChunkRow]:
        rows = await self.db.fetchall(
            "SELECT run_id, chunk, lo, hi, state, worker,"
            f" CASE WHEN state = 'leased' THEN lease_until - {NOW} END, checkpoint, fence"
            " FROM run_chunks WHERE run_id = %s ORDER BY chunk",
            (run_id,),
        )
        return [ChunkRow(*r) for r in rows]

    async def worker_heartbeat(
        self, worker: str, *, host: str, pid: int, chunks: int, ttl: float
    ) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO cluster_workers (worker, host, pid, started_at, heartbeat_at,"
                f" chunks) VALUES (%(worker)s, %(host)s, %(pid)s, {NOW}, {NOW}, %(chunks)s)"
                " ON CONFLICT (worker) DO UPDATE SET host = excluded.host,"
                " pid = excluded.pid, heartbeat_at = excluded.heartbeat_at,"
                " chunks = excluded.chunks",
                {"worker": worker, "host": host, "pid": pid, "chunks": chunks},
            )
            await tx.execute(
                f"DELETE FROM cluster_workers WHERE heartbeat_at < {NOW} - %s", (ttl,))

    async def workers(self) -> list[WorkerRow]:
        rows = await self.db.fetchall(
            "SELECT worker, host, pid, started_at, heartbeat_at, chunks FROM cluster_workers"
            " ORDER BY started_at, worker"
        )
        return [WorkerRow(*r) for r in rows]

    # -- control messages (LISTEN/NOTIFY) ----------------------------------------------

    async def notify_control(self, payload: str) -> None:
        """``NOTIFY herald_control, payload``: to every connection of this database that
        listens now (a listener that is not connected at that moment never gets it)."""
        await self.db.execute("SELECT pg_notify(%s, %s)", (CONTROL_CHANNEL, payload))

    @asynccontextmanager
    async def listen_control(self) -> AsyncIterator[AsyncIterator[str]]:
        """A dedicated connection (autocommit) that LISTENs on ``herald_control``, for the
        block: ``async for payload in it``. The async connection on asyncio; on trio the
        sync one, waited on in a worker thread ``LISTEN_POLL`` at a time. StoreError if
        the connection cannot be made or breaks."""
        listener: _AsyncListener | _ThreadListener
        try:
            if self.db.mode == "async":
                aconn = await psycopg.AsyncConnection.connect(
                    self.db.url, autocommit=True, connect_timeout=10)
                listener = _AsyncListener(aconn)
            else:
                conn = await anyio.to_thread.run_sync(lambda: psycopg.Connection.connect(
                    self.db.url, autocommit=True, connect_timeout=10))
                listener = _ThreadListener(conn)
        except psycopg.Error as err:
            raise StoreError(f"{redact_url(self.db.url)}: cannot listen ({err})") from err
        try:
            await listener.listen()
            yield listener
        finally:
            with anyio.CancelScope(shield=True):
                await listener.aclose()


def _broken(url: str, err: psycopg.Error) -> StoreError:
    return StoreError(f"{redact_url(url)}: the control listener broke ({err})")


class _AsyncListener:
    """``herald_control``'s payloads from psycopg's AsyncConnection (asyncio)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn
        self._notifies: Any = None

    async def listen(self) -> None:
        try:
            await self.conn.execute(f"LISTEN {CONTROL_CHANNEL}")
        except psycopg.Error as err:
            raise _broken(self.conn.info.dsn, err) from err
        self._notifies = self.conn.notifies()

    def __aiter__(self) -> _AsyncListener:
        return self

    async def __anext__(self) -> str:
        try:
            notify = await anext(self._notifies)
        except psycopg.Error as err:
            raise _broken(self.conn.info.dsn, err) from err
        return str(notify.payload)

    async def aclose(self) -> None:
        try:
            if self._notifies is not None:
                await self._notifies.aclose()
        finally:
            await self.conn.close()


class _ThreadListener:
    """``herald_control``'s payloads from psycopg's sync Connection in a worker thread
    (trio): each wait lasts at most ``LISTEN_POLL``, so a cancellation is seen soon."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._ready: deque[str] = deque()
        # its own thread: the store's statements keep every token of the default limiter
        self._limiter = anyio.CapacityLimiter(1)

    async def listen(self) -> None:
        try:
            await anyio.to_thread.run_sync(
                self.conn.execute, f"LISTEN {CONTROL_CHANNEL}", limiter=self._limiter)
        except psycopg.Error as err:
            raise _broken(self.conn.info.dsn, err) from err

    def _wait(self) -> list[str]:
        return [n.payload for n in self.conn.notifies(timeout=LISTEN_POLL, stop_after=1)]

    def __aiter__(self) -> _ThreadListener:
        return self

    async def __anext__(self) -> str:
        while not self._ready:
            try:
                got = await anyio.to_thread.run_sync(self._wait, limiter=self._limiter)
            except psycopg.Error as err:
                raise _broken(self.conn.info.dsn, err) from err
            self._ready.extend(got)
        return self._ready.popleft()

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self.conn.close, limiter=self._limiter)
