"""One small async face over psycopg 3, on asyncio and on trio.

psycopg's ``AsyncConnection`` needs asyncio: on asyncio (and uvloop) the store uses it,
through a ``psycopg_pool.AsyncConnectionPool``. On trio it uses the synchronous
``Connection`` from a ``psycopg_pool.ConnectionPool``, each statement run in an anyio worker
thread. The store's code is written once, against :class:`Tx`. ``HERALD_PG_MODE=thread``
forces the thread flavour on asyncio too, to measure one against the other
(``bench/pipeline.py --database postgresql://...``): per 500-message batch, reserve plus
record cost about the same either way (25-30 ms on a loaded 2-core machine, mostly the
server's work and its commit).

A :class:`Tx` is one transaction on one connection: ``async with db.transaction() as tx``
commits at the end of the block and rolls back on an exception. Statements use psycopg's
``%s`` placeholders; lists bind as PostgreSQL arrays (``= ANY(%s)``, ``unnest(%s)``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import anyio
import anyio.to_thread
import psycopg
import psycopg_pool
import sniffio

from engine.errors import StoreError

__all__ = ["Database", "Tx", "connect"]

Params = Sequence[Any] | dict[str, Any] | None


class Tx(Protocol):
    """A transaction's statements."""

    async def execute(self, sql: str, params: Params = None) -> int:
        """Run one statement; its row count."""

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each row (pipelined)."""

    async def fetchall(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]: ...

    async def fetchone(self, sql: str, params: Params = None) -> tuple[Any, ...] | None: ...

    async def copy(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """``COPY ... FROM STDIN`` with these rows (binary-safe, one round trip)."""


class Database(Protocol):
    """A pool of connections to one database."""

    url: str
    #: "async" (psycopg's AsyncConnection) or "thread" (Connection in worker threads).
    mode: str

    def transaction(self) -> Any:
        """``async with db.transaction() as tx``: one transaction."""

    async def fetchall(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]: ...

    async def fetchone(self, sql: str, params: Params = None) -> tuple[Any, ...] | None: ...

    async def execute(self, sql: str, params: Params = None) -> int: ...

    async def aclose(self) -> None: ...


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET TIME ZONE 'UTC'")
    conn.commit()


async def _aconfigure(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute("SET TIME ZONE 'UTC'")
    await conn.commit()


# -- asyncio: AsyncConnection ------------------------------------------------------------


class _AsyncTx:
    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    async def execute(self, sql: str, params: Params = None) -> int:
        cur = await self.conn.execute(sql, params)
        return cur.rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self.conn.cursor() as cur:
            await cur.executemany(sql, list(rows))

    async def fetchall(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        cur = await self.conn.execute(sql, params)
        return await cur.fetchall()

    async def fetchone(self, sql: str, params: Params = None) -> tuple[Any, ...] | None:
        cur = await self.conn.execute(sql, params)
        return await cur.fetchone()

    async def copy(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self.conn.cursor() as cur, cur.copy(sql) as copy:
            for row in rows:
                await copy.write_row(row)


class _AsyncDatabase:
    mode = "async"

    def __init__(self, url: str, pool: psycopg_pool.AsyncConnectionPool[Any]) -> None:
        self.url = url
        self.pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_AsyncTx]:
        async with self.pool.connection() as conn, conn.transaction():
            yield _AsyncTx(conn)

    async def fetchall(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        async with self.transaction() as tx:
            return await tx.fetchall(sql, params)

    async def fetchone(self, sql: str, params: Params = None) -> tuple[Any, ...] | None:
        async with self.transaction() as tx:
            return await tx.fetchone(sql, params)

    async def execute(self, sql: str, params: Params = None) -> int:
        async with self.transaction() as tx:
            return await tx.execute(sql, params)

    async def aclose(self) -> None:
        await self.pool.close()


# -- trio (or forced): Connection in worker threads ----------------------------------------


class _ThreadTx:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args)

    async def execute(self, sql: str, params: Params = None) -> int:
        def run() -> int:
            return self.conn.execute(sql, params).rowcount

        return int(await self._run(run))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = list(rows)

        def run() -> None:
            with self.conn.cursor() as cur:
                cur.executemany(sql, batch)

        await self._run(run)

    async def fetchall(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            return self.conn.execute(sql, params).fetchall()

        result: list[tuple[Any, ...]] = await self._run(run)
        return result

    async def fetchone(self, sql: str, params: Params = None) -> tuple[Any, ...] | None:
        def run() -> tuple[Any, ...] | None:
            return self.conn.execute(sql, params).fetchone()

        result: tuple[Any, ...] | None = await self._run(run)
        return result

    async def copy(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = list(rows)

        def run() -> None:
            with self.conn.cursor() as cur, cur.copy(sql) as copy:
                for row in batch:
                    copy.write_row(row)

        await self._run(run)


class _ThreadDatabase:
    mode = "thread"

    def __init__(self, url: str, pool: psycopg_pool.ConnectionPool[Any], size: int) -> None:
        self.url = url
        self.pool = pool
        # A task waits here for a connection, not in a worker thread: threads blocked in
        # getconn could starve the tasks that hold the connections of the threads they need.
        self._slots = anyio.Semaphore(size)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_ThreadTx]:
        async with self._slots:
            async with self._transaction() as tx:
                yield tx

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_ThreadTx]:
        conn = await anyio.to_thread.run_sync(self.pool.getconn)
        ok = False
        try:
            tx = _ThreadTx(conn)
            yield tx
            ok = True
        finally:
            def end() -> None:
                try:
                    if ok:
                        conn.commit()
                    else:
                        conn.rollback()
                finally:
                    self.pool.putconn(conn)

            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(end)

    async def fetchall(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        async with self.transaction() as tx:
            return await tx.fetchall(sql, params)

    async def fetchone(self, sql: str, params: Params = None) -> tuple[Any, ...] | None:
        async with self.transaction() as tx:
            return await tx.fetchone(sql, params)

    async def execute(self, sql: str, params: Params = None) -> int:
        async with self.transaction() as tx:
            return await tx.execute(sql, params)

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self.pool.close)


async def connect(url: str, *, min_size: int = 1, max_size: int = 8,
                  mode: str | None = None) -> Database:
    """A pool on ``url``: async connections on asyncio, threads on trio (or ``mode``)."""
    mode = mode or os.environ.get("HERALD_PG_MODE") or (
        "async" if sniffio.current_async_library() == "asyncio" else "thread")
    try:
        if mode == "async":
            apool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
                url, min_size=min_size, max_size=max_size, open=False,
                configure=_aconfigure, timeout=30.0,
            )
            await apool.open(wait=True, timeout=10.0)
            return _AsyncDatabase(url, apool)
        pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            url, min_size=min_size, max_size=max_size, open=False, configure=_configure,
            timeout=30.0,
        )
        await anyio.to_thread.run_sync(lambda: pool.open(wait=True, timeout=10.0))
        return _ThreadDatabase(url, pool, max_size)
    except (psycopg.Error, psycopg_pool.PoolTimeout) as err:
        raise StoreError(f"{redact_url(url)}: cannot connect ({err})") from err


def redact_url(url: str) -> str:
    """``url`` without its password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://..."
    if "password" not in info:
        return url
    head, sep, tail = url.partition("@")
    if sep and ":" in head.split("//", 1)[-1]:
        scheme, _, user = head.rpartition("//")
        return f"{scheme}//{user.split(':', 1)[0]}:***@{tail}"
    return url
