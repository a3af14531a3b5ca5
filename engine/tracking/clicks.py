"""``ClickWriter``: clicks go to the database in batches, and none is lost on a graceful stop.

A redirect must not wait for a write: the route calls ``record(click)`` (no await), which
appends to a buffer. A writer task hands the buffer to ``TrackingStore.add_clicks`` every
``interval`` seconds (0.5) or as soon as ``batch`` clicks (500) wait, whichever comes first,
``transaction`` clicks (100) per call, letting the event loop run between them: SQLite
writes on the loop's thread, about 16 µs a click, so 500 at once would hold every redirect
for 8 ms where 100 hold them for under 2 (the cost per click is the same from 100 up). On
the way out of ``running()`` (the app's lifespan, which ``herald serve`` leaves on SIGTERM
once its connections are done) it writes what is left.

Bounds: at most ``capacity`` clicks wait (100,000: over three minutes of the 500 clicks/s a
big mailing may see). When the database is slow or down the buffer fills; past
``capacity`` new clicks are dropped and counted in ``dropped`` rather than growing the
process without end. A failed write keeps its clicks for the next try; a write is never
cancelled half way (it is shielded), so a stop cannot leave a batch both written and kept.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import ClassVar, Generic, Protocol, Self, TypeVar

import anyio
import anyio.lowlevel
import msgspec

from engine.store.base import Click, TrackingStore

__all__ = ["BatchWriter", "ClickStats", "ClickWriter", "WriterStats"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


class WriterStats(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a writer (of clicks, or of opens: ``engine.tracking.opens``)."""

    #: Items waiting to be written.
    buffered: int
    #: Items the store wrote (people's and bots').
    written: int
    #: People's that were their recipient's first (on the link; of the message).
    unique: int
    #: Items of a (link or run, seq) with no recipient: the store dropped them.
    unknown: int
    #: Items lost: the buffer was full, or the last write at the stop failed.
    dropped: int
    #: Writes that failed (their items were kept and tried again).
    failed_writes: int
    #: Transactions written.
    batches: int


#: The clicks writer's snapshot.
ClickStats = WriterStats


class _Report(Protocol):
    @property
    def recorded(self) -> int: ...
    @property
    def unique(self) -> int: ...
    @property
    def unknown(self) -> int: ...


class BatchWriter(Generic[T]):
    """Buffers items and hands them to ``write`` in batches (see the module docstring):
    ``ClickWriter``'s and ``OpenWriter``'s one machinery. ``what`` names the items in
    the log."""

    what: ClassVar[str] = "items"

    def __init__(self, write: Callable[[list[T]], Awaitable[_Report]], *,
                 interval: float = 0.5, batch: int = 500, transaction: int = 100,
                 capacity: int = 100_000) -> None:
        if interval <= 0 or not 1 <= transaction <= batch <= capacity:
            raise ValueError("interval > 0 and 1 <= transaction <= batch <= capacity")
        self._write = write
        self._interval = interval
        self._batch = batch
        self._transaction = transaction
        self._capacity = capacity
        self._buffer: list[T] = []
        self._full: anyio.Event | None = None
        self._written = 0
        self._unique = 0
        self._unknown = 0
        self._dropped = 0
        self._failed = 0
        self._batches = 0

    def record(self, item: T) -> None:
        """Keep ``item`` for the next write (called on the event loop, never blocks)."""
        buffer = self._buffer
        if len(buffer) >= self._capacity:
            self._dropped += 1
            return
        buffer.append(item)
        if len(buffer) >= self._batch and self._full is not None:
            self._full.set()

    def statistics(self) -> WriterStats:
        return WriterStats(buffered=len(self._buffer), written=self._written,
                           unique=self._unique, unknown=self._unknown, dropped=self._dropped,
                           failed_writes=self._failed, batches=self._batches)

    async def flush(self) -> bool:
        """Write every buffered item, ``transaction`` per call; False if a write failed
        (the items not written stay buffered)."""
        first = True
        while self._buffer:
            if not first:
                await anyio.lowlevel.checkpoint()  # the requests waiting meanwhile
            first = False
            batch = self._buffer[: self._transaction]
            # never cancelled half way: a batch is either written and gone, or kept
            with anyio.CancelScope(shield=True):
                try:
                    report = await self._write(batch)
                except Exception:
                    self._failed += 1
                    logger.exception("could not write %d %s (kept for the next try)",
                                     len(batch), self.what)
                    return False
            del self._buffer[: len(batch)]
            self._written += report.recorded
            self._unique += report.unique
            self._unknown += report.unknown
            self._batches += 1
        return True

    async def _run(self) -> None:
        while True:
            self._full = anyio.Event()
            if len(self._buffer) < self._batch:
                with anyio.move_on_after(self._interval):
                    await self._full.wait()
            if not await self.flush():
                await anyio.sleep(self._interval)  # the database is unwell: not in a spin

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Self]:
        """Write in the background while inside; write what is left on the way out."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._run)
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._full = None
            with anyio.CancelScope(shield=True):
                if not await self.flush():
                    lost = len(self._buffer)
                    self._dropped += lost
                    self._buffer.clear()
                    logger.error("%d %s lost: the last write at the stop failed", lost,
                                 self.what)


class ClickWriter(BatchWriter[Click]):
    """Buffers clicks and writes them to ``store`` in batches (see the module docstring)."""

    what = "clicks"

    def __init__(self, store: TrackingStore, *, interval: float = 0.5, batch: int = 500,
                 transaction: int = 100, capacity: int = 100_000) -> None:
        super().__init__(store.add_clicks, interval=interval, batch=batch,
                         transaction=transaction, capacity=capacity)
