"""The store as one chunk of a cluster run sees it: every fenced write carries the lease.

The pipeline and the dispatcher write through ``LeasedStore`` exactly as they write
through the store itself; it adds ``lease=`` to ``reserve`` (forwarding its ``links=``),
``mark_sending``, ``unmark_sending``, ``move_batch`` and ``record``, so that a worker whose
lease was taken over writes nothing more (the store refuses with LeaseLost). Once the
lease is lost (the store said so, or a renewal failed), every fenced write is refused here
at once, without asking the store, and ``on_lost`` is called once: the chunk stops now,
its new owner settles what it left.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from engine.core.prepare import Message, Skipped
from engine.core.states import Outcome
from engine.errors import LeaseLost
from engine.store.base import Lease, Store

__all__ = ["LeasedStore"]

T = TypeVar("T")


class LeasedStore:
    """``store`` with ``lease`` on its fenced writes; any other attribute is the store's."""

    def __init__(
        self, store: Store, lease: Lease, on_lost: Callable[[], None] | None = None
    ) -> None:
        self.store = store
        self.lease = lease
        self.lost = False
        self._on_lost = on_lost

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def lose(self) -> None:
        """The lease is gone: refuse every fenced write from now on."""
        if self.lost:
            return
        self.lost = True
        if self._on_lost is not None:
            self._on_lost()

    async def _fenced(self, write: Callable[[], Awaitable[T]]) -> T:
        """``write()`` under the lease: refused at once if the lease is known lost, and the
        lease marked lost when the store refuses it."""
        if self.lost:
            raise LeaseLost(
                f"run {self.lease.run_id} chunk {self.lease.chunk}: the lease was taken over")
        try:
            return await write()
        except LeaseLost:
            self.lose()
            raise

    async def reserve(
        self,
        run_id: int,
        *,
        batches: Sequence[tuple[int, str, Sequence[Message]]],
        skipped: Sequence[Skipped],
        checkpoint: int,
        next_seq: int | None,
        counts: dict[str, int],
        audience_done: bool,
        links: Sequence[tuple[int, int, str]] = (),
    ) -> set[int]:
        return await self._fenced(lambda: self.store.reserve(
            run_id, batches=batches, skipped=skipped, checkpoint=checkpoint,
            next_seq=next_seq, counts=counts, audience_done=audience_done, lease=self.lease,
            links=links,
        ))

    async def mark_sending(self, run_id: int, batch: int) -> None:
        await self._fenced(lambda: self.store.mark_sending(run_id, batch, lease=self.lease))

    async def unmark_sending(self, run_id: int, batch: int) -> None:
        await self._fenced(lambda: self.store.unmark_sending(run_id, batch, lease=self.lease))

    async def move_batch(self, run_id: int, batch: int, sender: str) -> None:
        await self._fenced(
            lambda: self.store.move_batch(run_id, batch, sender, lease=self.lease))

    async def record(
        self, run_id: int, batch: int, sender: str, messages: Sequence[Message],
        outcomes: Sequence[Outcome], keep: Sequence[Message] = (),
        keep_sending: bool = False,
    ) -> None:
        await self._fenced(lambda: self.store.record(
            run_id, batch, sender, messages, outcomes, keep=keep, keep_sending=keep_sending,
            lease=self.lease,
        ))
