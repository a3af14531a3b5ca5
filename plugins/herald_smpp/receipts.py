"""Delivery receipts of multi-part messages, folded into one receipt per message (sans-I/O).

An SMSC sends a receipt per part, each naming the ``message_id`` its part's
``submit_sm_resp`` gave. Herald records a message under its first part's id, so
``ReceiptBook`` remembers which part ids make up each multi-part message and turns the
parts' receipts into one: *delivered* once every part is, *undelivered* as soon as one is
not (what follows for that message, and duplicates, are dropped). A receipt whose id the
book does not know (a single-part message, or one sent before a restart) passes through
as it is: the store matches it by id, and keeps receipts of messages it has not recorded
yet.

A receipt may come before the ``submit_sm_resp`` that gives its id. ``InFlight`` numbers
the parts of multi-part messages as they are written; an unknown receipt that arrives
while some of them still wait for their answer is held (by the session) until all that
were written before it are answered, since one of them may be its message's. Single-part
mailings never hold anything.

Both are bounded: the book forgets the oldest messages past ``limit`` part ids.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from typing import Literal

from engine.drivers import Receipt

__all__ = ["InFlight", "ReceiptBook", "Undo"]

#: Changes ``ReceiptBook.apply`` made, for ``ReceiptBook.undo`` when storing failed.
Undo = list[tuple["_Message", str, bool]]


class _Message:
    """A multi-part message: its first part's id, how many parts, which were delivered."""

    __slots__ = ("delivered", "first_id", "last_at", "parts", "settled")

    def __init__(self, first_id: str, parts: int) -> None:
        self.first_id = first_id
        self.parts = parts
        self.delivered: set[str] = set()
        self.settled = False
        self.last_at: float | None = None


class ReceiptBook:
    """Part ids of multi-part messages, and what their receipts said so far."""

    __slots__ = ("_limit", "_parts")

    def __init__(self, *, limit: int = 200_000) -> None:
        self._limit = limit
        self._parts: OrderedDict[str, _Message] = OrderedDict()

    def __len__(self) -> int:
        return len(self._parts)

    def accepted(self, first_id: str, part_id: str, parts: int) -> None:
        """A part of a message of ``parts`` parts was accepted as ``part_id`` (normalised);
        ``first_id`` is its first part's (the message's provider id)."""
        book = self._parts
        entry = book.get(first_id) if part_id != first_id else None
        if entry is None or entry.first_id != first_id:
            entry = _Message(first_id, parts)
        book[part_id] = entry
        while len(book) > self._limit:
            book.popitem(last=False)

    def knows(self, part_id: str) -> bool:
        return part_id in self._parts

    def apply(
        self,
        part_id: str,
        state: Literal["delivered", "undelivered"],
        error: str | None,
        at: float | None,
        undo: Undo,
    ) -> Receipt | None:
        """The receipt to store for a part's receipt, or None (more parts to come, or the
        message is settled already). Changes are appended to ``undo``."""
        entry = self._parts.get(part_id)
        if entry is None:
            return Receipt(provider_id=part_id, status=state, error=error, at=at)
        if entry.settled:
            return None
        if state == "undelivered":
            undo.append((entry, "", False))
            entry.settled = True
            return Receipt(provider_id=entry.first_id, status="undelivered", error=error, at=at)
        if part_id in entry.delivered:
            return None
        entry.delivered.add(part_id)
        undo.append((entry, part_id, False))
        if at is not None and (entry.last_at is None or at > entry.last_at):
            entry.last_at = at
        if len(entry.delivered) < entry.parts:
            return None
        entry.settled = True
        undo.append((entry, "", False))
        return Receipt(provider_id=entry.first_id, status="delivered", at=entry.last_at)

    def undo(self, undo: Undo) -> None:
        """Forget what ``apply`` recorded (the listener could not store its receipts, so
        the SMSC delivers the parts' receipts again)."""
        for entry, part_id, settled in reversed(undo):
            if part_id:
                entry.delivered.discard(part_id)
            else:
                entry.settled = settled


class InFlight:
    """Tickets of multi-part parts written and not answered yet, in the order written."""

    __slots__ = ("_answered", "_heap", "_next")

    def __init__(self) -> None:
        self._next = 0
        self._heap: list[int] = []
        self._answered: set[int] = set()

    def __len__(self) -> int:
        return len(self._heap)

    def written(self) -> int:
        """A ticket for a part just written."""
        ticket = self._next
        self._next += 1
        heapq.heappush(self._heap, ticket)
        return ticket

    def answered(self, ticket: int) -> None:
        """The part of ``ticket`` got its answer (or never will: timeout, lost)."""
        heap = self._heap
        if heap and heap[0] == ticket:
            heapq.heappop(heap)
            answered = self._answered
            while heap and heap[0] in answered:
                answered.discard(heapq.heappop(heap))
        else:
            self._answered.add(ticket)

    def mark(self) -> int | None:
        """What a receipt arriving now must wait for (None: nothing is in flight)."""
        return self._next if self._heap else None

    def passed(self, mark: int) -> bool:
        """Every part written before ``mark`` was taken has been answered."""
        return not self._heap or self._heap[0] >= mark
