"""Dedupe: a bloom filter never drops a unique phone, and the duplicate count is exact."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.dedupe import Dedupe


def run_batches(dedupe: Dedupe, batches: list[list[str]]) -> list[bool]:
    """Drive Dedupe like the pipeline, with a set standing in for the store's record."""
    stored: set[str] = set()
    flags: list[bool] = []
    for phones in batches:
        screen = dedupe.screen(phones)
        maybe = [phones[i] for i in screen.maybe]
        dup = dedupe.confirm(phones, screen, stored.intersection(maybe))
        for phone, d in zip(phones, dup, strict=True):
            if not d:
                dedupe.accept(phone)
                stored.add(phone)
        flags += dup
    return flags


@settings(max_examples=200)
@given(
    st.lists(st.lists(st.integers(0, 300).map(lambda i: f"+7916{i:07d}"), max_size=40),
             max_size=30),
)
def test_exactly_the_repeats_are_duplicates(batches: list[list[str]]) -> None:
    # a filter far too small, so false positives are everywhere
    dedupe = Dedupe(expected_items=1, fp_rate=0.4)
    flags = run_batches(dedupe, batches)
    seen: set[str] = set()
    expected = []
    for phone in (p for b in batches for p in b):
        expected.append(phone in seen)
        seen.add(phone)
    assert flags == expected


def test_false_positives_are_counted_not_dropped() -> None:
    dedupe = Dedupe(expected_items=1, fp_rate=0.45)
    phones = [f"+7916{i:07d}" for i in range(5000)]
    flags = run_batches(dedupe, [phones[i:i + 500] for i in range(0, 5000, 500)])
    assert not any(flags)
    stats = dedupe.statistics()
    assert stats.false_positives > 0
    assert stats.false_positives == stats.positives
