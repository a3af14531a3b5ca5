"""Per-run phone dedupe: a bloom filter whose every positive is confirmed exactly.

The filter answers "certainly new" for almost every phone at a fraction of a microsecond and
under two bytes of memory per phone. A positive only means "maybe seen": the caller
confirms positives against the run's exact record of accepted phones (kept by the store, on
disk), so a false positive never drops a unique recipient and the duplicate count is exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Set
from typing import NamedTuple

import msgspec
from rbloom import Bloom

__all__ = ["Dedupe", "DedupeStats", "Screen"]


class Screen(NamedTuple):
    """What the filter says about one batch of phones (indexes into that batch)."""

    #: Certainly not seen before (first in batch, bloom negative).
    new: list[int]
    #: First in batch but the bloom filter has it: confirm exactly.
    maybe: list[int]
    #: Repeats of an earlier phone of the same batch: certainly duplicates.
    repeat: list[int]


class DedupeStats(msgspec.Struct, frozen=True):
    added: int
    positives: int
    false_positives: int
    bits: int


class Dedupe:
    """Bloom-filter dedupe with exact confirmation. Sans-I/O: the caller does the lookups."""

    def __init__(self, expected_items: int, fp_rate: float = 0.001) -> None:
        self._bloom = Bloom(max(expected_items, 1024), fp_rate)
        self.added = 0
        self.positives = 0
        self.false_positives = 0

    def screen(self, phones: Sequence[str]) -> Screen:
        bloom = self._bloom
        first: set[str] = set()
        new: list[int] = []
        maybe: list[int] = []
        repeat: list[int] = []
        for i, phone in enumerate(phones):
            if phone in first:
                repeat.append(i)
                continue
            first.add(phone)
            (maybe if phone in bloom else new).append(i)
        self.positives += len(maybe)
        return Screen(new, maybe, repeat)

    def confirm(self, phones: Sequence[str], screen: Screen, seen: Set[str]) -> list[bool]:
        """Settle the batch: ``seen`` holds the positives the exact record knows.

        Returns one flag per phone (True: duplicate). Call ``accept`` for each phone that
        is then messaged.
        """
        dup = [False] * len(phones)
        for i in screen.repeat:
            dup[i] = True
        fp = 0
        for i in screen.maybe:
            if phones[i] in seen:
                dup[i] = True
            else:
                fp += 1
        self.false_positives += fp
        return dup

    def accept(self, phone: str) -> None:
        """``phone`` will be messaged: remember it."""
        self._bloom.add(phone)
        self.added += 1

    def remember(self, phones: Iterable[str]) -> None:
        """Load phones accepted earlier in the run (on resume)."""
        for phone in phones:
            self._bloom.add(phone)
            self.added += 1

    def statistics(self) -> DedupeStats:
        return DedupeStats(
            added=self.added,
            positives=self.positives,
            false_positives=self.false_positives,
            bits=self._bloom.size_in_bits,
        )
