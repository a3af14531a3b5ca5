"""AudienceStore on every store: the cursor's keyset pages over a database, the rows a
resume reads again, and the dedupe half of ``lookup``."""

from __future__ import annotations

import pytest

from engine.core.prepare import Skipped
from engine.store.base import Store
from engine.store.models import AudienceSource
from engine.store.sqlite import journal
from tests.store.helpers import (
    T0,
    audience,
    fields_of,
    make_world,
    messages,
    new_run,
    phone,
    reserve,
    sent,
)

pytestmark = pytest.mark.anyio


async def test_audience_chunk_reads_in_id_order_after_the_cursor(store: Store) -> None:
    w = await make_world(store, 5)
    await make_world(store, 3, database="other", first=10)  # never in main's audience
    first = audience(await store.audience_chunk(w.source(), w.resource_id, 0, 2))
    assert [r.profile_id for r in first] == w.ids[:2]
    assert [r.phone for r in first] == w.phones[:2]
    assert fields_of(first[0].fields) == {"n": 1, "name": "P1"}
    assert first[0].sub_fields is None
    rest = audience(await store.audience_chunk(w.source(), w.resource_id, w.ids[1], 10))
    assert [r.profile_id for r in rest] == w.ids[2:]
    assert await store.audience_chunk(w.source(), w.resource_id, w.ids[-1], 10) == []
    assert await store.count_audience(w.source()) == 5
    # the bound spans the database's ids: never under the count, and exact here, where
    # the other database's profiles came after
    assert await store.audience_bound(w.source()) == w.ids[-1] - w.ids[0] + 1 == 5


async def test_the_audience_bound_never_falls_under_the_count(store: Store) -> None:
    a = await make_world(store, 3)
    b = await make_world(store, 2, database="other", first=10)
    more = await make_world(store, 2, first=20)  # main again: its ids now enclose other's
    assert more.database_id == a.database_id
    count = await store.count_audience(a.source())
    bound = await store.audience_bound(a.source())
    assert count == 5
    assert bound == more.ids[-1] - a.ids[0] + 1 >= count
    assert await store.audience_bound(b.source()) == 2
    empty = AudienceSource("list", await store.database_id("empty", create=True))
    assert await store.audience_bound(empty) == await store.count_audience(empty) == 0


async def test_a_profile_without_an_active_subscription_has_no_phone(store: Store) -> None:
    w = await make_world(store, 3)
    await store.set_subscription_status(w.resource_id, [w.ids[1]], "suspended")
    rows = audience(await store.audience_chunk(w.source(), w.resource_id, 0, 10))
    assert [(r.profile_id, r.phone) for r in rows] == [
        (w.ids[0], w.phones[0]), (w.ids[1], None), (w.ids[2], w.phones[2])]


async def test_audience_page_walks_a_database_to_its_end(store: Store) -> None:
    w = await make_world(store, 7)
    seen: list[int] = []
    after, pages = 0, 0
    while True:
        rows, next_after = await store.audience_page(w.source(), w.resource_id, after, 3, T0)
        seen += [r.profile_id for r in audience(rows)]
        pages += 1
        assert pages < 10
        if next_after is None:
            break
        assert next_after == seen[-1]
        after = next_after
    assert seen == w.ids


async def test_audience_rows_reads_the_profiles_asked_for(store: Store) -> None:
    w = await make_world(store, 4)
    await store.set_subscription_status(w.resource_id, [w.ids[3]], "unsubscribed")
    wanted = [w.ids[3], w.ids[0], 99_999]  # any order; a profile gone is left out
    rows = audience(await store.audience_rows(w.source(), w.resource_id, wanted))
    assert sorted((r.profile_id, r.phone) for r in rows) == [
        (w.ids[0], w.phones[0]), (w.ids[3], None)]
    assert await store.audience_rows(w.source(), w.resource_id, []) == []


async def test_audience_rows_reads_more_than_a_few_hundred_at_once(store: Store) -> None:
    w = await make_world(store, 1200)
    rows = audience(await store.audience_rows(w.source(), w.resource_id, w.ids))
    assert sorted(r.profile_id for r in rows) == w.ids
    assert {r.phone for r in rows} == set(w.phones)


async def test_lookup_sees_the_phones_the_run_reserved_or_sent(store: Store) -> None:
    w = await make_world(store, 5)
    _, run = await new_run(store, w)
    _, other = await new_run(store, w, name="other")
    msgs = messages(w, [1, 2, 3])
    await reserve(store, run.id, [(1, "s", msgs[:2]), (2, "s", msgs[2:])],
                  skipped=[Skipped(4, w.ids[3], w.phones[3], "policy")])
    await store.record(run.id, 1, "s", msgs[:2], sent(msgs[:2]))
    everyone = [*w.phones, phone(99)]
    # reserved (batch 2) and recorded (batch 1) count as seen; a skipped one does not
    assert await store.lookup(run.id, [], everyone) == (set(), set(w.phones[:3]))
    assert await store.lookup(other.id, [], everyone) == (set(), set())
    more = messages(w, [5])
    await reserve(store, run.id, [(3, "s", more)])
    assert (await store.lookup(run.id, [], everyone))[1] == {*w.phones[:3], w.phones[4]}


async def test_lookup_after_reopening_sees_what_the_run_had(
    store: Store, store_url: str
) -> None:
    from engine.store.open import open_store

    w = await make_world(store, 4)
    _, run = await new_run(store, w)
    msgs = messages(w, [1, 2, 3])
    await reserve(store, run.id, [(1, "s", msgs[:2]), (2, "s", msgs[2:])])
    await store.record(run.id, 1, "s", msgs[:2], sent(msgs[:2]))
    again = await open_store(store_url)
    try:
        assert (await again.lookup(run.id, [], w.phones))[1] == set(w.phones[:3])
    finally:
        await again.aclose()


@pytest.mark.parametrize("flush_at", [1, 2, 3, journal.SEEN_FLUSH])
async def test_lookup_sees_each_runs_phones_whether_held_or_written(
    store: Store, monkeypatch: pytest.MonkeyPatch, flush_at: int
) -> None:
    """SQLite holds a run's accepted phones in memory and writes them to its dedupe
    record ``SEEN_FLUSH`` at a time, and another run's first: two runs reserving in turn
    each see their own phones, and only theirs, wherever they are."""
    monkeypatch.setattr(journal, "SEEN_FLUSH", flush_at)
    w = await make_world(store, 6)
    _, run = await new_run(store, w)
    _, other = await new_run(store, w, name="other")
    everyone = [*w.phones, phone(99)]
    mine: set[str] = set()
    theirs: set[str] = set()
    for k, (target, seqs) in enumerate([(run, [1]), (other, [2, 3]), (run, [4, 5]),
                                        (other, [6]), (run, [6])]):
        await reserve(store, target.id, [(k + 1, "s", messages(w, seqs))])
        (mine if target is run else theirs).update(w.phones[s - 1] for s in seqs)
        assert (await store.lookup(run.id, [], everyone))[1] == mine
        assert (await store.lookup(other.id, [], everyone))[1] == theirs
        # the memory it takes stays one run's batch, however many runs reserve
        assert len(getattr(store, "_seen_held", ())) < flush_at
